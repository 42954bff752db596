//! Token values: the readable form stored in `tokenizer.json` ([`Token`]) and the compact
//! per-id classification the engine reads on its real-time thread ([`TokenKind`]).

use std::fmt;
use std::str::FromStr;

use super::config::{DRUM_PITCH_MAX, DRUM_PITCH_MIN, GM_FAMILIES};
use crate::error::{Error, Result};
use crate::song::SectionLabel;

/// One vocabulary entry. `Display` and `FromStr` give the stable Aria-like strings
/// (`piano:60:80`, `drum:36`, `onset:450`, `dur:1000`, `<S>`, `form:AABA`, `style:reel`...).
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum Token {
    /// `<P>` padding.
    Pad,
    /// `<U>` unknown.
    Unknown,
    /// `<S>` start of the piece.
    Start,
    /// `<E>` end of the piece.
    End,
    /// `<D>` the piece ends soon.
    EndingSoon,
    /// `<T>` advance one time window.
    TimeShift,
    PromptStart,
    PromptEnd,
    /// `<A_SECTION>`..`<D_SECTION>`.
    Section(SectionLabel),
    /// `form:AABA`.
    Form(String),
    /// `style:reel`.
    Style(String),
    /// `piano:60:80`: instrument family name, pitch, quantized velocity.
    Note {
        instrument: String,
        pitch: u8,
        velocity: u8,
    },
    /// `drum:36`.
    Drum {
        pitch: u8,
    },
    /// `onset:450`: ms within the current window.
    Onset(u32),
    /// `dur:1000`: ms.
    Dur(u32),
}

impl fmt::Display for Token {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Token::Pad => f.write_str("<P>"),
            Token::Unknown => f.write_str("<U>"),
            Token::Start => f.write_str("<S>"),
            Token::End => f.write_str("<E>"),
            Token::EndingSoon => f.write_str("<D>"),
            Token::TimeShift => f.write_str("<T>"),
            Token::PromptStart => f.write_str("<PROMPT_START>"),
            Token::PromptEnd => f.write_str("<PROMPT_END>"),
            Token::Section(l) => write!(f, "<{l}_SECTION>"),
            Token::Form(s) => write!(f, "form:{s}"),
            Token::Style(s) => write!(f, "style:{s}"),
            Token::Note {
                instrument,
                pitch,
                velocity,
            } => write!(f, "{instrument}:{pitch}:{velocity}"),
            Token::Drum { pitch } => write!(f, "drum:{pitch}"),
            Token::Onset(ms) => write!(f, "onset:{ms}"),
            Token::Dur(ms) => write!(f, "dur:{ms}"),
        }
    }
}

impl FromStr for Token {
    type Err = Error;

    /// Parses the `Display` form. Only syntax is checked (a known family name, pitch 0..=127,
    /// velocity 1..=127, drum pitch in the drum range); whether a given tokenizer has the
    /// token is its own question (`Tokenizer::id`).
    fn from_str(s: &str) -> Result<Token> {
        let bad = |why: &str| Error::Tokenizer(format!("cannot parse token {s:?}: {why}"));
        let simple = match s {
            "<P>" => Some(Token::Pad),
            "<U>" => Some(Token::Unknown),
            "<S>" => Some(Token::Start),
            "<E>" => Some(Token::End),
            "<D>" => Some(Token::EndingSoon),
            "<T>" => Some(Token::TimeShift),
            "<PROMPT_START>" => Some(Token::PromptStart),
            "<PROMPT_END>" => Some(Token::PromptEnd),
            _ => None,
        };
        if let Some(t) = simple {
            return Ok(t);
        }
        if let Some(inner) = s
            .strip_prefix('<')
            .and_then(|r| r.strip_suffix("_SECTION>"))
        {
            let mut chars = inner.chars();
            return match (chars.next(), chars.next()) {
                (Some(c), None) if c.is_ascii_uppercase() => SectionLabel::from_letter(c)
                    .map(Token::Section)
                    .ok_or_else(|| bad("section must be A..D")),
                _ => Err(bad("section must be A..D")),
            };
        }
        let parts: Vec<&str> = s.split(':').collect();
        let num = |p: &str| p.parse::<u32>().map_err(|_| bad("expected a number"));
        match parts.as_slice() {
            ["form", f] if !f.is_empty() => Ok(Token::Form(f.to_string())),
            ["style", st] if !st.is_empty() => Ok(Token::Style(st.to_string())),
            ["onset", ms] => Ok(Token::Onset(num(ms)?)),
            ["dur", ms] => Ok(Token::Dur(num(ms)?)),
            ["drum", p] => {
                let p = num(p)?;
                if (DRUM_PITCH_MIN as u32..=DRUM_PITCH_MAX as u32).contains(&p) {
                    Ok(Token::Drum { pitch: p as u8 })
                } else {
                    Err(bad("drum pitch outside 27..=87"))
                }
            }
            [inst, p, v] if GM_FAMILIES.contains(inst) => {
                let (p, v) = (num(p)?, num(v)?);
                if p > 127 || v == 0 || v > 127 {
                    return Err(bad("pitch must be 0..=127 and velocity 1..=127"));
                }
                Ok(Token::Note {
                    instrument: inst.to_string(),
                    pitch: p as u8,
                    velocity: v as u8,
                })
            }
            _ => Err(bad("not a known token form")),
        }
    }
}

/// What an id means, as a small `Copy` value the engine can match on without touching strings.
/// `Tokenizer::kind` maps ids outside the vocabulary to `Unknown`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum TokenKind {
    /// `instrument` indexes `TokenizerConfig::instruments`; `velocity` is the level's value.
    Note {
        instrument: u8,
        pitch: u8,
        velocity: u8,
    },
    Drum {
        pitch: u8,
    },
    /// ms within the current window.
    Onset {
        ms: u32,
    },
    Dur {
        ms: u32,
    },
    TimeShift,
    Section(SectionLabel),
    Start,
    End,
    EndingSoon,
    Pad,
    Unknown,
    PromptStart,
    PromptEnd,
    /// Index into `TokenizerConfig::forms`.
    Form(u32),
    /// Index into `TokenizerConfig::styles`.
    Style(u32),
}
