//! New snippets during a live session (issue 11): the prompt changes, the session goes on.
//!
//! The snippets are the prefix of the model's cache and the performance comes after them, so
//! a new snippet changes tokens ahead of everything heard: nothing heard can stay in the cache
//! without being fed again. [`LiveSession::change_prompt`] therefore does what a rebase does,
//! with the new prompt: the prompt is prefilled (the fast backend reuses the cached prefix up
//! to its first changed token; a Staria model's snippet encoder runs again) and the last
//! [`LiveSettings::keep_ms`] of music (performer and model notes, from a bar line) is fed
//! again after it. What the session keeps: its clock, its phase, its listener (keys held,
//! the notes of a call not yet absorbed), its request (the accompaniment plays on under the
//! same id), the model notes handed out (final as ever) and its statistics.
//!
//! - **Accompaniment**: the look-ahead is handed out first ([`LiveEvent::Play`]): it cannot be
//!   revised while the prompt is prefilled, and a driver pushes it before the prefill
//!   ([`LiveSession::hand_out_before_prompt_change`]), so nothing falls due meanwhile; it goes
//!   into the cache again after the kept music, and the next [`LiveSession::advance`] samples
//!   on from its "now", after the change's work.
//! - **Call and response**: while listening the change is done at once (the notes of the call
//!   already absorbed are in the kept music, the rest are absorbed as before). An answer under
//!   way is not broken: it finishes (or is interrupted) as sampled, with the old prompt, and
//!   the new prompt is taken by the first `advance` after its end (the latest snippets, if
//!   several changes came meanwhile).
//! - A prompt that leaves no room for the performance fails the call, as at the start (the
//!   driver then ends the session with the reason in the status).
//!
//! [`LiveSettings::keep_ms`]: super::LiveSettings::keep_ms

use std::time::Instant;

use super::{LiveEvent, LiveSession, Phase, ms_since, prompt_of};
use crate::generate::{Generator, Result, Snippets};

impl LiveSession {
    /// The snippets are now `snippets`: the prompt is rebuilt from them and the session goes on
    /// from `now_ms` (see the module notes). `Ok(true)` when the change was done now, `Ok(false)`
    /// when it waits for the answer under way to end.
    pub fn change_prompt(
        &mut self,
        g: &mut Generator,
        snippets: &Snippets,
        now_ms: f64,
        out: &mut dyn FnMut(LiveEvent),
    ) -> Result<bool> {
        self.check_cache(g)?;
        self.pending_prompt = Some(prompt_of(g, snippets, &self.settings)?);
        if self.is_responding() {
            return Ok(false);
        }
        self.apply_prompt(g, now_ms, out)?;
        Ok(true)
    }

    /// Hands out what a prompt change at `now_ms` will not revise: the accompaniment's whole
    /// look-ahead (nothing in call and response). [`Self::change_prompt`] does it too; a driver
    /// calls it first to push those notes before the prompt's prefill starts.
    pub fn hand_out_before_prompt_change(&mut self, now_ms: f64, out: &mut dyn FnMut(LiveEvent)) {
        if self.phase == (Phase::Accompanying { started: true }) {
            let ahead = self.settings.lookahead_beats * self.settings.beat_ms();
            self.commit_due(now_ms + ahead, out);
        }
    }

    /// Whether a new prompt waits for the answer under way to end.
    pub fn prompt_pending(&self) -> bool {
        self.pending_prompt.is_some()
    }

    /// Takes the waiting prompt and feeds it and the music kept (see the module notes).
    pub(super) fn apply_prompt(
        &mut self,
        g: &mut Generator,
        now_ms: f64,
        out: &mut dyn FnMut(LiveEvent),
    ) -> Result<()> {
        let Some((prompt, opening)) = self.pending_prompt.take() else {
            return Ok(());
        };
        let t0 = Instant::now();
        self.prompt = prompt;
        self.opening = opening;
        if self.phase == (Phase::Accompanying { started: true }) {
            self.refeed_keeping_lookahead(g, now_ms, out)?;
        } else {
            self.fed.clear();
            self.refeed_upto(g, now_ms, now_ms)?;
        }
        self.stats.prompt_changes += 1;
        if self.stats.prompt_change_ms.len() < self.stats.prompt_change_ms.capacity() {
            self.stats.prompt_change_ms.push(ms_since(t0));
        }
        Ok(())
    }
}
