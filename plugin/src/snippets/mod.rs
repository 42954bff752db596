//! Captured section snippets: how the audio thread records them without allocating, how they are
//! shared lock-free with the thread that saves the plugin state, and their saved (serde) form.
//!
//! Two banks of fixed-capacity slots, each a sequence lock over atomics:
//! - `published`: written only by the audio thread (a finished capture, a clear, an applied
//!   restore), read by the host's state-save call;
//! - `restore`: written only by the host's state-load call, read by the audio thread, which
//!   copies it into `published` at the start of its next block (and hands it to the engine).

use nice_plug::params::persist::PersistentField;
use serde::{Deserialize, Serialize};
use staria_models::SectionLabel;
use std::sync::atomic::{AtomicU32, AtomicU64, Ordering, fence};

use crate::timeline::{Timeline, beats_per_bar};

mod recorder;
mod replay;
mod store;
#[cfg(test)]
mod tests;

pub use recorder::{Finished, Recorder};
pub use replay::{ReplayCursor, ReplayStep};
pub use store::{SavedNote, SavedSnippet, SavedSnippets, SnippetSlot, SnippetStore};

/// Notes one section's snippet can hold.
pub const MAX_SNIPPET_NOTES: usize = 512;
/// Resolution of stored note times: ticks per quarter-note beat.
pub const TICKS_PER_BEAT: f64 = 960.0;
const MAX_TICKS: u32 = (1 << 24) - 1;

/// One captured note, times in ticks from the snippet's start.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct SnippetNote {
    pub start_ticks: u32,
    pub len_ticks: u32,
    pub pitch: u8,
    pub velocity: u8,
}

impl SnippetNote {
    fn pack(self) -> u64 {
        (self.start_ticks.min(MAX_TICKS) as u64)
            | (self.len_ticks.min(MAX_TICKS) as u64) << 24
            | ((self.pitch & 127) as u64) << 48
            | ((self.velocity & 127) as u64) << 55
    }

    fn unpack(v: u64) -> Self {
        Self {
            start_ticks: (v & MAX_TICKS as u64) as u32,
            len_ticks: ((v >> 24) & MAX_TICKS as u64) as u32,
            pitch: ((v >> 48) & 127) as u8,
            velocity: ((v >> 55) & 127) as u8,
        }
    }

    pub fn start_beats(&self) -> f64 {
        self.start_ticks as f64 / TICKS_PER_BEAT
    }

    pub fn end_beats(&self) -> f64 {
        (self.start_ticks as u64 + self.len_ticks as u64) as f64 / TICKS_PER_BEAT
    }
}

fn to_ticks(beats: f64) -> u32 {
    if beats.is_finite() && beats > 0.0 {
        (beats * TICKS_PER_BEAT).round().min(MAX_TICKS as f64) as u32
    } else {
        0
    }
}

/// A snippet as plain data (fixed capacity, no heap growth): what the audio thread fills.
#[derive(Debug, Clone, PartialEq)]
pub struct SnippetData {
    pub notes: [SnippetNote; MAX_SNIPPET_NOTES],
    pub count: usize,
    /// Whole bars when captured with bar quantisation, else the bars it touches.
    pub bars: u16,
    pub ts_num: u8,
    pub ts_den: u8,
    pub length_ticks: u32,
}

impl Default for SnippetData {
    fn default() -> Self {
        Self {
            notes: [SnippetNote::default(); MAX_SNIPPET_NOTES],
            count: 0,
            bars: 0,
            ts_num: 4,
            ts_den: 4,
            length_ticks: 0,
        }
    }
}

impl SnippetData {
    pub fn notes(&self) -> &[SnippetNote] {
        &self.notes[..self.count]
    }

    pub fn is_empty(&self) -> bool {
        self.count == 0
    }

    pub fn clear(&mut self) {
        self.count = 0;
        self.bars = 0;
        self.length_ticks = 0;
    }

    pub fn length_beats(&self) -> f64 {
        self.length_ticks as f64 / TICKS_PER_BEAT
    }

    fn head(&self) -> u64 {
        (self.count as u64)
            | (self.bars as u64) << 16
            | (self.ts_num as u64) << 32
            | (self.ts_den as u64) << 40
    }

    fn set_head(&mut self, head: u64) {
        self.count = ((head & 0xFFFF) as usize).min(MAX_SNIPPET_NOTES);
        self.bars = ((head >> 16) & 0xFFFF) as u16;
        self.ts_num = ((head >> 32) & 0xFF) as u8;
        self.ts_den = ((head >> 40) & 0xFF) as u8;
    }

    /// From the saved form; notes past the capacity or with nonsense values are skipped.
    pub fn from_saved(saved: &SavedSnippet) -> Self {
        let mut data = Self {
            bars: saved.bars.min(u16::MAX as u32) as u16,
            ts_num: saved.ts_num,
            ts_den: saved.ts_den,
            length_ticks: to_ticks(saved.length_beats),
            ..Self::default()
        };
        let mut notes: Vec<&SavedNote> = saved
            .notes
            .iter()
            .filter(|n| {
                n.pitch <= 127 && n.start.is_finite() && n.start >= 0.0 && n.length.is_finite()
            })
            .collect();
        notes.sort_by(|a, b| a.start.total_cmp(&b.start));
        for n in notes.into_iter().take(MAX_SNIPPET_NOTES) {
            data.notes[data.count] = SnippetNote {
                start_ticks: to_ticks(n.start),
                len_ticks: to_ticks(n.length).max(1),
                pitch: n.pitch,
                velocity: n.velocity.clamp(1, 127),
            };
            data.count += 1;
        }
        data
    }

    pub fn to_saved(&self, section: SectionLabel) -> SavedSnippet {
        SavedSnippet {
            section: section.letter(),
            bars: self.bars as u32,
            ts_num: self.ts_num,
            ts_den: self.ts_den,
            length_beats: self.length_beats(),
            notes: self
                .notes()
                .iter()
                .map(|n| SavedNote {
                    pitch: n.pitch,
                    velocity: n.velocity,
                    start: n.start_beats(),
                    length: n.len_ticks as f64 / TICKS_PER_BEAT,
                })
                .collect(),
        }
    }
}
