//! Fixtures the tests make themselves: a small corpus shaped like the real one (fiddle tunes
//! and chorales with section markers, folk songs without, one corrupt file), the tiny config.

#![allow(dead_code)]

use std::path::Path;

use staria_models::midi::write_midi;
use staria_models::{Note, Section, SectionLabel, Song};
use staria_trainer::config::ExperimentConfig;

/// A deterministic pseudo-random generator (no dependency on rand's stream for fixtures).
pub struct Lcg(pub u64);
impl Lcg {
    pub fn next(&mut self) -> u64 {
        self.0 = self
            .0
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        self.0 >> 33
    }
}

/// A 2-bar phrase of eighth notes in a scale from `root`.
fn phrase(rng: &mut Lcg, root: u8) -> Vec<(u8, u32)> {
    let scale = [0u8, 2, 4, 5, 7, 9, 11, 12];
    (0..16)
        .map(|i| (root + scale[(rng.next() % 8) as usize], i))
        .collect()
}

/// A song (120 bpm, 4/4, 480 tpq) from phrases laid out in `form`; with `markers`, one section
/// per letter occurrence.
pub fn song(form: &str, seed: u64, root: u8, markers: bool) -> Song {
    let mut rng = Lcg(seed);
    let letters: Vec<char> = form.chars().collect();
    let mut phrases = std::collections::HashMap::new();
    let mut notes = Vec::new();
    let mut sections = Vec::new();
    for (k, c) in letters.iter().enumerate() {
        let p = phrases
            .entry(*c)
            .or_insert_with(|| phrase(&mut rng, root + 2 * (*c as u8 - b'A')))
            .clone();
        let base = k as u64 * 2 * 1920; // 2 bars per phrase
        for (pitch, eighth) in p {
            let s = base + u64::from(eighth) * 240;
            notes.push(Note {
                pitch,
                velocity: 70 + (eighth % 4) as u8 * 10,
                channel: 0,
                program: 0,
                start_tick: s,
                end_tick: s + 220,
                start_ms: s as f64 * 500.0 / 480.0,
                end_ms: (s + 220) as f64 * 500.0 / 480.0,
            });
        }
        if markers {
            let label = SectionLabel::from_letter(*c).unwrap();
            sections.push(Section {
                label,
                marker_text: c.to_string(),
                start_tick: base,
                end_tick: base + 2 * 1920,
                start_ms: base as f64 * 500.0 / 480.0,
                end_ms: (base + 2 * 1920) as f64 * 500.0 / 480.0,
            });
        }
    }
    notes.sort_by_key(|n| (n.start_tick, n.pitch));
    Song::with_fixed_tempo(480, 500_000, notes, sections)
}

/// Writes the fixture corpus; returns the number of good files.
pub fn write_corpus(dir: &Path) -> usize {
    let mut n = 0;
    let mut put = |rel: &str, song: &Song| {
        let path = dir.join(rel);
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        std::fs::write(&path, write_midi(song).unwrap()).unwrap();
        n += 1;
    };
    let forms = ["AABB", "AB", "ABA", "AABA", "ABAC", "ABCB"];
    for i in 0..10u64 {
        let kind = ["reel", "jig", "hornpipe", "tune"][i as usize % 4];
        put(
            &format!("ryans/{kind}_{i}.mid"),
            &song(
                forms[i as usize % forms.len()],
                100 + i,
                60 + (i % 5) as u8,
                true,
            ),
        );
    }
    for i in 0..4u64 {
        put(
            &format!("bach/bwv{}_{}.mid", 10 + i, i + 1),
            &song("AAB", 200 + i, 55 + i as u8, true),
        );
    }
    for i in 0..8u64 {
        put(
            &format!("essen/song{i}.mid"),
            &song(["ABAB", "AABB", "ABCA"][i as usize % 3], 300 + i, 62, false),
        );
    }
    std::fs::write(dir.join("essen/broken.mid"), b"MThd\x00\x00\x00\x06garbage").unwrap();
    n
}

/// The tiny experiment config with small step counts for tests.
pub fn tiny_config() -> ExperimentConfig {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("configs/tiny.toml");
    let mut cfg = ExperimentConfig::load(&path).unwrap();
    cfg.decoder.steps = 12;
    cfg.decoder.eval_every = 6;
    cfg.decoder.checkpoint_every = 6;
    cfg.encoder.steps = 6;
    cfg.staria.stage_a_steps = 3;
    cfg.staria.stage_b_steps = 3;
    cfg.staria.stage_c_steps = 2;
    cfg.wake_sleep.rounds = 2;
    cfg.wake_sleep.wake_steps = 2;
    cfg.wake_sleep.sleep_steps = 2;
    cfg.wake_sleep.dreams_per_round = 2;
    cfg.wake_sleep.dream_tokens = 64;
    cfg.wake_sleep.recognizer_warmup_steps = 3;
    cfg
}

/// The loss of a run's first training step, from its `metrics.jsonl`.
pub fn first_train_loss(run: &Path) -> f64 {
    let log = std::fs::read_to_string(run.join("metrics.jsonl")).unwrap();
    log.lines()
        .map(|l| serde_json::from_str::<serde_json::Value>(l).unwrap())
        .find(|v| v["kind"] == "train")
        .unwrap()["loss"]
        .as_f64()
        .unwrap()
}
