//! `AnyModel`: the generation interface for both kinds, and the tagged `ModelConfig`.

mod common;
use common::*;

use candle_core::{DType, Device, Tensor};
use candle_nn::{VarBuilder, VarMap};
use staria_models::{AnyModel, Error, ModelConfig, ModelKind, Prompt, SectionLabel, SnippetBatch};

const VOCAB: usize = 44;

fn build(cfg: &ModelConfig) -> (VarMap, AnyModel) {
    let vm = VarMap::new();
    let vb = VarBuilder::from_varmap(&vm, DType::F32, &Device::Cpu);
    let model = AnyModel::new(cfg, vb).unwrap();
    (vm, model)
}

fn row(seq: &[u32]) -> Tensor {
    Tensor::new(seq, &Device::Cpu)
        .unwrap()
        .unsqueeze(0)
        .unwrap()
}

fn prompt() -> Prompt {
    let a = ids(6, 1, VOCAB);
    let b = ids(9, 2, VOCAB);
    // Token values stand in for tags; the layouts only need to differ.
    let mut inline = vec![1, 2, 3];
    inline.extend(&a);
    inline.push(4);
    inline.extend(&b);
    inline.push(5);
    Prompt {
        inline,
        decoder: vec![1, 2, 3, 4, 5],
        snippets: vec![(SectionLabel::A, a), (SectionLabel::B, b)],
    }
}

#[test]
fn any_model_decoder_begin_step_extend_truncate() {
    let cfg = ModelConfig::preset(ModelKind::Decoder, "tiny", VOCAB).unwrap();
    let (_vm, mut model) = build(&cfg);
    assert_eq!(model.kind(), ModelKind::Decoder);
    assert_eq!(model.vocab_size(), VOCAB);
    assert_eq!(model.max_seq_len(), 512);
    assert!(model.device().is_cpu());
    assert!(model.encoder().is_none() && model.staria().is_none());

    let p = prompt();
    let cont = ids(8, 3, VOCAB);
    let mut seq = p.inline.clone();
    seq.extend(&cont);
    let full = model
        .forward_train(&row(&seq), None, None, None)
        .unwrap()
        .squeeze(0)
        .unwrap();

    let first = model.begin(&p).unwrap();
    assert_eq!(first.dims(), &[VOCAB]);
    assert!(first.device().is_cpu() && first.dtype() == DType::F32);
    let n = p.inline.len();
    assert_eq!(model.position(), n);
    assert!(max_abs_diff(&first, &full.get(n - 1).unwrap()) <= 1e-4);
    for (i, &tok) in cont[..3].iter().enumerate() {
        let l = model.step(tok).unwrap();
        assert!(max_abs_diff(&l, &full.get(n + i).unwrap()) <= 1e-4);
    }
    let l = model.extend(&cont[3..]).unwrap();
    assert!(max_abs_diff(&l, &full.get(seq.len() - 1).unwrap()) <= 1e-4);
    assert_eq!(model.position(), seq.len());

    // Rewind (live modes) and take another branch.
    model.truncate(n + 2);
    assert_eq!(model.position(), n + 2);
    let alt = [7u32, 8];
    let l = model.extend(&alt).unwrap();
    let mut alt_seq = seq[..n + 2].to_vec();
    alt_seq.extend(alt);
    let alt_full = model
        .forward_train(&row(&alt_seq), None, None, None)
        .unwrap();
    assert!(max_abs_diff(&l, &alt_full.get(0).unwrap().get(n + 3).unwrap()) <= 1e-4);

    // begin starts over.
    let again = model.begin(&p).unwrap();
    assert_eq!(model.position(), n);
    assert!(max_abs_diff(&again, &first) <= 1e-6);
}

#[test]
fn any_model_staria_begin_reads_decoder_layout_and_snippets() {
    let cfg = ModelConfig::preset(ModelKind::Staria, "tiny", VOCAB).unwrap();
    let (mut vm, mut model) = build(&cfg);
    assert_eq!(model.kind(), ModelKind::Staria);
    assert!(model.encoder().is_some());
    for j in 0..2 {
        for g in ["attn_gate", "ff_gate"] {
            let t = Tensor::new(&[0.5f32 - 0.3 * j as f32], &Device::Cpu).unwrap();
            vm.set_one(format!("xattn.{j}.{g}"), t).unwrap();
        }
    }
    let p = prompt();
    let cont = ids(5, 4, VOCAB);
    let mut seq = p.decoder.clone();
    seq.extend(&cont);
    // The same prompt as a training batch of one, both snippets present.
    let l = 9;
    let mut sids = vec![0u32; 2 * l];
    let mut mask = vec![0u8; 2 * l];
    for (r, (_, s)) in p.snippets.iter().enumerate() {
        sids[r * l..r * l + s.len()].copy_from_slice(s);
        mask[r * l..r * l + s.len()].fill(1);
    }
    let dev = Device::Cpu;
    let sb = SnippetBatch {
        ids: Tensor::from_vec(sids, (2, l), &dev).unwrap(),
        mask: Tensor::from_vec(mask, (2, l), &dev).unwrap(),
        sections: Tensor::new(&[[0u32, 1]], &dev).unwrap(),
        present: Tensor::new(&[[1u8, 1]], &dev).unwrap(),
    };
    let full = model
        .forward_train(&row(&seq), None, None, Some(&sb))
        .unwrap()
        .squeeze(0)
        .unwrap();
    let first = model.begin(&p).unwrap();
    let n = p.decoder.len();
    assert_eq!(model.position(), n);
    assert!(max_abs_diff(&first, &full.get(n - 1).unwrap()) <= 1e-4);
    for (i, &tok) in cont.iter().enumerate() {
        let l = model.step(tok).unwrap();
        assert!(
            max_abs_diff(&l, &full.get(n + i).unwrap()) <= 1e-4,
            "step {i}"
        );
    }
    // Snippets survive truncate: rewinding and replaying gives the same logits.
    model.truncate(n);
    let l = model.extend(&cont).unwrap();
    assert!(max_abs_diff(&l, &full.get(seq.len() - 1).unwrap()) <= 1e-4);

    // A prompt without snippets works and equals the no-snippet training forward.
    let bare = Prompt {
        snippets: vec![],
        ..p.clone()
    };
    let l = model.begin(&bare).unwrap();
    let expect = model
        .forward_train(&row(&p.decoder), None, None, None)
        .unwrap();
    assert!(max_abs_diff(&l, &expect.get(0).unwrap().get(n - 1).unwrap()) <= 1e-4);
}

#[test]
fn any_model_errors_leave_the_position_alone() {
    let mut cfg = ModelConfig::preset(ModelKind::Decoder, "tiny", VOCAB).unwrap();
    if let ModelConfig::Decoder(c) = &mut cfg {
        c.max_seq_len = 10;
    }
    let (_vm, mut model) = build(&cfg);
    let empty = Prompt::default();
    assert!(matches!(model.begin(&empty), Err(Error::Tokenizer(m)) if m.contains("inline")));
    model
        .begin(&Prompt {
            inline: vec![1, 2, 3],
            ..Default::default()
        })
        .unwrap();
    assert!(matches!(model.step(VOCAB as u32), Err(Error::Tokenizer(_))));
    assert!(matches!(model.extend(&[]), Err(Error::Config(_))));
    assert!(matches!(
        model.extend(&[1; 8]),
        Err(Error::ContextFull {
            cached: 3,
            new: 8,
            max: 10
        })
    ));
    assert_eq!(model.position(), 3);
    model.extend(&[1; 7]).unwrap();
    assert!(model.step(1).is_err(), "the cache is full");
    assert_eq!(model.position(), 10);
    let too_long = Prompt {
        inline: vec![1; 11],
        ..Default::default()
    };
    assert!(model.begin(&too_long).is_err());
    assert_eq!(model.position(), 0);

    // The decoder-only model refuses snippet batches.
    let dev = Device::Cpu;
    let sb = SnippetBatch {
        ids: Tensor::zeros((1, 2), DType::U32, &dev).unwrap(),
        mask: Tensor::ones((1, 2), DType::U8, &dev).unwrap(),
        sections: Tensor::zeros((1, 1), DType::U32, &dev).unwrap(),
        present: Tensor::ones((1, 1), DType::U8, &dev).unwrap(),
    };
    assert!(matches!(
        model.forward_train(&row(&[1, 2]), None, None, Some(&sb)),
        Err(Error::Config(_))
    ));

    // Staria: a bad snippet fails begin.
    let cfg = ModelConfig::preset(ModelKind::Staria, "tiny", VOCAB).unwrap();
    let (_vm, mut staria) = build(&cfg);
    let p = Prompt {
        decoder: vec![1, 2],
        snippets: vec![(SectionLabel::A, vec![])],
        ..Default::default()
    };
    assert!(matches!(staria.begin(&p), Err(Error::Tokenizer(_))));
    let p = Prompt {
        inline: vec![1, 2],
        ..Default::default()
    };
    assert!(matches!(staria.begin(&p), Err(Error::Tokenizer(m)) if m.contains("decoder")));
}

#[test]
fn model_config_is_tagged_json_and_presets_validate() {
    let cfg = ModelConfig::preset(ModelKind::Decoder, "small", 2765).unwrap();
    let json = serde_json::to_value(&cfg).unwrap();
    assert_eq!(json["kind"], "decoder");
    assert_eq!(json["n_layers"], 6);
    assert_eq!(json["dim"], 256);
    let back: ModelConfig = serde_json::from_value(json).unwrap();
    assert_eq!(back, cfg);

    let cfg = ModelConfig::preset(ModelKind::Staria, "seed", 2765).unwrap();
    let json = serde_json::to_value(&cfg).unwrap();
    assert_eq!(json["kind"], "staria");
    assert_eq!(json["decoder"]["n_layers"], 16);
    assert_eq!(json["decoder"]["n_heads"], 24);
    assert_eq!(json["cross_every"], 2);
    let back: ModelConfig = serde_json::from_value(json).unwrap();
    assert_eq!(back, cfg);
    assert_eq!(back.kind(), ModelKind::Staria);
    assert_eq!((back.vocab_size(), back.max_seq_len()), (2765, 8192));

    assert_eq!(
        serde_json::to_string(&ModelKind::Staria).unwrap(),
        "\"staria\""
    );
    let k: ModelKind = serde_json::from_str("\"decoder\"").unwrap();
    assert_eq!(k, ModelKind::Decoder);

    for kind in [ModelKind::Decoder, ModelKind::Staria] {
        for name in ["seed", "small", "tiny"] {
            ModelConfig::preset(kind, name, 100)
                .unwrap()
                .validate()
                .unwrap();
        }
        assert!(matches!(
            ModelConfig::preset(kind, "huge", 100),
            Err(Error::Config(m)) if m.contains("huge")
        ));
    }
    assert!(matches!(
        ModelConfig::preset(ModelKind::Decoder, "tiny", 0),
        Err(Error::Config(m)) if m.contains("vocab_size")
    ));
    let parsed: ModelConfig = serde_json::from_str(
        r#"{"kind": "decoder", "vocab_size": 10, "dim": 100, "n_layers": 1, "n_heads": 3,
            "ff_mult": 2, "max_seq_len": 16}"#,
    )
    .unwrap();
    assert!(matches!(parsed.validate(), Err(Error::Config(m)) if m.contains("divisible")));
}
