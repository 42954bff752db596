//! The engine thread: owns the model (through the generation side's `Generator`), the captured
//! snippets and the scheduled requests; drains commands from the audio side, runs the streaming
//! decode, and pushes timed note events a bounded time ahead of the playhead.
//!
//! Nothing here runs on the audio thread, so it may allocate and sleep; it must never stall the
//! audio side, which only ever sees full or empty rings.

use crate::audio::AudioSide;
use crate::capture::Capture;
use crate::constraints::{Constraints, Scale, ScaleKind};
use crate::generate::{Backend, Flow, GenRequest, GeneratedNote, Generator, Snippets, Target};
use crate::handover::{EngineLink, RingSizes, Shared, link};
use crate::live::driver::{LiveRun, LiveStart};
use crate::messages::{Command, Event, Form, Outcome, RequestId};
use crate::sampling::SamplingParams;
use crate::schedule::{Added, Scheduler};
use crate::status::{EngineState, ParamValues};
use crate::swap::{Control, EngineControl};
use crate::timing::{TransportReading, beats_per_bar};
use candle_core::Device;
use staria_models::{Note, SectionLabel, Tokenizer};
use std::panic::{AssertUnwindSafe, catch_unwind};
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::sync::mpsc::{Receiver, TryRecvError, channel};
use std::time::{Duration, Instant};

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
            .spawn(move || worker.run())?;
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

/// Live notes are pushed this far ahead of the playhead (seconds): little enough that an
/// answer cut by the performer never has notes queued beyond it, enough for the wake-up
/// jitter of the engine thread.
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

    fn run(mut self) {
        let shared = self.link.shared.clone();
        shared.register_engine_thread();
        // A bug in the loop itself must not take the host down: the thread ends, the audio side
        // keeps running silently, and status says why.
        let result = catch_unwind(AssertUnwindSafe(|| {
            while !self.shutdown {
                self.poll();
                self.swap_in();
                if let Some(req) = self.pending.take() {
                    self.serve(req);
                    continue;
                }
                self.pump();
                self.live_pump();
                self.warm_prompt();
                self.wait();
            }
        }));
        match result {
            Ok(()) => {
                self.end_live();
                if let Some(id) = self.newest_request() {
                    self.push_done(id, Outcome::Interrupted);
                }
            }
            Err(p) => {
                if let Some(id) = self.newest_request() {
                    self.push_done(id, Outcome::Failed);
                }
                shared
                    .status
                    .set_error(format!("engine thread stopped: {}", panic_text(p.as_ref())));
            }
        }
        shared.status.current_request.store(0, Relaxed);
        shared.status.set_state(EngineState::Stopped);
    }

    /// Sleeps until there may be something to do: while a request plays out, until its next
    /// event is due to be pushed; while a model waits to be swapped in, a short poll; otherwise
    /// until the end of the capture quiet time (a prompt to warm) or the idle timeout. Commands,
    /// transport changes and control messages wake it at once.
    fn wait(&mut self) {
        let t = self.link.shared.transport.read();
        let playing_out = t.playing
            && (!self.tails.is_empty() || self.current.as_ref().is_some_and(|c| !c.is_drained()));
        if self.shutdown || self.pending.is_some() {
            return;
        }
        if self.incoming.is_some() {
            std::thread::park_timeout(self.cfg.poll_interval);
            return;
        }
        if self.live.is_some() || self.live_start.is_some() {
            self.park_idle(LIVE_POLL.max(self.cfg.poll_interval));
            return;
        }
        if playing_out {
            let timeout = self.until_next_push(&t, f64::INFINITY);
            self.park_idle(timeout);
            return;
        }
        let mut timeout = self.cfg.idle_timeout;
        if self.prompt_stale
            && self
                .generator
                .as_ref()
                .is_some_and(|g| g.backend() == Backend::Fast)
        {
            timeout = timeout.min(WARM_QUIET.saturating_sub(self.last_capture.elapsed()));
        }
        self.park_idle(timeout);
    }

    /// How long the thread may sleep before an event of a scheduled request must be pushed
    /// (it enters the push window), or before the playhead reaches `resume_beat`; between
    /// `poll_interval` and `idle_timeout`, so a tempo change is caught up with soon.
    fn until_next_push(&self, t: &TransportReading, resume_beat: f64) -> Duration {
        let ahead = secs_to_beats(self.cfg.push_ahead_secs, t.tempo_bpm);
        let next = self
            .current
            .iter()
            .chain(self.tails.iter())
            .filter_map(Scheduler::next_event_beat)
            .map(|b| b - ahead)
            .fold(resume_beat, f64::min);
        let secs = (next - t.playhead) * 60.0 / t.tempo_bpm.max(1.0);
        let max = self.cfg.idle_timeout.as_secs_f64();
        let secs = if secs.is_nan() {
            0.0
        } else {
            secs.clamp(0.0, max)
        };
        Duration::from_secs_f64(secs).max(self.cfg.poll_interval)
    }

    /// Parks unless a command, a cancel or a transport change is already waiting.
    fn park_idle(&self, timeout: Duration) {
        let link = &self.link;
        link.shared.park_idle(timeout, || {
            link.has_commands()
                || link.shared.transport.read().epoch != self.epoch
                || link.cancelled_upto() > self.cancelled_upto
        });
    }

    /// While idle, prefills the prompt the next request will most likely start with (the
    /// captured snippets, the newest request's form, the style setting): the fast backend then
    /// reuses it, and that request's first note needs no prompt prefill. Waits until capturing
    /// has been quiet for a moment, so a musician playing does not cost a prefill per note.
    fn warm_prompt(&mut self) {
        const QUIET: Duration = WARM_QUIET;
        let params = self.link.shared.params.values();
        if params.style != self.warm_style {
            self.warm_style = params.style;
            self.prompt_stale = true;
        }
        // The form setting (the plugin's) names what the next request carries.
        if !params.form.is_empty() && params.form != self.warm_form {
            self.warm_form = params.form;
            self.prompt_stale = true;
        }
        if !self.prompt_stale
            || self.live.is_some()
            || self.pending.is_some()
            || self.last_capture.elapsed() < QUIET
            || !self
                .generator
                .as_ref()
                .is_some_and(|g| g.backend() == Backend::Fast)
        {
            return;
        }
        let now_beat = self.link.shared.transport.read().playhead;
        let snippets = self.snippets(now_beat, Target::Section(SectionLabel::A));
        let Some(g) = self.generator.as_mut() else {
            return;
        };
        let mut req = GenRequest::new(Target::Section(SectionLabel::A), 1, 120.0);
        req.form = self.warm_form.to_string();
        req.style = params
            .style_name()
            .filter(|s| g.tokenizer().style_id(s).is_some());
        // Opportunistic: a failure here shows up (and is reported) when a request needs it.
        let warmed = catch_unwind(AssertUnwindSafe(|| {
            g.prompt_for(&snippets, &req)
                .and_then(|p| g.begin(&p).map(|_| ()))
                .is_ok()
        }));
        self.prompt_stale = false;
        if matches!(warmed, Ok(true)) {
            self.link.shared.status.prompts_warmed.fetch_add(1, Relaxed);
        }
    }

    fn newest_request(&self) -> Option<RequestId> {
        self.current
            .iter()
            .chain(self.tails.iter())
            .map(|s| s.request_id)
            .max()
    }

    /// Drains control messages, commands and transport changes.
    fn poll(&mut self) {
        loop {
            match self.control.try_recv() {
                Ok(Control::Swap {
                    generator,
                    name,
                    ticket,
                }) => {
                    // Loads may finish out of order; only the newest requested one counts.
                    if ticket == self.latest_load.load(Relaxed) {
                        self.incoming = Some((generator, name));
                    }
                }
                Ok(Control::StopGeneration) => self.stop_all(Interrupt::Stopped),
                Ok(Control::Shutdown) | Err(TryRecvError::Disconnected) => {
                    self.shutdown = true;
                    self.interrupt = Some(Interrupt::Shutdown);
                    break;
                }
                Err(TryRecvError::Empty) => break,
            }
        }
        while let Some(cmd) = self.link.pop_command() {
            self.command(cmd);
        }
        // A cancel whose command did not fit into the ring still arrives.
        let cancelled = self.link.cancelled_upto();
        if cancelled > self.cancelled_upto {
            self.command(Command::Cancel {
                request_id: cancelled,
            });
        }
        let t = self.link.shared.transport.read();
        if t.epoch != self.epoch {
            // The audio side flushed everything and silenced what sounded: replay the current
            // request from the new position; replaced tails are over.
            self.epoch = t.epoch;
            self.tails.clear();
            if let Some(cur) = &mut self.current {
                cur.relocate(t.playhead, t.epoch);
            }
        }
    }

    fn command(&mut self, cmd: Command) {
        let shared = self.link.shared.clone();
        let bpm = shared.transport.read().tempo_bpm;
        if !matches!(cmd, Command::Generate { .. } | Command::Cancel { .. }) {
            self.prompt_stale = true;
            self.last_capture = Instant::now();
        }
        let refused = match cmd {
            Command::CaptureArm {
                section,
                origin_beat,
            } => {
                self.capture.arm(section, origin_beat, bpm);
                false
            }
            Command::CaptureRestore { section } => {
                self.capture.arm_restored(section, bpm);
                false
            }
            Command::CaptureNoteOn {
                section,
                pitch,
                velocity,
                beat,
            } => self
                .capture
                .note_on(section, pitch, velocity, beat, bpm)
                .is_err(),
            Command::CaptureNoteOff {
                section,
                pitch,
                beat,
            } => self.capture.note_off(section, pitch, beat).is_err(),
            Command::ClearSection { section } => {
                self.capture.clear(section);
                false
            }
            Command::Generate {
                request_id,
                target,
                bars,
                ts_num,
                ts_den,
                form,
                start_beat,
                seed,
            } => {
                if request_id <= self.cancelled_upto {
                    // Cancelled before it got here (through `Shared::cancel_upto`).
                    self.push_done(request_id, Outcome::Cancelled);
                    return;
                }
                let req = Pending {
                    id: request_id,
                    target,
                    bars,
                    ts_num,
                    ts_den,
                    form,
                    start_beat,
                    seed,
                };
                if let Some(old) = self.pending.replace(req) {
                    self.push_done(old.id, Outcome::Replaced);
                }
                if self.generating {
                    self.interrupt = Some(Interrupt::NewRequest);
                }
                false
            }
            Command::LiveStart {
                request_id,
                mode,
                origin_beat,
                response_bars,
                seed,
            } => {
                self.live_start = Some(LiveStart {
                    request_id,
                    mode,
                    origin_beat,
                    response_bars,
                    seed,
                });
                if self.generating {
                    self.interrupt = Some(Interrupt::Stopped);
                }
                false
            }
            Command::LiveNoteOn {
                pitch,
                velocity,
                beat,
            } => {
                self.with_live(|run, g, link| run.note_on(g, link, pitch, velocity, beat));
                false
            }
            Command::LiveNoteOff { pitch, beat } => {
                self.with_live(|run, g, link| run.note_off(g, link, pitch, beat));
                false
            }
            Command::Handover { request_id, beat } => {
                if self.live.is_none() {
                    // No session to answer: the request is over before it began.
                    self.push_done(request_id, Outcome::Finished);
                } else {
                    self.with_live(|run, g, link| run.handover(g, link, request_id, beat));
                }
                false
            }
            Command::LiveStop => {
                self.live_start = None;
                self.end_live();
                false
            }
            Command::Cancel { request_id } => {
                self.cancelled_upto = self.cancelled_upto.max(request_id);
                if let Some(p) = self.pending.take_if(|p| p.id <= request_id) {
                    self.push_done(p.id, Outcome::Cancelled);
                }
                if self.generating {
                    if self
                        .current
                        .as_ref()
                        .is_some_and(|c| c.request_id <= request_id)
                    {
                        self.interrupt = Some(Interrupt::Cancelled);
                    }
                } else if self
                    .current
                    .as_ref()
                    .is_some_and(|c| c.request_id <= request_id)
                {
                    // Finished generating but still playing: the audio side has silenced it.
                    self.current = None;
                }
                self.tails.retain(|t| t.request_id > request_id);
                false
            }
        };
        if refused {
            shared.status.dropped_captures.fetch_add(1, Relaxed);
        }
    }

    /// Stops generation (if running) and everything scheduled; the audio side silences it now.
    fn stop_all(&mut self, why: Interrupt) {
        if self.generating {
            self.interrupt = Some(why);
            return;
        }
        if let Some(id) = self.newest_request() {
            self.push_done(id, Outcome::Interrupted);
        }
        self.current = None;
        self.tails.clear();
    }

    /// Swaps a freshly loaded model in, between requests.
    fn swap_in(&mut self) {
        if self.generating {
            return;
        }
        let Some((generator, name)) = self.incoming.take() else {
            return;
        };
        // The session's cache belongs to the old model.
        self.end_live();
        // Notes of the old model must not ring on under the new one.
        self.stop_all(Interrupt::Stopped);
        self.generator = Some(generator);
        self.prompt_stale = true;
        let status = &self.link.shared.status;
        status.set_model_name(name);
        status.model_generation.fetch_add(1, Relaxed);
        status.set_state(EngineState::Ready);
    }

    /// Releases due events of every scheduled request to the audio side.
    fn pump(&mut self) {
        let t = self.link.shared.transport.read();
        let limit = t.playhead + secs_to_beats(self.cfg.push_ahead_secs, t.tempo_bpm);
        let link = &mut self.link;
        for tail in &mut self.tails {
            tail.pump(limit, |ev| link.push_event(Event::Note(ev)));
        }
        self.tails.retain(|t| !t.is_drained());
        if let Some(cur) = &mut self.current {
            cur.pump(limit, |ev| link.push_event(Event::Note(ev)));
        }
    }

    /// Request outcomes must arrive (a `Failed` silences the audio side), so a full ring is
    /// retried for a while before the message is counted as dropped.
    fn push_done(&mut self, request_id: RequestId, outcome: Outcome) {
        let deadline = Instant::now() + Duration::from_millis(250);
        while !self.link.push_event(Event::RequestDone {
            request_id,
            outcome,
        }) {
            if Instant::now() >= deadline {
                self.link.shared.status.dropped_events.fetch_add(1, Relaxed);
                return;
            }
            std::thread::sleep(self.cfg.poll_interval);
        }
    }

    fn serve(&mut self, req: Pending) {
        // A section request takes the model (and its cache) from a live session.
        self.end_live();
        let shared = self.link.shared.clone();
        let status = &shared.status;
        if !req.start_beat.is_finite() || req.bars == 0 {
            status.set_error(format!(
                "request {}: start beat {} / {} bars is not a section",
                req.id, req.start_beat, req.bars
            ));
            self.push_done(req.id, Outcome::Failed);
            return;
        }
        // The request it replaces plays on up to the new start. A start behind the playhead is
        // a loop's start (asked for in its last bar): the old request plays on to the wrap,
        // whose relocation ends it (tails are dropped on a new epoch).
        if let Some(mut old) = self.current.take() {
            let was_complete = old.is_complete();
            if req.start_beat < shared.transport.read().playhead {
                old.finish();
            } else {
                old.truncate(req.start_beat);
            }
            if !was_complete {
                self.push_done(old.request_id, Outcome::Replaced);
            }
            self.tails.push(old);
        }
        // After the truncation: a `Continue` picks up from what plays before its start.
        let snippets = self.snippets(shared.transport.read().playhead, req.target);
        let Some(mut generator) = self.generator.take() else {
            status.set_error("no model loaded");
            self.push_done(req.id, Outcome::Failed);
            return;
        };
        let t = shared.transport.read();
        let params = shared.params.values();
        let bpb = beats_per_bar(req.ts_num, req.ts_den);
        self.current = Some(Scheduler::new(
            req.id,
            self.epoch,
            req.start_beat,
            req.bars as u32,
            bpb,
            t.tempo_bpm,
            params,
        ));
        let gen_req = gen_request(&req, t.tempo_bpm, bpb, &params, generator.tokenizer());
        if req.form != self.warm_form {
            self.warm_form = req.form;
            self.prompt_stale = true;
        }

        status.current_request.store(req.id, Relaxed);
        status.set_state(EngineState::Generating);
        self.generating = true;
        self.interrupt = None;
        let result = catch_unwind(AssertUnwindSafe(|| {
            generator.generate(&snippets, &gen_req, &mut |n| self.on_note(n))
        }));
        self.generating = false;
        self.generator = Some(generator);
        status.current_request.store(0, Relaxed);

        let outcome = match result {
            Ok(Ok(summary)) => {
                status
                    .tokens_generated
                    .fetch_add(summary.sampled_tokens as u64, Relaxed);
                status.set_state(EngineState::Ready);
                match self.interrupt.take() {
                    None => Some(Outcome::Finished),
                    // Stays current (not complete) until the next request truncates it.
                    Some(Interrupt::NewRequest) => None,
                    Some(Interrupt::Cancelled) => Some(Outcome::Cancelled),
                    Some(Interrupt::Stopped | Interrupt::Shutdown) => Some(Outcome::Interrupted),
                }
            }
            Ok(Err(e)) => {
                status.set_error(format!("generation failed: {e}"));
                Some(Outcome::Failed)
            }
            Err(p) => {
                status.set_error(format!("generation panicked: {}", panic_text(p.as_ref())));
                Some(Outcome::Failed)
            }
        };
        match outcome {
            Some(Outcome::Finished) => {
                if let Some(cur) = &mut self.current {
                    cur.finish();
                }
                self.push_done(req.id, Outcome::Finished);
            }
            Some(o) => {
                // Silence it all (the audio side releases what sounds on this outcome).
                self.current = None;
                self.tails.clear();
                self.push_done(req.id, o);
            }
            None => {}
        }
        self.interrupt = None;
    }

    /// Called by the generator for each note: schedule it, then wait while far enough ahead,
    /// staying responsive to commands.
    fn on_note(&mut self, n: GeneratedNote) -> Flow {
        self.link
            .shared
            .status
            .notes_generated
            .fetch_add(1, Relaxed);
        let Some(cur) = self.current.as_mut() else {
            return Flow::Stop;
        };
        if cur.add(n.pitch, n.velocity, n.start_ms, n.dur_ms) == Added::PastEnd {
            return Flow::Stop;
        }
        loop {
            self.poll();
            if self.interrupt.is_some() || self.shutdown {
                return Flow::Stop;
            }
            self.pump();
            let t = self.link.shared.transport.read();
            let Some(cur) = self.current.as_ref() else {
                return Flow::Stop;
            };
            let reference = t.playhead.max(cur.start_beat);
            if cur.watermark()
                <= reference + secs_to_beats(self.cfg.generate_ahead_secs, t.tempo_bpm)
            {
                return Flow::Continue;
            }
            if t.playing {
                // Until the playhead lets generation go on or an event is due to be pushed.
                let ahead = secs_to_beats(self.cfg.generate_ahead_secs, t.tempo_bpm);
                let timeout = self.until_next_push(&t, cur.watermark() - ahead);
                self.park_idle(timeout);
            } else {
                // Far enough ahead of a playhead that is not moving: wait for the transport.
                self.park_idle(self.cfg.idle_timeout);
            }
        }
    }
}

/// A request in the generation side's terms.
fn gen_request(req: &Pending, bpm: f64, bpb: f64, p: &ParamValues, tok: &Tokenizer) -> GenRequest {
    GenRequest {
        target: req.target,
        bars: req.bars as u32,
        bpm,
        beats_per_bar: bpb,
        form: req.form.to_string(),
        // A style the loaded model does not know is left out rather than failing the request.
        style: p.style_name().filter(|s| tok.style_id(s).is_some()),
        sampling: SamplingParams {
            temperature: p.temperature,
            top_p: p.top_p,
            min_p: p.min_p,
            seed: req.seed,
            // The plugin's "Adherence" parameter (default `SamplingParams::DEFAULT_FOLLOW_BIAS`).
            follow_bias: p.follow_bias,
        },
        constraints: Constraints {
            pitch_min: p.pitch_low,
            pitch_max: p.pitch_high,
            scale: scale_for_mask(p.key_mask),
            max_polyphony: Some(p.max_polyphony),
            drums: false,
            allow_early_end: false,
        },
    }
}

impl Worker {
    /// The captured sections, and for `Continue` the music it continues (`continue_context`).
    fn snippets(&self, now_beat: f64, target: Target) -> Snippets {
        let mut s = Snippets::default();
        for label in SectionLabel::ALL {
            s.set(label, self.capture.snippet(label, now_beat));
        }
        if target == Target::Continue {
            let generated = self.current.as_ref().or(self.tails.last());
            s.context = continue_context(&self.capture, generated, now_beat);
        }
        s
    }
}

/// What a `Continue` request continues: the music heard last. That is what the musician just
/// captured when they played after the newest generated request started, otherwise the
/// generated music (times in ms from its start).
fn continue_context(capture: &Capture, generated: Option<&Scheduler>, now_beat: f64) -> Vec<Note> {
    match (capture.last_played(), generated) {
        (Some((label, beat)), g) if g.is_none_or(|g| beat >= g.start_beat) => {
            capture.snippet(label, now_beat)
        }
        (_, Some(g)) => g.context_notes(),
        (_, None) => Vec::new(),
    }
}

/// The scale whose pitch classes are exactly `mask`, for the model's constraint masks; a mask no
/// named scale matches is still enforced by the scheduler's pitch filter.
fn scale_for_mask(mask: u16) -> Option<Scale> {
    if mask & 0xFFF == 0xFFF {
        return None;
    }
    (0..12u8)
        .flat_map(|root| ScaleKind::ALL.iter().map(move |&k| Scale::new(root, k)))
        .find(|s| s.pitch_classes() == mask & 0xFFF)
}

mod live;
#[cfg(test)]
mod tests;
