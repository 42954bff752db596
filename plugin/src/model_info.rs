//! The facts about a model folder the window shows (those `staria info` prints): name, kind,
//! preset, parameters, stored size and dtype, decoder shape. Read from `config.json`,
//! `tokenizer.json` and the `model.safetensors` header only (the weights are not read), on the
//! plugin's monitor thread, never the audio thread.

use std::io::Read;
use std::path::{Path, PathBuf};

#[derive(Debug, Clone, PartialEq)]
pub struct ModelFacts {
    pub dir: PathBuf,
    pub name: String,
    /// "decoder" or "staria".
    pub kind: String,
    pub preset: String,
    pub parameters: u64,
    /// Bytes of `model.safetensors`.
    pub weights_bytes: u64,
    pub weights_dtype: String,
    pub dim: usize,
    pub layers: usize,
    pub heads: usize,
    pub context: usize,
    pub vocab: usize,
}

impl ModelFacts {
    /// Reads the facts of a checkpoint folder; the error names the file at fault.
    pub fn read(dir: &Path) -> Result<Self, String> {
        let (config, tok) =
            staria_models::checkpoint::load_config(dir).map_err(|e| e.to_string())?;
        let weights = dir.join(staria_models::checkpoint::WEIGHTS_FILE);
        let weights_bytes = std::fs::metadata(&weights)
            .map_err(|e| format!("{}: {e}", weights.display()))?
            .len();
        let parameters = count_parameters(&weights)?;
        let dc = config.model.decoder();
        Ok(Self {
            dir: dir.to_path_buf(),
            name: config.name.clone(),
            kind: config.kind().to_string(),
            preset: config.preset.clone(),
            parameters,
            weights_bytes,
            weights_dtype: config.weights_dtype.clone(),
            dim: dc.dim,
            layers: dc.n_layers,
            heads: dc.n_heads,
            context: dc.max_seq_len,
            vocab: tok.vocab_size(),
        })
    }

    /// "12.3 M parameters, 24.6 MB (f16)".
    pub fn size_line(&self) -> String {
        format!(
            "{:.1} M parameters, {:.1} MB ({})",
            self.parameters as f64 / 1e6,
            self.weights_bytes as f64 / 1e6,
            self.weights_dtype
        )
    }

    /// "dim 512, 8 layers, 8 heads, context 2048 tokens".
    pub fn shape_line(&self) -> String {
        format!(
            "dim {}, {} layers, {} heads, context {} tokens",
            self.dim, self.layers, self.heads, self.context
        )
    }
}

/// Sum of tensor sizes from a safetensors header (8-byte length, then JSON).
fn count_parameters(path: &Path) -> Result<u64, String> {
    let bad = |why: String| format!("{}: {why}", path.display());
    let mut f = std::fs::File::open(path).map_err(|e| bad(e.to_string()))?;
    let mut len = [0u8; 8];
    f.read_exact(&mut len)
        .map_err(|e| bad(format!("no safetensors header ({e})")))?;
    let len = u64::from_le_bytes(len);
    if len > 100 << 20 {
        return Err(bad(format!(
            "a safetensors header of {len} bytes is not plausible"
        )));
    }
    let mut header = vec![0u8; len as usize];
    f.read_exact(&mut header)
        .map_err(|e| bad(format!("truncated safetensors header ({e})")))?;
    let json: serde_json::Value =
        serde_json::from_slice(&header).map_err(|e| bad(format!("safetensors header: {e}")))?;
    let tensors = json
        .as_object()
        .ok_or_else(|| bad("the safetensors header is not an object".into()))?;
    Ok(tensors
        .iter()
        .filter(|(k, _)| *k != "__metadata__")
        .filter_map(|(_, v)| {
            v.get("shape")?
                .as_array()
                .map(|d| d.iter().filter_map(|x| x.as_u64()).product::<u64>())
        })
        .sum())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The facts of the model the plugin ships, as `staria info` reads them.
    #[test]
    fn facts_of_the_shipped_model() {
        let dir = staria_engine::default_model::resolve_model_dir(None).unwrap();
        let f = ModelFacts::read(&dir).unwrap();
        assert!(!f.name.is_empty());
        assert!(f.kind == "decoder" || f.kind == "staria", "{}", f.kind);
        assert!(f.parameters > 100_000, "{}", f.parameters);
        assert!(f.weights_bytes >= f.parameters, "{f:?}");
        assert!(f.layers > 0 && f.dim > 0 && f.vocab > 0);
        assert!(f.size_line().contains("M parameters"));
    }

    /// A folder that is not a checkpoint is refused naming the missing file.
    #[test]
    fn not_a_checkpoint_is_named() {
        let dir = tempfile::tempdir().unwrap();
        let err = ModelFacts::read(dir.path()).unwrap_err();
        assert!(err.contains("config.json"), "{err}");
    }
}
