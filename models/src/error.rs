//! One error type for the model core. Every variant names what went wrong and where, so a user
//! seeing it in the CLI or the plugin status line knows which file or setting to fix.

use std::path::PathBuf;

#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// A MIDI byte string that could not be read (truncated, corrupt, unsupported format).
    #[error("MIDI: {0}")]
    Midi(String),
    /// A token sequence or tokenizer setting that is not valid.
    #[error("tokenizer: {0}")]
    Tokenizer(String),
    /// A model configuration that cannot be built (e.g. dim not divisible by heads).
    #[error("config: {0}")]
    Config(String),
    /// Tokens that do not fit the model's context: `cached` already in the KV cache, `new` asked
    /// for, `max` the model's `max_seq_len`. Nothing was written.
    #[error("{cached} cached + {new} new tokens exceed the model's context (max_seq_len {max})")]
    ContextFull {
        cached: usize,
        new: usize,
        max: usize,
    },
    /// A checkpoint folder problem; `file` is the file inside the folder at fault.
    #[error("checkpoint {}: {msg}", file.display())]
    Checkpoint { file: PathBuf, msg: String },
    #[error("tensor: {0}")]
    Candle(#[from] candle_core::Error),
    #[error("I/O on {}: {source}", path.display())]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
}

pub type Result<T, E = Error> = std::result::Result<T, E>;

impl Error {
    pub fn checkpoint(file: impl Into<PathBuf>, msg: impl Into<String>) -> Self {
        Error::Checkpoint {
            file: file.into(),
            msg: msg.into(),
        }
    }
    pub fn io(path: impl Into<PathBuf>, source: std::io::Error) -> Self {
        Error::Io {
            path: path.into(),
            source,
        }
    }
}
