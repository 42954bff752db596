//! The command line's arguments, shared by the subcommands.

use std::path::PathBuf;

use candle_core::Device;
use clap::Args;
use staria_engine::generate::{Backend, BackendChoice, GeneratorOptions};
use staria_engine::sampling::SamplingParams;
use staria_models::fast::WeightFormat;

use crate::{Failure, bad};

#[derive(Args, Debug)]
pub(crate) struct RenderArgs {
    /// MIDI file to draw.
    pub(crate) input: PathBuf,
    /// PNG file to write.
    #[arg(long)]
    pub(crate) png: PathBuf,
    /// A prompt MIDI file to draw above it, on the same time scale.
    #[arg(long)]
    pub(crate) prompt: Option<PathBuf>,
    /// Picture width in pixels.
    #[arg(long, default_value_t = 1600)]
    pub(crate) width: u32,
    /// Height of each piano roll in pixels.
    #[arg(long, default_value_t = 420)]
    pub(crate) panel_height: u32,
}

#[derive(Args, Debug, Clone)]
pub(crate) struct ModelArgs {
    /// A checkpoint folder (config.json, tokenizer.json, model.safetensors) or a built-in
    /// model's name (`staria models` lists them; a folder that exists wins over a name). Default:
    /// $STARIA_MODEL (the same rule), else the default built-in model (built into this binary,
    /// unpacked into the cache folder on first use).
    #[arg(long, value_name = "NAME|FOLDER")]
    pub(crate) model: Option<PathBuf>,
    /// cpu, cuda or cuda:N, metal or metal:N (N: the device index).
    #[arg(long, default_value = "cpu")]
    pub(crate) device: String,
    /// CPU threads for tensor maths (default: candle's choice, the physical core count).
    #[arg(long)]
    pub(crate) threads: Option<usize>,
}

#[derive(Args, Debug, Clone)]
pub(crate) struct BackendArgs {
    /// Decode path: auto (the fast decoder on the CPU, candle on a GPU), candle, or fast (the
    /// single-core decoder, CPU only).
    #[arg(long, default_value = "auto")]
    pub(crate) backend: BackendChoice,
    /// Weight format of the fast backend: f32, f16 (the default) or q8.
    #[arg(long)]
    pub(crate) weights: Option<WeightFormat>,
}

impl BackendArgs {
    pub(crate) fn options(&self, device: &Device) -> Result<GeneratorOptions, Failure> {
        let (backend, weights) = (self.backend, self.weights);
        match backend.resolve(device) {
            Backend::Fast if !device.is_cpu() => {
                return Err(bad(
                    "--backend fast runs on the CPU only; use --device cpu or --backend candle",
                ));
            }
            Backend::Candle if weights.is_some() => {
                return Err(bad(
                    "--weights applies to the fast backend only (candle runs the checkpoint in f32)",
                ));
            }
            _ => {}
        }
        Ok(GeneratorOptions {
            backend,
            weights: weights.unwrap_or(GeneratorOptions::DEFAULT_WEIGHTS),
        })
    }
}

#[derive(Args, Debug, Clone)]
pub(crate) struct SampleArgs {
    #[arg(long, default_value_t = 0)]
    pub(crate) seed: u64,
    /// 0 = always the most likely token.
    #[arg(long, default_value_t = SamplingParams::default().temperature, allow_negative_numbers = true)]
    pub(crate) temperature: f32,
    #[arg(long, default_value_t = SamplingParams::default().top_p, allow_negative_numbers = true)]
    pub(crate) top_p: f32,
    #[arg(long, default_value_t = SamplingParams::DEFAULT_MIN_P, allow_negative_numbers = true)]
    pub(crate) min_p: f32,
    /// Snippet following: logit bonus for the token the section's snippet has next, so each
    /// section keeps its snippet's shape (0: the model alone).
    #[arg(long, default_value_t = SamplingParams::DEFAULT_FOLLOW_BIAS, allow_negative_numbers = true)]
    pub(crate) follow_bias: f32,
    /// Style token, e.g. reel (see `staria info` for the model's styles).
    #[arg(long)]
    pub(crate) style: Option<String>,
    /// Lowest and highest pitch, e.g. 48-84.
    #[arg(long)]
    pub(crate) pitch_range: Option<String>,
    /// Keep to a scale, e.g. "D major", "A dorian", "E minor-pentatonic".
    #[arg(long)]
    pub(crate) scale: Option<String>,
    /// At most this many notes sounding at once.
    #[arg(long)]
    pub(crate) max_polyphony: Option<u8>,
    /// Tempo in bpm (default: the input file's first tempo).
    #[arg(long, allow_negative_numbers = true)]
    pub(crate) bpm: Option<f64>,
}

#[derive(Args, Debug)]
pub(crate) struct GenerateArgs {
    /// Prompt MIDI file; its markers ("A", "B", ...) delimit the sections.
    #[arg(long)]
    pub(crate) prompt: PathBuf,
    /// Sections as bar ranges instead of markers, e.g. A=1-4,B=5-8 (bars counted from 1).
    #[arg(long)]
    pub(crate) sections: Option<String>,
    /// The form to generate, letters A..D.
    #[arg(long, default_value = "AABA")]
    pub(crate) form: String,
    /// Bars per section.
    #[arg(long, default_value_t = 8)]
    pub(crate) bars: u32,
    #[arg(long)]
    pub(crate) out: PathBuf,
    #[command(flatten)]
    pub(crate) model: ModelArgs,
    #[command(flatten)]
    pub(crate) backend: BackendArgs,
    #[command(flatten)]
    pub(crate) sample: SampleArgs,
}

#[derive(Args, Debug)]
#[command(group(clap::ArgGroup::new("length").required(true).args(["seconds", "bars"])))]
pub(crate) struct ContinueArgs {
    #[arg(long)]
    pub(crate) input: PathBuf,
    #[arg(long, allow_negative_numbers = true)]
    pub(crate) seconds: Option<f64>,
    #[arg(long)]
    pub(crate) bars: Option<u32>,
    #[arg(long)]
    pub(crate) out: PathBuf,
    #[command(flatten)]
    pub(crate) model: ModelArgs,
    #[command(flatten)]
    pub(crate) backend: BackendArgs,
    #[command(flatten)]
    pub(crate) sample: SampleArgs,
}

#[derive(Args, Debug)]
pub(crate) struct InfoArgs {
    #[command(flatten)]
    pub(crate) model: ModelArgs,
    /// One JSON object instead of text.
    #[arg(long)]
    pub(crate) json: bool,
}

#[derive(Args, Debug)]
pub(crate) struct ModelsArgs {
    /// One JSON array instead of text.
    #[arg(long)]
    pub(crate) json: bool,
}

#[derive(Args, Debug)]
pub(crate) struct BenchArgs {
    #[command(flatten)]
    pub(crate) model: ModelArgs,
    #[command(flatten)]
    pub(crate) backend: BackendArgs,
    /// Also measure the live modes on simulated performances at 140 bpm (call and response:
    /// handover to first note, absorbing a played note; a 5-minute accompaniment: late notes
    /// and collisions with the performer).
    #[arg(long)]
    pub(crate) live: bool,
    /// Length of the simulated accompaniment in minutes (with --live).
    #[arg(long, default_value_t = 5.0)]
    pub(crate) live_minutes: f64,
    /// The accompaniment's ghost melody with a two-voice model (see `staria live`).
    #[arg(long, default_value_t = false, action = clap::ArgAction::Set)]
    pub(crate) ghost_melody: bool,
    /// The accompaniment consonant with the performer (see `staria live`).
    #[arg(long, default_value_t = true, action = clap::ArgAction::Set)]
    pub(crate) consonant: bool,
}

#[derive(Args, Debug)]
pub(crate) struct LiveArgs {
    /// MIDI file played as the performer (its pitched notes, in real time). Its tempo changes
    /// are the host's: the session follows them at their beats (its reference tempo is the
    /// file's first; --bpm is refused for such a file) and the written file keeps its tempo map.
    #[arg(long)]
    pub(crate) performer: PathBuf,
    /// respond (call and response: answer after a silence, stop when the performer plays) or
    /// accompany (a second voice under the performer).
    #[arg(long)]
    pub(crate) mode: staria_engine::live::LiveMode,
    /// MIDI file to write: the performer on channel 1, the model on channel 2 (own tracks).
    #[arg(long)]
    pub(crate) out: PathBuf,
    /// A MIDI file whose marked sections (A..D) are the captured snippets (the prompt).
    #[arg(long)]
    pub(crate) prompt: Option<PathBuf>,
    /// respond: a silence this many beats long hands over to the model.
    #[arg(long, default_value_t = 2.0, allow_negative_numbers = true)]
    pub(crate) handover_silence_beats: f64,
    /// respond: length of an answer in bars.
    #[arg(long, default_value_t = 2)]
    pub(crate) bars: u32,
    /// accompany: how far ahead the model's notes are generated, in beats (at most 1).
    #[arg(long, default_value_t = 1.0, allow_negative_numbers = true)]
    pub(crate) lookahead_beats: f64,
    /// accompany with a two-voice model: the look-ahead also predicts the melody (never
    /// played), so the bass at an instant follows the melody note there (off by default).
    #[arg(long, default_value_t = false, action = clap::ArgAction::Set)]
    pub(crate) ghost_melody: bool,
    /// accompany: no model note starts dissonant (a second, tritone or seventh, mod 12) with
    /// a pitch the performer holds, unless the voice has no other pitch, and one chosen before
    /// a performer's note that clashes with it (struck with it, or up to 50 ms before) is cut
    /// and re-chosen, starting the reaction time (30 ms) later (on by default).
    #[arg(long, default_value_t = true, action = clap::ArgAction::Set)]
    pub(crate) consonant: bool,
    /// Simulation step in ms (the engine's wake-up interval).
    #[arg(long, default_value_t = 10.0, allow_negative_numbers = true)]
    pub(crate) tick_ms: f64,
    /// Also draw the performer and the model as two piano rolls on one time scale (PNG).
    #[arg(long)]
    pub(crate) png: Option<PathBuf>,
    #[command(flatten)]
    pub(crate) model: ModelArgs,
    #[command(flatten)]
    pub(crate) backend: BackendArgs,
    #[command(flatten)]
    pub(crate) sample: SampleArgs,
}
