//! One incremental decode step of the `small` presets on CPU, batch 1, after a 512-token
//! prefill (vocab 2,765, roughly the tokenizer's size). Each iteration feeds one token and then
//! rewinds the cache to 512, so every measured step attends over the same 513 positions.
//!
//! `cargo bench -p staria-models --bench decode_step -- --warm-up-time 2 --measurement-time 5`

use std::collections::HashMap;
use std::hint::black_box;

use candle_core::{DType, Device, Tensor};
use candle_nn::{VarBuilder, VarMap};
use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use staria_models::{AnyModel, ModelConfig, ModelKind, Prompt, SectionLabel};

const VOCAB: usize = 2765;
const PREFILL: usize = 512;

fn tokens(n: usize, seed: u64) -> Vec<u32> {
    let mut s = seed;
    (0..n)
        .map(|_| {
            s = s
                .wrapping_mul(6364136223846793005)
                .wrapping_add(1442695040888963407);
            ((s >> 33) % VOCAB as u64) as u32
        })
        .collect()
}

/// Random weights as plain tensors, the way a checkpoint loads (no gradient tracking).
fn model(kind: ModelKind) -> AnyModel {
    let cfg = ModelConfig::preset(kind, "small", VOCAB).unwrap();
    let vm = VarMap::new();
    AnyModel::new(&cfg, VarBuilder::from_varmap(&vm, DType::F32, &Device::Cpu)).unwrap();
    let weights: HashMap<String, Tensor> = vm
        .data()
        .lock()
        .unwrap()
        .iter()
        .map(|(k, v)| (k.clone(), v.as_tensor().detach()))
        .collect();
    let mut model = AnyModel::new(
        &cfg,
        VarBuilder::from_tensors(weights, DType::F32, &Device::Cpu),
    )
    .unwrap();
    let prefill = tokens(PREFILL, 1);
    let prompt = Prompt {
        inline: prefill.clone(),
        decoder: prefill,
        snippets: vec![
            (SectionLabel::A, tokens(128, 2)),
            (SectionLabel::B, tokens(128, 3)),
        ],
    };
    model.begin(&prompt).unwrap();
    model
}

fn decode_step(c: &mut Criterion) {
    let mut group = c.benchmark_group("decode_step");
    group.throughput(Throughput::Elements(1));
    for (name, kind) in [
        ("decoder_small_512", ModelKind::Decoder),
        ("staria_small_512", ModelKind::Staria),
    ] {
        let mut m = model(kind);
        assert_eq!(m.position(), PREFILL);
        group.bench_function(name, |b| {
            b.iter(|| {
                let logits = m.step(black_box(7)).unwrap();
                m.truncate(PREFILL);
                logits
            })
        });
    }
    group.finish();
}

criterion_group!(benches, decode_step);
criterion_main!(benches);
