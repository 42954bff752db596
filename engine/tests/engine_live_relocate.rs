//! A live session's notes across a transport jump or loop, and a key struck again within the
//! shortest note: the audio side (through the real rings, `audio_host::Host`) with the live
//! engine's outbox (`live::outbox::Outbox`) feeding it as `live::driver` does, block by block:
//! on a new epoch the outbox moves its notes by the playhead's jump, then it pushes what falls
//! due within the push window.
//!
//! What a musician expects: a jump or loop of the host's transport never replays the model's
//! notes already heard and leaves none hanging; the session's notes not yet sent go on from the
//! new position (those sent for the last few tens of ms before the jump are dropped).

mod audio_host;
mod engine_support;

use audio_host::{Host, assert_paired, generate};
use staria_engine::handover::RingSizes;
use staria_engine::live::LiveMode;
use staria_engine::live::outbox::Outbox;
use staria_engine::messages::{Command, NoteEvent};
use staria_engine::schedule::MIN_NOTE_BEATS;
use staria_engine::timing::TransportChange;

/// Samples per beat at the harness's 48 kHz and 120 bpm.
const SAMPLES_PER_BEAT: f64 = 24_000.0;
/// The engine's push window (beats): a few tens of ms.
const PUSH_AHEAD: f64 = 0.1;
const SESSION: u32 = 1;

/// The audio side and a live session's outbox.
struct Live {
    h: Host,
    outbox: Outbox,
    /// The playhead the outbox last followed (`LiveRun::last_playhead`).
    last_playhead: f64,
}

impl Live {
    fn start() -> Live {
        let mut h = Host::new(RingSizes::default());
        assert!(h.audio.send(Command::LiveStart {
            request_id: SESSION,
            mode: LiveMode::Accompany,
            origin_beat: 0.0,
            response_bars: 2,
            seed: 1,
            consonant: false,
        }));
        let outbox = Outbox::new(0, h.audio.epoch());
        Live {
            h,
            outbox,
            last_playhead: 0.0,
        }
    }

    /// The engine's turn (`LiveRun::pump`): follow a relocation, push what is due.
    fn pump(&mut self) {
        let t = self.h.engine.shared.transport.read();
        if t.epoch != self.outbox.epoch {
            self.outbox
                .relocate(t.playhead - self.last_playhead, t.epoch);
        }
        self.last_playhead = t.playhead;
        let link = &mut self.h.engine;
        self.outbox
            .pump(t.playhead + PUSH_AHEAD, |ev| link.push_event(ev));
    }

    fn block(&mut self) -> TransportChange {
        let change = self.h.block();
        self.pump();
        change
    }

    fn run_until(&mut self, beat: f64) {
        while self.h.pos < beat {
            self.block();
        }
    }

    /// The note-ons played from output sample `from` on: (beat on the output's clock, pitch).
    fn ons_from(&self, from: f64) -> Vec<(f64, u8)> {
        self.h
            .notes()
            .iter()
            .filter(|(s, e)| e.on && *s >= from)
            .map(|(s, e)| (*s / SAMPLES_PER_BEAT, e.pitch))
            .collect()
    }
}

/// A loop back from beat 2 to beat 0 in the middle of an accompaniment: nothing the session
/// played before the loop plays again (not the notes heard, not the note-on pushed just before
/// the wrap), nothing hangs, and the notes it had not sent yet play at their new beats.
/// Fails with the audio side re-queueing its memory of the session's events: 60, 62, 64, 65
/// and 67 sound again and 67 hangs.
#[test]
fn a_loop_back_never_replays_the_sessions_notes_or_leaves_one_hanging() {
    let mut l = Live::start();
    for (pitch, start, end) in [
        (60, 0.5, 1.0),
        (62, 1.0, 1.5),
        (64, 1.5, 2.0),
        (65, 2.0, 2.5),
        (67, 2.06, 2.5),
        (69, 2.5, 3.0),
    ] {
        l.outbox.add(SESSION, pitch, 90, start, end);
    }
    l.pump();
    l.run_until(2.02);
    // 65 sounds, 67 is pushed (queued), 69 waits in the outbox.
    assert!(l.h.audio.is_sounding(0, 65));
    assert!(l.h.audio.staged_len() > 0);
    let wrap_sample = l.h.sample_clock;
    // The engine moves its notes by the playhead's change since it last looked.
    let jumped_from = l.last_playhead;
    l.h.pos = 0.0;
    assert_eq!(l.block(), TransportChange::Jumped);
    l.run_until(1.0);
    let ons = l.ons_from(wrap_sample);
    // 69 moved with the time line: 2.5 - jumped_from after the wrap.
    let expected = wrap_sample / SAMPLES_PER_BEAT + 2.5 - jumped_from;
    assert_eq!(ons.len(), 1, "replayed after the loop: {ons:?}");
    assert_eq!(ons[0].1, 69, "{ons:?}");
    assert!((ons[0].0 - expected).abs() < 1e-6, "{ons:?} vs {expected}");
    assert_eq!(l.h.audio.sounding_count(), 0);
    assert_eq!(l.h.audio.staged_len(), 0);
    assert_eq!(l.h.audio.remembered_len(), 0);
    assert!(l.outbox.is_empty());
    assert_paired(&l.h.notes());
}

/// A jump forward while a note is sounding and the next one is pushed: the sounding note is
/// released at the jump, the pushed one never plays, nothing hangs, the rest goes on.
#[test]
fn a_jump_forward_releases_the_sounding_note_and_drops_the_pushed_one() {
    let mut l = Live::start();
    l.outbox.add(SESSION, 60, 90, 0.5, 1.5);
    l.outbox.add(SESSION, 62, 90, 1.05, 1.5);
    l.outbox.add(SESSION, 64, 90, 1.5, 2.0);
    l.pump();
    l.run_until(1.0);
    let jump_sample = l.h.sample_clock;
    let jumped_from = l.last_playhead;
    l.h.pos = 16.0;
    assert_eq!(l.block(), TransportChange::Jumped);
    l.run_until(17.5);
    let notes = l.h.notes();
    let after: Vec<(f64, bool, u8)> = notes
        .iter()
        .filter(|(s, _)| *s >= jump_sample)
        .map(|(s, e)| (*s, e.on, e.pitch))
        .collect();
    let at_64 = (jump_sample + (1.5 - jumped_from) * SAMPLES_PER_BEAT).round();
    assert_eq!(after[0], (jump_sample, false, 60), "{after:?}");
    assert_eq!(
        after[1..],
        [
            (at_64, true, 64),
            (at_64 + 0.5 * SAMPLES_PER_BEAT, false, 64)
        ]
    );
    assert_paired(&notes);
}

/// A section request after the session is remembered again (a loop replays it from the
/// audio side's memory), while the session's notes before it are not.
#[test]
fn a_section_request_after_the_session_is_remembered_again() {
    let mut l = Live::start();
    l.outbox.add(SESSION, 60, 90, 0.5, 1.0);
    l.pump();
    l.run_until(0.6);
    assert!(l.h.audio.send(generate(2, 1.0)));
    l.h.note(2, true, 72, 1.0);
    l.h.note(2, false, 72, 1.5);
    l.run_until(1.1);
    assert_eq!(l.h.audio.remembered_len(), 2);
    l.h.pos = 0.0;
    l.block();
    assert!(l.outbox.is_empty());
    l.h.run_until(1.6);
    let ons: Vec<u8> = l.ons_from(0.0).iter().map(|(_, p)| *p).collect();
    assert_eq!(ons, [60, 72, 72]);
    assert_paired(&l.h.notes());
}

/// The same request strikes a key again less than the shortest note after a note it pushed:
/// the new note sounds its whole length (the old note's note-off goes before its note-on)
/// instead of being ended by that note-off, and nothing hangs. Fails with the old note-off
/// kept after the new note-on: the new note lasts 1/128 - 0.003 beat.
#[test]
fn a_restrike_within_the_shortest_note_keeps_the_new_note_whole() {
    let mut l = Live::start();
    l.outbox.add(SESSION, 60, 90, 1.0, 2.0);
    l.pump();
    l.run_until(0.95);
    l.outbox.add(SESSION, 60, 80, 1.003, 1.5);
    l.pump();
    l.run_until(2.0);
    let notes: Vec<(f64, NoteEvent)> = l.h.notes();
    let timed: Vec<(f64, bool, u8)> = notes
        .iter()
        .map(|(s, e)| (*s / SAMPLES_PER_BEAT, e.on, e.velocity))
        .collect();
    let second_on = 1.0 + MIN_NOTE_BEATS;
    assert_eq!(timed.len(), 4, "{timed:?}");
    assert!(timed[2].1, "{timed:?}");
    assert_eq!(timed[2].2, 80, "{timed:?}");
    assert!((timed[2].0 - second_on).abs() < 1e-4, "{timed:?}");
    assert!((timed[3].0 - 1.5).abs() < 1e-4, "{timed:?}");
    assert_paired(&notes);
}
