//! Staria model core: MIDI in/out, the Staria tokenizer, the transformer architectures
//! (decoder-only baseline, snippet encoder, hierarchical Staria) and the checkpoint format.
//! See `docs/ARCHITECTURE.md` for the contracts between crates.

pub mod checkpoint;
pub mod decoder;
pub mod encoder;
pub mod error;
pub mod fast;
pub mod grid;
mod layers;
pub mod midi;
pub mod model;
pub mod params;
pub mod prompt;
pub mod song;
pub mod staria;
pub mod tokenizer;
pub mod window;

pub use checkpoint::{Checkpoint, CheckpointConfig, Provenance};
pub use decoder::{Decoder, DecoderConfig};
pub use encoder::{Encoder, EncoderConfig};
pub use error::{Error, Result};
pub use layers::{KvCache, rope_tables};
pub use midi::{read_midi, read_midi_file, section_label_for_marker, write_midi, write_midi_file};
pub use model::{AnyModel, ModelConfig, ModelKind};
pub use params::SeededVars;
pub use prompt::Prompt;
pub use song::{Note, Section, SectionLabel, Song, TempoChange, TimeSignature};
pub use staria::{Latents, SnippetBatch, Staria, StariaConfig};
pub use tokenizer::{PromptSpec, Token, TokenKind, Tokenizer, TokenizerConfig, TrainingExample};
