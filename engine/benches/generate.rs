//! Per-token cost of the generation side: masking and sampling alone (what the engine adds on
//! top of the model), and a whole `generate` call on a randomly initialised `small` model, on the
//! candle backend and on the fast backend in each weight format.

use std::hint::black_box;

use candle_core::{DType, Device};
use candle_nn::{VarBuilder, VarMap};
use criterion::{Criterion, criterion_group, criterion_main};
use staria_engine::constraints::{ConstrainedDecoder, Constraints, Scale, ScaleKind};
use staria_engine::generate::{Flow, GenRequest, Generator, Snippets, Target};
use staria_engine::sampling::{Sampler, SamplingParams};
use staria_models::fast::{FastConfig, FastDecoder, WeightFormat};
use staria_models::model::{AnyModel, ModelConfig, ModelKind};
use staria_models::tokenizer::{Tokenizer, TokenizerConfig};
use staria_models::{Note, SectionLabel};

fn logits(n: usize) -> Vec<f32> {
    // Deterministic, varied logits: a few clear favourites over a long tail.
    (0..n)
        .map(|i| ((i * 7919) % 1000) as f32 / 100.0 - 5.0)
        .collect()
}

fn bench_mask_and_sample(c: &mut Criterion) {
    let tok = Tokenizer::new(TokenizerConfig::default()).unwrap();
    let base = logits(tok.vocab_size());
    let cons = Constraints {
        pitch_min: 48,
        pitch_max: 84,
        scale: Some(Scale::new(0, ScaleKind::Major)),
        max_polyphony: Some(4),
        ..Constraints::default()
    };
    let cd = ConstrainedDecoder::new(&tok, &cons).unwrap();
    let mut sampler = Sampler::new(tok.vocab_size(), SamplingParams::default());
    let mut buf = base.clone();
    c.bench_function("mask_and_sample_note_position", |b| {
        b.iter(|| {
            buf.copy_from_slice(&base);
            cd.apply(&mut buf);
            black_box(sampler.sample(&buf).unwrap())
        })
    });
}

fn bench_generate(c: &mut Criterion) {
    let tok = Tokenizer::new(TokenizerConfig::default()).unwrap();
    let cfg = ModelConfig::preset(ModelKind::Decoder, "small", tok.vocab_size()).unwrap();
    let vars = VarMap::new();
    let model = AnyModel::new(
        &cfg,
        VarBuilder::from_varmap(&vars, DType::F32, &Device::Cpu),
    )
    .unwrap();
    let mut generators = vec![("candle", Generator::new(model, tok.clone()).unwrap())];
    for format in WeightFormat::ALL {
        let fast = FastDecoder::from_varmap(&FastConfig::from(&cfg), format, &vars).unwrap();
        let name = match format {
            WeightFormat::F32 => "fast_f32",
            WeightFormat::F16 => "fast_f16",
            WeightFormat::Q8 => "fast_q8",
        };
        generators.push((name, Generator::new_fast(fast, None, tok.clone()).unwrap()));
    }
    let mut snippets = Snippets::default();
    let notes: Vec<Note> = (0..16u32)
        .map(|k| Note {
            pitch: 60 + (k % 8) as u8,
            velocity: 80,
            channel: 0,
            program: 0,
            start_tick: k as u64 * 240,
            end_tick: k as u64 * 240 + 230,
            start_ms: k as f64 * 250.0,
            end_ms: k as f64 * 250.0 + 240.0,
        })
        .collect();
    snippets.set(SectionLabel::A, notes);
    let mut req = GenRequest::new(Target::Section(SectionLabel::A), 4, 120.0);
    req.constraints.max_polyphony = Some(3);
    let mut group = c.benchmark_group("generate");
    group.sample_size(10);
    for (name, g) in &mut generators {
        group.bench_function(format!("small_random_32_notes_{name}"), |b| {
            b.iter(|| {
                let mut n = 0;
                g.generate(&snippets, &req, &mut |_| {
                    n += 1;
                    if n >= 32 { Flow::Stop } else { Flow::Continue }
                })
                .unwrap()
            })
        });
    }
    group.finish();
}

criterion_group!(benches, bench_mask_and_sample, bench_generate);
criterion_main!(benches);
