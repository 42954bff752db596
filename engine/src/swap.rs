//! The non-real-time end: [`EngineControl`] loads models in the background and hands them to the
//! engine thread (hot swap), reads status, and stops the threads on drop.
//!
//! Dropping it must not hold the host's main thread (a plugin instance is destroyed there): a
//! model load cannot be interrupted and a prefill takes a while, so the drop asks every thread
//! to stop, joins those that end within [`SHUTDOWN_WAIT`] and leaves the others to end on their
//! own, registered in a process-wide list. A plugin library waits for that list
//! ([`wait_for_detached_threads`]) before it is unloaded, so no thread runs its code afterwards.

use crate::generate::Generator;
use crate::handover::Shared;
use crate::status::{EngineParams, EngineStatus, StatusSnapshot};
use candle_core::Device;
use parking_lot::Mutex;
use std::panic::{AssertUnwindSafe, catch_unwind};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::sync::mpsc::Sender;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

/// How long dropping an [`EngineControl`] waits for its threads before it leaves them to end on
/// their own (well under the 100 ms a host may spend destroying an instance).
pub const SHUTDOWN_WAIT: Duration = Duration::from_millis(40);

/// Engine and loader threads that outlived their [`EngineControl`] (still loading a model or
/// finishing a model step when it was dropped). They end by themselves: a loader when its load
/// does, the engine thread at its next check for commands.
static DETACHED: Mutex<Vec<JoinHandle<()>>> = Mutex::new(Vec::new());

fn detach(handle: JoinHandle<()>) {
    let mut list = DETACHED.lock();
    list.retain(|h| !h.is_finished());
    list.push(handle);
}

/// Waits up to `timeout` for the threads dropped engines left running (see the module notes),
/// joining those that end. `true` when none is left. For a plugin library's unload hook, and for
/// tests; never for the audio thread.
pub fn wait_for_detached_threads(timeout: Duration) -> bool {
    let deadline = Instant::now() + timeout;
    loop {
        let left = {
            let mut list = DETACHED.lock();
            let mut i = 0;
            while i < list.len() {
                if list[i].is_finished() {
                    let _ = list.swap_remove(i).join();
                } else {
                    i += 1;
                }
            }
            list.len()
        };
        if left == 0 {
            return true;
        }
        if Instant::now() >= deadline {
            return false;
        }
        std::thread::sleep(Duration::from_millis(2));
    }
}

/// Waits up to `timeout` for `handle`'s thread to end.
fn finishes_within(handle: &JoinHandle<()>, timeout: Duration) -> bool {
    let deadline = Instant::now() + timeout;
    while !handle.is_finished() {
        if Instant::now() >= deadline {
            return false;
        }
        std::thread::sleep(Duration::from_micros(500));
    }
    true
}

/// Main thread / loaders → engine thread.
pub(crate) enum Control {
    Swap {
        generator: Box<Generator>,
        name: String,
        ticket: u64,
    },
    StopGeneration,
    Shutdown,
}

/// Owned by the plugin's main thread (or the CLI). Dropping it stops the engine thread and any
/// model load, waiting at most [`SHUTDOWN_WAIT`] (see the module notes).
pub struct EngineControl {
    shared: Arc<Shared>,
    control: Sender<Control>,
    engine: Option<JoinHandle<()>>,
    loaders: Mutex<Vec<JoinHandle<()>>>,
    device: Device,
    latest_load: Arc<AtomicU64>,
}

impl EngineControl {
    pub(crate) fn new(
        shared: Arc<Shared>,
        control: Sender<Control>,
        engine: JoinHandle<()>,
        device: Device,
        latest_load: Arc<AtomicU64>,
    ) -> Self {
        Self {
            shared,
            control,
            engine: Some(engine),
            loaders: Mutex::new(Vec::new()),
            device,
            latest_load,
        }
    }

    pub fn status(&self) -> &EngineStatus {
        &self.shared.status
    }

    pub fn snapshot(&self) -> StatusSnapshot {
        self.shared.status.snapshot()
    }

    pub fn params(&self) -> &EngineParams {
        &self.shared.params
    }

    /// Loads a checkpoint folder on a background thread; when it is ready the engine swaps it in
    /// between requests (silencing notes of the old model). On failure the old model keeps
    /// serving and the status carries the error. Returns a ticket: only the newest load is
    /// swapped in if several overlap.
    pub fn load_model(&self, dir: impl AsRef<Path>) -> u64 {
        let dir: PathBuf = dir.as_ref().to_path_buf();
        let device = self.device.clone();
        let name = dir
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_else(|| dir.display().to_string());
        let what = dir.display().to_string();
        self.load_with(what, name, move || Generator::load(&dir, &device))
    }

    /// [`Self::load_model`] with any way of building the generator (`load` runs on the loader
    /// thread). `what` names the source in error messages; `name` is the model's name when its
    /// checkpoint config gives none.
    pub fn load_with(
        &self,
        what: String,
        name: String,
        load: impl FnOnce() -> crate::generate::Result<Generator> + Send + 'static,
    ) -> u64 {
        let ticket = self.latest_load.fetch_add(1, Relaxed) + 1;
        let shared = self.shared.clone();
        let tx = self.control.clone();
        let engine_thread = self.engine.as_ref().map(|h| h.thread().clone());
        shared.status.loads_in_flight.fetch_add(1, Relaxed);
        let spawned = std::thread::Builder::new()
            .name("staria-loader".into())
            .spawn(move || {
                let loaded = catch_unwind(AssertUnwindSafe(load));
                match loaded {
                    Ok(Ok(generator)) => {
                        let name = generator
                            .checkpoint_config()
                            .map(|c| c.name.clone())
                            .filter(|n| !n.is_empty())
                            .unwrap_or(name);
                        // The engine may already be gone (shutdown while loading): nothing to do.
                        let _ = tx.send(Control::Swap {
                            generator: Box::new(generator),
                            name,
                            ticket,
                        });
                    }
                    Ok(Err(e)) => shared.status.set_error(format!("loading {what}: {e}")),
                    Err(p) => shared.status.set_error(format!(
                        "loading {what} panicked: {}",
                        crate::engine_thread::panic_text(p.as_ref())
                    )),
                }
                // Reading a checkpoint frees its file buffers (and a failed load all it built).
                crate::memory::release_freed_memory();
                shared.status.loads_in_flight.fetch_sub(1, Relaxed);
                if let Some(t) = engine_thread {
                    t.unpark();
                }
            });
        match spawned {
            Ok(handle) => {
                let mut loaders = self.loaders.lock();
                loaders.retain(|h| !h.is_finished());
                loaders.push(handle);
            }
            Err(e) => {
                self.shared.status.loads_in_flight.fetch_sub(1, Relaxed);
                self.shared
                    .status
                    .set_error(format!("cannot start a loader thread: {e}"));
            }
        }
        ticket
    }

    /// Stops generating and silences everything scheduled (a GUI "stop" button).
    pub fn stop_generation(&self) {
        if self.control.send(Control::StopGeneration).is_ok() {
            self.wake();
        }
    }

    /// Whether the engine thread is still running.
    pub fn is_running(&self) -> bool {
        self.engine.as_ref().is_some_and(|h| !h.is_finished())
    }

    fn wake(&self) {
        if let Some(h) = &self.engine {
            h.thread().unpark();
        }
    }

    /// Stops the engine thread and the loaders: joins those that end within [`SHUTDOWN_WAIT`],
    /// leaves the rest to end on their own (a load in progress runs to its end, then its model
    /// is dropped). Returns within about `SHUTDOWN_WAIT`. Idempotent.
    pub fn shutdown(&mut self) {
        let _ = self.control.send(Control::Shutdown);
        self.wake();
        if let Some(h) = self.engine.take() {
            if finishes_within(&h, SHUTDOWN_WAIT) {
                // A panic inside the thread was already caught and reported in status.
                let _ = h.join();
            } else {
                detach(h);
            }
        }
        for h in self.loaders.lock().drain(..) {
            if h.is_finished() {
                let _ = h.join();
            } else {
                detach(h);
            }
        }
    }
}

impl Drop for EngineControl {
    fn drop(&mut self) {
        self.shutdown();
    }
}
