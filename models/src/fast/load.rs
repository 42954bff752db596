//! Building a [`FastDecoder`]: every tensor the config implies is checked (present, shaped as the
//! config says, finite) before anything sized by the config is allocated; weights are packed in
//! the chosen [`WeightFormat`] and every run-time buffer is allocated once, here.

use std::collections::HashMap;
use std::path::Path;

use candle_core::{DType, Tensor};

use super::kernels::{self, padded};
use super::matrix::{Aligned, Matrix, QScratch};
use super::{
    CrossSite, FastConfig, FastDecoder, Isa, KvStore, Layer, PREFILL_CHUNK, State, WeightFormat,
    Weights, blocked, names,
};
use crate::checkpoint::limits;
use crate::error::{Error, Result};

/// Walks every tensor `cfg` implies, in load order, and checks it exists with the shape the
/// config gives it; then bounds the run-time state the config asks for. Allocates nothing sized
/// by the config, so a config asking for a billion layers fails on the first layer the weights
/// lack instead of allocating for it. Errors name the setting and the tensor.
fn check_tensors<F>(cfg: &FastConfig, get: &mut F) -> Result<()>
where
    F: FnMut(&str) -> Result<Tensor>,
{
    let (d, v) = (cfg.dim, cfg.vocab_size);
    let ff = cfg.ff_mult.checked_mul(d).ok_or_else(|| {
        Error::Config(format!(
            "fast decoder: the model config's ff_mult {} times dim {d} overflows",
            cfg.ff_mult
        ))
    })?;
    let mut expect = |name: &str, dims: Option<&[usize]>, settings: &str| -> Result<Vec<usize>> {
        // A weights file keeps its own error (it names the file); the setting is added.
        let t = get(name).map_err(|e| match e {
            Error::Checkpoint { file, msg } => Error::Checkpoint {
                file,
                msg: format!(
                    "{msg}, which the model config (config.json: {settings}) needs for the fast decoder"
                ),
            },
            e => Error::Config(format!(
                "fast decoder: the model config (config.json: {settings}) needs tensor {name}, \
                 which the weights do not have ({e})"
            )),
        })?;
        if let Some(dims) = dims
            && t.dims() != dims
        {
            return Err(Error::Config(format!(
                "fast decoder: tensor {name} has shape {:?}, but the model config \
                 (config.json: {settings}) implies {dims:?}",
                t.dims()
            )));
        }
        Ok(t.dims().to_vec())
    };
    let dims = format!("vocab_size = {v}, dim = {d}");
    expect(names::TOK_EMB, Some(&[v, d]), &dims)?;
    for i in 0..cfg.n_layers {
        let n = |s: &str| names::layer(i, s);
        let layer = format!(
            "n_layers = {}, dim = {d}, ff_mult = {}",
            cfg.n_layers, cfg.ff_mult
        );
        expect(&n("attn_norm.weight"), Some(&[d]), &layer)?;
        expect(&n("attn.qkv.weight"), Some(&[3 * d, d]), &layer)?;
        expect(&n("attn.out.weight"), Some(&[d, d]), &layer)?;
        expect(&n("ff_norm.weight"), Some(&[d]), &layer)?;
        expect(&n("ff.w1.weight"), Some(&[ff, d]), &layer)?;
        expect(&n("ff.w3.weight"), Some(&[ff, d]), &layer)?;
        expect(&n("ff.w2.weight"), Some(&[d, ff]), &layer)?;
    }
    let ld = cfg.latent_dim();
    for j in 0..cfg.n_cross_sites() {
        let n = |s: &str| names::cross(j, s);
        let site = format!(
            "n_layers = {}, cross_every = {}, dim = {d}, latent_dim = {ld}",
            cfg.n_layers, cfg.cross_every
        );
        expect(&n("norm.weight"), Some(&[d]), &site)?;
        expect(&n("q.weight"), Some(&[d, d]), &site)?;
        expect(&n("kv.weight"), Some(&[2 * d, ld]), &site)?;
        expect(&n("out.weight"), Some(&[d, d]), &site)?;
        expect(&n("attn_gate"), None, &site)?;
        expect(&n("ff_norm.weight"), Some(&[d]), &site)?;
        // The adapter's hidden size is the weights' own (checked against w3 and w2 on load).
        expect(&n("ff.w1.weight"), None, &site)?;
        expect(&n("ff.w3.weight"), None, &site)?;
        expect(&n("ff.w2.weight"), None, &site)?;
        expect(&n("ff_gate"), None, &site)?;
    }
    expect(names::NORM, Some(&[d]), &format!("dim = {d}"))?;
    expect(names::LM_HEAD, Some(&[v, d]), &dims)?;
    if cfg.window_bins > 0 {
        let wb = cfg.window_bins;
        expect(
            names::WIN_EMB,
            Some(&[wb, d]),
            &format!("window_bins = {wb}, dim = {d}"),
        )?;
    }
    if cfg.grid_bins > 0 {
        let gb = cfg.grid_bins;
        expect(
            names::GRID_HEAD,
            Some(&[gb, d]),
            &format!("grid_bins = {gb}, dim = {d}"),
        )?;
    }
    // What the weights do not imply (`limits::STATE_BYTES`): the KV cache (keys and values of
    // every layer and position, worst case f32), the cross-attention caches and the RoPE tables.
    let (layers, seq) = (cfg.n_layers as u128, cfg.max_seq_len as u128);
    let state_bytes = 4
        * (2 * layers * d as u128 * seq
            + 2 * cfg.n_cross_sites() as u128 * d as u128 * cfg.max_latents as u128
            + seq * d as u128);
    if state_bytes > limits::STATE_BYTES {
        return Err(Error::Config(format!(
            "fast decoder: the model config (config.json: max_seq_len = {}, max_latents = {}, \
             n_layers = {}, dim = {d}) asks for {} MiB of run-time state, more than the {} MiB \
             allowed",
            cfg.max_seq_len,
            cfg.max_latents,
            cfg.n_layers,
            state_bytes >> 20,
            limits::STATE_BYTES >> 20
        )));
    }
    Ok(())
}

/// Reads one tensor as f32 values, checking its shape and that it is finite.
fn fetch<F>(get: &mut F, name: &str, dims: &[usize]) -> Result<Vec<f32>>
where
    F: FnMut(&str) -> Result<Tensor>,
{
    let t = get(name)?;
    if t.dims() != dims {
        return Err(Error::Config(format!(
            "fast decoder: tensor {name} has shape {:?}, expected {dims:?}",
            t.dims()
        )));
    }
    to_f32(name, &t)
}

fn to_f32(name: &str, t: &Tensor) -> Result<Vec<f32>> {
    let v = t.to_dtype(DType::F32)?.flatten_all()?.to_vec1::<f32>()?;
    if let Some(i) = v.iter().position(|x| !x.is_finite()) {
        return Err(Error::Config(format!(
            "fast decoder: tensor {name} holds a non-finite value at flat index {i}"
        )));
    }
    Ok(v)
}

/// A gate: one value (`[]` or `[1]`) broadcast over `dim`, or `[dim]`; returns `tanh(gate)`.
fn fetch_gate<F>(get: &mut F, name: &str, dim: usize) -> Result<Vec<f32>>
where
    F: FnMut(&str) -> Result<Tensor>,
{
    let t = get(name)?;
    let v = match t.elem_count() {
        1 if t.rank() <= 1 => vec![to_f32(name, &t)?[0]; dim],
        n if n == dim && t.rank() == 1 => to_f32(name, &t)?,
        _ => {
            return Err(Error::Config(format!(
                "fast decoder: gate {name} has shape {:?}, expected [], [1] or [{dim}]",
                t.dims()
            )));
        }
    };
    Ok(v.into_iter().map(f32::tanh).collect())
}

fn fetch_matrix<F>(
    get: &mut F,
    name: &str,
    rows: usize,
    cols: usize,
    format: WeightFormat,
) -> Result<Matrix>
where
    F: FnMut(&str) -> Result<Tensor>,
{
    let v = fetch(get, name, &[rows, cols])?;
    Ok(Matrix::pack(&v, rows, cols, format))
}

/// SwiGLU weights: w1 and w3 stacked into one `[2 * hidden, dim]` matrix, and w2.
fn fetch_swiglu<F>(
    get: &mut F,
    prefix: &dyn Fn(&str) -> String,
    dim: usize,
    hidden: Option<usize>,
    format: WeightFormat,
) -> Result<(Matrix, Matrix)>
where
    F: FnMut(&str) -> Result<Tensor>,
{
    let n1 = prefix("ff.w1.weight");
    let w1t = get(&n1)?;
    let hidden = match hidden {
        Some(h) => h,
        None => w1t.dims().first().copied().unwrap_or(0),
    };
    if w1t.dims() != [hidden, dim] || hidden == 0 {
        return Err(Error::Config(format!(
            "fast decoder: tensor {n1} has shape {:?}, expected [{hidden}, {dim}]",
            w1t.dims()
        )));
    }
    let mut w13 = to_f32(&n1, &w1t)?;
    w13.extend(fetch(get, &prefix("ff.w3.weight"), &[hidden, dim])?);
    let w2 = fetch(get, &prefix("ff.w2.weight"), &[dim, hidden])?;
    Ok((
        Matrix::pack(&w13, 2 * hidden, dim, format),
        Matrix::pack(&w2, dim, hidden, format),
    ))
}

impl FastDecoder {
    /// Builds the decoder from a tensor lookup (`get(name)` returns the tensor of that name, any
    /// float dtype, any device). Shapes are checked against `cfg`; weights are packed in `format`
    /// and every run-time buffer is allocated here.
    pub fn from_tensors<F>(cfg: &FastConfig, format: WeightFormat, mut get: F) -> Result<Self>
    where
        F: FnMut(&str) -> Result<Tensor>,
    {
        cfg.validate()?;
        // Sizes come from a file: every tensor they imply must be there, shaped as they say,
        // before anything sized by them is allocated.
        check_tensors(cfg, &mut get)?;
        let hd = cfg.head_dim()?;
        let (d, v, ff) = (cfg.dim, cfg.vocab_size, cfg.ff_mult * cfg.dim);
        let g = &mut get;

        let tok_emb = fetch(g, names::TOK_EMB, &[v, d])?;
        let win_emb = match cfg.window_bins {
            0 => Vec::new(),
            wb => fetch(g, names::WIN_EMB, &[wb, d])?,
        };
        let mut layers = Vec::with_capacity(cfg.n_layers);
        for i in 0..cfg.n_layers {
            let n = |s: &str| names::layer(i, s);
            let (w13, w2) = fetch_swiglu(g, &n, d, Some(ff), format)?;
            layers.push(Layer {
                attn_norm: fetch(g, &n("attn_norm.weight"), &[d])?,
                qkv: fetch_matrix(g, &n("attn.qkv.weight"), 3 * d, d, format)?,
                out: fetch_matrix(g, &n("attn.out.weight"), d, d, format)?,
                ff_norm: fetch(g, &n("ff_norm.weight"), &[d])?,
                w13,
                w2,
            });
        }
        let ld = cfg.latent_dim();
        let mut cross = Vec::with_capacity(cfg.n_cross_sites());
        for j in 0..cfg.n_cross_sites() {
            let n = |s: &str| names::cross(j, s);
            let (w13, w2) = fetch_swiglu(g, &n, d, None, format)?;
            cross.push(CrossSite {
                norm: fetch(g, &n("norm.weight"), &[d])?,
                q: fetch_matrix(g, &n("q.weight"), d, d, format)?,
                kv: fetch_matrix(g, &n("kv.weight"), 2 * d, ld, format)?,
                out: fetch_matrix(g, &n("out.weight"), d, d, format)?,
                attn_gate: fetch_gate(g, &n("attn_gate"), d)?,
                ff_norm: fetch(g, &n("ff_norm.weight"), &[d])?,
                w13,
                w2,
                ff_gate: fetch_gate(g, &n("ff_gate"), d)?,
                kt: Aligned::zeroed(d * blocked(cfg.max_latents)),
                v_cache: Aligned::zeroed(d * cfg.max_latents),
            });
        }
        let norm = fetch(g, names::NORM, &[d])?;
        let lm_head = fetch_matrix(g, names::LM_HEAD, v, d, format)?;
        let grid_head = match cfg.grid_bins {
            0 => Vec::new(),
            gb => fetch(g, names::GRID_HEAD, &[gb, d])?,
        };

        // RoPE tables exactly as the candle model builds them.
        let (rope_cos, rope_sin) = crate::layers::rope_tables(cfg.rope_theta, hd, cfg.max_seq_len);

        let max_hidden = std::iter::once(ff)
            .chain(cross.iter().map(|c| c.w2.cols()))
            .max()
            .unwrap_or(ff);
        let c = PREFILL_CHUNK;
        let (ffh_stride, ffg_stride) = (2 * max_hidden, padded(max_hidden));
        let scores_stride = cfg.max_seq_len.max(cfg.max_latents);
        let s = State {
            kv: KvStore::new(
                format,
                cfg.n_layers * d * blocked(cfg.max_seq_len),
                cfg.n_layers * d * cfg.max_seq_len,
            ),
            kv_tile: Aligned::zeroed(hd * kernels::KEY_BLOCK),
            head_tmp: Aligned::zeroed(hd),
            pos: 0,
            n_latents: 0,
            x: Aligned::zeroed(c * d),
            xn: Aligned::zeroed(c * padded(d)),
            qkv: Aligned::zeroed(c * 3 * d),
            att: Aligned::zeroed(c * padded(d)),
            tmp: Aligned::zeroed(c * d),
            ffh: Aligned::zeroed(c * ffh_stride),
            ffh_stride,
            ffg: Aligned::zeroed(c * ffg_stride),
            ffg_stride,
            scores: Aligned::zeroed(c * scores_stride),
            scores_stride,
            latent: Aligned::zeroed(padded(ld)),
            kv_proj: Aligned::zeroed(2 * d),
            logits: Aligned::zeroed(v),
            grid_scores: vec![0.0; cfg.grid_bins],
            qs: QScratch::new(d.max(max_hidden).max(ld), c),
        };
        Ok(FastDecoder {
            cfg: cfg.clone(),
            format,
            isa: Isa::detect(),
            head_dim: hd,
            w: Weights {
                tok_emb,
                win_emb,
                layers,
                cross,
                norm,
                lm_head,
                grid_head,
                rope_cos,
                rope_sin,
            },
            s,
            clock: None,
            grid_rows: None,
            grid: None,
            grid_row: Vec::new(),
        })
    }

    /// Builds from a name → tensor map (e.g. `candle_core::safetensors::load`); a missing tensor
    /// is a `Config` error naming it.
    pub fn from_map(
        cfg: &FastConfig,
        format: WeightFormat,
        tensors: &HashMap<String, Tensor>,
    ) -> Result<Self> {
        Self::from_tensors(cfg, format, |name| {
            tensors
                .get(name)
                .cloned()
                .ok_or_else(|| Error::Config(format!("fast decoder: missing tensor {name}")))
        })
    }

    /// Builds the decoder (trunk and, for Staria, cross-attention sites) of a checkpoint's
    /// model from its loaded tensors (`checkpoint::load_tensors`). Errors name the tensor at
    /// fault; the encoder's tensors are not read.
    pub fn from_checkpoint_tensors(
        model: &crate::model::ModelConfig,
        format: WeightFormat,
        tensors: &HashMap<String, Tensor>,
    ) -> Result<Self> {
        Self::from_map(&FastConfig::from(model), format, tensors)
    }

    /// Builds from the variables of a `VarMap` (e.g. a model being trained).
    pub fn from_varmap(
        cfg: &FastConfig,
        format: WeightFormat,
        vars: &candle_nn::VarMap,
    ) -> Result<Self> {
        let data = vars
            .data()
            .lock()
            .map_err(|_| Error::Config("fast decoder: VarMap lock poisoned".into()))?;
        Self::from_tensors(cfg, format, |name| {
            data.get(name)
                .map(|v| v.as_tensor().clone())
                .ok_or_else(|| Error::Config(format!("fast decoder: missing tensor {name}")))
        })
    }

    /// Builds from a safetensors file (float or q8 storage, read as `checkpoint::load_tensors`
    /// reads a checkpoint's); a missing tensor is a `Checkpoint` error naming the file and the
    /// tensor.
    pub fn from_safetensors(cfg: &FastConfig, format: WeightFormat, path: &Path) -> Result<Self> {
        let tensors = crate::checkpoint::read_weights_file(path, None, &candle_core::Device::Cpu)?;
        Self::from_tensors(cfg, format, |name| {
            tensors
                .get(name)
                .cloned()
                .ok_or_else(|| Error::checkpoint(path, format!("missing tensor {name}")))
        })
    }
}
