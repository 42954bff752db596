//! Staria model core: MIDI in/out, the Staria tokenizer, the transformer architectures
//! (decoder-only baseline, snippet encoder, hierarchical Staria) and the checkpoint format.
//! See `docs/ARCHITECTURE.md` for the contracts between crates.

pub mod error;
pub mod fast;
pub mod prompt;
pub mod song;

pub use error::{Error, Result};
pub use prompt::Prompt;
pub use song::{Note, Section, SectionLabel, Song, TempoChange, TimeSignature};
