//! What the audio thread and the editor window tell each other, lock-free.
//!
//! - Audio thread -> window: atomics (transport position, the section being recorded or played,
//!   which Record parameters it has seen) stored once per block, and a ring of fixed-size
//!   [`LogEntry`]s (every generated note as it is played, every section requested, transport
//!   starts) that the plugin's monitor thread (or the window) drains into a [`GeneratedLog`] for
//!   export. The audio thread only stores atomics and `try_push`es into the ring: it never
//!   allocates, locks or waits; a full ring drops the entry and counts it.
//! - Window -> audio thread: a bitmask of one-shot requests (play, clear, stop, continue), the
//!   section queued next and the "walk the form" switch, all atomics the audio thread reads at
//!   the start of a block.
//!
//! The two mutexes here (the ring's consumer half and the log) are taken only by the monitor
//! thread and the window, never by the audio thread.

use atomic_float::{AtomicF32, AtomicF64};
use parking_lot::Mutex;
use ringbuf::traits::{Consumer, Producer, Split};
use ringbuf::{HeapCons, HeapProd, HeapRb};
use staria_models::SectionLabel;
use std::sync::Arc;
use std::sync::atomic::Ordering::{Acquire, Relaxed, Release};
use std::sync::atomic::{AtomicBool, AtomicU8, AtomicU32, AtomicU64};

use crate::export::GeneratedLog;
use crate::model_info::ModelFacts;

/// Entries the audio thread may queue before the log's reader drains them (it does every 50 ms).
pub const LOG_RING_CAPACITY: usize = 8192;

/// One thing the audio thread tells the export log. `Copy`, fixed size.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum LogEntry {
    /// The transport started at `beat`: "everything since the transport started" begins here.
    TransportStart { beat: f64 },
    /// A section was requested: it starts at `start_beat` and lasts `bars` bars (`label` is
    /// `None` for *Continue*).
    Section {
        request_id: u32,
        label: Option<SectionLabel>,
        start_beat: f64,
        bars: u16,
        ts_num: u8,
        ts_den: u8,
        bpm: f64,
    },
    /// A generated note-on or note-off as it went out, at host beat `beat`.
    Note {
        request_id: u32,
        beat: f64,
        on: bool,
        pitch: u8,
        velocity: u8,
        channel: u8,
    },
}

/// Window -> audio thread one-shot requests (bits of `GuiShared::requests`).
pub mod request {
    use staria_models::SectionLabel;
    /// Play section X (bits 0..4).
    pub fn play(s: SectionLabel) -> u32 {
        1 << s.index()
    }
    /// Clear section X (bits 4..8).
    pub fn clear(s: SectionLabel) -> u32 {
        1 << (4 + s.index())
    }
    pub const STOP: u32 = 1 << 8;
    pub const CONTINUE: u32 = 1 << 9;
    pub const PLAY_NEXT: u32 = 1 << 10;
    /// Call and response: hand over to the model now.
    pub const HANDOVER: u32 = 1 << 11;
}

/// `0` = none, else a section's index + 1.
pub fn encode_section(s: Option<SectionLabel>) -> u8 {
    s.map_or(0, |s| s.index() as u8 + 1)
}

pub fn decode_section(v: u8) -> Option<SectionLabel> {
    v.checked_sub(1)
        .and_then(|i| SectionLabel::from_index(i as usize))
}

/// What a live mode is doing, as the window shows it (one atomic byte).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
#[repr(u8)]
pub enum LivePhase {
    /// *Sections* (or bypassed).
    #[default]
    Off = 0,
    /// A live mode is chosen; the session waits for a model (or was refused: see the status).
    Waiting = 1,
    /// Call and response: the model listens.
    Listening = 2,
    /// Call and response: the model answers.
    Responding = 3,
    /// The model plays along.
    Accompanying = 4,
}

impl LivePhase {
    pub fn from_u8(v: u8) -> Self {
        match v {
            1 => Self::Waiting,
            2 => Self::Listening,
            3 => Self::Responding,
            4 => Self::Accompanying,
            _ => Self::Off,
        }
    }

    /// The window's words for it.
    pub fn text(self) -> &'static str {
        match self {
            Self::Off => "",
            Self::Waiting => "waiting for the model",
            Self::Listening => "listening",
            Self::Responding => "responding",
            Self::Accompanying => "accompanying",
        }
    }
}

/// What the section being played is, as the window shows it.
#[derive(Debug, Clone, Copy, PartialEq, Default)]
pub struct PlayingView {
    /// `None` for *Continue*.
    pub label: Option<SectionLabel>,
    pub start_beat: f64,
    pub end_beat: f64,
}

/// One block's worth of what the window shows, read from the atomics.
#[derive(Debug, Clone, Copy, PartialEq, Default)]
pub struct TransportView {
    pub playing: bool,
    pub pos_beats: f64,
    pub tempo_bpm: f64,
    pub ts_num: u8,
    pub ts_den: u8,
    pub recording: Option<SectionLabel>,
    pub section: Option<PlayingView>,
    /// The next position in the form for "play next" / the form walk.
    pub form_pos: u32,
    pub walking_form: bool,
    pub queued: Option<SectionLabel>,
    /// What a live mode is doing.
    pub live: LivePhase,
    /// New snippets the running live session took as its prompt (and went on).
    pub live_prompts: u32,
    /// Model notes the running live session took back (`Event::Retract`): before they
    /// sounded, and of those, how many the audio side had just played (released at once)
    /// (`EngineStatus::notes_retracted` + `retracted_after_playing`, and the latter).
    pub live_retracted: u32,
    pub live_retracted_playing: u32,
}

impl TransportView {
    /// The section sounding at the playhead, if any.
    pub fn sounding(&self) -> Option<PlayingView> {
        self.section.filter(|p| {
            self.playing && self.pos_beats >= p.start_beat && self.pos_beats < p.end_beat
        })
    }

    /// Beats per bar of the time signature shown.
    pub fn beats_per_bar(&self) -> f64 {
        crate::timeline::beats_per_bar(self.ts_num, self.ts_den)
    }
}

pub struct GuiShared {
    // Audio thread -> window.
    playing: AtomicBool,
    pos_beats: AtomicF64,
    tempo_bpm: AtomicF64,
    ts: AtomicU32,
    recording: AtomicU8,
    section: AtomicU8,
    section_start: AtomicF64,
    section_end: AtomicF64,
    form_pos: AtomicU32,
    /// [`LivePhase`] as a byte.
    live: AtomicU8,
    /// [`TransportView::live_prompts`].
    live_prompts: AtomicU32,
    /// [`TransportView::live_retracted`], [`TransportView::live_retracted_playing`].
    live_retracted: [AtomicU32; 2],
    /// The Record A..D parameters as the audio thread last read them (bit per section).
    arm_seen: AtomicU8,
    /// Entries the ring had no room for.
    pub log_dropped: AtomicU64,
    /// The last capture that overflowed its snippet ([`CaptureOverflow`], packed).
    capture_overflow: AtomicU64,
    // Window -> audio thread.
    requests: AtomicU32,
    queued: AtomicU8,
    walk_form: AtomicBool,
    // Monitor thread -> window.
    /// Tokens per second while the engine generated, over the last measured stretch (0: none).
    pub tokens_per_second: AtomicF32,
    // Log reader side (monitor thread and window only).
    log_rx: Mutex<HeapCons<LogEntry>>,
    log: Mutex<GeneratedLog>,
    /// Bumped when the log changes (the window redraws its export summary).
    log_version: AtomicU64,
    /// The loaded model's facts (read by the monitor thread when a model is swapped in).
    pub model_facts: Mutex<Option<ModelFacts>>,
}

/// A capture that played more notes than a snippet holds: the first
/// [`crate::snippets::MAX_SNIPPET_NOTES`] were kept, `dropped` more were not recorded.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct CaptureOverflow {
    /// Bumped for each overflowing capture, so a reader tells a new one from the last.
    pub generation: u32,
    pub section: SectionLabel,
    pub dropped: u32,
}

impl CaptureOverflow {
    /// What the status says (until the next overflow or error).
    pub fn notice(&self) -> String {
        format!(
            "section {}: a snippet holds {} notes; the first {} were kept and {} more played during \
             the recording were not captured (record a shorter phrase)",
            self.section.letter(),
            crate::snippets::MAX_SNIPPET_NOTES,
            crate::snippets::MAX_SNIPPET_NOTES,
            self.dropped
        )
    }
}

impl GuiShared {
    /// Audio thread: a finished capture of `section` refused `dropped` notes (> 0). Lock-free.
    pub fn report_capture_overflow(&self, section: SectionLabel, dropped: u64) {
        let generation = (self.capture_overflow.load(Relaxed) >> 40).wrapping_add(1) & 0xFF_FFFF;
        let packed =
            generation << 40 | (section.index() as u64) << 32 | dropped.min(u64::from(u32::MAX));
        self.capture_overflow.store(packed, Release);
    }

    /// The last capture that overflowed, if any.
    pub fn capture_overflow(&self) -> Option<CaptureOverflow> {
        let packed = self.capture_overflow.load(Acquire);
        if packed == 0 {
            return None;
        }
        Some(CaptureOverflow {
            generation: (packed >> 40) as u32,
            section: SectionLabel::ALL[((packed >> 32) & 0xFF) as usize % 4],
            dropped: packed as u32,
        })
    }

    /// The shared state and the ring's producer half, which the audio thread owns.
    pub fn new() -> (Arc<Self>, LogTap) {
        let (tx, rx) = HeapRb::<LogEntry>::new(LOG_RING_CAPACITY).split();
        let shared = Arc::new(Self {
            playing: AtomicBool::new(false),
            pos_beats: AtomicF64::new(0.0),
            tempo_bpm: AtomicF64::new(120.0),
            ts: AtomicU32::new(4 << 8 | 4),
            recording: AtomicU8::new(0),
            section: AtomicU8::new(0),
            section_start: AtomicF64::new(0.0),
            section_end: AtomicF64::new(0.0),
            form_pos: AtomicU32::new(0),
            live: AtomicU8::new(0),
            live_prompts: AtomicU32::new(0),
            live_retracted: [AtomicU32::new(0), AtomicU32::new(0)],
            arm_seen: AtomicU8::new(0),
            log_dropped: AtomicU64::new(0),
            capture_overflow: AtomicU64::new(0),
            requests: AtomicU32::new(0),
            queued: AtomicU8::new(0),
            walk_form: AtomicBool::new(false),
            tokens_per_second: AtomicF32::new(0.0),
            log_rx: Mutex::new(rx),
            log: Mutex::new(GeneratedLog::default()),
            log_version: AtomicU64::new(0),
            model_facts: Mutex::new(None),
        });
        let tap = LogTap {
            tx,
            shared: shared.clone(),
            block_start_beat: 0.0,
            beats_per_sample: 0.0,
        };
        (shared, tap)
    }

    // ---- audio thread (stores only) ----

    /// Publishes the transport and what records and plays; atomics only.
    #[allow(clippy::too_many_arguments)]
    pub fn publish(
        &self,
        playing: bool,
        pos_beats: f64,
        tempo_bpm: f64,
        ts: (u8, u8),
        recording: Option<SectionLabel>,
        arm_seen: [bool; 4],
        form_pos: usize,
    ) {
        self.playing.store(playing, Relaxed);
        self.pos_beats.store(pos_beats, Relaxed);
        self.tempo_bpm.store(tempo_bpm, Relaxed);
        self.ts.store((ts.0 as u32) << 8 | ts.1 as u32, Relaxed);
        self.recording.store(encode_section(recording), Relaxed);
        let bits = arm_seen
            .iter()
            .enumerate()
            .fold(0u8, |b, (i, on)| b | ((*on as u8) << i));
        self.arm_seen.store(bits, Relaxed);
        self.form_pos
            .store(form_pos.min(u32::MAX as usize) as u32, Relaxed);
    }

    /// The section requested last (what plays from `start_beat` to `end_beat`).
    pub fn publish_section(&self, label: Option<SectionLabel>, start_beat: f64, end_beat: f64) {
        // Code 5 = Continue (no label), 0 = nothing.
        let code = label.map_or(5, |s| s.index() as u8 + 1);
        self.section_start.store(start_beat, Relaxed);
        self.section_end.store(end_beat, Relaxed);
        self.section.store(code, Relaxed);
    }

    /// What the live mode is doing (once per block).
    pub fn publish_live(&self, phase: LivePhase) {
        self.live.store(phase as u8, Relaxed);
    }

    /// New snippets the running live session took as its prompt (once per block).
    pub fn publish_live_prompts(&self, changes: u32) {
        self.live_prompts.store(changes, Relaxed);
    }

    /// The notes the running live session took back, all and after playing (once per block).
    pub fn publish_live_retracted(&self, taken_back: u32, after_playing: u32) {
        self.live_retracted[0].store(taken_back, Relaxed);
        self.live_retracted[1].store(after_playing, Relaxed);
    }

    pub fn clear_section(&self) {
        self.section.store(0, Relaxed);
    }

    /// Takes the window's one-shot requests (bits of [`request`]).
    pub fn take_requests(&self) -> u32 {
        self.requests.swap(0, Relaxed)
    }

    /// Takes the section the window queued next, if any.
    pub fn take_queued(&self) -> Option<SectionLabel> {
        decode_section(self.queued.swap(0, Relaxed))
    }

    pub fn queued(&self) -> Option<SectionLabel> {
        decode_section(self.queued.load(Relaxed))
    }

    pub fn walking_form(&self) -> bool {
        self.walk_form.load(Relaxed)
    }

    // ---- window ----

    pub fn request(&self, bits: u32) {
        self.requests.fetch_or(bits, Relaxed);
    }

    pub fn queue_next(&self, s: Option<SectionLabel>) {
        self.queued.store(encode_section(s), Relaxed);
    }

    pub fn set_walk_form(&self, on: bool) {
        self.walk_form.store(on, Relaxed);
    }

    /// The Record A..D parameters as the audio thread last read them.
    pub fn arm_seen(&self) -> [bool; 4] {
        let b = self.arm_seen.load(Relaxed);
        [b & 1 != 0, b & 2 != 0, b & 4 != 0, b & 8 != 0]
    }

    pub fn view(&self) -> TransportView {
        let ts = self.ts.load(Relaxed);
        let section = match self.section.load(Relaxed) {
            0 => None,
            code => Some(PlayingView {
                label: decode_section(code).filter(|_| code <= 4),
                start_beat: self.section_start.load(Relaxed),
                end_beat: self.section_end.load(Relaxed),
            }),
        };
        TransportView {
            playing: self.playing.load(Relaxed),
            pos_beats: self.pos_beats.load(Relaxed),
            tempo_bpm: self.tempo_bpm.load(Relaxed),
            ts_num: (ts >> 8) as u8,
            ts_den: ts as u8,
            recording: decode_section(self.recording.load(Relaxed)),
            section,
            form_pos: self.form_pos.load(Relaxed),
            walking_form: self.walking_form(),
            queued: self.queued(),
            live: LivePhase::from_u8(self.live.load(Relaxed)),
            live_prompts: self.live_prompts.load(Relaxed),
            live_retracted: self.live_retracted[0].load(Relaxed),
            live_retracted_playing: self.live_retracted[1].load(Relaxed),
        }
    }

    // ---- log reader (monitor thread, window) ----

    /// Moves what the audio thread queued into the log. Returns whether anything came.
    pub fn drain_log(&self) -> bool {
        let mut rx = self.log_rx.lock();
        let mut log = self.log.lock();
        let mut any = false;
        while let Some(e) = rx.try_pop() {
            log.apply(e);
            any = true;
        }
        if any {
            self.log_version.fetch_add(1, Relaxed);
        }
        any
    }

    pub fn log_version(&self) -> u64 {
        self.log_version.load(Relaxed)
    }

    /// Runs `f` on the log (after draining the ring).
    pub fn with_log<R>(&self, f: impl FnOnce(&GeneratedLog) -> R) -> R {
        self.drain_log();
        f(&self.log.lock())
    }
}

/// The ring's producer half, owned by the audio thread: generated notes as they go out, section
/// requests and transport starts. Never blocks or allocates.
pub struct LogTap {
    tx: HeapProd<LogEntry>,
    shared: Arc<GuiShared>,
    block_start_beat: f64,
    beats_per_sample: f64,
}

impl LogTap {
    /// Where the block starts and how fast beats go: note times are taken from their sample
    /// offsets, so notes released by a stop or a cut carry when they really ended.
    pub fn begin_block(&mut self, start_beat: f64, beats_per_sample: f64) {
        self.block_start_beat = start_beat;
        self.beats_per_sample = if beats_per_sample.is_finite() {
            beats_per_sample.max(0.0)
        } else {
            0.0
        };
    }

    pub fn push(&mut self, e: LogEntry) {
        if self.tx.try_push(e).is_err() {
            self.shared.log_dropped.fetch_add(1, Relaxed);
        }
    }

    /// A generated note that went out at sample `offset` of this block.
    pub fn note(&mut self, offset: u32, n: &staria_engine::NoteEvent) {
        let beat = self.block_start_beat + offset as f64 * self.beats_per_sample;
        self.push(LogEntry::Note {
            request_id: n.request_id,
            beat,
            on: n.on,
            pitch: n.pitch & 127,
            velocity: n.velocity.clamp(1, 127),
            channel: n.channel & 15,
        });
    }

    pub fn shared(&self) -> &GuiShared {
        &self.shared
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn requests_are_taken_once() {
        let (shared, _tap) = GuiShared::new();
        shared.request(request::play(SectionLabel::B) | request::STOP);
        shared.request(request::clear(SectionLabel::D));
        let bits = shared.take_requests();
        assert_eq!(bits, 0b10 | request::STOP | 1 << 7);
        assert_eq!(shared.take_requests(), 0);
        shared.queue_next(Some(SectionLabel::C));
        assert_eq!(shared.queued(), Some(SectionLabel::C));
        assert_eq!(shared.take_queued(), Some(SectionLabel::C));
        assert_eq!(shared.take_queued(), None);
    }

    #[test]
    fn view_reads_what_was_published() {
        let (shared, _tap) = GuiShared::new();
        shared.publish(
            true,
            9.5,
            100.0,
            (3, 4),
            Some(SectionLabel::B),
            [false, true, false, false],
            2,
        );
        shared.publish_section(Some(SectionLabel::C), 8.0, 20.0);
        let v = shared.view();
        assert!(v.playing);
        assert_eq!(
            (v.pos_beats, v.tempo_bpm, v.ts_num, v.ts_den),
            (9.5, 100.0, 3, 4)
        );
        assert_eq!(v.recording, Some(SectionLabel::B));
        assert_eq!(v.form_pos, 2);
        assert_eq!(v.beats_per_bar(), 3.0);
        assert_eq!(shared.arm_seen(), [false, true, false, false]);
        let p = v.sounding().expect("C sounds at 9.5");
        assert_eq!(p.label, Some(SectionLabel::C));
        shared.publish_section(None, 8.0, 20.0);
        assert_eq!(shared.view().sounding().unwrap().label, None);
        shared.clear_section();
        assert_eq!(shared.view().sounding(), None);
    }

    /// Notes pushed by the audio side arrive in the log with the beat of their sample offset.
    #[test]
    fn tapped_notes_reach_the_log() {
        let (shared, mut tap) = GuiShared::new();
        tap.push(LogEntry::TransportStart { beat: 0.0 });
        tap.push(LogEntry::Section {
            request_id: 1,
            label: Some(SectionLabel::A),
            start_beat: 4.0,
            bars: 1,
            ts_num: 4,
            ts_den: 4,
            bpm: 120.0,
        });
        tap.begin_block(4.0, 1.0 / 24_000.0);
        let mut n = staria_engine::NoteEvent {
            beat: 4.0,
            request_id: 1,
            epoch: 0,
            on: true,
            pitch: 60,
            velocity: 90,
            channel: 1,
        };
        tap.note(0, &n);
        n.on = false;
        tap.note(12_000, &n);
        let notes = shared.with_log(|log| log.notes().to_vec());
        assert_eq!(notes.len(), 1);
        assert_eq!((notes[0].start_beat, notes[0].end_beat), (4.0, 4.5));
        assert_eq!(notes[0].pitch, 60);
    }
}
