//! The engine thread's live sessions (`crate::live::driver`): starting one from a
//! `LiveStart`, handing it the live commands, pumping it every wake-up and ending it (a section
//! request, a model swap, `LiveStop`, shutdown).

use std::panic::{AssertUnwindSafe, catch_unwind};

use super::{Interrupt, LIVE_PUSH_AHEAD_SECS, Worker, panic_text, secs_to_beats};
use crate::generate::{Generator, Target};
use crate::handover::EngineLink;
use crate::live::driver::LiveRun;
use crate::messages::Outcome;
use staria_models::SectionLabel;

impl Worker {
    /// Runs `f` on the live session, if one runs; a failure ends the session, silenced, with
    /// the reason in the status.
    pub(super) fn with_live(
        &mut self,
        f: impl FnOnce(&mut LiveRun, &mut Generator, &mut EngineLink) -> crate::generate::Result<()>,
    ) {
        let (Some(run), Some(g)) = (self.live.as_mut(), self.generator.as_mut()) else {
            return;
        };
        let result = catch_unwind(AssertUnwindSafe(|| f(run, g, &mut self.link)));
        let failure = match result {
            Ok(Ok(())) => return,
            Ok(Err(e)) => format!("live session failed: {e}"),
            Err(p) => format!("live session panicked: {}", panic_text(p.as_ref())),
        };
        self.link.shared.status.set_error(failure);
        self.end_live_with(Outcome::Failed);
    }

    /// Starts a waiting `LiveStart` (not while a section is being generated), then lets the
    /// session do what is due and pushes its notes.
    pub(super) fn live_pump(&mut self) {
        if !self.generating
            && let Some(start) = self.live_start.take()
        {
            self.end_live();
            // The section requests end: a live session has the model to itself.
            self.stop_all(Interrupt::Stopped);
            let t = self.link.shared.transport.read();
            let params = self.link.shared.params.values();
            let snippets = self.snippets(t.playhead, Target::Section(SectionLabel::A));
            let Some(g) = self.generator.as_mut() else {
                self.link.shared.status.set_error("live: no model loaded");
                self.push_done(start.request_id, Outcome::Failed);
                return;
            };
            let started = catch_unwind(AssertUnwindSafe(|| {
                LiveRun::start(g, &snippets, start, &t, &params)
            }));
            match started {
                Ok(Ok(run)) => {
                    self.live = Some(Box::new(run));
                    self.prompt_stale = true;
                }
                Ok(Err(e)) => {
                    self.link
                        .shared
                        .status
                        .set_error(format!("live session could not start: {e}"));
                    self.push_done(start.request_id, Outcome::Failed);
                }
                Err(p) => {
                    self.link
                        .shared
                        .status
                        .set_error(format!("live session panicked: {}", panic_text(p.as_ref())));
                    self.push_done(start.request_id, Outcome::Failed);
                }
            }
        }
        if self.live.is_none() {
            return;
        }
        let t = self.link.shared.transport.read();
        let ahead = secs_to_beats(LIVE_PUSH_AHEAD_SECS, t.tempo_bpm);
        self.with_live(|run, g, link| run.pump(g, link, &t, ahead));
    }

    /// Ends the live session, if one runs; what it plays is silenced.
    pub(super) fn end_live(&mut self) {
        self.end_live_with(Outcome::Cancelled);
    }

    /// Ends the live session, if one runs, its notes silenced and its request ended with
    /// `outcome`.
    fn end_live_with(&mut self, outcome: Outcome) {
        if let Some(mut run) = self.live.take() {
            run.stop(&mut self.link, outcome);
        }
    }
}
