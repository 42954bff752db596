use super::*;
use crate::music;
use crate::music::tests::{bar, song_from_beats};
use staria_models::Section;

const BAR_MS: f64 = 2000.0; // 4/4 at 120 bpm
const SIXTEENTH_MS: f64 = 125.0;

fn a_material(bar_no: usize) -> Vec<(u8, f64, f64)> {
    [
        bar([60, 62, 64, 65], bar_no),
        bar([67, 65, 64, 62], bar_no + 1),
    ]
    .concat()
}
fn b_material(bar_no: usize) -> Vec<(u8, f64, f64)> {
    [
        bar([69, 71, 72, 74], bar_no),
        bar([76, 74, 72, 71], bar_no + 1),
    ]
    .concat()
}

fn snippet(label: SectionLabel, material: Vec<(u8, f64, f64)>) -> SnippetRef {
    SnippetRef::new(
        label,
        &song_from_beats(&material).notes,
        BAR_MS,
        SIXTEENTH_MS,
    )
}

fn snippets() -> Vec<SnippetRef> {
    vec![
        snippet(SectionLabel::A, a_material(0)),
        snippet(SectionLabel::B, b_material(0)),
    ]
}

/// A "generated" piece: one two-bar section per (label, material) in order.
type Material = fn(usize) -> Vec<(u8, f64, f64)>;

fn piece(parts: &[(SectionLabel, Material)]) -> Song {
    let mut notes = Vec::new();
    for (i, (_, m)) in parts.iter().enumerate() {
        notes.extend(m(2 * i));
    }
    let mut song = song_from_beats(&notes);
    song.sections = parts
        .iter()
        .enumerate()
        .map(|(i, (l, _))| Section {
            label: *l,
            marker_text: l.to_string(),
            start_tick: (i * 2 * 1920) as u64,
            end_tick: ((i + 1) * 2 * 1920) as u64,
            start_ms: i as f64 * 2.0 * BAR_MS,
            end_ms: (i + 1) as f64 * 2.0 * BAR_MS,
        })
        .collect();
    song
}

const AABA: [SectionLabel; 4] = [
    SectionLabel::A,
    SectionLabel::A,
    SectionLabel::B,
    SectionLabel::A,
];

#[test]
fn copying_a_everywhere_is_half_adherent_and_all_copies() {
    use SectionLabel::{A, B};
    let song = piece(&[
        (A, a_material),
        (A, a_material),
        (B, a_material),
        (A, a_material),
    ]);
    let sc = score_form(&song, &AABA, &snippets(), BAR_MS);
    assert_eq!(sc.a, (3, 3));
    assert_eq!(sc.b, (0, 1));
    assert_eq!(sc.balanced(), 0.5);
    // The old pooled figure would have been 0.75.
    assert_eq!((sc.a.0 + sc.b.0) as f64 / sc.planned() as f64, 0.75);
    assert_eq!(sc.copies, 4, "a verbatim copy is a copy");
    assert_eq!(sc.density_matches, 4);
    assert_eq!(sc.on_grid.0, sc.on_grid.1, "quarter notes are on the grid");
}

#[test]
fn following_the_form_is_fully_adherent() {
    use SectionLabel::{A, B};
    let song = piece(&[
        (A, a_material),
        (A, a_material),
        (B, b_material),
        (A, a_material),
    ]);
    let sc = score_form(&song, &AABA, &snippets(), BAR_MS);
    assert_eq!(sc.balanced(), 1.0);
    assert_eq!(sc.copies, 4);
    // Copies: similarity 1 to their own snippet, less to the other, three A and one B.
    let [(a_own, a_other, a_n), (b_own, b_other, b_n)] = sc.similarity;
    assert_eq!((a_n, b_n), (3, 1));
    assert_eq!((a_own / 3.0, b_own), (1.0, 1.0));
    assert!(a_other / 3.0 < 1.0 && b_other < 1.0);
}

#[test]
fn new_material_is_no_copy_and_missing_sections_count_against() {
    use SectionLabel::{A, B};
    fn a_up(b: usize) -> Vec<(u8, f64, f64)> {
        // A's rhythm and contour a tone higher, one note changed per bar.
        [bar([62, 64, 66, 60], b), bar([69, 67, 66, 60], b + 1)].concat()
    }
    fn b_up(b: usize) -> Vec<(u8, f64, f64)> {
        [bar([71, 73, 74, 60], b), bar([78, 76, 74, 60], b + 1)].concat()
    }
    let song = piece(&[(A, a_up), (A, a_up), (B, b_up)]);
    let sc = score_form(&song, &AABA, &snippets(), BAR_MS);
    assert_eq!(sc.copies, 0);
    assert_eq!(sc.planned(), 4);
    // The fourth (missing) section is not adherent and not a density match.
    assert!(sc.a.0 <= 2);
    assert_eq!(sc.density_matches, 3);
}

#[test]
fn twice_as_dense_is_no_density_match() {
    use SectionLabel::{A, B};
    fn eighths(b: usize) -> Vec<(u8, f64, f64)> {
        (0..16)
            .map(|i| (60 + (i % 5) as u8, (b * 4) as f64 + i as f64 * 0.5, 0.5))
            .collect()
    }
    let song = piece(&[
        (A, eighths),
        (A, a_material),
        (B, b_material),
        (A, a_material),
    ]);
    let sc = score_form(&song, &AABA, &snippets(), BAR_MS);
    assert_eq!(sc.density_matches, 3);
    // Eighths at 120 bpm are on the sixteenth grid too.
    assert_eq!(sc.on_grid.0, sc.on_grid.1);
}

#[test]
fn reference_form_counts_only_repeats_and_scores_them_like_generations() {
    use SectionLabel::{A, B};
    // A A B A: the first A and the B hold the snippets; the repeats are A, A (both true).
    let song = piece(&[
        (A, a_material),
        (A, a_material),
        (B, b_material),
        (A, a_material),
    ]);
    assert_eq!(reference_form(&song, &snippets(), BAR_MS), ((2, 2), (0, 0)));
    // A B B A with the second B playing A's material: that B repeat does not adhere.
    let song = piece(&[
        (A, a_material),
        (B, b_material),
        (B, a_material),
        (A, a_material),
    ]);
    assert_eq!(reference_form(&song, &snippets(), BAR_MS), ((1, 1), (0, 1)));
}

#[test]
fn reference_rhythm_of_a_quantised_piece() {
    use SectionLabel::{A, B};
    let song = piece(&[(A, a_material), (B, b_material)]);
    let (dens, grid, edge) = reference_rhythm(&song, &snippets(), 5000.0);
    assert_eq!(dens, (2, 2));
    assert_eq!(grid.0, grid.1);
    assert_eq!(edge, (0, 16));
}

#[test]
fn bootstrap_interval_contains_the_mean() {
    let v: Vec<f64> = (0..60).map(|i| [0.0, 0.5, 0.75, 1.0][i % 4]).collect();
    let mean = v.iter().sum::<f64>() / v.len() as f64;
    let (lo, hi) = music::bootstrap_interval(&v, BOOTSTRAP_RESAMPLES, BOOTSTRAP_SEED);
    assert!(lo < mean && mean < hi, "{lo} {mean} {hi}");
    assert!(hi - lo < 0.3);
    assert_eq!(
        (lo, hi),
        music::bootstrap_interval(&v, BOOTSTRAP_RESAMPLES, BOOTSTRAP_SEED)
    );
    let same = music::bootstrap_interval(&[0.5; 10], 100, 1);
    assert_eq!(same, (0.5, 0.5));
    assert!(music::bootstrap_interval(&[], 100, 1).0.is_nan());
}

#[test]
fn evaluation_forms_take_the_two_snippets_letters_only() {
    use SectionLabel::{A, B};
    assert_eq!(eval_form("AABA").unwrap(), [A, A, B, A]);
    assert_eq!(eval_form("ABAB").unwrap(), [A, B, A, B]);
    for bad in ["", "AAAA", "ABC", "aabb", "A B"] {
        let e = eval_form(bad).unwrap_err().to_string();
        assert!(e.contains("--form") && e.contains(bad), "{e}");
    }
}
