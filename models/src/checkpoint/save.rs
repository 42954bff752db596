//! Writing checkpoint folders: every file under a temporary name, then renamed into place.

use std::borrow::Cow;

use super::q8::{self, Raw, WeightsStorage};
use super::*;

pub(super) fn dtype_name(dtype: DType) -> Result<&'static str> {
    storage_of(dtype).map(WeightsStorage::name)
}

/// The float storage of `dtype` (f32, f16 or bf16).
pub(super) fn storage_of(dtype: DType) -> Result<WeightsStorage> {
    match dtype {
        DType::F32 => Ok(WeightsStorage::F32),
        DType::F16 => Ok(WeightsStorage::F16),
        DType::BF16 => Ok(WeightsStorage::BF16),
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
/// the weights as `dtype` (f32, f16 or bf16). Creates `dir` if needed.
pub fn save_tensors(
    dir: &Path,
    config: &CheckpointConfig,
    tokenizer: &Tokenizer,
    tensors: &HashMap<String, Tensor>,
    dtype: DType,
) -> Result<()> {
    save_tensors_as(dir, config, tokenizer, tensors, storage_of(dtype)?)
}

/// [`save_tensors`] in any [`WeightsStorage`], q8 included (see [`q8`](super::q8) for which
/// tensors it quantises). `config.json`'s `weights_dtype` says which.
pub fn save_tensors_as(
    dir: &Path,
    config: &CheckpointConfig,
    tokenizer: &Tokenizer,
    tensors: &HashMap<String, Tensor>,
    storage: WeightsStorage,
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
    config.weights_dtype = storage.name().to_string();
    std::fs::create_dir_all(dir).map_err(|e| Error::io(dir, e))?;

    let mut stored = HashMap::with_capacity(tensors.len());
    for (name, t) in tensors {
        let float = |dtype: DType| -> Result<Stored> {
            Ok(Stored::Tensor(t.to_dtype(dtype)?.to_device(&Device::Cpu)?))
        };
        match storage {
            WeightsStorage::F32 => stored.insert(name.clone(), float(DType::F32)?),
            WeightsStorage::F16 => stored.insert(name.clone(), float(DType::F16)?),
            WeightsStorage::BF16 => stored.insert(name.clone(), float(DType::BF16)?),
            WeightsStorage::Q8 if q8::stores_as_q8(name, t.dims()) => {
                let values = t.to_dtype(DType::F32)?.flatten_all()?.to_vec1::<f32>()?;
                let (q, scales) = q8::quantize(&values)
                    .map_err(|e| Error::Config(format!("tensor {name} {e}")))?;
                let scales_shape = q8::scales_shape(t.dims()).expect("stores_as_q8 checked it");
                stored.insert(
                    format!("{name}{}", q8::SCALES_SUFFIX),
                    Stored::Raw(Raw::f16(scales_shape, &scales)),
                );
                stored.insert(name.clone(), Stored::Raw(Raw::q8(t.dims(), &q)))
            }
            WeightsStorage::Q8 => stored.insert(name.clone(), float(DType::F16)?),
        };
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

/// A tensor to write: a candle tensor in its stored dtype, or raw bytes (q8 data and scales).
enum Stored {
    Tensor(Tensor),
    Raw(Raw),
}

impl safetensors::View for &Stored {
    fn dtype(&self) -> safetensors::Dtype {
        match self {
            Stored::Tensor(t) => <Tensor as safetensors::View>::dtype(t),
            Stored::Raw(r) => r.dtype,
        }
    }
    fn shape(&self) -> &[usize] {
        match self {
            Stored::Tensor(t) => t.dims(),
            Stored::Raw(r) => &r.shape,
        }
    }
    fn data(&self) -> Cow<'_, [u8]> {
        match self {
            Stored::Tensor(t) => <Tensor as safetensors::View>::data(t),
            Stored::Raw(r) => Cow::Borrowed(&r.data),
        }
    }
    fn data_len(&self) -> usize {
        match self {
            Stored::Tensor(t) => <Tensor as safetensors::View>::data_len(t),
            Stored::Raw(r) => r.data.len(),
        }
    }
}

fn safetensors_bytes(tensors: &HashMap<String, Stored>, tokenizer_hash: &str) -> Result<Vec<u8>> {
    // Sorted names make the file byte-identical for identical weights.
    let mut names: Vec<&String> = tensors.keys().collect();
    names.sort();
    let views: Vec<(String, &Stored)> = names
        .into_iter()
        .map(|n| (n.clone(), &tensors[n]))
        .collect();
    let info = HashMap::from([(
        WEIGHTS_TOKENIZER_HASH.to_string(),
        tokenizer_hash.to_string(),
    )]);
    safetensors::tensor::serialize(views, Some(info))
        .map_err(|e| Error::Config(format!("serialising weights: {e}")))
}
