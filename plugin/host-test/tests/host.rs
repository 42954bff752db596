//! The bundled Staria.clap in a real CLAP host: 48 kHz, 512-sample blocks, a running transport
//! at 120 bpm in 4/4. Each scenario runs in its own process (the debug bundle aborts on an
//! allocation in `process()`).

use staria_plugin_host_test::scenario::*;
use staria_plugin_host_test::*;

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
