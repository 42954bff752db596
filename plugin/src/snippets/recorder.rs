//! Recording what is played into one section, on the audio thread (fixed storage, no allocation).

use super::*;

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
