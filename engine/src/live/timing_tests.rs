//! Unit tests of the live session's timing rules: how much one call samples, so a driver
//! hands out and pushes due notes between calls (`driver` module notes). They run the shipped
//! model (`models/pretrained/baseline-small`), whose answers and look-aheads are dense enough
//! to tell one note per call from a beat at once (a tiny random model's are not).

use super::*;
use crate::generate::{Generator, Snippets};
use candle_core::Device;

fn generator() -> Generator {
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../models/pretrained/baseline-small");
    Generator::load(&dir, &Device::Cpu).unwrap()
}

/// Notes sampled by one call beyond those due within the commit window: at most one.
fn assert_one_beyond(s: &LiveSession, before: usize, now: f64, what: &str) {
    let limit = now + s.settings.commit_ahead_ms;
    let beyond = s.fed[before.min(s.fed.len())..]
        .iter()
        .filter(|f| f.note.start_ms > limit)
        .count();
    assert!(
        beyond <= 1,
        "{what} at {now} sampled {beyond} notes beyond the commit window"
    );
}

/// An answer is sampled ahead of time a note per call (after what is due), not a second at
/// once, and still fills its look-ahead and its bars.
#[test]
fn an_answer_is_sampled_a_note_per_call_beyond_what_is_due() {
    let mut g = generator();
    let mut settings = LiveSettings::new(LiveMode::Respond, 120.0);
    settings.handover_silence_beats = None;
    settings.response_bars = 4;
    settings.sampling.seed = 3;
    let mut s = LiveSession::start(&mut g, &Snippets::default(), settings).unwrap();
    let mut out = |_e: LiveEvent| {};
    for k in 0..8u8 {
        let t = k as f64 * 250.0;
        s.note_on(&mut g, 60 + k, 80, t, &mut out).unwrap();
        s.note_off(&mut g, 60 + k, t + 200.0, &mut out).unwrap();
    }
    let at = 2_000.0;
    s.handover(&mut g, at, &mut out).unwrap();
    let mut now = at;
    let mut most_ahead: f64 = 0.0;
    let mut sampled = s.fed.len();
    while s.is_responding() {
        now += 2.0;
        let before = s.fed.len();
        s.advance(&mut g, now, &mut out).unwrap();
        if s.is_responding() {
            assert_one_beyond(&s, before, now, "advance_response");
            sampled += s.fed.len() - before;
            if let Some(f) = s.fed.last() {
                most_ahead = most_ahead.max(f.note.start_ms - now);
            }
        }
        assert!(now < at + 5.0 * 2_000.0, "the answer never ended");
    }
    assert!(sampled >= 2, "{sampled} notes");
    assert!(
        most_ahead > 200.0,
        "the answer was never sampled ahead of time (at most {most_ahead} ms)"
    );
}

/// Accompaniment: the look-ahead after a performer's note (the revision) and its extensions
/// sample at most one note beyond the commit window per call, and reach about a beat ahead.
#[test]
fn the_look_ahead_is_sampled_a_note_per_call_beyond_what_is_due() {
    let mut g = generator();
    let mut settings = LiveSettings::new(LiveMode::Accompany, 120.0);
    settings.sampling.seed = 8;
    let mut s = LiveSession::start(&mut g, &Snippets::default(), settings).unwrap();
    let mut out = |_e: LiveEvent| {};
    let mut most_ahead: f64 = 0.0;
    let mut now = 0.0;
    for k in 0..12u8 {
        let t = k as f64 * 500.0;
        let before = s.fed.len();
        s.note_on(&mut g, 72 + k % 5, 80, t, &mut out).unwrap();
        // A revision rewinds `fed`: everything after the kept notes was sampled now or fed again.
        assert_one_beyond(&s, before.min(s.fed.len()), t, "a revision");
        while now < t + 450.0 {
            now += 2.0;
            let before = s.fed.len();
            s.advance(&mut g, now, &mut out).unwrap();
            assert_one_beyond(&s, before, now, "advance_accompaniment");
            if let Some(f) = s.fed.last() {
                most_ahead = most_ahead.max(f.note.start_ms - now);
            }
            if now >= t + 400.0 && s.listener.holds(72 + k % 5) {
                s.note_off(&mut g, 72 + k % 5, now, &mut out).unwrap();
            }
        }
    }
    assert!(
        most_ahead > 250.0,
        "the look-ahead never reached ahead (at most {most_ahead} ms)"
    );
}
