//! A checkpoint's `prompt_velocity` (the velocity the engine hands the model played notes at)
//! survives fine-tuning: a run started from a checkpoint writes the starting checkpoint's value
//! into every checkpoint it saves; a run from scratch writes the level its data's snippets share
//! (`Shards::snippet_velocity`), none when their velocities vary.

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

/// Shards of the fixture corpus with every note at `velocity` (`None`: as the fixture plays them,
/// 70 to 100).
fn shards_at(dir: &Path, velocity: Option<u8>) -> Shards {
    let corpus = dir.join("corpus");
    match velocity {
        None => {
            common::write_corpus(&corpus);
        }
        Some(v) => {
            for i in 0..8u64 {
                let mut song = common::song(["AABB", "ABA"][i as usize % 2], 300 + i, 60, true);
                for n in &mut song.notes {
                    n.velocity = v;
                }
                let path = corpus.join(format!("tune_{i}.mid"));
                std::fs::create_dir_all(&corpus).unwrap();
                std::fs::write(&path, staria_models::midi::write_midi(&song).unwrap()).unwrap();
            }
        }
    }
    let tok = Tokenizer::new(TokenizerConfig::default()).unwrap();
    let prep = PrepareOptions {
        val_fraction: 0.2,
        seed: 3,
        synthetic: 4,
        verbose: false,
    };
    prepare::prepare(&corpus, &dir.join("shards"), &tok, &prep).unwrap();
    Shards::open(&dir.join("shards")).unwrap()
}

#[test]
fn a_run_from_scratch_records_the_velocity_its_snippets_share() {
    let tmp = tempfile::tempdir().unwrap();
    // 64 is quantized to the tokenizer's level 60.
    let shards = shards_at(tmp.path(), Some(64));
    assert_eq!(shards.snippet_velocity(), Some(60));
    let out = tmp.path().join("scratch");
    train::train_decoder(&common::tiny_config(), &shards, &opts(&out)).unwrap();
    let (cfg, _) = checkpoint::load_config(&out).unwrap();
    assert_eq!(cfg.prompt_velocity, Some(60));

    // The fixture corpus plays its notes at 70 to 100: no level to map played notes to.
    let varied = tempfile::tempdir().unwrap();
    assert_eq!(shards_at(varied.path(), None).snippet_velocity(), None);
}
