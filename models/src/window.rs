//! The window-position input: where the latest onset sits inside the current time window.
//!
//! Onset tokens are absolute within a `window_ms` window and `<T>` starts the next one, so the
//! next onset is only predictable from the latest one. A model that must find that onset by
//! attention alone loses track late in a window (the shipped baseline put 91-93% of its onset
//! mass before the latest onset once it passed 4.5 s). A decoder with `window_bins > 0` is told
//! it directly: each token's embedding gets `win_emb[bin]` added, where `bin` buckets the
//! window's latest onset *after* that token (`window_bin_ms` wide, the last bucket open-ended)
//! as the tokenizer's [`StreamDecoder`] reads the sequence from its start: `<T>`, `<S>`,
//! `<PROMPT_START>`, `<PROMPT_END>` and the prompt's section tags bring it back to 0.
//!
//! Training reads the onsets of a whole sequence ([`latest_onsets`]); the cached decoders
//! ([`AnyModel`](crate::AnyModel), [`FastDecoder`](crate::fast::FastDecoder)) keep a
//! [`WindowClock`] that follows their KV cache, so `truncate` and `begin` rewind it too.

use crate::decoder::DecoderConfig;
use crate::error::{Error, Result};
use crate::tokenizer::{StreamDecoder, Tokenizer};

/// How a model buckets the window's latest onset: `count` buckets of `bin_ms` (the last one
/// open-ended). The one formula the trainer's batches and both cached decoders use.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct WindowBins {
    pub count: usize,
    pub bin_ms: u32,
}

impl WindowBins {
    /// The model's buckets; `None` when it has no window input.
    pub fn of(cfg: &DecoderConfig) -> Option<Self> {
        Self::new(cfg.window_bins, cfg.window_bin_ms)
    }

    /// `count` buckets of `bin_ms`; `None` when `count` is 0 (no window input).
    pub fn new(count: usize, bin_ms: u32) -> Option<Self> {
        (count > 0).then_some(WindowBins { count, bin_ms })
    }

    /// The bucket of a latest onset `onset_ms` (ms into its window).
    #[inline]
    pub fn bin(self, onset_ms: u32) -> u32 {
        (onset_ms / self.bin_ms.max(1)).min(self.count.saturating_sub(1) as u32)
    }
}

/// The window's latest onset (ms) after each token of `ids`, read from a fresh
/// [`StreamDecoder`] (`dec`'s state is where it ends): what [`WindowBins::bin`] buckets.
pub fn latest_onsets(tok: &Tokenizer, dec: &mut StreamDecoder, ids: &[u32]) -> Vec<u32> {
    ids.iter()
        .map(|&id| {
            dec.push(tok, id);
            dec.min_onset_ms()
        })
        .collect()
}

/// The window position of a cached decoder's tokens, kept in step with its KV cache: the grammar
/// state before each cached token, so feeding at an earlier position rewinds it. It serves the
/// window-position input and the beat-grid head (`crate::grid`, which reads the state after the
/// last token). Allocates once (in [`new`](Self::new)); [`feed`](Self::feed) never allocates.
#[derive(Debug, Clone)]
pub struct WindowClock {
    tokenizer: Tokenizer,
    /// `None` for a model with a grid head but no window input (bins stay 0).
    window: Option<WindowBins>,
    /// Grammar state before token `i`, for `i` in `0..=cached`: `[max_seq_len + 1]` capacity.
    states: Vec<StreamDecoder>,
    /// Bins of the tokens of the last `feed`: `[max_seq_len]`.
    bins: Vec<u32>,
}

impl WindowClock {
    /// A clock for a decoder with `cfg`; `None` when the model has neither a window input nor
    /// a grid head.
    pub fn new(tokenizer: &Tokenizer, cfg: &DecoderConfig) -> Option<Self> {
        Self::with_bins(
            tokenizer,
            WindowBins::of(cfg),
            cfg.grid_bins > 0,
            cfg.max_seq_len,
        )
    }

    /// The same from the buckets themselves (the fast decoder's config carries them too).
    pub fn with_bins(
        tokenizer: &Tokenizer,
        window: Option<WindowBins>,
        grid_head: bool,
        max_seq_len: usize,
    ) -> Option<Self> {
        if window.is_none() && !grid_head {
            return None;
        }
        let mut states = Vec::with_capacity(max_seq_len + 1);
        states.push(StreamDecoder::new());
        Some(WindowClock {
            tokenizer: tokenizer.clone(),
            window,
            states,
            bins: vec![0; max_seq_len],
        })
    }

    /// Feeds `ids` as the tokens at positions `pos..` (what the cache holds after `pos` is
    /// dropped) and returns their bins. Errors, changing nothing, when `pos` is past what was
    /// fed or the tokens do not fit `max_seq_len`.
    pub fn feed(&mut self, pos: usize, ids: &[u32]) -> Result<&[u32]> {
        if pos >= self.states.len() || pos + ids.len() > self.bins.len() {
            return Err(Error::Config(format!(
                "window clock: {} tokens at position {pos} do not follow the {} fed (max_seq_len {})",
                ids.len(),
                self.states.len() - 1,
                self.bins.len()
            )));
        }
        self.states.truncate(pos + 1);
        let mut dec = self.states[pos];
        for (bin, &id) in self.bins.iter_mut().zip(ids) {
            dec.push(&self.tokenizer, id);
            *bin = self.window.map_or(0, |w| w.bin(dec.min_onset_ms()));
            // Within the capacity reserved in `new` (checked above): no reallocation.
            self.states.push(dec);
        }
        Ok(&self.bins[..ids.len()])
    }

    /// The bins of the last [`feed`](Self::feed) again (`n` of them: as many as it fed).
    pub fn fed_bins(&self, n: usize) -> &[u32] {
        &self.bins[..n.min(self.bins.len())]
    }

    /// The grammar state after the last token fed (before any token: a fresh one).
    pub fn state(&self) -> &StreamDecoder {
        // `states` always holds the state before token 0.
        &self.states[self.states.len() - 1]
    }
}

/// The error of a model with a window input asked to decode without its clock.
pub(crate) fn missing_clock(what: &str, window_bins: usize) -> Error {
    Error::Config(format!(
        "{what}: this model reads the window position (config.json: window_bins {window_bins}) \
         and needs its tokenizer; call set_tokenizer (checkpoint loading does) before decoding"
    ))
}
