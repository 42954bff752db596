//! The CPU fast path for training the decoder-only model and Staria: a hand-written forward,
//! loss and backward over flat `f32` buffers, and the AdamW update on them.
//!
//! Contract:
//! - It computes the function of the candle path, `Decoder::forward` followed by
//!   `batch::masked_nll` (see `forward.rs` for the maths), and its exact gradient, within f32
//!   rounding (the gradient check in `tests.rs` compares every parameter gradient with candle's).
//! - For Staria ([`StariaTrainer`], `staria.rs`) the same holds for `Staria::forward`: the
//!   decoder with the gated cross-attention sites (`cross.rs`) runs here, the snippet encoder
//!   and section embedding on candle, which gets d loss / d latents back for their gradients;
//!   frozen parameters are those the optimizer does not hold (`staria_tests.rs` checks the loss
//!   and every trainable gradient against candle's with the stages' trainable sets).
//! - Parameters carry the candle `VarMap` names and shapes ([`params::param_shapes`]); the
//!   optimizer state is [`crate::optim::AdamW`]'s ([`FlatAdamW`]). [`FastTrainer::new`] takes the
//!   weights and moments from the candle objects and [`FastTrainer::write_back`] returns them, so
//!   checkpoints and `--resume` are shared with the candle path in both directions.
//! - Buffers (saved activations, gradient scratch, parameter gradients) are allocated when the
//!   trainer is built ([`FastTrainer::reserve`]) and reused; a step allocates only the small
//!   per-batch id vectors and name lists.
//! - Work is spread over rayon's pool: the projections through `gemm`'s own rayon parallelism,
//!   attention one task per sequence, elementwise loops by rows. Every reduction runs in a fixed
//!   order, so a run is deterministic whatever the thread count.

mod backward;
mod buffers;
pub mod cross;
mod forward;
mod matmul;
pub mod params;
mod staria;
#[cfg(test)]
mod staria_tests;
#[cfg(test)]
mod tests;

use std::collections::HashMap;

use candle_core::{Device, Tensor};
use staria_models::DecoderConfig;
use staria_models::grid::GridRows;
use staria_models::params::SeededVars;
use staria_models::window::WindowBins;

use crate::batch::{Batch, Example, Layout, collate};
use crate::error::{Result, TrainError};
use crate::optim::{AdamW, AdamWParams, FlatAdamW};
use buffers::{Buffers, Widths};
use forward::RopeTables;
pub use params::{LayerParams, Params, param_shapes};
pub use staria::StariaTrainer;

/// The shape of one batch and the model sizes the kernels need.
#[derive(Debug, Clone, Copy, PartialEq)]
pub(crate) struct Shape {
    pub batch: usize,
    pub seq: usize,
    pub dim: usize,
    pub heads: usize,
    pub head_dim: usize,
    pub ff_hidden: usize,
    pub vocab: usize,
    pub eps: f32,
    /// The beat-grid head's rows in this batch: bins, first onset id and onsets per row; `None`
    /// without a head or without grid rows (`staria_models::grid`).
    pub grid: Option<GridShape>,
}

#[derive(Debug, Clone, Copy, PartialEq)]
pub(crate) struct GridShape {
    pub bins: usize,
    pub first_onset: usize,
    pub onsets: usize,
}

impl Shape {
    /// Token positions in the batch (`batch * seq`).
    pub fn rows(&self) -> usize {
        self.batch * self.seq
    }
}

/// A decoder-only model being trained on the fast path (see the module docs).
pub struct FastTrainer {
    cfg: DecoderConfig,
    head_dim: usize,
    pub params: Params,
    /// Gradients of the last [`FastTrainer::loss_and_grads`].
    pub grads: Params,
    optim: FlatAdamW,
    buffers: Buffers,
    rope: RopeTables,
    /// The grid head's rows (from the tokenizer); `None` without a grid head.
    grid_rows: Option<GridRows>,
}

impl FastTrainer {
    /// Takes the weights from `tensors` (e.g. `SeededVars::tensors`) and the optimizer state from
    /// `opt`, which must hold exactly the decoder's parameters. `grid_rows` (`GridRows::of`) is
    /// required for a model with a beat-grid head.
    pub fn new(
        cfg: &DecoderConfig,
        tensors: &HashMap<String, Tensor>,
        opt: &AdamW,
        grid_rows: Option<GridRows>,
    ) -> Result<Self> {
        let optim = opt.to_flat()?;
        let mut names: Vec<String> = param_shapes(cfg).into_iter().map(|(n, _)| n).collect();
        names.sort();
        let slot_names: Vec<&str> = optim.slots.iter().map(|s| s.name.as_str()).collect();
        if slot_names != names.iter().map(String::as_str).collect::<Vec<_>>() {
            return Err(TrainError::config(
                "fast path: the optimizer must hold exactly the decoder's parameters",
            ));
        }
        Self::with_optimizer(cfg, tensors, optim, grid_rows)
    }

    /// [`FastTrainer::new`] with the optimizer state given as is: a Staria trainer's holds its
    /// trainable parameters, which need not be the decoder's.
    fn with_optimizer(
        cfg: &DecoderConfig,
        tensors: &HashMap<String, Tensor>,
        optim: FlatAdamW,
        grid_rows: Option<GridRows>,
    ) -> Result<Self> {
        if (cfg.grid_bins > 0) != grid_rows.is_some_and(|g| g.bins == cfg.grid_bins) {
            return Err(TrainError::config(format!(
                "fast path: the model has grid_bins {} but the trainer got {:?} grid rows",
                cfg.grid_bins,
                grid_rows.map(|g| g.bins)
            )));
        }
        cfg.validate()?;
        let head_dim = cfg.head_dim()?;
        let params = Params::from_tensors(cfg, tensors)?;
        Ok(Self {
            cfg: cfg.clone(),
            head_dim,
            grads: Params::zeros(cfg),
            params,
            optim,
            buffers: Buffers::default(),
            rope: RopeTables::new(head_dim, cfg.max_seq_len, cfg.rope_theta),
            grid_rows,
        })
    }

    /// Builds from a [`SeededVars`] holding the decoder's variables.
    pub fn from_vars(
        cfg: &DecoderConfig,
        vars: &SeededVars,
        opt: &AdamW,
        grid_rows: Option<GridRows>,
    ) -> Result<Self> {
        Self::new(cfg, &vars.tensors(|_| true), opt, grid_rows)
    }

    pub fn config(&self) -> &DecoderConfig {
        &self.cfg
    }

    /// Optimizer steps done.
    pub fn step_count(&self) -> u64 {
        self.optim.step
    }

    fn widths(&self) -> Widths {
        Widths {
            dim: self.cfg.dim,
            heads: self.cfg.n_heads,
            ff_hidden: self.cfg.ff_mult * self.cfg.dim,
            vocab: self.cfg.vocab_size,
            n_layers: self.cfg.n_layers,
            grid_bins: self.cfg.grid_bins,
            grid_onsets: self.grid_rows.map_or(0, |g| g.onsets),
        }
    }

    /// Allocates the buffers for batches of up to `batch` sequences of `seq` positions now, so
    /// that training steps do not.
    pub fn reserve(&mut self, batch: usize, seq: usize) {
        let w = self.widths();
        self.buffers.ensure(w, batch, seq);
    }

    fn shape(&self, batch: usize, seq: usize, with_grid: bool) -> Shape {
        Shape {
            batch,
            seq,
            dim: self.cfg.dim,
            heads: self.cfg.n_heads,
            head_dim: self.head_dim,
            ff_hidden: self.cfg.ff_mult * self.cfg.dim,
            vocab: self.cfg.vocab_size,
            eps: self.cfg.norm_eps as f32,
            grid: self.grid_rows.filter(|_| with_grid).map(|g| GridShape {
                bins: g.bins,
                first_onset: g.first_onset as usize,
                onsets: g.onsets,
            }),
        }
    }

    /// Loads a `[batch, seq]` batch (row-major ids, window-position bins, beat-grid rows,
    /// targets, 0/1 mask) into the buffers. `win` is empty for a model without the window
    /// input; `grid` (`[batch, seq, onsets]`) empty without a grid head or without grid rows.
    #[allow(clippy::too_many_arguments)]
    fn load_batch(
        &mut self,
        ids: &[u32],
        win: &[u32],
        grid: &[u32],
        targets: &[u32],
        mask: &[f32],
        batch: usize,
        seq: usize,
    ) -> Result<Shape> {
        let rows = batch * seq;
        if ids.len() != rows || targets.len() != rows || mask.len() != rows || rows == 0 {
            return Err(TrainError::config(format!(
                "fast path: batch {batch} x {seq} with {} ids, {} targets, {} mask values",
                ids.len(),
                targets.len(),
                mask.len()
            )));
        }
        if seq > self.cfg.max_seq_len {
            return Err(TrainError::config(format!(
                "decoder: sequence length {seq} must be within 1..={} (max_seq_len)",
                self.cfg.max_seq_len
            )));
        }
        let vocab = self.cfg.vocab_size;
        if let Some(&bad) = ids.iter().chain(targets).find(|&&t| t as usize >= vocab) {
            return Err(TrainError::config(format!(
                "token id {bad} is outside the model vocabulary of {vocab}"
            )));
        }
        let bins = self.cfg.window_bins;
        if win.len() != if bins > 0 { rows } else { 0 } {
            return Err(TrainError::config(format!(
                "fast path: {} window bins for {rows} ids (window_bins {bins})",
                win.len()
            )));
        }
        if let Some(&bad) = win.iter().find(|&&b| b as usize >= bins) {
            return Err(TrainError::config(format!(
                "window bin {bad} is outside the model's window_bins {bins}"
            )));
        }
        let onsets = self.grid_rows.map_or(0, |g| g.onsets);
        if !grid.is_empty() && grid.len() != rows * onsets {
            return Err(TrainError::config(format!(
                "fast path: {} beat-grid entries for {rows} ids of {onsets} onsets (grid_bins {})",
                grid.len(),
                self.cfg.grid_bins
            )));
        }
        if let Some(&bad) = grid.iter().find(|&&b| b as usize > self.cfg.grid_bins) {
            return Err(TrainError::config(format!(
                "beat-grid bin {bad} is outside the model's grid_bins {} (+1 for no grid)",
                self.cfg.grid_bins
            )));
        }
        self.reserve(batch, seq);
        let b = &mut self.buffers;
        b.ids[..rows].copy_from_slice(ids);
        b.win[..win.len()].copy_from_slice(win);
        b.grid[..grid.len()].copy_from_slice(grid);
        b.targets[..rows].copy_from_slice(targets);
        b.mask[..rows].copy_from_slice(mask);
        Ok(self.shape(batch, seq, !grid.is_empty()))
    }

    /// Forward only: (summed masked loss in nats, mask count).
    #[allow(clippy::too_many_arguments)]
    pub fn loss(
        &mut self,
        ids: &[u32],
        win: &[u32],
        grid: &[u32],
        targets: &[u32],
        mask: &[f32],
        batch: usize,
        seq: usize,
    ) -> Result<(f64, f64)> {
        let s = self.load_batch(ids, win, grid, targets, mask, batch, seq)?;
        forward::forward(&s, &self.params, &mut self.buffers, &self.rope);
        Ok(forward::loss(&s, &mut self.buffers, false))
    }

    /// Forward and backward: (summed masked loss, mask count); [`FastTrainer::grads`] then holds
    /// the gradient of the mean loss (sum / max(count, 1)).
    #[allow(clippy::too_many_arguments)]
    pub fn loss_and_grads(
        &mut self,
        ids: &[u32],
        win: &[u32],
        grid: &[u32],
        targets: &[u32],
        mask: &[f32],
        batch: usize,
        seq: usize,
    ) -> Result<(f64, f64)> {
        let s = self.load_batch(ids, win, grid, targets, mask, batch, seq)?;
        forward::forward(&s, &self.params, &mut self.buffers, &self.rope);
        let out = forward::loss(&s, &mut self.buffers, true);
        backward::backward(
            &s,
            &self.params,
            &mut self.grads,
            &mut self.buffers,
            &self.rope,
        );
        Ok(out)
    }

    /// One AdamW update from [`FastTrainer::grads`] with hyper-parameters `p` (its `lr` is the
    /// scheduled one). Returns the gradient norm before clipping.
    pub fn apply_grads(&mut self, p: &AdamWParams, clip_norm: f64) -> Result<f64> {
        let mut params = self.params.named_mut();
        params.sort_by(|a, b| a.0.cmp(&b.0));
        let mut grads = self.grads.named();
        grads.sort_by(|a, b| a.0.cmp(&b.0));
        self.optim.step(p, &mut params, &grads, clip_norm)
    }

    /// One training step on `examples` (inline layout, pad 0, as `LmModel::loss` collates
    /// them): returns (mean loss, input tokens, gradient norm).
    pub fn train_step(
        &mut self,
        examples: &[Example],
        p: &AdamWParams,
        clip_norm: f64,
    ) -> Result<(f64, usize, f64)> {
        let b = flat_batch(examples, &self.cfg, self.grid_rows)?;
        let (sum, count) =
            self.loss_and_grads(&b.ids, &b.win, &b.grid, &b.targets, &b.mask, b.batch, b.seq)?;
        let tokens = b.tokens;
        let loss = sum / count.max(1.0);
        if !loss.is_finite() {
            return Err(TrainError::Diverged(format!(
                "loss is {loss} at step {}",
                self.optim.step + 1
            )));
        }
        let norm = self.apply_grads(p, clip_norm)?;
        Ok((loss, tokens, norm))
    }

    /// (summed loss, count) of `examples`, forward only.
    pub fn examples_loss(&mut self, examples: &[Example]) -> Result<(f64, f64)> {
        let b = flat_batch(examples, &self.cfg, self.grid_rows)?;
        self.loss(&b.ids, &b.win, &b.grid, &b.targets, &b.mask, b.batch, b.seq)
    }

    /// Writes the weights into `vars` and the optimizer state into `opt` (before a checkpoint).
    pub fn write_back(&self, vars: &SeededVars, opt: &mut AdamW) -> Result<()> {
        vars.load(&self.params.to_tensors(&self.cfg)?)?;
        opt.set_flat(&self.optim)
    }
}

/// A batch collated exactly as the candle path does (`batch::collate`, inline layout, pad 0),
/// flattened row-major.
struct FlatBatch {
    ids: Vec<u32>,
    /// Empty for a model without the window input.
    win: Vec<u32>,
    /// `[batch, seq, onsets]`; empty for a model without a grid head.
    grid: Vec<u32>,
    targets: Vec<u32>,
    mask: Vec<f32>,
    batch: usize,
    seq: usize,
    /// Input tokens (not padding).
    tokens: usize,
}

fn flat_batch(
    examples: &[Example],
    cfg: &DecoderConfig,
    grid_rows: Option<GridRows>,
) -> Result<FlatBatch> {
    let b = collate(
        examples,
        Layout::Inline,
        0,
        WindowBins::of(cfg),
        grid_rows,
        0,
        &Device::Cpu,
    )?;
    FlatBatch::of(&b)
}

impl FlatBatch {
    /// The decoder inputs of a collated batch, flattened.
    fn of(b: &Batch) -> Result<Self> {
        let (batch, seq) = b.ids.dims2()?;
        Ok(FlatBatch {
            ids: b.ids.flatten_all()?.to_vec1::<u32>()?,
            win: match &b.win {
                Some(w) => w.flatten_all()?.to_vec1::<u32>()?,
                None => Vec::new(),
            },
            grid: match &b.grid {
                Some(g) => g.rows.flatten_all()?.to_vec1::<u32>()?,
                None => Vec::new(),
            },
            targets: b.targets.flatten_all()?.to_vec1::<u32>()?,
            mask: b.mask.flatten_all()?.to_vec1::<f32>()?,
            batch,
            seq,
            tokens: b.tokens,
        })
    }
}
