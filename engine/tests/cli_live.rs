//! `staria live` end to end with a tiny checkpoint and a performer file the test writes.

mod gen_support;

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use gen_support::{note, write_checkpoint};
use staria_models::Song;

struct Fixture {
    dir: tempfile::TempDir,
}

/// At 120 bpm (500 ms a beat): a call of 8 eighth notes (0..4 s), 3 beats of silence, then the
/// performer again from 5.5 s for 2 s.
fn performer_song() -> Song {
    let mut notes = Vec::new();
    for k in 0..8 {
        notes.push(note(64 + k as u8, k as f64 * 500.0, 450.0));
    }
    for k in 0..4 {
        notes.push(note(72 - k as u8, 5_500.0 + k as f64 * 500.0, 450.0));
    }
    Song::from_ms_notes(notes, Vec::new(), 120.0)
}

impl Fixture {
    fn new() -> Fixture {
        let dir = tempfile::tempdir().unwrap();
        write_checkpoint(&dir.path().join("ckpt"), 21);
        staria_models::write_midi_file(&performer_song(), &dir.path().join("call.mid")).unwrap();
        Fixture { dir }
    }
    fn path(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }
    fn live(&self, mode: &str, out: &Path, extra: &[&str]) -> Output {
        let (call, out, ckpt) = (s(&self.path("call.mid")), s(out), s(&self.path("ckpt")));
        let mut args = vec![
            "live",
            "--performer",
            &call,
            "--mode",
            mode,
            "--out",
            &out,
            "--model",
            &ckpt,
            "--seed",
            "4",
        ];
        args.extend_from_slice(extra);
        Command::new(env!("CARGO_BIN_EXE_staria"))
            .args(&args)
            .env_remove("STARIA_MODEL")
            .output()
            .unwrap()
    }
}

fn s(p: &Path) -> String {
    p.display().to_string()
}

fn ok(o: &Output) -> String {
    let err = String::from_utf8_lossy(&o.stderr).into_owned();
    assert!(o.status.success(), "staria live failed: {err}");
    err
}

fn parts(song: &Song) -> (Vec<staria_models::Note>, Vec<staria_models::Note>) {
    let performer = song
        .notes
        .iter()
        .filter(|n| n.channel == 0)
        .copied()
        .collect();
    let model = song
        .notes
        .iter()
        .filter(|n| n.channel == 1)
        .copied()
        .collect();
    (performer, model)
}

/// The first answer starts at the 2-beat silence after the call (4.45 s + 1 s) and nothing of it
/// sounds after the performer comes back (5.5 s); the second follows the performer's last note (7.45 s + 1 s)
/// and plays its 2 bars. The performer's part is the input; the same seed writes the same file.
#[test]
fn respond_answers_in_the_silence_and_stops_when_the_performer_returns() {
    let f = Fixture::new();
    let out = f.path("out.mid");
    let err = ok(&f.live("respond", &out, &[]));
    // Whether the first answer is still playing at 5.5 s (cut short) is the model's choice.
    assert!(err.contains("2 answers"), "{err}");
    let song = staria_models::read_midi_file(&out).unwrap();
    let (performer, model) = parts(&song);
    let input = performer_song();
    assert_eq!(performer.len(), input.notes.len());
    for (a, b) in performer.iter().zip(&input.notes) {
        assert_eq!(a.pitch, b.pitch);
        assert!((a.start_ms - b.start_ms).abs() < 2.0, "{a:?} vs {b:?}");
    }
    assert!(!model.is_empty(), "no answer: {err}");
    let (first, second) = (3_500.0 + 450.0 + 1_000.0, 7_000.0 + 450.0 + 1_000.0);
    for n in &model {
        // Ticks of 10 ms: a handover is seen at most one tick late.
        let in_first = n.start_ms >= first - 2.0 && n.end_ms <= 5_500.0 + 2.0;
        let in_second = n.start_ms >= second - 2.0 && n.end_ms <= second + 10.0 + 4_000.0 + 2.0;
        assert!(in_first || in_second, "{n:?} outside both answers");
    }
    let again = f.path("again.mid");
    ok(&f.live("respond", &again, &[]));
    assert_eq!(std::fs::read(&out).unwrap(), std::fs::read(&again).unwrap());
}

/// The accompaniment keeps to its voice (36..=59 by default, or --pitch-range) on channel 2 and
/// never shares a sounding pitch with the performer.
#[test]
fn accompany_plays_a_separate_voice() {
    let f = Fixture::new();
    let out = f.path("acc.mid");
    let err = ok(&f.live("accompany", &out, &["--pitch-range", "40-55"]));
    assert!(err.contains("0 collisions"), "{err}");
    let song = staria_models::read_midi_file(&out).unwrap();
    let (performer, model) = parts(&song);
    assert!(!model.is_empty(), "{err}");
    for m in &model {
        assert!((40..=55).contains(&m.pitch), "{m:?}");
        for p in &performer {
            let overlap = m.start_ms.max(p.start_ms) < m.end_ms.min(p.end_ms);
            assert!(
                !(overlap && m.pitch == p.pitch),
                "{m:?} collides with {p:?}"
            );
        }
    }
}

#[test]
fn bad_input_fails_in_one_line_naming_it() {
    let f = Fixture::new();
    let bad = f.path("bad.mid");
    std::fs::write(&bad, b"MThd\0\0\0\x06garbage").unwrap();
    let out = f.path("x.mid");
    let ckpt = s(&f.path("ckpt"));
    let run = |args: &[&str]| {
        Command::new(env!("CARGO_BIN_EXE_staria"))
            .args(args)
            .env_remove("STARIA_MODEL")
            .output()
            .unwrap()
    };
    let cases: [(Vec<String>, &str); 3] = [
        (
            vec![
                "live".into(),
                "--performer".into(),
                s(&bad),
                "--mode".into(),
                "respond".into(),
                "--out".into(),
                s(&out),
                "--model".into(),
                ckpt.clone(),
            ],
            "bad.mid",
        ),
        (
            vec![
                "live".into(),
                "--performer".into(),
                s(&f.path("call.mid")),
                "--mode".into(),
                "duet".into(),
                "--out".into(),
                s(&out),
                "--model".into(),
                ckpt.clone(),
            ],
            "duet",
        ),
        (
            vec![
                "live".into(),
                "--performer".into(),
                s(&f.path("call.mid")),
                "--mode".into(),
                "accompany".into(),
                "--lookahead-beats".into(),
                "3".into(),
                "--out".into(),
                s(&out),
                "--model".into(),
                ckpt.clone(),
            ],
            "look-ahead",
        ),
    ];
    for (args, needle) in cases {
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        let o = run(&args);
        let err = String::from_utf8_lossy(&o.stderr);
        assert!(!o.status.success(), "{args:?} succeeded");
        assert_eq!(err.trim().lines().count(), 1, "{err}");
        assert!(err.contains(needle), "{needle:?} not in {err}");
        assert!(!err.contains("panicked"), "{err}");
    }
    assert!(!out.exists());
}
