//! Staria trainer: token shards from MIDI folders, form-aware synthetic data, the training
//! stages (decoder-only baseline, contrastive encoder, staged Staria, wake-sleep) and evaluation.

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
