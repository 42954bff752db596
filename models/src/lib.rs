//! Staria model core: MIDI in/out, the Staria tokenizer, the transformer architectures
//! (decoder-only baseline, snippet encoder, hierarchical Staria) and the checkpoint format.
//! See `docs/ARCHITECTURE.md` for the contracts between crates.

pub mod error;
pub mod midi;
pub mod prompt;
pub mod song;
pub mod tokenizer;

pub use error::{Error, Result};
pub use midi::{read_midi, read_midi_file, section_label_for_marker, write_midi, write_midi_file};
pub use prompt::Prompt;
pub use song::{Note, Section, SectionLabel, Song, TempoChange, TimeSignature};
pub use tokenizer::{PromptSpec, Token, TokenKind, Tokenizer, TokenizerConfig, TrainingExample};
