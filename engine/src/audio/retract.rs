//! Retractions on the audio side ([`Event::Retract`], see the module notes of `audio`): a
//! note-on the engine pushed and takes back leaves the queue and the memory with a note-off
//! of it still there, or is released now if it already sounded. Allocation-free; each scan is
//! bounded by a fixed table (the queue, the memory, one key).

use super::{AudioSide, key_of};
use crate::messages::{Event, NoteEvent, Retraction};
use std::sync::atomic::Ordering::Relaxed;

impl AudioSide {
    /// Applies a retraction drained from the ring (or flushed with it at a relocation).
    pub(super) fn retract(&mut self, r: &Retraction, emit: &mut impl FnMut(u32, Event)) {
        let t = &mut *self.tables;
        let staged = remove_note(&mut t.staging, &mut self.staged, r);
        remove_note(&mut t.memory, &mut self.remembered, r);
        let status = &self.shared.status;
        if staged {
            status.notes_retracted.fetch_add(1, Relaxed);
            return;
        }
        let key = key_of(r.channel, r.pitch);
        let owner = self.tables.owner[key];
        // Played before the retraction came: released at this block's start, like a cut.
        if owner != 0 && owner == r.request_id && self.tables.started[key] == r.beat {
            status.retracted_after_playing.fetch_add(1, Relaxed);
            self.release_key(key, owner, self.now_beat, 0, emit);
        }
    }
}

/// Whether `e` is an event of the key and request `r` names.
fn of_note(e: &NoteEvent, r: &Retraction) -> bool {
    e.request_id == r.request_id && key_of(e.channel, e.pitch) == key_of(r.channel, r.pitch)
}

/// Removes from the sorted `events[..*len]` the note-on `r` names and, when the next event of
/// that key and request after it is a note-off, that note-off (its own: the engine never
/// overlaps two notes of a request on one key). Whether the note-on was there.
fn remove_note(events: &mut [NoteEvent], len: &mut usize, r: &Retraction) -> bool {
    let n = *len;
    let Some(i) = events[..n]
        .iter()
        .position(|e| e.on && e.beat == r.beat && of_note(e, r))
    else {
        return false;
    };
    if let Some(k) = events[i + 1..n].iter().position(|e| of_note(e, r)) {
        let j = i + 1 + k;
        if !events[j].on {
            events.copy_within(j + 1..n, j);
            *len -= 1;
        }
    }
    events.copy_within(i + 1..*len, i);
    *len -= 1;
    true
}
