//! The fixed-size `Copy` messages that cross the lock-free rings between the audio thread and the
//! engine thread. Everything here must stay small and allocation-free: the audio thread builds,
//! copies and drops these in `process()`.
//!
//! Times are in host musical time: quarter-note beats as the host's transport reports them
//! (`pos_beats`), never samples (the block size and sample rate are the audio side's business)
//! and never milliseconds (the tempo may change between scheduling and playing).

use staria_models::SectionLabel;

pub use crate::generate::Target;

/// Request ids are issued by the audio side, start at 1 and only grow; 0 means "no request".
pub type RequestId = u32;

/// The sections played so far ("AAB..."), up to 16 labels packed 2 bits each so a request stays
/// `Copy` and small (bytes rather than a `u32` so the struct has alignment 1 and packs into
/// `Command` without padding).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Form {
    packed: [u8; 4],
    len: u8,
}

impl Form {
    pub const CAPACITY: usize = 16;

    pub const fn new() -> Self {
        Self {
            packed: [0; 4],
            len: 0,
        }
    }

    /// Appends a label; `false` (and no change) once 16 labels are held.
    pub fn push(&mut self, label: SectionLabel) -> bool {
        if self.len as usize >= Self::CAPACITY {
            return false;
        }
        let bits =
            u32::from_le_bytes(self.packed) | (label.index() as u32) << (2 * self.len as u32);
        self.packed = bits.to_le_bytes();
        self.len += 1;
        true
    }

    /// `None` if more than 16 labels are given.
    pub fn from_labels(labels: &[SectionLabel]) -> Option<Self> {
        let mut form = Self::new();
        for &l in labels {
            if !form.push(l) {
                return None;
            }
        }
        Some(form)
    }

    /// Parses letters such as "AABA" (case-insensitive; spaces ignored). `None` on any other
    /// character or more than 16 labels.
    pub fn parse(text: &str) -> Option<Self> {
        let mut form = Self::new();
        for c in text.chars().filter(|c| !c.is_whitespace()) {
            if !form.push(SectionLabel::from_letter(c)?) {
                return None;
            }
        }
        Some(form)
    }

    pub fn len(&self) -> usize {
        self.len as usize
    }

    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    pub fn get(&self, i: usize) -> Option<SectionLabel> {
        if i >= self.len() {
            return None;
        }
        SectionLabel::from_index(((u32::from_le_bytes(self.packed) >> (2 * i)) & 0b11) as usize)
    }

    /// The form in one integer (for an atomic), and back; `from_bits` caps the length at 16.
    pub fn to_bits(self) -> u64 {
        u32::from_le_bytes(self.packed) as u64 | (self.len as u64) << 32
    }

    pub fn from_bits(bits: u64) -> Self {
        Self {
            packed: (bits as u32).to_le_bytes(),
            len: ((bits >> 32) as u8).min(Self::CAPACITY as u8),
        }
    }

    pub fn iter(&self) -> impl Iterator<Item = SectionLabel> + '_ {
        (0..self.len()).filter_map(|i| self.get(i))
    }
}

impl std::fmt::Display for Form {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        for l in self.iter() {
            write!(f, "{}", l.letter())?;
        }
        Ok(())
    }
}

/// Audio/host side → engine. Scalar sampling settings do not travel here: they live in
/// [`crate::status::EngineParams`] atomics and are read when a request starts. Transport position,
/// tempo and relocations do not travel here either: they live in [`crate::timing::SharedTransport`]
/// atomics, which a full ring cannot drop.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Command {
    /// Start (re)recording a section: forget its old snippet; `origin_beat` (usually a bar line)
    /// is the snippet's time zero.
    CaptureArm {
        section: SectionLabel,
        origin_beat: f64,
    },
    /// Start handing a saved snippet back (after a project load): like `CaptureArm` with origin
    /// 0, and the notes that follow are in beats from the snippet's start. They are not music
    /// just played, so they never count as heard after a generated section (what `Continue`
    /// continues; see `Capture::last_played`).
    CaptureRestore { section: SectionLabel },
    /// A played note starts. Without a preceding arm, the first note's start is the origin.
    CaptureNoteOn {
        section: SectionLabel,
        pitch: u8,
        velocity: u8,
        beat: f64,
    },
    /// A played note ends (a note-off without its note-on is ignored).
    CaptureNoteOff {
        section: SectionLabel,
        pitch: u8,
        beat: f64,
    },
    /// Forget a section's snippet.
    ClearSection { section: SectionLabel },
    /// Generate `bars` bars of `target` from `start_beat` (the host beat of the bar line where the
    /// section starts). A new request replaces the one in flight from `start_beat` on.
    Generate {
        request_id: RequestId,
        target: Target,
        bars: u16,
        /// Time signature in force for the section (numerator, denominator as written: 4 for x/4).
        ts_num: u8,
        ts_den: u8,
        form: Form,
        start_beat: f64,
        seed: u64,
    },
    /// Stop generating `request_id` and silence it now.
    Cancel { request_id: RequestId },
    /// Start a live session (`crate::live`): the snippets captured so far are its prompt,
    /// `origin_beat` (a bar line) its time zero, at the tempo of that moment (its reference: a
    /// later tempo change stretches the session with the beats, `live::tempo`). Accompaniment
    /// plays as request `request_id`; call and response answers under the ids of the
    /// `Handover`s. A running section request, and any earlier session, ends.
    LiveStart {
        request_id: RequestId,
        mode: crate::live::LiveMode,
        origin_beat: f64,
        /// Call and response: bars per answer.
        response_bars: u8,
        seed: u32,
        /// Accompaniment: no model note dissonant with a held performer pitch
        /// (`LiveSettings::consonant`).
        consonant: bool,
    },
    /// The performer's key goes down (live session).
    LiveNoteOn { pitch: u8, velocity: u8, beat: f64 },
    /// The performer's key goes up (live session).
    LiveNoteOff { pitch: u8, beat: f64 },
    /// Call and response: the musician hands over at `beat` (a keyswitch, CC 67, a parameter,
    /// or a silence the audio side measured); the answer plays as request `request_id` and is
    /// cancelled (silenced) when the performer plays again.
    Handover { request_id: RequestId, beat: f64 },
    /// The snippets changed during a live session (one recorded, cleared or restored): the
    /// session takes the snippets captured now as its prompt and goes on, keeping what it
    /// heard (`live::prompt`), rather than starting again. Sent after the capture commands
    /// that changed them; ignored with no session (or with a `LiveStart` still waiting, which
    /// starts with the new snippets anyway).
    LivePrompt,
    /// End the live session: what it plays is silenced now.
    LiveStop,
}

/// Why a request stopped being served.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    /// Every note of the request has been generated (its events may still be queued).
    Finished,
    /// Cancelled by a `Cancel` command.
    Cancelled,
    /// A newer request took over.
    Replaced,
    /// The engine stopped it (model swap, shutdown): the audio side silences it now.
    Interrupted,
    /// Generation failed (error or panic; see the status text): the audio side silences it now.
    Failed,
}

impl Outcome {
    /// Outcomes after which nothing more of the request may sound.
    pub fn silences(self) -> bool {
        matches!(
            self,
            Outcome::Interrupted | Outcome::Failed | Outcome::Cancelled
        )
    }
}

/// One generated note-on or note-off, timed in host beats.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct NoteEvent {
    pub beat: f64,
    pub request_id: RequestId,
    /// The transport epoch the engine scheduled this under; stale epochs are discarded.
    pub epoch: u32,
    pub on: bool,
    pub pitch: u8,
    /// 1..=127 for note-ons; the note-on's velocity is repeated on the note-off.
    pub velocity: u8,
    pub channel: u8,
}

/// A note-on the engine pushed and takes back (see [`Event::Retract`]), named as it was pushed.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Retraction {
    /// The note-on's beat, as pushed.
    pub beat: f64,
    pub request_id: RequestId,
    pub pitch: u8,
    pub channel: u8,
}

/// Engine → audio side.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Event {
    Note(NoteEvent),
    /// The engine stopped working on a request.
    RequestDone {
        request_id: RequestId,
        outcome: Outcome,
    },
    /// Take back a note-on pushed earlier whose note-off was not pushed (a live
    /// accompaniment's `Cut` at or before the note's start): the audio side drops it and any
    /// note-off of it still queued, forgets it (a relocation does not bring it back) and, if
    /// it already sounded (the audio thread played it before this came, a race the engine
    /// cannot see), releases it at the start of the block that receives this. A retraction
    /// of a note the audio side does not hold does nothing. Never emitted by the audio side.
    Retract(Retraction),
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn form_round_trips_sixteen_labels() {
        let text = "ABCDABCDDCBAAAAB";
        let form = Form::parse(text).unwrap();
        assert_eq!(form.len(), 16);
        assert_eq!(form.to_string(), text);
        let mut full = form;
        assert!(!full.push(SectionLabel::A));
        assert_eq!(full, form);
        assert!(Form::parse("ABX").is_none());
        assert!(Form::parse("AAAAAAAAAAAAAAAAA").is_none());
        assert_eq!(Form::parse("a b").unwrap().to_string(), "AB");
        assert!(Form::new().is_empty());
        assert_eq!(Form::from_bits(form.to_bits()), form);
        assert_eq!(Form::from_bits(u64::MAX).len(), 16);
    }
}
