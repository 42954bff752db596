//! Accompaniment: a second voice generated a short look-ahead ahead of "now" and revised at
//! every performer note. See the contracts in the module notes of `live`.

use super::{FedNote, LiveEvent, LiveSession, Phase, TimedNote};
use crate::generate::{Generator, Result};

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
            // The look-ahead not handed out yet goes in again after it too: a rebase never
            // leaves the next beat to be sampled against the clock.
            let mut planned = std::mem::take(&mut self.refeed);
            planned.clear();
            planned.extend(self.fed.iter().filter(|f| !f.committed).map(|f| f.note));
            self.rebase_upto(g, now_ms, f64::INFINITY)?;
            for note in &planned {
                self.batch.clear();
                if self.encode(note) {
                    self.feed_batch(g)?;
                    self.fed.push(FedNote {
                        note: *note,
                        pos_after: g.position(),
                        committed: false,
                    });
                }
            }
            self.refeed = planned;
        }
        // The accompaniment pauses with the performer: a bar with no key down and nothing
        // played or released, and no new look-ahead is sampled until the next note.
        let paused = !self.listener.any_held()
            && now_ms >= self.listener.last_activity_ms() + self.settings.bar_ms();
        let horizon = now_ms + self.settings.lookahead_beats * self.settings.beat_ms();
        let earliest = now_ms + self.settings.reaction_ms;
        if !paused && horizon > earliest && g.position() + 64 < g.max_seq_len() {
            let (from, to) = (self.piece_ms(earliest), self.piece_ms(horizon));
            self.cd.set_optional_span(from, to);
            self.sample_notes(g, horizon, false)?;
        }
        self.next_generate_ms = now_ms + self.generate_quantum_ms();
        self.commit_due(now_ms, out);
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
        let keep = self.fed.partition_point(|f| f.note.start_ms <= at_ms);
        let pos = if keep > 0 {
            self.fed[keep - 1].pos_after
        } else {
            self.base_pos
        };
        // Handed-out notes after the performer's go in again after it; the rest is revised.
        let mut refeed = std::mem::take(&mut self.refeed);
        refeed.clear();
        refeed.extend(
            self.fed[keep..]
                .iter()
                .filter(|f| f.committed && f.note.pitch != pitch)
                .map(|f| f.note),
        );
        self.fed.clear();
        self.rewind_to(g, pos)?;
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
        for note in &refeed {
            self.batch.clear();
            if self.encode(note) {
                self.feed_batch(g)?;
                self.fed.push(FedNote {
                    note: *note,
                    pos_after: g.position(),
                    committed: true,
                });
            }
        }
        self.refeed = refeed;
        self.next_generate_ms = at_ms;
        self.advance_accompaniment(g, at_ms, out)
    }
}
