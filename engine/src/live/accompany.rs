//! Accompaniment: a second voice generated a short look-ahead ahead of "now" and revised at
//! every performer note. See the contracts in the module notes of `live`.

use std::time::Instant;

use super::{FedNote, LiveEvent, LiveSession, Phase, TimedNote};
use crate::generate::{Generator, Result, StopReason};

impl LiveSession {
    /// Look-ahead extension step: at most every eighth of a beat (a revision asks at once).
    fn generate_quantum_ms(&self) -> f64 {
        self.settings.beat_ms() / 8.0
    }

    pub(super) fn advance_accompaniment(
        &mut self,
        g: &mut Generator,
        now_ms: f64,
        out: &mut dyn FnMut(LiveEvent),
    ) -> Result<()> {
        self.commit_due(now_ms, out);
        if now_ms < self.next_generate_ms {
            return Ok(());
        }
        // Rebase between performer notes, before the context is critically full, rather than
        // inside a revision, whose time is the reaction margin.
        if g.position() + 2 * super::context_reserve(g) >= g.max_seq_len() {
            // The look-ahead is handed out first (it cannot be revised now, but nothing falls
            // due while the rebase runs) and goes in again after it; what lies beyond is
            // sampled by the next call, from a "now" after the rebase: a rebase never leaves a
            // note to be sampled or handed out against the clock.
            let t0 = Instant::now();
            self.refeed_keeping_lookahead(g, now_ms, out)?;
            self.count_rebase(t0);
            return Ok(());
        }
        // Notes taken back at the last performer note are replaced first, from this "now"
        // (`rechoose` module).
        if !self.rechoices.is_empty() {
            self.sample_rechoices(g, now_ms)?;
        }
        // The accompaniment pauses with the performer: a bar with no key down and nothing
        // played or released, and no new look-ahead is sampled until the next note.
        let paused = !self.listener.any_held()
            && now_ms >= self.listener.last_activity_ms() + self.settings.bar_ms();
        let horizon = now_ms + self.settings.lookahead_beats * self.settings.beat_ms();
        let earliest = now_ms + self.settings.reaction_ms;
        let mut next = now_ms + self.generate_quantum_ms();
        if !paused && horizon > earliest && g.position() + 64 < g.max_seq_len() {
            let (from, to) = (self.piece_ms(earliest), self.piece_ms(horizon));
            self.cd.set_optional_span(from, to);
            // One call samples what is due within the commit window and one note beyond; the
            // rest of the look-ahead comes on the next calls (at once), so the driver hands
            // out and pushes the due notes in between rather than after the whole beat.
            let chunk = (now_ms + self.settings.commit_ahead_ms).min(horizon);
            if self.sample_notes(g, chunk, false)? == StopReason::Stopped
                && self.fed.last().is_some_and(|f| f.note.start_ms < horizon)
            {
                next = now_ms;
            }
        }
        self.next_generate_ms = next;
        self.commit_due(now_ms, out);
        Ok(())
    }

    /// Feeds model notes again (after a revision's performer note or a rebase) with one
    /// `extend`, and lists them in `fed` with their cache positions.
    fn feed_again(&mut self, g: &mut Generator, notes: &[(TimedNote, bool)]) -> Result<()> {
        let start = g.position();
        self.batch.clear();
        let first = self.fed.len();
        for &(note, committed) in notes {
            if self.encode(&note, self.model_instrument) {
                self.fed.push(FedNote {
                    note,
                    pos_after: start + self.batch.len(),
                    committed,
                    predicted: false,
                });
            }
        }
        if let Err(e) = self.feed_batch(g) {
            self.fed.truncate(first);
            return Err(e);
        }
        Ok(())
    }

    /// A performer note at `at_ms` revises the look-ahead (see the module notes).
    pub(super) fn accompany_note_on(
        &mut self,
        g: &mut Generator,
        pitch: u8,
        velocity: u8,
        at_ms: f64,
        out: &mut dyn FnMut(LiveEvent),
    ) -> Result<()> {
        self.phase = Phase::Accompanying { started: true };
        self.stats.revisions += 1;
        // What is due sounds; then the struck pitch is taken from the model.
        self.commit_due(at_ms, out);
        if let Some((_, end)) = self.model_sounding[pitch as usize]
            && end > at_ms
        {
            self.model_sounding[pitch as usize] = None;
            out(LiveEvent::Cut { pitch, at_ms });
        }
        // Model notes at the performer's instant stay before it, except in a two-voice model:
        // there it learnt the melody's note first, then the accompaniment's (the encoder's
        // order), so they are fed again after it.
        // With a ghost melody, everything from the first prediction on goes too (the
        // predictions were after the last performer note, and this note replaces them).
        // With `consonant`, everything from the first note that clashes with the performer's
        // on goes too: the clashing notes are taken back (`rechoose` module), the rest is fed
        // again where it was.
        let two_voices = self.model_instrument != self.tok.performer_instrument();
        let before_performer =
            |f: &FedNote| f.note.start_ms < at_ms || (f.note.start_ms == at_ms && !two_voices);
        let first_prediction = self
            .fed
            .iter()
            .position(|f| f.predicted)
            .unwrap_or(self.fed.len());
        let first_clash = self
            .fed
            .iter()
            .position(|f| self.clashes(f, pitch, at_ms))
            .unwrap_or(self.fed.len());
        let keep = self
            .fed
            .partition_point(before_performer)
            .min(first_prediction)
            .min(first_clash);
        let pos = if keep > 0 {
            self.fed[keep - 1].pos_after
        } else {
            self.base_pos
        };
        // Handed-out notes after the performer's, and those planned to start within the
        // reaction time of it, go in again after it; the rest of the look-ahead is revised.
        // Model notes before it that were after a prediction or a clashing note (all handed
        // out by now) go in again before it; predictions and clashing notes never.
        let keep_until = at_ms + self.settings.reaction_ms;
        let mut refeed = std::mem::take(&mut self.refeed);
        refeed.clear();
        for f in &self.fed[keep..] {
            if !f.predicted
                && !self.clashes(f, pitch, at_ms)
                && (before_performer(f)
                    || ((f.committed || f.note.start_ms < keep_until) && f.note.pitch != pitch))
            {
                refeed.push((f.note, f.committed));
            }
        }
        self.take_back_clashes(pitch, at_ms, out);
        let before = refeed
            .partition_point(|n| n.0.start_ms < at_ms || (n.0.start_ms == at_ms && !two_voices));
        self.fed.clear();
        self.rewind_to(g, pos)?;
        self.feed_again(g, &refeed[..before])?;
        // They lie before the performer's note, below `base_pos` once it is absorbed: no
        // revision rewinds them again.
        self.fed.clear();
        self.listener.note_on(pitch, velocity, at_ms, false);
        let expected = self.listener.expected_duration_ms();
        self.absorb(
            g,
            TimedNote {
                pitch,
                velocity: velocity.max(1),
                start_ms: at_ms,
                end_ms: at_ms + expected,
            },
        )?;
        self.feed_again(g, &refeed[before..])?;
        self.refeed = refeed;
        // The look-ahead beyond is sampled by the driver's next `advance`, from its "now":
        // after this revision's work, so the first new note starts `reaction_ms` after the
        // time the revision is done, not after the performer's note.
        self.next_generate_ms = at_ms;
        self.commit_due(at_ms, out);
        Ok(())
    }
}

impl LiveSession {
    /// The accompaniment's rebase at `now_ms`, and a prompt change's (`prompt` module): the
    /// look-ahead is handed out (it cannot be revised while the prompt and the music kept are
    /// fed again from a bar line), the part of it not yet handed out goes in again, and what
    /// lies beyond is sampled by the next call, from a "now" after this work. Counted by the
    /// caller (a rebase or a prompt change).
    pub(super) fn refeed_keeping_lookahead(
        &mut self,
        g: &mut Generator,
        now_ms: f64,
        out: &mut dyn FnMut(LiveEvent),
    ) -> Result<()> {
        let ahead = self.settings.lookahead_beats * self.settings.beat_ms();
        self.commit_due(now_ms + ahead, out);
        let mut planned = std::mem::take(&mut self.refeed);
        planned.clear();
        planned.extend(
            self.fed
                .iter()
                .filter(|f| !f.committed && !f.predicted)
                .map(|f| (f.note, false)),
        );
        self.refeed_upto(g, now_ms, f64::INFINITY)?;
        self.feed_again(g, &planned)?;
        self.refeed = planned;
        self.next_generate_ms = now_ms;
        Ok(())
    }
}
