//! Form adherence and rhythm measures (see the module docs of [`super`] for the definitions):
//! a generated or reference section's bars against its own and the other snippets, note density,
//! grid agreement and window-edge piling.

use staria_models::{Note, Section, SectionLabel, Song};

use crate::error::{Result, TrainError};
use crate::music::{self, BarContent};

/// Per-generation tallies (see the module docs for the definitions).
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct FormScores {
    /// (adherent, planned) sections per letter A and B.
    pub a: (usize, usize),
    pub b: (usize, usize),
    /// Per letter A and B: sums over the sections that have notes of their mean best-bar
    /// similarity to their own snippet and to the other one, and how many such sections.
    pub similarity: [(f64, f64, usize); 2],
    /// Planned sections that copy a snippet verbatim.
    pub copies: usize,
    /// Planned sections within ±30% of their snippet's notes per second.
    pub density_matches: usize,
    /// Onsets on the prompt's sixteenth grid, and all onsets of the planned sections.
    pub on_grid: (usize, usize),
}

impl FormScores {
    pub fn planned(&self) -> usize {
        self.a.1 + self.b.1
    }
    /// The mean over letters with planned sections of their adherent share.
    pub fn balanced(&self) -> f64 {
        let shares: Vec<f64> = [self.a, self.b]
            .iter()
            .filter(|x| x.1 > 0)
            .map(|&(h, n)| h as f64 / n as f64)
            .collect();
        if shares.is_empty() {
            f64::NAN
        } else {
            shares.iter().sum::<f64>() / shares.len() as f64
        }
    }
}

/// Notes starting in `[start, end)`, times from the first of them (empty if none).
fn section_notes(notes: &[Note], start: f64, end: f64) -> Vec<Note> {
    let inside: Vec<Note> = notes
        .iter()
        .filter(|n| n.start_ms >= start && n.start_ms < end)
        .copied()
        .collect();
    music::from_first_onset(&inside)
}

/// The prompt material of one letter, as the measures see it.
#[derive(Debug, Clone)]
pub struct SnippetRef {
    pub label: SectionLabel,
    /// The snippet's notes, from its first onset.
    pub notes: Vec<Note>,
    /// Their bars (`bar_ms` each, from the first onset).
    pub bars: Vec<BarContent>,
    /// Sixteenth-note length (ms) at the reference section's start, from the source tempo map.
    pub sixteenth_ms: f64,
}

impl SnippetRef {
    pub fn new(label: SectionLabel, notes: &[Note], bar_ms: f64, sixteenth_ms: f64) -> Self {
        let notes = music::from_first_onset(notes);
        let len = notes.iter().map(|n| n.end_ms).fold(0.0, f64::max);
        let bars = music::bars_from_zero(&notes, len, bar_ms);
        Self {
            label,
            notes,
            bars,
            sixteenth_ms,
        }
    }
}

/// The letters of an evaluation form: A and B only (the snippets every eligible piece has).
pub(super) fn eval_form(form: &str) -> Result<Vec<SectionLabel>> {
    let labels: Vec<SectionLabel> = form
        .chars()
        .map(|c| match c {
            'A' => Some(SectionLabel::A),
            'B' => Some(SectionLabel::B),
            _ => None,
        })
        .collect::<Option<_>>()
        .unwrap_or_default();
    if labels.is_empty() || !labels.contains(&SectionLabel::A) || !labels.contains(&SectionLabel::B)
    {
        return Err(TrainError::config(format!(
            "--form {form:?}: letters A and B only, both of them (the snippets given are A and B)"
        )));
    }
    Ok(labels)
}

/// Scores a generated piece against its plan: the `k`-th decoded section is the `k`-th
/// planned one (tags are forced in plan order); a planned section that was not started or has
/// no note counts against every share. `snippets` holds A and B.
pub fn score_form(
    song: &Song,
    plan: &[SectionLabel],
    snippets: &[SnippetRef],
    bar_ms: f64,
) -> FormScores {
    let mut sc = FormScores::default();
    for (k, &label) in plan.iter().enumerate() {
        let slot = match label {
            SectionLabel::A => &mut sc.a,
            _ => &mut sc.b,
        };
        slot.1 += 1;
        let Some(sec) = song.sections.get(k).filter(|s| s.label == label) else {
            continue;
        };
        let notes = section_notes(&song.notes, sec.start_ms, sec.end_ms);
        let Some(own) = snippets.iter().find(|s| s.label == label) else {
            continue;
        };
        if notes.is_empty() {
            continue;
        }
        let bars = section_bars(song, sec, &notes, bar_ms);
        let (own_sim, other_sim) = similarities(&bars, own, snippets);
        if own_sim > other_sim {
            slot.0 += 1;
        }
        let sim = &mut sc.similarity[usize::from(label != SectionLabel::A)];
        *sim = (sim.0 + own_sim, sim.1 + other_sim, sim.2 + 1);
        if snippets
            .iter()
            .any(|s| music::is_verbatim_copy(&bars, &s.bars))
        {
            sc.copies += 1;
        }
        if music::density_matches(&notes, &own.notes) {
            sc.density_matches += 1;
        }
        let (hit, total) =
            music::onsets_on_grid(notes.iter().map(|n| n.start_ms), 0.0, own.sixteenth_ms);
        sc.on_grid.0 += hit;
        sc.on_grid.1 += total;
    }
    sc
}

/// (own, other) means of a letter's similarity sums; NaN without sections.
pub(super) fn mean_similarity((own, other, n): (f64, f64, usize)) -> (f64, f64) {
    if n == 0 {
        (f64::NAN, f64::NAN)
    } else {
        (own / n as f64, other / n as f64)
    }
}

/// The bars of a section's `notes` (from [`section_notes`]): `bar_ms` each from its first onset
/// to the section's end.
fn section_bars(song: &Song, sec: &Section, notes: &[Note], bar_ms: f64) -> Vec<BarContent> {
    let first = song
        .notes
        .iter()
        .map(|n| n.start_ms)
        .filter(|&t| t >= sec.start_ms && t < sec.end_ms)
        .fold(f64::INFINITY, f64::min);
    music::bars_from_zero(notes, sec.end_ms - first, bar_ms)
}

/// A section's `bars` against its `own` snippet's and the most similar other snippet's.
fn similarities(bars: &[BarContent], own: &SnippetRef, snippets: &[SnippetRef]) -> (f64, f64) {
    let own_sim = music::sequence_similarity(bars, &own.bars);
    let other_sim = snippets
        .iter()
        .filter(|s| s.label != own.label)
        .map(|s| music::sequence_similarity(bars, &s.bars))
        .fold(0.0, f64::max);
    (own_sim, other_sim)
}

/// Whether a section's `bars` are strictly more like its `own` snippet's than any other's.
fn adheres(bars: &[BarContent], own: &SnippetRef, snippets: &[SnippetRef]) -> bool {
    let (own_sim, other_sim) = similarities(bars, own, snippets);
    own_sim > other_sim
}

/// Form adherence of a reference piece's own repeats: (adhering, all) of its A sections and of
/// its B sections after the first of each letter (the first holds the snippet itself), measured
/// as [`score_form`] measures a generation. What real music scores: the ceiling to read the
/// generations' figure against.
pub fn reference_form(
    song: &Song,
    snippets: &[SnippetRef],
    bar_ms: f64,
) -> ((usize, usize), (usize, usize)) {
    let (mut a, mut b) = ((0, 0), (0, 0));
    let mut seen = Vec::new();
    for sec in &song.sections {
        let Some(own) = snippets.iter().find(|s| s.label == sec.label) else {
            continue;
        };
        if !seen.contains(&sec.label) {
            seen.push(sec.label);
            continue;
        }
        let slot = if sec.label == SectionLabel::A {
            &mut a
        } else {
            &mut b
        };
        slot.1 += 1;
        let notes = section_notes(&song.notes, sec.start_ms, sec.end_ms);
        if !notes.is_empty() {
            let bars = section_bars(song, sec, &notes, bar_ms);
            slot.0 += usize::from(adheres(&bars, own, snippets));
        }
    }
    (a, b)
}

/// The rhythm measures of a reference piece: (sections of letters in `snippets` within ±30% of
/// their snippet's density, such sections), (onsets on the grid of their section's tempo and
/// first onset, onsets) over all sections, (notes at a window edge, notes).
pub fn reference_rhythm(
    song: &Song,
    snippets: &[SnippetRef],
    window_ms: f64,
) -> ((usize, usize), (usize, usize), (usize, usize)) {
    let (mut dens, mut grid) = ((0, 0), (0, 0));
    for sec in &song.sections {
        let notes = section_notes(&song.notes, sec.start_ms, sec.end_ms);
        if let Some(own) = snippets.iter().find(|s| s.label == sec.label) {
            dens.1 += 1;
            dens.0 += usize::from(music::density_matches(&notes, &own.notes));
        }
        let sixteenth = music::quarter_ms_at(song, sec.start_ms) / 4.0;
        let (h, t) = music::onsets_on_grid(notes.iter().map(|n| n.start_ms), 0.0, sixteenth);
        grid.0 += h;
        grid.1 += t;
    }
    let edge = music::onsets_at_window_edge(song.notes.iter().map(|n| n.start_ms), window_ms);
    (dens, grid, edge)
}
