//! The fast CPU decode path: a hand-written, allocation-free, optionally quantized single-token
//! decode step for the decoder (and the Staria decoder with its gated cross-attention sites),
//! meant to run in real time on one core of the engine thread.
//!
//! It computes the same function as the candle `Decoder::forward_cached` (same tensor names, same
//! LayerNorm-without-bias, rotate-half RoPE tables built the same way in f32, causal softmax
//! attention with scale `1/sqrt(head_dim)`, SwiGLU, untied LM head), but
//! - every buffer (KV cache for `max_seq_len`, activations, logits, quantization scratch) is
//!   allocated when the decoder is built: [`FastDecoder::step`] and [`FastDecoder::prefill`] never
//!   allocate (see `tests/fast_noalloc.rs`);
//! - weights are packed once in a [`WeightFormat`]: exact f32, f16 (F16C conversion in the dot
//!   product) or int8 with one scale per 32 weights, multiplied against activations quantized to
//!   int8 per 32 values (llama.cpp's q8_0 x q8_0; AVX-512 VNNI `vpdpbusd` or AVX2 `vpmaddubsw`);
//! - the key cache is stored in blocks of 16 positions, each a contiguous `head_dim x 16` tile
//!   (`[layer][head][position / 16][head_dim][16]`), so the scores of 16 positions are one SIMD
//!   register's lanes and the whole cache streams sequentially; the value cache is
//!   `[layer][head][position][head_dim]`;
//! - SIMD paths are picked at run time ([`Isa::detect`]); a portable fallback runs anywhere;
//! - [`FastDecoder::prefill`] runs the prompt in chunks of [`PREFILL_CHUNK`] tokens: each weight
//!   row is loaded once per chunk and multiplied against all of its tokens (register-blocked
//!   small GEMMs), each f16 key / value tile is converted once per chunk, and the LM head runs
//!   for the last token only. Per token the arithmetic is exactly a decode step's (same
//!   accumulators, same reductions, same attention order), so a prefill leaves bit-for-bit the
//!   logits and KV cache of one [`FastDecoder::step`] per token.
//!
//! No threads: everything runs on the caller's thread.
//!
//! ## Staria cross-attention sites
//! As `staria.rs` (`CrossAttn::forward_cached`): with `cross_every = c > 0`, site `j` follows
//! decoder layer `(j+1)*c - 1` and computes, on the residual stream `x`,
//! ```text
//! x = x + tanh(attn_gate) * out(attend(q(norm(x)), K, V))     [K; V] = kv(latents)
//! x = x + tanh(ff_gate) * w2(silu(w1 ff_norm(x)) * w3 ff_norm(x))
//! ```
//! with the tensor names listed in [`names`]. Heads and head size are the decoder's; no RoPE on
//! the latents. `K`/`V` of every site are computed once per prompt by
//! [`FastDecoder::set_latents`] from the latents *with the section embedding already added*
//! (`staria::Latents::latents()`); with no latents set, every site is skipped entirely (as
//! `Staria::forward_cached` does for a prompt without snippets).

// Crate-private: the kernels take an `Isa` and trust it; only `Isa::detect` (or capping a detected
// one) can make one, so a forged AVX-512 level on a CPU without it cannot happen.
pub(crate) mod kernels;
mod matrix;
#[cfg(test)]
mod tests;

use std::collections::HashMap;
use std::path::Path;

use candle_core::{DType, Tensor};
use serde::{Deserialize, Serialize};

use crate::decoder::DecoderConfig;
use crate::error::{Error, Result};
use crate::grid::{self, BeatGrid, GridRows};
use crate::window::{self, WindowBins, WindowClock};
pub use kernels::Isa;
use kernels::padded;

/// `n` rounded up to whole key blocks.
fn blocked(n: usize) -> usize {
    n.div_ceil(kernels::KB) * kernels::KB
}
use matrix::{Aligned, Matrix, QScratch};

/// How the projection matrices (QKV, attention output, SwiGLU, LM head, cross-attention) are
/// stored. Norm weights and the token embedding stay f32 in every format.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum WeightFormat {
    /// Exact: f32 weights and activations (reference numerics).
    F32,
    /// IEEE f16 weights, f32 activations and accumulation.
    F16,
    /// int8 weights with one f32 scale per block of 32 (per row), activations quantized to int8
    /// per block of 32 before every mat-vec (q8_0 x q8_0). The fastest format.
    Q8,
}

impl WeightFormat {
    pub const ALL: [WeightFormat; 3] = [WeightFormat::F32, WeightFormat::F16, WeightFormat::Q8];

    pub fn name(self) -> &'static str {
        match self {
            WeightFormat::F32 => "f32",
            WeightFormat::F16 => "f16",
            WeightFormat::Q8 => "q8",
        }
    }
}

impl std::str::FromStr for WeightFormat {
    type Err = Error;
    fn from_str(s: &str) -> Result<Self> {
        match s.to_ascii_lowercase().as_str() {
            "f32" => Ok(WeightFormat::F32),
            "f16" => Ok(WeightFormat::F16),
            "q8" | "q8_0" | "int8" => Ok(WeightFormat::Q8),
            _ => Err(Error::Config(format!(
                "unknown weight format {s:?} (expected f32, f16 or q8)"
            ))),
        }
    }
}

fn default_max_latents() -> usize {
    64
}

/// The fast decoder's hyper-parameters: a [`DecoderConfig`] (the trunk, read with the same serde
/// keys from the model's `config.json` and checked by [`DecoderConfig::validate`]) plus the
/// optional Staria cross-attention settings. Built from the candle model's config
/// (`FastConfig::from(&decoder_config)` or `FastConfig::from(&model_config)`), as
/// candle-transformers' `LlamaConfig::into_config` builds its `Config`; the decoder's fields read
/// through it (`cfg.dim`, `cfg.rope_theta`) by `Deref`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct FastConfig {
    /// The decoder trunk: every size, RoPE theta, norm eps, window and grid setting.
    #[serde(flatten)]
    pub decoder: DecoderConfig,
    /// A Staria cross-attention site after every `cross_every`-th block; 0 = plain decoder.
    #[serde(default)]
    pub cross_every: usize,
    /// Most latent vectors a prompt may provide (K/V space is preallocated for this many).
    #[serde(default = "default_max_latents")]
    pub max_latents: usize,
    /// Size of one latent vector; `None` = `dim`.
    #[serde(default)]
    pub latent_dim: Option<usize>,
}

impl std::ops::Deref for FastConfig {
    type Target = DecoderConfig;
    fn deref(&self) -> &DecoderConfig {
        &self.decoder
    }
}

impl std::ops::DerefMut for FastConfig {
    fn deref_mut(&mut self) -> &mut DecoderConfig {
        &mut self.decoder
    }
}

impl FastConfig {
    /// A plain decoder config (no cross-attention) with the default RoPE theta and norm eps.
    pub fn decoder(
        vocab_size: usize,
        dim: usize,
        n_layers: usize,
        n_heads: usize,
        ff_mult: usize,
        max_seq_len: usize,
    ) -> Self {
        FastConfig::from(DecoderConfig::preset(
            vocab_size,
            dim,
            n_layers,
            n_heads,
            ff_mult,
            max_seq_len,
        ))
    }

    /// The decoder's `small` preset ([`DecoderConfig::small`]).
    pub fn small(vocab_size: usize) -> Self {
        FastConfig::from(DecoderConfig::small(vocab_size))
    }

    /// Number of Staria cross-attention sites.
    pub fn n_cross_sites(&self) -> usize {
        self.n_layers.checked_div(self.cross_every).unwrap_or(0)
    }

    pub fn latent_dim(&self) -> usize {
        self.latent_dim.unwrap_or(self.dim)
    }

    /// The decoder's checks ([`DecoderConfig::validate`]) and those of the cross-attention
    /// settings.
    pub fn validate(&self) -> Result<()> {
        self.decoder.validate()?;
        if self.cross_every > 0 && (self.max_latents == 0 || self.latent_dim() == 0) {
            return Err(Error::Config(
                "fast decoder: cross-attention needs max_latents and latent_dim of at least 1"
                    .into(),
            ));
        }
        Ok(())
    }
}

impl From<DecoderConfig> for FastConfig {
    /// A plain decoder with the candle `Decoder`'s settings.
    fn from(decoder: DecoderConfig) -> Self {
        FastConfig {
            decoder,
            cross_every: 0,
            max_latents: default_max_latents(),
            latent_dim: None,
        }
    }
}

impl From<&DecoderConfig> for FastConfig {
    /// A plain decoder with the candle `Decoder`'s settings.
    fn from(d: &DecoderConfig) -> Self {
        FastConfig::from(d.clone())
    }
}

impl From<&crate::model::ModelConfig> for FastConfig {
    /// The decoder trunk of a checkpoint's model; for Staria also its cross-attention sites
    /// (`cross_every`), room for every section's latents (`n_sections * encoder.n_latents`) and
    /// the latent size (`encoder.dim`). The snippet encoder itself is not part of the fast path.
    fn from(m: &crate::model::ModelConfig) -> Self {
        match m {
            crate::model::ModelConfig::Decoder(d) => FastConfig::from(d),
            crate::model::ModelConfig::Staria(s) => {
                let mut f = FastConfig::from(&s.decoder);
                f.cross_every = s.cross_every;
                f.max_latents = s.n_sections * s.encoder.n_latents;
                f.latent_dim = Some(s.encoder.dim);
                f
            }
        }
    }
}

impl FastConfig {
    /// Same as `FastConfig::from(model)`.
    pub fn from_model_config(model: &crate::model::ModelConfig) -> Self {
        FastConfig::from(model)
    }
}

/// Tensor names read by [`FastDecoder::from_tensors`] (candle `Linear` layout `[out, in]`).
pub mod names {
    pub const TOK_EMB: &str = "tok_emb.weight";
    /// `[window_bins, dim]`, only with `window_bins > 0`.
    pub const WIN_EMB: &str = "win_emb.weight";
    /// `[grid_bins, dim]`, only with `grid_bins > 0`.
    pub const GRID_HEAD: &str = "grid_head.weight";
    pub const NORM: &str = "norm.weight";
    pub const LM_HEAD: &str = "lm_head.weight";

    /// `layers.{i}.{suffix}` with suffix one of `attn_norm.weight`, `attn.qkv.weight`,
    /// `attn.out.weight`, `ff_norm.weight`, `ff.w1.weight`, `ff.w3.weight`, `ff.w2.weight`.
    pub fn layer(i: usize, suffix: &str) -> String {
        format!("layers.{i}.{suffix}")
    }

    /// `xattn.{j}.{suffix}` (Staria's cross-attention site `j`) with suffix one of
    /// `norm.weight` `[dim]`, `q.weight` `[dim, dim]`, `kv.weight` `[2 * dim, latent_dim]`
    /// (rows: k, v), `out.weight` `[dim, dim]`, `attn_gate` (`[1]`, `[]` or `[dim]`),
    /// `ff_norm.weight`, `ff.w1.weight` / `ff.w3.weight` `[hidden, dim]`, `ff.w2.weight`
    /// `[dim, hidden]`, `ff_gate`.
    pub fn cross(j: usize, suffix: &str) -> String {
        format!("xattn.{j}.{suffix}")
    }
}

struct Layer {
    attn_norm: Vec<f32>,
    qkv: Matrix,
    out: Matrix,
    ff_norm: Vec<f32>,
    /// w1 rows then w3 rows: one mat-vec gives gate and up.
    w13: Matrix,
    w2: Matrix,
}

/// One Staria cross-attention site with its per-prompt latent keys and values.
struct CrossSite {
    norm: Vec<f32>,
    q: Matrix,
    /// k rows then v rows.
    kv: Matrix,
    out: Matrix,
    /// `tanh(attn_gate)`, one value per channel.
    attn_gate: Vec<f32>,
    ff_norm: Vec<f32>,
    w13: Matrix,
    w2: Matrix,
    ff_gate: Vec<f32>,
    /// Blocked keys (see `kernels::kblock_index`), `[head][blocked(max_latents) * head_dim]`.
    kt: Aligned<f32>,
    /// `[head][max_latents][head_dim]`.
    v_cache: Aligned<f32>,
}

/// Immutable model state.
struct Weights {
    tok_emb: Vec<f32>,
    /// Window-position embedding `[window_bins, dim]`; empty without that input.
    win_emb: Vec<f32>,
    layers: Vec<Layer>,
    cross: Vec<CrossSite>,
    norm: Vec<f32>,
    lm_head: Matrix,
    /// Beat-grid head `[grid_bins, dim]` (f32: it is small); empty without one.
    grid_head: Vec<f32>,
    /// `[max_seq_len][head_dim / 2]`, as the candle model builds them (f32 angle, f32 cos/sin).
    rope_cos: Vec<f32>,
    rope_sin: Vec<f32>,
}

/// Self-attention keys (blocked, `[layer][head][blocked(max_seq_len) * head_dim]`, see
/// `kernels::kblock_index`) and values (`[layer][head][max_seq_len][head_dim]`). f32 for the
/// exact format; f16 (half the memory traffic of long contexts) for the others.
enum KvStore {
    F32 { kt: Aligned<f32>, v: Aligned<f32> },
    F16 { kt: Aligned<u16>, v: Aligned<u16> },
}

impl KvStore {
    fn new(format: WeightFormat, k_len: usize, v_len: usize) -> Self {
        match format {
            WeightFormat::F32 => KvStore::F32 {
                kt: Aligned::zeroed(k_len),
                v: Aligned::zeroed(v_len),
            },
            WeightFormat::F16 | WeightFormat::Q8 => KvStore::F16 {
                kt: Aligned::zeroed(k_len),
                v: Aligned::zeroed(v_len),
            },
        }
    }
}

/// Most tokens [`FastDecoder::prefill`] runs through the blocks at once. Each weight row is
/// loaded once per chunk and used for all its tokens (`Matrix::matmul`), and each f16 key / value
/// tile is converted once per chunk; the activation buffers hold a chunk, which costs
/// `PREFILL_CHUNK x` (about `8 * dim + 3 * hidden + max_seq_len`) floats.
pub const PREFILL_CHUNK: usize = 32;

/// Preallocated mutable state: caches and activations. The activation buffers hold one row per
/// token of a chunk (`[PREFILL_CHUNK][..]`); a decode step uses row 0.
struct State {
    /// The self-attention KV cache.
    kv: KvStore,
    /// One key or value tile converted from f16 `[head_dim * 16]`.
    kv_tile: Aligned<f32>,
    /// One head's partial output `[head_dim]`.
    head_tmp: Aligned<f32>,
    pos: usize,
    n_latents: usize,
    /// Residual streams `[chunk][dim]`.
    x: Aligned<f32>,
    /// Normalised inputs of a mat-mul `[chunk][padded(dim)]` (padding stays zero).
    xn: Aligned<f32>,
    /// QKV outputs, or q of a cross site `[chunk][3 * dim]`.
    qkv: Aligned<f32>,
    /// Concatenated head outputs `[chunk][padded(dim)]` (padding stays zero).
    att: Aligned<f32>,
    /// Block outputs before the residual add `[chunk][dim]`.
    tmp: Aligned<f32>,
    /// Gate and up of a SwiGLU `[chunk][ffh_stride = 2 * max_hidden]`.
    ffh: Aligned<f32>,
    ffh_stride: usize,
    /// SwiGLU products `[chunk][ffg_stride = padded(max_hidden)]`.
    ffg: Aligned<f32>,
    ffg_stride: usize,
    /// Attention probabilities `[chunk][scores_stride = max(max_seq_len, max_latents)]`.
    scores: Aligned<f32>,
    scores_stride: usize,
    /// One latent, padded, for `set_latents` `[padded(latent_dim)]`.
    latent: Aligned<f32>,
    /// K and V of one latent for `set_latents` `[2 * dim]`.
    kv_proj: Aligned<f32>,
    logits: Aligned<f32>,
    /// Beat-grid scores of the last position `[grid_bins]`.
    grid_scores: Vec<f32>,
    qs: QScratch,
}

/// The fast single-token decoder. See the module documentation.
pub struct FastDecoder {
    cfg: FastConfig,
    format: WeightFormat,
    isa: Isa,
    head_dim: usize,
    w: Weights,
    s: State,
    /// The window position of the cached tokens, for a model that reads it; set by
    /// [`set_tokenizer`](Self::set_tokenizer); a model with a grid head keeps one too.
    clock: Option<WindowClock>,
    /// The grid head's geometry from the tokenizer; `None` without a head or a tokenizer.
    grid_rows: Option<GridRows>,
    /// The tempo grid of the piece being decoded (`set_grid`); `None`: unknown.
    grid: Option<BeatGrid>,
    /// `[onsets]` grid row of the last position (allocated in `set_tokenizer`).
    grid_row: Vec<u32>,
}

/// The most run-time state (KV cache and RoPE tables, f32) a config may ask for: sizes the
/// weights do not imply (`max_seq_len`, `max_latents`) are bounded here instead.
const MAX_STATE_BYTES: u128 = 16 << 30;

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
    // What the weights do not imply: the KV cache (keys and values of every layer and position,
    // worst case f32), the cross-attention caches and the RoPE tables.
    let (layers, seq) = (cfg.n_layers as u128, cfg.max_seq_len as u128);
    let state_bytes = 4
        * (2 * layers * d as u128 * seq
            + 2 * cfg.n_cross_sites() as u128 * d as u128 * cfg.max_latents as u128
            + seq * d as u128);
    if state_bytes > MAX_STATE_BYTES {
        return Err(Error::Config(format!(
            "fast decoder: the model config (config.json: max_seq_len = {}, max_latents = {}, \
             n_layers = {}, dim = {d}) asks for {} MiB of run-time state, more than the {} MiB \
             allowed",
            cfg.max_seq_len,
            cfg.max_latents,
            cfg.n_layers,
            state_bytes >> 20,
            MAX_STATE_BYTES >> 20
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
            kv_tile: Aligned::zeroed(hd * kernels::KB),
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

    /// Builds from a safetensors file; a missing tensor is a `Checkpoint` error naming the file
    /// and the tensor.
    pub fn from_safetensors(cfg: &FastConfig, format: WeightFormat, path: &Path) -> Result<Self> {
        let tensors = candle_core::safetensors::load(path, &candle_core::Device::Cpu)
            .map_err(|e| Error::checkpoint(path, e.to_string()))?;
        Self::from_tensors(cfg, format, |name| {
            tensors
                .get(name)
                .cloned()
                .ok_or_else(|| Error::checkpoint(path, format!("missing tensor {name}")))
        })
    }

    pub fn config(&self) -> &FastConfig {
        &self.cfg
    }

    pub fn format(&self) -> WeightFormat {
        self.format
    }

    /// The instruction set the kernels use.
    pub fn isa(&self) -> Isa {
        self.isa
    }

    /// Restricts the kernels to at most `cap` (e.g. `Isa::SCALAR` to test the portable path).
    pub fn limit_isa(&mut self, cap: Isa) {
        self.isa = self.isa.min(cap);
    }

    /// Bytes of packed projection weights (what one decode step streams).
    pub fn weight_bytes(&self) -> usize {
        let w = &self.w;
        let layers: usize = w
            .layers
            .iter()
            .map(|l| l.qkv.bytes() + l.out.bytes() + l.w13.bytes() + l.w2.bytes())
            .sum();
        let cross: usize = w
            .cross
            .iter()
            .map(|c| c.q.bytes() + c.kv.bytes() + c.out.bytes() + c.w13.bytes() + c.w2.bytes())
            .sum();
        layers + cross + w.lm_head.bytes()
    }

    /// Tokens in the KV cache.
    pub fn position(&self) -> usize {
        self.s.pos
    }

    pub fn max_seq_len(&self) -> usize {
        self.cfg.max_seq_len
    }

    /// Empties the KV cache (the latents stay set).
    pub fn reset(&mut self) {
        self.s.pos = 0;
    }

    /// Drops cached positions `>= len` (no-op when `len >= position()`).
    pub fn truncate(&mut self, len: usize) {
        self.s.pos = self.s.pos.min(len);
    }

    /// The logits of the last `step` / `prefill`.
    pub fn logits(&self) -> &[f32] {
        &self.s.logits
    }

    /// Number of latents the cross-attention sites attend to.
    pub fn n_latents(&self) -> usize {
        self.s.n_latents
    }

    fn check_tokens(&self, tokens: &[u32]) -> Result<()> {
        crate::layers::check_ids("fast decoder", tokens, self.cfg.vocab_size)?;
        if self.s.pos + tokens.len() > self.cfg.max_seq_len {
            return Err(Error::ContextFull {
                cached: self.s.pos,
                new: tokens.len(),
                max: self.cfg.max_seq_len,
            });
        }
        Ok(())
    }

    /// Gives the decoder its tokenizer, which a model with a window-position input needs
    /// (`crate::window`) and a beat-grid head to place onsets (`crate::grid`); a no-op for one
    /// with neither. Allocates the clock and the grid row (once).
    pub fn set_tokenizer(&mut self, tokenizer: &crate::tokenizer::Tokenizer) {
        let bins = WindowBins::new(self.cfg.window_bins, self.cfg.window_bin_ms);
        self.clock = WindowClock::with_bins(
            tokenizer,
            bins,
            self.cfg.grid_bins > 0,
            self.cfg.max_seq_len,
        );
        self.grid_rows = GridRows::new(self.cfg.grid_bins, tokenizer);
        self.grid_row = vec![0; self.grid_rows.map_or(0, |g| g.onsets)];
    }

    /// The tempo grid of the pieces decoded from now on (`None`: tempo unknown); only a model
    /// with a beat-grid head reads it. Takes effect at the next `step`/`prefill`.
    pub fn set_grid(&mut self, grid: Option<BeatGrid>) {
        self.grid = grid;
    }

    /// Appends one token and returns the next-token logits `[vocab_size]`. Never allocates
    /// (except to build an error). On error nothing changes.
    pub fn step(&mut self, token: u32) -> Result<&[f32]> {
        self.prefill(std::slice::from_ref(&token))
    }

    /// Appends several tokens and returns the logits after the last one (the LM head runs only
    /// for that one). Runs them in chunks of [`PREFILL_CHUNK`] tokens with bit-for-bit the
    /// results (logits, KV cache) of one [`step`](Self::step) per token, several times faster.
    /// Never allocates; on error (empty input, a bad id, no room) nothing changes.
    pub fn prefill(&mut self, tokens: &[u32]) -> Result<&[f32]> {
        if tokens.is_empty() {
            return Err(Error::Config(
                "fast decoder: prefill needs at least one token".into(),
            ));
        }
        self.check_tokens(tokens)?;
        match &mut self.clock {
            Some(clock) => {
                clock.feed(self.s.pos, tokens)?;
            }
            None if self.cfg.window_bins > 0 => {
                return Err(window::missing_clock("fast decoder", self.cfg.window_bins));
            }
            None => {}
        }
        let bins: &[u32] = match &self.clock {
            Some(clock) if self.cfg.window_bins > 0 => clock.fed_bins(tokens.len()),
            _ => &[],
        };
        for (k, chunk) in tokens.chunks(PREFILL_CHUNK).enumerate() {
            let chunk_bins = bins
                .get(k * PREFILL_CHUNK..k * PREFILL_CHUNK + chunk.len())
                .unwrap_or(&[]);
            forward_chunk(
                &self.w,
                &mut self.s,
                &self.cfg,
                self.head_dim,
                self.isa,
                chunk,
                chunk_bins,
            );
        }
        let last = (tokens.len() - 1) % PREFILL_CHUNK;
        compute_logits(&self.w, &mut self.s, &self.cfg, self.isa, last);
        if let (Some(clock), Some(rows), Some(_)) = (&self.clock, self.grid_rows, self.grid) {
            rows.fill(
                self.grid,
                grid::window_of(clock.state()),
                &mut self.grid_row,
            );
            add_grid_scores(
                &self.w,
                &mut self.s,
                self.cfg.dim,
                rows.first_onset,
                &self.grid_row,
            );
        }
        Ok(&self.s.logits)
    }

    /// Sets the latent vectors the Staria cross-attention sites attend to (`n` vectors of
    /// `latent_dim` values, row-major) and precomputes every site's keys and values. Does not
    /// allocate. `n == 0` clears them. Errors on a plain decoder, on `n > max_latents` or a
    /// length mismatch.
    pub fn set_latents(&mut self, latents: &[f32], n: usize) -> Result<()> {
        let ld = self.cfg.latent_dim();
        if self.w.cross.is_empty() {
            return Err(Error::Config(
                "fast decoder: this model has no cross-attention sites".into(),
            ));
        }
        if n > self.cfg.max_latents {
            return Err(Error::Config(format!(
                "fast decoder: {n} latents exceed max_latents {}",
                self.cfg.max_latents
            )));
        }
        if latents.len() != n * ld {
            return Err(Error::Config(format!(
                "fast decoder: {} latent values given, expected {n} x latent_dim {ld}",
                latents.len()
            )));
        }
        if let Some(i) = latents.iter().position(|x| !x.is_finite()) {
            return Err(Error::Config(format!(
                "fast decoder: latent value {i} is not finite"
            )));
        }
        let (d, h, hd, m) = (
            self.cfg.dim,
            self.cfg.n_heads,
            self.head_dim,
            self.cfg.max_latents,
        );
        let mk = blocked(m);
        let s = &mut self.s;
        for site in &mut self.w.cross {
            for (t, lat) in latents.chunks_exact(ld.max(1)).take(n).enumerate() {
                s.latent[..ld].copy_from_slice(lat);
                site.kv
                    .matvec(self.isa, &s.latent, &mut s.kv_proj, &mut s.qs);
                let (kp, vp) = s.kv_proj.split_at(d);
                for hh in 0..h {
                    let kb = &mut site.kt[hh * hd * mk..(hh + 1) * hd * mk];
                    for j in 0..hd {
                        kb[kernels::kblock_index(hd, t, j)] = kp[hh * hd + j];
                    }
                    let row = (hh * m + t) * hd;
                    site.v_cache[row..row + hd].copy_from_slice(&vp[hh * hd..(hh + 1) * hd]);
                }
            }
        }
        s.n_latents = n;
        Ok(())
    }

    /// [`set_latents`](Self::set_latents) from a tensor `[n, latent_dim]` or `[1, n, latent_dim]`
    /// (allocates to read the tensor; call once per prompt).
    pub fn set_latents_tensor(&mut self, latents: &Tensor) -> Result<()> {
        let ld = self.cfg.latent_dim();
        let n = match latents.dims() {
            [n, l] if *l == ld => *n,
            [1, n, l] if *l == ld => *n,
            d => {
                return Err(Error::Config(format!(
                    "fast decoder: latents have shape {d:?}, expected [n, {ld}] or [1, n, {ld}]"
                )));
            }
        };
        let v = latents
            .to_dtype(DType::F32)?
            .flatten_all()?
            .to_vec1::<f32>()?;
        self.set_latents(&v, n)
    }
}

/// Rotate-half RoPE on one head vector with the tables' row for its position.
#[inline]
fn rope(x: &mut [f32], cos: &[f32], sin: &[f32]) {
    let half = cos.len();
    let (a, b) = x.split_at_mut(half);
    for i in 0..half {
        let (x1, x2) = (a[i], b[i]);
        a[i] = x1 * cos[i] - x2 * sin[i];
        b[i] = x2 * cos[i] + x1 * sin[i];
    }
}

/// Runs the chunk `tokens` (1 to [`PREFILL_CHUNK`] ids) through every block at positions
/// `s.pos ..` and advances it; leaves the final residual streams in `s.x` (row `i` for token
/// `i`). Every token gets bit-for-bit what it would get alone: the mat-muls reproduce the
/// mat-vec per token and the attention of a query only reads positions up to its own. The caller
/// has checked the ids and the room. `bins` holds the tokens' window-position bins (one per
/// token) for a model with that input, and is empty otherwise.
fn forward_chunk(
    w: &Weights,
    s: &mut State,
    cfg: &FastConfig,
    hd: usize,
    isa: Isa,
    tokens: &[u32],
    bins: &[u32],
) {
    let n = tokens.len();
    debug_assert!((1..=PREFILL_CHUNK).contains(&n));
    debug_assert!(bins.len() == if w.win_emb.is_empty() { 0 } else { n });
    let (d, pd) = (cfg.dim, padded(cfg.dim));
    let eps = cfg.norm_eps as f32;
    for (x, &t) in s.x.chunks_exact_mut(d).zip(tokens) {
        let t = t as usize;
        x.copy_from_slice(&w.tok_emb[t * d..(t + 1) * d]);
    }
    // Same order of additions as the candle model: token row, then window row.
    for (x, &b) in s.x.chunks_exact_mut(d).zip(bins) {
        let b = b as usize;
        for (xv, wv) in x.iter_mut().zip(&w.win_emb[b * d..(b + 1) * d]) {
            *xv += wv;
        }
    }

    for (li, layer) in w.layers.iter().enumerate() {
        // Attention.
        norm_rows(isa, s, &layer.attn_norm, eps, d, n);
        layer
            .qkv
            .matmul(isa, &s.xn, pd, &mut s.qkv, 3 * d, n, &mut s.qs);
        self_attention(w, s, cfg, hd, isa, li, n);
        layer
            .out
            .matmul(isa, &s.att, pd, &mut s.tmp, d, n, &mut s.qs);
        kernels::add_assign(isa, &mut s.x[..n * d], &s.tmp[..n * d]);

        // Feed-forward.
        norm_rows(isa, s, &layer.ff_norm, eps, d, n);
        swiglu_residual(isa, &layer.w13, &layer.w2, None, s, d, n);

        // Site j follows layer (j+1)*cross_every - 1 (`StariaConfig::site_after`).
        if cfg.cross_every > 0
            && (li + 1).is_multiple_of(cfg.cross_every)
            && let Some(site) = w.cross.get((li + 1) / cfg.cross_every - 1)
        {
            cross_site(site, s, cfg, hd, isa, n);
        }
    }
    s.pos += n;
}

/// `xn[i] = layer_norm(x[i]) * w` for the chunk's first `n` rows.
fn norm_rows(isa: Isa, s: &mut State, w: &[f32], eps: f32, d: usize, n: usize) {
    let pd = padded(d);
    for (x, xn) in s.x.chunks_exact(d).zip(s.xn.chunks_exact_mut(pd)).take(n) {
        kernels::layer_norm(isa, x, w, eps, &mut xn[..d]);
    }
}

/// Self-attention of layer `li` for the chunk's `n` tokens (QKV in `s.qkv`): RoPE on queries and
/// keys, all keys and values appended to the cache, then each query attends causally to the
/// cache up to its own position; head outputs go to `s.att`.
#[allow(clippy::too_many_arguments)]
fn self_attention(
    w: &Weights,
    s: &mut State,
    cfg: &FastConfig,
    hd: usize,
    isa: Isa,
    li: usize,
    n: usize,
) {
    let (d, pd, h) = (cfg.dim, padded(cfg.dim), cfg.n_heads);
    let cap = cfg.max_seq_len;
    let kcap = blocked(cap);
    let half = hd / 2;
    let pos = s.pos;
    let scale = 1.0 / (hd as f32).sqrt();
    let ss = s.scores_stride;
    let State {
        kv,
        kv_tile,
        head_tmp,
        qkv,
        att,
        scores,
        ..
    } = s;

    for (i, row) in qkv.chunks_exact_mut(3 * d).take(n).enumerate() {
        let p = pos + i;
        let (cos, sin) = (
            &w.rope_cos[p * half..(p + 1) * half],
            &w.rope_sin[p * half..(p + 1) * half],
        );
        let (q, rest) = row.split_at_mut(d);
        let (k, v) = rest.split_at_mut(d);
        for hh in 0..h {
            rope(&mut q[hh * hd..(hh + 1) * hd], cos, sin);
            rope(&mut k[hh * hd..(hh + 1) * hd], cos, sin);
            let kbase = (li * h + hh) * hd * kcap;
            let vrow = (li * h + hh) * hd * cap + p * hd;
            let (kh, vh) = (&k[hh * hd..(hh + 1) * hd], &v[hh * hd..(hh + 1) * hd]);
            match kv {
                KvStore::F32 { kt, v: vc } => {
                    for (j, x) in kh.iter().enumerate() {
                        kt[kbase + kernels::kblock_index(hd, p, j)] = *x;
                    }
                    vc[vrow..vrow + hd].copy_from_slice(vh);
                }
                KvStore::F16 { kt, v: vc } => {
                    for (j, x) in kh.iter().enumerate() {
                        kt[kbase + kernels::kblock_index(hd, p, j)] = kernels::f32_to_f16_sat(*x);
                    }
                    for (o, x) in vc[vrow..vrow + hd].iter_mut().zip(vh) {
                        *o = kernels::f32_to_f16_sat(*x);
                    }
                }
            }
        }
    }

    // Query i sees positions 0 ..= pos + i; `first(b)` is the first query that sees key block b.
    let end = pos + n;
    let first = |b: usize| (b * kernels::KB).saturating_sub(pos);
    for hh in 0..h {
        let kbase = (li * h + hh) * hd * kcap;
        let vbase = (li * h + hh) * hd * cap;
        let q = |i: usize| i * 3 * d + hh * hd..i * 3 * d + (hh + 1) * hd;
        let o = |i: usize| i * pd + hh * hd..i * pd + (hh + 1) * hd;
        match kv {
            KvStore::F32 { kt, v: vc } => {
                let kb = &kt[kbase..kbase + hd * kcap];
                for i in 0..n {
                    let sc = &mut scores[i * ss..i * ss + pos + i + 1];
                    kernels::scores_blocked(isa, &qkv[q(i)], kb, scale, sc);
                    kernels::softmax(isa, sc);
                    let vs = &vc[vbase..vbase + sc.len() * hd];
                    kernels::weighted_sum(isa, sc, vs, &mut att[o(i)]);
                }
            }
            KvStore::F16 { kt, v: vc } => {
                // Tile by tile: 16 positions converted to f32 in L1 once for the whole chunk,
                // then the f32 kernels for every query that sees them, in the order a single
                // query's step uses.
                let tile = &mut kv_tile[..hd * kernels::KB];
                let kb = &kt[kbase..kbase + hd * kcap];
                for (b, blk) in kb.chunks_exact(hd * kernels::KB).enumerate() {
                    if b * kernels::KB >= end {
                        break;
                    }
                    kernels::f16_to_f32(isa, blk, tile);
                    for i in first(b)..n {
                        let lo = i * ss + b * kernels::KB;
                        let hi = i * ss + (pos + i + 1).min((b + 1) * kernels::KB);
                        kernels::scores_blocked(isa, &qkv[q(i)], tile, scale, &mut scores[lo..hi]);
                    }
                }
                for i in 0..n {
                    kernels::softmax(isa, &mut scores[i * ss..i * ss + pos + i + 1]);
                    att[o(i)].fill(0.0);
                }
                let vs = &vc[vbase..vbase + end * hd];
                for (b, vblk) in vs.chunks(kernels::KB * hd).enumerate() {
                    let t = &mut tile[..vblk.len()];
                    kernels::f16_to_f32(isa, vblk, t);
                    for i in first(b)..n {
                        let lo = i * ss + b * kernels::KB;
                        let hi = i * ss + (pos + i + 1).min((b + 1) * kernels::KB);
                        kernels::weighted_sum(isa, &scores[lo..hi], t, head_tmp);
                        kernels::add_assign(isa, &mut att[o(i)], head_tmp);
                    }
                }
            }
        }
    }
}

/// `x += gate * w2(silu(w1 xn) * w3 xn)` (`gate = None`: 1) for the chunk's first `n` rows.
fn swiglu_residual(
    isa: Isa,
    w13: &Matrix,
    w2: &Matrix,
    gate: Option<&[f32]>,
    s: &mut State,
    d: usize,
    n: usize,
) {
    let hidden = w2.cols();
    let (hs, gs) = (s.ffh_stride, s.ffg_stride);
    w13.matmul(isa, &s.xn, padded(d), &mut s.ffh, hs, n, &mut s.qs);
    for (h, g) in s
        .ffh
        .chunks_exact(hs)
        .zip(s.ffg.chunks_exact_mut(gs))
        .take(n)
    {
        let (a, b) = h[..2 * hidden].split_at(hidden);
        let (g, pad) = g[..padded(hidden)].split_at_mut(hidden);
        kernels::swiglu(isa, a, b, g);
        // The padding feeds the mat-mul too: zero it (a wider SwiGLU may have written there, and
        // a q8 block's scale depends on all its 32 values).
        pad.fill(0.0);
    }
    w2.matmul(isa, &s.ffg, gs, &mut s.tmp, d, n, &mut s.qs);
    match gate {
        None => kernels::add_assign(isa, &mut s.x[..n * d], &s.tmp[..n * d]),
        Some(g) => gated_add(&mut s.x, &s.tmp, g, n),
    }
}

/// `x[i] += g * tmp[i]` for the first `n` rows of `g.len()` values.
fn gated_add(x: &mut [f32], tmp: &[f32], g: &[f32], n: usize) {
    let d = g.len();
    for (x, t) in x.chunks_exact_mut(d).zip(tmp.chunks_exact(d)).take(n) {
        for ((x, t), g) in x.iter_mut().zip(t).zip(g) {
            *x += g * t;
        }
    }
}

/// One Staria cross-attention site (gated attention to the latents, then gated SwiGLU adapter)
/// for the chunk's first `n` rows; skipped when no latents are set.
fn cross_site(site: &CrossSite, s: &mut State, cfg: &FastConfig, hd: usize, isa: Isa, n: usize) {
    let (d, pd) = (cfg.dim, padded(cfg.dim));
    let m = cfg.max_latents;
    let eps = cfg.norm_eps as f32;
    let nl = s.n_latents;
    if nl == 0 {
        // No snippets: the site is skipped entirely, as in `Staria::forward_cached`.
        return;
    }
    norm_rows(isa, s, &site.norm, eps, d, n);
    site.q
        .matmul(isa, &s.xn, pd, &mut s.qkv, 3 * d, n, &mut s.qs);
    let scale = 1.0 / (hd as f32).sqrt();
    let mk = blocked(m);
    let ss = s.scores_stride;
    for i in 0..n {
        for hh in 0..cfg.n_heads {
            let scores = &mut s.scores[i * ss..i * ss + nl];
            let q = &s.qkv[i * 3 * d + hh * hd..i * 3 * d + (hh + 1) * hd];
            let kt = &site.kt[hh * hd * mk..(hh + 1) * hd * mk];
            kernels::scores_blocked(isa, q, kt, scale, scores);
            kernels::softmax(isa, scores);
            let v = &site.v_cache[hh * m * hd..(hh * m + nl) * hd];
            let out = &mut s.att[i * pd + hh * hd..i * pd + (hh + 1) * hd];
            kernels::weighted_sum(isa, scores, v, out);
        }
    }
    site.out
        .matmul(isa, &s.att, pd, &mut s.tmp, d, n, &mut s.qs);
    gated_add(&mut s.x, &s.tmp, &site.attn_gate, n);
    norm_rows(isa, s, &site.ff_norm, eps, d, n);
    swiglu_residual(isa, &site.w13, &site.w2, Some(&site.ff_gate), s, d, n);
}

/// The beat-grid head on the last normed state (`compute_logits` left it in `xn`): onset logits
/// get `xn · grid_head[row[k]]` (`crate::grid`).
fn add_grid_scores(w: &Weights, s: &mut State, dim: usize, first_onset: u32, row: &[u32]) {
    let xn = &s.xn[..dim];
    for (score, head_row) in s.grid_scores.iter_mut().zip(w.grid_head.chunks_exact(dim)) {
        *score = head_row.iter().zip(xn).map(|(a, b)| a * b).sum();
    }
    grid::add_to_logits(&mut s.logits, first_onset, row, &s.grid_scores);
}

/// Final norm and LM head on residual stream `row` of the last chunk.
fn compute_logits(w: &Weights, s: &mut State, cfg: &FastConfig, isa: Isa, row: usize) {
    let d = cfg.dim;
    let x = &s.x[row * d..(row + 1) * d];
    kernels::layer_norm(isa, x, &w.norm, cfg.norm_eps as f32, &mut s.xn[..d]);
    w.lm_head.matvec(isa, &s.xn, &mut s.logits, &mut s.qs);
}
