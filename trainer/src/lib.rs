//! Staria trainer: token shards from MIDI folders, form-aware synthetic data, the training
//! stages (decoder-only baseline, contrastive encoder, staged Staria, wake-sleep) and evaluation.
//!
//! # Start here
//! The `staria-train` command line (`src/main.rs`, commands in `trainer/README.md`) is the way
//! in: `prepare` writes shards, `train-decoder` (and the other stages) writes resumable runs,
//! `eval` measures checkpoints side by side. Each command is one function here:
//! [`prepare::prepare`], [`train::train_decoder_from`] (and the other stages in [`train`] and
//! [`wake_sleep`]), [`eval::evaluate`].
//!
//! Modules by room:
//! - data: [`prepare`] (MIDI folder to pieces), [`shards`] (token files and their index),
//!   [`synth`] (form-aware synthetic pieces), [`batch`] (windows, augmentation, collation);
//! - training: [`config`] (the TOML experiment), [`models`] (building and saving models),
//!   [`train`] (the stages' loops), [`fast_train`] (the hand-written CPU decoder trainer),
//!   [`optim`] (AdamW, schedule), [`contrastive`], [`recognizer`], [`wake_sleep`], [`monitor`];
//! - evaluation: [`eval`], [`music`] (rhythm, density and form measures), [`generate`] and
//!   [`sampler`] (sampling with the section plan forced);
//! - [`error`].

pub mod batch;
pub mod config;
pub mod contrastive;
pub mod error;
pub mod eval;
pub mod fast_train;
pub mod generate;
pub mod models;
pub mod monitor;
pub mod music;
pub mod optim;
pub mod prepare;
pub mod recognizer;
pub mod sampler;
pub mod shards;
pub mod synth;
pub mod train;
pub mod wake_sleep;

pub use error::{Result, TrainError};
