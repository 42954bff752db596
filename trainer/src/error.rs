//! The trainer's error type. Every variant names the file, setting or step at fault, since the
//! user of `staria-train` only sees the message.

use std::path::{Path, PathBuf};

#[derive(Debug, thiserror::Error)]
pub enum TrainError {
    /// A bad experiment config or command-line setting.
    #[error("config: {0}")]
    Config(String),
    /// A file that exists but cannot be used (corrupt shard, mismatched checkpoint...).
    #[error("{}: {msg}", path.display())]
    File { path: PathBuf, msg: String },
    #[error("I/O on {}: {source}", path.display())]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    /// Not enough usable data for what was asked (no pieces, no sections...).
    #[error("data: {0}")]
    Data(String),
    /// Training produced a non-finite loss or gradient.
    #[error("training diverged: {0}")]
    Diverged(String),
    #[error(transparent)]
    Model(#[from] staria_models::Error),
    #[error("tensor: {0}")]
    Candle(#[from] candle_core::Error),
}

pub type Result<T, E = TrainError> = std::result::Result<T, E>;

impl TrainError {
    pub fn file(path: impl AsRef<Path>, msg: impl Into<String>) -> Self {
        TrainError::File {
            path: path.as_ref().to_path_buf(),
            msg: msg.into(),
        }
    }
    pub fn io(path: impl AsRef<Path>, source: std::io::Error) -> Self {
        TrainError::Io {
            path: path.as_ref().to_path_buf(),
            source,
        }
    }
    pub fn config(msg: impl Into<String>) -> Self {
        TrainError::Config(msg.into())
    }
}

/// `std::fs` helpers that name the path in their errors.
pub mod fsx {
    use super::*;

    pub fn read(path: &Path) -> Result<Vec<u8>> {
        std::fs::read(path).map_err(|e| TrainError::io(path, e))
    }
    pub fn read_to_string(path: &Path) -> Result<String> {
        std::fs::read_to_string(path).map_err(|e| TrainError::io(path, e))
    }
    pub fn write(path: &Path, bytes: impl AsRef<[u8]>) -> Result<()> {
        std::fs::write(path, bytes).map_err(|e| TrainError::io(path, e))
    }
    pub fn create_dir_all(path: &Path) -> Result<()> {
        std::fs::create_dir_all(path).map_err(|e| TrainError::io(path, e))
    }
    /// Writes through a temporary file and a rename, so an interrupted run never leaves a
    /// half-written checkpoint or index behind.
    pub fn write_atomic(path: &Path, bytes: impl AsRef<[u8]>) -> Result<()> {
        let tmp = path.with_extension("tmp");
        write(&tmp, bytes)?;
        std::fs::rename(&tmp, path).map_err(|e| TrainError::io(path, e))
    }
}
