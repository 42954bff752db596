//! Helpers shared by the host test files (`tests/host.rs`, `tests/host_model.rs`): MIDI in,
//! parameter changes, the saved snippets, a tiny model, capturing section A and checking what
//! the generated notes do.

use crate::*;

pub fn on(offset: u32, key: u16) -> InNote {
    InNote::On {
        offset,
        key,
        velocity: 0.8,
    }
}

pub fn off(offset: u32, key: u16) -> InNote {
    InNote::Off { offset, key }
}

/// The sustain pedal (CC 64) down or up.
pub fn pedal(offset: u32, down: bool) -> InNote {
    InNote::Cc {
        offset,
        cc: 64,
        value: if down { 127 } else { 0 },
    }
}

pub fn set(inst: &Instance, name: &str, value: f64) -> (clack_host::utils::ClapId, f64) {
    let p = inst.param(name);
    assert!(
        value >= p.min && value <= p.max,
        "{name}: {value} outside {}..{}",
        p.min,
        p.max
    );
    (p.id, value)
}

pub fn snippets(state: &serde_json::Value) -> serde_json::Value {
    // nice-plug keeps persisted fields as JSON strings under "fields".
    let text = state["fields"]["snippets"]
        .as_str()
        .expect("snippets field");
    serde_json::from_str(text).expect("snippets JSON")
}

/// A fresh random-weight `tiny` checkpoint for this process.
pub fn tiny_model(name: &str) -> std::path::PathBuf {
    let dir = target_dir()
        .join("staria-host-test")
        .join("models")
        .join(format!("{name}-{}", std::process::id()));
    if !dir.join("config.json").exists() {
        tiny_checkpoint(&dir, name);
    }
    dir
}

pub const LOAD_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(180);

pub fn ready_with(model: &'static str) -> impl Fn(&serde_json::Value) -> bool {
    move |st| st["state"] == "ready" && st["model"] == model
}

/// Records a one-bar snippet into A over beats 4..8 (a scale in eighth notes).
pub fn capture_a(inst: &Instance, s: &mut Session) {
    s.run_until_beat(3.0);
    s.block(&[], &[set(inst, "Record A", 1.0)]);
    for (i, key) in [60u16, 62, 64, 65, 67, 69, 71, 72].into_iter().enumerate() {
        let beat = 4.0 + i as f64 * 0.5;
        let o = s.advance_to_beat(beat);
        s.block(&[on(o, key)], &[]);
        let o = s.advance_to_beat(beat + 0.4);
        s.block(&[off(o, key)], &[]);
    }
    s.run_until_beat(8.0);
    s.block(&[], &[set(inst, "Record A", 0.0)]);
}

/// Generated notes: those on the output channel chosen for them (channel 3 = index 2).
/// Plays section A at once and asserts a generated note comes: the loaded model still serves.
pub fn assert_still_plays(inst: &mut Instance, s: &mut Session) {
    s.playing = true;
    let setup = [
        set(inst, "Play section", 0.0),
        set(inst, "Play immediately", 1.0),
        set(inst, "Output channel", 2.0),
    ];
    s.block(&[], &setup);
    s.set_realtime(true);
    s.block(&[], &[set(inst, "Play section", 1.0)]);
    // Real-time blocks until the first generated note; a loaded CI machine may need a few
    // seconds for the debug engine to get ahead of the playhead.
    for _ in 0..15 {
        s.run_blocks(100);
        if generated(&s.notes).iter().any(|n| n.on) {
            break;
        }
    }
    assert!(
        generated(&s.notes).iter().any(|n| n.on),
        "the old model stopped playing; {}",
        inst.status()
    );
}

pub fn generated(notes: &[OutNote]) -> Vec<OutNote> {
    notes.iter().copied().filter(|n| n.channel == 2).collect()
}

/// Plays `notes` (generated only) and checks that the notes sounding before block `cut_sample`
/// were all released in that block, and that nothing started at or after it.
pub fn assert_released_at(notes: &[OutNote], cut_sample: u64) {
    let before: Vec<OutNote> = notes
        .iter()
        .copied()
        .filter(|n| n.sample < cut_sample)
        .collect();
    let mut sounding = std::collections::HashSet::new();
    for n in &before {
        if n.on {
            sounding.insert(n.key);
        } else {
            sounding.remove(&n.key);
        }
    }
    let released: std::collections::HashSet<u16> = notes
        .iter()
        .filter(|n| !n.on && n.sample >= cut_sample && n.sample < cut_sample + BLOCK as u64)
        .map(|n| n.key)
        .collect();
    assert!(
        sounding.is_subset(&released),
        "still sounding after the cut: {:?}",
        sounding.difference(&released)
    );
    assert!(
        notes.iter().filter(|n| n.on).all(|n| n.sample < cut_sample),
        "a note started after the cut"
    );
    assert_balanced(notes);
}
