//! What several test suites share, once: the counting global allocator behind the
//! "never allocates" tests (models' fast decoder, the engine's audio side and generator), a
//! tiny untrained checkpoint folder, with the default tokenizer or another (engine and plugin
//! host tests), and checkpoint folders broken in every way a loader must refuse (engine,
//! trainer), and the two measures logits are compared by ([`argmax`], [`rms_rel`]: the fast
//! backend against candle, in models and engine).
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

/// The index of the largest logit, the first of equals (the greedy choice).
pub fn argmax(logits: &[f32]) -> usize {
    logits
        .iter()
        .enumerate()
        .fold((0, f32::MIN), |b, (i, &x)| if x > b.1 { (i, x) } else { b })
        .0
}

/// How far logits `got` are from the reference `want`: the RMS error relative to the
/// reference's standard deviation (the "RMS logit error, % of the logit spread" the fast
/// backend's weight formats are measured by).
pub fn rms_rel(got: &[f32], want: &[f32]) -> f32 {
    let n = want.len() as f32;
    let mean = want.iter().sum::<f32>() / n;
    let std = (want.iter().map(|x| (x - mean) * (x - mean)).sum::<f32>() / n).sqrt();
    let rms = (got
        .iter()
        .zip(want)
        .map(|(a, b)| (a - b) * (a - b))
        .sum::<f32>()
        / n)
        .sqrt();
    rms / std
}

/// Writes an untrained `tiny` decoder checkpoint named `name` (default tokenizer, seed 7) into
/// `dir`.
#[cfg(feature = "checkpoint")]
pub fn tiny_checkpoint(dir: &std::path::Path, name: &str) {
    tiny_checkpoint_with(
        dir,
        name,
        staria_models::tokenizer::TokenizerConfig::default(),
    );
}

/// [`tiny_checkpoint`] with another tokenizer config (e.g. the two-voice layout,
/// `instruments: ["piano", "bass"]`); panics on a config the tokenizer refuses.
#[cfg(feature = "checkpoint")]
pub fn tiny_checkpoint_with(
    dir: &std::path::Path,
    name: &str,
    config: staria_models::tokenizer::TokenizerConfig,
) {
    use staria_models::checkpoint::create_untrained;
    use staria_models::model::ModelKind;
    use staria_models::tokenizer::Tokenizer;
    let tok = Tokenizer::new(config).expect("tokenizer config");
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

/// A checkpoint folder broken in one way, and what loading it must say: one line naming `file`
/// (a file name inside the folder) and containing `needle` (the setting, tensor or problem).
#[cfg(feature = "checkpoint")]
#[derive(Debug, Clone)]
pub struct BrokenCheckpoint {
    /// What is wrong, for test messages.
    pub what: &'static str,
    pub dir: std::path::PathBuf,
    pub file: &'static str,
    pub needle: String,
}

/// Writes, under `root`, tiny decoder checkpoints broken in the ways a file from outside can
/// be: sizes in config.json no weights could back (a billion layers, a huge dim, vocabulary or
/// head count), sizes the weights lack, weights of another vocabulary, 2 GB files (sparse),
/// truncated weights, a config from the future. Every loader must refuse each one before it
/// allocates for it, with one line naming the file and the setting.
#[cfg(feature = "checkpoint")]
pub fn broken_checkpoints(root: &std::path::Path) -> Vec<BrokenCheckpoint> {
    use staria_models::checkpoint::{CONFIG_FILE, TOKENIZER_FILE, WEIGHTS_FILE};
    use staria_models::tokenizer::{Tokenizer, TokenizerConfig};
    const TWO_GB: u64 = 2 << 30;
    let huge = 1u64 << 40;
    let mut out = Vec::new();
    let mut make = |what: &'static str, file: &'static str, needle: String| {
        let dir = root.join(what.replace(' ', "-"));
        tiny_checkpoint(&dir, "broken");
        out.push(BrokenCheckpoint {
            what,
            dir: dir.clone(),
            file,
            needle,
        });
        dir
    };
    let edit_config = |dir: &std::path::Path, key: &str, value: u64| {
        let path = dir.join(CONFIG_FILE);
        let mut json: serde_json::Value =
            serde_json::from_slice(&std::fs::read(&path).expect("config.json")).expect("json");
        json[key] = value.into();
        std::fs::write(&path, json.to_string()).expect("write config.json");
    };
    for (what, key, value) in [
        ("a billion layers", "n_layers", 1_000_000_000),
        ("a huge dim", "dim", huge),
        ("a huge vocabulary", "vocab_size", huge),
        ("a huge head count", "n_heads", huge),
        ("a huge context", "max_seq_len", huge),
    ] {
        let dir = make(what, CONFIG_FILE, format!("{key} = {value}"));
        edit_config(&dir, key, value);
    }
    let dir = make(
        "layers the weights lack",
        WEIGHTS_FILE,
        "n_layers = 200".into(),
    );
    edit_config(&dir, "n_layers", 200);
    let dir = make(
        "a config from the future",
        CONFIG_FILE,
        "format_version 99".into(),
    );
    edit_config(&dir, "format_version", 99);

    // Weights, tokenizer and config of another vocabulary: weights alone copied in.
    let dir = make(
        "weights of another vocabulary",
        WEIGHTS_FILE,
        "not this tokenizer's".into(),
    );
    let other = root.join("other-vocabulary-source");
    let tok = Tokenizer::new(TokenizerConfig {
        drums: false,
        ..TokenizerConfig::default()
    })
    .expect("tokenizer");
    staria_models::checkpoint::create_untrained(
        &other,
        "other",
        staria_models::model::ModelKind::Decoder,
        "tiny",
        &tok,
        candle_core::DType::F32,
        7,
    )
    .expect("other checkpoint");
    std::fs::copy(other.join(WEIGHTS_FILE), dir.join(WEIGHTS_FILE)).expect("copy weights");

    for (what, file, needle) in [
        ("a 2 GB weights file", WEIGHTS_FILE, "the file holds"),
        ("a 2 GB config file", CONFIG_FILE, "2147483648 bytes"),
        ("a 2 GB tokenizer file", TOKENIZER_FILE, "2147483648 bytes"),
    ] {
        let dir = make(what, file, needle.into());
        std::fs::OpenOptions::new()
            .write(true)
            .open(dir.join(file))
            .and_then(|f| f.set_len(TWO_GB))
            .expect("pad to 2 GB");
    }
    let dir = make("truncated weights", WEIGHTS_FILE, "truncated".into());
    let path = dir.join(WEIGHTS_FILE);
    let bytes = std::fs::read(&path).expect("weights");
    std::fs::write(&path, &bytes[..bytes.len() - 100]).expect("truncate");
    out
}
