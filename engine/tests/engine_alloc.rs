//! The audio side never allocates: a counting global allocator watches the calling thread while
//! it runs `send`, `process_block`/`pop_due` and `all_notes_off` over many blocks with a busy
//! queue, transport jumps, cuts, cancels and retractions. (Its own test binary: the allocator is
//! global.)

use staria_engine::handover::{RingSizes, Shared, link};
use staria_engine::messages::{Command, Event, Form, NoteEvent, Outcome, Retraction, Target};
use staria_engine::timing::TransportFrame;
use staria_engine::{Engine, EngineConfig, SectionLabel};
use staria_test_support::{CountingAlloc, count_allocs};
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

#[global_allocator]
static GLOBAL: CountingAlloc = CountingAlloc;

/// Runs `f` on this thread, adding the allocator calls it made to `total`.
fn watched<R>(total: &mut usize, f: impl FnOnce() -> R) -> R {
    let (r, calls) = count_allocs(f);
    *total += calls;
    r
}

#[test]
fn audio_side_never_allocates() {
    let (mut audio, mut engine) = link(
        RingSizes {
            commands: 64,
            events: 1024,
        },
        Arc::new(Shared::default()),
    );
    // Sanity: the counter does see allocations on this thread.
    let mut allocs = 0;
    watched(&mut allocs, || drop(std::hint::black_box(vec![1u8; 16])));
    assert!(allocs > 0);
    allocs = 0;

    let mut pos = 0.0f64;
    let mut emitted = 0usize;
    let mut sounding_after_stop = 0usize;
    let mut request = 1u32;
    // The last batch's notes, as the engine takes them back: (beat, pitch, channel).
    let mut batch = [(0.0f64, 0u8, 0u8); 16];
    for block in 0..4000u32 {
        // The engine's side (not watched): keep the queue busy with one request's notes.
        if block % 8 == 0 {
            let epoch = audio.epoch();
            for i in 0..16u32 {
                let beat = pos + 0.05 + i as f64 * 0.1;
                let pitch = 40 + ((block / 8 + i) % 48) as u8;
                batch[i as usize] = (beat, pitch, (i % 3) as u8);
                for (on, b) in [(true, beat), (false, beat + 0.35)] {
                    let ev = NoteEvent {
                        beat: b,
                        request_id: request,
                        epoch,
                        on,
                        pitch,
                        velocity: 90,
                        channel: (i % 3) as u8,
                    };
                    let _ = engine.push_event(Event::Note(ev));
                }
            }
        }
        if block % 8 == 5 {
            // Retractions: one that has sounded by now (released), one still queued (dropped),
            // and one the audio side does not hold.
            for (beat, pitch, channel) in [batch[0], batch[9], (pos + 9.0, 1, 15)] {
                let _ = engine.push_event(Event::Retract(Retraction {
                    beat,
                    request_id: request,
                    pitch,
                    channel,
                }));
            }
        }
        if block % 500 == 250 {
            let _ = engine.push_event(Event::RequestDone {
                request_id: request,
                outcome: Outcome::Failed,
            });
        }
        // Host transport: a loop back every 1000 blocks, a stop/start every 1500.
        let playing = block % 1500 != 1499;
        if block % 1000 == 999 {
            pos = 0.0;
        }
        let frame = TransportFrame {
            playing,
            pos_beats: pos,
            tempo_bpm: 100.0 + (block % 7) as f64,
            samples: 512,
            sample_rate: 48_000.0,
        };

        watched(&mut allocs, || {
            if block % 16 == 3 {
                audio.send(Command::CaptureNoteOn {
                    section: SectionLabel::A,
                    pitch: 60,
                    velocity: 100,
                    beat: pos,
                });
                audio.send(Command::CaptureNoteOff {
                    section: SectionLabel::A,
                    pitch: 60,
                    beat: pos + 0.01,
                });
            }
            if block % 200 == 100 {
                request = audio.next_request_id();
                audio.send(Command::Generate {
                    request_id: request,
                    target: Target::Section(SectionLabel::B),
                    bars: 4,
                    ts_num: 4,
                    ts_den: 4,
                    form: Form::from_labels(&[SectionLabel::A, SectionLabel::B])
                        .unwrap_or_default(),
                    start_beat: pos + 1.0,
                    seed: 7,
                });
            }
            if block % 300 == 150 {
                audio.send(Command::Cancel {
                    request_id: request,
                });
            }
            audio.process_block(&frame, |_, _| emitted += 1);
            // A live performer's key (the live modes' guard on the audio side).
            if block % 50 == 25 {
                let pitch = 48 + (block % 24) as u8;
                audio.performer_key(pitch, true, |_, _| emitted += 1);
                audio.send(Command::LiveNoteOn {
                    pitch,
                    velocity: 90,
                    beat: pos,
                });
                audio.performer_key(pitch, false, |_, _| emitted += 1);
            }
            if block % 333 == 0 {
                audio.all_notes_off(|_, _| emitted += 1);
                sounding_after_stop += audio.sounding_count();
            }
        });
        // The engine drains commands (not watched).
        while engine.pop_command().is_some() {}
        pos = frame.block().end_beat;
    }
    assert_eq!(allocs, 0, "the audio side allocated");
    assert!(
        emitted > 1000,
        "the test should have exercised note output ({emitted} events)"
    );
    assert_eq!(sounding_after_stop, 0);
}

/// The same with a real engine thread generating from a tiny checkpoint on the other side.
#[test]
fn audio_side_never_allocates_with_a_live_engine() {
    let dir = tempfile::tempdir().unwrap();
    staria_test_support::tiny_checkpoint(dir.path(), "engine-test-tiny");
    let (mut audio, control) = Engine::spawn(EngineConfig {
        model_dir: Some(dir.path().into()),
        ..EngineConfig::default()
    })
    .unwrap();
    let deadline = Instant::now() + Duration::from_secs(60);
    while control.status().model_generation.load(Ordering::Relaxed) == 0 {
        assert!(Instant::now() < deadline, "{:?}", control.snapshot());
        std::thread::sleep(Duration::from_millis(5));
    }
    audio.late_tolerance_beats = f64::INFINITY;
    let mut allocs = 0;
    let mut pos = 0.0;
    let mut notes = 0usize;
    let mut outcomes = 0usize;
    for block in 0..3000u32 {
        let frame = TransportFrame {
            playing: true,
            pos_beats: pos,
            tempo_bpm: 120.0,
            samples: 512,
            sample_rate: 48_000.0,
        };
        watched(&mut allocs, || {
            if block % 400 == 1 {
                let request_id = audio.next_request_id();
                audio.send(Command::Generate {
                    request_id,
                    target: Target::Section(SectionLabel::A),
                    bars: 1,
                    ts_num: 4,
                    ts_den: 4,
                    form: Form::new(),
                    start_beat: pos.ceil() + 1.0,
                    seed: block as u64,
                });
            }
            audio.process_block(&frame, |_, ev| match ev {
                Event::Note(_) => notes += 1,
                // Finished, or Replaced when this faster-than-real-time host outruns generation.
                Event::RequestDone { .. } => outcomes += 1,
                Event::Retract(_) => unreachable!("the audio side emits no retraction"),
            });
        });
        pos = frame.block().end_beat;
        std::thread::sleep(Duration::from_micros(300));
    }
    assert_eq!(allocs, 0, "the audio side allocated");
    assert!(
        outcomes >= 3 && notes > 0,
        "{outcomes} request outcomes, {notes} note events"
    );
}
