//! A checkpoint's `prompt_velocity` (the velocity the engine hands the model played notes at)
//! survives fine-tuning: a run started from a checkpoint writes the starting checkpoint's value
//! into every checkpoint it saves; a run from scratch writes none.

mod common;

use std::path::Path;

use candle_core::Device;
use staria_models::checkpoint::{self, CONFIG_FILE};
use staria_models::tokenizer::{Tokenizer, TokenizerConfig};
use staria_trainer::prepare::{self, PrepareOptions};
use staria_trainer::shards::Shards;
use staria_trainer::train::{self, Backend, RunOptions};

fn opts(out: &Path) -> RunOptions {
    RunOptions {
        out: out.to_path_buf(),
        device: Device::Cpu,
        resume: false,
        progress: false,
        max_steps: Some(2),
        backend: Backend::Auto,
    }
}

#[test]
fn a_fine_tune_keeps_the_starting_checkpoints_prompt_velocity() {
    let tmp = tempfile::tempdir().unwrap();
    let corpus = tmp.path().join("corpus");
    common::write_corpus(&corpus);
    let tok = Tokenizer::new(TokenizerConfig::default()).unwrap();
    let prep = PrepareOptions {
        val_fraction: 0.2,
        seed: 3,
        synthetic: 4,
        verbose: false,
    };
    prepare::prepare(&corpus, &tmp.path().join("shards"), &tok, &prep).unwrap();
    let shards = Shards::open(&tmp.path().join("shards")).unwrap();
    let exp = common::tiny_config();

    let scratch = tmp.path().join("scratch");
    train::train_decoder(&exp, &shards, &opts(&scratch)).unwrap();
    let (cfg, _) = checkpoint::load_config(&scratch).unwrap();
    assert_eq!(cfg.prompt_velocity, None);

    // The shipped model's kind of config: the corpus velocity recorded.
    let path = scratch.join(CONFIG_FILE);
    let mut json: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&path).unwrap()).unwrap();
    json["prompt_velocity"] = serde_json::json!(80);
    std::fs::write(&path, serde_json::to_string_pretty(&json).unwrap()).unwrap();

    let tuned = tmp.path().join("tuned");
    train::train_decoder_from(&exp, &shards, &opts(&tuned), Some(&scratch)).unwrap();
    let (cfg, _) = checkpoint::load_config(&tuned).unwrap();
    assert_eq!(cfg.prompt_velocity, Some(80));
    // ...and a resumed run keeps it (it lives in the trainer state).
    let resumed = RunOptions {
        resume: true,
        max_steps: Some(1),
        ..opts(&tuned)
    };
    train::train_decoder_from(&exp, &shards, &resumed, Some(&scratch)).unwrap();
    let (cfg, _) = checkpoint::load_config(&tuned).unwrap();
    assert_eq!(cfg.prompt_velocity, Some(80));
}
