//! Giving freed memory back to the system (engine threads only, never the audio thread).
//!
//! glibc's allocator serves each thread from an arena and keeps what is freed there for reuse:
//! a free() returns memory to the system only from the top of an arena, never from the holes
//! inside it. The engine frees its largest blocks (a model's weights and caches) when a model is
//! swapped out or the engine thread ends with its instance, and such blocks are mostly holes by
//! then. A host that creates and destroys instances, or swaps models, for hours would see its
//! resident size creep up by the holes. `malloc_trim(0)` hands every whole free page of every
//! arena back (`madvise(MADV_DONTNEED)`); the memory stays reserved and is reused as before.
//!
//! It takes each arena's lock in turn and walks its free lists, which is why it runs only on the
//! engine's own threads, after something large was freed; the audio thread never allocates and
//! so never waits on those locks. Elsewhere (macOS, Windows, musl) it does nothing.

/// Hands the free pages of every malloc arena back to the system (glibc on Linux; elsewhere a
/// no-op). Call after freeing something large, off the audio thread.
pub fn release_freed_memory() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    {
        unsafe extern "C" {
            fn malloc_trim(pad: usize) -> std::ffi::c_int;
        }
        // SAFETY: malloc_trim takes a byte count and only touches the allocator's own state,
        // under its arena locks; safe to call from any thread at any time.
        unsafe {
            malloc_trim(0);
        }
    }
}
