//! The beat-grid head: where each candidate onset falls on the beat grid of the piece's tempo.
//!
//! Onset tokens are absolute 10 ms steps in a 5 s window, so a model that only sees earlier
//! onsets has to do fractional arithmetic to stay on a grid whose sixteenth is, say, 157.3 ms;
//! trained with tempo augmentation it learns inter-onset intervals to within a step or two, and
//! the ±10 ms errors add up over a section (the baseline's onsets drifted off the prompt's grid
//! within bars). Where the tempo is known (the MIDI tempo map in training, the host's or the
//! prompt's tempo in generation), a decoder with `grid_bins > 0` is told it at the output: the
//! logit of every onset token gets `h · grid_head[bin]` added, `h` being the final normed hidden
//! state (the LM head's input) and `bin` the candidate onset's phase within the beat (a quarter
//! note) in `grid_bins` equal buckets ([`phase_bin`]). The head starts at zero, so a decoder
//! fine-tuned from one without it starts out computing the same thing; it learns which phases
//! a context plays (sixteenths, triplets, swing) rather than snapping to a fixed grid.
//!
//! Inputs per position: the candidate bins of the window the next onset would fall in, a row of
//! `onsets` (the tokenizer's onset count) values, each a bin or `grid_bins` ("no grid", adds
//! nothing). Positions inside a prompt (snippets have their own time lines) and pieces of
//! unknown tempo get no grid. Training collates the rows of a sequence ([`grid_windows`],
//! [`GridRows::fill`]); the cached decoders keep the grammar state with their KV cache (the
//! `WindowClock`) and fill the row of their last position.

use candle_core::Tensor;

use crate::decoder::DecoderConfig;
use crate::error::{Error, Result};
use crate::tokenizer::{StreamDecoder, Tokenizer};

/// A window start meaning "no grid here" (inside a prompt).
pub const NO_WINDOW: u32 = u32::MAX;

/// A constant-tempo beat grid in piece time (ms from the piece's `<S>`): beats of `beat_ms`
/// with one at `origin_ms`. The beat is a quarter note (MIDI tempo and host tempo both count
/// quarters).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct BeatGrid {
    pub beat_ms: f64,
    pub origin_ms: f64,
}

impl BeatGrid {
    /// A grid of `beat_ms` beats from `origin_ms`; an error names a beat that is not a
    /// positive, finite length (or an origin that is not finite).
    pub fn new(beat_ms: f64, origin_ms: f64) -> Result<Self> {
        if !(beat_ms.is_finite() && beat_ms > 0.0 && origin_ms.is_finite()) {
            return Err(Error::Config(format!(
                "beat grid: beat {beat_ms} ms from {origin_ms} ms; the beat must be a positive \
                 length and the origin a finite time"
            )));
        }
        Ok(BeatGrid { beat_ms, origin_ms })
    }

    /// The grid of a tempo in quarter notes per minute, a beat at the piece's start.
    pub fn from_bpm(bpm: f64) -> Result<Self> {
        Self::new(60_000.0 / bpm, 0.0)
            .map_err(|_| Error::Config(format!("beat grid: tempo {bpm} bpm is not a tempo")))
    }

    /// The same grid with every time multiplied by `factor` (tempo augmentation).
    pub fn scaled(self, factor: f64) -> Self {
        BeatGrid {
            beat_ms: self.beat_ms * factor,
            origin_ms: self.origin_ms * factor,
        }
    }
}

/// The phase bucket of a time on `grid`: its position within the beat in `bins` equal buckets,
/// rounded to the nearest (so an onset a little early falls in the last bucket, not the one
/// before the beat's end). The one formula training and generation use.
#[inline]
pub fn phase_bin(grid: BeatGrid, bins: usize, ms: f64) -> u32 {
    let beats = (ms - grid.origin_ms) / grid.beat_ms;
    let phase = beats - beats.floor();
    ((phase * bins as f64).round() as usize % bins.max(1)) as u32
}

/// The grid window after each token of `ids` read by `dec` (continuing its state): the piece
/// time (ms) where the time window the next onset falls in starts, or [`NO_WINDOW`] inside a
/// prompt.
pub fn grid_windows(tok: &Tokenizer, dec: &mut StreamDecoder, ids: &[u32]) -> Vec<u32> {
    ids.iter()
        .map(|&id| {
            dec.push(tok, id);
            window_of(dec)
        })
        .collect()
}

/// The grid window of a grammar state (see [`grid_windows`]).
#[inline]
pub fn window_of(dec: &StreamDecoder) -> u32 {
    if dec.in_prompt() {
        NO_WINDOW
    } else {
        dec.window_start_ms()
    }
}

/// What a model's grid head needs from the tokenizer: `bins` phase buckets, the onset tokens
/// (`onsets` of them from `first_onset`, one every `step_ms`).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct GridRows {
    pub bins: usize,
    pub first_onset: u32,
    pub onsets: usize,
    pub step_ms: f64,
}

impl GridRows {
    /// The rows of a decoder with `cfg` reading `tok`'s tokens; `None` without a grid head.
    pub fn of(cfg: &DecoderConfig, tok: &Tokenizer) -> Option<Self> {
        Self::new(cfg.grid_bins, tok)
    }

    /// `bins` buckets over `tok`'s onsets; `None` when `bins` is 0 (no grid head).
    pub fn new(bins: usize, tok: &Tokenizer) -> Option<Self> {
        let onsets = tok.onset_ids();
        (bins > 0).then(|| GridRows {
            bins,
            first_onset: onsets.start,
            onsets: onsets.len(),
            step_ms: tok.config().time_step_ms as f64,
        })
    }

    /// Fills `out` (`[onsets]`) with the bins of the onsets of the window starting at
    /// `window_start_ms` on `grid`, or with `bins` ("no grid") when there is no grid or the
    /// start is [`NO_WINDOW`].
    pub fn fill(&self, grid: Option<BeatGrid>, window_start_ms: u32, out: &mut [u32]) {
        debug_assert_eq!(out.len(), self.onsets);
        match grid {
            Some(grid) if window_start_ms != NO_WINDOW => {
                let start = window_start_ms as f64;
                for (k, bin) in out.iter_mut().enumerate() {
                    *bin = phase_bin(grid, self.bins, start + k as f64 * self.step_ms);
                }
            }
            _ => out.fill(self.bins as u32),
        }
    }

    /// The rows of a whole sequence, `[windows.len(), onsets]` row-major.
    pub fn rows(&self, grid: Option<BeatGrid>, windows: &[u32]) -> Vec<u32> {
        let mut out = vec![0; windows.len() * self.onsets];
        for (row, &w) in out.chunks_exact_mut(self.onsets).zip(windows) {
            self.fill(grid, w, row);
        }
        out
    }
}

/// Adds the grid head's scores to the onset logits of one position: `logits[first_onset + k]
/// += scores[row[k]]`, "no grid" entries (`row[k] == scores.len()`) adding nothing.
#[inline]
pub fn add_to_logits(logits: &mut [f32], first_onset: u32, row: &[u32], scores: &[f32]) {
    let onset_logits = &mut logits[first_onset as usize..first_onset as usize + row.len()];
    for (l, &bin) in onset_logits.iter_mut().zip(row) {
        if let Some(s) = scores.get(bin as usize) {
            *l += s;
        }
    }
}

/// The beat-grid rows of a training batch for the candle decoder: `rows` `[B, T, onsets]` u32
/// ([`GridRows::rows`] of each sequence), the onset tokens starting at `first_onset`.
#[derive(Debug, Clone)]
pub struct GridInput {
    pub rows: Tensor,
    pub first_onset: usize,
}

/// The beat-grid row of one position for a cached decoder: `bins` `[onsets]`, the onset tokens
/// starting at `first_onset`.
#[derive(Debug, Clone, Copy)]
pub struct GridRow<'a> {
    pub first_onset: u32,
    pub bins: &'a [u32],
}
