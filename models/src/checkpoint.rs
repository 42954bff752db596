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

/// The most bytes `config.json` or `tokenizer.json` may hold (both are a few kB): a bigger file
/// is not what it claims to be, and is refused before it is read.
pub const MAX_TEXT_FILE_BYTES: u64 = 16 << 20;

/// The largest sizes a checkpoint's `config.json` may ask for. Sizes from a file are checked
/// before anything is allocated for them: those the weights have a tensor for against the
/// tensor's shape in the `model.safetensors` header, and all of them against these bounds, which
/// leave the presets far inside (`seed`: dim 1536, 16 layers, 8192 positions) while refusing a
/// setting that would exhaust memory (a billion layers, a context of 2^40 positions).
pub mod limits {
    /// `vocab_size` (the tokenizer's own limit is lower).
    pub const VOCAB_SIZE: usize = 1 << 20;
    /// `dim` of the decoder and the encoder.
    pub const DIM: usize = 1 << 14;
    /// `n_layers` of the decoder and the encoder.
    pub const N_LAYERS: usize = 256;
    /// `ff_mult`.
    pub const FF_MULT: usize = 64;
    /// `max_seq_len` of the decoder and the encoder.
    pub const MAX_SEQ_LEN: usize = 1 << 20;
    /// `window_bins` and `grid_bins`.
    pub const BINS: usize = 1 << 12;
    /// `n_latents` of the encoder.
    pub const N_LATENTS: usize = 1 << 10;
    /// `n_layers × max_seq_len × dim`: the decoder's KV cache holds twice this many values, and
    /// every backend allocates it whole when the model is built (`seed`: 2.0e8).
    pub const KV_VALUES: u128 = 1 << 29;
    /// `max_seq_len × dim`: the RoPE tables hold three times this many values (`seed`: 1.3e7).
    pub const CONTEXT_VALUES: u128 = 1 << 26;
}

/// Checks every size in a model config against [`limits`]; `config_file` is named in the error,
/// with the setting and its value. `load_config` runs it; call it on a config from elsewhere
/// before building a model from it.
pub fn check_sizes(config_file: &Path, model: &ModelConfig) -> Result<()> {
    let refuse = |part: &str, setting: &str, value: u128, max: u128| -> Result<()> {
        if value <= max {
            return Ok(());
        }
        Err(Error::checkpoint(
            config_file,
            format!(
                "{part}{setting} = {value} is more than a checkpoint may ask for (at most {max})"
            ),
        ))
    };
    // The sizes a decoder and an encoder trunk share, and the RoPE tables they imply.
    let trunk = |part: &str, sizes: [(&str, usize, usize); 6], context: u128| -> Result<()> {
        for (setting, value, max) in sizes {
            refuse(part, setting, value as u128, max as u128)?;
        }
        refuse(part, "max_seq_len × dim", context, limits::CONTEXT_VALUES)
    };
    let decoder = |part: &str, c: &crate::decoder::DecoderConfig| -> Result<()> {
        let context = c.max_seq_len as u128 * c.dim as u128;
        trunk(
            part,
            [
                ("vocab_size", c.vocab_size, limits::VOCAB_SIZE),
                ("dim", c.dim, limits::DIM),
                ("n_layers", c.n_layers, limits::N_LAYERS),
                ("n_heads", c.n_heads, c.dim),
                ("ff_mult", c.ff_mult, limits::FF_MULT),
                ("max_seq_len", c.max_seq_len, limits::MAX_SEQ_LEN),
            ],
            context,
        )?;
        refuse(
            part,
            "window_bins",
            c.window_bins as u128,
            limits::BINS as u128,
        )?;
        refuse(part, "grid_bins", c.grid_bins as u128, limits::BINS as u128)?;
        refuse(
            part,
            "n_layers × max_seq_len × dim (the KV cache)",
            context * c.n_layers as u128,
            limits::KV_VALUES,
        )
    };
    match model {
        ModelConfig::Decoder(c) => decoder("", c),
        ModelConfig::Staria(c) => {
            decoder("decoder.", &c.decoder)?;
            let e = &c.encoder;
            trunk(
                "encoder.",
                [
                    ("vocab_size", e.vocab_size, limits::VOCAB_SIZE),
                    ("dim", e.dim, limits::DIM),
                    ("n_layers", e.n_layers, limits::N_LAYERS),
                    ("n_heads", e.n_heads, e.dim),
                    ("ff_mult", e.ff_mult, limits::FF_MULT),
                    ("max_seq_len", e.max_seq_len, limits::MAX_SEQ_LEN),
                ],
                e.max_seq_len as u128 * e.dim as u128,
            )?;
            refuse(
                "encoder.",
                "n_latents",
                e.n_latents as u128,
                limits::N_LATENTS as u128,
            )
        }
    }
}

/// The metadata of `path`, which must be a regular file of at most `max_len` bytes; errors name
/// the file (missing, unreadable, a folder or a device, too big).
fn file_len(path: &Path, max_len: Option<u64>) -> Result<u64> {
    let meta = std::fs::metadata(path).map_err(|e| open_error(path, e))?;
    if !meta.is_file() {
        return Err(Error::checkpoint(path, "is not a regular file"));
    }
    if let Some(max) = max_len
        && meta.len() > max
    {
        return Err(Error::checkpoint(
            path,
            format!(
                "is {} bytes, more than such a file can be (at most {max}): not a Staria checkpoint file",
                meta.len()
            ),
        ));
    }
    Ok(meta.len())
}

/// An I/O error opening or reading a checkpoint file, as one line naming it.
fn open_error(path: &Path, e: std::io::Error) -> Error {
    match e.kind() {
        std::io::ErrorKind::NotFound => Error::checkpoint(path, "file is missing"),
        std::io::ErrorKind::PermissionDenied => {
            Error::checkpoint(path, "cannot be read: permission denied")
        }
        _ => Error::io(path, e),
    }
}

/// Reads a small text file of the checkpoint (`config.json`, `tokenizer.json`), refusing one
/// bigger than [`MAX_TEXT_FILE_BYTES`] before reading it.
fn read_file(dir: &Path, name: &str) -> Result<Vec<u8>> {
    let path = dir.join(name);
    file_len(&path, Some(MAX_TEXT_FILE_BYTES))?;
    std::fs::read(&path).map_err(|e| open_error(&path, e))
}

/// The checkpoint folder itself: a directory that can be listed.
fn check_dir(dir: &Path) -> Result<()> {
    match std::fs::metadata(dir) {
        Ok(m) if m.is_dir() => Ok(()),
        Ok(_) => Err(Error::checkpoint(
            dir,
            "is not a checkpoint folder (it is a file)",
        )),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Err(Error::checkpoint(
            dir,
            "is not a checkpoint folder (no such directory)",
        )),
        Err(e) => Err(open_error(dir, e)),
    }
}

/// Reads and checks `config.json` alone: its size, format version, settings and sizes.
fn read_config(dir: &Path) -> Result<CheckpointConfig> {
    check_dir(dir)?;
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
    check_sizes(&config_path, &config.model)?;
    config
        .model
        .validate()
        .map_err(|e| Error::checkpoint(&config_path, e.to_string()))?;
    Ok(config)
}

/// Read and check `config.json` and `tokenizer.json` without loading weights.
pub fn load_config(dir: &Path) -> Result<(CheckpointConfig, Tokenizer)> {
    let config = read_config(dir)?;

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
    // Weights that record their tokenizer (saved since the key exists) must have this one: a
    // tokenizer.json and config.json taken from another checkpoint of the same vocabulary size
    // would otherwise read every token id as another token. A header that cannot be read is
    // left for the weights' own loading to report.
    let weights = dir.join(WEIGHTS_FILE);
    if let Ok((_, _, meta)) = read_header(&weights)
        && let Some(saved) = meta
            .metadata()
            .as_ref()
            .and_then(|m| m.get(WEIGHTS_TOKENIZER_HASH))
        && *saved != hash
    {
        return Err(Error::checkpoint(
            &weights,
            format!(
                "was saved with the vocabulary of hash {saved}, but tokenizer.json and \
                 config.json have {hash}: the weights are not this tokenizer's"
            ),
        ));
    }
    Ok((config, tokenizer))
}

/// Read `model.safetensors` into named f32 tensors on `device`, checking it parses. Its header
/// is read first and must describe exactly the bytes the file holds (a truncated or padded file
/// is refused before its data is read). Use [`load_weights`] to also check the tensors against
/// a model config before reading them.
pub fn load_tensors(dir: &Path, device: &Device) -> Result<HashMap<String, Tensor>> {
    read_weights(dir, None, device)
}

/// [`load_tensors`] for a model of `config` (the folder's own `config.json`): the
/// `model.safetensors` header is checked against every tensor the config implies (present,
/// shaped as the config says, none left over) before the tensor data is read, so a config
/// asking for sizes its weights lack is refused, naming the setting, without allocating for it.
pub fn load_weights(
    dir: &Path,
    config: &ModelConfig,
    device: &Device,
) -> Result<HashMap<String, Tensor>> {
    read_weights(dir, Some(config), device)
}

/// Opens a safetensors file and reads its header alone (not the tensor data), checking that the
/// header describes exactly the bytes the file holds. Returns the open file, its length and
/// the header.
fn read_header(path: &Path) -> Result<(std::fs::File, u64, safetensors::tensor::Metadata)> {
    use std::io::Read;
    let corrupt = |msg: String| Error::checkpoint(path, format!("corrupt safetensors: {msg}"));
    let len = file_len(path, None)?;
    let mut file = std::fs::File::open(path).map_err(|e| open_error(path, e))?;
    // The header: its length (8 bytes, little-endian), then that many bytes of JSON.
    let mut n = [0u8; 8];
    file.read_exact(&mut n)
        .map_err(|_| corrupt(format!("the file is {len} bytes, too short for a header")))?;
    let n = u64::from_le_bytes(n);
    if n > MAX_HEADER_BYTES || n > len - 8 {
        return Err(corrupt(format!(
            "a header of {n} bytes in a file of {len} bytes (at most {MAX_HEADER_BYTES})"
        )));
    }
    let mut header = vec![0u8; n as usize];
    file.read_exact(&mut header)
        .map_err(|e| Error::io(path, e))?;
    let meta: safetensors::tensor::Metadata =
        serde_json::from_slice(&header).map_err(|e| corrupt(format!("header: {e}")))?;
    let data = meta.data_len() as u64;
    let held = len - 8 - n;
    if held != data {
        return Err(corrupt(format!(
            "the header describes {data} bytes of tensor data but the file holds {held}{}",
            if held < data { " (truncated)" } else { "" }
        )));
    }
    Ok((file, len, meta))
}

fn read_weights(
    dir: &Path,
    config: Option<&ModelConfig>,
    device: &Device,
) -> Result<HashMap<String, Tensor>> {
    use std::io::Read;
    let path = dir.join(WEIGHTS_FILE);
    let corrupt = |msg: String| Error::checkpoint(&path, format!("corrupt safetensors: {msg}"));
    let (mut file, len, meta) = read_header(&path)?;
    if let Some(config) = config {
        let shapes: HashMap<String, Vec<usize>> = meta
            .tensors()
            .into_iter()
            .map(|(name, info)| (name, info.shape.clone()))
            .collect();
        check_header(config, &shapes).map_err(|msg| Error::checkpoint(&path, msg))?;
    }
    // The sizes are the file's own and agree with its header: read it.
    let mut bytes = Vec::new();
    bytes
        .try_reserve_exact(len as usize)
        .map_err(|_| Error::checkpoint(&path, format!("{len} bytes do not fit in memory")))?;
    std::io::Seek::rewind(&mut file).map_err(|e| Error::io(&path, e))?;
    file.read_to_end(&mut bytes)
        .map_err(|e| Error::io(&path, e))?;
    let st = safetensors::SafeTensors::deserialize(&bytes).map_err(|e| corrupt(e.to_string()))?;
    let mut out = HashMap::with_capacity(st.len());
    for (name, view) in st.tensors() {
        let t = candle_core::safetensors::Load::load(&view, device)
            .and_then(|t| t.to_dtype(DType::F32))
            .map_err(|e| Error::checkpoint(&path, format!("tensor {name}: {e}")))?;
        out.insert(name, t);
    }
    Ok(out)
}

/// The safetensors format's own limit on a header.
const MAX_HEADER_BYTES: u64 = 100_000_000;

/// Checks tensor shapes (from a weights file's header) against what `config` builds: every
/// tensor it needs present and shaped as it says, none left over. Builds the network over
/// stand-in tensors that hold no data (a broadcast scalar), so nothing sized by the tensors is
/// allocated. The message names the tensor and the config.json settings it follows from.
fn check_header(
    config: &ModelConfig,
    shapes: &HashMap<String, Vec<usize>>,
) -> std::result::Result<(), String> {
    let probe = HeaderShapes {
        shapes,
        used: Mutex::new(HashSet::new()),
        problem: Mutex::new(None),
    };
    let built = {
        let vb = VarBuilder::from_backend(Box::new(&probe), DType::F32, Device::Cpu);
        match config {
            ModelConfig::Decoder(c) => crate::decoder::Decoder::new(c, vb).map(drop),
            ModelConfig::Staria(c) => crate::staria::Staria::new(c, vb).map(drop),
        }
    };
    if let Some((name, msg)) = lock(&probe.problem).take() {
        let vocab = if name.ends_with("tok_emb.weight") || name == "lm_head.weight" {
            " (weights made for another vocabulary than tokenizer.json's?)"
        } else {
            ""
        };
        return Err(format!(
            "{msg} (config.json: {}){vocab}",
            settings_of(config, &name)
        ));
    }
    if let Err(e) = built {
        return Err(format!(
            "the model config (config.json) cannot be built: {e}"
        ));
    }
    let used = lock(&probe.used);
    let mut unused: Vec<&str> = shapes
        .keys()
        .map(String::as_str)
        .filter(|name| !used.contains(*name))
        .collect();
    if unused.is_empty() {
        return Ok(());
    }
    unused.sort_unstable();
    Err(unused_message(&unused))
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

fn unused_message(unused: &[&str]) -> String {
    let shown = unused.len().min(4);
    format!(
        "the weights hold {} tensor(s) the model config does not use ({}{}): the config does \
         not describe these weights (was config.json rewritten by an older build that dropped \
         a setting such as grid_bins or window_bins?)",
        unused.len(),
        unused[..shown].join(", "),
        if unused.len() > shown { ", ..." } else { "" }
    )
}

/// The config.json settings a tensor's shape follows from, with their values, for messages.
fn settings_of(config: &ModelConfig, name: &str) -> String {
    let d = config.decoder();
    let dec = |p: &str| {
        format!(
            "{p}vocab_size = {}, {p}dim = {}, {p}n_layers = {}, {p}ff_mult = {}, {p}window_bins = {}, {p}grid_bins = {}",
            d.vocab_size, d.dim, d.n_layers, d.ff_mult, d.window_bins, d.grid_bins
        )
    };
    match config {
        ModelConfig::Decoder(_) => dec(""),
        ModelConfig::Staria(c) if name.starts_with("encoder.") => {
            let e = &c.encoder;
            format!(
                "encoder.vocab_size = {}, encoder.dim = {}, encoder.n_layers = {}, encoder.ff_mult = {}, encoder.n_latents = {}",
                e.vocab_size, e.dim, e.n_layers, e.ff_mult, e.n_latents
            )
        }
        ModelConfig::Staria(c)
            if name.starts_with("xattn.") || name.starts_with("section_emb.") =>
        {
            format!(
                "decoder.n_layers = {}, cross_every = {}, n_sections = {}, decoder.dim = {}, decoder.ff_mult = {}, encoder.dim = {}",
                c.decoder.n_layers,
                c.cross_every,
                c.n_sections,
                c.decoder.dim,
                c.decoder.ff_mult,
                c.encoder.dim
            )
        }
        ModelConfig::Staria(_) => dec("decoder."),
    }
}

/// A VarBuilder backend over a weights header: hands out data-less stand-ins of the asked shape
/// and records the first tensor that is missing or shaped otherwise (`check_header`).
struct HeaderShapes<'a> {
    shapes: &'a HashMap<String, Vec<usize>>,
    used: Mutex<HashSet<String>>,
    problem: Mutex<Option<(String, String)>>,
}

impl HeaderShapes<'_> {
    /// Records the first problem: the tensor's name and the start of a sentence that
    /// `check_header` ends with the settings the tensor follows from.
    fn fail(&self, name: &str, msg: String) -> candle_core::Error {
        lock(&self.problem).get_or_insert((name.to_string(), msg.clone()));
        candle_core::Error::Msg(msg)
    }
}

impl candle_nn::var_builder::SimpleBackend for &HeaderShapes<'_> {
    fn get(
        &self,
        s: candle_core::Shape,
        name: &str,
        _: candle_nn::Init,
        dtype: DType,
        dev: &Device,
    ) -> candle_core::Result<Tensor> {
        let Some(have) = self.shapes.get(name) else {
            return Err(self.fail(
                name,
                format!("tensor {name} is missing: the model config needs it"),
            ));
        };
        lock(&self.used).insert(name.to_string());
        if have.as_slice() != s.dims() {
            return Err(self.fail(
                name,
                format!(
                    "tensor {name} has shape {have:?} but the model config needs {:?}",
                    s.dims()
                ),
            ));
        }
        Tensor::zeros((), dtype, dev)?.broadcast_as(s)
    }
    fn get_unchecked(&self, name: &str, dtype: DType, dev: &Device) -> candle_core::Result<Tensor> {
        let Some(have) = self.shapes.get(name) else {
            return Err(self.fail(
                name,
                format!("tensor {name} is missing: the model config needs it"),
            ));
        };
        lock(&self.used).insert(name.to_string());
        Tensor::zeros((), dtype, dev)?.broadcast_as(have.as_slice())
    }
    fn contains_tensor(&self, name: &str) -> bool {
        self.shapes.contains_key(name)
    }
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
