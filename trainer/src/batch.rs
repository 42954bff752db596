//! Training sequences from stored pieces: augmentation, prompt building, windowing, batching and
//! the masked next-token loss.
//!
//! A sequence is `prompt ++ window`: the prompt from `Tokenizer::build_prompt` (style, form,
//! snippets; it ends with `<S>`), the window a stretch of the piece body. Both model kinds get the
//! same snippets and the same window, so their losses are over the same target tokens; only the
//! prompt differs (inline snippets for the baseline, tags only for Staria's decoder). Pieces
//! longer than the budget are cut into windows that start at a `<T>`, a section tag or a note,
//! never inside a note; a window that does not start at a section tag gets the section tag in
//! force there as a given header, so the model always knows which section it is in. The loss
//! covers the window tokens only: the prompt and header are given.

use candle_core::{D, DType, Device, Tensor};
use rand::Rng;
use staria_models::SectionLabel;
use staria_models::grid::{BeatGrid, GridInput, GridRows, grid_windows};
use staria_models::prompt::Prompt;
use staria_models::staria::SnippetBatch;
use staria_models::tokenizer::{PromptSpec, StreamDecoder, TokenKind, Tokenizer};
use staria_models::window::{WindowBins, latest_onsets};

use crate::config::DataSection;
use crate::error::{Result, TrainError};

/// The note values `data.note_value_fraction` of the training sequences are played in, against
/// the beat: doubled.
pub const LONGER_NOTE_VALUES: f64 = 2.0;

/// One random augmentation, applied alike to a piece and its snippets.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Augment {
    pub semitones: i32,
    /// Plays everything this many times slower, the beat grid with it.
    pub tempo: f64,
    /// In velocity levels of the tokenizer.
    pub velocity: i32,
    /// Multiplies every note value against the beat: the notes are played this many times
    /// slower and the beat grid is not (2: a reel's running eighths become quarters at the
    /// piece's tempo).
    pub note_value: f64,
}

impl Augment {
    pub const NONE: Augment = Augment {
        semitones: 0,
        tempo: 1.0,
        velocity: 0,
        note_value: 1.0,
    };

    pub fn sample(d: &DataSection, rng: &mut impl Rng) -> Self {
        Augment {
            semitones: if d.pitch_shift > 0 {
                rng.random_range(-d.pitch_shift..=d.pitch_shift)
            } else {
                0
            },
            tempo: if d.tempo_scale > 0.0 {
                rng.random_range(1.0 - d.tempo_scale..=1.0 + d.tempo_scale)
            } else {
                1.0
            },
            velocity: if d.velocity_shift > 0 {
                rng.random_range(-d.velocity_shift..=d.velocity_shift)
            } else {
                0
            },
            // Drawn only when asked for, so runs without it keep their random streams.
            note_value: if d.note_value_fraction > 0.0 && rng.random_bool(d.note_value_fraction) {
                LONGER_NOTE_VALUES
            } else {
                1.0
            },
        }
    }

    pub fn apply(&self, tok: &Tokenizer, ids: &[u32]) -> Result<Vec<u32>> {
        let mut out = if self.semitones != 0 {
            tok.pitch_shift(ids, self.semitones)
        } else {
            ids.to_vec()
        };
        if self.velocity != 0 {
            out = tok.velocity_shift(&out, self.velocity);
        }
        // One pass for both: times are quantized once, so a doubled note stays on its beat.
        let slower = self.tempo * self.note_value;
        if slower != 1.0 {
            out = tok.tempo_scale(&out, slower)?;
        }
        Ok(out)
    }
}

/// Cuts a snippet to at most `max` tokens without splitting a note (decoded and re-encoded,
/// which is exact for already quantized times).
pub fn truncate_snippet(tok: &Tokenizer, ids: &[u32], max: usize) -> Vec<u32> {
    if ids.len() <= max {
        return ids.to_vec();
    }
    tok.snippet_tokens(&tok.decode_snippet(ids), 0.0, max)
}

/// A piece ready to be cut into sequences: prompt in both layouts and the body after `<S>`.
#[derive(Debug, Clone)]
pub struct Prepared {
    pub prompt: Prompt,
    pub body: Vec<u32>,
    /// The body's beat grid after augmentation (`staria_models::grid`); `None`: tempo unknown.
    pub grid: Option<BeatGrid>,
}

/// Augments a piece and its snippets, truncates the snippets to `snippet_max` tokens and builds
/// the prompt. `form` gets a form token when the tokenizer has one. `quarter_ms`: the piece's
/// constant quarter note (`PieceMeta::quarter_ms`), scaled with the tempo augmentation into the
/// body's beat grid.
#[allow(clippy::too_many_arguments)]
pub fn prepare_piece(
    tok: &Tokenizer,
    piece: &[u32],
    snippets: &[(SectionLabel, Vec<u32>)],
    style: Option<&str>,
    form: &str,
    quarter_ms: Option<f64>,
    aug: Augment,
    snippet_max: usize,
) -> Result<Prepared> {
    let piece = aug.apply(tok, piece)?;
    let mut snips = Vec::with_capacity(snippets.len());
    for (label, s) in snippets {
        let s = truncate_snippet(tok, &aug.apply(tok, s)?, snippet_max);
        if !s.is_empty() {
            snips.push((*label, s));
        }
    }
    let spec = PromptSpec {
        style: style
            .filter(|s| tok.style_id(s).is_some())
            .map(str::to_string),
        form: (!form.is_empty() && tok.form_id(form).is_some()).then(|| form.to_string()),
        snippets: snips,
    };
    let prompt = tok.build_prompt(&spec)?;
    let start = piece
        .iter()
        .position(|&t| t == tok.start_id())
        .map_or(0, |p| p + 1);
    Ok(Prepared {
        prompt,
        body: piece[start..].to_vec(),
        grid: quarter_ms
            .and_then(|q| BeatGrid::new(q, 0.0).ok())
            .map(|g| g.scaled(aug.tempo)),
    })
}

/// One training or evaluation sequence in both layouts.
#[derive(Debug, Clone)]
pub struct Example {
    pub inline: Vec<u32>,
    pub decoder: Vec<u32>,
    /// Leading tokens of `inline` / `decoder` that are given (prompt and header), not targets.
    pub inline_given: usize,
    pub decoder_given: usize,
    pub snippets: Vec<(SectionLabel, Vec<u32>)>,
    /// Body tokens covered (the targets).
    pub targets: usize,
    /// The window's latest onset (ms) after each token of `inline` / `decoder`: the
    /// window-position input (`staria_models::window`) of models that read it.
    pub inline_onsets: Vec<u32>,
    pub decoder_onsets: Vec<u32>,
    /// The grid window after each token of `inline` / `decoder` (`grid::grid_windows`) and the
    /// body's beat grid: the beat-grid head's input (`staria_models::grid`).
    pub inline_grid_windows: Vec<u32>,
    pub decoder_grid_windows: Vec<u32>,
    pub grid: Option<BeatGrid>,
}

/// Body positions a window may start at: `<T>`, a section tag, `<D>`, `<E>`, or a note/drum.
fn is_cut_point(tok: &Tokenizer, id: u32) -> bool {
    matches!(
        tok.kind(id),
        TokenKind::TimeShift
            | TokenKind::Section(_)
            | TokenKind::Note { .. }
            | TokenKind::Drum { .. }
            | TokenKind::EndingSoon
            | TokenKind::End
    )
}

fn header_at(tok: &Tokenizer, body: &[u32], start: usize) -> Vec<u32> {
    if start == 0 || matches!(tok.kind(body[start]), TokenKind::Section(_)) {
        return Vec::new();
    }
    body[..start]
        .iter()
        .rev()
        .find(|&&t| matches!(tok.kind(t), TokenKind::Section(_)))
        .map(|&t| vec![t])
        .unwrap_or_default()
}

impl Prepared {
    /// Body tokens that fit after the (longer, inline) prompt and a header in `seq_len`.
    pub fn budget(&self, seq_len: usize) -> Result<usize> {
        let used = self.prompt.inline.len() + 1;
        if used + 8 > seq_len {
            return Err(TrainError::config(format!(
                "the prompt takes {} of data.seq_len = {seq_len} tokens; lower data.snippet_tokens or raise seq_len",
                self.prompt.inline.len()
            )));
        }
        Ok(seq_len - used)
    }

    /// The sequence whose window starts at body position `start` (a cut point) and holds at most
    /// `budget` tokens including the header. Returns it and the body position after it.
    pub fn example_at(&self, tok: &Tokenizer, start: usize, budget: usize) -> (Example, usize) {
        let header = header_at(tok, &self.body, start);
        let end = (start + budget - header.len()).min(self.body.len());
        let window = &self.body[start..end];
        let mut inline = self.prompt.inline.clone();
        inline.extend_from_slice(&header);
        let inline_given = inline.len();
        inline.extend_from_slice(window);
        let mut decoder = self.prompt.decoder.clone();
        decoder.extend_from_slice(&header);
        let decoder_given = decoder.len();
        decoder.extend_from_slice(window);
        // The body's clock runs from its start, so a window cut part-way through a time window
        // reads where it really is, as generation (which has the whole piece) does.
        let mut clock = StreamDecoder::new();
        for &id in &self.body[..start] {
            clock.push(tok, id);
        }
        let mut grid_clock = clock;
        let mut body_onsets = latest_onsets(tok, &mut clock, &header);
        body_onsets.extend(latest_onsets(tok, &mut clock, window));
        let mut body_windows = grid_windows(tok, &mut grid_clock, &header);
        body_windows.extend(grid_windows(tok, &mut grid_clock, window));
        let with_prompt = |prompt: &[u32]| {
            let mut v = latest_onsets(tok, &mut StreamDecoder::new(), prompt);
            v.extend_from_slice(&body_onsets);
            v
        };
        let windows_with_prompt = |prompt: &[u32]| {
            let mut v = grid_windows(tok, &mut StreamDecoder::new(), prompt);
            v.extend_from_slice(&body_windows);
            v
        };
        let ex = Example {
            inline_onsets: with_prompt(&self.prompt.inline),
            decoder_onsets: with_prompt(&self.prompt.decoder),
            inline_grid_windows: windows_with_prompt(&self.prompt.inline),
            decoder_grid_windows: windows_with_prompt(&self.prompt.decoder),
            grid: self.grid,
            inline,
            decoder,
            inline_given,
            decoder_given,
            snippets: self.prompt.snippets.clone(),
            targets: window.len(),
        };
        (ex, end)
    }

    /// A random window: the whole body when it fits, else from the start a quarter of the time
    /// (so openings are learned) and otherwise from a random cut point.
    pub fn random_example(
        &self,
        tok: &Tokenizer,
        seq_len: usize,
        rng: &mut impl Rng,
    ) -> Result<Example> {
        let budget = self.budget(seq_len)?;
        if self.body.len() <= budget || rng.random_bool(0.25) {
            return Ok(self.example_at(tok, 0, budget).0);
        }
        let last = self.body.len() - budget / 2;
        let cuts: Vec<usize> = (1..last)
            .filter(|&i| is_cut_point(tok, self.body[i]))
            .collect();
        let start = if cuts.is_empty() {
            0
        } else {
            cuts[rng.random_range(0..cuts.len())]
        };
        Ok(self.example_at(tok, start, budget).0)
    }

    /// Consecutive windows covering the whole body (for evaluation): every body token is a
    /// target exactly once.
    pub fn all_examples(&self, tok: &Tokenizer, seq_len: usize) -> Result<Vec<Example>> {
        let budget = self.budget(seq_len)?;
        let mut out = Vec::new();
        let mut start = 0;
        while start < self.body.len() {
            let (mut ex, mut end) = self.example_at(tok, start, budget);
            // Move the end back to a cut point so the next window starts cleanly.
            if end < self.body.len() {
                let min_end = start + 1;
                let mut e = end;
                while e > min_end && !is_cut_point(tok, self.body[e]) {
                    e -= 1;
                }
                if e > min_end && e < end {
                    let drop = end - e;
                    ex.inline.truncate(ex.inline.len() - drop);
                    ex.decoder.truncate(ex.decoder.len() - drop);
                    ex.inline_onsets.truncate(ex.inline.len());
                    ex.decoder_onsets.truncate(ex.decoder.len());
                    ex.inline_grid_windows.truncate(ex.inline.len());
                    ex.decoder_grid_windows.truncate(ex.decoder.len());
                    ex.targets -= drop;
                    end = e;
                }
            }
            out.push(ex);
            start = end;
        }
        Ok(out)
    }
}

/// Which layout a batch is in.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Layout {
    /// Decoder-only baseline: inline snippets.
    Inline,
    /// Staria: decoder layout plus snippets for the encoder.
    Staria,
}

/// A padded batch: inputs, next-token targets and the target mask.
pub struct Batch {
    pub ids: Tensor,
    /// Window-position bins of the inputs `[B, T]`, for a model that reads them.
    pub win: Option<Tensor>,
    /// Beat-grid rows of the inputs `[B, T, onsets]`, for a model with a grid head.
    pub grid: Option<GridInput>,
    pub targets: Tensor,
    pub mask: Tensor,
    pub snippets: Option<SnippetBatch>,
    /// Non-pad input tokens.
    pub tokens: usize,
}

/// `window`: the model's window-position buckets (`WindowBins::of`), `None` for a model
/// without that input; `grid` its beat-grid rows (`GridRows::of`), `None` without a grid head.
pub fn collate(
    examples: &[Example],
    layout: Layout,
    pad: u32,
    window: Option<WindowBins>,
    grid: Option<GridRows>,
    snippet_len: usize,
    device: &Device,
) -> Result<Batch> {
    if examples.is_empty() {
        return Err(TrainError::Data("empty batch".into()));
    }
    let seqs: Vec<(&[u32], usize)> = examples
        .iter()
        .map(|e| match layout {
            Layout::Inline => (e.inline.as_slice(), e.inline_given),
            Layout::Staria => (e.decoder.as_slice(), e.decoder_given),
        })
        .collect();
    let onsets: Vec<&[u32]> = examples
        .iter()
        .map(|e| match layout {
            Layout::Inline => e.inline_onsets.as_slice(),
            Layout::Staria => e.decoder_onsets.as_slice(),
        })
        .collect();
    let t = seqs
        .iter()
        .map(|(s, _)| s.len().saturating_sub(1))
        .max()
        .unwrap_or(1)
        .max(1);
    let b = seqs.len();
    let mut ids = vec![pad; b * t];
    let mut targets = vec![pad; b * t];
    let mut mask = vec![0f32; b * t];
    let mut bins = vec![0u32; if window.is_some() { b * t } else { 0 }];
    // Padding positions get "no grid" rows.
    let mut grid_rows = match grid {
        Some(g) => vec![g.bins as u32; b * t * g.onsets],
        None => Vec::new(),
    };
    let mut tokens = 0;
    for (row, (s, given)) in seqs.iter().enumerate() {
        let n = s.len().saturating_sub(1);
        tokens += n;
        if let Some(g) = grid {
            let windows = match layout {
                Layout::Inline => &examples[row].inline_grid_windows,
                Layout::Staria => &examples[row].decoder_grid_windows,
            };
            if windows.len() != s.len() {
                return Err(TrainError::Data(format!(
                    "example {row}: {} grid windows for {} tokens",
                    windows.len(),
                    s.len()
                )));
            }
            let out = &mut grid_rows[row * t * g.onsets..(row * t + n) * g.onsets];
            for (dst, &w) in out.chunks_exact_mut(g.onsets).zip(windows) {
                g.fill(examples[row].grid, w, dst);
            }
        }
        if let Some(w) = window {
            if onsets[row].len() != s.len() {
                return Err(TrainError::Data(format!(
                    "example {row}: {} window onsets for {} tokens",
                    onsets[row].len(),
                    s.len()
                )));
            }
            for i in 0..n {
                bins[row * t + i] = w.bin(onsets[row][i]);
            }
        }
        for i in 0..n {
            ids[row * t + i] = s[i];
            targets[row * t + i] = s[i + 1];
            // Position i predicts token i + 1, a target once i + 1 is past the given part.
            if i + 1 >= *given {
                mask[row * t + i] = 1.0;
            }
        }
    }
    let snippets = match layout {
        Layout::Inline => None,
        Layout::Staria => Some(snippet_batch(examples, pad, snippet_len, device)?),
    };
    Ok(Batch {
        ids: Tensor::from_vec(ids, (b, t), device)?,
        win: match window {
            Some(_) => Some(Tensor::from_vec(bins, (b, t), device)?),
            None => None,
        },
        grid: match grid {
            Some(g) => Some(GridInput {
                rows: Tensor::from_vec(grid_rows, (b, t, g.onsets), device)?,
                first_onset: g.first_onset as usize,
            }),
            None => None,
        },
        targets: Tensor::from_vec(targets, (b, t), device)?,
        mask: Tensor::from_vec(mask, (b, t), device)?,
        snippets,
        tokens,
    })
}

/// Four slots per example (A..D), absent ones masked out. `max_len` is the encoder's limit.
fn snippet_batch(
    examples: &[Example],
    pad: u32,
    max_len: usize,
    device: &Device,
) -> Result<SnippetBatch> {
    let s = SectionLabel::ALL.len();
    let l = examples
        .iter()
        .flat_map(|e| e.snippets.iter().map(|(_, t)| t.len().min(max_len)))
        .max()
        .unwrap_or(1)
        .max(1);
    let b = examples.len();
    let mut ids = vec![pad; b * s * l];
    let mut mask = vec![0u8; b * s * l];
    let mut sections = vec![0u32; b * s];
    let mut present = vec![0u8; b * s];
    for (bi, e) in examples.iter().enumerate() {
        for (si, label) in SectionLabel::ALL.iter().enumerate() {
            sections[bi * s + si] = label.index() as u32;
            let row = (bi * s + si) * l;
            if let Some((_, toks)) = e
                .snippets
                .iter()
                .find(|(lb, t)| lb == label && !t.is_empty())
            {
                let n = toks.len().min(max_len);
                ids[row..row + n].copy_from_slice(&toks[..n]);
                mask[row..row + n].fill(1);
                present[bi * s + si] = 1;
            } else {
                // An absent slot still needs one unmasked position to stay finite.
                mask[row] = 1;
            }
        }
    }
    Ok(SnippetBatch {
        ids: Tensor::from_vec(ids, (b * s, l), device)?,
        mask: Tensor::from_vec(mask, (b * s, l), device)?,
        sections: Tensor::from_vec(sections, (b, s), device)?,
        present: Tensor::from_vec(present, (b, s), device)?,
    })
}

/// Mean next-token loss (nats) over the masked positions, and the summed loss and count.
pub fn masked_nll(logits: &Tensor, targets: &Tensor, mask: &Tensor) -> Result<(Tensor, f64, f64)> {
    let logp = candle_nn::ops::log_softmax(&logits.to_dtype(DType::F32)?, D::Minus1)?;
    let picked = logp
        .gather(&targets.unsqueeze(D::Minus1)?, D::Minus1)?
        .squeeze(D::Minus1)?;
    let nll = (picked.neg()? * mask)?;
    let sum = nll.sum_all()?;
    let count = mask.sum_all()?.to_scalar::<f32>()? as f64;
    let mean = (&sum / count.max(1.0))?;
    let sum_v = sum.to_scalar::<f32>()? as f64;
    Ok((mean, sum_v, count))
}
