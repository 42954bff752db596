//! AdamW with named, saveable state, global-norm gradient clipping and the learning-rate
//! schedule (linear warmup, cosine decay).
//!
//! candle-nn's `AdamW` keeps its moments private, so a resumed run could not continue with the
//! same optimizer state; this one keys every moment by the parameter's VarMap name and writes
//! them to a safetensors file. The update rule is the same as candle-nn's (decoupled weight
//! decay, bias-corrected moments), except that 1-D parameters (norm gains, biases) get no
//! weight decay, the usual practice for transformers.

use std::collections::HashMap;
use std::path::Path;

use candle_core::backprop::GradStore;
use candle_core::{DType, Tensor, Var};
use serde::{Deserialize, Serialize};

use crate::error::{Result, TrainError};

/// AdamW hyper-parameters.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct AdamWParams {
    pub lr: f64,
    pub beta1: f64,
    pub beta2: f64,
    pub eps: f64,
    pub weight_decay: f64,
}

impl Default for AdamWParams {
    fn default() -> Self {
        Self {
            lr: 3e-4,
            beta1: 0.9,
            beta2: 0.95,
            eps: 1e-8,
            weight_decay: 0.01,
        }
    }
}

/// The factor that scales gradients of global norm `norm` down to at most `clip_norm` (1 when
/// `clip_norm <= 0` or the norm is within it); a non-finite norm is divergence at `step`. Both
/// optimizers (candle tensors and flat buffers) clip through it, so their updates agree.
fn clip_scale(norm: f64, clip_norm: f64, step: u64) -> Result<f64> {
    if !norm.is_finite() {
        return Err(TrainError::Diverged(format!(
            "gradient norm is {norm} at optimizer step {step}"
        )));
    }
    Ok(if clip_norm > 0.0 && norm > clip_norm {
        clip_norm / (norm + 1e-6)
    } else {
        1.0
    })
}

struct Slot {
    name: String,
    var: Var,
    m: Tensor,
    v: Tensor,
    decay: bool,
    /// Multiplies the scheduled LR (pretrained weights train slower in staged training).
    lr_scale: f64,
}

/// AdamW over a fixed set of named parameters.
pub struct AdamW {
    slots: Vec<Slot>,
    step: u64,
    pub params: AdamWParams,
}

impl AdamW {
    /// `vars` are (name, var) pairs; names must be unique (they key the saved state).
    /// Sorted by name so the update order, and so the floating-point result, is reproducible.
    pub fn new(vars: Vec<(String, Var)>, params: AdamWParams) -> Result<Self> {
        let mut opt = Self {
            slots: Vec::new(),
            step: 0,
            params,
        };
        opt.add(vars, 1.0)?;
        Ok(opt)
    }

    /// Adds parameters (fresh moments) with an LR multiplier; names already present are left
    /// as they are.
    pub fn add(&mut self, vars: Vec<(String, Var)>, lr_scale: f64) -> Result<()> {
        for (name, var) in vars {
            if !var.dtype().is_float() || self.slots.iter().any(|s| s.name == name) {
                continue;
            }
            let m = var.zeros_like()?;
            let v = var.zeros_like()?;
            let decay = var.rank() >= 2;
            self.slots.push(Slot {
                name,
                var,
                m,
                v,
                decay,
                lr_scale,
            });
        }
        self.slots.sort_by(|a, b| a.name.cmp(&b.name));
        Ok(())
    }

    /// Sets the LR multiplier of every parameter whose name satisfies `select`.
    pub fn set_lr_scale(&mut self, select: impl Fn(&str) -> bool, lr_scale: f64) {
        for s in self.slots.iter_mut().filter(|s| select(&s.name)) {
            s.lr_scale = lr_scale;
        }
    }

    pub fn contains(&self, name: &str) -> bool {
        self.slots.iter().any(|s| s.name == name)
    }

    pub fn step_count(&self) -> u64 {
        self.step
    }

    pub fn set_lr(&mut self, lr: f64) {
        self.params.lr = lr;
    }

    pub fn var_names(&self) -> impl Iterator<Item = &str> {
        self.slots.iter().map(|s| s.name.as_str())
    }

    /// Number of trainable scalars.
    pub fn num_params(&self) -> usize {
        self.slots.iter().map(|s| s.var.elem_count()).sum()
    }

    /// Global L2 norm of the gradients of this optimizer's parameters.
    pub fn grad_norm(&self, grads: &GradStore) -> Result<f64> {
        let mut total = 0f64;
        for s in &self.slots {
            if let Some(g) = grads.get(s.var.as_tensor()) {
                total += g
                    .to_dtype(DType::F32)?
                    .sqr()?
                    .sum_all()?
                    .to_scalar::<f32>()? as f64;
            }
        }
        Ok(total.sqrt())
    }

    /// One update. Gradients are scaled down so their global norm is at most `clip_norm`
    /// (no clipping when `clip_norm <= 0`). Returns the norm before clipping.
    pub fn step(&mut self, grads: &GradStore, clip_norm: f64) -> Result<f64> {
        let norm = self.grad_norm(grads)?;
        let scale = clip_scale(norm, clip_norm, self.step + 1)?;
        self.step += 1;
        let p = self.params;
        let t = self.step as i32;
        let bias1 = 1.0 - p.beta1.powi(t);
        let bias2 = 1.0 - p.beta2.powi(t);
        for s in &mut self.slots {
            let Some(g) = grads.get(s.var.as_tensor()) else {
                continue;
            };
            let g = if scale != 1.0 {
                (g * scale)?
            } else {
                g.clone()
            };
            let m = ((&s.m * p.beta1)? + (&g * (1.0 - p.beta1))?)?;
            let v = ((&s.v * p.beta2)? + (g.sqr()? * (1.0 - p.beta2))?)?;
            let m_hat = (&m / bias1)?;
            let v_hat = (&v / bias2)?;
            let update = (m_hat / (v_hat.sqrt()? + p.eps)?)?;
            let lr = p.lr * s.lr_scale;
            let decayed = if s.decay {
                (s.var.as_tensor() * (1.0 - lr * p.weight_decay))?
            } else {
                s.var.as_tensor().clone()
            };
            s.var.set(&(decayed - (update * lr)?)?)?;
            s.m = m;
            s.v = v;
        }
        Ok(norm)
    }

    /// Writes the moments (`m.NAME`, `v.NAME`) to a safetensors file. The step count goes in
    /// the trainer state JSON next to it.
    pub fn save(&self, path: &Path) -> Result<()> {
        let mut map: HashMap<String, Tensor> = HashMap::with_capacity(self.slots.len() * 2);
        for s in &self.slots {
            map.insert(format!("m.{}", s.name), s.m.clone());
            map.insert(format!("v.{}", s.name), s.v.clone());
        }
        crate::models::save_safetensors_atomic(path, &map)
    }

    /// Restores moments saved by [`AdamW::save`] and the step count. Every parameter must have
    /// its moments in the file with the same shape, else resuming would silently restart them.
    pub fn load(&mut self, path: &Path, step: u64) -> Result<()> {
        let device = self.slots.first().map(|s| s.var.device().clone());
        let Some(device) = device else {
            self.step = step;
            return Ok(());
        };
        let map = candle_core::safetensors::load(path, &device)
            .map_err(|e| TrainError::file(path, e.to_string()))?;
        for s in &mut self.slots {
            for (prefix, target) in [("m", &mut s.m), ("v", &mut s.v)] {
                let key = format!("{prefix}.{}", s.name);
                let t = map.get(&key).ok_or_else(|| {
                    TrainError::file(path, format!("optimizer state lacks `{key}`"))
                })?;
                if t.shape() != s.var.shape() {
                    return Err(TrainError::file(
                        path,
                        format!(
                            "`{key}` has shape {:?}, the parameter has {:?}",
                            t.shape(),
                            s.var.shape()
                        ),
                    ));
                }
                *target = t.to_dtype(s.var.dtype())?;
            }
        }
        self.step = step;
        Ok(())
    }
}

/// One parameter's moments as flat buffers (see [`FlatAdamW`]).
#[derive(Debug, Clone, PartialEq)]
pub struct FlatSlot {
    pub name: String,
    pub m: Vec<f32>,
    pub v: Vec<f32>,
    pub decay: bool,
    pub lr_scale: f64,
}

/// [`AdamW`]'s state as flat `f32` buffers, for trainers that keep their parameters and gradients
/// in plain slices (the CPU fast path). [`AdamW::to_flat`] / [`AdamW::set_flat`] move the state
/// across without loss, so the saved optimizer file is the same whichever path trained; the
/// update is [`AdamW::step`]'s, element for element in the same f32 operations (hyper-parameters
/// rounded to f32 as candle's scalar ops round them).
#[derive(Debug, Clone, PartialEq)]
pub struct FlatAdamW {
    /// Sorted by name, as [`AdamW`]'s.
    pub slots: Vec<FlatSlot>,
    pub step: u64,
}

impl AdamW {
    /// A copy of the state as flat buffers.
    pub fn to_flat(&self) -> Result<FlatAdamW> {
        let slots = self
            .slots
            .iter()
            .map(|s| {
                let flat = |t: &Tensor| -> Result<Vec<f32>> {
                    Ok(t.to_dtype(DType::F32)?.flatten_all()?.to_vec1::<f32>()?)
                };
                Ok(FlatSlot {
                    name: s.name.clone(),
                    m: flat(&s.m)?,
                    v: flat(&s.v)?,
                    decay: s.decay,
                    lr_scale: s.lr_scale,
                })
            })
            .collect::<Result<Vec<_>>>()?;
        Ok(FlatAdamW {
            slots,
            step: self.step,
        })
    }

    /// Takes over moments and step count from `flat` (same parameter names and sizes).
    pub fn set_flat(&mut self, flat: &FlatAdamW) -> Result<()> {
        if flat.slots.len() != self.slots.len() {
            return Err(TrainError::config(format!(
                "optimizer state has {} parameters, the optimizer {}",
                flat.slots.len(),
                self.slots.len()
            )));
        }
        for (s, f) in self.slots.iter_mut().zip(&flat.slots) {
            if s.name != f.name || s.var.elem_count() != f.m.len() || f.m.len() != f.v.len() {
                return Err(TrainError::config(format!(
                    "optimizer state `{}` does not match parameter `{}`",
                    f.name, s.name
                )));
            }
            let shape = s.var.shape().clone();
            let dev = s.var.device().clone();
            s.m = Tensor::from_slice(&f.m, shape.clone(), &dev)?.to_dtype(s.var.dtype())?;
            s.v = Tensor::from_slice(&f.v, shape, &dev)?.to_dtype(s.var.dtype())?;
        }
        self.step = flat.step;
        Ok(())
    }
}

impl FlatAdamW {
    /// One update of `params` from `grads`, both `(name, buffer)` in slot (name) order; as
    /// [`AdamW::step`]: global-norm clipping to `clip_norm` (none when `<= 0`), bias-corrected
    /// moments, decoupled weight decay on parameters with `decay`. Returns the norm before
    /// clipping.
    pub fn step(
        &mut self,
        p: &AdamWParams,
        params: &mut [(String, &mut [f32])],
        grads: &[(String, &[f32])],
        clip_norm: f64,
    ) -> Result<f64> {
        if params.len() != self.slots.len() || grads.len() != self.slots.len() {
            return Err(TrainError::config(format!(
                "flat AdamW: {} slots, {} parameters, {} gradients",
                self.slots.len(),
                params.len(),
                grads.len()
            )));
        }
        for ((s, (pn, pb)), (gn, gb)) in self.slots.iter().zip(params.iter()).zip(grads) {
            if &s.name != pn || &s.name != gn || pb.len() != s.m.len() || gb.len() != s.m.len() {
                return Err(TrainError::config(format!(
                    "flat AdamW: slot `{}` paired with parameter `{pn}` / gradient `{gn}`",
                    s.name
                )));
            }
        }
        let norm = grads
            .iter()
            .map(|(_, g)| g.iter().map(|&x| x * x).sum::<f32>() as f64)
            .sum::<f64>()
            .sqrt();
        let scale = clip_scale(norm, clip_norm, self.step + 1)?;
        self.step += 1;
        let t = self.step as i32;
        let bias1 = 1.0 - p.beta1.powi(t);
        let bias2 = 1.0 - p.beta2.powi(t);
        // The scalars as candle's `Tensor * f64` / `Tensor / f64` / `Tensor + f64` apply them.
        let scale_f = scale as f32;
        let (b1, one_b1) = (p.beta1 as f32, (1.0 - p.beta1) as f32);
        let (b2, one_b2) = (p.beta2 as f32, (1.0 - p.beta2) as f32);
        let (inv_bias1, inv_bias2) = ((1.0 / bias1) as f32, (1.0 / bias2) as f32);
        let eps = p.eps as f32;
        for ((s, (_, w)), (_, g)) in self.slots.iter_mut().zip(params.iter_mut()).zip(grads) {
            let lr = p.lr * s.lr_scale;
            let lr_f = lr as f32;
            let keep = (1.0 - lr * p.weight_decay) as f32;
            let decay = s.decay;
            let clip = scale != 1.0;
            for (((w, &g), m), v) in w.iter_mut().zip(g.iter()).zip(&mut s.m).zip(&mut s.v) {
                let g = if clip { g * scale_f } else { g };
                *m = *m * b1 + g * one_b1;
                *v = *v * b2 + (g * g) * one_b2;
                let m_hat = *m * inv_bias1;
                let v_hat = *v * inv_bias2;
                let update = m_hat / (v_hat.sqrt() + eps);
                let decayed = if decay { *w * keep } else { *w };
                *w = decayed - update * lr_f;
            }
        }
        Ok(norm)
    }
}

/// Linear warmup from 0 to `peak` over `warmup` steps, then cosine decay to `peak * min_ratio`
/// at `total` steps (held there after). `step` counts from 0.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Schedule {
    pub peak: f64,
    pub warmup: u64,
    pub total: u64,
    pub min_ratio: f64,
}

impl Schedule {
    pub fn lr(&self, step: u64) -> f64 {
        if self.warmup > 0 && step < self.warmup {
            return self.peak * (step + 1) as f64 / self.warmup as f64;
        }
        let span = self.total.saturating_sub(self.warmup).max(1);
        let progress = ((step - self.warmup.min(step)) as f64 / span as f64).min(1.0);
        let cosine = 0.5 * (1.0 + (std::f64::consts::PI * progress).cos());
        self.peak * (self.min_ratio + (1.0 - self.min_ratio) * cosine)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use candle_core::Device;

    #[test]
    fn schedule_warms_up_then_decays_to_floor() {
        let s = Schedule {
            peak: 1.0,
            warmup: 10,
            total: 110,
            min_ratio: 0.1,
        };
        assert!((s.lr(0) - 0.1).abs() < 1e-12);
        assert!((s.lr(9) - 1.0).abs() < 1e-12);
        assert!((s.lr(10) - 1.0).abs() < 1e-12);
        assert!((s.lr(60) - 0.55).abs() < 1e-9);
        assert!((s.lr(110) - 0.1).abs() < 1e-12);
        assert!((s.lr(500) - 0.1).abs() < 1e-12);
        for i in 10..110 {
            assert!(s.lr(i + 1) <= s.lr(i));
        }
    }

    #[test]
    fn adamw_minimises_quadratic_and_clips() {
        let dev = Device::Cpu;
        let w = Var::from_slice(&[3f32, -2.0, 1.0, 4.0], (2, 2), &dev).unwrap();
        let mut opt = AdamW::new(
            vec![("w".into(), w.clone())],
            AdamWParams {
                lr: 0.1,
                weight_decay: 0.0,
                ..Default::default()
            },
        )
        .unwrap();
        let loss0 = w
            .as_tensor()
            .sqr()
            .unwrap()
            .sum_all()
            .unwrap()
            .to_scalar::<f32>()
            .unwrap();
        for _ in 0..100 {
            let loss = w.as_tensor().sqr().unwrap().sum_all().unwrap();
            let grads = loss.backward().unwrap();
            let norm = opt.step(&grads, 0.5).unwrap();
            assert!(norm >= 0.0);
        }
        let loss1 = w
            .as_tensor()
            .sqr()
            .unwrap()
            .sum_all()
            .unwrap()
            .to_scalar::<f32>()
            .unwrap();
        assert!(loss1 < loss0 * 0.01, "{loss0} -> {loss1}");
    }

    #[test]
    fn state_round_trips_and_resumed_updates_match() {
        let dev = Device::Cpu;
        let dir = tempfile::tempdir().unwrap();
        let make = || Var::from_slice(&[1f32, 2.0, 3.0, 4.0, 5.0, 6.0], (3, 2), &dev).unwrap();
        let run = |opt: &mut AdamW, w: &Var, n: usize| {
            for _ in 0..n {
                let loss = (w.as_tensor().sqr().unwrap().sum_all().unwrap() * 0.5).unwrap();
                opt.step(&loss.backward().unwrap(), 1.0).unwrap();
            }
        };
        let p = AdamWParams {
            lr: 0.05,
            ..Default::default()
        };
        let wa = make();
        let mut a = AdamW::new(vec![("w".into(), wa.clone())], p).unwrap();
        run(&mut a, &wa, 6);

        let wb = make();
        let mut b = AdamW::new(vec![("w".into(), wb.clone())], p).unwrap();
        run(&mut b, &wb, 3);
        let path = dir.path().join("optimizer.safetensors");
        b.save(&path).unwrap();
        let saved_w = wb.as_tensor().copy().unwrap();
        let wc = Var::from_tensor(&saved_w).unwrap();
        let mut c = AdamW::new(vec![("w".into(), wc.clone())], p).unwrap();
        c.load(&path, b.step_count()).unwrap();
        run(&mut c, &wc, 3);
        let diff = (wa.as_tensor() - wc.as_tensor())
            .unwrap()
            .abs()
            .unwrap()
            .max_all()
            .unwrap()
            .to_scalar::<f32>()
            .unwrap();
        assert!(diff < 1e-6, "resumed run differs by {diff}");
        assert_eq!(c.step_count(), 6);

        // A state file for another model is refused, not silently ignored.
        let other = Var::zeros((2, 2), DType::F32, &dev).unwrap();
        let mut d = AdamW::new(vec![("w".into(), other)], p).unwrap();
        assert!(d.load(&path, 3).is_err());
    }
}
