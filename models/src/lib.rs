//! Staria model core: MIDI in/out, the Staria tokenizer, the transformer architectures
//! (decoder-only baseline, snippet encoder, hierarchical Staria) and the checkpoint format.
//! See `docs/ARCHITECTURE.md` for the contracts between crates.
//!
//! # Start here
//! A MIDI file becomes a [`Song`] ([`midi`]), a song becomes tokens and back ([`tokenizer`]), and
//! a checkpoint folder (`config.json`, `tokenizer.json`, `model.safetensors`) becomes a model
//! ([`checkpoint`]):
//!
//! ```no_run
//! use staria_models::{Tokenizer, TokenizerConfig, checkpoint, read_midi_file};
//! # fn main() -> staria_models::Result<()> {
//! let song = read_midi_file("tune.mid".as_ref())?;
//! let tok = Tokenizer::new(TokenizerConfig::default())?;
//! let ids = tok.encode_piece(&song); // `<S>` ... `<E>`
//! assert_eq!(tok.decode(&ids).notes.len(), song.notes.len());
//! let ck = checkpoint::load("models/pretrained/baseline-small".as_ref(), &candle_core::Device::Cpu)?;
//! println!("{} ({} tokens)", ck.config.name, ck.tokenizer.vocab_size());
//! # Ok(())
//! # }
//! ```
//!
//! Modules by room:
//! - data: [`song`] (notes and sections in ticks and ms), [`midi`] (read/write), [`tokenizer`]
//!   (ids, the one streaming grammar, augmentations), [`prompt`] (what a generation starts from);
//! - architectures (candle-nn, for training and the candle backend): [`decoder`], [`encoder`],
//!   [`staria`], [`model`] (either kind behind one cached-decoding interface), with the inputs
//!   they share: [`window`] (window position), [`grid`] (beat-grid head), `layers` (attention,
//!   RoPE, KV cache);
//! - fast CPU decoding: [`fast`] (`FastDecoder`: f32/f16/q8 weights, SIMD kernels per ISA);
//! - files and weights: [`checkpoint`], [`params`] (seeded variables), [`error`].

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
