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

#[cfg(test)]
use crate::timeline::HostReport;
use crate::timeline::{Timeline, beats_per_bar};

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

/// One section's snippet behind a sequence lock. Exactly one thread may write a given slot.
pub struct SnippetSlot {
    seq: AtomicU32,
    head: AtomicU64,
    length_ticks: AtomicU32,
    notes: Box<[AtomicU64]>,
}

impl Default for SnippetSlot {
    fn default() -> Self {
        Self {
            seq: AtomicU32::new(0),
            head: AtomicU64::new(SnippetData::default().head()),
            length_ticks: AtomicU32::new(0),
            notes: (0..MAX_SNIPPET_NOTES).map(|_| AtomicU64::new(0)).collect(),
        }
    }
}

impl SnippetSlot {
    /// Single writer only. Never blocks, never allocates.
    pub fn write(&self, data: &SnippetData) {
        let s = self.seq.load(Ordering::Relaxed);
        self.seq.store(s.wrapping_add(1), Ordering::Relaxed);
        fence(Ordering::Release);
        self.head.store(data.head(), Ordering::Relaxed);
        self.length_ticks
            .store(data.length_ticks, Ordering::Relaxed);
        for (slot, note) in self.notes.iter().zip(data.notes()) {
            slot.store(note.pack(), Ordering::Relaxed);
        }
        self.seq.store(s.wrapping_add(2), Ordering::Release);
    }

    /// One attempt at a consistent read; `false` if the writer was busy (try again later).
    /// Never blocks, never allocates.
    pub fn try_read(&self, out: &mut SnippetData) -> bool {
        let s1 = self.seq.load(Ordering::Acquire);
        if s1 & 1 == 1 {
            return false;
        }
        out.set_head(self.head.load(Ordering::Relaxed));
        out.length_ticks = self.length_ticks.load(Ordering::Relaxed);
        for (note, slot) in out.notes[..out.count].iter_mut().zip(self.notes.iter()) {
            *note = SnippetNote::unpack(slot.load(Ordering::Relaxed));
        }
        fence(Ordering::Acquire);
        self.seq.load(Ordering::Relaxed) == s1
    }

    /// Reads until consistent (for non-audio threads; the writer holds the slot for microseconds).
    pub fn read(&self, out: &mut SnippetData) {
        let mut spins = 0u32;
        while !self.try_read(out) {
            spins += 1;
            if spins > 64 {
                std::thread::yield_now();
            } else {
                std::hint::spin_loop();
            }
        }
    }
}

/// The saved form of one note: beats from the snippet's start.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SavedNote {
    pub pitch: u8,
    pub velocity: u8,
    pub start: f64,
    pub length: f64,
}

/// The saved form of one section's snippet.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SavedSnippet {
    /// 'A'..'D'.
    pub section: char,
    pub bars: u32,
    pub ts_num: u8,
    pub ts_den: u8,
    pub length_beats: f64,
    pub notes: Vec<SavedNote>,
}

/// What the plugin state holds: the non-empty sections.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
pub struct SavedSnippets {
    pub sections: Vec<SavedSnippet>,
    /// Set only on the way in, when parts of a saved state did not read
    /// ([`crate::saved_state::check_fields`]); never saved.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub load_notice: Option<String>,
}

impl SavedSnippets {
    pub fn get(&self, section: SectionLabel) -> Option<&SavedSnippet> {
        self.sections.iter().find(|s| s.section == section.letter())
    }
}

/// The persisted snippet store shared by the parameters object (state save/load, main thread)
/// and the audio thread.
pub struct SnippetStore {
    published: [SnippetSlot; 4],
    restore: [SnippetSlot; 4],
    restore_gen: AtomicU64,
    applied_gen: AtomicU64,
    /// Bumped whenever `published` changes.
    changes: AtomicU64,
    /// What a state load could not read, until the status has shown it (main and monitor
    /// threads only).
    load_notice: parking_lot::Mutex<Option<String>>,
}

impl Default for SnippetStore {
    fn default() -> Self {
        Self {
            published: Default::default(),
            restore: Default::default(),
            restore_gen: AtomicU64::new(0),
            applied_gen: AtomicU64::new(0),
            changes: AtomicU64::new(0),
            load_notice: parking_lot::Mutex::new(None),
        }
    }
}

impl SnippetStore {
    /// What the last state load could not read (once; the monitor puts it in the status).
    pub fn take_load_notice(&self) -> Option<String> {
        self.load_notice.lock().take()
    }

    /// Audio thread: publish a section's snippet (a finished capture or a clear).
    pub fn publish(&self, section: SectionLabel, data: &SnippetData) {
        self.published[section.index()].write(data);
        self.changes.fetch_add(1, Ordering::Release);
    }

    /// Audio thread: copy a pending state restore into the published bank. Returns `true` when a
    /// restore was applied (the caller then hands the snippets to the engine). `scratch` is the
    /// caller's preallocated buffer. Never blocks or allocates; a restore that is being written
    /// right now is picked up on a later call.
    pub fn apply_restore(&self, scratch: &mut SnippetData) -> bool {
        let generation = self.restore_gen.load(Ordering::Acquire);
        if generation == self.applied_gen.load(Ordering::Relaxed) {
            return false;
        }
        for (restore, published) in self.restore.iter().zip(&self.published) {
            if !restore.try_read(scratch) {
                return false;
            }
            published.write(scratch);
        }
        self.applied_gen.store(generation, Ordering::Release);
        self.changes.fetch_add(1, Ordering::Release);
        true
    }

    /// Audio thread: one attempt at reading a published section (the audio thread is its only
    /// writer, so this always succeeds there).
    pub fn try_read_published(&self, section: SectionLabel, out: &mut SnippetData) -> bool {
        self.published[section.index()].try_read(out)
    }

    /// How many times the published snippets changed (for a GUI or a test to notice).
    pub fn changes(&self) -> u64 {
        self.changes.load(Ordering::Acquire)
    }

    /// Any thread but the audio thread: the current snippets (a restore not yet applied by the
    /// audio thread counts as current).
    pub fn snapshot(&self) -> SavedSnippets {
        let pending =
            self.restore_gen.load(Ordering::Acquire) != self.applied_gen.load(Ordering::Acquire);
        let bank = if pending {
            &self.restore
        } else {
            &self.published
        };
        let mut data = Box::<SnippetData>::default();
        let mut out = SavedSnippets::default();
        for (section, slot) in SectionLabel::ALL.into_iter().zip(bank) {
            slot.read(&mut data);
            if !data.is_empty() {
                out.sections.push(data.to_saved(section));
            }
        }
        out
    }
}

impl<'a> PersistentField<'a, SavedSnippets> for SnippetStore {
    /// State load (main thread): stage the snippets for the audio thread.
    fn set(&self, new_value: SavedSnippets) {
        if let Some(notice) = &new_value.load_notice {
            *self.load_notice.lock() = Some(notice.clone());
        }
        let mut data = Box::<SnippetData>::default();
        for (section, slot) in SectionLabel::ALL.into_iter().zip(&self.restore) {
            match new_value.get(section) {
                Some(saved) => *data = SnippetData::from_saved(saved),
                None => data.clear(),
            }
            slot.write(&data);
        }
        self.restore_gen.fetch_add(1, Ordering::AcqRel);
    }

    fn map<F, R>(&self, f: F) -> R
    where
        F: Fn(&SavedSnippets) -> R,
    {
        f(&self.snapshot())
    }
}

/// A note being recorded: start in host beats; `end` is NaN while the key is held.
#[derive(Debug, Clone, Copy)]
struct RawNote {
    start: f64,
    end: f64,
    pitch: u8,
    velocity: u8,
}

const NO_NOTE: u16 = u16::MAX;

/// What a finished capture produced.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Finished {
    pub section: SectionLabel,
    /// Host beat of the snippet's start (a bar line when quantising).
    pub origin_beat: f64,
    pub end_beat: f64,
}

/// Records what is played into one section, on the audio thread (fixed storage, no allocation).
/// Notes are kept in note-on order, which is start-time order.
pub struct Recorder {
    section: Option<SectionLabel>,
    notes: Box<[RawNote; MAX_SNIPPET_NOTES]>,
    count: usize,
    /// Index into `notes` of the held note on each key.
    open: [u16; 128],
    /// Notes refused because the snippet was full, since the last `arm`.
    pub dropped: u64,
}

impl Default for Recorder {
    fn default() -> Self {
        Self {
            section: None,
            notes: Box::new(
                [RawNote {
                    start: 0.0,
                    end: 0.0,
                    pitch: 0,
                    velocity: 0,
                }; MAX_SNIPPET_NOTES],
            ),
            count: 0,
            open: [NO_NOTE; 128],
            dropped: 0,
        }
    }
}

impl Recorder {
    /// The section being recorded.
    pub fn section(&self) -> Option<SectionLabel> {
        self.section
    }

    /// Whether a note has been recorded since arming.
    pub fn has_notes(&self) -> bool {
        self.count > 0
    }

    /// Start recording `section` afresh (whatever was being recorded is dropped: finish it first).
    pub fn arm(&mut self, section: SectionLabel) {
        self.section = Some(section);
        self.count = 0;
        self.dropped = 0;
        self.open = [NO_NOTE; 128];
    }

    /// Stop recording without keeping anything.
    pub fn disarm(&mut self) {
        self.section = None;
        self.count = 0;
        self.open = [NO_NOTE; 128];
    }

    /// Returns the note's start if it was recorded (a held key is ended first: a re-strike).
    pub fn note_on(&mut self, pitch: u8, velocity: u8, beat: f64) -> bool {
        if self.section.is_none() || pitch > 127 || !beat.is_finite() {
            return false;
        }
        self.note_off(pitch, beat);
        if self.count == MAX_SNIPPET_NOTES {
            self.dropped += 1;
            return false;
        }
        self.notes[self.count] = RawNote {
            start: beat,
            end: f64::NAN,
            pitch,
            velocity: velocity.clamp(1, 127),
        };
        self.open[pitch as usize] = self.count as u16;
        self.count += 1;
        true
    }

    /// `true` if it ended a recorded note.
    pub fn note_off(&mut self, pitch: u8, beat: f64) -> bool {
        if pitch > 127 {
            return false;
        }
        let idx = self.open[pitch as usize];
        if idx == NO_NOTE {
            return false;
        }
        self.open[pitch as usize] = NO_NOTE;
        let n = &mut self.notes[idx as usize];
        n.end = if beat.is_finite() {
            beat.max(n.start)
        } else {
            n.start
        };
        true
    }

    pub fn is_held(&self, pitch: u8) -> bool {
        pitch <= 127 && self.open[pitch as usize] != NO_NOTE
    }

    /// Keys still held (for forwarding their note-offs when the capture ends).
    pub fn held(&self) -> impl Iterator<Item = u8> + '_ {
        (0..128u8).filter(|&p| self.open[p as usize] != NO_NOTE)
    }

    /// Ends the capture at `end_beat` and writes the snippet into `out`. With `quantize` the
    /// snippet starts on the bar line at or before its first note and ends on the bar line
    /// nearest `end_beat` (never before the bar holding its last note-on); notes are cut at the
    /// end. `None` if nothing was being recorded or no note was played (the old snippet stays).
    pub fn finish(
        &mut self,
        end_beat: f64,
        grid: &Timeline,
        quantize: bool,
        out: &mut SnippetData,
    ) -> Option<Finished> {
        let section = self.section.take()?;
        let count = self.count;
        self.count = 0;
        self.open = [NO_NOTE; 128];
        if count == 0 {
            return None;
        }
        let first = self.notes[0].start;
        let last_on = self.notes[count - 1].start;
        let bpb = grid.beats_per_bar();
        let end_raw = if end_beat.is_finite() {
            end_beat.max(last_on)
        } else {
            last_on
        };
        let (origin, end) = if quantize {
            let origin = grid.bar_floor(first);
            let mut end = grid.bar_round(end_raw);
            let min_end = grid.bar_floor(last_on) + bpb;
            if end < min_end {
                end = min_end;
            }
            (origin, end)
        } else {
            let mut end = end_raw;
            for n in &self.notes[..count] {
                if n.end.is_finite() && n.end > end {
                    end = n.end;
                }
            }
            (first, end.max(first + 1.0 / TICKS_PER_BEAT))
        };
        out.clear();
        out.ts_num = grid.ts_num;
        out.ts_den = grid.ts_den;
        out.length_ticks = to_ticks(end - origin);
        out.bars = ((end - origin) / beats_per_bar(grid.ts_num, grid.ts_den) - 1e-6)
            .ceil()
            .clamp(1.0, u16::MAX as f64) as u16;
        for n in &self.notes[..count] {
            // A key still held ends where the capture stopped.
            let note_end = if n.end.is_finite() { n.end } else { end_raw }.min(end);
            if n.start >= end {
                continue;
            }
            out.notes[out.count] = SnippetNote {
                start_ticks: to_ticks(n.start - origin),
                len_ticks: to_ticks(note_end - n.start).max(1),
                pitch: n.pitch,
                velocity: n.velocity,
            };
            out.count += 1;
        }
        Some(Finished {
            section,
            origin_beat: origin,
            end_beat: end,
        })
    }
}

/// Walks a snippet as time-ordered note-on/off pairs (offs first at equal times), for handing it
/// to the engine a few commands per block. Fixed storage.
#[derive(Debug, Clone)]
pub struct ReplayCursor {
    next_on: usize,
    /// End tick of the held note on each key, `u32::MAX` = none.
    open_end: [u32; 128],
    open_count: usize,
}

/// One step of a replay, `beat` counted from the snippet start.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum ReplayStep {
    On { pitch: u8, velocity: u8, beat: f64 },
    Off { pitch: u8, beat: f64 },
}

impl Default for ReplayCursor {
    fn default() -> Self {
        Self {
            next_on: 0,
            open_end: [u32::MAX; 128],
            open_count: 0,
        }
    }
}

impl ReplayCursor {
    pub fn next(&mut self, data: &SnippetData) -> Option<ReplayStep> {
        let next_on = data.notes().get(self.next_on);
        let mut earliest_off: Option<(u8, u32)> = None;
        if self.open_count > 0 {
            for (p, &end) in self.open_end.iter().enumerate() {
                if end != u32::MAX && earliest_off.is_none_or(|(_, e)| end < e) {
                    earliest_off = Some((p as u8, end));
                }
            }
        }
        match (next_on, earliest_off) {
            (Some(on), Some((pitch, end))) if end <= on.start_ticks => Some(self.off(pitch, end)),
            (Some(on), _) => {
                self.next_on += 1;
                let end = on.start_ticks + on.len_ticks;
                if self.open_end[on.pitch as usize] != u32::MAX {
                    // A re-strike before the old note's end: end the old one now.
                    self.next_on -= 1;
                    return Some(self.off(on.pitch, on.start_ticks));
                }
                self.open_end[on.pitch as usize] = end;
                self.open_count += 1;
                Some(ReplayStep::On {
                    pitch: on.pitch,
                    velocity: on.velocity,
                    beat: on.start_ticks as f64 / TICKS_PER_BEAT,
                })
            }
            (None, Some((pitch, end))) => Some(self.off(pitch, end)),
            (None, None) => None,
        }
    }

    fn off(&mut self, pitch: u8, end: u32) -> ReplayStep {
        self.open_end[pitch as usize] = u32::MAX;
        self.open_count -= 1;
        ReplayStep::Off {
            pitch,
            beat: end as f64 / TICKS_PER_BEAT,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn grid() -> Timeline {
        Timeline::from_host(HostReport {
            playing: true,
            tempo: Some(120.0),
            time_sig: (Some(4), Some(4)),
            pos_beats: Some(0.0),
            bar_start_beats: Some(0.0),
            samples: 512,
            sample_rate: 48_000.0,
            ..HostReport::default()
        })
    }

    #[test]
    fn packing_round_trips() {
        let n = SnippetNote {
            start_ticks: 123_456,
            len_ticks: 960,
            pitch: 127,
            velocity: 100,
        };
        assert_eq!(SnippetNote::unpack(n.pack()), n);
        let big = SnippetNote {
            start_ticks: u32::MAX,
            len_ticks: u32::MAX,
            pitch: 0,
            velocity: 1,
        };
        assert_eq!(SnippetNote::unpack(big.pack()).start_ticks, MAX_TICKS);
    }

    #[test]
    fn capture_is_quantised_to_whole_bars() {
        let g = grid();
        let mut r = Recorder::default();
        r.arm(SectionLabel::B);
        // A pickup in bar 2 (beats 4..8), then bar 3; disarmed a little after the bar 4 line.
        assert!(r.note_on(60, 100, 5.5));
        assert!(r.note_off(60, 6.0));
        assert!(r.note_on(64, 90, 8.0));
        assert!(r.note_on(67, 80, 9.0));
        assert!(r.note_off(64, 10.0));
        let mut out = SnippetData::default();
        let fin = r.finish(12.2, &g, true, &mut out).unwrap();
        assert_eq!(fin.section, SectionLabel::B);
        assert_eq!(fin.origin_beat, 4.0);
        assert_eq!(fin.end_beat, 12.0);
        assert_eq!(out.bars, 2);
        assert_eq!(out.length_beats(), 8.0);
        let notes = out.notes();
        assert_eq!(notes.len(), 3);
        assert_eq!(
            (notes[0].pitch, notes[0].start_beats(), notes[0].end_beats()),
            (60, 1.5, 2.0)
        );
        assert_eq!(
            (notes[1].pitch, notes[1].start_beats(), notes[1].end_beats()),
            (64, 4.0, 6.0)
        );
        // Still held at the end: cut at the snippet's end.
        assert_eq!(
            (notes[2].pitch, notes[2].start_beats(), notes[2].end_beats()),
            (67, 5.0, 8.0)
        );
        assert_eq!(r.section(), None);
    }

    #[test]
    fn early_disarm_still_covers_the_last_note() {
        let g = grid();
        let mut r = Recorder::default();
        r.arm(SectionLabel::A);
        r.note_on(60, 100, 1.0);
        r.note_off(60, 1.5);
        r.note_on(62, 100, 6.5);
        r.note_off(62, 7.0);
        let mut out = SnippetData::default();
        // Disarmed at 5.0 after playing at 6.5? The disarm came before the note (clock skew):
        // the snippet still ends after the bar holding the last note.
        let fin = r.finish(5.0, &g, true, &mut out).unwrap();
        assert_eq!((fin.origin_beat, fin.end_beat), (0.0, 8.0));
        assert_eq!(out.bars, 2);
    }

    #[test]
    fn unquantised_capture_starts_on_the_first_note() {
        let g = grid();
        let mut r = Recorder::default();
        r.arm(SectionLabel::C);
        r.note_on(60, 100, 1.25);
        r.note_off(60, 2.0);
        let mut out = SnippetData::default();
        let fin = r.finish(3.0, &g, false, &mut out).unwrap();
        assert_eq!((fin.origin_beat, fin.end_beat), (1.25, 3.0));
        assert_eq!(out.notes()[0].start_ticks, 0);
        assert_eq!(out.length_beats(), 1.75);
    }

    #[test]
    fn empty_capture_keeps_the_old_snippet_and_full_capture_counts_drops() {
        let g = grid();
        let mut r = Recorder::default();
        let mut out = SnippetData::default();
        r.arm(SectionLabel::D);
        assert!(r.finish(4.0, &g, true, &mut out).is_none());
        r.arm(SectionLabel::D);
        for i in 0..MAX_SNIPPET_NOTES + 3 {
            r.note_on((i % 100) as u8, 100, i as f64 * 0.01);
        }
        assert_eq!(r.dropped, 3);
        r.finish(8.0, &g, true, &mut out).unwrap();
        assert_eq!(out.count, MAX_SNIPPET_NOTES);
    }

    #[test]
    fn store_saves_restores_and_applies_on_the_audio_side() {
        let g = grid();
        let store = SnippetStore::default();
        let mut r = Recorder::default();
        let mut data = SnippetData::default();
        r.arm(SectionLabel::A);
        r.note_on(60, 100, 0.0);
        r.note_off(60, 1.0);
        r.finish(4.0, &g, true, &mut data).unwrap();
        store.publish(SectionLabel::A, &data);
        let saved = store.map(|s| s.clone());
        assert_eq!(saved.sections.len(), 1);
        assert_eq!(saved.sections[0].section, 'A');
        assert_eq!(
            saved.sections[0].notes[0],
            SavedNote {
                pitch: 60,
                velocity: 100,
                start: 0.0,
                length: 1.0
            }
        );

        // Serde round trip, as the plugin state does it.
        let json = serde_json::to_string(&saved).unwrap();
        let back: SavedSnippets = serde_json::from_str(&json).unwrap();
        assert_eq!(back, saved);

        // Load into a fresh store: visible to a save before the audio thread applied it...
        let fresh = SnippetStore::default();
        let mut moved = back.clone();
        moved.sections[0].section = 'C';
        fresh.set(moved.clone());
        assert_eq!(fresh.snapshot(), moved);
        // ...and after.
        let mut scratch = SnippetData::default();
        assert!(fresh.apply_restore(&mut scratch));
        assert!(!fresh.apply_restore(&mut scratch));
        assert_eq!(fresh.snapshot(), moved);
        assert!(fresh.try_read_published(SectionLabel::C, &mut scratch));
        assert_eq!(scratch.count, 1);
        assert!(fresh.try_read_published(SectionLabel::A, &mut scratch));
        assert_eq!(scratch.count, 0);
    }

    #[test]
    fn replay_orders_offs_before_ons_and_handles_restrikes() {
        let mut data = SnippetData::default();
        let notes = [
            SnippetNote {
                start_ticks: 0,
                len_ticks: 960,
                pitch: 60,
                velocity: 100,
            },
            SnippetNote {
                start_ticks: 0,
                len_ticks: 3000,
                pitch: 64,
                velocity: 90,
            },
            SnippetNote {
                start_ticks: 960,
                len_ticks: 960,
                pitch: 60,
                velocity: 80,
            },
            // Overlaps the 64 above: re-strike.
            SnippetNote {
                start_ticks: 1920,
                len_ticks: 480,
                pitch: 64,
                velocity: 70,
            },
        ];
        data.notes[..4].copy_from_slice(&notes);
        data.count = 4;
        let on = |pitch, velocity, beat| ReplayStep::On {
            pitch,
            velocity,
            beat,
        };
        let off = |pitch, beat| ReplayStep::Off { pitch, beat };
        let mut cur = ReplayCursor::default();
        let mut steps = Vec::new();
        while let Some(s) = cur.next(&data) {
            steps.push(s);
        }
        assert_eq!(
            steps,
            vec![
                on(60, 100, 0.0),
                on(64, 90, 0.0),
                off(60, 1.0),
                on(60, 80, 1.0),
                off(60, 2.0),
                off(64, 2.0),
                on(64, 70, 2.0),
                off(64, 2.5),
            ]
        );
    }
}
