//! What the engine reports (state, counters, error text) and the scalar settings it reads when a
//! request starts. Counters and settings are atomics so the audio thread may touch them; the two
//! strings sit behind a `parking_lot::Mutex` and are for the GUI/CLI only, never the audio thread.

use atomic_float::AtomicF32;
use parking_lot::Mutex;
use std::sync::atomic::{AtomicU8, AtomicU16, AtomicU32, AtomicU64, Ordering::Relaxed};

/// What the engine is doing. Saved (the plugin's persisted status) as its lowercase name.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
#[repr(u8)]
pub enum EngineState {
    /// Running, no model loaded yet.
    #[default]
    Idle = 0,
    /// A model is being loaded (the previous one, if any, keeps serving).
    Loading = 1,
    /// A model is loaded and no request is being generated.
    Ready = 2,
    /// A request is being generated.
    Generating = 3,
    /// The last load or generation failed; see [`EngineStatus::last_error`]. A loaded model (if any)
    /// still serves new requests.
    Error = 4,
    /// The engine thread has stopped (shutdown).
    Stopped = 5,
}

impl EngineState {
    fn from_u8(v: u8) -> Self {
        match v {
            0 => Self::Idle,
            1 => Self::Loading,
            2 => Self::Ready,
            3 => Self::Generating,
            4 => Self::Error,
            _ => Self::Stopped,
        }
    }
}

/// Shared status. Counters only grow (until the engine is respawned).
#[derive(Debug)]
pub struct EngineStatus {
    state: AtomicU8,
    /// Commands the audio side could not queue (command ring full).
    pub dropped_commands: AtomicU64,
    /// Events the audio side discarded: its staging area was full or they were stale.
    pub dropped_events: AtomicU64,
    /// Note-ons that reached the audio side too late to be played.
    pub late_notes: AtomicU64,
    /// Captured notes the engine refused (snippet full, bad pitch, note-off before note-on).
    pub dropped_captures: AtomicU64,
    pub tokens_generated: AtomicU64,
    pub notes_generated: AtomicU64,
    /// The request being generated, 0 when none.
    pub current_request: AtomicU32,
    /// Incremented each time a model is swapped in.
    pub model_generation: AtomicU64,
    /// Models being loaded in the background.
    pub loads_in_flight: AtomicU32,
    /// Prompts prefilled while idle, ahead of the request that will use them.
    pub prompts_warmed: AtomicU64,
    /// Live sessions that took new snippets as their prompt and went on (`Command::LivePrompt`).
    pub live_prompt_changes: AtomicU64,
    /// Pushed note-ons the engine took back (`Event::Retract`) before the audio side played
    /// them: they never sounded.
    pub notes_retracted: AtomicU64,
    /// Retractions that came after the audio side had played the note-on (the race the engine
    /// cannot see): the note was released at the start of the block that drained them.
    pub retracted_after_playing: AtomicU64,
    last_error: Mutex<String>,
    model_name: Mutex<String>,
}

impl Default for EngineStatus {
    fn default() -> Self {
        Self {
            state: AtomicU8::new(EngineState::Idle as u8),
            dropped_commands: AtomicU64::new(0),
            dropped_events: AtomicU64::new(0),
            late_notes: AtomicU64::new(0),
            dropped_captures: AtomicU64::new(0),
            tokens_generated: AtomicU64::new(0),
            notes_generated: AtomicU64::new(0),
            current_request: AtomicU32::new(0),
            model_generation: AtomicU64::new(0),
            loads_in_flight: AtomicU32::new(0),
            prompts_warmed: AtomicU64::new(0),
            live_prompt_changes: AtomicU64::new(0),
            notes_retracted: AtomicU64::new(0),
            retracted_after_playing: AtomicU64::new(0),
            last_error: Mutex::new(String::new()),
            model_name: Mutex::new(String::new()),
        }
    }
}

impl EngineStatus {
    pub fn state(&self) -> EngineState {
        let s = EngineState::from_u8(self.state.load(Relaxed));
        // Loading is reported while a load runs, unless something more telling is going on.
        if self.loads_in_flight.load(Relaxed) > 0
            && matches!(s, EngineState::Idle | EngineState::Ready)
        {
            return EngineState::Loading;
        }
        s
    }

    pub(crate) fn set_state(&self, s: EngineState) {
        self.state.store(s as u8, Relaxed);
    }

    /// Not for the audio thread (takes a lock).
    pub fn last_error(&self) -> String {
        self.last_error.lock().clone()
    }

    /// Not for the audio thread (takes a lock).
    pub fn model_name(&self) -> String {
        self.model_name.lock().clone()
    }

    pub(crate) fn set_error(&self, text: impl Into<String>) {
        *self.last_error.lock() = text.into();
        self.set_state(EngineState::Error);
    }

    pub(crate) fn set_model_name(&self, name: impl Into<String>) {
        *self.model_name.lock() = name.into();
    }

    /// A consistent-enough copy for display (not for the audio thread: it clones the strings).
    pub fn snapshot(&self) -> StatusSnapshot {
        StatusSnapshot {
            state: self.state(),
            dropped_commands: self.dropped_commands.load(Relaxed),
            dropped_events: self.dropped_events.load(Relaxed),
            late_notes: self.late_notes.load(Relaxed),
            dropped_captures: self.dropped_captures.load(Relaxed),
            tokens_generated: self.tokens_generated.load(Relaxed),
            notes_generated: self.notes_generated.load(Relaxed),
            current_request: self.current_request.load(Relaxed),
            model_generation: self.model_generation.load(Relaxed),
            last_error: self.last_error(),
            model_name: self.model_name(),
        }
    }
}

#[derive(Debug, Clone, PartialEq)]
pub struct StatusSnapshot {
    pub state: EngineState,
    pub dropped_commands: u64,
    pub dropped_events: u64,
    pub late_notes: u64,
    pub dropped_captures: u64,
    pub tokens_generated: u64,
    pub notes_generated: u64,
    pub current_request: u32,
    pub model_generation: u64,
    pub last_error: String,
    pub model_name: String,
}

/// Scalar generation settings, written by the plugin's parameters (any thread) and read by the
/// engine when a request starts. Setters clamp instead of failing, so host automation can never
/// put a nonsensical value in force.
#[derive(Debug)]
pub struct EngineParams {
    temperature: AtomicF32,
    top_p: AtomicF32,
    min_p: AtomicF32,
    /// Snippet following (`SamplingParams::follow_bias`), 0..=20.
    follow_bias: AtomicF32,
    pitch_low: AtomicU8,
    pitch_high: AtomicU8,
    /// Bit `n` set: pitch class `n` (C = 0) allowed. 0xFFF = chromatic.
    key_mask: AtomicU16,
    max_polyphony: AtomicU8,
    channel: AtomicU8,
    /// 0 = no style token; `n` = the `n`th style of the default tokenizer (see `style_name`).
    style: AtomicU8,
    /// The form the next request will most likely name (`Form::to_bits`), for the engine's
    /// idle prompt prefill.
    form: AtomicU64,
}

impl Default for EngineParams {
    fn default() -> Self {
        let sampling = crate::sampling::SamplingParams::default();
        Self {
            temperature: AtomicF32::new(sampling.temperature),
            top_p: AtomicF32::new(sampling.top_p),
            min_p: AtomicF32::new(sampling.min_p),
            follow_bias: AtomicF32::new(sampling.follow_bias),
            pitch_low: AtomicU8::new(0),
            pitch_high: AtomicU8::new(127),
            key_mask: AtomicU16::new(0xFFF),
            max_polyphony: AtomicU8::new(16),
            channel: AtomicU8::new(0),
            style: AtomicU8::new(0),
            form: AtomicU64::new(0),
        }
    }
}

/// The settings in force for one request.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct ParamValues {
    pub temperature: f32,
    pub top_p: f32,
    pub min_p: f32,
    pub follow_bias: f32,
    pub pitch_low: u8,
    pub pitch_high: u8,
    pub key_mask: u16,
    pub max_polyphony: u8,
    pub channel: u8,
    /// 0 = none, `n` = `TokenizerConfig::default().styles[n - 1]`.
    pub style: u8,
    pub form: crate::messages::Form,
}

impl ParamValues {
    /// The style token name chosen, if any (the default tokenizer's list, which the plugin's
    /// style choices follow; a model without that style generates without one).
    pub fn style_name(&self) -> Option<String> {
        let n = self.style.checked_sub(1)? as usize;
        staria_models::TokenizerConfig::default()
            .styles
            .get(n)
            .cloned()
    }

    pub fn allows_pitch(&self, pitch: u8) -> bool {
        pitch >= self.pitch_low
            && pitch <= self.pitch_high
            && pitch <= 127
            && self.key_mask & (1 << (pitch % 12)) != 0
    }
}

fn finite_or(v: f32, fallback: f32) -> f32 {
    if v.is_finite() { v } else { fallback }
}

impl EngineParams {
    /// 0.0 means greedy; clamped to 0..=4.
    pub fn set_temperature(&self, v: f32) {
        self.temperature
            .store(finite_or(v, 1.0).clamp(0.0, 4.0), Relaxed);
    }
    pub fn set_top_p(&self, v: f32) {
        self.top_p.store(finite_or(v, 1.0).clamp(0.0, 1.0), Relaxed);
    }
    pub fn set_min_p(&self, v: f32) {
        self.min_p.store(finite_or(v, 0.0).clamp(0.0, 1.0), Relaxed);
    }
    /// Snippet following ("adherence"): 0 leaves the model alone; clamped to 0..=20 (a
    /// non-finite value means the default).
    pub fn set_follow_bias(&self, v: f32) {
        let default = crate::sampling::SamplingParams::DEFAULT_FOLLOW_BIAS;
        self.follow_bias
            .store(finite_or(v, default).clamp(0.0, 20.0), Relaxed);
    }
    /// Inclusive MIDI pitch range; swapped if given backwards, clamped to 0..=127.
    pub fn set_pitch_range(&self, low: u8, high: u8) {
        let (lo, hi) = if low <= high {
            (low, high)
        } else {
            (high, low)
        };
        self.pitch_low.store(lo.min(127), Relaxed);
        self.pitch_high.store(hi.min(127), Relaxed);
    }
    /// Pitch classes allowed (bit 0 = C); an empty mask would silence everything, so it means
    /// chromatic.
    pub fn set_key_mask(&self, mask: u16) {
        let m = mask & 0xFFF;
        self.key_mask.store(if m == 0 { 0xFFF } else { m }, Relaxed);
    }
    /// 1..=64 simultaneous notes.
    pub fn set_max_polyphony(&self, n: u8) {
        self.max_polyphony.store(n.clamp(1, 64), Relaxed);
    }
    /// MIDI channel 0..=15 for generated notes.
    pub fn set_channel(&self, ch: u8) {
        self.channel.store(ch.min(15), Relaxed);
    }
    /// 0 = no style, `n` = the `n`th style of the default tokenizer (out of range = none).
    pub fn set_style(&self, n: u8) {
        self.style.store(n, Relaxed);
    }
    /// The form the plugin's next requests will carry (lets the engine prefill their prompt).
    pub fn set_form(&self, form: crate::messages::Form) {
        self.form.store(form.to_bits(), Relaxed);
    }

    pub fn values(&self) -> ParamValues {
        ParamValues {
            temperature: self.temperature.load(Relaxed),
            top_p: self.top_p.load(Relaxed),
            min_p: self.min_p.load(Relaxed),
            follow_bias: self.follow_bias.load(Relaxed),
            pitch_low: self.pitch_low.load(Relaxed),
            pitch_high: self.pitch_high.load(Relaxed),
            key_mask: self.key_mask.load(Relaxed),
            max_polyphony: self.max_polyphony.load(Relaxed),
            channel: self.channel.load(Relaxed),
            style: self.style.load(Relaxed),
            form: crate::messages::Form::from_bits(self.form.load(Relaxed)),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn params_clamp_bad_values() {
        let p = EngineParams::default();
        p.set_temperature(f32::NAN);
        p.set_top_p(7.0);
        p.set_min_p(-1.0);
        p.set_pitch_range(200, 40);
        p.set_key_mask(0);
        p.set_max_polyphony(0);
        p.set_channel(99);
        p.set_follow_bias(f32::NAN);
        let v = p.values();
        assert_eq!(v.follow_bias, 4.0);
        p.set_follow_bias(25.0);
        assert_eq!(p.values().follow_bias, 20.0);
        p.set_follow_bias(-1.0);
        assert_eq!(p.values().follow_bias, 0.0);
        assert_eq!(v.temperature, 1.0);
        assert_eq!(v.top_p, 1.0);
        assert_eq!(v.min_p, 0.0);
        assert_eq!((v.pitch_low, v.pitch_high), (40, 127));
        assert_eq!(v.key_mask, 0xFFF);
        assert_eq!(v.max_polyphony, 1);
        assert_eq!(v.channel, 15);
        p.set_style(200);
        assert_eq!(p.values().style_name(), None);
        p.set_style(3);
        assert_eq!(p.values().style_name().as_deref(), Some("fiddle_tune"));
        p.set_style(0);
        assert_eq!(p.values().style_name(), None);
    }

    #[test]
    fn key_mask_filters_pitch_classes() {
        let p = EngineParams::default();
        // C major: C D E F G A B
        p.set_key_mask(0b1010_1011_0101);
        p.set_pitch_range(48, 72);
        let v = p.values();
        assert!(v.allows_pitch(60)); // C
        assert!(!v.allows_pitch(61)); // C#
        assert!(v.allows_pitch(71)); // B
        assert!(!v.allows_pitch(74)); // D above the range
        assert!(!v.allows_pitch(47));
    }

    #[test]
    fn state_round_trips() {
        let s = EngineStatus::default();
        assert_eq!(s.state(), EngineState::Idle);
        s.set_error("bad checkpoint");
        assert_eq!(s.state(), EngineState::Error);
        assert_eq!(s.snapshot().last_error, "bad checkpoint");
    }
}
