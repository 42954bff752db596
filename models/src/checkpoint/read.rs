//! Reading a checkpoint folder's files, each checked (size, version, header) before it is
//! trusted; errors name the file and the mismatch.

use super::*;

/// The most bytes `config.json` or `tokenizer.json` may hold (both are a few kB): a bigger file
/// is not what it claims to be, and is refused before it is read.
pub const MAX_TEXT_FILE_BYTES: u64 = 16 << 20;

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

/// The model tensors a weights header describes and their shapes, q8 pairs checked and counted
/// once ([`q8`](super::q8)); the error names the file and the tensor.
fn header_shapes(
    path: &Path,
    meta: &safetensors::tensor::Metadata,
) -> Result<HashMap<String, Vec<usize>>> {
    let tensors = meta.tensors();
    let listed = tensors.iter().map(|(name, info)| {
        (
            name.clone(),
            q8::HeaderTensor {
                dtype: info.dtype,
                shape: &info.shape,
            },
        )
    });
    q8::model_shapes(listed)
        .map_err(|msg| Error::checkpoint(path, format!("malformed q8 weights: {msg}")))
}

/// How many parameters a safetensors file holds (every model tensor's element count, summed; a
/// q8 tensor's scales are not parameters), from its header alone (checked as for loading; the
/// weights are not read): what `staria info` and the plugin's model panel show.
pub fn count_parameters(path: &Path) -> Result<u64> {
    let (_, _, meta) = read_header(path)?;
    Ok(header_shapes(path, &meta)?
        .values()
        .map(|shape| shape.iter().map(|&d| d as u64).product::<u64>())
        .sum())
}

fn read_weights(
    dir: &Path,
    config: Option<&ModelConfig>,
    device: &Device,
) -> Result<HashMap<String, Tensor>> {
    read_weights_file(&dir.join(WEIGHTS_FILE), config, device)
}

/// Reads a weights file into named f32 tensors on `device`: float tensors converted, q8 ones
/// dequantised (their scales checked against the header first). With a `config`, the header is
/// checked against the tensors it implies before any data is read.
pub(crate) fn read_weights_file(
    path: &Path,
    config: Option<&ModelConfig>,
    device: &Device,
) -> Result<HashMap<String, Tensor>> {
    use std::io::Read;
    let corrupt = |msg: String| Error::checkpoint(path, format!("corrupt safetensors: {msg}"));
    let (mut file, len, meta) = read_header(path)?;
    let shapes = header_shapes(path, &meta)?;
    if let Some(config) = config {
        check_header(config, &shapes).map_err(|msg| Error::checkpoint(path, msg))?;
    }
    // The sizes are the file's own and agree with its header: read it.
    let mut bytes = Vec::new();
    bytes
        .try_reserve_exact(len as usize)
        .map_err(|_| Error::checkpoint(path, format!("{len} bytes do not fit in memory")))?;
    std::io::Seek::rewind(&mut file).map_err(|e| Error::io(path, e))?;
    file.read_to_end(&mut bytes)
        .map_err(|e| Error::io(path, e))?;
    let st = safetensors::SafeTensors::deserialize(&bytes).map_err(|e| corrupt(e.to_string()))?;
    let mut out = HashMap::with_capacity(shapes.len());
    for (name, view) in st.tensors() {
        let Some(shape) = shapes.get(&name) else {
            continue; // q8 scales, read with their tensor
        };
        let at = |e: String| Error::checkpoint(path, format!("tensor {name}: {e}"));
        let t = if view.dtype() == safetensors::Dtype::I8 {
            let scales = st
                .tensor(&format!("{name}{}", q8::SCALES_SUFFIX))
                .map_err(|e| at(e.to_string()))?;
            let values = q8::decode(view.data(), scales.data()).map_err(at)?;
            Tensor::from_vec(values, shape.as_slice(), device)
        } else {
            candle_core::safetensors::Load::load(&view, device).and_then(|t| t.to_dtype(DType::F32))
        }
        .map_err(|e| at(e.to_string()))?;
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

pub(super) fn unused_message(unused: &[&str]) -> String {
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
