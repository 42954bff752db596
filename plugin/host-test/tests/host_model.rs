//! The bundled Staria.clap in a real CLAP host with a model loaded: generation, model loading
//! and swapping, loops, restored snippets, broken checkpoints, a copied bundle. 48 kHz,
//! 512-sample blocks, 120 bpm in 4/4; each scenario runs in its own process.

use staria_plugin_host_test::scenario::*;
use staria_plugin_host_test::*;

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
