//! The tokenizer settings stored with every checkpoint (inside `tokenizer.json`).

use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};

/// General MIDI instrument families, indexed by `program / 8`.
pub const GM_FAMILIES: [&str; 16] = [
    "piano",
    "chromatic_percussion",
    "organ",
    "guitar",
    "bass",
    "strings",
    "ensemble",
    "brass",
    "reed",
    "pipe",
    "synth_lead",
    "synth_pad",
    "synth_effects",
    "ethnic",
    "percussive",
    "sound_effects",
];

/// Lowest drum pitch given a token (General MIDI percussion key map starts at 27 in GM2).
pub const DRUM_PITCH_MIN: u8 = 27;
/// Highest drum pitch given a token.
pub const DRUM_PITCH_MAX: u8 = 87;

/// Loudest velocity level; always a level so fortissimo survives quantization.
pub const MAX_VELOCITY: u8 = 127;

/// Upper bound on the vocabulary a config may ask for, so a typo (time step 1 µs) fails
/// cleanly instead of allocating gigabytes.
pub const MAX_VOCAB: usize = 1 << 20;

/// How songs become tokens. Every field has a default (`#[serde(default)]`), so a partial
/// JSON config is filled in.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct TokenizerConfig {
    /// Length of one time window; `<T>` advances by this much.
    pub window_ms: u32,
    /// Resolution of onsets and durations.
    pub time_step_ms: u32,
    /// Longest duration token; longer notes are cut to it.
    pub max_duration_ms: u32,
    /// Velocity levels are the multiples of this up to 120, plus 127.
    pub velocity_step: u8,
    /// General MIDI family names (see [`GM_FAMILIES`]); families not listed fold to the first.
    pub instruments: Vec<String>,
    /// Whether channel-9 notes become `drum:PITCH` tokens (else they are dropped).
    pub drums: bool,
    /// `<D>` stands this many ms before the end of a piece.
    pub ending_soon_ms: u32,
    /// Forms with a token, as letters A..D.
    pub forms: Vec<String>,
    /// Style names with a token.
    pub styles: Vec<String>,
    /// Token budget of one prompt snippet when building training examples.
    pub snippet_tokens: usize,
    /// Section-aligned time: a section tag in a piece body comes right after the onset where
    /// the section starts (in the current window), and a new time window starts there. A section's
    /// notes then get the same onset tokens as its snippet in the prompt (both count from the
    /// section start), so restating a snippet later in a piece is a copy, not a shift by the
    /// section's phase in a 5 s window. Off by default (and in files written before it
    /// existed): the shipped model reads the legacy layout, and a model moved to this one
    /// (`trainer/configs/small-sw-gpu.toml`) has not yet beaten it on balanced form adherence
    /// (its A sections follow their snippet more closely, its B sections drift to A's
    /// material; see the model card).
    #[serde(default)]
    pub section_windows: bool,
}

impl Default for TokenizerConfig {
    fn default() -> Self {
        let s = |v: &[&str]| v.iter().map(|x| x.to_string()).collect::<Vec<_>>();
        TokenizerConfig {
            window_ms: 5000,
            time_step_ms: 10,
            max_duration_ms: 5000,
            velocity_step: 10,
            instruments: s(&["piano"]),
            drums: true,
            ending_soon_ms: 5000,
            forms: s(&[
                "A", "AA", "AB", "AAB", "ABA", "ABB", "ABC", "ABAB", "ABAC", "ABCA", "ABCB",
                "ABCD", "AABB", "AABA", "AABC", "ABCC", "AABAAB",
            ]),
            styles: s(&[
                "bach",
                "chorale",
                "fiddle_tune",
                "reel",
                "jig",
                "hornpipe",
                "folk_song",
            ]),
            snippet_tokens: 256,
            section_windows: false,
        }
    }
}

fn err(msg: impl Into<String>) -> Error {
    Error::Tokenizer(msg.into())
}

impl TokenizerConfig {
    /// Checks every setting; the error names the first one at fault.
    pub fn validate(&self) -> Result<()> {
        if self.time_step_ms == 0 {
            return Err(err("time_step_ms must be at least 1"));
        }
        for (name, v) in [
            ("window_ms", self.window_ms),
            ("max_duration_ms", self.max_duration_ms),
        ] {
            if v < self.time_step_ms || v % self.time_step_ms != 0 {
                return Err(err(format!(
                    "{name} = {v} must be a positive multiple of time_step_ms = {}",
                    self.time_step_ms
                )));
            }
        }
        if self.velocity_step == 0 || self.velocity_step > 120 {
            return Err(err(format!(
                "velocity_step = {} must be in 1..=120",
                self.velocity_step
            )));
        }
        if self.instruments.is_empty() {
            return Err(err(
                "instruments must list at least one General MIDI family",
            ));
        }
        for (i, name) in self.instruments.iter().enumerate() {
            if !GM_FAMILIES.contains(&name.as_str()) {
                return Err(err(format!(
                    "unknown instrument family {name:?} (known: {})",
                    GM_FAMILIES.join(", ")
                )));
            }
            if self.instruments[..i].contains(name) {
                return Err(err(format!("instrument {name:?} is listed twice")));
            }
        }
        for (i, form) in self.forms.iter().enumerate() {
            if form.is_empty() || !form.bytes().all(|b| (b'A'..=b'D').contains(&b)) {
                return Err(err(format!(
                    "form {form:?} must be a non-empty string of letters A..D"
                )));
            }
            if self.forms[..i].contains(form) {
                return Err(err(format!("form {form:?} is listed twice")));
            }
        }
        for (i, style) in self.styles.iter().enumerate() {
            let ok_char = |c: char| c.is_ascii_alphanumeric() || c == '_' || c == '-';
            if style.is_empty() || !style.chars().all(ok_char) {
                return Err(err(format!(
                    "style {style:?} must be a non-empty name of letters, digits, '_' or '-'"
                )));
            }
            if self.styles[..i].contains(style) {
                return Err(err(format!("style {style:?} is listed twice")));
            }
        }
        if self.snippet_tokens == 0 {
            return Err(err("snippet_tokens must be at least 1"));
        }
        let size = self.vocab_size_unchecked();
        if size > MAX_VOCAB {
            return Err(err(format!(
                "these settings give {size} tokens, more than the limit of {MAX_VOCAB} (time_step_ms too small?)"
            )));
        }
        Ok(())
    }

    /// The velocity levels, ascending: multiples of `velocity_step` up to 120, then 127.
    pub(crate) fn velocity_levels(&self) -> Vec<u8> {
        let step = self.velocity_step.max(1);
        let mut v: Vec<u8> = (1..).map(|k| k * step).take_while(|&x| x <= 120).collect();
        v.push(MAX_VELOCITY);
        v
    }

    pub(crate) fn onset_count(&self) -> usize {
        (self.window_ms / self.time_step_ms.max(1)) as usize
    }

    pub(crate) fn dur_count(&self) -> usize {
        (self.max_duration_ms / self.time_step_ms.max(1)) as usize
    }

    pub(crate) fn drum_count(&self) -> usize {
        if self.drums {
            (DRUM_PITCH_MAX - DRUM_PITCH_MIN + 1) as usize
        } else {
            0
        }
    }

    /// Computed from the settings alone (no tables), so validation can refuse huge vocabularies
    /// before building them.
    fn vocab_size_unchecked(&self) -> usize {
        super::N_SPECIAL as usize
            + self.instruments.len() * 128 * self.velocity_levels().len()
            + self.drum_count()
            + self.onset_count()
            + self.dur_count()
            + self.forms.len()
            + self.styles.len()
    }
}
