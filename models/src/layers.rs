//! Building blocks shared by the decoder, the snippet encoder and Staria: LayerNorm without bias,
//! RoPE tables, fused-QKV self-attention, SwiGLU and the pre-LN block, plus the preallocated KV
//! cache used for incremental decoding.
//!
//! Two code paths exist on purpose:
//! - the *full* path (`forward`, used for training and for the encoder) picks candle's fused
//!   kernels only when no gradient flows through the op (`Tensor::track_op`), since those kernels
//!   have no backward; with `VarMap` weights it runs the differentiable compositions instead;
//! - the *cached* path (`forward_cached`, inference only, batch 1) always uses the fused kernels
//!   and keeps the KV cache in `[1, T, H, head_dim]` layout so that a prefix of it is a contiguous
//!   view the CPU flash-attention kernel reads in place.

use candle_core::{D, DType, Device, Module, Tensor};
use candle_nn::attention::{AttnMask, flash_attn};
use candle_nn::{Init, LayerNorm, Linear, VarBuilder};

use crate::error::{Error, Result};

/// Weight initialisation for projections; candle's default for `linear_no_bias`.
const LINEAR_INIT: Init = candle_nn::init::DEFAULT_KAIMING_NORMAL;

/// Checks a (dim, n_heads) pair and returns the head dimension. RoPE rotates half of each head,
/// so the head dimension must also be even.
pub(crate) fn head_dim(what: &str, dim: usize, n_heads: usize) -> Result<usize> {
    if n_heads == 0 {
        return Err(Error::Config(format!("{what}: n_heads must be at least 1")));
    }
    if dim == 0 || !dim.is_multiple_of(n_heads) {
        return Err(Error::Config(format!(
            "{what}: dim {dim} is not divisible by n_heads {n_heads}"
        )));
    }
    let hd = dim / n_heads;
    if !hd.is_multiple_of(2) {
        return Err(Error::Config(format!(
            "{what}: head dim {hd} (dim {dim} / n_heads {n_heads}) must be even for RoPE"
        )));
    }
    Ok(hd)
}

/// A value added to masked attention scores. Finite (not -inf) so that a row whose keys are all
/// masked (an absent snippet slot in a training batch) yields finite values that are later
/// masked out, instead of NaN that would poison the whole batch; f16 cannot hold -1e9.
pub(crate) fn mask_value(dtype: DType) -> f32 {
    match dtype {
        DType::F16 => -6.0e4,
        _ => -1.0e9,
    }
}

pub(crate) fn linear(in_dim: usize, out_dim: usize, vb: VarBuilder) -> Result<Linear> {
    let w = vb.get_with_hints((out_dim, in_dim), "weight", LINEAR_INIT)?;
    Ok(Linear::new(w, None))
}

/// Checks that every id is below `vocab_size`; `what` names the sequence in the error.
pub(crate) fn check_ids(what: &str, ids: &[u32], vocab_size: usize) -> Result<()> {
    match ids.iter().position(|&t| t as usize >= vocab_size) {
        Some(i) => Err(Error::Tokenizer(format!(
            "{what}: token id {} at index {i} is outside the model vocabulary of {vocab_size}",
            ids[i]
        ))),
        None => Ok(()),
    }
}

/// Same check on a u32 id tensor (any shape).
pub(crate) fn check_id_tensor(what: &str, ids: &Tensor, vocab_size: usize) -> Result<()> {
    if ids.dtype() != DType::U32 {
        return Err(Error::Config(format!(
            "{what}: token ids must be u32, got {:?}",
            ids.dtype()
        )));
    }
    if ids.elem_count() == 0 {
        return Ok(());
    }
    let max = ids.flatten_all()?.max(0)?.to_scalar::<u32>()?;
    if max as usize >= vocab_size {
        return Err(Error::Tokenizer(format!(
            "{what}: token id {max} is outside the model vocabulary of {vocab_size}"
        )));
    }
    Ok(())
}

/// LayerNorm with a weight and no bias.
#[derive(Debug, Clone)]
pub(crate) struct Norm {
    ln: LayerNorm,
    /// The fused kernel wants a bias; a zero one keeps the maths identical.
    zero_bias: Tensor,
    eps: f32,
}

impl Norm {
    pub(crate) fn new(dim: usize, eps: f64, vb: VarBuilder) -> Result<Self> {
        let w = vb.get_with_hints(dim, "weight", Init::Const(1.0))?;
        let zero_bias = Tensor::zeros(dim, w.dtype(), w.device())?;
        Ok(Self {
            ln: LayerNorm::new_no_bias(w, eps),
            zero_bias,
            eps: eps as f32,
        })
    }

    /// Differentiable when gradients flow through `x` or the weight.
    pub(crate) fn forward(&self, x: &Tensor) -> Result<Tensor> {
        if x.track_op() || self.ln.weight().track_op() {
            Ok(self.ln.forward(x)?)
        } else {
            self.fused(x)
        }
    }

    /// Inference only: the fused kernel, no gradient.
    pub(crate) fn fused(&self, x: &Tensor) -> Result<Tensor> {
        Ok(candle_nn::ops::layer_norm(
            &x.contiguous()?,
            self.ln.weight(),
            &self.zero_bias,
            self.eps,
        )?)
    }
}

/// RoPE base frequency of every config that does not set `rope_theta` (Llama 3's).
pub(crate) fn default_rope_theta() -> f64 {
    500_000.0
}

/// RMSNorm epsilon of every config that does not set `norm_eps`.
pub(crate) fn default_norm_eps() -> f64 {
    1e-5
}

/// RoPE's inverse frequencies `[head_dim / 2]`: `theta^(-2i / head_dim)`, computed in f64 and
/// rounded to f32. Every RoPE table in the workspace starts here (the candle model's, the fast
/// decoder's and the fast trainer's, through [`rope_tables`]), so they stay bit-identical.
pub(crate) fn rope_inv_freq(theta: f64, head_dim: usize) -> Vec<f32> {
    (0..head_dim / 2)
        .map(|i| (1.0 / theta.powf(2.0 * i as f64 / head_dim as f64)) as f32)
        .collect()
}

/// RoPE's `(cos, sin)` tables, each `[positions, head_dim / 2]` row-major: f32 angle =
/// position * inverse frequency, f32 cos and sin (what the candle model computes as tensors).
pub fn rope_tables(theta: f64, head_dim: usize, positions: usize) -> (Vec<f32>, Vec<f32>) {
    let inv_freq = rope_inv_freq(theta, head_dim);
    let mut cos = Vec::with_capacity(positions * inv_freq.len());
    let mut sin = Vec::with_capacity(positions * inv_freq.len());
    for pos in 0..positions {
        for f in &inv_freq {
            let angle = pos as f32 * f;
            cos.push(angle.cos());
            sin.push(angle.sin());
        }
    }
    (cos, sin)
}

/// Precomputed rotate-half RoPE tables for positions `0..max_seq_len`.
#[derive(Debug, Clone)]
pub(crate) struct Rope {
    /// `[max_seq_len, head_dim / 2]`, what the fused kernels take.
    cos: Tensor,
    sin: Tensor,
    /// `[max_seq_len, head_dim]` (halves repeated), for the differentiable composition.
    cos_full: Tensor,
    sin_full: Tensor,
}

impl Rope {
    pub(crate) fn new(
        head_dim: usize,
        max_seq_len: usize,
        theta: f64,
        dtype: DType,
        dev: &Device,
    ) -> Result<Self> {
        let half = head_dim / 2;
        let inv_freq = rope_inv_freq(theta, head_dim);
        let inv_freq = Tensor::from_vec(inv_freq, (1, half), dev)?;
        let t = Tensor::arange(0u32, max_seq_len as u32, dev)?
            .to_dtype(DType::F32)?
            .reshape((max_seq_len, 1))?;
        let freqs = t.broadcast_mul(&inv_freq)?;
        let cos = freqs.cos()?.to_dtype(dtype)?;
        let sin = freqs.sin()?.to_dtype(dtype)?;
        let cos_full = Tensor::cat(&[&cos, &cos], 1)?;
        let sin_full = Tensor::cat(&[&sin, &sin], 1)?;
        Ok(Self {
            cos,
            sin,
            cos_full,
            sin_full,
        })
    }

    /// `x`: `[B, H, T, hd]`, positions `0..T`. Differentiable when `x` tracks gradients.
    pub(crate) fn apply_bhtd(&self, x: &Tensor) -> Result<Tensor> {
        let t = x.dim(2)?;
        if x.track_op() {
            let cos = self.cos_full.narrow(0, 0, t)?;
            let sin = self.sin_full.narrow(0, 0, t)?;
            let hd = x.dim(D::Minus1)?;
            let x1 = x.narrow(D::Minus1, 0, hd / 2)?;
            let x2 = x.narrow(D::Minus1, hd / 2, hd / 2)?;
            let rotated = Tensor::cat(&[&x2.neg()?, &x1], D::Minus1)?;
            Ok((x.broadcast_mul(&cos)? + rotated.broadcast_mul(&sin)?)?)
        } else {
            let cos = self.cos.narrow(0, 0, t)?;
            let sin = self.sin.narrow(0, 0, t)?;
            Ok(candle_nn::rotary_emb::rope(&x.contiguous()?, &cos, &sin)?)
        }
    }

    /// Inference only. `x`: contiguous `[1, T, H, hd]` at positions `pos..pos + T`.
    pub(crate) fn apply_bthd(&self, x: &Tensor, pos: usize) -> Result<Tensor> {
        let t = x.dim(1)?;
        let cos = self.cos.narrow(0, pos, t)?;
        let sin = self.sin.narrow(0, pos, t)?;
        Ok(candle_nn::rotary_emb::rope_thd(x, &cos, &sin)?)
    }
}

/// Scaled dot-product attention on `[B, H, Tq, hd]` / `[B, H, Tk, hd]`; `mask` is additive and
/// broadcastable to `[B, H, Tq, Tk]`. Differentiable when its inputs track gradients.
pub(crate) fn sdpa(q: &Tensor, k: &Tensor, v: &Tensor, mask: Option<&Tensor>) -> Result<Tensor> {
    let scale = 1.0 / (q.dim(D::Minus1)? as f64).sqrt();
    let scores = (q.matmul(&k.t()?)? * scale)?;
    let scores = match mask {
        Some(m) => scores.broadcast_add(m)?,
        None => scores,
    };
    let probs = if scores.track_op() {
        candle_nn::ops::softmax(&scores, D::Minus1)?
    } else {
        candle_nn::ops::softmax_last_dim(&scores)?
    };
    Ok(probs.matmul(v)?)
}

/// Inference-only attention for batch 1 in `[1, T, H, hd]` layout (`k`, `v` may be longer than
/// `q`). `causal_offset`: `Some(p)` lets query `i` see keys `0..=p + i`; `None` sees all keys.
/// Returns `[1, Tq, H * hd]`. Uses candle's CPU flash-attention kernel for f32 on CPU (one op
/// instead of four), the matmul composition elsewhere.
pub(crate) fn attend_bthd(
    q: &Tensor,
    k: &Tensor,
    v: &Tensor,
    causal_offset: Option<usize>,
) -> Result<Tensor> {
    let (b, tq, h, hd) = q.dims4()?;
    let out = if q.device().is_cpu() && q.dtype() == DType::F32 {
        let scale = 1.0 / (hd as f32).sqrt();
        let mask = match causal_offset {
            Some(p) => AttnMask::causal_with_offset(p),
            None => AttnMask::None,
        };
        flash_attn::<f32>(q, k, v, scale, mask, None, None)?
    } else {
        let q = q.transpose(1, 2)?.contiguous()?;
        let k = k.transpose(1, 2)?.contiguous()?;
        let v = v.transpose(1, 2)?.contiguous()?;
        let mask = match causal_offset {
            Some(p) if tq > 1 => Some(causal_mask(tq, p, q.dtype(), q.device())?),
            _ => None,
        };
        sdpa(&q, &k, &v, mask.as_ref())?
    };
    // `[1, H, Tq, hd]` -> `[1, Tq, H * hd]`; free when Tq == 1.
    Ok(out.transpose(1, 2)?.reshape((b, tq, h * hd))?)
}

/// Additive causal mask `[Tq, offset + Tq]`: query `i` sees keys `0..=offset + i`.
pub(crate) fn causal_mask(tq: usize, offset: usize, dtype: DType, dev: &Device) -> Result<Tensor> {
    let tk = offset + tq;
    let neg = mask_value(dtype);
    let data: Vec<f32> = (0..tq)
        .flat_map(|i| (0..tk).map(move |j| if j > offset + i { neg } else { 0.0 }))
        .collect();
    Ok(Tensor::from_vec(data, (tq, tk), dev)?.to_dtype(dtype)?)
}

/// Self-attention with one fused QKV projection and RoPE, no biases.
#[derive(Debug, Clone)]
pub(crate) struct SelfAttention {
    qkv: Linear,
    out: Linear,
    n_heads: usize,
    head_dim: usize,
}

impl SelfAttention {
    pub(crate) fn new(dim: usize, n_heads: usize, head_dim: usize, vb: VarBuilder) -> Result<Self> {
        Ok(Self {
            qkv: linear(dim, 3 * dim, vb.pp("qkv"))?,
            out: linear(dim, dim, vb.pp("out"))?,
            n_heads,
            head_dim,
        })
    }

    /// Full-sequence attention on `[B, T, D]`, positions `0..T`; `mask` additive, broadcastable
    /// to `[B, H, T, T]` (causal for the decoder, key padding for the encoder).
    pub(crate) fn forward(&self, x: &Tensor, rope: &Rope, mask: Option<&Tensor>) -> Result<Tensor> {
        let (b, t, d) = x.dims3()?;
        let qkv = self
            .qkv
            .forward(x)?
            .reshape((b, t, 3, self.n_heads, self.head_dim))?
            .permute((2, 0, 3, 1, 4))?
            .contiguous()?;
        let q = rope.apply_bhtd(&qkv.get(0)?)?;
        let k = rope.apply_bhtd(&qkv.get(1)?)?;
        let v = qkv.get(2)?;
        let y = sdpa(&q, &k, &v, mask)?;
        let y = y.transpose(1, 2)?.reshape((b, t, d))?;
        Ok(self.out.forward(&y)?)
    }

    /// Inference only: `x` `[1, T, D]` at positions `cache.len()..`; appends K/V to `layer`.
    fn forward_cached(
        &self,
        x: &Tensor,
        rope: &Rope,
        layer: &LayerKv,
        pos: usize,
    ) -> Result<Tensor> {
        let (_, t, _) = x.dims3()?;
        let (h, hd) = (self.n_heads, self.head_dim);
        let qkv = self.qkv.forward(x)?.reshape((1, t, 3 * h, hd))?;
        // Q and K rotate together in one kernel call; copies only when T > 1.
        let qk = rope.apply_bthd(&qkv.narrow(2, 0, 2 * h)?.contiguous()?, pos)?;
        let q = qk.narrow(2, 0, h)?;
        let k = qk.narrow(2, h, h)?.contiguous()?;
        let v = qkv.narrow(2, 2 * h, h)?.contiguous()?;
        layer.k.slice_set(&k, 1, pos)?;
        layer.v.slice_set(&v, 1, pos)?;
        let k_all = layer.k.narrow(1, 0, pos + t)?;
        let v_all = layer.v.narrow(1, 0, pos + t)?;
        let y = attend_bthd(&q.contiguous()?, &k_all, &v_all, Some(pos))?;
        Ok(self.out.forward(&y)?)
    }
}

/// SwiGLU feed-forward: `w2(silu(w1 x) * w3 x)`, no biases.
#[derive(Debug, Clone)]
pub(crate) struct SwiGlu {
    w1: Linear,
    w2: Linear,
    w3: Linear,
}

impl SwiGlu {
    pub(crate) fn new(dim: usize, hidden: usize, vb: VarBuilder) -> Result<Self> {
        Ok(Self {
            w1: linear(dim, hidden, vb.pp("w1"))?,
            w2: linear(hidden, dim, vb.pp("w2"))?,
            w3: linear(dim, hidden, vb.pp("w3"))?,
        })
    }

    pub(crate) fn forward(&self, x: &Tensor) -> Result<Tensor> {
        let gate = self.w1.forward(x)?.silu()?;
        let up = self.w3.forward(x)?;
        Ok(self.w2.forward(&(gate * up)?)?)
    }
}

/// Pre-LN transformer block: `x + attn(attn_norm(x))`, then `x + ff(ff_norm(x))`.
#[derive(Debug, Clone)]
pub(crate) struct Block {
    attn_norm: Norm,
    attn: SelfAttention,
    ff_norm: Norm,
    ff: SwiGlu,
}

impl Block {
    pub(crate) fn new(
        dim: usize,
        n_heads: usize,
        head_dim: usize,
        ff_hidden: usize,
        eps: f64,
        vb: VarBuilder,
    ) -> Result<Self> {
        Ok(Self {
            attn_norm: Norm::new(dim, eps, vb.pp("attn_norm"))?,
            attn: SelfAttention::new(dim, n_heads, head_dim, vb.pp("attn"))?,
            ff_norm: Norm::new(dim, eps, vb.pp("ff_norm"))?,
            ff: SwiGlu::new(dim, ff_hidden, vb.pp("ff"))?,
        })
    }

    pub(crate) fn forward(&self, x: &Tensor, rope: &Rope, mask: Option<&Tensor>) -> Result<Tensor> {
        let x = (x + self.attn.forward(&self.attn_norm.forward(x)?, rope, mask)?)?;
        let h = self.ff.forward(&self.ff_norm.forward(&x)?)?;
        Ok((x + h)?)
    }

    pub(crate) fn forward_cached(
        &self,
        x: &Tensor,
        rope: &Rope,
        layer: &LayerKv,
        pos: usize,
    ) -> Result<Tensor> {
        let a = self
            .attn
            .forward_cached(&self.attn_norm.fused(x)?, rope, layer, pos)?;
        let x = (x + a)?;
        let h = self.ff.forward(&self.ff_norm.fused(&x)?)?;
        Ok((x + h)?)
    }
}

/// One layer's preallocated keys and values, `[1, max_seq_len, H, head_dim]`.
#[derive(Debug)]
pub(crate) struct LayerKv {
    k: Tensor,
    v: Tensor,
}

/// Preallocated KV cache for batch-1 incremental decoding (all layers, up to `max_seq_len`).
/// Positions `0..len()` are valid; `truncate` only moves the length, the next write overwrites.
/// Not `Clone`: a clone would share (and overwrite) the same storage.
#[derive(Debug)]
pub struct KvCache {
    layers: Vec<LayerKv>,
    len: usize,
    max_seq_len: usize,
}

impl KvCache {
    pub(crate) fn new(
        n_layers: usize,
        max_seq_len: usize,
        n_heads: usize,
        head_dim: usize,
        dtype: DType,
        dev: &Device,
    ) -> Result<Self> {
        let layers = (0..n_layers)
            .map(|_| {
                Ok(LayerKv {
                    k: Tensor::zeros((1, max_seq_len, n_heads, head_dim), dtype, dev)?,
                    v: Tensor::zeros((1, max_seq_len, n_heads, head_dim), dtype, dev)?,
                })
            })
            .collect::<Result<Vec<_>>>()?;
        Ok(Self {
            layers,
            len: 0,
            max_seq_len,
        })
    }

    /// Tokens currently held.
    pub fn len(&self) -> usize {
        self.len
    }

    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    pub fn max_seq_len(&self) -> usize {
        self.max_seq_len
    }

    pub fn n_layers(&self) -> usize {
        self.layers.len()
    }

    /// Forget everything.
    pub fn reset(&mut self) {
        self.len = 0;
    }

    /// Drop positions `>= len` (no-op when `len >= self.len()`).
    pub fn truncate(&mut self, len: usize) {
        self.len = self.len.min(len);
    }

    pub(crate) fn layer(&self, i: usize) -> &LayerKv {
        &self.layers[i]
    }

    /// Errors (before anything is written) when `t` more tokens would not fit.
    pub(crate) fn check_room(&self, t: usize) -> Result<()> {
        if self.len + t > self.max_seq_len {
            return Err(Error::ContextFull {
                cached: self.len,
                new: t,
                max: self.max_seq_len,
            });
        }
        Ok(())
    }

    pub(crate) fn advance(&mut self, t: usize) {
        self.len += t;
    }
}
