//! Logit masks that keep generation musical and well formed: pitch range, key/scale, maximum
//! polyphony, the time span a section may fill, and the token grammar (note, onset, duration),
//! so every sampled sequence decodes; for the live modes, also one instrument's notes only
//! ([`ConstrainedDecoder::only_instrument`], the model's voice with a two-voice tokenizer).
//!
//! `Constraints` is what a request asks for; `ConstrainedDecoder` compiles it once per request
//! against the tokenizer's tables (an additive mask over the vocabulary plus the id ranges) and
//! then tracks the piece token by token. Per token it only adds the precomputed mask and fills a
//! few id ranges with `-inf`: no allocation on the engine thread.
//!
//! Files: this one holds [`Constraints`] and [`ConstrainedDecoder`]; `scale.rs` the keys
//! ([`Scale`], [`ScaleKind`]); `tests.rs` the unit tests.

use std::ops::Range;

use serde::{Deserialize, Serialize};
use staria_models::tokenizer::{
    Expect, OnsetVote, StreamDecoder, StreamEvent, TokenKind, Tokenizer,
};

mod scale;
#[cfg(test)]
mod tests;

pub use scale::{Scale, ScaleKind};

/// What a request allows the model to play.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Constraints {
    /// Lowest and highest pitch a (non-drum) note may have, inclusive.
    pub pitch_min: u8,
    pub pitch_max: u8,
    /// Only pitches of this scale (drums are exempt); `None` = any pitch.
    pub scale: Option<Scale>,
    /// At most this many pitched notes sounding at once; `None` = unlimited.
    pub max_polyphony: Option<u8>,
    /// Whether drum hits may be generated.
    pub drums: bool,
    /// Whether the model may end early (`<E>`, `<D>`, another section tag) before the requested
    /// span is over. Off by default: a request for N bars gets N bars.
    pub allow_early_end: bool,
}

impl Default for Constraints {
    fn default() -> Self {
        Constraints {
            pitch_min: 0,
            pitch_max: 127,
            scale: None,
            max_polyphony: None,
            drums: false,
            allow_early_end: false,
        }
    }
}

impl Constraints {
    /// Checks the settings can be met; the message names the one at fault.
    pub fn validate(&self) -> Result<(), String> {
        if self.pitch_max > 127 || self.pitch_min > self.pitch_max {
            return Err(format!(
                "pitch range {}..={} is empty or beyond 0..=127",
                self.pitch_min, self.pitch_max
            ));
        }
        if self.max_polyphony == Some(0) {
            return Err("max polyphony must be at least 1".into());
        }
        if let Some(scale) = self.scale
            && !(self.pitch_min..=self.pitch_max).any(|p| scale.contains(p))
        {
            return Err(format!(
                "no pitch in {}..={} belongs to {scale}",
                self.pitch_min, self.pitch_max
            ));
        }
        Ok(())
    }

    /// Whether a pitched note may have this pitch.
    pub fn allows_pitch(&self, pitch: u8) -> bool {
        (self.pitch_min..=self.pitch_max).contains(&pitch)
            && self.scale.is_none_or(|s| s.contains(pitch))
    }
}

/// How the generator reads an onset sampled under [`ConstrainedDecoder::apply_open`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OnsetRead {
    /// A legal onset: feed it.
    Accept,
    /// Before the window's last onset: a vote for `<T>` ([`OnsetVote::NextWindow`]). Take the
    /// note token back (KV cache and [`ConstrainedDecoder::retract_pending`]), feed `<T>`, feed
    /// the note token again and sample its onset in the new window.
    TimeShift,
    /// Not before the window's last onset but before the earliest step the request allows (a
    /// voice still busy, the span not started yet): sample again under [`ConstrainedDecoder::apply`].
    Clamp,
}

/// The stream decoder plus everything the masks need: the request's compiled tables, the time
/// span notes may start in, and the end times of the notes still sounding.
#[derive(Debug, Clone)]
pub struct ConstrainedDecoder {
    /// Additive mask (0 or -inf) for `Expect::Any`: allowed pitches, drums, `<T>`, and the
    /// end-like tokens when early ends are allowed. Never prompt/form/style/pad/unknown/`<S>`.
    any: Vec<f32>,
    notes: Range<u32>,
    drums: Range<u32>,
    onsets: Range<u32>,
    durs: Range<u32>,
    step_ms: u32,
    window_ms: u32,
    /// Largest end times (ms, absolute) of pitched notes, at most `max_polyphony` of them:
    /// only the largest ones decide when a voice frees up.
    ends: Vec<f64>,
    max_polyphony: usize,
    span_start_ms: f64,
    span_end_ms: f64,
    /// Where the music being sampled ends: `Generator::run_span` clips notes here. The span's
    /// end, except for an optional span (`set_optional_span`), whose end only bounds where
    /// notes start.
    notes_end_ms: f64,
    /// Notes placed in the current span. Until there is one, the span cannot be left while a
    /// note still fits: a requested section is never silent (an untrained or unsure model
    /// otherwise often lets time run out before playing anything).
    notes_in_span: u32,
    time_shift: u32,
    /// End-like tokens the `any` mask allows (only with `allow_early_end`).
    early_ends: Vec<u32>,
    dec: StreamDecoder,
    /// Whether the pending onset belongs to a pitched note (polyphony applies) or a drum.
    pending_pitched: bool,
    /// New notes may start whatever the polyphony (`set_polyphony_exempt`).
    polyphony_exempt: bool,
}

impl ConstrainedDecoder {
    /// Compiles `c` against the tokenizer. The span starts unbounded; see `set_span`.
    pub fn new(tok: &Tokenizer, c: &Constraints) -> Result<ConstrainedDecoder, String> {
        c.validate()?;
        let vocab = tok.vocab_size();
        let mut any = vec![f32::NEG_INFINITY; vocab];
        for (id, slot) in any.iter_mut().enumerate() {
            let ok = match tok.kind(id as u32) {
                TokenKind::Note { pitch, .. } => c.allows_pitch(pitch),
                TokenKind::Drum { .. } => c.drums,
                TokenKind::TimeShift => true,
                TokenKind::End | TokenKind::EndingSoon | TokenKind::Section(_) => c.allow_early_end,
                // Onsets and durations only follow a note; the rest belongs to the prompt.
                TokenKind::Onset { .. }
                | TokenKind::Dur { .. }
                | TokenKind::Start
                | TokenKind::Pad
                | TokenKind::Unknown
                | TokenKind::PromptStart
                | TokenKind::PromptEnd
                | TokenKind::Form(_)
                | TokenKind::Style(_) => false,
            };
            if ok {
                *slot = 0.0;
            }
        }
        let early_ends = (0..vocab as u32)
            .filter(|&id| {
                c.allow_early_end
                    && matches!(
                        tok.kind(id),
                        TokenKind::End | TokenKind::EndingSoon | TokenKind::Section(_)
                    )
            })
            .collect();
        let max_polyphony = c.max_polyphony.map_or(usize::MAX, |p| p as usize);
        let cfg = tok.config();
        Ok(ConstrainedDecoder {
            any,
            notes: tok.note_ids(),
            drums: tok.drum_ids(),
            onsets: tok.onset_ids(),
            durs: tok.dur_ids(),
            step_ms: cfg.time_step_ms,
            window_ms: cfg.window_ms,
            ends: Vec::with_capacity(c.max_polyphony.unwrap_or(0) as usize + 1),
            max_polyphony,
            span_start_ms: 0.0,
            span_end_ms: f64::INFINITY,
            notes_end_ms: f64::INFINITY,
            notes_in_span: 0,
            time_shift: tok.time_shift_id(),
            early_ends,
            dec: StreamDecoder::new(),
            pending_pitched: false,
            polyphony_exempt: false,
        })
    }

    /// Only notes of `instrument` may be sampled from now on: every other instrument's note
    /// tokens are masked, on top of the pitch range and the rest (an unknown index masks every
    /// note). The live modes pick the model's voice this way on a vocabulary with an
    /// accompaniment instrument ([`Tokenizer::accompaniment_instrument`]). Notes fed in (the
    /// performer's, the prompt's) are read whatever their instrument. `restart` keeps it.
    pub fn only_instrument(&mut self, tok: &Tokenizer, instrument: u8) {
        let keep = tok.instrument_note_ids(instrument);
        let notes = tok.note_ids();
        let n = self.any.len();
        let mut mask = |r: Range<u32>| {
            let end = (r.end as usize).min(n);
            self.any[(r.start as usize).min(end)..end].fill(f32::NEG_INFINITY);
        };
        if keep.is_empty() {
            mask(notes);
        } else {
            mask(notes.start..keep.start);
            mask(keep.end..notes.end);
        }
    }

    /// Notes may only start in `[start_ms, end_ms)` (absolute piece time) from now on, and
    /// are clipped at `end_ms` (the section's end). The span counts as empty until a note
    /// starts in it (see `notes_in_span`).
    pub fn set_span(&mut self, start_ms: f64, end_ms: f64) {
        self.span_start_ms = start_ms;
        self.span_end_ms = end_ms;
        self.notes_end_ms = end_ms;
        self.notes_in_span = 0;
    }

    /// Moves the end of the current span, keeping what it holds (the live answer's first note
    /// is placed in its first beat, then the span opens to the answer's bars).
    pub fn set_span_end(&mut self, end_ms: f64) {
        self.span_end_ms = end_ms;
        self.notes_end_ms = end_ms;
    }

    /// Like [`set_span`](Self::set_span), but the span may stay empty: nothing forces a note
    /// into it (the live accompaniment's look-ahead, where silence is a fine answer), and its
    /// end bounds only where notes start: a note keeps the length the model gave it (the
    /// look-ahead's end is not the end of the music).
    pub fn set_optional_span(&mut self, start_ms: f64, end_ms: f64) {
        self.span_start_ms = start_ms;
        self.span_end_ms = end_ms;
        self.notes_end_ms = f64::INFINITY;
        // Counted as holding a note already, so `must_play` never holds the span open.
        self.notes_in_span = 1;
    }

    /// Back to the state right after `new`: an empty piece (as after `<S>`), no sounding notes,
    /// an unbounded span. The compiled masks are kept, so nothing is allocated; the live modes
    /// replay the cached tokens after a rewind of the model's cache.
    pub fn restart(&mut self) {
        self.dec = StreamDecoder::new();
        self.ends.clear();
        self.span_start_ms = 0.0;
        self.span_end_ms = f64::INFINITY;
        self.notes_end_ms = f64::INFINITY;
        self.notes_in_span = 0;
        self.pending_pitched = false;
        self.polyphony_exempt = false;
    }

    /// While `exempt`, a new pitched note may start whatever the polyphony limit says (the
    /// notes' ends are still counted for the notes after): the live accompaniment's
    /// replacement of a note it took back, which takes that note's place (`live::rechoose`).
    /// `restart` ends it.
    pub fn set_polyphony_exempt(&mut self, exempt: bool) {
        self.polyphony_exempt = exempt;
    }

    /// Notes (pitched or drum) started inside the current span so far.
    pub fn notes_in_span(&self) -> u32 {
        self.notes_in_span
    }

    pub fn span(&self) -> (f64, f64) {
        (self.span_start_ms, self.span_end_ms)
    }

    /// Where sampled notes are clipped (absolute piece time): the span's end, unbounded for an
    /// optional span (see [`set_optional_span`](Self::set_optional_span)).
    pub fn notes_end_ms(&self) -> f64 {
        self.notes_end_ms
    }

    pub fn decoder(&self) -> &StreamDecoder {
        &self.dec
    }

    pub fn expects(&self) -> Expect {
        self.dec.expects()
    }

    /// Start of the current time window (ms from `<S>`).
    pub fn window_start_ms(&self) -> f64 {
        self.dec.window_start_ms() as f64
    }

    /// Feeds one piece token (sampled, forced, or from the material being continued).
    pub fn push(&mut self, tok: &Tokenizer, id: u32) -> Option<StreamEvent> {
        let ev = self.dec.push(tok, id);
        match self.dec.expects() {
            Expect::Onset => self.pending_pitched = matches!(tok.kind(id), TokenKind::Note { .. }),
            Expect::Any | Expect::Dur => {}
        }
        if let Some(StreamEvent::Note { start_ms, .. }) = ev
            && (self.span_start_ms..self.span_end_ms).contains(&start_ms)
        {
            self.notes_in_span += 1;
        }
        if let Some(StreamEvent::Note {
            drum: false,
            start_ms,
            dur_ms,
            ..
        }) = ev
        {
            self.note_sounds(start_ms, start_ms + dur_ms);
        }
        ev
    }

    fn note_sounds(&mut self, start_ms: f64, end_ms: f64) {
        if self.max_polyphony == usize::MAX {
            return;
        }
        // Notes over by `start_ms` cannot overlap anything later (onsets never go back).
        self.ends.retain(|&e| e > start_ms);
        if self.ends.len() == self.max_polyphony {
            // Keep the largest ends only; capacity was reserved for one more than the limit.
            let (i, &min) = self
                .ends
                .iter()
                .enumerate()
                .min_by(|a, b| a.1.total_cmp(b.1))
                .expect("ends is non-empty at the polyphony limit");
            if min >= end_ms {
                return;
            }
            self.ends.swap_remove(i);
        }
        self.ends.push(end_ms);
    }

    /// Earliest absolute time a new note could start at without exceeding the polyphony limit
    /// (and not before the decoder's current time).
    fn earliest_onset_ms(&self, pitched: bool) -> f64 {
        let now = self.window_start_ms() + self.dec.min_onset_ms() as f64;
        let mut t = now.max(self.span_start_ms);
        if pitched && self.max_polyphony != usize::MAX && !self.polyphony_exempt {
            let sounding = self.ends.iter().filter(|&&e| e > t).count();
            if sounding >= self.max_polyphony {
                // All kept ends lie after `t`: a voice frees up when the earliest of them ends.
                let free = self.ends.iter().copied().fold(f64::INFINITY, f64::min);
                t = t.max(free);
            }
        }
        t
    }

    /// Onset steps (within the current window) a new note may take: `[from, to)`.
    fn onset_steps(&self, pitched: bool) -> (u32, u32) {
        let w0 = self.window_start_ms();
        let steps_per_window = self.window_ms / self.step_ms;
        let step = self.step_ms as f64;
        let from = ((self.earliest_onset_ms(pitched) - w0) / step)
            .ceil()
            .max(0.0);
        let to = ((self.span_end_ms - w0) / step)
            .ceil()
            .clamp(0.0, steps_per_window as f64);
        let from = from.min(steps_per_window as f64) as u32;
        (from, (to as u32).max(from))
    }

    fn can_start(&self, pitched: bool) -> bool {
        let (from, to) = self.onset_steps(pitched);
        from < to
    }

    /// Whether `id`, sampled now, moves time past the span end (a `<T>` or an onset beyond it):
    /// the generator then ends the span without feeding it.
    pub fn ends_span(&self, tok: &Tokenizer, id: u32) -> bool {
        match tok.kind(id) {
            TokenKind::TimeShift => !self.time_shift_allowed(),
            TokenKind::Onset { ms } => self.window_start_ms() + ms as f64 >= self.span_end_ms,
            _ => false,
        }
    }

    /// Whether `<T>` keeps the piece inside the span.
    fn time_shift_allowed(&self) -> bool {
        self.window_start_ms() + (self.window_ms as f64) < self.span_end_ms
    }

    /// True when no note can be placed in the span any more: time has reached its end, or every
    /// voice is busy until then. The generator then ends the span instead of sampling.
    pub fn span_exhausted(&self) -> bool {
        let drum_possible = self.any_allowed(self.drums.clone()) && self.can_start(false);
        self.dec.expects() == Expect::Any
            && !self.can_start(true)
            && !drum_possible
            && !self.time_shift_allowed()
    }

    fn any_allowed(&self, ids: Range<u32>) -> bool {
        self.any[ids.start as usize..ids.end as usize].contains(&0.0)
    }

    /// Whether the span is still empty and a note could yet start in it: leaving it is then
    /// masked.
    fn must_play(&self) -> bool {
        self.notes_in_span == 0
            && self.span_end_ms.is_finite()
            && (self.can_start(true)
                || (self.any_allowed(self.drums.clone()) && self.can_start(false)))
    }

    /// Whether the onset about to be sampled may vote for `<T>` (see [`OnsetRead`]): an onset is
    /// expected, the window already has a later onset than its start, and `<T>` keeps the piece
    /// inside the span. Otherwise (`<T>` would end the span) onsets are masked as `apply` does.
    pub fn onset_may_vote(&self) -> bool {
        self.dec.expects() == Expect::Onset
            && self.dec.min_onset_ms() > 0
            && self.time_shift_allowed()
    }

    /// Onset steps `[from, to)` that `apply` keeps: from the earliest allowed step; up to the
    /// span end while the span is empty, else to the window end (an onset past the span end
    /// ends the span).
    fn onset_mask(&self) -> (u32, u32) {
        let (from, to) = self.onset_steps(self.pending_pitched);
        let steps_per_window = self.window_ms / self.step_ms;
        let to = if self.notes_in_span == 0 && from < to {
            to
        } else {
            steps_per_window.max(from)
        };
        (from, to)
    }

    /// `apply`, except that where [`onset_may_vote`](Self::onset_may_vote) the onset mask keeps
    /// every step of the window from its start (up to the same end as `apply`'s): the model's
    /// whole onset distribution is sampled and the sample is read by
    /// [`read_onset`](Self::read_onset).
    pub fn apply_open(&self, logits: &mut [f32]) {
        if !self.onset_may_vote() {
            return self.apply(logits);
        }
        let (_, to) = self.onset_mask();
        let onsets = self.onsets.start..self.onsets.start + to;
        let n = logits.len();
        logits[..(onsets.start as usize).min(n)].fill(f32::NEG_INFINITY);
        logits[(onsets.end as usize).min(n)..].fill(f32::NEG_INFINITY);
    }

    /// How the token `id`, sampled under [`apply_open`](Self::apply_open), is read.
    pub fn read_onset(&self, tok: &Tokenizer, id: u32) -> OnsetRead {
        if !self.onset_may_vote() {
            return OnsetRead::Accept;
        }
        if self.dec.onset_vote(tok, id) == OnsetVote::NextWindow {
            return OnsetRead::TimeShift;
        }
        let (from, _) = self.onset_mask();
        if id >= self.onsets.start + from {
            OnsetRead::Accept
        } else {
            OnsetRead::Clamp
        }
    }

    /// Takes back the pending note or drum token (after [`OnsetRead::TimeShift`]); the caller
    /// drops it from the model's cache too. `false` when none is pending.
    pub fn retract_pending(&mut self) -> bool {
        self.dec.retract_pending()
    }

    /// Masks `logits` (one per vocabulary entry) so that only tokens valid now remain.
    pub fn apply(&self, logits: &mut [f32]) {
        let neg = f32::NEG_INFINITY;
        let fill = |logits: &mut [f32], r: Range<u32>| {
            let end = (r.end as usize).min(logits.len());
            let start = (r.start as usize).min(end);
            logits[start..end].fill(neg);
        };
        let keep_only = |logits: &mut [f32], r: Range<u32>| {
            let n = logits.len() as u32;
            fill(logits, 0..r.start);
            fill(logits, r.end..n);
        };
        match self.dec.expects() {
            Expect::Any => {
                for (l, m) in logits.iter_mut().zip(&self.any) {
                    *l += m;
                }
                if !self.can_start(true) {
                    fill(logits, self.notes.clone());
                }
                if !self.can_start(false) {
                    fill(logits, self.drums.clone());
                }
                // `<T>` stays allowed even where it leaves the span: the model saying "time moves
                // on" is how a section ends (see `ends_span`). Masking it would make the model
                // pile notes onto the last onsets of the span instead. Only an empty span may
                // not be left (nor ended early) while a note still fits.
                if self.must_play() {
                    if !self.time_shift_allowed() {
                        logits[self.time_shift as usize] = neg;
                    }
                    for &id in &self.early_ends {
                        logits[id as usize] = neg;
                    }
                }
            }
            Expect::Onset => {
                // Likewise onsets past the span end stay allowed and end the span, unless the
                // span is still empty.
                let (from, to) = self.onset_mask();
                keep_only(logits, self.onsets.start + from..self.onsets.start + to);
            }
            Expect::Dur => keep_only(logits, self.durs.clone()),
        }
    }
}
