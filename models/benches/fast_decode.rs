//! One decode step of the fast CPU path on the `small` shape (6 layers, dim 256, 4 heads,
//! ff_mult 4, vocab 2765), single thread, after a 512-token prefill (and after a 4000-token one,
//! to show the attention cost over a long cache), for each weight format; and the 512-token
//! prefill itself (chunked, see `PREFILL_CHUNK`).
//!
//! `cargo bench -p staria-models --bench fast_decode -- --warm-up-time 2 --measurement-time 5`

use std::hint::black_box;

use candle_core::{Device, Tensor};
use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use staria_models::fast::{FastConfig, FastDecoder, WeightFormat};

fn small_model(format: WeightFormat) -> FastDecoder {
    let cfg = FastConfig::small(2765);
    let mut seed = 0x5eed_u64;
    FastDecoder::from_tensors(&cfg, format, |name| {
        let (d, v, f) = (cfg.dim, cfg.vocab_size, cfg.ff_mult * cfg.dim);
        let (shape, fan_in): (Vec<usize>, usize) = match name {
            n if n.ends_with("norm.weight") => (vec![d], 0),
            "tok_emb.weight" => (vec![v, d], 0),
            "lm_head.weight" => (vec![v, d], d),
            n if n.ends_with("qkv.weight") => (vec![3 * d, d], d),
            n if n.ends_with("w1.weight") || n.ends_with("w3.weight") => (vec![f, d], d),
            n if n.ends_with("w2.weight") => (vec![d, f], f),
            _ => (vec![d, d], d),
        };
        let scale = if fan_in == 0 {
            1.0
        } else {
            1.7 / (fan_in as f32).sqrt()
        };
        let n: usize = shape.iter().product();
        let vals: Vec<f32> = (0..n)
            .map(|_| {
                seed = seed
                    .wrapping_mul(6364136223846793005)
                    .wrapping_add(1442695040888963407);
                let u = (seed >> 40) as f32 / (1u64 << 24) as f32 * 2.0 - 1.0;
                if fan_in == 0 && name.ends_with("norm.weight") {
                    1.0 + 0.1 * u
                } else {
                    u * scale
                }
            })
            .collect();
        Ok(Tensor::from_vec(vals, shape, &Device::Cpu)?)
    })
    .expect("small model builds")
}

fn bench(c: &mut Criterion) {
    let mut group = c.benchmark_group("fast_decode/prefill_512");
    group.throughput(Throughput::Elements(512));
    group.sample_size(20);
    let prompt: Vec<u32> = (0..512u32).map(|i| (i * 37 + 11) % 2765).collect();
    for format in WeightFormat::ALL {
        let mut dec = small_model(format);
        group.bench_function(format.name(), |b| {
            b.iter(|| {
                dec.reset();
                let logits = dec.prefill(black_box(&prompt)).expect("prefill");
                black_box(logits[0])
            })
        });
    }
    group.finish();

    for ctx in [1usize, 512, 4000] {
        let mut group = c.benchmark_group(format!("fast_decode/step_after_{ctx}"));
        group.throughput(Throughput::Elements(1));
        for format in WeightFormat::ALL {
            let mut dec = small_model(format);
            let prompt: Vec<u32> = (0..ctx as u32).map(|i| (i * 37 + 11) % 2765).collect();
            dec.prefill(&prompt).expect("prefill");
            eprintln!(
                "{}: {:.1} MB of packed weights, kernels {:?}",
                format.name(),
                dec.weight_bytes() as f64 / 1e6,
                dec.isa()
            );
            group.bench_function(format.name(), |b| {
                b.iter(|| {
                    dec.truncate(ctx);
                    let logits = dec.step(black_box(42)).expect("step");
                    black_box(logits[0])
                })
            });
        }
        group.finish();
    }
}

criterion_group!(benches, bench);
criterion_main!(benches);
