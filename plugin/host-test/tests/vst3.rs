//! `Staria.vst3` in a minimal VST3 host (`staria_plugin_host_test::vst3_host`): the bundle the
//! bundler writes is opened like a DAW opens it (dlopen, `ModuleEntry`, `GetPluginFactory`), and
//! checked for the same basics as the CLAP host test: it loads, declares its buses, passes audio
//! and MIDI through, and plays generated notes from the model it carries, triggered by parameter
//! changes (`IParameterChanges`) as a host's automation would.

use staria_plugin_host_test::vst3_host::{Bus, Vst3Module, Vst3Session};
use staria_plugin_host_test::*;
use std::sync::Arc;
use std::time::{Duration, Instant};

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

const LOAD_TIMEOUT: Duration = Duration::from_secs(180);

/// Records a one-bar snippet into A over beats 4..8 (a scale in eighth notes), as
/// `tests/host.rs` does through CLAP.
fn capture_a(inst: &vst3_host::Vst3Instance, s: &mut Vst3Session) {
    s.run_until_beat(3.0);
    s.block(&[], &[inst.set("Record A", 1.0)]);
    for (i, key) in [60u16, 62, 64, 65, 67, 69, 71, 72].into_iter().enumerate() {
        let beat = 4.0 + i as f64 * 0.5;
        let o = s.advance_to_beat(beat);
        s.block(&[on(o, key)], &[]);
        let o = s.advance_to_beat(beat + 0.4);
        s.block(&[off(o, key)], &[]);
    }
    s.run_until_beat(8.0);
    s.block(&[], &[inst.set("Record A", 0.0)]);
}

#[test]
fn the_vst3_bundle_loads_declares_its_buses_passes_audio_and_notes_and_generates() {
    let bundle = bundled_vst3();
    // The parent's private copy of the bundle (hundreds of MB in debug) goes when the test ends,
    // passed or failed.
    let _cleanup = RemoveOnDrop(bundle.clone());
    run_isolated_with_env(
        "the_vst3_bundle_loads_declares_its_buses_passes_audio_and_notes_and_generates",
        &[(VST3_ENV, bundle.as_os_str())],
        &[],
        || {
            // It loads: the Linux entry point, the factory, one audio module class.
            let module = Arc::new(Vst3Module::load(&bundled_vst3()).expect("load Staria.vst3"));
            assert!(module.module_entry_called, "ModuleEntry is not exported");
            let classes = module.classes();
            println!("VST3 classes: {classes:?}");
            let audio: Vec<_> = classes
                .iter()
                .filter(|c| c.category == "Audio Module Class")
                .collect();
            assert_eq!(audio.len(), 1, "{classes:?}");
            assert_eq!(audio[0].name, "Staria");
            let mut inst = module.create_audio_module().expect("create Staria");
            assert!(
                inst.controller.is_some(),
                "no IEditController on the component"
            );
            for name in [
                "Pass input through",
                "Record A",
                "Play section",
                "Play immediately",
                "Output channel",
            ] {
                inst.param(name);
            }
            println!("VST3 parameters: {}", inst.params.len());

            // Its buses: stereo main audio in and out, one event bus each way.
            let buses = inst.buses();
            println!("VST3 buses: {buses:?}");
            let stereo_main = |b: &Bus| b.channels == 2 && b.bus_type == 0;
            assert_eq!(buses.audio_in.len(), 1, "{buses:?}");
            assert_eq!(buses.audio_out.len(), 1, "{buses:?}");
            assert!(stereo_main(&buses.audio_in[0]), "{buses:?}");
            assert!(stereo_main(&buses.audio_out[0]), "{buses:?}");
            assert_eq!(buses.event_in.len(), 1, "{buses:?}");
            assert_eq!(buses.event_out.len(), 1, "{buses:?}");

            // Audio passes through: a sine in comes out bit for bit on both channels, with a
            // subnormal and a NaN sample flushed to zero.
            let mut s = inst.start();
            s.playing = true;
            s.set_input_audio(|i| match i {
                7 => 1e-40,
                9 => f32::NAN,
                _ => (i as f32 * 0.05).sin() * 0.5,
            });
            // MIDI passes through on the channel it came in on (channel 4 here).
            let got = s.block_on(3, &[on(10, 60), off(300, 60), on(300, 64)], &[]);
            for (ch, out) in s.last_audio.iter().enumerate() {
                for (i, &x) in out.iter().enumerate() {
                    let want = match i {
                        7 | 9 => 0.0f32,
                        _ => (i as f32 * 0.05).sin() * 0.5,
                    };
                    assert_eq!(x.to_bits(), want.to_bits(), "channel {ch} sample {i}");
                }
            }
            let seen: Vec<_> = got
                .iter()
                .map(|n| (n.sample, n.on, n.channel, n.key))
                .collect();
            assert_eq!(
                seen,
                vec![(10, true, 3, 60), (300, false, 3, 60), (300, true, 3, 64)]
            );
            let got = s.block_on(3, &[off(5, 64)], &[]);
            assert_eq!(
                got.iter()
                    .map(|n| (n.on, n.channel, n.key))
                    .collect::<Vec<_>>(),
                vec![(false, 3, 64)]
            );
            // A parameter change through IParameterChanges reaches the plugin: pass-through off
            // holds new notes back.
            let got = s.block(
                &[on(6, 67), off(7, 67)],
                &[inst.set("Pass input through", 0.0)],
            );
            assert!(got.is_empty(), "pass-through off still sent {got:?}");
            s.block(&[], &[inst.set("Pass input through", 1.0)]);
            s.set_input_audio(|_| 0.0);
            // Stop and return to zero while the model loads.
            s.playing = false;
            s.block(&[], &[]);
            s.song_sample = 0;

            // Generated notes: the model the bundle carries, section A captured from played
            // notes, then played at once on MIDI channel 3 (all by parameter changes).
            let t0 = Instant::now();
            let st = inst.wait_status(&mut s, LOAD_TIMEOUT, |st| st["state"] == "ready");
            println!(
                "model ready after {:.1} s: {st}",
                t0.elapsed().as_secs_f64()
            );
            s.playing = true;
            capture_a(&inst, &mut s);
            let setup = [
                inst.set("Play section", 0.0),
                inst.set("Play immediately", 1.0),
                inst.set("Output channel", 2.0),
            ];
            s.block(&[], &setup);
            s.set_realtime(true);
            s.block(&[], &[inst.set("Play section", 1.0)]);
            let generated = |s: &Vst3Session| -> Vec<OutNote> {
                s.notes.iter().copied().filter(|n| n.channel == 2).collect()
            };
            let t1 = Instant::now();
            for _ in 0..15 {
                s.run_blocks(100);
                if generated(&s).iter().filter(|n| n.on).count() >= 4 {
                    break;
                }
            }
            let ons = generated(&s).iter().filter(|n| n.on).count();
            assert!(
                ons > 0,
                "no generated notes on channel 3; status {}",
                inst.field("status")
            );
            println!(
                "generated {ons} note-ons within {:.1} s of the trigger",
                t1.elapsed().as_secs_f64()
            );
            // A transport stop releases everything that sounds.
            s.playing = false;
            s.block(&[], &[]);
            s.run_blocks(20);
            assert_balanced(&generated(&s));
            let st = inst.field("status");
            assert_eq!(st["last_error"], "", "{st}");
            inst.stop(s);
            drop(inst);
            drop(module);
        },
    );
}

struct RemoveOnDrop(std::path::PathBuf);

impl Drop for RemoveOnDrop {
    fn drop(&mut self) {
        if std::env::var_os(VST3_ENV).is_none() {
            let _ = std::fs::remove_dir_all(&self.0);
        }
    }
}
