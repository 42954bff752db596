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

use std::path::{Path, PathBuf};
use std::time::Instant;

use candle_core::Device;
use rand::SeedableRng;
use rand::rngs::StdRng;
use serde::Serialize;
use staria_models::checkpoint;
use staria_models::fast::{FastDecoder, WeightFormat};
use staria_models::grid::{BeatGrid, GridRows};
use staria_models::midi::{read_midi, write_midi};
use staria_models::model::AnyModel;
use staria_models::tokenizer::{PromptSpec, Tokenizer};
use staria_models::window::WindowBins;
use staria_models::{Note, Section, SectionLabel, Song};

use crate::batch::{Augment, Layout, collate, masked_nll, prepare_piece, truncate_snippet};
use crate::error::{Result, TrainError};
use crate::generate::Sampling;
use crate::generate::generate;
use crate::models;
use crate::music::{self, BarContent};
use crate::prepare::{self, LoadedPiece};
use crate::sampler::{CandleLogits, FastLogits, Guided, LogitSource, rotated_snippets};

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

/// Per-generation tallies (see the module docs for the definitions).
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct FormScores {
    /// (adherent, planned) sections per letter A and B.
    pub a: (usize, usize),
    pub b: (usize, usize),
    /// Per letter A and B: sums over the sections that have notes of their mean best-bar
    /// similarity to their own snippet and to the other one, and how many such sections.
    pub similarity: [(f64, f64, usize); 2],
    /// Planned sections that copy a snippet verbatim.
    pub copies: usize,
    /// Planned sections within ±30% of their snippet's notes per second.
    pub density_matches: usize,
    /// Onsets on the prompt's sixteenth grid, and all onsets of the planned sections.
    pub on_grid: (usize, usize),
}

impl FormScores {
    pub fn planned(&self) -> usize {
        self.a.1 + self.b.1
    }
    /// The mean over letters with planned sections of their adherent share.
    pub fn balanced(&self) -> f64 {
        let shares: Vec<f64> = [self.a, self.b]
            .iter()
            .filter(|x| x.1 > 0)
            .map(|&(h, n)| h as f64 / n as f64)
            .collect();
        if shares.is_empty() {
            f64::NAN
        } else {
            shares.iter().sum::<f64>() / shares.len() as f64
        }
    }
}

/// Notes starting in `[start, end)`, times from the first of them (empty if none).
fn section_notes(notes: &[Note], start: f64, end: f64) -> Vec<Note> {
    let inside: Vec<Note> = notes
        .iter()
        .filter(|n| n.start_ms >= start && n.start_ms < end)
        .copied()
        .collect();
    music::from_first_onset(&inside)
}

/// The prompt material of one letter, as the measures see it.
#[derive(Debug, Clone)]
pub struct SnippetRef {
    pub label: SectionLabel,
    /// The snippet's notes, from its first onset.
    pub notes: Vec<Note>,
    /// Their bars (`bar_ms` each, from the first onset).
    pub bars: Vec<BarContent>,
    /// Sixteenth-note length (ms) at the reference section's start, from the source tempo map.
    pub sixteenth_ms: f64,
}

impl SnippetRef {
    pub fn new(label: SectionLabel, notes: &[Note], bar_ms: f64, sixteenth_ms: f64) -> Self {
        let notes = music::from_first_onset(notes);
        let len = notes.iter().map(|n| n.end_ms).fold(0.0, f64::max);
        let bars = music::bars_from_zero(&notes, len, bar_ms);
        Self {
            label,
            notes,
            bars,
            sixteenth_ms,
        }
    }
}

/// The letters of an evaluation form: A and B only (the snippets every eligible piece has).
fn eval_form(form: &str) -> Result<Vec<SectionLabel>> {
    let labels: Vec<SectionLabel> = form
        .chars()
        .map(|c| match c {
            'A' => Some(SectionLabel::A),
            'B' => Some(SectionLabel::B),
            _ => None,
        })
        .collect::<Option<_>>()
        .unwrap_or_default();
    if labels.is_empty() || !labels.contains(&SectionLabel::A) || !labels.contains(&SectionLabel::B)
    {
        return Err(TrainError::config(format!(
            "--form {form:?}: letters A and B only, both of them (the snippets given are A and B)"
        )));
    }
    Ok(labels)
}

/// Scores a generated piece against its plan: the `k`-th decoded section is the `k`-th
/// planned one (tags are forced in plan order); a planned section that was not started or has
/// no note counts against every share. `snippets` holds A and B.
pub fn score_form(
    song: &Song,
    plan: &[SectionLabel],
    snippets: &[SnippetRef],
    bar_ms: f64,
) -> FormScores {
    let mut sc = FormScores::default();
    for (k, &label) in plan.iter().enumerate() {
        let slot = match label {
            SectionLabel::A => &mut sc.a,
            _ => &mut sc.b,
        };
        slot.1 += 1;
        let Some(sec) = song.sections.get(k).filter(|s| s.label == label) else {
            continue;
        };
        let notes = section_notes(&song.notes, sec.start_ms, sec.end_ms);
        let Some(own) = snippets.iter().find(|s| s.label == label) else {
            continue;
        };
        if notes.is_empty() {
            continue;
        }
        let bars = section_bars(song, sec, &notes, bar_ms);
        let (own_sim, other_sim) = similarities(&bars, own, snippets);
        if own_sim > other_sim {
            slot.0 += 1;
        }
        let sim = &mut sc.similarity[usize::from(label != SectionLabel::A)];
        *sim = (sim.0 + own_sim, sim.1 + other_sim, sim.2 + 1);
        if snippets
            .iter()
            .any(|s| music::is_verbatim_copy(&bars, &s.bars))
        {
            sc.copies += 1;
        }
        if music::density_matches(&notes, &own.notes) {
            sc.density_matches += 1;
        }
        let (hit, total) =
            music::onsets_on_grid(notes.iter().map(|n| n.start_ms), 0.0, own.sixteenth_ms);
        sc.on_grid.0 += hit;
        sc.on_grid.1 += total;
    }
    sc
}

/// (own, other) means of a letter's similarity sums; NaN without sections.
fn mean_similarity((own, other, n): (f64, f64, usize)) -> (f64, f64) {
    if n == 0 {
        (f64::NAN, f64::NAN)
    } else {
        (own / n as f64, other / n as f64)
    }
}

/// The bars of a section's `notes` (from [`section_notes`]): `bar_ms` each from its first onset
/// to the section's end.
fn section_bars(song: &Song, sec: &Section, notes: &[Note], bar_ms: f64) -> Vec<BarContent> {
    let first = song
        .notes
        .iter()
        .map(|n| n.start_ms)
        .filter(|&t| t >= sec.start_ms && t < sec.end_ms)
        .fold(f64::INFINITY, f64::min);
    music::bars_from_zero(notes, sec.end_ms - first, bar_ms)
}

/// A section's `bars` against its `own` snippet's and the most similar other snippet's.
fn similarities(bars: &[BarContent], own: &SnippetRef, snippets: &[SnippetRef]) -> (f64, f64) {
    let own_sim = music::sequence_similarity(bars, &own.bars);
    let other_sim = snippets
        .iter()
        .filter(|s| s.label != own.label)
        .map(|s| music::sequence_similarity(bars, &s.bars))
        .fold(0.0, f64::max);
    (own_sim, other_sim)
}

/// Whether a section's `bars` are strictly more like its `own` snippet's than any other's.
fn adheres(bars: &[BarContent], own: &SnippetRef, snippets: &[SnippetRef]) -> bool {
    let (own_sim, other_sim) = similarities(bars, own, snippets);
    own_sim > other_sim
}

/// Form adherence of a reference piece's own repeats: (adhering, all) of its A sections and of
/// its B sections after the first of each letter (the first holds the snippet itself), measured
/// as [`score_form`] measures a generation. What real music scores: the ceiling to read the
/// generations' figure against.
pub fn reference_form(
    song: &Song,
    snippets: &[SnippetRef],
    bar_ms: f64,
) -> ((usize, usize), (usize, usize)) {
    let (mut a, mut b) = ((0, 0), (0, 0));
    let mut seen = Vec::new();
    for sec in &song.sections {
        let Some(own) = snippets.iter().find(|s| s.label == sec.label) else {
            continue;
        };
        if !seen.contains(&sec.label) {
            seen.push(sec.label);
            continue;
        }
        let slot = if sec.label == SectionLabel::A {
            &mut a
        } else {
            &mut b
        };
        slot.1 += 1;
        let notes = section_notes(&song.notes, sec.start_ms, sec.end_ms);
        if !notes.is_empty() {
            let bars = section_bars(song, sec, &notes, bar_ms);
            slot.0 += usize::from(adheres(&bars, own, snippets));
        }
    }
    (a, b)
}

/// The rhythm measures of a reference piece: (sections of letters in `snippets` within ±30% of
/// their snippet's density, such sections), (onsets on the grid of their section's tempo and
/// first onset, onsets) over all sections, (notes at a window edge, notes).
pub fn reference_rhythm(
    song: &Song,
    snippets: &[SnippetRef],
    window_ms: f64,
) -> ((usize, usize), (usize, usize), (usize, usize)) {
    let (mut dens, mut grid) = ((0, 0), (0, 0));
    for sec in &song.sections {
        let notes = section_notes(&song.notes, sec.start_ms, sec.end_ms);
        if let Some(own) = snippets.iter().find(|s| s.label == sec.label) {
            dens.1 += 1;
            dens.0 += usize::from(music::density_matches(&notes, &own.notes));
        }
        let sixteenth = music::quarter_ms_at(song, sec.start_ms) / 4.0;
        let (h, t) = music::onsets_on_grid(notes.iter().map(|n| n.start_ms), 0.0, sixteenth);
        grid.0 += h;
        grid.1 += t;
    }
    let edge = music::onsets_at_window_edge(song.notes.iter().map(|n| n.start_ms), window_ms);
    (dens, grid, edge)
}

/// Evaluates a model in memory (also what the tests compare against a reloaded checkpoint).
/// `fast`, when not empty, is the same model's fast decoder and does the generating; a second
/// one is form guidance's contrasting stream (`opts.guidance`).
#[allow(clippy::too_many_arguments)]
pub fn evaluate_model(
    model: &mut AnyModel,
    fast: Vec<FastDecoder>,
    tok: &Tokenizer,
    name: &str,
    data: &EvalData,
    seq_len: usize,
    snippet_tokens: usize,
    opts: &EvalOptions,
) -> Result<EvalResult> {
    let device = &opts.device;
    let (layout, snippet_len) = match model.config() {
        staria_models::model::ModelConfig::Decoder(_) => (Layout::Inline, 0),
        staria_models::model::ModelConfig::Staria(s) => (Layout::Staria, s.encoder.max_seq_len),
    };
    // NLL.
    let t_nll = Instant::now();
    let (mut nats, mut count, mut seconds) = (0.0, 0.0, 0.0);
    // Pieces with two or more snippets, NLL with their own snippets and with the letters
    // rotated (nats, tokens each): what the right snippet in the right place is worth.
    let (mut own, mut rotated) = ((0.0, 0.0), (0.0, 0.0));
    let nll_pieces = if opts.max_pieces > 0 {
        opts.max_pieces.min(data.pieces.len())
    } else {
        data.pieces.len()
    };
    let piece_nll =
        |p: &LoadedPiece, snippets: &[(SectionLabel, Vec<u32>)]| -> Result<(f64, f64)> {
            let tokens = tok.encode_piece(&p.song);
            let form: String = p.song.sections.iter().map(|s| s.label.letter()).collect();
            let prepared = prepare_piece(
                tok,
                &tokens,
                snippets,
                p.style.as_deref(),
                &form,
                p.song.constant_quarter_ms(),
                Augment::NONE,
                snippet_tokens,
            )?;
            let (mut nats, mut count) = (0.0, 0.0);
            for chunk in prepared.all_examples(tok, seq_len)?.chunks(8) {
                let window = WindowBins::of(model.config().decoder());
                let grid = GridRows::of(model.config().decoder(), tok);
                let batch = collate(
                    chunk,
                    layout,
                    tok.pad_id(),
                    window,
                    grid,
                    snippet_len,
                    device,
                )?;
                let logits = model.forward_train(
                    &batch.ids,
                    batch.win.as_ref(),
                    batch.grid.as_ref(),
                    batch.snippets.as_ref(),
                )?;
                let (_, s, c) = masked_nll(&logits, &batch.targets, &batch.mask)?;
                nats += s;
                count += c;
            }
            Ok((nats, count))
        };
    // NLL with the own snippets and with the next piece's under the same letters.
    let (mut own_c, mut foreign) = ((0.0, 0.0), (0.0, 0.0));
    for (i, p) in data.pieces[..nll_pieces].iter().enumerate() {
        let snippets = snippets_of(tok, &p.song, tok.config().snippet_tokens);
        let (n, c) = piece_nll(p, &snippets)?;
        nats += n;
        count += c;
        if snippets.len() >= 2 {
            let (rn, rc) = piece_nll(p, &rotated_snippets(&snippets))?;
            own = (own.0 + n, own.1 + c);
            rotated = (rotated.0 + rn, rotated.1 + rc);
        }
        if nll_pieces >= 2 && !snippets.is_empty() {
            let other = &data.pieces[(i + 1) % nll_pieces];
            let theirs = snippets_of(tok, &other.song, tok.config().snippet_tokens);
            let swapped: Vec<(SectionLabel, Vec<u32>)> = snippets
                .iter()
                .filter_map(|(l, _)| theirs.iter().find(|(m, _)| m == l).cloned())
                .collect();
            if swapped.len() == snippets.len() {
                let (fnats, fc) = piece_nll(p, &swapped)?;
                own_c = (own_c.0 + n, own_c.1 + c);
                foreign = (foreign.0 + fnats, foreign.1 + fc);
            }
        }
        seconds += p.song.notes.iter().map(|n| n.end_ms).fold(0.0, f64::max) / 1000.0;
    }
    let snippet_gain_bits = if own.1 > 0.0 && rotated.1 > 0.0 {
        (rotated.0 / rotated.1 - own.0 / own.1) / std::f64::consts::LN_2
    } else {
        f64::NAN
    };
    let snippet_content_bits = if own_c.1 > 0.0 && foreign.1 > 0.0 {
        (foreign.0 / foreign.1 - own_c.0 / own_c.1) / std::f64::consts::LN_2
    } else {
        f64::NAN
    };
    let bits = nats / std::f64::consts::LN_2;
    let nll_seconds = t_nll.elapsed().as_secs_f64();

    // Generation: pieces with snippets A and B, `pieces` of them spread evenly.
    let t_gen = Instant::now();
    let kind = model.kind().to_string();
    let (mut fast_h, mut candle_h, mut guide_h);
    let mut guided: Option<Guided> = None;
    let mut fast = fast.into_iter();
    // `plain`: the model alone; `None` when `guided` wraps it.
    let (mut plain, backend): (Option<&mut dyn LogitSource>, String) =
        match (fast.next(), fast.next()) {
            (Some(f), None) => {
                fast_h = FastLogits::new(f, model);
                let name = GenBackend::Fast(fast_h.format()).name();
                (Some(&mut fast_h), name)
            }
            (Some(f), Some(g)) => {
                fast_h = FastLogits::new(f, model);
                guide_h = FastLogits::new(g, model);
                let name = format!(
                    "{} with form guidance {}",
                    GenBackend::Fast(fast_h.format()).name(),
                    opts.guidance
                );
                guided = Some(Guided::new(&mut fast_h, &mut guide_h, opts.guidance as f32));
                (None, name)
            }
            (None, _) => {
                candle_h = CandleLogits::new(model);
                (Some(&mut candle_h), GenBackend::Candle.name())
            }
        };
    let sampling = Sampling {
        temperature: opts.temperature,
        min_p: opts.min_p,
        max_tokens: seq_len.max(256) * 4,
        follow_bias: opts.follow_bias,
    };
    type Snippets = Vec<(SectionLabel, Vec<u32>)>;
    let eligible: Vec<(&LoadedPiece, Snippets)> = data
        .pieces
        .iter()
        .filter_map(|p| {
            let snippets: Snippets = snippets_of(tok, &p.song, tok.config().snippet_tokens)
                .into_iter()
                .filter(|(l, _)| matches!(l, SectionLabel::A | SectionLabel::B))
                .map(|(l, s)| (l, truncate_snippet(tok, &s, snippet_tokens)))
                .filter(|(_, s)| !s.is_empty())
                .collect();
            (snippets.len() == 2).then_some((p, snippets))
        })
        .collect();
    let chosen: Vec<usize> = if eligible.len() <= opts.pieces {
        (0..eligible.len()).collect()
    } else {
        (0..opts.pieces)
            .map(|i| i * eligible.len() / opts.pieces)
            .collect()
    };
    let window_ms = f64::from(tok.config().window_ms);
    let form_plan = eval_form(&opts.form)?;
    let (mut pc, mut dens, mut valid, mut clean, mut gens, mut errors, mut gen_tokens) =
        (0.0, 0.0, 0usize, 0usize, 0usize, 0usize, 0usize);
    let mut total = FormScores::default();
    let mut balanced = Vec::new();
    let mut edge = (0usize, 0usize);
    let (mut ref_dens, mut ref_grid, mut ref_edge) = ((0, 0), (0, 0), (0, 0));
    let mut ref_form = ((0, 0), (0, 0));
    let mut rng = StdRng::seed_from_u64(opts.seed);
    for &i in &chosen {
        let (p, snippets) = &eligible[i];
        let len_of = |label: SectionLabel| {
            p.song
                .sections
                .iter()
                .find(|s| s.label == label)
                .map_or(4_000.0, |s| {
                    (s.end_ms - s.start_ms).clamp(1_000.0, opts.max_section_ms)
                })
        };
        let plan: Vec<(SectionLabel, f64)> = form_plan.iter().map(|&l| (l, len_of(l))).collect();
        let spec = PromptSpec {
            style: p.style.clone().filter(|s| tok.style_id(s).is_some()),
            form: tok.form_id(&opts.form).map(|_| opts.form.clone()),
            snippets: snippets.clone(),
        };
        let prompt = tok.build_prompt(&spec)?;
        let gen_model: &mut dyn LogitSource = if let Some(g) = guided.as_mut() {
            g.set_guide_prompt(tok.build_prompt(&PromptSpec {
                snippets: rotated_snippets(&spec.snippets),
                ..spec.clone()
            })?);
            g
        } else if let Some(m) = plain.as_deref_mut() {
            m
        } else {
            return Err(TrainError::Data(
                "evaluation: no model to generate with".into(),
            ));
        };
        // The reference's tempo, a beat where the generated piece starts (as in training).
        gen_model.set_grid(
            p.song
                .constant_quarter_ms()
                .and_then(|q| BeatGrid::new(q, 0.0).ok()),
        );
        let g = generate(gen_model, tok, &prompt, &plan, &sampling, &mut rng)?;
        gens += 1;
        errors += g.grammar_errors;
        gen_tokens += g.tokens.len();
        let song = tok.decode(&g.tokens);
        if let Some(dir) = &opts.write_dir {
            let dir = dir.join(short(name));
            std::fs::create_dir_all(&dir).map_err(|e| TrainError::io(&dir, e))?;
            let n = gens - 1;
            staria_models::midi::write_midi_file(&song, &dir.join(format!("{n:03}.gen.mid")))?;
            staria_models::midi::write_midi_file(&p.song, &dir.join(format!("{n:03}.ref.mid")))?;
        }
        let midi_ok = !song.notes.is_empty()
            && write_midi(&song)
                .ok()
                .and_then(|b| read_midi(&b).ok())
                .is_some_and(|s| !s.notes.is_empty());
        valid += usize::from(midi_ok);
        clean += usize::from(g.grammar_errors == 0);
        pc += music::histogram_distance(
            &music::pitch_class_histogram(&song.notes),
            &music::pitch_class_histogram(&p.song.notes),
        );
        dens += music::density_distance(
            music::note_density(&song.notes),
            music::note_density(&p.song.notes),
        );

        let lines = music::bar_lines(&p.song);
        let bar_ms = (lines[1].1 - lines[0].1).max(100.0);
        let refs: Vec<SnippetRef> = snippets
            .iter()
            .map(|(l, s)| {
                let start = p
                    .song
                    .sections
                    .iter()
                    .filter(|x| x.label == *l)
                    .map(|x| x.start_ms)
                    .fold(f64::INFINITY, f64::min);
                let sixteenth = music::quarter_ms_at(&p.song, start) / 4.0;
                SnippetRef::new(*l, &tok.decode_snippet(s), bar_ms, sixteenth)
            })
            .collect();
        let sc = score_form(&song, &form_plan, &refs, bar_ms);
        balanced.push(sc.balanced());
        total.a.0 += sc.a.0;
        total.a.1 += sc.a.1;
        total.b.0 += sc.b.0;
        total.b.1 += sc.b.1;
        total.copies += sc.copies;
        total.density_matches += sc.density_matches;
        total.on_grid.0 += sc.on_grid.0;
        total.on_grid.1 += sc.on_grid.1;
        for (acc, x) in total.similarity.iter_mut().zip(sc.similarity) {
            *acc = (acc.0 + x.0, acc.1 + x.1, acc.2 + x.2);
        }
        let e = music::onsets_at_window_edge(song.notes.iter().map(|n| n.start_ms), window_ms);
        edge.0 += e.0;
        edge.1 += e.1;
        let (ra, rb) = reference_form(&p.song, &refs, bar_ms);
        for (acc, x) in [(&mut ref_form.0, ra), (&mut ref_form.1, rb)] {
            acc.0 += x.0;
            acc.1 += x.1;
        }
        let (d, gr, ed) = reference_rhythm(&p.song, &refs, window_ms);
        for (acc, x) in [(&mut ref_dens, d), (&mut ref_grid, gr), (&mut ref_edge, ed)] {
            acc.0 += x.0;
            acc.1 += x.1;
        }
    }
    let per = |x: f64| if gens > 0 { x / gens as f64 } else { f64::NAN };
    let share = |(h, n): (usize, usize)| {
        if n > 0 { h as f64 / n as f64 } else { f64::NAN }
    };
    let planned = total.planned();
    let (lo, hi) = music::bootstrap_interval(&balanced, BOOTSTRAP_RESAMPLES, BOOTSTRAP_SEED);
    Ok(EvalResult {
        model: name.to_string(),
        kind,
        nll_bits_per_token: bits / count.max(1.0),
        nll_bits_per_second: bits / f64::max(seconds, 1e-9),
        snippet_gain_bits,
        snippet_content_bits,
        form_adherence: if balanced.is_empty() {
            f64::NAN
        } else {
            balanced.iter().sum::<f64>() / balanced.len() as f64
        },
        form_adherence_lo: lo,
        form_adherence_hi: hi,
        form_adherence_a: share(total.a),
        form_adherence_b: share(total.b),
        form_adherence_pooled: share((total.a.0 + total.b.0, planned)),
        similarity_a: mean_similarity(total.similarity[0]),
        similarity_b: mean_similarity(total.similarity[1]),
        verbatim_copy_share: share((total.copies, planned)),
        density_match_rate: share((total.density_matches, planned)),
        onset_grid_agreement: share(total.on_grid),
        window_edge_piling: share(edge),
        reference_form_adherence: {
            let letters: Vec<f64> = [ref_form.0, ref_form.1]
                .into_iter()
                .filter(|x| x.1 > 0)
                .map(share)
                .collect();
            if letters.is_empty() {
                f64::NAN
            } else {
                letters.iter().sum::<f64>() / letters.len() as f64
            }
        },
        reference_repeats: ref_form.0.1 + ref_form.1.1,
        reference_density_match_rate: share(ref_dens),
        reference_onset_grid_agreement: share(ref_grid),
        reference_window_edge_piling: share(ref_edge),
        pitch_class_distance: per(pc),
        note_density_distance: per(dens),
        valid_rate: per(valid as f64),
        grammar_clean_rate: per(clean as f64),
        pieces: nll_pieces,
        generations: gens,
        target_tokens: count as u64,
        grammar_error_rate: if gen_tokens > 0 {
            errors as f64 / gen_tokens as f64
        } else {
            f64::NAN
        },
        skipped_files: data.skipped.len(),
        generation_backend: backend,
        form: opts.form.clone(),
        nll_seconds,
        generation_seconds: t_gen.elapsed().as_secs_f64(),
    })
}

/// A table of several models' figures, side by side, with the reference pieces' rhythm
/// measures in the last column (taken from the first model's run: the same pieces for all).
pub fn table(results: &[EvalResult]) -> String {
    let mut s = String::new();
    type Row = (
        &'static str,
        fn(&EvalResult) -> String,
        Option<fn(&EvalResult) -> f64>,
    );
    fn f(x: f64) -> String {
        format!("{x:.4}")
    }
    let rows: [Row; 19] = [
        ("nll bits/token", |r| f(r.nll_bits_per_token), None),
        ("nll bits/second", |r| f(r.nll_bits_per_second), None),
        ("snippet gain bits/token", |r| f(r.snippet_gain_bits), None),
        (
            "snippet content bits/token",
            |r| f(r.snippet_content_bits),
            None,
        ),
        (
            "form adherence [95%]",
            |r| {
                format!(
                    "{:.3} [{:.3},{:.3}]",
                    r.form_adherence, r.form_adherence_lo, r.form_adherence_hi
                )
            },
            Some(|r| r.reference_form_adherence),
        ),
        (
            "  A / B sections",
            |r| format!("{:.3} / {:.3}", r.form_adherence_a, r.form_adherence_b),
            None,
        ),
        (
            "  A sim own / other",
            |r| format!("{:.3} / {:.3}", r.similarity_a.0, r.similarity_a.1),
            None,
        ),
        (
            "  B sim own / other",
            |r| format!("{:.3} / {:.3}", r.similarity_b.0, r.similarity_b.1),
            None,
        ),
        (
            "  pooled (unbalanced)",
            |r| f(r.form_adherence_pooled),
            None,
        ),
        ("verbatim-copy share", |r| f(r.verbatim_copy_share), None),
        (
            "density match (±30%)",
            |r| f(r.density_match_rate),
            Some(|r| r.reference_density_match_rate),
        ),
        (
            "onset-grid agreement",
            |r| f(r.onset_grid_agreement),
            Some(|r| r.reference_onset_grid_agreement),
        ),
        (
            "window-edge piling",
            |r| f(r.window_edge_piling),
            Some(|r| r.reference_window_edge_piling),
        ),
        ("pitch-class distance", |r| f(r.pitch_class_distance), None),
        (
            "note-density distance",
            |r| f(r.note_density_distance),
            None,
        ),
        ("valid rate", |r| f(r.valid_rate), None),
        ("grammar-clean rate", |r| f(r.grammar_clean_rate), None),
        ("grammar error rate", |r| f(r.grammar_error_rate), None),
        (
            "seconds (nll + gen)",
            |r| format!("{:.0} + {:.0}", r.nll_seconds, r.generation_seconds),
            None,
        ),
    ];
    s.push_str(&format!("{:<24}", "metric"));
    for r in results {
        s.push_str(&format!(
            " {:>22}",
            format!("{} ({})", short(&r.model), r.kind)
        ));
    }
    s.push_str(&format!(" {:>10}\n", "reference"));
    for (name, val, reference) in rows {
        s.push_str(&format!("{name:<24}"));
        for r in results {
            s.push_str(&format!(" {:>22}", val(r)));
        }
        match (reference, results.first()) {
            (Some(g), Some(r)) => s.push_str(&format!(" {:>10.4}", g(r))),
            _ => s.push_str(&format!(" {:>10}", "")),
        }
        s.push('\n');
    }
    if let Some(r) = results.first() {
        s.push_str(&format!(
            "{} pieces for NLL ({} target tokens), {} generations each ({} from snippets A and B, {} backend; interval: percentile bootstrap over generations, {} resamples, seed {}; reference adherence: the pieces' own {} repeat sections); {} files skipped\n",
            r.pieces,
            r.target_tokens,
            r.generations,
            r.form,
            r.generation_backend,
            BOOTSTRAP_RESAMPLES,
            BOOTSTRAP_SEED,
            r.reference_repeats,
            r.skipped_files
        ));
    }
    s
}

fn short(path: &str) -> String {
    let p = PathBuf::from(path);
    p.file_name()
        .map_or_else(|| path.to_string(), |n| n.to_string_lossy().into_owned())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::music::tests::{bar, song_from_beats};
    use staria_models::Section;

    const BAR_MS: f64 = 2000.0; // 4/4 at 120 bpm
    const SIXTEENTH_MS: f64 = 125.0;

    fn a_material(bar_no: usize) -> Vec<(u8, f64, f64)> {
        [
            bar([60, 62, 64, 65], bar_no),
            bar([67, 65, 64, 62], bar_no + 1),
        ]
        .concat()
    }
    fn b_material(bar_no: usize) -> Vec<(u8, f64, f64)> {
        [
            bar([69, 71, 72, 74], bar_no),
            bar([76, 74, 72, 71], bar_no + 1),
        ]
        .concat()
    }

    fn snippet(label: SectionLabel, material: Vec<(u8, f64, f64)>) -> SnippetRef {
        SnippetRef::new(
            label,
            &song_from_beats(&material).notes,
            BAR_MS,
            SIXTEENTH_MS,
        )
    }

    fn snippets() -> Vec<SnippetRef> {
        vec![
            snippet(SectionLabel::A, a_material(0)),
            snippet(SectionLabel::B, b_material(0)),
        ]
    }

    /// A "generated" piece: one two-bar section per (label, material) in order.
    type Material = fn(usize) -> Vec<(u8, f64, f64)>;

    fn piece(parts: &[(SectionLabel, Material)]) -> Song {
        let mut notes = Vec::new();
        for (i, (_, m)) in parts.iter().enumerate() {
            notes.extend(m(2 * i));
        }
        let mut song = song_from_beats(&notes);
        song.sections = parts
            .iter()
            .enumerate()
            .map(|(i, (l, _))| Section {
                label: *l,
                marker_text: l.to_string(),
                start_tick: (i * 2 * 1920) as u64,
                end_tick: ((i + 1) * 2 * 1920) as u64,
                start_ms: i as f64 * 2.0 * BAR_MS,
                end_ms: (i + 1) as f64 * 2.0 * BAR_MS,
            })
            .collect();
        song
    }

    const AABA: [SectionLabel; 4] = [
        SectionLabel::A,
        SectionLabel::A,
        SectionLabel::B,
        SectionLabel::A,
    ];

    #[test]
    fn copying_a_everywhere_is_half_adherent_and_all_copies() {
        use SectionLabel::{A, B};
        let song = piece(&[
            (A, a_material),
            (A, a_material),
            (B, a_material),
            (A, a_material),
        ]);
        let sc = score_form(&song, &AABA, &snippets(), BAR_MS);
        assert_eq!(sc.a, (3, 3));
        assert_eq!(sc.b, (0, 1));
        assert_eq!(sc.balanced(), 0.5);
        // The old pooled figure would have been 0.75.
        assert_eq!((sc.a.0 + sc.b.0) as f64 / sc.planned() as f64, 0.75);
        assert_eq!(sc.copies, 4, "a verbatim copy is a copy");
        assert_eq!(sc.density_matches, 4);
        assert_eq!(sc.on_grid.0, sc.on_grid.1, "quarter notes are on the grid");
    }

    #[test]
    fn following_the_form_is_fully_adherent() {
        use SectionLabel::{A, B};
        let song = piece(&[
            (A, a_material),
            (A, a_material),
            (B, b_material),
            (A, a_material),
        ]);
        let sc = score_form(&song, &AABA, &snippets(), BAR_MS);
        assert_eq!(sc.balanced(), 1.0);
        assert_eq!(sc.copies, 4);
        // Copies: similarity 1 to their own snippet, less to the other, three A and one B.
        let [(a_own, a_other, a_n), (b_own, b_other, b_n)] = sc.similarity;
        assert_eq!((a_n, b_n), (3, 1));
        assert_eq!((a_own / 3.0, b_own), (1.0, 1.0));
        assert!(a_other / 3.0 < 1.0 && b_other < 1.0);
    }

    #[test]
    fn new_material_is_no_copy_and_missing_sections_count_against() {
        use SectionLabel::{A, B};
        fn a_up(b: usize) -> Vec<(u8, f64, f64)> {
            // A's rhythm and contour a tone higher, one note changed per bar.
            [bar([62, 64, 66, 60], b), bar([69, 67, 66, 60], b + 1)].concat()
        }
        fn b_up(b: usize) -> Vec<(u8, f64, f64)> {
            [bar([71, 73, 74, 60], b), bar([78, 76, 74, 60], b + 1)].concat()
        }
        let song = piece(&[(A, a_up), (A, a_up), (B, b_up)]);
        let sc = score_form(&song, &AABA, &snippets(), BAR_MS);
        assert_eq!(sc.copies, 0);
        assert_eq!(sc.planned(), 4);
        // The fourth (missing) section is not adherent and not a density match.
        assert!(sc.a.0 <= 2);
        assert_eq!(sc.density_matches, 3);
    }

    #[test]
    fn twice_as_dense_is_no_density_match() {
        use SectionLabel::{A, B};
        fn eighths(b: usize) -> Vec<(u8, f64, f64)> {
            (0..16)
                .map(|i| (60 + (i % 5) as u8, (b * 4) as f64 + i as f64 * 0.5, 0.5))
                .collect()
        }
        let song = piece(&[
            (A, eighths),
            (A, a_material),
            (B, b_material),
            (A, a_material),
        ]);
        let sc = score_form(&song, &AABA, &snippets(), BAR_MS);
        assert_eq!(sc.density_matches, 3);
        // Eighths at 120 bpm are on the sixteenth grid too.
        assert_eq!(sc.on_grid.0, sc.on_grid.1);
    }

    #[test]
    fn reference_form_counts_only_repeats_and_scores_them_like_generations() {
        use SectionLabel::{A, B};
        // A A B A: the first A and the B hold the snippets; the repeats are A, A (both true).
        let song = piece(&[
            (A, a_material),
            (A, a_material),
            (B, b_material),
            (A, a_material),
        ]);
        assert_eq!(reference_form(&song, &snippets(), BAR_MS), ((2, 2), (0, 0)));
        // A B B A with the second B playing A's material: that B repeat does not adhere.
        let song = piece(&[
            (A, a_material),
            (B, b_material),
            (B, a_material),
            (A, a_material),
        ]);
        assert_eq!(reference_form(&song, &snippets(), BAR_MS), ((1, 1), (0, 1)));
    }

    #[test]
    fn reference_rhythm_of_a_quantised_piece() {
        use SectionLabel::{A, B};
        let song = piece(&[(A, a_material), (B, b_material)]);
        let (dens, grid, edge) = reference_rhythm(&song, &snippets(), 5000.0);
        assert_eq!(dens, (2, 2));
        assert_eq!(grid.0, grid.1);
        assert_eq!(edge, (0, 16));
    }

    #[test]
    fn bootstrap_interval_contains_the_mean() {
        let v: Vec<f64> = (0..60).map(|i| [0.0, 0.5, 0.75, 1.0][i % 4]).collect();
        let mean = v.iter().sum::<f64>() / v.len() as f64;
        let (lo, hi) = music::bootstrap_interval(&v, BOOTSTRAP_RESAMPLES, BOOTSTRAP_SEED);
        assert!(lo < mean && mean < hi, "{lo} {mean} {hi}");
        assert!(hi - lo < 0.3);
        assert_eq!(
            (lo, hi),
            music::bootstrap_interval(&v, BOOTSTRAP_RESAMPLES, BOOTSTRAP_SEED)
        );
        let same = music::bootstrap_interval(&[0.5; 10], 100, 1);
        assert_eq!(same, (0.5, 0.5));
        assert!(music::bootstrap_interval(&[], 100, 1).0.is_nan());
    }

    #[test]
    fn evaluation_forms_take_the_two_snippets_letters_only() {
        use SectionLabel::{A, B};
        assert_eq!(eval_form("AABA").unwrap(), [A, A, B, A]);
        assert_eq!(eval_form("ABAB").unwrap(), [A, B, A, B]);
        for bad in ["", "AAAA", "ABC", "aabb", "A B"] {
            let e = eval_form(bad).unwrap_err().to_string();
            assert!(e.contains("--form") && e.contains(bad), "{e}");
        }
    }
}
