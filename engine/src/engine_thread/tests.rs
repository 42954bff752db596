//! Unit tests of the engine thread's request handling.

use super::serve::{continue_context, gen_request};
use super::*;
use crate::messages::{Command, Event, Outcome};
use crate::sampling::SamplingParams;
use crate::status::EngineParams;
use staria_models::{SectionLabel, Tokenizer, TokenizerConfig};
use std::sync::atomic::Ordering::Relaxed;

fn generated_from(start_beat: f64, pitch: u8) -> Scheduler {
    let params = EngineParams::default().values();
    let mut s = Scheduler::new(1, 0, start_beat, 2, 4.0, 120.0, params);
    s.add(pitch, 90, 0.0, 400.0);
    s
}

fn worker(rings: RingSizes) -> (AudioSide, Worker) {
    let (audio, engine_link) = link(rings, Arc::new(Shared::default()));
    let (_tx, rx) = channel();
    let w = Worker::new(
        engine_link,
        rx,
        EngineConfig::default(),
        Arc::new(AtomicU64::new(0)),
    );
    (audio, w)
}

fn outcomes(audio: &mut AudioSide) -> Vec<(RequestId, Outcome)> {
    let mut got = Vec::new();
    let block = crate::timing::BlockTiming {
        start_beat: 0.0,
        end_beat: 0.0,
        samples: 0,
    };
    audio.pop_due(&block, |_, ev| {
        if let Event::RequestDone {
            request_id,
            outcome,
        } = ev
        {
            got.push((request_id, outcome));
        }
    });
    got
}

/// A cancel that found the command ring full still cancels: the request queued before it and
/// one that arrives in the ring only after the engine saw the cancel.
#[test]
fn a_cancel_that_missed_a_full_ring_still_cancels() {
    let (mut audio, mut w) = worker(RingSizes {
        commands: 1,
        events: 16,
    });
    assert!(audio.send(Command::Generate {
        request_id: 5,
        target: Target::Continue,
        bars: 2,
        ts_num: 4,
        ts_den: 4,
        form: Form::new(),
        start_beat: 0.0,
        seed: 1,
    }));
    assert!(audio.send(Command::Cancel { request_id: 5 }));
    w.poll();
    assert!(w.pending.is_none(), "request 5 was cancelled");
    assert_eq!(outcomes(&mut audio), [(5, Outcome::Cancelled)]);

    // The engine reads the flag before the (older) generate command reaches it.
    let (mut audio, mut w) = worker(RingSizes {
        commands: 4,
        events: 16,
    });
    w.link.shared.cancel_upto.store(7, Relaxed);
    w.poll();
    assert!(audio.send(Command::Generate {
        request_id: 7,
        target: Target::Continue,
        bars: 2,
        ts_num: 4,
        ts_den: 4,
        form: Form::new(),
        start_beat: 0.0,
        seed: 1,
    }));
    w.poll();
    assert!(w.pending.is_none());
    assert_eq!(outcomes(&mut audio), [(7, Outcome::Cancelled)]);
}

#[test]
fn continue_continues_whatever_was_heard_last() {
    let mut capture = Capture::new(64);
    assert!(continue_context(&capture, None, 0.0).is_empty());
    capture.arm(SectionLabel::B, 8.0, 120.0);
    capture
        .note_on(SectionLabel::B, 64, 90, 8.0, 120.0)
        .unwrap();
    capture.note_off(SectionLabel::B, 64, 9.0).unwrap();
    // Played after the generated music started (or with none): the capture is continued.
    let earlier = generated_from(4.0, 72);
    for g in [None, Some(&earlier)] {
        let ctx = continue_context(&capture, g, 10.0);
        assert_eq!(ctx.iter().map(|n| n.pitch).collect::<Vec<_>>(), [64]);
        assert_eq!((ctx[0].start_ms, ctx[0].end_ms), (0.0, 500.0));
    }
    // Generated music that started after the last played note is continued instead.
    let later = generated_from(12.0, 72);
    let ctx = continue_context(&capture, Some(&later), 13.0);
    assert_eq!(ctx.iter().map(|n| n.pitch).collect::<Vec<_>>(), [72]);
    // A cleared or re-armed section is not continued.
    capture.clear(SectionLabel::B);
    assert_eq!(capture.last_played(), None);
    assert_eq!(
        continue_context(&capture, Some(&earlier), 13.0)[0].pitch,
        72
    );
    capture
        .note_on(SectionLabel::C, 60, 90, 14.0, 120.0)
        .unwrap();
    assert_eq!(capture.last_played(), Some((SectionLabel::C, 14.0)));
    capture.arm(SectionLabel::C, 16.0, 120.0);
    assert_eq!(capture.last_played(), None);
}

/// After a project load the snippets are handed back in beats from each snippet's start,
/// which say nothing about when they were heard: `Continue` must not compare them with
/// the host beats of generated music (a generated section from host beat 2 came after a
/// snippet restored at "beat 3.5"). With nothing generated, a restored snippet is continued.
#[test]
fn restored_snippets_are_older_than_anything_heard_since() {
    let mut capture = Capture::new(64);
    capture.arm_restored(SectionLabel::B, 120.0);
    capture
        .note_on(SectionLabel::B, 64, 90, 3.0, 120.0)
        .unwrap();
    capture.note_off(SectionLabel::B, 64, 3.5).unwrap();
    assert_eq!(
        capture.last_played(),
        Some((SectionLabel::B, f64::NEG_INFINITY))
    );
    let generated = generated_from(2.0, 72);
    let ctx = continue_context(&capture, Some(&generated), 3.0);
    assert_eq!(ctx.iter().map(|n| n.pitch).collect::<Vec<_>>(), [72]);
    let ctx = continue_context(&capture, None, 3.0);
    assert_eq!(ctx.iter().map(|n| n.pitch).collect::<Vec<_>>(), [64]);
    // Played live after the restore: that is what was heard last.
    capture.arm(SectionLabel::C, 8.0, 120.0);
    capture
        .note_on(SectionLabel::C, 60, 90, 8.0, 120.0)
        .unwrap();
    assert_eq!(capture.last_played(), Some((SectionLabel::C, 8.0)));
    // ...and a later restore of another section does not take that over.
    capture.arm_restored(SectionLabel::D, 120.0);
    capture
        .note_on(SectionLabel::D, 67, 90, 30.0, 120.0)
        .unwrap();
    assert_eq!(capture.last_played(), Some((SectionLabel::C, 8.0)));
    let ctx = continue_context(&capture, Some(&generated), 9.0);
    assert_eq!(ctx.iter().map(|n| n.pitch).collect::<Vec<_>>(), [60]);
}

#[test]
fn the_style_setting_reaches_the_request_when_the_model_knows_it() {
    let req = Pending {
        id: 1,
        target: Target::Section(SectionLabel::B),
        bars: 2,
        ts_num: 4,
        ts_den: 4,
        form: Form::parse("AB").unwrap(),
        start_beat: 8.0,
        seed: 3,
    };
    let params = EngineParams::default();
    let tok = Tokenizer::new(TokenizerConfig::default()).unwrap();
    let style =
        |p: &EngineParams, tok: &Tokenizer| gen_request(&req, 120.0, 4.0, &p.values(), tok).style;
    assert_eq!(style(&params, &tok), None);
    params.set_style(4);
    assert_eq!(style(&params, &tok).as_deref(), Some("reel"));
    // A model without style tokens generates without one.
    let plain = Tokenizer::new(TokenizerConfig {
        styles: Vec::new(),
        ..TokenizerConfig::default()
    })
    .unwrap();
    assert_eq!(style(&params, &plain), None);
}

/// The follow bias setting (the plugin's "Adherence") is what the request samples with:
/// the measured default until it is changed, then the value set.
#[test]
fn the_follow_bias_setting_reaches_the_request() {
    let req = Pending {
        id: 1,
        target: Target::Section(SectionLabel::A),
        bars: 2,
        ts_num: 4,
        ts_den: 4,
        form: Form::parse("AB").unwrap(),
        start_beat: 0.0,
        seed: 3,
    };
    let tok = Tokenizer::new(TokenizerConfig::default()).unwrap();
    let params = EngineParams::default();
    let bias = |p: &EngineParams| gen_request(&req, 120.0, 4.0, &p.values(), &tok).sampling;
    assert_eq!(
        bias(&params).follow_bias,
        SamplingParams::DEFAULT_FOLLOW_BIAS
    );
    for v in [0.0, 2.5, 20.0] {
        params.set_follow_bias(v);
        let s = bias(&params);
        assert_eq!(s.follow_bias, v);
        assert!(s.validate().is_ok());
    }
}

/// `LivePrompt` with no live session (none started, or a `LiveStart` still waiting, which
/// starts with the new snippets anyway) does nothing: no outcome, no error, no prompt change
/// counted, and the waiting start is kept.
#[test]
fn a_prompt_change_without_a_session_is_ignored() {
    let (mut audio, mut w) = worker(RingSizes {
        commands: 8,
        events: 16,
    });
    assert!(audio.send(Command::LivePrompt));
    w.poll();
    assert!(audio.send(Command::LiveStart {
        request_id: 3,
        mode: crate::live::LiveMode::Accompany,
        origin_beat: 0.0,
        response_bars: 1,
        seed: 1,
        consonant: true,
    }));
    assert!(audio.send(Command::LivePrompt));
    w.poll();
    assert!(w.live.is_none());
    assert_eq!(w.live_start.map(|s| s.request_id), Some(3));
    assert!(outcomes(&mut audio).is_empty());
    let status = &w.link.shared.status;
    assert_eq!(status.live_prompt_changes.load(Relaxed), 0);
    assert!(status.last_error().is_empty());
}

/// A live session that fails (here a panic in the model's work) ends its request with
/// `Outcome::Failed` (call and response too, between answers, so the plugin knows the session
/// is gone), says why in the status and leaves no session behind; an accompaniment that is
/// stopped ends with `Outcome::Cancelled` and no error.
#[test]
fn a_failing_live_session_ends_as_failed_and_says_why() {
    use crate::live::LiveMode;
    let dir = tempfile::tempdir().unwrap();
    staria_test_support::tiny_checkpoint(dir.path(), "live-fail-tiny");
    for (mode, fails, done) in [
        (LiveMode::Accompany, true, &[(9, Outcome::Failed)][..]),
        (LiveMode::Respond, true, &[(9, Outcome::Failed)][..]),
        (LiveMode::Accompany, false, &[(9, Outcome::Cancelled)][..]),
        (LiveMode::Respond, false, &[][..]),
    ] {
        let (mut audio, mut w) = worker(RingSizes {
            commands: 16,
            events: 256,
        });
        let g = crate::generate::Generator::load(dir.path(), &candle_core::Device::Cpu).unwrap();
        w.generator = Some(Box::new(g));
        assert!(audio.send(Command::LiveStart {
            request_id: 9,
            mode,
            origin_beat: 0.0,
            response_bars: 2,
            seed: 1,
            consonant: false,
        }));
        w.poll();
        w.live_pump();
        assert!(w.live.is_some(), "{}", w.link.shared.status.last_error());
        if fails {
            w.with_live(|_, _, _| panic!("injected failure"));
        } else {
            assert!(audio.send(Command::LiveStop));
            w.poll();
        }
        assert!(w.live.is_none());
        assert_eq!(outcomes(&mut audio), done, "{mode:?}, fails: {fails}");
        let error = w.link.shared.status.last_error();
        assert_eq!(
            error.contains("live session panicked: injected failure"),
            fails,
            "{error}"
        );
    }
}
