//! Checkpoint folders: `config.json` (architecture, preset, tokenizer hash, provenance),
//! `tokenizer.json` and `model.safetensors`.
//!
//! Weights are stored as f32, f16, bf16 or q8 (`weights_dtype`); a q8 file holds int8 matrices
//! with one f16 scale per 32 values beside f16 small tensors, its format in [`q8`]. Every
//! storage loads as f32 tensors ([`load_tensors`]), so each loader (candle, the fast decoder,
//! training from `--init`) reads all of them; [`convert`] re-stores a folder.
//!
//! Saving writes every file under a temporary name and renames it into place, so an interrupted
//! save never leaves a half-written checkpoint over a good one. Loading checks each file and
//! names the file and the mismatch on any problem.

use std::collections::{HashMap, HashSet};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use candle_core::{DType, Device, Tensor};
use candle_nn::{VarBuilder, VarMap};
use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};
use crate::model::{AnyModel, ModelConfig, ModelKind};
use crate::params::SeededVars;
use crate::tokenizer::Tokenizer;

mod convert;
pub mod limits;
pub mod q8;
mod read;
mod save;

pub use convert::{Converted, convert};
pub use limits::check_sizes;
pub use q8::WeightsStorage;
pub(crate) use read::read_weights_file;
pub use read::{MAX_TEXT_FILE_BYTES, count_parameters, load_config, load_tensors, load_weights};
pub use save::{WEIGHTS_TOKENIZER_HASH, save, save_tensors, save_tensors_as};

use read::unused_message;
use save::dtype_name;

pub const CONFIG_FILE: &str = "config.json";
pub const TOKENIZER_FILE: &str = "tokenizer.json";
pub const WEIGHTS_FILE: &str = "model.safetensors";
/// Bumped when the folder layout changes incompatibly.
pub const FORMAT_VERSION: u32 = 1;

/// Where a checkpoint came from, for `staria info` and model cards.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Provenance {
    /// The program that wrote it, e.g. `staria-train 0.1.0`.
    #[serde(default)]
    pub created_by: String,
    /// The command line or stage that produced it.
    #[serde(default)]
    pub command: String,
    /// Training data description.
    #[serde(default)]
    pub data: String,
    /// Optimizer steps taken.
    #[serde(default)]
    pub steps: u64,
    /// Anything else worth knowing (e.g. "untrained: random weights").
    #[serde(default)]
    pub notes: String,
}

/// The contents of `config.json`. The model config is flattened in, so the decoder's
/// hyper-parameters (`n_layers`, `dim`, ...) sit at the top level for a decoder checkpoint and
/// under `"decoder"` for a Staria one, as external tools expect.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct CheckpointConfig {
    pub format_version: u32,
    /// A human-readable model name.
    pub name: String,
    /// The preset it was built from ("seed", "small", "tiny") or "custom".
    pub preset: String,
    /// sha256 of the tokenizer vocabulary; must match `tokenizer.json`.
    pub tokenizer_hash: String,
    /// The dtype the weights are stored in ("f32", "f16", "bf16", or "q8": see [`q8`]).
    pub weights_dtype: String,
    #[serde(default)]
    pub provenance: Provenance,
    /// The velocity the training corpus's notes carry. A model follows a snippet only at the
    /// velocities it was trained on (the shipped one: 70-90, its corpus at 80 shifted by one
    /// level), so the engine hands it every snippet note at this velocity, whatever was played
    /// (`staria_engine::generate::Generator::prompt_for`). Absent: snippets as played.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub prompt_velocity: Option<u8>,
    #[serde(flatten)]
    pub model: ModelConfig,
}

impl CheckpointConfig {
    pub fn new(name: &str, preset: &str, model: ModelConfig, tokenizer: &Tokenizer) -> Self {
        Self {
            format_version: FORMAT_VERSION,
            name: name.to_string(),
            preset: preset.to_string(),
            tokenizer_hash: tokenizer.hash(),
            weights_dtype: "f32".to_string(),
            provenance: Provenance::default(),
            prompt_velocity: None,
            model,
        }
    }
    pub fn kind(&self) -> ModelKind {
        self.model.kind()
    }
}

/// A loaded checkpoint: its config, tokenizer and model, ready to generate.
pub struct Checkpoint {
    pub dir: PathBuf,
    pub config: CheckpointConfig,
    pub tokenizer: Tokenizer,
    pub model: AnyModel,
}

/// Load a checkpoint folder onto `device`.
pub fn load(dir: &Path, device: &Device) -> Result<Checkpoint> {
    let (config, tokenizer) = load_config(dir)?;
    let tensors = load_weights(dir, &config.model, device)?;
    let mut model = build_model(&config.model, &tensors, device)
        .map_err(|e| Error::checkpoint(dir.join(WEIGHTS_FILE), e.to_string()))?;
    model.set_tokenizer(&tokenizer);
    Ok(Checkpoint {
        dir: dir.to_path_buf(),
        config,
        tokenizer,
        model,
    })
}

/// Build a model from named tensors, checking every expected tensor is there with its shape and
/// that the config uses every tensor there is: a tensor left over means a config that does not
/// describe these weights (e.g. one rewritten by an older build that dropped a setting it did
/// not know, such as `grid_bins`), which would otherwise load and silently play worse.
/// Cheap: the model shares the tensors' storage.
pub fn build_model(
    config: &ModelConfig,
    tensors: &HashMap<String, Tensor>,
    device: &Device,
) -> Result<AnyModel> {
    let used = Arc::new(Mutex::new(HashSet::new()));
    let vb = VarBuilder::from_backend(
        Box::new(CheckedTensors {
            tensors: tensors.clone(),
            used: Arc::clone(&used),
        }),
        DType::F32,
        device.clone(),
    );
    let model = AnyModel::new(config, vb)?;
    let used = used.lock().unwrap_or_else(|e| e.into_inner());
    let mut unused: Vec<&str> = tensors
        .keys()
        .map(String::as_str)
        .filter(|name| !used.contains(*name))
        .collect();
    if !unused.is_empty() {
        unused.sort_unstable();
        return Err(Error::Config(unused_message(&unused)));
    }
    Ok(model)
}

/// A VarBuilder backend over a tensor map whose errors name the tensor and both shapes, and
/// which records the names the model asked for (`build_model`'s leftover check).
struct CheckedTensors {
    tensors: HashMap<String, Tensor>,
    used: Arc<Mutex<HashSet<String>>>,
}

impl CheckedTensors {
    fn take(&self, name: &str) -> candle_core::Result<&Tensor> {
        let t = self
            .tensors
            .get(name)
            .ok_or_else(|| candle_core::Error::Msg(format!("tensor {name} is missing")))?;
        self.used
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .insert(name.to_string());
        Ok(t)
    }
}

impl candle_nn::var_builder::SimpleBackend for CheckedTensors {
    fn get(
        &self,
        s: candle_core::Shape,
        name: &str,
        _: candle_nn::Init,
        dtype: DType,
        dev: &Device,
    ) -> candle_core::Result<Tensor> {
        let t = self.take(name)?;
        if t.shape() != &s {
            return Err(candle_core::Error::Msg(format!(
                "tensor {name} has shape {:?}, the config expects {:?}",
                t.dims(),
                s.dims()
            )));
        }
        t.to_dtype(dtype)?.to_device(dev)
    }
    fn get_unchecked(&self, name: &str, dtype: DType, dev: &Device) -> candle_core::Result<Tensor> {
        self.take(name)?.to_dtype(dtype)?.to_device(dev)
    }
    fn contains_tensor(&self, name: &str) -> bool {
        self.tensors.contains_key(name)
    }
}

/// Create a checkpoint with freshly initialised (untrained) weights from a preset: what tests and
/// benchmarks use, and what ships until a trained model exists. `provenance.notes` says so.
/// The same `seed` gives the same weights, so tests built on an untrained model are repeatable.
pub fn create_untrained(
    dir: &Path,
    name: &str,
    kind: ModelKind,
    preset: &str,
    tokenizer: &Tokenizer,
    dtype: DType,
    seed: u64,
) -> Result<CheckpointConfig> {
    let model = ModelConfig::preset(kind, preset, tokenizer.vocab_size())?;
    let vars = SeededVars::new(seed);
    AnyModel::new(&model, vars.builder(&Device::Cpu))?;
    let mut config = CheckpointConfig::new(name, preset, model, tokenizer);
    config.provenance = Provenance {
        created_by: format!("staria-models {}", env!("CARGO_PKG_VERSION")),
        command: format!("create_untrained({kind}, {preset}, seed {seed})"),
        data: "none".into(),
        steps: 0,
        notes: "untrained: random initial weights, for tests and benchmarks".into(),
    };
    save(dir, &config, tokenizer, &vars.map, dtype)?;
    config.weights_dtype = dtype_name(dtype)?.to_string();
    Ok(config)
}
