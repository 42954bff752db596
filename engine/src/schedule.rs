//! Turning one request's generated notes (milliseconds from the section start) into note events in
//! host beats, released to the event ring in time order and only a bounded time ahead of the
//! playhead.
//!
//! Guarantees per request, whatever the model emits: every note-on has a later note-off, notes of
//! one key never overlap (an earlier note is shortened to the next one's start), nothing starts
//! before the section start or at/after its end, and nothing sounds past the end.

use crate::messages::{NoteEvent, RequestId};
use crate::status::ParamValues;
use crate::timing::ms_to_beats;

/// Shortest note the scheduler emits, in beats: a note-on and note-off at the same instant would
/// reach the host off-first and leave the key hanging.
pub const MIN_NOTE_BEATS: f64 = 1.0 / 128.0;

#[derive(Debug, Clone, Copy, PartialEq)]
pub struct ScheduledNote {
    pub pitch: u8,
    pub velocity: u8,
    pub start: f64,
    pub end: f64,
}

/// What happened to a note handed to [`Scheduler::add`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Added {
    Scheduled,
    /// Outside the pitch range/key, over the polyphony limit, or a duplicate.
    Filtered,
    /// Starts at or after the section end: the request is complete.
    PastEnd,
}

/// One request's notes and how far they have been pushed.
#[derive(Debug, Clone)]
pub struct Scheduler {
    pub request_id: RequestId,
    pub epoch: u32,
    channel: u8,
    params: ParamValues,
    pub start_beat: f64,
    pub end_beat: f64,
    bpm: f64,
    /// Sorted by start; per key never overlapping.
    notes: Vec<ScheduledNote>,
    last_on_key: [Option<usize>; 128],
    /// Next note whose note-on has not been pushed.
    next_on: usize,
    /// Notes whose note-on was pushed and note-off not yet.
    active: Vec<usize>,
    /// Start of the newest note: the model emits notes in onset order, so events before this are
    /// final (a later note can still shorten a note that ends after it).
    watermark: f64,
    complete: bool,
}

impl Scheduler {
    /// `bpm` converts the model's milliseconds to beats; `bars * beats_per_bar` bounds the section.
    pub fn new(
        request_id: RequestId,
        epoch: u32,
        start_beat: f64,
        bars: u32,
        beats_per_bar: f64,
        bpm: f64,
        params: ParamValues,
    ) -> Self {
        Self {
            request_id,
            epoch,
            channel: params.channel.min(15),
            params,
            start_beat,
            end_beat: start_beat + bars as f64 * beats_per_bar,
            bpm,
            notes: Vec::new(),
            last_on_key: [None; 128],
            next_on: 0,
            active: Vec::new(),
            watermark: start_beat,
            complete: false,
        }
    }

    pub fn notes(&self) -> &[ScheduledNote] {
        &self.notes
    }

    /// The notes generated so far as a piece in ms from the section start at the request's tempo
    /// (what a `Continue` request is conditioned on).
    pub fn context_notes(&self) -> Vec<staria_models::Note> {
        self.notes
            .iter()
            .map(|n| {
                let (s, e) = (n.start - self.start_beat, n.end - self.start_beat);
                staria_models::Note {
                    pitch: n.pitch,
                    velocity: n.velocity,
                    channel: 0,
                    program: 0,
                    start_tick: (s * crate::capture::SNIPPET_TPQ as f64).round() as u64,
                    end_tick: (e * crate::capture::SNIPPET_TPQ as f64).round() as u64,
                    start_ms: crate::timing::beats_to_ms(s, self.bpm),
                    end_ms: crate::timing::beats_to_ms(e, self.bpm),
                }
            })
            .collect()
    }

    /// The beat of the next event [`Self::pump`] has to push (a note-on not yet pushed or the
    /// note-off of one that was), `None` once everything has been pushed.
    pub fn next_event_beat(&self) -> Option<f64> {
        let on = self.notes.get(self.next_on).map(|n| n.start);
        self.active
            .iter()
            .map(|&i| self.notes[i].end)
            .chain(on)
            .min_by(f64::total_cmp)
    }

    /// Start of the newest note (how far generation has got), in beats.
    pub fn watermark(&self) -> f64 {
        self.watermark
    }

    pub fn is_complete(&self) -> bool {
        self.complete
    }

    /// Generation is over: every remaining event is final.
    pub fn finish(&mut self) {
        self.complete = true;
    }

    /// All events pushed (only meaningful once complete).
    pub fn is_drained(&self) -> bool {
        self.complete && self.next_on >= self.notes.len() && self.active.is_empty()
    }

    /// A generated note, times in ms from the section start.
    pub fn add(&mut self, pitch: u8, velocity: u8, start_ms: f64, dur_ms: f64) -> Added {
        if !start_ms.is_finite() {
            return Added::Filtered;
        }
        let raw_start = self.start_beat + ms_to_beats(start_ms.max(0.0), self.bpm);
        if raw_start >= self.end_beat {
            return Added::PastEnd;
        }
        if pitch > 127 || !self.params.allows_pitch(pitch) {
            return Added::Filtered;
        }
        // Onsets arrive in order; a stray earlier one is moved up rather than reordering what
        // may already be queued.
        let start = raw_start.max(self.watermark);
        let dur = if dur_ms.is_finite() {
            ms_to_beats(dur_ms.max(0.0), self.bpm)
        } else {
            0.0
        };
        let end = (start + dur.max(MIN_NOTE_BEATS)).min(self.end_beat);
        if end - start < MIN_NOTE_BEATS / 2.0 {
            return Added::Filtered;
        }
        let sounding = self
            .last_on_key
            .iter()
            .flatten()
            .filter(|&&i| self.notes[i].end > start)
            .count();
        let same_key = self.last_on_key[pitch as usize];
        let frees_own_key = same_key.is_some_and(|i| self.notes[i].end > start);
        if sounding - usize::from(frees_own_key) >= self.params.max_polyphony as usize {
            return Added::Filtered;
        }
        if let Some(i) = same_key {
            let prev = &mut self.notes[i];
            if prev.end > start {
                if start - prev.start < MIN_NOTE_BEATS {
                    // Same key struck again at (nearly) the same instant: keep the first.
                    return Added::Filtered;
                }
                prev.end = start;
            }
        }
        self.watermark = start;
        self.last_on_key[pitch as usize] = Some(self.notes.len());
        self.notes.push(ScheduledNote {
            pitch,
            velocity: velocity.clamp(1, 127),
            start,
            end,
        });
        Added::Scheduled
    }

    fn event(&self, n: &ScheduledNote, on: bool) -> NoteEvent {
        NoteEvent {
            beat: if on { n.start } else { n.end },
            request_id: self.request_id,
            epoch: self.epoch,
            on,
            pitch: n.pitch,
            velocity: n.velocity,
            channel: self.channel,
        }
    }

    /// Pushes final events up to `limit` (beats) in time order, note-offs first at equal times.
    /// Stops at the first `push` that fails (ring full) and resumes there next call.
    pub fn pump(&mut self, limit: f64, mut push: impl FnMut(NoteEvent) -> bool) {
        loop {
            let off = self
                .active
                .iter()
                .enumerate()
                .min_by(|a, b| self.notes[*a.1].end.total_cmp(&self.notes[*b.1].end));
            let on = self.notes.get(self.next_on);
            let (time, is_on) = match (off, on) {
                (Some((_, &i)), Some(n)) if self.notes[i].end <= n.start => {
                    (self.notes[i].end, false)
                }
                (_, Some(n)) => (n.start, true),
                (Some((_, &i)), None) => (self.notes[i].end, false),
                (None, None) => return,
            };
            if time > limit || (!self.complete && time >= self.watermark) {
                return;
            }
            if is_on {
                let ev = self.event(&self.notes[self.next_on], true);
                if !push(ev) {
                    return;
                }
                self.active.push(self.next_on);
                self.next_on += 1;
            } else {
                let Some((slot, &i)) = off else { return };
                if !push(self.event(&self.notes[i], false)) {
                    return;
                }
                self.active.swap_remove(slot);
            }
        }
    }

    /// The transport moved: events pushed so far were discarded by the audio side; continue from
    /// the first note starting at or after `playhead` under the new epoch.
    pub fn relocate(&mut self, playhead: f64, epoch: u32) {
        self.epoch = epoch;
        self.active.clear();
        self.next_on = self.notes.partition_point(|n| n.start < playhead);
    }

    /// A newer request takes over at `beat`: nothing of this one starts there or later, and what
    /// sounds is cut there. Generation of this request is over.
    pub fn truncate(&mut self, beat: f64) {
        let keep = self.notes.partition_point(|n| n.start < beat);
        self.notes.truncate(keep);
        for n in &mut self.notes {
            n.end = n.end.min(beat.max(n.start + MIN_NOTE_BEATS));
        }
        self.next_on = self.next_on.min(keep);
        self.active.retain(|&i| i < keep);
        for k in self.last_on_key.iter_mut() {
            if k.is_some_and(|i| i >= keep) {
                *k = None;
            }
        }
        self.end_beat = self.end_beat.min(beat);
        self.complete = true;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::status::EngineParams;

    fn sched(bars: u32) -> Scheduler {
        let p = EngineParams::default();
        p.set_channel(3);
        // Start at beat 8, 4/4, 120 bpm: 500 ms per beat.
        Scheduler::new(7, 1, 8.0, bars, 4.0, 120.0, p.values())
    }

    fn drain(s: &mut Scheduler, limit: f64) -> Vec<NoteEvent> {
        let mut out = Vec::new();
        s.pump(limit, |e| {
            out.push(e);
            true
        });
        out
    }

    #[test]
    fn converts_orders_and_pairs() {
        let mut s = sched(2);
        assert_eq!(s.add(60, 100, 0.0, 1000.0), Added::Scheduled); // beats 8..10
        assert_eq!(s.add(64, 90, 250.0, 250.0), Added::Scheduled); // 8.5..9
        assert_eq!(s.add(67, 90, 500.0, 10_000.0), Added::Scheduled); // 9..16 (cut at end)
        // Nothing at or after the newest onset is final yet.
        let ev = drain(&mut s, 100.0);
        assert_eq!(
            ev.iter()
                .map(|e| (e.beat, e.on, e.pitch))
                .collect::<Vec<_>>(),
            vec![(8.0, true, 60), (8.5, true, 64)]
        );
        assert!(
            ev.iter()
                .all(|e| e.channel == 3 && e.request_id == 7 && e.epoch == 1)
        );
        assert_eq!(s.add(72, 90, 4000.0, 100.0), Added::PastEnd); // beat 16 = end
        s.finish();
        let ev = drain(&mut s, 100.0);
        assert_eq!(
            ev.iter()
                .map(|e| (e.beat, e.on, e.pitch))
                .collect::<Vec<_>>(),
            vec![
                (9.0, false, 64),
                (9.0, true, 67),
                (10.0, false, 60),
                (16.0, false, 67)
            ]
        );
        assert!(s.is_drained());
    }

    #[test]
    fn respects_limit_and_full_ring() {
        let mut s = sched(4);
        for i in 0..8 {
            s.add(60 + i, 100, i as f64 * 500.0, 400.0);
        }
        s.finish();
        let ev = drain(&mut s, 10.0); // notes at 8, 9, 10 → ons at 8, 9, 10 and offs at 8.8, 9.8
        assert_eq!(ev.len(), 5);
        assert!(ev.iter().all(|e| e.beat <= 10.0));
        // A ring with room for one event: resumes exactly where it stopped.
        let mut got = Vec::new();
        for _ in 0..20 {
            let mut room = 1;
            s.pump(100.0, |e| {
                if room == 0 {
                    return false;
                }
                room -= 1;
                got.push(e);
                true
            });
        }
        assert_eq!(got.len(), 16 - 5);
        assert!(got.windows(2).all(|w| w[0].beat <= w[1].beat));
        assert!(s.is_drained());
    }

    #[test]
    fn next_event_beat_is_what_pump_pushes_next() {
        let mut s = sched(1);
        assert_eq!(s.next_event_beat(), None);
        s.add(60, 100, 0.0, 1000.0); // 8..10
        s.add(64, 100, 250.0, 250.0); // 8.5..9
        s.finish();
        assert_eq!(s.next_event_beat(), Some(8.0));
        assert_eq!(drain(&mut s, 8.6).len(), 2);
        assert_eq!(s.next_event_beat(), Some(9.0));
        drain(&mut s, 100.0);
        assert_eq!(s.next_event_beat(), None);
    }

    #[test]
    fn same_key_overlap_and_filters() {
        let p = EngineParams::default();
        p.set_pitch_range(48, 84);
        p.set_max_polyphony(2);
        let mut s = Scheduler::new(1, 0, 0.0, 1, 4.0, 120.0, p.values());
        assert_eq!(s.add(30, 100, 0.0, 100.0), Added::Filtered); // below range
        assert_eq!(s.add(60, 100, 0.0, 1000.0), Added::Scheduled);
        assert_eq!(s.add(60, 100, 0.0, 1000.0), Added::Filtered); // duplicate strike
        assert_eq!(s.add(64, 100, 0.0, 1000.0), Added::Scheduled);
        assert_eq!(s.add(67, 100, 100.0, 1000.0), Added::Filtered); // third voice
        assert_eq!(s.add(60, 100, 500.0, 250.0), Added::Scheduled); // re-strike shortens the first 60
        // Moved up to the watermark (beat 1), where two voices already sound.
        assert_eq!(s.add(62, 100, -10.0, 100.0), Added::Filtered);
        assert_eq!(s.add(66, 100, f64::NAN, 100.0), Added::Filtered);
        s.finish();
        let ev = drain(&mut s, 100.0);
        let ons = ev.iter().filter(|e| e.on).count();
        assert_eq!(ons * 2, ev.len());
        let mut sounding = [false; 128];
        for e in &ev {
            assert_ne!(
                sounding[e.pitch as usize], e.on,
                "overlap or orphan on key {}",
                e.pitch
            );
            sounding[e.pitch as usize] = e.on;
        }
        assert_eq!(s.notes()[0].end, 1.0);
        assert_eq!(s.notes().last().unwrap().start, 1.0);

        let mut s = Scheduler::new(1, 0, 0.0, 1, 4.0, 120.0, EngineParams::default().values());
        s.add(60, 100, 1000.0, 100.0);
        assert_eq!(s.add(62, 100, 10.0, 100.0), Added::Scheduled);
        assert_eq!(s.notes()[1].start, 2.0);
    }

    #[test]
    fn relocate_replays_and_truncate_cuts() {
        let mut s = sched(1);
        for i in 0..4 {
            s.add(60 + i, 100, i as f64 * 500.0, 800.0);
        }
        s.finish();
        assert_eq!(drain(&mut s, 100.0).len(), 8);
        s.relocate(9.5, 2);
        let ev = drain(&mut s, 100.0);
        assert_eq!(
            ev.iter()
                .filter(|e| e.on)
                .map(|e| e.beat)
                .collect::<Vec<_>>(),
            vec![10.0, 11.0]
        );
        assert!(ev.iter().all(|e| e.epoch == 2));
        s.relocate(0.0, 3);
        s.truncate(9.5);
        let ev = drain(&mut s, 100.0);
        assert_eq!(ev.len(), 4);
        assert!(ev.iter().all(|e| e.beat <= 9.5));
    }
}
