//! The CLI with a two-voice model (tokenizer instruments `["piano", "bass"]`, a tiny untrained
//! checkpoint): `staria info` names the voices, `staria live --mode accompany` writes the
//! model's part as bass, `staria generate` writes each instrument on its own channel with its
//! program; a one-instrument model reads as one voice.

use std::path::Path;
use std::process::{Command, Output};

use staria_models::tokenizer::TokenizerConfig;
use staria_models::{Note, Song};

fn staria(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_staria"))
        .args(args)
        .env_remove("STARIA_MODEL")
        .env("RAYON_NUM_THREADS", "2")
        .output()
        .unwrap()
}

fn ok(o: &Output) -> String {
    let err = String::from_utf8_lossy(&o.stderr).into_owned();
    assert!(o.status.success(), "staria failed: {err}");
    err
}

fn s(p: &Path) -> String {
    p.display().to_string()
}

fn two_voice_checkpoint(dir: &Path) {
    staria_test_support::tiny_checkpoint_with(
        dir,
        "two-voices",
        TokenizerConfig {
            instruments: vec!["piano".into(), "bass".into()],
            ..TokenizerConfig::default()
        },
    );
}

/// 16 eighth notes at 120 bpm above middle C.
fn melody() -> Song {
    let notes = (0..16)
        .map(|k| {
            let start = k as f64 * 250.0;
            Note {
                pitch: 64 + (k % 8) as u8,
                velocity: 80,
                channel: 0,
                program: 0,
                start_tick: 0,
                end_tick: 0,
                start_ms: start,
                end_ms: start + 200.0,
            }
        })
        .collect();
    Song::from_ms_notes(notes, Vec::new(), 120.0)
}

#[test]
fn info_names_the_performer_and_the_accompaniment_voice() {
    let dir = tempfile::tempdir().unwrap();
    let (two, one) = (dir.path().join("two"), dir.path().join("one"));
    two_voice_checkpoint(&two);
    staria_test_support::tiny_checkpoint(&one, "one-voice");
    let r = staria(&["info", "--model", &s(&two), "--json"]);
    ok(&r);
    let v: serde_json::Value = serde_json::from_slice(&r.stdout).unwrap();
    assert_eq!(v["instruments"], serde_json::json!(["piano", "bass"]));
    assert_eq!(v["performer_instrument"], "piano");
    assert_eq!(v["accompaniment_instrument"], "bass");
    let r = staria(&["info", "--model", &s(&two)]);
    ok(&r);
    let text = String::from_utf8_lossy(&r.stdout);
    assert!(
        text.contains("instruments piano (performer), bass (accompaniment voice)"),
        "{text}"
    );
    let r = staria(&["info", "--model", &s(&one), "--json"]);
    ok(&r);
    let v: serde_json::Value = serde_json::from_slice(&r.stdout).unwrap();
    assert_eq!(v["instruments"], serde_json::json!(["piano"]));
    assert!(v["accompaniment_instrument"].is_null(), "{v}");
    let r = staria(&["info", "--model", &s(&one)]);
    let text = String::from_utf8_lossy(&r.stdout);
    assert!(text.contains("instruments piano (one voice"), "{text}");
}

/// The accompaniment is the model's bass: channel 2 with program 32 (Acoustic Bass), in the
/// voice's range; the performer stays piano on channel 1. With the ghost melody
/// (`--ghost-melody true`) and without it (the default): the predicted melody never reaches
/// the file.
#[test]
fn live_accompaniment_writes_the_model_part_as_bass() {
    let dir = tempfile::tempdir().unwrap();
    let ckpt = dir.path().join("ckpt");
    two_voice_checkpoint(&ckpt);
    let call = dir.path().join("call.mid");
    staria_models::write_midi_file(&melody(), &call).unwrap();
    for ghost in ["true", "false"] {
        let out = dir.path().join(format!("acc-{ghost}.mid"));
        let err = ok(&staria(&[
            "live",
            "--performer",
            &s(&call),
            "--mode",
            "accompany",
            "--out",
            &s(&out),
            "--model",
            &s(&ckpt),
            "--seed",
            "4",
            "--ghost-melody",
            ghost,
        ]));
        assert!(
            err.contains("as bass") && err.contains("0 collisions"),
            "{err}"
        );
        assert_eq!(
            err.contains("with a ghost melody"),
            ghost == "true",
            "{err}"
        );
        let song = staria_models::read_midi_file(&out).unwrap();
        let model: Vec<&Note> = song.notes.iter().filter(|n| n.channel == 1).collect();
        assert!(!model.is_empty(), "{err}");
        for n in &model {
            assert_eq!(n.program, 32, "{n:?}");
            assert!((36..=59).contains(&n.pitch), "{n:?}");
        }
        for n in song.notes.iter().filter(|n| n.channel == 0) {
            assert_eq!(n.program, 0, "{n:?}");
        }
        assert_eq!(song.notes.len() - model.len(), 16);
    }
}

/// `staria generate` samples both instruments as before; each comes out on its own channel
/// with its family's first program (piano: channel 1, program 0; bass: channel 2, program 32).
#[test]
fn generate_writes_each_instrument_on_its_channel() {
    let dir = tempfile::tempdir().unwrap();
    let ckpt = dir.path().join("ckpt");
    two_voice_checkpoint(&ckpt);
    let prompt = dir.path().join("prompt.mid");
    staria_models::write_midi_file(&melody(), &prompt).unwrap();
    let out = dir.path().join("gen.mid");
    ok(&staria(&[
        "generate",
        "--prompt",
        &s(&prompt),
        "--form",
        "AB",
        "--bars",
        "4",
        "--seed",
        "3",
        "--out",
        &s(&out),
        "--model",
        &s(&ckpt),
    ]));
    let song = staria_models::read_midi_file(&out).unwrap();
    let mut per_channel = [0usize; 16];
    for n in song.notes.iter().filter(|n| !n.is_drum()) {
        let want = match n.channel {
            0 => 0,
            1 => 32,
            c => panic!("a note on channel {}: {n:?}", c + 1),
        };
        assert_eq!(n.program, want, "{n:?}");
        per_channel[n.channel as usize] += 1;
    }
    assert!(
        per_channel[0] > 0 && per_channel[1] > 0,
        "the untrained model sampled only one instrument: {per_channel:?}"
    );
}
