//! The engine thread's loop: each wake-up drains what arrived, swaps a loaded model in, serves a
//! waiting request or pushes due events, then sleeps until there may be something to do.
//! Pushing to the audio side never blocks it: notes go into the event ring when there is room
//! (the rest next wake-up), and a request's outcome is retried for a while before it is counted
//! as dropped, because a `Failed` is what silences the audio side.

use super::{LIVE_POLL, WARM_QUIET, Worker, panic_text, secs_to_beats};
use crate::generate::Backend;
use crate::messages::{Event, Outcome, RequestId};
use crate::schedule::Scheduler;
use crate::status::EngineState;
use crate::timing::TransportReading;
use std::panic::{AssertUnwindSafe, catch_unwind};
use std::sync::atomic::Ordering::Relaxed;
use std::time::{Duration, Instant};

impl Worker {
    pub(super) fn run(mut self) {
        let shared = self.link.shared.clone();
        shared.register_engine_thread();
        // A bug in the loop itself must not take the host down: the thread ends, the audio side
        // keeps running silently, and status says why.
        let result = catch_unwind(AssertUnwindSafe(|| {
            while !self.shutdown {
                self.poll();
                self.swap_in();
                if let Some(req) = self.pending.take() {
                    self.serve(req);
                    continue;
                }
                self.pump();
                self.live_pump();
                self.warm_prompt();
                self.wait();
            }
        }));
        match result {
            Ok(()) => {
                self.end_live();
                if let Some(id) = self.newest_request() {
                    self.push_done(id, Outcome::Interrupted);
                }
            }
            Err(p) => {
                if let Some(id) = self.newest_request() {
                    self.push_done(id, Outcome::Failed);
                }
                shared
                    .status
                    .set_error(format!("engine thread stopped: {}", panic_text(p.as_ref())));
            }
        }
        shared.status.current_request.store(0, Relaxed);
        shared.status.set_state(EngineState::Stopped);
    }

    /// Sleeps until there may be something to do: while a request plays out, until its next
    /// event is due to be pushed; while a model waits to be swapped in, a short poll; otherwise
    /// until the end of the capture quiet time (a prompt to warm) or the idle timeout. Commands,
    /// transport changes and control messages wake it at once.
    pub(super) fn wait(&mut self) {
        let t = self.link.shared.transport.read();
        let playing_out = t.playing
            && (!self.tails.is_empty() || self.current.as_ref().is_some_and(|c| !c.is_drained()));
        if self.shutdown || self.pending.is_some() {
            return;
        }
        if self.incoming.is_some() {
            std::thread::park_timeout(self.cfg.poll_interval);
            return;
        }
        if self.live.is_some() || self.live_start.is_some() {
            self.park_idle(LIVE_POLL.max(self.cfg.poll_interval));
            return;
        }
        if playing_out {
            let timeout = self.until_next_push(&t, f64::INFINITY);
            self.park_idle(timeout);
            return;
        }
        let mut timeout = self.cfg.idle_timeout;
        if self.prompt_stale
            && self
                .generator
                .as_ref()
                .is_some_and(|g| g.backend() == Backend::Fast)
        {
            timeout = timeout.min(WARM_QUIET.saturating_sub(self.last_capture.elapsed()));
        }
        self.park_idle(timeout);
    }

    /// How long the thread may sleep before an event of a scheduled request must be pushed
    /// (it enters the push window), or before the playhead reaches `resume_beat`; between
    /// `poll_interval` and `idle_timeout`, so a tempo change is caught up with soon.
    pub(super) fn until_next_push(&self, t: &TransportReading, resume_beat: f64) -> Duration {
        let ahead = secs_to_beats(self.cfg.push_ahead_secs, t.tempo_bpm);
        let next = self
            .current
            .iter()
            .chain(self.tails.iter())
            .filter_map(Scheduler::next_event_beat)
            .map(|b| b - ahead)
            .fold(resume_beat, f64::min);
        let secs = (next - t.playhead) * 60.0 / t.tempo_bpm.max(1.0);
        let max = self.cfg.idle_timeout.as_secs_f64();
        let secs = if secs.is_nan() {
            0.0
        } else {
            secs.clamp(0.0, max)
        };
        Duration::from_secs_f64(secs).max(self.cfg.poll_interval)
    }

    /// Parks unless a command, a cancel or a transport change is already waiting.
    pub(super) fn park_idle(&self, timeout: Duration) {
        let link = &self.link;
        link.shared.park_idle(timeout, || {
            link.has_commands()
                || link.shared.transport.read().epoch != self.epoch
                || link.cancelled_upto() > self.cancelled_upto
        });
    }

    /// Releases due events of every scheduled request to the audio side.
    pub(super) fn pump(&mut self) {
        let t = self.link.shared.transport.read();
        let limit = t.playhead + secs_to_beats(self.cfg.push_ahead_secs, t.tempo_bpm);
        let link = &mut self.link;
        for tail in &mut self.tails {
            tail.pump(limit, |ev| link.push_event(Event::Note(ev)));
        }
        self.tails.retain(|t| !t.is_drained());
        if let Some(cur) = &mut self.current {
            cur.pump(limit, |ev| link.push_event(Event::Note(ev)));
        }
    }

    /// Request outcomes must arrive (a `Failed` silences the audio side), so a full ring is
    /// retried for a while before the message is counted as dropped.
    pub(super) fn push_done(&mut self, request_id: RequestId, outcome: Outcome) {
        let deadline = Instant::now() + Duration::from_millis(250);
        while !self.link.push_event(Event::RequestDone {
            request_id,
            outcome,
        }) {
            if Instant::now() >= deadline {
                self.link.shared.status.dropped_events.fetch_add(1, Relaxed);
                return;
            }
            std::thread::sleep(self.cfg.poll_interval);
        }
    }

    pub(super) fn newest_request(&self) -> Option<RequestId> {
        self.current
            .iter()
            .chain(self.tails.iter())
            .map(|s| s.request_id)
            .max()
    }
}
