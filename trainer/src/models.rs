//! Model configs from experiment configs, and the checkpoint folders training writes: the
//! `staria_models::checkpoint` files plus `optimizer.safetensors` (AdamW moments) and
//! `trainer_state.json` (stage, step, config), which make a run resumable.

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use candle_core::{DType, Device, Tensor};
use serde::{Deserialize, Serialize};
use serde_json::Value;
use staria_models::checkpoint::{self, CheckpointConfig, Provenance};
use staria_models::encoder::EncoderConfig;
use staria_models::model::{ModelConfig, ModelKind};
use staria_models::tokenizer::{Token, Tokenizer};

use crate::config::ExperimentConfig;
use crate::error::{Result, TrainError, fsx};
use crate::optim::AdamW;
use staria_models::params::SeededVars;

pub const OPTIMIZER_FILE: &str = "optimizer.safetensors";
pub const STATE_FILE: &str = "trainer_state.json";
pub const METRICS_FILE: &str = "metrics.jsonl";
/// The encoder stage's own checkpoint kind (the engine never loads it; `train-staria` does).
pub const ENCODER_KIND: &str = "encoder";

fn merge(target: &mut Value, overrides: &toml::Table, what: &str) -> Result<()> {
    let obj = target
        .as_object_mut()
        .expect("model configs serialize to objects");
    for (k, v) in overrides {
        if !obj.contains_key(k) {
            let known: Vec<&String> = obj.keys().collect();
            return Err(TrainError::config(format!(
                "model.{what} has unknown key `{k}` (known: {known:?})"
            )));
        }
        obj.insert(
            k.clone(),
            serde_json::to_value(v).map_err(|e| TrainError::config(e.to_string()))?,
        );
    }
    Ok(())
}

/// The model config of `kind` for an experiment: the preset plus the overrides.
pub fn model_config(exp: &ExperimentConfig, kind: ModelKind, vocab: usize) -> Result<ModelConfig> {
    let base = ModelConfig::preset(kind, &exp.model.preset, vocab)
        .map_err(|e| TrainError::config(format!("model.preset: {e}")))?;
    let mut v = serde_json::to_value(&base).expect("config serializes");
    match kind {
        ModelKind::Decoder => merge(&mut v, &exp.model.overrides, "overrides")?,
        ModelKind::Staria => {
            merge(&mut v["decoder"], &exp.model.overrides, "overrides")?;
            merge(
                &mut v["encoder"],
                &exp.model.encoder_overrides,
                "encoder_overrides",
            )?;
        }
    }
    let cfg: ModelConfig = serde_json::from_value(v)
        .map_err(|e| TrainError::config(format!("model overrides: {e}")))?;
    cfg.validate()
        .map_err(|e| TrainError::config(format!("model: {e}")))?;
    if exp.data.seq_len > cfg.max_seq_len() {
        return Err(TrainError::config(format!(
            "data.seq_len = {} exceeds the model's max_seq_len = {}",
            exp.data.seq_len,
            cfg.max_seq_len()
        )));
    }
    if let ModelConfig::Staria(s) = &cfg
        && exp.data.snippet_tokens > s.encoder.max_seq_len
    {
        return Err(TrainError::config(format!(
            "data.snippet_tokens = {} exceeds the encoder's max_seq_len = {}",
            exp.data.snippet_tokens, s.encoder.max_seq_len
        )));
    }
    Ok(cfg)
}

/// The snippet encoder config: the Staria preset's encoder plus `encoder_overrides`.
pub fn encoder_config(exp: &ExperimentConfig, vocab: usize) -> Result<EncoderConfig> {
    match model_config(exp, ModelKind::Staria, vocab)? {
        ModelConfig::Staria(s) => Ok(s.encoder),
        ModelConfig::Decoder(_) => unreachable!("asked for a Staria config"),
    }
}

/// What `trainer_state.json` holds.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TrainerState {
    pub stage: String,
    /// Optimizer steps done.
    pub step: u64,
    pub total_steps: u64,
    pub tokens_seen: u64,
    pub config: ExperimentConfig,
    pub data: String,
    /// Checkpoints this run started from.
    #[serde(default)]
    pub init: Vec<String>,
    /// Stage-specific state (wake-sleep round...).
    #[serde(default)]
    pub extra: Value,
    /// Last validation loss (nats per target token), if measured.
    #[serde(default)]
    pub val_loss: Option<f64>,
    /// Written into every checkpoint's config (`CheckpointConfig::prompt_velocity`): the
    /// velocity of the training corpus, taken from the checkpoint the run started from (a
    /// fine-tune of the shipped model keeps its 80); `None` for a run from scratch.
    #[serde(default)]
    pub prompt_velocity: Option<u8>,
}

pub fn load_state(dir: &Path) -> Result<Option<TrainerState>> {
    let path = dir.join(STATE_FILE);
    if !path.exists() {
        return Ok(None);
    }
    let s = serde_json::from_str(&fsx::read_to_string(&path)?)
        .map_err(|e| TrainError::file(&path, e.to_string()))?;
    Ok(Some(s))
}

pub fn save_state(dir: &Path, state: &TrainerState) -> Result<()> {
    fsx::write_atomic(
        &dir.join(STATE_FILE),
        serde_json::to_string_pretty(state).expect("plain data"),
    )
}

/// The tokenizer a checkpoint ships with: the shards' vocabulary with `snippet_tokens` set to the
/// snippet length the model was trained on, so whoever builds prompts from `tokenizer.json` (the
/// engine) cuts snippets as training did. The vocabulary, and so the hash, is unchanged.
pub fn checkpoint_tokenizer(tok: &Tokenizer, snippet_tokens: usize) -> Result<Tokenizer> {
    let mut cfg = tok.config().clone();
    cfg.snippet_tokens = snippet_tokens;
    Ok(Tokenizer::new(cfg)?)
}

/// Saves a decoder or Staria checkpoint with its optimizer and trainer state.
pub fn save_model(
    dir: &Path,
    model: &ModelConfig,
    tok: &Tokenizer,
    vars: &SeededVars,
    opt: Option<&AdamW>,
    state: &TrainerState,
) -> Result<()> {
    fsx::create_dir_all(dir)?;
    let tok = &checkpoint_tokenizer(tok, state.config.data.snippet_tokens)?;
    let mut cfg = CheckpointConfig::new(
        &state.config.name,
        &state.config.model.preset,
        model.clone(),
        tok,
    );
    cfg.prompt_velocity = state.prompt_velocity;
    cfg.provenance = Provenance {
        created_by: format!("staria-train {}", env!("CARGO_PKG_VERSION")),
        command: state.stage.clone(),
        data: state.data.clone(),
        steps: state.step,
        notes: format!(
            "seed {}; from {}",
            state.config.seed,
            if state.init.is_empty() {
                "scratch".into()
            } else {
                state.init.join(", ")
            }
        ),
    };
    let tensors = vars.tensors(|_| true);
    // The whole set goes to a pending folder first and moves in once complete: weights,
    // optimizer moments and trainer state must be of one step, and a kill between the writes
    // of separate files would otherwise leave them from different steps (resumed from a mix).
    let pending = dir.join(PENDING_DIR);
    if pending.exists() {
        // A save interrupted before it was complete (recovery drops those; this one is ours).
        std::fs::remove_dir_all(&pending).map_err(|e| TrainError::io(&pending, e))?;
    }
    fsx::create_dir_all(&pending)?;
    checkpoint::save_tensors(&pending, &cfg, tok, &tensors, DType::F32)?;
    if let Some(opt) = opt {
        opt.save(&pending.join(OPTIMIZER_FILE))?;
    }
    save_state(&pending, state)?;
    fsx::write_atomic(&pending.join(PENDING_COMPLETE), b"")?;
    commit_pending(dir, &pending)
}

/// Where [`save_model`] writes a checkpoint before it moves into the run folder.
pub const PENDING_DIR: &str = ".pending-checkpoint";
/// Written into [`PENDING_DIR`] once every file of the save is there.
const PENDING_COMPLETE: &str = "COMPLETE";

/// Finishes or drops a save that a kill interrupted (call before reading a run folder to
/// resume it): a complete pending save is moved in, an incomplete one removed. Either way the
/// folder then holds one step's weights, optimizer and trainer state. Returns whether a pending
/// save was found.
pub fn recover_interrupted_save(dir: &Path) -> Result<bool> {
    let pending = dir.join(PENDING_DIR);
    if !pending.exists() {
        return Ok(false);
    }
    if pending.join(PENDING_COMPLETE).exists() {
        commit_pending(dir, &pending)?;
    } else {
        std::fs::remove_dir_all(&pending).map_err(|e| TrainError::io(&pending, e))?;
    }
    Ok(true)
}

/// Moves a complete pending save's files into `dir` (a rename each; files an interrupted commit
/// moved already are skipped, so this may run again after a kill), config last, then removes the
/// pending folder with its completion mark.
fn commit_pending(dir: &Path, pending: &Path) -> Result<()> {
    for name in [
        checkpoint::WEIGHTS_FILE,
        checkpoint::TOKENIZER_FILE,
        OPTIMIZER_FILE,
        STATE_FILE,
        checkpoint::CONFIG_FILE,
    ] {
        let from = pending.join(name);
        if from.exists() {
            let to = dir.join(name);
            std::fs::rename(&from, &to).map_err(|e| TrainError::io(&to, e))?;
        }
    }
    std::fs::remove_dir_all(pending).map_err(|e| TrainError::io(pending, e))
}

/// The weights of a decoder or Staria checkpoint, with its config.
pub fn load_model_tensors(
    dir: &Path,
    device: &Device,
) -> Result<(CheckpointConfig, Tokenizer, HashMap<String, Tensor>)> {
    let (cfg, tok) = checkpoint::load_config(dir)?;
    let tensors = checkpoint::load_weights(dir, &cfg.model, device)?;
    Ok((cfg, tok, tensors))
}

/// `config.json` of an encoder checkpoint.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct EncoderCheckpointConfig {
    pub kind: String,
    pub name: String,
    pub tokenizer_hash: String,
    pub encoder: EncoderConfig,
    pub projection_dim: usize,
}

/// Saves the encoder stage's checkpoint: `encoder.*` and `proj.*` weights.
pub fn save_encoder(
    dir: &Path,
    enc: &EncoderConfig,
    projection_dim: usize,
    tok: &Tokenizer,
    vars: &SeededVars,
    opt: Option<&AdamW>,
    state: &TrainerState,
) -> Result<()> {
    fsx::create_dir_all(dir)?;
    let tok = &checkpoint_tokenizer(tok, state.config.data.snippet_tokens)?;
    save_safetensors_atomic(&dir.join(checkpoint::WEIGHTS_FILE), &vars.tensors(|_| true))?;
    fsx::write_atomic(&dir.join(checkpoint::TOKENIZER_FILE), tok.to_json())?;
    let cfg = EncoderCheckpointConfig {
        kind: ENCODER_KIND.into(),
        name: state.config.name.clone(),
        tokenizer_hash: tok.hash(),
        encoder: enc.clone(),
        projection_dim,
    };
    fsx::write_atomic(
        &dir.join(checkpoint::CONFIG_FILE),
        serde_json::to_string_pretty(&cfg).expect("plain data"),
    )?;
    if let Some(opt) = opt {
        opt.save(&dir.join(OPTIMIZER_FILE))?;
    }
    save_state(dir, state)
}

pub fn load_encoder(
    dir: &Path,
    device: &Device,
) -> Result<(EncoderCheckpointConfig, HashMap<String, Tensor>)> {
    let path = dir.join(checkpoint::CONFIG_FILE);
    let cfg: EncoderCheckpointConfig =
        serde_json::from_str(&fsx::read_to_string(&path)?).map_err(|e| {
            TrainError::file(
                &path,
                format!("not an encoder checkpoint (from train-encoder): {e}"),
            )
        })?;
    if cfg.kind != ENCODER_KIND {
        return Err(TrainError::file(
            &path,
            format!("kind is {:?}, expected \"encoder\"", cfg.kind),
        ));
    }
    let w = dir.join(checkpoint::WEIGHTS_FILE);
    let tensors = candle_core::safetensors::load(&w, device)
        .map_err(|e| TrainError::file(&w, e.to_string()))?;
    Ok((cfg, tensors))
}

/// How a checkpoint to fine-tune from reads the shards' vocabulary (see [`init_vocabulary`]).
#[derive(Debug, Clone, PartialEq)]
pub enum InitVocabulary {
    /// The same ids: every weight is used in place.
    Same,
    /// The shards' tokenizer adds instruments after the checkpoint's: for each shards id, the
    /// checkpoint id whose embedding and output rows it starts from (a new instrument's note
    /// starts as the first instrument's note of the same pitch and velocity).
    Grown(Vec<u32>),
}

/// Checks that a checkpoint to fine-tune from can read the shards' vocabulary: the same
/// tokenizer; one that differs only in its sequence layout (`section_windows`), so the run
/// re-teaches a trained model the new layout with every weight in place; or one that lists more
/// instruments after the checkpoint's (e.g. `["piano"]` grown to the two-voice `["piano",
/// "bass"]`), whose new rows [`grow_vocabulary`] fills. Anything else is refused.
pub fn init_vocabulary(dir: &Path, hash: &str, shards: &Tokenizer) -> Result<InitVocabulary> {
    if hash == shards.hash() {
        return Ok(InitVocabulary::Same);
    }
    let path = dir.join(checkpoint::TOKENIZER_FILE);
    let text = fsx::read_to_string(&path)?;
    let init = Tokenizer::from_json(&text).map_err(|e| TrainError::file(&path, e.to_string()))?;
    let relaid_with = |instruments: Vec<String>| -> Result<Tokenizer> {
        let mut c = init.config().clone();
        c.section_windows = shards.config().section_windows;
        c.instruments = instruments;
        Tokenizer::new(c).map_err(|e| TrainError::file(&path, e.to_string()))
    };
    let layout_note = format!(
        "section_windows {} -> {}",
        init.config().section_windows,
        shards.config().section_windows
    );
    if relaid_with(init.config().instruments.clone())?.hash() == shards.hash() {
        eprintln!(
            "{}: {layout_note}: fine-tuning into the shards' layout (same vocabulary)",
            dir.display()
        );
        return Ok(InitVocabulary::Same);
    }
    let (old, new) = (&init.config().instruments, &shards.config().instruments);
    if new.len() <= old.len()
        || !new.starts_with(old)
        || relaid_with(new.clone())?.hash() != shards.hash()
    {
        check_tokenizer(dir, hash, &shards.hash())?;
    }
    let first = old[0].clone();
    let rows = (0..shards.vocab_size() as u32)
        .map(|id| {
            let token = shards.token(id).expect("id below vocab_size");
            let source = match token {
                Token::Note {
                    instrument,
                    pitch,
                    velocity,
                } if !old.contains(instrument) => Token::Note {
                    instrument: first.clone(),
                    pitch: *pitch,
                    velocity: *velocity,
                },
                other => other.clone(),
            };
            init.id(&source).ok_or_else(|| {
                TrainError::file(
                    &path,
                    format!("has no token {source} to start {token} from"),
                )
            })
        })
        .collect::<Result<Vec<u32>>>()?;
    eprintln!(
        "{}: instruments {old:?} -> {new:?}, {layout_note}: {} new token rows start from the \
         first instrument's notes",
        dir.display(),
        shards.vocab_size() - init.vocab_size()
    );
    Ok(InitVocabulary::Grown(rows))
}

/// The checkpoint tensors whose first dimension is the vocabulary: the token embedding and the
/// output head.
pub const VOCAB_TENSORS: [&str; 2] = ["tok_emb.weight", "lm_head.weight"];

/// Re-indexes the vocabulary tensors of a checkpoint's weights to the shards' ids
/// ([`InitVocabulary::Grown`]'s rows); other tensors are untouched.
pub fn grow_vocabulary(tensors: &mut HashMap<String, Tensor>, rows: &[u32]) -> Result<()> {
    for name in VOCAB_TENSORS {
        let Some(t) = tensors.get(name) else {
            continue;
        };
        let index = Tensor::new(rows, t.device())?;
        let grown = t.index_select(&index, 0)?;
        tensors.insert(name.to_string(), grown);
    }
    Ok(())
}

/// Checks that a checkpoint's tokenizer is the shards' tokenizer.
pub fn check_tokenizer(dir: &Path, hash: &str, shards_hash: &str) -> Result<()> {
    if hash != shards_hash {
        return Err(TrainError::file(
            dir,
            "was trained with another tokenizer than these shards' (tokenizer hashes differ)",
        ));
    }
    Ok(())
}

/// Writes tensors as safetensors through a temporary name and a rename (as
/// `staria_models::checkpoint` does), so an interrupted save never spoils the file it replaces.
pub fn save_safetensors_atomic(path: &Path, tensors: &HashMap<String, Tensor>) -> Result<()> {
    let tmp = path.with_extension("safetensors.tmp");
    candle_core::safetensors::save(tensors, &tmp)
        .map_err(|e| TrainError::file(&tmp, e.to_string()))?;
    std::fs::rename(&tmp, path).map_err(|e| TrainError::io(path, e))
}

pub fn metrics_path(dir: &Path) -> PathBuf {
    dir.join(METRICS_FILE)
}
