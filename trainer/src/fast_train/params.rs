//! The decoder's parameters (or their gradients) as flat row-major `f32` buffers, one per candle
//! `VarMap` tensor, under the same names and shapes (`staria_models::decoder` lists them), so the
//! checkpoint and optimizer files are shared with the candle path.

use std::collections::HashMap;

use candle_core::{DType, Device, Tensor};
use staria_models::DecoderConfig;

use crate::error::{Result, TrainError};

/// One block's weights, `dim` = model width, `ff_hidden` = `ff_mult * dim`.
#[derive(Debug, Clone, PartialEq)]
pub struct LayerParams {
    /// `[dim]` LayerNorm gain before attention.
    pub attn_norm: Vec<f32>,
    /// `[3 * dim, dim]` fused projection; output rows: q (all heads), k, v.
    pub qkv: Vec<f32>,
    /// `[dim, dim]` attention output projection.
    pub out: Vec<f32>,
    /// `[dim]` LayerNorm gain before the MLP.
    pub ff_norm: Vec<f32>,
    /// `[ff_hidden, dim]` SwiGLU gate.
    pub w1: Vec<f32>,
    /// `[ff_hidden, dim]` SwiGLU up.
    pub w3: Vec<f32>,
    /// `[dim, ff_hidden]` SwiGLU down.
    pub w2: Vec<f32>,
}

/// Every decoder parameter (also used for their gradients).
#[derive(Debug, Clone, PartialEq)]
pub struct Params {
    /// `[vocab, dim]`.
    pub tok_emb: Vec<f32>,
    pub layers: Vec<LayerParams>,
    /// `[dim]` final LayerNorm gain.
    pub norm: Vec<f32>,
    /// `[vocab, dim]` untied output head.
    pub lm_head: Vec<f32>,
    /// `[window_bins, dim]` window-position embedding; empty for a model without that input.
    pub win_emb: Vec<f32>,
    /// `[grid_bins, dim]` beat-grid head; empty for a model without one.
    pub grid_head: Vec<f32>,
}

/// (VarMap name, shape) of every decoder parameter, in [`Params::named`] order.
pub fn param_shapes(cfg: &DecoderConfig) -> Vec<(String, Vec<usize>)> {
    let (d, f, v) = (cfg.dim, cfg.ff_mult * cfg.dim, cfg.vocab_size);
    let mut out = vec![("tok_emb.weight".to_string(), vec![v, d])];
    for i in 0..cfg.n_layers {
        let p = format!("layers.{i}");
        out.push((format!("{p}.attn_norm.weight"), vec![d]));
        out.push((format!("{p}.attn.qkv.weight"), vec![3 * d, d]));
        out.push((format!("{p}.attn.out.weight"), vec![d, d]));
        out.push((format!("{p}.ff_norm.weight"), vec![d]));
        out.push((format!("{p}.ff.w1.weight"), vec![f, d]));
        out.push((format!("{p}.ff.w3.weight"), vec![f, d]));
        out.push((format!("{p}.ff.w2.weight"), vec![d, f]));
    }
    out.push(("norm.weight".to_string(), vec![d]));
    out.push(("lm_head.weight".to_string(), vec![v, d]));
    if cfg.window_bins > 0 {
        out.push(("win_emb.weight".to_string(), vec![cfg.window_bins, d]));
    }
    if cfg.grid_bins > 0 {
        out.push(("grid_head.weight".to_string(), vec![cfg.grid_bins, d]));
    }
    out
}

impl Params {
    /// All zeros (a gradient buffer).
    pub fn zeros(cfg: &DecoderConfig) -> Self {
        let (d, f, v) = (cfg.dim, cfg.ff_mult * cfg.dim, cfg.vocab_size);
        Self {
            tok_emb: vec![0.0; v * d],
            layers: (0..cfg.n_layers)
                .map(|_| LayerParams {
                    attn_norm: vec![0.0; d],
                    qkv: vec![0.0; 3 * d * d],
                    out: vec![0.0; d * d],
                    ff_norm: vec![0.0; d],
                    w1: vec![0.0; f * d],
                    w3: vec![0.0; f * d],
                    w2: vec![0.0; d * f],
                })
                .collect(),
            norm: vec![0.0; d],
            lm_head: vec![0.0; v * d],
            win_emb: vec![0.0; cfg.window_bins * d],
            grid_head: vec![0.0; cfg.grid_bins * d],
        }
    }

    /// `(name, buffer)` in [`param_shapes`] order.
    pub fn named(&self) -> Vec<(String, &[f32])> {
        let mut out: Vec<(String, &[f32])> = vec![("tok_emb.weight".into(), &self.tok_emb)];
        for (i, l) in self.layers.iter().enumerate() {
            let p = format!("layers.{i}");
            out.push((format!("{p}.attn_norm.weight"), &l.attn_norm));
            out.push((format!("{p}.attn.qkv.weight"), &l.qkv));
            out.push((format!("{p}.attn.out.weight"), &l.out));
            out.push((format!("{p}.ff_norm.weight"), &l.ff_norm));
            out.push((format!("{p}.ff.w1.weight"), &l.w1));
            out.push((format!("{p}.ff.w3.weight"), &l.w3));
            out.push((format!("{p}.ff.w2.weight"), &l.w2));
        }
        out.push(("norm.weight".into(), &self.norm));
        out.push(("lm_head.weight".into(), &self.lm_head));
        if !self.win_emb.is_empty() {
            out.push(("win_emb.weight".into(), &self.win_emb));
        }
        if !self.grid_head.is_empty() {
            out.push(("grid_head.weight".into(), &self.grid_head));
        }
        out
    }

    /// `(name, buffer)` in [`param_shapes`] order, writable.
    pub fn named_mut(&mut self) -> Vec<(String, &mut [f32])> {
        let mut out: Vec<(String, &mut [f32])> = vec![("tok_emb.weight".into(), &mut self.tok_emb)];
        for (i, l) in self.layers.iter_mut().enumerate() {
            let p = format!("layers.{i}");
            out.push((format!("{p}.attn_norm.weight"), &mut l.attn_norm));
            out.push((format!("{p}.attn.qkv.weight"), &mut l.qkv));
            out.push((format!("{p}.attn.out.weight"), &mut l.out));
            out.push((format!("{p}.ff_norm.weight"), &mut l.ff_norm));
            out.push((format!("{p}.ff.w1.weight"), &mut l.w1));
            out.push((format!("{p}.ff.w3.weight"), &mut l.w3));
            out.push((format!("{p}.ff.w2.weight"), &mut l.w2));
        }
        out.push(("norm.weight".into(), &mut self.norm));
        out.push(("lm_head.weight".into(), &mut self.lm_head));
        if !self.win_emb.is_empty() {
            out.push(("win_emb.weight".into(), &mut self.win_emb));
        }
        if !self.grid_head.is_empty() {
            out.push(("grid_head.weight".into(), &mut self.grid_head));
        }
        out
    }

    /// Copies from named tensors (a `SeededVars::tensors` map or a checkpoint); every parameter
    /// must be present with its shape.
    pub fn from_tensors(cfg: &DecoderConfig, tensors: &HashMap<String, Tensor>) -> Result<Self> {
        let mut p = Self::zeros(cfg);
        let shapes = param_shapes(cfg);
        for ((name, buf), (_, shape)) in p.named_mut().into_iter().zip(&shapes) {
            let t = tensors
                .get(&name)
                .ok_or_else(|| TrainError::config(format!("fast path: no tensor `{name}`")))?;
            if t.dims() != shape.as_slice() {
                return Err(TrainError::config(format!(
                    "fast path: `{name}` has shape {:?}, the decoder expects {shape:?}",
                    t.dims()
                )));
            }
            let v = t.to_dtype(DType::F32)?.flatten_all()?.to_vec1::<f32>()?;
            buf.copy_from_slice(&v);
        }
        Ok(p)
    }

    /// Named CPU tensors holding copies of the buffers.
    pub fn to_tensors(&self, cfg: &DecoderConfig) -> Result<HashMap<String, Tensor>> {
        let shapes = param_shapes(cfg);
        self.named()
            .into_iter()
            .zip(shapes)
            .map(|((name, buf), (_, shape))| {
                Ok((name, Tensor::from_slice(buf, shape, &Device::Cpu)?))
            })
            .collect()
    }
}
