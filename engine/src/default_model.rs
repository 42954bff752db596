//! The shipped default checkpoint, shared by the `staria` CLI and the plugin.
//!
//! The checkpoint in `models/pretrained/<SHIPPED_MODEL>` is built into every binary that links
//! the engine (about 15 MB), so a plugin bundle or a `staria` binary copied to another machine
//! plays without the source tree: a single-file `.clap` has no resources folder to carry it in.
//! On first use it is unpacked into the user's cache folder
//! (`<cache>/staria/models/<name>-<fingerprint>/`, [`cache_root`]) and loaded from there like any
//! other checkpoint folder. The fingerprint is of the built-in bytes, so two builds carrying
//! different models never share (or rewrite under each other) a folder; files already there are
//! compared with the built-in bytes and rewritten (through a temporary name and a rename) only
//! where they differ, so a damaged copy repairs itself.
//!
//! Contract of [`resolve_model_dir`]: the folder the user chose, else `$STARIA_MODEL`, else the
//! built-in model; never a path into the source tree.

use std::path::{Path, PathBuf};
use std::sync::OnceLock;

/// The shipped checkpoint's folder name under `models/pretrained` (a macro so that
/// `include_bytes!` can build its paths from the one name).
macro_rules! shipped_model_name {
    () => {
        "baseline-small"
    };
}

/// The shipped checkpoint's folder name under `models/pretrained`.
pub const SHIPPED_MODEL: &str = shipped_model_name!();

/// Overrides the cache folder the built-in model is unpacked into ([`cache_root`]).
pub const CACHE_DIR_ENV: &str = "STARIA_CACHE_DIR";

macro_rules! shipped_file {
    ($file:literal) => {
        include_bytes!(concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/../models/pretrained/",
            shipped_model_name!(),
            "/",
            $file
        ))
    };
}

/// The built-in checkpoint's files: (name, bytes), weights first and config last, the order
/// `checkpoint::save` writes in (a folder with a config always has its weights).
static SHIPPED_FILES: [(&str, &[u8]); 3] = [
    ("model.safetensors", shipped_file!("model.safetensors")),
    ("tokenizer.json", shipped_file!("tokenizer.json")),
    ("config.json", shipped_file!("config.json")),
];

/// The model folder to use: `custom` if given, else `$STARIA_MODEL`, else the built-in model
/// unpacked into [`cache_root`]. The error names the folder that could not be written.
pub fn resolve_model_dir(custom: Option<&Path>) -> Result<PathBuf, String> {
    if let Some(p) = custom {
        return Ok(p.to_path_buf());
    }
    if let Some(p) = std::env::var_os("STARIA_MODEL").filter(|p| !p.is_empty()) {
        return Ok(PathBuf::from(p));
    }
    unpack_shipped_model(&cache_root())
}

/// Where the built-in model is unpacked: `$STARIA_CACHE_DIR`, else the platform's cache folder
/// (`$XDG_CACHE_HOME` or `~/.cache` on Linux, `~/Library/Caches` on macOS, `%LOCALAPPDATA%` on
/// Windows) + `staria`, else the temporary folder + `staria`.
pub fn cache_root() -> PathBuf {
    if let Some(p) = std::env::var_os(CACHE_DIR_ENV).filter(|p| !p.is_empty()) {
        return PathBuf::from(p);
    }
    dirs::cache_dir()
        .unwrap_or_else(std::env::temp_dir)
        .join("staria")
}

/// Writes the built-in checkpoint into `root/models/<name>-<fingerprint>/` (files already there
/// with the same bytes are kept) and returns that folder.
pub fn unpack_shipped_model(root: &Path) -> Result<PathBuf, String> {
    let dir = root
        .join("models")
        .join(format!("{SHIPPED_MODEL}-{:016x}", shipped_fingerprint()));
    std::fs::create_dir_all(&dir).map_err(|e| {
        format!(
            "cannot unpack the built-in model into {}: {e}; set {CACHE_DIR_ENV} to a writable folder, or choose a model folder",
            dir.display()
        )
    })?;
    for (name, bytes) in &SHIPPED_FILES {
        let path = dir.join(name);
        if std::fs::read(&path).is_ok_and(|have| have == *bytes) {
            continue;
        }
        write_through_rename(&path, bytes).map_err(|e| {
            format!(
                "cannot write the built-in model's {} to {}: {e}; set {CACHE_DIR_ENV} to a writable folder, or choose a model folder",
                name,
                path.display()
            )
        })?;
    }
    Ok(dir)
}

/// FNV-1a (64 bit) over every built-in file's name and bytes, computed once per process (about
/// 15 ms for 15 MB): names the unpacked folder after its contents.
fn shipped_fingerprint() -> u64 {
    static FINGERPRINT: OnceLock<u64> = OnceLock::new();
    *FINGERPRINT.get_or_init(|| {
        const OFFSET_BASIS: u64 = 0xcbf2_9ce4_8422_2325;
        const PRIME: u64 = 0x0000_0100_0000_01b3;
        let mut hash = OFFSET_BASIS;
        for (name, bytes) in &SHIPPED_FILES {
            for &b in name.as_bytes().iter().chain(bytes.iter()) {
                hash = (hash ^ u64::from(b)).wrapping_mul(PRIME);
            }
        }
        hash
    })
}

/// Writes `bytes` to a name unique to this process and call, then renames it over `path`:
/// another instance unpacking at the same moment, or one reading, sees a whole file or none.
fn write_through_rename(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    use std::sync::atomic::{AtomicU64, Ordering};
    static NEXT: AtomicU64 = AtomicU64::new(0);
    let tmp = path.with_extension(format!(
        "tmp-{}-{}",
        std::process::id(),
        NEXT.fetch_add(1, Ordering::Relaxed)
    ));
    let written = std::fs::write(&tmp, bytes).and_then(|()| std::fs::rename(&tmp, path));
    if written.is_err() {
        let _ = std::fs::remove_file(&tmp);
    }
    written
}

#[cfg(test)]
mod tests {
    use super::*;
    use staria_models::checkpoint::{CONFIG_FILE, TOKENIZER_FILE, WEIGHTS_FILE};

    #[test]
    fn built_in_files_are_the_shipped_checkpoint() {
        let names: Vec<&str> = SHIPPED_FILES.iter().map(|(n, _)| *n).collect();
        assert_eq!(names, [WEIGHTS_FILE, TOKENIZER_FILE, CONFIG_FILE]);
        let source = Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("../models/pretrained")
            .join(SHIPPED_MODEL);
        for (name, bytes) in &SHIPPED_FILES {
            assert_eq!(
                std::fs::read(source.join(name)).unwrap(),
                *bytes,
                "{name} built in differs from {}",
                source.display()
            );
        }
    }

    #[test]
    fn unpacks_a_loadable_checkpoint_and_repairs_a_damaged_copy() {
        let root = tempfile::tempdir().unwrap();
        let dir = unpack_shipped_model(root.path()).unwrap();
        assert!(dir.starts_with(root.path()));
        let (config, _tokenizer) = staria_models::checkpoint::load_config(&dir).unwrap();
        assert_eq!(config.name, SHIPPED_MODEL);

        // A truncated weights file (an interrupted copy, a full disk) is rewritten.
        let weights = dir.join(WEIGHTS_FILE);
        std::fs::write(&weights, b"truncated").unwrap();
        assert_eq!(unpack_shipped_model(root.path()).unwrap(), dir);
        assert_eq!(std::fs::read(&weights).unwrap(), SHIPPED_FILES[0].1);
        // No temporary files are left behind.
        let left: Vec<_> = std::fs::read_dir(&dir)
            .unwrap()
            .map(|e| e.unwrap().file_name().into_string().unwrap())
            .filter(|n| n.contains("tmp"))
            .collect();
        assert!(left.is_empty(), "{left:?}");
    }

    #[test]
    fn an_unwritable_cache_is_named_in_the_error() {
        let root = tempfile::tempdir().unwrap();
        let blocker = root.path().join("not-a-folder");
        std::fs::write(&blocker, b"a file where the cache folder should be").unwrap();
        let err = unpack_shipped_model(&blocker).unwrap_err();
        assert!(err.contains("not-a-folder"), "{err}");
        assert!(err.contains(CACHE_DIR_ENV), "{err}");
    }

    #[test]
    fn a_chosen_folder_wins() {
        let chosen = Path::new("/some/model");
        assert_eq!(resolve_model_dir(Some(chosen)).unwrap(), chosen);
    }
}
