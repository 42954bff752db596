//! The plugin's engine: started on the first activation (never in `Default`, hosts create
//! instances just to scan them), stopped and joined when the plugin is dropped. Model loading and
//! generation run on the engine's own threads; nice-plug's `execute_background` is never used
//! (its shared worker can abort the host when instances are destroyed with tasks queued).
//!
//! A small monitor thread (not the audio thread) asks the engine to load the model the plugin
//! state names, and mirrors the engine status into the persisted `status` field and the log.
//!
//! Dropping the engine (destroying the instance, on the host's main thread) returns within a few
//! tens of milliseconds even while a model loads; threads still busy then end on their own, and
//! the library's unload waits for them (see `wait_for_engine_threads`).

use nice_plug::prelude::{nice_log, nice_warn};
use staria_engine::{AudioSide, Engine, EngineConfig, EngineControl, EngineState};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::thread::JoinHandle;
use std::time::Duration;

use crate::gui_state::GuiShared;
use crate::model_info::ModelFacts;
use crate::params::{StariaParams, StatusRecord};

/// How often the monitor looks at the model path and the engine status.
const MONITOR_PERIOD: Duration = Duration::from_millis(50);

/// How long unloading the library (or the host's exit) waits for engine threads that outlived
/// their instance; see [`wait_for_engine_threads`].
const UNLOAD_WAIT: Duration = Duration::from_secs(5);

/// Destroying an instance does not wait for a model load in progress (the host's main thread
/// must not stall): the engine leaves such threads to end on their own. They run this library's
/// code, so before the library is unmapped (`dlclose`, or the process's exit) this waits for
/// them, up to [`UNLOAD_WAIT`].
extern "C" fn wait_for_engine_threads() {
    let _ =
        std::panic::catch_unwind(|| staria_engine::swap::wait_for_detached_threads(UNLOAD_WAIT));
}

// The library's unload hook (the ELF / Mach-O destructor lists; Windows has none without a
// `DllMain`, and there the wait does not happen).
#[cfg(any(target_os = "linux", target_os = "android", target_os = "freebsd"))]
#[used]
#[unsafe(link_section = ".fini_array")]
static UNLOAD_HOOK: extern "C" fn() = wait_for_engine_threads;
#[cfg(target_vendor = "apple")]
#[used]
#[unsafe(link_section = "__DATA,__mod_term_func,mod_term_funcs")]
static UNLOAD_HOOK: extern "C" fn() = wait_for_engine_threads;

/// The model folder to load: the model path from the plugin state (a folder that exists, else a
/// built-in model's name), else `$STARIA_MODEL` (the same rule), else the default built-in model
/// (see `staria_engine::default_model`). A built-in model is unpacked into the cache folder on
/// first use; this runs on the monitor thread.
pub fn resolve_model_dir(custom: Option<&str>) -> Result<PathBuf, String> {
    staria_engine::default_model::resolve_model_dir(custom.map(Path::new))
}

/// The engine's two ends as the plugin holds them.
pub struct EngineHost {
    /// Only touched from `process()` (and `activate`/`deactivate`, never concurrently with it).
    pub audio: AudioSide,
    control: Arc<EngineControl>,
    monitor: Option<JoinHandle<()>>,
    stop: Arc<AtomicBool>,
}

impl EngineHost {
    /// Starts the engine thread and the monitor. The model loads in the background.
    pub fn start(params: Arc<StariaParams>, gui: Arc<GuiShared>) -> std::io::Result<Self> {
        let (audio, control) = Engine::spawn(EngineConfig::default())?;
        let control = Arc::new(control);
        let stop = Arc::new(AtomicBool::new(false));
        let monitor = {
            let (control, stop) = (control.clone(), stop.clone());
            std::thread::Builder::new()
                .name("staria-monitor".into())
                .spawn(move || monitor(&params, &control, &stop, &gui))?
        };
        Ok(Self {
            audio,
            control,
            monitor: Some(monitor),
            stop,
        })
    }

    /// Stops playback of everything generated (from a non-audio thread).
    pub fn stop_generation(&self) {
        self.control.stop_generation();
    }
}

impl Drop for EngineHost {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Release);
        if let Some(m) = self.monitor.take() {
            m.thread().unpark();
            let _ = m.join();
        }
        // The last `EngineControl` reference goes with `self`: it stops the engine thread and
        // any model loader, waiting for them at most `staria_engine::swap::SHUTDOWN_WAIT`.
    }
}

/// Tokens per second while the engine generates, for the window: averaged over the monitor's
/// periods in which tokens were made.
#[derive(Default)]
struct Speed {
    last: Option<(std::time::Instant, u64)>,
    rate: f32,
}

impl Speed {
    fn update(&mut self, tokens: u64, generating: bool) -> f32 {
        let now = std::time::Instant::now();
        if let Some((t, n)) = self.last
            && generating
            && tokens > n
        {
            let dt = now.duration_since(t).as_secs_f32();
            if dt > 0.0 {
                let r = (tokens - n) as f32 / dt;
                self.rate = if self.rate == 0.0 {
                    r
                } else {
                    0.8 * self.rate + 0.2 * r
                };
            }
        }
        self.last = Some((now, tokens));
        self.rate
    }
}

fn monitor(params: &StariaParams, control: &EngineControl, stop: &AtomicBool, gui: &GuiShared) {
    let mut requested: Option<Option<String>> = None;
    let mut requested_dir: Option<PathBuf> = None;
    let mut facts_for_generation = 0u64;
    let mut speed = Speed::default();
    let mut resolve_error: Option<String> = None;
    let mut shown: Option<StatusRecord> = None;
    // A capture that overflowed its snippet, or a state load that could not read a field, is
    // said in the status while the engine has no error to report.
    let mut overflow_seen = gui.capture_overflow();
    let mut notice: Option<String> = None;
    while !stop.load(Ordering::Acquire) {
        let custom = params.model_path();
        if requested.as_ref() != Some(&custom) {
            match resolve_model_dir(custom.as_deref()) {
                Ok(dir) => {
                    nice_log!("Staria: loading model {}", dir.display());
                    control.load_model(&dir);
                    requested_dir = Some(dir);
                    resolve_error = None;
                }
                Err(e) => resolve_error = Some(e),
            }
            requested = Some(custom);
        }
        let snap = control.snapshot();
        // The generated notes for the window's export, and its facts about the model.
        gui.drain_log();
        gui.tokens_per_second.store(
            speed.update(snap.tokens_generated, snap.state == EngineState::Generating),
            Ordering::Relaxed,
        );
        if snap.model_generation != facts_for_generation {
            facts_for_generation = snap.model_generation;
            // The folder swapped in is the newest one asked for (only the newest load swaps).
            *gui.model_facts.lock() = requested_dir
                .as_deref()
                .and_then(|d| ModelFacts::read(d).ok());
        }
        let mut record = StatusRecord {
            model: snap.model_name,
            state: snap.state,
            last_error: snap.last_error,
        };
        if let Some(e) = &resolve_error {
            record.last_error = e.clone();
            if record.model.is_empty() {
                record.state = EngineState::Error;
            }
        }
        let overflow = gui.capture_overflow();
        if overflow != overflow_seen {
            overflow_seen = overflow;
            notice = overflow.map(|o| o.notice());
        }
        if let Some(unread) = params.snippets.take_load_notice() {
            notice = Some(unread);
        }
        if let Some(notice) = &notice
            && record.last_error.is_empty()
        {
            record.last_error = notice.clone();
        }
        if shown.as_ref() != Some(&record) {
            if !record.last_error.is_empty()
                && shown
                    .as_ref()
                    .is_none_or(|s| s.last_error != record.last_error)
            {
                nice_warn!("Staria: {}", record.last_error);
            }
            nice_log!(
                "Staria engine: {:?} (model: {})",
                record.state,
                if record.model.is_empty() {
                    "none"
                } else {
                    &record.model
                }
            );
            *params.status.write() = record.clone();
            shown = Some(record);
        }
        std::thread::park_timeout(MONITOR_PERIOD);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A model path that is a built-in model's name survives a saved state (the name, not the
    /// cache folder, is what the project keeps) and loads that built-in model; an unknown name
    /// is refused naming the built-in names.
    #[test]
    fn a_built_in_name_resolves_and_survives_a_saved_state() {
        use nice_plug::prelude::{Params, PluginState};
        use staria_engine::default_model::{BUILTIN_NAMES, BuiltinModel, DEFAULT_MODEL};
        for name in BUILTIN_NAMES {
            let params = StariaParams::default();
            params.set_model_path(name);
            let mut state = PluginState {
                version: String::new(),
                params: Default::default(),
                fields: params.serialize_fields(),
            };
            crate::saved_state::check_fields(&mut state);
            let restored = StariaParams::default();
            restored.deserialize_fields(&state.fields);
            assert_eq!(restored.model_path().as_deref(), Some(name));
            let dir = resolve_model_dir(restored.model_path().as_deref()).unwrap();
            assert_eq!(
                BuiltinModel::of_unpacked_dir(&dir).map(|m| m.name),
                Some(name),
                "{}",
                dir.display()
            );
            let facts = ModelFacts::read(&dir).unwrap();
            assert_eq!(facts.name, name);
            assert!(facts.built_in && facts.name_line().contains(&facts.kind));
        }
        let err = resolve_model_dir(Some("no-such-model")).unwrap_err();
        assert!(
            err.contains("no-such-model") && err.contains(DEFAULT_MODEL),
            "{err}"
        );
    }

    /// The window's "tokens/s" is measured only over stretches where tokens were generated.
    #[test]
    fn speed_counts_tokens_while_generating() {
        let mut s = Speed::default();
        assert_eq!(s.update(0, true), 0.0);
        std::thread::sleep(Duration::from_millis(50));
        // 100 tokens in at least 50 ms (at most a second on a loaded machine).
        let r = s.update(100, true);
        assert!(r > 100.0 && r <= 2000.0, "{r}");
        // Idle (or not generating): the last figure stays.
        std::thread::sleep(Duration::from_millis(20));
        assert_eq!(s.update(100, true), r);
        assert_eq!(s.update(150, false), r);
    }
}
