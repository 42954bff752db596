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

/// Default tempo when a file or song has none: 500,000 us per quarter note (120 bpm).
pub const DEFAULT_US_PER_QUARTER: u32 = 500_000;

/// Ticks per quarter note of songs built from millisecond notes (`Song::from_ms_notes`).
pub const FROM_MS_TICKS_PER_QUARTER: u16 = 480;

/// A tempo map prepared for fast conversions: the millisecond time at which each tempo segment
/// starts, so a tick converts with one binary search instead of a walk over the whole map.
///
/// Tolerates maps a user built by hand: an empty map or one whose first entry is after tick 0
/// plays the default 120 bpm before it, and a tempo of 0 us is treated as 1 us (a file can't
/// make time stand still).
#[derive(Debug, Clone)]
pub(crate) struct TempoIndex {
    /// (tick, us per quarter, ms at tick), sorted by tick, first at tick 0.
    segments: Vec<(u64, u32, f64)>,
    ticks_per_quarter: f64,
}

impl TempoIndex {
    pub(crate) fn new(tempo_map: &[TempoChange], ticks_per_quarter: u16) -> Self {
        let tpq = f64::from(ticks_per_quarter.max(1));
        let mut sorted: Vec<TempoChange> = tempo_map.to_vec();
        sorted.sort_by_key(|t| t.tick);
        let mut segments: Vec<(u64, u32, f64)> = Vec::with_capacity(sorted.len() + 1);
        if sorted.first().is_none_or(|t| t.tick > 0) {
            segments.push((0, DEFAULT_US_PER_QUARTER, 0.0));
        }
        for t in sorted {
            let us = t.us_per_quarter.max(1);
            match segments.last_mut() {
                // Two changes at one tick: the later one is the one in force.
                Some(last) if last.0 == t.tick => last.1 = us,
                Some(&mut (tick, prev_us, ms)) => {
                    let ms_here = ms + (t.tick - tick) as f64 * f64::from(prev_us) / 1000.0 / tpq;
                    segments.push((t.tick, us, ms_here));
                }
                None => segments.push((t.tick, us, 0.0)),
            }
        }
        TempoIndex {
            segments,
            ticks_per_quarter: tpq,
        }
    }

    pub(crate) fn tick_to_ms(&self, tick: u64) -> f64 {
        let i = self
            .segments
            .partition_point(|s| s.0 <= tick)
            .saturating_sub(1);
        let (t0, us, ms0) = self.segments[i];
        ms0 + (tick - t0) as f64 * f64::from(us) / 1000.0 / self.ticks_per_quarter
    }

    pub(crate) fn ms_to_tick(&self, ms: f64) -> u64 {
        // NaN and negative times have no tick after 0.
        if ms.is_nan() || ms <= 0.0 {
            return 0;
        }
        let i = self
            .segments
            .partition_point(|s| s.2 <= ms)
            .saturating_sub(1);
        let (t0, us, ms0) = self.segments[i];
        let ticks = (ms - ms0) * 1000.0 * self.ticks_per_quarter / f64::from(us);
        // `as` saturates, so an absurd time gives u64::MAX rather than wrapping.
        t0.saturating_add(ticks.round() as u64)
    }
}

/// A time signature sanitised for bar arithmetic: a bar is `num_ticks / den` ticks, kept as a
/// fraction so odd meters at a low resolution (3/8 at 1 tick per quarter) don't drift.
struct BarGrid {
    tick: u64,
    num_ticks: u64,
    den: u64,
}

impl BarGrid {
    fn bar_len_ceil_bars(&self, ticks: u64) -> u64 {
        // Bars needed to cover `ticks`: the last, possibly partial, bar counts.
        (u128::from(ticks) * u128::from(self.den)).div_ceil(u128::from(self.num_ticks)) as u64
    }
    fn start_of(&self, bar_in_segment: u64) -> u64 {
        let offset = u128::from(bar_in_segment) * u128::from(self.num_ticks) / u128::from(self.den);
        self.tick
            .saturating_add(u64::try_from(offset).unwrap_or(u64::MAX))
    }
}

impl Song {
    /// Notes starting in `[start_ms, end_ms)`, re-timed from `start_ms` (what a snippet or a
    /// captured section holds).
    pub fn notes_in(&self, start_ms: f64, end_ms: f64) -> Vec<Note> {
        self.notes
            .iter()
            .filter(|n| n.start_ms >= start_ms && n.start_ms < end_ms)
            .map(|n| Note {
                start_ms: n.start_ms - start_ms,
                end_ms: n.end_ms - start_ms,
                ..*n
            })
            .collect()
    }

    /// The notes starting inside `section`, re-timed from its start.
    pub fn section_notes(&self, section: &Section) -> Vec<Note> {
        self.notes_in(section.start_ms, section.end_ms)
    }

    /// The earliest section labelled `label` (one with a start time): the one whose notes are
    /// that section's snippet, for the command line's prompts as for the training data.
    pub fn first_section(&self, label: SectionLabel) -> Option<&Section> {
        self.sections
            .iter()
            .filter(|s| s.label == label && s.start_ms.is_finite())
            .min_by(|a, b| a.start_ms.total_cmp(&b.start_ms))
    }

    /// The quarter note in ms when the whole song keeps one tempo (120 bpm without a tempo
    /// map); `None` when the tempo changes.
    pub fn constant_quarter_ms(&self) -> Option<f64> {
        let us = self
            .tempo_map
            .first()
            .map_or(DEFAULT_US_PER_QUARTER, |t| t.us_per_quarter);
        // A map starting after tick 0 plays 120 bpm before its first entry.
        let from_zero = self.tempo_map.first().is_none_or(|t| t.tick == 0);
        (us > 0
            && (from_zero || us == DEFAULT_US_PER_QUARTER)
            && self.tempo_map.iter().all(|t| t.us_per_quarter == us))
        .then(|| us as f64 / 1000.0)
    }

    /// Milliseconds from the start of the piece at `tick`, through the whole tempo map.
    pub fn tick_to_ms(&self, tick: u64) -> f64 {
        TempoIndex::new(&self.tempo_map, self.ticks_per_quarter).tick_to_ms(tick)
    }

    /// The tick nearest to `ms` through the tempo map (negative or NaN times give tick 0).
    pub fn ms_to_tick(&self, ms: f64) -> u64 {
        TempoIndex::new(&self.tempo_map, self.ticks_per_quarter).ms_to_tick(ms)
    }

    /// A song in 4/4 at one tempo throughout (`us_per_quarter`), both from tick 0, with the
    /// notes and sections as given (their ticks and ms are not touched).
    pub fn with_fixed_tempo(
        ticks_per_quarter: u16,
        us_per_quarter: u32,
        notes: Vec<Note>,
        sections: Vec<Section>,
    ) -> Song {
        Song {
            ticks_per_quarter,
            tempo_map: vec![TempoChange {
                tick: 0,
                us_per_quarter,
            }],
            time_signatures: vec![TimeSignature {
                tick: 0,
                numerator: 4,
                denominator: 4,
            }],
            notes,
            sections,
        }
    }

    /// A writable song from notes whose times are known in milliseconds only (what the tokenizer
    /// decodes): one fixed tempo `bpm`, 480 ticks per quarter, 4/4.
    ///
    /// Each note's ticks are its ms times rounded to the nearest tick; a note that would round
    /// to no length keeps one tick so it survives writing. The ms fields are then recomputed
    /// from the ticks so `start_ms == tick_to_ms(start_tick)` holds like in a song read from a
    /// file (they move by at most half a tick). Sections get their ticks from their ms the same
    /// way. A `bpm` that is not a finite positive number falls back to 120; tempos are clamped to
    /// what a MIDI tempo event can hold.
    pub fn from_ms_notes(notes: Vec<Note>, sections: Vec<Section>, bpm: f64) -> Song {
        let us = if bpm.is_finite() && bpm > 0.0 {
            (60_000_000.0 / bpm)
                .round()
                .clamp(1.0, f64::from(0xFF_FFFFu32)) as u32
        } else {
            DEFAULT_US_PER_QUARTER
        };
        let mut song = Song::with_fixed_tempo(FROM_MS_TICKS_PER_QUARTER, us, notes, sections);
        let index = TempoIndex::new(&song.tempo_map, song.ticks_per_quarter);
        for n in &mut song.notes {
            n.start_tick = index.ms_to_tick(n.start_ms);
            n.end_tick = index
                .ms_to_tick(n.end_ms)
                .max(n.start_tick.saturating_add(1));
            n.start_ms = index.tick_to_ms(n.start_tick);
            n.end_ms = index.tick_to_ms(n.end_tick);
        }
        song.notes
            .sort_by_key(|n| (n.start_tick, n.pitch, n.channel));
        for s in &mut song.sections {
            s.start_tick = index.ms_to_tick(s.start_ms);
            s.end_tick = index.ms_to_tick(s.end_ms).max(s.start_tick);
            s.start_ms = index.tick_to_ms(s.start_tick);
            s.end_ms = index.tick_to_ms(s.end_tick);
        }
        song.sections.sort_by_key(|s| s.start_tick);
        song
    }

    /// End of the last-ending note in ms (0 for a song without notes).
    pub fn duration_ms(&self) -> f64 {
        self.notes.iter().map(|n| n.end_ms).fold(0.0, f64::max)
    }

    /// The bar grid: one entry per time-signature change, first at tick 0 (4/4 before the first
    /// change, as MIDI assumes). Each change starts a new bar, so a change in mid-bar closes that
    /// bar short, as notation software does.
    fn bar_grid(&self) -> Vec<BarGrid> {
        let quarter = u64::from(self.ticks_per_quarter.max(1));
        let mut sigs: Vec<TimeSignature> = self.time_signatures.clone();
        sigs.sort_by_key(|t| t.tick);
        let mut grid: Vec<BarGrid> = Vec::with_capacity(sigs.len() + 1);
        if sigs.first().is_none_or(|t| t.tick > 0) {
            grid.push(BarGrid {
                tick: 0,
                num_ticks: 4 * quarter,
                den: 1,
            });
        }
        for ts in sigs {
            // A bar is numerator beats of (4 / denominator) quarters.
            let entry = BarGrid {
                tick: ts.tick,
                num_ticks: 4 * quarter * u64::from(ts.numerator.max(1)),
                den: u64::from(ts.denominator.max(1)),
            };
            match grid.last_mut() {
                Some(last) if last.tick == entry.tick => *last = entry,
                _ => grid.push(entry),
            }
        }
        grid
    }

    /// The tick where bar `bar` starts (bars counted from 0), following time-signature changes.
    pub fn bar_start_tick(&self, bar: u32) -> u64 {
        let grid = self.bar_grid();
        let mut remaining = u64::from(bar);
        for (i, seg) in grid.iter().enumerate() {
            if let Some(next) = grid.get(i + 1) {
                let bars_here = seg.bar_len_ceil_bars(next.tick - seg.tick);
                if remaining >= bars_here {
                    remaining -= bars_here;
                    continue;
                }
            }
            return seg.start_of(remaining);
        }
        0 // unreachable: the grid is never empty and its last segment always returns
    }

    /// The bar (counted from 0) that contains `tick`; saturates at `u32::MAX`.
    pub fn bar_at_tick(&self, tick: u64) -> u32 {
        let grid = self.bar_grid();
        let mut bars_before: u64 = 0;
        for (i, seg) in grid.iter().enumerate() {
            match grid.get(i + 1) {
                Some(next) if next.tick <= tick => {
                    bars_before += seg.bar_len_ceil_bars(next.tick - seg.tick);
                }
                _ => {
                    let offset = u128::from(tick - seg.tick) * u128::from(seg.den)
                        / u128::from(seg.num_ticks);
                    let bar = u128::from(bars_before) + offset;
                    return u32::try_from(bar).unwrap_or(u32::MAX);
                }
            }
        }
        0 // unreachable: the grid is never empty and its last segment always returns
    }

    /// The section letters in order, e.g. "AABB" (empty for a song without sections).
    pub fn section_form(&self) -> String {
        self.sections.iter().map(|s| s.label.letter()).collect()
    }
}
