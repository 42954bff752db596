//! Handing a snippet to the engine as time-ordered note-on/off pairs, a few per block.

use super::*;

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
