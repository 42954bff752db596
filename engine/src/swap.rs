//! The non-real-time end: [`EngineControl`] loads models in the background and hands them to the
//! engine thread (hot swap), reads status, and stops and joins the threads on drop.

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

/// Owned by the plugin's main thread (or the CLI). Dropping it stops the engine thread and waits
/// for it and for any model still loading.
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
        let ticket = self.latest_load.fetch_add(1, Relaxed) + 1;
        let shared = self.shared.clone();
        let tx = self.control.clone();
        let device = self.device.clone();
        let engine_thread = self.engine.as_ref().map(|h| h.thread().clone());
        shared.status.loads_in_flight.fetch_add(1, Relaxed);
        let spawned = std::thread::Builder::new()
            .name("staria-loader".into())
            .spawn(move || {
                let name = dir
                    .file_name()
                    .map(|n| n.to_string_lossy().into_owned())
                    .unwrap_or_else(|| dir.display().to_string());
                let loaded = catch_unwind(AssertUnwindSafe(|| Generator::load(&dir, &device)));
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
                    Ok(Err(e)) => shared
                        .status
                        .set_error(format!("loading {}: {e}", dir.display())),
                    Err(p) => shared.status.set_error(format!(
                        "loading {} panicked: {}",
                        dir.display(),
                        crate::engine_thread::panic_text(p.as_ref())
                    )),
                }
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

    /// Stops the engine thread and waits for it (and for loaders). Idempotent.
    pub fn shutdown(&mut self) {
        let _ = self.control.send(Control::Shutdown);
        self.wake();
        if let Some(h) = self.engine.take() {
            // A panic inside the thread was already caught and reported in status.
            let _ = h.join();
        }
        for h in self.loaders.lock().drain(..) {
            let _ = h.join();
        }
    }
}

impl Drop for EngineControl {
    fn drop(&mut self) {
        self.shutdown();
    }
}
