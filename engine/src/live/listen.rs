//! Listening: the performer's notes as they arrive, and their tokens.
//!
//! [`Listener`] keeps the performer's sounding notes and the notes waiting to be absorbed into
//! the model's cache. Two absorption rules, chosen by the mode:
//! - **at note-off** (call and response): a note is absorbed once it has ended, so its duration
//!   token is the real one; notes go in onset order, so a note waits for every note that started
//!   before it. A note still held when a later-starting note has ended is absorbed with its
//!   length so far (a held bass note never blocks the melody above it), as is everything held
//!   at a handover.
//! - **at note-on** (accompaniment): a note is absorbed when it starts, with the duration the
//!   performer's recent notes had ([`Listener::expected_duration_ms`]): the accompaniment must
//!   react to the note now, not when it ends.
//!
//! [`note_tokens`] is the streaming encoding of one note after the grammar state the cache
//! ends in: the `<T>`s to the note's window, then note, onset and duration, exactly as
//! `Tokenizer::snippet_tokens` writes a piece (a note whose time rounds before the window's
//! latest onset is moved up to it: onsets never go back within a window). The caller names the
//! instrument: a performer's note is always `Tokenizer::performer_instrument` (instrument 0),
//! whatever program its MIDI had ([`TimedNote`] carries none); a model note goes back in as
//! the instrument it was sampled as.

use std::collections::VecDeque;

use staria_models::tokenizer::{StreamDecoder, Tokenizer};

/// A performed (or accompanying) note on the session's clock, in ms.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct TimedNote {
    pub pitch: u8,
    pub velocity: u8,
    pub start_ms: f64,
    pub end_ms: f64,
}

/// Appends to `out` the tokens of `note` (times in the model's piece time) after the grammar
/// state `dec`, as a note of `instrument` (an index into the tokenizer's instruments). Returns
/// `false`, adding nothing, for a note the vocabulary cannot hold (pitch over 127, a non-finite
/// time, an unknown instrument).
pub fn note_tokens(
    tok: &Tokenizer,
    dec: &StreamDecoder,
    note: &TimedNote,
    instrument: u8,
    out: &mut Vec<u32>,
) -> bool {
    let Some(note_id) = tok.note_id(instrument, note.pitch, note.velocity.max(1)) else {
        return false;
    };
    if !(note.start_ms.is_finite() && note.end_ms.is_finite()) {
        return false;
    }
    let cfg = tok.config();
    let step = cfg.time_step_ms as f64;
    let steps_per_window = (cfg.window_ms / cfg.time_step_ms) as i64;
    let window_start = dec.window_start_ms() as f64;
    let mut latest_step = (dec.min_onset_ms() / cfg.time_step_ms) as i64;
    let mut steps = ((note.start_ms - window_start) / step).round() as i64;
    while steps >= steps_per_window {
        out.push(tok.time_shift_id());
        steps -= steps_per_window;
        latest_step = 0;
    }
    let steps = steps.max(latest_step).clamp(0, steps_per_window - 1);
    let onset = tok
        .onset_id(steps as f64 * step)
        .expect("steps lie inside the window");
    out.extend([note_id, onset, tok.dur_id(note.end_ms - note.start_ms)]);
    true
}

/// A performer's note waiting to be absorbed (note-off rule).
#[derive(Debug, Clone, Copy)]
struct Waiting {
    note: TimedNote,
    ended: bool,
}

/// The performer's side of a live session (see the module notes).
#[derive(Debug)]
pub struct Listener {
    /// Start (ms) and velocity of each sounding performer key.
    held: [Option<(f64, u8)>; 128],
    /// Notes not yet absorbed, in onset order (note-off rule only).
    waiting: VecDeque<Waiting>,
    /// Mean of the performer's recent note lengths (ms), for the note-on rule.
    expected_dur_ms: f64,
    /// The latest note-on or note-off (ms); `NEG_INFINITY` before any.
    last_activity_ms: f64,
    /// A note started since the last [`Listener::mark_answered`] (a call to answer).
    played_since_answer: bool,
}

impl Listener {
    /// `beat_ms`: the first duration estimate (one beat) for the note-on rule.
    pub fn new(beat_ms: f64) -> Listener {
        Listener {
            held: [None; 128],
            waiting: VecDeque::with_capacity(256),
            expected_dur_ms: beat_ms,
            last_activity_ms: f64::NEG_INFINITY,
            played_since_answer: false,
        }
    }

    /// Whether the performer holds `pitch` now.
    pub fn holds(&self, pitch: u8) -> bool {
        self.held.get(pitch as usize).is_some_and(Option::is_some)
    }

    /// Whether any performer key is down.
    pub fn any_held(&self) -> bool {
        self.held.iter().any(Option::is_some)
    }

    pub fn last_activity_ms(&self) -> f64 {
        self.last_activity_ms
    }

    /// A note started since the last answer (the silence rule hands over only then).
    pub fn has_call(&self) -> bool {
        self.played_since_answer
    }

    pub fn mark_answered(&mut self) {
        self.played_since_answer = false;
    }

    /// The duration the note-on rule gives a note: the mean of the recent lengths.
    pub fn expected_duration_ms(&self) -> f64 {
        self.expected_dur_ms
    }

    /// A key goes down. A key already down is released first (a repeated note-on).
    pub fn note_on(&mut self, pitch: u8, velocity: u8, at_ms: f64, queue: bool) {
        if pitch > 127 {
            return;
        }
        if self.holds(pitch) {
            self.note_off(pitch, at_ms);
        }
        self.held[pitch as usize] = Some((at_ms, velocity.max(1)));
        self.last_activity_ms = at_ms;
        self.played_since_answer = true;
        if queue {
            self.waiting.push_back(Waiting {
                note: TimedNote {
                    pitch,
                    velocity: velocity.max(1),
                    start_ms: at_ms,
                    end_ms: at_ms,
                },
                ended: false,
            });
        }
    }

    /// A key goes up; the length updates the duration estimate. A key not down is ignored.
    pub fn note_off(&mut self, pitch: u8, at_ms: f64) {
        let Some((start, _)) = self.held.get_mut(pitch as usize).and_then(Option::take) else {
            return;
        };
        self.last_activity_ms = self.last_activity_ms.max(at_ms);
        let len = (at_ms - start).max(0.0);
        // A short memory: the last few notes decide.
        self.expected_dur_ms = 0.75 * self.expected_dur_ms + 0.25 * len.max(10.0);
        if let Some(w) = self
            .waiting
            .iter_mut()
            .find(|w| !w.ended && w.note.pitch == pitch)
        {
            w.note.end_ms = at_ms.max(w.note.start_ms);
            w.ended = true;
        }
    }

    /// The next waiting note that may be absorbed now (note-off rule): the oldest one if it has
    /// ended; if it is still held but a later one has ended, the oldest one with its length so
    /// far (`now_ms`); with `flush`, the oldest one in any case.
    pub fn next_ready(&mut self, now_ms: f64, flush: bool) -> Option<TimedNote> {
        let front = *self.waiting.front()?;
        let later_ended = self.waiting.iter().skip(1).any(|w| w.ended);
        if !(front.ended || later_ended || flush) {
            return None;
        }
        self.waiting.pop_front();
        let mut note = front.note;
        if !front.ended {
            note.end_ms = now_ms.max(note.start_ms);
        }
        Some(note)
    }

    /// Forgets everything waiting (a session restart).
    pub fn clear_waiting(&mut self) {
        self.waiting.clear();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use staria_models::tokenizer::{TokenKind, TokenizerConfig};

    fn tok() -> Tokenizer {
        Tokenizer::new(TokenizerConfig::default()).unwrap()
    }

    fn note(pitch: u8, start_ms: f64, end_ms: f64) -> TimedNote {
        TimedNote {
            pitch,
            velocity: 80,
            start_ms,
            end_ms,
        }
    }

    /// Note by note, the streaming encoding gives the tokens `snippet_tokens` gives the whole
    /// performance (window crossings included).
    #[test]
    fn streamed_tokens_equal_the_batch_encoding() {
        let t = tok();
        let notes = [
            note(60, 0.0, 400.0),
            note(64, 250.0, 700.0),
            note(67, 4_990.0, 5_400.0),
            note(72, 12_345.0, 13_000.0),
            note(71, 12_345.0, 12_500.0),
        ];
        let mut streamed = Vec::new();
        let mut dec = StreamDecoder::new();
        for n in &notes {
            let from = streamed.len();
            assert!(note_tokens(&t, &dec, n, 0, &mut streamed));
            for &id in &streamed[from..] {
                dec.push(&t, id);
            }
        }
        let as_song: Vec<staria_models::Note> = notes
            .iter()
            .map(|n| staria_models::Note {
                pitch: n.pitch,
                velocity: n.velocity,
                channel: 0,
                program: 0,
                start_tick: 0,
                end_tick: 0,
                start_ms: n.start_ms,
                end_ms: n.end_ms,
            })
            .collect();
        let mut sorted = as_song.clone();
        sorted.sort_by(|a, b| a.start_ms.total_cmp(&b.start_ms));
        // The batch encoder orders simultaneous notes by input order; the stream fed 72 first.
        assert_eq!(streamed, t.snippet_tokens(&sorted, 0.0, usize::MAX));
        let shifts = streamed
            .iter()
            .filter(|&&id| t.kind(id) == TokenKind::TimeShift)
            .count();
        assert_eq!(shifts, 2);
    }

    #[test]
    fn a_note_before_the_latest_onset_moves_up_to_it() {
        let t = tok();
        let mut dec = StreamDecoder::new();
        let mut ids = Vec::new();
        note_tokens(&t, &dec, &note(60, 1_000.0, 1_200.0), 0, &mut ids);
        for &id in &ids {
            dec.push(&t, id);
        }
        ids.clear();
        note_tokens(&t, &dec, &note(62, 900.0, 1_000.0), 0, &mut ids);
        assert_eq!(t.kind(ids[1]), TokenKind::Onset { ms: 1_000 });
        assert!(!note_tokens(&t, &dec, &note(200, 0.0, 1.0), 0, &mut ids));
        assert!(!note_tokens(
            &t,
            &dec,
            &note(60, f64::NAN, 1.0),
            0,
            &mut ids
        ));
        assert!(
            !note_tokens(&t, &dec, &note(60, 0.0, 1.0), 1, &mut ids),
            "a one-instrument vocabulary has no instrument 1"
        );
    }

    /// The note token is the named instrument's; the timing tokens do not depend on it.
    #[test]
    fn the_instrument_is_the_callers() {
        let two = Tokenizer::new(TokenizerConfig {
            instruments: vec!["piano".into(), "bass".into()],
            ..TokenizerConfig::default()
        })
        .unwrap();
        let dec = StreamDecoder::new();
        let n = note(43, 6_000.0, 6_400.0);
        let (mut piano, mut bass) = (Vec::new(), Vec::new());
        assert!(note_tokens(&two, &dec, &n, 0, &mut piano));
        assert!(note_tokens(&two, &dec, &n, 1, &mut bass));
        assert_eq!(
            two.to_strings(&piano),
            ["<T>", "piano:43:80", "onset:1000", "dur:400"]
        );
        assert_eq!(
            two.to_strings(&bass),
            ["<T>", "bass:43:80", "onset:1000", "dur:400"]
        );
    }

    /// Note-off rule: onset order, a held note does not block a later one that ended (it goes
    /// first with its length so far), a flush takes what is held.
    #[test]
    fn notes_are_absorbed_in_onset_order_when_they_end() {
        let mut l = Listener::new(500.0);
        l.note_on(48, 90, 0.0, true);
        l.note_on(72, 90, 100.0, true);
        assert!(l.next_ready(150.0, false).is_none(), "nothing has ended");
        l.note_off(72, 300.0);
        let bass = l.next_ready(300.0, false).unwrap();
        assert_eq!((bass.pitch, bass.end_ms), (48, 300.0));
        let melody = l.next_ready(300.0, false).unwrap();
        assert_eq!(
            (melody.pitch, melody.start_ms, melody.end_ms),
            (72, 100.0, 300.0)
        );
        assert!(l.next_ready(300.0, false).is_none());
        l.note_on(60, 90, 400.0, true);
        assert!(l.next_ready(450.0, false).is_none());
        assert_eq!(l.next_ready(450.0, true).unwrap().end_ms, 450.0);
        assert!(l.holds(60) && l.has_call());
        l.mark_answered();
        assert!(!l.has_call());
    }

    #[test]
    fn the_expected_duration_follows_the_performer() {
        let mut l = Listener::new(500.0);
        for k in 0..20 {
            let t = k as f64 * 200.0;
            l.note_on(60, 80, t, false);
            l.note_off(60, t + 100.0);
        }
        assert!((l.expected_duration_ms() - 100.0).abs() < 5.0);
        assert!(!l.any_held());
    }
}
