//! The facts about a model folder the window shows (those `staria info` prints): name, kind,
//! preset, whether it is a built-in model, parameters, stored size and dtype, decoder shape.
//! Read from `config.json`, `tokenizer.json` and the `model.safetensors` header only (the
//! weights are not read), on the plugin's monitor thread, never the audio thread.

use staria_engine::default_model::BuiltinModel;
use std::path::{Path, PathBuf};

#[derive(Debug, Clone, PartialEq)]
pub struct ModelFacts {
    pub dir: PathBuf,
    pub name: String,
    /// The folder is a built-in model's unpacked copy
    /// (`staria_engine::default_model::BuiltinModel::of_unpacked_dir`).
    pub built_in: bool,
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
        let parameters =
            staria_models::checkpoint::count_parameters(&weights).map_err(|e| e.to_string())?;
        let dc = config.model.decoder();
        Ok(Self {
            dir: dir.to_path_buf(),
            name: config.name.clone(),
            built_in: BuiltinModel::of_unpacked_dir(dir).is_some(),
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

    /// What is loaded: "baseline-small (decoder, preset small, built in)".
    pub fn name_line(&self) -> String {
        format!(
            "{} ({}, preset {}{})",
            self.name,
            self.kind,
            self.preset,
            if self.built_in { ", built in" } else { "" }
        )
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
        assert!(f.built_in, "{f:?}");
        assert!(f.name_line().ends_with(", built in)"), "{}", f.name_line());
    }

    /// A folder that is not a checkpoint is refused naming the missing file.
    #[test]
    fn not_a_checkpoint_is_named() {
        let dir = tempfile::tempdir().unwrap();
        let err = ModelFacts::read(dir.path()).unwrap_err();
        assert!(err.contains("config.json"), "{err}");
    }
}
