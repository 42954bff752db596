//! The Staria tokenizer: Aria's absolute-time note tokens plus sections, forms and styles.
//!
//! Id layout (deterministic from the config, so a checkpoint's `tokenizer.json` rebuilds it):
//! 12 specials (`<P>` = 0, `<U>`, `<S>`, `<E>`, `<D>`, `<T>`, `<PROMPT_START>`, `<PROMPT_END>`,
//! `<A_SECTION>`..`<D_SECTION>`), then notes (instrument-major, then pitch, then velocity level),
//! drums, onsets, durations, forms, styles. Forms and styles come last so adding a style does not
//! move any note id. Each group is a contiguous id range.
//!
//! Quantization (the documented error bounds the tests assert):
//! - onsets: nearest `time_step_ms` (error <= step/2);
//! - durations: nearest step, at least one step, capped at `max_duration_ms`;
//! - velocity: nearest level (ties go up); levels are `velocity_step, 2*velocity_step, ..<= 120`
//!   and 127, so with the default step 10 velocities 1..=4 map to 10 and the error is <= 5 for
//!   velocities >= 5.

mod augment;
mod config;
mod decode;
mod encode;
mod token;

use std::collections::HashMap;
use std::ops::Range;

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

pub use augment::Stripped;
pub use config::{
    DRUM_PITCH_MAX, DRUM_PITCH_MIN, GM_FAMILIES, MAX_VELOCITY, MAX_VOCAB, TokenizerConfig,
};
pub use decode::{DRUM_DURATION_MS, Expect, OnsetVote, SectionStart, StreamDecoder, StreamEvent};
pub use encode::{MAX_PIECE_MS, PromptSpec, TrainingExample};
pub use token::{Token, TokenKind};

use crate::error::{Error, Result};
use crate::song::SectionLabel;

const PAD: u32 = 0;
const UNKNOWN: u32 = 1;
const START: u32 = 2;
const END: u32 = 3;
const ENDING_SOON: u32 = 4;
const TIME_SHIFT: u32 = 5;
const PROMPT_START: u32 = 6;
const PROMPT_END: u32 = 7;
const SECTION_BASE: u32 = 8;
pub(crate) const N_SPECIAL: u32 = 12;

/// A vocabulary built from a [`TokenizerConfig`], with O(1) tables for the per-token calls.
#[derive(Debug, Clone)]
pub struct Tokenizer {
    config: TokenizerConfig,
    vocab: Vec<Token>,
    kinds: Vec<TokenKind>,
    ids: HashMap<Token, u32>,
    /// Velocity level values, ascending.
    levels: Vec<u8>,
    /// Velocity 0..=127 -> index into `levels`.
    level_of_velocity: [u8; 128],
    /// GM family (program / 8) -> index into `config.instruments`.
    instrument_of_family: [u8; 16],
    /// Instrument index -> first program of its family (what decoded notes get).
    program_of_instrument: Vec<u8>,
    notes: Range<u32>,
    drums: Range<u32>,
    onsets: Range<u32>,
    durs: Range<u32>,
    forms: Range<u32>,
    styles: Range<u32>,
    steps_per_window: u32,
    max_dur_steps: u32,
}

/// The on-disk form: the config plus the vocab as strings, so a reader can check that the
/// tokenizer rebuilt from the config is the one the checkpoint was trained with.
#[derive(Serialize, Deserialize)]
struct TokenizerFile {
    config: TokenizerConfig,
    vocab: Vec<String>,
}

impl Tokenizer {
    /// Builds the vocabulary from a validated config.
    pub fn new(config: TokenizerConfig) -> Result<Tokenizer> {
        config.validate()?;
        let levels = config.velocity_levels();
        let mut vocab: Vec<Token> = Vec::with_capacity(N_SPECIAL as usize);
        let mut kinds: Vec<TokenKind> = Vec::new();
        let mut push = |vocab: &mut Vec<Token>, t: Token, k: TokenKind| {
            vocab.push(t);
            kinds.push(k);
        };
        let specials = [
            (Token::Pad, TokenKind::Pad),
            (Token::Unknown, TokenKind::Unknown),
            (Token::Start, TokenKind::Start),
            (Token::End, TokenKind::End),
            (Token::EndingSoon, TokenKind::EndingSoon),
            (Token::TimeShift, TokenKind::TimeShift),
            (Token::PromptStart, TokenKind::PromptStart),
            (Token::PromptEnd, TokenKind::PromptEnd),
        ];
        for (t, k) in specials {
            push(&mut vocab, t, k);
        }
        for l in SectionLabel::ALL {
            push(&mut vocab, Token::Section(l), TokenKind::Section(l));
        }
        let len = |v: &Vec<Token>| v.len() as u32;
        let notes_start = len(&vocab);
        for (i, inst) in config.instruments.iter().enumerate() {
            for pitch in 0..=127u8 {
                for &velocity in &levels {
                    push(
                        &mut vocab,
                        Token::Note {
                            instrument: inst.clone(),
                            pitch,
                            velocity,
                        },
                        TokenKind::Note {
                            instrument: i as u8,
                            pitch,
                            velocity,
                        },
                    );
                }
            }
        }
        let notes = notes_start..len(&vocab);
        let drums_start = len(&vocab);
        if config.drums {
            for pitch in DRUM_PITCH_MIN..=DRUM_PITCH_MAX {
                push(&mut vocab, Token::Drum { pitch }, TokenKind::Drum { pitch });
            }
        }
        let drums = drums_start..len(&vocab);
        let step = config.time_step_ms;
        let onsets_start = len(&vocab);
        for k in 0..config.onset_count() as u32 {
            push(
                &mut vocab,
                Token::Onset(k * step),
                TokenKind::Onset { ms: k * step },
            );
        }
        let onsets = onsets_start..len(&vocab);
        let durs_start = len(&vocab);
        for k in 1..=config.dur_count() as u32 {
            push(
                &mut vocab,
                Token::Dur(k * step),
                TokenKind::Dur { ms: k * step },
            );
        }
        let durs = durs_start..len(&vocab);
        let forms_start = len(&vocab);
        for (i, f) in config.forms.iter().enumerate() {
            push(
                &mut vocab,
                Token::Form(f.clone()),
                TokenKind::Form(i as u32),
            );
        }
        let forms = forms_start..len(&vocab);
        let styles_start = len(&vocab);
        for (i, s) in config.styles.iter().enumerate() {
            push(
                &mut vocab,
                Token::Style(s.clone()),
                TokenKind::Style(i as u32),
            );
        }
        let styles = styles_start..len(&vocab);

        let ids: HashMap<Token, u32> = vocab
            .iter()
            .enumerate()
            .map(|(i, t)| (t.clone(), i as u32))
            .collect();
        if ids.len() != vocab.len() {
            // Cannot happen with a validated config (names are checked for duplicates); kept as a
            // guard because a duplicate would silently make id lookups ambiguous.
            return Err(Error::Tokenizer("vocabulary has duplicate tokens".into()));
        }

        let mut level_of_velocity = [0u8; 128];
        for (v, slot) in level_of_velocity.iter_mut().enumerate() {
            *slot = nearest_level(&levels, v as u8);
        }
        let mut instrument_of_family = [0u8; 16];
        let mut program_of_instrument = Vec::with_capacity(config.instruments.len());
        for (i, inst) in config.instruments.iter().enumerate() {
            // Validation guarantees the name is a family.
            let fam = GM_FAMILIES.iter().position(|f| f == inst).unwrap_or(0);
            instrument_of_family[fam] = i as u8;
            program_of_instrument.push((fam * 8) as u8);
        }

        Ok(Tokenizer {
            steps_per_window: config.window_ms / step,
            max_dur_steps: config.max_duration_ms / step,
            config,
            vocab,
            kinds,
            ids,
            levels,
            level_of_velocity,
            instrument_of_family,
            program_of_instrument,
            notes,
            drums,
            onsets,
            durs,
            forms,
            styles,
        })
    }

    pub fn config(&self) -> &TokenizerConfig {
        &self.config
    }
    pub fn vocab_size(&self) -> usize {
        self.vocab.len()
    }
    /// The token of an id, `None` outside the vocabulary.
    pub fn token(&self, id: u32) -> Option<&Token> {
        self.vocab.get(id as usize)
    }
    /// The id of a token, `None` if this vocabulary lacks it.
    pub fn id(&self, token: &Token) -> Option<u32> {
        self.ids.get(token).copied()
    }
    /// Readable form of a token sequence (ids outside the vocabulary show as `#id`), for logs.
    pub fn to_strings(&self, ids: &[u32]) -> Vec<String> {
        ids.iter()
            .map(|&i| {
                self.token(i)
                    .map_or_else(|| format!("#{i}"), |t| t.to_string())
            })
            .collect()
    }
    /// Parses token strings back to ids; the error names the first string this vocabulary lacks.
    pub fn ids_of(&self, strings: &[&str]) -> Result<Vec<u32>> {
        strings
            .iter()
            .map(|s| {
                let t: Token = s.parse()?;
                self.id(&t).ok_or_else(|| {
                    Error::Tokenizer(format!("token {s:?} is not in this vocabulary"))
                })
            })
            .collect()
    }

    pub fn pad_id(&self) -> u32 {
        PAD
    }
    pub fn unknown_id(&self) -> u32 {
        UNKNOWN
    }
    pub fn start_id(&self) -> u32 {
        START
    }
    pub fn end_id(&self) -> u32 {
        END
    }
    pub fn ending_soon_id(&self) -> u32 {
        ENDING_SOON
    }
    pub fn time_shift_id(&self) -> u32 {
        TIME_SHIFT
    }
    pub fn prompt_start_id(&self) -> u32 {
        PROMPT_START
    }
    pub fn prompt_end_id(&self) -> u32 {
        PROMPT_END
    }
    pub fn section_id(&self, label: SectionLabel) -> u32 {
        SECTION_BASE + label.index() as u32
    }
    /// The form's id after normalising it (upper case; letters past D fold to D, so "ABCDE" is
    /// looked up as "ABCDD"); `None` if it has a non-letter or is not in the config's forms.
    pub fn form_id(&self, form: &str) -> Option<u32> {
        let norm = normalize_form(form)?;
        let i = self.config.forms.iter().position(|f| *f == norm)?;
        Some(self.forms.start + i as u32)
    }
    pub fn style_id(&self, style: &str) -> Option<u32> {
        let i = self.config.styles.iter().position(|s| s == style)?;
        Some(self.styles.start + i as u32)
    }

    /// What an id means; ids outside the vocabulary are `Unknown`. O(1), no allocation.
    #[inline]
    pub fn kind(&self, id: u32) -> TokenKind {
        self.kinds
            .get(id as usize)
            .copied()
            .unwrap_or(TokenKind::Unknown)
    }
    pub fn note_ids(&self) -> Range<u32> {
        self.notes.clone()
    }
    pub fn drum_ids(&self) -> Range<u32> {
        self.drums.clone()
    }
    pub fn onset_ids(&self) -> Range<u32> {
        self.onsets.clone()
    }
    pub fn dur_ids(&self) -> Range<u32> {
        self.durs.clone()
    }
    pub fn form_ids(&self) -> Range<u32> {
        self.forms.clone()
    }
    pub fn style_ids(&self) -> Range<u32> {
        self.styles.clone()
    }
    /// The velocity level values, ascending.
    pub fn velocity_levels(&self) -> &[u8] {
        &self.levels
    }
    /// Nearest velocity level (ties go up; values above 127 count as 127).
    #[inline]
    pub fn quantize_velocity(&self, velocity: u8) -> u8 {
        self.levels[self.level_of_velocity[velocity.min(127) as usize] as usize]
    }
    /// The instrument index a General MIDI program folds to.
    #[inline]
    pub fn instrument_for_program(&self, program: u8) -> u8 {
        self.instrument_of_family[(program.min(127) / 8) as usize]
    }
    /// The program decoded notes of an instrument get (its family's first program).
    pub fn program_for_instrument(&self, instrument: u8) -> u8 {
        self.program_of_instrument
            .get(instrument as usize)
            .copied()
            .unwrap_or(0)
    }
    /// The instrument a live performer's notes are encoded as: always the first listed one
    /// (index 0, "piano" in every shipped config), whatever program the incoming MIDI has. In a
    /// two-voice layout it is the melody (the chorales' soprano).
    pub fn performer_instrument(&self) -> u8 {
        0
    }
    /// The instrument of the accompanying voice when the vocabulary has one: the second listed
    /// instrument (in the two-voice layout `["piano", "bass"]`, the chorales' bass). `None` for a
    /// one-instrument vocabulary, whose accompaniment is its one stream limited to a pitch range.
    /// The single source of truth for which instrument is whose (the engine's live modes, the
    /// CLI's `info`); instruments past the second are neither voice's.
    pub fn accompaniment_instrument(&self) -> Option<u8> {
        (self.config.instruments.len() >= 2).then_some(1)
    }
    /// The note ids of one instrument (every pitch and velocity level); empty for an unknown
    /// instrument index.
    pub fn instrument_note_ids(&self, instrument: u8) -> Range<u32> {
        if instrument as usize >= self.config.instruments.len() {
            return self.notes.end..self.notes.end;
        }
        let per = 128 * self.levels.len() as u32;
        let start = self.notes.start + instrument as u32 * per;
        start..start + per
    }
    /// Note token id; `velocity` is any MIDI velocity (quantized here). `None` for an unknown
    /// instrument index or pitch > 127. O(1).
    #[inline]
    pub fn note_id(&self, instrument: u8, pitch: u8, velocity: u8) -> Option<u32> {
        if instrument as usize >= self.config.instruments.len() || pitch > 127 {
            return None;
        }
        let lev = self.level_of_velocity[velocity.min(127) as usize] as u32;
        let n = self.levels.len() as u32;
        Some(self.notes.start + (instrument as u32 * 128 + pitch as u32) * n + lev)
    }
    /// Drum token id; `None` when drums are off or the pitch has no token.
    #[inline]
    pub fn drum_id(&self, pitch: u8) -> Option<u32> {
        if !(DRUM_PITCH_MIN..=DRUM_PITCH_MAX).contains(&pitch) || self.drums.is_empty() {
            return None;
        }
        Some(self.drums.start + (pitch - DRUM_PITCH_MIN) as u32)
    }
    /// Onset token for a time within the window (rounded to the step); `None` past the window.
    #[inline]
    pub fn onset_id(&self, ms_in_window: f64) -> Option<u32> {
        let step = self.round_steps(ms_in_window)?;
        (step < self.steps_per_window as u64).then(|| self.onsets.start + step as u32)
    }
    /// Duration token for a length in ms: nearest step, at least one, capped. Non-finite or
    /// negative lengths give the shortest duration.
    #[inline]
    pub fn dur_id(&self, ms: f64) -> u32 {
        let steps = self
            .round_steps(ms)
            .unwrap_or(1)
            .clamp(1, self.max_dur_steps as u64) as u32;
        self.durs.start + steps - 1
    }
    /// The onset ids a grammar-following model may emit now (onsets never go back in a window).
    #[inline]
    pub fn allowed_onset_ids(&self, decoder: &StreamDecoder) -> Range<u32> {
        let from = decoder.min_onset_ms() / self.config.time_step_ms;
        (self.onsets.start + from.min(self.steps_per_window))..self.onsets.end
    }

    /// `tokenizer.json`: the config plus the vocabulary as strings.
    pub fn to_json(&self) -> String {
        let file = TokenizerFile {
            config: self.config.clone(),
            vocab: self.vocab.iter().map(|t| t.to_string()).collect(),
        };
        serde_json::to_string_pretty(&file)
            .expect("a struct of strings, integers and bools always serializes to JSON")
    }

    /// Rebuilds the tokenizer from the stored config and checks it against the stored vocabulary;
    /// the error names the first token that differs.
    pub fn from_json(json: &str) -> Result<Tokenizer> {
        let file: TokenizerFile = serde_json::from_str(json)
            .map_err(|e| Error::Tokenizer(format!("tokenizer.json: {e}")))?;
        let tok = Tokenizer::new(file.config)?;
        for (i, stored) in file.vocab.iter().enumerate() {
            let built = tok.vocab.get(i).map(|t| t.to_string());
            if built.as_deref() != Some(stored.as_str()) {
                return Err(Error::Tokenizer(format!(
                    "tokenizer.json: stored token {i} is {stored:?} but the config builds {}",
                    built.map_or_else(
                        || "nothing (vocabulary is shorter)".to_string(),
                        |b| format!("{b:?}")
                    )
                )));
            }
        }
        if file.vocab.len() != tok.vocab.len() {
            return Err(Error::Tokenizer(format!(
                "tokenizer.json: stored vocabulary has {} tokens but the config builds {}; first missing: {:?}",
                file.vocab.len(),
                tok.vocab.len(),
                tok.vocab
                    .get(file.vocab.len())
                    .map(|t| t.to_string())
                    .unwrap_or_default()
            )));
        }
        Ok(tok)
    }

    /// sha256 (hex) of the vocabulary strings, one per line, and of the layout when it has
    /// section windows; checkpoints store it to detect a tokenizer change.
    pub fn hash(&self) -> String {
        let mut h = Sha256::new();
        for t in &self.vocab {
            h.update(t.to_string().as_bytes());
            h.update(b"\n");
        }
        // The layout is part of what a model learnt to read; tokenizers from before the
        // setting existed (and without it) keep their hash.
        if self.config.section_windows {
            h.update(b"layout: section_windows\n");
        }
        h.finalize().iter().map(|b| format!("{b:02x}")).collect()
    }

    /// Rounds ms to whole time steps; `None` for negative-beyond-half-step or non-finite input.
    #[inline]
    fn round_steps(&self, ms: f64) -> Option<u64> {
        let s = (ms / self.config.time_step_ms as f64).round();
        // The upper bound keeps the cast exact; callers bound times far below it.
        (0.0..1e15).contains(&s).then_some(s as u64)
    }
    fn window_ms(&self) -> u32 {
        self.config.window_ms
    }
}

/// Nearest level to `v`, ties going to the higher level; velocity 0 counts as 1.
fn nearest_level(levels: &[u8], v: u8) -> u8 {
    let v = v.max(1) as i32;
    let mut best = 0usize;
    for (i, &l) in levels.iter().enumerate() {
        if (l as i32 - v).abs() <= (levels[best] as i32 - v).abs() {
            best = i;
        }
    }
    best as u8
}

/// Upper-cases a form and folds letters past D to D; `None` if it is empty or has a non-letter.
pub fn normalize_form(form: &str) -> Option<String> {
    if form.is_empty() {
        return None;
    }
    form.chars()
        .map(|c| match c.to_ascii_uppercase() {
            c @ 'A'..='D' => Some(c),
            'E'..='Z' => Some('D'),
            _ => None,
        })
        .collect()
}

#[cfg(test)]
mod tests;
