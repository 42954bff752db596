//! The backward pass: gradients of the mean masked loss with respect to every parameter, from
//! what [`super::forward::forward`] and [`super::forward::loss`] (with `grad`) left in the
//! [`Buffers`].
//!
//! Weight gradients are written (not accumulated): every parameter's gradient is complete after
//! one call. The residual-stream gradient lives in `buf.resid`, walking down from the LM head to
//! the embedding. Attention mirrors the forward's blocking (one task per sequence, heads in turn,
//! query blocks of [`ATTN_BLOCK`] rows against keys `0..r1` only).

use rayon::prelude::*;

use super::Shape;
use super::buffers::{Buffers, LayerActs};
use super::forward::{ATTN_BLOCK, ROW_TASK, RopeTables, rope_qk};
use super::matmul::{Threads, View, ViewMut, matmul};
use super::params::{LayerParams, Params};

/// LayerNorm backward over rows of `dim`: `dx (+)= d LN(x) / dx . dy`; `dweight = sum over rows
/// of dy * xhat` (written; `None` for a frozen gain).
#[allow(clippy::too_many_arguments)]
pub(crate) fn layer_norm_backward(
    x: &[f32],
    mean: &[f32],
    rstd: &[f32],
    weight: &[f32],
    dy: &[f32],
    dweight: Option<&mut [f32]>,
    dx: &mut [f32],
    accumulate: bool,
) {
    let dim = weight.len();
    dx.par_chunks_mut(dim)
        .zip(x.par_chunks(dim).zip(dy.par_chunks(dim)))
        .zip(mean.par_iter().zip(rstd.par_iter()))
        .with_min_len(ROW_TASK)
        .for_each(|((dx, (x, dy)), (&mu, &inv))| {
            let (mut a, mut b) = (0f32, 0f32);
            for ((&x, &dy), &w) in x.iter().zip(dy).zip(weight) {
                let xhat = (x - mu) * inv;
                let dxhat = dy * w;
                a += dxhat;
                b += dxhat * xhat;
            }
            let (a, b) = (a / dim as f32, b / dim as f32);
            for (((dx, &x), &dy), &w) in dx.iter_mut().zip(x).zip(dy).zip(weight) {
                let xhat = (x - mu) * inv;
                let g = inv * (dy * w - a - xhat * b);
                if accumulate {
                    *dx += g;
                } else {
                    *dx = g;
                }
            }
        });
    let Some(dweight) = dweight else {
        return;
    };
    dweight.fill(0.0);
    for ((x, dy), (&mu, &inv)) in x.chunks(dim).zip(dy.chunks(dim)).zip(mean.iter().zip(rstd)) {
        for ((dw, &x), &dy) in dweight.iter_mut().zip(x).zip(dy) {
            *dw += dy * (x - mu) * inv;
        }
    }
}

/// `dweight [out, in] = dy^T @ x` for `y = x @ w^T`.
pub(crate) fn weight_grad(
    dweight: &mut [f32],
    dy: &[f32],
    x: &[f32],
    rows: usize,
    inp: usize,
    out: usize,
) {
    matmul(
        ViewMut::rows(dweight, out, inp),
        View::rows(&dy[..rows * out], rows, out).t(),
        View::rows(&x[..rows * inp], rows, inp),
        false,
        Threads::All,
    );
}

/// `dx [rows, in] (+)= dy @ w` for `y = x @ w^T`.
pub(crate) fn input_grad(
    dx: &mut [f32],
    dy: &[f32],
    w: &[f32],
    rows: usize,
    inp: usize,
    out: usize,
    accumulate: bool,
) {
    matmul(
        ViewMut::rows(&mut dx[..rows * inp], rows, inp),
        View::rows(&dy[..rows * out], rows, out),
        View::rows(w, out, inp),
        accumulate,
        Threads::All,
    );
}

/// Attention backward: `d_qkv` (q and k gradients with respect to the pre-RoPE values) from
/// `d_attn_out`.
fn attention_backward(
    s: &Shape,
    a: &LayerActs,
    d_attn_out: &[f32],
    d_qkv: &mut [f32],
    d_scores: &mut [f32],
    rope: &RopeTables,
) {
    let (t, d, hd) = (s.seq, s.dim, s.head_dim);
    let scale = 1.0 / (hd as f32).sqrt();
    let tt = t * t;
    d_qkv[..s.rows() * 3 * d]
        .par_chunks_mut(t * 3 * d)
        .zip(d_scores[..s.batch * s.heads * tt].par_chunks_mut(s.heads * tt))
        .enumerate()
        .for_each(|(b, (dqkv_b, ds_b))| {
            dqkv_b.fill(0.0);
            let qkv_b = &a.qkv[b * t * 3 * d..(b + 1) * t * 3 * d];
            let dy_b = &d_attn_out[b * t * d..(b + 1) * t * d];
            let probs_b = &a.probs[b * s.heads * tt..(b + 1) * s.heads * tt];
            for h in 0..s.heads {
                let p = &probs_b[h * tt..(h + 1) * tt];
                let ds = &mut ds_b[h * tt..(h + 1) * tt];
                let q = &qkv_b[h * hd..];
                let k = &qkv_b[d + h * hd..];
                let v = &qkv_b[2 * d + h * hd..];
                for r0 in (0..t).step_by(ATTN_BLOCK) {
                    let r1 = (r0 + ATTN_BLOCK).min(t);
                    let n = r1 - r0;
                    let dy = View::strided(&dy_b[r0 * d + h * hd..], n, hd, d);
                    let p_blk = View::strided(&p[r0 * t..], n, r1, t);
                    // dV[0..r1] += P^T dY
                    matmul(
                        ViewMut::strided(&mut dqkv_b[2 * d + h * hd..], r1, hd, 3 * d),
                        p_blk.t(),
                        dy,
                        true,
                        Threads::One,
                    );
                    // dP = dY V^T
                    matmul(
                        ViewMut::strided(&mut ds[r0 * t..], n, r1, t),
                        dy,
                        View::strided(v, r1, hd, 3 * d).t(),
                        false,
                        Threads::One,
                    );
                    // d(scaled scores) = P * (dP - rowsum(P * dP)), times scale for q.k.
                    for i in r0..r1 {
                        let p_row = &p[i * t..i * t + i + 1];
                        let (live, dead) = ds[i * t..i * t + r1].split_at_mut(i + 1);
                        let dot: f32 = p_row.iter().zip(live.iter()).map(|(p, g)| p * g).sum();
                        for (g, &p) in live.iter_mut().zip(p_row) {
                            *g = p * (*g - dot) * scale;
                        }
                        dead.fill(0.0);
                    }
                    let ds_blk = View::strided(&ds[r0 * t..], n, r1, t);
                    // dQ[r0..r1] = dS K[0..r1]
                    matmul(
                        ViewMut::strided(&mut dqkv_b[r0 * 3 * d + h * hd..], n, hd, 3 * d),
                        ds_blk,
                        View::strided(k, r1, hd, 3 * d),
                        false,
                        Threads::One,
                    );
                    // dK[0..r1] += dS^T Q[r0..r1]
                    matmul(
                        ViewMut::strided(&mut dqkv_b[d + h * hd..], r1, hd, 3 * d),
                        ds_blk.t(),
                        View::strided(&q[r0 * 3 * d..], n, hd, 3 * d),
                        true,
                        Threads::One,
                    );
                }
            }
        });
    rope_qk(s, rope, d_qkv, true);
}

/// One block's backward: on entry `resid` holds d loss / d(block output), on exit d loss /
/// d(block input). `train`: compute the block's weight gradients (a frozen block only passes
/// the gradient through).
#[allow(clippy::too_many_arguments)]
fn block_backward(
    s: &Shape,
    w: &LayerParams,
    g: &mut LayerParams,
    a: &LayerActs,
    resid: &mut [f32],
    scratch: &mut Scratch,
    rope: &RopeTables,
    train: bool,
) {
    let (rows, d, f) = (s.rows(), s.dim, s.ff_hidden);
    let n = rows * d;
    // MLP half: out = mid + hidden @ w2^T.
    input_grad(scratch.d_hidden, resid, &w.w2, rows, f, d, false);
    if train {
        weight_grad(&mut g.w2, resid, &a.hidden, rows, f, d);
    }
    scratch.d_gate[..rows * f]
        .par_chunks_mut(f)
        .zip(scratch.d_up[..rows * f].par_chunks_mut(f))
        .zip(scratch.d_hidden[..rows * f].par_chunks(f))
        .zip(
            a.gate[..rows * f]
                .par_chunks(f)
                .zip(a.up[..rows * f].par_chunks(f)),
        )
        .with_min_len(ROW_TASK)
        .for_each(|(((dg, du), dh), (gate, up))| {
            for i in 0..dh.len() {
                let x = gate[i];
                let sig = 1.0 / (1.0 + (-x).exp());
                let silu = x * sig;
                du[i] = dh[i] * silu;
                dg[i] = dh[i] * up[i] * sig * (1.0 + x * (1.0 - sig));
            }
        });
    if train {
        weight_grad(&mut g.w1, scratch.d_gate, &a.ff_normed, rows, d, f);
        weight_grad(&mut g.w3, scratch.d_up, &a.ff_normed, rows, d, f);
    }
    input_grad(scratch.d_normed, scratch.d_gate, &w.w1, rows, d, f, false);
    input_grad(scratch.d_normed, scratch.d_up, &w.w3, rows, d, f, true);
    layer_norm_backward(
        &a.mid[..n],
        &a.ff_mean[..rows],
        &a.ff_rstd[..rows],
        &w.ff_norm,
        &scratch.d_normed[..n],
        train.then_some(&mut g.ff_norm[..]),
        &mut resid[..n],
        true,
    );
    // Attention half: mid = input + attn_out @ out^T.
    input_grad(scratch.d_attn_out, resid, &w.out, rows, d, d, false);
    if train {
        weight_grad(&mut g.out, resid, &a.attn_out, rows, d, d);
    }
    attention_backward(
        s,
        a,
        scratch.d_attn_out,
        scratch.d_qkv,
        scratch.d_scores,
        rope,
    );
    if train {
        weight_grad(&mut g.qkv, scratch.d_qkv, &a.attn_normed, rows, d, 3 * d);
    }
    input_grad(
        scratch.d_normed,
        scratch.d_qkv,
        &w.qkv,
        rows,
        d,
        3 * d,
        false,
    );
    layer_norm_backward(
        &a.input[..n],
        &a.attn_mean[..rows],
        &a.attn_rstd[..rows],
        &w.attn_norm,
        &scratch.d_normed[..n],
        train.then_some(&mut g.attn_norm[..]),
        &mut resid[..n],
        true,
    );
}

/// The backward's scratch buffers, borrowed from [`Buffers`] apart from the saved activations.
struct Scratch<'a> {
    d_normed: &'a mut [f32],
    d_attn_out: &'a mut [f32],
    d_qkv: &'a mut [f32],
    d_scores: &'a mut [f32],
    d_hidden: &'a mut [f32],
    d_gate: &'a mut [f32],
    d_up: &'a mut [f32],
}

/// Which of the decoder's weight gradients a backward computes (frozen weights need none) and
/// how far down it goes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Trains {
    /// Per block: its weights train.
    pub layers: Vec<bool>,
    /// The token and window-position embeddings (the gradient reaches the bottom).
    pub embeddings: bool,
    pub norm: bool,
    pub lm_head: bool,
    pub grid_head: bool,
    /// The lowest block the gradient must pass through: blocks below it are skipped (nothing
    /// there trains and no hook below needs the gradient). 0 when the embeddings train.
    pub first_block: usize,
}

impl Trains {
    /// Every weight of a decoder of `n_layers` blocks.
    pub(crate) fn all(n_layers: usize) -> Self {
        Self {
            layers: vec![true; n_layers],
            embeddings: true,
            norm: true,
            lm_head: true,
            grid_head: true,
            first_block: 0,
        }
    }
}

/// Fills `grads` with d(mean masked loss)/d(parameter); `buf.logits` must hold d loss /
/// d logits (from `loss(.., grad = true)`).
pub(crate) fn backward(
    s: &Shape,
    p: &Params,
    grads: &mut Params,
    buf: &mut Buffers,
    rope: &RopeTables,
) {
    let trains = Trains::all(p.layers.len());
    backward_with(s, p, grads, buf, rope, &trains, |_, _| {});
}

/// [`backward`] for the weights `trains` selects (the others' gradients are left as they
/// were), with `before_block(i, resid)` run on the residual gradient before block `i`'s
/// backward: the backward of the hook that [`super::forward::forward_with`] ran after block
/// `i`, turning d loss / d(hook output) into d loss / d(hook input).
pub(crate) fn backward_with(
    s: &Shape,
    p: &Params,
    grads: &mut Params,
    buf: &mut Buffers,
    rope: &RopeTables,
    trains: &Trains,
    mut before_block: impl FnMut(usize, &mut [f32]),
) {
    let (rows, d, v) = (s.rows(), s.dim, s.vocab);
    let n = rows * d;
    let Buffers {
        layers,
        resid,
        final_input,
        final_mean,
        final_rstd,
        final_normed,
        logits,
        ids,
        win,
        grid,
        grid_scores,
        d_normed,
        d_attn_out,
        d_qkv,
        d_scores,
        d_hidden,
        d_gate,
        d_up,
        ..
    } = buf;
    if trains.lm_head {
        weight_grad(&mut grads.lm_head, logits, final_normed, rows, d, v);
    }
    input_grad(d_normed, logits, &p.lm_head, rows, d, v, false);
    match s.grid {
        Some(g) => {
            // d score[r, b] = sum of d logits of the onsets whose phase bin is b.
            grid_scores[..rows * g.bins]
                .par_chunks_mut(g.bins)
                .zip(grid[..rows * g.onsets].par_chunks(g.onsets))
                .zip(logits[..rows * v].par_chunks(v))
                .with_min_len(ROW_TASK)
                .for_each(|((d_scores, row), d_logits)| {
                    d_scores.fill(0.0);
                    let d_onsets = &d_logits[g.first_onset..g.first_onset + g.onsets];
                    for (&bin, &dl) in row.iter().zip(d_onsets) {
                        if let Some(ds) = d_scores.get_mut(bin as usize) {
                            *ds += dl;
                        }
                    }
                });
            if trains.grid_head {
                weight_grad(
                    &mut grads.grid_head,
                    grid_scores,
                    final_normed,
                    rows,
                    d,
                    g.bins,
                );
            }
            input_grad(d_normed, grid_scores, &p.grid_head, rows, d, g.bins, true);
        }
        None => grads.grid_head.fill(0.0),
    }
    layer_norm_backward(
        &final_input[..n],
        &final_mean[..rows],
        &final_rstd[..rows],
        &p.norm,
        &d_normed[..n],
        trains.norm.then_some(&mut grads.norm[..]),
        &mut resid[..n],
        false,
    );
    let mut scratch = Scratch {
        d_normed,
        d_attn_out,
        d_qkv,
        d_scores,
        d_hidden,
        d_gate,
        d_up,
    };
    for (i, ((w, g), a)) in p
        .layers
        .iter()
        .zip(grads.layers.iter_mut())
        .zip(layers.iter())
        .enumerate()
        .rev()
    {
        before_block(i, &mut resid[..n]);
        if i < trains.first_block {
            return;
        }
        block_backward(s, w, g, a, resid, &mut scratch, rope, trains.layers[i]);
    }
    if !trains.embeddings {
        return;
    }
    // Both embeddings are added into the first residual: each gets its gradient by row.
    grads.tok_emb.fill(0.0);
    for (r, &id) in ids[..rows].iter().enumerate() {
        let id = id as usize;
        for (ge, dr) in grads.tok_emb[id * d..(id + 1) * d]
            .iter_mut()
            .zip(&resid[r * d..(r + 1) * d])
        {
            *ge += dr;
        }
    }
    grads.win_emb.fill(0.0);
    if !grads.win_emb.is_empty() {
        for (r, &bin) in win[..rows].iter().enumerate() {
            let bin = bin as usize;
            for (ge, dr) in grads.win_emb[bin * d..(bin + 1) * d]
                .iter_mut()
                .zip(&resid[r * d..(r + 1) * d])
            {
                *ge += dr;
            }
        }
    }
}
