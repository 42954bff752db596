//! `staria-train eval`: checkpoints measured on any folder of MIDI files.
//!
//! - `nll_bits_per_token`: next-token loss over every piece body token (prompt given: style,
//!   form, snippets of each section), in windows of `seq_len` as in training; the same targets
//!   for both model kinds. `nll_bits_per_second`: the same bits divided by the pieces' seconds.
//! - Generation, on the first `pieces` pieces that have sections A and B: the model gets snippets
//!   A and B and plays the form AABA, each section as long as the reference's (at most
//!   `max_section_ms`), sampled at `temperature` / `min_p`, section tags forced on time.
//!   - `form_adherence`: share of the four generated sections that are closer (by the bar
//!     similarity of `music`: mean best-bar Jaccard of (pitch, onset slot) sets, bars as long as
//!     the reference's first bar) to their own snippet than to the other one. A missing section
//!     counts as a miss.
//!   - `pitch_class_distance`: total-variation distance between the duration-weighted
//!     pitch-class histograms of generation and reference piece, in [0, 1].
//!   - `note_density_distance`: |log2| of the ratio of notes per second, generation vs reference.
//!   - `valid_rate`: share of generations that decode (the tokenizer's tolerant decoder) to at
//!     least one note and a MIDI file that writes and reads back with at least one note (the
//!     count may drop: overlapping notes of one pitch merge in MIDI).
//!   - `grammar_clean_rate`: share of generations without a single grammar error (a token out of
//!     place for the note grammar, see `generate`), and `grammar_error_rate`: such tokens per
//!     generated token. The decoder drops malformed notes, so these say how many were lost.

use std::path::{Path, PathBuf};

use candle_core::Device;
use rand::SeedableRng;
use rand::rngs::StdRng;
use serde::Serialize;
use staria_models::checkpoint;
use staria_models::midi::{read_midi, write_midi};
use staria_models::model::AnyModel;
use staria_models::tokenizer::{PromptSpec, Tokenizer};
use staria_models::{Note, SectionLabel, Song};

use crate::batch::{Augment, Layout, collate, masked_nll, prepare_piece, truncate_snippet};
use crate::error::{Result, TrainError};
use crate::generate::{Sampling, generate};
use crate::models;
use crate::music::{self, BarContent};
use crate::prepare::{self, LoadedPiece};

#[derive(Debug, Clone)]
pub struct EvalOptions {
    /// Tokens per window; default: the training run's `data.seq_len`, else 512.
    pub seq_len: Option<usize>,
    /// Snippet budget; default: the training run's `data.snippet_tokens`, else the checkpoint
    /// tokenizer's `snippet_tokens`.
    pub snippet_tokens: Option<usize>,
    /// Pieces generated from (form adherence and the distribution measures).
    pub pieces: usize,
    /// Pieces whose NLL is measured, at most (0: all).
    pub max_pieces: usize,
    /// Only pieces `prepare` with this seed and fraction puts in validation.
    pub validation_split: Option<(u64, f64)>,
    pub seed: u64,
    pub temperature: f64,
    pub min_p: f64,
    pub max_section_ms: f64,
    pub device: Device,
}

impl Default for EvalOptions {
    fn default() -> Self {
        Self {
            seq_len: None,
            snippet_tokens: None,
            pieces: 8,
            max_pieces: 0,
            validation_split: None,
            seed: 0,
            temperature: 1.0,
            min_p: 0.05,
            max_section_ms: 12_000.0,
            device: Device::Cpu,
        }
    }
}

/// One model's figures.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct EvalResult {
    pub model: String,
    pub kind: String,
    pub nll_bits_per_token: f64,
    pub nll_bits_per_second: f64,
    pub form_adherence: f64,
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
}

/// The pieces of a folder, read once for every model.
pub struct EvalData {
    pub pieces: Vec<LoadedPiece>,
    pub skipped: Vec<(String, String)>,
}

impl EvalData {
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
            if opts.max_pieces > 0 && pieces.len() >= opts.max_pieces {
                break;
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

fn bars_of(notes: &[Note], len_ms: f64, bar_ms: f64) -> Vec<BarContent> {
    let n = ((len_ms / bar_ms).ceil() as usize).max(1);
    let bars: Vec<(f64, f64)> = (0..n)
        .map(|i| (i as f64 * bar_ms, (i + 1) as f64 * bar_ms))
        .collect();
    music::bar_contents_ms(notes, &bars)
}

/// Evaluates one loaded checkpoint.
pub fn evaluate(model_dir: &Path, data: &EvalData, opts: &EvalOptions) -> Result<EvalResult> {
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
    let mut model = ck.model;
    evaluate_model(
        &mut model,
        &ck.tokenizer,
        &model_dir.display().to_string(),
        data,
        seq_len,
        snippet_tokens,
        opts,
    )
}

/// Evaluates a model in memory (also what the tests compare against a reloaded checkpoint).
pub fn evaluate_model(
    model: &mut AnyModel,
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
    let (mut nats, mut count, mut seconds) = (0.0, 0.0, 0.0);
    for p in &data.pieces {
        let tokens = tok.encode_piece(&p.song);
        let form: String = p.song.sections.iter().map(|s| s.label.letter()).collect();
        let snippets = snippets_of(tok, &p.song, tok.config().snippet_tokens);
        let prepared = prepare_piece(
            tok,
            &tokens,
            &snippets,
            p.style.as_deref(),
            &form,
            Augment::NONE,
            snippet_tokens,
        )?;
        for chunk in prepared.all_examples(tok, seq_len)?.chunks(8) {
            let batch = collate(chunk, layout, tok.pad_id(), snippet_len, device)?;
            let logits = model.forward_train(&batch.ids, batch.snippets.as_ref())?;
            let (_, s, c) = masked_nll(&logits, &batch.targets, &batch.mask)?;
            nats += s;
            count += c;
        }
        seconds += p.song.notes.iter().map(|n| n.end_ms).fold(0.0, f64::max) / 1000.0;
    }
    let bits = nats / std::f64::consts::LN_2;

    // Generation.
    let sampling = Sampling {
        temperature: opts.temperature,
        min_p: opts.min_p,
        max_tokens: seq_len.max(256) * 4,
    };
    let (
        mut adherent,
        mut planned,
        mut pc,
        mut dens,
        mut valid,
        mut clean,
        mut gens,
        mut errors,
        mut gen_tokens,
    ) = (
        0usize, 0usize, 0.0, 0.0, 0usize, 0usize, 0usize, 0usize, 0usize,
    );
    let mut rng = StdRng::seed_from_u64(opts.seed);
    for p in &data.pieces {
        if gens >= opts.pieces {
            break;
        }
        let snippets: Vec<(SectionLabel, Vec<u32>)> =
            snippets_of(tok, &p.song, tok.config().snippet_tokens)
                .into_iter()
                .filter(|(l, _)| matches!(l, SectionLabel::A | SectionLabel::B))
                .map(|(l, s)| (l, truncate_snippet(tok, &s, snippet_tokens)))
                .collect();
        if snippets.len() < 2 {
            continue;
        }
        let len_of = |label: SectionLabel| {
            p.song
                .sections
                .iter()
                .find(|s| s.label == label)
                .map_or(4_000.0, |s| {
                    (s.end_ms - s.start_ms).clamp(1_000.0, opts.max_section_ms)
                })
        };
        let plan: Vec<(SectionLabel, f64)> = "AABA"
            .chars()
            .filter_map(SectionLabel::from_letter)
            .map(|l| (l, len_of(l)))
            .collect();
        let spec = PromptSpec {
            style: p.style.clone().filter(|s| tok.style_id(s).is_some()),
            form: tok.form_id("AABA").map(|_| "AABA".to_string()),
            snippets: snippets.clone(),
        };
        let prompt = tok.build_prompt(&spec)?;
        let g = generate(model, tok, &prompt, &plan, &sampling, &mut rng)?;
        gens += 1;
        errors += g.grammar_errors;
        gen_tokens += g.tokens.len();
        let song = tok.decode(&g.tokens);
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
        let snippet_bars: Vec<(SectionLabel, Vec<BarContent>)> = snippets
            .iter()
            .map(|(l, s)| {
                let notes = tok.decode_snippet(s);
                let len = notes.iter().map(|n| n.end_ms).fold(0.0, f64::max);
                (*l, bars_of(&notes, len, bar_ms))
            })
            .collect();
        planned += plan.len();
        for sec in song.sections.iter().take(plan.len()) {
            let notes: Vec<Note> = song
                .notes
                .iter()
                .filter(|n| n.start_ms >= sec.start_ms && n.start_ms < sec.end_ms)
                .map(|n| Note {
                    start_ms: n.start_ms - sec.start_ms,
                    end_ms: n.end_ms - sec.start_ms,
                    ..*n
                })
                .collect();
            if notes.is_empty() {
                continue;
            }
            let bars = bars_of(&notes, sec.end_ms - sec.start_ms, bar_ms);
            let sim = |l: SectionLabel| {
                snippet_bars
                    .iter()
                    .find(|s| s.0 == l)
                    .map_or(0.0, |s| music::sequence_similarity(&bars, &s.1))
            };
            let other = if sec.label == SectionLabel::A {
                SectionLabel::B
            } else {
                SectionLabel::A
            };
            if sim(sec.label) > sim(other) {
                adherent += 1;
            }
        }
    }
    let per = |x: f64| if gens > 0 { x / gens as f64 } else { f64::NAN };
    Ok(EvalResult {
        model: name.to_string(),
        kind: model.kind().to_string(),
        nll_bits_per_token: bits / count.max(1.0),
        nll_bits_per_second: bits / f64::max(seconds, 1e-9),
        form_adherence: if planned > 0 {
            adherent as f64 / planned as f64
        } else {
            f64::NAN
        },
        pitch_class_distance: per(pc),
        note_density_distance: per(dens),
        valid_rate: per(valid as f64),
        grammar_clean_rate: per(clean as f64),
        pieces: data.pieces.len(),
        generations: gens,
        target_tokens: count as u64,
        grammar_error_rate: if gen_tokens > 0 {
            errors as f64 / gen_tokens as f64
        } else {
            f64::NAN
        },
        skipped_files: data.skipped.len(),
    })
}

/// A table of several models' figures, side by side.
pub fn table(results: &[EvalResult]) -> String {
    let mut s = String::new();
    type Row = (&'static str, fn(&EvalResult) -> f64);
    let rows: [Row; 8] = [
        ("nll bits/token", |r| r.nll_bits_per_token),
        ("nll bits/second", |r| r.nll_bits_per_second),
        ("form adherence", |r| r.form_adherence),
        ("pitch-class distance", |r| r.pitch_class_distance),
        ("note-density distance", |r| r.note_density_distance),
        ("valid rate", |r| r.valid_rate),
        ("grammar-clean rate", |r| r.grammar_clean_rate),
        ("grammar error rate", |r| r.grammar_error_rate),
    ];
    s.push_str(&format!("{:<24}", "metric"));
    for r in results {
        s.push_str(&format!(
            " {:>18}",
            format!("{} ({})", short(&r.model), r.kind)
        ));
    }
    s.push('\n');
    for (name, f) in rows {
        s.push_str(&format!("{name:<24}"));
        for r in results {
            s.push_str(&format!(" {:>18.4}", f(r)));
        }
        s.push('\n');
    }
    if let Some(r) = results.first() {
        s.push_str(&format!(
            "{} pieces ({} target tokens), {} generations each; {} files skipped\n",
            r.pieces, r.target_tokens, r.generations, r.skipped_files
        ));
    }
    s
}

fn short(path: &str) -> String {
    let p = PathBuf::from(path);
    p.file_name()
        .map_or_else(|| path.to_string(), |n| n.to_string_lossy().into_owned())
}
