//! Logit masks that keep generation musical and well formed: pitch range, key/scale, maximum
//! polyphony, the time span a section may fill, and the token grammar (note, onset, duration),
//! so every sampled sequence decodes.
//!
//! `Constraints` is what a request asks for; `ConstrainedDecoder` compiles it once per request
//! against the tokenizer's tables (an additive mask over the vocabulary plus the id ranges) and
//! then tracks the piece token by token. Per token it only adds the precomputed mask and fills a
//! few id ranges with `-inf`: no allocation on the engine thread.

use std::fmt;
use std::ops::Range;
use std::str::FromStr;

use serde::{Deserialize, Serialize};
use staria_models::tokenizer::{
    Expect, OnsetVote, StreamDecoder, StreamEvent, TokenKind, Tokenizer,
};

/// A scale as intervals from its root; its pitch classes form a 12-bit mask.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum ScaleKind {
    Major,
    /// Natural minor (aeolian).
    Minor,
    HarmonicMinor,
    /// Ascending melodic minor.
    MelodicMinor,
    Dorian,
    Phrygian,
    Lydian,
    Mixolydian,
    Locrian,
    MajorPentatonic,
    MinorPentatonic,
    Blues,
    WholeTone,
    Chromatic,
}

impl ScaleKind {
    pub const ALL: [ScaleKind; 14] = [
        ScaleKind::Major,
        ScaleKind::Minor,
        ScaleKind::HarmonicMinor,
        ScaleKind::MelodicMinor,
        ScaleKind::Dorian,
        ScaleKind::Phrygian,
        ScaleKind::Lydian,
        ScaleKind::Mixolydian,
        ScaleKind::Locrian,
        ScaleKind::MajorPentatonic,
        ScaleKind::MinorPentatonic,
        ScaleKind::Blues,
        ScaleKind::WholeTone,
        ScaleKind::Chromatic,
    ];

    /// Semitones above the root.
    pub fn intervals(self) -> &'static [u8] {
        match self {
            ScaleKind::Major => &[0, 2, 4, 5, 7, 9, 11],
            ScaleKind::Minor => &[0, 2, 3, 5, 7, 8, 10],
            ScaleKind::HarmonicMinor => &[0, 2, 3, 5, 7, 8, 11],
            ScaleKind::MelodicMinor => &[0, 2, 3, 5, 7, 9, 11],
            ScaleKind::Dorian => &[0, 2, 3, 5, 7, 9, 10],
            ScaleKind::Phrygian => &[0, 1, 3, 5, 7, 8, 10],
            ScaleKind::Lydian => &[0, 2, 4, 6, 7, 9, 11],
            ScaleKind::Mixolydian => &[0, 2, 4, 5, 7, 9, 10],
            ScaleKind::Locrian => &[0, 1, 3, 5, 6, 8, 10],
            ScaleKind::MajorPentatonic => &[0, 2, 4, 7, 9],
            ScaleKind::MinorPentatonic => &[0, 3, 5, 7, 10],
            ScaleKind::Blues => &[0, 3, 5, 6, 7, 10],
            ScaleKind::WholeTone => &[0, 2, 4, 6, 8, 10],
            ScaleKind::Chromatic => &[0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11],
        }
    }

    pub fn name(self) -> &'static str {
        match self {
            ScaleKind::Major => "major",
            ScaleKind::Minor => "minor",
            ScaleKind::HarmonicMinor => "harmonic-minor",
            ScaleKind::MelodicMinor => "melodic-minor",
            ScaleKind::Dorian => "dorian",
            ScaleKind::Phrygian => "phrygian",
            ScaleKind::Lydian => "lydian",
            ScaleKind::Mixolydian => "mixolydian",
            ScaleKind::Locrian => "locrian",
            ScaleKind::MajorPentatonic => "pentatonic",
            ScaleKind::MinorPentatonic => "minor-pentatonic",
            ScaleKind::Blues => "blues",
            ScaleKind::WholeTone => "whole-tone",
            ScaleKind::Chromatic => "chromatic",
        }
    }

    /// Accepts the `name()` spellings plus common aliases ("ionian", "aeolian", "maj", "m").
    fn parse(s: &str) -> Option<ScaleKind> {
        let s: String = s.trim().to_ascii_lowercase().replace(['_', ' '], "-");
        Some(match s.as_str() {
            "major" | "maj" | "ionian" => ScaleKind::Major,
            "minor" | "min" | "m" | "aeolian" | "natural-minor" => ScaleKind::Minor,
            "harmonic-minor" => ScaleKind::HarmonicMinor,
            "melodic-minor" => ScaleKind::MelodicMinor,
            "dorian" => ScaleKind::Dorian,
            "phrygian" => ScaleKind::Phrygian,
            "lydian" => ScaleKind::Lydian,
            "mixolydian" => ScaleKind::Mixolydian,
            "locrian" => ScaleKind::Locrian,
            "pentatonic" | "major-pentatonic" => ScaleKind::MajorPentatonic,
            "minor-pentatonic" => ScaleKind::MinorPentatonic,
            "blues" => ScaleKind::Blues,
            "whole-tone" | "wholetone" => ScaleKind::WholeTone,
            "chromatic" => ScaleKind::Chromatic,
            _ => return None,
        })
    }
}

const NOTE_NAMES: [&str; 12] = [
    "C", "C#", "D", "D#", "E", "F", "F#", "G", "G#", "A", "A#", "B",
];

/// A key: root pitch class (0 = C .. 11 = B) and scale kind.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct Scale {
    pub root: u8,
    pub kind: ScaleKind,
}

impl Scale {
    pub fn new(root: u8, kind: ScaleKind) -> Scale {
        Scale {
            root: root % 12,
            kind,
        }
    }

    /// Bit `pc` is set when pitch class `pc` (0 = C) is in the scale.
    pub fn pitch_classes(&self) -> u16 {
        self.kind
            .intervals()
            .iter()
            .fold(0u16, |m, &i| m | 1 << ((self.root as u16 + i as u16) % 12))
    }

    pub fn contains(&self, pitch: u8) -> bool {
        self.pitch_classes() & (1 << (pitch % 12)) != 0
    }
}

impl fmt::Display for Scale {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{} {}",
            NOTE_NAMES[(self.root % 12) as usize],
            self.kind.name()
        )
    }
}

impl FromStr for Scale {
    type Err = String;

    /// "C", "C major", "f#-minor", "Bb:dorian", "Eb mixolydian", "A minor-pentatonic";
    /// "chromatic" alone means C chromatic.
    fn from_str(s: &str) -> Result<Scale, String> {
        let t = s.trim();
        if let Some(kind) = ScaleKind::parse(t).filter(|k| *k == ScaleKind::Chromatic) {
            return Ok(Scale::new(0, kind));
        }
        let bad = || {
            let kinds: Vec<&str> = ScaleKind::ALL.iter().map(|k| k.name()).collect();
            format!(
                "scale {s:?} is not '<root> [<kind>]' with a root like C, F# or Bb and a kind among {}",
                kinds.join(", ")
            )
        };
        let mut chars = t.chars();
        let letter = chars.next().ok_or_else(bad)?.to_ascii_uppercase();
        let base: i32 = match letter {
            'C' => 0,
            'D' => 2,
            'E' => 4,
            'F' => 5,
            'G' => 7,
            'A' => 9,
            'B' => 11,
            _ => return Err(bad()),
        };
        let mut rest = chars.as_str();
        let mut root = base;
        // One accidental; "b" followed by a letter would be a kind name ("blues"), so a flat
        // counts only when what follows is not a letter.
        if let Some(r) = rest.strip_prefix(['#', '♯']) {
            root += 1;
            rest = r;
        } else if let Some(r) = rest.strip_prefix(['b', '♭'])
            && !r.starts_with(|c: char| c.is_ascii_alphabetic())
        {
            root -= 1;
            rest = r;
        }
        let rest = rest.trim_start_matches([' ', ':', '-', '_']);
        let kind = if rest.is_empty() {
            ScaleKind::Major
        } else {
            ScaleKind::parse(rest).ok_or_else(bad)?
        };
        Ok(Scale::new(root.rem_euclid(12) as u8, kind))
    }
}

/// What a request allows the model to play.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Constraints {
    /// Lowest and highest pitch a (non-drum) note may have, inclusive.
    pub pitch_min: u8,
    pub pitch_max: u8,
    /// Only pitches of this scale (drums are exempt); `None` = any pitch.
    pub scale: Option<Scale>,
    /// At most this many pitched notes sounding at once; `None` = unlimited.
    pub max_polyphony: Option<u8>,
    /// Whether drum hits may be generated.
    pub drums: bool,
    /// Whether the model may end early (`<E>`, `<D>`, another section tag) before the requested
    /// span is over. Off by default: a request for N bars gets N bars.
    pub allow_early_end: bool,
}

impl Default for Constraints {
    fn default() -> Self {
        Constraints {
            pitch_min: 0,
            pitch_max: 127,
            scale: None,
            max_polyphony: None,
            drums: false,
            allow_early_end: false,
        }
    }
}

impl Constraints {
    /// Checks the settings can be met; the message names the one at fault.
    pub fn validate(&self) -> Result<(), String> {
        if self.pitch_max > 127 || self.pitch_min > self.pitch_max {
            return Err(format!(
                "pitch range {}..={} is empty or beyond 0..=127",
                self.pitch_min, self.pitch_max
            ));
        }
        if self.max_polyphony == Some(0) {
            return Err("max polyphony must be at least 1".into());
        }
        if let Some(scale) = self.scale
            && !(self.pitch_min..=self.pitch_max).any(|p| scale.contains(p))
        {
            return Err(format!(
                "no pitch in {}..={} belongs to {scale}",
                self.pitch_min, self.pitch_max
            ));
        }
        Ok(())
    }

    /// Whether a pitched note may have this pitch.
    pub fn allows_pitch(&self, pitch: u8) -> bool {
        (self.pitch_min..=self.pitch_max).contains(&pitch)
            && self.scale.is_none_or(|s| s.contains(pitch))
    }
}

/// How the generator reads an onset sampled under [`ConstrainedDecoder::apply_open`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OnsetRead {
    /// A legal onset: feed it.
    Accept,
    /// Before the window's last onset: a vote for `<T>` ([`OnsetVote::NextWindow`]). Take the
    /// note token back (KV cache and [`ConstrainedDecoder::retract_pending`]), feed `<T>`, feed
    /// the note token again and sample its onset in the new window.
    TimeShift,
    /// Not before the window's last onset but before the earliest step the request allows (a
    /// voice still busy, the span not started yet): sample again under [`ConstrainedDecoder::apply`].
    Clamp,
}

/// The stream decoder plus everything the masks need: the request's compiled tables, the time
/// span notes may start in, and the end times of the notes still sounding.
#[derive(Debug, Clone)]
pub struct ConstrainedDecoder {
    /// Additive mask (0 or -inf) for `Expect::Any`: allowed pitches, drums, `<T>`, and the
    /// end-like tokens when early ends are allowed. Never prompt/form/style/pad/unknown/`<S>`.
    any: Vec<f32>,
    notes: Range<u32>,
    drums: Range<u32>,
    onsets: Range<u32>,
    durs: Range<u32>,
    step_ms: u32,
    window_ms: u32,
    /// Largest end times (ms, absolute) of pitched notes, at most `max_polyphony` of them:
    /// only the largest ones decide when a voice frees up.
    ends: Vec<f64>,
    max_polyphony: usize,
    span_start_ms: f64,
    span_end_ms: f64,
    /// Notes placed in the current span. Until there is one, the span cannot be left while a
    /// note still fits: a requested section is never silent (an untrained or unsure model
    /// otherwise often lets time run out before playing anything).
    notes_in_span: u32,
    time_shift: u32,
    /// End-like tokens the `any` mask allows (only with `allow_early_end`).
    early_ends: Vec<u32>,
    dec: StreamDecoder,
    /// Whether the pending onset belongs to a pitched note (polyphony applies) or a drum.
    pending_pitched: bool,
}

impl ConstrainedDecoder {
    /// Compiles `c` against the tokenizer. The span starts unbounded; see `set_span`.
    pub fn new(tok: &Tokenizer, c: &Constraints) -> Result<ConstrainedDecoder, String> {
        c.validate()?;
        let vocab = tok.vocab_size();
        let mut any = vec![f32::NEG_INFINITY; vocab];
        for (id, slot) in any.iter_mut().enumerate() {
            let ok = match tok.kind(id as u32) {
                TokenKind::Note { pitch, .. } => c.allows_pitch(pitch),
                TokenKind::Drum { .. } => c.drums,
                TokenKind::TimeShift => true,
                TokenKind::End | TokenKind::EndingSoon | TokenKind::Section(_) => c.allow_early_end,
                // Onsets and durations only follow a note; the rest belongs to the prompt.
                TokenKind::Onset { .. }
                | TokenKind::Dur { .. }
                | TokenKind::Start
                | TokenKind::Pad
                | TokenKind::Unknown
                | TokenKind::PromptStart
                | TokenKind::PromptEnd
                | TokenKind::Form(_)
                | TokenKind::Style(_) => false,
            };
            if ok {
                *slot = 0.0;
            }
        }
        let early_ends = (0..vocab as u32)
            .filter(|&id| {
                c.allow_early_end
                    && matches!(
                        tok.kind(id),
                        TokenKind::End | TokenKind::EndingSoon | TokenKind::Section(_)
                    )
            })
            .collect();
        let max_polyphony = c.max_polyphony.map_or(usize::MAX, |p| p as usize);
        let cfg = tok.config();
        Ok(ConstrainedDecoder {
            any,
            notes: tok.note_ids(),
            drums: tok.drum_ids(),
            onsets: tok.onset_ids(),
            durs: tok.dur_ids(),
            step_ms: cfg.time_step_ms,
            window_ms: cfg.window_ms,
            ends: Vec::with_capacity(c.max_polyphony.unwrap_or(0) as usize + 1),
            max_polyphony,
            span_start_ms: 0.0,
            span_end_ms: f64::INFINITY,
            notes_in_span: 0,
            time_shift: tok.time_shift_id(),
            early_ends,
            dec: StreamDecoder::new(),
            pending_pitched: false,
        })
    }

    /// Notes may only start in `[start_ms, end_ms)` (absolute piece time) from now on.
    /// The span counts as empty until a note starts in it (see `notes_in_span`).
    pub fn set_span(&mut self, start_ms: f64, end_ms: f64) {
        self.span_start_ms = start_ms;
        self.span_end_ms = end_ms;
        self.notes_in_span = 0;
    }

    /// Moves the end of the current span, keeping what it holds (the live answer's first note
    /// is placed in its first beat, then the span opens to the answer's bars).
    pub fn set_span_end(&mut self, end_ms: f64) {
        self.span_end_ms = end_ms;
    }

    /// Like [`set_span`](Self::set_span), but the span may stay empty: nothing forces a note
    /// into it (the live accompaniment's look-ahead, where silence is a fine answer).
    pub fn set_optional_span(&mut self, start_ms: f64, end_ms: f64) {
        self.span_start_ms = start_ms;
        self.span_end_ms = end_ms;
        // Counted as holding a note already, so `must_play` never holds the span open.
        self.notes_in_span = 1;
    }

    /// Back to the state right after `new`: an empty piece (as after `<S>`), no sounding notes,
    /// an unbounded span. The compiled masks are kept, so nothing is allocated; the live modes
    /// replay the cached tokens after a rewind of the model's cache.
    pub fn restart(&mut self) {
        self.dec = StreamDecoder::new();
        self.ends.clear();
        self.span_start_ms = 0.0;
        self.span_end_ms = f64::INFINITY;
        self.notes_in_span = 0;
        self.pending_pitched = false;
    }

    /// Notes (pitched or drum) started inside the current span so far.
    pub fn notes_in_span(&self) -> u32 {
        self.notes_in_span
    }

    pub fn span(&self) -> (f64, f64) {
        (self.span_start_ms, self.span_end_ms)
    }

    pub fn decoder(&self) -> &StreamDecoder {
        &self.dec
    }

    pub fn expects(&self) -> Expect {
        self.dec.expects()
    }

    /// Start of the current time window (ms from `<S>`).
    pub fn window_start_ms(&self) -> f64 {
        self.dec.window_start_ms() as f64
    }

    /// Feeds one piece token (sampled, forced, or from the material being continued).
    pub fn push(&mut self, tok: &Tokenizer, id: u32) -> Option<StreamEvent> {
        let ev = self.dec.push(tok, id);
        match self.dec.expects() {
            Expect::Onset => self.pending_pitched = matches!(tok.kind(id), TokenKind::Note { .. }),
            Expect::Any | Expect::Dur => {}
        }
        if let Some(StreamEvent::Note { start_ms, .. }) = ev
            && (self.span_start_ms..self.span_end_ms).contains(&start_ms)
        {
            self.notes_in_span += 1;
        }
        if let Some(StreamEvent::Note {
            drum: false,
            start_ms,
            dur_ms,
            ..
        }) = ev
        {
            self.note_sounds(start_ms, start_ms + dur_ms);
        }
        ev
    }

    fn note_sounds(&mut self, start_ms: f64, end_ms: f64) {
        if self.max_polyphony == usize::MAX {
            return;
        }
        // Notes over by `start_ms` cannot overlap anything later (onsets never go back).
        self.ends.retain(|&e| e > start_ms);
        if self.ends.len() == self.max_polyphony {
            // Keep the largest ends only; capacity was reserved for one more than the limit.
            let (i, &min) = self
                .ends
                .iter()
                .enumerate()
                .min_by(|a, b| a.1.total_cmp(b.1))
                .expect("ends is non-empty at the polyphony limit");
            if min >= end_ms {
                return;
            }
            self.ends.swap_remove(i);
        }
        self.ends.push(end_ms);
    }

    /// Earliest absolute time a new note could start at without exceeding the polyphony limit
    /// (and not before the decoder's current time).
    fn earliest_onset_ms(&self, pitched: bool) -> f64 {
        let now = self.window_start_ms() + self.dec.min_onset_ms() as f64;
        let mut t = now.max(self.span_start_ms);
        if pitched && self.max_polyphony != usize::MAX {
            let sounding = self.ends.iter().filter(|&&e| e > t).count();
            if sounding >= self.max_polyphony {
                // All kept ends lie after `t`: a voice frees up when the earliest of them ends.
                let free = self.ends.iter().copied().fold(f64::INFINITY, f64::min);
                t = t.max(free);
            }
        }
        t
    }

    /// Onset steps (within the current window) a new note may take: `[from, to)`.
    fn onset_steps(&self, pitched: bool) -> (u32, u32) {
        let w0 = self.window_start_ms();
        let steps_per_window = self.window_ms / self.step_ms;
        let step = self.step_ms as f64;
        let from = ((self.earliest_onset_ms(pitched) - w0) / step)
            .ceil()
            .max(0.0);
        let to = ((self.span_end_ms - w0) / step)
            .ceil()
            .clamp(0.0, steps_per_window as f64);
        let from = from.min(steps_per_window as f64) as u32;
        (from, (to as u32).max(from))
    }

    fn can_start(&self, pitched: bool) -> bool {
        let (from, to) = self.onset_steps(pitched);
        from < to
    }

    /// Whether `id`, sampled now, moves time past the span end (a `<T>` or an onset beyond it):
    /// the generator then ends the span without feeding it.
    pub fn ends_span(&self, tok: &Tokenizer, id: u32) -> bool {
        match tok.kind(id) {
            TokenKind::TimeShift => !self.time_shift_allowed(),
            TokenKind::Onset { ms } => self.window_start_ms() + ms as f64 >= self.span_end_ms,
            _ => false,
        }
    }

    /// Whether `<T>` keeps the piece inside the span.
    fn time_shift_allowed(&self) -> bool {
        self.window_start_ms() + (self.window_ms as f64) < self.span_end_ms
    }

    /// True when no note can be placed in the span any more: time has reached its end, or every
    /// voice is busy until then. The generator then ends the span instead of sampling.
    pub fn span_exhausted(&self) -> bool {
        let drum_possible = self.any_allowed(self.drums.clone()) && self.can_start(false);
        self.dec.expects() == Expect::Any
            && !self.can_start(true)
            && !drum_possible
            && !self.time_shift_allowed()
    }

    fn any_allowed(&self, ids: Range<u32>) -> bool {
        self.any[ids.start as usize..ids.end as usize].contains(&0.0)
    }

    /// Whether the span is still empty and a note could yet start in it: leaving it is then
    /// masked.
    fn must_play(&self) -> bool {
        self.notes_in_span == 0
            && self.span_end_ms.is_finite()
            && (self.can_start(true)
                || (self.any_allowed(self.drums.clone()) && self.can_start(false)))
    }

    /// Whether the onset about to be sampled may vote for `<T>` (see [`OnsetRead`]): an onset is
    /// expected, the window already has a later onset than its start, and `<T>` keeps the piece
    /// inside the span. Otherwise (`<T>` would end the span) onsets are masked as `apply` does.
    pub fn onset_may_vote(&self) -> bool {
        self.dec.expects() == Expect::Onset
            && self.dec.min_onset_ms() > 0
            && self.time_shift_allowed()
    }

    /// Onset steps `[from, to)` that `apply` keeps: from the earliest allowed step; up to the
    /// span end while the span is empty, else to the window end (an onset past the span end
    /// ends the span).
    fn onset_mask(&self) -> (u32, u32) {
        let (from, to) = self.onset_steps(self.pending_pitched);
        let steps_per_window = self.window_ms / self.step_ms;
        let to = if self.notes_in_span == 0 && from < to {
            to
        } else {
            steps_per_window.max(from)
        };
        (from, to)
    }

    /// `apply`, except that where [`onset_may_vote`](Self::onset_may_vote) the onset mask keeps
    /// every step of the window from its start (up to the same end as `apply`'s): the model's
    /// whole onset distribution is sampled and the sample is read by
    /// [`read_onset`](Self::read_onset).
    pub fn apply_open(&self, logits: &mut [f32]) {
        if !self.onset_may_vote() {
            return self.apply(logits);
        }
        let (_, to) = self.onset_mask();
        let onsets = self.onsets.start..self.onsets.start + to;
        let n = logits.len();
        logits[..(onsets.start as usize).min(n)].fill(f32::NEG_INFINITY);
        logits[(onsets.end as usize).min(n)..].fill(f32::NEG_INFINITY);
    }

    /// How the token `id`, sampled under [`apply_open`](Self::apply_open), is read.
    pub fn read_onset(&self, tok: &Tokenizer, id: u32) -> OnsetRead {
        if !self.onset_may_vote() {
            return OnsetRead::Accept;
        }
        if self.dec.onset_vote(tok, id) == OnsetVote::NextWindow {
            return OnsetRead::TimeShift;
        }
        let (from, _) = self.onset_mask();
        if id >= self.onsets.start + from {
            OnsetRead::Accept
        } else {
            OnsetRead::Clamp
        }
    }

    /// Takes back the pending note or drum token (after [`OnsetRead::TimeShift`]); the caller
    /// drops it from the model's cache too. `false` when none is pending.
    pub fn retract_pending(&mut self) -> bool {
        self.dec.retract_pending()
    }

    /// Masks `logits` (one per vocabulary entry) so that only tokens valid now remain.
    pub fn apply(&self, logits: &mut [f32]) {
        let neg = f32::NEG_INFINITY;
        let fill = |logits: &mut [f32], r: Range<u32>| {
            let end = (r.end as usize).min(logits.len());
            let start = (r.start as usize).min(end);
            logits[start..end].fill(neg);
        };
        let keep_only = |logits: &mut [f32], r: Range<u32>| {
            let n = logits.len() as u32;
            fill(logits, 0..r.start);
            fill(logits, r.end..n);
        };
        match self.dec.expects() {
            Expect::Any => {
                for (l, m) in logits.iter_mut().zip(&self.any) {
                    *l += m;
                }
                if !self.can_start(true) {
                    fill(logits, self.notes.clone());
                }
                if !self.can_start(false) {
                    fill(logits, self.drums.clone());
                }
                // `<T>` stays allowed even where it leaves the span: the model saying "time moves
                // on" is how a section ends (see `ends_span`). Masking it would make the model
                // pile notes onto the last onsets of the span instead. Only an empty span may
                // not be left (nor ended early) while a note still fits.
                if self.must_play() {
                    if !self.time_shift_allowed() {
                        logits[self.time_shift as usize] = neg;
                    }
                    for &id in &self.early_ends {
                        logits[id as usize] = neg;
                    }
                }
            }
            Expect::Onset => {
                // Likewise onsets past the span end stay allowed and end the span, unless the
                // span is still empty.
                let (from, to) = self.onset_mask();
                keep_only(logits, self.onsets.start + from..self.onsets.start + to);
            }
            Expect::Dur => keep_only(logits, self.durs.clone()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use staria_models::tokenizer::TokenizerConfig;

    fn tok() -> Tokenizer {
        Tokenizer::new(TokenizerConfig::default()).unwrap()
    }

    fn allowed(logits: &[f32]) -> Vec<u32> {
        logits
            .iter()
            .enumerate()
            .filter(|(_, l)| l.is_finite())
            .map(|(i, _)| i as u32)
            .collect()
    }

    fn masked(cd: &ConstrainedDecoder, vocab: usize) -> Vec<u32> {
        let mut l = vec![0.0f32; vocab];
        cd.apply(&mut l);
        allowed(&l)
    }

    #[test]
    fn scale_masks_and_parsing() {
        assert_eq!(
            Scale::new(0, ScaleKind::Major).pitch_classes(),
            0b1010_1011_0101
        );
        // A minor has the same pitch classes as C major.
        assert_eq!(
            "A minor".parse::<Scale>().unwrap().pitch_classes(),
            Scale::new(0, ScaleKind::Major).pitch_classes()
        );
        assert_eq!(
            "f#-dorian".parse::<Scale>().unwrap(),
            Scale::new(6, ScaleKind::Dorian)
        );
        assert_eq!(
            "Bb:mixolydian".parse::<Scale>().unwrap(),
            Scale::new(10, ScaleKind::Mixolydian)
        );
        assert_eq!(
            "B blues".parse::<Scale>().unwrap(),
            Scale::new(11, ScaleKind::Blues)
        );
        assert_eq!(
            "Cb".parse::<Scale>().unwrap(),
            Scale::new(11, ScaleKind::Major)
        );
        assert_eq!("chromatic".parse::<Scale>().unwrap().pitch_classes(), 0xFFF);
        assert_eq!(
            Scale::new(9, ScaleKind::MinorPentatonic)
                .pitch_classes()
                .count_ones(),
            5
        );
        let e = "H major".parse::<Scale>().unwrap_err();
        assert!(e.contains("\"H major\""), "{e}");
        assert!("C lydianish".parse::<Scale>().is_err());
        assert!(
            Scale::new(0, ScaleKind::Major).contains(60)
                && !Scale::new(0, ScaleKind::Major).contains(61)
        );
        for k in ScaleKind::ALL {
            assert_eq!(ScaleKind::parse(k.name()), Some(k));
        }
    }

    #[test]
    fn validate_names_the_problem() {
        let c = Constraints {
            pitch_min: 70,
            pitch_max: 60,
            ..Default::default()
        };
        assert!(c.validate().unwrap_err().contains("pitch range"));
        let c = Constraints {
            max_polyphony: Some(0),
            ..Default::default()
        };
        assert!(c.validate().unwrap_err().contains("polyphony"));
        // 61..=61 is C#, not in C major.
        let c = Constraints {
            pitch_min: 61,
            pitch_max: 61,
            scale: Some(Scale::new(0, ScaleKind::Major)),
            ..Default::default()
        };
        assert!(c.validate().unwrap_err().contains("C major"));
    }

    #[test]
    fn any_mask_keeps_allowed_pitches_and_time_shift_only() {
        let t = tok();
        let c = Constraints {
            pitch_min: 60,
            pitch_max: 72,
            scale: Some(Scale::new(0, ScaleKind::Major)),
            ..Default::default()
        };
        let cd = ConstrainedDecoder::new(&t, &c).unwrap();
        let ok = masked(&cd, t.vocab_size());
        let mut pitches = std::collections::BTreeSet::new();
        for &id in &ok {
            match t.kind(id) {
                TokenKind::Note { pitch, .. } => {
                    pitches.insert(pitch);
                }
                TokenKind::TimeShift => {}
                k => panic!("{k:?} must be masked at the start of a note"),
            }
        }
        assert_eq!(
            pitches.into_iter().collect::<Vec<_>>(),
            vec![60, 62, 64, 65, 67, 69, 71, 72]
        );
        // Every velocity level of an allowed pitch stays.
        assert_eq!(ok.len(), 8 * t.velocity_levels().len() + 1);
    }

    #[test]
    fn early_end_tokens_and_drums_follow_their_flags() {
        let t = tok();
        let c = Constraints {
            drums: true,
            allow_early_end: true,
            ..Default::default()
        };
        let cd = ConstrainedDecoder::new(&t, &c).unwrap();
        let ok = masked(&cd, t.vocab_size());
        assert!(ok.contains(&t.end_id()) && ok.contains(&t.ending_soon_id()));
        assert!(ok.contains(&t.section_id(staria_models::SectionLabel::B)));
        assert!(t.drum_ids().all(|id| ok.contains(&id)));
        for id in [
            t.start_id(),
            t.pad_id(),
            t.unknown_id(),
            t.prompt_start_id(),
            t.prompt_end_id(),
        ] {
            assert!(!ok.contains(&id), "{:?}", t.token(id));
        }
        assert!(
            t.form_ids()
                .chain(t.style_ids())
                .chain(t.onset_ids())
                .all(|id| !ok.contains(&id))
        );
        let cd = ConstrainedDecoder::new(&t, &Constraints::default()).unwrap();
        let ok = masked(&cd, t.vocab_size());
        assert!(!ok.contains(&t.end_id()) && t.drum_ids().all(|id| !ok.contains(&id)));
    }

    #[test]
    fn grammar_after_note_only_onsets_not_before_the_last_then_only_durations() {
        let t = tok();
        let mut cd = ConstrainedDecoder::new(&t, &Constraints::default()).unwrap();
        let v = t.vocab_size();
        let note = t.note_id(0, 60, 80).unwrap();
        cd.push(&t, note);
        assert_eq!(masked(&cd, v), t.onset_ids().collect::<Vec<_>>());
        cd.push(&t, t.onset_id(450.0).unwrap());
        assert_eq!(masked(&cd, v), t.dur_ids().collect::<Vec<_>>());
        let ev = cd.push(&t, t.dur_id(500.0));
        assert!(matches!(ev, Some(StreamEvent::Note { pitch: 60, .. })));
        cd.push(&t, note);
        // Onsets never go back within a window.
        let first = t.onset_id(450.0).unwrap();
        assert_eq!(
            masked(&cd, v),
            (first..t.onset_ids().end).collect::<Vec<_>>()
        );
    }

    #[test]
    fn span_bounds_onsets_and_time_shifts() {
        let t = tok(); // 5000 ms windows, 10 ms steps
        let v = t.vocab_size();
        let mut cd = ConstrainedDecoder::new(&t, &Constraints::default()).unwrap();
        cd.set_span(1000.0, 2500.0);
        assert!(
            cd.ends_span(&t, t.time_shift_id()),
            "<T> would leave the span"
        );
        // An empty span cannot be left: `<T>` is masked and onsets stay inside it.
        assert!(!masked(&cd, v).contains(&t.time_shift_id()));
        cd.push(&t, t.note_id(0, 60, 80).unwrap());
        let on = masked(&cd, v);
        assert_eq!(on.first(), t.onset_id(1000.0).as_ref());
        assert_eq!(on.last(), t.onset_id(2490.0).as_ref());
        cd.push(&t, t.onset_id(1200.0).unwrap());
        cd.push(&t, t.dur_id(100.0));
        assert_eq!(cd.notes_in_span(), 1);
        // Once it has a note, leaving the span is possible again: it is how the model ends it.
        assert!(masked(&cd, v).contains(&t.time_shift_id()));
        cd.push(&t, t.note_id(0, 60, 80).unwrap());
        let on = masked(&cd, v);
        assert_eq!(on.first(), t.onset_id(1200.0).as_ref());
        assert_eq!(on.last(), t.onset_id(4990.0).as_ref());
        assert!(!cd.ends_span(&t, t.onset_id(2490.0).unwrap()));
        assert!(cd.ends_span(&t, t.onset_id(2500.0).unwrap()));
        assert!(!cd.ends_span(&t, t.note_id(0, 62, 80).unwrap()));
        cd.push(&t, t.onset_id(2490.0).unwrap());
        cd.push(&t, t.dur_id(100.0));
        // At 2490 a later onset (>= 2490) is still inside, so not exhausted yet.
        assert!(!cd.span_exhausted());
        cd.set_span(2500.0, 12000.0);
        assert_eq!(cd.notes_in_span(), 0);
        assert!(!cd.ends_span(&t, t.time_shift_id()));
        cd.push(&t, t.time_shift_id());
        cd.push(&t, t.time_shift_id());
        // Window 10000..15000, span ends at 12000: onsets from 2000 ms and <T> end the span.
        assert!(cd.ends_span(&t, t.time_shift_id()));
        cd.push(&t, t.note_id(0, 60, 80).unwrap());
        assert!(!cd.ends_span(&t, t.onset_id(1990.0).unwrap()));
        assert!(cd.ends_span(&t, t.onset_id(2000.0).unwrap()));
        cd.push(&t, t.onset_id(1990.0).unwrap());
        cd.push(&t, t.dur_id(10.0));
        assert!(!cd.span_exhausted());
        cd.set_span(0.0, 11990.0);
        assert!(cd.span_exhausted());
    }

    #[test]
    fn an_empty_span_is_not_ended_early_but_a_full_voice_set_may_end_it() {
        let t = tok();
        let v = t.vocab_size();
        let c = Constraints {
            allow_early_end: true,
            max_polyphony: Some(1),
            ..Constraints::default()
        };
        let mut cd = ConstrainedDecoder::new(&t, &c).unwrap();
        // A note sounding from before the span until after it: nothing fits in the span.
        cd.push(&t, t.note_id(0, 60, 80).unwrap());
        cd.push(&t, t.onset_id(0.0).unwrap());
        cd.push(&t, t.dur_id(4000.0));
        cd.set_span(1000.0, 2000.0);
        assert!(masked(&cd, v).contains(&t.end_id()));
        // Once a voice is free in time, the empty span must get its note first.
        cd.set_span(1000.0, 4500.0);
        let m = masked(&cd, v);
        assert!(!m.contains(&t.end_id()));
        assert!(!m.contains(&t.time_shift_id()));
        assert!(m.contains(&t.note_id(0, 64, 80).unwrap()));
    }

    #[test]
    fn polyphony_limit_delays_onsets_until_a_voice_frees() {
        let t = tok();
        let v = t.vocab_size();
        let c = Constraints {
            max_polyphony: Some(2),
            ..Default::default()
        };
        let mut cd = ConstrainedDecoder::new(&t, &c).unwrap();
        let play = |cd: &mut ConstrainedDecoder, pitch: u8, at: f64, dur: f64| {
            cd.push(&t, t.note_id(0, pitch, 80).unwrap());
            cd.push(&t, t.onset_id(at).unwrap());
            cd.push(&t, t.dur_id(dur));
        };
        play(&mut cd, 60, 0.0, 1000.0); // 0..1000
        play(&mut cd, 64, 100.0, 500.0); // 100..600
        cd.push(&t, t.note_id(0, 67, 80).unwrap());
        let on = masked(&cd, v);
        assert_eq!(
            on.first(),
            t.onset_id(600.0).as_ref(),
            "third voice waits for the 600 ms end"
        );
        cd.push(&t, t.onset_id(600.0).unwrap());
        cd.push(&t, t.dur_id(2000.0)); // 600..2600; sounding: 0..1000, 600..2600
        cd.push(&t, t.note_id(0, 72, 80).unwrap());
        assert_eq!(masked(&cd, v).first(), t.onset_id(1000.0).as_ref());
        // Drums ignore polyphony.
        let c = Constraints {
            max_polyphony: Some(1),
            drums: true,
            ..Default::default()
        };
        let mut cd = ConstrainedDecoder::new(&t, &c).unwrap();
        play(&mut cd, 60, 0.0, 3000.0);
        cd.push(&t, t.drum_id(36).unwrap());
        assert_eq!(masked(&cd, v).first(), t.onset_id(0.0).as_ref());
    }

    /// The generator's onset step (`Generator::run_span`) on constructed logits: sample under
    /// `apply_open`, read the onset; a vote takes the note back, feeds `<T>` and the note, and
    /// samples again. Returns the tokens fed after the note token was first fed.
    fn onset_with_votes(
        t: &Tokenizer,
        cd: &mut ConstrainedDecoder,
        sampler: &mut crate::sampling::Sampler,
        note: u32,
        logits: &[f32],
    ) -> Vec<u32> {
        let mut fed = Vec::new();
        loop {
            let mut l = logits.to_vec();
            cd.apply_open(&mut l);
            let mut id = sampler.sample(&l).unwrap();
            match cd.read_onset(t, id) {
                OnsetRead::Accept => {}
                OnsetRead::TimeShift => {
                    assert!(cd.retract_pending());
                    fed.pop();
                    for tok in [t.time_shift_id(), note] {
                        cd.push(t, tok);
                        fed.push(tok);
                    }
                    continue;
                }
                OnsetRead::Clamp => {
                    let mut l = logits.to_vec();
                    cd.apply(&mut l);
                    id = sampler.sample(&l).unwrap();
                }
            }
            cd.push(t, id);
            fed.push(id);
            return fed;
        }
    }

    /// Onset logits: 0 on `steps` (10 ms each), -20 elsewhere; other tokens 0.
    fn onset_logits(t: &Tokenizer, steps: Range<u32>) -> Vec<f32> {
        let mut l = vec![0.0f32; t.vocab_size()];
        for (i, id) in t.onset_ids().enumerate() {
            l[id as usize] = if steps.contains(&(i as u32)) {
                0.0
            } else {
                -20.0
            };
        }
        l
    }

    #[test]
    fn an_onset_before_the_last_one_is_a_vote_for_the_next_window() {
        use crate::sampling::{Sampler, SamplingParams};
        let t = tok();
        let note = t.note_id(0, 62, 80).unwrap();
        // All onset mass on 0..300 ms while the window's last onset is 4800 ms.
        let logits = onset_logits(&t, 0..30);
        let run = |seed: u64, span: Option<(f64, f64)>| {
            let mut cd = ConstrainedDecoder::new(&t, &Constraints::default()).unwrap();
            if let Some((a, b)) = span {
                cd.set_span(a, b);
            }
            cd.push(&t, t.note_id(0, 60, 80).unwrap());
            cd.push(&t, t.onset_id(4800.0).unwrap());
            cd.push(&t, t.dur_id(100.0));
            cd.push(&t, note);
            assert_eq!(cd.expects(), Expect::Onset);
            let params = SamplingParams {
                temperature: 1.0,
                top_p: 1.0,
                min_p: 0.0,
                seed,
                follow_bias: 0.0,
            };
            let mut sampler = Sampler::new(t.vocab_size(), params);
            let fed = onset_with_votes(&t, &mut cd, &mut sampler, note, &logits);
            let ev = cd.push(&t, t.dur_id(100.0));
            (fed, ev, cd)
        };
        for seed in 0..5 {
            let (fed, ev, cd) = run(seed, None);
            // `<T>`, the note again, its onset in the new window.
            assert_eq!(fed.len(), 3, "seed {seed}: {fed:?}");
            assert_eq!(fed[..2], [t.time_shift_id(), note]);
            let Some(StreamEvent::Note { start_ms, .. }) = ev else {
                panic!("{ev:?}");
            };
            assert!((5000.0..5300.0).contains(&start_ms), "{start_ms}");
            assert_eq!(cd.decoder().window_start_ms(), 5000);
            // The same seed gives the same tokens.
            assert_eq!(run(seed, None).0, fed);
        }
        // The plain mask (`apply`) would have put the note on the window's last onset.
        let (_, _, mut cd) = run(0, None);
        cd.push(&t, t.note_id(0, 60, 80).unwrap());
        cd.push(&t, t.onset_id(4800.0).unwrap());
        cd.push(&t, t.dur_id(100.0));
        cd.push(&t, note);
        let mut l = logits.clone();
        cd.apply(&mut l);
        assert_eq!(allowed(&l).first(), t.onset_id(4800.0).as_ref());

        // Span end: `<T>` would leave a span ending at 5000 ms, so no vote: today's behaviour,
        // the note goes to the last onset.
        let (fed, ev, _) = run(3, Some((0.0, 5000.0)));
        assert_eq!(fed.len(), 1);
        assert!(matches!(ev, Some(StreamEvent::Note { start_ms, .. }) if start_ms >= 4800.0));
        // A span that goes on past the next window: the vote stands.
        let (fed, _, _) = run(3, Some((0.0, 10_001.0)));
        assert_eq!(fed[0], t.time_shift_id());
    }

    #[test]
    fn onsets_between_the_last_one_and_a_busy_voice_are_clamped_not_voted() {
        let t = tok();
        let c = Constraints {
            max_polyphony: Some(1),
            ..Default::default()
        };
        let mut cd = ConstrainedDecoder::new(&t, &c).unwrap();
        cd.push(&t, t.note_id(0, 60, 80).unwrap());
        cd.push(&t, t.onset_id(1000.0).unwrap());
        cd.push(&t, t.dur_id(2000.0)); // busy until 3000
        cd.push(&t, t.note_id(0, 62, 80).unwrap());
        assert!(cd.onset_may_vote());
        assert_eq!(
            cd.read_onset(&t, t.onset_id(500.0).unwrap()),
            OnsetRead::TimeShift
        );
        assert_eq!(
            cd.read_onset(&t, t.onset_id(2000.0).unwrap()),
            OnsetRead::Clamp
        );
        assert_eq!(
            cd.read_onset(&t, t.onset_id(3000.0).unwrap()),
            OnsetRead::Accept
        );
        // `apply_open` keeps the whole window, `apply` only from the free voice on.
        let v = t.vocab_size();
        let mut l = vec![0.0; v];
        cd.apply_open(&mut l);
        assert_eq!(allowed(&l), t.onset_ids().collect::<Vec<_>>());
        assert_eq!(masked(&cd, v).first(), t.onset_id(3000.0).as_ref());
        // At the window start there is nothing before the last onset: no vote.
        let mut cd = ConstrainedDecoder::new(&t, &Constraints::default()).unwrap();
        cd.push(&t, t.note_id(0, 62, 80).unwrap());
        assert!(!cd.onset_may_vote());
    }

    #[test]
    fn busy_voices_past_the_window_mask_notes_but_not_time_shift() {
        let t = tok();
        let v = t.vocab_size();
        let c = Constraints {
            max_polyphony: Some(1),
            ..Default::default()
        };
        let mut cd = ConstrainedDecoder::new(&t, &c).unwrap();
        cd.push(&t, t.note_id(0, 60, 80).unwrap());
        cd.push(&t, t.onset_id(4000.0).unwrap());
        cd.push(&t, t.dur_id(3000.0)); // sounds until 7000, past the 5000 ms window
        let ok = masked(&cd, v);
        assert_eq!(ok, vec![t.time_shift_id()]);
        assert!(!cd.span_exhausted());
        cd.push(&t, t.time_shift_id());
        cd.push(&t, t.note_id(0, 62, 80).unwrap());
        assert_eq!(masked(&cd, v).first(), t.onset_id(2000.0).as_ref());
        // With the span ending before the voice frees, the span is over.
        let mut cd = ConstrainedDecoder::new(&t, &c).unwrap();
        cd.set_span(0.0, 5000.0);
        cd.push(&t, t.note_id(0, 60, 80).unwrap());
        cd.push(&t, t.onset_id(4000.0).unwrap());
        cd.push(&t, t.dur_id(3000.0));
        assert!(cd.span_exhausted());
    }
}
