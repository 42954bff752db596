//! The decode step itself: a chunk of tokens through every block (norm, QKV, RoPE, appending to
//! the KV cache, attention, SwiGLU), the Staria cross-attention sites, the LM head and the
//! beat-grid scores. Allocation-free: every buffer lives in [`State`].

use super::kernels::{self, Rows, RowsMut, padded};
use super::matrix::Matrix;
use super::{CrossSite, FastConfig, Isa, KvStore, PREFILL_CHUNK, State, Weights, blocked};
use crate::grid;

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
pub(super) fn forward_chunk(
    w: &Weights,
    s: &mut State,
    cfg: &FastConfig,
    head_dim: usize,
    isa: Isa,
    tokens: &[u32],
    bins: &[u32],
) {
    let n = tokens.len();
    debug_assert!((1..=PREFILL_CHUNK).contains(&n));
    debug_assert!(bins.len() == if w.win_emb.is_empty() { 0 } else { n });
    let (dim, dim_padded) = (cfg.dim, padded(cfg.dim));
    let eps = cfg.norm_eps as f32;
    for (x, &t) in s.x.chunks_exact_mut(dim).zip(tokens) {
        let t = t as usize;
        x.copy_from_slice(&w.tok_emb[t * dim..(t + 1) * dim]);
    }
    // Same order of additions as the candle model: token row, then window row.
    for (x, &b) in s.x.chunks_exact_mut(dim).zip(bins) {
        let b = b as usize;
        for (xv, wv) in x.iter_mut().zip(&w.win_emb[b * dim..(b + 1) * dim]) {
            *xv += wv;
        }
    }

    for (li, layer) in w.layers.iter().enumerate() {
        // Attention.
        norm_rows(isa, s, &layer.attn_norm, eps, dim, n);
        let xn = Rows::new(&s.xn, n, dim_padded, dim_padded);
        let qkv = RowsMut::new(&mut s.qkv, n, 3 * dim, 3 * dim);
        layer.qkv.matmul(isa, xn, qkv, &mut s.qs);
        append_to_cache(w, s, cfg, head_dim, li, n);
        attend(s, cfg, head_dim, isa, li, n);
        let att = Rows::new(&s.att, n, dim_padded, dim_padded);
        let tmp = RowsMut::new(&mut s.tmp, n, dim, dim);
        layer.out.matmul(isa, att, tmp, &mut s.qs);
        kernels::add_assign(isa, &mut s.x[..n * dim], &s.tmp[..n * dim]);

        // Feed-forward.
        norm_rows(isa, s, &layer.ff_norm, eps, dim, n);
        swiglu_residual(isa, &layer.w13, &layer.w2, None, s, dim, n);

        // Site j follows layer (j+1)*cross_every - 1 (`StariaConfig::site_after`).
        if cfg.cross_every > 0
            && (li + 1).is_multiple_of(cfg.cross_every)
            && let Some(site) = w.cross.get((li + 1) / cfg.cross_every - 1)
        {
            cross_site(site, s, cfg, head_dim, isa, n);
        }
    }
    s.pos += n;
}

/// `xn[i] = layer_norm(x[i]) * w` for the chunk's first `n` rows.
fn norm_rows(isa: Isa, s: &mut State, w: &[f32], eps: f32, dim: usize, n: usize) {
    let dim_padded = padded(dim);
    for (x, xn) in
        s.x.chunks_exact(dim)
            .zip(s.xn.chunks_exact_mut(dim_padded))
            .take(n)
    {
        kernels::layer_norm(isa, x, w, eps, &mut xn[..dim]);
    }
}

/// The first half of layer `li`'s self-attention for the chunk's `n` tokens (QKV in `s.qkv`):
/// RoPE on queries and keys (in place), then every key and value appended to the cache at
/// positions `s.pos ..`.
fn append_to_cache(
    w: &Weights,
    s: &mut State,
    cfg: &FastConfig,
    head_dim: usize,
    li: usize,
    n: usize,
) {
    let (dim, h) = (cfg.dim, cfg.n_heads);
    // Cache layout: keys `[layer][head][kcap / KEY_BLOCK][head_dim][KEY_BLOCK]`, values
    // `[layer][head][cap][head_dim]`; `qkv` rows are `[q | k | v]`, each `[h][head_dim]`.
    let cap = cfg.max_seq_len;
    let kcap = blocked(cap);
    let half = head_dim / 2;
    let pos = s.pos;
    let State { kv, qkv, .. } = s;

    for (i, row) in qkv.chunks_exact_mut(3 * dim).take(n).enumerate() {
        let p = pos + i;
        let (cos, sin) = (
            &w.rope_cos[p * half..(p + 1) * half],
            &w.rope_sin[p * half..(p + 1) * half],
        );
        let (q, rest) = row.split_at_mut(dim);
        let (k, v) = rest.split_at_mut(dim);
        for hh in 0..h {
            rope(&mut q[hh * head_dim..(hh + 1) * head_dim], cos, sin);
            rope(&mut k[hh * head_dim..(hh + 1) * head_dim], cos, sin);
            let kbase = (li * h + hh) * head_dim * kcap;
            let vrow = (li * h + hh) * head_dim * cap + p * head_dim;
            let (kh, vh) = (
                &k[hh * head_dim..(hh + 1) * head_dim],
                &v[hh * head_dim..(hh + 1) * head_dim],
            );
            match kv {
                KvStore::F32 { kt, v: vc } => {
                    for (j, x) in kh.iter().enumerate() {
                        kt[kbase + kernels::kblock_index(head_dim, p, j)] = *x;
                    }
                    vc[vrow..vrow + head_dim].copy_from_slice(vh);
                }
                KvStore::F16 { kt, v: vc } => {
                    for (j, x) in kh.iter().enumerate() {
                        kt[kbase + kernels::kblock_index(head_dim, p, j)] =
                            kernels::f32_to_f16_sat(*x);
                    }
                    for (o, x) in vc[vrow..vrow + head_dim].iter_mut().zip(vh) {
                        *o = kernels::f32_to_f16_sat(*x);
                    }
                }
            }
        }
    }
}

/// The second half: each of the chunk's `n` queries (roped, in `s.qkv`) attends causally to
/// layer `li`'s cache up to its own position (`s.pos + i`); head outputs go to `s.att`.
fn attend(s: &mut State, cfg: &FastConfig, head_dim: usize, isa: Isa, li: usize, n: usize) {
    let (dim, dim_padded, h) = (cfg.dim, padded(cfg.dim), cfg.n_heads);
    // Cache layout as in `append_to_cache`.
    let cap = cfg.max_seq_len;
    let kcap = blocked(cap);
    let pos = s.pos;
    let scale = 1.0 / (head_dim as f32).sqrt();
    let State {
        kv,
        kv_tile,
        head_tmp,
        qkv,
        att,
        scores,
        scores_stride,
        ..
    } = s;
    let qkv = Rows::new(&qkv[..], n, 3 * dim, 3 * dim);
    let mut att = RowsMut::new(&mut att[..], n, dim_padded, dim_padded);
    let mut scores = RowsMut::new(&mut scores[..], n, *scores_stride, *scores_stride);

    // Query i sees positions 0 ..= pos + i; `first(b)` is the first query that sees key block b.
    let end = pos + n;
    let first = |b: usize| (b * kernels::KEY_BLOCK).saturating_sub(pos);
    // The positions of key block b that query i sees.
    let in_block = |i: usize, b: usize| {
        b * kernels::KEY_BLOCK..(pos + i + 1).min((b + 1) * kernels::KEY_BLOCK)
    };
    for hh in 0..h {
        let kbase = (li * h + hh) * head_dim * kcap;
        let vbase = (li * h + hh) * head_dim * cap;
        // Head hh's values in a row of queries or of outputs.
        let head = hh * head_dim..(hh + 1) * head_dim;
        match kv {
            KvStore::F32 { kt, v: vc } => {
                let kb = &kt[kbase..kbase + head_dim * kcap];
                for i in 0..n {
                    let sc = &mut scores.row_mut(i)[..pos + i + 1];
                    kernels::scores_blocked(isa, &qkv.row(i)[head.clone()], kb, scale, sc);
                    kernels::softmax(isa, sc);
                    let vs = &vc[vbase..vbase + sc.len() * head_dim];
                    kernels::weighted_sum(isa, sc, vs, &mut att.row_mut(i)[head.clone()]);
                }
            }
            KvStore::F16 { kt, v: vc } => {
                // Tile by tile: 16 positions converted to f32 in L1 once for the whole chunk,
                // then the f32 kernels for every query that sees them, in the order a single
                // query's step uses.
                let tile = &mut kv_tile[..head_dim * kernels::KEY_BLOCK];
                let kb = &kt[kbase..kbase + head_dim * kcap];
                for (b, blk) in kb.chunks_exact(head_dim * kernels::KEY_BLOCK).enumerate() {
                    if b * kernels::KEY_BLOCK >= end {
                        break;
                    }
                    kernels::f16_to_f32(isa, blk, tile);
                    for i in first(b)..n {
                        let sc = &mut scores.row_mut(i)[in_block(i, b)];
                        kernels::scores_blocked(isa, &qkv.row(i)[head.clone()], tile, scale, sc);
                    }
                }
                for i in 0..n {
                    kernels::softmax(isa, &mut scores.row_mut(i)[..pos + i + 1]);
                    att.row_mut(i)[head.clone()].fill(0.0);
                }
                let vs = &vc[vbase..vbase + end * head_dim];
                for (b, vblk) in vs.chunks(kernels::KEY_BLOCK * head_dim).enumerate() {
                    let t = &mut tile[..vblk.len()];
                    kernels::f16_to_f32(isa, vblk, t);
                    for i in first(b)..n {
                        kernels::weighted_sum(isa, &scores.row(i)[in_block(i, b)], t, head_tmp);
                        kernels::add_assign(isa, &mut att.row_mut(i)[head.clone()], head_tmp);
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
    dim: usize,
    n: usize,
) {
    let hidden = w2.cols();
    let xn = Rows::new(&s.xn, n, padded(dim), padded(dim));
    let mut ffh = RowsMut::new(&mut s.ffh, n, 2 * hidden, s.ffh_stride);
    w13.matmul(isa, xn, ffh.reborrow(), &mut s.qs);
    let mut ffg = RowsMut::new(&mut s.ffg, n, padded(hidden), s.ffg_stride);
    for i in 0..n {
        let (a, b) = ffh.row(i).split_at(hidden);
        let (g, pad) = ffg.row_mut(i).split_at_mut(hidden);
        kernels::swiglu(isa, a, b, g);
        // The padding feeds the mat-mul too: zero it (a wider SwiGLU may have written there, and
        // a q8 block's scale depends on all its 32 values).
        pad.fill(0.0);
    }
    let tmp = RowsMut::new(&mut s.tmp, n, dim, dim);
    w2.matmul(isa, ffg.as_rows(), tmp, &mut s.qs);
    match gate {
        None => kernels::add_assign(isa, &mut s.x[..n * dim], &s.tmp[..n * dim]),
        Some(g) => gated_add(&mut s.x, &s.tmp, g, n),
    }
}

/// `x[i] += g * tmp[i]` for the first `n` rows of `g.len()` values.
fn gated_add(x: &mut [f32], tmp: &[f32], g: &[f32], n: usize) {
    let dim = g.len();
    for (x, t) in x.chunks_exact_mut(dim).zip(tmp.chunks_exact(dim)).take(n) {
        for ((x, t), g) in x.iter_mut().zip(t).zip(g) {
            *x += g * t;
        }
    }
}

/// One Staria cross-attention site (gated attention to the latents, then gated SwiGLU adapter)
/// for the chunk's first `n` rows; skipped when no latents are set.
fn cross_site(
    site: &CrossSite,
    s: &mut State,
    cfg: &FastConfig,
    head_dim: usize,
    isa: Isa,
    n: usize,
) {
    let (dim, dim_padded) = (cfg.dim, padded(cfg.dim));
    let m = cfg.max_latents;
    let eps = cfg.norm_eps as f32;
    let nl = s.n_latents;
    if nl == 0 {
        // No snippets: the site is skipped entirely, as in `Staria::forward_cached`.
        return;
    }
    norm_rows(isa, s, &site.norm, eps, dim, n);
    // The queries go where the self-attention's QKV went (`[chunk][3 * dim]`, the first dim).
    let xn = Rows::new(&s.xn, n, dim_padded, dim_padded);
    let q_out = RowsMut::new(&mut s.qkv, n, dim, 3 * dim);
    site.q.matmul(isa, xn, q_out, &mut s.qs);
    let scale = 1.0 / (head_dim as f32).sqrt();
    let mk = blocked(m);
    let queries = Rows::new(&s.qkv, n, dim, 3 * dim);
    let mut scores = RowsMut::new(&mut s.scores, n, nl, s.scores_stride);
    let mut att = RowsMut::new(&mut s.att, n, dim_padded, dim_padded);
    for i in 0..n {
        for hh in 0..cfg.n_heads {
            let head = hh * head_dim..(hh + 1) * head_dim;
            let kt = &site.kt[hh * head_dim * mk..(hh + 1) * head_dim * mk];
            let sc = scores.row_mut(i);
            kernels::scores_blocked(isa, &queries.row(i)[head.clone()], kt, scale, sc);
            kernels::softmax(isa, sc);
            let v = &site.v_cache[hh * m * head_dim..(hh * m + nl) * head_dim];
            kernels::weighted_sum(isa, sc, v, &mut att.row_mut(i)[head]);
        }
    }
    let tmp = RowsMut::new(&mut s.tmp, n, dim, dim);
    site.out.matmul(isa, att.as_rows(), tmp, &mut s.qs);
    gated_add(&mut s.x, &s.tmp, &site.attn_gate, n);
    norm_rows(isa, s, &site.ff_norm, eps, dim, n);
    swiglu_residual(isa, &site.w13, &site.w2, Some(&site.ff_gate), s, dim, n);
}

/// The beat-grid head on the last normed state (`compute_logits` left it in `xn`): onset logits
/// get `xn · grid_head[row[k]]` (`crate::grid`).
pub(super) fn add_grid_scores(
    w: &Weights,
    s: &mut State,
    dim: usize,
    first_onset: u32,
    row: &[u32],
) {
    let xn = &s.xn[..dim];
    for (score, head_row) in s.grid_scores.iter_mut().zip(w.grid_head.chunks_exact(dim)) {
        *score = head_row.iter().zip(xn).map(|(a, b)| a * b).sum();
    }
    grid::add_to_logits(&mut s.logits, first_onset, row, &s.grid_scores);
}

/// Final norm and LM head on residual stream `row` of the last chunk.
pub(super) fn compute_logits(w: &Weights, s: &mut State, cfg: &FastConfig, isa: Isa, row: usize) {
    let dim = cfg.dim;
    let x = &s.x[row * dim..(row + 1) * dim];
    kernels::layer_norm(isa, x, &w.norm, cfg.norm_eps as f32, &mut s.xn[..dim]);
    w.lm_head.matvec(isa, &s.xn, &mut s.logits, &mut s.qs);
}
