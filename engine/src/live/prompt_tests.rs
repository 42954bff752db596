//! Tests of a prompt change during a live session (`prompt` module) on a tiny untrained model:
//! the session goes on, what it heard stays in the cache after the new prompt, nothing is
//! handed out twice or left without its end, and an answer under way is finished first.

use super::sim::count_collisions;
use super::tests::{generator, note};
use super::*;
use crate::generate::{Generator, Snippets};
use staria_models::tokenizer::{StreamDecoder, StreamEvent};

fn snippet(pitches: &[u8]) -> Vec<staria_models::Note> {
    pitches
        .iter()
        .enumerate()
        .map(|(k, &pitch)| staria_models::Note {
            pitch,
            velocity: 80,
            channel: 0,
            program: 0,
            start_tick: 0,
            end_tick: 0,
            start_ms: k as f64 * 500.0,
            end_ms: k as f64 * 500.0 + 400.0,
        })
        .collect()
}

/// Section A captured before the session; `with_b`: section B recorded during it.
fn snippets(with_b: bool) -> Snippets {
    let mut s = Snippets::default();
    s.set(SectionLabel::A, snippet(&[60, 64, 67, 72]));
    if with_b {
        s.set(SectionLabel::B, snippet(&[62, 65, 69, 65, 62, 59]));
    }
    s
}

fn collect(events: &mut Vec<LiveEvent>) -> impl FnMut(LiveEvent) + '_ {
    |e| events.push(e)
}

fn played(events: &[LiveEvent]) -> Vec<TimedNote> {
    events
        .iter()
        .filter_map(|e| match e {
            LiveEvent::Play(n) => Some(*n),
            _ => None,
        })
        .collect()
}

/// The cache starts with the prompt built from `new` (built here, independently).
fn assert_prompt_is(g: &Generator, s: &LiveSession, new: &Snippets) {
    let (prompt, _) = prompt_of(g, new, &s.settings).unwrap();
    let cached = g.cached_tokens().unwrap();
    assert_eq!(&cached[..prompt.inline.len()], &prompt.inline[..]);
    assert_eq!(s.body_start, prompt.inline.len());
}

/// The notes (pitch, piece ms) the cache holds after the prompt.
fn cached_notes(g: &Generator, s: &LiveSession) -> Vec<(u8, f64)> {
    let tok = g.tokenizer().clone();
    let mut dec = StreamDecoder::new();
    let mut notes = Vec::new();
    for &id in &g.cached_tokens().unwrap()[s.body_start..] {
        if let Some(StreamEvent::Note {
            pitch, start_ms, ..
        }) = dec.push(&tok, id)
        {
            notes.push((pitch, start_ms));
        }
    }
    notes
}

/// Every note handed out has an end after its start and is handed out once.
fn assert_whole_and_once(notes: &[TimedNote]) {
    for (i, n) in notes.iter().enumerate() {
        assert!(n.end_ms > n.start_ms && n.end_ms.is_finite(), "{n:?}");
        assert!(
            !notes[..i]
                .iter()
                .any(|m| m.pitch == n.pitch && m.start_ms == n.start_ms),
            "{n:?} handed out twice"
        );
    }
}

fn respond_settings() -> LiveSettings {
    let mut s = LiveSettings::new(LiveMode::Respond, 120.0);
    s.handover_silence_beats = None;
    s.sampling.seed = 4;
    s
}

fn perform_call(s: &mut LiveSession, g: &mut Generator, from_ms: f64, events: &mut Vec<LiveEvent>) {
    for k in 0..8 {
        let t = from_ms + k as f64 * 250.0;
        let pitch = 60 + (k % 5) as u8 * 2;
        s.note_on(g, pitch, 80, t, &mut collect(events)).unwrap();
        s.note_off(g, pitch, t + 200.0, &mut collect(events))
            .unwrap();
    }
}

/// Call and response, listening: the new prompt is taken at once, the call heard before is
/// still in the cache after it exactly as it was (within `keep_ms`), and a handover answers
/// from the new prompt and the call.
#[test]
fn listening_takes_a_new_prompt_and_keeps_the_call() {
    let (_dir, mut g) = generator();
    let mut s = LiveSession::start(&mut g, &snippets(false), respond_settings()).unwrap();
    let mut events = Vec::new();
    perform_call(&mut s, &mut g, 0.0, &mut events);
    let body_before = g.cached_tokens().unwrap()[s.body_start..].to_vec();
    let heard = cached_notes(&g, &s);
    assert_eq!(heard.len(), 8);
    let new = snippets(true);
    assert!(
        s.change_prompt(&mut g, &new, 2100.0, &mut collect(&mut events))
            .unwrap()
    );
    assert_prompt_is(&g, &s, &new);
    assert_eq!(
        &g.cached_tokens().unwrap()[s.body_start..],
        &body_before[..],
        "the call is fed again after the new prompt as it was"
    );
    assert_eq!((s.stats().prompt_changes, s.stats().rebases), (1, 0));
    assert_eq!(s.stats().prompt_change_ms.len(), 1);
    assert!(events.is_empty(), "{events:?}");
    // The session goes on: a note of the same phrase is heard after the call.
    s.note_on(&mut g, 67, 80, 2200.0, &mut collect(&mut events))
        .unwrap();
    s.note_off(&mut g, 67, 2400.0, &mut collect(&mut events))
        .unwrap();
    assert_eq!(cached_notes(&g, &s)[..8], heard[..]);
    assert_eq!(cached_notes(&g, &s)[8], (67, 2200.0));
    assert!(
        s.handover(&mut g, 3000.0, &mut collect(&mut events))
            .unwrap()
    );
    let mut t = 3000.0;
    while s.is_responding() && t < 9000.0 {
        s.advance(&mut g, t, &mut collect(&mut events)).unwrap();
        t += 10.0;
    }
    assert!(!s.is_responding(), "the answer never ended");
    let answer = played(&events);
    assert!(!answer.is_empty());
    assert!(answer.iter().all(|n| n.start_ms >= 3000.0), "{answer:?}");
    assert_whole_and_once(&answer);
}

/// Call and response, answering: the answer is not broken; it plays out as sampled and the
/// new prompt is taken by the first `advance` after its end, with the call and the answer
/// kept after it.
#[test]
fn an_answer_under_way_finishes_before_the_new_prompt() {
    let (_dir, mut g) = generator();
    let mut s = LiveSession::start(&mut g, &snippets(false), respond_settings()).unwrap();
    let mut events = Vec::new();
    perform_call(&mut s, &mut g, 0.0, &mut events);
    assert!(
        s.handover(&mut g, 2500.0, &mut collect(&mut events))
            .unwrap()
    );
    let mut t = 2500.0;
    while t < 3000.0 {
        s.advance(&mut g, t, &mut collect(&mut events)).unwrap();
        t += 10.0;
    }
    let new = snippets(true);
    assert!(
        !s.change_prompt(&mut g, &new, t, &mut collect(&mut events))
            .unwrap(),
        "changed under the answer"
    );
    assert!(s.prompt_pending() && s.is_responding());
    assert_eq!(s.stats().prompt_changes, 0);
    while s.is_responding() && t < 9000.0 {
        s.advance(&mut g, t, &mut collect(&mut events)).unwrap();
        t += 10.0;
    }
    assert!(!s.is_responding(), "the answer never ended");
    let ended = events
        .iter()
        .filter(|e| matches!(e, LiveEvent::ResponseEnd { .. }))
        .count();
    assert_eq!(ended, 1);
    assert!(
        !events.iter().any(|e| matches!(
            e,
            LiveEvent::ResponseEnd {
                interrupted: true,
                ..
            }
        )),
        "the answer was cut"
    );
    // The answer ended in the last advance; the change is done by the next one.
    if s.prompt_pending() {
        s.advance(&mut g, t, &mut collect(&mut events)).unwrap();
    }
    assert!(!s.prompt_pending());
    assert_eq!(s.stats().prompt_changes, 1);
    assert_prompt_is(&g, &s, &new);
    let answer = played(&events);
    assert_whole_and_once(&answer);
    let kept = cached_notes(&g, &s);
    assert!(kept.len() >= 8 + answer.len(), "{kept:?}");
    for n in &answer {
        assert!(
            kept.iter()
                .any(|&(p, at)| p == n.pitch && (at - n.start_ms).abs() < 10.0),
            "answer note {n:?} not kept"
        );
    }
}

/// Accompaniment: a prompt change mid-performance hands out the look-ahead, keeps the
/// performance and the model's notes in the cache after the new prompt, and the model plays
/// on from there (onsets later than the change, never on a held key, nothing twice).
#[test]
fn the_accompaniment_plays_on_across_a_prompt_change() {
    let (_dir, mut g) = generator();
    let mut settings = LiveSettings::new(LiveMode::Accompany, 120.0);
    settings.sampling.seed = 11;
    settings.keep_ms = 4000.0;
    let mut s = LiveSession::start(&mut g, &snippets(false), settings).unwrap();
    let mut events = Vec::new();
    let perf: Vec<TimedNote> = (0..24)
        .map(|k| {
            let t = k as f64 * 300.0;
            note(64 + (k % 7) as u8, t, t + 250.0)
        })
        .collect();
    let change_at = 3010.0;
    let new = snippets(true);
    let mut changed = None;
    let mut next = 0;
    let mut t = 0.0;
    while t < 8000.0 {
        while next < perf.len() && perf[next].start_ms <= t {
            let n = perf[next];
            s.note_on(&mut g, n.pitch, 80, n.start_ms, &mut collect(&mut events))
                .unwrap();
            next += 1;
        }
        for n in &perf[..next] {
            if n.end_ms > t - 10.0 && n.end_ms <= t {
                s.note_off(&mut g, n.pitch, n.end_ms, &mut collect(&mut events))
                    .unwrap();
            }
        }
        if changed.is_none() && t >= change_at {
            let before = played(&events).len();
            assert!(
                s.change_prompt(&mut g, &new, t, &mut collect(&mut events))
                    .unwrap()
            );
            assert!(
                s.fed.iter().all(|f| f.committed),
                "a note of the look-ahead was not handed out"
            );
            changed = Some((t, before, played(&events).len()));
            assert_prompt_is(&g, &s, &new);
            // The performance heard (from the bar line 4 s before) is in the cache after it.
            let kept = cached_notes(&g, &s);
            for n in perf.iter().filter(|n| n.start_ms <= t) {
                assert!(
                    kept.iter()
                        .any(|&(p, at)| p == n.pitch && (at - n.start_ms).abs() < 10.0),
                    "performer note {n:?} not kept: {kept:?}"
                );
            }
        }
        s.advance(&mut g, t, &mut collect(&mut events)).unwrap();
        t += 10.0;
    }
    let (at, before, after) = changed.expect("the prompt changed");
    assert_eq!((s.stats().prompt_changes, s.stats().rebases), (1, 0));
    let model = played(&events);
    assert!(after >= before);
    let later: Vec<&TimedNote> = model[after..].iter().collect();
    assert!(
        later.iter().any(|n| n.start_ms > at + 1000.0),
        "the accompaniment stopped at the prompt change ({at} ms): {later:?}"
    );
    // Notes sampled after the change start after it (plus the reaction time), past the
    // look-ahead handed out at it.
    assert!(later.iter().all(|n| n.start_ms >= at), "{later:?}");
    assert_whole_and_once(&model);
    assert_eq!(count_collisions(&model, &perf), 0);
}
