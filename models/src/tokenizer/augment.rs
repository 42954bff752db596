//! Token-level augmentations of whole training sequences (prompt and piece). They work on ids,
//! not songs, so a cached tokenized corpus can be augmented per batch.

use super::{TIME_SHIFT, TokenKind, Tokenizer};
use crate::error::{Error, Result};
use crate::song::SectionLabel;

/// A section-windows body without its section tags ([`Tokenizer::strip_section_tags`]).
#[derive(Debug, Clone, PartialEq)]
pub struct Stripped {
    /// The body on one continuous time line.
    pub tokens: Vec<u32>,
    /// Where each section starts: (index into `tokens`, label), in order.
    pub section_starts: Vec<(usize, SectionLabel)>,
}

/// A note, or the start of one, waiting for its onset / duration.
#[derive(Clone, Copy)]
enum Frag {
    None,
    Note(u32),
    NoteAt {
        note: u32,
        onset: u32,
        onset_ms: u32,
    },
    Drum(u32),
    /// A body onset with no note before it (section windows), waiting for its section tag.
    SectionAt {
        onset: u32,
        onset_ms: u32,
    },
}

/// One time line (a prompt snippet or the piece) being rescaled.
struct Scaler<'a> {
    tok: &'a Tokenizer,
    factor: f64,
    out: Vec<u32>,
    /// Input position: where the current section's time line starts (section windows; else 0),
    /// windows passed since and latest onset in the window.
    in_origin_ms: f64,
    in_window: u64,
    in_last_ms: u32,
    /// Output position: the step where the current section's window 0 starts, windows since.
    out_origin: u64,
    out_window: u64,
    /// Tokens without a time of their own (tags, `<D>`, `<E>`...), kept in order; they stick to
    /// the next note unless a `<T>` or a time-line reset comes first.
    held: Vec<(u32, f64)>,
    /// Drop body section tags and their onsets, keeping one continuous output time line, and
    /// note where each section starts in the output (`strip_section_tags`).
    strip_sections: bool,
    section_starts: Vec<(usize, SectionLabel)>,
}

impl Scaler<'_> {
    /// Input time of onset `onset_ms` of the current input window.
    fn in_ms(&self, onset_ms: u32) -> f64 {
        self.in_origin_ms + self.in_window as f64 * self.tok.window_ms() as f64 + onset_ms as f64
    }

    fn now_ms(&self) -> f64 {
        self.in_ms(self.in_last_ms)
    }

    /// Output step of an input time, never before the current output window.
    fn out_step(&self, in_ms: f64) -> u64 {
        let spw = self.tok.steps_per_window as u64;
        let step = self.tok.round_steps(in_ms * self.factor).unwrap_or(0);
        step.max(self.out_origin + self.out_window * spw)
    }

    fn advance_to(&mut self, step: u64) {
        let w = (step - self.out_origin) / self.tok.steps_per_window as u64;
        while self.out_window < w {
            self.out.push(TIME_SHIFT);
            self.out_window += 1;
        }
    }

    /// The onset token of output `step` (at or after the current output window's start).
    fn onset_id(&self, step: u64) -> u32 {
        let spw = self.tok.steps_per_window as u64;
        self.tok.onsets.start + ((step - self.out_origin) % spw) as u32
    }

    fn hold(&mut self, id: u32) {
        let now = self.now_ms();
        self.held.push((id, now));
    }

    fn flush_held(&mut self) {
        let held = std::mem::take(&mut self.held);
        for &(id, ms) in &held {
            self.advance_to(self.out_step(ms));
            self.out.push(id);
        }
        // Hand the buffer back so its capacity is reused.
        self.held = held;
        self.held.clear();
    }

    fn flush_frag(&mut self, frag: Frag) {
        match frag {
            Frag::None => {}
            Frag::Note(id) | Frag::Drum(id) | Frag::SectionAt { onset: id, .. } => self.hold(id),
            Frag::NoteAt { note, onset, .. } => {
                self.hold(note);
                self.hold(onset);
            }
        }
    }

    /// A complete note or drum at input onset `onset_ms` of the current window.
    fn timed(&mut self, id: u32, onset_ms: u32, dur_ms: Option<u32>) {
        self.in_last_ms = self.in_last_ms.max(onset_ms);
        let step = self.out_step(self.in_ms(onset_ms));
        self.advance_to(step);
        self.push_held();
        self.out.push(id);
        self.out.push(self.onset_id(step));
        if let Some(d) = dur_ms {
            self.out.push(self.tok.dur_id(d as f64 * self.factor));
        }
    }

    /// A body section tag after its onset (section windows): the section starts there, in the
    /// input and the output, and both time lines count from its start.
    fn section(&mut self, tag: u32, onset_ms: u32) {
        let in_start = self.in_ms(onset_ms.max(self.in_last_ms));
        if self.strip_sections {
            self.push_held();
            if let TokenKind::Section(label) = self.tok.kind(tag) {
                self.section_starts.push((self.out.len(), label));
            }
            self.in_origin_ms = in_start;
            self.in_window = 0;
            self.in_last_ms = 0;
            return;
        }
        let step = self.out_step(in_start);
        self.advance_to(step);
        self.push_held();
        self.out.push(self.onset_id(step));
        self.out.push(tag);
        self.in_origin_ms = in_start;
        self.in_window = 0;
        self.in_last_ms = 0;
        self.out_origin = step;
        self.out_window = 0;
    }

    /// Writes the held tokens at the current output position.
    fn push_held(&mut self) {
        for &(h, _) in &self.held {
            self.out.push(h);
        }
        self.held.clear();
    }

    fn reset(&mut self) {
        self.in_origin_ms = 0.0;
        self.in_window = 0;
        self.in_last_ms = 0;
        self.out_origin = 0;
        self.out_window = 0;
    }
}

impl Tokenizer {
    /// Transposes notes by `semitones`; drums and all other tokens are untouched. A note pushed
    /// outside 0..=127 is dropped together with the onset and duration that follow it.
    pub fn pitch_shift(&self, tokens: &[u32], semitones: i32) -> Vec<u32> {
        let n_levels = self.levels.len() as i64;
        let mut out = Vec::with_capacity(tokens.len());
        // 2: drop the next onset, then a duration; 1: drop the next duration.
        let mut dropping = 0u8;
        for &id in tokens {
            let kind = self.kind(id);
            match (dropping, kind) {
                (2, TokenKind::Onset { .. }) => {
                    dropping = 1;
                    continue;
                }
                (1, TokenKind::Dur { .. }) => {
                    dropping = 0;
                    continue;
                }
                _ => dropping = 0,
            }
            if let TokenKind::Note { pitch, .. } = kind {
                let p = pitch as i64 + semitones as i64;
                if (0..=127).contains(&p) {
                    out.push((id as i64 + semitones as i64 * n_levels) as u32);
                } else {
                    dropping = 2;
                }
            } else {
                out.push(id);
            }
        }
        out
    }

    /// Moves every note's velocity by `levels` velocity levels, clamped to the level range.
    pub fn velocity_shift(&self, tokens: &[u32], levels: i32) -> Vec<u32> {
        let n = self.levels.len() as i64;
        tokens
            .iter()
            .map(|&id| {
                if !self.notes.contains(&id) {
                    return id;
                }
                let lev = (id - self.notes.start) as i64 % n;
                let new = (lev + levels as i64).clamp(0, n - 1);
                (id as i64 + new - lev) as u32
            })
            .collect()
    }

    /// Plays the sequence `factor` times slower (onsets and durations times `factor`, windows and
    /// `<T>`s recomputed); every other token is kept in order. Time restarts at `<S>` and, inside
    /// the prompt, after each section tag (each snippet has its own time line); with section
    /// windows the onset before a body section tag is scaled like a note's and the next window
    /// counts from it. `<D>` keeps its place among the notes. `factor` must be in 0.25..=4.0
    /// (training composes a tempo change with doubled note values in one pass, so onsets are
    /// quantized once).
    pub fn tempo_scale(&self, tokens: &[u32], factor: f64) -> Result<Vec<u32>> {
        if !(factor.is_finite() && (0.25..=4.0).contains(&factor)) {
            return Err(Error::Tokenizer(format!(
                "tempo_scale factor {factor} is outside 0.25..=4.0"
            )));
        }
        Ok(self.rescale(tokens, factor, false).out)
    }

    /// A section-windows piece body on one continuous time line without its section tags (and
    /// their onsets), and where each section starts.
    /// What a structure recognizer reads, since the tags and the time lines restarting at them
    /// would give the sections away. `None` for a tokenizer without section windows (its body
    /// tags carry no time: dropping them is all it takes).
    pub fn strip_section_tags(&self, tokens: &[u32]) -> Option<Stripped> {
        if !self.config.section_windows {
            return None;
        }
        let s = self.rescale(tokens, 1.0, true);
        Some(Stripped {
            tokens: s.out,
            section_starts: s.section_starts,
        })
    }

    fn rescale(&self, tokens: &[u32], factor: f64, strip_sections: bool) -> Scaler<'_> {
        let mut s = Scaler {
            tok: self,
            factor,
            out: Vec::with_capacity(tokens.len() * 2),
            in_origin_ms: 0.0,
            in_window: 0,
            in_last_ms: 0,
            out_origin: 0,
            out_window: 0,
            held: Vec::new(),
            strip_sections,
            section_starts: Vec::new(),
        };
        let mut frag = Frag::None;
        let mut in_prompt = false;
        for &id in tokens {
            let kind = self.kind(id);
            match (frag, kind) {
                (Frag::Note(note), TokenKind::Onset { ms }) => {
                    frag = Frag::NoteAt {
                        note,
                        onset: id,
                        onset_ms: ms,
                    };
                    continue;
                }
                (Frag::NoteAt { note, onset_ms, .. }, TokenKind::Dur { ms }) => {
                    frag = Frag::None;
                    s.timed(note, onset_ms, Some(ms));
                    continue;
                }
                (Frag::Drum(drum), TokenKind::Onset { ms }) => {
                    frag = Frag::None;
                    s.timed(drum, ms, None);
                    continue;
                }
                (Frag::SectionAt { onset_ms, .. }, TokenKind::Section(_)) => {
                    frag = Frag::None;
                    s.section(id, onset_ms);
                    continue;
                }
                (f, _) => {
                    // A malformed fragment: keep its tokens as they are, in order.
                    s.flush_frag(f);
                    frag = Frag::None;
                }
            }
            match kind {
                TokenKind::Note { .. } => frag = Frag::Note(id),
                TokenKind::Drum { .. } => frag = Frag::Drum(id),
                TokenKind::TimeShift => {
                    s.flush_held();
                    s.in_window += 1;
                    s.in_last_ms = 0;
                }
                TokenKind::Start | TokenKind::PromptStart | TokenKind::PromptEnd => {
                    s.hold(id);
                    s.flush_held();
                    s.reset();
                    in_prompt = kind == TokenKind::PromptStart;
                }
                TokenKind::Section(_) if in_prompt => {
                    s.hold(id);
                    s.flush_held();
                    s.reset();
                }
                TokenKind::Onset { ms } if self.config.section_windows && !in_prompt => {
                    frag = Frag::SectionAt {
                        onset: id,
                        onset_ms: ms,
                    }
                }
                _ => s.hold(id),
            }
        }
        s.flush_frag(frag);
        s.flush_held();
        s
    }
}
