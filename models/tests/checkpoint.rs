//! Checkpoint folders: exact save/load round trips and errors that name the file at fault.

mod common;
use common::max_abs_diff;

use std::path::Path;

use candle_core::{DType, Device};
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
        let written = write_tiny(dir.path(), kind, &tok);
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
            max_abs_diff(&l1, &l2),
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
    write_tiny(full.path(), ModelKind::Decoder, &tok);
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
        assert_eq!(max_abs_diff(&halves[name], &expect), 0.0, "{name}");
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
        write_tiny(dir.path(), ModelKind::Decoder, &tok);
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
    write_tiny(dir.path(), ModelKind::Decoder, &tok);
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
        write_tiny(dir.path(), kind, &tok);
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
            // Past load_config, which refuses these sizes itself (`config_sizes_are_checked_...`):
            // the fast decoder checks what it is handed too.
            let config: checkpoint::CheckpointConfig = serde_json::from_value(json).unwrap();
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
    write_tiny(dir.path(), ModelKind::Decoder, &tok);
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
    write_tiny(dir.path(), ModelKind::Staria, &tok);
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

/// A tiny checkpoint of `kind` in a fresh temporary folder, and its config.json as JSON.
/// An untrained `tiny` checkpoint of `kind` (f32, seed 7) written into `dir`.
fn write_tiny(dir: &Path, kind: ModelKind, tok: &Tokenizer) -> checkpoint::CheckpointConfig {
    create_untrained(dir, "t", kind, "tiny", tok, DType::F32, 7).unwrap()
}

fn tiny(kind: ModelKind, tok: &Tokenizer) -> (tempfile::TempDir, serde_json::Value) {
    let dir = tempfile::tempdir().unwrap();
    write_tiny(dir.path(), kind, tok);
    let json = std::fs::read_to_string(dir.path().join(CONFIG_FILE)).unwrap();
    (dir, serde_json::from_str(&json).unwrap())
}

/// `json` with `key` of `part` ("decoder" or "encoder") set to `value`: a decoder checkpoint
/// keeps the decoder keys at the top level, a Staria one under "decoder" and "encoder".
fn with_setting(json: &serde_json::Value, part: &str, key: &str, value: u64) -> serde_json::Value {
    let mut json = json.clone();
    if json["kind"] == "decoder" {
        json[key] = value.into();
    } else {
        json[part][key] = value.into();
    }
    json
}

/// Sizes in config.json that no weights could back (a billion layers used to abort `staria
/// generate` with an allocation failure) are refused by reading the config alone, before
/// anything is allocated: one line naming config.json, the setting and its value.
#[test]
fn config_sizes_are_checked_before_allocation() {
    let tok = tokenizer();
    let huge = 1u64 << 40;
    for kind in [ModelKind::Decoder, ModelKind::Staria] {
        let (dir, json) = tiny(kind, &tok);
        let mut cases = vec![
            ("decoder", "n_layers", 1_000_000_000),
            ("decoder", "dim", huge),
            ("decoder", "vocab_size", huge),
            ("decoder", "n_heads", huge),
            ("decoder", "ff_mult", huge),
            ("decoder", "max_seq_len", huge),
            ("decoder", "window_bins", huge),
            ("decoder", "grid_bins", huge),
        ];
        if kind == ModelKind::Staria {
            cases.extend([
                ("encoder", "n_layers", 1_000_000_000),
                ("encoder", "dim", huge),
                ("encoder", "n_latents", huge),
                ("encoder", "max_seq_len", huge),
            ]);
        }
        for (part, key, value) in cases {
            let edited = with_setting(&json, part, key, value);
            std::fs::write(dir.path().join(CONFIG_FILE), edited.to_string()).unwrap();
            let setting = format!("{key} = {value}");
            for msg in [
                checkpoint::load_config(dir.path()).unwrap_err().to_string(),
                err_text(dir.path()),
            ] {
                assert!(
                    msg.contains(CONFIG_FILE) && msg.contains(&setting) && !msg.contains('\n'),
                    "{kind:?} {part}.{key}: {msg}"
                );
            }
        }
        // Each size may be fine alone and too big together: the KV cache all backends allocate.
        let edited = with_setting(&json, "decoder", "max_seq_len", 1 << 20);
        let edited = with_setting(&edited, "decoder", "n_layers", 200);
        std::fs::write(dir.path().join(CONFIG_FILE), edited.to_string()).unwrap();
        let msg = err_text(dir.path());
        assert!(
            msg.contains(CONFIG_FILE) && msg.contains("KV cache"),
            "{msg}"
        );
    }
}

/// Plausible sizes the weights do not have are refused from the weights file's header, before
/// its tensor data is read: the message names model.safetensors, the tensor and the settings.
#[test]
fn config_sizes_are_checked_against_the_weights_header() {
    let tok = tokenizer();
    for kind in [ModelKind::Decoder, ModelKind::Staria] {
        let (dir, json) = tiny(kind, &tok);
        let mut cases = vec![
            ("decoder", "n_layers", 200, "layers.2.", "is missing"),
            ("decoder", "dim", 64, "tok_emb.weight", "shape"),
            (
                "decoder",
                "window_bins",
                4000,
                "win_emb.weight",
                "is missing",
            ),
            ("decoder", "ff_mult", 8, "ff.w1.weight", "shape"),
        ];
        if kind == ModelKind::Staria {
            cases.extend([
                (
                    "encoder",
                    "n_latents",
                    1000,
                    "encoder.pool.latents",
                    "shape",
                ),
                ("encoder", "n_layers", 3, "encoder.layers.1.", "is missing"),
            ]);
        }
        for (part, key, value, tensor, problem) in cases {
            let edited = with_setting(&json, part, key, value);
            std::fs::write(dir.path().join(CONFIG_FILE), edited.to_string()).unwrap();
            let config: checkpoint::CheckpointConfig = serde_json::from_value(edited).unwrap();
            let setting = format!("{key} = {value}");
            for msg in [
                checkpoint::load_weights(dir.path(), &config.model, &Device::Cpu)
                    .unwrap_err()
                    .to_string(),
                err_text(dir.path()),
            ] {
                assert!(
                    msg.contains(WEIGHTS_FILE)
                        && msg.contains(tensor)
                        && msg.contains(problem)
                        && msg.contains(&setting)
                        && !msg.contains('\n'),
                    "{kind:?} {part}.{key} = {value}: {msg}"
                );
            }
        }
        std::fs::write(dir.path().join(CONFIG_FILE), json.to_string()).unwrap();
        load(dir.path(), &Device::Cpu).unwrap();
    }
}

/// A 2 GB file where a checkpoint file should be is refused from its size (config.json,
/// tokenizer.json) or its header (model.safetensors) without being read. The files are sparse.
#[test]
fn two_gigabyte_files_are_refused_without_reading_them() {
    const TWO_GB: u64 = 2 << 30;
    let tok = tokenizer();
    for file in [CONFIG_FILE, TOKENIZER_FILE, WEIGHTS_FILE] {
        let (dir, _) = tiny(ModelKind::Decoder, &tok);
        let path = dir.path().join(file);
        // Valid contents padded to 2 GB.
        std::fs::OpenOptions::new()
            .write(true)
            .open(&path)
            .unwrap()
            .set_len(TWO_GB)
            .unwrap();
        let started = std::time::Instant::now();
        let msg = err_text(dir.path());
        let expect = if file == WEIGHTS_FILE {
            "the file holds"
        } else {
            "2147483648 bytes"
        };
        assert!(
            msg.contains(file) && msg.contains(expect) && !msg.contains('\n'),
            "{file}: {msg}"
        );
        // Nothing like reading 2 GB happened.
        assert!(
            started.elapsed().as_secs() < 5,
            "{file}: {:?}",
            started.elapsed()
        );
        // A 2 GB file of zeros: a header of length 0.
        std::fs::remove_file(&path).unwrap();
        std::fs::File::create(&path)
            .unwrap()
            .set_len(TWO_GB)
            .unwrap();
        let msg = err_text(dir.path());
        assert!(msg.contains(file) && !msg.contains('\n'), "{file}: {msg}");
    }
}

/// What is not a readable file: a folder, a named pipe (reading one would block the loading
/// thread for ever), a folder without permission.
#[cfg(unix)]
#[test]
fn unreadable_files_and_folders_are_named() {
    use std::os::unix::fs::PermissionsExt;
    let tok = tokenizer();
    for file in [CONFIG_FILE, TOKENIZER_FILE, WEIGHTS_FILE] {
        let (dir, _) = tiny(ModelKind::Decoder, &tok);
        let path = dir.path().join(file);
        std::fs::remove_file(&path).unwrap();
        std::fs::create_dir(&path).unwrap();
        let msg = err_text(dir.path());
        assert!(
            msg.contains(file) && msg.contains("not a regular file"),
            "{msg}"
        );
        std::fs::remove_dir(&path).unwrap();
        let fifo = std::process::Command::new("mkfifo").arg(&path).status();
        if fifo.is_ok_and(|s| s.success()) {
            let msg = err_text(dir.path());
            assert!(
                msg.contains(file) && msg.contains("not a regular file"),
                "{msg}"
            );
        }
    }

    let (dir, _) = tiny(ModelKind::Decoder, &tok);
    let ckpt = dir.path().join("locked");
    std::fs::create_dir(&ckpt).unwrap();
    for file in [CONFIG_FILE, TOKENIZER_FILE, WEIGHTS_FILE] {
        std::fs::copy(dir.path().join(file), ckpt.join(file)).unwrap();
    }
    let set_mode = |mode| std::fs::set_permissions(&ckpt, std::fs::Permissions::from_mode(mode));
    set_mode(0o000).unwrap();
    let enforced = std::fs::read_dir(&ckpt).is_err();
    let result = load(&ckpt, &Device::Cpu)
        .map(|_| ())
        .map_err(|e| e.to_string());
    set_mode(0o755).unwrap();
    if !enforced {
        // root reads any folder: nothing to refuse here.
        eprintln!("permissions are not enforced for this user (root?): permission case skipped");
        return;
    }
    let msg = result.unwrap_err();
    assert!(
        msg.contains("locked") && msg.contains("permission denied") && !msg.contains('\n'),
        "{msg}"
    );
}

/// Weights trained with another vocabulary than the folder's tokenizer.json (and config.json)
/// are refused: from the tokenizer hash the weights record, and for weights saved before they
/// recorded it, from the header's shapes, naming the embedding and the vocabulary.
#[test]
fn weights_for_another_vocabulary_are_refused() {
    let tok = tokenizer();
    let other = Tokenizer::new(TokenizerConfig {
        drums: false,
        ..TokenizerConfig::default()
    })
    .unwrap();
    assert_ne!(tok.vocab_size(), other.vocab_size());
    for kind in [ModelKind::Decoder, ModelKind::Staria] {
        let (dir, _) = tiny(kind, &tok);
        let (theirs, _) = tiny(kind, &other);
        let weights = dir.path().join(WEIGHTS_FILE);
        std::fs::copy(theirs.path().join(WEIGHTS_FILE), &weights).unwrap();
        let msg = err_text(dir.path());
        assert!(
            msg.contains(WEIGHTS_FILE) && msg.contains("not this tokenizer's"),
            "{kind:?}: {msg}"
        );
        // The same weights without the record, as older checkpoints (the shipped one) are.
        let tensors = load_tensors(theirs.path(), &Device::Cpu).unwrap();
        candle_core::safetensors::save(&tensors, &weights).unwrap();
        let msg = err_text(dir.path());
        assert!(
            msg.contains(WEIGHTS_FILE)
                && msg.contains("tok_emb.weight")
                && msg.contains("vocabulary")
                && msg.contains(&format!("vocab_size = {}", tok.vocab_size())),
            "{kind:?}: {msg}"
        );
    }
}

/// A tokenizer.json and config.json taken from another checkpoint of the same vocabulary size
/// (every shape agrees) are refused: the weights record the tokenizer they were saved with.
#[test]
fn weights_record_their_tokenizer() {
    let tok = tokenizer();
    let mut styles = TokenizerConfig::default().styles;
    styles[0] = "renamed".into();
    let other = Tokenizer::new(TokenizerConfig {
        styles,
        ..TokenizerConfig::default()
    })
    .unwrap();
    assert_eq!(tok.vocab_size(), other.vocab_size());
    assert_ne!(tok.hash(), other.hash());
    for kind in [ModelKind::Decoder, ModelKind::Staria] {
        let (dir, _) = tiny(kind, &tok);
        let (theirs, _) = tiny(kind, &other);
        for file in [CONFIG_FILE, TOKENIZER_FILE] {
            std::fs::copy(theirs.path().join(file), dir.path().join(file)).unwrap();
        }
        for msg in [
            checkpoint::load_config(dir.path()).unwrap_err().to_string(),
            err_text(dir.path()),
        ] {
            assert!(
                msg.contains(WEIGHTS_FILE)
                    && msg.contains(&tok.hash())
                    && msg.contains("not this tokenizer's"),
                "{kind:?}: {msg}"
            );
        }
    }
}
