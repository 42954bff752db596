//! Retractions on the audio side (`Event::Retract`): the live accompaniment takes back a
//! note-on it pushed when a `Cut` reaches it at or before its start. Driven through the real
//! rings with the engine's end fed by hand, as in `engine_audio.rs`.

mod audio_host;
mod engine_support;

use audio_host::{Host, assert_paired, generate};
use staria_engine::handover::RingSizes;
use staria_engine::messages::{Event, NoteEvent, Retraction};
use staria_engine::timing::TransportChange;
use std::sync::atomic::Ordering::Relaxed;

/// Samples per beat at the harness's 48 kHz and 120 bpm.
const SAMPLES_PER_BEAT: f64 = 24_000.0;

fn retract(h: &mut Host, request_id: u32, pitch: u8, beat: f64) {
    let r = Retraction {
        beat,
        request_id,
        pitch,
        channel: 0,
    };
    assert!(h.engine.push_event(Event::Retract(r)));
}

/// (`notes_retracted`, `retracted_after_playing`) from the status.
fn counts(h: &Host) -> (u64, u64) {
    let s = h.audio.status();
    (
        s.notes_retracted.load(Relaxed),
        s.retracted_after_playing.load(Relaxed),
    )
}

fn events_of(notes: &[(f64, NoteEvent)], pitch: u8) -> Vec<(f64, bool)> {
    notes
        .iter()
        .filter(|(_, e)| e.pitch == pitch)
        .map(|(s, e)| (*s, e.on))
        .collect()
}

/// A note-on still queued when its retraction comes never sounds: neither it nor its note-off
/// is emitted, and it leaves the memory; the notes around it (the same beat, the same request)
/// play as before.
#[test]
fn a_retracted_queued_note_emits_nothing() {
    let mut h = Host::new(RingSizes::default());
    h.note(1, true, 60, 1.0);
    h.note(1, false, 60, 2.0);
    h.note(1, true, 62, 1.0);
    h.note(1, false, 62, 2.0);
    h.run_until(0.5);
    assert_eq!((h.audio.staged_len(), h.audio.remembered_len()), (4, 4));
    retract(&mut h, 1, 60, 1.0);
    h.block();
    assert_eq!((h.audio.staged_len(), h.audio.remembered_len()), (2, 2));
    assert_eq!(counts(&h), (1, 0));
    h.run_until(3.0);
    let notes = h.notes();
    assert_eq!(events_of(&notes, 60), []);
    assert_eq!(
        events_of(&notes, 62),
        [(SAMPLES_PER_BEAT, true), (2.0 * SAMPLES_PER_BEAT, false)]
    );
    assert_paired(&notes);
}

/// The race the engine cannot see: the audio thread played the note-on before the retraction
/// came. The note is released at the first sample of the block that receives it (no later
/// than the note-off at the note's start plus a 128th of a beat the engine used to send
/// instead, which would have come in the same block, late), and the key is free: the next
/// note on it plays and ends.
#[test]
fn a_retraction_after_the_note_played_releases_it_at_the_block_start() {
    let mut h = Host::new(RingSizes::default());
    h.note(1, true, 60, 1.0);
    h.run_until(1.05);
    assert!(h.audio.is_sounding(0, 60));
    retract(&mut h, 1, 60, 1.0);
    let block_start = h.sample_clock;
    h.block();
    assert!(!h.audio.is_sounding(0, 60));
    assert_eq!(h.audio.sounding_count(), 0);
    assert_eq!(counts(&h), (0, 1));
    let notes = h.notes();
    assert_eq!(
        events_of(&notes, 60),
        [(SAMPLES_PER_BEAT, true), (block_start, false)]
    );
    assert_eq!(h.audio.remembered_len(), 0);
    // The key plays again.
    h.note(1, true, 60, 1.5);
    h.note(1, false, 60, 1.75);
    h.run_until(2.0);
    let again = &events_of(&h.notes(), 60)[2..];
    assert_eq!(
        again,
        [
            (1.5 * SAMPLES_PER_BEAT, true),
            (1.75 * SAMPLES_PER_BEAT, false)
        ]
    );
    assert_paired(&h.notes());
}

/// A retraction names one note: an earlier note of the same request on the same key, still
/// sounding when the retracted one was due to strike, plays to its own note-off.
#[test]
fn a_retraction_leaves_the_keys_earlier_note_alone() {
    let mut h = Host::new(RingSizes::default());
    h.note(1, true, 64, 1.0);
    h.note(1, false, 64, 2.0);
    h.note(1, true, 64, 2.0);
    h.run_until(1.5);
    retract(&mut h, 1, 64, 2.0);
    h.run_until(3.0);
    assert_eq!(
        events_of(&h.notes(), 64),
        [(SAMPLES_PER_BEAT, true), (2.0 * SAMPLES_PER_BEAT, false)]
    );
    assert_paired(&h.notes());
}

/// Retractions of notes the audio side does not hold (another beat, pitch, channel or
/// request than a sounding note's, while a newer request's cut is pending) change nothing:
/// the output, the queue and the memory are those of the same run without them.
#[test]
fn a_retraction_of_an_unknown_note_does_nothing() {
    let play = |with_retractions: bool| {
        let mut h = Host::new(RingSizes::default());
        h.note(1, true, 60, 0.5);
        h.note(1, false, 60, 0.75);
        h.note(1, true, 62, 1.0);
        h.note(1, false, 62, 1.5);
        h.note(1, true, 67, 2.5); // after request 2's start: never plays
        h.run_until(0.9);
        assert!(h.audio.send(generate(2, 2.0)));
        h.note(2, true, 64, 2.0);
        h.note(2, false, 64, 3.0);
        h.run_until(1.2);
        if with_retractions {
            for (request, pitch, beat) in [(1, 62, 1.01), (1, 61, 1.0), (2, 62, 1.0), (9, 1, 7.0)] {
                retract(&mut h, request, pitch, beat);
            }
            let r = Retraction {
                beat: 1.0,
                request_id: 1,
                pitch: 62,
                channel: 3,
            };
            assert!(h.engine.push_event(Event::Retract(r)));
        }
        h.block();
        assert_eq!(counts(&h), (0, 0));
        let held = (h.audio.staged_len(), h.audio.remembered_len());
        h.run_until(4.0);
        (h.out, held)
    };
    let (plain, held) = play(false);
    assert_eq!(play(true), (plain.clone(), held));
    let notes: Vec<NoteEvent> = plain
        .iter()
        .filter_map(|(_, e)| {
            if let Event::Note(n) = e {
                Some(*n)
            } else {
                None
            }
        })
        .collect();
    assert_eq!(notes.iter().filter(|n| n.on).count(), 3);
    engine_support::assert_paired(&notes);
}

/// A loop back after a retraction does not bring the note back from the audio side's memory,
/// whether the retraction was drained before the relocation or was still in the ring when it
/// came (flushed with it); the rest of the request is queued again and plays.
#[test]
fn a_relocation_after_a_retraction_does_not_replay_it() {
    let mut h = Host::new(RingSizes::default());
    h.note(1, true, 60, 1.0);
    h.note(1, false, 60, 2.0);
    h.note(1, true, 62, 1.5);
    h.note(1, true, 65, 1.5);
    h.run_until(1.2);
    retract(&mut h, 1, 62, 1.5);
    h.block();
    retract(&mut h, 1, 65, 1.5);
    h.pos = 0.0;
    assert_eq!(h.block(), TransportChange::Jumped);
    assert_eq!(h.audio.remembered_len(), 2);
    h.run_until(3.0);
    let notes = h.notes();
    let ons: Vec<u8> = notes
        .iter()
        .filter(|(_, e)| e.on)
        .map(|(_, e)| e.pitch)
        .collect();
    assert_eq!(ons, [60, 60], "{notes:?}");
    assert_paired(&notes);
}
