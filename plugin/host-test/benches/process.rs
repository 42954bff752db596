//! `process()` time per 512-sample block at 48 kHz while the engine generates, measured from a
//! real CLAP host on the release bundle. Blocks are paced like an audio callback (one every
//! 10.7 ms) so the engine generates in real time next to the audio thread.
//!
//! `cargo bench -p staria-plugin-host-test --bench process` (bundles the release plugin first).
//! Prints criterion's estimate and the p50/p99/max over every measured block.

use criterion::{Criterion, criterion_group, criterion_main};
use staria_plugin_host_test::*;
use std::time::Duration;

fn set(inst: &Instance, name: &str, value: f64) -> (clack_host::utils::ClapId, f64) {
    (inst.param(name).id, value)
}

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    sorted[((sorted.len() - 1) as f64 * p).round() as usize]
}

fn process_while_generating(c: &mut Criterion) {
    let model = target_dir()
        .join("staria-host-test")
        .join("models")
        .join("bench-tiny");
    if !model.join("config.json").exists() {
        tiny_checkpoint(&model, "bench-tiny");
    }
    let mut inst = Instance::load(&bundled_clap());
    inst.set_model_path(&model);
    let mut s = inst.start();
    inst.wait_status(Some(&mut s), Duration::from_secs(120), |st| {
        st["state"] == "ready"
    });
    s.playing = true;

    // Capture A: a bar of eighth notes.
    s.block(&[], &[set(&inst, "Record A", 1.0)]);
    for (i, key) in [60u16, 62, 64, 65, 67, 69, 71, 72].into_iter().enumerate() {
        let o = s.advance_to_beat(4.0 + i as f64 * 0.5);
        s.block(
            &[InNote::On {
                offset: o,
                key,
                velocity: 0.8,
            }],
            &[],
        );
        let o = s.advance_to_beat(4.4 + i as f64 * 0.5);
        s.block(&[InNote::Off { offset: o, key }], &[]);
    }
    s.run_until_beat(8.0);
    s.block(&[], &[set(&inst, "Record A", 0.0)]);

    // Generate B for 64 bars (the longest section), starting right away, and keep playing.
    s.set_realtime(true);
    let trigger = [
        set(&inst, "Bars to generate", 63.0),
        set(&inst, "Play immediately", 1.0),
        set(&inst, "Play section", 1.0),
    ];
    s.block(&[], &trigger);
    s.run_blocks(100);
    s.timing = true;

    let mut group = c.benchmark_group("plugin");
    // Criterion plans iterations from wall time, which pacing sets to 10.7 ms a block: 16 s is
    // about 1 500 blocks (a minute of music at 48 kHz is 5 625).
    group
        .sample_size(10)
        .warm_up_time(Duration::from_secs(1))
        .measurement_time(Duration::from_secs(16));
    group.bench_function("process_512_while_generating", |b| {
        b.iter_custom(|iters| {
            let start = s.process_times.len();
            for _ in 0..iters {
                s.block(&[], &[]);
            }
            s.process_times[start..].iter().sum()
        })
    });
    group.finish();

    let mut times = s.process_times.clone();
    times.sort();
    let notes = s.notes.iter().filter(|n| n.on).count();
    let status = inst.status();
    println!(
        "process() over {} blocks while generating: p50 {:?}, p99 {:?}, max {:?}; {notes} notes played; engine {}",
        times.len(),
        percentile(&times, 0.5),
        percentile(&times, 0.99),
        times[times.len() - 1],
        status
    );
    assert!(
        notes > 0,
        "the engine generated nothing during the benchmark"
    );
    inst.stop(s);
}

criterion_group!(benches, process_while_generating);
criterion_main!(benches);
