//! Helpers shared by the architecture tests. Each test binary uses a subset.
#![allow(dead_code)]

use std::collections::HashMap;

use candle_core::{DType, Device, Tensor};
use candle_nn::{VarBuilder, VarMap};
use staria_models::fast::FastDecoder;
use staria_models::{AnyModel, DecoderConfig, ModelConfig, Tokenizer};

/// Deterministic pseudo-random token ids in `0..vocab`.
pub fn ids(n: usize, seed: u64, vocab: usize) -> Vec<u32> {
    let mut s = seed
        .wrapping_mul(6364136223846793005)
        .wrapping_add(1442695040888963407);
    (0..n)
        .map(|_| {
            s = s
                .wrapping_mul(6364136223846793005)
                .wrapping_add(1442695040888963407);
            ((s >> 33) % vocab as u64) as u32
        })
        .collect()
}

/// The same weights as plain tensors (no gradient tracking), as loaded from a checkpoint.
pub fn frozen(vm: &VarMap) -> VarBuilder<'static> {
    let map: HashMap<String, Tensor> = vm
        .data()
        .lock()
        .unwrap()
        .iter()
        .map(|(k, v)| (k.clone(), v.as_tensor().detach()))
        .collect();
    VarBuilder::from_tensors(map, DType::F32, &Device::Cpu)
}

pub fn max_abs_diff(a: &Tensor, b: &Tensor) -> f32 {
    (a - b)
        .unwrap()
        .abs()
        .unwrap()
        .flatten_all()
        .unwrap()
        .max(0)
        .unwrap()
        .to_scalar::<f32>()
        .unwrap()
}

/// Every variable of `vm` gets a finite, non-zero gradient from `loss` (none is left out of the
/// graph).
pub fn assert_every_variable_learns(vm: &VarMap, loss: &Tensor) {
    let grads = loss.backward().unwrap();
    let data = vm.data().lock().unwrap();
    assert!(!data.is_empty());
    for (name, var) in data.iter() {
        let g = grads
            .get(var.as_tensor())
            .unwrap_or_else(|| panic!("no gradient for {name}"));
        let norm = g
            .sqr()
            .unwrap()
            .sum_all()
            .unwrap()
            .to_scalar::<f32>()
            .unwrap();
        assert!(
            norm > 0.0 && norm.is_finite(),
            "{name}: gradient norm² {norm}"
        );
    }
}

/// Token ids of space-separated token names.
pub fn token_ids(t: &Tokenizer, text: &str) -> Vec<u32> {
    t.ids_of(&text.split_whitespace().collect::<Vec<_>>())
        .unwrap()
}

/// Largest absolute difference of two logit rows.
pub fn max_diff(a: &[f32], b: &[f32]) -> f32 {
    a.iter()
        .zip(b)
        .map(|(x, y)| (x - y).abs())
        .fold(0.0, f32::max)
}

/// A tiny decoder with the window-position input (8 bins of 700 ms) and, with `grid_bins > 0`,
/// a beat-grid head. Both tables start at zero (checked) and are set to fixed non-zero values,
/// so that they change the logits.
pub fn window_decoder(t: &Tokenizer, grid_bins: usize) -> (DecoderConfig, VarMap, AnyModel) {
    let mut cfg = DecoderConfig::tiny(t.vocab_size());
    cfg.window_bins = 8;
    cfg.window_bin_ms = 700;
    cfg.grid_bins = grid_bins;
    let vm = VarMap::new();
    let model = AnyModel::new(
        &ModelConfig::Decoder(cfg.clone()),
        VarBuilder::from_varmap(&vm, DType::F32, &Device::Cpu),
    )
    .unwrap();
    let data = vm.data().lock().unwrap();
    let tables = [("win_emb.weight", 0.37f32), ("grid_head.weight", 0.53)];
    for (name, scale) in tables.into_iter().take(if grid_bins > 0 { 2 } else { 1 }) {
        let w = &data[name];
        let zeros = w
            .as_tensor()
            .flatten_all()
            .unwrap()
            .to_vec1::<f32>()
            .unwrap();
        assert!(zeros.iter().all(|&x| x == 0.0), "{name} starts at zero");
        let v: Vec<f32> = (0..zeros.len()).map(|i| (i as f32 * scale).sin()).collect();
        w.set(&Tensor::from_vec(v, w.shape(), &Device::Cpu).unwrap())
            .unwrap();
    }
    drop(data);
    (cfg, vm, model)
}

/// Feeds `seq` to the candle cached decoder and the fast decoder (the first `prefix` tokens as
/// one chunk, then one at a time), rewinds both to `back` and feeds the rest again: every
/// position's logits are `want(i)` within 1e-4 each time.
pub fn assert_cached_decoders_replay(
    model: &mut AnyModel,
    fast: &mut FastDecoder,
    seq: &[u32],
    (prefix, back): (usize, usize),
    want: impl Fn(usize) -> Vec<f32>,
) {
    let check = |i: usize, candle: &Tensor, fast: &[f32]| {
        let want = want(i);
        let c = candle.to_vec1::<f32>().unwrap();
        assert!(max_diff(&c, &want) < 1e-4, "candle cached, token {i}");
        assert!(max_diff(fast, &want) < 1e-4, "fast, token {i}");
    };
    let c = model.extend(&seq[..prefix]).unwrap();
    let f = fast.prefill(&seq[..prefix]).unwrap().to_vec();
    check(prefix - 1, &c, &f);
    for (i, &id) in seq.iter().enumerate().skip(prefix) {
        let c = model.step(id).unwrap();
        let f = fast.step(id).unwrap().to_vec();
        check(i, &c, &f);
    }
    model.truncate(back);
    fast.truncate(back);
    for (i, &id) in seq.iter().enumerate().skip(back) {
        let c = model.step(id).unwrap();
        let f = fast.step(id).unwrap().to_vec();
        check(i, &c, &f);
    }
}
