//! The bundled Staria.clap in a real CLAP host: 48 kHz, 512-sample blocks, a running transport
//! at 120 bpm in 4/4. Each scenario runs in its own process (the debug bundle aborts on an
//! allocation in `process()`).

use staria_plugin_host_test::*;

fn on(offset: u32, key: u16) -> InNote {
    InNote::On {
        offset,
        key,
        velocity: 0.8,
    }
}

fn off(offset: u32, key: u16) -> InNote {
    InNote::Off { offset, key }
}

/// The sustain pedal (CC 64) down or up.
fn pedal(offset: u32, down: bool) -> InNote {
    InNote::Cc {
        offset,
        cc: 64,
        value: if down { 127 } else { 0 },
    }
}

fn set(inst: &Instance, name: &str, value: f64) -> (clack_host::utils::ClapId, f64) {
    let p = inst.param(name);
    assert!(
        value >= p.min && value <= p.max,
        "{name}: {value} outside {}..{}",
        p.min,
        p.max
    );
    (p.id, value)
}

fn snippets(state: &serde_json::Value) -> serde_json::Value {
    // nice-plug keeps persisted fields as JSON strings under "fields".
    let text = state["fields"]["snippets"]
        .as_str()
        .expect("snippets field");
    serde_json::from_str(text).expect("snippets JSON")
}

#[test]
fn passes_audio_and_midi_through_cleanly() {
    run_isolated("passes_audio_and_midi_through_cleanly", || {
        let mut inst = Instance::load(&bundled_clap());
        let mut s = inst.start();
        s.playing = true;
        // A sine with a subnormal and a NaN sample mixed in.
        s.set_input_audio(|i| match i {
            7 => 1e-40,
            9 => f32::NAN,
            _ => (i as f32 * 0.05).sin() * 0.5,
        });
        let got = s.block(&[on(10, 60), off(300, 60), on(300, 64)], &[]);
        for (i, &x) in s.last_audio[0].iter().enumerate() {
            let want = match i {
                7 | 9 => 0.0,
                _ => (i as f32 * 0.05).sin() * 0.5,
            };
            assert_eq!(
                x.to_bits(),
                if want == 0.0 { 0 } else { want.to_bits() },
                "sample {i}"
            );
        }
        assert_eq!(s.last_audio[0], s.last_audio[1]);
        let keys: Vec<_> = got.iter().map(|n| (n.sample, n.on, n.key)).collect();
        assert_eq!(
            keys,
            vec![(10, true, 60), (300, false, 60), (300, true, 64)]
        );

        // Pass-through off: new notes are held back, but the held note still gets its note-off.
        let thru_off = set(&inst, "Pass input through", 0.0);
        let got = s.block(&[off(5, 64), on(6, 67), off(7, 67)], &[thru_off]);
        assert_eq!(
            got.iter().map(|n| (n.on, n.key)).collect::<Vec<_>>(),
            vec![(false, 64)]
        );

        // Keyswitch notes (C1 = 24 .. B1 = 35, on an 88-key piano) never reach the output; the
        // piano's lowest keys below them (A0 = 21 .. B0 = 23) are ordinary notes.
        let thru_on = set(&inst, "Pass input through", 1.0);
        let got = s.block(
            &[
                on(0, 24),
                off(100, 24),
                on(200, 35),
                off(201, 35),
                on(300, 21),
                on(301, 22),
                on(302, 23),
            ],
            &[thru_on],
        );
        assert_eq!(
            got.iter().map(|n| (n.on, n.key)).collect::<Vec<_>>(),
            vec![(true, 21), (true, 22), (true, 23)]
        );
        s.block(&[off(0, 21), off(0, 22), off(0, 23)], &[]);
        assert_balanced(&s.notes);
        inst.stop(s);
    });
}

#[test]
fn capture_is_bar_aligned_saved_and_restored_in_a_fresh_instance() {
    run_isolated(
        "capture_is_bar_aligned_saved_and_restored_in_a_fresh_instance",
        || {
            let entry = {
                let inst = Instance::load(&bundled_clap());
                inst.entry.clone()
            };
            let mut inst = Instance::from_entry(entry.clone());
            let mut s = inst.start();
            s.playing = true;
            s.run_until_beat(2.0);
            // Arm A in the middle of bar 1; play a pickup just before bar 3 and two notes in it.
            let arm = set(&inst, "Record A", 1.0);
            s.block(&[], &[arm]);
            let o = s.advance_to_beat(7.5);
            s.block(&[on(o, 60)], &[]);
            let o = s.advance_to_beat(8.0);
            s.block(&[off(o, 60), on(o, 62)], &[]);
            let o = s.advance_to_beat(9.0);
            s.block(&[off(o, 62), on(o, 64)], &[]);
            // The sustain pedal holds 64 from its release at beat 10 until the pedal is up at 11.
            let o = s.advance_to_beat(9.5);
            s.block(&[pedal(o, true)], &[]);
            let o = s.advance_to_beat(10.0);
            s.block(&[off(o, 64)], &[]);
            let o = s.advance_to_beat(11.0);
            s.block(&[pedal(o, false)], &[]);
            // Disarm a little after the bar 4 line (beat 12): the snippet is bars 2..4 (beats 4..12).
            s.run_until_beat(12.1);
            let disarm = set(&inst, "Record A", 0.0);
            s.block(&[], &[disarm]);
            inst.stop(s);

            let state = inst.save_state();
            // How the state fixtures in fixtures/state/ are made (see
            // `state_saved_by_earlier_versions_loads`).
            if let Some(path) = std::env::var_os("STARIA_WRITE_STATE_FIXTURE") {
                std::fs::write(&path, &state).expect("write the state fixture");
            }
            let json = Instance::state_json(&state);
            let snips = snippets(&json);
            let sections = snips["sections"].as_array().unwrap();
            assert_eq!(sections.len(), 1, "{snips}");
            let a = &sections[0];
            assert_eq!(a["section"], "A");
            assert_eq!(a["bars"], 2);
            assert_eq!(a["length_beats"], 8.0);
            let notes: Vec<(u64, f64, f64)> = a["notes"]
                .as_array()
                .unwrap()
                .iter()
                .map(|n| {
                    (
                        n["pitch"].as_u64().unwrap(),
                        n["start"].as_f64().unwrap(),
                        n["length"].as_f64().unwrap(),
                    )
                })
                .collect();
            // Note times are snapped to 1/960 beat.
            let near = |a: f64, b: f64| (a - b).abs() <= 1.0 / 960.0;
            assert_eq!(notes.len(), 3);
            for ((p, st, len), (wp, wst, wlen)) in
                notes
                    .iter()
                    .zip([(60, 3.5, 0.5), (62, 4.0, 1.0), (64, 5.0, 2.0)])
            {
                assert_eq!(*p, wp);
                assert!(
                    near(*st, wst) && near(*len, wlen),
                    "note {p}: start {st} length {len}"
                );
            }

            // A fresh instance (as a DAW reopening the project) restores the snippets.
            drop(inst);
            let mut fresh = Instance::from_entry(entry.clone());
            fresh.load_state(&state);
            let again = Instance::state_json(&fresh.save_state());
            assert_eq!(snippets(&again), snips);
            // ...and keeps them once its audio thread has taken them over.
            let mut s = fresh.start();
            s.playing = true;
            s.run_blocks(4);
            fresh.stop(s);
            let after = Instance::state_json(&fresh.save_state());
            assert_eq!(snippets(&after), snips);

            // Clearing a section empties it; re-arming and playing replaces it.
            let mut s = fresh.start();
            s.playing = true;
            let clear = set(&fresh, "Clear A", 1.0);
            s.block(&[], &[clear]);
            fresh.stop(s);
            let cleared = Instance::state_json(&fresh.save_state());
            assert_eq!(snippets(&cleared)["sections"].as_array().unwrap().len(), 0);
        },
    );
}

/// Projects saved by earlier versions open with their snippets and settings: every file in
/// `fixtures/state/` (a state as a host saves it, kept forever; a new one is written by
/// `STARIA_WRITE_STATE_FIXTURE=fixtures/state/NAME.bin cargo test -p staria-plugin-host-test
/// --test host capture_is_bar_aligned`, run from `plugin/host-test`) loads into a fresh
/// instance, which saves the same snippets, model path and parameter values back.
#[test]
fn state_saved_by_earlier_versions_loads() {
    run_isolated("state_saved_by_earlier_versions_loads", || {
        let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("fixtures/state");
        let mut files: Vec<_> = std::fs::read_dir(&dir)
            .expect("fixtures/state")
            .map(|e| e.expect("fixture entry").path())
            .filter(|p| p.extension().is_some_and(|e| e == "bin"))
            .collect();
        files.sort();
        assert!(!files.is_empty(), "no state fixtures in {}", dir.display());
        let entry = Instance::load(&bundled_clap()).entry.clone();
        for file in &files {
            let saved = std::fs::read(file).expect("read the fixture");
            let old = Instance::state_json(&saved);
            assert!(
                !snippets(&old)["sections"].as_array().unwrap().is_empty(),
                "{}: a fixture should hold a snippet",
                file.display()
            );
            let mut fresh = Instance::from_entry(entry.clone());
            fresh.load_state(&saved);
            let again = Instance::state_json(&fresh.save_state());
            assert_eq!(snippets(&again), snippets(&old), "{}", file.display());
            assert_eq!(
                again["fields"]["model-path"],
                old["fields"]["model-path"],
                "{}",
                file.display()
            );
            for (id, value) in old["params"].as_object().expect("params") {
                assert_eq!(
                    again["params"].get(id),
                    Some(value),
                    "{}: parameter {id}",
                    file.display()
                );
            }
        }
    });
}

/// Raw MIDI from the host with data bytes above 127 (a malformed message; nice-plug passes the
/// bytes on as they come) goes through `process()` without a panic, while recording with the
/// pedal down, on keyswitch and ordinary keys: nothing out of range comes out and nothing is
/// left sounding.
#[test]
fn raw_midi_with_data_bytes_over_127_is_harmless() {
    run_isolated("raw_midi_with_data_bytes_over_127_is_harmless", || {
        let mut inst = Instance::load(&bundled_clap());
        let mut s = inst.start();
        s.playing = true;
        s.run_until_beat(1.0);
        s.block(&[], &[set(&inst, "Record A", 1.0)]);
        let raw = |offset: u32, data: [u8; 3]| InNote::Midi { offset, data };
        let got = s.block(
            &[
                raw(0, [0xB0, 64, 127]),        // pedal down
                raw(1, [0x90, 200, 100]),       // note on, key 200
                raw(2, [0x90, 128, 255]),       // key 128, velocity 255
                raw(3, [0x90, 60, 200]),        // a valid key with velocity 200
                raw(4, [0x80, 200, 0]),         // note off, key 200
                raw(5, [0x90, 255, 0]),         // note off (velocity 0), key 255
                raw(6, [0xA0, 200, 200]),       // poly pressure, key 200
                raw(7, [0xB0, 200, 10]),        // CC 200
                raw(8, [0xB0, 64, 200]),        // pedal, value 200
                raw(9, [0xC0, 200, 0]),         // program 200
                raw(10, [0xD0, 255, 0]),        // channel pressure 255
                raw(11, [0xE0, 255, 255]),      // pitch bend
                raw(12, [0x80, 60, 0]),         // the valid key's note-off, pedal still down
                raw(13, [0xB0, 64, 0]),         // pedal up
                raw(14, [0x90, 24 + 128, 100]), // a keyswitch key + 128
            ],
            &[],
        );
        s.run_blocks(4);
        s.block(&[], &[set(&inst, "Record A", 0.0)]);
        s.run_blocks(4);
        for n in &got {
            assert!(n.key <= 127 && n.channel <= 15, "{n:?}");
            assert!((0.0..=1.0).contains(&n.velocity), "{n:?}");
        }
        let keys: Vec<(bool, u16)> = got.iter().map(|n| (n.on, n.key)).collect();
        assert_eq!(keys, [(true, 60), (false, 60)]);
        assert_balanced(&s.notes);
        // The capture kept the valid note only.
        let snips = snippets(&Instance::state_json(&inst.save_state()));
        let notes = &snips["sections"][0]["notes"];
        assert_eq!(notes.as_array().map(Vec::len), Some(1), "{snips}");
        assert_eq!(notes[0]["pitch"], 60, "{snips}");
        inst.stop(s);
    });
}

#[test]
fn keyswitches_record_sections_and_are_consumed() {
    run_isolated("keyswitches_record_sections_and_are_consumed", || {
        let mut inst = Instance::load(&bundled_clap());
        let mut s = inst.start();
        s.playing = true;
        // D1 (26) toggles recording B.
        s.block(&[on(0, 26), off(50, 26)], &[]);
        let o = s.advance_to_beat(4.0);
        s.block(&[on(o, 72)], &[]);
        let o = s.advance_to_beat(6.0);
        s.block(&[off(o, 72)], &[]);
        s.run_until_beat(7.9);
        s.block(&[on(0, 26), off(10, 26)], &[]);
        // A moved keyswitch octave: C2 (36) is now "record A", the old C1 plays through.
        let base = set(&inst, "Keyswitch octave start", 36.0);
        s.block(&[on(0, 24), off(5, 24), on(10, 36), off(20, 36)], &[base]);
        let o = s.advance_to_beat(9.0);
        s.block(&[on(o, 48), off(o + 100, 48)], &[]);
        s.run_until_beat(12.0);
        s.block(&[on(0, 36), off(5, 36)], &[]);
        let out = s.notes.clone();
        inst.stop(s);
        // Only the played notes and the old keyswitch key (now an ordinary note) came out.
        let keys: Vec<(bool, u16)> = out.iter().map(|n| (n.on, n.key)).collect();
        assert_eq!(
            keys,
            vec![
                (true, 72),
                (false, 72),
                (true, 24),
                (false, 24),
                (true, 48),
                (false, 48)
            ]
        );
        let snips = snippets(&Instance::state_json(&inst.save_state()));
        let sections = snips["sections"].as_array().unwrap();
        let found: Vec<(&str, u64, usize)> = sections
            .iter()
            .map(|s| {
                (
                    s["section"].as_str().unwrap(),
                    s["bars"].as_u64().unwrap(),
                    s["notes"].as_array().unwrap().len(),
                )
            })
            .collect();
        // B: one note in bar 2, disarmed just before bar 3: one bar. A: bar 3, one bar.
        assert_eq!(found, vec![("A", 1, 1), ("B", 1, 1)], "{snips}");
    });
}

#[test]
fn transport_stop_ends_a_capture_and_deactivation_releases_held_notes() {
    run_isolated(
        "transport_stop_ends_a_capture_and_deactivation_releases_held_notes",
        || {
            let mut inst = Instance::load(&bundled_clap());
            let mut s = inst.start();
            s.playing = true;
            let arm = set(&inst, "Record C", 1.0);
            s.block(&[], &[arm]);
            let o = s.advance_to_beat(1.0);
            // Held through the stop: recorded up to where the music stopped.
            s.block(&[on(o, 55)], &[]);
            s.run_until_beat(6.5);
            s.playing = false;
            s.block(&[], &[]);
            // Played while stopped: passes through, not recorded.
            s.block(&[on(0, 57), off(100, 57)], &[]);
            // Deactivated with 55 still held: the first block after reactivation releases it.
            let before = s.notes.clone();
            inst.stop(s);
            let mut s = inst.start();
            let got = s.block(&[], &[]);
            assert_eq!(
                got.iter()
                    .map(|n| (n.on, n.key, n.sample))
                    .collect::<Vec<_>>(),
                vec![(false, 55, 0)]
            );
            let mut all = before;
            all.extend(got);
            assert_balanced(&all);
            inst.stop(s);

            let snips = snippets(&Instance::state_json(&inst.save_state()));
            let c = &snips["sections"][0];
            assert_eq!(c["section"], "C");
            // Stopped at 6.5 beats: the snippet ends on the nearest bar line after its last note (8).
            assert_eq!(c["bars"], 2, "{snips}");
            let notes = c["notes"].as_array().unwrap();
            assert_eq!(notes.len(), 1, "{snips}");
            assert_eq!(notes[0]["pitch"], 55);
            let len = notes[0]["length"].as_f64().unwrap();
            assert!(
                (len - 5.5).abs() < 0.02,
                "held note recorded up to the stop: {len}"
            );
        },
    );
}

#[test]
fn instances_can_be_created_and_destroyed_quickly() {
    run_isolated("instances_can_be_created_and_destroyed_quickly", || {
        let entry = Instance::load(&bundled_clap()).entry.clone();
        // Hosts create instances just to scan them, and tear projects down while they work.
        for round in 0..12 {
            let mut inst = Instance::from_entry(entry.clone());
            if round % 3 == 0 {
                continue;
            }
            let mut s = inst.start();
            s.playing = true;
            s.run_blocks(round);
            if round % 2 == 0 {
                inst.stop(s);
            } else {
                // Destroyed while still processing (the host's teardown path).
                drop(s);
            }
        }
    });
}

/// A fresh random-weight `tiny` checkpoint for this process.
fn tiny_model(name: &str) -> std::path::PathBuf {
    let dir = target_dir()
        .join("staria-host-test")
        .join("models")
        .join(format!("{name}-{}", std::process::id()));
    if !dir.join("config.json").exists() {
        tiny_checkpoint(&dir, name);
    }
    dir
}

const LOAD_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(180);

fn ready_with(model: &'static str) -> impl Fn(&serde_json::Value) -> bool {
    move |st| st["state"] == "ready" && st["model"] == model
}

/// Records a one-bar snippet into A over beats 4..8 (a scale in eighth notes).
fn capture_a(inst: &Instance, s: &mut Session) {
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
fn assert_still_plays(inst: &mut Instance, s: &mut Session) {
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

fn generated(notes: &[OutNote]) -> Vec<OutNote> {
    notes.iter().copied().filter(|n| n.channel == 2).collect()
}

/// Plays `notes` (generated only) and checks that the notes sounding before block `cut_sample`
/// were all released in that block, and that nothing started at or after it.
fn assert_released_at(notes: &[OutNote], cut_sample: u64) {
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

#[test]
fn generates_section_b_from_the_next_bar_and_releases_everything_on_stop() {
    run_isolated(
        "generates_section_b_from_the_next_bar_and_releases_everything_on_stop",
        || {
            let model = tiny_model("plugin-test-tiny");
            let mut inst = Instance::load(&bundled_clap());
            inst.set_model_path(&model);
            let mut s = inst.start();
            inst.wait_status(Some(&mut s), LOAD_TIMEOUT, ready_with("plugin-test-tiny"));
            s.playing = true;
            capture_a(&inst, &mut s);

            // Section B (the default), two bars, seed 7, on MIDI channel 3 (plain values count from
            // the parameter's minimum). A fixed seed makes every request below the same music.
            let setup = [
                set(&inst, "Output channel", 2.0),
                set(&inst, "Bars to generate", 1.0),
                set(&inst, "Seed (0 = random)", 7.0),
            ];
            s.block(&[], &setup);
            s.set_realtime(true);
            s.run_until_beat(9.0);
            // Triggered in bar 3 (beats 8..12): it starts on the bar 4 line, beat 12.
            s.block(&[], &[set(&inst, "Play section", 1.0)]);
            s.block(&[], &[set(&inst, "Play section", 0.0)]);
            s.run_until_beat(21.0);
            let first = generated(&s.notes);
            let ons: Vec<_> = first.iter().filter(|n| n.on).collect();
            assert!(
                !ons.is_empty(),
                "no generated notes; status {}",
                inst.status()
            );
            let (start, end) = (s.sample_of_beat(12.0), s.sample_of_beat(20.0));
            for n in &ons {
                assert!(
                    n.sample >= start && n.sample < end,
                    "note-on at sample {} outside {start}..{end}",
                    n.sample
                );
            }
            for n in first.iter().filter(|n| !n.on) {
                assert!(
                    n.sample <= end,
                    "note-off at sample {} after the section end {end}",
                    n.sample
                );
            }
            assert_balanced(&first);
            // Where the first note falls in the section, to cut the next ones just after it.
            let first_on_beats = (ons[0].sample - start) as f64 / s.samples_per_beat();

            // Again (from beat 24), stopped just after its first note: released at the stop.
            s.block(&[], &[set(&inst, "Play section", 1.0)]);
            s.block(&[], &[set(&inst, "Play section", 0.0)]);
            s.run_until_beat(24.0 + first_on_beats + 0.05);
            s.playing = false;
            let stop_sample = s.song_sample;
            s.block(&[], &[]);
            s.run_blocks(20);
            let second = generated(&s.notes);
            assert!(
                second.len() > first.len(),
                "the second section played nothing"
            );
            assert_released_at(&second, stop_sample);

            // Once more from the next bar line, bypassed just after its first note.
            s.playing = true;
            s.block(&[], &[set(&inst, "Play section", 1.0)]);
            s.block(&[], &[set(&inst, "Play section", 0.0)]);
            let next_bar = (s.beat() / 4.0).ceil() * 4.0;
            s.run_until_beat(next_bar + first_on_beats + 0.05);
            let bypass_sample = s.song_sample;
            s.block(&[], &[set(&inst, "Bypass", 1.0)]);
            s.run_blocks(100);
            let third = generated(&s.notes);
            assert!(
                third.len() > second.len(),
                "the third section played nothing"
            );
            assert_released_at(&third, bypass_sample);
            let st = inst.status();
            assert_eq!(st["last_error"], "", "{st}");
            inst.stop(s);
        },
    );
}

#[test]
fn a_bad_model_folder_keeps_the_old_model_and_reports_why() {
    run_isolated(
        "a_bad_model_folder_keeps_the_old_model_and_reports_why",
        || {
            let model = tiny_model("plugin-test-good");
            let bad = target_dir()
                .join("staria-host-test")
                .join(format!("not-a-model-{}", std::process::id()));
            std::fs::create_dir_all(&bad).unwrap();

            // Without any loadable model: silent, running, and saying why.
            let mut inst = Instance::load(&bundled_clap());
            inst.set_model_path(&bad);
            let mut s = inst.start();
            s.playing = true;
            let st = inst.wait_status(Some(&mut s), LOAD_TIMEOUT, |st| st["state"] == "error");
            assert!(
                st["last_error"].as_str().unwrap().contains("not-a-model"),
                "{st}"
            );
            s.block(&[], &[set(&inst, "Play section", 1.0)]);
            s.run_blocks(50);
            assert!(generated(&s.notes).is_empty());

            // A good model, then a bad one: the good one keeps serving, the error is reported.
            inst.set_model_path(&model);
            inst.wait_status(Some(&mut s), LOAD_TIMEOUT, ready_with("plugin-test-good"));
            inst.set_model_path(&bad);
            // (The last error until then is the refused request above: "no model loaded".)
            let st = inst.wait_status(Some(&mut s), LOAD_TIMEOUT, |st| {
                st["last_error"].as_str().unwrap().contains("not-a-model")
            });
            assert_eq!(st["model"], "plugin-test-good", "{st}");
            // ...and still plays.
            assert_still_plays(&mut inst, &mut s);
            inst.stop(s);
        },
    );
}

#[test]
fn instances_come_and_go_while_a_model_loads() {
    run_isolated("instances_come_and_go_while_a_model_loads", || {
        let model = tiny_model("plugin-test-churn");
        let entry = Instance::load(&bundled_clap()).entry.clone();
        // nice-plug's shared background worker would abort the host here if the plugin used it.
        // Destroying an instance returns at once, also while its model loads (the host's main
        // thread must not wait for the load).
        let mut slowest = std::time::Duration::ZERO;
        let mut while_loading = 0;
        for round in 0..10 {
            let mut inst = Instance::from_entry(entry.clone());
            inst.set_model_path(&model);
            let mut s = inst.start();
            s.playing = true;
            s.run_blocks(round);
            if round % 2 == 0 {
                // A second load while the first is in flight.
                inst.set_model_path(&model);
                inst.stop(s);
            } else {
                drop(s);
            }
            if inst.status()["state"] == "loading" {
                while_loading += 1;
            }
            let t = std::time::Instant::now();
            drop(inst);
            slowest = slowest.max(t.elapsed());
        }
        eprintln!("slowest destroy: {slowest:?} ({while_loading} of 10 while loading)");
        assert!(
            slowest < std::time::Duration::from_millis(100),
            "destroying an instance took {slowest:?}"
        );
        // The process is healthy: a new instance loads and plays.
        let mut inst = Instance::from_entry(entry);
        inst.set_model_path(&model);
        let mut s = inst.start();
        inst.wait_status(Some(&mut s), LOAD_TIMEOUT, ready_with("plugin-test-churn"));
        inst.stop(s);
    });
}

/// A host loop over bars 3..4 (beats 8..16), "Play section" pressed in its last bar: the
/// section starts on the loop's first bar (not on the loop end, which is never played) and plays
/// from the wrap on, the same notes at the same places on every pass; nothing hangs.
#[test]
fn a_trigger_in_a_loops_last_bar_plays_from_the_loop_start() {
    run_isolated(
        "a_trigger_in_a_loops_last_bar_plays_from_the_loop_start",
        || {
            let model = tiny_model("plugin-test-loop");
            let mut inst = Instance::load(&bundled_clap());
            inst.set_model_path(&model);
            let mut s = inst.start();
            inst.wait_status(Some(&mut s), LOAD_TIMEOUT, ready_with("plugin-test-loop"));
            s.playing = true;
            capture_a(&inst, &mut s);
            let setup = [
                set(&inst, "Output channel", 2.0),
                set(&inst, "Bars to generate", 0.0),
                set(&inst, "Seed (0 = random)", 7.0),
            ];
            s.block(&[], &setup);
            s.loop_beats = Some((8.0, 16.0));
            s.set_realtime(true);
            s.run_until_beat(13.0);
            s.block(&[], &[set(&inst, "Play section", 1.0)]);
            s.block(&[], &[set(&inst, "Play section", 0.0)]);
            // Three passes of the loop from the wrap: (pass, key, sample from the loop start).
            let mut passes: Vec<Vec<(u16, u64)>> = Vec::new();
            for _ in 0..3 {
                // To the wrap.
                while s.beat() >= 8.0 + 1e-9 {
                    s.block(&[], &[]);
                }
                let from = s.notes.len();
                let loop_start = s.song_sample;
                assert_eq!(loop_start, s.sample_of_beat(8.0));
                s.run_until_beat(16.0 - 512.0 / 24_000.0);
                passes.push(
                    generated(&s.notes[from..])
                        .iter()
                        .filter(|n| n.on)
                        .map(|n| (n.key, n.sample - loop_start))
                        .collect(),
                );
            }
            s.loop_beats = None;
            s.playing = false;
            s.block(&[], &[]);
            assert_balanced(&s.notes);
            eprintln!("note-ons (key, sample from the loop start) per pass: {passes:?}");
            assert!(!passes[0].is_empty(), "nothing played after the wrap");
            // Every note in the section's bar (beats 8..12 = the loop's first 96 000 samples).
            for p in &passes {
                assert!(p.iter().all(|&(_, at)| at < 96_000), "{p:?}");
            }
            assert_eq!(
                passes[0], passes[1],
                "the first pass after the wrap differs"
            );
            assert_eq!(passes[1], passes[2]);
            inst.stop(s);
        },
    );
}

/// The snippet generated from must be the same whether it was just played or restored from a
/// saved project: the same seed then gives the same notes.
#[test]
fn restored_snippets_reach_the_engine() {
    run_isolated("restored_snippets_reach_the_engine", || {
        let model = tiny_model("plugin-test-restore");
        let entry = Instance::load(&bundled_clap()).entry.clone();

        let play_b_from_beat_12 =
            |inst: &mut Instance, s: &mut Session, keyswitch: bool| -> Vec<(u16, u64)> {
                let setup = [
                    set(inst, "Output channel", 2.0),
                    set(inst, "Bars to generate", 0.0),
                    set(inst, "Seed (0 = random)", 7.0),
                ];
                s.block(&[], &setup);
                s.set_realtime(true);
                s.run_until_beat(10.0);
                if keyswitch {
                    // D#1 (the default keyswitch octave starts at C1 = MIDI 24): play B.
                    s.block(&[on(0, 27), off(10, 27)], &[]);
                } else {
                    s.block(&[], &[set(inst, "Play section", 1.0)]);
                }
                s.run_until_beat(17.0);
                let start = s.sample_of_beat(12.0);
                generated(&s.notes)
                    .iter()
                    .filter(|n| n.on)
                    .map(|n| (n.key, n.sample - start))
                    .collect()
            };

        let mut first = Instance::from_entry(entry.clone());
        first.set_model_path(&model);
        let mut s = first.start();
        first.wait_status(
            Some(&mut s),
            LOAD_TIMEOUT,
            ready_with("plugin-test-restore"),
        );
        s.playing = true;
        capture_a(&first, &mut s);
        let played = play_b_from_beat_12(&mut first, &mut s, false);
        first.stop(s);
        let state = first.save_state();
        drop(first);
        assert!(!played.is_empty(), "nothing generated");

        let mut second = Instance::from_entry(entry);
        second.load_state(&state);
        let mut s = second.start();
        second.wait_status(
            Some(&mut s),
            LOAD_TIMEOUT,
            ready_with("plugin-test-restore"),
        );
        s.playing = true;
        let restored = play_b_from_beat_12(&mut second, &mut s, true);
        second.stop(s);
        assert_eq!(
            restored, played,
            "a restored snippet generated different notes"
        );
    });
}

/// Checkpoint folders broken every way a file from outside can be (a billion layers, huge sizes,
/// sizes the weights lack, another vocabulary's weights, 2 GB files, truncated weights, a config
/// from the future: `staria_test_support::broken_checkpoints`), chosen as the custom model one
/// after another: each is refused before anything is allocated for it, the status names the
/// file and the setting, and the good model keeps playing.
#[test]
fn broken_checkpoints_are_refused_and_the_old_model_keeps_playing() {
    run_isolated(
        "broken_checkpoints_are_refused_and_the_old_model_keeps_playing",
        || {
            let model = tiny_model("plugin-test-good");
            let root = target_dir()
                .join("staria-host-test")
                .join(format!("broken-{}", std::process::id()));
            let broken = staria_test_support::broken_checkpoints(&root);
            let mut inst = Instance::load(&bundled_clap());
            inst.set_model_path(&model);
            let mut s = inst.start();
            inst.wait_status(Some(&mut s), LOAD_TIMEOUT, ready_with("plugin-test-good"));
            for b in &broken {
                inst.set_model_path(&b.dir);
                // Each case's folder is its own: its file in the message is this load's error.
                let file = b.dir.join(b.file).display().to_string();
                let st = inst.wait_status(Some(&mut s), LOAD_TIMEOUT, |st| {
                    st["last_error"].as_str().unwrap().contains(&file)
                });
                let err = st["last_error"].as_str().unwrap();
                assert!(
                    err.contains(&b.needle) && !err.contains('\n'),
                    "{}: {st}",
                    b.what
                );
                assert_eq!(st["model"], "plugin-test-good", "{}: {st}", b.what);
            }
            // ...and the good model still plays.
            assert_still_plays(&mut inst, &mut s);
            inst.stop(s);
            let _ = std::fs::remove_dir_all(&root);
        },
    );
}

/// Where the portability scenario's parent hands its scratch folder to the child process.
const PORTABLE_DIR_ENV: &str = "STARIA_HOST_TEST_PORTABLE_DIR";

#[test]
fn a_copied_bundle_plays_the_model_it_carries() {
    // The parent makes a scratch folder; the child copies the bundle into it, and finds the
    // model only through the bundle: `$STARIA_MODEL` is removed and the engine's resolver never
    // looks in the source tree (`staria_engine::default_model`), so the model must come out of
    // the plugin binary into the (empty) cache folder named here.
    let scratch = std::env::var_os(PORTABLE_DIR_ENV)
        .map(std::path::PathBuf::from)
        .unwrap_or_else(|| {
            let dir = target_dir()
                .join("staria-host-test")
                .join(format!("portable-{}", std::process::id()));
            let _ = std::fs::remove_dir_all(&dir);
            std::fs::create_dir_all(&dir).unwrap();
            dir
        });
    let cache = scratch.join("cache");
    run_isolated_with_env(
        "a_copied_bundle_plays_the_model_it_carries",
        &[
            (PORTABLE_DIR_ENV, scratch.as_os_str()),
            ("STARIA_CACHE_DIR", cache.as_os_str()),
        ],
        &["STARIA_MODEL"],
        || {
            let elsewhere = scratch.join("elsewhere");
            std::fs::create_dir_all(&elsewhere).unwrap();
            let copy = elsewhere.join("Staria.clap");
            std::fs::copy(bundled_clap(), &copy).unwrap();

            let mut inst = Instance::load(&copy);
            // Activated (the engine starts) with the transport stopped until the model is in.
            let mut s = inst.start();
            let st = inst.wait_status(Some(&mut s), LOAD_TIMEOUT, |st| st["state"] == "ready");
            assert_eq!(st["model"], "baseline-small", "{st}");
            let unpacked: Vec<_> = std::fs::read_dir(cache.join("models"))
                .expect("the model was unpacked into the cache folder")
                .map(|e| e.unwrap().path())
                .collect();
            assert_eq!(unpacked.len(), 1, "{unpacked:?}");
            assert!(unpacked[0].join("model.safetensors").is_file());

            s.playing = true;
            capture_a(&inst, &mut s);
            assert_still_plays(&mut inst, &mut s);
            // A transport stop releases what sounds.
            s.playing = false;
            let stop_sample = s.song_sample;
            s.block(&[], &[]);
            s.run_blocks(20);
            assert_released_at(&generated(&s.notes), stop_sample);
            inst.stop(s);
        },
    );
    let _ = std::fs::remove_dir_all(&scratch);
}

#[test]
fn a_corrupt_state_leaves_the_defaults_and_says_so() {
    run_isolated("a_corrupt_state_leaves_the_defaults_and_says_so", || {
        let model = tiny_model("plugin-test-corrupt-state");
        let mut inst = Instance::load(&bundled_clap());
        let fresh = inst.save_state();

        // A truncated state does not read at all: the host is told, the instance keeps its own.
        assert!(inst.try_load_state(&fresh[..fresh.len() / 2]).is_err());
        assert!(inst.try_load_state(b"").is_err());
        assert_eq!(inst.save_state(), fresh);

        // A state whose snippets field is damaged: it loads, the snippets start empty, the
        // model path (readable) is kept, and the status names the field.
        let with_model = with_field(
            &fresh,
            "model-path",
            &serde_json::Value::String(model.display().to_string()),
        );
        let damaged = with_field(
            &with_model,
            "snippets",
            &serde_json::Value::String("{\"sections\": [{\"section\": \"A\", ".into()),
        );
        inst.load_state(&damaged);
        let mut s = inst.start();
        let st = inst.wait_status(Some(&mut s), LOAD_TIMEOUT, |st| {
            st["state"] == "ready" && st["last_error"].as_str().unwrap().contains("`snippets`")
        });
        assert_eq!(st["model"], "plugin-test-corrupt-state", "{st}");
        let state = Instance::state_json(&inst.save_state());
        assert_eq!(snippets(&state)["sections"], serde_json::json!([]));
        // ...and it plays.
        assert_still_plays(&mut inst, &mut s);
        inst.stop(s);
    });
}
