//! Writing checkpoint folders: every file under a temporary name, then renamed into place.

use super::*;

pub(super) fn dtype_name(dtype: DType) -> Result<&'static str> {
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
    let weights = safetensors_bytes(&stored, &config.tokenizer_hash)?;
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

/// The `model.safetensors` metadata key holding the tokenizer hash the weights were saved with
/// (checkpoints written before it have none and are not checked).
pub const WEIGHTS_TOKENIZER_HASH: &str = "staria.tokenizer_hash";

fn safetensors_bytes(tensors: &HashMap<String, Tensor>, tokenizer_hash: &str) -> Result<Vec<u8>> {
    // Sorted names make the file byte-identical for identical weights.
    let mut names: Vec<&String> = tensors.keys().collect();
    names.sort();
    let views: Vec<(String, Tensor)> = names
        .into_iter()
        .map(|n| (n.clone(), tensors[n].clone()))
        .collect();
    let info = HashMap::from([(
        WEIGHTS_TOKENIZER_HASH.to_string(),
        tokenizer_hash.to_string(),
    )]);
    safetensors::tensor::serialize(views, Some(info))
        .map_err(|e| Error::Config(format!("serialising weights: {e}")))
}
