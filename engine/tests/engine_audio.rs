//! The audio side of the handover, driven through the real rings: the engine's end is fed by
//! hand (these parts need no model).

mod audio_host;
mod engine_support;

use audio_host::{BLOCK, Host, assert_paired, generate};
use staria_engine::SectionLabel;
use staria_engine::handover::RingSizes;
use staria_engine::messages::{Command, Event, NoteEvent, Outcome};
use staria_engine::timing::TransportChange;

#[test]
fn message_sizes_stay_small() {
    assert!(
        std::mem::size_of::<Command>() <= 32,
        "Command is {} bytes",
        std::mem::size_of::<Command>()
    );
    assert!(
        std::mem::size_of::<Event>() <= 32,
        "Event is {} bytes",
        std::mem::size_of::<Event>()
    );
    assert!(std::mem::size_of::<NoteEvent>() <= 24);
}

#[test]
fn full_rings_drop_newest_and_count() {
    let mut h = Host::new(RingSizes {
        commands: 4,
        events: 4,
    });
    let cmd = Command::ClearSection {
        section: SectionLabel::A,
    };
    let sent: Vec<bool> = (0..6).map(|_| h.audio.send(cmd)).collect();
    assert_eq!(sent, [true, true, true, true, false, false]);
    assert_eq!(
        h.audio
            .status()
            .dropped_commands
            .load(std::sync::atomic::Ordering::Relaxed),
        2
    );
    // The engine reads the four that fit, in order, and nothing else.
    let mut n = 0;
    while let Some(c) = h.engine.pop_command() {
        assert_eq!(c, cmd);
        n += 1;
    }
    assert_eq!(n, 4);
    // The event ring refuses the fifth event without blocking.
    for i in 0..4 {
        h.note(1, true, 60 + i, 10.0);
    }
    let ev = NoteEvent {
        beat: 10.0,
        request_id: 1,
        epoch: 0,
        on: true,
        pitch: 70,
        velocity: 1,
        channel: 0,
    };
    assert!(!h.engine.push_event(Event::Note(ev)));
}

#[test]
fn events_land_on_the_right_sample_across_blocks() {
    let mut h = Host::new(RingSizes::default());
    for (i, beat) in [0.5, 1.0, 1.0 + 1.0 / 48.0, 3.75].into_iter().enumerate() {
        h.note(1, true, 60 + i as u8, beat);
        h.note(1, false, 60 + i as u8, beat + 0.125);
    }
    h.run_until(4.0);
    let notes = h.notes();
    assert_eq!(notes.len(), 8);
    // 120 bpm at 48 kHz: a beat is 24000 samples.
    for (sample, e) in &notes {
        let expect = e.beat * 24_000.0;
        assert!(
            (sample - expect).abs() <= 1.0,
            "{e:?} at sample {sample}, expected {expect}"
        );
    }
    assert_paired(&notes);
    assert_eq!(h.audio.staged_len(), 0);
}

#[test]
fn later_events_wait_and_tempo_changes_apply() {
    let mut h = Host::new(RingSizes::default());
    h.note(1, true, 60, 2.0);
    h.note(1, false, 60, 6.0);
    h.run_until(1.0);
    assert!(h.notes().is_empty());
    assert_eq!(h.audio.staged_len(), 2);
    // Tempo halves from beat 1 on: beat 2 is 0.5 s + 1 s in, beat 6 is 0.5 s + 5 s in.
    let switch_sample = h.sample_clock;
    let switch_beat = h.pos;
    h.tempo = 60.0;
    h.run_until(7.0);
    let notes = h.notes();
    assert_eq!(notes.len(), 2);
    for (sample, e) in &notes {
        let expect = switch_sample + (e.beat - switch_beat) * 48_000.0;
        assert!(
            (sample - expect).abs() <= 1.0,
            "{e:?} at {sample}, expected {expect}"
        );
    }
    assert_eq!(h.audio.sounding_count(), 0);
}

#[test]
fn stop_releases_sounding_notes_and_flushes() {
    let mut h = Host::new(RingSizes::default());
    h.note(1, true, 60, 0.1);
    h.note(1, true, 64, 0.1);
    h.note(1, false, 60, 0.2);
    h.note(1, false, 64, 8.0);
    h.note(1, true, 67, 9.0);
    h.note(1, false, 67, 9.5);
    h.run_until(0.5);
    assert_eq!(h.audio.sounding_count(), 1);
    assert!(h.audio.is_sounding(0, 64));
    let epoch = h.audio.epoch();
    h.playing = false;
    assert_eq!(h.block(), TransportChange::Stopped);
    assert_eq!(h.audio.sounding_count(), 0);
    assert_ne!(h.audio.epoch(), epoch);
    let notes = h.notes();
    let last = notes.last().unwrap().1;
    assert!(!last.on && last.pitch == 64 && last.velocity == 0);
    assert_paired(&notes);
    // Played again from there: the rest of the request (67 at beat 9) is queued from memory
    // without the engine; events that arrive late under the old epoch are dropped.
    h.playing = true;
    assert_eq!(h.block(), TransportChange::Started);
    let stale = NoteEvent {
        beat: 9.0,
        request_id: 1,
        epoch,
        on: true,
        pitch: 70,
        velocity: 1,
        channel: 0,
    };
    assert!(h.engine.push_event(Event::Note(stale)));
    h.run_until(10.0);
    let ons: Vec<u8> = h
        .notes()
        .iter()
        .filter(|(_, e)| e.on)
        .map(|(_, e)| e.pitch)
        .collect();
    assert_eq!(ons, [60, 64, 67]);
    assert_paired(&h.notes());
}

#[test]
fn loop_jump_flushes_and_new_epoch_plays() {
    let mut h = Host::new(RingSizes::default());
    h.note(1, true, 60, 1.0);
    h.note(1, false, 60, 3.0);
    h.note(1, true, 62, 3.0);
    h.note(1, false, 62, 3.5);
    h.run_until(2.0);
    assert!(h.audio.is_sounding(0, 60));
    // The host loops back to beat 0: what sounded is released, and what the request has from
    // there on is queued again from memory.
    h.pos = 0.0;
    assert_eq!(h.block(), TransportChange::Jumped);
    assert_eq!(h.audio.sounding_count(), 0);
    assert_eq!(h.audio.staged_len(), 4);
    // The engine re-sends the same events under the new epoch: they are not doubled.
    h.note(1, true, 60, 1.0);
    h.note(1, false, 60, 3.0);
    h.note(1, true, 62, 3.0);
    h.note(1, false, 62, 3.5);
    h.run_until(4.0);
    let notes = h.notes();
    let ons: Vec<u8> = notes
        .iter()
        .filter(|(_, e)| e.on)
        .map(|(_, e)| e.pitch)
        .collect();
    assert_eq!(ons, [60, 60, 62]);
    assert_paired(&notes);
}

/// After a loop or a jump, the notes at the new playhead play on time although the engine
/// answers late (a prefill, a model step): the audio side queues what it has of the request from
/// there on. Before, they came a block late at best, and were dropped as late when the engine
/// took longer than the late tolerance.
#[test]
fn notes_at_the_new_playhead_play_on_time_while_the_engine_is_busy() {
    let mut h = Host::new(RingSizes::default());
    // Looping beats 0..4 with a note on the loop start's downbeat and one on beat 2.
    h.note(1, true, 60, 0.0);
    h.note(1, false, 60, 1.0);
    h.note(1, true, 64, 2.0);
    h.note(1, false, 64, 3.0);
    h.run_until(4.0 - 512.0 / 24_000.0);
    assert_eq!(h.notes().len(), 4);
    // The wrap; the engine sends nothing for a while.
    h.pos = 0.0;
    assert_eq!(h.block(), TransportChange::Jumped);
    let wrap_sample = h.sample_clock - BLOCK as f64;
    let on60 = h.notes()[4];
    assert!(on60.1.on && on60.1.pitch == 60);
    assert_eq!(
        on60.0, wrap_sample,
        "the loop start's note, at the wrap's first sample"
    );
    // A jump forward into the request, to beat 1.5: beat 2's note comes on time.
    h.pos = 1.5;
    assert_eq!(h.block(), TransportChange::Jumped);
    let jump_sample = h.sample_clock - BLOCK as f64;
    h.run_until(3.5);
    let on64 = h
        .notes()
        .into_iter()
        .rfind(|(_, e)| e.on && e.pitch == 64)
        .unwrap();
    assert!(
        (on64.0 - (jump_sample + 0.5 * 24_000.0)).abs() <= 1.0,
        "beat 2 at sample {} (jump at {jump_sample})",
        on64.0
    );
    assert_eq!(
        h.audio
            .status()
            .late_notes
            .load(std::sync::atomic::Ordering::Relaxed),
        0
    );
    // The engine's copies, when they come, are not played twice.
    h.note(1, true, 64, 2.0);
    h.note(1, false, 64, 3.0);
    h.run_until(4.0 - 512.0 / 24_000.0);
    assert_eq!(h.notes().iter().filter(|(_, e)| e.on).count(), 4);
    assert_paired(&h.notes());
}

/// A request for a loop's start asked for in the loop's last bar: the engine generates it at
/// once and sends its notes behind the playhead, before the wrap. They used to be dropped as
/// late, and re-sent only after the wrap, after the first block of the loop had played (the
/// downbeat's notes late or lost). Now they wait for the wrap and play on time.
#[test]
fn a_loop_start_requested_in_the_last_bar_plays_on_the_wrap() {
    let mut h = Host::new(RingSizes::default());
    // Looping beats 0..8; request 1 plays in the loop's last bar.
    h.note(1, true, 60, 4.5);
    h.note(1, false, 60, 5.5);
    h.run_until(5.0);
    assert!(h.audio.send(generate(2, 0.0)));
    // The engine's first notes of request 2, on the loop's downbeat, arrive before the wrap.
    h.note(2, true, 67, 0.0);
    h.note(2, false, 67, 1.0);
    h.note(2, true, 69, 1.0);
    h.note(2, false, 69, 1.5);
    h.run_until(8.0 - 512.0 / 24_000.0);
    let ons = |h: &Host| -> Vec<(u8, u32)> {
        h.notes()
            .iter()
            .filter(|(_, e)| e.on)
            .map(|(_, e)| (e.pitch, e.request_id))
            .collect()
    };
    assert_eq!(ons(&h), [(60, 1)], "request 2 waits for the wrap");
    assert_eq!(
        h.audio
            .status()
            .late_notes
            .load(std::sync::atomic::Ordering::Relaxed),
        0
    );
    h.pos = 0.0;
    assert_eq!(h.block(), TransportChange::Jumped);
    let wrap_sample = h.sample_clock - BLOCK as f64;
    h.run_until(2.0);
    assert_eq!(ons(&h), [(60, 1), (67, 2), (69, 2)]);
    let on67 = h
        .notes()
        .into_iter()
        .find(|(_, e)| e.on && e.pitch == 67)
        .unwrap();
    assert_eq!(on67.0, wrap_sample, "on the loop start's downbeat");
    // Request 1 is over: the next wrap plays only request 2.
    h.run_until(8.0 - 512.0 / 24_000.0);
    h.pos = 0.0;
    h.block();
    h.run_until(8.0 - 512.0 / 24_000.0);
    assert_eq!(ons(&h), [(60, 1), (67, 2), (69, 2), (67, 2), (69, 2)]);
    assert_paired(&h.notes());
}

/// A request for a loop's start, sent in the loop's last bar (its start is behind the playhead):
/// what plays now plays on until the transport wraps, and the new request plays from the loop
/// start after the wrap.
#[test]
fn a_request_for_the_loop_start_takes_over_at_the_wrap() {
    let mut h = Host::new(RingSizes::default());
    // Looping beats 0..8; request 1 plays in the loop's last bar (beats 4..8).
    h.note(1, true, 60, 4.5);
    h.note(1, false, 60, 5.5);
    h.note(1, true, 62, 6.0);
    h.note(1, false, 62, 7.5);
    h.run_until(5.0);
    assert!(h.audio.is_sounding(0, 60));
    // Triggered at beat 5: the next bar line (8) is never played; the loop start (0) is.
    assert!(h.audio.send(generate(2, 0.0)));
    h.run_until(8.0 - 512.0 / 24_000.0);
    let before: Vec<u8> = h
        .notes()
        .iter()
        .filter(|(_, e)| e.on)
        .map(|(_, e)| e.pitch)
        .collect();
    assert_eq!(before, [60, 62], "request 1 plays on to the loop end");
    // The wrap.
    h.pos = 0.0;
    assert_eq!(h.block(), TransportChange::Jumped);
    let wrap_sample = h.sample_clock - BLOCK as f64;
    // The engine re-times request 2 under the new epoch: its first note, on the loop start's
    // downbeat, arrives in time for the next block.
    h.note(2, true, 67, 0.25);
    h.note(2, false, 67, 1.0);
    h.run_until(2.0);
    let notes = h.notes();
    let on67 = notes
        .iter()
        .find(|(_, e)| e.pitch == 67 && e.on)
        .expect("67 plays");
    assert!((on67.0 - (wrap_sample + 0.25 * 24_000.0)).abs() <= 1.0);
    assert_paired(&notes);
}

#[test]
fn retrigger_and_stale_note_offs() {
    let mut h = Host::new(RingSizes::default());
    // Request 1 strikes 60 twice without a note-off in between: the audio side ends the first.
    h.note(1, true, 60, 0.1);
    h.note(1, true, 60, 0.2);
    // Request 2 takes key 64 over from request 1; request 1's later note-off must not end it.
    h.note(1, true, 64, 0.3);
    h.note(2, true, 64, 0.4);
    h.note(1, false, 64, 0.5);
    h.note(2, false, 64, 0.6);
    h.note(1, false, 60, 0.7);
    h.run_until(1.0);
    let notes = h.notes();
    let seq: Vec<(bool, u8, u32)> = notes
        .iter()
        .map(|(_, e)| (e.on, e.pitch, e.request_id))
        .collect();
    assert_eq!(
        seq,
        vec![
            (true, 60, 1),
            (false, 60, 1),
            (true, 60, 1),
            (true, 64, 1),
            (false, 64, 1),
            (true, 64, 2),
            (false, 64, 2),
            (false, 60, 1)
        ]
    );
    assert!((notes[6].1.beat - 0.6).abs() < 1e-9);
    assert_paired(&notes);
}

#[test]
fn new_request_cuts_the_old_one_at_its_start() {
    let mut h = Host::new(RingSizes::default());
    h.note(1, true, 60, 0.5);
    h.note(1, false, 60, 3.0);
    h.note(1, true, 62, 1.5);
    h.note(1, false, 62, 1.75);
    h.note(1, true, 64, 2.5); // after the new request's start: never plays
    h.run_until(1.0);
    assert!(h.audio.send(generate(2, 2.0)));
    h.note(1, false, 64, 2.75);
    h.note(2, true, 67, 2.0);
    h.note(2, false, 67, 2.5);
    h.run_until(4.0);
    let notes = h.notes();
    let ons: Vec<(u8, u32)> = notes
        .iter()
        .filter(|(_, e)| e.on)
        .map(|(_, e)| (e.pitch, e.request_id))
        .collect();
    assert_eq!(ons, vec![(60, 1), (62, 1), (67, 2)]);
    // 60 ends where request 2 starts, before 67 begins.
    let off60 = notes.iter().find(|(_, e)| e.pitch == 60 && !e.on).unwrap();
    assert!((off60.0 - 2.0 * 24_000.0).abs() <= 1.0);
    assert_paired(&notes);
}

#[test]
fn cancel_and_failure_silence_now() {
    let mut h = Host::new(RingSizes::default());
    h.note(3, true, 60, 0.25);
    h.note(3, false, 60, 5.0);
    h.note(3, true, 62, 2.0);
    h.note(3, false, 62, 2.5);
    h.run_until(1.0);
    assert!(h.audio.is_sounding(0, 60));
    assert!(h.audio.send(Command::Cancel { request_id: 3 }));
    h.block();
    assert_eq!(h.audio.sounding_count(), 0);
    h.run_until(6.0);
    let notes = h.notes();
    assert_eq!(notes.iter().filter(|(_, e)| e.on).count(), 1);
    assert_paired(&notes);

    // An engine-side failure does the same for the request it names.
    h.note(4, true, 65, 6.5);
    h.note(4, false, 65, 9.0);
    h.run_until(7.0);
    assert!(h.audio.is_sounding(0, 65));
    assert!(h.engine.push_event(Event::RequestDone {
        request_id: 4,
        outcome: Outcome::Failed
    }));
    h.block();
    assert_eq!(h.audio.sounding_count(), 0);
    assert!(h.out.iter().any(|(_, e)| matches!(
        e,
        Event::RequestDone {
            request_id: 4,
            outcome: Outcome::Failed
        }
    )));
    h.run_until(10.0);
    assert_paired(&h.notes());
}

/// *Stop playback* must work even when the command ring is full: the cut is recorded on the
/// audio side and the engine still learns of the cancel.
#[test]
fn cancel_with_a_full_command_ring_still_silences_and_reaches_the_engine() {
    let mut h = Host::new(RingSizes {
        commands: 4,
        events: 64,
    });
    assert!(h.audio.send(generate(3, 0.0)));
    h.note(3, true, 60, 0.25);
    h.note(3, false, 60, 5.0);
    h.note(3, true, 62, 2.0);
    h.note(3, false, 62, 2.5);
    h.run_until(1.0);
    assert!(h.audio.is_sounding(0, 60));
    // A capture burst fills the ring.
    let clear = Command::ClearSection {
        section: SectionLabel::A,
    };
    while h.audio.send(clear) {}
    let dropped = h
        .audio
        .status()
        .dropped_commands
        .load(std::sync::atomic::Ordering::Relaxed);
    assert!(h.audio.send(Command::Cancel { request_id: 3 }));
    // Not counted as dropped: it is not lost.
    assert_eq!(
        h.audio
            .status()
            .dropped_commands
            .load(std::sync::atomic::Ordering::Relaxed),
        dropped
    );
    h.block();
    assert_eq!(h.audio.sounding_count(), 0, "silenced now");
    h.run_until(6.0);
    let notes = h.notes();
    assert_eq!(
        notes.iter().filter(|(_, e)| e.on).count(),
        1,
        "62 never plays"
    );
    assert_paired(&notes);
    // The engine sees the cancel although the ring had no room for it.
    assert_eq!(h.engine.cancelled_upto(), 3);
    let mut queued = Vec::new();
    while let Some(c) = h.engine.pop_command() {
        queued.push(c);
    }
    assert!(!queued.is_empty());
    assert!(
        !queued.contains(&Command::Cancel { request_id: 3 }),
        "the ring was full"
    );
}

#[test]
fn late_note_ons_are_dropped_and_counted() {
    let mut h = Host::new(RingSizes::default());
    h.run_until(2.0);
    h.note(1, true, 60, 1.0); // a beat late: dropped
    h.note(1, false, 60, 1.5);
    h.note(1, true, 62, h.pos - 0.1); // slightly late: played at the block start
    h.note(1, false, 62, h.pos + 0.5);
    h.run_until(3.0);
    let notes = h.notes();
    assert_eq!(
        notes
            .iter()
            .filter(|(_, e)| e.on)
            .map(|(_, e)| e.pitch)
            .collect::<Vec<_>>(),
        vec![62]
    );
    assert_eq!(
        h.audio
            .status()
            .late_notes
            .load(std::sync::atomic::Ordering::Relaxed),
        1
    );
    assert_paired(&notes);
}

#[test]
fn stopped_transport_emits_no_notes_but_reports_outcomes() {
    let mut h = Host::new(RingSizes::default());
    h.playing = false;
    assert_eq!(h.block(), TransportChange::Stopped);
    h.note(1, true, 60, 0.0);
    h.note(1, false, 60, 0.5);
    assert!(h.engine.push_event(Event::RequestDone {
        request_id: 1,
        outcome: Outcome::Finished
    }));
    for _ in 0..10 {
        h.block();
    }
    assert!(h.notes().is_empty());
    assert_eq!(h.out.len(), 1);
    assert_eq!(h.audio.staged_len(), 2);
}

/// Live modes: a key the performer strikes is taken from the model at once (its sounding note
/// released in the same block, before the engine hears of it), the model's note-ons of that
/// key are skipped while it is held, and play again once it is released.
#[test]
fn the_performers_keys_are_never_sounded_by_the_model() {
    let mut h = Host::new(RingSizes::default());
    h.note(1, true, 48, 0.1);
    h.note(1, false, 48, 2.0);
    h.note(1, true, 52, 0.1);
    h.note(1, false, 52, 2.0);
    h.run_until(0.5);
    assert_eq!(h.audio.sounding_count(), 2);
    let mut released = Vec::new();
    h.audio.performer_key(48, true, |_, ev| released.push(ev));
    assert!(h.audio.performer_holds(48));
    assert!(
        matches!(
            released[..],
            [Event::Note(NoteEvent {
                on: false,
                pitch: 48,
                ..
            })]
        ),
        "{released:?}"
    );
    assert_eq!(h.audio.sounding_count(), 1);
    // Struck again by the model while the performer holds it: skipped.
    h.note(1, true, 48, 2.5);
    h.note(1, false, 48, 3.0);
    h.run_until(3.5);
    h.audio
        .performer_key(48, false, |_, _| panic!("a release emits nothing"));
    h.note(1, true, 48, 4.0);
    h.note(1, false, 48, 4.5);
    h.run_until(5.0);
    let notes = h.notes();
    let model_48: Vec<(bool, f64)> = notes
        .iter()
        .filter(|(_, e)| e.pitch == 48)
        .map(|(_, e)| (e.on, e.beat))
        .collect();
    assert_eq!(model_48, [(true, 0.1), (true, 4.0), (false, 4.5)]);
    assert_eq!(h.audio.sounding_count(), 0);
}
