//! The note list every part of Staria speaks: what MIDI files are read into, what the tokenizer
//! encodes and decodes, and what the engine turns into timed events.

use serde::{Deserialize, Serialize};

/// One note. Times are kept both in ticks (exact, for writing MIDI back) and in milliseconds
/// (through the tempo map; what the tokenizer uses).
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct Note {
    pub pitch: u8,
    /// 1..=127 (a velocity-0 note-on is a note-off and never becomes a note).
    pub velocity: u8,
    /// MIDI channel 0..=15; 9 is the General MIDI drum channel.
    pub channel: u8,
    /// General MIDI program 0..=127 in force on the channel when the note started.
    pub program: u8,
    pub start_tick: u64,
    pub end_tick: u64,
    pub start_ms: f64,
    pub end_ms: f64,
}

impl Note {
    pub fn is_drum(&self) -> bool {
        self.channel == 9
    }
    pub fn duration_ms(&self) -> f64 {
        self.end_ms - self.start_ms
    }
}

/// Section labels Staria models: the four prompt sections of a musical form.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub enum SectionLabel {
    A,
    B,
    C,
    D,
}

impl SectionLabel {
    pub const ALL: [SectionLabel; 4] = [
        SectionLabel::A,
        SectionLabel::B,
        SectionLabel::C,
        SectionLabel::D,
    ];

    pub fn index(self) -> usize {
        self as usize
    }
    pub fn from_index(i: usize) -> Option<Self> {
        Self::ALL.get(i).copied()
    }
    pub fn letter(self) -> char {
        (b'A' + self as u8) as char
    }
    pub fn from_letter(c: char) -> Option<Self> {
        match c.to_ascii_uppercase() {
            'A' => Some(Self::A),
            'B' => Some(Self::B),
            'C' => Some(Self::C),
            'D' => Some(Self::D),
            _ => None,
        }
    }
}

impl std::fmt::Display for SectionLabel {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}", self.letter())
    }
}

/// A labelled span of a piece: from `start` up to (not including) the next section's start.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Section {
    pub label: SectionLabel,
    /// The marker text as found in the file ("A", "A'", "Verse", "E"...), kept for display.
    pub marker_text: String,
    pub start_tick: u64,
    pub end_tick: u64,
    pub start_ms: f64,
    pub end_ms: f64,
}

/// A tempo change: microseconds per quarter note from `tick` on.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct TempoChange {
    pub tick: u64,
    pub us_per_quarter: u32,
}

#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct TimeSignature {
    pub tick: u64,
    pub numerator: u8,
    /// The denominator itself (4 for x/4), not its power of two.
    pub denominator: u8,
}

/// A whole piece as a note list plus the timing and structure needed to write it back.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Song {
    /// Ticks per quarter note.
    pub ticks_per_quarter: u16,
    /// Sorted by tick; the first entry is at tick 0 (120 bpm when the file has none).
    pub tempo_map: Vec<TempoChange>,
    pub time_signatures: Vec<TimeSignature>,
    /// Sorted by (start_tick, pitch).
    pub notes: Vec<Note>,
    /// Sorted by start; may be empty (a file without markers).
    pub sections: Vec<Section>,
}
