//! Form-aware synthetic pieces: real sections laid end to end in a chosen form, so the section
//! labels of the result are known exactly (the recognizer's and the form-following generator's
//! ground truth). Deterministic given the rng.
//!
//! Each distinct letter of the form gets the material of one real section: the base piece's
//! distinct sections in order (its A for the form's A, its B for B...), and for letters the base
//! piece lacks, a random section of another piece from the same collection when there is one.
//! Every occurrence of a letter repeats its material verbatim, as a written-out repeat would.

use rand::Rng;
use rand::seq::IndexedRandom;
use staria_models::{Note, Section, SectionLabel, Song, TempoChange, TimeSignature};

/// The forms the synthetic set covers.
pub const FORMS: [&str; 8] = ["AB", "ABC", "ABA", "ABAB", "ABAC", "ABCA", "ABCB", "ABCD"];

/// Sections shorter than this, or with fewer than [`MIN_SECTION_NOTES`] notes, are not used.
pub const MIN_SECTION_MS: f64 = 2_000.0;
pub const MIN_SECTION_NOTES: usize = 4;
/// Longer sections are cut to their first this-many ms, so a synthetic piece stays trainable.
pub const MAX_SECTION_MS: f64 = 30_000.0;

/// Synthetic songs use 120 bpm at 480 ticks per quarter (0.96 ticks per ms).
const TICKS_PER_MS: f64 = 0.96;

/// One usable section: its notes with times relative to its start, and its length.
#[derive(Debug, Clone)]
pub struct Material {
    pub notes: Vec<Note>,
    pub len_ms: f64,
    /// Where it came from ("bach/x.mid:B"), for the synthetic piece's provenance.
    pub origin: String,
}

/// The materials of one real piece, one per distinct section label (first occurrence), A..D.
#[derive(Debug, Clone)]
pub struct SourcePiece {
    pub id: String,
    pub source: String,
    pub style: Option<String>,
    pub materials: Vec<Material>,
}

impl SourcePiece {
    /// Extracts the usable sections of `song`; `None` if it has none.
    pub fn from_song(id: &str, source: &str, style: Option<&str>, song: &Song) -> Option<Self> {
        let mut materials = Vec::new();
        for label in SectionLabel::ALL {
            let Some(sec) = song
                .sections
                .iter()
                .filter(|s| s.label == label)
                .min_by(|a, b| a.start_ms.total_cmp(&b.start_ms))
            else {
                continue;
            };
            if let Some(m) = material(song, sec, &format!("{id}:{label}")) {
                materials.push(m);
            }
        }
        (!materials.is_empty()).then(|| SourcePiece {
            id: id.to_string(),
            source: source.to_string(),
            style: style.map(str::to_string),
            materials,
        })
    }
}

fn material(song: &Song, sec: &Section, origin: &str) -> Option<Material> {
    let len_ms = (sec.end_ms - sec.start_ms).min(MAX_SECTION_MS);
    if len_ms.is_nan() || len_ms < MIN_SECTION_MS {
        return None;
    }
    let notes: Vec<Note> = song
        .notes
        .iter()
        .filter(|n| n.start_ms >= sec.start_ms && n.start_ms < sec.start_ms + len_ms)
        .map(|n| {
            let start = n.start_ms - sec.start_ms;
            // Notes held past the section end are cut there, so sections never overlap.
            let end = (n.end_ms - sec.start_ms).min(len_ms).max(start + 10.0);
            Note {
                start_ms: start,
                end_ms: end,
                ..*n
            }
        })
        .collect();
    (notes.len() >= MIN_SECTION_NOTES).then(|| Material {
        notes,
        len_ms,
        origin: origin.to_string(),
    })
}

/// A synthetic piece.
#[derive(Debug, Clone)]
pub struct SynthPiece {
    pub song: Song,
    pub form: String,
    pub source: String,
    pub style: Option<String>,
    /// The material of each distinct letter, A..
    pub origins: Vec<String>,
}

/// Lays real sections out in `form` (letters A..D, starting with A). `None` without sources.
pub fn assemble(pool: &[SourcePiece], form: &str, rng: &mut impl Rng) -> Option<SynthPiece> {
    let letters: Vec<SectionLabel> = form.chars().filter_map(SectionLabel::from_letter).collect();
    let distinct = letters.iter().map(|l| l.index()).max()? + 1;
    let base = pool.choose(rng)?;
    let mut chosen: Vec<&Material> = base.materials.iter().take(distinct).collect();
    let same_source: Vec<&SourcePiece> = pool
        .iter()
        .filter(|p| p.source == base.source && p.id != base.id)
        .collect();
    let others: Vec<&SourcePiece> = pool.iter().filter(|p| p.id != base.id).collect();
    while chosen.len() < distinct {
        let donors = if same_source.is_empty() {
            &others
        } else {
            &same_source
        };
        let donor = donors.choose(rng).copied().unwrap_or(base);
        let m = donor.materials.choose(rng)?;
        chosen.push(m);
    }

    let mut notes = Vec::new();
    let mut sections = Vec::new();
    let mut t = 0.0f64;
    for &l in &letters {
        let m = chosen[l.index()];
        for n in &m.notes {
            let (s, e) = (n.start_ms + t, n.end_ms + t);
            notes.push(Note {
                start_ms: s,
                end_ms: e,
                start_tick: ticks(s),
                end_tick: ticks(e),
                ..*n
            });
        }
        sections.push(Section {
            label: l,
            marker_text: l.to_string(),
            start_tick: ticks(t),
            end_tick: ticks(t + m.len_ms),
            start_ms: t,
            end_ms: t + m.len_ms,
        });
        t += m.len_ms;
    }
    notes.sort_by_key(|a| (a.start_tick, a.pitch));
    let song = Song {
        ticks_per_quarter: 480,
        tempo_map: vec![TempoChange {
            tick: 0,
            us_per_quarter: 500_000,
        }],
        time_signatures: vec![TimeSignature {
            tick: 0,
            numerator: 4,
            denominator: 4,
        }],
        notes,
        sections,
    };
    Some(SynthPiece {
        song,
        form: form.to_string(),
        source: base.source.clone(),
        style: base.style.clone(),
        origins: chosen.iter().map(|m| m.origin.clone()).collect(),
    })
}

fn ticks(ms: f64) -> u64 {
    (ms * TICKS_PER_MS).round().max(0.0) as u64
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::music::tests::{bar, song_from_beats};
    use rand::SeedableRng;
    use rand::rngs::StdRng;

    fn labelled(pitch: u8, id: &str) -> SourcePiece {
        // Two 2-bar sections (4 s each at 120 bpm): A on `pitch`, B a fifth up.
        let mut notes = bar([pitch; 4], 0);
        notes.extend(bar([pitch + 2; 4], 1));
        notes.extend(bar([pitch + 7; 4], 2));
        notes.extend(bar([pitch + 9; 4], 3));
        let mut song = song_from_beats(&notes);
        let sec = |label, b0: u64, b1: u64| Section {
            label,
            marker_text: label.to_string(),
            start_tick: b0 * 1920,
            end_tick: b1 * 1920,
            start_ms: b0 as f64 * 2000.0,
            end_ms: b1 as f64 * 2000.0,
        };
        song.sections = vec![sec(SectionLabel::A, 0, 2), sec(SectionLabel::B, 2, 4)];
        SourcePiece::from_song(id, "test", Some("folk_song"), &song).unwrap()
    }

    #[test]
    fn forms_are_laid_out_exactly_and_deterministically() {
        let pool = vec![
            labelled(60, "a.mid"),
            labelled(48, "b.mid"),
            labelled(72, "c.mid"),
        ];
        for form in FORMS {
            let a = assemble(&pool, form, &mut StdRng::seed_from_u64(3)).unwrap();
            let b = assemble(&pool, form, &mut StdRng::seed_from_u64(3)).unwrap();
            assert_eq!(a.song, b.song, "not deterministic for {form}");
            let got: String = a.song.sections.iter().map(|s| s.label.letter()).collect();
            assert_eq!(got, form);
            assert_eq!(
                a.origins.len(),
                form.chars().max().unwrap() as usize - 'A' as usize + 1
            );
            // Every occurrence of a letter holds the same notes (shifted in time).
            for l in SectionLabel::ALL {
                let occ: Vec<&Section> = a.song.sections.iter().filter(|s| s.label == l).collect();
                let content = |s: &Section| -> Vec<(u8, i64)> {
                    a.song
                        .section_notes(s)
                        .iter()
                        .map(|n| (n.pitch, n.start_ms.round() as i64))
                        .collect()
                };
                for w in occ.windows(2) {
                    assert_eq!(content(w[0]), content(w[1]));
                }
            }
            // Sections tile the piece without gaps.
            for w in a.song.sections.windows(2) {
                assert_eq!(w[0].end_ms, w[1].start_ms);
            }
        }
    }

    #[test]
    fn short_sections_are_not_material() {
        let song = song_from_beats(&bar([60, 62, 64, 65], 0));
        let mut s = song.clone();
        s.sections = vec![Section {
            label: SectionLabel::A,
            marker_text: "A".into(),
            start_tick: 0,
            end_tick: 480,
            start_ms: 0.0,
            end_ms: 500.0,
        }];
        assert!(SourcePiece::from_song("x", "t", None, &s).is_none());
    }
}
