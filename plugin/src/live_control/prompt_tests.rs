//! A snippet recorded (or cleared) during a live session keeps the session: the plugin sends
//! `Command::LivePrompt`, not a new `LiveStart` (issue 11); what the session started with
//! otherwise still starts it again.

use super::tests::{frame, grid, set};
use super::*;
use crate::engine_host::EngineHost;
use crate::keyswitch::KeyAction;
use crate::midi_out::Event;
use nice_plug::prelude::Param;
use staria_models::SectionLabel;
use std::sync::atomic::Ordering::Relaxed;

/// A plugin in `mode` (1: call and response, 2: accompany) with a running engine that reports
/// a model loaded, whose first block started the session.
fn live_plugin(mode: f32) -> Staria {
    let mut p = Staria::default();
    p.engine = Some(EngineHost::start(p.params.clone(), p.gui.clone()).unwrap());
    set(p.params.mode.as_ptr(), mode);
    let engine = p.engine.as_ref().unwrap();
    engine.audio.status().model_generation.store(1, Relaxed);
    block(&mut p, 8.0);
    assert!(p.live.live_modes.running.is_some(), "the session started");
    p
}

fn block(p: &mut Staria, beat: f64) {
    let mode = p.live_mode_wanted();
    p.live.live_modes.frame(&frame(true, beat), mode);
    p.step_live(4.0);
}

/// Records section B from `beat` for a beat: two notes, which the session hears too.
fn record_b(p: &mut Staria, beat: f64) {
    let g = grid(beat);
    p.perform(KeyAction::ToggleRecord(SectionLabel::B), beat, &g);
    for key in [60u8, 64] {
        p.handle_input(Event::from_midi(0, &[0x90, key, 90]).unwrap(), &g, false);
        p.handle_input(Event::from_midi(0, &[0x80, key, 0]).unwrap(), &g, false);
    }
    p.perform(
        KeyAction::ToggleRecord(SectionLabel::B),
        beat + 1.0,
        &grid(beat + 1.0),
    );
}

#[test]
fn a_snippet_recorded_while_accompanying_changes_the_prompt_not_the_session() {
    let mut p = live_plugin(2.0);
    assert_eq!(p.live_mode_wanted(), Some(LiveMode::Accompany));
    let session = p.live.live_modes.session_id;
    let snippets = p.live.live_modes.snippets;
    record_b(&mut p, 8.0);
    assert_eq!(p.live.live_modes.snippets, snippets + 1, "B was captured");
    block(&mut p, 9.0);
    let lm = &p.live.live_modes;
    assert_eq!(lm.session_id, session, "the session was started again");
    assert_eq!(lm.prompt_changes, 1);
    assert_eq!(lm.running.map(|k| k.snippets), Some(snippets + 1));
    // Nothing more to send until something changes.
    block(&mut p, 9.1);
    assert_eq!(p.live.live_modes.prompt_changes, 1);
    // Clearing the snippet is a prompt change too.
    p.clear_section(SectionLabel::B);
    block(&mut p, 9.2);
    assert_eq!(p.live.live_modes.prompt_changes, 2);
    assert_eq!(p.live.live_modes.session_id, session);
    // The accompaniment's channel is what the session plays on: that starts it again.
    set(p.params.acc_channel.as_ptr(), 5.0);
    block(&mut p, 9.3);
    assert_ne!(p.live.live_modes.session_id, session, "not started again");
    assert_eq!(p.live.live_modes.prompt_changes, 0, "a new session's count");
}

/// Call and response: the answer under way stays the plugin's (the engine finishes it before
/// the new prompt); the session is not started again.
#[test]
fn a_snippet_recorded_during_an_answer_keeps_the_answer() {
    let mut p = live_plugin(1.0);
    assert_eq!(p.live_mode_wanted(), Some(LiveMode::Respond));
    let session = p.live.live_modes.session_id;
    p.live_handover(8.0);
    let answer = p.live.live_modes.answer;
    assert_ne!(answer, 0);
    // The snippet is recorded by the performer (the note-on cancels the answer) or, as here,
    // restored or finished while the answer plays: a finished capture with no note played.
    p.live.live_modes.snippets += 1;
    block(&mut p, 8.5);
    let lm = &p.live.live_modes;
    assert_eq!((lm.session_id, lm.answer), (session, answer));
    assert_eq!(lm.prompt_changes, 1);
    // A mode change still starts a new session.
    set(p.params.mode.as_ptr(), 2.0);
    block(&mut p, 8.6);
    assert_ne!(p.live.live_modes.session_id, session);
    assert_eq!(p.live.live_modes.prompt_changes, 0);
}

/// The window shows the notes the running session took back: the engine's retraction
/// counters since the session's `LiveStart` (before playing and after, together; and those
/// after), not what earlier sessions counted.
#[test]
fn the_window_counts_the_sessions_own_retractions() {
    let bump = |p: &Staria, before: u64, after: u64| {
        let s = p.engine.as_ref().unwrap().audio.status();
        s.notes_retracted.fetch_add(before, Relaxed);
        s.retracted_after_playing.fetch_add(after, Relaxed);
    };
    let shown = |p: &mut Staria| {
        p.end_live_block();
        let v = p.gui.view();
        (v.live_retracted, v.live_retracted_playing)
    };
    let mut p = live_plugin(2.0);
    assert_eq!(shown(&mut p), (0, 0));
    bump(&p, 3, 1);
    block(&mut p, 8.1);
    assert_eq!(shown(&mut p), (4, 1));
    // A new session starts from nothing.
    set(p.params.acc_channel.as_ptr(), 5.0);
    block(&mut p, 8.2);
    assert_eq!(shown(&mut p), (0, 0));
    bump(&p, 1, 0);
    block(&mut p, 8.3);
    assert_eq!(shown(&mut p), (1, 0));
}
