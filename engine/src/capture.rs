//! Snippet assembly on the engine thread: the played note-ons/offs the audio side forwards
//! (in host beats) become per-section note lists in milliseconds from the snippet start, at the
//! tempo in force when the section was captured.

use crate::timing::{beats_to_ms, sane_bpm};
use staria_models::{Note, SectionLabel};

/// A captured note in host beats.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct CapturedNote {
    pub pitch: u8,
    pub velocity: u8,
    pub start_beat: f64,
    pub end_beat: f64,
}

/// Ticks per quarter note for the tick fields of snippet notes (the tokenizer reads the ms fields;
/// ticks only matter if a snippet is written out as MIDI).
pub const SNIPPET_TPQ: u16 = 480;

#[derive(Debug, Clone)]
struct SectionCapture {
    origin: Option<f64>,
    bpm: f64,
    notes: Vec<CapturedNote>,
    /// Held keys: (velocity, start beat).
    open: [Option<(u8, f64)>; 128],
    /// A saved snippet handed back (`arm_restored`): its beats count from the snippet start.
    restored: bool,
}

impl Default for SectionCapture {
    fn default() -> Self {
        Self {
            origin: None,
            bpm: 120.0,
            notes: Vec::new(),
            open: [None; 128],
            restored: false,
        }
    }
}

/// Why a captured note was refused (counted in status, never fatal).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CaptureRefusal {
    BadPitch,
    BadTime,
    Full,
    NoteOffWithoutNoteOn,
}

/// The four sections' snippets.
#[derive(Debug, Clone)]
pub struct Capture {
    sections: [SectionCapture; 4],
    max_notes: usize,
    /// The section a note was last played into, and that note's beat: what "continue" continues
    /// when the musician played after the last generated music started. Restored snippets
    /// (after a project load) count as played before anything else (`f64::NEG_INFINITY`): their
    /// beats count from the snippet start, not on the host's timeline.
    last_played: Option<(SectionLabel, f64)>,
}

impl Capture {
    /// `max_notes` bounds each snippet (a stuck sustain or a flood of MIDI cannot grow it forever).
    pub fn new(max_notes: usize) -> Self {
        Self {
            sections: Default::default(),
            max_notes,
            last_played: None,
        }
    }

    /// Forget the section and start it again at `origin_beat` with the current tempo.
    pub fn arm(&mut self, section: SectionLabel, origin_beat: f64, bpm: f64) {
        if self.last_played.is_some_and(|(l, _)| l == section) {
            self.last_played = None;
        }
        let s = &mut self.sections[section.index()];
        *s = SectionCapture::default();
        if origin_beat.is_finite() {
            s.origin = Some(origin_beat);
        }
        s.bpm = sane_bpm(bpm);
    }

    /// Start handing a saved snippet back: as `arm` at origin 0, and the notes that follow are
    /// in beats from the snippet start, so they are not "just played": they only become
    /// [`Self::last_played`] while nothing else is, and as older than any host beat.
    pub fn arm_restored(&mut self, section: SectionLabel, bpm: f64) {
        self.arm(section, 0.0, bpm);
        self.sections[section.index()].restored = true;
    }

    pub fn clear(&mut self, section: SectionLabel) {
        self.sections[section.index()] = SectionCapture::default();
        if self.last_played.is_some_and(|(l, _)| l == section) {
            self.last_played = None;
        }
    }

    /// The section most recently played into (and the beat of its latest note event), unless it
    /// was cleared since.
    pub fn last_played(&self) -> Option<(SectionLabel, f64)> {
        self.last_played
    }

    pub fn note_on(
        &mut self,
        section: SectionLabel,
        pitch: u8,
        velocity: u8,
        beat: f64,
        bpm: f64,
    ) -> Result<(), CaptureRefusal> {
        if pitch > 127 {
            return Err(CaptureRefusal::BadPitch);
        }
        if !beat.is_finite() {
            return Err(CaptureRefusal::BadTime);
        }
        if velocity == 0 {
            // MIDI's running-status note-off.
            return self.note_off(section, pitch, beat);
        }
        let max = self.max_notes;
        let s = &mut self.sections[section.index()];
        if s.origin.is_none() {
            s.origin = Some(beat);
            s.bpm = sane_bpm(bpm);
        }
        // A key struck again while held: the held note ends here.
        if s.open[pitch as usize].is_some() {
            Self::close(s, pitch, beat, max)?;
        }
        if s.notes.len() >= max {
            return Err(CaptureRefusal::Full);
        }
        s.open[pitch as usize] = Some((velocity.min(127), beat));
        self.played(section, beat);
        Ok(())
    }

    pub fn note_off(
        &mut self,
        section: SectionLabel,
        pitch: u8,
        beat: f64,
    ) -> Result<(), CaptureRefusal> {
        if pitch > 127 {
            return Err(CaptureRefusal::BadPitch);
        }
        if !beat.is_finite() {
            return Err(CaptureRefusal::BadTime);
        }
        let max = self.max_notes;
        Self::close(&mut self.sections[section.index()], pitch, beat, max)?;
        self.played(section, beat);
        Ok(())
    }

    fn played(&mut self, section: SectionLabel, beat: f64) {
        if !self.sections[section.index()].restored {
            self.last_played = Some((section, beat));
        } else if self.last_played.is_none_or(|(_, b)| b == f64::NEG_INFINITY) {
            // Snippet-relative beats mean nothing on the host's timeline.
            self.last_played = Some((section, f64::NEG_INFINITY));
        }
    }

    fn close(
        s: &mut SectionCapture,
        pitch: u8,
        beat: f64,
        max: usize,
    ) -> Result<(), CaptureRefusal> {
        let Some((velocity, start)) = s.open[pitch as usize].take() else {
            return Err(CaptureRefusal::NoteOffWithoutNoteOn);
        };
        if s.notes.len() >= max {
            return Err(CaptureRefusal::Full);
        }
        s.notes.push(CapturedNote {
            pitch,
            velocity,
            start_beat: start,
            end_beat: beat.max(start),
        });
        Ok(())
    }

    /// Notes finished so far in the section (held notes not included), in capture order.
    pub fn notes(&self, section: SectionLabel) -> &[CapturedNote] {
        &self.sections[section.index()].notes
    }

    pub fn is_empty(&self, section: SectionLabel) -> bool {
        let s = &self.sections[section.index()];
        s.notes.is_empty() && s.open.iter().all(Option::is_none)
    }

    /// The section's snippet in milliseconds from its origin at the capture tempo, sorted by
    /// (start, pitch). Keys still held count as released at `now_beat`. Notes before the origin
    /// (a pickup played early) start at 0.
    pub fn snippet(&self, section: SectionLabel, now_beat: f64) -> Vec<Note> {
        let s = &self.sections[section.index()];
        let Some(origin) = s.origin else {
            return Vec::new();
        };
        let held = s.open.iter().enumerate().filter_map(|(p, o)| {
            o.map(|(velocity, start)| CapturedNote {
                pitch: p as u8,
                velocity,
                start_beat: start,
                end_beat: if now_beat.is_finite() {
                    now_beat.max(start)
                } else {
                    start
                },
            })
        });
        let mut out: Vec<Note> = s
            .notes
            .iter()
            .copied()
            .chain(held)
            .map(|n| {
                let start = (n.start_beat - origin).max(0.0);
                let end = (n.end_beat - origin).max(start);
                Note {
                    pitch: n.pitch,
                    velocity: n.velocity,
                    channel: 0,
                    program: 0,
                    start_tick: (start * SNIPPET_TPQ as f64).round() as u64,
                    end_tick: (end * SNIPPET_TPQ as f64).round() as u64,
                    start_ms: beats_to_ms(start, s.bpm),
                    end_ms: beats_to_ms(end, s.bpm),
                }
            })
            .collect();
        out.sort_by(|a, b| {
            a.start_ms
                .total_cmp(&b.start_ms)
                .then(a.pitch.cmp(&b.pitch))
        });
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use SectionLabel::*;

    #[test]
    fn pairs_notes_and_converts_at_capture_tempo() {
        let mut c = Capture::new(100);
        c.arm(A, 4.0, 120.0);
        c.note_on(A, 60, 90, 4.0, 120.0).unwrap();
        c.note_on(A, 64, 80, 4.5, 90.0).unwrap(); // tempo changes later do not re-time the snippet
        c.note_off(A, 60, 5.0).unwrap();
        c.note_on(A, 67, 0, 5.5, 120.0).unwrap_err(); // velocity-0 note-on without a held key
        let snip = c.snippet(A, 6.0);
        assert_eq!(snip.len(), 2);
        assert_eq!(
            (snip[0].pitch, snip[0].start_ms, snip[0].end_ms),
            (60, 0.0, 500.0)
        );
        // 64 still held: released at "now" (beat 6 = 1000 ms after the origin at 120 bpm).
        assert_eq!(
            (snip[1].pitch, snip[1].start_ms, snip[1].end_ms),
            (64, 250.0, 1000.0)
        );
        assert_eq!(snip[1].end_tick, 960);
        assert!(c.snippet(B, 6.0).is_empty());
    }

    #[test]
    fn refuses_bad_input_and_bounds_size() {
        let mut c = Capture::new(2);
        assert_eq!(
            c.note_on(B, 200, 90, 0.0, 120.0),
            Err(CaptureRefusal::BadPitch)
        );
        assert_eq!(
            c.note_on(B, 60, 90, f64::NAN, 120.0),
            Err(CaptureRefusal::BadTime)
        );
        assert_eq!(
            c.note_off(B, 61, 1.0),
            Err(CaptureRefusal::NoteOffWithoutNoteOn)
        );
        // Without an arm, the first note is the origin.
        c.note_on(B, 60, 90, 8.0, 120.0).unwrap();
        c.note_on(B, 60, 70, 9.0, 120.0).unwrap(); // re-strike closes the first
        c.note_off(B, 60, 10.0).unwrap();
        assert_eq!(c.notes(B).len(), 2);
        assert_eq!(c.note_on(B, 62, 90, 11.0, 120.0), Err(CaptureRefusal::Full));
        let snip = c.snippet(B, 12.0);
        assert_eq!(snip[0].start_ms, 0.0);
        assert_eq!(snip[1].start_ms, 500.0);
        c.clear(B);
        assert!(c.is_empty(B));
    }
}
