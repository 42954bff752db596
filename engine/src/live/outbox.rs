//! The engine thread's side of a live session: host beats to session ms and back, and the
//! model's handed-out notes waiting to be pushed to the audio side as note events.
//!
//! Contract: a note-on is pushed once its beat is within the push limit the engine passes
//! (a few tens of ms ahead), a note-off likewise; every pushed note-on gets a note-off or a
//! retraction ([`Event::Retract`]). A cut at or before a note's start drops it whole: one not
//! yet pushed is forgotten, one pushed is retracted (the audio side drops the queued note-on,
//! or releases it at once if it played already), pushed at the next `pump` whatever the limit,
//! before anything else. A cut after a note's start moves its note-off earlier, never before
//! the note-on plus `schedule::MIN_NOTE_BEATS` (a note that began sounds at least that long,
//! and its note-off is never ordered before its note-on); a handed-out note is at least that
//! long too. At equal beats note-offs go first, so a key struck again re-strikes; one struck
//! again less than `MIN_NOTE_BEATS` after a pushed note's start strikes when that note's
//! note-off goes, at its start plus `MIN_NOTE_BEATS` (every note-off ends its own note-on).
//! Storage is allocated once (`Outbox::new`).

use crate::messages::{Event, NoteEvent, RequestId, Retraction};
use crate::schedule::MIN_NOTE_BEATS;

/// Session ms <-> host beats at the tempo the session started with, for the whole session: a
/// later tempo change stretches session time with the beats (`live::tempo`).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct BeatClock {
    /// Host beat of session time 0.
    pub origin_beat: f64,
    pub bpm: f64,
}

impl BeatClock {
    pub fn ms(&self, beat: f64) -> f64 {
        (beat - self.origin_beat) * 60_000.0 / self.bpm
    }

    pub fn beat(&self, ms: f64) -> f64 {
        self.origin_beat + ms * self.bpm / 60_000.0
    }
}

#[derive(Debug, Clone, Copy, PartialEq)]
struct OutNote {
    request_id: RequestId,
    pitch: u8,
    velocity: u8,
    start: f64,
    end: f64,
    on_pushed: bool,
    /// Pushed, then cut at or before its start: a retraction instead of the note-off.
    retract: bool,
}

/// Notes handed out by the session, in beats, until both their events are pushed.
#[derive(Debug)]
pub struct Outbox {
    notes: Vec<OutNote>,
    channel: u8,
    pub epoch: u32,
}

impl Outbox {
    pub fn new(channel: u8, epoch: u32) -> Outbox {
        Outbox {
            notes: Vec::with_capacity(256),
            channel: channel.min(15),
            epoch,
        }
    }

    /// Notes not completely pushed.
    pub fn len(&self) -> usize {
        self.notes.len()
    }

    pub fn is_empty(&self) -> bool {
        self.notes.is_empty()
    }

    /// A handed-out note (beats). A note of the same key still sounding ends where it starts;
    /// if that one's note-on was pushed less than `MIN_NOTE_BEATS` before, its note-off cannot
    /// come sooner than that, so the new note starts there (at most a 128th of a beat late):
    /// its note-on then follows the old note-off, which would otherwise end it on the audio
    /// side (a note-off ends whatever note its request holds on the key).
    pub fn add(&mut self, request_id: RequestId, pitch: u8, velocity: u8, start: f64, end: f64) {
        if pitch > 127 || !(start.is_finite() && end.is_finite()) {
            return;
        }
        self.cut(pitch, start);
        let start = self
            .notes
            .iter()
            .filter(|n| n.pitch == pitch && !n.retract)
            .fold(start, |s, n| s.max(n.end));
        self.notes.push(OutNote {
            request_id,
            pitch,
            velocity: velocity.clamp(1, 127),
            start,
            end: end.max(start + MIN_NOTE_BEATS),
            on_pushed: false,
            retract: false,
        });
    }

    /// The notes on `pitch` stop at `beat`: one starting at or after `beat` is dropped whole
    /// (forgotten, or retracted if its note-on was pushed), one started before ends at `beat`
    /// (not before its note-on plus the shortest note).
    pub fn cut(&mut self, pitch: u8, beat: f64) {
        self.notes
            .retain_mut(|n| n.pitch != pitch || n.end <= beat || n.stop(beat));
    }

    /// Forgets the notes of `request_id` (the audio side silenced the request).
    pub fn drop_request(&mut self, request_id: RequestId) {
        self.notes.retain(|n| n.request_id != request_id);
    }

    /// The transport moved by `shift` beats (a new `epoch`): the audio side released what
    /// sounded and dropped what was queued (it never re-queues a live session's events), so
    /// pushed notes are over, started or not; the rest move with the time line.
    pub fn relocate(&mut self, shift: f64, epoch: u32) {
        self.epoch = epoch;
        self.notes.retain_mut(|n| {
            if n.on_pushed {
                // A retraction still to push names the note-on as it was pushed: unshifted
                // (the audio side holds nothing of it any more; it does nothing there).
                return n.retract;
            }
            n.start += shift;
            n.end += shift;
            true
        });
    }

    /// Pushes the retractions, then the note events due by `limit` in time order (note-offs
    /// first at equal beats); stops at the first `push` that fails and resumes there next time.
    pub fn pump(&mut self, limit: f64, mut push: impl FnMut(Event) -> bool) {
        loop {
            // (index, beat to order by, note-on)
            let mut best: Option<(usize, f64, bool)> = None;
            for (i, n) in self.notes.iter().enumerate() {
                let (beat, on) = match (n.on_pushed, n.retract) {
                    (false, _) => (n.start, true),
                    (true, false) => (n.end, false),
                    (true, true) => (f64::NEG_INFINITY, false),
                };
                let better = best.is_none_or(|(_, b, bon)| beat < b || (beat == b && bon && !on));
                if beat <= limit && better {
                    best = Some((i, beat, on));
                }
            }
            let Some((i, beat, on)) = best else { return };
            let n = self.notes[i];
            let ev = if n.retract {
                Event::Retract(Retraction {
                    beat: n.start,
                    request_id: n.request_id,
                    pitch: n.pitch,
                    channel: self.channel,
                })
            } else {
                Event::Note(NoteEvent {
                    beat,
                    request_id: n.request_id,
                    epoch: self.epoch,
                    on,
                    pitch: n.pitch,
                    velocity: n.velocity,
                    channel: self.channel,
                })
            };
            if !push(ev) {
                return;
            }
            if on {
                self.notes[i].on_pushed = true;
            } else {
                self.notes.swap_remove(i);
            }
        }
    }

    /// The session ends at `beat`: every note whose note-on was pushed ends (a note-off at
    /// `beat`, or its own end if earlier, never before its note-on plus the shortest note; a
    /// retraction when it starts at or after `beat`), the rest is dropped. An event `push`
    /// refuses stays (retried by `pump`).
    pub fn release_all(&mut self, beat: f64, push: impl FnMut(Event) -> bool) {
        self.notes
            .retain_mut(|n| n.on_pushed && (n.end <= beat || n.stop(beat)));
        self.pump(f64::INFINITY, push);
    }

    /// The earliest event still to push (for the engine's sleep; a retraction: its note's
    /// start).
    pub fn next_beat(&self) -> Option<f64> {
        self.notes
            .iter()
            .map(|n| {
                if n.on_pushed && !n.retract {
                    n.end
                } else {
                    n.start
                }
            })
            .min_by(f64::total_cmp)
    }
}

impl OutNote {
    /// The note, sounding at `beat` or starting later, stops at `beat` (see [`Outbox::cut`]);
    /// `false`: forget it.
    fn stop(&mut self, beat: f64) -> bool {
        if beat <= self.start {
            self.retract = self.on_pushed;
            return self.on_pushed;
        }
        self.end = if self.on_pushed {
            beat.max(self.start + MIN_NOTE_BEATS)
        } else {
            beat
        };
        true
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn drain(o: &mut Outbox, limit: f64) -> Vec<(f64, bool, u8)> {
        let mut got = Vec::new();
        o.pump(limit, |e| {
            let Event::Note(e) = e else { panic!("{e:?}") };
            got.push((e.beat, e.on, e.pitch));
            true
        });
        got
    }

    fn events(o: &mut Outbox, limit: f64) -> Vec<Event> {
        let mut got = Vec::new();
        o.pump(limit, |e| {
            got.push(e);
            true
        });
        got
    }

    fn retraction(request_id: RequestId, pitch: u8, beat: f64) -> Event {
        Event::Retract(Retraction {
            beat,
            request_id,
            pitch,
            channel: 2,
        })
    }

    fn note(on: bool, pitch: u8, beat: f64) -> Event {
        Event::Note(NoteEvent {
            beat,
            request_id: 4,
            epoch: 0,
            on,
            pitch,
            velocity: 90,
            channel: 2,
        })
    }

    /// A cut at or before a pushed note's start retracts it (no note-off, no blip of a 128th
    /// of a beat), before anything else and whatever the push limit; one just after its start
    /// keeps the shortest note; one not pushed is forgotten.
    #[test]
    fn a_cut_at_or_before_a_pushed_notes_start_retracts_it() {
        let mut o = Outbox::new(2, 0);
        o.add(4, 60, 90, 1.0, 2.0);
        o.add(4, 64, 90, 1.0, 2.0);
        o.add(4, 67, 90, 1.0, 2.0);
        o.add(4, 72, 90, 0.98, 1.5);
        o.add(4, 71, 90, 1.2, 1.5);
        assert_eq!(drain(&mut o, 1.0).len(), 4);
        // Cut at the start, before it, just after it; 71 not pushed yet.
        o.cut(60, 1.0);
        o.cut(64, 0.99);
        o.cut(67, 1.001);
        o.cut(71, 1.1);
        // A limit before the notes' start: the retractions go anyway, first.
        o.add(4, 48, 90, 0.97, 1.5);
        let got = events(&mut o, 0.99);
        assert_eq!(got.len(), 3, "{got:?}");
        assert_eq!(got[2], note(true, 48, 0.97));
        assert!(got[..2].contains(&retraction(4, 60, 1.0)), "{got:?}");
        assert!(got[..2].contains(&retraction(4, 64, 1.0)), "{got:?}");
        assert_eq!(
            events(&mut o, 10.0),
            [
                note(false, 67, 1.0 + MIN_NOTE_BEATS),
                note(false, 48, 1.5),
                note(false, 72, 1.5)
            ]
        );
        assert!(o.is_empty());
        // A key struck again at the same beat: the old note is retracted before the new one
        // is pushed (the audio side would otherwise take the new one for the old).
        o.add(4, 60, 90, 3.0, 4.0);
        drain(&mut o, 3.0);
        o.add(4, 60, 80, 3.0, 3.5);
        let got = events(&mut o, 3.0);
        assert_eq!(got[0], retraction(4, 60, 3.0));
        assert!(
            matches!(got[1], Event::Note(n) if n.on && n.velocity == 80),
            "{got:?}"
        );
    }

    /// A key struck again less than the shortest note after a pushed note's start: the old
    /// note-off (at its start plus the shortest note) goes first and the new note-on follows
    /// it, so the old note-off cannot end the new note; a note not pushed yet just ends.
    #[test]
    fn a_restrike_within_the_shortest_note_follows_the_old_note_off() {
        let mut o = Outbox::new(0, 0);
        o.add(4, 60, 90, 1.0, 2.0);
        drain(&mut o, 1.0);
        o.add(4, 60, 90, 1.003, 1.5);
        let min_end = 1.0 + MIN_NOTE_BEATS;
        assert_eq!(
            drain(&mut o, 10.0),
            [(min_end, false, 60), (min_end, true, 60), (1.5, false, 60)]
        );
        // Not pushed: the old note ends where the new one starts.
        o.add(4, 62, 90, 3.0, 4.0);
        o.add(4, 62, 90, 3.003, 3.5);
        assert_eq!(
            drain(&mut o, 10.0),
            [
                (3.0, true, 62),
                (3.003, false, 62),
                (3.003, true, 62),
                (3.5, false, 62)
            ]
        );
        // A new note shorter than the wait still lasts the shortest note.
        o.add(4, 64, 90, 5.0, 6.0);
        drain(&mut o, 5.0);
        o.add(4, 64, 90, 5.001, 5.002);
        let got = drain(&mut o, 10.0);
        assert_eq!(got[1], (5.0 + MIN_NOTE_BEATS, true, 64), "{got:?}");
        assert_eq!(got[2], (5.0 + 2.0 * MIN_NOTE_BEATS, false, 64), "{got:?}");
    }

    /// A retraction the ring refused survives a relocation, naming the note-on as it was
    /// pushed; the session's end retracts what it pushed that has not started.
    #[test]
    fn retractions_survive_a_relocation_and_end_the_session() {
        let mut o = Outbox::new(2, 0);
        o.add(4, 60, 90, 1.0, 2.0);
        drain(&mut o, 1.0);
        o.cut(60, 1.0);
        o.pump(10.0, |_| false);
        o.relocate(8.0, 1);
        assert_eq!(events(&mut o, 0.0), [retraction(4, 60, 1.0)]);
        assert!(o.is_empty());
        let mut o = Outbox::new(2, 0);
        o.add(4, 62, 90, 9.0, 9.7);
        o.add(4, 64, 90, 9.5, 10.0);
        o.add(4, 65, 90, 9.6, 10.0);
        drain(&mut o, 9.5);
        let mut got = Vec::new();
        o.release_all(9.5, |e| {
            got.push(e);
            true
        });
        assert_eq!(got, [retraction(4, 64, 9.5), note(false, 62, 9.5)]);
        assert!(o.is_empty());
    }

    #[test]
    fn events_go_out_in_order_and_cuts_never_leave_a_key_down() {
        let mut o = Outbox::new(1, 0);
        o.add(3, 48, 90, 1.0, 2.0);
        o.add(3, 52, 90, 1.5, 3.0);
        o.add(3, 48, 90, 2.0, 2.5); // re-strike: the first 48 ends at 2.0
        assert_eq!(drain(&mut o, 0.9), []);
        assert_eq!(
            drain(&mut o, 2.0),
            [
                (1.0, true, 48),
                (1.5, true, 52),
                (2.0, false, 48),
                (2.0, true, 48)
            ]
        );
        // The performer strikes 52 at 2.2: it stops there; 48 plays on.
        o.cut(52, 2.2);
        o.add(3, 55, 90, 2.4, 3.0);
        o.cut(55, 2.3); // not started: dropped whole
        assert_eq!(drain(&mut o, 10.0), [(2.2, false, 52), (2.5, false, 48)]);
        assert!(o.is_empty());
    }

    #[test]
    fn releasing_all_ends_what_sounds_and_drops_the_rest() {
        let mut o = Outbox::new(0, 0);
        o.add(1, 60, 90, 1.0, 8.0);
        o.add(1, 62, 90, 1.0, 1.5);
        o.add(1, 64, 90, 3.0, 4.0);
        drain(&mut o, 1.2);
        o.release_all(2.0, |_| false);
        assert_eq!(o.len(), 2, "refused note-offs stay");
        let mut got = Vec::new();
        o.release_all(2.0, |e| {
            let Event::Note(e) = e else { panic!("{e:?}") };
            got.push((e.beat, e.on, e.pitch));
            true
        });
        assert_eq!(got, [(1.5, false, 62), (2.0, false, 60)]);
        assert!(o.is_empty());
    }

    #[test]
    fn a_relocation_keeps_only_what_had_not_started() {
        let mut o = Outbox::new(0, 0);
        o.add(1, 60, 90, 1.0, 2.0);
        o.add(1, 62, 90, 3.0, 4.0);
        drain(&mut o, 1.5);
        o.relocate(10.0, 1);
        assert_eq!(drain(&mut o, 20.0), [(13.0, true, 62), (14.0, false, 62)]);
        let clock = BeatClock {
            origin_beat: 8.0,
            bpm: 120.0,
        };
        assert_eq!(clock.ms(10.0), 1000.0);
        assert_eq!(clock.beat(1000.0), 10.0);
    }
}
