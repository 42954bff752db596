//! The plugin side of the live modes in tests: hand-over gestures, silences, the live time line,
//! the window's phases; the helpers (`grid`, `frame`, `set`) serve `prompt_tests` too.

use super::*;
use crate::engine_host::EngineHost;
use crate::keyswitch::KeyAction;
use crate::midi_out::Event;
use crate::timeline::{HostReport, Timeline};
use nice_plug::prelude::{NoteEvent, Param};
use staria_models::SectionLabel;

/// A 4/4 bar grid at 120 bpm with the host playing at `beat`.
pub(super) fn grid(beat: f64) -> Timeline {
    Timeline::from_host(HostReport {
        playing: true,
        tempo: Some(120.0),
        time_sig: (Some(4), Some(4)),
        pos_beats: Some(beat),
        bar_start_beats: Some((beat / 4.0).floor() * 4.0),
        samples: 480,
        sample_rate: 48_000.0,
        ..HostReport::default()
    })
}

fn midi(bytes: [u8; 3]) -> Event {
    Event::from_midi(0, &bytes).unwrap()
}

/// A plugin in call and response with a running engine and a session taken as started
/// (requests go into the engine's ring; no model is needed for that).
fn responding_plugin() -> Staria {
    let mut p = Staria::default();
    p.engine = Some(EngineHost::start(p.params.clone(), p.gui.clone()).unwrap());
    set(p.params.mode.as_ptr(), 1.0);
    assert_eq!(p.live_mode_wanted(), Some(LiveMode::Respond));
    p.live
        .live_modes
        .frame(&frame(true, 8.0), Some(LiveMode::Respond));
    p.live.live_modes.running = Some(SessionKey {
        mode: LiveMode::Respond,
        response_bars: 2,
        channel: 0,
        low: 0,
        high: 0,
        consonant: false,
        model_generation: 0,
        snippets: 0,
    });
    p
}

fn answer_done(p: &mut Staria) {
    let answer = p.live.live_modes.answer;
    assert_ne!(answer, 0, "no answer under way");
    p.live.live_modes.on_event(&EngineEvent::RequestDone {
        request_id: answer,
        outcome: Outcome::Finished,
    });
}

/// The hand-over gestures: B0 and the soft pedal hand over (consumed), once per answer; the
/// performer's note passes through and ends the answer; section triggers do nothing; in
/// Sections B0 and CC 67 pass through.
#[test]
fn handover_gestures_and_what_passes_through() {
    let mut p = responding_plugin();
    let g = grid(8.0);
    p.handle_input(midi([0x90, 23, 100]), &g, false);
    p.handle_input(midi([0x80, 23, 0]), &g, false);
    assert_eq!(p.live.live_modes.handovers, 1);
    assert!(p.live.out.is_empty(), "B0 passed through");
    // A second gesture while the answer is generated is ignored.
    p.live_handover(8.2);
    assert_eq!(p.live.live_modes.handovers, 1);
    answer_done(&mut p);
    p.handle_input(midi([0xB0, 67, 127]), &g, false);
    assert_eq!(p.live.live_modes.handovers, 2);
    answer_done(&mut p);
    // Still down: no new press.
    p.handle_input(midi([0xB0, 67, 100]), &g, false);
    assert_eq!(p.live.live_modes.handovers, 2);
    p.handle_input(midi([0xB0, 67, 0]), &g, false);
    p.handle_input(midi([0xB0, 67, 127]), &g, false);
    assert_eq!(p.live.live_modes.handovers, 3);
    assert!(p.live.out.is_empty(), "CC 67 passed through");
    // The performer comes back: the answer ends, the note passes through.
    p.handle_input(midi([0x90, 60, 90]), &g, false);
    assert_eq!(p.live.live_modes.answer, 0);
    assert_eq!(p.live.out.len(), 1);
    // Section triggers do nothing in the live modes.
    p.perform(KeyAction::Play(SectionLabel::A), 8.0, &g);
    assert_eq!(p.live.last_request, 0);
    // Sections: B0 sounds, the soft pedal passes through, no handover.
    p.live.out.clear();
    p.live.live_modes.frame(&frame(true, 8.0), None);
    p.handle_input(midi([0x90, 23, 100]), &g, false);
    p.handle_input(midi([0xB0, 67, 127]), &g, false);
    assert_eq!(p.live.out.len(), 2);
    assert!(matches!(p.live.out.as_slice()[0], NoteEvent::NoteOn { .. }));
    assert_eq!(p.live.live_modes.handovers, 3);
}

/// A silence of *Handover silence* beats (2 by default) after a phrase hands over once.
#[test]
fn a_silence_hands_over_once_per_phrase() {
    let mut p = responding_plugin();
    p.handle_input(midi([0x90, 62, 90]), &grid(8.0), false);
    let mut beat = 8.0;
    let mut released = false;
    while beat < 14.0 {
        p.live
            .live_modes
            .frame(&frame(true, beat), Some(LiveMode::Respond));
        if !released && beat >= 8.5 {
            p.handle_input(midi([0x80, 62, 0]), &grid(beat), false);
            released = true;
        }
        p.step_live(4.0);
        let handovers = p.live.live_modes.handovers;
        let due = 8.5 + 2.0;
        assert_eq!(handovers, (beat >= due) as u64, "at beat {beat}");
        if handovers == 1 && p.live.live_modes.answer != 0 {
            answer_done(&mut p);
        }
        // Exact in binary: the sums compare exactly.
        beat += 1.0 / 64.0;
    }
}

/// Sets a parameter of the test's plugin to `plain`.
pub(super) fn set(ptr: nice_plug::prelude::ParamPtr, plain: f32) {
    // SAFETY: the pointers point into the test's plugin's parameters, alive for the test.
    unsafe { ptr._internal_set_normalized_value(ptr.preview_normalized(plain)) };
}

/// A 480-sample block at 48 kHz and 120 bpm from `pos`.
pub(super) fn frame(playing: bool, pos: f64) -> TransportFrame {
    TransportFrame {
        playing,
        pos_beats: pos,
        tempo_bpm: 120.0,
        samples: 480,
        sample_rate: 48_000.0,
    }
}

/// Live modes run on the audio clock when the host stops; Sections sees the host as it is.
#[test]
fn the_live_time_line_follows_the_host_then_the_audio_clock() {
    let mut lm = LiveModes::default();
    let f = lm.frame(&frame(true, 8.0), Some(LiveMode::Respond));
    assert_eq!(f, frame(true, 8.0));
    // 480 samples at 120 bpm, 48 kHz: 0.02 beat.
    assert!((lm.beat_at(240) - 8.01).abs() < 1e-12);
    let f = lm.frame(&frame(false, 8.0), Some(LiveMode::Respond));
    assert!(f.playing && (f.pos_beats - 8.02).abs() < 1e-12, "{f:?}");
    let f = lm.frame(&frame(false, 8.0), None);
    assert_eq!(f, frame(false, 8.0));
    assert_eq!(lm.mode(), None);
}

/// The window's light: listening, responding while an answer is generated or still sounds.
#[test]
fn phases() {
    let mut lm = LiveModes::default();
    assert_eq!(lm.phase(false), LivePhase::Off);
    lm.mode = Some(LiveMode::Respond);
    assert_eq!(lm.phase(false), LivePhase::Waiting);
    lm.running = Some(SessionKey {
        mode: LiveMode::Respond,
        response_bars: 2,
        channel: 0,
        low: 0,
        high: 0,
        consonant: false,
        model_generation: 1,
        snippets: 0,
    });
    lm.session_id = 3;
    assert_eq!(lm.phase(false), LivePhase::Listening);
    lm.answer = 4;
    lm.last_answer = 4;
    assert_eq!(lm.phase(false), LivePhase::Responding);
    lm.on_event(&EngineEvent::RequestDone {
        request_id: 4,
        outcome: Outcome::Finished,
    });
    assert_eq!(lm.answer, 0);
    assert_eq!(lm.phase(true), LivePhase::Responding, "its tail sounds");
    assert_eq!(lm.phase(false), LivePhase::Listening);
    // The engine refused the session: not started again with the same settings.
    let key = lm.running;
    lm.on_event(&EngineEvent::RequestDone {
        request_id: 3,
        outcome: Outcome::Failed,
    });
    assert_eq!((lm.running, lm.refused), (None, key));
    assert_eq!(lm.phase(false), LivePhase::Waiting);
    lm.mode = Some(LiveMode::Accompany);
    lm.running = key;
    assert_eq!(lm.phase(false), LivePhase::Accompanying);
}
