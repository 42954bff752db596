//! Snippet encoder: shapes, padding invariance, order sensitivity, gradients, input checks.

mod common;
use common::*;

use std::collections::BTreeSet;

use candle_core::{DType, Device, Tensor};
use candle_nn::{VarBuilder, VarMap};
use staria_models::{Encoder, EncoderConfig, Error};

const VOCAB: usize = 40;

fn varmap_model(cfg: &EncoderConfig) -> (VarMap, Encoder) {
    let vm = VarMap::new();
    let vb = VarBuilder::from_varmap(&vm, DType::F32, &Device::Cpu);
    let model = Encoder::new(cfg, vb).unwrap();
    (vm, model)
}

/// Pads `rows` into `[N, L]` ids (pad value `pad`) and a u8 mask.
fn batch(rows: &[Vec<u32>], l: usize, pad: u32) -> (Tensor, Tensor) {
    let mut ids = vec![pad; rows.len() * l];
    let mut mask = vec![0u8; rows.len() * l];
    for (r, row) in rows.iter().enumerate() {
        ids[r * l..r * l + row.len()].copy_from_slice(row);
        mask[r * l..r * l + row.len()].fill(1);
    }
    (
        Tensor::from_vec(ids, (rows.len(), l), &Device::Cpu).unwrap(),
        Tensor::from_vec(mask, (rows.len(), l), &Device::Cpu).unwrap(),
    )
}

#[test]
fn encoder_shapes_and_pooling() {
    let cfg = EncoderConfig::tiny(VOCAB);
    let (_vm, enc) = varmap_model(&cfg);
    let rows = vec![ids(5, 1, VOCAB), ids(9, 2, VOCAB), ids(1, 3, VOCAB)];
    let (t, m) = batch(&rows, 9, 0);
    let lat = enc.encode(&t, &m).unwrap();
    assert_eq!(lat.dims(), &[3, cfg.n_latents, cfg.dim]);
    let pooled = enc.pooled(&t, &m).unwrap();
    assert_eq!(pooled.dims(), &[3, cfg.dim]);
    let mean = lat.mean(1).unwrap();
    assert!(max_abs_diff(&pooled, &mean) <= 1e-6);
    // Distinct snippets give distinct latents, and the latents of one snippet differ from
    // each other (the learned queries are not collapsed).
    assert!(max_abs_diff(&lat.get(0).unwrap(), &lat.get(1).unwrap()) > 1e-3);
    let l0 = lat.get(0).unwrap();
    assert!(max_abs_diff(&l0.get(0).unwrap(), &l0.get(1).unwrap()) > 1e-3);
}

#[test]
fn encoder_padding_never_changes_real_rows() {
    let cfg = EncoderConfig::tiny(VOCAB);
    let (_vm, enc) = varmap_model(&cfg);
    let short = ids(6, 4, VOCAB);
    let alone = enc.encode_one(&short).unwrap().squeeze(0).unwrap();
    for (pad, l) in [(0u32, 14usize), (17, 30)] {
        let rows = vec![ids(14, 5, VOCAB), short.clone()];
        let (t, m) = batch(&rows, l, pad);
        let lat = enc.encode(&t, &m).unwrap();
        let diff = max_abs_diff(&lat.get(1).unwrap(), &alone);
        assert!(diff <= 1e-5, "pad {pad}, len {l}: max abs diff {diff}");
    }
    // A row without any real token is finite and leaves the other rows alone.
    let rows = vec![short.clone(), vec![]];
    let (t, m) = batch(&rows, 6, 0);
    let lat = enc.encode(&t, &m).unwrap();
    let all: Vec<f32> = lat.flatten_all().unwrap().to_vec1().unwrap();
    assert!(all.iter().all(|v| v.is_finite()));
    assert!(max_abs_diff(&lat.get(0).unwrap(), &alone) <= 1e-5);
}

#[test]
fn encoder_output_depends_on_order_and_every_token() {
    let mut cfg = EncoderConfig::tiny(VOCAB);
    cfg.n_layers = 2;
    let (_vm, enc) = varmap_model(&cfg);
    let a = ids(8, 6, VOCAB);
    let mut swapped = a.clone();
    swapped.swap(0, 7);
    let la = enc.encode_one(&a).unwrap();
    let ls = enc.encode_one(&swapped).unwrap();
    assert!(
        max_abs_diff(&la, &ls) > 1e-4,
        "RoPE makes token order matter"
    );
    for i in [0, 7] {
        let mut b = a.clone();
        b[i] = (b[i] + 1) % VOCAB as u32;
        let lb = enc.encode_one(&b).unwrap();
        assert!(max_abs_diff(&la, &lb) > 1e-5, "token {i} had no influence");
    }
}

#[test]
fn encoder_fused_inference_path_matches_differentiable_path() {
    let cfg = EncoderConfig::tiny(VOCAB);
    let (vm, trained) = varmap_model(&cfg);
    let loaded = Encoder::new(&cfg, frozen(&vm)).unwrap();
    let rows = vec![ids(7, 7, VOCAB), ids(3, 8, VOCAB)];
    let (t, m) = batch(&rows, 7, 0);
    let diff = max_abs_diff(
        &trained.encode(&t, &m).unwrap(),
        &loaded.encode(&t, &m).unwrap(),
    );
    assert!(diff <= 1e-4, "max abs diff {diff}");
}

#[test]
fn encoder_backward_reaches_every_weight() {
    let cfg = EncoderConfig::tiny(VOCAB);
    let (vm, enc) = varmap_model(&cfg);
    let rows = vec![ids(7, 9, VOCAB), ids(4, 10, VOCAB)];
    let (t, m) = batch(&rows, 7, 0);
    let pooled = enc.pooled(&t, &m).unwrap();
    // Any scalar that depends on every output element.
    let loss = (pooled.sqr().unwrap().sum_all().unwrap() + pooled.sum_all().unwrap()).unwrap();
    assert_every_variable_learns(&vm, &loss);
}

#[test]
fn encoder_tensor_names_are_stable() {
    let cfg = EncoderConfig::tiny(VOCAB);
    let (vm, _enc) = varmap_model(&cfg);
    let names: BTreeSet<String> = vm.data().lock().unwrap().keys().cloned().collect();
    let mut expected: BTreeSet<String> = [
        "tok_emb.weight",
        "norm.weight",
        "pool.latents",
        "pool.q.weight",
        "pool.kv.weight",
        "pool.out.weight",
        "pool.ff_norm.weight",
        "pool.ff.w1.weight",
        "pool.ff.w2.weight",
        "pool.ff.w3.weight",
        "pool.norm.weight",
    ]
    .into_iter()
    .map(String::from)
    .collect();
    for n in [
        "attn_norm",
        "attn.qkv",
        "attn.out",
        "ff_norm",
        "ff.w1",
        "ff.w2",
        "ff.w3",
    ] {
        expected.insert(format!("layers.0.{n}.weight"));
    }
    assert_eq!(names, expected);
    let data = vm.data().lock().unwrap();
    assert_eq!(data["pool.latents"].dims(), &[cfg.n_latents, cfg.dim]);
    assert_eq!(data["pool.kv.weight"].dims(), &[2 * cfg.dim, cfg.dim]);
}

#[test]
fn encoder_rejects_bad_inputs_and_configs() {
    let cfg = EncoderConfig::tiny(VOCAB);
    let (_vm, enc) = varmap_model(&cfg);
    let dev = Device::Cpu;
    let (t, m) = batch(&[ids(4, 11, VOCAB)], 4, 0);
    let bad_mask = Tensor::ones((1, 5), DType::U8, &dev).unwrap();
    assert!(matches!(enc.encode(&t, &bad_mask), Err(Error::Config(m)) if m.contains("mask")));
    let oov = Tensor::new(&[[1u32, VOCAB as u32]], &dev).unwrap();
    let ones = Tensor::ones((1, 2), DType::U8, &dev).unwrap();
    assert!(matches!(enc.encode(&oov, &ones), Err(Error::Tokenizer(_))));
    let long = cfg.max_seq_len + 1;
    let (t_long, m_long) = batch(&[vec![1; long]], long, 0);
    assert!(
        matches!(enc.encode(&t_long, &m_long), Err(Error::Config(m)) if m.contains("max_seq_len"))
    );
    assert!(matches!(enc.encode_one(&[]), Err(Error::Tokenizer(_))));
    enc.encode(&t, &m).unwrap();

    let vb = VarBuilder::zeros(DType::F32, &dev);
    let mut bad = EncoderConfig::tiny(VOCAB);
    bad.n_latents = 0;
    assert!(
        matches!(Encoder::new(&bad, vb.clone()), Err(Error::Config(m)) if m.contains("n_latents"))
    );
    let mut bad = EncoderConfig::tiny(VOCAB);
    bad.dim = 100;
    bad.n_heads = 3;
    assert!(
        matches!(Encoder::new(&bad, vb), Err(Error::Config(m)) if m.contains("dim 100 is not divisible by n_heads 3"))
    );
}

#[test]
fn encoder_presets_and_json_defaults() {
    let seed = EncoderConfig::seed(9);
    assert_eq!(
        (seed.n_layers, seed.n_heads, seed.dim, seed.n_latents),
        (6, 8, 1536, 8)
    );
    let small = EncoderConfig::small(9);
    assert_eq!((small.n_layers, small.n_heads, small.dim), (2, 4, 256));
    let tiny = EncoderConfig::tiny(9);
    assert_eq!(
        (tiny.n_layers, tiny.n_heads, tiny.dim, tiny.n_latents),
        (1, 2, 32, 2)
    );
    for c in [seed, small, tiny] {
        c.validate().unwrap();
    }
    let parsed: EncoderConfig = serde_json::from_str(
        r#"{"vocab_size": 10, "dim": 32, "n_layers": 1, "n_heads": 2, "ff_mult": 2,
            "max_seq_len": 64}"#,
    )
    .unwrap();
    assert_eq!(parsed.n_latents, 8);
    assert_eq!(parsed.norm_eps, 1e-5);
}
