//! Songs to tokens: whole pieces, prompt snippets, prompts and training examples.

use serde::{Deserialize, Serialize};

use super::{END, ENDING_SOON, START, TIME_SHIFT, TokenKind, Tokenizer};
use crate::error::{Error, Result};
use crate::prompt::Prompt;
use crate::song::{Note, SectionLabel, Song};

/// Notes and sections starting later than this (3 hours) are dropped: a corrupt time far in the
/// future would otherwise expand into millions of `<T>` tokens.
pub const MAX_PIECE_MS: f64 = 3.0 * 3600.0 * 1000.0;

/// What to put in a prompt. Snippets are token sequences as made by
/// [`Tokenizer::snippet_tokens`] / [`Tokenizer::extract_snippet`].
#[derive(Debug, Clone, Default, PartialEq)]
pub struct PromptSpec {
    pub style: Option<String>,
    pub form: Option<String>,
    pub snippets: Vec<(SectionLabel, Vec<u32>)>,
}

/// One training sequence in both model layouts.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TrainingExample {
    /// Decoder-only baseline: prompt with inline snippets, then the piece.
    pub inline: Vec<u32>,
    /// Staria decoder: prompt without snippet tokens, then the piece.
    pub decoder: Vec<u32>,
    /// Snippets for the Staria encoder, A..D order.
    pub snippets: Vec<(SectionLabel, Vec<u32>)>,
    /// The song's section letters in order (whether or not it has a form token).
    pub form: String,
}

#[derive(Debug, Clone, Copy)]
enum What {
    EndingSoon,
    Tag(SectionLabel),
    Note { id: u32, dur: u32 },
    Drum { id: u32 },
}

#[derive(Debug, Clone, Copy)]
struct Event {
    /// Unquantized time; events are sorted by it so quantized times never go backwards.
    ms: f64,
    /// Order among events at the same time: `<D>`, then section tags, then the performer
    /// instrument's notes and drums, then other instruments' notes (a two-voice piece states its
    /// melody note before the accompaniment's at the same instant, the order a live session
    /// feeds them in: the performer's note, then the model's), then a final `<D>`.
    prio: u8,
    what: What,
}

fn sort_events(events: &mut [Event]) {
    // Stable: ties keep insertion order (section order for tags, pitch order for notes).
    events.sort_by(|a, b| a.ms.total_cmp(&b.ms).then(a.prio.cmp(&b.prio)));
}

impl Tokenizer {
    /// The event of one note relative to `origin_ms`, or `None` if it has no token (drum outside
    /// the drum range or drums off, pitch > 127, non-finite or too late, or before the origin).
    fn note_event(&self, n: &Note, origin_ms: f64) -> Option<(Event, f64)> {
        let ms = n.start_ms - origin_ms;
        if !ms.is_finite() || !n.end_ms.is_finite() || ms > MAX_PIECE_MS {
            return None;
        }
        // Up to half a step before the origin rounds to onset 0; earlier is outside.
        self.round_steps(ms)?;
        let (what, prio) = if n.is_drum() {
            let id = self.drum_id(n.pitch)?;
            (What::Drum { id }, 2)
        } else {
            let inst = self.instrument_for_program(n.program);
            let what = What::Note {
                id: self.note_id(inst, n.pitch, n.velocity)?,
                dur: self.dur_id(n.duration_ms()),
            };
            let prio = if inst == self.performer_instrument() {
                2
            } else {
                3
            };
            (what, prio)
        };
        Some((
            Event {
                ms: ms.max(0.0),
                prio,
                what,
            },
            n.end_ms - origin_ms,
        ))
    }

    /// Appends events, `<T>`s included, while `out` stays within `budget`; a note and the `<T>`s
    /// before it go in whole or not at all, so truncation never splits a note or ends on `<T>`.
    /// With section windows a tag comes after its onset and starts a new window there.
    fn emit(&self, events: &[Event], out: &mut Vec<u32>, budget: usize) {
        let spw = self.steps_per_window as u64;
        let section_windows = self.config.section_windows;
        // Step (from the time line's start) where window 0 of the current section begins.
        let mut origin = 0u64;
        let mut window = 0u64;
        for ev in events {
            // Events come in time order, so only a malformed time falls before the origin.
            let step = self.round_steps(ev.ms).unwrap_or(0).max(origin);
            let w = (step - origin) / spw;
            let shifts = w.saturating_sub(window) as usize;
            let body = match ev.what {
                What::Tag(_) if section_windows => 2,
                What::EndingSoon | What::Tag(_) => 1,
                What::Note { .. } => 3,
                What::Drum { .. } => 2,
            };
            if out.len().saturating_add(shifts + body) > budget {
                break;
            }
            out.extend(std::iter::repeat_n(TIME_SHIFT, shifts));
            window = window.max(w);
            let onset = self.onsets.start + ((step - origin) % spw) as u32;
            match ev.what {
                What::EndingSoon => out.push(ENDING_SOON),
                What::Tag(l) if section_windows => {
                    out.extend([onset, self.section_id(l)]);
                    origin = step;
                    window = 0;
                }
                What::Tag(l) => out.push(self.section_id(l)),
                What::Note { id, dur } => out.extend([id, onset, dur]),
                What::Drum { id } => out.extend([id, onset]),
            }
        }
    }

    /// A whole piece: `<S>`, notes in time order with `<T>` per window crossed, a section tag
    /// for every section occurrence, `<D>` before the first note starting `ending_soon_ms`
    /// before the end, `<E>`. With section windows the tag stands at the section's start, after
    /// the onset of that start (and the next window counts from there); without, it stands
    /// before the section's first note (an empty section's tag at its start).
    pub fn encode_piece(&self, song: &Song) -> Vec<u32> {
        let mut notes = Vec::with_capacity(song.notes.len());
        let mut end_ms = f64::NEG_INFINITY;
        for n in &song.notes {
            if let Some((ev, end)) = self.note_event(n, 0.0) {
                notes.push(ev);
                end_ms = end_ms.max(end);
            }
        }
        sort_events(&mut notes);
        let mut events = notes.clone();

        let mut sections: Vec<_> = song
            .sections
            .iter()
            .filter(|s| s.start_ms.is_finite() && s.start_ms <= MAX_PIECE_MS)
            .collect();
        sections.sort_by(|a, b| a.start_ms.total_cmp(&b.start_ms));
        for s in sections {
            let i = notes.partition_point(|e| e.ms < s.start_ms);
            let ms = match notes.get(i) {
                _ if self.config.section_windows => s.start_ms.max(0.0),
                Some(e) if e.ms < s.end_ms => e.ms,
                _ => s.start_ms.max(0.0),
            };
            events.push(Event {
                ms,
                prio: 1,
                what: What::Tag(s.label),
            });
        }

        let ending = self.config.ending_soon_ms as f64;
        if !notes.is_empty() && end_ms >= ending {
            let threshold = end_ms - ending;
            let i = notes.partition_point(|e| e.ms < threshold);
            // No note starts that late (long final notes): `<D>` goes last, before `<E>`.
            let (ms, prio) = notes
                .get(i)
                .map_or((notes[notes.len() - 1].ms, 4), |e| (e.ms, 0));
            events.push(Event {
                ms,
                prio,
                what: What::EndingSoon,
            });
        }
        sort_events(&mut events);

        let mut out = Vec::with_capacity(events.len() * 3 + 2);
        out.push(START);
        self.emit(&events, &mut out, usize::MAX);
        out.push(END);
        out
    }

    /// Tokens of `notes` with times relative to `start_ms` (notes starting before it are left
    /// out), cut to at most `max_tokens` without splitting a note or ending on `<T>`.
    pub fn snippet_tokens(&self, notes: &[Note], start_ms: f64, max_tokens: usize) -> Vec<u32> {
        let mut events: Vec<Event> = notes
            .iter()
            .filter_map(|n| self.note_event(n, start_ms))
            .map(|(e, _)| e)
            .collect();
        sort_events(&mut events);
        let mut out = Vec::with_capacity(max_tokens.min(events.len() * 3 + 8));
        self.emit(&events, &mut out, max_tokens);
        out
    }

    /// The snippet of the first occurrence of `label`: the notes starting inside its span.
    /// `None` if the song has no such section.
    pub fn extract_snippet(
        &self,
        song: &Song,
        label: SectionLabel,
        max_tokens: usize,
    ) -> Option<Vec<u32>> {
        let s = song.first_section(label)?;
        Some(self.snippet_tokens(&song.section_notes(s), 0.0, max_tokens))
    }

    /// Both prompt layouts: `[style] <PROMPT_START> [form] <A_SECTION> snippet A ... <PROMPT_END>
    /// <S>` inline, and the same without snippet tokens for the Staria decoder.
    pub fn build_prompt(&self, spec: &PromptSpec) -> Result<Prompt> {
        let mut snippets = spec.snippets.clone();
        snippets.sort_by_key(|(l, _)| *l);
        if let Some(w) = snippets.windows(2).find(|w| w[0].0 == w[1].0) {
            return Err(Error::Tokenizer(format!(
                "prompt has two snippets for section {}",
                w[0].0
            )));
        }
        for (label, toks) in &snippets {
            for (pos, &id) in toks.iter().enumerate() {
                let ok = matches!(
                    self.kind(id),
                    TokenKind::Note { .. }
                        | TokenKind::Drum { .. }
                        | TokenKind::Onset { .. }
                        | TokenKind::Dur { .. }
                ) || id == TIME_SHIFT;
                if !ok {
                    return Err(Error::Tokenizer(format!(
                        "snippet for section {label}: token {id} ({}) at position {pos} cannot stand in a snippet",
                        self.token(id).map_or_else(
                            || "outside the vocabulary".to_string(),
                            |t| t.to_string()
                        )
                    )));
                }
            }
        }
        let style = match spec.style.as_deref() {
            None => None,
            Some(s) => Some(self.style_id(s).ok_or_else(|| {
                Error::Tokenizer(format!(
                    "unknown style {s:?} (known: {})",
                    self.config.styles.join(", ")
                ))
            })?),
        };
        let form = match spec.form.as_deref() {
            None => None,
            Some(f) => Some(self.form_id(f).ok_or_else(|| {
                Error::Tokenizer(format!(
                    "form {f:?} has no token (known: {})",
                    self.config.forms.join(", ")
                ))
            })?),
        };

        let mut inline = Vec::new();
        let mut decoder = Vec::new();
        let mut both = |id: u32, inline: &mut Vec<u32>| {
            inline.push(id);
            decoder.push(id);
        };
        if let Some(s) = style {
            both(s, &mut inline);
        }
        both(super::PROMPT_START, &mut inline);
        if let Some(f) = form {
            both(f, &mut inline);
        }
        for (label, toks) in &snippets {
            both(self.section_id(*label), &mut inline);
            inline.extend_from_slice(toks);
        }
        both(super::PROMPT_END, &mut inline);
        both(START, &mut inline);
        Ok(Prompt {
            inline,
            decoder,
            snippets,
        })
    }

    /// A training example: snippets of each section present (first occurrence,
    /// `config.snippet_tokens` each), the form token when the song's section letters have one,
    /// the prompt, then the piece body (the prompt already ends with `<S>`).
    pub fn encode_training(&self, song: &Song, style: Option<&str>) -> Result<TrainingExample> {
        let mut sections: Vec<_> = song
            .sections
            .iter()
            .filter(|s| s.start_ms.is_finite())
            .collect();
        sections.sort_by(|a, b| a.start_ms.total_cmp(&b.start_ms));
        let form: String = sections.iter().map(|s| s.label.letter()).collect();
        let snippets: Vec<(SectionLabel, Vec<u32>)> = SectionLabel::ALL
            .iter()
            .filter_map(|&l| {
                self.extract_snippet(song, l, self.config.snippet_tokens)
                    .map(|t| (l, t))
            })
            .collect();
        let spec = PromptSpec {
            style: style.map(str::to_string),
            form: self.form_id(&form).map(|_| form.clone()),
            snippets,
        };
        let prompt = self.build_prompt(&spec)?;
        let piece = self.encode_piece(song);
        let body = &piece[1..]; // skip the piece's own `<S>`
        let mut inline = prompt.inline;
        inline.extend_from_slice(body);
        let mut decoder = prompt.decoder;
        decoder.extend_from_slice(body);
        Ok(TrainingExample {
            inline,
            decoder,
            snippets: prompt.snippets,
            form,
        })
    }
}
