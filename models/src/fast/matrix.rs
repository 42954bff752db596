//! Packed weight matrices in the three [`WeightFormat`]s and the scratch space their mat-vecs use.

use super::WeightFormat;
use super::kernels::{self, Isa, QActs, QBLOCK, padded};

enum Packed {
    F32(Vec<f32>),
    /// IEEE half bits.
    F16(Vec<u16>),
    /// int8 values stored with a +128 offset, one f32 scale per 32-block.
    Q8 {
        q: Vec<u8>,
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
                let mut w = vec![0f32; rows * kp];
                for r in 0..rows {
                    w[r * kp..r * kp + cols].copy_from_slice(&values[r * cols..(r + 1) * cols]);
                }
                Packed::F32(w)
            }
            WeightFormat::F16 => {
                let mut w = vec![0u16; rows * kp];
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
                let mut q = vec![0u8; rows * kp];
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
}

/// Scratch for quantizing a mat-vec input to int8 (preallocated, reused by every mat-vec).
pub(crate) struct QScratch {
    xq: Vec<i8>,
    dx: Vec<f32>,
    bias: Vec<i32>,
}

impl QScratch {
    /// Scratch for inputs of up to `max_cols` values.
    pub(crate) fn new(max_cols: usize) -> QScratch {
        let kp = padded(max_cols);
        QScratch {
            xq: vec![0; kp],
            dx: vec![0.0; kp / 4],
            bias: vec![0; kp / 4],
        }
    }
}
