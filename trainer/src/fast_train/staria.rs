//! The fast path for a Staria model (`train-staria`): the decoder trunk and the gated
//! cross-attention sites run here, the snippet encoder stays on candle.
//!
//! A step: candle computes the latents (`Staria::snippet_latents`: encoder + section
//! embedding) from the batch's snippets; the fast forward and backward run the decoder with the
//! sites ([`super::cross`]) after their blocks and return d loss / d latents; candle then turns
//! that into the gradients of the encoder and the section embedding by the backward of
//! `sum(latents * d_latents)` (whose gradient with respect to the latents is `d_latents`). One
//! flat AdamW update covers every trainable parameter, the candle side's included (kept as flat
//! copies here and written into their `Var`s after the update, so the next step's latents use
//! them).
//!
//! Frozen parameters are exactly those the `AdamW` it is built from does not hold (the stage's
//! trainable set): they are not updated, and their weight gradients are not computed (a frozen
//! block only passes the gradient through; blocks below the lowest site and the lowest
//! trainable block are skipped; with encoder and section embedding frozen candle's backward is
//! not run). LR multipliers come with the optimizer state. When the trainable set changes,
//! the caller writes the state back ([`StariaTrainer::write_back`]) and builds a new trainer.

use std::collections::{HashMap, HashSet};

use candle_core::{DType, Device, Tensor, Var};
use staria_models::grid::GridRows;
use staria_models::params::SeededVars;
use staria_models::window::WindowBins;
use staria_models::{SectionLabel, Staria, StariaConfig};

use super::backward::{Trains, backward_with};
use super::cross::{
    ABSENT_KEY, SiteBuffers, SiteInputs, SiteParams, SiteShape, site_backward, site_forward,
    site_shapes,
};
use super::forward::{forward_with, loss};
use super::{FastTrainer, FlatBatch, Shape, param_shapes};
use crate::batch::{Batch, Example, Layout, collate};
use crate::error::{Result, TrainError};
use crate::optim::{AdamW, AdamWParams};

/// A trainable parameter computed on the candle side (encoder, section embedding).
struct CandleParam {
    name: String,
    var: Var,
    /// The optimizer's copy of the value, and the last step's gradient.
    value: Vec<f32>,
    grad: Vec<f32>,
}

/// A Staria model being trained on the fast path (see the module docs).
pub struct StariaTrainer {
    /// The decoder trunk: its weights, gradients, buffers; its optimizer holds every trainable
    /// parameter of the model.
    core: FastTrainer,
    cfg: StariaConfig,
    pub sites: Vec<SiteParams>,
    /// Gradients of the last [`StariaTrainer::loss_and_grads`].
    pub site_grads: Vec<SiteParams>,
    candle_params: Vec<CandleParam>,
    /// Names the optimizer holds.
    trained: HashSet<String>,
    trains: Trains,
    site_bufs: SiteBuffers,
}

impl StariaTrainer {
    /// Takes the weights from `vars` and the optimizer state (and so the trainable set and LR
    /// multipliers) from `opt`. `grid_rows` as for [`FastTrainer::new`].
    pub fn new(
        cfg: &StariaConfig,
        vars: &SeededVars,
        opt: &AdamW,
        grid_rows: Option<GridRows>,
    ) -> Result<Self> {
        cfg.validate()?;
        let tensors = vars.tensors(|_| true);
        let core = FastTrainer::with_optimizer(&cfg.decoder, &tensors, opt.to_flat()?, grid_rows)?;
        let sites = (0..cfg.n_sites())
            .map(|j| SiteParams::from_tensors(cfg, j, &tensors))
            .collect::<Result<Vec<_>>>()?;
        let mut own: HashSet<String> = param_shapes(&cfg.decoder)
            .into_iter()
            .map(|(n, _)| n)
            .collect();
        for j in 0..cfg.n_sites() {
            own.extend(site_shapes(cfg, j).into_iter().map(|(n, _)| n));
        }
        let vars_by_name: HashMap<String, Var> = vars.named().into_iter().collect();
        let mut candle_params = Vec::new();
        for slot in &core.optim.slots {
            if own.contains(&slot.name) {
                continue;
            }
            let var = match vars_by_name.get(&slot.name) {
                Some(v)
                    if slot.name.starts_with("encoder.")
                        || slot.name.starts_with("section_emb.") =>
                {
                    v
                }
                _ => {
                    return Err(TrainError::config(format!(
                        "fast path: the optimizer holds `{}`, which is not a parameter of this \
                         Staria model",
                        slot.name
                    )));
                }
            };
            let value = var
                .as_tensor()
                .to_dtype(DType::F32)?
                .flatten_all()?
                .to_vec1::<f32>()?;
            candle_params.push(CandleParam {
                name: slot.name.clone(),
                var: var.clone(),
                grad: vec![0.0; value.len()],
                value,
            });
        }
        let trained: HashSet<String> = core.optim.slots.iter().map(|s| s.name.clone()).collect();
        let trains = trains(cfg, &trained);
        Ok(Self {
            core,
            cfg: cfg.clone(),
            site_grads: vec![SiteParams::zeros(cfg); sites.len()],
            sites,
            candle_params,
            trained,
            trains,
            site_bufs: SiteBuffers::default(),
        })
    }

    pub fn config(&self) -> &StariaConfig {
        &self.cfg
    }

    /// The decoder trunk's weights and their gradients.
    pub fn decoder(&self) -> &FastTrainer {
        &self.core
    }

    /// Gradients of the trainable encoder and section-embedding parameters (by name) of the
    /// last step.
    pub fn candle_grads(&self) -> Vec<(&str, &[f32])> {
        self.candle_params
            .iter()
            .map(|p| (p.name.as_str(), p.grad.as_slice()))
            .collect()
    }

    /// Optimizer steps done.
    pub fn step_count(&self) -> u64 {
        self.core.optim.step
    }

    fn site_shape(&self, batch: usize, seq: usize, latents: usize) -> SiteShape {
        let d = &self.cfg.decoder;
        SiteShape {
            batch,
            seq,
            dim: d.dim,
            heads: d.n_heads,
            head_dim: self.core.head_dim,
            ff_hidden: d.ff_mult * d.dim,
            latents,
            enc_dim: self.cfg.encoder.dim,
            eps: d.norm_eps as f32,
        }
    }

    /// Allocates the buffers for batches of up to `batch` prompts of `seq` tokens now.
    pub fn reserve(&mut self, batch: usize, seq: usize) {
        self.core.reserve(batch, seq);
        let latents = SectionLabel::ALL.len() * self.cfg.encoder.n_latents;
        let ss = self.site_shape(batch, seq, latents);
        self.site_bufs.ensure(&ss, self.sites.len());
    }

    /// Collates `examples` in the Staria layout, pad 0, as `LmModel::loss` does.
    fn collate(&self, examples: &[Example]) -> Result<Batch> {
        collate(
            examples,
            Layout::Staria,
            0,
            WindowBins::of(&self.cfg.decoder),
            self.core.grid_rows,
            self.cfg.encoder.max_seq_len,
            &Device::Cpu,
        )
    }

    /// Loads a collated batch and the latents `model` computes for its snippets. Returns the
    /// shapes and the latents tensor (for candle's backward).
    fn load(&mut self, model: &Staria, batch: &Batch) -> Result<(Shape, SiteShape, Tensor)> {
        let sb = batch
            .snippets
            .as_ref()
            .ok_or_else(|| TrainError::config("fast path: a Staria batch without snippet slots"))?;
        let fb = FlatBatch::of(batch)?;
        let s = self.core.load_batch(
            &fb.ids,
            &fb.win,
            &fb.grid,
            &fb.targets,
            &fb.mask,
            fb.batch,
            fb.seq,
        )?;
        let lat = model.snippet_latents(fb.batch, sb)?;
        let (_, m, de) = lat.dims3()?;
        let n = self.cfg.encoder.n_latents;
        if de != self.cfg.encoder.dim || m % n != 0 {
            return Err(TrainError::config(format!(
                "fast path: latents {:?} do not fit encoder dim {} with {n} latents per snippet",
                lat.dims(),
                self.cfg.encoder.dim
            )));
        }
        let ss = self.site_shape(fb.batch, fb.seq, m);
        self.site_bufs.ensure(&ss, self.sites.len());
        let values = lat.to_dtype(DType::F32)?.flatten_all()?.to_vec1::<f32>()?;
        self.site_bufs.lat[..values.len()].copy_from_slice(&values);
        let present = sb
            .present
            .to_dtype(DType::F32)?
            .flatten_all()?
            .to_vec1::<f32>()?;
        let slots = m / n;
        for b in 0..fb.batch {
            let mut any = 0f32;
            for slot in 0..slots {
                let p = present[b * slots + slot];
                any = any.max(p);
                let mask = if p > 0.0 { 0.0 } else { ABSENT_KEY };
                self.site_bufs.key_mask[b * m + slot * n..b * m + (slot + 1) * n].fill(mask);
            }
            self.site_bufs.any[b] = any;
        }
        Ok((s, ss, lat))
    }

    fn forward(&mut self, s: &Shape, ss: &SiteShape) {
        let Self {
            core,
            cfg,
            sites,
            site_bufs,
            ..
        } = self;
        let SiteBuffers {
            acts,
            lat,
            key_mask,
            any,
            ..
        } = site_bufs;
        let inp = SiteInputs { lat, key_mask, any };
        forward_with(
            s,
            &core.params,
            &mut core.buffers,
            &core.rope,
            |i, resid| {
                if let Some(j) = cfg.site_after(i) {
                    site_forward(ss, &sites[j], &mut acts[j], &inp, resid);
                }
            },
        );
    }

    fn backward(&mut self, s: &Shape, ss: &SiteShape) {
        let Self {
            core,
            cfg,
            sites,
            site_grads,
            site_bufs,
            trains,
            ..
        } = self;
        let SiteBuffers {
            acts,
            lat,
            key_mask,
            any,
            d_lat,
            scratch,
            ..
        } = site_bufs;
        let n = ss.batch * ss.latents * ss.enc_dim;
        d_lat[..n].fill(0.0);
        let inp = SiteInputs { lat, key_mask, any };
        let FastTrainer {
            params,
            grads,
            buffers,
            rope,
            ..
        } = core;
        backward_with(s, params, grads, buffers, rope, trains, |i, resid| {
            if let Some(j) = cfg.site_after(i) {
                site_backward(
                    ss,
                    &sites[j],
                    &mut site_grads[j],
                    &acts[j],
                    &inp,
                    &mut d_lat[..n],
                    scratch,
                    resid,
                );
            }
        });
    }

    /// Forward and backward of a collated batch (Staria layout) on `model`'s encoder: (summed
    /// masked loss, mask count). The gradients of every trainable parameter (of the mean loss)
    /// are then in [`FastTrainer::grads`] (decoder), [`StariaTrainer::site_grads`] and
    /// [`StariaTrainer::candle_grads`].
    pub fn loss_and_grads(&mut self, model: &Staria, batch: &Batch) -> Result<(f64, f64)> {
        let (s, ss, lat) = self.load(model, batch)?;
        self.forward(&s, &ss);
        let (sum, count) = loss(&s, &mut self.core.buffers, true);
        self.backward(&s, &ss);
        if !self.candle_params.is_empty() {
            let n = ss.batch * ss.latents * ss.enc_dim;
            let d_lat = Tensor::from_slice(&self.site_bufs.d_lat[..n], lat.shape(), &Device::Cpu)?;
            let grads = (lat * d_lat)?.sum_all()?.backward()?;
            for p in &mut self.candle_params {
                let g = grads.get(p.var.as_tensor()).ok_or_else(|| {
                    TrainError::config(format!(
                        "fast path: candle gave no gradient for `{}`",
                        p.name
                    ))
                })?;
                p.grad
                    .copy_from_slice(&g.to_dtype(DType::F32)?.flatten_all()?.to_vec1::<f32>()?);
            }
        }
        Ok((sum, count))
    }

    /// One AdamW update of every trainable parameter from the last gradients; the candle-side
    /// parameters' new values go into their `Var`s. Returns the gradient norm before clipping.
    pub fn apply_grads(&mut self, p: &AdamWParams, clip_norm: f64) -> Result<f64> {
        let Self {
            core,
            cfg,
            sites,
            site_grads,
            candle_params,
            trained,
            ..
        } = self;
        let FastTrainer {
            params,
            grads,
            optim,
            ..
        } = core;
        let mut values = params.named_mut();
        let mut gs = grads.named();
        for (j, (w, g)) in sites.iter_mut().zip(site_grads.iter()).enumerate() {
            values.extend(w.named_mut(cfg, j));
            gs.extend(g.named(cfg, j));
        }
        for c in candle_params.iter_mut() {
            values.push((c.name.clone(), &mut c.value));
            gs.push((c.name.clone(), &c.grad));
        }
        values.retain(|(n, _)| trained.contains(n));
        gs.retain(|(n, _)| trained.contains(n));
        values.sort_by(|a, b| a.0.cmp(&b.0));
        gs.sort_by(|a, b| a.0.cmp(&b.0));
        let norm = optim.step(p, &mut values, &gs, clip_norm)?;
        drop(values);
        for c in candle_params.iter() {
            let t = Tensor::from_slice(&c.value, c.var.shape(), &Device::Cpu)?;
            c.var.set(&t.to_dtype(c.var.dtype())?)?;
        }
        Ok(norm)
    }

    /// One training step on `examples` (`model` supplies the encoder): (mean loss, input
    /// tokens, gradient norm).
    pub fn train_step(
        &mut self,
        model: &Staria,
        examples: &[Example],
        p: &AdamWParams,
        clip_norm: f64,
    ) -> Result<(f64, usize, f64)> {
        let batch = self.collate(examples)?;
        let (sum, count) = self.loss_and_grads(model, &batch)?;
        let loss = sum / count.max(1.0);
        if !loss.is_finite() {
            return Err(TrainError::Diverged(format!(
                "loss is {loss} at step {}",
                self.core.optim.step + 1
            )));
        }
        let norm = self.apply_grads(p, clip_norm)?;
        Ok((loss, batch.tokens, norm))
    }

    /// (summed loss, count) of `examples`, forward only.
    pub fn examples_loss(&mut self, model: &Staria, examples: &[Example]) -> Result<(f64, f64)> {
        let batch = self.collate(examples)?;
        let (s, ss, _) = self.load(model, &batch)?;
        self.forward(&s, &ss);
        Ok(loss(&s, &mut self.core.buffers, false))
    }

    /// Writes the weights into `vars` and the optimizer state into `opt` (before a checkpoint
    /// or a change of the trainable set).
    pub fn write_back(&self, vars: &SeededVars, opt: &mut AdamW) -> Result<()> {
        vars.load(&self.core.params.to_tensors(&self.cfg.decoder)?)?;
        for (j, site) in self.sites.iter().enumerate() {
            vars.load(&site.to_tensors(&self.cfg, j)?)?;
        }
        opt.set_flat(&self.core.optim)
    }
}

/// Which decoder weight gradients a backward needs when the optimizer holds `trained`.
fn trains(cfg: &StariaConfig, trained: &HashSet<String>) -> Trains {
    let n_layers = cfg.decoder.n_layers;
    let has = |n: &str| trained.contains(n);
    let shapes = param_shapes(&cfg.decoder);
    let layers: Vec<bool> = (0..n_layers)
        .map(|i| {
            let prefix = format!("layers.{i}.");
            shapes.iter().any(|(n, _)| n.starts_with(&prefix) && has(n))
        })
        .collect();
    let embeddings = has("tok_emb.weight") || has("win_emb.weight");
    // The gradient must reach the lowest trainable block, and pass through no block below
    // the lowest site (a site after block i needs none of the blocks up to i).
    let lowest_block = layers.iter().position(|&t| t).unwrap_or(n_layers);
    let lowest_site = (0..n_layers)
        .find(|&i| cfg.site_after(i).is_some())
        .map_or(n_layers, |i| i + 1);
    Trains {
        first_block: if embeddings {
            0
        } else {
            lowest_block.min(lowest_site)
        },
        layers,
        embeddings,
        norm: has("norm.weight"),
        lm_head: has("lm_head.weight"),
        grid_head: has("grid_head.weight"),
    }
}
