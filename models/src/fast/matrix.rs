//! Packed weight matrices in the three [`WeightFormat`]s and the scratch space their mat-vecs use.

use std::ops::{Deref, DerefMut};

use super::WeightFormat;
use super::kernels::{self, Isa, QActs, QBLOCK, Rows, RowsMut, padded};

/// A fixed-length, zeroed buffer whose first element sits on a 64-byte boundary, so the kernels'
/// 64-byte loads of weight rows, cache tiles and activation rows (all multiples of 64 bytes
/// long) never straddle two cache lines. A `Vec` only guarantees the element's alignment, and
/// where the allocator puts it changes with the buffer's size: that made the kernels' speed a
/// matter of luck. Over-allocates 64 bytes and starts at the first aligned element.
pub(crate) struct Aligned<T> {
    buf: Vec<T>,
    start: usize,
    len: usize,
}

impl<T: Copy + Default> Aligned<T> {
    /// `len` values of `T::default()` (zero for the numeric types used here).
    pub(crate) fn zeroed(len: usize) -> Self {
        let size = std::mem::size_of::<T>().max(1);
        let buf = vec![T::default(); len + 64 / size];
        // The Vec is aligned to `T`, so the distance to the next line is a whole number of T.
        let start = (64 - buf.as_ptr() as usize % 64) % 64 / size;
        Aligned { buf, start, len }
    }
}

impl<T> Deref for Aligned<T> {
    type Target = [T];
    fn deref(&self) -> &[T] {
        &self.buf[self.start..self.start + self.len]
    }
}

impl<T> DerefMut for Aligned<T> {
    fn deref_mut(&mut self) -> &mut [T] {
        &mut self.buf[self.start..self.start + self.len]
    }
}

enum Packed {
    F32(Aligned<f32>),
    /// IEEE half bits.
    F16(Aligned<u16>),
    /// int8 values stored with a +128 offset, one f32 scale per 32-block.
    Q8 {
        q: Aligned<u8>,
        scales: Vec<f32>,
    },
}

/// A `[rows, cols]` weight matrix (candle `Linear` layout: one row per output), rows zero-padded
/// to `kp = padded(cols)` values.
pub(crate) struct Matrix {
    rows: usize,
    cols: usize,
    kp: usize,
    data: Packed,
}

impl Matrix {
    /// Packs row-major f32 values (`rows * cols`). The caller has checked the length.
    pub(crate) fn pack(values: &[f32], rows: usize, cols: usize, format: WeightFormat) -> Matrix {
        debug_assert_eq!(values.len(), rows * cols);
        let kp = padded(cols);
        let mut rowbuf = vec![0f32; kp];
        let data = match format {
            WeightFormat::F32 => {
                let mut w = Aligned::zeroed(rows * kp);
                for r in 0..rows {
                    w[r * kp..r * kp + cols].copy_from_slice(&values[r * cols..(r + 1) * cols]);
                }
                Packed::F32(w)
            }
            WeightFormat::F16 => {
                let mut w = Aligned::zeroed(rows * kp);
                for r in 0..rows {
                    for (o, v) in w[r * kp..r * kp + cols]
                        .iter_mut()
                        .zip(&values[r * cols..(r + 1) * cols])
                    {
                        *o = half::f16::from_f32(*v).to_bits();
                    }
                }
                Packed::F16(w)
            }
            WeightFormat::Q8 => {
                let nb = kp / QBLOCK;
                let mut q = Aligned::zeroed(rows * kp);
                let mut scales = vec![0f32; rows * nb];
                for r in 0..rows {
                    rowbuf[..cols].copy_from_slice(&values[r * cols..(r + 1) * cols]);
                    kernels::quantize_weight_row(
                        &rowbuf,
                        &mut q[r * kp..(r + 1) * kp],
                        &mut scales[r * nb..(r + 1) * nb],
                    );
                }
                Packed::Q8 { q, scales }
            }
        };
        Matrix {
            rows,
            cols,
            kp,
            data,
        }
    }

    pub(crate) fn cols(&self) -> usize {
        self.cols
    }

    /// Bytes of packed weights (for reporting).
    pub(crate) fn bytes(&self) -> usize {
        match &self.data {
            Packed::F32(w) => w.len() * 4,
            Packed::F16(w) => w.len() * 2,
            Packed::Q8 { q, scales } => q.len() + scales.len() * 4,
        }
    }

    /// `y = W x`. `x` must hold `padded(cols)` values whose padding is zero; `y` holds `rows`.
    /// Allocation-free; `scratch` must have been sized with [`QScratch::new`] for at least `cols`.
    #[inline]
    pub(crate) fn matvec(&self, isa: Isa, x: &[f32], y: &mut [f32], scratch: &mut QScratch) {
        let x = &x[..self.kp];
        let y = &mut y[..self.rows];
        match &self.data {
            Packed::F32(w) => kernels::matvec_f32(isa, w, self.kp, x, y),
            Packed::F16(w) => kernels::matvec_f16(isa, w, self.kp, x, y),
            Packed::Q8 { q, scales } => {
                let n4 = self.kp / 4;
                let (xq, dx, bias) = (
                    &mut scratch.xq[..self.kp],
                    &mut scratch.dx[..n4],
                    &mut scratch.bias[..n4],
                );
                kernels::quantize_acts(isa, x, xq, dx, bias);
                let acts = QActs { xq, dx, bias };
                kernels::matvec_q8(isa, q, scales, self.kp, &acts, y);
            }
        }
    }

    /// `y[t] = W x[t]` for every token row: `x` rows hold `padded(cols)` values whose padding is
    /// zero, `y` rows one value per weight row. Each token's result is bit-for-bit its
    /// [`matvec`](Self::matvec); the q8 activations are quantized per token. Allocation-free;
    /// `scratch` must have room for `x.rows()` inputs.
    pub(crate) fn matmul(
        &self,
        isa: Isa,
        x: Rows<f32>,
        mut y: RowsMut<f32>,
        scratch: &mut QScratch,
    ) {
        assert_eq!(x.rows(), y.rows());
        if x.rows() == 1 {
            // One token: the decode step's mat-vec (same result, tuned for a single input).
            return self.matvec(isa, x.row(0), y.row_mut(0), scratch);
        }
        match &self.data {
            Packed::F32(w) => kernels::matmul_f32(isa, w, self.kp, x, y),
            Packed::F16(w) => {
                let wf = &mut scratch.wf[..2 * self.kp];
                kernels::matmul_f16(isa, w, self.kp, x, y, wf)
            }
            Packed::Q8 { q, scales } => {
                let (n, kp, k4) = (x.rows(), self.kp, self.kp / 4);
                let (xq, dx, bias) = (
                    &mut scratch.xq[..n * kp],
                    &mut scratch.dx[..n * k4],
                    &mut scratch.bias[..n * k4],
                );
                let token_rows = xq
                    .chunks_exact_mut(kp)
                    .zip(dx.chunks_exact_mut(k4))
                    .zip(bias.chunks_exact_mut(k4));
                for (t, ((xq, dx), bias)) in token_rows.enumerate() {
                    kernels::quantize_acts(isa, x.row(t), xq, dx, bias);
                }
                let acts = QActs { xq, dx, bias };
                kernels::matmul_q8(isa, q, scales, kp, &acts, y);
            }
        }
    }
}

/// Scratch of the mat-vecs / mat-muls (preallocated, reused by every call): inputs quantized to
/// int8, and f16 weight rows converted to f32.
pub(crate) struct QScratch {
    xq: Aligned<i8>,
    dx: Aligned<f32>,
    bias: Aligned<i32>,
    wf: Aligned<f32>,
}

impl QScratch {
    /// Scratch for up to `max_tokens` inputs of up to `max_cols` values each.
    pub(crate) fn new(max_cols: usize, max_tokens: usize) -> QScratch {
        let kp = padded(max_cols) * max_tokens;
        QScratch {
            xq: Aligned::zeroed(kp),
            dx: Aligned::zeroed(kp / 4),
            bias: Aligned::zeroed(kp / 4),
            wf: Aligned::zeroed(2 * padded(max_cols)),
        }
    }
}
