//! `FastDecoder::step` / `prefill` / `set_latents` never touch the heap: a counting global
//! allocator (this test binary only) sees zero allocations across them.

use candle_core::{Device, Tensor};
use staria_models::fast::{FastConfig, FastDecoder, WeightFormat};
use staria_test_support::{CountingAlloc, count_allocs};

#[global_allocator]
static GLOBAL: CountingAlloc = CountingAlloc;

fn model(cfg: &FastConfig, format: WeightFormat) -> FastDecoder {
    let mut seed = 1u64;
    FastDecoder::from_tensors(cfg, format, |name| {
        let shape: Vec<usize> = match name {
            n if n.ends_with("gate") => vec![1],
            n if n.ends_with("norm.weight") => vec![cfg.dim],
            "tok_emb.weight" | "lm_head.weight" => vec![cfg.vocab_size, cfg.dim],
            n if n.ends_with("qkv.weight") => vec![3 * cfg.dim, cfg.dim],
            n if n.ends_with(".kv.weight") => vec![2 * cfg.dim, cfg.dim],
            n if n.ends_with("w1.weight") || n.ends_with("w3.weight") => {
                vec![cfg.ff_mult * cfg.dim, cfg.dim]
            }
            n if n.ends_with("w2.weight") => vec![cfg.dim, cfg.ff_mult * cfg.dim],
            _ => vec![cfg.dim, cfg.dim],
        };
        let n: usize = shape.iter().product();
        let v: Vec<f32> = (0..n)
            .map(|_| {
                seed = seed
                    .wrapping_mul(6364136223846793005)
                    .wrapping_add(1442695040888963407);
                ((seed >> 40) as f32 / (1u64 << 24) as f32 - 0.5) * 0.2
            })
            .collect();
        Ok(Tensor::from_vec(v, shape, &Device::Cpu)?)
    })
    .unwrap()
}

#[test]
fn decode_does_not_allocate() {
    let mut cfg = FastConfig::decoder(300, 64, 2, 4, 4, 256);
    cfg.cross_every = 1;
    cfg.max_latents = 16;
    let prompt: Vec<u32> = (0..100).map(|i| (i * 7 % 300) as u32).collect();
    let latents = vec![0.25f32; 10 * 64];
    for format in WeightFormat::ALL {
        let mut dec = model(&cfg, format);
        // Warm-up outside the counted region (lazy statics, feature detection caches).
        dec.step(1).unwrap();
        dec.reset();

        let ((), allocs) = count_allocs(|| {
            dec.set_latents(&latents, 10).unwrap();
            let mut tok = dec.prefill(&prompt).unwrap().len() as u32 % 300;
            for _ in 0..120 {
                let logits = dec.step(tok).unwrap();
                // Greedy: argmax as the next token.
                tok = logits
                    .iter()
                    .enumerate()
                    .fold((0, f32::MIN), |b, (i, &v)| if v > b.1 { (i, v) } else { b })
                    .0 as u32;
            }
            dec.truncate(50);
            dec.step(tok).unwrap();
            dec.reset();
            dec.step(tok).unwrap();
        });
        assert_eq!(allocs, 0, "{format:?}: {allocs} allocations while decoding");
        assert_eq!(dec.position(), 1);
        // The counter works: a Vec counts.
        let (v, allocs) = count_allocs(|| std::hint::black_box(vec![1u8; 10]));
        assert!(allocs > 0 && v.len() == 10);
    }
}
