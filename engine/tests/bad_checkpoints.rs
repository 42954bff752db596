//! Broken checkpoints (`staria_test_support::broken_checkpoints`: a billion layers, huge sizes,
//! sizes the weights lack, another vocabulary's weights, 2 GB files, truncated weights, a
//! config from the future) through `staria generate` and through a running engine's model load,
//! which is what the plugin's custom-model choice calls: each is refused before anything is
//! allocated for it, with one line naming the file and the setting, and in the engine the old
//! model keeps playing.

mod gen_support;

use std::sync::atomic::Ordering::Relaxed;
use std::time::{Duration, Instant};

use staria_engine::messages::{Command, Event, Form, Outcome, Target};
use staria_engine::timing::TransportFrame;
use staria_engine::{Engine, EngineConfig, EngineState, SectionLabel};
use staria_test_support::{BrokenCheckpoint, broken_checkpoints, tiny_checkpoint};

fn check_message(b: &BrokenCheckpoint, msg: &str) {
    assert!(
        msg.contains(&b.dir.join(b.file).display().to_string())
            && msg.contains(&b.needle)
            && !msg.trim().contains('\n')
            && !msg.contains("panicked"),
        "{}: expected one line naming {} and {:?}, got: {msg}",
        b.what,
        b.file,
        b.needle
    );
}

#[test]
fn staria_generate_refuses_broken_checkpoints_in_one_line() {
    let root = tempfile::tempdir().unwrap();
    let prompt = root.path().join("prompt.mid");
    staria_models::write_midi_file(&gen_support::prompt_song(), &prompt).unwrap();
    let out = root.path().join("never.mid");
    for b in broken_checkpoints(root.path()) {
        for backend in ["fast", "candle"] {
            let o = std::process::Command::new(env!("CARGO_BIN_EXE_staria"))
                .args(["generate", "--prompt"])
                .arg(&prompt)
                .args([
                    "--form",
                    "AABA",
                    "--bars",
                    "2",
                    "--backend",
                    backend,
                    "--out",
                ])
                .arg(&out)
                .arg("--model")
                .arg(&b.dir)
                .env_remove("STARIA_MODEL")
                .output()
                .unwrap();
            let err = String::from_utf8_lossy(&o.stderr);
            assert!(
                matches!(o.status.code(), Some(1) | Some(2)),
                "{} ({backend}): exit {:?} (a signal is None): {err}",
                b.what,
                o.status.code()
            );
            check_message(&b, &err);
            assert!(!out.exists());
        }
    }
}

#[test]
fn a_running_engine_keeps_its_model_when_a_broken_one_is_loaded() {
    let root = tempfile::tempdir().unwrap();
    let good = root.path().join("good");
    tiny_checkpoint(&good, "engine-test-tiny");
    let (mut audio, control) = Engine::spawn(EngineConfig {
        model_dir: Some(good),
        ..EngineConfig::default()
    })
    .unwrap();
    audio.late_tolerance_beats = f64::INFINITY;
    let mut pos = 0.0;
    let mut outcomes = Vec::new();
    let mut notes = 0usize;
    let mut block = |audio: &mut staria_engine::AudioSide| {
        let frame = TransportFrame {
            playing: true,
            pos_beats: pos,
            tempo_bpm: 120.0,
            samples: 512,
            sample_rate: 48_000.0,
        };
        audio.process_block(&frame, |_, ev| match ev {
            Event::Note(n) => notes += usize::from(n.on),
            Event::RequestDone {
                request_id,
                outcome,
            } => outcomes.push((request_id, outcome)),
            Event::Retract(_) => unreachable!("the audio side emits no retraction"),
        });
        pos = frame.block().end_beat;
        std::thread::sleep(Duration::from_millis(1));
        (pos, outcomes.clone(), notes)
    };
    let deadline = || Instant::now() + Duration::from_secs(120);
    let until = deadline();
    while control.status().model_generation.load(Relaxed) < 1 {
        assert!(Instant::now() < until, "the good model never loaded");
        block(&mut audio);
    }
    for b in broken_checkpoints(&root.path().join("broken")) {
        control.load_model(&b.dir);
        // Each case's folder is its own: its file in the message is this load's error.
        let file = b.dir.join(b.file).display().to_string();
        let until = deadline();
        while !(control.status().state() == EngineState::Error
            && control.status().last_error().contains(&file))
        {
            assert!(
                Instant::now() < until,
                "{}: no error reported: {:?}",
                b.what,
                control.snapshot()
            );
            block(&mut audio);
        }
        check_message(&b, &control.status().last_error());
        assert_eq!(
            control.status().model_generation.load(Relaxed),
            1,
            "{}",
            b.what
        );

        // The old model keeps playing.
        let (now, _, before) = block(&mut audio);
        let request_id = audio.next_request_id();
        assert!(audio.send(Command::Generate {
            request_id,
            target: Target::Section(SectionLabel::A),
            bars: 1,
            ts_num: 4,
            ts_den: 4,
            form: Form::parse("A").unwrap(),
            start_beat: now + 0.5,
            seed: 3,
        }));
        let until = deadline();
        loop {
            let (_, done, played) = block(&mut audio);
            let outcome = done.iter().find(|(r, _)| *r == request_id).map(|r| r.1);
            if let Some(outcome) = outcome {
                assert_eq!(outcome, Outcome::Finished, "{}", b.what);
            }
            if outcome.is_some() && played > before {
                break;
            }
            assert!(
                Instant::now() < until,
                "{}: request {outcome:?}, {} notes since the failed load",
                b.what,
                played - before
            );
        }
    }
    assert!(control.is_running());
}
