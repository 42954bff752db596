//! Tokens to notes. [`StreamDecoder`] is the one grammar: the engine feeds it token by token on
//! its real-time thread, and [`Tokenizer::decode`] runs the same machine over a whole sequence,
//! so streamed and batch decoding agree by construction.

use super::{START, TokenKind, Tokenizer};
use crate::song::{Note, Section, SectionLabel, Song};

/// Length given to decoded drum hits (drum tokens carry no duration).
pub const DRUM_DURATION_MS: f64 = 100.0;

/// Decoded songs use 120 bpm at 480 ticks per quarter: 0.96 ticks per ms.
const TICKS_PER_QUARTER: u16 = 480;
const US_PER_QUARTER: u32 = 500_000;
const TICKS_PER_MS: f64 = 0.96;

/// What the next token must be for the sequence to stay well formed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Expect {
    /// Anything but an onset or a duration.
    Any,
    /// An onset at or after `StreamDecoder::min_onset_ms`.
    Onset,
    /// A duration.
    Dur,
}

/// How a sampled onset reads for the note (or drum) waiting for it: the one rule the engine's
/// `ConstrainedDecoder` and the trainer's evaluation sampler share (see
/// [`StreamDecoder::onset_vote`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OnsetVote {
    /// At or after the window's last onset: the note starts there.
    Here,
    /// Before the window's last onset. Onsets never go back within a window, so the model is
    /// placing the note in a later window without having said `<T>` first: read it as a vote
    /// for `<T>`. The sampler takes the note token back ([`StreamDecoder::retract_pending`] and
    /// one position of the KV cache), feeds `<T>`, feeds the note token again and samples its
    /// onset in the new window. (Moving the note to the window's last onset instead, as a plain
    /// mask does, piles notes up at the window's end.)
    NextWindow,
}

/// A decoded event.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum StreamEvent {
    /// A complete note; `instrument` indexes the config's instruments (0 for drums). Drum tokens
    /// carry no velocity, so drums come out at the level nearest 100.
    Note {
        pitch: u8,
        velocity: u8,
        instrument: u8,
        drum: bool,
        start_ms: f64,
        dur_ms: f64,
    },
    Section(SectionLabel),
    EndingSoon,
    End,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
enum Pending {
    #[default]
    Free,
    Note {
        instrument: u8,
        pitch: u8,
        velocity: u8,
    },
    NoteAt {
        instrument: u8,
        pitch: u8,
        velocity: u8,
        onset_ms: u32,
    },
    Drum {
        pitch: u8,
    },
    /// A body onset with no note before it (section windows): a section starts there if a
    /// section tag follows.
    SectionAt {
        onset_ms: u32,
    },
}

/// Token-by-token decoder state: no heap, `Copy`, O(1) per token.
/// Malformed input never fails: a note whose onset or duration does not follow is dropped and the
/// offending token is read afresh; stray onsets and durations are ignored; `<S>` starts over.
/// Between `<PROMPT_START>` and `<PROMPT_END>`/`<S>` the grammar is tracked the same way, each
/// section tag restarting the time line (snippet times are relative), but no events are emitted:
/// snippet notes are not part of the piece.
///
/// With [`section_windows`](super::TokenizerConfig::section_windows) a body section tag comes
/// right after the onset where the section starts (`onset:k <B_SECTION>`, so the tag is
/// followed by the section's notes as a snippet's tag is in the prompt); a new window begins
/// at that time. An onset that no tag follows is dropped like a stray onset; a tag with no
/// onset before it starts its section at the current time without moving the window.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct StreamDecoder {
    /// Piece time (ms) where the current window starts: `<T>`s and section starts so far.
    window_start_ms: u32,
    last_onset_ms: u32,
    pending: Pending,
    in_prompt: bool,
}

impl StreamDecoder {
    pub fn new() -> Self {
        Self::default()
    }

    /// Feeds one token; returns an event when one is complete.
    #[inline]
    pub fn push(&mut self, tok: &Tokenizer, id: u32) -> Option<StreamEvent> {
        let ev = self.step(tok, id);
        if self.in_prompt { None } else { ev }
    }

    fn step(&mut self, tok: &Tokenizer, id: u32) -> Option<StreamEvent> {
        let kind = tok.kind(id);
        match (self.pending, kind) {
            (
                Pending::Note {
                    instrument,
                    pitch,
                    velocity,
                },
                TokenKind::Onset { ms },
            ) => {
                self.see_onset(ms);
                self.pending = Pending::NoteAt {
                    instrument,
                    pitch,
                    velocity,
                    onset_ms: ms,
                };
                None
            }
            (
                Pending::NoteAt {
                    instrument,
                    pitch,
                    velocity,
                    onset_ms,
                },
                TokenKind::Dur { ms },
            ) => {
                self.pending = Pending::Free;
                Some(StreamEvent::Note {
                    pitch,
                    velocity,
                    instrument,
                    drum: false,
                    start_ms: self.time_of(onset_ms),
                    dur_ms: ms as f64,
                })
            }
            (Pending::SectionAt { onset_ms }, TokenKind::Section(label)) => {
                // Monotone like a note's onset: a section never starts before the latest note.
                let start = self.window_start_ms + onset_ms.max(self.last_onset_ms);
                self.pending = Pending::Free;
                self.window_start_ms = start;
                self.last_onset_ms = 0;
                Some(StreamEvent::Section(label))
            }
            (Pending::Drum { pitch }, TokenKind::Onset { ms }) => {
                self.see_onset(ms);
                self.pending = Pending::Free;
                Some(StreamEvent::Note {
                    pitch,
                    velocity: tok.quantize_velocity(100),
                    instrument: 0,
                    drum: true,
                    start_ms: self.time_of(ms),
                    dur_ms: DRUM_DURATION_MS,
                })
            }
            (_, kind) => {
                // Either nothing was pending or the pending note is malformed: drop it.
                self.pending = Pending::Free;
                self.free(tok, kind)
            }
        }
    }

    fn free(&mut self, tok: &Tokenizer, kind: TokenKind) -> Option<StreamEvent> {
        match kind {
            TokenKind::Note {
                instrument,
                pitch,
                velocity,
            } => {
                self.pending = Pending::Note {
                    instrument,
                    pitch,
                    velocity,
                };
                None
            }
            TokenKind::Drum { pitch } => {
                self.pending = Pending::Drum { pitch };
                None
            }
            TokenKind::TimeShift => {
                self.window_start_ms = self.window_start_ms.saturating_add(tok.window_ms());
                self.last_onset_ms = 0;
                None
            }
            TokenKind::Section(_) if self.in_prompt => {
                self.restart_time();
                None
            }
            TokenKind::Onset { ms } if tok.config().section_windows && !self.in_prompt => {
                self.pending = Pending::SectionAt { onset_ms: ms };
                None
            }
            TokenKind::Section(l) => Some(StreamEvent::Section(l)),
            TokenKind::EndingSoon => Some(StreamEvent::EndingSoon),
            TokenKind::End => Some(StreamEvent::End),
            TokenKind::Start | TokenKind::PromptEnd => {
                *self = Self::default();
                None
            }
            TokenKind::PromptStart => {
                *self = Self {
                    in_prompt: true,
                    ..Self::default()
                };
                None
            }
            _ => None,
        }
    }

    fn restart_time(&mut self) {
        self.window_start_ms = 0;
        self.last_onset_ms = 0;
    }

    fn see_onset(&mut self, ms: u32) {
        // Monotone even on malformed (backwards) input, so the mask never re-opens the past.
        self.last_onset_ms = self.last_onset_ms.max(ms);
    }

    fn time_of(&self, onset_ms: u32) -> f64 {
        self.window_start_ms as f64 + onset_ms as f64
    }

    /// What the next token must be.
    #[inline]
    pub fn expects(&self) -> Expect {
        match self.pending {
            Pending::Free => Expect::Any,
            Pending::Note { .. } | Pending::Drum { .. } => Expect::Onset,
            // Only a section tag completes it; generation forces both, so nothing is sampled
            // here.
            Pending::SectionAt { .. } => Expect::Any,
            Pending::NoteAt { .. } => Expect::Dur,
        }
    }

    /// Whether `id` fits the note grammar now: an onset right after a note or drum token, a
    /// duration right after a note's onset, and neither anywhere else. (Any onset fits at
    /// `Expect::Onset`; one before [`min_onset_ms`](Self::min_onset_ms) is read by
    /// [`onset_vote`](Self::onset_vote).)
    pub fn fits(&self, tok: &Tokenizer, id: u32) -> bool {
        let kind = tok.kind(id);
        match self.expects() {
            Expect::Onset => matches!(kind, TokenKind::Onset { .. }),
            Expect::Dur => matches!(kind, TokenKind::Dur { .. }),
            Expect::Any => !matches!(kind, TokenKind::Onset { .. } | TokenKind::Dur { .. }),
        }
    }

    /// How the onset `id`, sampled for the pending note or drum, is read (see [`OnsetVote`]).
    /// Anything but an onset reads as `Here` (it is not an onset vote).
    #[inline]
    pub fn onset_vote(&self, tok: &Tokenizer, id: u32) -> OnsetVote {
        match tok.kind(id) {
            TokenKind::Onset { ms } if ms < self.last_onset_ms => OnsetVote::NextWindow,
            _ => OnsetVote::Here,
        }
    }

    /// Takes back the pending note or drum token (`Expect::Onset` becomes `Expect::Any`), as if
    /// it had not been fed, so that a `<T>` can go before it. `false`, changing nothing, when no
    /// note or drum token is pending.
    pub fn retract_pending(&mut self) -> bool {
        match self.pending {
            Pending::Note { .. } | Pending::Drum { .. } => {
                self.pending = Pending::Free;
                true
            }
            Pending::Free | Pending::NoteAt { .. } | Pending::SectionAt { .. } => false,
        }
    }

    /// Earliest onset (ms within the window) the next note may have.
    #[inline]
    pub fn min_onset_ms(&self) -> u32 {
        self.last_onset_ms
    }

    /// Piece time (ms) where the current window starts: `<T>` count times the window length,
    /// plus, with section windows, the section starts on the way. Onsets count from here.
    #[inline]
    pub fn window_start_ms(&self) -> u32 {
        self.window_start_ms
    }

    /// Whether a section start's onset waits for its tag (section windows only).
    pub fn section_pending(&self) -> bool {
        matches!(self.pending, Pending::SectionAt { .. })
    }

    /// Whether the tokens read so far end inside a prompt (after `<PROMPT_START>`, before
    /// `<PROMPT_END>` or `<S>`).
    pub fn in_prompt(&self) -> bool {
        self.in_prompt
    }

    /// The time of the latest event: window start plus the latest onset in it.
    #[inline]
    pub fn now_ms(&self) -> f64 {
        self.time_of(self.last_onset_ms)
    }
}

/// The tokens that start a section at a given time, in feeding order (see
/// [`Tokenizer::section_start`]): `<T>`s, the start's onset (section windows only), the tag.
/// `Copy` and heap-free, so a generator can walk it on its real-time thread.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SectionStart {
    time_shift: u32,
    time_shifts: u32,
    onset: Option<u32>,
    tag: Option<u32>,
}

impl Iterator for SectionStart {
    type Item = u32;

    fn next(&mut self) -> Option<u32> {
        if self.time_shifts > 0 {
            self.time_shifts -= 1;
            return Some(self.time_shift);
        }
        self.onset.take().or_else(|| self.tag.take())
    }
}

fn ticks(ms: f64) -> u64 {
    (ms * TICKS_PER_MS).round().max(0.0) as u64
}

impl Tokenizer {
    /// The tokens that start section `label` at `start_ms` (piece time, not before the latest
    /// note) after the grammar state `dec`, as training data has them: `<T>`s to the window
    /// holding the start, then with section windows the start's onset (`onset:k <X_SECTION>`)
    /// and the tag; without, the tag alone. The one rule the engine and the evaluation sampler
    /// force sections by.
    pub fn section_start(
        &self,
        dec: &StreamDecoder,
        label: SectionLabel,
        start_ms: f64,
    ) -> SectionStart {
        let window_ms = self.window_ms() as f64;
        let mut window_start = dec.window_start_ms() as f64;
        let mut latest = dec.min_onset_ms() as f64;
        let mut time_shifts = 0;
        while window_start + window_ms <= start_ms {
            window_start += window_ms;
            latest = 0.0;
            time_shifts += 1;
        }
        let onset = self.config.section_windows.then(|| {
            self.onset_id((start_ms - window_start).max(latest))
                .unwrap_or(self.onsets.end - 1)
        });
        SectionStart {
            time_shift: super::TIME_SHIFT,
            time_shifts,
            onset,
            tag: Some(self.section_id(label)),
        }
    }

    fn make_note(&self, ev: StreamEvent) -> Option<Note> {
        let StreamEvent::Note {
            pitch,
            velocity,
            instrument,
            drum,
            start_ms,
            dur_ms,
        } = ev
        else {
            return None;
        };
        let end_ms = start_ms + dur_ms;
        Some(Note {
            pitch,
            velocity,
            channel: if drum { 9 } else { 0 },
            program: if drum {
                0
            } else {
                self.program_for_instrument(instrument)
            },
            start_tick: ticks(start_ms),
            end_tick: ticks(end_ms),
            start_ms,
            end_ms,
        })
    }

    /// Decodes any id sequence into a song; never fails. With a `<S>` the piece after the first
    /// one is decoded (a prompt before it is skipped), otherwise the whole sequence; decoding
    /// stops at `<E>`. Sections start at the onset before their tag with section windows; without, at the
    /// next note after their tag (or at the current time when another tag or the end comes
    /// first). Each ends where the next section starts.
    pub fn decode(&self, tokens: &[u32]) -> Song {
        let from = tokens.iter().position(|&t| t == START).map_or(0, |p| p + 1);
        let mut dec = StreamDecoder::new();
        let mut notes = Vec::new();
        let mut tags: Vec<(SectionLabel, f64)> = Vec::new();
        let mut awaiting_note: Option<usize> = None;
        for &id in &tokens[from..] {
            match dec.push(self, id) {
                Some(ev @ StreamEvent::Note { start_ms, .. }) => {
                    if let Some(i) = awaiting_note.take() {
                        tags[i].1 = start_ms;
                    }
                    notes.extend(self.make_note(ev));
                }
                Some(StreamEvent::Section(l)) => {
                    // With section windows the onset before the tag is the section start;
                    // without, the section starts at its next note.
                    if !self.config.section_windows {
                        awaiting_note = Some(tags.len());
                    }
                    tags.push((l, dec.now_ms()));
                }
                Some(StreamEvent::End) => break,
                Some(StreamEvent::EndingSoon) | None => {}
            }
        }
        // The Song contract: sorted by (start_tick, pitch).
        notes.sort_by(|a, b| {
            (a.start_tick, a.pitch)
                .cmp(&(b.start_tick, b.pitch))
                .then(a.start_ms.total_cmp(&b.start_ms))
        });
        let piece_end = notes.iter().map(|n| n.end_ms).fold(dec.now_ms(), f64::max);
        tags.sort_by(|a, b| a.1.total_cmp(&b.1));
        let sections = (0..tags.len())
            .map(|i| {
                let (label, start_ms) = tags[i];
                let end_ms = tags.get(i + 1).map_or(piece_end, |t| t.1).max(start_ms);
                Section {
                    label,
                    marker_text: label.to_string(),
                    start_tick: ticks(start_ms),
                    end_tick: ticks(end_ms),
                    start_ms,
                    end_ms,
                }
            })
            .collect();
        Song::with_fixed_tempo(TICKS_PER_QUARTER, US_PER_QUARTER, notes, sections)
    }

    /// Notes of a prompt snippet (times relative to the snippet start); never fails.
    pub fn decode_snippet(&self, tokens: &[u32]) -> Vec<Note> {
        let mut dec = StreamDecoder::new();
        tokens
            .iter()
            .filter_map(|&id| dec.push(self, id))
            .filter_map(|ev| self.make_note(ev))
            .collect()
    }
}
