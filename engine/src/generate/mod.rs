//! Streaming generation: prompt assembly from captured snippets, prefill, then token-by-token
//! sampling under the request's constraint masks, handing each completed note to a callback as
//! soon as its duration token is sampled (the engine schedules it while the model carries on).
//!
//! `Generator::generate` serves the engine (one section or a continuation per request);
//! `Generator::generate_piece` serves the CLI (a whole form such as AABA in one pass, each
//! section conditioned on the ones before it through the KV cache).
//!
//! Two backends compute the logits ([`Backend`]): on the CPU the hand-written, allocation-free
//! [`FastDecoder`] (weights packed as f32, f16 or q8, see [`GeneratorOptions`]); elsewhere (GPU)
//! the candle [`AnyModel`]. A Staria checkpoint on the fast backend keeps its candle model for
//! the snippet encoder, which runs once per prompt in [`Generator::begin`].
//!
//! Instruments: sampling is over every instrument of the tokenizer (the live modes alone pick
//! one, see `live`). [`Generator::generate_piece`] (`staria generate`) writes instrument i on
//! 0-based MIDI channel i (channel 9, drums, skipped: i + 1 from 9 on, at most 15) with its GM
//! family's first program, so a two-voice model's `["piano", "bass"]` come out on channels 0
//! and 1 (1 and 2 as sequencers count) with programs 0 and 32 (Acoustic Bass). [`Generator::generate`] hands out
//! [`GeneratedNote`]s without the instrument: the engine (Sections mode in the plugin) plays
//! every note on its output channel and `staria continue` gives the added notes the input's
//! channel and program, both voices alike.
//!
//! Files: this one holds the request, result and option types and the [`Generator`] itself;
//! `load.rs` builds a generator and says what was loaded; `cursor.rs` moves the KV cache (begin,
//! step, rewind, extend); `run.rs` assembles prompts and runs the generation loops.

use std::str::FromStr;
use std::time::Instant;

use candle_core::{DType, Device, Storage, Tensor};
use serde::{Deserialize, Serialize};
use staria_models::checkpoint::CheckpointConfig;
use staria_models::fast::{FastDecoder, WeightFormat};
use staria_models::model::{AnyModel, ModelKind};
use staria_models::prompt::SnippetFollower;
use staria_models::tokenizer::Tokenizer;
use staria_models::{Note, SectionLabel, Song};

use crate::constraints::{ConstrainedDecoder, Constraints};
use crate::sampling::{SampleError, SamplingParams};

mod cursor;
mod load;
mod run;

/// Errors of a generation request or of loading a generator.
#[derive(Debug, thiserror::Error)]
pub enum GenError {
    /// The checkpoint, tokenizer, MIDI or tensor maths failed.
    #[error(transparent)]
    Model(#[from] staria_models::Error),
    /// The request cannot be served as asked (bad setting, unknown form, prompt too long...).
    #[error("{0}")]
    Request(String),
    #[error("sampling: {0}")]
    Sample(#[from] SampleError),
}

impl From<candle_core::Error> for GenError {
    fn from(e: candle_core::Error) -> Self {
        GenError::Model(staria_models::Error::Candle(e))
    }
}

pub type Result<T, E = GenError> = std::result::Result<T, E>;

fn request(msg: impl Into<String>) -> GenError {
    GenError::Request(msg.into())
}

/// What a request generates.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum Target {
    /// A fresh piece that starts with this section (forced with its section tag).
    Section(SectionLabel),
    /// Carry on after `Snippets::context`.
    Continue,
}

/// One generation request.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct GenRequest {
    pub target: Target,
    /// Length of the generated span in bars (>= 1).
    pub bars: u32,
    pub bpm: f64,
    pub beats_per_bar: f64,
    /// Letters A..D the prompt's form token names ("" = no form token). It must be a form the
    /// tokenizer has a token for. `generate_piece` generates exactly this form.
    pub form: String,
    pub style: Option<String>,
    pub sampling: SamplingParams,
    pub constraints: Constraints,
}

impl GenRequest {
    /// A request with 4/4 bars, no form or style, default sampling and no constraints.
    pub fn new(target: Target, bars: u32, bpm: f64) -> GenRequest {
        GenRequest {
            target,
            bars,
            bpm,
            beats_per_bar: 4.0,
            form: String::new(),
            style: None,
            sampling: SamplingParams::default(),
            constraints: Constraints::default(),
        }
    }

    /// Length of the generated span in ms.
    pub fn span_ms(&self) -> f64 {
        self.bars as f64 * self.beats_per_bar * 60_000.0 / self.bpm
    }

    /// Checks every setting; the message names the one at fault.
    pub fn validate(&self) -> Result<(), String> {
        if self.bars == 0 {
            return Err("bars must be at least 1".into());
        }
        if !(self.bpm.is_finite() && (1.0..=1000.0).contains(&self.bpm)) {
            return Err(format!("bpm must be in 1..=1000, got {}", self.bpm));
        }
        if !(self.beats_per_bar.is_finite()
            && self.beats_per_bar > 0.0
            && self.beats_per_bar <= 64.0)
        {
            return Err(format!(
                "beats per bar must be in (0, 64], got {}",
                self.beats_per_bar
            ));
        }
        if !self.form.is_empty()
            && !self
                .form
                .bytes()
                .all(|b| (b'A'..=b'D').contains(&b.to_ascii_uppercase()))
        {
            return Err(format!("form {:?} must be letters A..D", self.form));
        }
        self.sampling.validate()?;
        self.constraints.validate()?;
        // Three hours at most: the same bound the tokenizer puts on a piece.
        if self.span_ms() > 3.0 * 3600.0 * 1000.0 {
            return Err(format!(
                "{} bars at {} bpm last {:.0} s, more than the 3-hour limit",
                self.bars,
                self.bpm,
                self.span_ms() / 1000.0
            ));
        }
        Ok(())
    }
}

/// A generated note, in ms from the start of the requested span (the forced section's start;
/// for `Continue`, the end of the context).
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct GeneratedNote {
    pub pitch: u8,
    pub velocity: u8,
    pub start_ms: f64,
    pub dur_ms: f64,
}

/// What the note callback wants next.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Flow {
    Continue,
    Stop,
}

/// The captured material a request is conditioned on.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Snippets {
    /// Per section (indexed by `SectionLabel::index`): the snippet's notes, times in ms from the
    /// snippet start. Empty = not captured.
    pub sections: [Vec<Note>; 4],
    /// For `Target::Continue`: the piece so far, times in ms from its start.
    pub context: Vec<Note>,
}

impl Snippets {
    pub fn section(&self, label: SectionLabel) -> &[Note] {
        &self.sections[label.index()]
    }

    pub fn set(&mut self, label: SectionLabel, notes: Vec<Note>) {
        self.sections[label.index()] = notes;
    }

    /// Captured sections (with at least one note), in A..D order.
    pub fn captured(&self) -> impl Iterator<Item = (SectionLabel, &[Note])> {
        SectionLabel::ALL
            .into_iter()
            .map(|l| (l, self.section(l)))
            .filter(|(_, n)| !n.is_empty())
    }
}

/// Why generation of a span stopped.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum StopReason {
    /// The requested bars are full (no further note fits).
    BarLimit,
    /// The model ended the piece (`<E>`; only with `Constraints::allow_early_end`).
    End,
    /// The model moved on to another section (only with `Constraints::allow_early_end`).
    Section(SectionLabel),
    /// The model's context is full.
    MaxSeqLen,
    /// `generate_piece` only: the section used its share of the context (the context is split
    /// between the sections still to come, so one section cannot starve the rest).
    TokenBudget,
    /// The note callback returned `Flow::Stop`.
    Stopped,
}

/// Statistics of one `generate` call.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct GenSummary {
    pub notes: usize,
    /// Tokens in the prompt prefill (including forced and context tokens).
    pub prompt_tokens: usize,
    /// Tokens sampled.
    pub sampled_tokens: usize,
    /// Notes whose sampled onset lay before the window's last onset and that were moved to the
    /// next window behind a `<T>` (see `constraints::OnsetRead::TimeShift`).
    #[serde(default)]
    pub time_shift_votes: usize,
    pub stop: StopReason,
    pub prefill_ms: f64,
    /// Time spent sampling and stepping after the prefill.
    pub decode_ms: f64,
    /// From the call to the first note callback.
    pub first_note_ms: Option<f64>,
    /// Where the generated span starts, in ms on the clock of what it continues (0 for a
    /// section; for `Continue` [`continue_start_ms`] of the context).
    #[serde(default)]
    pub span_start_ms: f64,
}

/// Where a `Continue` of `context` starts: the first bar line at or after the context's last
/// note-off, bars counted from the context's start (ms 0: a bar line, as a captured snippet's
/// or a generated section's start is). The engine plays the span from a bar line of the host,
/// so starting it on one of the context's keeps the context's beat; starting it at the last
/// note-off would shift every generated note by that note-off's phase in its bar.
pub fn continue_start_ms(context: &[Note], bpm: f64, beats_per_bar: f64) -> f64 {
    let end_ms = context
        .iter()
        .map(|n| n.end_ms)
        .filter(|e| e.is_finite())
        .fold(0.0, f64::max);
    let bar_ms = beats_per_bar * 60_000.0 / bpm;
    if !(bar_ms.is_finite() && bar_ms > 0.0) {
        return end_ms;
    }
    // A note-off a hair past a bar line (float noise) still ends on it.
    (end_ms / bar_ms - 1e-6).ceil().max(0.0) * bar_ms
}

/// One section occurrence of a generated piece.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SectionReport {
    pub label: SectionLabel,
    pub start_ms: f64,
    pub end_ms: f64,
    pub notes: usize,
    pub stop: StopReason,
}

/// A whole generated piece.
#[derive(Debug, Clone, PartialEq)]
pub struct Piece {
    /// The notes with one marker per section occurrence, at the request's tempo.
    pub song: Song,
    pub sections: Vec<SectionReport>,
    pub summary: GenSummary,
}

/// A decoded note in absolute piece time with what a MIDI file needs.
#[derive(Debug, Clone, Copy)]
pub(crate) struct RawNote {
    pub(crate) pitch: u8,
    pub(crate) velocity: u8,
    pub(crate) instrument: u8,
    pub(crate) drum: bool,
    pub(crate) start_ms: f64,
    pub(crate) dur_ms: f64,
    /// The model's cache position right after the note's last token.
    pub(crate) pos_after: usize,
}

/// A mask `run_span` applies after the constraint masks, before sampling: the live modes keep
/// the accompaniment off the performer's sounding pitches with it.
pub(crate) type ExtraMask<'a> = &'a dyn Fn(&ConstrainedDecoder, &mut [f32]);

/// No extra mask.
pub(crate) fn no_extra_mask(_: &ConstrainedDecoder, _: &mut [f32]) {}

/// Which decode path [`Generator::load_with`] should build.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
pub enum BackendChoice {
    /// The fast decoder on a CPU device, candle on any other.
    #[default]
    Auto,
    /// The candle model on the given device.
    Candle,
    /// The fast decoder (CPU only).
    Fast,
}

impl BackendChoice {
    pub fn name(self) -> &'static str {
        match self {
            BackendChoice::Auto => "auto",
            BackendChoice::Candle => "candle",
            BackendChoice::Fast => "fast",
        }
    }

    /// The backend this choice gives on `device`.
    pub fn resolve(self, device: &Device) -> Backend {
        match self {
            BackendChoice::Auto if device.is_cpu() => Backend::Fast,
            BackendChoice::Auto | BackendChoice::Candle => Backend::Candle,
            BackendChoice::Fast => Backend::Fast,
        }
    }
}

impl FromStr for BackendChoice {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s.to_ascii_lowercase().as_str() {
            "auto" => Ok(BackendChoice::Auto),
            "candle" => Ok(BackendChoice::Candle),
            "fast" => Ok(BackendChoice::Fast),
            _ => Err(format!(
                "unknown backend {s:?} (expected auto, candle or fast)"
            )),
        }
    }
}

/// The decode path a [`Generator`] runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum Backend {
    /// The candle model ([`AnyModel`]) on its device.
    Candle,
    /// [`FastDecoder`] on the CPU, on the calling thread.
    Fast,
}

impl Backend {
    pub fn name(self) -> &'static str {
        match self {
            Backend::Candle => "candle",
            Backend::Fast => "fast",
        }
    }
}

/// How [`Generator::load_with`] builds the model.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct GeneratorOptions {
    pub backend: BackendChoice,
    /// How the fast backend packs the projection weights (ignored by candle, which runs the
    /// checkpoint in f32).
    pub weights: WeightFormat,
}

impl GeneratorOptions {
    /// The fast backend's default weight format: f16. On a (160-step) trained `small` decoder
    /// its logits are within 0.02% RMS of exact f32 (relative to the logit spread) with the same
    /// argmax at every position, at about 3x f32's decode speed; q8 is about 1.7x faster again
    /// but drifts 0.7% RMS and flips 2% of greedy choices, so it stays opt-in (`--weights q8`).
    /// Measurements in docs/ARCHITECTURE.md, "Generation backends".
    pub const DEFAULT_WEIGHTS: WeightFormat = WeightFormat::F16;
}

impl Default for GeneratorOptions {
    fn default() -> Self {
        GeneratorOptions {
            backend: BackendChoice::Auto,
            weights: Self::DEFAULT_WEIGHTS,
        }
    }
}

/// The model behind a generator.
enum Net {
    Candle(Box<AnyModel>),
    Fast {
        fast: Box<FastDecoder>,
        kind: ModelKind,
        /// Staria: the candle model, used only for its snippet encoder (its decoder weights are
        /// also held: `AnyModel` cannot be built without them).
        encoder: Option<Box<AnyModel>>,
        /// The tokens in the KV cache (capacity: the context, so feeding never reallocates), and
        /// for Staria the snippets whose latents are set: a request whose prompt starts the same
        /// way reuses that part of the cache instead of prefilling it again.
        cached: Vec<u32>,
        cached_snippets: Vec<(SectionLabel, Vec<u32>)>,
    },
}

/// A model plus its tokenizer, ready to serve requests. Keeps one logits buffer so a request
/// allocates only its masks and sampler, up front.
pub struct Generator {
    net: Net,
    tok: Tokenizer,
    logits: Vec<f32>,
    /// The logits before masking, kept while an onset sampled from every step of the window is
    /// read (see `run_span`).
    spare: Vec<f32>,
    /// The snippet the section being generated follows (`SamplingParams::follow_bias`).
    follower: SnippetFollower,
    /// The checkpoint's `config.json` when loaded from a folder (name, preset, provenance).
    checkpoint: Option<CheckpointConfig>,
}

impl std::fmt::Debug for Generator {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Generator")
            .field("backend", &self.backend())
            .field("kind", &self.kind())
            .field("weights", &self.weights())
            .field("position", &self.position())
            .field("max_seq_len", &self.max_seq_len())
            .field("vocab_size", &self.tok.vocab_size())
            .finish()
    }
}

fn ms_since(t: Instant) -> f64 {
    t.elapsed().as_secs_f64() * 1000.0
}

/// Copies `[vocab]` (or `[1, vocab]`) logits into `out`; reads CPU f32 storage in place so the
/// per-token path does not allocate a `Vec`.
fn copy_logits(t: &Tensor, out: &mut [f32]) -> Result<()> {
    let n = t.elem_count();
    if n != out.len() {
        return Err(request(format!(
            "model returned {n} logits for a vocabulary of {}",
            out.len()
        )));
    }
    if t.dtype() == DType::F32 && t.device().is_cpu() {
        let (storage, layout) = t.storage_and_layout();
        if let (Storage::Cpu(cpu), Some((a, b))) = (&*storage, layout.contiguous_offsets()) {
            out.copy_from_slice(&cpu.as_slice::<f32>()?[a..b]);
            return Ok(());
        }
    }
    let v = t.to_dtype(DType::F32)?.flatten_all()?.to_vec1::<f32>()?;
    out.copy_from_slice(&v);
    Ok(())
}
