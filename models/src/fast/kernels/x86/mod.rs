//! Hand-written x86-64 SIMD mat-vecs (the multi-token mat-muls are in `matmul.rs`). Every
//! function requires the CPU features named in its `#[target_feature]` and the slice shapes
//! documented on its safe wrapper in the parent module (rows of `kp` values, `kp` a multiple of
//! 64, `x` of `kp` values); all loads stay inside those slices.
use super::{QActs, QBLOCK};
use std::arch::x86_64::*;

// The multi-token mat-muls (prefill), in their own room.
mod matmul;
pub(super) use matmul::{
    matmul_f16_avx2, matmul_f16_avx512, matmul_f32_avx2, matmul_f32_avx512, matmul_q8_avx2,
    matmul_q8_avx512,
};

#[target_feature(enable = "avx512f,avx512bw,avx512vl,avx2,fma,f16c")]
pub(super) unsafe fn matvec_f32_avx512(w: &[f32], kp: usize, x: &[f32], y: &mut [f32]) {
    let xp = x.as_ptr();
    for (r, o) in y.iter_mut().enumerate() {
        // SAFETY: row r spans w[r*kp .. (r+1)*kp]; i + 64 <= kp, so every 16-lane load at
        // offsets i, i+16, i+32, i+48 is in bounds of both the row and x.
        unsafe {
            let wp = w.as_ptr().add(r * kp);
            let (mut a0, mut a1, mut a2, mut a3) = (
                _mm512_setzero_ps(),
                _mm512_setzero_ps(),
                _mm512_setzero_ps(),
                _mm512_setzero_ps(),
            );
            let mut i = 0;
            while i < kp {
                a0 = _mm512_fmadd_ps(_mm512_loadu_ps(wp.add(i)), _mm512_loadu_ps(xp.add(i)), a0);
                a1 = _mm512_fmadd_ps(
                    _mm512_loadu_ps(wp.add(i + 16)),
                    _mm512_loadu_ps(xp.add(i + 16)),
                    a1,
                );
                a2 = _mm512_fmadd_ps(
                    _mm512_loadu_ps(wp.add(i + 32)),
                    _mm512_loadu_ps(xp.add(i + 32)),
                    a2,
                );
                a3 = _mm512_fmadd_ps(
                    _mm512_loadu_ps(wp.add(i + 48)),
                    _mm512_loadu_ps(xp.add(i + 48)),
                    a3,
                );
                i += 64;
            }
            *o = _mm512_reduce_add_ps(_mm512_add_ps(_mm512_add_ps(a0, a1), _mm512_add_ps(a2, a3)));
        }
    }
}

#[target_feature(enable = "avx2,fma,f16c")]
pub(super) unsafe fn matvec_f32_avx2(w: &[f32], kp: usize, x: &[f32], y: &mut [f32]) {
    let xp = x.as_ptr();
    for (r, o) in y.iter_mut().enumerate() {
        // SAFETY: as in the AVX-512 version, with 8-lane loads at i .. i+32 (i + 32 <= kp).
        unsafe {
            let wp = w.as_ptr().add(r * kp);
            let (mut a0, mut a1, mut a2, mut a3) = (
                _mm256_setzero_ps(),
                _mm256_setzero_ps(),
                _mm256_setzero_ps(),
                _mm256_setzero_ps(),
            );
            let mut i = 0;
            while i < kp {
                a0 = _mm256_fmadd_ps(_mm256_loadu_ps(wp.add(i)), _mm256_loadu_ps(xp.add(i)), a0);
                a1 = _mm256_fmadd_ps(
                    _mm256_loadu_ps(wp.add(i + 8)),
                    _mm256_loadu_ps(xp.add(i + 8)),
                    a1,
                );
                a2 = _mm256_fmadd_ps(
                    _mm256_loadu_ps(wp.add(i + 16)),
                    _mm256_loadu_ps(xp.add(i + 16)),
                    a2,
                );
                a3 = _mm256_fmadd_ps(
                    _mm256_loadu_ps(wp.add(i + 24)),
                    _mm256_loadu_ps(xp.add(i + 24)),
                    a3,
                );
                i += 32;
            }
            *o = hsum256(_mm256_add_ps(_mm256_add_ps(a0, a1), _mm256_add_ps(a2, a3)));
        }
    }
}

#[target_feature(enable = "avx2,fma")]
fn hsum256(v: __m256) -> f32 {
    let lo = _mm256_castps256_ps128(v);
    let hi = _mm256_extractf128_ps::<1>(v);
    let s = _mm_add_ps(lo, hi);
    let s = _mm_add_ps(s, _mm_movehl_ps(s, s));
    let s = _mm_add_ss(s, _mm_movehdup_ps(s));
    _mm_cvtss_f32(s)
}

/// Converts the largest multiple of 16 values; returns how many.
#[target_feature(enable = "avx512f,avx512bw,avx512vl,avx2,fma,f16c")]
pub(super) unsafe fn f16_to_f32_avx512(src: &[u16], dst: &mut [f32]) -> usize {
    let n = src.len().min(dst.len()) / 16 * 16;
    let mut i = 0;
    while i < n {
        // SAFETY: i + 16 <= n <= both lengths.
        unsafe {
            let h = _mm256_loadu_si256(src.as_ptr().add(i) as *const __m256i);
            _mm512_storeu_ps(dst.as_mut_ptr().add(i), _mm512_cvtph_ps(h));
        }
        i += 16;
    }
    n
}

/// Converts the largest multiple of 8 values; returns how many.
#[target_feature(enable = "avx2,fma,f16c")]
pub(super) unsafe fn f16_to_f32_avx2(src: &[u16], dst: &mut [f32]) -> usize {
    let n = src.len().min(dst.len()) / 8 * 8;
    let mut i = 0;
    while i < n {
        // SAFETY: i + 8 <= n <= both lengths.
        unsafe {
            let h = _mm_loadu_si128(src.as_ptr().add(i) as *const __m128i);
            _mm256_storeu_ps(dst.as_mut_ptr().add(i), _mm256_cvtph_ps(h));
        }
        i += 8;
    }
    n
}

#[target_feature(enable = "avx512f,avx512bw,avx512vl,avx2,fma,f16c")]
pub(super) unsafe fn matvec_f16_avx512(w: &[u16], kp: usize, x: &[f32], y: &mut [f32]) {
    let xp = x.as_ptr();
    for (r, o) in y.iter_mut().enumerate() {
        // SAFETY: row r spans w[r*kp .. (r+1)*kp] (u16); each iteration reads 64 halves
        // (4 x 32 bytes) at i < kp and 64 floats of x at i, all in bounds (i + 64 <= kp).
        unsafe {
            let wp = w.as_ptr().add(r * kp);
            let (mut a0, mut a1, mut a2, mut a3) = (
                _mm512_setzero_ps(),
                _mm512_setzero_ps(),
                _mm512_setzero_ps(),
                _mm512_setzero_ps(),
            );
            let mut i = 0;
            while i < kp {
                macro_rules! h {
                    ($k:expr) => {
                        _mm512_cvtph_ps(_mm256_loadu_si256(wp.add(i + $k) as *const __m256i))
                    };
                }
                a0 = _mm512_fmadd_ps(h!(0), _mm512_loadu_ps(xp.add(i)), a0);
                a1 = _mm512_fmadd_ps(h!(16), _mm512_loadu_ps(xp.add(i + 16)), a1);
                a2 = _mm512_fmadd_ps(h!(32), _mm512_loadu_ps(xp.add(i + 32)), a2);
                a3 = _mm512_fmadd_ps(h!(48), _mm512_loadu_ps(xp.add(i + 48)), a3);
                i += 64;
            }
            *o = _mm512_reduce_add_ps(_mm512_add_ps(_mm512_add_ps(a0, a1), _mm512_add_ps(a2, a3)));
        }
    }
}

#[target_feature(enable = "avx2,fma,f16c")]
pub(super) unsafe fn matvec_f16_avx2(w: &[u16], kp: usize, x: &[f32], y: &mut [f32]) {
    let xp = x.as_ptr();
    for (r, o) in y.iter_mut().enumerate() {
        // SAFETY: as in the AVX-512 version with 32 halves per iteration (i + 32 <= kp).
        unsafe {
            let wp = w.as_ptr().add(r * kp);
            let (mut a0, mut a1, mut a2, mut a3) = (
                _mm256_setzero_ps(),
                _mm256_setzero_ps(),
                _mm256_setzero_ps(),
                _mm256_setzero_ps(),
            );
            let mut i = 0;
            while i < kp {
                macro_rules! h {
                    ($k:expr) => {
                        _mm256_cvtph_ps(_mm_loadu_si128(wp.add(i + $k) as *const __m128i))
                    };
                }
                a0 = _mm256_fmadd_ps(h!(0), _mm256_loadu_ps(xp.add(i)), a0);
                a1 = _mm256_fmadd_ps(h!(8), _mm256_loadu_ps(xp.add(i + 8)), a1);
                a2 = _mm256_fmadd_ps(h!(16), _mm256_loadu_ps(xp.add(i + 16)), a2);
                a3 = _mm256_fmadd_ps(h!(24), _mm256_loadu_ps(xp.add(i + 24)), a3);
                i += 32;
            }
            *o = hsum256(_mm256_add_ps(_mm256_add_ps(a0, a1), _mm256_add_ps(a2, a3)));
        }
    }
}

/// int8 x int8 mat-vec with VNNI. Weights are stored as `q + 128` (u8) so `vpdpbusd`
/// (u8 x s8) applies; the accumulator starts at the activations' lane bias
/// `-128 * sum(x lane)`, which cancels the offset exactly. Each 64-byte step covers two
/// 32-blocks: lanes 0..8 belong to the first, 8..16 to the second, so the float scale vector
/// is `[dw0 * dx0; 8] ++ [dw1 * dx1; 8]`.
#[target_feature(enable = "avx512f,avx512bw,avx512vl,avx512vnni,avx2,fma,f16c")]
pub(super) unsafe fn matvec_q8_avx512(
    q: &[u8],
    s: &[f32],
    kp: usize,
    x: &QActs<'_>,
    y: &mut [f32],
) {
    let nb = kp / QBLOCK;
    let xq = x.xq.as_ptr();
    let dx = x.dx.as_ptr();
    let bias = x.bias.as_ptr();
    let idx = _mm512_set_epi32(1, 1, 1, 1, 1, 1, 1, 1, 0, 0, 0, 0, 0, 0, 0, 0);
    let mut r = 0;
    let rows = y.len();
    // Two rows per pass share the activation loads.
    while r + 2 <= rows {
        // SAFETY: rows r and r+1 span q[r*kp .. (r+2)*kp] and s[r*nb .. (r+2)*nb]; step p
        // reads 64 bytes at p*64 < kp of each row and of xq, 16 lanes at p*16 < kp/4 of dx and
        // bias, and two scales at 2p < nb of each row: all in bounds.
        unsafe {
            let q0 = q.as_ptr().add(r * kp);
            let q1 = q0.add(kp);
            let s0 = s.as_ptr().add(r * nb);
            let s1 = s0.add(nb);
            let mut a0 = _mm512_setzero_ps();
            let mut a1 = _mm512_setzero_ps();
            for p in 0..kp / 64 {
                let xv = _mm512_loadu_si512(xq.add(p * 64) as *const __m512i);
                let bv = _mm512_loadu_si512(bias.add(p * 16) as *const __m512i);
                let dv = _mm512_loadu_ps(dx.add(p * 16));
                let w0 = _mm512_loadu_si512(q0.add(p * 64) as *const __m512i);
                let w1 = _mm512_loadu_si512(q1.add(p * 64) as *const __m512i);
                let i0 = _mm512_dpbusd_epi32(bv, w0, xv);
                let i1 = _mm512_dpbusd_epi32(bv, w1, xv);
                let sc0 = _mm512_castps128_ps512(_mm_castsi128_ps(_mm_loadl_epi64(
                    s0.add(2 * p) as *const __m128i
                )));
                let sc1 = _mm512_castps128_ps512(_mm_castsi128_ps(_mm_loadl_epi64(
                    s1.add(2 * p) as *const __m128i
                )));
                let f0 = _mm512_mul_ps(_mm512_permutexvar_ps(idx, sc0), dv);
                let f1 = _mm512_mul_ps(_mm512_permutexvar_ps(idx, sc1), dv);
                a0 = _mm512_fmadd_ps(_mm512_cvtepi32_ps(i0), f0, a0);
                a1 = _mm512_fmadd_ps(_mm512_cvtepi32_ps(i1), f1, a1);
            }
            y[r] = _mm512_reduce_add_ps(a0);
            y[r + 1] = _mm512_reduce_add_ps(a1);
        }
        r += 2;
    }
    if r < rows {
        // SAFETY: as above for the single last row.
        unsafe {
            let q0 = q.as_ptr().add(r * kp);
            let s0 = s.as_ptr().add(r * nb);
            let mut a0 = _mm512_setzero_ps();
            for p in 0..kp / 64 {
                let xv = _mm512_loadu_si512(xq.add(p * 64) as *const __m512i);
                let bv = _mm512_loadu_si512(bias.add(p * 16) as *const __m512i);
                let dv = _mm512_loadu_ps(dx.add(p * 16));
                let w0 = _mm512_loadu_si512(q0.add(p * 64) as *const __m512i);
                let i0 = _mm512_dpbusd_epi32(bv, w0, xv);
                let sc0 = _mm512_castps128_ps512(_mm_castsi128_ps(_mm_loadl_epi64(
                    s0.add(2 * p) as *const __m128i
                )));
                let f0 = _mm512_mul_ps(_mm512_permutexvar_ps(idx, sc0), dv);
                a0 = _mm512_fmadd_ps(_mm512_cvtepi32_ps(i0), f0, a0);
            }
            y[r] = _mm512_reduce_add_ps(a0);
        }
    }
}

/// int8 x int8 mat-vec with AVX2 (`vpmaddubsw`). The signed weight `q = stored ^ 0x80` is
/// split into `|q|` (u8) and the activation takes q's sign, so pair sums stay within i16
/// (2 * 127 * 127 < 32768) — the llama.cpp q8_0 trick.
#[target_feature(enable = "avx2,fma,f16c")]
pub(super) unsafe fn matvec_q8_avx2(q: &[u8], s: &[f32], kp: usize, x: &QActs<'_>, y: &mut [f32]) {
    let nb = kp / QBLOCK;
    let xq = x.xq.as_ptr();
    let dx = x.dx.as_ptr();
    let flip = _mm256_set1_epi8(-128);
    let ones = _mm256_set1_epi16(1);
    for (r, o) in y.iter_mut().enumerate() {
        // SAFETY: row r spans q[r*kp .. (r+1)*kp] and s[r*nb .. (r+1)*nb]; block b reads 32
        // bytes at b*32 < kp of the row and of xq, 8 lanes at b*8 < kp/4 of dx, one scale.
        unsafe {
            let qr = q.as_ptr().add(r * kp);
            let sr = s.as_ptr().add(r * nb);
            let mut acc = _mm256_setzero_ps();
            for b in 0..nb {
                let w =
                    _mm256_xor_si256(_mm256_loadu_si256(qr.add(b * 32) as *const __m256i), flip);
                let xv = _mm256_loadu_si256(xq.add(b * 32) as *const __m256i);
                let aw = _mm256_sign_epi8(w, w);
                let sx = _mm256_sign_epi8(xv, w);
                let p16 = _mm256_maddubs_epi16(aw, sx);
                let p32 = _mm256_madd_epi16(p16, ones);
                let f = _mm256_mul_ps(
                    _mm256_broadcast_ss(&*sr.add(b)),
                    _mm256_loadu_ps(dx.add(b * 8)),
                );
                acc = _mm256_fmadd_ps(_mm256_cvtepi32_ps(p32), f, acc);
            }
            *o = hsum256(acc);
        }
    }
}
