//! Staria trainer: token shards from MIDI folders, form-aware synthetic data, the training
//! stages (decoder-only baseline, contrastive encoder, staged Staria, wake-sleep) and evaluation.

pub mod config;
pub mod error;
pub mod monitor;
pub mod music;
pub mod optim;

pub use error::{Result, TrainError};
