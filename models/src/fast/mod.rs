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
//!
//! ## Files
//! `config.rs` the settings ([`FastConfig`], [`WeightFormat`], tensor [`names`]); `load.rs`
//! building a decoder (checks, packing, allocation); `forward.rs` the step (blocks, attention,
//! cross sites, LM head); `kernels/` the numeric kernels (`mod.rs`: [`Isa`], dispatch and the
//! portable versions; `rows.rs`: the strided row views the mat-muls and the attention read and
//! write; `x86/mod.rs`: the AVX-512 / AVX2 mat-vecs; `x86/matmul.rs`: the multi-token
//! mat-muls); `matrix.rs` packed weight matrices; this file the decoder's state and its public
//! methods.

mod config;
mod forward;
// Crate-private: the kernels take an `Isa` and trust it; only `Isa::detect` (or capping a detected
// one) can make one, so a forged AVX-512 level on a CPU without it cannot happen.
pub(crate) mod kernels;
mod load;
mod matrix;
#[cfg(test)]
mod tests;

use candle_core::{DType, Tensor};

use crate::error::{Error, Result};
use crate::grid::{self, BeatGrid, GridRows};
use crate::window::{self, WindowBins, WindowClock};
pub use config::{FastConfig, WeightFormat, names};
use forward::{add_grid_scores, compute_logits, forward_chunk};
pub use kernels::Isa;

/// `n` rounded up to whole key blocks.
fn blocked(n: usize) -> usize {
    n.div_ceil(kernels::KEY_BLOCK) * kernels::KEY_BLOCK
}
use matrix::{Aligned, Matrix, QScratch};

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
    /// One key or value tile converted from f16 `[head_dim * KEY_BLOCK]`.
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
    /// Next-token logits of the last position `[vocab_size]`.
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

impl FastDecoder {
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
