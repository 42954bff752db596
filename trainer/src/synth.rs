//! Form-aware synthetic pieces: real sections laid end to end in a chosen form, so the section
//! labels of the result are known exactly (the recognizer's and the form-following generator's
//! ground truth). Deterministic given the rng.
//!
//! # Material
//! Each distinct letter of the form gets the material of one real section: the base piece's
//! distinct sections in order (its A for the form's A, its B for B...), and for letters the base
//! piece lacks, a section of another piece: of the same collection when there is one, and of
//! the base piece's mode (major or minor, [`estimate_key`]) when such a donor exists. A
//! borrowed section is fitted to the base piece: transposed so its estimated tonic is the base
//! piece's (by the smaller interval, -6..=+5 semitones, then octaves to stay in MIDI range), and
//! re-timed so its beat is the base piece's (its times scaled by base quarter / donor quarter;
//! cut again at [`MAX_SECTION_MS`]).
//!
//! # Repeats
//! The first occurrence of a letter plays its material as it is. Each later occurrence is a
//! [`Variation`], drawn uniformly: verbatim (a written-out repeat), transposed by one of
//! [`TRANSPOSITIONS`] (a sequence: same rhythm, every pitch moved alike), or ornamented (every
//! note of at least [`MIN_ORNAMENT_MS`] is, with probability 1/2, split into its first half at
//! its own pitch and its second half a whole tone above or below: the same onsets plus passing
//! notes; a section with no such note is transposed instead). [`SynthPiece::variations`] records
//! what each occurrence is.
//!
//! # Tempo
//! The piece keeps the base piece's quarter note ([`SourcePiece::quarter_ms`]; 500 ms when the
//! source's tempo is unknown or changes), written as its one tempo at 480 ticks per quarter, so
//! the beat grid of `staria_models::grid` (from `constant_quarter_ms`) matches the music.

use rand::Rng;
use rand::seq::IndexedRandom;
use staria_models::{Note, Section, SectionLabel, Song};

/// The forms the synthetic set covers, in the order `prepare` cycles through them.
pub const FORMS: [&str; 10] = [
    "AB", "ABC", "ABA", "ABAB", "ABAC", "ABCA", "ABCB", "ABCD", "AABA", "AABB",
];

/// Sections shorter than this, or with fewer than [`MIN_SECTION_NOTES`] notes, are not used.
pub const MIN_SECTION_MS: f64 = 2_000.0;
pub const MIN_SECTION_NOTES: usize = 4;
/// Longer sections are cut to their first this-many ms, so a synthetic piece stays trainable.
pub const MAX_SECTION_MS: f64 = 30_000.0;

/// Intervals (semitones) a transposed repeat moves by.
pub const TRANSPOSITIONS: [i8; 6] = [-7, -5, -2, 2, 5, 7];
/// Notes shorter than this are never split by an ornament.
pub const MIN_ORNAMENT_MS: f64 = 150.0;

/// The quarter note of a source whose tempo is unknown (120 bpm, MIDI's default).
pub const DEFAULT_QUARTER_MS: f64 = 500.0;

const TICKS_PER_QUARTER: u16 = 480;

/// A key: tonic pitch class (0 = C) and mode.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Key {
    pub tonic: u8,
    pub minor: bool,
}

/// Krumhansl-Kessler key profiles (major, minor), tonic first.
const MAJOR_PROFILE: [f64; 12] = [
    6.35, 2.23, 3.48, 2.33, 4.38, 4.09, 2.52, 5.19, 2.39, 3.66, 2.29, 2.88,
];
const MINOR_PROFILE: [f64; 12] = [
    6.33, 2.68, 3.52, 5.38, 2.60, 3.53, 2.54, 4.75, 3.98, 2.69, 3.34, 3.17,
];

/// The key whose Krumhansl-Kessler profile best correlates with the notes' duration-weighted
/// pitch-class histogram (drums ignored); `None` without pitched notes.
pub fn estimate_key(notes: &[Note]) -> Option<Key> {
    let mut hist = [0.0f64; 12];
    for n in notes.iter().filter(|n| !n.is_drum()) {
        hist[usize::from(n.pitch % 12)] += (n.end_ms - n.start_ms).max(1.0);
    }
    if hist.iter().all(|&h| h == 0.0) {
        return None;
    }
    let corr = |profile: &[f64; 12], tonic: usize| -> f64 {
        let p: Vec<f64> = (0..12).map(|i| profile[(i + 12 - tonic) % 12]).collect();
        let (mh, mp) = (
            hist.iter().sum::<f64>() / 12.0,
            p.iter().sum::<f64>() / 12.0,
        );
        let cov: f64 = (0..12).map(|i| (hist[i] - mh) * (p[i] - mp)).sum();
        let vh: f64 = hist.iter().map(|h| (h - mh).powi(2)).sum();
        let vp: f64 = p.iter().map(|x| (x - mp).powi(2)).sum();
        cov / (vh * vp).sqrt().max(1e-12)
    };
    let mut best = (
        f64::NEG_INFINITY,
        Key {
            tonic: 0,
            minor: false,
        },
    );
    for tonic in 0..12 {
        for (minor, profile) in [(false, &MAJOR_PROFILE), (true, &MINOR_PROFILE)] {
            let c = corr(profile, tonic);
            if c > best.0 {
                best = (
                    c,
                    Key {
                        tonic: tonic as u8,
                        minor,
                    },
                );
            }
        }
    }
    Some(best.1)
}

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
    /// The piece's quarter note (ms): its constant tempo, else [`DEFAULT_QUARTER_MS`].
    pub quarter_ms: f64,
    /// The piece's key (all its notes); `None` without pitched notes.
    pub key: Option<Key>,
}

impl SourcePiece {
    /// Extracts the usable sections of `song`; `None` if it has none.
    pub fn from_song(id: &str, source: &str, style: Option<&str>, song: &Song) -> Option<Self> {
        let mut materials = Vec::new();
        for label in SectionLabel::ALL {
            let Some(sec) = song.first_section(label) else {
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
            quarter_ms: song
                .constant_quarter_ms()
                .filter(|q| q.is_finite() && *q > 0.0)
                .unwrap_or(DEFAULT_QUARTER_MS),
            key: estimate_key(&song.notes),
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

/// How an occurrence of a letter plays its material.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Variation {
    /// The first occurrence, or a written-out repeat.
    Verbatim,
    /// Every pitch moved by this many semitones (drums unchanged).
    Transposed(i8),
    /// Passing notes added (see the module docs).
    Ornamented,
}

/// A synthetic piece.
#[derive(Debug, Clone)]
pub struct SynthPiece {
    pub song: Song,
    pub form: String,
    pub source: String,
    pub style: Option<String>,
    /// The material of each distinct letter, A.. (a borrowed one with its fitting:
    /// "b.mid:A (+3 st, x1.50 time)").
    pub origins: Vec<String>,
    /// What each occurrence (in form order) plays.
    pub variations: Vec<Variation>,
}

/// The pitch `p` moved by `semitones`, then by octaves back into 0..=127.
fn moved(p: u8, semitones: i32) -> u8 {
    let mut x = i32::from(p) + semitones;
    while x > 127 {
        x -= 12;
    }
    while x < 0 {
        x += 12;
    }
    x as u8
}

/// A borrowed material fitted to the base piece's key and beat (see the module docs).
fn fit(m: &Material, donor: &SourcePiece, base: &SourcePiece) -> Material {
    let shift = match (donor.key, base.key) {
        (Some(d), Some(b)) => (i32::from(b.tonic) - i32::from(d.tonic) + 18).rem_euclid(12) - 6,
        _ => 0,
    };
    let scale = base.quarter_ms / donor.quarter_ms;
    let len_ms = (m.len_ms * scale).min(MAX_SECTION_MS);
    let notes: Vec<Note> = m
        .notes
        .iter()
        .filter(|n| n.start_ms * scale < len_ms)
        .map(|n| {
            let start = n.start_ms * scale;
            Note {
                pitch: if n.is_drum() {
                    n.pitch
                } else {
                    moved(n.pitch, shift)
                },
                start_ms: start,
                end_ms: (n.end_ms * scale).min(len_ms).max(start + 10.0),
                ..*n
            }
        })
        .collect();
    Material {
        notes,
        len_ms,
        origin: format!("{} ({shift:+} st, x{scale:.2} time)", m.origin),
    }
}

/// The notes of one occurrence under `variation`, times from the occurrence's start; an
/// ornament that finds no note to split falls back to the transposition `fallback`.
fn vary(
    m: &Material,
    variation: Variation,
    fallback: i8,
    rng: &mut impl Rng,
) -> (Vec<Note>, Variation) {
    match variation {
        Variation::Verbatim => (m.notes.clone(), variation),
        Variation::Transposed(k) => (
            m.notes
                .iter()
                .map(|n| Note {
                    pitch: if n.is_drum() {
                        n.pitch
                    } else {
                        moved(n.pitch, i32::from(k))
                    },
                    ..*n
                })
                .collect(),
            variation,
        ),
        Variation::Ornamented => {
            let mut out = Vec::with_capacity(m.notes.len() * 3 / 2);
            let mut split = 0;
            for n in &m.notes {
                if !n.is_drum() && n.end_ms - n.start_ms >= MIN_ORNAMENT_MS && rng.random_bool(0.5)
                {
                    let mid = (n.start_ms + n.end_ms) / 2.0;
                    let step = if rng.random_bool(0.5) { 2 } else { -2 };
                    out.push(Note { end_ms: mid, ..*n });
                    out.push(Note {
                        pitch: moved(n.pitch, step),
                        start_ms: mid,
                        ..*n
                    });
                    split += 1;
                } else {
                    out.push(*n);
                }
            }
            if split == 0 {
                return vary(m, Variation::Transposed(fallback), fallback, rng);
            }
            (out, variation)
        }
    }
}

/// Lays real sections out in `form` (letters A..D, starting with A). `None` without sources.
pub fn assemble(pool: &[SourcePiece], form: &str, rng: &mut impl Rng) -> Option<SynthPiece> {
    let letters: Vec<SectionLabel> = form.chars().filter_map(SectionLabel::from_letter).collect();
    let distinct = letters.iter().map(|l| l.index()).max()? + 1;
    let base = pool.choose(rng)?;
    let mut chosen: Vec<Material> = base.materials.iter().take(distinct).cloned().collect();
    let same_source: Vec<&SourcePiece> = pool
        .iter()
        .filter(|p| p.source == base.source && p.id != base.id)
        .collect();
    let others: Vec<&SourcePiece> = pool.iter().filter(|p| p.id != base.id).collect();
    let donors = if same_source.is_empty() {
        others
    } else {
        same_source
    };
    let same_mode: Vec<&SourcePiece> = donors
        .iter()
        .copied()
        .filter(|d| match (d.key, base.key) {
            (Some(a), Some(b)) => a.minor == b.minor,
            _ => false,
        })
        .collect();
    let donors = if same_mode.is_empty() {
        donors
    } else {
        same_mode
    };
    while chosen.len() < distinct {
        let m = match donors.choose(rng).copied() {
            Some(donor) => fit(donor.materials.choose(rng)?, donor, base),
            None => base.materials.choose(rng)?.clone(),
        };
        chosen.push(m);
    }

    let q = base.quarter_ms;
    let ticks = |ms: f64| (ms * f64::from(TICKS_PER_QUARTER) / q).round().max(0.0) as u64;
    let mut notes = Vec::new();
    let mut sections = Vec::new();
    let mut variations = Vec::with_capacity(letters.len());
    let mut seen = [false; 4];
    let mut t = 0.0f64;
    for &l in &letters {
        let m = &chosen[l.index()];
        let wanted = if std::mem::replace(&mut seen[l.index()], true) {
            match rng.random_range(0..3) {
                0 => Variation::Verbatim,
                1 => Variation::Transposed(*TRANSPOSITIONS.choose(rng).expect("non-empty")),
                _ => Variation::Ornamented,
            }
        } else {
            Variation::Verbatim
        };
        let fallback = *TRANSPOSITIONS.choose(rng).expect("non-empty");
        let (occ, variation) = vary(m, wanted, fallback, rng);
        variations.push(variation);
        for n in &occ {
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
    let us_per_quarter = (q * 1000.0).round() as u32;
    let song = Song::with_fixed_tempo(TICKS_PER_QUARTER, us_per_quarter, notes, sections);
    Some(SynthPiece {
        song,
        form: form.to_string(),
        source: base.source.clone(),
        style: base.style.clone(),
        origins: chosen.iter().map(|m| m.origin.clone()).collect(),
        variations,
    })
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

    /// (pitch, onset ms rounded) of a section's notes, from its start.
    fn content(song: &Song, s: &Section) -> Vec<(u8, i64)> {
        song.section_notes(s)
            .iter()
            .map(|n| (n.pitch, n.start_ms.round() as i64))
            .collect()
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
            assert_eq!(a.variations.len(), form.len());
            assert_eq!(
                a.origins.len(),
                form.chars().max().unwrap() as usize - 'A' as usize + 1
            );
            // Every occurrence of a letter is its first occurrence as its variation says.
            for l in SectionLabel::ALL {
                let occ: Vec<(usize, &Section)> = a
                    .song
                    .sections
                    .iter()
                    .enumerate()
                    .filter(|(_, s)| s.label == l)
                    .collect();
                let Some(&(k0, first)) = occ.first() else {
                    continue;
                };
                assert_eq!(a.variations[k0], Variation::Verbatim, "a first occurrence");
                let base = content(&a.song, first);
                for &(k, s) in &occ[1..] {
                    let c = content(&a.song, s);
                    match a.variations[k] {
                        Variation::Verbatim => assert_eq!(c, base),
                        Variation::Transposed(t) => {
                            assert!(TRANSPOSITIONS.contains(&t));
                            let want: Vec<(u8, i64)> = base
                                .iter()
                                .map(|&(p, o)| ((i32::from(p) + i32::from(t)) as u8, o))
                                .collect();
                            assert_eq!(c, want, "{form}: transposed by {t}");
                        }
                        Variation::Ornamented => {
                            assert!(c.len() > base.len(), "{form}: ornaments add notes");
                            // Every original onset is still played at its pitch.
                            for x in &base {
                                assert!(c.contains(x), "{form}: {x:?} lost");
                            }
                        }
                    }
                }
            }
            // Sections tile the piece without gaps.
            for w in a.song.sections.windows(2) {
                assert_eq!(w[0].end_ms, w[1].start_ms);
            }
        }
    }

    #[test]
    fn repeats_are_varied_not_only_verbatim() {
        let pool = vec![labelled(60, "a.mid"), labelled(50, "b.mid")];
        let mut kinds = [0usize; 3];
        for seed in 0..60 {
            for form in ["AABA", "AABB", "ABAB"] {
                let p = assemble(&pool, form, &mut StdRng::seed_from_u64(seed)).unwrap();
                let mut seen = Vec::new();
                for (c, v) in form.chars().zip(&p.variations) {
                    if !seen.contains(&c) {
                        seen.push(c);
                        continue;
                    }
                    kinds[match v {
                        Variation::Verbatim => 0,
                        Variation::Transposed(_) => 1,
                        Variation::Ornamented => 2,
                    }] += 1;
                }
            }
        }
        // AABA, AABB and ABAB have 2 repeats each: 360 repeats, about a third of each kind.
        assert_eq!(kinds.iter().sum::<usize>(), 360);
        for k in kinds {
            assert!((80..=160).contains(&k), "{kinds:?}");
        }
    }

    /// A one-section (A) piece: a scale in `tonic` major over 2 bars at `bpm`.
    fn in_key(tonic: u8, bpm: f64, id: &str) -> SourcePiece {
        let scale = [0u8, 2, 4, 5, 7, 9, 11, 12, 11, 9, 7, 5, 4, 2, 0, 7];
        let beat = 60_000.0 / bpm;
        let notes: Vec<Note> = scale
            .iter()
            .enumerate()
            .map(|(i, s)| {
                let start = i as f64 * beat / 2.0;
                // The tonic held longer, so the key is unambiguous.
                let len = if *s % 12 == 0 {
                    beat
                } else {
                    beat / 2.0 - 20.0
                };
                Note {
                    pitch: 60 + tonic + s,
                    velocity: 80,
                    channel: 0,
                    program: 0,
                    start_tick: 0,
                    end_tick: 0,
                    start_ms: start,
                    end_ms: start + len,
                }
            })
            .collect();
        let end = 16.0 * beat / 2.0;
        let sections = vec![Section {
            label: SectionLabel::A,
            marker_text: "A".into(),
            start_tick: 0,
            end_tick: 0,
            start_ms: 0.0,
            end_ms: end,
        }];
        let song = Song::from_ms_notes(notes, sections, bpm);
        let p = SourcePiece::from_song(id, "test", None, &song).unwrap();
        assert_eq!(
            p.key,
            Some(Key {
                tonic,
                minor: false
            }),
            "{id}"
        );
        p
    }

    #[test]
    fn borrowed_sections_take_the_base_pieces_key_and_beat() {
        // Base: C major at 100 bpm; donor: E major at 150 bpm. In "AB" the B is the donor's A.
        let base = in_key(0, 100.0, "base.mid");
        let donor = in_key(4, 150.0, "donor.mid");
        assert!((base.quarter_ms - 600.0).abs() < 1e-6);
        assert!((donor.quarter_ms - 400.0).abs() < 1e-6);
        let pool = vec![base, donor];
        let mut found = false;
        for seed in 0..20 {
            let p = assemble(&pool, "AB", &mut StdRng::seed_from_u64(seed)).unwrap();
            if !p.origins[0].starts_with("base.mid") {
                continue;
            }
            found = true;
            assert!(p.origins[1].contains("-4 st"), "{:?}", p.origins);
            assert_eq!(
                p.song.constant_quarter_ms(),
                Some(600.0),
                "the base's tempo"
            );
            let b = &p.song.sections[1];
            let notes = p.song.section_notes(b);
            assert_eq!(
                estimate_key(&notes),
                Some(Key {
                    tonic: 0,
                    minor: false
                }),
                "moved to the base's key"
            );
            // On the base's beat: eighth notes of 300 ms, not the donor's 200 ms.
            let onsets: Vec<f64> = notes.iter().map(|n| n.start_ms).collect();
            for w in onsets.windows(2) {
                assert!((w[1] - w[0] - 300.0).abs() < 1.0, "{onsets:?}");
            }
            assert!((b.end_ms - b.start_ms - 4_800.0).abs() < 1e-6);
        }
        assert!(found, "no piece drawn on the base");
    }

    #[test]
    fn keys_are_estimated_in_both_modes() {
        let notes = |pcs: &[u8]| -> Vec<Note> {
            pcs.iter()
                .enumerate()
                .map(|(i, &pc)| Note {
                    pitch: 57 + pc,
                    velocity: 80,
                    channel: 0,
                    program: 0,
                    start_tick: 0,
                    end_tick: 0,
                    start_ms: i as f64 * 250.0,
                    end_ms: i as f64 * 250.0 + if pc == 0 { 900.0 } else { 240.0 },
                })
                .collect()
        };
        // A natural minor, tonic and fifth stressed.
        let a_minor = notes(&[0, 2, 3, 5, 7, 8, 10, 12, 7, 3, 0, 0, 7]);
        assert_eq!(
            estimate_key(&a_minor),
            Some(Key {
                tonic: 9,
                minor: true
            })
        );
        assert_eq!(estimate_key(&[]), None);
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
