//! Staria's gated cross-attention sites on the fast path: their parameters, what their forward
//! saves, and their forward and backward over flat `f32` buffers.
//!
//! Same function as `staria_models::staria::CrossAttn::forward` (the training path): on the
//! residual stream `x` after a decoder block, with `any[b]` = 1 when example `b` has at least one
//! snippet (else 0: the site leaves it untouched) and the latents `lat` `[batch * latents,
//! encoder dim]` (section embedding included),
//!
//! ```text
//! q = norm(x) @ q^T;  k | v = lat @ kv^T            (no RoPE: latents have no position)
//! y = softmax(q k^T / sqrt(head_dim) + key_mask) v   per head; key_mask -1e9 on absent slots
//! x = x + any * tanh(attn_gate) * (y @ out^T)
//! x = x + any * tanh(ff_gate) * w2(silu(w1 h) * w3 h),   h = ff_norm(x)
//! ```
//!
//! The backward returns the gradients of every site parameter (the gates' through `tanh`) and
//! accumulates d loss / d lat over the sites, which the caller hands to candle for the encoder
//! and the section embedding.

use std::collections::HashMap;

use candle_core::{DType, Device, Tensor};
use rayon::prelude::*;
use staria_models::StariaConfig;

use super::backward::{input_grad, layer_norm_backward, weight_grad};
use super::forward::{ROW_TASK, layer_norm, linear, swiglu};
use super::matmul::{Threads, View, ViewMut, matmul};
use crate::error::{Result, TrainError};

/// The additive key mask of an absent snippet slot (`layers::mask_value` for f32).
pub(crate) const ABSENT_KEY: f32 = -1.0e9;

/// One site's weights (or gradients); `dim` = decoder width, `enc_dim` = encoder width,
/// `ff_hidden` = `ff_mult * dim`.
#[derive(Debug, Clone, PartialEq)]
pub struct SiteParams {
    /// `[dim]` LayerNorm gain before the queries.
    pub norm: Vec<f32>,
    /// `[dim, dim]` query projection.
    pub q: Vec<f32>,
    /// `[2 * dim, enc_dim]` key / value projection of the latents; output rows: k, then v.
    pub kv: Vec<f32>,
    /// `[dim, dim]` output projection.
    pub out: Vec<f32>,
    /// `[1]` attention gate, used as `tanh(attn_gate)`.
    pub attn_gate: Vec<f32>,
    /// `[dim]` LayerNorm gain before the adapter.
    pub ff_norm: Vec<f32>,
    /// `[ff_hidden, dim]` SwiGLU gate and up, `[dim, ff_hidden]` down.
    pub w1: Vec<f32>,
    pub w3: Vec<f32>,
    pub w2: Vec<f32>,
    /// `[1]` adapter gate, used as `tanh(ff_gate)`.
    pub ff_gate: Vec<f32>,
}

/// (VarMap name, shape) of every parameter of site `j`, in [`SiteParams::named`] order.
pub fn site_shapes(cfg: &StariaConfig, j: usize) -> Vec<(String, Vec<usize>)> {
    let (d, de, f) = (
        cfg.decoder.dim,
        cfg.encoder.dim,
        cfg.decoder.ff_mult * cfg.decoder.dim,
    );
    let p = format!("xattn.{j}");
    vec![
        (format!("{p}.norm.weight"), vec![d]),
        (format!("{p}.q.weight"), vec![d, d]),
        (format!("{p}.kv.weight"), vec![2 * d, de]),
        (format!("{p}.out.weight"), vec![d, d]),
        (format!("{p}.attn_gate"), vec![1]),
        (format!("{p}.ff_norm.weight"), vec![d]),
        (format!("{p}.ff.w1.weight"), vec![f, d]),
        (format!("{p}.ff.w3.weight"), vec![f, d]),
        (format!("{p}.ff.w2.weight"), vec![d, f]),
        (format!("{p}.ff_gate"), vec![1]),
    ]
}

impl SiteParams {
    /// All zeros (a gradient buffer).
    pub fn zeros(cfg: &StariaConfig) -> Self {
        let z = |shape: &[usize]| vec![0f32; shape.iter().product()];
        let s = site_shapes(cfg, 0);
        Self {
            norm: z(&s[0].1),
            q: z(&s[1].1),
            kv: z(&s[2].1),
            out: z(&s[3].1),
            attn_gate: z(&s[4].1),
            ff_norm: z(&s[5].1),
            w1: z(&s[6].1),
            w3: z(&s[7].1),
            w2: z(&s[8].1),
            ff_gate: z(&s[9].1),
        }
    }

    fn buffers(&self) -> [&Vec<f32>; 10] {
        [
            &self.norm,
            &self.q,
            &self.kv,
            &self.out,
            &self.attn_gate,
            &self.ff_norm,
            &self.w1,
            &self.w3,
            &self.w2,
            &self.ff_gate,
        ]
    }

    fn buffers_mut(&mut self) -> [&mut Vec<f32>; 10] {
        [
            &mut self.norm,
            &mut self.q,
            &mut self.kv,
            &mut self.out,
            &mut self.attn_gate,
            &mut self.ff_norm,
            &mut self.w1,
            &mut self.w3,
            &mut self.w2,
            &mut self.ff_gate,
        ]
    }

    /// `(name, buffer)` of site `j` in [`site_shapes`] order.
    pub fn named(&self, cfg: &StariaConfig, j: usize) -> Vec<(String, &[f32])> {
        site_shapes(cfg, j)
            .into_iter()
            .zip(self.buffers())
            .map(|((n, _), b)| (n, b.as_slice()))
            .collect()
    }

    /// `(name, buffer)` of site `j` in [`site_shapes`] order, writable.
    pub fn named_mut(&mut self, cfg: &StariaConfig, j: usize) -> Vec<(String, &mut [f32])> {
        site_shapes(cfg, j)
            .into_iter()
            .zip(self.buffers_mut())
            .map(|((n, _), b)| (n, b.as_mut_slice()))
            .collect()
    }

    /// Site `j`'s weights from named tensors; every one must be present with its shape.
    pub fn from_tensors(
        cfg: &StariaConfig,
        j: usize,
        tensors: &HashMap<String, Tensor>,
    ) -> Result<Self> {
        let mut p = Self::zeros(cfg);
        for ((name, shape), buf) in site_shapes(cfg, j).into_iter().zip(p.buffers_mut()) {
            let t = tensors
                .get(&name)
                .ok_or_else(|| TrainError::config(format!("fast path: no tensor `{name}`")))?;
            if t.dims() != shape.as_slice() {
                return Err(TrainError::config(format!(
                    "fast path: `{name}` has shape {:?}, the Staria model expects {shape:?}",
                    t.dims()
                )));
            }
            buf.copy_from_slice(&t.to_dtype(DType::F32)?.flatten_all()?.to_vec1::<f32>()?);
        }
        Ok(p)
    }

    /// Named CPU tensors holding copies of site `j`'s buffers.
    pub fn to_tensors(&self, cfg: &StariaConfig, j: usize) -> Result<HashMap<String, Tensor>> {
        site_shapes(cfg, j)
            .into_iter()
            .zip(self.buffers())
            .map(|((name, shape), buf)| Ok((name, Tensor::from_slice(buf, shape, &Device::Cpu)?)))
            .collect()
    }
}

/// The sizes one site's kernels need.
#[derive(Debug, Clone, Copy, PartialEq)]
pub(crate) struct SiteShape {
    pub batch: usize,
    pub seq: usize,
    pub dim: usize,
    pub heads: usize,
    pub head_dim: usize,
    pub ff_hidden: usize,
    /// Latents per example (slots x latents per snippet) and their width.
    pub latents: usize,
    pub enc_dim: usize,
    pub eps: f32,
}

impl SiteShape {
    fn rows(&self) -> usize {
        self.batch * self.seq
    }

    fn lat_rows(&self) -> usize {
        self.batch * self.latents
    }
}

/// What one site's forward saves (`rows` = batch x seq, `lrows` = batch x latents).
#[derive(Debug, Default)]
pub(crate) struct SiteActs {
    /// `[rows, dim]` residual stream entering the site, its LayerNorm's mean / rstd and output.
    pub input: Vec<f32>,
    pub mean: Vec<f32>,
    pub rstd: Vec<f32>,
    pub normed: Vec<f32>,
    /// `[rows, dim]` queries, all heads.
    pub q: Vec<f32>,
    /// `[lrows, 2 * dim]` keys | values.
    pub kv: Vec<f32>,
    /// `[batch, heads, seq, latents]` softmax probabilities (zero for an example without
    /// snippets).
    pub probs: Vec<f32>,
    /// `[rows, dim]` attention output (heads concatenated) and its projection `y @ out^T`.
    pub y: Vec<f32>,
    pub y_out: Vec<f32>,
    /// `[rows, dim]` residual stream after the attention half, its LayerNorm's mean / rstd and
    /// output.
    pub mid: Vec<f32>,
    pub ff_mean: Vec<f32>,
    pub ff_rstd: Vec<f32>,
    pub ff_normed: Vec<f32>,
    /// `[rows, ff_hidden]` w1 h, w3 h, silu(w1 h) * w3 h.
    pub gate: Vec<f32>,
    pub up: Vec<f32>,
    pub hidden: Vec<f32>,
    /// `[rows, dim]` the adapter's output before its gate.
    pub ff_out: Vec<f32>,
}

/// The sites' shared inputs and the backward's scratch.
#[derive(Debug, Default)]
pub(crate) struct SiteBuffers {
    pub cap_rows: usize,
    pub cap_lat_rows: usize,
    pub cap_scores: usize,
    pub acts: Vec<SiteActs>,
    /// `[lrows, enc_dim]` latents, section embedding included.
    pub lat: Vec<f32>,
    /// `[lrows]` additive key mask: 0 for a present slot's latents, [`ABSENT_KEY`] else.
    pub key_mask: Vec<f32>,
    /// `[batch]` 1 when the example has a snippet, else 0.
    pub any: Vec<f32>,
    /// `[lrows, enc_dim]` d loss / d lat, summed over the sites.
    pub d_lat: Vec<f32>,
    pub scratch: SiteScratch,
}

/// The site backward's scratch.
#[derive(Debug, Default)]
pub(crate) struct SiteScratch {
    /// `[rows, dim]` a gated branch's output gradient, a LayerNorm output's gradient, d y.
    pub d_branch: Vec<f32>,
    pub d_normed: Vec<f32>,
    pub d_y: Vec<f32>,
    pub d_q: Vec<f32>,
    /// `[lrows, 2 * dim]`.
    pub d_kv: Vec<f32>,
    /// `[batch, heads, seq, latents]`.
    pub d_scores: Vec<f32>,
    /// `[rows, ff_hidden]`.
    pub d_hidden: Vec<f32>,
    pub d_gate: Vec<f32>,
    pub d_up: Vec<f32>,
}

impl SiteBuffers {
    /// Makes room for `sites` sites of shape `s` (no-op when it already fits).
    pub(crate) fn ensure(&mut self, s: &SiteShape, sites: usize) {
        let (rows, lrows) = (s.rows(), s.lat_rows());
        let scores = s.batch * s.heads * s.seq * s.latents;
        if rows <= self.cap_rows
            && lrows <= self.cap_lat_rows
            && scores <= self.cap_scores
            && self.acts.len() == sites
        {
            return;
        }
        let (rows, lrows) = (rows.max(self.cap_rows), lrows.max(self.cap_lat_rows));
        let scores = scores.max(self.cap_scores);
        let z = |n: usize| vec![0f32; n];
        let (d, f, de) = (s.dim, s.ff_hidden, s.enc_dim);
        *self = SiteBuffers {
            cap_rows: rows,
            cap_lat_rows: lrows,
            cap_scores: scores,
            acts: (0..sites)
                .map(|_| SiteActs {
                    input: z(rows * d),
                    mean: z(rows),
                    rstd: z(rows),
                    normed: z(rows * d),
                    q: z(rows * d),
                    kv: z(lrows * 2 * d),
                    probs: z(scores),
                    y: z(rows * d),
                    y_out: z(rows * d),
                    mid: z(rows * d),
                    ff_mean: z(rows),
                    ff_rstd: z(rows),
                    ff_normed: z(rows * d),
                    gate: z(rows * f),
                    up: z(rows * f),
                    hidden: z(rows * f),
                    ff_out: z(rows * d),
                })
                .collect(),
            lat: z(lrows * de),
            key_mask: z(lrows),
            any: z(lrows),
            d_lat: z(lrows * de),
            scratch: SiteScratch {
                d_branch: z(rows * d),
                d_normed: z(rows * d),
                d_y: z(rows * d),
                d_q: z(rows * d),
                d_kv: z(lrows * 2 * d),
                d_scores: z(scores),
                d_hidden: z(rows * f),
                d_gate: z(rows * f),
                d_up: z(rows * f),
            },
        };
    }
}

/// The latents and slot masks every site reads.
pub(crate) struct SiteInputs<'a> {
    pub lat: &'a [f32],
    pub key_mask: &'a [f32],
    pub any: &'a [f32],
}

/// `resid[b rows] += gate[b] * branch[b rows]`, `gate[b] = any[b] * tanh_gate` (candle's
/// `present * tanh(gate)`, then the product).
fn add_gated(s: &SiteShape, resid: &mut [f32], branch: &[f32], any: &[f32], tanh_gate: f32) {
    let (t, d) = (s.seq, s.dim);
    resid[..s.rows() * d]
        .par_chunks_mut(t * d)
        .zip(branch[..s.rows() * d].par_chunks(t * d))
        .zip(any[..s.batch].par_iter())
        .for_each(|((x, y), &a)| {
            let g = a * tanh_gate;
            for (x, y) in x.iter_mut().zip(y) {
                *x += y * g;
            }
        });
}

/// Cross-attention of every example and head: `probs` and `y` from `q` and `kv`.
fn attention(s: &SiteShape, a: &mut SiteActs, key_mask: &[f32], any: &[f32]) {
    let (t, d, hd, m) = (s.seq, s.dim, s.head_dim, s.latents);
    let scale = 1.0 / (hd as f32).sqrt();
    let tm = t * m;
    let (q, kv) = (&a.q, &a.kv);
    a.y[..s.rows() * d]
        .par_chunks_mut(t * d)
        .zip(a.probs[..s.batch * s.heads * tm].par_chunks_mut(s.heads * tm))
        .enumerate()
        .for_each(|(b, (y_b, probs_b))| {
            if any[b] == 0.0 {
                // The site adds nothing for this example (its gate is 0).
                y_b.fill(0.0);
                probs_b.fill(0.0);
                return;
            }
            let q_b = &q[b * t * d..];
            let kv_b = &kv[b * m * 2 * d..];
            let mask_b = &key_mask[b * m..(b + 1) * m];
            for h in 0..s.heads {
                let p = &mut probs_b[h * tm..(h + 1) * tm];
                matmul(
                    ViewMut::rows(p, t, m),
                    View::strided(&q_b[h * hd..], t, hd, d),
                    View::strided(&kv_b[h * hd..], m, hd, 2 * d).t(),
                    false,
                    Threads::One,
                );
                for row in p.chunks_mut(m) {
                    let mut max = f32::NEG_INFINITY;
                    for (v, &mk) in row.iter_mut().zip(mask_b) {
                        *v = *v * scale + mk;
                        max = max.max(*v);
                    }
                    let mut sum = 0f32;
                    for v in row.iter_mut() {
                        *v = (*v - max).exp();
                        sum += *v;
                    }
                    for v in row.iter_mut() {
                        *v /= sum;
                    }
                }
                matmul(
                    ViewMut::strided(&mut y_b[h * hd..], t, hd, d),
                    View::rows(p, t, m),
                    View::strided(&kv_b[d + h * hd..], m, hd, 2 * d),
                    false,
                    Threads::One,
                );
            }
        });
}

/// One site's forward: `resid` holds the block output on entry, the site output on exit.
pub(crate) fn site_forward(
    s: &SiteShape,
    w: &SiteParams,
    a: &mut SiteActs,
    inp: &SiteInputs,
    resid: &mut [f32],
) {
    let (rows, lrows, d, f) = (s.rows(), s.lat_rows(), s.dim, s.ff_hidden);
    let n = rows * d;
    a.input[..n].copy_from_slice(&resid[..n]);
    layer_norm(
        &resid[..n],
        &w.norm,
        s.eps,
        &mut a.normed[..n],
        &mut a.mean[..rows],
        &mut a.rstd[..rows],
    );
    linear(&mut a.q, &a.normed, &w.q, rows, d, d);
    linear(&mut a.kv, inp.lat, &w.kv, lrows, s.enc_dim, 2 * d);
    attention(s, a, inp.key_mask, inp.any);
    linear(&mut a.y_out, &a.y, &w.out, rows, d, d);
    add_gated(s, resid, &a.y_out, inp.any, w.attn_gate[0].tanh());
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
    linear(&mut a.ff_out, &a.hidden, &w.w2, rows, f, d);
    add_gated(s, resid, &a.ff_out, inp.any, w.ff_gate[0].tanh());
}

/// The backward of a gated residual branch `x_out = x_in + any[b] * tanh(gate) * branch`:
/// writes `d_branch = any[b] * tanh(gate) * d_out` and returns d loss / d gate
/// (`(1 - tanh^2) * sum over examples of any[b] <branch_b, d_out_b>`, summed in f64).
fn gated_backward(
    s: &SiteShape,
    d_out: &[f32],
    branch: &[f32],
    any: &[f32],
    gate: f32,
    d_branch: &mut [f32],
) -> f32 {
    let (t, d) = (s.seq, s.dim);
    let tanh = gate.tanh();
    let dot: f64 = d_branch[..s.rows() * d]
        .par_chunks_mut(t * d)
        .zip(d_out[..s.rows() * d].par_chunks(t * d))
        .zip(branch[..s.rows() * d].par_chunks(t * d))
        .zip(any[..s.batch].par_iter())
        .map(|(((db, dy), y), &a)| {
            let g = a * tanh;
            let mut dot = 0f64;
            for ((db, &dy), &y) in db.iter_mut().zip(dy).zip(y) {
                *db = dy * g;
                dot += (dy * y) as f64;
            }
            dot * a as f64
        })
        .collect::<Vec<f64>>()
        .into_iter()
        .sum();
    (dot * (1.0 - tanh as f64 * tanh as f64)) as f32
}

/// Cross-attention backward: `d_q` and `d_kv` (both written) from `d_y`.
fn attention_backward(
    s: &SiteShape,
    a: &SiteActs,
    any: &[f32],
    d_y: &[f32],
    d_q: &mut [f32],
    d_kv: &mut [f32],
    d_scores: &mut [f32],
) {
    let (t, d, hd, m) = (s.seq, s.dim, s.head_dim, s.latents);
    let scale = 1.0 / (hd as f32).sqrt();
    let tm = t * m;
    d_q[..s.rows() * d]
        .par_chunks_mut(t * d)
        .zip(d_kv[..s.lat_rows() * 2 * d].par_chunks_mut(m * 2 * d))
        .zip(d_scores[..s.batch * s.heads * tm].par_chunks_mut(s.heads * tm))
        .enumerate()
        .for_each(|(b, ((dq_b, dkv_b), ds_b))| {
            if any[b] == 0.0 {
                dq_b.fill(0.0);
                dkv_b.fill(0.0);
                return;
            }
            let q_b = &a.q[b * t * d..];
            let kv_b = &a.kv[b * m * 2 * d..];
            let dy_b = &d_y[b * t * d..];
            let probs_b = &a.probs[b * s.heads * tm..(b + 1) * s.heads * tm];
            for h in 0..s.heads {
                let p = View::rows(&probs_b[h * tm..(h + 1) * tm], t, m);
                let ds = &mut ds_b[h * tm..(h + 1) * tm];
                let dy = View::strided(&dy_b[h * hd..], t, hd, d);
                // dV = P^T dY
                matmul(
                    ViewMut::strided(&mut dkv_b[d + h * hd..], m, hd, 2 * d),
                    p.t(),
                    dy,
                    false,
                    Threads::One,
                );
                // dP = dY V^T, then d(scores) = P * (dP - rowsum(P * dP)), times scale for q.k.
                matmul(
                    ViewMut::rows(ds, t, m),
                    dy,
                    View::strided(&kv_b[d + h * hd..], m, hd, 2 * d).t(),
                    false,
                    Threads::One,
                );
                let p_all = &probs_b[h * tm..(h + 1) * tm];
                for (g_row, p_row) in ds.chunks_mut(m).zip(p_all.chunks(m)) {
                    let dot: f32 = p_row.iter().zip(g_row.iter()).map(|(p, g)| p * g).sum();
                    for (g, &p) in g_row.iter_mut().zip(p_row) {
                        *g = p * (*g - dot) * scale;
                    }
                }
                let ds = View::rows(ds, t, m);
                // dQ = dS K, dK = dS^T Q
                matmul(
                    ViewMut::strided(&mut dq_b[h * hd..], t, hd, d),
                    ds,
                    View::strided(&kv_b[h * hd..], m, hd, 2 * d),
                    false,
                    Threads::One,
                );
                matmul(
                    ViewMut::strided(&mut dkv_b[h * hd..], m, hd, 2 * d),
                    ds.t(),
                    View::strided(&q_b[h * hd..], t, hd, d),
                    false,
                    Threads::One,
                );
            }
        });
}

/// One site's backward: on entry `resid` holds d loss / d(site output), on exit d loss /
/// d(site input). Writes every gradient of `g` and adds d loss / d lat into `d_lat`.
#[allow(clippy::too_many_arguments)]
pub(crate) fn site_backward(
    s: &SiteShape,
    w: &SiteParams,
    g: &mut SiteParams,
    a: &SiteActs,
    inp: &SiteInputs,
    d_lat: &mut [f32],
    sc: &mut SiteScratch,
    resid: &mut [f32],
) {
    let (rows, lrows, d, f, de) = (s.rows(), s.lat_rows(), s.dim, s.ff_hidden, s.enc_dim);
    let n = rows * d;
    // Adapter half: out = mid + gate_b * (hidden @ w2^T).
    g.ff_gate[0] = gated_backward(s, resid, &a.ff_out, inp.any, w.ff_gate[0], &mut sc.d_branch);
    input_grad(&mut sc.d_hidden, &sc.d_branch, &w.w2, rows, f, d, false);
    weight_grad(&mut g.w2, &sc.d_branch, &a.hidden, rows, f, d);
    sc.d_gate[..rows * f]
        .par_chunks_mut(f)
        .zip(sc.d_up[..rows * f].par_chunks_mut(f))
        .zip(sc.d_hidden[..rows * f].par_chunks(f))
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
                du[i] = dh[i] * x * sig;
                dg[i] = dh[i] * up[i] * sig * (1.0 + x * (1.0 - sig));
            }
        });
    weight_grad(&mut g.w1, &sc.d_gate, &a.ff_normed, rows, d, f);
    weight_grad(&mut g.w3, &sc.d_up, &a.ff_normed, rows, d, f);
    input_grad(&mut sc.d_normed, &sc.d_gate, &w.w1, rows, d, f, false);
    input_grad(&mut sc.d_normed, &sc.d_up, &w.w3, rows, d, f, true);
    layer_norm_backward(
        &a.mid[..n],
        &a.ff_mean[..rows],
        &a.ff_rstd[..rows],
        &w.ff_norm,
        &sc.d_normed[..n],
        Some(&mut g.ff_norm),
        &mut resid[..n],
        true,
    );
    // Attention half: mid = input + gate_b * (y @ out^T).
    g.attn_gate[0] = gated_backward(
        s,
        resid,
        &a.y_out,
        inp.any,
        w.attn_gate[0],
        &mut sc.d_branch,
    );
    weight_grad(&mut g.out, &sc.d_branch, &a.y, rows, d, d);
    input_grad(&mut sc.d_y, &sc.d_branch, &w.out, rows, d, d, false);
    attention_backward(
        s,
        a,
        inp.any,
        &sc.d_y,
        &mut sc.d_q,
        &mut sc.d_kv,
        &mut sc.d_scores,
    );
    weight_grad(&mut g.q, &sc.d_q, &a.normed, rows, d, d);
    input_grad(&mut sc.d_normed, &sc.d_q, &w.q, rows, d, d, false);
    weight_grad(&mut g.kv, &sc.d_kv, inp.lat, lrows, de, 2 * d);
    input_grad(d_lat, &sc.d_kv, &w.kv, lrows, de, 2 * d, true);
    layer_norm_backward(
        &a.input[..n],
        &a.mean[..rows],
        &a.rstd[..rows],
        &w.norm,
        &sc.d_normed[..n],
        Some(&mut g.norm),
        &mut resid[..n],
        true,
    );
}
