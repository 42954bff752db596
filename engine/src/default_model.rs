//! The built-in checkpoints, shared by the `staria` CLI and the plugin, and how a model is
//! chosen by name or folder.
//!
//! Every model listed in [`BUILTIN_MODELS`] (its folder `models/pretrained/<name>`) is built into
//! every binary that links the engine (`include_bytes!`), so a plugin bundle or a `staria` binary
//! copied to another machine plays without the source tree: a single-file `.clap` has no
//! resources folder to carry them in. One of them, [`DEFAULT_MODEL`], plays when none is chosen.
//! On first use a built-in model is unpacked into the user's cache folder
//! (`<cache>/staria/models/<name>-<fingerprint>/`, [`cache_root`]) and loaded from there like any
//! other checkpoint folder. The fingerprint is of that model's bytes, so two models, or two
//! builds carrying different bytes under one name, never share (or rewrite under each other) a
//! folder; files already there are compared with the built-in bytes and rewritten (through a
//! temporary name and a rename) only where they differ, so a damaged copy repairs itself.
//!
//! Adding a built-in model: its files (`config.json`, whose `name` is the folder's name,
//! `tokenizer.json`, `model.safetensors`) in `models/pretrained/<name>`, and its name on one line
//! of the `builtin_models!` list below. Making it the default: [`DEFAULT_MODEL`] (a build fails
//! if that name is not listed).
//!
//! Contract of [`resolve_model_dir`]: the model the user chose, else `$STARIA_MODEL`, else the
//! default built-in model; never a path into the source tree. A choice (the `--model` argument,
//! the plugin's model path, `$STARIA_MODEL`) is a path if that path exists, else a built-in
//! model's name; anything else is an error naming the path and the built-in names. An existing
//! folder wins over a name so that a path keeps meaning the folder it named when a later release
//! adds a built-in model of that name (a project saved with a folder `staria-small` still loads
//! that folder).

use std::ffi::OsString;
use std::path::{Path, PathBuf};
use std::sync::OnceLock;

use staria_models::checkpoint::CheckpointConfig;

/// A checkpoint built into the binary.
pub struct BuiltinModel {
    /// Its folder name under `models/pretrained`, and the name that chooses it (`--model NAME`,
    /// the plugin's model path, `$STARIA_MODEL`).
    pub name: &'static str,
    /// (file name, bytes): weights first and config last, the order `checkpoint::save` writes
    /// in (a folder with a config always has its weights).
    files: [(&'static str, &'static [u8]); 3],
    fingerprint: OnceLock<u64>,
}

/// The built-in model's file `$file` of the folder `models/pretrained/$name`.
macro_rules! builtin_file {
    ($name:literal, $file:literal) => {
        (
            $file,
            include_bytes!(concat!(
                env!("CARGO_MANIFEST_DIR"),
                "/../models/pretrained/",
                $name,
                "/",
                $file
            ))
            .as_slice(),
        )
    };
}

/// Declares [`BUILTIN_MODELS`] and [`BUILTIN_NAMES`] from the folder names under
/// `models/pretrained` (a macro so that `include_bytes!` can build each model's paths from its
/// one name, and the array's length follows the list).
macro_rules! builtin_models {
    ($($name:literal),+ $(,)?) => {
        /// Every built-in model, in the order they are listed (`staria models`, the plugin's
        /// Model panel).
        pub static BUILTIN_MODELS: [BuiltinModel; [$($name),+].len()] = [$(BuiltinModel {
            name: $name,
            files: [
                builtin_file!($name, "model.safetensors"),
                builtin_file!($name, "tokenizer.json"),
                builtin_file!($name, "config.json"),
            ],
            fingerprint: OnceLock::new(),
        }),+];

        /// The names of [`BUILTIN_MODELS`], in their order.
        pub const BUILTIN_NAMES: [&str; [$($name),+].len()] = [$($name),+];
    };
}

// One line per built-in model: the name of its folder under `models/pretrained`.
builtin_models![
    "baseline-small", // decoder-only, f16
    "staria-small",   // Staria (encoder + decoder with cross-attention), q8; loses to the baseline
];

/// The built-in model used when none is chosen.
pub const DEFAULT_MODEL: &str = "baseline-small";

const _: () = assert!(
    is_builtin_name(DEFAULT_MODEL),
    "DEFAULT_MODEL is not in the builtin_models! list"
);

const fn is_builtin_name(name: &str) -> bool {
    let mut i = 0;
    while i < BUILTIN_NAMES.len() {
        let (a, b) = (BUILTIN_NAMES[i].as_bytes(), name.as_bytes());
        if a.len() == b.len() {
            let mut k = 0;
            while k < a.len() && a[k] == b[k] {
                k += 1;
            }
            if k == a.len() {
                return true;
            }
        }
        i += 1;
    }
    false
}

/// The setting that chooses a model when the command line or the plugin state does not.
pub const MODEL_ENV: &str = "STARIA_MODEL";

/// Overrides the cache folder built-in models are unpacked into ([`cache_root`]).
pub const CACHE_DIR_ENV: &str = "STARIA_CACHE_DIR";

impl BuiltinModel {
    /// The built-in model of this name.
    pub fn find(name: &str) -> Option<&'static BuiltinModel> {
        BUILTIN_MODELS.iter().find(|m| m.name == name)
    }

    /// The model used when none is chosen ([`DEFAULT_MODEL`]).
    pub fn default_model() -> &'static BuiltinModel {
        Self::find(DEFAULT_MODEL).expect("DEFAULT_MODEL is listed (checked when building)")
    }

    /// The built-in model a folder is the unpacked copy of (by its folder name,
    /// `<name>-<fingerprint>`), if any: the window says "built in" beside such a model.
    pub fn of_unpacked_dir(dir: &Path) -> Option<&'static BuiltinModel> {
        let folder = dir.file_name()?.to_str()?;
        BUILTIN_MODELS
            .iter()
            .filter(|m| folder.starts_with(m.name))
            .find(|m| m.folder_name() == folder)
    }

    pub fn is_default(&self) -> bool {
        self.name == DEFAULT_MODEL
    }

    /// (file name, bytes) of its three files.
    pub fn files(&self) -> &[(&'static str, &'static [u8])] {
        &self.files
    }

    /// Bytes of all its files.
    pub fn size_bytes(&self) -> u64 {
        self.files.iter().map(|(_, b)| b.len() as u64).sum()
    }

    /// Its `config.json` (name, kind, preset, weights dtype), read from the built-in bytes.
    pub fn config(&self) -> Result<CheckpointConfig, String> {
        let (_, bytes) = self.files[2];
        serde_json::from_slice(bytes).map_err(|e| {
            format!(
                "the built-in model {}'s config.json does not read: {e}",
                self.name
            )
        })
    }

    /// `<name>-<fingerprint>`: the folder it is unpacked into under `<cache>/models`.
    pub fn folder_name(&self) -> String {
        format!("{}-{:016x}", self.name, self.fingerprint())
    }

    /// Writes its files into `root/models/<name>-<fingerprint>/` (files already there with the
    /// same bytes are kept) and returns that folder.
    pub fn unpack(&self, root: &Path) -> Result<PathBuf, String> {
        let dir = root.join("models").join(self.folder_name());
        std::fs::create_dir_all(&dir).map_err(|e| {
            format!(
                "cannot unpack the built-in model {} into {}: {e}; set {CACHE_DIR_ENV} to a writable folder, or choose a model folder",
                self.name,
                dir.display()
            )
        })?;
        for (name, bytes) in &self.files {
            let path = dir.join(name);
            if std::fs::read(&path).is_ok_and(|have| have == *bytes) {
                continue;
            }
            write_through_rename(&path, bytes).map_err(|e| {
                format!(
                    "cannot write the built-in model {}'s {} to {}: {e}; set {CACHE_DIR_ENV} to a writable folder, or choose a model folder",
                    self.name,
                    name,
                    path.display()
                )
            })?;
        }
        Ok(dir)
    }

    /// FNV-1a (64 bit) over every file's name and bytes, computed once per model and process
    /// (about 15 ms for 15 MB): names the unpacked folder after its contents.
    fn fingerprint(&self) -> u64 {
        *self.fingerprint.get_or_init(|| {
            const OFFSET_BASIS: u64 = 0xcbf2_9ce4_8422_2325;
            const PRIME: u64 = 0x0000_0100_0000_01b3;
            let mut hash = OFFSET_BASIS;
            for (name, bytes) in &self.files {
                for &b in name.as_bytes().iter().chain(bytes.iter()) {
                    hash = (hash ^ u64::from(b)).wrapping_mul(PRIME);
                }
            }
            hash
        })
    }
}

/// The built-in model a choice (`--model`, the plugin's model path) names under the rule of
/// [`resolve_model_dir`]: a built-in model's name that is not also an existing path.
pub fn builtin_choice(choice: &str) -> Option<&'static BuiltinModel> {
    if Path::new(choice).exists() {
        return None;
    }
    BuiltinModel::find(choice)
}

/// "baseline-small (default), staria-small": the built-in names for messages.
pub fn builtin_names_line() -> String {
    names_line(&BUILTIN_MODELS)
}

fn names_line(models: &[BuiltinModel]) -> String {
    models
        .iter()
        .map(|m| {
            if m.is_default() {
                format!("{} (default)", m.name)
            } else {
                m.name.to_string()
            }
        })
        .collect::<Vec<_>>()
        .join(", ")
}

/// What a model choice names, before anything is unpacked.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Choice<'a> {
    /// A path that exists (a checkpoint folder, or something the load will refuse by name).
    Folder(&'a Path),
    Builtin(&'a BuiltinModel),
}

impl PartialEq for BuiltinModel {
    fn eq(&self, other: &Self) -> bool {
        self.name == other.name
    }
}

impl std::fmt::Debug for BuiltinModel {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "BuiltinModel({})", self.name)
    }
}

/// What `choice` names among `models`: the path if it exists, else the built-in model of that
/// name. The error names `setting` (`--model`, `$STARIA_MODEL`, ...), the path and the names.
pub fn choose<'a>(
    models: &'a [BuiltinModel],
    choice: &'a Path,
    setting: &str,
) -> Result<Choice<'a>, String> {
    if choice.exists() {
        return Ok(Choice::Folder(choice));
    }
    if let Some(m) = choice
        .to_str()
        .and_then(|s| models.iter().find(|m| m.name == s))
    {
        return Ok(Choice::Builtin(m));
    }
    Err(format!(
        "{setting} {}: no such folder, and not a built-in model's name (built-in models: {})",
        choice.display(),
        names_line(models)
    ))
}

/// The model folder to use (see the module notes): `custom` if given, else `$STARIA_MODEL`,
/// each a folder that exists or a built-in model's name, else the default built-in model; a
/// built-in model is unpacked into [`cache_root`]. The error names the choice and the built-in
/// names, or the folder that could not be written.
pub fn resolve_model_dir(custom: Option<&Path>) -> Result<PathBuf, String> {
    resolve_among(
        &BUILTIN_MODELS,
        BuiltinModel::default_model(),
        custom,
        std::env::var_os(MODEL_ENV),
        &cache_root(),
    )
}

/// [`resolve_model_dir`] over a given list, default, `$STARIA_MODEL` value and cache folder.
fn resolve_among(
    models: &[BuiltinModel],
    default: &BuiltinModel,
    custom: Option<&Path>,
    env: Option<OsString>,
    root: &Path,
) -> Result<PathBuf, String> {
    let env = env.filter(|p| !p.is_empty()).map(PathBuf::from);
    let choice = match (custom, &env) {
        (Some(p), _) => choose(models, p, "model")?,
        (None, Some(p)) => choose(models, p, &format!("${MODEL_ENV}"))?,
        (None, None) => Choice::Builtin(default),
    };
    match choice {
        Choice::Folder(p) => Ok(p.to_path_buf()),
        Choice::Builtin(m) => m.unpack(root),
    }
}

/// Where built-in models are unpacked: `$STARIA_CACHE_DIR`, else the platform's cache folder
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

    /// A built-in model made here: `base`'s files with config.json's name set to `name` (bytes
    /// of its own, so a fingerprint of its own).
    fn renamed(base: &BuiltinModel, name: &str) -> BuiltinModel {
        let mut config: serde_json::Value = serde_json::from_slice(base.files[2].1).unwrap();
        config["name"] = name.into();
        config["provenance"]["notes"] = format!("made by the test as {name}").into();
        let bytes = serde_json::to_vec_pretty(&config).unwrap();
        BuiltinModel {
            name: String::leak(name.to_string()),
            files: [
                base.files[0],
                base.files[1],
                (CONFIG_FILE, Vec::leak(bytes)),
            ],
            fingerprint: OnceLock::new(),
        }
    }

    fn no_tmp_files(dir: &Path) {
        let left: Vec<_> = std::fs::read_dir(dir)
            .unwrap()
            .map(|e| e.unwrap().file_name().into_string().unwrap())
            .filter(|n| n.contains("tmp"))
            .collect();
        assert!(left.is_empty(), "{left:?}");
    }

    #[test]
    fn built_in_files_are_their_source_folders() {
        assert_eq!(
            BUILTIN_MODELS.iter().map(|m| m.name).collect::<Vec<_>>(),
            BUILTIN_NAMES
        );
        assert_eq!(BUILTIN_MODELS.iter().filter(|m| m.is_default()).count(), 1);
        assert_eq!(BuiltinModel::default_model().name, DEFAULT_MODEL);
        for (i, m) in BUILTIN_MODELS.iter().enumerate() {
            assert!(
                BUILTIN_MODELS[..i].iter().all(|o| o.name != m.name),
                "{} listed twice",
                m.name
            );
            let names: Vec<&str> = m.files().iter().map(|(n, _)| *n).collect();
            assert_eq!(names, [WEIGHTS_FILE, TOKENIZER_FILE, CONFIG_FILE]);
            let source = Path::new(env!("CARGO_MANIFEST_DIR"))
                .join("../models/pretrained")
                .join(m.name);
            for (name, bytes) in m.files() {
                assert_eq!(
                    std::fs::read(source.join(name)).unwrap(),
                    *bytes,
                    "{name} built in differs from {}",
                    source.display()
                );
            }
            // The window and `staria info` show config.json's name: it is the built-in name.
            let config = m.config().unwrap();
            assert_eq!(config.name, m.name, "config.json's name in {}", m.name);
            let kind = config.kind().to_string();
            assert!(kind == "decoder" || kind == "staria", "{kind}");
            assert!(m.size_bytes() > 100_000, "{}", m.size_bytes());
            // A model in the repository keeps within 30 MB (q8 or f16 weights make it fit).
            assert!(
                m.size_bytes() <= 30_000_000,
                "{}: {} bytes, over the 30 MB a model in the repository may take",
                m.name,
                m.size_bytes()
            );
        }
    }

    /// Every built-in model unpacks into a folder of its own that loads; a damaged copy is
    /// rewritten; a model with other bytes gets another folder.
    #[test]
    fn every_built_in_unpacks_loads_and_repairs() {
        let root = tempfile::tempdir().unwrap();
        // Another model, and another build's bytes under the default model's name.
        let other = renamed(BuiltinModel::default_model(), "another-model");
        let rebuilt = renamed(BuiltinModel::default_model(), DEFAULT_MODEL);
        let mut dirs = Vec::new();
        for m in BUILTIN_MODELS.iter().chain([&other, &rebuilt]) {
            let dir = m.unpack(root.path()).unwrap();
            assert!(dir.starts_with(root.path()));
            let folder = dir.file_name().unwrap().to_str().unwrap();
            assert!(folder.starts_with(&format!("{}-", m.name)), "{folder}");
            let loaded = staria_models::checkpoint::load(&dir, &candle_core::Device::Cpu).unwrap();
            assert_eq!(loaded.config.name, m.name);

            // A truncated weights file (an interrupted copy, a full disk) is rewritten.
            let weights = dir.join(WEIGHTS_FILE);
            std::fs::write(&weights, b"truncated").unwrap();
            assert_eq!(m.unpack(root.path()).unwrap(), dir);
            assert_eq!(std::fs::read(&weights).unwrap(), m.files()[0].1);
            no_tmp_files(&dir);
            dirs.push(dir);
        }
        for (i, d) in dirs.iter().enumerate() {
            assert!(!dirs[..i].contains(d), "{} shared", d.display());
        }
        // The built-in models' unpacked folders are recognised as theirs, no other folder is.
        for (m, dir) in BUILTIN_MODELS.iter().zip(&dirs) {
            assert_eq!(BuiltinModel::of_unpacked_dir(dir), Some(m));
        }
        for d in &dirs[BUILTIN_MODELS.len()..] {
            assert_eq!(BuiltinModel::of_unpacked_dir(d), None, "{}", d.display());
        }
        assert_eq!(BuiltinModel::of_unpacked_dir(root.path()), None);
    }

    #[test]
    fn an_unwritable_cache_is_named_in_the_error() {
        let root = tempfile::tempdir().unwrap();
        let blocker = root.path().join("not-a-folder");
        std::fs::write(&blocker, b"a file where the cache folder should be").unwrap();
        let err = BuiltinModel::default_model().unpack(&blocker).unwrap_err();
        assert!(err.contains("not-a-folder"), "{err}");
        assert!(err.contains(CACHE_DIR_ENV), "{err}");
        assert!(err.contains(DEFAULT_MODEL), "{err}");
    }

    /// A name chooses its built-in model, from the choice or `$STARIA_MODEL`; the choice comes
    /// before the variable, which comes before the default.
    #[test]
    fn names_choose_built_in_models() {
        let root = tempfile::tempdir().unwrap();
        let base = BuiltinModel::default_model();
        let list = [renamed(base, "alpha"), renamed(base, "beta")];
        let resolve = |custom: Option<&str>, env: Option<&str>| {
            resolve_among(
                &list,
                &list[0],
                custom.map(Path::new),
                env.map(OsString::from),
                root.path(),
            )
            .unwrap()
        };
        let (alpha, beta) = (
            list[0].unpack(root.path()).unwrap(),
            list[1].unpack(root.path()).unwrap(),
        );
        assert_ne!(alpha, beta);
        assert_eq!(resolve(Some("beta"), None), beta);
        assert_eq!(resolve(None, Some("beta")), beta);
        assert_eq!(resolve(Some("alpha"), Some("beta")), alpha);
        assert_eq!(resolve(None, None), alpha);
        assert_eq!(resolve(None, Some("")), alpha);
        let (config, _) = staria_models::checkpoint::load_config(&beta).unwrap();
        assert_eq!(config.name, "beta");
        // The real list: every name resolves to its model's folder.
        for m in &BUILTIN_MODELS {
            let dir = resolve_among(
                &BUILTIN_MODELS,
                BuiltinModel::default_model(),
                Some(Path::new(m.name)),
                None,
                root.path(),
            )
            .unwrap();
            assert_eq!(dir, m.unpack(root.path()).unwrap());
        }
    }

    /// A choice that is neither a folder nor a built-in name is refused naming it, where it
    /// came from and every built-in name; nothing is unpacked.
    #[test]
    fn an_unknown_name_is_refused_naming_the_built_ins() {
        let root = tempfile::tempdir().unwrap();
        let resolve = |custom: Option<&str>, env: Option<&str>| {
            resolve_among(
                &BUILTIN_MODELS,
                BuiltinModel::default_model(),
                custom.map(Path::new),
                env.map(OsString::from),
                root.path(),
            )
        };
        for (custom, env, setting) in [
            (Some("no-such-model"), None, "model no-such-model"),
            (
                Some("no-such-model"),
                Some(DEFAULT_MODEL),
                "model no-such-model",
            ),
            (None, Some("no-such-model"), "$STARIA_MODEL no-such-model"),
        ] {
            let err = resolve(custom, env).unwrap_err();
            assert!(err.contains(setting), "{err}");
            for name in BUILTIN_NAMES {
                assert!(err.contains(name), "{name} missing: {err}");
            }
            assert!(err.contains(&format!("{DEFAULT_MODEL} (default)")), "{err}");
        }
        assert!(!root.path().join("models").exists());
    }

    /// A folder that exists wins over a built-in model of the same name (here a model named
    /// with the folder's path, as `--model staria-small` in a folder holding `staria-small/`).
    #[test]
    fn an_existing_folder_wins_over_a_built_in_name() {
        let root = tempfile::tempdir().unwrap();
        let folder = root.path().join("mine");
        std::fs::create_dir(&folder).unwrap();
        let list = [renamed(
            BuiltinModel::default_model(),
            folder.to_str().unwrap(),
        )];
        for (custom, env) in [
            (Some(folder.as_os_str()), None),
            (None, Some(folder.as_os_str())),
        ] {
            let dir = resolve_among(
                &list,
                &list[0],
                custom.map(Path::new),
                env.map(OsString::from),
                root.path(),
            )
            .unwrap();
            assert_eq!(dir, folder);
        }
        assert!(!root.path().join("models").exists());
        // And through the public functions, an existing folder is used as it is.
        assert_eq!(resolve_model_dir(Some(&folder)).unwrap(), folder);
        assert_eq!(
            builtin_choice(DEFAULT_MODEL),
            Some(BuiltinModel::default_model())
        );
        assert_eq!(builtin_choice("no-such-model"), None);
        assert_eq!(builtin_choice(folder.to_str().unwrap()), None);
    }
}
