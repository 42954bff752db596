//! Checkpoint folders: `config.json` (architecture, preset, tokenizer hash, provenance),
//! `tokenizer.json` and `model.safetensors`.
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
    /// The dtype the weights are stored in ("f32", "f16", "bf16").
    pub weights_dtype: String,
    #[serde(default)]
    pub provenance: Provenance,
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

fn dtype_name(dtype: DType) -> Result<&'static str> {
    match dtype {
        DType::F32 => Ok("f32"),
        DType::F16 => Ok("f16"),
        DType::BF16 => Ok("bf16"),
        other => Err(Error::Config(format!(
            "weights can be stored as f32, f16 or bf16, not {other:?}"
        ))),
    }
}

/// Write `bytes` to `dir/name` through a temporary file and a rename.
fn write_atomic(dir: &Path, name: &str, bytes: &[u8]) -> Result<()> {
    let path = dir.join(name);
    let tmp = dir.join(format!(".{name}.tmp"));
    std::fs::write(&tmp, bytes).map_err(|e| Error::io(&tmp, e))?;
    std::fs::rename(&tmp, &path).map_err(|e| Error::io(&path, e))
}

/// Save a checkpoint folder from named tensors (a `VarMap`'s data, or a loaded model's), storing
/// the weights as `dtype`. Creates `dir` if needed.
pub fn save_tensors(
    dir: &Path,
    config: &CheckpointConfig,
    tokenizer: &Tokenizer,
    tensors: &HashMap<String, Tensor>,
    dtype: DType,
) -> Result<()> {
    config.model.validate()?;
    if config.model.vocab_size() != tokenizer.vocab_size() {
        return Err(Error::Config(format!(
            "model vocab_size {} differs from the tokenizer's {}",
            config.model.vocab_size(),
            tokenizer.vocab_size()
        )));
    }
    let mut config = config.clone();
    config.tokenizer_hash = tokenizer.hash();
    config.weights_dtype = dtype_name(dtype)?.to_string();
    std::fs::create_dir_all(dir).map_err(|e| Error::io(dir, e))?;

    let mut stored = HashMap::with_capacity(tensors.len());
    for (name, t) in tensors {
        stored.insert(name.clone(), t.to_dtype(dtype)?.to_device(&Device::Cpu)?);
    }
    let weights = safetensors_bytes(&stored)?;
    let config_json = serde_json::to_string_pretty(&config)
        .map_err(|e| Error::checkpoint(dir.join(CONFIG_FILE), e.to_string()))?;
    // Weights first and config last: a folder whose config.json is new has complete files.
    write_atomic(dir, WEIGHTS_FILE, &weights)?;
    write_atomic(dir, TOKENIZER_FILE, tokenizer.to_json().as_bytes())?;
    write_atomic(dir, CONFIG_FILE, config_json.as_bytes())
}

/// Save a checkpoint from a training `VarMap`.
pub fn save(
    dir: &Path,
    config: &CheckpointConfig,
    tokenizer: &Tokenizer,
    varmap: &VarMap,
    dtype: DType,
) -> Result<()> {
    let tensors: HashMap<String, Tensor> = varmap
        .data()
        .lock()
        .map_err(|_| Error::Config("the VarMap lock is poisoned".into()))?
        .iter()
        .map(|(k, v)| (k.clone(), v.as_tensor().clone()))
        .collect();
    save_tensors(dir, config, tokenizer, &tensors, dtype)
}

fn safetensors_bytes(tensors: &HashMap<String, Tensor>) -> Result<Vec<u8>> {
    // Sorted names make the file byte-identical for identical weights.
    let mut names: Vec<&String> = tensors.keys().collect();
    names.sort();
    let views: Vec<(String, Tensor)> = names
        .into_iter()
        .map(|n| (n.clone(), tensors[n].clone()))
        .collect();
    safetensors::tensor::serialize(views, None)
        .map_err(|e| Error::Config(format!("serialising weights: {e}")))
}

fn read_file(dir: &Path, name: &str) -> Result<Vec<u8>> {
    let path = dir.join(name);
    match std::fs::read(&path) {
        Ok(b) => Ok(b),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            Err(Error::checkpoint(path, "file is missing"))
        }
        Err(e) => Err(Error::io(path, e)),
    }
}

/// Read and check `config.json` and `tokenizer.json` without loading weights.
pub fn load_config(dir: &Path) -> Result<(CheckpointConfig, Tokenizer)> {
    if !dir.is_dir() {
        return Err(Error::checkpoint(
            dir,
            "is not a checkpoint folder (no such directory)",
        ));
    }
    let config_path = dir.join(CONFIG_FILE);
    let config: CheckpointConfig = serde_json::from_slice(&read_file(dir, CONFIG_FILE)?)
        .map_err(|e| Error::checkpoint(&config_path, format!("not a valid Staria config: {e}")))?;
    if config.format_version != FORMAT_VERSION {
        return Err(Error::checkpoint(
            &config_path,
            format!(
                "format_version {} is not supported (this build reads {FORMAT_VERSION})",
                config.format_version
            ),
        ));
    }
    config
        .model
        .validate()
        .map_err(|e| Error::checkpoint(&config_path, e.to_string()))?;

    let tok_path = dir.join(TOKENIZER_FILE);
    let tok_json = String::from_utf8(read_file(dir, TOKENIZER_FILE)?)
        .map_err(|_| Error::checkpoint(&tok_path, "is not UTF-8 text"))?;
    let tokenizer =
        Tokenizer::from_json(&tok_json).map_err(|e| Error::checkpoint(&tok_path, e.to_string()))?;
    let hash = tokenizer.hash();
    if hash != config.tokenizer_hash {
        return Err(Error::checkpoint(
            &tok_path,
            format!(
                "vocabulary hash {hash} differs from config.json's tokenizer_hash {} (a different vocabulary)",
                config.tokenizer_hash
            ),
        ));
    }
    if tokenizer.vocab_size() != config.model.vocab_size() {
        return Err(Error::checkpoint(
            &tok_path,
            format!(
                "vocabulary has {} tokens but config.json's model expects vocab_size {}",
                tokenizer.vocab_size(),
                config.model.vocab_size()
            ),
        ));
    }
    Ok((config, tokenizer))
}

/// Read `model.safetensors` into named f32 tensors on `device`, checking it parses.
pub fn load_tensors(dir: &Path, device: &Device) -> Result<HashMap<String, Tensor>> {
    let path = dir.join(WEIGHTS_FILE);
    let bytes = read_file(dir, WEIGHTS_FILE)?;
    let st = safetensors::SafeTensors::deserialize(&bytes)
        .map_err(|e| Error::checkpoint(&path, format!("corrupt safetensors: {e}")))?;
    let mut out = HashMap::with_capacity(st.len());
    for (name, view) in st.tensors() {
        let t = candle_core::safetensors::Load::load(&view, device)
            .and_then(|t| t.to_dtype(DType::F32))
            .map_err(|e| Error::checkpoint(&path, format!("tensor {name}: {e}")))?;
        out.insert(name, t);
    }
    Ok(out)
}

/// Load a checkpoint folder onto `device`.
pub fn load(dir: &Path, device: &Device) -> Result<Checkpoint> {
    let (config, tokenizer) = load_config(dir)?;
    let tensors = load_tensors(dir, device)?;
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
        let shown = unused.len().min(4);
        return Err(Error::Config(format!(
            "the weights hold {} tensor(s) the model config does not use ({}{}): the config does \
             not describe these weights (was config.json rewritten by an older build that dropped \
             a setting such as grid_bins or window_bins?)",
            unused.len(),
            unused[..shown].join(", "),
            if unused.len() > shown { ", ..." } else { "" }
        )));
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
