//! Bounds-checked matrix views over flat `f32` slices and the one matrix product the fast path
//! uses, `gemm::gemm` (the crate candle's CPU backend uses; AVX-512 / AVX2 kernels picked at run
//! time).
//!
//! A view is `rows x cols` with element `(r, c)` at `data[r * row_stride + c * col_stride]`, so a
//! transpose ([`View::t`]) or a head's columns inside a wider row (`row_stride` > `cols`) cost
//! nothing. [`matmul`] checks that every index the product touches lies inside the slices; that
//! check is what makes the `unsafe` call sound (the borrow checker already guarantees that the
//! destination does not alias the inputs).

use gemm::Parallelism;

/// How many threads a product may use: [`Parallelism::None`] inside tasks that are already
/// spread over the cores, all of rayon's pool for the big projections.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Threads {
    One,
    All,
}

impl Threads {
    fn parallelism(self) -> Parallelism {
        match self {
            Threads::One => Parallelism::None,
            Threads::All => match rayon::current_num_threads() {
                0 | 1 => Parallelism::None,
                n => Parallelism::Rayon(n),
            },
        }
    }
}

/// Index one past the last element a `rows x cols` view with these strides touches.
fn extent(rows: usize, cols: usize, row_stride: usize, col_stride: usize) -> usize {
    if rows == 0 || cols == 0 {
        0
    } else {
        (rows - 1) * row_stride + (cols - 1) * col_stride + 1
    }
}

/// A read-only matrix view (see the module docs).
#[derive(Debug, Clone, Copy)]
pub(crate) struct View<'a> {
    data: &'a [f32],
    rows: usize,
    cols: usize,
    row_stride: usize,
    col_stride: usize,
}

impl<'a> View<'a> {
    /// Row-major `rows x cols` whose rows are `row_stride` apart (`row_stride >= cols`).
    pub(crate) fn strided(data: &'a [f32], rows: usize, cols: usize, row_stride: usize) -> Self {
        let v = Self {
            data,
            rows,
            cols,
            row_stride,
            col_stride: 1,
        };
        assert!(
            extent(rows, cols, row_stride, 1) <= data.len(),
            "view {rows}x{cols} (row stride {row_stride}) exceeds a slice of {}",
            data.len()
        );
        v
    }

    /// Contiguous row-major `rows x cols`.
    pub(crate) fn rows(data: &'a [f32], rows: usize, cols: usize) -> Self {
        Self::strided(data, rows, cols, cols)
    }

    /// The transpose (no copy).
    pub(crate) fn t(self) -> Self {
        Self {
            data: self.data,
            rows: self.cols,
            cols: self.rows,
            row_stride: self.col_stride,
            col_stride: self.row_stride,
        }
    }
}

/// A writable row-major matrix view.
#[derive(Debug)]
pub(crate) struct ViewMut<'a> {
    data: &'a mut [f32],
    rows: usize,
    cols: usize,
    row_stride: usize,
}

impl<'a> ViewMut<'a> {
    pub(crate) fn strided(
        data: &'a mut [f32],
        rows: usize,
        cols: usize,
        row_stride: usize,
    ) -> Self {
        assert!(
            extent(rows, cols, row_stride, 1) <= data.len(),
            "view {rows}x{cols} (row stride {row_stride}) exceeds a slice of {}",
            data.len()
        );
        Self {
            data,
            rows,
            cols,
            row_stride,
        }
    }

    pub(crate) fn rows(data: &'a mut [f32], rows: usize, cols: usize) -> Self {
        Self::strided(data, rows, cols, cols)
    }
}

/// `dst = a @ b`, or `dst += a @ b` when `accumulate`.
pub(crate) fn matmul(dst: ViewMut, a: View, b: View, accumulate: bool, threads: Threads) {
    assert_eq!(a.cols, b.rows, "matmul: inner dimensions differ");
    assert_eq!(dst.rows, a.rows, "matmul: dst rows != a rows");
    assert_eq!(dst.cols, b.cols, "matmul: dst cols != b cols");
    let (m, n, k) = (a.rows, b.cols, a.cols);
    if m == 0 || n == 0 {
        return;
    }
    if k == 0 {
        if !accumulate {
            for r in 0..m {
                dst.data[r * dst.row_stride..r * dst.row_stride + n].fill(0.0);
            }
        }
        return;
    }
    // SAFETY: the constructors checked that every (row, col) of each view indexes inside its
    // slice, and `dst` is a unique borrow distinct from `a` and `b`. gemm touches exactly the
    // elements of the three views. All strides fit isize (they index allocated slices).
    unsafe {
        gemm::gemm(
            m,
            n,
            k,
            dst.data.as_mut_ptr(),
            1,
            dst.row_stride as isize,
            accumulate,
            a.data.as_ptr(),
            a.col_stride as isize,
            a.row_stride as isize,
            b.data.as_ptr(),
            b.col_stride as isize,
            b.row_stride as isize,
            1.0,
            1.0,
            false,
            false,
            false,
            threads.parallelism(),
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn naive(a: &[f32], b: &[f32], m: usize, k: usize, n: usize) -> Vec<f32> {
        let mut out = vec![0.0; m * n];
        for i in 0..m {
            for j in 0..n {
                out[i * n + j] = (0..k).map(|p| a[i * k + p] * b[p * n + j]).sum();
            }
        }
        out
    }

    #[test]
    fn matmul_matches_naive_with_transposes_and_strides() {
        let (m, k, n) = (5, 7, 3);
        let a: Vec<f32> = (0..m * k).map(|i| (i as f32 * 0.37).sin()).collect();
        let b: Vec<f32> = (0..k * n).map(|i| (i as f32 * 0.11).cos()).collect();
        let want = naive(&a, &b, m, k, n);
        let mut got = vec![0.0; m * n];
        matmul(
            ViewMut::rows(&mut got, m, n),
            View::rows(&a, m, k),
            View::rows(&b, k, n),
            false,
            Threads::All,
        );
        for (g, w) in got.iter().zip(&want) {
            assert!((g - w).abs() < 1e-5);
        }
        // b given transposed ([n, k] storage), dst inside a wider buffer, accumulated twice.
        let mut bt = vec![0.0; n * k];
        for p in 0..k {
            for j in 0..n {
                bt[j * k + p] = b[p * n + j];
            }
        }
        let mut wide = vec![0.0; m * 8];
        for _ in 0..2 {
            matmul(
                ViewMut::strided(&mut wide[2..], m, n, 8),
                View::rows(&a, m, k),
                View::rows(&bt, n, k).t(),
                true,
                Threads::One,
            );
        }
        for i in 0..m {
            for j in 0..n {
                assert!((wide[2 + i * 8 + j] - 2.0 * want[i * n + j]).abs() < 1e-5);
            }
        }
    }
}
