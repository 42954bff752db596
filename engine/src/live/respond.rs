//! Call and response: the handover, the answer, and its end (the bars are full, or the
//! performer plays again). See the contracts in the module notes of `live`.

use std::time::Instant;

use super::{LiveEvent, LiveMode, LiveSession, Phase, ms_since};
use crate::generate::{Generator, Result, StopReason};

impl LiveSession {
    /// The musician hands over at `at_ms`: what they played is absorbed (keys still down with
    /// their length so far), time moves on to `at_ms`, and the answer's first note is sampled
    /// before this returns. `false` (nothing done) outside call and response or while an answer
    /// is under way.
    pub fn handover(
        &mut self,
        g: &mut Generator,
        at_ms: f64,
        out: &mut dyn FnMut(LiveEvent),
    ) -> Result<bool> {
        if self.settings.mode != LiveMode::Respond || self.phase != Phase::Listening {
            return Ok(false);
        }
        self.check_cache(g)?;
        let t0 = Instant::now();
        self.absorb_ready(g, at_ms, true)?;
        if g.position()
            + self
                .settings
                .response_tokens_hint()
                .min(super::context_reserve(g))
            >= g.max_seq_len()
        {
            self.rebase(g, at_ms)?;
        }
        let start = self.piece_ms(at_ms);
        // The `<T>`s up to the window holding the start, in one prefill.
        let window_ms = self.tok.config().window_ms as f64;
        let mut window_start = self.cd.window_start_ms();
        self.batch.clear();
        while window_start + window_ms <= start {
            self.batch.push(self.tok.time_shift_id());
            window_start += window_ms;
        }
        self.feed_batch(g)?;
        let span = self.settings.response_bars as f64 * self.settings.bar_ms();
        // The answer starts at once: its first note within the first beat.
        self.cd
            .set_span(start, start + span.min(self.settings.beat_ms()));
        self.fed.clear();
        self.base_pos = g.position();
        self.listener.mark_answered();
        self.stats.responses += 1;
        out(LiveEvent::ResponseStart { at_ms });
        let mut stop = self.sample_notes(g, f64::INFINITY, true)?;
        self.cd.set_span_end(start + span);
        if stop != StopReason::Stopped && stop != StopReason::MaxSeqLen {
            // No note fitted the first beat (every voice busy): the answer goes on.
            stop = StopReason::Stopped;
        }
        if !self.fed.is_empty() && self.stats.handover_ms.len() < self.stats.handover_ms.capacity()
        {
            self.stats.handover_ms.push(ms_since(t0));
        }
        self.phase = Phase::Responding {
            generating: stop == StopReason::Stopped,
        };
        self.commit_due(at_ms, out);
        Ok(true)
    }

    /// Hands out due notes, samples the answer up to `generate_ahead_ms` ahead, and ends the
    /// answer once it is all generated and started.
    pub(super) fn advance_response(
        &mut self,
        g: &mut Generator,
        now_ms: f64,
        out: &mut dyn FnMut(LiveEvent),
    ) -> Result<()> {
        let Phase::Responding { generating } = self.phase else {
            return Ok(());
        };
        let horizon = now_ms + self.settings.generate_ahead_ms;
        let latest = self
            .fed
            .last()
            .map_or(f64::NEG_INFINITY, |f| f.note.start_ms);
        if generating && latest < horizon {
            // What is due within the commit window and one note beyond per call (the rest on
            // the next calls), so the driver pushes due notes while the answer is sampled
            // ahead (see `advance_accompaniment`).
            let chunk = (now_ms + self.settings.commit_ahead_ms).min(horizon);
            let stop = self.sample_notes(g, chunk, false)?;
            self.phase = Phase::Responding {
                generating: stop == StopReason::Stopped,
            };
        }
        self.commit_due(now_ms, out);
        let Phase::Responding { generating } = self.phase else {
            return Ok(());
        };
        let all_started = self
            .fed
            .iter()
            .all(|f| f.committed && f.note.start_ms <= now_ms);
        if !generating && all_started {
            self.phase = Phase::Listening;
            self.base_pos = g.position();
            self.fed.clear();
            out(LiveEvent::ResponseEnd {
                at_ms: now_ms,
                interrupted: false,
            });
        }
        Ok(())
    }

    pub(super) fn respond_note_on(
        &mut self,
        g: &mut Generator,
        pitch: u8,
        velocity: u8,
        at_ms: f64,
        out: &mut dyn FnMut(LiveEvent),
    ) -> Result<()> {
        if self.is_responding() {
            self.interrupt(g, at_ms, out)?;
        } else {
            // The end of an answer may still sound: the performer's return stops it too.
            for pitch in 0..128u8 {
                if let Some((_, end)) = self.model_sounding[pitch as usize]
                    && end > at_ms
                {
                    self.model_sounding[pitch as usize] = None;
                    out(LiveEvent::Cut { pitch, at_ms });
                }
            }
        }
        self.listener.note_on(pitch, velocity, at_ms, true);
        Ok(())
    }

    /// The performer plays at `at_ms` during the answer: notes started before it stay in the
    /// cache (cut where they still sound), the rest is rewound and never sounds.
    fn interrupt(
        &mut self,
        g: &mut Generator,
        at_ms: f64,
        out: &mut dyn FnMut(LiveEvent),
    ) -> Result<()> {
        let keep = self.fed.partition_point(|f| f.note.start_ms < at_ms);
        for i in 0..self.fed.len() {
            let f = self.fed[i];
            if i < keep && !f.committed {
                // Due before the interruption: it did sound (the driver lagged).
                self.fed[i].committed = true;
                self.remember(f.note, self.model_instrument);
                out(LiveEvent::Play(f.note));
            }
            let sounds_on = if i < keep {
                f.note.end_ms > at_ms
            } else {
                f.committed
            };
            if sounds_on {
                out(LiveEvent::Cut {
                    pitch: f.note.pitch,
                    at_ms,
                });
            }
        }
        for pitch in 0..128u8 {
            if let Some((_, end)) = self.model_sounding[pitch as usize]
                && end > at_ms
            {
                self.model_sounding[pitch as usize] = None;
                out(LiveEvent::Cut { pitch, at_ms });
            }
        }
        let pos = if keep > 0 {
            self.fed[keep - 1].pos_after
        } else {
            self.base_pos
        };
        self.rewind_to(g, pos)?;
        self.forget_uncommitted_after(at_ms);
        self.fed.clear();
        self.base_pos = g.position();
        self.phase = Phase::Listening;
        self.stats.interrupted += 1;
        out(LiveEvent::ResponseEnd {
            at_ms,
            interrupted: true,
        });
        Ok(())
    }

    /// Drops from the rebase history the model notes that were handed out but never sounded.
    fn forget_uncommitted_after(&mut self, at_ms: f64) {
        let fed = &self.fed;
        self.history.retain(|h| {
            !fed.iter()
                .any(|f| f.note.start_ms >= at_ms && f.note == h.0)
        });
    }
}

impl super::LiveSettings {
    /// Tokens an answer may take (a generous bound: sixteenth notes of three tokens, `<T>`s).
    pub(super) fn response_tokens_hint(&self) -> usize {
        let beats = self.response_bars as f64 * self.beats_per_bar;
        ((beats * 4.0 * 3.0) as usize + 64).min(super::CONTEXT_RESERVE)
    }
}
