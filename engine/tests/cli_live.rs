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

/// A performer file that slows from 120 to 60 bpm after two bars: the written file keeps its
/// tempo map and the performer at its ticks, and the model's notes after the change lie on the
/// session's grid in beats (10 ms steps at the 120 bpm reference: 0.02 beat), not on 10 ms of
/// the new tempo (0.01 beat), which is where notes timed in the file's real ms would fall.
/// `--bpm` is refused for such a file.
#[test]
fn a_tempo_change_in_the_performer_file_is_followed_in_beats() {
    use staria_models::TempoChange;
    let f = Fixture::new();
    let tempo_map = vec![
        TempoChange {
            tick: 0,
            us_per_quarter: 500_000,
        },
        TempoChange {
            tick: 8 * 480,
            us_per_quarter: 1_000_000,
        },
    ];
    let mut song = Song {
        ticks_per_quarter: 480,
        tempo_map: tempo_map.clone(),
        time_signatures: Vec::new(),
        notes: Vec::new(),
        sections: Vec::new(),
    };
    for k in 0..32u64 {
        let mut n = note(64 + (k % 5) as u8, 0.0, 0.0);
        (n.start_tick, n.end_tick) = (k * 240, k * 240 + 200);
        (n.start_ms, n.end_ms) = (song.tick_to_ms(n.start_tick), song.tick_to_ms(n.end_tick));
        song.notes.push(n);
    }
    let input = f.path("slowing.mid");
    staria_models::write_midi_file(&song, &input).unwrap();
    let out = f.path("slowing-out.mid");
    let run = |seed: u32, extra: &[&str]| {
        let mut args = vec![
            "live".to_string(),
            "--performer".into(),
            s(&input),
            "--mode".into(),
            "accompany".into(),
            "--out".into(),
            s(&out),
            "--model".into(),
            s(&f.path("ckpt")),
            "--seed".into(),
            seed.to_string(),
            "--pitch-range".into(),
            "40-60".into(),
        ];
        args.extend(extra.iter().map(|a| a.to_string()));
        Command::new(env!("CARGO_BIN_EXE_staria"))
            .args(&args)
            .env_remove("STARIA_MODEL")
            .output()
            .unwrap()
    };
    // The tiny model plays sparsely: the first seed whose accompaniment has 4 notes after the
    // change (the same seeds give the same files on any machine).
    let mut checked = 0;
    for seed in 1..=20 {
        let err = ok(&run(seed, &[]));
        assert!(err.contains("0 collisions"), "{err}");
        let written = staria_models::read_midi_file(&out).unwrap();
        assert_eq!(written.ticks_per_quarter, 480);
        assert_eq!(written.tempo_map, tempo_map);
        let (performer, model) = parts(&written);
        let ticks = |notes: &[staria_models::Note]| -> Vec<u64> {
            notes.iter().map(|n| n.start_tick).collect()
        };
        assert_eq!(ticks(&performer), ticks(&song.notes));
        let after: Vec<f64> = model
            .iter()
            .map(|n| n.start_tick as f64 / 480.0)
            .filter(|&beat| beat > 8.0)
            .collect();
        for beat in &after {
            let steps = beat / 0.02;
            assert!(
                (steps - steps.round()).abs() < 0.1,
                "seed {seed}: a model note at beat {beat} is off the session's 0.02-beat grid"
            );
        }
        checked += after.len();
        if after.len() >= 4 {
            break;
        }
    }
    assert!(
        checked >= 4,
        "only {checked} model notes after the change in 20 seeds"
    );
    let refused = run(1, &["--bpm", "100"]);
    let err = String::from_utf8_lossy(&refused.stderr);
    assert!(!refused.status.success());
    assert_eq!(err.trim().lines().count(), 1, "{err}");
    assert!(
        err.contains("--bpm") && err.contains("slowing.mid"),
        "{err}"
    );
}
