//! Multi-token mat-muls. A block kernel computes `R` weight rows x `T` tokens with all its
//! accumulators in registers; the drivers tile rows and tokens with the largest block that
//! fits and smaller blocks at the edges. The accumulators and reductions of each (row, token)
//! pair are those of the mat-vec, so the results are bit-for-bit the same.
//!
//! Same requirements as the mat-vecs of `x86/mod.rs`: the CPU features of each
//! `#[target_feature]` and the slice shapes documented on the safe wrappers in `kernels/mod.rs`.

use super::super::{QActs, QBLOCK, Rows, RowsMut};
use super::{f16_to_f32_avx2, f16_to_f32_avx512, hsum256};
use std::arch::x86_64::*;

/// Calls `block(r, t, R, T)` over `rows x n` in blocks of at most `R x T` (row-block outer,
/// so a block of weight rows stays in L1 while every token of the chunk reads it).
#[inline(always)]
fn tile(
    rows: usize,
    n: usize,
    rb: usize,
    tb: usize,
    mut block: impl FnMut(usize, usize, usize, usize),
) {
    let mut r = 0;
    while r < rows {
        let rr = (rows - r).min(rb);
        let mut t = 0;
        while t < n {
            let tt = (n - t).min(tb);
            block(r, t, rr, tt);
            t += tt;
        }
        r += rr;
    }
}

/// `R` f32 weight rows x `T` tokens with AVX-512: four accumulators per (row, token) at
/// offsets 0/16/32/48 of each 64-value step, reduced as `matvec_f32_avx512` reduces them.
#[target_feature(enable = "avx512f,avx512bw,avx512vl,avx2,fma,f16c")]
#[inline]
unsafe fn block_f32_avx512<const R: usize, const T: usize>(
    w: *const f32,
    kp: usize,
    x: *const f32,
    xs: usize,
    y: *mut f32,
    ys: usize,
) {
    let mut acc = [[[_mm512_setzero_ps(); 4]; T]; R];
    let mut i = 0;
    while i < kp {
        for j in 0..4 {
            let mut xv = [_mm512_setzero_ps(); T];
            for (t, v) in xv.iter_mut().enumerate() {
                // SAFETY: token t's row holds kp floats at x + t*xs; i + 16j + 16 <= kp.
                *v = unsafe { _mm512_loadu_ps(x.add(t * xs + i + 16 * j)) };
            }
            for (r, ar) in acc.iter_mut().enumerate() {
                // SAFETY: weight row r holds kp floats at w + r*kp.
                let wv = unsafe { _mm512_loadu_ps(w.add(r * kp + i + 16 * j)) };
                for (a, v) in ar.iter_mut().zip(&xv) {
                    a[j] = _mm512_fmadd_ps(wv, *v, a[j]);
                }
            }
        }
        i += 64;
    }
    for (r, ar) in acc.iter().enumerate() {
        for (t, a) in ar.iter().enumerate() {
            let s = _mm512_add_ps(_mm512_add_ps(a[0], a[1]), _mm512_add_ps(a[2], a[3]));
            // SAFETY: output (t, r) lies inside y (t < n, r < rows).
            unsafe { *y.add(t * ys + r) = _mm512_reduce_add_ps(s) };
        }
    }
}

/// Rows `r .. r + rr` (`rr <= 2`, at `w`) against all `n` tokens, 3 tokens at a time:
/// 24 accumulators + 3 activations + 1 weight of the 32 registers.
#[target_feature(enable = "avx512f,avx512bw,avx512vl,avx2,fma,f16c")]
#[allow(clippy::too_many_arguments)]
unsafe fn rows_f32_avx512(
    rr: usize,
    w: *const f32,
    kp: usize,
    x: *const f32,
    xs: usize,
    y: *mut f32,
    ys: usize,
    n: usize,
) {
    tile(1, n, 1, 3, |_, t, _, tt| {
        // SAFETY: tokens t .. t+tt < n, within the shapes the safe wrapper checked.
        unsafe {
            let (xt, yo) = (x.add(t * xs), y.add(t * ys));
            match (rr, tt) {
                (2, 3) => block_f32_avx512::<2, 3>(w, kp, xt, xs, yo, ys),
                (2, 2) => block_f32_avx512::<2, 2>(w, kp, xt, xs, yo, ys),
                (2, _) => block_f32_avx512::<2, 1>(w, kp, xt, xs, yo, ys),
                (_, 3) => block_f32_avx512::<1, 3>(w, kp, xt, xs, yo, ys),
                (_, 2) => block_f32_avx512::<1, 2>(w, kp, xt, xs, yo, ys),
                _ => block_f32_avx512::<1, 1>(w, kp, xt, xs, yo, ys),
            }
        }
    });
}

/// Asks for the cache lines of `v` (the next weight rows) to be fetched into L1 while the
/// current rows are multiplied: a weight row is read once per chunk, straight from memory,
/// and without this the kernels wait for it (measured: ~10% of an f16 prefill).
#[inline(always)]
fn prefetch<T>(v: &[T]) {
    let p = v.as_ptr() as *const i8;
    let bytes = std::mem::size_of_val(v);
    let mut o = 0;
    while o < bytes {
        // SAFETY: a prefetch is only a hint and never faults; the address is inside `v`.
        unsafe { _mm_prefetch::<_MM_HINT_T0>(p.add(o)) };
        o += 64;
    }
}

#[target_feature(enable = "avx512f,avx512bw,avx512vl,avx2,fma,f16c")]
pub(in crate::fast::kernels) unsafe fn matmul_f32_avx512(
    w: &[f32],
    kp: usize,
    x: Rows<f32>,
    mut y: RowsMut<f32>,
) {
    let (xp, xs, n) = (x.as_ptr(), x.stride(), x.rows());
    let (yp, ys) = (y.as_mut_ptr(), y.stride());
    tile(w.len() / kp, 1, 2, 1, |r, _, rr, _| {
        prefetch(&w[(r + rr) * kp..w.len().min((r + 2 * rr) * kp)]);
        // SAFETY: rows r .. r+rr < rows, within the shapes the safe wrapper checked.
        unsafe { rows_f32_avx512(rr, w.as_ptr().add(r * kp), kp, xp, xs, yp.add(r), ys, n) }
    });
}

/// f16 weights: each pair of rows is converted once into `wf` (L1) and then multiplied as
/// f32 rows; the conversion is exact, so this is the f32 arithmetic of `matvec_f16_avx512`.
#[target_feature(enable = "avx512f,avx512bw,avx512vl,avx2,fma,f16c")]
pub(in crate::fast::kernels) unsafe fn matmul_f16_avx512(
    w: &[u16],
    kp: usize,
    x: Rows<f32>,
    mut y: RowsMut<f32>,
    wf: &mut [f32],
) {
    let (xp, xs, n) = (x.as_ptr(), x.stride(), x.rows());
    let (yp, ys) = (y.as_mut_ptr(), y.stride());
    tile(w.len() / kp, 1, 2, 1, |r, _, rr, _| {
        // SAFETY: as in `matmul_f32_avx512`; `wf` holds at least 2 * kp values (asserted by
        // the safe wrapper) and kp is a multiple of 16, so the whole rows are converted.
        unsafe {
            f16_to_f32_avx512(&w[r * kp..(r + rr) * kp], &mut wf[..rr * kp]);
            prefetch(&w[(r + rr) * kp..w.len().min((r + 2 * rr) * kp)]);
            rows_f32_avx512(rr, wf.as_ptr(), kp, xp, xs, yp.add(r), ys, n);
        }
    });
}

/// One f32 weight row x `T` tokens with AVX2: four 8-lane accumulators per token at offsets
/// 0/8/16/24 of each 32-value step, reduced as the AVX2 mat-vecs reduce them.
#[target_feature(enable = "avx2,fma,f16c")]
#[inline]
unsafe fn block_f32_avx2<const T: usize>(
    w: *const f32,
    kp: usize,
    x: *const f32,
    xs: usize,
    y: *mut f32,
    ys: usize,
) {
    let mut acc = [[_mm256_setzero_ps(); 4]; T];
    let mut i = 0;
    while i < kp {
        for j in 0..4 {
            // SAFETY: the row holds kp floats at w; i + 8j + 8 <= kp.
            let wv = unsafe { _mm256_loadu_ps(w.add(i + 8 * j)) };
            for (t, a) in acc.iter_mut().enumerate() {
                // SAFETY: token t's row holds kp floats at x + t*xs.
                let xv = unsafe { _mm256_loadu_ps(x.add(t * xs + i + 8 * j)) };
                a[j] = _mm256_fmadd_ps(wv, xv, a[j]);
            }
        }
        i += 32;
    }
    for (t, a) in acc.iter().enumerate() {
        let s = _mm256_add_ps(_mm256_add_ps(a[0], a[1]), _mm256_add_ps(a[2], a[3]));
        // SAFETY: output (t, row) lies inside y.
        unsafe { *y.add(t * ys) = hsum256(s) };
    }
}

/// One row (at `w`) against all `n` tokens, 3 tokens at a time: 12 accumulators + weight +
/// activation of the 16 registers.
#[target_feature(enable = "avx2,fma,f16c")]
unsafe fn row_f32_avx2(
    w: *const f32,
    kp: usize,
    x: *const f32,
    xs: usize,
    y: *mut f32,
    ys: usize,
    n: usize,
) {
    tile(1, n, 1, 3, |_, t, _, tt| {
        // SAFETY: tokens t .. t+tt < n, within the shapes the safe wrapper checked.
        unsafe {
            let (xt, yo) = (x.add(t * xs), y.add(t * ys));
            match tt {
                3 => block_f32_avx2::<3>(w, kp, xt, xs, yo, ys),
                2 => block_f32_avx2::<2>(w, kp, xt, xs, yo, ys),
                _ => block_f32_avx2::<1>(w, kp, xt, xs, yo, ys),
            }
        }
    });
}

#[target_feature(enable = "avx2,fma,f16c")]
pub(in crate::fast::kernels) unsafe fn matmul_f32_avx2(
    w: &[f32],
    kp: usize,
    x: Rows<f32>,
    mut y: RowsMut<f32>,
) {
    let (xp, xs, n) = (x.as_ptr(), x.stride(), x.rows());
    let (yp, ys) = (y.as_mut_ptr(), y.stride());
    for r in 0..w.len() / kp {
        prefetch(&w[(r + 1) * kp..w.len().min((r + 2) * kp)]);
        // SAFETY: row r < rows, within the shapes the safe wrapper checked.
        unsafe { row_f32_avx2(w.as_ptr().add(r * kp), kp, xp, xs, yp.add(r), ys, n) };
    }
}

/// f16 weights: each row converted once into `wf`, then multiplied as an f32 row (exact
/// conversion: the f32 arithmetic of `matvec_f16_avx2`).
#[target_feature(enable = "avx2,fma,f16c")]
pub(in crate::fast::kernels) unsafe fn matmul_f16_avx2(
    w: &[u16],
    kp: usize,
    x: Rows<f32>,
    mut y: RowsMut<f32>,
    wf: &mut [f32],
) {
    let (xp, xs, n) = (x.as_ptr(), x.stride(), x.rows());
    let (yp, ys) = (y.as_mut_ptr(), y.stride());
    for r in 0..w.len() / kp {
        // SAFETY: as in `matmul_f32_avx2`; `wf` holds at least kp values, kp a multiple of 8.
        unsafe {
            f16_to_f32_avx2(&w[r * kp..(r + 1) * kp], &mut wf[..kp]);
            prefetch(&w[(r + 1) * kp..w.len().min((r + 2) * kp)]);
            row_f32_avx2(wf.as_ptr(), kp, xp, xs, yp.add(r), ys, n);
        }
    }
}

/// `R` int8 rows x `T` tokens with VNNI, per (row, token) exactly the arithmetic of
/// `matvec_q8_avx512`. Token t's activations sit at `xq + t*kp`, `dx` / `bias + t*kp/4`.
#[target_feature(enable = "avx512f,avx512bw,avx512vl,avx512vnni,avx2,fma,f16c")]
#[inline]
#[allow(clippy::too_many_arguments)]
unsafe fn block_q8_avx512<const R: usize, const T: usize>(
    q: *const u8,
    s: *const f32,
    kp: usize,
    xq: *const i8,
    dx: *const f32,
    bias: *const i32,
    y: *mut f32,
    ys: usize,
) {
    let (nb, k4) = (kp / QBLOCK, kp / 4);
    let idx = _mm512_set_epi32(1, 1, 1, 1, 1, 1, 1, 1, 0, 0, 0, 0, 0, 0, 0, 0);
    let mut acc = [[_mm512_setzero_ps(); R]; T];
    for p in 0..kp / 64 {
        let mut wv = [_mm512_setzero_si512(); R];
        let mut sc = [_mm512_setzero_ps(); R];
        for r in 0..R {
            // SAFETY: row r spans q[r*kp ..] and s[r*nb ..]; p*64 < kp and 2p + 1 < nb.
            unsafe {
                wv[r] = _mm512_loadu_si512(q.add(r * kp + p * 64) as *const __m512i);
                let s2 = _mm_loadl_epi64(s.add(r * nb + 2 * p) as *const __m128i);
                sc[r] = _mm512_permutexvar_ps(idx, _mm512_castps128_ps512(_mm_castsi128_ps(s2)));
            }
        }
        for (t, at) in acc.iter_mut().enumerate() {
            // SAFETY: token t's rows: kp bytes of xq, kp/4 lanes of dx and bias.
            let (xv, bv, dv) = unsafe {
                (
                    _mm512_loadu_si512(xq.add(t * kp + p * 64) as *const __m512i),
                    _mm512_loadu_si512(bias.add(t * k4 + p * 16) as *const __m512i),
                    _mm512_loadu_ps(dx.add(t * k4 + p * 16)),
                )
            };
            for ((a, w), sc) in at.iter_mut().zip(&wv).zip(&sc) {
                let i = _mm512_dpbusd_epi32(bv, *w, xv);
                let f = _mm512_mul_ps(*sc, dv);
                *a = _mm512_fmadd_ps(_mm512_cvtepi32_ps(i), f, *a);
            }
        }
    }
    for (t, at) in acc.iter().enumerate() {
        for (r, a) in at.iter().enumerate() {
            // SAFETY: output (t, r) lies inside y.
            unsafe { *y.add(t * ys + r) = _mm512_reduce_add_ps(*a) };
        }
    }
}

#[target_feature(enable = "avx512f,avx512bw,avx512vl,avx512vnni,avx2,fma,f16c")]
pub(in crate::fast::kernels) unsafe fn matmul_q8_avx512(
    q: &[u8],
    s: &[f32],
    kp: usize,
    x: &QActs<'_>,
    mut y: RowsMut<f32>,
) {
    let (rows, nb, k4) = (q.len() / kp, kp / QBLOCK, kp / 4);
    let (n, ys, yp) = (y.rows(), y.stride(), y.as_mut_ptr());
    let (qp, sp) = (q.as_ptr(), s.as_ptr());
    let (xq, dx, bias) = (x.xq.as_ptr(), x.dx.as_ptr(), x.bias.as_ptr());
    // 2 rows x 4 tokens: 8 accumulators, 2 weights, 2 scales, 3 activation registers.
    tile(rows, n, 2, 4, |r, t, rr, tt| {
        if t == 0 {
            prefetch(&q[(r + rr) * kp..q.len().min((r + 2 * rr) * kp)]);
        }
        // SAFETY: as in `matmul_512`; activations of tokens t.. at t*kp, t*kp/4.
        unsafe {
            let (qr, sr, yo) = (qp.add(r * kp), sp.add(r * nb), yp.add(t * ys + r));
            let (xt, dt, bt) = (xq.add(t * kp), dx.add(t * k4), bias.add(t * k4));
            match (rr, tt) {
                (2, 4) => block_q8_avx512::<2, 4>(qr, sr, kp, xt, dt, bt, yo, ys),
                (2, 3) => block_q8_avx512::<2, 3>(qr, sr, kp, xt, dt, bt, yo, ys),
                (2, 2) => block_q8_avx512::<2, 2>(qr, sr, kp, xt, dt, bt, yo, ys),
                (2, _) => block_q8_avx512::<2, 1>(qr, sr, kp, xt, dt, bt, yo, ys),
                (_, 4) => block_q8_avx512::<1, 4>(qr, sr, kp, xt, dt, bt, yo, ys),
                (_, 3) => block_q8_avx512::<1, 3>(qr, sr, kp, xt, dt, bt, yo, ys),
                (_, 2) => block_q8_avx512::<1, 2>(qr, sr, kp, xt, dt, bt, yo, ys),
                _ => block_q8_avx512::<1, 1>(qr, sr, kp, xt, dt, bt, yo, ys),
            }
        }
    });
}

/// One int8 row x `T` tokens with AVX2, per token exactly the arithmetic of `matvec_q8_avx2`.
#[target_feature(enable = "avx2,fma,f16c")]
#[inline]
unsafe fn block_q8_avx2<const T: usize>(
    q: *const u8,
    s: *const f32,
    kp: usize,
    xq: *const i8,
    dx: *const f32,
    y: *mut f32,
    ys: usize,
) {
    let (nb, k4) = (kp / QBLOCK, kp / 4);
    let flip = _mm256_set1_epi8(-128);
    let ones = _mm256_set1_epi16(1);
    let mut acc = [_mm256_setzero_ps(); T];
    for b in 0..nb {
        // SAFETY: block b: 32 bytes at b*32 < kp of the row, one scale at b < nb.
        let (w, sc) = unsafe {
            (
                _mm256_xor_si256(_mm256_loadu_si256(q.add(b * 32) as *const __m256i), flip),
                _mm256_broadcast_ss(&*s.add(b)),
            )
        };
        let aw = _mm256_sign_epi8(w, w);
        for (t, a) in acc.iter_mut().enumerate() {
            // SAFETY: token t's rows: 32 bytes at b*32 < kp of xq, 8 lanes at b*8 < kp/4 of dx.
            let (xv, dv) = unsafe {
                (
                    _mm256_loadu_si256(xq.add(t * kp + b * 32) as *const __m256i),
                    _mm256_loadu_ps(dx.add(t * k4 + b * 8)),
                )
            };
            let sx = _mm256_sign_epi8(xv, w);
            let p32 = _mm256_madd_epi16(_mm256_maddubs_epi16(aw, sx), ones);
            *a = _mm256_fmadd_ps(_mm256_cvtepi32_ps(p32), _mm256_mul_ps(sc, dv), *a);
        }
    }
    for (t, a) in acc.iter().enumerate() {
        // SAFETY: output (t, row) lies inside y.
        unsafe { *y.add(t * ys) = hsum256(*a) };
    }
}

#[target_feature(enable = "avx2,fma,f16c")]
pub(in crate::fast::kernels) unsafe fn matmul_q8_avx2(
    q: &[u8],
    s: &[f32],
    kp: usize,
    x: &QActs<'_>,
    mut y: RowsMut<f32>,
) {
    let (rows, nb, k4) = (q.len() / kp, kp / QBLOCK, kp / 4);
    let (n, ys, yp) = (y.rows(), y.stride(), y.as_mut_ptr());
    let (qp, sp) = (q.as_ptr(), s.as_ptr());
    let (xq, dx) = (x.xq.as_ptr(), x.dx.as_ptr());
    // 1 row x 4 tokens: 4 accumulators and the row's sign split fit 16 registers.
    tile(rows, n, 1, 4, |r, t, _, tt| {
        if t == 0 {
            prefetch(&q[(r + 1) * kp..q.len().min((r + 2) * kp)]);
        }
        // SAFETY: as in `matmul_q8_avx512`.
        unsafe {
            let (qr, sr, yo) = (qp.add(r * kp), sp.add(r * nb), yp.add(t * ys + r));
            let (xt, dt) = (xq.add(t * kp), dx.add(t * k4));
            match tt {
                4 => block_q8_avx2::<4>(qr, sr, kp, xt, dt, yo, ys),
                3 => block_q8_avx2::<3>(qr, sr, kp, xt, dt, yo, ys),
                2 => block_q8_avx2::<2>(qr, sr, kp, xt, dt, yo, ys),
                _ => block_q8_avx2::<1>(qr, sr, kp, xt, dt, yo, ys),
            }
        }
    });
}
