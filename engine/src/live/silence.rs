//! Handover by silence, on the audio side: the plugin feeds the performer's keys to a
//! [`SilenceWatch`] in `process()` and sends `Command::Handover` when it says so. Real-time
//! safe: `Copy`, a few numbers and a 128-bit key set, no allocation, no lock.

/// Says when the performer has been silent for `beats` after playing (no key down, no note-on
/// or note-off for that long); once per call (a phrase played since the last handover).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct SilenceWatch {
    beats: f64,
    keys: [u64; 2],
    last_activity: f64,
    called: bool,
}

impl SilenceWatch {
    /// `beats`: the silence that hands over (non-finite or negative: never).
    pub const fn new(beats: f64) -> SilenceWatch {
        SilenceWatch {
            beats,
            keys: [0; 2],
            last_activity: f64::NEG_INFINITY,
            called: false,
        }
    }

    pub fn set_beats(&mut self, beats: f64) {
        self.beats = beats;
    }

    pub fn note_on(&mut self, pitch: u8, beat: f64) {
        self.keys[(pitch as usize & 127) / 64] |= 1 << (pitch % 64);
        self.last_activity = beat;
        self.called = true;
    }

    pub fn note_off(&mut self, pitch: u8, beat: f64) {
        self.keys[(pitch as usize & 127) / 64] &= !(1 << (pitch % 64));
        self.last_activity = self.last_activity.max(beat);
    }

    /// The beat the performer handed over at, when the silence has lasted `beats` by
    /// `now_beat`; `None` otherwise. Reports each call once.
    pub fn poll(&mut self, now_beat: f64) -> Option<f64> {
        let due = self.last_activity + self.beats;
        let silent = self.keys == [0; 2] && self.beats.is_finite() && self.beats >= 0.0;
        if self.called && silent && now_beat >= due {
            self.called = false;
            return Some(due);
        }
        None
    }

    /// Forgets the keys and the call (transport relocation, mode change).
    pub fn reset(&mut self) {
        *self = SilenceWatch::new(self.beats);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_silence_after_a_phrase_hands_over_once() {
        let mut w = SilenceWatch::new(2.0);
        assert_eq!(w.poll(10.0), None, "nothing played yet");
        w.note_on(60, 0.0);
        w.note_on(64, 0.5);
        w.note_off(60, 1.0);
        assert_eq!(w.poll(5.0), None, "a key is still down");
        w.note_off(64, 1.5);
        assert_eq!(w.poll(3.4), None, "not silent long enough");
        assert_eq!(w.poll(3.6), Some(3.5));
        assert_eq!(w.poll(9.0), None, "once per call");
        w.note_on(67, 10.0);
        w.note_off(67, 10.5);
        assert_eq!(w.poll(12.5), Some(12.5));
        w.note_on(67, 13.0);
        w.reset();
        assert_eq!(w.poll(100.0), None);
        w.set_beats(f64::NAN);
        w.note_on(60, 0.0);
        w.note_off(60, 0.1);
        assert_eq!(w.poll(1e9), None, "no silence hands over");
    }
}
