//! What several test suites share, once: the counting global allocator behind the
//! "never allocates" tests (models' fast decoder, the engine's audio side and generator), and a
//! tiny untrained checkpoint folder (engine and plugin host tests).
//!
//! A test binary that counts allocations installs the allocator itself (it is global):
//!
//! ```
//! use staria_test_support::{CountingAlloc, count_allocs};
//!
//! #[global_allocator]
//! static GLOBAL: CountingAlloc = CountingAlloc;
//!
//! let (v, allocs) = count_allocs(|| vec![1u8; 16]);
//! assert!(allocs > 0 && v.len() == 16);
//! assert_eq!(count_allocs(|| 2 + 2).1, 0);
//! ```

use std::alloc::{GlobalAlloc, Layout, System};
use std::cell::Cell;

/// A global allocator that forwards to [`System`] and counts, per thread, the calls made while
/// that thread is inside [`count_allocs`] (allocations, zeroed allocations, reallocations and
/// frees alike: the real-time rules forbid all of them). Other threads, the test harness's
/// included, are not counted.
pub struct CountingAlloc;

thread_local! {
    // Const-initialised: reading them never allocates.
    static WATCHING: Cell<bool> = const { Cell::new(false) };
    static CALLS: Cell<usize> = const { Cell::new(0) };
}

fn note_call() {
    // `try_with`: the thread-locals may be gone while a thread shuts down.
    if WATCHING.try_with(Cell::get).unwrap_or(false) {
        let _ = CALLS.try_with(|c| c.set(c.get() + 1));
    }
}

// SAFETY: every call is forwarded to the system allocator unchanged; counting touches only
// const-initialised thread-locals, which never allocate.
unsafe impl GlobalAlloc for CountingAlloc {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        note_call();
        // SAFETY: the caller's contract, passed on.
        unsafe { System.alloc(layout) }
    }
    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        note_call();
        // SAFETY: the caller's contract, passed on.
        unsafe { System.alloc_zeroed(layout) }
    }
    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        note_call();
        // SAFETY: the caller's contract, passed on.
        unsafe { System.realloc(ptr, layout, new_size) }
    }
    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        note_call();
        // SAFETY: the caller's contract, passed on.
        unsafe { System.dealloc(ptr, layout) }
    }
}

/// Runs `f` and returns what it returned with the allocator calls this thread made meanwhile
/// (0 unless [`CountingAlloc`] is the global allocator). Nests: an inner count is also part of
/// the outer one.
pub fn count_allocs<R>(f: impl FnOnce() -> R) -> (R, usize) {
    let was_watching = WATCHING.with(|w| w.replace(true));
    let before = CALLS.with(Cell::get);
    let r = f();
    let calls = CALLS.with(Cell::get) - before;
    WATCHING.with(|w| w.set(was_watching));
    (r, calls)
}

/// Writes an untrained `tiny` decoder checkpoint named `name` (default tokenizer, seed 7) into
/// `dir`.
#[cfg(feature = "checkpoint")]
pub fn tiny_checkpoint(dir: &std::path::Path, name: &str) {
    use staria_models::checkpoint::create_untrained;
    use staria_models::model::ModelKind;
    use staria_models::tokenizer::{Tokenizer, TokenizerConfig};
    let tok = Tokenizer::new(TokenizerConfig::default()).expect("default tokenizer");
    create_untrained(
        dir,
        name,
        ModelKind::Decoder,
        "tiny",
        &tok,
        candle_core::DType::F32,
        7,
    )
    .expect("tiny checkpoint");
}
