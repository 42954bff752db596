//! The engine thread: owns the model (through the generation side's `Generator`), the captured
//! snippets and the scheduled requests; drains commands from the audio side, runs the streaming
//! decode, and pushes timed note events a bounded time ahead of the playhead.
//!
//! Nothing here runs on the audio thread, so it may allocate and sleep; it must never stall the
//! audio side, which only ever sees full or empty rings.
//!
//! What the audio side and [`EngineControl`] can rely on:
//! - a generate request ends in one `RequestDone` (finished, replaced, cancelled, interrupted or
//!   failed), retried on a full ring for a while before it is counted as dropped;
//! - events are released at most `push_ahead_secs` ahead of the playhead, and generation pauses
//!   `generate_ahead_secs` ahead of it, so a cancel or a parameter change wastes little work;
//! - a model swaps in only between requests, and only the newest requested load does;
//! - a failure or panic while generating fails that request (the reason in the status) and the
//!   thread goes on; a panic in the loop itself ends the thread, the audio side stays silent and
//!   the status says why.
//!
//! Rooms: this file holds the configuration, [`Engine::spawn`] and the thread's state;
//! `thread_loop` the loop and its sleeping and pushing; `commands` what control messages and
//! audio-side commands do to that state; `model` swapping a loaded model in and warming its
//! prompt; `serve` a generate request from prompt to scheduled notes; `live` the live sessions.

use crate::audio::AudioSide;
use crate::capture::Capture;
use crate::generate::{Generator, Target};
use crate::handover::{EngineLink, RingSizes, Shared, link};
use crate::live::driver::{LiveRun, LiveStart};
use crate::messages::{Form, RequestId};
use crate::schedule::Scheduler;
use crate::swap::{Control, EngineControl};
use candle_core::Device;
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::AtomicU64;
use std::sync::mpsc::{Receiver, channel};
use std::time::{Duration, Instant};

mod commands;
mod live;
mod model;
mod serve;
#[cfg(test)]
mod tests;
mod thread_loop;

/// How the engine runs.
#[derive(Debug, Clone)]
pub struct EngineConfig {
    /// Where models run.
    pub device: Device,
    pub rings: RingSizes,
    /// Events are released to the audio side at most this far ahead of the playhead.
    pub push_ahead_secs: f64,
    /// Generation pauses once it is this far ahead of the playhead (or of the section start, when
    /// the section lies in the future), so a cancel or a parameter change is not wasted work.
    pub generate_ahead_secs: f64,
    /// Per-section bound on captured notes.
    pub max_snippet_notes: usize,
    /// The shortest sleep while it has work in flight (a request being generated or played out,
    /// a model to swap in); a request playing out sleeps until its next event is due to be
    /// pushed, woken earlier by commands and transport changes.
    pub poll_interval: Duration,
    /// With nothing in flight the thread parks until a command, a transport change, a control
    /// message or this timeout (then it checks the settings for a prompt to warm).
    pub idle_timeout: Duration,
    /// A checkpoint folder to load at start (in the background, like `load_model`).
    pub model_dir: Option<PathBuf>,
}

impl Default for EngineConfig {
    fn default() -> Self {
        Self {
            device: Device::Cpu,
            rings: RingSizes::default(),
            push_ahead_secs: 1.0,
            generate_ahead_secs: 4.0,
            max_snippet_notes: 1024,
            poll_interval: Duration::from_millis(1),
            idle_timeout: Duration::from_millis(100),
            model_dir: None,
        }
    }
}

/// Starts engines.
pub struct Engine;

impl Engine {
    /// Starts the engine thread and returns both ends: [`AudioSide`] for the plugin's `process()`
    /// and [`EngineControl`] for the main thread (model loading, status, shutdown on drop).
    pub fn spawn(config: EngineConfig) -> std::io::Result<(AudioSide, EngineControl)> {
        let shared = Arc::new(Shared::default());
        let (audio, engine_link) = link(config.rings, shared.clone());
        let (tx, rx) = channel();
        let latest_load = Arc::new(AtomicU64::new(0));
        let worker = Worker::new(engine_link, rx, config.clone(), latest_load.clone());
        let thread = std::thread::Builder::new()
            .name("staria-engine".into())
            .spawn(move || {
                // `run` drops the worker, and with it the model and the captured snippets.
                worker.run();
                crate::memory::release_freed_memory();
            })?;
        let control = EngineControl::new(shared, tx, thread, config.device.clone(), latest_load);
        if let Some(dir) = &config.model_dir {
            control.load_model(dir);
        }
        Ok((audio, control))
    }
}

/// A generate command waiting to be served.
#[derive(Debug, Clone, Copy)]
struct Pending {
    id: RequestId,
    target: Target,
    bars: u16,
    ts_num: u8,
    ts_den: u8,
    form: Form,
    start_beat: f64,
    seed: u64,
}

/// Why a running generation was asked to stop.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Interrupt {
    NewRequest,
    Cancelled,
    Stopped,
    Shutdown,
}

struct Worker {
    link: EngineLink,
    control: Receiver<Control>,
    cfg: EngineConfig,
    latest_load: Arc<AtomicU64>,
    capture: Capture,
    generator: Option<Box<Generator>>,
    /// A loaded model waiting for the current generation to end.
    incoming: Option<(Box<Generator>, String)>,
    pending: Option<Pending>,
    current: Option<Scheduler>,
    /// Replaced requests still playing up to the newer request's start.
    tails: Vec<Scheduler>,
    epoch: u32,
    generating: bool,
    interrupt: Option<Interrupt>,
    shutdown: bool,
    /// The snippets, style or model changed since the prompt was last prefilled.
    prompt_stale: bool,
    last_capture: Instant,
    /// The form of the newest request (the next one most likely has the same) and the style
    /// setting the warm prompt was built with.
    warm_form: Form,
    warm_style: u8,
    /// The newest request id a cancel has named (through the ring or `Shared::cancel_upto`).
    cancelled_upto: RequestId,
    /// The live session (`crate::live::driver`), if one runs.
    live: Option<Box<LiveRun>>,
    /// A `LiveStart` that arrived while a section was being generated (served after it).
    live_start: Option<LiveStart>,
}

/// Live notes are pushed at least this far ahead of the playhead (seconds); the driver
/// pushes a note as soon as the session hands it out, which is earlier (its commit window,
/// 50 ms: `live::driver`). Nothing the session may still revise is pushed.
const LIVE_PUSH_AHEAD_SECS: f64 = 0.03;
/// While a live session runs the engine thread wakes at least this often.
const LIVE_POLL: Duration = Duration::from_millis(2);

/// Capturing must have been quiet this long before the idle engine warms the prompt.
const WARM_QUIET: Duration = Duration::from_millis(150);

fn secs_to_beats(secs: f64, bpm: f64) -> f64 {
    secs * bpm / 60.0
}

pub(crate) fn panic_text(payload: &(dyn std::any::Any + Send)) -> String {
    if let Some(s) = payload.downcast_ref::<&str>() {
        (*s).to_string()
    } else if let Some(s) = payload.downcast_ref::<String>() {
        s.clone()
    } else {
        "unknown panic".to_string()
    }
}

impl Worker {
    fn new(
        link: EngineLink,
        control: Receiver<Control>,
        cfg: EngineConfig,
        latest_load: Arc<AtomicU64>,
    ) -> Self {
        let epoch = link.shared.transport.read().epoch;
        Self {
            link,
            control,
            capture: Capture::new(cfg.max_snippet_notes),
            cfg,
            latest_load,
            generator: None,
            incoming: None,
            pending: None,
            current: None,
            tails: Vec::new(),
            epoch,
            generating: false,
            interrupt: None,
            shutdown: false,
            prompt_stale: true,
            last_capture: Instant::now(),
            warm_form: Form::new(),
            warm_style: 0,
            cancelled_upto: 0,
            live: None,
            live_start: None,
        }
    }
}
