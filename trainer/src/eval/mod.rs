//! `staria-train eval`: checkpoints measured on any folder of MIDI files (with
//! `--split-seed/--split-fraction`, only the pieces `prepare` held out for validation).
//!
//! - `nll_bits_per_token`: next-token loss over every piece body token (prompt given: style,
//!   form, snippets of each section), in windows of `seq_len` as in training; the same targets
//!   for both model kinds; on the first `max_pieces` pieces (0: all). `nll_bits_per_second`: the
//!   same bits divided by the pieces' seconds.
//! - `snippet_gain_bits`: on the NLL pieces with two or more snippets, their NLL (bits/token)
//!   with the snippets' letters rotated (A's material under the B tag, B's under the next
//!   letter's, the last letter's under A) minus it with their own: what the model reads from
//!   which snippet belongs to which section, teacher-forced (0: it ignores the assignment).
//! - `snippet_content_bits`: on the NLL pieces whose every letter the next NLL piece (in folder
//!   order, the last one's: the first) also has, their NLL with that piece's snippets under the
//!   same letters minus it with their own: what the model reads from the snippets' music at
//!   all, teacher-forced (0: it ignores their content). Unlike removing the snippets, this
//!   keeps a Staria model's cross-attention sites on (they are skipped without snippets).
//! - Generation: the pieces whose snippets A and B (first occurrence of each letter, at most
//!   the snippet budget) are non-empty are eligible; `pieces` of them (default 60), spread
//!   evenly over the eligible ones in folder order (all when fewer), each give one generation:
//!   the model gets snippets A and B (and the piece's style, the form's token) and plays the
//!   form (`--form`, AABA by default: B after two As, far from its snippet), each section as long as the reference's first occurrence of its letter (clamped
//!   to 1 s..`max_section_ms`), sampled at `temperature` / `min_p` from one `StdRng(seed)`,
//!   section tags forced on time (`generate::generate` over `sampler::LogitSource`). It runs on
//!   the fast CPU decoder (f16 weights by default, as the engine) or the candle model
//!   (`--backend candle`, and always on a GPU device).
//!
//!   Bar comparisons: a generated section's notes are those starting between its tag's first
//!   note and the next section's; its bars and the snippet's are cut every `bar_ms` (the
//!   reference's first bar) from each one's first onset, and a bar's content is its set of
//!   (pitch, onset at 1/48 bar) pairs (`music`); two bars' similarity is their Jaccard index.
//!   The `k`-th decoded section is the `k`-th planned one; a planned section that did not start
//!   or has no note counts as a failure in every share below.
//!   - `form_adherence` (balanced): a section adheres when the mean, over its bars, of the best
//!     similarity to any bar of its own snippet is strictly greater than to the other snippet.
//!     Per generation, the share of adhering A sections and the share of adhering B sections
//!     are averaged (each letter weighs the same: copying A everywhere scores 0.5, not 0.75);
//!     `form_adherence` is the mean over generations. `form_adherence_lo`/`_hi`: 95% percentile
//!     bootstrap interval of that mean (2000 resamples of the generations with replacement,
//!     `StdRng` seed 0, nearest-rank 2.5th/97.5th percentiles). `form_adherence_a`/`_b`: share of
//!     all A (B) sections that adhere; `form_adherence_pooled`: share of all sections (the
//!     former, unbalanced definition).
//!   - `similarity_a` / `_b`: the mean, over that letter's sections with notes, of the two
//!     similarities the adherence test compares (own snippet, most similar other snippet).
//!   - `verbatim_copy_share`: share of planned sections that copy a prompt snippet (either)
//!     verbatim: bar `i` of the section against bar `i` of the snippet, for every `i` both have,
//!     and at least 75% of those bars with similarity >= 0.9. Copying is not adherence.
//!   - `density_match_rate`: share of planned sections whose notes per second (notes / span from
//!     first onset to last note end) are within ±30% of their own snippet's.
//!   - `onset_grid_agreement`: share of the planned sections' onsets within 20 ms of the
//!     sixteenth-note grid of the prompt: grid step a quarter of the source MIDI's quarter note
//!     at the start of that letter's first section, anchored at the section's first onset
//!     (chance level: 40 ms / sixteenth, e.g. 32% at 120 bpm).
//!   - `window_edge_piling`: share of generated notes whose onset (ms from `<S>`) falls in the
//!     last 100 ms of its `window_ms` (5 s) token window (uniform onsets: 2%).
//!   - `reference_form_adherence`: the same adherence test on the reference pieces' own
//!     repeats (each A or B section after the first of its letter, against the snippets), per
//!     letter over all pieces, then averaged over letters; `reference_repeats` counts them.
//!     What real music scores here, to read the generations' figure against.
//!   - `reference_*`: the same three rhythm measures on the reference pieces generated from:
//!     density match of every A or B section against its snippet, grid agreement of every
//!     section (grid from the tempo at its start, anchored at its first onset), piling of all
//!     notes. A sanity row: quantised real music is near 1 on the grid and near 2% at the edge.
//!   - `pitch_class_distance`: total-variation distance between the duration-weighted
//!     pitch-class histograms of generation and reference piece, in [0, 1].
//!   - `note_density_distance`: |log2| of the ratio of notes per second, generation vs reference.
//!   - `valid_rate`: share of generations that decode (the tokenizer's tolerant decoder) to at
//!     least one note and a MIDI file that writes and reads back with at least one note (the
//!     count may drop: overlapping notes of one pitch merge in MIDI).
//!   - `grammar_clean_rate`: share of generations without a single grammar error (a token out of
//!     place for the note grammar, see `generate`), and `grammar_error_rate`: such tokens per
//!     generated token. The decoder drops malformed notes, so these say how many were lost.
//! - With `write_dir`, each generation and its reference piece are written as MIDI
//!   (`<dir>/<model>/<nnn>.gen.mid`, `.ref.mid`), section markers included, to listen to and draw.
//! - `nll_seconds`, `generation_seconds`: wall time of the two passes; `generation_backend`.
//!
//! Files: this one holds the options, the result, the evaluation data and [`evaluate`];
//! `model.rs` runs [`evaluate_model`] (NLL passes, generations); `form.rs` scores form adherence
//! and rhythm; `table.rs` prints [`table`]; `tests.rs` its unit tests.

use std::path::{Path, PathBuf};

use candle_core::Device;
use serde::Serialize;
use staria_models::checkpoint;
use staria_models::fast::{FastDecoder, WeightFormat};
use staria_models::tokenizer::Tokenizer;
use staria_models::{SectionLabel, Song};

use crate::error::{Result, TrainError};
use crate::models;
use crate::prepare::{self, LoadedPiece};

use form::eval_form;

mod form;
mod model;
mod table;
#[cfg(test)]
mod tests;

pub use form::{FormScores, SnippetRef, reference_form, reference_rhythm, score_form};
pub use model::evaluate_model;
pub use table::table;

/// What generation runs on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum GenBackend {
    /// The candle model (any device).
    Candle,
    /// The fast CPU decoder (the engine's default backend) with its weights packed in this
    /// format; on a non-CPU device the candle model is used instead.
    Fast(WeightFormat),
}

impl GenBackend {
    pub fn name(self) -> String {
        match self {
            GenBackend::Candle => "candle".into(),
            GenBackend::Fast(f) => format!("fast-{}", f.name()),
        }
    }
}

#[derive(Debug, Clone)]
pub struct EvalOptions {
    /// Tokens per window; default: the training run's `data.seq_len`, else 512.
    pub seq_len: Option<usize>,
    /// Snippet budget; default: the training run's `data.snippet_tokens`, else the checkpoint
    /// tokenizer's `snippet_tokens`.
    pub snippet_tokens: Option<usize>,
    /// Generations (one per piece with sections A and B, spread evenly over those pieces).
    pub pieces: usize,
    /// Pieces whose NLL is measured, at most: the first ones (0: all).
    pub max_pieces: usize,
    /// Only pieces `prepare` with this seed and fraction puts in validation.
    pub validation_split: Option<(u64, f64)>,
    pub seed: u64,
    pub temperature: f64,
    pub min_p: f64,
    pub max_section_ms: f64,
    pub device: Device,
    pub backend: GenBackend,
    /// Form-guidance scale (`sampler::Guided`; 0: the model alone). Needs the fast backend.
    pub guidance: f64,
    /// The form generated, letters A and B (the snippets given); AABA by default.
    pub form: String,
    /// Snippet following (`generate::SnippetFollower`): logit bonus for the snippet's next
    /// token; 0: the model alone.
    pub follow_bias: f32,
    /// Where to write each generation and its reference piece as MIDI, to listen to and draw
    /// (`<dir>/<model>/<nnn>.gen.mid` and `.ref.mid`); `None`: nothing is written.
    pub write_dir: Option<PathBuf>,
}

impl Default for EvalOptions {
    fn default() -> Self {
        Self {
            seq_len: None,
            snippet_tokens: None,
            pieces: 60,
            max_pieces: 0,
            validation_split: None,
            seed: 0,
            temperature: 1.0,
            min_p: 0.05,
            max_section_ms: 12_000.0,
            device: Device::Cpu,
            backend: GenBackend::Fast(WeightFormat::F16),
            guidance: 0.0,
            form: "AABA".into(),
            follow_bias: 0.0,
            write_dir: None,
        }
    }
}

/// Seed of the bootstrap behind `form_adherence_lo` / `_hi` (fixed: the interval depends only
/// on the per-piece scores).
pub const BOOTSTRAP_SEED: u64 = 0;
/// Bootstrap resamples.
pub const BOOTSTRAP_RESAMPLES: usize = 2000;

/// One model's figures (see the module docs for every definition).
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct EvalResult {
    pub model: String,
    pub kind: String,
    pub nll_bits_per_token: f64,
    pub nll_bits_per_second: f64,
    /// Bits per token the pieces' own snippets save over the same snippets with their letters
    /// rotated (A's material under the B tag...), teacher-forced, on the NLL pieces with two or
    /// more snippets: how much the model reads which snippet belongs to which section.
    pub snippet_gain_bits: f64,
    /// Bits per token the pieces' own snippets save over another piece's under the same
    /// letters, teacher-forced: how much the model reads the snippets' music at all.
    pub snippet_content_bits: f64,
    /// Balanced form adherence: per generation the mean over letters (A, B) of the share of that
    /// letter's sections that adhere, averaged over generations.
    pub form_adherence: f64,
    /// 95% percentile-bootstrap interval of `form_adherence` over generations.
    pub form_adherence_lo: f64,
    pub form_adherence_hi: f64,
    /// Share of the A sections (B sections) that adhere, over all generations.
    pub form_adherence_a: f64,
    pub form_adherence_b: f64,
    /// The old, unbalanced figure: share of all planned sections that adhere (copying A
    /// everywhere scores 0.75 on AABA).
    pub form_adherence_pooled: f64,
    /// Mean bar similarity of the A (B) sections with notes to their own snippet and to the
    /// other one: what adherence thresholds, as levels (near 0 for both: material from neither).
    pub similarity_a: (f64, f64),
    pub similarity_b: (f64, f64),
    /// Share of planned sections that copy a prompt snippet verbatim.
    pub verbatim_copy_share: f64,
    /// Share of planned sections within ±30% of their snippet's notes per second.
    pub density_match_rate: f64,
    /// Share of generated onsets within 20 ms of the prompt's sixteenth-note grid.
    pub onset_grid_agreement: f64,
    /// Share of generated notes starting in the last 100 ms of a token time window.
    pub window_edge_piling: f64,
    /// Form adherence of the reference pieces' own repeats (A and B sections after the first of
    /// each letter), per letter then averaged: what real music scores on the same measure.
    pub reference_form_adherence: f64,
    /// The repeat sections behind `reference_form_adherence`.
    pub reference_repeats: usize,
    /// The same three rhythm measures on the reference pieces generated from.
    pub reference_density_match_rate: f64,
    pub reference_onset_grid_agreement: f64,
    pub reference_window_edge_piling: f64,
    pub pitch_class_distance: f64,
    pub note_density_distance: f64,
    pub valid_rate: f64,
    pub grammar_clean_rate: f64,
    /// Pieces whose NLL was measured.
    pub pieces: usize,
    pub generations: usize,
    pub target_tokens: u64,
    pub grammar_error_rate: f64,
    pub skipped_files: usize,
    /// "candle" or "fast-f16" etc.
    pub generation_backend: String,
    /// The form generated (`EvalOptions::form`).
    pub form: String,
    /// Wall time of the NLL pass and of the generations (and their measures).
    pub nll_seconds: f64,
    pub generation_seconds: f64,
}

/// The pieces of a folder, read once for every model.
pub struct EvalData {
    pub pieces: Vec<LoadedPiece>,
    pub skipped: Vec<(String, String)>,
}

impl EvalData {
    /// Every readable piece below `dir` (of the validation split when asked); `max_pieces` only
    /// limits the NLL pass.
    pub fn load(dir: &Path, opts: &EvalOptions) -> Result<Self> {
        let files = prepare::find_midi_files(dir)?;
        let manifest = prepare::read_manifest(dir);
        let styles = Tokenizer::new(Default::default())?;
        let mut pieces = Vec::new();
        let mut skipped = Vec::new();
        for rel in &files {
            let id = rel.to_string_lossy().replace('\\', "/");
            if let Some((seed, frac)) = opts.validation_split
                && !prepare::is_validation(&id, seed, frac)
            {
                continue;
            }
            match prepare::load_piece(dir, rel, &styles, &manifest) {
                Ok(p) => pieces.push(p),
                Err(reason) => skipped.push((id, reason)),
            }
        }
        if pieces.is_empty() {
            return Err(TrainError::Data(format!(
                "no readable MIDI piece below {} ({} skipped)",
                dir.display(),
                skipped.len()
            )));
        }
        Ok(Self { pieces, skipped })
    }
}

/// Snippets of each section (first occurrence) of a song, at most `max` tokens.
fn snippets_of(tok: &Tokenizer, song: &Song, max: usize) -> Vec<(SectionLabel, Vec<u32>)> {
    SectionLabel::ALL
        .iter()
        .filter_map(|&l| {
            tok.extract_snippet(song, l, max)
                .filter(|s| !s.is_empty())
                .map(|s| (l, s))
        })
        .collect()
}

/// Evaluates one loaded checkpoint.
pub fn evaluate(model_dir: &Path, data: &EvalData, opts: &EvalOptions) -> Result<EvalResult> {
    eval_form(&opts.form)?; // before the NLL pass, so a bad form fails at once
    let ck = checkpoint::load(model_dir, &opts.device)?;
    let state = models::load_state(model_dir)?;
    let seq_len = opts
        .seq_len
        .or(state.as_ref().map(|s| s.config.data.seq_len))
        .unwrap_or(512)
        .min(ck.model.max_seq_len());
    let snippet_tokens = opts
        .snippet_tokens
        .or(state.as_ref().map(|s| s.config.data.snippet_tokens))
        .unwrap_or(ck.tokenizer.config().snippet_tokens);
    // The fast decoder, twice with form guidance (its second stream).
    let mut fast = Vec::new();
    match opts.backend {
        GenBackend::Fast(format) if opts.device.is_cpu() => {
            let tensors = checkpoint::load_weights(model_dir, &ck.config.model, &Device::Cpu)?;
            for _ in 0..if opts.guidance > 0.0 { 2 } else { 1 } {
                let mut f =
                    FastDecoder::from_checkpoint_tensors(&ck.config.model, format, &tensors)?;
                f.set_tokenizer(&ck.tokenizer);
                fast.push(f);
            }
        }
        _ if opts.guidance > 0.0 => {
            return Err(TrainError::config(
                "--guidance runs on the fast backend (CPU device, --backend fast)",
            ));
        }
        _ => {}
    }
    let mut model = ck.model;
    evaluate_model(
        &mut model,
        fast,
        &ck.tokenizer,
        &model_dir.display().to_string(),
        data,
        seq_len,
        snippet_tokens,
        opts,
    )
}
