//! Strided row views. A chunk's activations live in buffers sized for the longest chunk and the
//! widest layer (`State`), so row `i` of `cols` values starts at `i * stride` and is followed by
//! padding or unused room. A view checks that shape once, when it is made; the mat-muls' SIMD
//! kernels rely on that check for their pointer arithmetic, and everyone else gets rows without
//! writing the index arithmetic again.

use std::ops::Range;

/// `rows` rows of `cols` values, row `i` at `data[i * stride..][..cols]`, over `D`: a shared
/// ([`Rows`]) or a mutable ([`RowsMut`]) slice.
#[derive(Clone, Copy)]
pub struct Strided<D> {
    data: D,
    rows: usize,
    cols: usize,
    stride: usize,
}

/// Rows to read.
pub type Rows<'a, T> = Strided<&'a [T]>;
/// Rows to write: writes through a row stay inside its `cols` values.
pub type RowsMut<'a, T> = Strided<&'a mut [T]>;

impl<D> Strided<D> {
    /// Panics unless `rows` rows of `cols` values at a `stride` fit in `len` values.
    #[inline]
    fn checked(data: D, len: usize, rows: usize, cols: usize, stride: usize) -> Self {
        let end = match rows {
            0 => Some(0),
            _ => (rows - 1)
                .checked_mul(stride)
                .and_then(|o| o.checked_add(cols)),
        };
        assert!(
            cols <= stride && end.is_some_and(|end| end <= len),
            "{rows} rows of {cols} values at stride {stride} do not fit in {len}"
        );
        Strided {
            data,
            rows,
            cols,
            stride,
        }
    }

    #[inline]
    pub fn rows(&self) -> usize {
        self.rows
    }

    #[inline]
    pub fn cols(&self) -> usize {
        self.cols
    }

    #[inline]
    pub fn stride(&self) -> usize {
        self.stride
    }

    /// Where row `i` (`i < rows`) lies in the data.
    #[inline]
    fn span(&self, i: usize) -> Range<usize> {
        assert!(i < self.rows);
        i * self.stride..i * self.stride + self.cols
    }
}

impl<'a, T> Rows<'a, T> {
    /// Rows `0..rows` of `cols` values, `stride` apart, at the start of `data`.
    #[inline]
    pub fn new(data: &'a [T], rows: usize, cols: usize, stride: usize) -> Self {
        Self::checked(data, data.len(), rows, cols, stride)
    }

    /// Row `i` (`i < rows`).
    #[inline]
    pub fn row(&self, i: usize) -> &'a [T] {
        &self.data[self.span(i)]
    }

    /// Row 0, for the SIMD kernels: row `i < rows` holds `cols` values at `i * stride` from it.
    #[inline]
    pub fn as_ptr(&self) -> *const T {
        self.data.as_ptr()
    }
}

impl<'a, T> RowsMut<'a, T> {
    /// Rows `0..rows` of `cols` values, `stride` apart, at the start of `data`.
    #[inline]
    pub fn new(data: &'a mut [T], rows: usize, cols: usize, stride: usize) -> Self {
        let len = data.len();
        Self::checked(data, len, rows, cols, stride)
    }

    /// Row `i` (`i < rows`).
    #[inline]
    pub fn row(&self, i: usize) -> &[T] {
        &self.data[self.span(i)]
    }

    /// Row `i` (`i < rows`), to write.
    #[inline]
    pub fn row_mut(&mut self, i: usize) -> &mut [T] {
        let span = self.span(i);
        &mut self.data[span]
    }

    /// The same rows, read-only.
    #[inline]
    pub fn as_rows(&self) -> Rows<'_, T> {
        Strided {
            data: &*self.data,
            rows: self.rows,
            cols: self.cols,
            stride: self.stride,
        }
    }

    /// The same rows for a shorter while (to hand them to a function and keep this view).
    #[inline]
    pub fn reborrow(&mut self) -> RowsMut<'_, T> {
        Strided {
            data: &mut *self.data,
            rows: self.rows,
            cols: self.cols,
            stride: self.stride,
        }
    }

    /// Row 0, for the SIMD kernels: row `i < rows` holds `cols` values at `i * stride` from it.
    #[inline]
    pub fn as_mut_ptr(&mut self) -> *mut T {
        self.data.as_mut_ptr()
    }
}
