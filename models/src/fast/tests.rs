//! Chunked prefill against one step per token: logits and the whole KV cache must be equal bit
//! for bit, for every weight format, instruction set and model kind (here, with access to the
//! private cache; the public behaviour is also covered by `tests/fast_reference.rs`).

use candle_core::{Device, Tensor};

use super::{FastConfig, FastDecoder, Isa, KvStore, PREFILL_CHUNK, WeightFormat};
use crate::error::Error;

/// An adapter hidden size that is not a multiple of the padding (its SwiGLU rows have padding
/// lanes that a wider trunk SwiGLU writes to).
const ADAPTER_HIDDEN: usize = 48;

fn lcg(seed: &mut u64) -> f32 {
    *seed = seed
        .wrapping_mul(6364136223846793005)
        .wrapping_add(1442695040888963407);
    ((*seed >> 40) as f32 / (1u64 << 24) as f32) * 2.0 - 1.0
}

/// Random weights of roughly unit-variance activations, built anew for every decoder (the same
/// seed gives the same weights).
fn model(cfg: &FastConfig, format: WeightFormat, isa: Isa) -> FastDecoder {
    let mut seed = 99u64;
    let (d, v, f, ld) = (
        cfg.dim,
        cfg.vocab_size,
        cfg.ff_mult * cfg.dim,
        cfg.latent_dim(),
    );
    let mut dec = FastDecoder::from_tensors(cfg, format, |name| {
        let (shape, scale): (Vec<usize>, f32) = match name {
            n if n.ends_with("gate") => (vec![1], 1.0),
            n if n.ends_with("norm.weight") => (vec![d], 0.2),
            "tok_emb.weight" => (vec![v, d], 1.0),
            "lm_head.weight" => (vec![v, d], 1.7 / (d as f32).sqrt()),
            n if n.ends_with("qkv.weight") => (vec![3 * d, d], 1.7 / (d as f32).sqrt()),
            n if n.ends_with(".kv.weight") => (vec![2 * d, ld], 1.7 / (ld as f32).sqrt()),
            n if n.starts_with("xattn")
                && (n.ends_with("w1.weight") || n.ends_with("w3.weight")) =>
            {
                (vec![ADAPTER_HIDDEN, d], 1.7 / (d as f32).sqrt())
            }
            n if n.starts_with("xattn") && n.ends_with("w2.weight") => (
                vec![d, ADAPTER_HIDDEN],
                1.7 / (ADAPTER_HIDDEN as f32).sqrt(),
            ),
            n if n.ends_with("w1.weight") || n.ends_with("w3.weight") => {
                (vec![f, d], 1.7 / (d as f32).sqrt())
            }
            n if n.ends_with("w2.weight") => (vec![d, f], 1.7 / (f as f32).sqrt()),
            _ => (vec![d, d], 1.7 / (d as f32).sqrt()),
        };
        let n: usize = shape.iter().product();
        let vals: Vec<f32> = (0..n)
            .map(|_| {
                let u = lcg(&mut seed);
                if name.ends_with("norm.weight") {
                    1.0 + scale * u
                } else {
                    scale * u
                }
            })
            .collect();
        Ok(Tensor::from_vec(vals, shape, &Device::Cpu)?)
    })
    .unwrap();
    dec.limit_isa(isa);
    dec
}

/// The configs: a plain decoder whose sizes are multiples of the padding, one with padded rows
/// and head dim 20, and a Staria decoder (a cross site after every second layer).
fn configs() -> Vec<(&'static str, FastConfig)> {
    let a = FastConfig::decoder(97, 64, 2, 4, 2, 160);
    let mut b = FastConfig::decoder(61, 40, 3, 2, 3, 160);
    b.rope_theta = 10_000.0;
    let mut c = FastConfig::decoder(53, 64, 4, 4, 2, 160);
    c.cross_every = 2;
    c.max_latents = 8;
    c.latent_dim = Some(24);
    vec![("decoder", a), ("padded", b), ("staria", c)]
}

fn tokens(cfg: &FastConfig, n: usize) -> Vec<u32> {
    let mut seed = 5u64;
    (0..n)
        .map(|_| {
            ((lcg(&mut seed) + 1.0) * 0.5 * cfg.vocab_size as f32) as u32 % cfg.vocab_size as u32
        })
        .collect()
}

fn bits(v: &[f32]) -> Vec<u32> {
    v.iter().map(|x| x.to_bits()).collect()
}

/// Asserts `got == want` bit for bit, naming the first difference.
fn assert_same(got: &[f32], want: &[f32], what: &str) {
    assert_eq!(got.len(), want.len(), "{what}");
    if let Some(i) = (0..got.len()).find(|&i| got[i].to_bits() != want[i].to_bits()) {
        panic!("{what}: index {i}: {} vs {}", got[i], want[i]);
    }
}

/// The cache as raw bits (f32 or f16 elements widened), keys then values.
fn cache_bits(dec: &FastDecoder) -> Vec<u32> {
    match &dec.s.kv {
        KvStore::F32 { kt, v } => bits(kt).into_iter().chain(bits(v)).collect(),
        KvStore::F16 { kt, v } => kt.iter().chain(v.iter()).map(|x| *x as u32).collect(),
    }
}

/// Prefill pieces (lengths): a single token, a piece shorter than a chunk, one of exactly a
/// chunk, pieces of several chunks with a remainder, each after the tokens already cached (so
/// chunks start at positions that are not multiples of the chunk or of a key block).
const PIECES: [usize; 6] = [
    1,
    13,
    PREFILL_CHUNK,
    2 * PREFILL_CHUNK + 7,
    3,
    PREFILL_CHUNK + 1,
];

#[test]
fn chunked_prefill_equals_stepping_bit_for_bit() {
    let total: usize = PIECES.iter().sum();
    for (name, cfg) in configs() {
        let toks = tokens(&cfg, total + 5);
        let mut seed = 7u64;
        let latents: Vec<f32> = (0..5 * cfg.latent_dim()).map(|_| lcg(&mut seed)).collect();
        // The Staria config runs with and without latents (its sites skipped).
        let with_latents: &[bool] = if cfg.cross_every > 0 {
            &[true, false]
        } else {
            &[false]
        };
        for &lat in with_latents {
            for format in WeightFormat::ALL {
                for isa in Isa::available() {
                    let what = format!("{name} latents {lat} {format:?} {isa:?}");
                    let mut stepped = model(&cfg, format, isa);
                    let mut chunked = model(&cfg, format, isa);
                    if lat {
                        stepped.set_latents(&latents, 5).unwrap();
                        chunked.set_latents(&latents, 5).unwrap();
                    }
                    let mut at = 0;
                    for &len in &PIECES {
                        let piece = &toks[at..at + len];
                        let mut last = Vec::new();
                        for &t in piece {
                            last = stepped.step(t).unwrap().to_vec();
                        }
                        let got = chunked.prefill(piece).unwrap().to_vec();
                        at += len;
                        assert_eq!(chunked.position(), at, "{what}");
                        assert_same(&got, &last, &format!("{what}: logits after {at}"));
                        assert!(
                            cache_bits(&chunked) == cache_bits(&stepped),
                            "{what}: KV cache after {at}"
                        );
                    }
                    // Decoding goes on identically from the prefilled cache.
                    for &t in &toks[at..] {
                        let want = stepped.step(t).unwrap().to_vec();
                        assert_same(chunked.step(t).unwrap(), &want, &format!("{what}: step"));
                    }
                }
            }
        }
    }
}

#[test]
fn a_rejected_prefill_changes_nothing() {
    let (_, cfg) = configs().remove(0);
    let toks = tokens(&cfg, 3 * PREFILL_CHUNK);
    for format in WeightFormat::ALL {
        let mut dec = model(&cfg, format, Isa::detect());
        dec.prefill(&toks[..10]).unwrap();
        let (logits, cache) = (bits(dec.logits()), cache_bits(&dec));
        let unchanged = |dec: &FastDecoder| {
            dec.position() == 10 && bits(dec.logits()) == logits && cache_bits(dec) == cache
        };
        assert!(matches!(dec.prefill(&[]), Err(Error::Config(_))));
        assert!(unchanged(&dec), "{format:?}: empty");
        // A bad id past the first chunk: nothing of the chunks before it runs either.
        let mut bad = toks.clone();
        bad[PREFILL_CHUNK + 5] = cfg.vocab_size as u32;
        assert!(matches!(dec.prefill(&bad), Err(Error::Tokenizer(_))));
        assert!(unchanged(&dec), "{format:?}: bad id");
        let long: Vec<u32> = toks
            .iter()
            .cycle()
            .take(cfg.max_seq_len - 9)
            .copied()
            .collect();
        assert!(matches!(
            dec.prefill(&long),
            Err(Error::ContextFull { new, max, .. }) if new == long.len() && max == cfg.max_seq_len
        ));
        assert!(unchanged(&dec), "{format:?}: no room");
        // Exactly the room left still fits.
        dec.prefill(&long[1..]).unwrap();
        assert_eq!(dec.position(), cfg.max_seq_len);
    }
}

#[test]
fn aligned_buffers_start_on_a_cache_line() {
    use super::matrix::Aligned;
    for len in [0, 1, 15, 16, 17, 1000] {
        let a = Aligned::<u8>::zeroed(len);
        let b = Aligned::<u16>::zeroed(len);
        let mut c = Aligned::<f32>::zeroed(len);
        assert_eq!((a.len(), b.len(), c.len()), (len, len, len));
        assert_eq!(a.as_ptr() as usize % 64, 0);
        assert_eq!(b.as_ptr() as usize % 64, 0);
        assert_eq!(c.as_ptr() as usize % 64, 0);
        assert!(a.iter().all(|x| *x == 0) && c.iter().all(|x| *x == 0.0));
        c.fill(1.0);
        assert_eq!(c.iter().sum::<f32>(), len as f32);
    }
}
