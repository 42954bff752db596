//! Staria: zero gates reproduce the decoder trunk, cached decoding equals the training forward
//! with the cross-attention really in play, batches with absent slots, names, input checks.

mod common;
use common::*;

use std::collections::BTreeSet;

use candle_core::{DType, Device, Tensor};
use candle_nn::{VarBuilder, VarMap};
use staria_models::{
    Decoder, DecoderConfig, Error, SectionLabel, SnippetBatch, Staria, StariaConfig,
};

const VOCAB: usize = 48;

type Snippets = Vec<(SectionLabel, Vec<u32>)>;

fn varmap_model(cfg: &StariaConfig) -> (VarMap, Staria) {
    let vm = VarMap::new();
    let vb = VarBuilder::from_varmap(&vm, DType::F32, &Device::Cpu);
    let model = Staria::new(cfg, vb).unwrap();
    (vm, model)
}

/// Opens every gate (distinct nonzero values) so the cross-attention path really counts.
fn open_gates(vm: &mut VarMap, cfg: &StariaConfig) {
    for j in 0..cfg.n_sites() {
        for (k, name) in ["attn_gate", "ff_gate"].iter().enumerate() {
            let g = 0.6 - 0.35 * (2 * j + k) as f32;
            let t = Tensor::new(&[g], &Device::Cpu).unwrap();
            vm.set_one(format!("xattn.{j}.{name}"), t).unwrap();
        }
    }
}

fn snippets(seed: u64) -> Snippets {
    vec![
        (SectionLabel::A, ids(9, seed, VOCAB)),
        (SectionLabel::C, ids(4, seed + 1, VOCAB)),
        (SectionLabel::B, ids(13, seed + 2, VOCAB)),
    ]
}

/// Builds a training batch: prompt `b` gets `prompts[b]` in its first slots, the remaining of
/// `slots` slots absent (all padding, label 0).
fn snippet_batch(prompts: &[Snippets], slots: usize) -> SnippetBatch {
    let b = prompts.len();
    let l = prompts
        .iter()
        .flatten()
        .map(|(_, s)| s.len())
        .max()
        .unwrap_or(1)
        .max(1);
    let mut ids = vec![0u32; b * slots * l];
    let mut mask = vec![0f32; b * slots * l];
    let mut sections = vec![0u32; b * slots];
    let mut present = vec![0u8; b * slots];
    for (pi, prompt) in prompts.iter().enumerate() {
        for (si, (label, snip)) in prompt.iter().enumerate() {
            let row = pi * slots + si;
            ids[row * l..row * l + snip.len()].copy_from_slice(snip);
            mask[row * l..row * l + snip.len()].fill(1.0);
            sections[row] = label.index() as u32;
            present[row] = 1;
        }
    }
    let dev = Device::Cpu;
    SnippetBatch {
        ids: Tensor::from_vec(ids, (b * slots, l), &dev).unwrap(),
        mask: Tensor::from_vec(mask, (b * slots, l), &dev).unwrap(),
        sections: Tensor::from_vec(sections, (b, slots), &dev).unwrap(),
        present: Tensor::from_vec(present, (b, slots), &dev).unwrap(),
    }
}

fn row(seq: &[u32]) -> Tensor {
    Tensor::new(seq, &Device::Cpu)
        .unwrap()
        .unsqueeze(0)
        .unwrap()
}

#[test]
fn staria_with_zero_gates_equals_its_decoder_checkpoint() {
    let cfg = StariaConfig::tiny(VOCAB);
    // A "trained" decoder-only model, its tensors copied into a fresh Staria by name.
    let dvm = VarMap::new();
    let dec = Decoder::new(
        &cfg.decoder,
        VarBuilder::from_varmap(&dvm, DType::F32, &Device::Cpu),
    )
    .unwrap();
    let (mut svm, staria) = varmap_model(&cfg);
    for (name, var) in dvm.data().lock().unwrap().iter() {
        svm.set_one(name, var.as_tensor()).unwrap();
    }
    let seq = ids(20, 1, VOCAB);
    let expect = dec.forward(&row(&seq), None, None).unwrap();
    let sb = snippet_batch(&[snippets(5)], 3);
    let got = staria.forward(&row(&seq), None, None, Some(&sb)).unwrap();
    let diff = max_abs_diff(&got, &expect);
    assert!(diff <= 1e-6, "training forward: max abs diff {diff}");
    // Cached, with snippets encoded.
    let latents = staria.encode_snippets(&snippets(5)).unwrap();
    assert!(!latents.is_empty());
    let mut cache = staria.new_cache().unwrap();
    let last = staria
        .forward_cached(&seq, None, None, &mut cache, &latents)
        .unwrap();
    let diff = max_abs_diff(&last, &expect.get(0).unwrap().get(19).unwrap());
    assert!(diff <= 1e-4, "cached: max abs diff {diff}");
}

#[test]
fn staria_cached_decoding_matches_full_forward_with_open_gates() {
    let cfg = StariaConfig::tiny(VOCAB);
    let (mut vm, model) = varmap_model(&cfg);
    open_gates(&mut vm, &cfg);
    let snips = snippets(11);
    let seq = ids(26, 12, VOCAB);
    let sb = snippet_batch(std::slice::from_ref(&snips), 3);
    let full = model
        .forward(&row(&seq), None, None, Some(&sb))
        .unwrap()
        .squeeze(0)
        .unwrap();
    // The cross-attention really moves the logits.
    let bare = model
        .forward(&row(&seq), None, None, None)
        .unwrap()
        .squeeze(0)
        .unwrap();
    assert!(
        max_abs_diff(&full, &bare) > 1e-3,
        "open gates left the logits unchanged"
    );

    let latents = model.encode_snippets(&snips).unwrap();
    assert_eq!(
        latents.sections(),
        &[SectionLabel::A, SectionLabel::C, SectionLabel::B]
    );
    assert_eq!(
        latents.latents().unwrap().dims(),
        &[1, 3 * cfg.encoder.n_latents, cfg.encoder.dim]
    );
    // Token by token.
    let mut cache = model.new_cache().unwrap();
    for (i, &tok) in seq.iter().enumerate() {
        let step = model
            .forward_cached(&[tok], None, None, &mut cache, &latents)
            .unwrap();
        let diff = max_abs_diff(&step, &full.get(i).unwrap());
        assert!(diff <= 1e-4, "position {i}: max abs diff {diff}");
    }
    // Prefill then steps.
    let mut cache = model.new_cache().unwrap();
    let k = 9;
    let first = model
        .forward_cached(&seq[..k], None, None, &mut cache, &latents)
        .unwrap();
    assert!(max_abs_diff(&first, &full.get(k - 1).unwrap()) <= 1e-4);
    for (i, &tok) in seq.iter().enumerate().skip(k) {
        let step = model
            .forward_cached(&[tok], None, None, &mut cache, &latents)
            .unwrap();
        let diff = max_abs_diff(&step, &full.get(i).unwrap());
        assert!(
            diff <= 1e-4,
            "position {i} after prefill: max abs diff {diff}"
        );
    }
}

#[test]
fn staria_cross_every_two_places_sites_after_odd_layers() {
    let mut cfg = StariaConfig::tiny(VOCAB);
    cfg.decoder.n_layers = 4;
    cfg.cross_every = 2;
    assert_eq!(cfg.n_sites(), 2);
    let sites: Vec<Option<usize>> = (0..4).map(|i| cfg.site_after(i)).collect();
    assert_eq!(sites, vec![None, Some(0), None, Some(1)]);
    let (mut vm, model) = varmap_model(&cfg);
    open_gates(&mut vm, &cfg);
    let snips = snippets(21);
    let seq = ids(10, 22, VOCAB);
    let sb = snippet_batch(std::slice::from_ref(&snips), 3);
    let full = model
        .forward(&row(&seq), None, None, Some(&sb))
        .unwrap()
        .squeeze(0)
        .unwrap();
    let latents = model.encode_snippets(&snips).unwrap();
    let mut cache = model.new_cache().unwrap();
    for (i, &tok) in seq.iter().enumerate() {
        let step = model
            .forward_cached(&[tok], None, None, &mut cache, &latents)
            .unwrap();
        let diff = max_abs_diff(&step, &full.get(i).unwrap());
        assert!(diff <= 1e-4, "position {i}: max abs diff {diff}");
    }
}

#[test]
fn staria_batches_with_absent_slots_equal_single_prompts() {
    let cfg = StariaConfig::tiny(VOCAB);
    let (mut vm, model) = varmap_model(&cfg);
    open_gates(&mut vm, &cfg);
    let p0 = snippets(31);
    let p1 = vec![(SectionLabel::D, ids(6, 32, VOCAB))];
    let p2: Snippets = vec![];
    let seqs = [ids(12, 33, VOCAB), ids(12, 34, VOCAB), ids(12, 35, VOCAB)];
    let all: Vec<u32> = seqs.iter().flatten().copied().collect();
    let dec = Tensor::from_vec(all, (3, 12), &Device::Cpu).unwrap();
    let sb = snippet_batch(&[p0.clone(), p1.clone(), p2.clone()], 3);
    let batched = model.forward(&dec, None, None, Some(&sb)).unwrap();
    for (b, p) in [p0, p1, p2].iter().enumerate() {
        // Each prompt alone, through the inference path (its own slot count, no padding slots).
        let latents = model.encode_snippets(p).unwrap();
        assert_eq!(latents.is_empty(), p.is_empty());
        let mut cache = model.new_cache().unwrap();
        let last = model
            .forward_cached(&seqs[b], None, None, &mut cache, &latents)
            .unwrap();
        let diff = max_abs_diff(&last, &batched.get(b).unwrap().get(11).unwrap());
        assert!(diff <= 1e-4, "prompt {b}: max abs diff {diff}");
    }
    // A prompt without snippets is exactly the trunk.
    let trunk = model.decoder().forward(&row(&seqs[2]), None, None).unwrap();
    assert!(max_abs_diff(&batched.get(2).unwrap(), &trunk.get(0).unwrap()) <= 1e-6);
}

#[test]
fn staria_section_labels_and_snippets_matter() {
    let cfg = StariaConfig::tiny(VOCAB);
    let (mut vm, model) = varmap_model(&cfg);
    open_gates(&mut vm, &cfg);
    // Larger section embeddings than the init so the effect is far above float noise.
    let sec = Tensor::randn(0f32, 1.0, (cfg.n_sections, cfg.encoder.dim), &Device::Cpu).unwrap();
    vm.set_one("section_emb.weight", sec).unwrap();
    let seq = ids(8, 41, VOCAB);
    let snip = ids(7, 42, VOCAB);
    let run = |s: &Snippets| {
        let latents = model.encode_snippets(s).unwrap();
        let mut cache = model.new_cache().unwrap();
        model
            .forward_cached(&seq, None, None, &mut cache, &latents)
            .unwrap()
    };
    let as_a = run(&vec![(SectionLabel::A, snip.clone())]);
    let as_b = run(&vec![(SectionLabel::B, snip.clone())]);
    assert!(
        max_abs_diff(&as_a, &as_b) > 1e-4,
        "section label had no effect"
    );
    let other = run(&vec![(SectionLabel::A, ids(7, 43, VOCAB))]);
    assert!(
        max_abs_diff(&as_a, &other) > 1e-4,
        "snippet content had no effect"
    );
    // Order of snippets in the prompt does not matter (labels carry the identity).
    let ab = run(&vec![
        (SectionLabel::A, snip.clone()),
        (SectionLabel::B, ids(5, 44, VOCAB)),
    ]);
    let ba = run(&vec![
        (SectionLabel::B, ids(5, 44, VOCAB)),
        (SectionLabel::A, snip.clone()),
    ]);
    assert!(max_abs_diff(&ab, &ba) <= 1e-5);
    // Zero snippets: the cross-attention is skipped even with open gates.
    let none = run(&vec![]);
    let mut cache = model.new_cache().unwrap();
    let trunk = model
        .decoder()
        .forward_cached(&seq, None, None, &mut cache)
        .unwrap();
    assert!(max_abs_diff(&none, &trunk) <= 1e-6);
}

#[test]
fn staria_gates_receive_gradients_at_zero() {
    let cfg = StariaConfig::tiny(VOCAB);
    let (vm, model) = varmap_model(&cfg);
    let seq = ids(2 * 10, 51, VOCAB);
    let dec = Tensor::from_vec(seq, (2, 10), &Device::Cpu).unwrap();
    let sb = snippet_batch(
        &[snippets(52), vec![(SectionLabel::B, ids(3, 53, VOCAB))]],
        3,
    );
    let logits = model.forward(&dec, None, None, Some(&sb)).unwrap();
    let targets = Tensor::from_vec(ids(20, 54, VOCAB), 20, &Device::Cpu).unwrap();
    let loss =
        candle_nn::loss::cross_entropy(&logits.reshape((20, VOCAB)).unwrap(), &targets).unwrap();
    let grads = loss.backward().unwrap();
    let data = vm.data().lock().unwrap();
    for j in 0..cfg.n_sites() {
        for name in ["attn_gate", "ff_gate"] {
            let var = &data[&format!("xattn.{j}.{name}")];
            let g = grads.get(var.as_tensor()).expect("gate gradient");
            let g = g
                .abs()
                .unwrap()
                .sum_all()
                .unwrap()
                .to_scalar::<f32>()
                .unwrap();
            assert!(g > 0.0 && g.is_finite(), "xattn.{j}.{name}: |grad| {g}");
        }
    }
    // The trunk trains as usual.
    let g = grads
        .get(data["tok_emb.weight"].as_tensor())
        .expect("tok_emb gradient");
    assert!(
        g.abs()
            .unwrap()
            .sum_all()
            .unwrap()
            .to_scalar::<f32>()
            .unwrap()
            > 0.0
    );
}

#[test]
fn staria_open_gates_send_gradients_into_the_encoder() {
    let cfg = StariaConfig::tiny(VOCAB);
    let (mut vm, model) = varmap_model(&cfg);
    open_gates(&mut vm, &cfg);
    let dec = row(&ids(10, 61, VOCAB));
    let sb = snippet_batch(&[snippets(62)], 3);
    let logits = model.forward(&dec, None, None, Some(&sb)).unwrap();
    let targets = Tensor::from_vec(ids(10, 63, VOCAB), 10, &Device::Cpu).unwrap();
    let loss =
        candle_nn::loss::cross_entropy(&logits.reshape((10, VOCAB)).unwrap(), &targets).unwrap();
    // Section D is never used in this batch; its embedding row gets zero, the rest of the
    // table not, so the table's gradient is non-zero too.
    assert_every_variable_learns(&vm, &loss);
}

#[test]
fn staria_tensor_names_are_stable() {
    let cfg = StariaConfig::tiny(VOCAB);
    let (vm, _model) = varmap_model(&cfg);
    let data = vm.data().lock().unwrap();
    let names: BTreeSet<&str> = data.keys().map(String::as_str).collect();
    // The decoder's names, unchanged, at the root.
    let dvm = VarMap::new();
    Decoder::new(
        &cfg.decoder,
        VarBuilder::from_varmap(&dvm, DType::F32, &Device::Cpu),
    )
    .unwrap();
    for name in dvm.data().lock().unwrap().keys() {
        assert!(names.contains(name.as_str()), "missing trunk tensor {name}");
    }
    for j in 0..cfg.n_sites() {
        for n in [
            "norm.weight",
            "q.weight",
            "kv.weight",
            "out.weight",
            "attn_gate",
            "ff_norm.weight",
            "ff.w1.weight",
            "ff.w2.weight",
            "ff.w3.weight",
            "ff_gate",
        ] {
            assert!(
                names.contains(format!("xattn.{j}.{n}").as_str()),
                "xattn.{j}.{n}"
            );
        }
        assert_eq!(
            data[&format!("xattn.{j}.kv.weight")].dims(),
            &[2 * cfg.decoder.dim, cfg.encoder.dim]
        );
        assert_eq!(data[&format!("xattn.{j}.attn_gate")].dims(), &[1]);
    }
    assert!(!names.contains(format!("xattn.{}.q.weight", cfg.n_sites()).as_str()));
    assert_eq!(
        data["section_emb.weight"].dims(),
        &[cfg.n_sections, cfg.encoder.dim]
    );
    assert!(names.contains("encoder.pool.latents"));
    assert!(names.contains("encoder.layers.0.attn.qkv.weight"));
    let other: Vec<&&str> = names
        .iter()
        .filter(|n| {
            !n.starts_with("xattn.")
                && !n.starts_with("encoder.")
                && **n != "section_emb.weight"
                && !dvm.data().lock().unwrap().contains_key(**n)
        })
        .collect();
    assert!(other.is_empty(), "unexpected tensors {other:?}");
}

#[test]
fn staria_rejects_bad_snippets_batches_and_configs() {
    let cfg = StariaConfig::tiny(VOCAB);
    let (_vm, model) = varmap_model(&cfg);
    let dup = vec![(SectionLabel::A, vec![1, 2]), (SectionLabel::A, vec![3])];
    assert!(
        matches!(model.encode_snippets(&dup), Err(Error::Tokenizer(m)) if m.contains("section A"))
    );
    let empty = vec![(SectionLabel::B, vec![])];
    assert!(
        matches!(model.encode_snippets(&empty), Err(Error::Tokenizer(m)) if m.contains("section B"))
    );
    let oov = vec![(SectionLabel::C, vec![1, VOCAB as u32])];
    assert!(
        matches!(model.encode_snippets(&oov), Err(Error::Tokenizer(m)) if m.contains("section C"))
    );
    let long = vec![(SectionLabel::D, vec![1; cfg.encoder.max_seq_len + 1])];
    assert!(model.encode_snippets(&long).is_err());

    // A batch whose shapes do not line up.
    let dec = Tensor::zeros((2, 5), DType::U32, &Device::Cpu).unwrap();
    let sb = snippet_batch(&[snippets(1)], 3); // one prompt's slots for a batch of two
    assert!(matches!(
        model.forward(&dec, None, None, Some(&sb)),
        Err(Error::Config(_))
    ));
    let mut sb = snippet_batch(&[snippets(1), vec![]], 3);
    sb.sections = Tensor::new(&[[0u32, 1, 7], [0, 0, 0]], &Device::Cpu).unwrap();
    assert!(
        matches!(model.forward(&dec, None, None, Some(&sb)), Err(Error::Config(m)) if m.contains("n_sections"))
    );

    let vb = VarBuilder::zeros(DType::F32, &Device::Cpu);
    let bad = |f: &dyn Fn(&mut StariaConfig)| {
        let mut c = StariaConfig::tiny(VOCAB);
        f(&mut c);
        match Staria::new(&c, vb.clone()) {
            Err(Error::Config(m)) => m,
            other => panic!("expected a config error, got {other:?}"),
        }
    };
    assert!(bad(&|c| c.cross_every = 0).contains("cross_every"));
    assert!(bad(&|c| c.cross_every = 3).contains("cross_every"));
    assert!(bad(&|c| c.n_sections = 5).contains("n_sections"));
    assert!(bad(&|c| c.encoder.vocab_size = VOCAB + 1).contains("vocab_size"));
    assert!(bad(&|c| c.encoder.dim = 30).contains("encoder"));
    assert!(
        bad(&|c| {
            c.decoder.dim = 100;
            c.decoder.n_heads = 3
        })
        .contains("dim 100 is not divisible by n_heads 3")
    );
}

#[test]
fn staria_presets_and_json() {
    let seed = StariaConfig::seed(5);
    assert_eq!((seed.cross_every, seed.n_sections), (2, 4));
    assert_eq!(seed.decoder, DecoderConfig::seed(5));
    assert_eq!(StariaConfig::small(5).cross_every, 1);
    assert_eq!(StariaConfig::tiny(5).cross_every, 1);
    for c in [seed.clone(), StariaConfig::small(5), StariaConfig::tiny(5)] {
        c.validate().unwrap();
    }
    let json = serde_json::to_value(&seed).unwrap();
    assert_eq!(json["decoder"]["n_layers"], 16);
    assert_eq!(json["encoder"]["dim"], 1536);
    let back: StariaConfig = serde_json::from_value(json).unwrap();
    assert_eq!(back, seed);
}
