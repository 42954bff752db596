//! Where the shipped default checkpoint lives, shared by the `staria` CLI and the plugin.

use std::path::{Path, PathBuf};

/// The folder holding the shipped checkpoint(s), resolved at compile time so binaries and the
/// plugin find it whatever their working directory.
pub fn pretrained_dir() -> PathBuf {
    // `engine/..` shown to users without the detour.
    let crate_dir = Path::new(env!("CARGO_MANIFEST_DIR"));
    crate_dir.parent().map_or_else(
        || PathBuf::from(concat!(env!("CARGO_MANIFEST_DIR"), "/../models/pretrained")),
        |ws| ws.join("models/pretrained"),
    )
}

/// The model folder to use: `custom` if given, else `$STARIA_MODEL`, else the one checkpoint in
/// [`pretrained_dir`] (the one named `default` when there are several). The error names the
/// folder searched and what to do.
pub fn resolve_model_dir(custom: Option<&Path>) -> Result<PathBuf, String> {
    if let Some(p) = custom {
        return Ok(p.to_path_buf());
    }
    if let Some(p) = std::env::var_os("STARIA_MODEL").filter(|p| !p.is_empty()) {
        return Ok(PathBuf::from(p));
    }
    let root = pretrained_dir();
    let mut found: Vec<PathBuf> = std::fs::read_dir(&root)
        .map(|rd| {
            rd.filter_map(|e| e.ok().map(|e| e.path()))
                .filter(|p| p.join(staria_models::checkpoint::CONFIG_FILE).is_file())
                .collect()
        })
        .unwrap_or_default();
    found.sort();
    match found.len() {
        0 => Err(format!(
            "no default model: {} holds no checkpoint folder; choose a model folder or set STARIA_MODEL",
            root.display()
        )),
        1 => Ok(found.remove(0)),
        _ => found
            .iter()
            .find(|p| p.file_name().is_some_and(|n| n == "default"))
            .cloned()
            .ok_or_else(|| {
                let names: Vec<_> = found
                    .iter()
                    .filter_map(|p| p.file_name())
                    .map(|n| n.to_string_lossy())
                    .collect();
                format!(
                    "{} holds several checkpoints ({}) and none is named `default`; choose one",
                    root.display(),
                    names.join(", ")
                )
            }),
    }
}
