//! Trainable parameters: a `VarMap` whose fresh variables are drawn from a seeded generator.
//!
//! candle's CPU backend cannot be seeded, so models built on a plain `VarMap` start from
//! different weights on every run. [`SeededVars`] is a `VarBuilder` backend over a `VarMap` that
//! honours the architecture's init hint (constant, normal, uniform, Kaiming) but draws the values
//! from a generator seeded by `(seed, variable name)`: the same seed gives the same model, and
//! adding a variable never changes the others.

use std::collections::{HashMap, HashSet};
use std::path::Path;
use std::sync::{Arc, Mutex};

use candle_core::{DType, Device, Shape, Tensor, Var};
use candle_nn::init::NormalOrUniform;
use candle_nn::var_builder::SimpleBackend;
use candle_nn::{Init, VarBuilder, VarMap};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use sha2::{Digest, Sha256};

use crate::error::{Error, Result};

/// A seeded `VarMap` backend (see the module docs).
#[derive(Clone)]
pub struct SeededVars {
    pub map: VarMap,
    seed: u64,
    /// Variables handed out detached: a model built while they are frozen computes no gradient
    /// for them, which saves the weight-gradient work of frozen layers in staged training.
    frozen: Arc<Mutex<HashSet<String>>>,
}

impl SeededVars {
    pub fn new(seed: u64) -> Self {
        Self {
            map: VarMap::new(),
            seed,
            frozen: Arc::default(),
        }
    }

    /// Sets which variables models built from now on see as constants (see `frozen`).
    pub fn set_frozen(&self, names: HashSet<String>) {
        *self.frozen.lock().expect("frozen lock") = names;
    }

    /// A builder whose missing variables are created here (existing ones are reused).
    pub fn builder(&self, device: &Device) -> VarBuilder<'static> {
        VarBuilder::from_backend(Box::new(self.clone()), DType::F32, device.clone())
    }

    /// Sets variables from tensors (before or after the model is built): existing variables are
    /// overwritten in place (their shape must match), new names are added.
    pub fn load(&self, tensors: &HashMap<String, Tensor>) -> Result<()> {
        let mut data = self.map.data().lock().expect("var map lock");
        for (name, t) in tensors {
            let t = t.to_dtype(DType::F32)?;
            match data.get(name) {
                Some(v) => {
                    if v.shape() != t.shape() {
                        return Err(Error::Config(format!(
                            "weight {name} has shape {:?}, the model expects {:?}",
                            t.dims(),
                            v.dims()
                        )));
                    }
                    v.set(&t)?;
                }
                None => {
                    data.insert(name.clone(), Var::from_tensor(&t)?);
                }
            }
        }
        Ok(())
    }

    /// Every variable, sorted by name.
    pub fn named(&self) -> Vec<(String, Var)> {
        let data = self.map.data().lock().expect("var map lock");
        let mut v: Vec<(String, Var)> = data.iter().map(|(k, v)| (k.clone(), v.clone())).collect();
        v.sort_by(|a, b| a.0.cmp(&b.0));
        v
    }

    /// Variables whose name satisfies `keep`.
    pub fn select(&self, keep: impl Fn(&str) -> bool) -> Vec<(String, Var)> {
        self.named().into_iter().filter(|(n, _)| keep(n)).collect()
    }

    /// Copies of the current values (for checkpoints).
    pub fn tensors(&self, keep: impl Fn(&str) -> bool) -> HashMap<String, Tensor> {
        self.named()
            .into_iter()
            .filter(|(n, _)| keep(n))
            .map(|(n, v)| (n, v.as_tensor().clone()))
            .collect()
    }

    pub fn save(&self, path: &Path, keep: impl Fn(&str) -> bool) -> Result<()> {
        candle_core::safetensors::save(&self.tensors(keep), path)
            .map_err(|e| Error::checkpoint(path, e.to_string()))
    }

    fn fresh(&self, shape: &Shape, name: &str, init: Init) -> Vec<f32> {
        let mut h = Sha256::new();
        h.update(self.seed.to_le_bytes());
        h.update(name.as_bytes());
        let d = h.finalize();
        let mut rng =
            StdRng::seed_from_u64(u64::from_le_bytes(d[..8].try_into().expect("8 bytes")));
        let n = shape.elem_count();
        let normal = |rng: &mut StdRng, mean: f64, std: f64| -> Vec<f32> {
            (0..n)
                .map(|_| (mean + std * standard_normal(rng)) as f32)
                .collect()
        };
        let uniform = |rng: &mut StdRng, lo: f64, up: f64| -> Vec<f32> {
            (0..n).map(|_| rng.random_range(lo..up) as f32).collect()
        };
        match init {
            Init::Const(c) => vec![c as f32; n],
            Init::Randn { mean, stdev } => normal(&mut rng, mean, stdev),
            Init::Uniform { lo, up } => uniform(&mut rng, lo, up),
            Init::Kaiming {
                dist,
                fan,
                non_linearity,
            } => {
                let std = non_linearity.gain() / (fan.for_shape(shape) as f64).sqrt();
                match dist {
                    NormalOrUniform::Normal => normal(&mut rng, 0.0, std),
                    NormalOrUniform::Uniform => {
                        let b = 3f64.sqrt() * std;
                        uniform(&mut rng, -b, b)
                    }
                }
            }
        }
    }
}

/// Box-Muller: one standard normal sample.
fn standard_normal(rng: &mut impl Rng) -> f64 {
    let u1: f64 = rng.random::<f64>().max(f64::MIN_POSITIVE);
    let u2: f64 = rng.random();
    (-2.0 * u1.ln()).sqrt() * (2.0 * std::f64::consts::PI * u2).cos()
}

impl SimpleBackend for SeededVars {
    fn get(
        &self,
        s: Shape,
        name: &str,
        h: Init,
        dtype: DType,
        dev: &Device,
    ) -> candle_core::Result<Tensor> {
        let mut data = self.map.data().lock().expect("var map lock");
        if let Some(v) = data.get(name) {
            if v.shape() != &s {
                candle_core::bail!("shape mismatch on {name}: {s:?} <> {:?}", v.shape())
            }
            if self.frozen.lock().expect("frozen lock").contains(name) {
                return v.as_tensor().detach().to_dtype(dtype);
            }
            return v.as_tensor().to_dtype(dtype);
        }
        let values = self.fresh(&s, name, h);
        let var = Var::from_tensor(&Tensor::from_vec(values, s, dev)?.to_dtype(dtype)?)?;
        let t = var.as_tensor().clone();
        data.insert(name.to_string(), var);
        Ok(t)
    }

    fn get_unchecked(
        &self,
        name: &str,
        dtype: DType,
        _dev: &Device,
    ) -> candle_core::Result<Tensor> {
        let data = self.map.data().lock().expect("var map lock");
        match data.get(name) {
            Some(v) => v.as_tensor().to_dtype(dtype),
            None => candle_core::bail!("no variable {name}"),
        }
    }

    fn contains_tensor(&self, name: &str) -> bool {
        self.map
            .data()
            .lock()
            .expect("var map lock")
            .contains_key(name)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn same_seed_same_weights_and_hints_are_honoured() {
        let dev = Device::Cpu;
        let build = |seed| {
            let v = SeededVars::new(seed);
            let vb = v.builder(&dev);
            let w = vb
                .get_with_hints((64, 32), "w", candle_nn::init::DEFAULT_KAIMING_NORMAL)
                .unwrap();
            let g = vb.get_with_hints(8, "g", Init::Const(1.0)).unwrap();
            (
                w.flatten_all().unwrap().to_vec1::<f32>().unwrap(),
                g.to_vec1::<f32>().unwrap(),
            )
        };
        let (a, g) = build(1);
        let (b, _) = build(1);
        let (c, _) = build(2);
        assert_eq!(a, b);
        assert_ne!(a, c);
        assert!(g.iter().all(|&x| x == 1.0));
        let std = (a.iter().map(|x| (x * x) as f64).sum::<f64>() / a.len() as f64).sqrt();
        let expected = (2.0f64 / 32.0).sqrt();
        assert!(
            (std - expected).abs() < 0.1 * expected,
            "std {std} vs {expected}"
        );
    }

    #[test]
    fn frozen_variables_get_no_gradient() {
        let dev = Device::Cpu;
        let v = SeededVars::new(0);
        let vb = v.builder(&dev);
        vb.get_with_hints(3, "a", Init::Const(2.0)).unwrap();
        vb.get_with_hints(3, "b", Init::Const(3.0)).unwrap();
        v.set_frozen(["a".to_string()].into_iter().collect());
        let vb = v.builder(&dev);
        let a = vb.get_with_hints(3, "a", Init::Const(0.0)).unwrap();
        let b = vb.get_with_hints(3, "b", Init::Const(0.0)).unwrap();
        let grads = (a * &b).unwrap().sum_all().unwrap().backward().unwrap();
        let named: HashMap<String, Var> = v.named().into_iter().collect();
        assert!(grads.get(named["a"].as_tensor()).is_none());
        assert_eq!(
            grads
                .get(named["b"].as_tensor())
                .unwrap()
                .to_vec1::<f32>()
                .unwrap(),
            vec![2.0; 3]
        );
    }
}
