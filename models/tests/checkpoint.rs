//! Checkpoint folders: exact save/load round trips and errors that name the file at fault.

use std::path::Path;

use candle_core::{DType, Device, Tensor};
use staria_models::checkpoint::{
    self, CONFIG_FILE, TOKENIZER_FILE, WEIGHTS_FILE, create_untrained, load, load_tensors,
};
use staria_models::{ModelKind, Prompt, SectionLabel, Tokenizer, TokenizerConfig};

fn tokenizer() -> Tokenizer {
    Tokenizer::new(TokenizerConfig::default()).unwrap()
}

fn prompt(tok: &Tokenizer) -> Prompt {
    let snippet = tok.ids_of(&["piano:60:80", "onset:0", "dur:500"]).unwrap();
    let mut inline = vec![tok.prompt_start_id(), tok.section_id(SectionLabel::A)];
    inline.extend(&snippet);
    inline.extend([tok.prompt_end_id(), tok.start_id()]);
    Prompt {
        inline,
        decoder: vec![
            tok.prompt_start_id(),
            tok.section_id(SectionLabel::A),
            tok.prompt_end_id(),
            tok.start_id(),
        ],
        snippets: vec![(SectionLabel::A, snippet)],
    }
}

fn max_diff(a: &Tensor, b: &Tensor) -> f32 {
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

fn err_text(dir: &Path) -> String {
    match load(dir, &Device::Cpu) {
        Ok(_) => panic!("loading {} should fail", dir.display()),
        Err(e) => e.to_string(),
    }
}

#[test]
fn save_load_round_trips_exactly_for_both_kinds() {
    let tok = tokenizer();
    for kind in [ModelKind::Decoder, ModelKind::Staria] {
        let dir = tempfile::tempdir().unwrap();
        let written = create_untrained(dir.path(), "t", kind, "tiny", &tok, DType::F32, 7).unwrap();
        let mut first = load(dir.path(), &Device::Cpu).unwrap();
        assert_eq!(first.config, written);
        assert_eq!(first.config.kind(), kind);
        assert_eq!(first.tokenizer.hash(), tok.hash());

        // Saving a loaded model again gives byte-identical weights.
        let tensors = load_tensors(dir.path(), &Device::Cpu).unwrap();
        let again = tempfile::tempdir().unwrap();
        checkpoint::save_tensors(again.path(), &first.config, &tok, &tensors, DType::F32).unwrap();
        let a = std::fs::read(dir.path().join(WEIGHTS_FILE)).unwrap();
        let b = std::fs::read(again.path().join(WEIGHTS_FILE)).unwrap();
        assert_eq!(a, b, "{kind}: re-saved weights differ");

        let mut second = load(again.path(), &Device::Cpu).unwrap();
        let p = prompt(&tok);
        let l1 = first.model.begin(&p).unwrap();
        let l2 = second.model.begin(&p).unwrap();
        assert_eq!(
            max_diff(&l1, &l2),
            0.0,
            "{kind}: logits differ after reload"
        );
        // No temporary files are left behind.
        for entry in std::fs::read_dir(dir.path()).unwrap() {
            let name = entry.unwrap().file_name().into_string().unwrap();
            assert!(!name.ends_with(".tmp"), "left {name}");
        }
    }
}

#[test]
fn half_precision_weights_load_as_f32_within_rounding() {
    let tok = tokenizer();
    let full = tempfile::tempdir().unwrap();
    let half = tempfile::tempdir().unwrap();
    create_untrained(
        full.path(),
        "t",
        ModelKind::Decoder,
        "tiny",
        &tok,
        DType::F32,
        7,
    )
    .unwrap();
    let tensors = load_tensors(full.path(), &Device::Cpu).unwrap();
    let (config, _) = checkpoint::load_config(full.path()).unwrap();
    checkpoint::save_tensors(half.path(), &config, &tok, &tensors, DType::F16).unwrap();
    let loaded = load(half.path(), &Device::Cpu).unwrap();
    assert_eq!(loaded.config.weights_dtype, "f16");
    let halves = load_tensors(half.path(), &Device::Cpu).unwrap();
    for (name, t) in &tensors {
        let expect = t
            .to_dtype(DType::F16)
            .unwrap()
            .to_dtype(DType::F32)
            .unwrap();
        assert_eq!(halves[name].dtype(), DType::F32);
        assert_eq!(max_diff(&halves[name], &expect), 0.0, "{name}");
    }
    let f16_size = std::fs::metadata(half.path().join(WEIGHTS_FILE))
        .unwrap()
        .len();
    let f32_size = std::fs::metadata(full.path().join(WEIGHTS_FILE))
        .unwrap()
        .len();
    assert!(f16_size * 2 <= f32_size + 4096, "{f16_size} vs {f32_size}");
}

#[test]
fn a_missing_file_is_named() {
    let tok = tokenizer();
    for file in [CONFIG_FILE, TOKENIZER_FILE, WEIGHTS_FILE] {
        let dir = tempfile::tempdir().unwrap();
        create_untrained(
            dir.path(),
            "t",
            ModelKind::Decoder,
            "tiny",
            &tok,
            DType::F32,
            7,
        )
        .unwrap();
        std::fs::remove_file(dir.path().join(file)).unwrap();
        let msg = err_text(dir.path());
        assert!(msg.contains(file) && msg.contains("missing"), "{msg}");
    }
    let msg = err_text(Path::new("/nonexistent/staria-model"));
    assert!(msg.contains("/nonexistent/staria-model"), "{msg}");
}

#[test]
fn config_and_weights_that_disagree_name_the_tensor() {
    let tok = tokenizer();
    let dir = tempfile::tempdir().unwrap();
    create_untrained(
        dir.path(),
        "t",
        ModelKind::Decoder,
        "tiny",
        &tok,
        DType::F32,
        7,
    )
    .unwrap();
    let path = dir.path().join(CONFIG_FILE);
    let mut json: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&path).unwrap()).unwrap();
    let dim = json["dim"].as_u64().unwrap();
    json["dim"] = (dim * 2).into();
    std::fs::write(&path, json.to_string()).unwrap();
    let msg = err_text(dir.path());
    assert!(msg.contains(WEIGHTS_FILE) && msg.contains("shape"), "{msg}");

    json["dim"] = dim.into();
    let n_layers = json["n_layers"].as_u64().unwrap();
    json["n_layers"] = (n_layers + 1).into();
    std::fs::write(&path, json.to_string()).unwrap();
    let msg = err_text(dir.path());
    assert!(msg.contains("missing") && msg.contains("layers."), "{msg}");

    // Weights the config does not use are refused too, naming them: a config rewritten by a
    // build that dropped a setting it did not know (it once lost `grid_bins`) used to load a
    // model without part of itself.
    json["n_layers"] = (n_layers - 1).into();
    std::fs::write(&path, json.to_string()).unwrap();
    let msg = err_text(dir.path());
    assert!(
        msg.contains(WEIGHTS_FILE)
            && msg.contains("does not use")
            && msg.contains(&format!("layers.{}.", n_layers - 1)),
        "{msg}"
    );
}

/// A config asking for sizes its weights do not have is refused by the fast decoder (what
/// `staria generate` builds) before it allocates for them: a billion layers used to abort the
/// process with an allocation failure.
#[test]
fn fast_decoder_refuses_config_sizes_the_weights_lack() {
    use staria_models::fast::{FastDecoder, WeightFormat};
    let tok = tokenizer();
    for kind in [ModelKind::Decoder, ModelKind::Staria] {
        let dir = tempfile::tempdir().unwrap();
        create_untrained(dir.path(), "t", kind, "tiny", &tok, DType::F32, 7).unwrap();
        let path = dir.path().join(CONFIG_FILE);
        let original: serde_json::Value =
            serde_json::from_str(&std::fs::read_to_string(&path).unwrap()).unwrap();
        let fast_error = |edit: &dyn Fn(&mut serde_json::Value)| -> String {
            let mut json = original.clone();
            // Decoder keys sit at the top level of a decoder's config, under "decoder" for Staria.
            let decoder = if kind == ModelKind::Decoder {
                &mut json
            } else {
                &mut json["decoder"]
            };
            edit(decoder);
            std::fs::write(&path, json.to_string()).unwrap();
            let (config, _) = checkpoint::load_config(dir.path()).unwrap();
            let tensors = load_tensors(dir.path(), &Device::Cpu).unwrap();
            match FastDecoder::from_checkpoint_tensors(&config.model, WeightFormat::F16, &tensors) {
                Ok(_) => panic!("{kind:?}: the edited config should be refused"),
                Err(e) => e.to_string(),
            }
        };
        let msg = fast_error(&|d| d["n_layers"] = 1_000_000_000u64.into());
        assert!(
            msg.contains("n_layers = 1000000000")
                && msg.contains("config.json")
                && msg.contains("attn_norm.weight"),
            "{kind:?}: {msg}"
        );
        let msg = fast_error(&|d| d["max_seq_len"] = (1u64 << 40).into());
        assert!(msg.contains("max_seq_len"), "{kind:?}: {msg}");
        let msg = fast_error(&|d| {
            let m = d["ff_mult"].as_u64().unwrap();
            d["ff_mult"] = (m * 1000).into()
        });
        assert!(
            msg.contains("ff_mult") && msg.contains("ff.w1.weight") && msg.contains("shape"),
            "{kind:?}: {msg}"
        );
        // The untouched config still builds.
        std::fs::write(&path, original.to_string()).unwrap();
        let (config, _) = checkpoint::load_config(dir.path()).unwrap();
        let tensors = load_tensors(dir.path(), &Device::Cpu).unwrap();
        FastDecoder::from_checkpoint_tensors(&config.model, WeightFormat::F16, &tensors).unwrap();
    }
}

#[test]
fn a_different_vocabulary_is_refused() {
    let tok = tokenizer();
    let dir = tempfile::tempdir().unwrap();
    create_untrained(
        dir.path(),
        "t",
        ModelKind::Decoder,
        "tiny",
        &tok,
        DType::F32,
        7,
    )
    .unwrap();
    let other = Tokenizer::new(TokenizerConfig {
        drums: false,
        ..TokenizerConfig::default()
    })
    .unwrap();
    std::fs::write(dir.path().join(TOKENIZER_FILE), other.to_json()).unwrap();
    let msg = err_text(dir.path());
    assert!(
        msg.contains(TOKENIZER_FILE) && msg.contains("hash"),
        "{msg}"
    );

    // Saving a model whose vocab_size disagrees with the tokenizer is refused too.
    std::fs::write(dir.path().join(TOKENIZER_FILE), tok.to_json()).unwrap();
    let (config, _) = checkpoint::load_config(dir.path()).unwrap();
    let tensors = std::collections::HashMap::new();
    let err = checkpoint::save_tensors(dir.path(), &config, &other, &tensors, DType::F32)
        .unwrap_err()
        .to_string();
    assert!(err.contains("vocab_size"), "{err}");
}

#[test]
fn corrupt_files_are_named() {
    let tok = tokenizer();
    let dir = tempfile::tempdir().unwrap();
    create_untrained(
        dir.path(),
        "t",
        ModelKind::Staria,
        "tiny",
        &tok,
        DType::F32,
        7,
    )
    .unwrap();
    let weights = dir.path().join(WEIGHTS_FILE);
    let bytes = std::fs::read(&weights).unwrap();
    std::fs::write(&weights, &bytes[..bytes.len() / 2]).unwrap();
    let msg = err_text(dir.path());
    assert!(
        msg.contains(WEIGHTS_FILE) && msg.contains("corrupt"),
        "{msg}"
    );

    std::fs::write(&weights, b"not safetensors at all").unwrap();
    assert!(err_text(dir.path()).contains(WEIGHTS_FILE));

    std::fs::write(dir.path().join(CONFIG_FILE), "{\"name\": 3").unwrap();
    let msg = err_text(dir.path());
    assert!(msg.contains(CONFIG_FILE), "{msg}");
}
