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

use std::path::Path;
use std::str::FromStr;
use std::time::Instant;

use candle_core::{DType, Device, Storage, Tensor};
use serde::{Deserialize, Serialize};
use staria_models::checkpoint::CheckpointConfig;
use staria_models::fast::{FastDecoder, WeightFormat};
use staria_models::grid::BeatGrid;
use staria_models::model::{AnyModel, ModelKind};
use staria_models::prompt::SnippetFollower;
use staria_models::tokenizer::{
    Expect, PromptSpec, StreamEvent, TokenKind, Tokenizer, normalize_form,
};
use staria_models::{Note, Prompt, Section, SectionLabel, Song, TimeSignature};

use crate::constraints::{ConstrainedDecoder, Constraints, OnsetRead};
use crate::sampling::{SampleError, Sampler, SamplingParams};

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

impl Generator {
    /// Loads a checkpoint folder (`config.json`, `tokenizer.json`, `model.safetensors`) with the
    /// default options: the fast decoder with f16 weights on the CPU, candle elsewhere.
    pub fn load(dir: &Path, device: &Device) -> Result<Generator> {
        Generator::load_with(dir, device, &GeneratorOptions::default())
    }

    /// Loads a checkpoint folder with a chosen backend and weight format. The fast backend
    /// needs a CPU device.
    pub fn load_with(dir: &Path, device: &Device, opts: &GeneratorOptions) -> Result<Generator> {
        use staria_models::checkpoint;
        if opts.backend.resolve(device) == Backend::Candle {
            let ckpt = checkpoint::load(dir, device)?;
            let mut g = Generator::new(ckpt.model, ckpt.tokenizer)?;
            g.checkpoint = Some(ckpt.config);
            return Ok(g);
        }
        if !device.is_cpu() {
            return Err(request(
                "the fast backend runs on the CPU; use the cpu device or the candle backend",
            ));
        }
        let (config, tok) = checkpoint::load_config(dir)?;
        let tensors = checkpoint::load_weights(dir, &config.model, &Device::Cpu)?;
        let weights = dir.join(checkpoint::WEIGHTS_FILE);
        let at_weights =
            |e: staria_models::Error| staria_models::Error::checkpoint(&weights, e.to_string());
        // The candle model checks every tensor against the config, both ways (cheap: it shares
        // the tensors); for Staria it also encodes the snippets.
        let candle =
            checkpoint::build_model(&config.model, &tensors, &Device::Cpu).map_err(at_weights)?;
        let encoder = match config.kind() {
            ModelKind::Decoder => None,
            ModelKind::Staria => Some(candle),
        };
        let fast = FastDecoder::from_checkpoint_tensors(&config.model, opts.weights, &tensors)
            .map_err(at_weights)?;
        drop(tensors);
        let mut g = Generator::new_fast(fast, encoder, tok)?;
        g.checkpoint = Some(config);
        Ok(g)
    }

    /// A generator on the fast backend. `encoder` is the Staria model whose snippet encoder
    /// feeds the fast decoder's cross-attention sites: required when `fast` has sites, refused
    /// otherwise (a decoder-only model reads its snippets inline).
    pub fn new_fast(
        fast: FastDecoder,
        encoder: Option<AnyModel>,
        tok: Tokenizer,
    ) -> Result<Generator> {
        let cfg = fast.config();
        if cfg.vocab_size != tok.vocab_size() {
            return Err(request(format!(
                "model has a vocabulary of {} tokens but the tokenizer has {}; they are not from the same checkpoint",
                cfg.vocab_size,
                tok.vocab_size()
            )));
        }
        let kind = match (&encoder, cfg.n_cross_sites()) {
            (None, 0) => ModelKind::Decoder,
            (Some(m), sites) if sites > 0 => {
                let Some(st) = m.staria() else {
                    return Err(request(
                        "the fast decoder has cross-attention sites but the encoder model is not a Staria model",
                    ));
                };
                let sc = st.config();
                if sc.encoder.dim != cfg.latent_dim()
                    || sc.n_sections * sc.encoder.n_latents > cfg.max_latents
                    || sc.n_sites() != sites
                {
                    return Err(request(format!(
                        "the Staria encoder (dim {}, {} x {} latents, {} sites) does not fit the fast decoder (latent_dim {}, max_latents {}, {} sites)",
                        sc.encoder.dim,
                        sc.n_sections,
                        sc.encoder.n_latents,
                        sc.n_sites(),
                        cfg.latent_dim(),
                        cfg.max_latents,
                        sites
                    )));
                }
                ModelKind::Staria
            }
            (None, _) => {
                return Err(request(
                    "the fast decoder has cross-attention sites: pass the Staria model for its snippet encoder",
                ));
            }
            (Some(_), _) => {
                return Err(request(
                    "a decoder-only fast decoder takes no encoder model (snippets are read inline)",
                ));
            }
        };
        let mut fast = fast;
        fast.set_tokenizer(&tok);
        let logits = vec![0.0; tok.vocab_size()];
        let cached = Vec::with_capacity(fast.max_seq_len());
        Ok(Generator {
            net: Net::Fast {
                fast: Box::new(fast),
                kind,
                encoder: encoder.map(Box::new),
                cached,
                cached_snippets: Vec::new(),
            },
            tok,
            spare: logits.clone(),
            logits,
            follower: SnippetFollower::default(),
            checkpoint: None,
        })
    }

    /// Pairs a candle model with its tokenizer (the candle backend); they must agree on the
    /// vocabulary size.
    pub fn new(mut model: AnyModel, tok: Tokenizer) -> Result<Generator> {
        if model.vocab_size() != tok.vocab_size() {
            return Err(request(format!(
                "model has a vocabulary of {} tokens but the tokenizer has {}; they are not from the same checkpoint",
                model.vocab_size(),
                tok.vocab_size()
            )));
        }
        model.set_tokenizer(&tok);
        let logits = vec![0.0; tok.vocab_size()];
        Ok(Generator {
            net: Net::Candle(Box::new(model)),
            tok,
            spare: logits.clone(),
            logits,
            follower: SnippetFollower::default(),
            checkpoint: None,
        })
    }

    /// The checkpoint's config, when loaded with `Generator::load`.
    pub fn checkpoint_config(&self) -> Option<&CheckpointConfig> {
        self.checkpoint.as_ref()
    }

    pub fn tokenizer(&self) -> &Tokenizer {
        &self.tok
    }

    /// The candle model that decodes, on the candle backend; `None` on the fast backend.
    pub fn model(&self) -> Option<&AnyModel> {
        match &self.net {
            Net::Candle(m) => Some(m),
            Net::Fast { .. } => None,
        }
    }

    /// See [`model`](Self::model).
    pub fn model_mut(&mut self) -> Option<&mut AnyModel> {
        match &mut self.net {
            Net::Candle(m) => Some(m),
            Net::Fast { .. } => None,
        }
    }

    /// The fast decoder, on the fast backend.
    pub fn fast(&self) -> Option<&FastDecoder> {
        match &self.net {
            Net::Candle(_) => None,
            Net::Fast { fast, .. } => Some(fast),
        }
    }

    pub fn backend(&self) -> Backend {
        match &self.net {
            Net::Candle(_) => Backend::Candle,
            Net::Fast { .. } => Backend::Fast,
        }
    }

    /// The fast backend's weight format; `None` on candle.
    pub fn weights(&self) -> Option<WeightFormat> {
        self.fast().map(FastDecoder::format)
    }

    /// Decoder-only or Staria.
    pub fn kind(&self) -> ModelKind {
        match &self.net {
            Net::Candle(m) => m.kind(),
            Net::Fast { kind, .. } => *kind,
        }
    }

    /// Tokens in the model's cache.
    pub fn position(&self) -> usize {
        match &self.net {
            Net::Candle(m) => m.position(),
            Net::Fast { fast, .. } => fast.position(),
        }
    }

    /// The model's context length.
    pub fn max_seq_len(&self) -> usize {
        match &self.net {
            Net::Candle(m) => m.max_seq_len(),
            Net::Fast { fast, .. } => fast.max_seq_len(),
        }
    }

    /// Starts a piece from `prompt`; returns the next token's logits. Afterwards the cache holds
    /// exactly the prompt: the fast backend keeps the part of its cache the prompt shares (with
    /// the same snippets, for Staria) and prefills only the rest, so a repeated or re-triggered
    /// request starts sooner; the results are identical to a fresh start. On error the cache
    /// holds at most a prefix of the prompt.
    pub fn begin(&mut self, prompt: &Prompt) -> Result<&[f32]> {
        let kind = self.kind();
        let tokens = match kind {
            ModelKind::Decoder => &prompt.inline,
            ModelKind::Staria => &prompt.decoder,
        };
        let len = tokens.len();
        if len >= self.max_seq_len() {
            return Err(request(format!(
                "the prompt has {len} tokens but the model's context holds {}; capture shorter snippets",
                self.max_seq_len()
            )));
        }
        match &mut self.net {
            Net::Candle(m) => {
                let t = m.begin(prompt)?;
                copy_logits(&t, &mut self.logits)?;
            }
            Net::Fast {
                fast,
                encoder,
                cached,
                cached_snippets,
                ..
            } => {
                if tokens.is_empty() {
                    fast.reset();
                    cached.clear();
                    return Err(request(format!(
                        "{kind} model: the prompt's {} token list is empty; begin needs at least one token",
                        match kind {
                            ModelKind::Decoder => "inline",
                            ModelKind::Staria => "decoder",
                        }
                    )));
                }
                // Keep the cached prefix this prompt shares (the same snippets for Staria), less
                // its last token at least, whose logits are needed again.
                let same_latents = encoder.is_none() || *cached_snippets == prompt.snippets;
                let shared = if same_latents {
                    cached
                        .iter()
                        .zip(tokens)
                        .take_while(|(a, b)| a == b)
                        .count()
                } else {
                    0
                };
                let keep = shared.min(len - 1);
                fast.truncate(keep);
                cached.truncate(keep);
                if !same_latents && let Some(model) = encoder {
                    // The previous prompt's latents must not survive a failed encode.
                    fast.set_latents(&[], 0)?;
                    cached_snippets.clear();
                    let staria = model.staria().ok_or_else(|| {
                        request("the fast backend's encoder model is not a Staria model")
                    })?;
                    let latents = staria.encode_snippets(&prompt.snippets)?;
                    if let Some(t) = latents.latents() {
                        fast.set_latents_tensor(t)?;
                    }
                    cached_snippets.clone_from(&prompt.snippets);
                }
                self.logits.copy_from_slice(fast.prefill(&tokens[keep..])?);
                cached.extend_from_slice(&tokens[keep..]);
            }
        }
        Ok(&self.logits)
    }

    /// The tempo grid of the pieces generated from now on (`None`: tempo unknown), for a model
    /// with a beat-grid head (`staria_models::grid`; a no-op for others). It changes only the
    /// logits, not the KV cache, so the prompt reuse of `begin` stays exact.
    pub fn set_grid(&mut self, grid: Option<BeatGrid>) {
        match &mut self.net {
            Net::Candle(m) => m.set_grid(grid),
            Net::Fast { fast, .. } => fast.set_grid(grid),
        }
    }

    /// Forgets the KV cache (and Staria latents), so the next `begin` prefills its whole prompt.
    pub fn reset(&mut self) -> Result<()> {
        if let Net::Fast {
            fast,
            cached,
            cached_snippets,
            encoder,
            ..
        } = &mut self.net
        {
            fast.reset();
            cached.clear();
            cached_snippets.clear();
            if encoder.is_some() {
                fast.set_latents(&[], 0)?;
            }
        }
        // The candle backend's `begin` always starts from an empty cache.
        Ok(())
    }

    /// Feeds one token; returns the next token's logits. Allocates nothing on the fast backend.
    pub fn step(&mut self, id: u32) -> Result<&[f32]> {
        match &mut self.net {
            Net::Candle(m) => {
                let t = m.step(id)?;
                copy_logits(&t, &mut self.logits)?;
            }
            Net::Fast { fast, cached, .. } => {
                self.logits.copy_from_slice(fast.step(id)?);
                cached.push(id);
            }
        }
        Ok(&self.logits)
    }

    /// Drops the last `n` tokens from the KV cache (both backends), so that the next
    /// `step`/`extend` continues from `position() - n` and gives bit-identical logits to the
    /// first time those positions were fed. The logits buffer keeps the newest logits (feed a
    /// token to get fresh ones). Allocates nothing.
    pub fn rewind(&mut self, n: usize) -> Result<()> {
        let pos = self.position();
        if n > pos {
            return Err(request(format!(
                "cannot rewind {n} tokens: the cache holds {pos}"
            )));
        }
        match &mut self.net {
            Net::Candle(m) => m.truncate(pos - n),
            Net::Fast { fast, cached, .. } => {
                fast.truncate(pos - n);
                cached.truncate(pos - n);
            }
        }
        Ok(())
    }

    /// Feeds several tokens; returns the last one's logits.
    pub fn extend(&mut self, ids: &[u32]) -> Result<&[f32]> {
        match &mut self.net {
            Net::Candle(m) => {
                let t = m.extend(ids)?;
                copy_logits(&t, &mut self.logits)?;
            }
            Net::Fast { fast, cached, .. } => {
                self.logits.copy_from_slice(fast.prefill(ids)?);
                cached.extend_from_slice(ids);
            }
        }
        Ok(&self.logits)
    }

    /// The prompt for a request: the form token, the style, and every captured snippet.
    pub fn prompt_for(&self, snippets: &Snippets, req: &GenRequest) -> Result<Prompt> {
        let budget = self.tok.config().snippet_tokens;
        let spec =
            PromptSpec {
                style: req.style.clone(),
                form: if req.form.is_empty() {
                    None
                } else {
                    Some(normalize_form(&req.form).ok_or_else(|| {
                        request(format!("form {:?} must be letters A..D", req.form))
                    })?)
                },
                snippets: snippets
                    .captured()
                    .map(|(l, notes)| (l, self.snippet_tokens(notes, budget)))
                    .collect(),
            };
        Ok(self.tok.build_prompt(&spec)?)
    }

    /// The velocity the model is handed played notes at (the checkpoint's `prompt_velocity`),
    /// if its checkpoint names one.
    pub fn prompt_velocity(&self) -> Option<u8> {
        self.checkpoint.as_ref().and_then(|c| c.prompt_velocity)
    }

    /// Played notes as the model is handed them: at the checkpoint's `prompt_velocity` when it
    /// has one (snippets and the `Continue` context alike). A musician plays at any velocity,
    /// and a model follows only notes at the velocities it was trained on (measured with the
    /// shipped model: a C major scale at velocity 80 or 90 is restated 14-16 pitches of 16, at
    /// 64, 100 or 110 0-3).
    fn at_prompt_velocity<'a>(&self, notes: &'a [Note]) -> std::borrow::Cow<'a, [Note]> {
        match self.prompt_velocity() {
            Some(velocity) => notes
                .iter()
                .map(|n| Note {
                    velocity: velocity.clamp(1, 127),
                    ..*n
                })
                .collect(),
            None => std::borrow::Cow::Borrowed(notes),
        }
    }

    fn snippet_tokens(&self, notes: &[Note], budget: usize) -> Vec<u32> {
        self.tok
            .snippet_tokens(&self.at_prompt_velocity(notes), 0.0, budget)
    }

    /// Generates one request, calling `on_note` for each note as soon as it is complete (notes
    /// come in start order). Times are relative to the span start: the forced section's start,
    /// or for `Continue` the first bar line after `snippets.context` ([`continue_start_ms`]).
    pub fn generate(
        &mut self,
        snippets: &Snippets,
        req: &GenRequest,
        on_note: &mut dyn FnMut(GeneratedNote) -> Flow,
    ) -> Result<GenSummary> {
        let t0 = Instant::now();
        req.validate().map_err(GenError::Request)?;
        let mut cd =
            ConstrainedDecoder::new(&self.tok, &req.constraints).map_err(GenError::Request)?;
        let mut sampler = Sampler::new(self.tok.vocab_size(), req.sampling);
        let prompt = self.prompt_for(snippets, req)?;
        // A beat where the piece starts: the forced section's start (a bar line), or the
        // context's start (moved below when a long context is cut by whole windows).
        let beat_grid = BeatGrid::from_bpm(req.bpm)?;
        self.set_grid(Some(beat_grid));
        self.begin(&prompt)?;
        let mut prompt_tokens = self.position();

        let origin = match req.target {
            Target::Section(label) => {
                self.follower.start(&self.tok, prompt.snippet(label), 0.0);
                let before = self.position();
                if !self.force_section(&mut cd, label, 0.0)? {
                    return Err(request(
                        "the prompt fills the model's context; nothing can be generated",
                    ));
                }
                prompt_tokens += self.position() - before;
                0.0
            }
            Target::Continue => {
                self.follower.stop();
                let (ids, _end_ms, cut_ms) =
                    self.context_tokens(&snippets.context, prompt_tokens)?;
                self.set_grid(Some(BeatGrid::new(beat_grid.beat_ms, -cut_ms)?));
                if !ids.is_empty() {
                    self.extend(&ids)?;
                    for &id in &ids {
                        cd.push(&self.tok, id);
                    }
                }
                prompt_tokens += ids.len();
                // On the clock the model reads (it starts at the cut).
                continue_start_ms(&snippets.context, req.bpm, req.beats_per_bar) - cut_ms
            }
        };
        let span_start_ms = match req.target {
            Target::Section(_) => 0.0,
            Target::Continue => continue_start_ms(&snippets.context, req.bpm, req.beats_per_bar),
        };
        cd.set_span(origin, origin + req.span_ms());
        let prefill_ms = ms_since(t0);

        let t1 = Instant::now();
        let mut notes = 0usize;
        let mut first_note_ms = None;
        let limit = self.max_seq_len();
        let (stop, sampled, votes) = self.run_span(
            &mut cd,
            &mut sampler,
            limit,
            &no_extra_mask,
            &mut |n: RawNote| {
                notes += 1;
                first_note_ms.get_or_insert_with(|| ms_since(t0));
                on_note(GeneratedNote {
                    pitch: n.pitch,
                    velocity: n.velocity,
                    start_ms: n.start_ms - origin,
                    dur_ms: n.dur_ms,
                })
            },
        )?;
        Ok(GenSummary {
            notes,
            prompt_tokens,
            sampled_tokens: sampled,
            time_shift_votes: votes,
            stop,
            prefill_ms,
            decode_ms: ms_since(t1),
            first_note_ms,
            span_start_ms,
        })
    }

    /// Generates every section of `req.form` in order (`req.target` is not used): each
    /// occurrence is `req.bars` bars long, starts with its section tag, and is conditioned on
    /// everything generated before it. Sections the model leaves empty stay empty.
    pub fn generate_piece(&mut self, snippets: &Snippets, req: &GenRequest) -> Result<Piece> {
        let t0 = Instant::now();
        req.validate().map_err(GenError::Request)?;
        let form = normalize_form(&req.form)
            .filter(|f| f.bytes().all(|b| (b'A'..=b'D').contains(&b)))
            .ok_or_else(|| {
                request(format!(
                    "form {:?} must be a non-empty string of letters A..D",
                    req.form
                ))
            })?;
        let labels: Vec<SectionLabel> =
            form.chars().filter_map(SectionLabel::from_letter).collect();
        let mut cd =
            ConstrainedDecoder::new(&self.tok, &req.constraints).map_err(GenError::Request)?;
        let mut sampler = Sampler::new(self.tok.vocab_size(), req.sampling);
        let prompt = self.prompt_for(snippets, req)?;
        // The piece starts on a bar line: a beat at 0.
        self.set_grid(Some(BeatGrid::from_bpm(req.bpm)?));
        self.begin(&prompt)?;
        let prompt_tokens = self.position();
        let prefill_ms = ms_since(t0);

        let t1 = Instant::now();
        let span = req.span_ms();
        let window_ms = self.tok.config().window_ms as f64;
        let mut raw: Vec<RawNote> = Vec::new();
        let mut reports = Vec::with_capacity(labels.len());
        let mut sampled_total = 0;
        let mut votes_total = 0;
        let mut first_note_ms = None;
        let mut out_of_context = false;
        for (i, &label) in labels.iter().enumerate() {
            let (start, end) = (i as f64 * span, (i + 1) as f64 * span);
            let before = raw.len();
            let mut stop = StopReason::MaxSeqLen;
            if !out_of_context {
                self.follower.start(&self.tok, prompt.snippet(label), start);
                if self.force_section(&mut cd, label, start)? {
                    cd.set_span(start, end);
                    // An equal share of what is left, after reserving the `<T>`s and tags that
                    // later sections are forced to start with.
                    let later = labels.len() - i - 1;
                    let reserve = later * ((span / window_ms).ceil() as usize + 2);
                    let left = self.max_seq_len().saturating_sub(self.position() + reserve);
                    let limit = self.position() + left / (later + 1);
                    let (s, n, v) = self.run_span(
                        &mut cd,
                        &mut sampler,
                        limit,
                        &no_extra_mask,
                        &mut |note: RawNote| {
                            first_note_ms.get_or_insert_with(|| ms_since(t0));
                            raw.push(note);
                            Flow::Continue
                        },
                    )?;
                    stop = s;
                    sampled_total += n;
                    votes_total += v;
                }
                out_of_context = stop == StopReason::MaxSeqLen;
            }
            reports.push(SectionReport {
                label,
                start_ms: start,
                end_ms: end,
                notes: raw.len() - before,
                stop,
            });
        }

        let notes: Vec<Note> = raw.iter().map(|n| self.to_note(n)).collect();
        let sections: Vec<Section> = reports
            .iter()
            .map(|r| Section {
                label: r.label,
                marker_text: r.label.to_string(),
                start_tick: 0,
                end_tick: 0,
                start_ms: r.start_ms,
                end_ms: r.end_ms,
            })
            .collect();
        let mut song = Song::from_ms_notes(notes, sections, req.bpm);
        // Bars in the file should match the bars generated (from_ms_notes writes 4/4).
        let bpb = req.beats_per_bar;
        if bpb.fract() == 0.0 && (1.0..=32.0).contains(&bpb) {
            song.time_signatures = vec![TimeSignature {
                tick: 0,
                numerator: bpb as u8,
                denominator: 4,
            }];
        }
        let summary = GenSummary {
            notes: raw.len(),
            prompt_tokens,
            sampled_tokens: sampled_total,
            time_shift_votes: votes_total,
            stop: reports.last().map_or(StopReason::BarLimit, |r| r.stop),
            prefill_ms,
            decode_ms: ms_since(t1),
            first_note_ms,
            span_start_ms: 0.0,
        };
        Ok(Piece {
            song,
            sections: reports,
            summary,
        })
    }

    /// Piece tokens of the material to continue. A long context is cut from the front by whole
    /// windows until it fits the model's context with room to generate; the piece then starts at
    /// the cut. Returns the tokens, the material's end (ms, on that shortened clock) and the cut
    /// (ms of the original clock where the shortened one starts).
    fn context_tokens(&self, context: &[Note], prompt_len: usize) -> Result<(Vec<u32>, f64, f64)> {
        let end_ms = context
            .iter()
            .map(|n| n.end_ms)
            .filter(|e| e.is_finite())
            .fold(0.0, f64::max);
        if context.is_empty() {
            return Ok((Vec::new(), 0.0, 0.0));
        }
        let context = self.at_prompt_velocity(context);
        // Keep at least a quarter of the context for new tokens.
        let max_len = self.max_seq_len();
        let budget = (max_len - max_len / 4).saturating_sub(prompt_len);
        let window_ms = self.tok.config().window_ms as f64;
        let mut cut = 0.0;
        loop {
            let ids = self.tok.snippet_tokens(&context, cut, usize::MAX);
            if ids.len() <= budget {
                return Ok((ids, end_ms - cut, cut));
            }
            cut += window_ms;
        }
    }

    /// Starts section `label` at `start_ms` (not before the latest note) the way the model was
    /// trained to read it: `<T>`s to the window holding the start, with section windows the
    /// onset of the start (a new window starts there), and the section tag; without, the tag
    /// stands right before the section's first note. `false` when the context filled up on the
    /// way.
    pub(crate) fn force_section(
        &mut self,
        cd: &mut ConstrainedDecoder,
        label: SectionLabel,
        start_ms: f64,
    ) -> Result<bool> {
        for id in self.tok.section_start(cd.decoder(), label, start_ms) {
            if !self.feed(cd, id)? {
                return Ok(false);
            }
        }
        Ok(true)
    }

    /// Feeds a forced or sampled token to the model and the decoder. `false` when the context is
    /// full (nothing was fed).
    pub(crate) fn feed(&mut self, cd: &mut ConstrainedDecoder, id: u32) -> Result<bool> {
        if self.position() >= self.max_seq_len() {
            return Ok(false);
        }
        self.step(id)?;
        cd.push(&self.tok, id);
        Ok(true)
    }

    /// Samples until the span is full or something stops it; returns why, how many tokens were
    /// sampled and how many notes an onset vote moved behind a `<T>`. Notes are clipped at the
    /// span end. Past the cache position `limit` the span ends at the next note boundary (so
    /// what follows still reads as well formed).
    ///
    /// A note's onset is sampled from the model's whole onset distribution over the window
    /// (`ConstrainedDecoder::apply_open`); one before the window's last onset is a vote for
    /// `<T>`: the note token is taken back (one position of the KV cache), `<T>` and the note
    /// token are fed, and the onset is sampled in the new window (`OnsetRead`).
    pub(crate) fn run_span(
        &mut self,
        cd: &mut ConstrainedDecoder,
        sampler: &mut Sampler,
        limit: usize,
        extra_mask: ExtraMask<'_>,
        emit: &mut dyn FnMut(RawNote) -> Flow,
    ) -> Result<(StopReason, usize, usize)> {
        let (_, span_end) = cd.span();
        let mut sampled = 0;
        let mut votes = 0;
        // The last token fed: at `Expect::Onset`, the note or drum token waiting for its onset.
        let mut last_fed: Option<u32> = None;
        loop {
            if cd.span_exhausted() {
                return Ok((StopReason::BarLimit, sampled, votes));
            }
            if self.position() >= self.max_seq_len() {
                return Ok((StopReason::MaxSeqLen, sampled, votes));
            }
            if self.position() >= limit && cd.expects() == Expect::Any {
                return Ok((StopReason::TokenBudget, sampled, votes));
            }
            let open = cd.onset_may_vote() && last_fed.is_some();
            if open {
                self.spare.copy_from_slice(&self.logits);
                cd.apply_open(&mut self.logits);
            } else {
                cd.apply(&mut self.logits);
            }
            extra_mask(cd, &mut self.logits);
            let follow_bias = sampler.params().follow_bias;
            self.follower
                .bias(&self.tok, cd.decoder(), &mut self.logits, follow_bias);
            let mut id = sampler.sample(&self.logits)?;
            sampled += 1;
            if open {
                match cd.read_onset(&self.tok, id) {
                    OnsetRead::Accept => {}
                    OnsetRead::TimeShift => {
                        let note = last_fed.expect("`open` needs the pending note token");
                        self.rewind(1)?;
                        cd.retract_pending();
                        votes += 1;
                        if !self.feed(cd, self.tok.time_shift_id())? || !self.feed(cd, note)? {
                            return Ok((StopReason::MaxSeqLen, sampled, votes));
                        }
                        continue;
                    }
                    OnsetRead::Clamp => {
                        self.logits.copy_from_slice(&self.spare);
                        cd.apply(&mut self.logits);
                        extra_mask(cd, &mut self.logits);
                        self.follower
                            .bias(&self.tok, cd.decoder(), &mut self.logits, follow_bias);
                        id = sampler.sample(&self.logits)?;
                    }
                }
            }
            // The model moving time past the span ends it (a pending note token without its
            // onset is dropped by the decoder when the next section tag is forced).
            if cd.ends_span(&self.tok, id) {
                return Ok((StopReason::BarLimit, sampled, votes));
            }
            // Stops are not fed, so a following section can be forced right after the last note.
            match self.tok.kind(id) {
                TokenKind::End => return Ok((StopReason::End, sampled, votes)),
                TokenKind::Section(l) => return Ok((StopReason::Section(l), sampled, votes)),
                _ => {}
            }
            last_fed = Some(id);
            self.follower.advance(&self.tok, id);
            if let Some(StreamEvent::Note {
                pitch,
                velocity,
                instrument,
                drum,
                start_ms,
                dur_ms,
            }) = self.feed_event(cd, id)?
            {
                let dur_ms = dur_ms.min(span_end - start_ms);
                if dur_ms > 0.0 {
                    let flow = emit(RawNote {
                        pitch,
                        velocity,
                        instrument,
                        drum,
                        start_ms,
                        dur_ms,
                        pos_after: self.position(),
                    });
                    if flow == Flow::Stop {
                        return Ok((StopReason::Stopped, sampled, votes));
                    }
                }
            }
        }
    }

    /// Live modes: stop following a snippet (the performance is not a section's copy).
    pub(crate) fn stop_following(&mut self) {
        self.follower.stop();
    }

    /// The tokens in the KV cache, oldest first, on the fast backend (`None` on candle, which
    /// keeps no record). The live modes replay them into their grammar state after a rewind.
    pub fn cached_tokens(&self) -> Option<&[u32]> {
        match &self.net {
            Net::Candle(_) => None,
            Net::Fast { cached, .. } => Some(cached),
        }
    }

    fn feed_event(&mut self, cd: &mut ConstrainedDecoder, id: u32) -> Result<Option<StreamEvent>> {
        self.step(id)?;
        Ok(cd.push(&self.tok, id))
    }

    fn to_note(&self, n: &RawNote) -> Note {
        // Instruments get channels in order, skipping the drum channel 9.
        let channel = if n.drum {
            9
        } else if n.instrument >= 9 {
            (n.instrument + 1).min(15)
        } else {
            n.instrument
        };
        Note {
            pitch: n.pitch,
            velocity: n.velocity.max(1),
            channel,
            program: if n.drum {
                0
            } else {
                self.tok.program_for_instrument(n.instrument)
            },
            start_tick: 0,
            end_tick: 0,
            start_ms: n.start_ms,
            end_ms: n.start_ms + n.dur_ms,
        }
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
