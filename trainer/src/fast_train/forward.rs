//! The forward pass and the loss, saving what the backward needs in [`Buffers`].
//!
//! Same function as `staria_models::Decoder::forward` followed by `batch::masked_nll`: token
//! embedding; per block `x += out(attend(rope(q), rope(k), v))` on `attn_norm(x)` with a fused
//! QKV projection, then `x += w2(silu(w1 h) * w3 h)` on `h = ff_norm(x)`; final LayerNorm; LM
//! head; mean over masked positions of `-log_softmax(logits)[target]`. LayerNorm has no bias and
//! subtracts the mean; RoPE rotates halves; attention is causal with scale `1/sqrt(head_dim)`.
//!
//! Attention runs one task per sequence (rayon), heads in turn, in blocks of
//! [`ATTN_BLOCK`] query rows: block `[r0, r1)` only computes scores against keys `0..r1`, so
//! the upper triangle beyond the diagonal block is never computed (about 55% of the full
//! `seq x seq` work at seq 640).

use rayon::prelude::*;
use staria_models::grid;

use super::Shape;
use super::buffers::{Buffers, LayerActs};
use super::matmul::{Threads, View, ViewMut, matmul};
use super::params::{LayerParams, Params};

/// Query rows per attention block.
pub(crate) const ATTN_BLOCK: usize = 64;

/// Rows per rayon task in the row-wise elementwise loops.
pub(crate) const ROW_TASK: usize = 32;

/// Rotate-half RoPE tables, `[positions, head_dim / 2]`, computed as `layers::Rope::new` does:
/// f32 `inv_freq[i] = 1 / theta^(2i / head_dim)` (in f64, then rounded), f32 angle
/// `position * inv_freq[i]`, f32 cos and sin.
#[derive(Debug, Clone)]
pub(crate) struct RopeTables {
    pub half: usize,
    pub cos: Vec<f32>,
    pub sin: Vec<f32>,
}

impl RopeTables {
    pub(crate) fn new(head_dim: usize, positions: usize, theta: f64) -> Self {
        let (cos, sin) = staria_models::rope_tables(theta, head_dim, positions);
        Self {
            half: head_dim / 2,
            cos,
            sin,
        }
    }

    /// Rotates one head vector in place at `pos`; `inverse` applies the transpose (the
    /// backward of the rotation).
    #[inline]
    pub(crate) fn rotate(&self, x: &mut [f32], pos: usize, inverse: bool) {
        let half = self.half;
        let cos = &self.cos[pos * half..(pos + 1) * half];
        let sin = &self.sin[pos * half..(pos + 1) * half];
        let (x1, x2) = x.split_at_mut(half);
        for i in 0..half {
            let (a, b) = (x1[i], x2[i]);
            if inverse {
                x1[i] = a * cos[i] + b * sin[i];
                x2[i] = b * cos[i] - a * sin[i];
            } else {
                // candle: x * cos_full + cat(-x2, x1) * sin_full
                x1[i] = a * cos[i] + (-b) * sin[i];
                x2[i] = b * cos[i] + a * sin[i];
            }
        }
    }
}

/// LayerNorm without bias over rows of `dim`: writes the output, each row's mean and
/// 1 / sqrt(var + eps).
pub(crate) fn layer_norm(
    x: &[f32],
    weight: &[f32],
    eps: f32,
    out: &mut [f32],
    mean: &mut [f32],
    rstd: &mut [f32],
) {
    let dim = weight.len();
    out.par_chunks_mut(dim)
        .zip(x.par_chunks(dim))
        .zip(mean.par_iter_mut().zip(rstd.par_iter_mut()))
        .with_min_len(ROW_TASK)
        .for_each(|((y, x), (m, r))| {
            let mu = x.iter().sum::<f32>() / dim as f32;
            let var = x.iter().map(|v| (v - mu) * (v - mu)).sum::<f32>() / dim as f32;
            let inv = 1.0 / (var + eps).sqrt();
            for ((y, x), w) in y.iter_mut().zip(x).zip(weight) {
                *y = (x - mu) * inv * w;
            }
            *m = mu;
            *r = inv;
        });
}

/// `x @ w^T` for a weight stored `[out, in]`: `dst [rows, out]`.
pub(crate) fn linear(dst: &mut [f32], x: &[f32], w: &[f32], rows: usize, inp: usize, out: usize) {
    matmul(
        ViewMut::rows(&mut dst[..rows * out], rows, out),
        View::rows(&x[..rows * inp], rows, inp),
        View::rows(w, out, inp).t(),
        false,
        Threads::All,
    );
}

/// Causal softmax of one score row in place: `row` holds keys `0..r1` of query `i`
/// (`i < r1`); keys `0..=i` get the softmax of `scale * score`, the rest 0.
#[inline]
fn softmax_causal_row(row: &mut [f32], i: usize, scale: f32) {
    let (live, dead) = row.split_at_mut(i + 1);
    let mut max = f32::NEG_INFINITY;
    for v in live.iter_mut() {
        *v *= scale;
        max = max.max(*v);
    }
    let mut sum = 0f32;
    for v in live.iter_mut() {
        *v = (*v - max).exp();
        sum += *v;
    }
    for v in live.iter_mut() {
        *v /= sum;
    }
    dead.fill(0.0);
}

/// Causal self-attention of every sequence and head: `probs` and `attn_out` from `qkv`.
fn attention(s: &Shape, qkv: &[f32], probs: &mut [f32], attn_out: &mut [f32]) {
    let (t, d, hd) = (s.seq, s.dim, s.head_dim);
    let scale = 1.0 / (hd as f32).sqrt();
    let tt = t * t;
    attn_out[..s.rows() * d]
        .par_chunks_mut(t * d)
        .zip(probs[..s.batch * s.heads * tt].par_chunks_mut(s.heads * tt))
        .enumerate()
        .for_each(|(b, (out_b, probs_b))| {
            let qkv_b = &qkv[b * t * 3 * d..(b + 1) * t * 3 * d];
            for h in 0..s.heads {
                let p = &mut probs_b[h * tt..(h + 1) * tt];
                let q = &qkv_b[h * hd..];
                let k = &qkv_b[d + h * hd..];
                let v = &qkv_b[2 * d + h * hd..];
                for r0 in (0..t).step_by(ATTN_BLOCK) {
                    let r1 = (r0 + ATTN_BLOCK).min(t);
                    let n = r1 - r0;
                    matmul(
                        ViewMut::strided(&mut p[r0 * t..], n, r1, t),
                        View::strided(&q[r0 * 3 * d..], n, hd, 3 * d),
                        View::strided(k, r1, hd, 3 * d).t(),
                        false,
                        Threads::One,
                    );
                    for i in r0..r1 {
                        softmax_causal_row(&mut p[i * t..i * t + r1], i, scale);
                    }
                    matmul(
                        ViewMut::strided(&mut out_b[r0 * d + h * hd..], n, hd, d),
                        View::strided(&p[r0 * t..], n, r1, t),
                        View::strided(v, r1, hd, 3 * d),
                        false,
                        Threads::One,
                    );
                }
            }
        });
}

/// RoPE on the q and k parts of every `qkv` row (`inverse`: the backward rotation).
pub(crate) fn rope_qk(s: &Shape, rope: &RopeTables, qkv: &mut [f32], inverse: bool) {
    let (t, d, hd) = (s.seq, s.dim, s.head_dim);
    qkv[..s.rows() * 3 * d]
        .par_chunks_mut(3 * d)
        .enumerate()
        .with_min_len(ROW_TASK)
        .for_each(|(r, row)| {
            let pos = r % t;
            for head in row[..2 * d].chunks_mut(hd) {
                rope.rotate(head, pos, inverse);
            }
        });
}

/// SiLU as candle computes it: `x / (1 + exp(-x))`.
#[inline]
pub(crate) fn silu(x: f32) -> f32 {
    x / (1.0 + (-x).exp())
}

/// The SwiGLU product of the feed-forward halves: `hidden = silu(gate) * up`, row by row.
/// Shapes: `hidden`, `gate`, `up` [rows, ff_hidden] with `hidden`'s rows the ones computed.
pub(crate) fn swiglu(hidden: &mut [f32], gate: &[f32], up: &[f32], ff_hidden: usize) {
    hidden
        .par_chunks_mut(ff_hidden)
        .zip(gate.par_chunks(ff_hidden).zip(up.par_chunks(ff_hidden)))
        .with_min_len(ROW_TASK)
        .for_each(|(h, (g, u))| {
            for ((h, g), u) in h.iter_mut().zip(g).zip(u) {
                *h = silu(*g) * u;
            }
        });
}

fn block(s: &Shape, w: &LayerParams, a: &mut LayerActs, resid: &mut [f32], rope: &RopeTables) {
    let (rows, d, f) = (s.rows(), s.dim, s.ff_hidden);
    let n = rows * d;
    a.input[..n].copy_from_slice(&resid[..n]);
    layer_norm(
        &resid[..n],
        &w.attn_norm,
        s.eps,
        &mut a.attn_normed[..n],
        &mut a.attn_mean[..rows],
        &mut a.attn_rstd[..rows],
    );
    linear(&mut a.qkv, &a.attn_normed, &w.qkv, rows, d, 3 * d);
    rope_qk(s, rope, &mut a.qkv, false);
    attention(s, &a.qkv, &mut a.probs, &mut a.attn_out);
    // resid += attn_out @ out^T
    matmul(
        ViewMut::rows(&mut resid[..n], rows, d),
        View::rows(&a.attn_out[..n], rows, d),
        View::rows(&w.out, d, d).t(),
        true,
        Threads::All,
    );
    a.mid[..n].copy_from_slice(&resid[..n]);
    layer_norm(
        &resid[..n],
        &w.ff_norm,
        s.eps,
        &mut a.ff_normed[..n],
        &mut a.ff_mean[..rows],
        &mut a.ff_rstd[..rows],
    );
    linear(&mut a.gate, &a.ff_normed, &w.w1, rows, d, f);
    linear(&mut a.up, &a.ff_normed, &w.w3, rows, d, f);
    swiglu(&mut a.hidden[..rows * f], &a.gate, &a.up, f);
    // resid += hidden @ w2^T
    matmul(
        ViewMut::rows(&mut resid[..n], rows, d),
        View::rows(&a.hidden[..rows * f], rows, f),
        View::rows(&w.w2, d, f).t(),
        true,
        Threads::All,
    );
}

/// Forward through the LM head: fills every saved activation and `buf.logits` for the ids in
/// `buf.ids`.
pub(crate) fn forward(s: &Shape, p: &Params, buf: &mut Buffers, rope: &RopeTables) {
    forward_with(s, p, buf, rope, |_, _| {});
}

/// [`forward`] with `after_block(i, resid)` run on the residual stream (`[rows, dim]`) after
/// block `i`, as `Decoder::forward_with`'s hook: Staria's cross-attention sites go there.
pub(crate) fn forward_with(
    s: &Shape,
    p: &Params,
    buf: &mut Buffers,
    rope: &RopeTables,
    mut after_block: impl FnMut(usize, &mut [f32]),
) {
    let (rows, d) = (s.rows(), s.dim);
    let n = rows * d;
    for (r, id) in buf.ids[..rows].iter().enumerate() {
        let id = *id as usize;
        buf.resid[r * d..(r + 1) * d].copy_from_slice(&p.tok_emb[id * d..(id + 1) * d]);
    }
    if !p.win_emb.is_empty() {
        for (r, bin) in buf.win[..rows].iter().enumerate() {
            let bin = *bin as usize;
            for (x, w) in buf.resid[r * d..(r + 1) * d]
                .iter_mut()
                .zip(&p.win_emb[bin * d..(bin + 1) * d])
            {
                *x += w;
            }
        }
    }
    for (i, (w, a)) in p.layers.iter().zip(buf.layers.iter_mut()).enumerate() {
        block(s, w, a, &mut buf.resid, rope);
        after_block(i, &mut buf.resid[..n]);
    }
    buf.final_input[..n].copy_from_slice(&buf.resid[..n]);
    layer_norm(
        &buf.resid[..n],
        &p.norm,
        s.eps,
        &mut buf.final_normed[..n],
        &mut buf.final_mean[..rows],
        &mut buf.final_rstd[..rows],
    );
    linear(
        &mut buf.logits,
        &buf.final_normed,
        &p.lm_head,
        rows,
        d,
        s.vocab,
    );
    if let Some(g) = s.grid {
        // Beat-grid head: [rows, grid_bins] scores, each onset logit gets its phase's score.
        linear(
            &mut buf.grid_scores,
            &buf.final_normed,
            &p.grid_head,
            rows,
            d,
            g.bins,
        );
        buf.logits[..rows * s.vocab]
            .par_chunks_mut(s.vocab)
            .zip(buf.grid[..rows * g.onsets].par_chunks(g.onsets))
            .zip(buf.grid_scores[..rows * g.bins].par_chunks(g.bins))
            .with_min_len(ROW_TASK)
            .for_each(|((logits, row), scores)| {
                grid::add_to_logits(logits, g.first_onset as u32, row, scores);
            });
    }
}

/// Masked mean next-token loss from `buf.logits`; returns (summed loss, mask count). With
/// `grad`, replaces the logits by d(mean loss)/d(logits).
pub(crate) fn loss(s: &Shape, buf: &mut Buffers, grad: bool) -> (f64, f64) {
    let (rows, v) = (s.rows(), s.vocab);
    let count: f64 = buf.mask[..rows].iter().map(|&m| m as f64).sum();
    let inv_count = (1.0 / count.max(1.0)) as f32;
    buf.logits[..rows * v]
        .par_chunks_mut(v)
        .zip(buf.targets[..rows].par_iter())
        .zip(buf.mask[..rows].par_iter())
        .zip(buf.row_loss[..rows].par_iter_mut())
        .with_min_len(ROW_TASK / 4)
        .for_each(|(((logits, &target), &mask), row_loss)| {
            if mask == 0.0 {
                *row_loss = 0.0;
                if grad {
                    logits.fill(0.0);
                }
                return;
            }
            let max = logits.iter().fold(f32::NEG_INFINITY, |m, &x| m.max(x));
            let target = target as usize;
            let shifted_target = logits[target] - max;
            let sum: f32 = if grad {
                // Keep exp(x - max) for the gradient: one exp per logit.
                let mut sum = 0f32;
                for x in logits.iter_mut() {
                    *x = (*x - max).exp();
                    sum += *x;
                }
                sum
            } else {
                logits.iter().map(|&x| (x - max).exp()).sum()
            };
            *row_loss = (-(shifted_target - sum.ln()) * mask) as f64;
            if grad {
                let k = mask * inv_count;
                let scale = k / sum;
                for x in logits.iter_mut() {
                    *x *= scale;
                }
                logits[target] -= k;
            }
        });
    (buf.row_loss[..rows].iter().sum(), count)
}
