//! The numeric kernels of the fast decode path.
//!
//! Every hot kernel exists in up to three versions, chosen once at build time by [`Isa::detect`]:
//! hand-written AVX-512 (F + BW + VL + VNNI) intrinsics, hand-written AVX2 + FMA + F16C
//! intrinsics, and a portable scalar version written in fixed-width chunks so that LLVM
//! vectorises it for whatever baseline the crate is compiled for. The simple element-wise kernels
//! (attention scores, softmax, SiLU, ...) are written once as `#[inline(always)]` generic bodies and
//! instantiated inside `#[target_feature]` wrappers, so the same source is auto-vectorised at
//! 512 / 256 bits.
//!
//! Packed-row conventions shared with `matrix.rs`: every packed weight row and every activation
//! vector fed to a mat-vec is zero-padded to a multiple of [`PAD`] elements, so the SIMD loops
//! have no tails.

/// Row padding (elements) of packed matrices and of the activation vectors fed to them.
pub const PAD: usize = 64;
/// Quantization block (elements) of the int8 format: one f32 scale per 32 weights / activations.
pub const QBLOCK: usize = 32;

/// Round `n` up to a multiple of [`PAD`].
#[inline]
pub fn padded(n: usize) -> usize {
    n.div_ceil(PAD) * PAD
}

pub use isa::{Isa, IsaLevel};

/// The instruction set in its own room, so that nothing else can build an [`Isa`]: "an `Isa`
/// came from [`Isa::detect`]" holds by construction, and the kernels' `unsafe` dispatch on it
/// is sound.
mod isa {
    /// The instruction-set levels, slowest first.
    #[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
    pub enum IsaLevel {
        /// Portable Rust (auto-vectorised for the compile-time baseline).
        Scalar,
        /// AVX2 + FMA + F16C.
        Avx2,
        /// AVX-512 F/BW/VL/VNNI (+ AVX2/FMA/F16C).
        Avx512,
    }

    /// An instruction set this CPU runs: made only by [`Isa::detect`], [`Isa::SCALAR`] (always
    /// safe) or capping one of those ([`Isa::min`]).
    #[derive(Clone, Copy, Debug, PartialEq, Eq)]
    pub struct Isa(IsaLevel);

    impl Isa {
        /// The portable path, which every CPU runs.
        pub const SCALAR: Isa = Isa(IsaLevel::Scalar);

        /// The best instruction set this CPU supports.
        pub fn detect() -> Isa {
            #[cfg(target_arch = "x86_64")]
            {
                let avx2 = is_x86_feature_detected!("avx2")
                    && is_x86_feature_detected!("fma")
                    && is_x86_feature_detected!("f16c");
                if avx2
                    && is_x86_feature_detected!("avx512f")
                    && is_x86_feature_detected!("avx512bw")
                    && is_x86_feature_detected!("avx512vl")
                    && is_x86_feature_detected!("avx512vnni")
                {
                    return Isa(IsaLevel::Avx512);
                }
                if avx2 {
                    return Isa(IsaLevel::Avx2);
                }
            }
            Isa::SCALAR
        }

        /// Which level this is (what the kernels dispatch on).
        #[inline]
        pub fn level(self) -> IsaLevel {
            self.0
        }

        /// The slower of `self` and `cap` (to force a fallback path, e.g. in tests): never
        /// above what was detected.
        pub fn min(self, cap: Isa) -> Isa {
            Isa(self.0.min(cap.0))
        }

        /// Every instruction set this CPU can run, slowest first (to check each path in tests).
        pub fn available() -> Vec<Isa> {
            let best = Isa::detect();
            [IsaLevel::Scalar, IsaLevel::Avx2, IsaLevel::Avx512]
                .into_iter()
                .filter(|&l| l <= best.0)
                .map(Isa)
                .collect()
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Multi-versioning of the generic element-wise kernels.

/// Defines `pub fn $name(isa, args..)` dispatching the `#[inline(always)]` generic body `$body`
/// to AVX-512 / AVX2 `#[target_feature]` instantiations (auto-vectorised by LLVM).
macro_rules! multiversion {
    ($(#[$doc:meta])* fn $name:ident($($arg:ident : $ty:ty),* $(,)?) $(-> $ret:ty)? $body:block) => {
        $(#[$doc])*
        #[inline]
        pub fn $name(isa: Isa, $($arg: $ty),*) $(-> $ret)? {
            #[inline(always)]
            fn generic($($arg: $ty),*) $(-> $ret)? $body

            #[cfg(target_arch = "x86_64")]
            #[target_feature(enable = "avx512f,avx512bw,avx512vl,avx2,fma,f16c")]
            fn v512($($arg: $ty),*) $(-> $ret)? { generic($($arg),*) }

            #[cfg(target_arch = "x86_64")]
            #[target_feature(enable = "avx2,fma,f16c")]
            fn v256($($arg: $ty),*) $(-> $ret)? { generic($($arg),*) }

            match isa.level() {
                // SAFETY: `isa` comes from `Isa::detect` (or is capped below it; nothing else
                // builds one), so the CPU has the features these instantiations were compiled for.
                #[cfg(target_arch = "x86_64")]
                IsaLevel::Avx512 => unsafe { v512($($arg),*) },
                #[cfg(target_arch = "x86_64")]
                IsaLevel::Avx2 => unsafe { v256($($arg),*) },
                _ => generic($($arg),*),
            }
        }
    };
}

/// `exp(x)` to ~2 ulp for x in [-87, 88] (clamped outside), written with plain arithmetic and bit
/// casts so that loops over it vectorise (no libm call).
#[inline(always)]
pub fn exp_approx(x: f32) -> f32 {
    const LOG2E: f32 = std::f32::consts::LOG2_E;
    const LN2_HI: f32 = 0.693_359_4;
    const LN2_LO: f32 = -2.121_944_4e-4;
    // 1.5 * 2^23: adding it rounds to an integer held in the low mantissa bits.
    const MAGIC: f32 = 12_582_912.0;
    let x = x.clamp(-87.0, 88.0);
    let t = x * LOG2E + MAGIC;
    let n = t - MAGIC;
    let ni = t.to_bits().wrapping_sub(MAGIC.to_bits()) as i32;
    let r = x - n * LN2_HI - n * LN2_LO;
    // Taylor/minimax polynomial of exp on |r| <= ln2/2.
    let p = 1.0 / 720.0;
    let p = p * r + 1.0 / 120.0;
    let p = p * r + 1.0 / 24.0;
    let p = p * r + 1.0 / 6.0;
    let p = p * r + 0.5;
    let p = p * r + 1.0;
    let p = p * r + 1.0;
    p * f32::from_bits(((ni + 127) as u32) << 23)
}

multiversion! {
    /// `y[i] += x[i]` (residual add).
    fn add_assign(y: &mut [f32], x: &[f32]) {
        for (a, b) in y.iter_mut().zip(x) {
            *a += *b;
        }
    }
}

multiversion! {
    /// Weight-only LayerNorm: `out = (x - mean) / sqrt(var + eps) * w` (biased variance).
    fn layer_norm(x: &[f32], w: &[f32], eps: f32, out: &mut [f32]) {
        let n = x.len() as f32;
        let mut acc = [0f32; 16];
        let mut chunks = x.chunks_exact(16);
        for c in &mut chunks {
            for i in 0..16 {
                acc[i] += c[i];
            }
        }
        let mut sum: f32 = acc.iter().sum();
        sum += chunks.remainder().iter().sum::<f32>();
        let mean = sum / n;
        let mut acc = [0f32; 16];
        let mut chunks = x.chunks_exact(16);
        for c in &mut chunks {
            for i in 0..16 {
                let d = c[i] - mean;
                acc[i] += d * d;
            }
        }
        let mut var: f32 = acc.iter().sum();
        var += chunks.remainder().iter().map(|v| (v - mean) * (v - mean)).sum::<f32>();
        let inv = 1.0 / (var / n + eps).sqrt();
        for ((o, v), g) in out.iter_mut().zip(x).zip(w) {
            *o = (*v - mean) * inv * *g;
        }
    }
}

multiversion! {
    /// SwiGLU gate: `out[i] = silu(a[i]) * b[i]` with `silu(x) = x / (1 + exp(-x))`.
    fn swiglu(a: &[f32], b: &[f32], out: &mut [f32]) {
        for ((o, x), y) in out.iter_mut().zip(a).zip(b) {
            *o = *x / (1.0 + exp_approx(-*x)) * *y;
        }
    }
}

/// Positions per block of the blocked key cache.
pub const KB: usize = 16;

/// Index of element `j` of position `t` in one head's blocked key cache
/// (`[position / KB][head_dim][KB]`): a block of 16 positions is one contiguous, streamable
/// `head_dim x 16` tile, and the scores of 16 positions are 16 independent lanes.
#[inline]
pub fn kblock_index(hd: usize, t: usize, j: usize) -> usize {
    (t / KB * hd + j) * KB + t % KB
}

multiversion! {
    /// Attention scores against one head's blocked key cache:
    /// `scores[t] = scale * sum_j q[j] * k_t[j]` for `t < scores.len()`. `kb` holds
    /// `ceil(scores.len() / KB)` full blocks of `q.len() x KB` values.
    fn scores_blocked(q: &[f32], kb: &[f32], scale: f32, scores: &mut [f32]) {
        let hd = q.len();
        for (chunk, blk) in scores.chunks_mut(KB).zip(kb.chunks_exact(hd * KB)) {
            // Two accumulators (even / odd j) halve the add latency chain.
            let mut a0 = [0f32; KB];
            let mut a1 = [0f32; KB];
            let mut rows = blk.chunks_exact(2 * KB);
            let mut qs = q.chunks_exact(2);
            for (r, qq) in (&mut rows).zip(&mut qs) {
                let (r0, r1) = r.split_at(KB);
                for l in 0..KB {
                    a0[l] += qq[0] * r0[l];
                    a1[l] += qq[1] * r1[l];
                }
            }
            if let (Some(&qj), Some(r)) = (qs.remainder().first(), rows.remainder().get(..KB)) {
                for l in 0..KB {
                    a0[l] += qj * r[l];
                }
            }
            for ((o, x), y) in chunk.iter_mut().zip(&a0).zip(&a1) {
                *o = (x + y) * scale;
            }
        }
    }
}

multiversion! {
    /// In-place softmax of `s` (numerically stable).
    fn softmax(s: &mut [f32]) {
        let mut m = f32::NEG_INFINITY;
        for v in s.iter() {
            m = m.max(*v);
        }
        let mut acc = [0f32; 16];
        let mut chunks = s.chunks_exact_mut(16);
        for c in &mut chunks {
            for i in 0..16 {
                c[i] = exp_approx(c[i] - m);
                acc[i] += c[i];
            }
        }
        let mut sum: f32 = acc.iter().sum();
        for v in chunks.into_remainder() {
            *v = exp_approx(*v - m);
            sum += *v;
        }
        let inv = 1.0 / sum;
        for v in s.iter_mut() {
            *v *= inv;
        }
    }
}

/// `out = sum_t p[t] * v[t]` for a compile-time head size: the accumulators stay in registers.
#[inline(always)]
fn weighted_sum_fixed<const HD: usize>(p: &[f32], v: &[f32], out: &mut [f32]) {
    let mut a0 = [0f32; HD];
    let mut a1 = [0f32; HD];
    let mut rows = v.chunks_exact(2 * HD);
    let mut ps = p.chunks_exact(2);
    for (r, pp) in (&mut rows).zip(&mut ps) {
        let (r0, r1) = (&r[..HD], &r[HD..2 * HD]);
        for j in 0..HD {
            a0[j] += pp[0] * r0[j];
            a1[j] += pp[1] * r1[j];
        }
    }
    if let (Some(&pt), Some(r)) = (ps.remainder().first(), rows.remainder().get(..HD)) {
        for j in 0..HD {
            a0[j] += pt * r[j];
        }
    }
    for ((o, x), y) in out.iter_mut().zip(&a0).zip(&a1) {
        *o = x + y;
    }
}

/// `weighted_sum_fixed` for any head size (accumulates in `out`).
#[inline(always)]
fn weighted_sum_any(p: &[f32], v: &[f32], out: &mut [f32]) {
    let hd = out.len();
    out.fill(0.0);
    for (pt, row) in p.iter().zip(v.chunks_exact(hd)) {
        for (o, x) in out.iter_mut().zip(row) {
            *o += pt * x;
        }
    }
}

multiversion! {
    /// `out = sum_t p[t] * v[t*hd .. (t+1)*hd]` with `hd = out.len()`, `t < p.len()`.
    fn weighted_sum(p: &[f32], v: &[f32], out: &mut [f32]) {
        let v = &v[..p.len() * out.len()];
        match out.len() {
            16 => weighted_sum_fixed::<16>(p, v, out),
            32 => weighted_sum_fixed::<32>(p, v, out),
            64 => weighted_sum_fixed::<64>(p, v, out),
            128 => weighted_sum_fixed::<128>(p, v, out),
            _ => weighted_sum_any(p, v, out),
        }
    }
}

/// Converts IEEE half bits to f32 (`dst.len() == src.len()`), with F16C where available.
pub fn f16_to_f32(isa: Isa, src: &[u16], dst: &mut [f32]) {
    let n = src.len().min(dst.len());
    let (src, dst) = (&src[..n], &mut dst[..n]);
    let done = match isa.level() {
        // SAFETY: features detected (see `Isa::detect`); both slices hold `n` values.
        #[cfg(target_arch = "x86_64")]
        IsaLevel::Avx512 => unsafe { x86::f16_to_f32_avx512(src, dst) },
        #[cfg(target_arch = "x86_64")]
        IsaLevel::Avx2 => unsafe { x86::f16_to_f32_avx2(src, dst) },
        _ => 0,
    };
    for (d, s) in dst[done..].iter_mut().zip(&src[done..]) {
        *d = half::f16::from_bits(*s).to_f32();
    }
}

/// f32 to IEEE half bits, saturating at the largest finite half (a key or value beyond
/// +-65504 keeps its sign and stays finite instead of becoming infinite).
#[inline]
pub fn f32_to_f16_sat(x: f32) -> u16 {
    half::f16::from_f32(x.clamp(-65504.0, 65504.0)).to_bits()
}

// ---------------------------------------------------------------------------------------------
// Activation quantization (int8, one scale per 32 values).

/// Rounds to the nearest integer, ties to even, for |x| < 2^22, without a libm call (so loops
/// over it vectorise on any baseline): adding 1.5 * 2^23 leaves no fraction bits.
#[inline(always)]
fn round_small(x: f32) -> f32 {
    const MAGIC: f32 = 12_582_912.0;
    (x + MAGIC) - MAGIC
}

/// `max(0, |x[i]|...)` (NaNs ignored) of one quantization block, lane-wise then as a tree so it
/// vectorises (a sequential `f32::max` chain does not); max is exact and order-independent on
/// these non-negative values, so the result is that of the sequential loop.
#[inline(always)]
fn abs_max(xs: &[f32]) -> f32 {
    let mut m = [0f32; 16];
    for c in xs.chunks_exact(16) {
        for i in 0..16 {
            m[i] = m[i].max(c[i].abs());
        }
    }
    for w in [8, 4, 2, 1] {
        for i in 0..w {
            m[i] = m[i].max(m[i + w]);
        }
    }
    m[0]
}

multiversion! {
    /// Quantizes `x` (length a multiple of [`PAD`]) to int8 blocks of 32 for the int8 mat-vec.
    /// Fills `xq` (`x.len()` values), `dx` (`x.len() / 4`: each block's scale repeated over its 8
    /// four-element lanes) and `bias` (`x.len() / 4`: `-128 * (sum of the lane's four int8 values)`,
    /// the correction for the +128 offset of the unsigned weights in the VNNI kernel).
    fn quantize_acts(x: &[f32], xq: &mut [i8], dx: &mut [f32], bias: &mut [i32]) {
        for (((xs, qs), ds), bs) in x
            .chunks_exact(QBLOCK)
            .zip(xq.chunks_exact_mut(QBLOCK))
            .zip(dx.chunks_exact_mut(QBLOCK / 4))
            .zip(bias.chunks_exact_mut(QBLOCK / 4))
        {
            let d = abs_max(xs) / 127.0;
            let id = if d > 0.0 { 1.0 / d } else { 0.0 };
            for (q, v) in qs.iter_mut().zip(xs) {
                // |v * id| <= 127 by construction; the clamp guards against rounding at the edge.
                *q = round_small(v * id).clamp(-127.0, 127.0) as i8;
            }
            for ((dl, bl), ql) in ds.iter_mut().zip(bs.iter_mut()).zip(qs.chunks_exact(4)) {
                *dl = d;
                *bl = -128 * (ql[0] as i32 + ql[1] as i32 + ql[2] as i32 + ql[3] as i32);
            }
        }
    }
}

/// Quantizes one weight row to int8 blocks of 32 stored with a +128 offset (`u8`), returning the
/// per-block scales through `scales`.
pub fn quantize_weight_row(w: &[f32], q: &mut [u8], scales: &mut [f32]) {
    for (b, ws) in w.chunks_exact(QBLOCK).enumerate() {
        let amax = ws.iter().fold(0f32, |m, v| m.max(v.abs()));
        let d = amax / 127.0;
        let id = if d > 0.0 { 1.0 / d } else { 0.0 };
        scales[b] = d;
        for (o, v) in q[b * QBLOCK..(b + 1) * QBLOCK].iter_mut().zip(ws) {
            let qi = round_small(v * id).clamp(-127.0, 127.0) as i32;
            *o = (qi + 128) as u8;
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Mat-vec kernels. `w` holds `y.len()` rows of `kp` (padded) values; `x` has `kp` values.

/// `y = W x` for f32 weights.
pub fn matvec_f32(isa: Isa, w: &[f32], kp: usize, x: &[f32], y: &mut [f32]) {
    // Soundness of the SIMD kernels rests on these shapes: checked, not debug-asserted.
    assert!(kp.is_multiple_of(PAD) && x.len() == kp && w.len() == kp * y.len());
    match isa.level() {
        // SAFETY: features detected (see `Isa::detect`); slice lengths asserted above.
        #[cfg(target_arch = "x86_64")]
        IsaLevel::Avx512 => unsafe { x86::matvec_f32_avx512(w, kp, x, y) },
        #[cfg(target_arch = "x86_64")]
        IsaLevel::Avx2 => unsafe { x86::matvec_f32_avx2(w, kp, x, y) },
        _ => {
            for (r, o) in y.iter_mut().enumerate() {
                *o = dot_f32_scalar(&w[r * kp..(r + 1) * kp], x);
            }
        }
    }
}

#[inline]
fn dot_f32_scalar(a: &[f32], b: &[f32]) -> f32 {
    let mut acc = [0f32; 16];
    for (ca, cb) in a.chunks_exact(16).zip(b.chunks_exact(16)) {
        for i in 0..16 {
            acc[i] += ca[i] * cb[i];
        }
    }
    acc.iter().sum()
}

/// `y = W x` for f16 weights (`w` holds IEEE half bits).
pub fn matvec_f16(isa: Isa, w: &[u16], kp: usize, x: &[f32], y: &mut [f32]) {
    // Soundness of the SIMD kernels rests on these shapes: checked, not debug-asserted.
    assert!(kp.is_multiple_of(PAD) && x.len() == kp && w.len() == kp * y.len());
    match isa.level() {
        // SAFETY: as in `matvec_f32`.
        #[cfg(target_arch = "x86_64")]
        IsaLevel::Avx512 => unsafe { x86::matvec_f16_avx512(w, kp, x, y) },
        #[cfg(target_arch = "x86_64")]
        IsaLevel::Avx2 => unsafe { x86::matvec_f16_avx2(w, kp, x, y) },
        _ => {
            for (r, o) in y.iter_mut().enumerate() {
                *o = dot_f16_scalar(&w[r * kp..(r + 1) * kp], x);
            }
        }
    }
}

#[inline]
fn dot_f16_scalar(a: &[u16], b: &[f32]) -> f32 {
    let mut acc = [0f32; 16];
    for (ca, cb) in a.chunks_exact(16).zip(b.chunks_exact(16)) {
        for i in 0..16 {
            acc[i] += half::f16::from_bits(ca[i]).to_f32() * cb[i];
        }
    }
    acc.iter().sum()
}

/// Quantized activations of one mat-vec input (see [`quantize_acts`]).
pub struct QActs<'a> {
    pub xq: &'a [i8],
    pub dx: &'a [f32],
    pub bias: &'a [i32],
}

/// `y = W x` for int8 weights (`q`: rows of `kp` offset-u8 values, `s`: rows of `kp / 32`
/// scales) against int8-quantized activations.
pub fn matvec_q8(isa: Isa, q: &[u8], s: &[f32], kp: usize, x: &QActs<'_>, y: &mut [f32]) {
    // Soundness of the SIMD kernels rests on these shapes: checked, not debug-asserted.
    assert!(kp.is_multiple_of(PAD) && x.xq.len() == kp && q.len() == kp * y.len());
    assert!(s.len() == kp / QBLOCK * y.len() && x.dx.len() == kp / 4 && x.bias.len() == kp / 4);
    match isa.level() {
        // SAFETY: as in `matvec_f32`.
        #[cfg(target_arch = "x86_64")]
        IsaLevel::Avx512 => unsafe { x86::matvec_q8_avx512(q, s, kp, x, y) },
        #[cfg(target_arch = "x86_64")]
        IsaLevel::Avx2 => unsafe { x86::matvec_q8_avx2(q, s, kp, x, y) },
        _ => {
            let nb = kp / QBLOCK;
            for (r, o) in y.iter_mut().enumerate() {
                *o = dot_q8_scalar(&q[r * kp..(r + 1) * kp], &s[r * nb..(r + 1) * nb], x);
            }
        }
    }
}

/// One int8 row (`kp` offset-u8 values, `kp / 32` scales) against quantized activations.
#[inline]
fn dot_q8_scalar(row: &[u8], sc: &[f32], x: &QActs<'_>) -> f32 {
    let mut acc = 0f32;
    for (b, s) in sc.iter().enumerate() {
        let wb = &row[b * QBLOCK..(b + 1) * QBLOCK];
        let xb = &x.xq[b * QBLOCK..(b + 1) * QBLOCK];
        let mut isum = 0i32;
        for i in 0..QBLOCK {
            isum += (wb[i] as i32 - 128) * xb[i] as i32;
        }
        acc += isum as f32 * (s * x.dx[b * (QBLOCK / 4)]);
    }
    acc
}

// ---------------------------------------------------------------------------------------------
// Multi-token mat-muls (prefill). `w` as above; `n` activation rows, row `t` of `x` at `t * xs`
// (`kp` values), row `t` of `y` at `t * ys` (`rows` values). The SIMD versions keep a block of
// weight rows x a block of tokens in registers, so a weight row is loaded (and converted) once
// per token block instead of once per token, and every output is summed in exactly the order
// of the matching mat-vec (same accumulators, same final reduction): a token's result is
// bit-for-bit the same in a batch as alone.

/// Checks the shapes the SIMD mat-muls rely on; returns the number of weight rows.
fn matmul_rows(kp: usize, w_len: usize, x: (usize, usize), y: (usize, usize), n: usize) -> usize {
    // Soundness of the SIMD kernels rests on these shapes: checked, not debug-asserted.
    assert!(kp > 0 && kp.is_multiple_of(PAD) && w_len.is_multiple_of(kp));
    let rows = w_len / kp;
    let ((x_len, xs), (y_len, ys)) = (x, y);
    assert!(n > 0 && xs >= kp && x_len >= (n - 1) * xs + kp);
    assert!(ys >= rows && y_len >= (n - 1) * ys + rows);
    rows
}

/// `y[t] = W x[t]` for `n` tokens, f32 weights (bit-for-bit [`matvec_f32`] per token).
#[allow(clippy::too_many_arguments)]
pub fn matmul_f32(
    isa: Isa,
    w: &[f32],
    kp: usize,
    x: &[f32],
    xs: usize,
    y: &mut [f32],
    ys: usize,
    n: usize,
) {
    let rows = matmul_rows(kp, w.len(), (x.len(), xs), (y.len(), ys), n);
    match isa.level() {
        // SAFETY: features detected (see `Isa::detect`); shapes asserted by `matmul_rows`.
        #[cfg(target_arch = "x86_64")]
        IsaLevel::Avx512 => unsafe { x86::matmul_f32_avx512(w, kp, x, xs, y, ys, n) },
        #[cfg(target_arch = "x86_64")]
        IsaLevel::Avx2 => unsafe { x86::matmul_f32_avx2(w, kp, x, xs, y, ys, n) },
        _ => {
            // Row-major: the row stays in L1 while every token reads it.
            for r in 0..rows {
                let row = &w[r * kp..(r + 1) * kp];
                for t in 0..n {
                    y[t * ys + r] = dot_f32_scalar(row, &x[t * xs..t * xs + kp]);
                }
            }
        }
    }
}

/// `y[t] = W x[t]` for `n` tokens, f16 weights (bit-for-bit [`matvec_f16`] per token). `wf`
/// (at least `2 * kp` values) holds weight rows converted to f32: converted once per call, not
/// once per token.
#[allow(clippy::too_many_arguments)]
pub fn matmul_f16(
    isa: Isa,
    w: &[u16],
    kp: usize,
    x: &[f32],
    xs: usize,
    y: &mut [f32],
    ys: usize,
    n: usize,
    wf: &mut [f32],
) {
    let rows = matmul_rows(kp, w.len(), (x.len(), xs), (y.len(), ys), n);
    assert!(wf.len() >= 2 * kp);
    match isa.level() {
        // SAFETY: as in `matmul_f32`, plus the length of `wf` asserted above.
        #[cfg(target_arch = "x86_64")]
        IsaLevel::Avx512 => unsafe { x86::matmul_f16_avx512(w, kp, x, xs, y, ys, n, wf) },
        #[cfg(target_arch = "x86_64")]
        IsaLevel::Avx2 => unsafe { x86::matmul_f16_avx2(w, kp, x, xs, y, ys, n, wf) },
        _ => {
            for r in 0..rows {
                let row = &w[r * kp..(r + 1) * kp];
                for t in 0..n {
                    y[t * ys + r] = dot_f16_scalar(row, &x[t * xs..t * xs + kp]);
                }
            }
        }
    }
}

/// `y[t] = W x[t]` for `n` tokens, int8 weights against `x` holding `n` quantized activation
/// rows back to back (`xq`: `n * kp`, `dx` / `bias`: `n * kp / 4`); bit-for-bit [`matvec_q8`]
/// per token.
#[allow(clippy::too_many_arguments)]
pub fn matmul_q8(
    isa: Isa,
    q: &[u8],
    s: &[f32],
    kp: usize,
    x: &QActs<'_>,
    y: &mut [f32],
    ys: usize,
    n: usize,
) {
    let rows = matmul_rows(kp, q.len(), (x.xq.len(), kp), (y.len(), ys), n);
    assert!(s.len() == kp / QBLOCK * rows && x.xq.len() == n * kp);
    assert!(x.dx.len() == n * kp / 4 && x.bias.len() == n * kp / 4);
    match isa.level() {
        // SAFETY: as in `matmul_f32`, plus the activation and scale lengths asserted above.
        #[cfg(target_arch = "x86_64")]
        IsaLevel::Avx512 => unsafe { x86::matmul_q8_avx512(q, s, kp, x, y, ys, n) },
        #[cfg(target_arch = "x86_64")]
        IsaLevel::Avx2 => unsafe { x86::matmul_q8_avx2(q, s, kp, x, y, ys, n) },
        _ => {
            let (nb, k4) = (kp / QBLOCK, kp / 4);
            for r in 0..rows {
                let (row, sc) = (&q[r * kp..(r + 1) * kp], &s[r * nb..(r + 1) * nb]);
                for t in 0..n {
                    let acts = QActs {
                        xq: &x.xq[t * kp..(t + 1) * kp],
                        dx: &x.dx[t * k4..(t + 1) * k4],
                        bias: &x.bias[t * k4..(t + 1) * k4],
                    };
                    y[t * ys + r] = dot_q8_scalar(row, sc, &acts);
                }
            }
        }
    }
}

// The AVX-512 intrinsics are stable since Rust 1.89, hence the workspace's rust-version.
#[cfg(target_arch = "x86_64")]
mod x86 {
    //! Hand-written x86-64 SIMD mat-vecs. Every function requires the CPU features named in its
    //! `#[target_feature]` and the slice shapes documented on its safe wrapper in the parent
    //! module (rows of `kp` values, `kp` a multiple of 64, `x` of `kp` values); all loads stay
    //! inside those slices.
    use super::{QActs, QBLOCK};
    use std::arch::x86_64::*;

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
                    a0 =
                        _mm512_fmadd_ps(_mm512_loadu_ps(wp.add(i)), _mm512_loadu_ps(xp.add(i)), a0);
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
                *o = _mm512_reduce_add_ps(_mm512_add_ps(
                    _mm512_add_ps(a0, a1),
                    _mm512_add_ps(a2, a3),
                ));
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
                    a0 =
                        _mm256_fmadd_ps(_mm256_loadu_ps(wp.add(i)), _mm256_loadu_ps(xp.add(i)), a0);
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
                *o = _mm512_reduce_add_ps(_mm512_add_ps(
                    _mm512_add_ps(a0, a1),
                    _mm512_add_ps(a2, a3),
                ));
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
                        s0.add(2 * p) as *const __m128i,
                    )));
                    let sc1 = _mm512_castps128_ps512(_mm_castsi128_ps(_mm_loadl_epi64(
                        s1.add(2 * p) as *const __m128i,
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
                        s0.add(2 * p) as *const __m128i,
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
    pub(super) unsafe fn matvec_q8_avx2(
        q: &[u8],
        s: &[f32],
        kp: usize,
        x: &QActs<'_>,
        y: &mut [f32],
    ) {
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
                    let w = _mm256_xor_si256(
                        _mm256_loadu_si256(qr.add(b * 32) as *const __m256i),
                        flip,
                    );
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

    // -----------------------------------------------------------------------------------------
    // Multi-token mat-muls. A block kernel computes `R` weight rows x `T` tokens with all its
    // accumulators in registers; the drivers tile rows and tokens with the largest block that
    // fits and smaller blocks at the edges. The accumulators and reductions of each (row, token)
    // pair are those of the mat-vec, so the results are bit-for-bit the same.

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
    pub(super) unsafe fn matmul_f32_avx512(
        w: &[f32],
        kp: usize,
        x: &[f32],
        xs: usize,
        y: &mut [f32],
        ys: usize,
        n: usize,
    ) {
        let (xp, yp) = (x.as_ptr(), y.as_mut_ptr());
        tile(w.len() / kp, 1, 2, 1, |r, _, rr, _| {
            prefetch(&w[(r + rr) * kp..w.len().min((r + 2 * rr) * kp)]);
            // SAFETY: rows r .. r+rr < rows, within the shapes the safe wrapper checked.
            unsafe { rows_f32_avx512(rr, w.as_ptr().add(r * kp), kp, xp, xs, yp.add(r), ys, n) }
        });
    }

    /// f16 weights: each pair of rows is converted once into `wf` (L1) and then multiplied as
    /// f32 rows; the conversion is exact, so this is the f32 arithmetic of `matvec_f16_avx512`.
    #[target_feature(enable = "avx512f,avx512bw,avx512vl,avx2,fma,f16c")]
    #[allow(clippy::too_many_arguments)]
    pub(super) unsafe fn matmul_f16_avx512(
        w: &[u16],
        kp: usize,
        x: &[f32],
        xs: usize,
        y: &mut [f32],
        ys: usize,
        n: usize,
        wf: &mut [f32],
    ) {
        let (xp, yp) = (x.as_ptr(), y.as_mut_ptr());
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
    pub(super) unsafe fn matmul_f32_avx2(
        w: &[f32],
        kp: usize,
        x: &[f32],
        xs: usize,
        y: &mut [f32],
        ys: usize,
        n: usize,
    ) {
        let (xp, yp) = (x.as_ptr(), y.as_mut_ptr());
        for r in 0..w.len() / kp {
            prefetch(&w[(r + 1) * kp..w.len().min((r + 2) * kp)]);
            // SAFETY: row r < rows, within the shapes the safe wrapper checked.
            unsafe { row_f32_avx2(w.as_ptr().add(r * kp), kp, xp, xs, yp.add(r), ys, n) };
        }
    }

    /// f16 weights: each row converted once into `wf`, then multiplied as an f32 row (exact
    /// conversion: the f32 arithmetic of `matvec_f16_avx2`).
    #[target_feature(enable = "avx2,fma,f16c")]
    #[allow(clippy::too_many_arguments)]
    pub(super) unsafe fn matmul_f16_avx2(
        w: &[u16],
        kp: usize,
        x: &[f32],
        xs: usize,
        y: &mut [f32],
        ys: usize,
        n: usize,
        wf: &mut [f32],
    ) {
        let (xp, yp) = (x.as_ptr(), y.as_mut_ptr());
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
                    sc[r] =
                        _mm512_permutexvar_ps(idx, _mm512_castps128_ps512(_mm_castsi128_ps(s2)));
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
    pub(super) unsafe fn matmul_q8_avx512(
        q: &[u8],
        s: &[f32],
        kp: usize,
        x: &QActs<'_>,
        y: &mut [f32],
        ys: usize,
        n: usize,
    ) {
        let (rows, nb, k4) = (q.len() / kp, kp / QBLOCK, kp / 4);
        let (qp, sp, yp) = (q.as_ptr(), s.as_ptr(), y.as_mut_ptr());
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
    pub(super) unsafe fn matmul_q8_avx2(
        q: &[u8],
        s: &[f32],
        kp: usize,
        x: &QActs<'_>,
        y: &mut [f32],
        ys: usize,
        n: usize,
    ) {
        let (rows, nb, k4) = (q.len() / kp, kp / QBLOCK, kp / 4);
        let (qp, sp, yp) = (q.as_ptr(), s.as_ptr(), y.as_mut_ptr());
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
}

#[cfg(test)]
mod tests {
    use super::*;

    fn lcg(seed: &mut u64) -> f32 {
        *seed = seed
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        ((*seed >> 40) as f32 / (1u64 << 24) as f32) * 2.0 - 1.0
    }

    #[test]
    fn f16_conversion_agrees_on_every_isa() {
        let mut seed = 5u64;
        let x: Vec<f32> = (0..77).map(|_| lcg(&mut seed) * 100.0).collect();
        let h: Vec<u16> = x.iter().map(|v| f32_to_f16_sat(*v)).collect();
        for isa in Isa::available() {
            let mut y = vec![0f32; 77];
            f16_to_f32(isa, &h, &mut y);
            for (a, b) in y.iter().zip(&x) {
                assert!((a - b).abs() <= b.abs() * 1e-3, "{isa:?}: {a} vs {b}");
            }
        }
        assert_eq!(half::f16::from_bits(f32_to_f16_sat(1e9)).to_f32(), 65504.0);
        assert_eq!(
            half::f16::from_bits(f32_to_f16_sat(-1e9)).to_f32(),
            -65504.0
        );
    }

    #[test]
    fn exp_approx_is_accurate() {
        let mut x = -87.0f32;
        while x < 88.0 {
            let e = x.exp();
            let a = exp_approx(x);
            assert!(((a - e) / e).abs() < 1e-6, "exp({x}) = {e}, approx {a}");
            x += 0.0137;
        }
        assert_eq!(exp_approx(f32::NEG_INFINITY), exp_approx(-87.0));
        assert!(exp_approx(-1000.0) < 1e-37);
    }

    #[test]
    fn matvecs_agree_on_every_isa() {
        let mut seed = 7u64;
        let (rows, kp) = (37, 192);
        let w: Vec<f32> = (0..rows * kp).map(|_| lcg(&mut seed)).collect();
        let x: Vec<f32> = (0..kp).map(|_| lcg(&mut seed) * 3.0).collect();
        let exact: Vec<f32> = (0..rows)
            .map(|r| {
                (0..kp)
                    .map(|i| w[r * kp + i] as f64 * x[i] as f64)
                    .sum::<f64>() as f32
            })
            .collect();
        let wh: Vec<u16> = w
            .iter()
            .map(|v| half::f16::from_f32(*v).to_bits())
            .collect();
        let mut wq = vec![0u8; rows * kp];
        let mut ws = vec![0f32; rows * kp / QBLOCK];
        for r in 0..rows {
            quantize_weight_row(
                &w[r * kp..(r + 1) * kp],
                &mut wq[r * kp..(r + 1) * kp],
                &mut ws[r * kp / QBLOCK..(r + 1) * kp / QBLOCK],
            );
        }
        let mut xq = vec![0i8; kp];
        let mut dx = vec![0f32; kp / 4];
        let mut bias = vec![0i32; kp / 4];
        quantize_acts(Isa::detect(), &x, &mut xq, &mut dx, &mut bias);
        let acts = QActs {
            xq: &xq,
            dx: &dx,
            bias: &bias,
        };
        let mut q8_ref = None::<Vec<f32>>;
        for isa in Isa::available() {
            let mut y = vec![0f32; rows];
            matvec_f32(isa, &w, kp, &x, &mut y);
            for (a, b) in y.iter().zip(&exact) {
                assert!((a - b).abs() < 1e-4, "{isa:?} f32: {a} vs {b}");
            }
            matvec_f16(isa, &wh, kp, &x, &mut y);
            for (a, b) in y.iter().zip(&exact) {
                assert!((a - b).abs() < 0.05, "{isa:?} f16: {a} vs {b}");
            }
            matvec_q8(isa, &wq, &ws, kp, &acts, &mut y);
            for (a, b) in y.iter().zip(&exact) {
                assert!((a - b).abs() < 0.3, "{isa:?} q8: {a} vs {b}");
            }
            // All ISAs compute the same integer block sums, so they agree tightly.
            match &q8_ref {
                None => q8_ref = Some(y.clone()),
                Some(r0) => {
                    for (a, b) in y.iter().zip(r0) {
                        assert!(
                            (a - b).abs() < 1e-4,
                            "{isa:?} q8 differs from scalar: {a} vs {b}"
                        );
                    }
                }
            }
        }
    }

    /// The quantization equals its plain sequential definition bit for bit on every ISA
    /// (zero blocks, signed zeros, ties, NaN lanes included).
    #[test]
    fn quantize_acts_matches_its_definition() {
        let mut seed = 23u64;
        let n = 256;
        let mut x: Vec<f32> = (0..n).map(|_| lcg(&mut seed) * 4.0).collect();
        x[32..64].fill(0.0);
        x[64..96].fill(-0.0);
        x[96] = f32::NAN;
        x[130] = 127.0;
        x[131] = -63.5;
        x[160..192]
            .iter_mut()
            .for_each(|v| *v = (*v * 8.0).round() / 8.0);
        let mut want_q = vec![0i8; n];
        let mut want_d = vec![0f32; n / 4];
        let mut want_b = vec![0i32; n / 4];
        for b in 0..n / QBLOCK {
            let xs = &x[b * QBLOCK..(b + 1) * QBLOCK];
            let amax = xs.iter().fold(0f32, |m, v| m.max(v.abs()));
            let d = amax / 127.0;
            let id = if d > 0.0 { 1.0 / d } else { 0.0 };
            for (i, v) in xs.iter().enumerate() {
                want_q[b * QBLOCK + i] = round_small(v * id).clamp(-127.0, 127.0) as i8;
            }
            for l in 0..QBLOCK / 4 {
                let k = b * QBLOCK / 4 + l;
                want_d[k] = d;
                want_b[k] = -128 * (0..4).map(|j| want_q[4 * k + j] as i32).sum::<i32>();
            }
        }
        for isa in Isa::available() {
            let (mut q, mut d, mut b) = (vec![0i8; n], vec![0f32; n / 4], vec![0i32; n / 4]);
            quantize_acts(isa, &x, &mut q, &mut d, &mut b);
            assert_eq!(q, want_q, "{isa:?}");
            assert_eq!(bits(&d), bits(&want_d), "{isa:?}");
            assert_eq!(b, want_b, "{isa:?}");
        }
    }

    fn bits(v: &[f32]) -> Vec<u32> {
        v.iter().map(|x| x.to_bits()).collect()
    }

    /// Every token of a multi-token mat-mul equals the mat-vec of that token, bit for bit, on
    /// every ISA, for odd row and token counts (edge blocks) and strided rows.
    #[test]
    fn matmuls_equal_matvecs_bit_for_bit() {
        let mut seed = 17u64;
        for (rows, kp, n) in [(37, 192, 7), (2, 64, 1), (5, 128, 12), (64, 64, 16)] {
            let (xs, ys) = (kp + 64, rows + 3);
            let w: Vec<f32> = (0..rows * kp).map(|_| lcg(&mut seed)).collect();
            let x: Vec<f32> = (0..n * xs).map(|_| lcg(&mut seed) * 3.0).collect();
            let wh: Vec<u16> = w
                .iter()
                .map(|v| half::f16::from_f32(*v).to_bits())
                .collect();
            let mut wq = vec![0u8; rows * kp];
            let mut ws = vec![0f32; rows * kp / QBLOCK];
            for r in 0..rows {
                quantize_weight_row(
                    &w[r * kp..(r + 1) * kp],
                    &mut wq[r * kp..(r + 1) * kp],
                    &mut ws[r * kp / QBLOCK..(r + 1) * kp / QBLOCK],
                );
            }
            let mut xq = vec![0i8; n * kp];
            let mut dx = vec![0f32; n * kp / 4];
            let mut bias = vec![0i32; n * kp / 4];
            for t in 0..n {
                let k4 = kp / 4;
                quantize_acts(
                    Isa::detect(),
                    &x[t * xs..t * xs + kp],
                    &mut xq[t * kp..(t + 1) * kp],
                    &mut dx[t * k4..(t + 1) * k4],
                    &mut bias[t * k4..(t + 1) * k4],
                );
            }
            let all = QActs {
                xq: &xq,
                dx: &dx,
                bias: &bias,
            };
            for isa in Isa::available() {
                let mut y = vec![f32::NAN; n * ys];
                let mut one = vec![0f32; rows];
                let check = |y: &[f32], t: usize, one: &[f32], what: &str| {
                    for r in 0..rows {
                        assert_eq!(
                            y[t * ys + r].to_bits(),
                            one[r].to_bits(),
                            "{isa:?} {what} rows {rows} n {n}: token {t} row {r}"
                        );
                    }
                };
                matmul_f32(isa, &w, kp, &x, xs, &mut y, ys, n);
                for t in 0..n {
                    matvec_f32(isa, &w, kp, &x[t * xs..t * xs + kp], &mut one);
                    check(&y, t, &one, "f32");
                }
                matmul_f16(isa, &wh, kp, &x, xs, &mut y, ys, n, &mut vec![0.0; 2 * kp]);
                for t in 0..n {
                    matvec_f16(isa, &wh, kp, &x[t * xs..t * xs + kp], &mut one);
                    check(&y, t, &one, "f16");
                }
                matmul_q8(isa, &wq, &ws, kp, &all, &mut y, ys, n);
                for t in 0..n {
                    let k4 = kp / 4;
                    let acts = QActs {
                        xq: &xq[t * kp..(t + 1) * kp],
                        dx: &dx[t * k4..(t + 1) * k4],
                        bias: &bias[t * k4..(t + 1) * k4],
                    };
                    matvec_q8(isa, &wq, &ws, kp, &acts, &mut one);
                    check(&y, t, &one, "q8");
                }
                // The gaps between output rows are not written.
                assert!(y[rows..ys].iter().all(|v| v.is_nan()));
            }
        }
    }

    #[test]
    fn elementwise_kernels_agree_on_every_isa() {
        let mut seed = 3u64;
        for hd in [6, 7, 16, 64] {
            attention_kernels(hd, 37, &mut seed);
        }
        let n = 19;
        for isa in Isa::available() {
            let raw: Vec<f32> = (0..n).map(|_| lcg(&mut seed) * 3.0).collect();
            let a: Vec<f32> = (0..n).map(|_| lcg(&mut seed) * 10.0).collect();
            let mut g = vec![0f32; n];
            swiglu(isa, &a, &raw, &mut g);
            for i in 0..n {
                let e = a[i] / (1.0 + (-a[i]).exp()) * raw[i];
                assert!((g[i] - e).abs() < 1e-5 * (1.0 + e.abs()));
            }
            let w: Vec<f32> = (0..n).map(|_| lcg(&mut seed)).collect();
            layer_norm(isa, &a, &w, 1e-5, &mut g);
            let mean: f32 = a.iter().sum::<f32>() / n as f32;
            let var: f32 = a.iter().map(|x| (x - mean) * (x - mean)).sum::<f32>() / n as f32;
            for i in 0..n {
                let e = (a[i] - mean) / (var + 1e-5).sqrt() * w[i];
                assert!((g[i] - e).abs() < 1e-5);
            }
        }
    }

    fn attention_kernels(hd: usize, n: usize, seed: &mut u64) {
        let q: Vec<f32> = (0..hd).map(|_| lcg(seed)).collect();
        let keys: Vec<f32> = (0..n * hd).map(|_| lcg(seed)).collect();
        let mut kb = vec![f32::NAN; n.div_ceil(KB) * KB * hd];
        for t in 0..n {
            for j in 0..hd {
                kb[kblock_index(hd, t, j)] = keys[t * hd + j];
            }
        }
        // Unwritten tail positions of the last block hold garbage; it must not leak.
        for x in kb.iter_mut().filter(|x| x.is_nan()) {
            *x = 1e30;
        }
        let v: Vec<f32> = (0..n * hd).map(|_| lcg(seed)).collect();
        for isa in Isa::available() {
            let mut s = vec![0f32; n];
            scores_blocked(isa, &q, &kb, 0.5, &mut s);
            for t in 0..n {
                let e: f32 = (0..hd).map(|j| q[j] * keys[t * hd + j]).sum::<f32>() * 0.5;
                assert!((s[t] - e).abs() < 1e-5, "hd {hd} t {t}: {} vs {e}", s[t]);
            }
            let raw = s.clone();
            softmax(isa, &mut s);
            let m = raw.iter().cloned().fold(f32::NEG_INFINITY, f32::max);
            let z: f32 = raw.iter().map(|x| (x - m).exp()).sum();
            for t in 0..n {
                assert!((s[t] - (raw[t] - m).exp() / z).abs() < 1e-6);
            }
            let mut out = vec![0f32; hd];
            weighted_sum(isa, &s, &v, &mut out);
            for j in 0..hd {
                let e: f32 = (0..n).map(|t| s[t] * v[t * hd + j]).sum();
                assert!((out[j] - e).abs() < 1e-5);
            }
        }
    }
}
