//! Transport changes on the audio side: publishing the transport, and on a stop, start, jump or
//! loop turning notes off, flushing what was queued and re-queueing the remembered events of the
//! section requests still alive from the new position; the memory of those events (never of a
//! live session's requests, see the module notes of `audio`).

use super::{AudioSide, MEMORY_CAPACITY, RESTAGE_LIMIT, STAGING_CAPACITY, order};
use crate::messages::{Command, Event, NoteEvent, RequestId};
use crate::timing::{TransportChange, TransportFrame};

impl AudioSide {
    /// The transport half of [`Self::process_block`].
    pub fn update_transport(
        &mut self,
        frame: &TransportFrame,
        mut emit: impl FnMut(u32, Event),
    ) -> TransportChange {
        let change = self.tracker.observe(frame);
        self.shared
            .transport
            .publish(frame.pos_beats, frame.tempo_bpm, frame.playing);
        if change.relocates() {
            self.relocate(frame.pos_beats, &mut emit);
            // The engine re-times (or starts pushing) from the new position.
            self.shared.wake_engine();
        }
        self.now_beat = frame.pos_beats;
        change
    }

    /// Plugin reset/deactivate: everything off, queue flushed, the next block counts as a start.
    pub fn reset(&mut self, mut emit: impl FnMut(u32, Event)) {
        self.relocate(self.now_beat, &mut emit);
        self.tracker.reset();
        self.performer_keys = [0; 2];
    }

    /// The transport moved to `pos`: what sounds is released, what was queued for the old
    /// position flushed, and the remembered events from `pos` on are queued again.
    fn relocate(&mut self, pos: f64, emit: &mut impl FnMut(u32, Event)) {
        self.all_notes_off(&mut *emit);
        self.flush(emit);
        // Only the newest request is re-timed by the engine; everything a cut applied to is over,
        // and so is what a request starting behind the playhead replaces.
        for i in 0..self.n_cuts {
            self.raise_floor(self.cuts[i].upto);
        }
        self.n_cuts = 0;
        self.raise_floor(self.end_at_relocation);
        self.end_at_relocation = 0;
        self.after_wrap = 0;
        self.epoch = self.shared.transport.bump_epoch();
        self.restage(pos);
    }

    /// Queues the remembered events at or after `pos` (up to [`RESTAGE_LIMIT`], whole beats'
    /// worth at a time) under the current epoch.
    fn restage(&mut self, pos: f64) {
        self.staged = 0;
        self.restaged_before = f64::INFINITY;
        if !pos.is_finite() {
            self.restaged_before = f64::NEG_INFINITY;
            return;
        }
        let t = &mut *self.tables;
        let first = t.memory[..self.remembered].partition_point(|e| e.beat < pos);
        for i in first..self.remembered {
            let ev = t.memory[i];
            let prev = if self.staged > 0 {
                t.staging[self.staged - 1].beat
            } else {
                f64::NEG_INFINITY
            };
            let full = self.staged == STAGING_CAPACITY;
            if full || (self.staged >= RESTAGE_LIMIT && ev.beat != prev) {
                // The engine sends the rest; nothing at this beat counts as queued.
                while self.staged > 0 && t.staging[self.staged - 1].beat == ev.beat {
                    self.staged -= 1;
                }
                self.restaged_before = ev.beat;
                break;
            }
            if ev.request_id < self.floor {
                continue;
            }
            t.staging[self.staged] = NoteEvent {
                epoch: self.epoch,
                ..ev
            };
            self.staged += 1;
        }
    }

    fn remembered_at(&self, ev: &NoteEvent) -> Result<usize, usize> {
        let memory = &self.tables.memory[..self.remembered];
        // Sorted like the staging area: (beat, note-offs first).
        let lo = memory.partition_point(|m| order(ev, m));
        let hi = lo + memory[lo..].partition_point(|m| !order(m, ev));
        memory[lo..hi]
            .iter()
            .position(|m| {
                m.request_id == ev.request_id
                    && m.pitch == ev.pitch
                    && m.channel == ev.channel
                    && m.on == ev.on
            })
            .map(|i| lo + i)
            .ok_or(hi)
    }

    /// Follows which requests are the live session's (a command `send` queued).
    pub(super) fn note_live_requests(&mut self, cmd: &Command) {
        match *cmd {
            Command::LiveStart { request_id, .. } => {
                self.live_from = request_id;
                self.live_until = RequestId::MAX;
            }
            Command::Generate { request_id, .. } if self.is_live(request_id) => {
                // A section request ends the session; ids go on growing from it.
                self.live_until = request_id;
            }
            _ => {}
        }
    }

    /// Whether `request_id` is the live session's (its own or an answer's).
    pub(super) fn is_live(&self, request_id: RequestId) -> bool {
        (self.live_from..self.live_until).contains(&request_id)
    }

    /// Remembers an event of a section request (once); `true` if it was remembered before.
    /// A live session's events are not remembered (`false`).
    pub(super) fn remember(&mut self, ev: &NoteEvent) -> bool {
        if self.is_live(ev.request_id) {
            return false;
        }
        let at = match self.remembered_at(ev) {
            Ok(_) => return true,
            Err(at) => at,
        };
        let mut at = at;
        if self.remembered == MEMORY_CAPACITY {
            // Forget the earliest quarter in one move (a note-on goes no later than its note-off).
            let drop = MEMORY_CAPACITY / 4;
            if at < drop {
                return false;
            }
            self.tables.memory.copy_within(drop..self.remembered, 0);
            self.remembered -= drop;
            at -= drop;
        }
        let n = self.remembered;
        self.tables.memory.copy_within(at..n, at + 1);
        self.tables.memory[at] = *ev;
        self.remembered += 1;
        false
    }

    /// Events remembered for requests still alive.
    pub fn remembered_len(&self) -> usize {
        self.remembered
    }
}
