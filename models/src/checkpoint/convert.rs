//! Converting a checkpoint folder to another weight storage (`staria-train convert`): the same
//! model, tokenizer and provenance, the weights re-stored as f32, f16, bf16 or q8, and a note in
//! the provenance saying so.

use super::q8::WeightsStorage;
use super::*;

/// What [`convert`] wrote.
#[derive(Debug, Clone)]
pub struct Converted {
    /// The new folder's config (its `weights_dtype` and provenance notes updated).
    pub config: CheckpointConfig,
    /// The storage the source was in (its `weights_dtype`).
    pub from: String,
    /// Bytes of the source's and the new `model.safetensors`.
    pub from_bytes: u64,
    pub to_bytes: u64,
}

/// Writes a copy of the checkpoint folder `src` into `dst` with its weights stored as `storage`
/// (the files `save_tensors_as` writes; other files of `src`, such as a model card, are not
/// copied). `command` (e.g. `staria-train convert`) goes into the provenance note. The source is
/// read and checked as for loading (config, tokenizer, every tensor against the config), so a
/// folder that would not load is not converted. `dst` must not be `src` (the source is never
/// overwritten); it is created if needed.
pub fn convert(
    src: &Path,
    dst: &Path,
    storage: WeightsStorage,
    command: &str,
) -> Result<Converted> {
    if same_folder(src, dst) {
        return Err(Error::checkpoint(
            dst,
            format!(
                "is the checkpoint being converted ({}); write the copy to another folder",
                src.display()
            ),
        ));
    }
    let (mut config, tokenizer) = load_config(src)?;
    let tensors = load_weights(src, &config.model, &Device::Cpu)?;
    // Every tensor must also build the model (checked both ways), as for loading.
    build_model(&config.model, &tensors, &Device::Cpu)
        .map_err(|e| Error::checkpoint(src.join(WEIGHTS_FILE), e.to_string()))?;
    let from = config.weights_dtype.clone();
    let note = format!(
        "converted from {} (weights stored as {from}) to {storage} by {command}",
        src.display()
    );
    let notes = &mut config.provenance.notes;
    *notes = if notes.is_empty() {
        note
    } else {
        format!("{notes}; {note}")
    };
    save_tensors_as(dst, &config, &tokenizer, &tensors, storage)?;
    let size = |dir: &Path| {
        let path = dir.join(WEIGHTS_FILE);
        std::fs::metadata(&path)
            .map(|m| m.len())
            .map_err(|e| Error::io(&path, e))
    };
    config.weights_dtype = storage.name().to_string();
    Ok(Converted {
        config,
        from,
        from_bytes: size(src)?,
        to_bytes: size(dst)?,
    })
}

/// Whether `a` and `b` name the same folder (resolving links and `..`); `b` need not exist yet,
/// in which case it is compared through its parent.
fn same_folder(a: &Path, b: &Path) -> bool {
    let resolve = |p: &Path| -> Option<PathBuf> {
        if let Ok(c) = p.canonicalize() {
            return Some(c);
        }
        let parent = match p.parent() {
            Some(q) if !q.as_os_str().is_empty() => q,
            _ => Path::new("."),
        };
        Some(parent.canonicalize().ok()?.join(p.file_name()?))
    };
    match (resolve(a), resolve(b)) {
        (Some(a), Some(b)) => a == b,
        _ => a == b,
    }
}
