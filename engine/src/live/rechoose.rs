//! Accompaniment with [`LiveSettings::consonant`](super::LiveSettings::consonant): the
//! model's notes that clash with a performer's note although they were chosen before it came
//! are taken back at that note and re-chosen by the next `advance`. See the contracts in the
//! module notes of `live` ("Accompaniment").
//!
//! At a performer note-on at `at` (pitch `q`), a model note of the accompaniment (not a
//! ghost-melody prediction) is *taken back* when it is still in the revisable part of the
//! cache (after the previous performer note), its pitch is dissonant with `q`
//! ([`super::sample::dissonant`]: interval class 1, 2, 6, 10 or 11), it still sounds at `at`,
//! and it starts in `[at - rechoose_window_ms, at + reaction_ms)` or, handed out, later (a
//! handed-out note is never revised otherwise; taking those back too means a `Cut` on its
//! pitch reaches no note that is kept, see below). Such a note is
//! - cut: [`LiveEvent::Cut`] at `max(at, its start)` when it was handed out (a note not yet
//!   started never sounds, one sounding stops at `at`), and dropped from the rebase history;
//! - left out of the cache: the revision rewinds to before it and feeds again only the notes
//!   it keeps;
//! - replaced (a [`Rechoice`]): the next `advance` samples, before the rest of the look-ahead,
//!   one note at `max(its start, now + reaction_ms)` (on the tokenizer's time step, and not
//!   before the latest note already in the cache: the cache stays in time order) with the same
//!   end; dropped when less than a 32nd note (an eighth of a beat) would be left. Its note
//!   token (instrument, pitch and velocity are one token) is sampled by the model under the
//!   constraints and the live masks, `q` counted as held (so it is consonant with `q` unless no
//!   consonant pitch is left), except the polyphony limit: it takes the place of a note the
//!   voice had room for, and `q`, which the limit counts, came after that note was chosen
//!   (`ConstrainedDecoder::set_polyphony_exempt`); its `<T>`s, onset and duration are
//!   forced. The model samples a note's token before its onset in this grammar, so the
//!   choice is conditioned on what it would be conditioned on anyway; only the onset and
//!   length are not its own.
//!
//! A `Cut` stops every handed-out model note on its pitch that sounds at or starts after its
//! time. The ones on that pitch starting after a taken-back note are handed out, later and on
//! the same (dissonant) pitch, so they are taken back too; one on that pitch that started
//! before the window and still sounds is not possible in the drivers (a note on a key ends
//! where the next note on that key starts, `outbox::Outbox::add`): no kept note is cut.
//!
//! With `consonant` off nothing here runs: the events are those of the session without it.

use super::sample::dissonant;
use super::{FedNote, LiveEvent, LiveSession, TimedNote};
use crate::constraints::ConstrainedDecoder;
use crate::generate::{Flow, Generator, RawNote, Result};
use staria_models::tokenizer::Expect;

/// A model note taken back at a performer's note, waiting for its replacement.
#[derive(Debug, Clone, Copy, PartialEq)]
pub(super) struct Rechoice {
    /// The note as it was chosen (session ms).
    pub note: TimedNote,
    /// The performer's pitch it clashed with (held for the replacement's masks).
    pub against: u8,
}

impl LiveSession {
    /// Whether the model note `f` clashes with a performer note-on of `pitch` at `at_ms` and
    /// is taken back (see the module notes; always `false` with `consonant` off).
    pub(super) fn clashes(&self, f: &FedNote, pitch: u8, at_ms: f64) -> bool {
        let s = &self.settings;
        s.consonant
            && !f.predicted
            && f.note.end_ms > at_ms
            && f.note.start_ms >= at_ms - s.rechoose_window_ms
            && (f.committed || f.note.start_ms < at_ms + s.reaction_ms)
            && dissonant(f.note.pitch, pitch)
    }

    /// Takes back the notes of `fed` that clash with the performer's `pitch` at `at_ms`: cuts
    /// the handed-out ones, corrects the rebase history and queues their replacements. The
    /// caller leaves them out of what it feeds again.
    pub(super) fn take_back_clashes(
        &mut self,
        pitch: u8,
        at_ms: f64,
        out: &mut dyn FnMut(LiveEvent),
    ) {
        for i in 0..self.fed.len() {
            let f = self.fed[i];
            if !self.clashes(&f, pitch, at_ms) {
                continue;
            }
            let n = f.note;
            if f.committed {
                let cut = at_ms.max(n.start_ms);
                out(LiveEvent::Cut {
                    pitch: n.pitch,
                    at_ms: cut,
                });
                let sounding = &mut self.model_sounding[n.pitch as usize];
                if sounding.is_some_and(|(s, _)| s >= cut) {
                    *sounding = None;
                } else if let Some((_, end)) = sounding {
                    *end = end.min(cut);
                }
                self.forget_in_history(&n);
            }
            self.stats.rechosen += 1;
            if self.rechoices.len() < self.rechoices.capacity() {
                self.rechoices.push(Rechoice {
                    note: n,
                    against: pitch,
                });
            }
        }
    }

    /// The handed-out note `n` leaves the rebase history too (the cache never holds it).
    fn forget_in_history(&mut self, n: &TimedNote) {
        let model = self.model_instrument;
        let found = self
            .history
            .iter()
            .rposition(|(h, i)| *i == model && h == n);
        if let Some(k) = found {
            self.history.remove(k);
        }
    }

    /// Samples the replacements of the notes taken back (see the module notes), from `now_ms`.
    pub(super) fn sample_rechoices(&mut self, g: &mut Generator, now_ms: f64) -> Result<()> {
        let mut pending = std::mem::take(&mut self.rechoices);
        let earliest = now_ms + self.settings.reaction_ms;
        let mut result = Ok(());
        for r in &pending {
            if g.position() + 64 >= g.max_seq_len() {
                break;
            }
            result = self.sample_rechoice(g, r, earliest);
            if result.is_err() {
                break;
            }
        }
        pending.clear();
        self.rechoices = pending;
        result
    }

    /// One replacement: `<T>`s, onset and duration forced, the note token sampled under the
    /// constraints and the live masks (only the model's instrument).
    fn sample_rechoice(&mut self, g: &mut Generator, r: &Rechoice, earliest: f64) -> Result<()> {
        let cfg = self.tok.config();
        let (step, window) = (cfg.time_step_ms as f64, cfg.window_ms as f64);
        let dec = self.cd.decoder();
        let latest = dec.window_start_ms() as f64 + dec.min_onset_ms() as f64;
        let start = (self.piece_ms(r.note.start_ms.max(earliest)) / step - 1e-9).ceil() * step;
        let start = start.max(latest);
        let end = self.piece_ms(r.note.end_ms);
        if end - start < self.settings.beat_ms() / 8.0 {
            return Ok(());
        }
        self.cd.set_optional_span(start, start + step);
        let live = self.note_mask(Some(r.against));
        let model = self.tok.instrument_note_ids(self.model_instrument);
        let (time_shift, end_id, onsets) = (
            self.tok.time_shift_id() as usize,
            self.tok.end_id() as usize,
            self.tok.onset_ids(),
        );
        let durs = self.tok.dur_ids();
        let (max_dur_steps, steps_per_window) = (
            (durs.end - durs.start) as f64,
            (window / step).round() as u32,
        );
        let force = |logits: &mut [f32], id: usize| {
            logits.fill(f32::NEG_INFINITY);
            if let Some(l) = logits.get_mut(id) {
                *l = f32::INFINITY;
            }
        };
        let mask = move |cd: &ConstrainedDecoder, logits: &mut [f32]| {
            let w0 = cd.window_start_ms();
            match cd.expects() {
                Expect::Any if w0 + window <= start => force(logits, time_shift),
                Expect::Any => {
                    live.apply(logits, true);
                    let (from, to) = (model.start as usize, (model.end as usize).min(logits.len()));
                    logits[..from.min(to)].fill(f32::NEG_INFINITY);
                    logits[to..].fill(f32::NEG_INFINITY);
                    // No note may be sampled here: the run stops unfed.
                    if !logits.iter().any(|l| l.is_finite()) {
                        force(logits, end_id);
                    }
                }
                Expect::Onset => {
                    let k = (((start - w0) / step).round().max(0.0) as u32)
                        .min(steps_per_window.saturating_sub(1));
                    force(logits, (onsets.start + k) as usize);
                }
                Expect::Dur => {
                    let onset = w0 + cd.decoder().min_onset_ms() as f64;
                    let k = ((end - onset) / step).round().clamp(1.0, max_dur_steps) as u32;
                    force(logits, (durs.start + k - 1) as usize);
                }
            }
        };
        let origin = self.origin_ms;
        let fed = &mut self.fed;
        let mut placed = false;
        let limit = g.max_seq_len();
        // It takes the place of a note the voice had room for: the polyphony limit is not
        // asked again (the performer's note, counted there, came after that note was chosen).
        self.cd.set_polyphony_exempt(true);
        let run = g.run_span(
            &mut self.cd,
            &mut self.sampler,
            limit,
            &mask,
            &mut |n: RawNote| {
                fed.push(FedNote::sampled(&n, origin, false));
                placed = true;
                Flow::Stop
            },
        );
        self.cd.set_polyphony_exempt(false);
        run?;
        if placed {
            self.stats.replaced += 1;
        }
        Ok(())
    }
}
