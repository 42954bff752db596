//! Output bookkeeping on the audio thread, all fixed storage: a time-ordered event queue for one
//! block (the host's output list must be filled in time order) and a table of sounding notes.

use nice_plug::prelude::NoteEvent;

pub type Event = NoteEvent<()>;

/// Enough for a full block of host input plus every key on every channel being released.
pub const QUEUE_CAPACITY: usize = 4096;

pub struct EventQueue {
    events: Box<[Event]>,
    len: usize,
    /// Events that did not fit (counted, never silently lost).
    pub overflowed: u64,
}

impl Default for EventQueue {
    fn default() -> Self {
        let filler = NoteEvent::MidiProgramChange {
            timing: 0,
            channel: 0,
            program: 0,
        };
        Self {
            events: vec![filler; QUEUE_CAPACITY].into_boxed_slice(),
            len: 0,
            overflowed: 0,
        }
    }
}

impl EventQueue {
    pub fn clear(&mut self) {
        self.len = 0;
    }

    pub fn len(&self) -> usize {
        self.len
    }

    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// Inserts keeping the queue sorted by timing; equal timings keep their push order (a note-off
    /// pushed before a note-on at the same time stays before it). O(1) for in-order pushes.
    pub fn push(&mut self, ev: Event) {
        if self.len == self.events.len() {
            self.overflowed += 1;
            return;
        }
        let t = ev.timing();
        let mut i = self.len;
        while i > 0 && self.events[i - 1].timing() > t {
            self.events[i] = self.events[i - 1];
            i -= 1;
        }
        self.events[i] = ev;
        self.len += 1;
    }

    pub fn as_slice(&self) -> &[Event] {
        &self.events[..self.len]
    }
}

/// Which (channel, key) pairs are sounding on the output.
pub struct NoteTable {
    on: Box<[bool; 16 * 128]>,
    count: usize,
}

impl Default for NoteTable {
    fn default() -> Self {
        Self {
            on: Box::new([false; 16 * 128]),
            count: 0,
        }
    }
}

impl NoteTable {
    fn idx(channel: u8, key: u8) -> usize {
        (channel as usize & 15) * 128 + (key as usize & 127)
    }

    pub fn press(&mut self, channel: u8, key: u8) {
        let i = Self::idx(channel, key);
        if !self.on[i] {
            self.on[i] = true;
            self.count += 1;
        }
    }

    /// `true` if the note was sounding.
    pub fn release(&mut self, channel: u8, key: u8) -> bool {
        let i = Self::idx(channel, key);
        if self.on[i] {
            self.on[i] = false;
            self.count -= 1;
            true
        } else {
            false
        }
    }

    pub fn is_on(&self, channel: u8, key: u8) -> bool {
        self.on[Self::idx(channel, key)]
    }

    pub fn count(&self) -> usize {
        self.count
    }

    /// Releases everything, calling `f(channel, key)` for each note that was sounding.
    pub fn release_all(&mut self, mut f: impl FnMut(u8, u8)) {
        if self.count == 0 {
            return;
        }
        for i in 0..self.on.len() {
            if self.on[i] {
                self.on[i] = false;
                f((i / 128) as u8, (i % 128) as u8);
            }
        }
        self.count = 0;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use nice_plug::midi::{Channel, Key, VoiceID};

    fn on(t: u32, key: u8) -> Event {
        NoteEvent::NoteOn {
            timing: t,
            voice_id: VoiceID::Wildcard,
            channel: Channel::Number(0),
            key: Key::Number(key),
            velocity: 1.0,
        }
    }
    fn off(t: u32, key: u8) -> Event {
        NoteEvent::NoteOff {
            timing: t,
            voice_id: VoiceID::Wildcard,
            channel: Channel::Number(0),
            key: Key::Number(key),
            velocity: 0.0,
        }
    }

    #[test]
    fn queue_is_time_ordered_and_stable() {
        let mut q = EventQueue::default();
        q.push(on(10, 60));
        q.push(off(50, 60));
        q.push(off(10, 62));
        q.push(on(0, 61));
        q.push(on(10, 62));
        let got: Vec<_> = q
            .as_slice()
            .iter()
            .map(|e| (e.timing(), matches!(e, NoteEvent::NoteOn { .. })))
            .collect();
        assert_eq!(
            got,
            vec![(0, true), (10, true), (10, false), (10, true), (50, false)]
        );
        q.clear();
        assert!(q.is_empty());
        for i in 0..QUEUE_CAPACITY + 2 {
            q.push(on(i as u32, 1));
        }
        assert_eq!(q.len(), QUEUE_CAPACITY);
        assert_eq!(q.overflowed, 2);
    }

    #[test]
    fn note_table_releases_everything_once() {
        let mut t = NoteTable::default();
        t.press(0, 60);
        t.press(0, 60);
        t.press(15, 127);
        assert_eq!(t.count(), 2);
        assert!(t.release(0, 60));
        assert!(!t.release(0, 60));
        t.press(3, 5);
        let mut released = Vec::new();
        t.release_all(|c, k| released.push((c, k)));
        assert_eq!(released, vec![(3, 5), (15, 127)]);
        assert_eq!(t.count(), 0);
        assert!(!t.is_on(3, 5));
    }
}
