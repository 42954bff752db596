//! The audio thread's end of the handover. Everything here runs inside the plugin's `process()`:
//! no allocation, no locks, no blocking, no logging. All storage is allocated when the link is
//! made; per block it only copies fixed-size messages and touches atomics.
//!
//! The audio side is the final authority on what sounds: it owns a table of sounding generated
//! notes (who started each key), so whatever the engine does or fails to do, every note-on it lets
//! through gets a note-off.
//!
//! It also remembers the events the engine sent for the section requests still alive. A
//! transport jump or loop flushes what was queued for the old position; the audio side then
//! queues the remembered events from the new position at once, so notes right at the new
//! playhead play on time even while the engine is busy (a prefill, a model step) and cannot
//! answer the jump before the block is due. The engine re-sends the same events under the new
//! epoch; those the audio side already queued are recognised and skipped.
//!
//! A live session's requests (the `LiveStart`'s and its `Handover`s', from the `LiveStart` up
//! to the next `Generate`) are not remembered: a live session's time line is the playhead, not
//! a score, and the engine's outbox moves the notes it has not pushed to the new position
//! itself (`live::outbox`). Re-queueing their old events would replay model notes already
//! heard (a loop back), or a note-on pushed at the jump whose note-off the engine never sends
//! (it counts a pushed note as over at a relocation) and which would hang. So at a relocation
//! a live session's notes sounding are released, those queued are dropped (the look-ahead of
//! a few tens of ms), and the session goes on from the new position.
//!
//! The engine may take back a note-on it pushed ([`Event::Retract`]: the live accompaniment
//! re-choosing a note before it starts, `live::driver`). Draining the retraction removes the
//! note-on and a note-off of it still queued from the queue (and from the memory, which holds
//! a live session's notes no longer, so a relocation cannot bring it back); if the note-on was
//! played already (the audio thread got there before the retraction, which the engine cannot
//! know), the note is released at the start of the block that drains the retraction, offset 0, as a cut releases: never later than
//! the note-off the engine used to send in its place (at the note's start plus a 128th of a
//! beat, pushed at the same moment, so drained in the same block). The note-on is matched by
//! request, channel, pitch and beat (whatever the epoch); a retraction of a note the audio
//! side neither queues, remembers nor sounds does nothing. Bounded scans of the fixed tables;
//! section requests never send one.
//!
//! Files: this one holds [`AudioSide`] (link, commands, the per-block queue, cuts, note-offs);
//! `transport.rs` its transport changes and the memory of section requests' events;
//! `retract.rs` retractions.

use crate::handover::Shared;
use crate::messages::{Command, Event, NoteEvent, RequestId};
use crate::status::{EngineParams, EngineStatus};
use crate::timing::{BlockTiming, TransportChange, TransportFrame, TransportTracker};
use ringbuf::traits::{Consumer, Observer, Producer};
use ringbuf::{HeapCons, HeapProd};
use std::sync::Arc;
use std::sync::atomic::Ordering::{Relaxed, Release};

mod retract;
mod transport;

/// Events held on the audio side waiting for their block. The engine keeps at most its lookahead
/// (seconds) of events queued, far below this.
pub const STAGING_CAPACITY: usize = 512;
const KEYS: usize = 16 * 128;
/// Remembered events (see the module notes): a few minutes of dense music. When it fills up the
/// earliest quarter is forgotten; the engine's re-sent events then cover those.
pub const MEMORY_CAPACITY: usize = 4096;
/// After a relocation at most this many remembered events are queued at once (the rest, later
/// in time, come from the engine as usual); the staging area keeps room for new arrivals.
const RESTAGE_LIMIT: usize = STAGING_CAPACITY / 2;
/// Pending cuts (a replaced request's tail, a cancel). More than a handful only happens when a
/// user fires requests far into the future; extra cuts are merged, which can only silence earlier.
const MAX_CUTS: usize = 8;

/// "Requests up to `upto` stop sounding at `beat`": applied to staged and arriving events, and
/// when the playhead reaches `beat` the notes those requests still hold are released.
#[derive(Debug, Clone, Copy, PartialEq)]
struct Cut {
    upto: RequestId,
    beat: f64,
}

const NO_EVENT: NoteEvent = NoteEvent {
    beat: 0.0,
    request_id: 0,
    epoch: 0,
    on: false,
    pitch: 0,
    velocity: 0,
    channel: 0,
};

/// Large fixed storage, boxed once at construction so moving `AudioSide` into the plugin is cheap.
struct Tables {
    /// Sorted by (beat, note-offs first).
    staging: [NoteEvent; STAGING_CAPACITY],
    /// Request that started the note sounding on (channel, pitch); 0 = silent.
    owner: [RequestId; KEYS],
    /// The beat of that note's note-on (meaningful while `owner` is set): a retraction
    /// releases only the note it names.
    started: [f64; KEYS],
    /// Every event received for requests at or above the floor, as the engine sent it (cuts not
    /// applied), sorted like `staging`.
    memory: [NoteEvent; MEMORY_CAPACITY],
}

pub struct AudioSide {
    commands: HeapProd<Command>,
    events: HeapCons<Event>,
    shared: Arc<Shared>,
    tables: Box<Tables>,
    staged: usize,
    sounding: usize,
    cuts: [Cut; MAX_CUTS],
    n_cuts: usize,
    /// Requests below this never sound again.
    floor: RequestId,
    remembered: usize,
    /// Remembered events before this beat were queued again at the last relocation: the
    /// engine's copies of them are skipped.
    restaged_before: f64,
    /// Requests up to this end at the next relocation: a newer request starts behind the
    /// playhead (a loop's start, asked for in its last bar) and takes over at the wrap.
    end_at_relocation: RequestId,
    /// That newer request: its events arrive before the wrap, behind the playhead, and wait in
    /// memory for it instead of being dropped as late.
    after_wrap: RequestId,
    next_request: RequestId,
    /// The live session's requests (`LiveStart`'s and its `Handover`s'): `live_from..live_until`
    /// (0..0: none). The engine re-times them itself after a relocation, so they are never
    /// remembered (`transport.rs`).
    live_from: RequestId,
    live_until: RequestId,
    epoch: u32,
    /// End of the last block seen: "now" for cancels sent between blocks.
    now_beat: f64,
    tracker: TransportTracker,
    /// Note-ons arriving later than this (in beats) are dropped rather than played at the block
    /// start: a note that was due long ago would land off the beat.
    pub late_tolerance_beats: f64,
    /// Keys the live performer holds (`performer_key`), one bit per pitch: generated notes
    /// never sound them.
    performer_keys: [u64; 2],
}

fn key_of(channel: u8, pitch: u8) -> usize {
    (channel as usize & 15) * 128 + (pitch as usize & 127)
}

fn order(a: &NoteEvent, b: &NoteEvent) -> bool {
    // true if a sorts after b; note-offs go first at equal times so a repeated pitch re-strikes.
    a.beat > b.beat || (a.beat == b.beat && a.on && !b.on)
}

impl AudioSide {
    pub(crate) fn new(
        commands: HeapProd<Command>,
        events: HeapCons<Event>,
        shared: Arc<Shared>,
    ) -> Self {
        Self {
            commands,
            events,
            shared,
            tables: Box::new(Tables {
                staging: [NO_EVENT; STAGING_CAPACITY],
                owner: [0; KEYS],
                started: [0.0; KEYS],
                memory: [NO_EVENT; MEMORY_CAPACITY],
            }),
            staged: 0,
            remembered: 0,
            restaged_before: f64::NEG_INFINITY,
            end_at_relocation: 0,
            after_wrap: 0,
            sounding: 0,
            cuts: [Cut { upto: 0, beat: 0.0 }; MAX_CUTS],
            n_cuts: 0,
            floor: 1,
            next_request: 1,
            live_from: 0,
            live_until: 0,
            epoch: 0,
            now_beat: 0.0,
            tracker: TransportTracker::default(),
            late_tolerance_beats: 0.25,
            performer_keys: [0; 2],
        }
    }

    /// Live modes: the performer's key `pitch` goes down (`true`) or up at this point of the
    /// block, as the plugin sees it, before the engine can react. While it is down no generated
    /// note sounds that pitch (on any channel): one sounding is released now (offset 0 of the
    /// current block) and generated note-ons of that pitch are skipped. Call it for the
    /// performer's notes in the live modes only (section capture lets the model double the
    /// player). Allocation-free.
    pub fn performer_key(&mut self, pitch: u8, down: bool, mut emit: impl FnMut(u32, Event)) {
        let (word, bit) = ((pitch as usize & 127) / 64, 1u64 << (pitch % 64));
        if !down {
            self.performer_keys[word] &= !bit;
            return;
        }
        self.performer_keys[word] |= bit;
        for channel in 0..16u8 {
            let key = key_of(channel, pitch);
            let owner = self.tables.owner[key];
            if owner != 0 {
                self.release_key(key, owner, self.now_beat, 0, &mut emit);
            }
        }
    }

    /// Whether the performer holds `pitch` (see [`Self::performer_key`]).
    pub fn performer_holds(&self, pitch: u8) -> bool {
        self.performer_keys[(pitch as usize & 127) / 64] & (1u64 << (pitch % 64)) != 0
    }

    pub fn status(&self) -> &EngineStatus {
        &self.shared.status
    }

    /// Generation settings (atomics; plugin parameter changes may be written from here).
    pub fn params(&self) -> &EngineParams {
        &self.shared.params
    }

    /// A fresh request id for a `Generate` command (ids must grow).
    pub fn next_request_id(&mut self) -> RequestId {
        let id = self.next_request;
        self.next_request = self.next_request.wrapping_add(1).max(1);
        id
    }

    /// Queues a command for the engine. A full ring drops it, counts it in
    /// `status().dropped_commands` and returns `false` (the caller may retry next block).
    ///
    /// A `Generate` that is queued cuts every older request from its `start_beat` on (a start
    /// behind the playhead, a loop's start, from the transport's wrap to it); a `Cancel`
    /// silences that request (and anything older) at the current position.
    ///
    /// A `Cancel` is never lost: its cut is recorded here first and the engine learns of it
    /// through a sticky atomic ([`Shared::cancel_upto`]) as well as the ring, so it returns
    /// `true` even when the ring is full (and is then not counted as dropped).
    pub fn send(&mut self, cmd: Command) -> bool {
        if let Command::Cancel { request_id } = cmd {
            self.add_cut(request_id, self.now_beat);
            self.shared.cancel_upto.fetch_max(request_id, Release);
            // Best effort: keeps the cancel in order with the commands around it.
            let _ = self.commands.try_push(cmd);
            self.shared.wake_engine();
            return true;
        }
        if self.commands.try_push(cmd).is_err() {
            self.shared.status.dropped_commands.fetch_add(1, Relaxed);
            return false;
        }
        self.shared.wake_engine();
        self.note_live_requests(&cmd);
        if let Command::Generate {
            request_id,
            start_beat,
            ..
        } = cmd
        {
            if request_id >= self.next_request {
                self.next_request = request_id.wrapping_add(1).max(1);
            }
            // A start behind the playhead is a loop's start, asked for in the loop's last bar:
            // older requests play on until the transport wraps there (the wrap relocates, which
            // ends them), not from that earlier beat, which is now.
            let behind = start_beat < self.now_beat - self.tracker.tolerance_beats;
            if request_id > self.floor && !behind {
                self.add_cut(request_id - 1, start_beat);
            }
            if behind {
                self.end_at_relocation = self.end_at_relocation.max(request_id - 1);
                self.after_wrap = request_id;
            }
        }
        true
    }

    /// Generated notes currently sounding.
    pub fn sounding_count(&self) -> usize {
        self.sounding
    }

    pub fn is_sounding(&self, channel: u8, pitch: u8) -> bool {
        self.tables.owner[key_of(channel, pitch)] != 0
    }

    /// Events waiting on the audio side for their block.
    pub fn staged_len(&self) -> usize {
        self.staged
    }

    /// The transport epoch events must carry to be played.
    pub fn epoch(&self) -> u32 {
        self.epoch
    }

    /// One call per `process()` piece: publishes the transport for the engine, handles
    /// stops/starts/jumps (all notes off, queued events flushed, engine re-times) and then emits
    /// the events due in this block, in time order, as `(sample offset, event)`.
    ///
    /// `RequestDone` events are not MIDI; they are reported with offset 0 as they arrive.
    pub fn process_block(
        &mut self,
        frame: &TransportFrame,
        mut emit: impl FnMut(u32, Event),
    ) -> TransportChange {
        let change = self.update_transport(frame, &mut emit);
        self.pop_due(&frame.block(), &mut emit);
        change
    }

    /// Note-off (velocity 0, offset 0) for every generated note still sounding.
    pub fn all_notes_off(&mut self, mut emit: impl FnMut(u32, Event)) {
        if self.sounding == 0 {
            return;
        }
        for key in 0..KEYS {
            let owner = self.tables.owner[key];
            if owner != 0 {
                self.release_key(key, owner, self.now_beat, 0, &mut emit);
            }
        }
        self.sounding = 0;
    }

    /// Emits the events due before `block.end_beat` (late ones at offset 0) and keeps later ones
    /// queued. While stopped (`end_beat <= start_beat`) no notes are emitted; the ring is still
    /// drained so request outcomes arrive.
    pub fn pop_due(&mut self, block: &BlockTiming, mut emit: impl FnMut(u32, Event)) {
        self.drain(&mut emit);
        let playing = block.end_beat > block.start_beat;
        let mut head = 0;
        loop {
            let next_cut = self.earliest_due_cut(block);
            let next_ev =
                if playing && head < self.staged && block.is_due(self.tables.staging[head].beat) {
                    Some(self.tables.staging[head])
                } else {
                    None
                };
            match (next_cut, next_ev) {
                (Some((i, cut)), ev) if ev.is_none_or(|e| cut.beat <= e.beat) => {
                    self.remove_cut(i);
                    self.release_upto(cut.upto, cut.beat, block.offset_of(cut.beat), &mut emit);
                    self.raise_floor(cut.upto);
                }
                (_, Some(ev)) => {
                    head += 1;
                    self.play(&ev, block, &mut emit);
                }
                _ => break,
            }
        }
        if head > 0 {
            self.tables.staging.copy_within(head..self.staged, 0);
            self.staged -= head;
        }
        if playing {
            self.now_beat = block.end_beat;
        }
    }

    fn play(&mut self, ev: &NoteEvent, block: &BlockTiming, emit: &mut impl FnMut(u32, Event)) {
        let key = key_of(ev.channel, ev.pitch);
        let offset = block.offset_of(ev.beat);
        if !ev.on {
            // Only the request that started the key may end it: an old request's late note-off
            // must not cut a newer note on the same key.
            if self.tables.owner[key] == ev.request_id {
                self.tables.owner[key] = 0;
                self.sounding -= 1;
                emit(offset, Event::Note(*ev));
            }
            return;
        }
        if ev.request_id < self.floor || self.cut_covers(ev) || self.performer_holds(ev.pitch) {
            return;
        }
        if ev.beat < block.start_beat - self.late_tolerance_beats {
            self.shared.status.late_notes.fetch_add(1, Relaxed);
            return;
        }
        let owner = self.tables.owner[key];
        if owner != 0 {
            // Re-trigger: end the sounding note first so the note-on is never doubled.
            self.release_key(key, owner, ev.beat, offset, emit);
        }
        self.tables.owner[key] = ev.request_id;
        self.tables.started[key] = ev.beat;
        self.sounding += 1;
        emit(offset, Event::Note(*ev));
    }

    fn release_key(
        &mut self,
        key: usize,
        owner: RequestId,
        beat: f64,
        offset: u32,
        emit: &mut impl FnMut(u32, Event),
    ) {
        self.tables.owner[key] = 0;
        self.sounding = self.sounding.saturating_sub(1);
        let off = NoteEvent {
            beat,
            request_id: owner,
            epoch: self.epoch,
            on: false,
            pitch: (key % 128) as u8,
            velocity: 0,
            channel: (key / 128) as u8,
        };
        emit(offset, Event::Note(off));
    }

    fn release_upto(
        &mut self,
        upto: RequestId,
        beat: f64,
        offset: u32,
        emit: &mut impl FnMut(u32, Event),
    ) {
        if self.sounding == 0 {
            return;
        }
        for key in 0..KEYS {
            let owner = self.tables.owner[key];
            if owner != 0 && owner <= upto {
                self.release_key(key, owner, beat, offset, emit);
            }
        }
    }

    fn raise_floor(&mut self, upto: RequestId) {
        if upto >= self.floor {
            self.floor = upto.saturating_add(1);
            let floor = self.floor;
            let mut w = 0;
            for r in 0..self.remembered {
                let ev = self.tables.memory[r];
                if ev.request_id >= floor {
                    self.tables.memory[w] = ev;
                    w += 1;
                }
            }
            self.remembered = w;
        }
        // Cuts wholly below the floor have nothing left to do.
        let mut i = 0;
        while i < self.n_cuts {
            if self.cuts[i].upto < self.floor {
                self.remove_cut(i)
            } else {
                i += 1
            }
        }
    }

    fn earliest_due_cut(&self, block: &BlockTiming) -> Option<(usize, Cut)> {
        let mut best: Option<(usize, Cut)> = None;
        for (i, c) in self.cuts[..self.n_cuts].iter().enumerate() {
            let due = c.beat < block.end_beat || c.beat <= block.start_beat;
            if due && best.is_none_or(|(_, b)| c.beat < b.beat) {
                best = Some((i, *c));
            }
        }
        best
    }

    fn remove_cut(&mut self, i: usize) {
        self.cuts[i] = self.cuts[self.n_cuts - 1];
        self.n_cuts -= 1;
    }

    fn cut_covers(&self, ev: &NoteEvent) -> bool {
        self.cuts[..self.n_cuts]
            .iter()
            .any(|c| ev.request_id <= c.upto && ev.beat >= c.beat)
    }

    /// Applies a pending cut to an event: `false` drops it (a note-on at/after the cut), a
    /// note-off after the cut is moved to the cut.
    fn apply_cuts(&self, ev: &mut NoteEvent) -> bool {
        for c in &self.cuts[..self.n_cuts] {
            if ev.request_id <= c.upto && ev.beat >= c.beat {
                if ev.on {
                    return false;
                }
                ev.beat = c.beat;
            }
        }
        true
    }

    fn add_cut(&mut self, upto: RequestId, beat: f64) {
        if upto < self.floor || !beat.is_finite() {
            return;
        }
        // A cut that covers fewer requests from a later beat is subsumed.
        let mut i = 0;
        while i < self.n_cuts {
            let c = self.cuts[i];
            if c.upto <= upto && c.beat >= beat {
                self.remove_cut(i)
            } else {
                i += 1
            }
        }
        if self.n_cuts == MAX_CUTS {
            // Merge the two earliest cuts into one that covers both from the earlier beat: it can
            // only silence sooner, never leave a note hanging.
            let mut a = 0;
            for i in 1..self.n_cuts {
                if self.cuts[i].beat < self.cuts[a].beat {
                    a = i;
                }
            }
            let first = self.cuts[a];
            self.remove_cut(a);
            let mut b = 0;
            for i in 1..self.n_cuts {
                if self.cuts[i].beat < self.cuts[b].beat {
                    b = i;
                }
            }
            self.cuts[b] = Cut {
                upto: first.upto.max(self.cuts[b].upto),
                beat: first.beat.min(self.cuts[b].beat),
            };
        }
        self.cuts[self.n_cuts] = Cut { upto, beat };
        self.n_cuts += 1;
        // Rewrite what is already staged, then restore the order (clamped note-offs move earlier).
        let mut w = 0;
        for r in 0..self.staged {
            let mut ev = self.tables.staging[r];
            if self.apply_cuts(&mut ev) {
                self.tables.staging[w] = ev;
                w += 1;
            }
        }
        self.staged = w;
        for i in 1..self.staged {
            let mut j = i;
            while j > 0 && order(&self.tables.staging[j - 1], &self.tables.staging[j]) {
                self.tables.staging.swap(j - 1, j);
                j -= 1;
            }
        }
    }

    /// Moves arriving events into the staging area (sorted), handling outcomes on the way.
    fn drain(&mut self, emit: &mut impl FnMut(u32, Event)) {
        // Bounded by what is queued now so a busy engine cannot keep the audio thread here.
        let queued = self.events.occupied_len();
        for _ in 0..queued {
            if self.staged == STAGING_CAPACITY
                && !matches!(self.events.first(), Some(Event::Retract(_)))
            {
                // Leave the rest in the ring (the engine waits); staged events are the earliest
                // ones of their request, so nothing due is stuck behind them. A retraction
                // takes no room.
                break;
            }
            let Some(ev) = self.events.try_pop() else {
                break;
            };
            match ev {
                Event::RequestDone {
                    request_id,
                    outcome,
                } => {
                    if outcome.silences() {
                        self.add_cut(request_id, self.now_beat);
                    }
                    emit(0, ev);
                }
                Event::Retract(r) => self.retract(&r, emit),
                Event::Note(mut n) => {
                    if n.epoch != self.epoch || n.request_id < self.floor {
                        continue;
                    }
                    if self.remember(&n) && n.beat < self.restaged_before {
                        // Queued from memory at the last relocation.
                        continue;
                    }
                    if n.request_id == self.after_wrap
                        && n.beat < self.now_beat - self.late_tolerance_beats
                    {
                        // For after the wrap (queued from memory then), not late.
                        continue;
                    }
                    if !self.apply_cuts(&mut n) {
                        continue;
                    }
                    let mut j = self.staged;
                    self.tables.staging[j] = n;
                    while j > 0 && order(&self.tables.staging[j - 1], &self.tables.staging[j]) {
                        self.tables.staging.swap(j - 1, j);
                        j -= 1;
                    }
                    self.staged += 1;
                }
            }
        }
    }

    /// Empties the staging area and the ring (its notes are remembered); outcomes are still
    /// reported.
    fn flush(&mut self, emit: &mut impl FnMut(u32, Event)) {
        self.staged = 0;
        let queued = self.events.occupied_len();
        for _ in 0..queued {
            match self.events.try_pop() {
                Some(
                    ev @ Event::RequestDone {
                        request_id,
                        outcome,
                    },
                ) => {
                    if outcome.silences() {
                        self.raise_floor(request_id);
                    }
                    emit(0, ev);
                }
                Some(Event::Note(n)) => {
                    // Not played at the old position, but still the request's music.
                    if n.request_id >= self.floor {
                        self.remember(&n);
                    }
                }
                // Out of the memory before it is queued again.
                Some(Event::Retract(r)) => self.retract(&r, emit),
                None => break,
            }
        }
    }
}
