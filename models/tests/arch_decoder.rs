//! Decoder-only transformer: cached decoding equals the full forward, the full forward is
//! causal and differentiable, configs and inputs are checked, tensor names are stable.

mod common;
use common::*;

use std::collections::BTreeMap;

use candle_core::{D, DType, Device, Tensor};
use candle_nn::{VarBuilder, VarMap};
use staria_models::{Decoder, DecoderConfig, Error};

const VOCAB: usize = 50;

fn varmap_model(cfg: &DecoderConfig) -> (VarMap, Decoder) {
    let vm = VarMap::new();
    let vb = VarBuilder::from_varmap(&vm, DType::F32, &Device::Cpu);
    let model = Decoder::new(cfg, vb).unwrap();
    (vm, model)
}

fn full_logits(model: &Decoder, seq: &[u32]) -> Tensor {
    let t = Tensor::new(seq, &Device::Cpu)
        .unwrap()
        .unsqueeze(0)
        .unwrap();
    model.forward(&t, None, None).unwrap().squeeze(0).unwrap()
}

#[test]
fn decoder_cached_steps_match_full_forward() {
    let cfg = DecoderConfig::tiny(VOCAB);
    let (_vm, model) = varmap_model(&cfg);
    let seq = ids(24, 1, VOCAB);
    let full = full_logits(&model, &seq);
    let mut cache = model.new_cache().unwrap();
    for (i, &tok) in seq.iter().enumerate() {
        let step = model
            .forward_cached(&[tok], None, None, &mut cache)
            .unwrap();
        assert_eq!(step.dims(), &[VOCAB]);
        assert_eq!(step.dtype(), DType::F32);
        let diff = max_abs_diff(&step, &full.get(i).unwrap());
        assert!(diff <= 1e-4, "position {i}: max abs diff {diff}");
    }
    assert_eq!(cache.len(), seq.len());
}

#[test]
fn decoder_prefill_then_steps_and_chunks_match_full_forward() {
    let cfg = DecoderConfig::tiny(VOCAB);
    let (_vm, model) = varmap_model(&cfg);
    let seq = ids(30, 2, VOCAB);
    let full = full_logits(&model, &seq);
    let mut cache = model.new_cache().unwrap();
    // Prefill 7, single steps to 15, a chunk of 5, steps to the end.
    let mut pos = 0;
    for chunk in [7, 1, 1, 1, 1, 1, 1, 1, 1, 5, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1] {
        let logits = model
            .forward_cached(&seq[pos..pos + chunk], None, None, &mut cache)
            .unwrap();
        pos += chunk;
        let diff = max_abs_diff(&logits, &full.get(pos - 1).unwrap());
        assert!(diff <= 1e-4, "after {pos} tokens: max abs diff {diff}");
    }
    assert_eq!(pos, seq.len());
    assert_eq!(cache.len(), seq.len());
}

#[test]
fn decoder_truncate_then_continue_matches_full_forward() {
    let cfg = DecoderConfig::tiny(VOCAB);
    let (_vm, model) = varmap_model(&cfg);
    let first = ids(12, 3, VOCAB);
    let mut cache = model.new_cache().unwrap();
    model
        .forward_cached(&first, None, None, &mut cache)
        .unwrap();
    cache.truncate(6);
    assert_eq!(cache.len(), 6);
    let tail = ids(5, 4, VOCAB);
    let logits = model.forward_cached(&tail, None, None, &mut cache).unwrap();
    let mut seq = first[..6].to_vec();
    seq.extend_from_slice(&tail);
    let full = full_logits(&model, &seq);
    let diff = max_abs_diff(&logits, &full.get(seq.len() - 1).unwrap());
    assert!(diff <= 1e-4, "max abs diff {diff}");
    cache.truncate(100);
    assert_eq!(cache.len(), 11, "truncating beyond the length is a no-op");
    cache.reset();
    assert!(cache.is_empty());
}

#[test]
fn decoder_fused_inference_path_matches_differentiable_path() {
    let cfg = DecoderConfig::tiny(VOCAB);
    let (vm, trained) = varmap_model(&cfg);
    let loaded = Decoder::new(&cfg, frozen(&vm)).unwrap();
    let batch = Tensor::from_vec(ids(2 * 17, 5, VOCAB), (2, 17), &Device::Cpu).unwrap();
    let a = trained.forward(&batch, None, None).unwrap();
    let b = loaded.forward(&batch, None, None).unwrap();
    assert_eq!(a.dims(), &[2, 17, VOCAB]);
    let diff = max_abs_diff(&a, &b);
    assert!(diff <= 1e-4, "max abs diff {diff}");
}

#[test]
fn decoder_forward_is_causal_and_batch_rows_independent() {
    let cfg = DecoderConfig::tiny(VOCAB);
    let (_vm, model) = varmap_model(&cfg);
    let a = ids(16, 6, VOCAB);
    let mut b = a.clone();
    b[10] = (b[10] + 1) % VOCAB as u32;
    let la = full_logits(&model, &a);
    let lb = full_logits(&model, &b);
    let before = max_abs_diff(&la.narrow(0, 0, 10).unwrap(), &lb.narrow(0, 0, 10).unwrap());
    assert!(
        before <= 1e-6,
        "a later token changed earlier logits by {before}"
    );
    let after = max_abs_diff(&la.narrow(0, 10, 6).unwrap(), &lb.narrow(0, 10, 6).unwrap());
    assert!(
        after > 1e-4,
        "changing token 10 did not change logits from 10 on"
    );
    // Batched rows equal their single-row results.
    let both: Vec<u32> = a.iter().chain(b.iter()).copied().collect();
    let batch = Tensor::from_vec(both, (2, 16), &Device::Cpu).unwrap();
    let lab = model.forward(&batch, None, None).unwrap();
    assert!(max_abs_diff(&lab.get(0).unwrap(), &la) <= 1e-5);
    assert!(max_abs_diff(&lab.get(1).unwrap(), &lb) <= 1e-5);
}

#[test]
fn decoder_backward_reaches_every_weight() {
    let cfg = DecoderConfig::tiny(VOCAB);
    let (vm, model) = varmap_model(&cfg);
    let seq = ids(2 * 12, 7, VOCAB);
    let input = Tensor::from_vec(seq.clone(), (2, 12), &Device::Cpu).unwrap();
    let logits = model.forward(&input, None, None).unwrap();
    let targets = Tensor::from_vec(ids(2 * 12, 8, VOCAB), 24, &Device::Cpu).unwrap();
    let loss =
        candle_nn::loss::cross_entropy(&logits.reshape((24, VOCAB)).unwrap(), &targets).unwrap();
    assert_every_variable_learns(&vm, &loss);
}

#[test]
fn decoder_tensor_names_and_shapes_are_stable() {
    let cfg = DecoderConfig::tiny(VOCAB);
    let (vm, _model) = varmap_model(&cfg);
    let (d, f) = (cfg.dim, cfg.ff_mult * cfg.dim);
    let mut expected: BTreeMap<String, Vec<usize>> = BTreeMap::new();
    expected.insert("tok_emb.weight".into(), vec![VOCAB, d]);
    expected.insert("norm.weight".into(), vec![d]);
    expected.insert("lm_head.weight".into(), vec![VOCAB, d]);
    for i in 0..cfg.n_layers {
        let p = format!("layers.{i}");
        expected.insert(format!("{p}.attn_norm.weight"), vec![d]);
        expected.insert(format!("{p}.attn.qkv.weight"), vec![3 * d, d]);
        expected.insert(format!("{p}.attn.out.weight"), vec![d, d]);
        expected.insert(format!("{p}.ff_norm.weight"), vec![d]);
        expected.insert(format!("{p}.ff.w1.weight"), vec![f, d]);
        expected.insert(format!("{p}.ff.w3.weight"), vec![f, d]);
        expected.insert(format!("{p}.ff.w2.weight"), vec![d, f]);
    }
    let got: BTreeMap<String, Vec<usize>> = vm
        .data()
        .lock()
        .unwrap()
        .iter()
        .map(|(k, v)| (k.clone(), v.dims().to_vec()))
        .collect();
    assert_eq!(got, expected);
}

#[test]
fn decoder_loads_from_safetensors() {
    let cfg = DecoderConfig::tiny(VOCAB);
    let (vm, trained) = varmap_model(&cfg);
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("model.safetensors");
    vm.save(&path).unwrap();
    let bytes = std::fs::read(&path).unwrap();
    let vb = VarBuilder::from_buffered_safetensors(bytes, DType::F32, &Device::Cpu).unwrap();
    let loaded = Decoder::new(&cfg, vb).unwrap();
    let seq = ids(9, 9, VOCAB);
    let diff = max_abs_diff(&full_logits(&trained, &seq), &full_logits(&loaded, &seq));
    assert!(diff <= 1e-5, "max abs diff {diff}");
    // A checkpoint of another shape is refused, not silently broadcast.
    let bytes = std::fs::read(&path).unwrap();
    let vb = VarBuilder::from_buffered_safetensors(bytes, DType::F32, &Device::Cpu).unwrap();
    assert!(Decoder::new(&DecoderConfig::tiny(VOCAB + 1), vb).is_err());
}

fn config_error(cfg: &DecoderConfig) -> String {
    let vb = VarBuilder::zeros(DType::F32, &Device::Cpu);
    match Decoder::new(cfg, vb) {
        Err(Error::Config(msg)) => msg,
        other => panic!("expected a config error, got {other:?}"),
    }
}

#[test]
fn decoder_rejects_bad_configs() {
    let mut cfg = DecoderConfig::tiny(VOCAB);
    cfg.dim = 100;
    cfg.n_heads = 3;
    assert!(config_error(&cfg).contains("dim 100 is not divisible by n_heads 3"));
    let mut cfg = DecoderConfig::tiny(VOCAB);
    cfg.dim = 30; // head dim 15: RoPE needs an even one
    assert!(config_error(&cfg).contains("even"));
    for field in [
        "vocab_size",
        "n_layers",
        "ff_mult",
        "max_seq_len",
        "n_heads",
    ] {
        let mut cfg = DecoderConfig::tiny(VOCAB);
        match field {
            "vocab_size" => cfg.vocab_size = 0,
            "n_layers" => cfg.n_layers = 0,
            "ff_mult" => cfg.ff_mult = 0,
            "max_seq_len" => cfg.max_seq_len = 0,
            _ => cfg.n_heads = 0,
        }
        assert!(config_error(&cfg).contains(field), "{field}");
    }
    let mut cfg = DecoderConfig::tiny(VOCAB);
    cfg.rope_theta = f64::NAN;
    assert!(config_error(&cfg).contains("rope_theta"));
    let mut cfg = DecoderConfig::tiny(VOCAB);
    cfg.norm_eps = 0.0;
    assert!(config_error(&cfg).contains("norm_eps"));
}

#[test]
fn decoder_rejects_bad_inputs_without_touching_the_cache() {
    let mut cfg = DecoderConfig::tiny(VOCAB);
    cfg.max_seq_len = 8;
    let (_vm, model) = varmap_model(&cfg);
    let dev = Device::Cpu;
    // Full forward.
    let oov = Tensor::new(&[[1u32, VOCAB as u32]], &dev).unwrap();
    assert!(
        matches!(model.forward(&oov, None, None), Err(Error::Tokenizer(m)) if m.contains("50"))
    );
    let long = Tensor::zeros((1, 9), DType::U32, &dev).unwrap();
    assert!(
        matches!(model.forward(&long, None, None), Err(Error::Config(m)) if m.contains("max_seq_len"))
    );
    let floats = Tensor::zeros((1, 3), DType::F32, &dev).unwrap();
    assert!(matches!(
        model.forward(&floats, None, None),
        Err(Error::Config(_))
    ));
    let flat = Tensor::zeros(3, DType::U32, &dev).unwrap();
    assert!(matches!(
        model.forward(&flat, None, None),
        Err(Error::Config(_))
    ));
    // Cached.
    let mut cache = model.new_cache().unwrap();
    model
        .forward_cached(&[1, 2, 3, 4, 5, 6], None, None, &mut cache)
        .unwrap();
    let r = model.forward_cached(&[7, VOCAB as u32 + 3], None, None, &mut cache);
    assert!(matches!(r, Err(Error::Tokenizer(m)) if m.contains("index 1")));
    assert!(matches!(
        model.forward_cached(&[], None, None, &mut cache),
        Err(Error::Config(_))
    ));
    let r = model.forward_cached(&[1, 2, 3], None, None, &mut cache);
    assert!(matches!(
        r,
        Err(Error::ContextFull {
            cached: 6,
            new: 3,
            max: 8
        })
    ));
    assert_eq!(cache.len(), 6);
    model
        .forward_cached(&[1, 2], None, None, &mut cache)
        .unwrap();
    assert!(model.forward_cached(&[1], None, None, &mut cache).is_err());
    assert_eq!(cache.len(), 8);
    // A cache made for another model is refused.
    let (_vm2, other) = varmap_model(&DecoderConfig::tiny(VOCAB));
    let mut foreign = other.new_cache().unwrap();
    assert!(matches!(
        model.forward_cached(&[1], None, None, &mut foreign),
        Err(Error::Config(_))
    ));
}

#[test]
fn decoder_config_json_keys_and_presets() {
    let cfg = DecoderConfig::small(2765);
    let json = serde_json::to_value(&cfg).unwrap();
    for key in [
        "vocab_size",
        "dim",
        "n_layers",
        "n_heads",
        "ff_mult",
        "max_seq_len",
    ] {
        assert!(json.get(key).is_some(), "missing key {key}");
    }
    assert_eq!(json["n_layers"], 6);
    assert_eq!(json["rope_theta"], 500000.0);
    let parsed: DecoderConfig = serde_json::from_str(
        r#"{"vocab_size": 10, "dim": 32, "n_layers": 2, "n_heads": 2, "ff_mult": 2,
            "max_seq_len": 64}"#,
    )
    .unwrap();
    assert_eq!(parsed.rope_theta, 500_000.0);
    assert_eq!(parsed.norm_eps, 1e-5);
    let seed = DecoderConfig::seed(7);
    assert_eq!(
        (
            seed.n_layers,
            seed.n_heads,
            seed.dim,
            seed.ff_mult,
            seed.max_seq_len
        ),
        (16, 24, 1536, 4, 8192)
    );
    let small = DecoderConfig::small(7);
    assert_eq!(
        (
            small.n_layers,
            small.n_heads,
            small.dim,
            small.ff_mult,
            small.max_seq_len
        ),
        (6, 4, 256, 4, 4096)
    );
    let tiny = DecoderConfig::tiny(7);
    assert_eq!(
        (
            tiny.n_layers,
            tiny.n_heads,
            tiny.dim,
            tiny.ff_mult,
            tiny.max_seq_len
        ),
        (2, 2, 32, 2, 512)
    );
    for c in [seed, small, tiny] {
        c.validate().unwrap();
    }
}

#[test]
fn decoder_logits_are_a_distribution_over_the_vocab() {
    // Guards against a softmax or mask mistake that produces NaN/inf on long sequences.
    let cfg = DecoderConfig::tiny(VOCAB);
    let (_vm, model) = varmap_model(&cfg);
    let seq = ids(cfg.max_seq_len, 10, VOCAB);
    let full = full_logits(&model, &seq);
    let probs = candle_nn::ops::softmax(&full, D::Minus1).unwrap();
    let sums = probs.sum(1).unwrap().to_vec1::<f32>().unwrap();
    assert!(sums.iter().all(|s| (s - 1.0).abs() < 1e-4));
    let mut cache = model.new_cache().unwrap();
    let last = model.forward_cached(&seq, None, None, &mut cache).unwrap();
    let diff = max_abs_diff(&last, &full.get(cfg.max_seq_len - 1).unwrap());
    assert!(diff <= 1e-4, "max abs diff {diff}");
}
