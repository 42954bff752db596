//! What arrives at the engine thread, and what it does to the thread's state: control messages
//! from the main thread ([`crate::swap::Control`]: a loaded model, stop, shutdown) and commands
//! from the audio side (capture, generate, cancel, live). Handling a command only records it (a
//! request to serve, an interrupt for the running generation); the loop and the generator's note
//! callback act on it, so commands are drained while a section is being generated too.
//! A cancel names every request up to its id, also one that reaches the ring after it.

use super::{Interrupt, Pending, Worker};
use crate::generate::Target;
use crate::live::driver::LiveStart;
use crate::messages::{Command, Outcome};
use crate::swap::Control;
use staria_models::SectionLabel;
use std::sync::atomic::Ordering::Relaxed;
use std::sync::mpsc::TryRecvError;
use std::time::Instant;

impl Worker {
    /// Drains control messages, commands and transport changes.
    pub(super) fn poll(&mut self) {
        loop {
            match self.control.try_recv() {
                Ok(Control::Swap {
                    generator,
                    name,
                    ticket,
                }) => {
                    // Loads may finish out of order; only the newest requested one counts.
                    if ticket == self.latest_load.load(Relaxed) {
                        self.incoming = Some((generator, name));
                    }
                }
                Ok(Control::StopGeneration) => self.stop_all(Interrupt::Stopped),
                Ok(Control::Shutdown) | Err(TryRecvError::Disconnected) => {
                    self.shutdown = true;
                    self.interrupt = Some(Interrupt::Shutdown);
                    break;
                }
                Err(TryRecvError::Empty) => break,
            }
        }
        while let Some(cmd) = self.link.pop_command() {
            self.command(cmd);
        }
        // A cancel whose command did not fit into the ring still arrives.
        let cancelled = self.link.cancelled_upto();
        if cancelled > self.cancelled_upto {
            self.command(Command::Cancel {
                request_id: cancelled,
            });
        }
        let t = self.link.shared.transport.read();
        if t.epoch != self.epoch {
            // The audio side flushed everything and silenced what sounded: replay the current
            // request from the new position; replaced tails are over.
            self.epoch = t.epoch;
            self.tails.clear();
            if let Some(cur) = &mut self.current {
                cur.relocate(t.playhead, t.epoch);
            }
        }
    }

    pub(super) fn command(&mut self, cmd: Command) {
        let shared = self.link.shared.clone();
        let bpm = shared.transport.read().tempo_bpm;
        if !matches!(cmd, Command::Generate { .. } | Command::Cancel { .. }) {
            self.prompt_stale = true;
            self.last_capture = Instant::now();
        }
        let refused = match cmd {
            Command::CaptureArm {
                section,
                origin_beat,
            } => {
                self.capture.arm(section, origin_beat, bpm);
                false
            }
            Command::CaptureRestore { section } => {
                self.capture.arm_restored(section, bpm);
                false
            }
            Command::CaptureNoteOn {
                section,
                pitch,
                velocity,
                beat,
            } => self
                .capture
                .note_on(section, pitch, velocity, beat, bpm)
                .is_err(),
            Command::CaptureNoteOff {
                section,
                pitch,
                beat,
            } => self.capture.note_off(section, pitch, beat).is_err(),
            Command::ClearSection { section } => {
                self.capture.clear(section);
                false
            }
            Command::Generate {
                request_id,
                target,
                bars,
                ts_num,
                ts_den,
                form,
                start_beat,
                seed,
            } => {
                if request_id <= self.cancelled_upto {
                    // Cancelled before it got here (through `Shared::cancel_upto`).
                    self.push_done(request_id, Outcome::Cancelled);
                    return;
                }
                let req = Pending {
                    id: request_id,
                    target,
                    bars,
                    ts_num,
                    ts_den,
                    form,
                    start_beat,
                    seed,
                };
                if let Some(old) = self.pending.replace(req) {
                    self.push_done(old.id, Outcome::Replaced);
                }
                if self.generating {
                    self.interrupt = Some(Interrupt::NewRequest);
                }
                false
            }
            Command::LiveStart {
                request_id,
                mode,
                origin_beat,
                response_bars,
                seed,
                consonant,
            } => {
                self.live_start = Some(LiveStart {
                    request_id,
                    mode,
                    origin_beat,
                    response_bars,
                    seed,
                    consonant,
                });
                if self.generating {
                    self.interrupt = Some(Interrupt::Stopped);
                }
                false
            }
            Command::LiveNoteOn {
                pitch,
                velocity,
                beat,
            } => {
                self.with_live(|run, g, link| run.note_on(g, link, pitch, velocity, beat));
                false
            }
            Command::LiveNoteOff { pitch, beat } => {
                self.with_live(|run, g, link| run.note_off(g, link, pitch, beat));
                false
            }
            Command::Handover { request_id, beat } => {
                if self.live.is_none() {
                    // No session to answer: the request is over before it began.
                    self.push_done(request_id, Outcome::Finished);
                } else {
                    self.with_live(|run, g, link| run.handover(g, link, request_id, beat));
                }
                false
            }
            Command::LivePrompt => {
                if self.live_start.is_none() && self.live.is_some() {
                    let t = shared.transport.read();
                    let snippets = self.snippets(t.playhead, Target::Section(SectionLabel::A));
                    self.with_live(|run, g, link| run.change_prompt(g, link, &snippets, &t));
                }
                false
            }
            Command::LiveStop => {
                self.live_start = None;
                self.end_live();
                false
            }
            Command::Cancel { request_id } => {
                self.cancelled_upto = self.cancelled_upto.max(request_id);
                if let Some(p) = self.pending.take_if(|p| p.id <= request_id) {
                    self.push_done(p.id, Outcome::Cancelled);
                }
                if self.generating {
                    if self
                        .current
                        .as_ref()
                        .is_some_and(|c| c.request_id <= request_id)
                    {
                        self.interrupt = Some(Interrupt::Cancelled);
                    }
                } else if self
                    .current
                    .as_ref()
                    .is_some_and(|c| c.request_id <= request_id)
                {
                    // Finished generating but still playing: the audio side has silenced it.
                    self.current = None;
                }
                self.tails.retain(|t| t.request_id > request_id);
                false
            }
        };
        if refused {
            shared.status.dropped_captures.fetch_add(1, Relaxed);
        }
    }

    /// Stops generation (if running) and everything scheduled; the audio side silences it now.
    pub(super) fn stop_all(&mut self, why: Interrupt) {
        if self.generating {
            self.interrupt = Some(why);
            return;
        }
        if let Some(id) = self.newest_request() {
            self.push_done(id, Outcome::Interrupted);
        }
        self.current = None;
        self.tails.clear();
    }
}
