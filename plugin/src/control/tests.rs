use super::*;
use crate::Staria;
use crate::gui_state::GuiShared;
use crate::keyswitch::{self, KeyAction};
use crate::snippets;
use crate::timeline::{HostReport, Timeline};
fn playing_grid() -> Timeline {
    Timeline::from_host(HostReport {
        playing: true,
        tempo: Some(120.0),
        time_sig: (Some(4), Some(4)),
        pos_beats: Some(4.0),
        pos_seconds: Some(2.0),
        bar_start_beats: Some(4.0),
        samples: 512,
        sample_rate: 48_000.0,
    })
}

/// More notes than a snippet holds: the first ones are kept and the overflow is published
/// for the status (never dropped silently).
#[test]
fn an_overflowing_capture_keeps_the_first_notes_and_says_so() {
    let mut plugin = Staria::default();
    let grid = playing_grid();
    assert_eq!(plugin.gui.capture_overflow(), None);
    plugin.live.recorder.arm(SectionLabel::B);
    let extra = 37;
    for i in 0..snippets::MAX_SNIPPET_NOTES + extra {
        let key = 40 + (i % 40) as u8;
        plugin.handle_input(Event::from_midi(0, &[0x90, key, 90]).unwrap(), &grid, false);
        plugin.handle_input(Event::from_midi(0, &[0x80, key, 0]).unwrap(), &grid, false);
    }
    plugin.finish_capture(12.0, &grid);
    let overflow = plugin
        .gui
        .capture_overflow()
        .expect("the overflow is published");
    assert_eq!(overflow.section, SectionLabel::B);
    assert_eq!(overflow.dropped, extra as u32);
    let notice = overflow.notice();
    assert!(
        notice.contains("section B") && notice.contains("37"),
        "{notice}"
    );
    let saved = plugin.params.snippets.snapshot();
    let b = saved.get(SectionLabel::B).expect("B was captured");
    assert_eq!(b.notes.len(), snippets::MAX_SNIPPET_NOTES);
    // A second capture that fits says nothing new.
    plugin.live.recorder.arm(SectionLabel::C);
    plugin.handle_input(Event::from_midi(0, &[0x90, 60, 90]).unwrap(), &grid, false);
    plugin.finish_capture(16.0, &grid);
    assert_eq!(plugin.gui.capture_overflow(), Some(overflow));
}

/// Raw MIDI with data bytes above 127 (nice-plug passes them on as they come) is dropped or
/// clamped on the whole input path: recording (with the pedal down), keyswitches and
/// pass-through; nothing panics and nothing out of range reaches the output.
#[test]
fn malformed_midi_data_bytes_are_ignored() {
    let mut plugin = Staria::default();
    let grid = playing_grid();
    plugin.live.recorder.arm(SectionLabel::A);
    let raw: &[[u8; 3]] = &[
        [0x90, 200, 100], // note on, key 200
        [0x90, 128, 255], // note on, key 128, velocity 255
        [0xB0, 64, 127],  // pedal down (valid)
        [0x80, 200, 0],   // note off, key 200
        [0x90, 0, 0],     // note off (velocity 0), key 0 (valid)
        [0x90, 255, 0],   // note off (velocity 0), key 255
        [0xA0, 200, 200], // poly pressure, key 200
        [0xB0, 200, 10],  // CC 200
        [0xB0, 64, 200],  // pedal with value 200
        [0xB0, 64, 0],    // pedal up (valid)
        [0xE0, 255, 255], // pitch bend, both bytes out of range
        [0xC0, 200, 0],   // program 200
        [0xD0, 255, 0],   // channel pressure 255
        [0x90, 60, 200],  // valid key, velocity 200
        [0x80, 60, 0],    // its note-off
    ];
    for bytes in raw {
        let ev = Event::from_midi(0, bytes).expect("a channel message");
        plugin.handle_input(ev, &grid, false);
    }
    let out = plugin.live.out.as_slice();
    for ev in out {
        match *ev {
            NoteEvent::NoteOn { key, velocity, .. } | NoteEvent::NoteOff { key, velocity, .. } => {
                assert!(key.number().is_some_and(|k| k <= 127), "{ev:?}");
                assert!((0.0..=1.0).contains(&velocity), "{ev:?}");
            }
            NoteEvent::PolyPressure { .. } => panic!("malformed poly pressure passed"),
            NoteEvent::MidiCC { cc, value, .. } => {
                assert!(cc <= 127 && (0.0..=1.0).contains(&value), "{ev:?}")
            }
            NoteEvent::MidiPitchBend { value, .. }
            | NoteEvent::MidiChannelPressure {
                pressure: value, ..
            } => assert!((0.0..=1.0).contains(&value), "{ev:?}"),
            NoteEvent::MidiProgramChange { .. } => panic!("program 200 passed"),
            _ => {}
        }
    }
    // The valid note (60) passed through, on and off; nothing is left sounding.
    let sixty = out
        .iter()
        .filter(|e| {
            matches!(
                e,
                NoteEvent::NoteOn {
                    key: Key::Number(60),
                    ..
                } | NoteEvent::NoteOff {
                    key: Key::Number(60),
                    ..
                }
            )
        })
        .count();
    assert_eq!(sixty, 2);
    assert_eq!(plugin.live.thru.count(), 0);
    // The capture kept only the valid note.
    assert!(!plugin.live.recorder.is_held(60));
    assert!(plugin.live.recorder.has_notes());
}

fn note_on(key: u8) -> Event {
    NoteEvent::NoteOn {
        timing: 0,
        voice_id: VoiceID::Wildcard,
        channel: Channel::Number(0),
        key: Key::Number(key),
        velocity: 0.8,
    }
}

/// On an 88-key keyboard (A0..C8) the default keyswitches are its lowest whole octave,
/// C1..B1: playable, consumed, with *clear* on B1 rather than at the keyboard's edge. The
/// keys below (A0, A#0, B0) and above sound as played.
#[test]
fn default_keyswitches_are_c1_to_b1_on_an_88_key_piano() {
    let mut plugin = Staria::default();
    let grid = playing_grid();
    for key in (21..=23).chain(36..=108) {
        plugin.live.out.clear();
        plugin.handle_input(note_on(key), &grid, false);
        assert_eq!(
            plugin.live.out.len(),
            1,
            "piano key {key} did not pass through"
        );
        assert!(!plugin.live.consumed.is_on(0, key));
    }
    for key in 24..=35 {
        plugin.live.out.clear();
        plugin.handle_input(note_on(key), &grid, false);
        assert!(plugin.live.out.is_empty(), "keyswitch {key} passed through");
        assert!(plugin.live.consumed.is_on(0, key));
    }
    // C1 (24) is "record A", B1 (35) is clear.
    assert_eq!(
        keyswitch::action(24, 24),
        Some(KeyAction::ToggleRecord(SectionLabel::A))
    );
    assert_eq!(keyswitch::action(35, 24), Some(KeyAction::Clear));
}

#[test]
fn random_seeds_differ() {
    let mut live = Live::new(GuiShared::new().1);
    let a = live.next_seed();
    let b = live.next_seed();
    assert_ne!(a, b);
    assert_ne!(a, 0);
}
