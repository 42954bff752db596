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
pub use rows::{Rows, RowsMut};

mod rows;

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
pub const KEY_BLOCK: usize = 16;

/// Index of element `j` of position `t` in one head's blocked key cache
/// (`[position / KEY_BLOCK][head_dim][KEY_BLOCK]`): a block of 16 positions is one contiguous,
/// streamable `head_dim x 16` tile, and the scores of 16 positions are 16 independent lanes.
#[inline]
pub fn kblock_index(head_dim: usize, t: usize, j: usize) -> usize {
    (t / KEY_BLOCK * head_dim + j) * KEY_BLOCK + t % KEY_BLOCK
}

multiversion! {
    /// Attention scores against one head's blocked key cache:
    /// `scores[t] = scale * sum_j q[j] * k_t[j]` for `t < scores.len()`. `kb` holds
    /// `ceil(scores.len() / KEY_BLOCK)` full blocks of `q.len() x KEY_BLOCK` values.
    fn scores_blocked(q: &[f32], kb: &[f32], scale: f32, scores: &mut [f32]) {
        let head_dim = q.len();
        let blocks = kb.chunks_exact(head_dim * KEY_BLOCK);
        for (chunk, blk) in scores.chunks_mut(KEY_BLOCK).zip(blocks) {
            // Two accumulators (even / odd j) halve the add latency chain.
            let mut a0 = [0f32; KEY_BLOCK];
            let mut a1 = [0f32; KEY_BLOCK];
            let mut rows = blk.chunks_exact(2 * KEY_BLOCK);
            let mut qs = q.chunks_exact(2);
            for (r, qq) in (&mut rows).zip(&mut qs) {
                let (r0, r1) = r.split_at(KEY_BLOCK);
                for l in 0..KEY_BLOCK {
                    a0[l] += qq[0] * r0[l];
                    a1[l] += qq[1] * r1[l];
                }
            }
            let tail = (qs.remainder().first(), rows.remainder().get(..KEY_BLOCK));
            if let (Some(&qj), Some(r)) = tail {
                for l in 0..KEY_BLOCK {
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
    let head_dim = out.len();
    out.fill(0.0);
    for (pt, row) in p.iter().zip(v.chunks_exact(head_dim)) {
        for (o, x) in out.iter_mut().zip(row) {
            *o += pt * x;
        }
    }
}

multiversion! {
    /// `out = sum_t p[t] * v[t*head_dim .. (t+1)*head_dim]` with `head_dim = out.len()`,
    /// `t < p.len()`.
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

/// Quantized activations of one mat-vec input (see [`quantize_acts`]), or of a mat-mul's
/// tokens back to back.
pub struct QActs<'a> {
    pub xq: &'a [i8],
    pub dx: &'a [f32],
    pub bias: &'a [i32],
}

impl<'a> QActs<'a> {
    /// Token `t`'s activations of inputs of `kp` values each, quantized back to back.
    pub fn token(&self, t: usize, kp: usize) -> QActs<'a> {
        let k4 = kp / 4;
        QActs {
            xq: &self.xq[t * kp..(t + 1) * kp],
            dx: &self.dx[t * k4..(t + 1) * k4],
            bias: &self.bias[t * k4..(t + 1) * k4],
        }
    }
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
// Multi-token mat-muls (prefill). `w` as above; `x` holds the `n` activation rows (`kp` values
// each) and `y` the `n` output rows (one value per weight row), both strided views ([`Rows`]).
// The SIMD versions keep a block of weight rows x a block of tokens in registers, so a weight
// row is loaded (and converted) once per token block instead of once per token, and every
// output is summed in exactly the order of the matching mat-vec (same accumulators, same final
// reduction): a token's result is bit-for-bit the same in a batch as alone.

/// Checks the shapes the SIMD mat-muls rely on beyond what the views checked (`x`: `x_rows`
/// rows of `x_cols` values); returns the number of weight rows.
fn matmul_rows(
    kp: usize,
    w_len: usize,
    (x_rows, x_cols): (usize, usize),
    y: &RowsMut<f32>,
) -> usize {
    // Soundness of the SIMD kernels rests on these shapes: checked, not debug-asserted.
    assert!(kp > 0 && kp.is_multiple_of(PAD) && w_len.is_multiple_of(kp));
    let rows = w_len / kp;
    assert!(x_rows > 0 && x_rows == y.rows() && x_cols == kp && y.cols() == rows);
    rows
}

/// `y[t] = W x[t]` for every token row, f32 weights (bit-for-bit [`matvec_f32`] per token).
pub fn matmul_f32(isa: Isa, w: &[f32], kp: usize, x: Rows<f32>, mut y: RowsMut<f32>) {
    matmul_rows(kp, w.len(), (x.rows(), x.cols()), &y);
    match isa.level() {
        // SAFETY: features detected (see `Isa::detect`); shapes asserted by `matmul_rows`.
        #[cfg(target_arch = "x86_64")]
        IsaLevel::Avx512 => unsafe { x86::matmul_f32_avx512(w, kp, x, y) },
        #[cfg(target_arch = "x86_64")]
        IsaLevel::Avx2 => unsafe { x86::matmul_f32_avx2(w, kp, x, y) },
        _ => {
            // Row-major: the row stays in L1 while every token reads it.
            for (r, row) in w.chunks_exact(kp).enumerate() {
                for t in 0..x.rows() {
                    y.row_mut(t)[r] = dot_f32_scalar(row, x.row(t));
                }
            }
        }
    }
}

/// `y[t] = W x[t]` for every token row, f16 weights (bit-for-bit [`matvec_f16`] per token).
/// `wf` (at least `2 * kp` values) holds weight rows converted to f32: converted once per call,
/// not once per token.
pub fn matmul_f16(
    isa: Isa,
    w: &[u16],
    kp: usize,
    x: Rows<f32>,
    mut y: RowsMut<f32>,
    wf: &mut [f32],
) {
    matmul_rows(kp, w.len(), (x.rows(), x.cols()), &y);
    assert!(wf.len() >= 2 * kp);
    match isa.level() {
        // SAFETY: as in `matmul_f32`, plus the length of `wf` asserted above.
        #[cfg(target_arch = "x86_64")]
        IsaLevel::Avx512 => unsafe { x86::matmul_f16_avx512(w, kp, x, y, wf) },
        #[cfg(target_arch = "x86_64")]
        IsaLevel::Avx2 => unsafe { x86::matmul_f16_avx2(w, kp, x, y, wf) },
        _ => {
            for (r, row) in w.chunks_exact(kp).enumerate() {
                for t in 0..x.rows() {
                    y.row_mut(t)[r] = dot_f16_scalar(row, x.row(t));
                }
            }
        }
    }
}

/// `y[t] = W x[t]` for every token row, int8 weights against `x` holding one quantized
/// activation row per output row, back to back (`xq`: `n * kp`, `dx` / `bias`: `n * kp / 4`);
/// bit-for-bit [`matvec_q8`] per token.
pub fn matmul_q8(isa: Isa, q: &[u8], s: &[f32], kp: usize, x: &QActs<'_>, mut y: RowsMut<f32>) {
    let n = y.rows();
    let rows = matmul_rows(kp, q.len(), (n, kp), &y);
    assert!(s.len() == kp / QBLOCK * rows && x.xq.len() == n * kp);
    assert!(x.dx.len() == n * kp / 4 && x.bias.len() == n * kp / 4);
    match isa.level() {
        // SAFETY: as in `matmul_f32`, plus the activation and scale lengths asserted above.
        #[cfg(target_arch = "x86_64")]
        IsaLevel::Avx512 => unsafe { x86::matmul_q8_avx512(q, s, kp, x, y) },
        #[cfg(target_arch = "x86_64")]
        IsaLevel::Avx2 => unsafe { x86::matmul_q8_avx2(q, s, kp, x, y) },
        _ => {
            let nb = kp / QBLOCK;
            for (r, (row, sc)) in q.chunks_exact(kp).zip(s.chunks_exact(nb)).enumerate() {
                for t in 0..n {
                    y.row_mut(t)[r] = dot_q8_scalar(row, sc, &x.token(t, kp));
                }
            }
        }
    }
}

// The AVX-512 intrinsics are stable since Rust 1.89, hence the workspace's rust-version.
#[cfg(target_arch = "x86_64")]
mod x86;

#[cfg(test)]
mod tests;
