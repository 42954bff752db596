//! Note-level music measures shared by data preparation and evaluation: the bar grid,
//! bar content and bar similarity, repetition-based section finding for files without
//! markers, and the pitch-class and note-density statistics of evaluation.
//!
//! # Bar similarity (used by segmentation and by the form-adherence metric)
//! A bar's content is the set of `(pitch, onset slot)` pairs of the notes starting in it, the
//! onset slot being the note's position in the bar quantised to 1/48 of the bar (exact for
//! sixteenths and triplets in common meters). Two bars' similarity is the Jaccard index of
//! their sets (|intersection| / |union|; two empty bars are identical, 1.0). A sequence of bars
//! compared with another is scored bar by bar against the best-matching bar of the other, so a
//! section that restates its snippet's material at another place still scores high.

use std::collections::BTreeSet;

use staria_models::{Note, Section, SectionLabel, Song};

/// Onset positions per bar in [`BarContent`].
pub const SLOTS_PER_BAR: f64 = 48.0;

/// Bar groups at least this similar (mean bar Jaccard) get the same section letter.
pub const SAME_SECTION_THRESHOLD: f64 = 0.6;

/// Tick to millisecond conversion through a song's tempo map (120 bpm before the first entry).
pub struct Clock {
    /// (tick, us per quarter, ms at tick)
    segments: Vec<(u64, u32, f64)>,
    tpq: f64,
}

impl Clock {
    pub fn new(song: &Song) -> Self {
        let tpq = f64::from(song.ticks_per_quarter.max(1));
        let mut map = song.tempo_map.clone();
        map.sort_by_key(|t| t.tick);
        let mut segments: Vec<(u64, u32, f64)> = vec![(0, 500_000, 0.0)];
        for t in map {
            let us = t.us_per_quarter.max(1);
            let &(t0, us0, ms0) = segments.last().expect("non-empty");
            if t.tick == t0 {
                segments.last_mut().expect("non-empty").1 = us;
            } else {
                segments.push((
                    t.tick,
                    us,
                    ms0 + (t.tick - t0) as f64 * f64::from(us0) / 1000.0 / tpq,
                ));
            }
        }
        Self { segments, tpq }
    }

    pub fn ms(&self, tick: u64) -> f64 {
        let i = self
            .segments
            .partition_point(|s| s.0 <= tick)
            .saturating_sub(1);
        let (t0, us, ms0) = self.segments[i];
        ms0 + (tick - t0) as f64 * f64::from(us) / 1000.0 / self.tpq
    }
}

/// Bar lines of a song as (start tick, start ms), from its time signatures (4/4 before the first
/// one), covering every note. The last entry is the end of the last bar.
pub fn bar_lines(song: &Song) -> Vec<(u64, f64)> {
    let clock = Clock::new(song);
    let tpq = u64::from(song.ticks_per_quarter.max(1));
    let end_tick = song
        .notes
        .iter()
        .map(|n| n.end_tick.max(n.start_tick + 1))
        .max()
        .unwrap_or(0);
    let mut sigs: Vec<(u64, u64)> = song
        .time_signatures
        .iter()
        .filter(|ts| ts.numerator > 0 && ts.denominator > 0)
        .map(|ts| {
            (
                ts.tick,
                (4 * tpq * u64::from(ts.numerator) / u64::from(ts.denominator)).max(1),
            )
        })
        .collect();
    sigs.sort_by_key(|s| s.0);
    if sigs.first().is_none_or(|s| s.0 > 0) {
        sigs.insert(0, (0, 4 * tpq));
    }
    let mut lines = Vec::new();
    let mut tick = 0u64;
    let mut sig_i = 0;
    // A safety cap: a pathological file (1-tick bars over hours) must not exhaust memory.
    while lines.len() < 100_000 {
        while sig_i + 1 < sigs.len() && sigs[sig_i + 1].0 <= tick {
            sig_i += 1;
        }
        lines.push((tick, clock.ms(tick)));
        if tick >= end_tick {
            break;
        }
        let mut next = tick + sigs[sig_i].1;
        // A time signature change mid-bar starts a new bar there.
        if sig_i + 1 < sigs.len() && sigs[sig_i + 1].0 < next {
            next = sigs[sig_i + 1].0;
        }
        tick = next;
    }
    if lines.len() < 2 {
        lines.push((tick + 4 * tpq, clock.ms(tick + 4 * tpq)));
    }
    lines
}

/// A bar's `(pitch, onset slot)` set (see the module docs).
pub type BarContent = BTreeSet<(u8, u16)>;

/// Contents of bars `[start_ms, end_ms)` given in milliseconds, from millisecond note times.
pub fn bar_contents_ms(notes: &[Note], bars_ms: &[(f64, f64)]) -> Vec<BarContent> {
    let mut out = vec![BarContent::new(); bars_ms.len()];
    for n in notes {
        if n.is_drum() {
            continue;
        }
        let i = bars_ms.partition_point(|b| b.1 <= n.start_ms);
        if let Some(&(s, e)) = bars_ms.get(i)
            && n.start_ms >= s
        {
            let slot = (((n.start_ms - s) / (e - s).max(1e-6)) * SLOTS_PER_BAR).round() as u16;
            out[i].insert((n.pitch, slot.min(SLOTS_PER_BAR as u16 - 1)));
        }
    }
    out
}

/// Jaccard index of two bars' contents; 1.0 for two empty bars.
pub fn bar_similarity(a: &BarContent, b: &BarContent) -> f64 {
    if a.is_empty() && b.is_empty() {
        return 1.0;
    }
    let inter = a.intersection(b).count() as f64;
    inter / ((a.len() + b.len()) as f64 - inter)
}

/// Mean, over the bars of `x`, of the best similarity to any bar of `y`; 0 when either is empty.
pub fn sequence_similarity(x: &[BarContent], y: &[BarContent]) -> f64 {
    if x.is_empty() || y.is_empty() {
        return 0.0;
    }
    x.iter()
        .map(|bx| {
            y.iter()
                .map(|by| bar_similarity(bx, by))
                .fold(0.0, f64::max)
        })
        .sum::<f64>()
        / x.len() as f64
}

/// Bar-aligned similarity of two equal-length bar groups: the mean of bar-by-bar similarities.
fn group_similarity(x: &[BarContent], y: &[BarContent]) -> f64 {
    let n = x.len().min(y.len());
    if n == 0 {
        return 0.0;
    }
    (0..n).map(|i| bar_similarity(&x[i], &y[i])).sum::<f64>() / n as f64
}

/// Letters a sequence of bar groups by content: the first group is A; each later group takes
/// the letter of the most similar earlier letter (compared with that letter's first group) if
/// the similarity reaches [`SAME_SECTION_THRESHOLD`], else the next free letter; once A..D are
/// used, the most similar existing letter.
fn letter_groups(groups: &[&[BarContent]]) -> Vec<usize> {
    let mut reps: Vec<usize> = Vec::new(); // group index that first showed each letter
    let mut letters = Vec::with_capacity(groups.len());
    for (gi, g) in groups.iter().enumerate() {
        let best = reps
            .iter()
            .enumerate()
            .map(|(letter, &r)| (letter, group_similarity(g, groups[r])))
            .max_by(|a, b| a.1.total_cmp(&b.1));
        let letter = match best {
            Some((l, s)) if s >= SAME_SECTION_THRESHOLD => l,
            Some((l, _)) if reps.len() >= SectionLabel::ALL.len() => l,
            _ => {
                reps.push(gi);
                reps.len() - 1
            }
        };
        letters.push(letter);
    }
    letters
}

/// Finds sections by repetition, for files without markers.
///
/// Bars are grouped into phrases of `L` bars for `L` in 8, 4, 2 (only lengths giving at least 3
/// groups); a last partial group shorter than `L/2` bars joins the group before it. Groups are
/// lettered by `letter_groups`. The first `L` (longest) whose lettering has a repeated letter
/// wins, since the largest repeated unit is the section; with no repetition at any length, the
/// 4-bar lettering (or 2-bar for short pieces) is used. Consecutive groups with the same letter
/// merge into one section. A piece with fewer than 2 bars gets a single section A.
pub fn segment_by_repetition(song: &Song) -> Vec<Section> {
    let lines = bar_lines(song);
    let n_bars = lines.len() - 1;
    let whole = |label| {
        let (t0, m0) = lines[0];
        let (t1, m1) = *lines.last().expect("two lines");
        vec![Section {
            label,
            marker_text: "auto".into(),
            start_tick: t0,
            end_tick: t1,
            start_ms: m0,
            end_ms: m1,
        }]
    };
    if n_bars < 2 || song.notes.is_empty() {
        return whole(SectionLabel::A);
    }
    let bars_ms: Vec<(f64, f64)> = lines.windows(2).map(|w| (w[0].1, w[1].1)).collect();
    let contents = bar_contents_ms(&song.notes, &bars_ms);

    let split = |len: usize| -> Vec<(usize, usize)> {
        let mut spans: Vec<(usize, usize)> = (0..n_bars)
            .step_by(len)
            .map(|s| (s, (s + len).min(n_bars)))
            .collect();
        if spans.len() > 1 {
            let last = *spans.last().expect("non-empty");
            if last.1 - last.0 < len.div_ceil(2) {
                spans.pop();
                spans.last_mut().expect("non-empty").1 = last.1;
            }
        }
        spans
    };
    // (bar spans of the groups, their letters)
    type Lettering = (Vec<(usize, usize)>, Vec<usize>);
    let mut chosen: Option<Lettering> = None;
    let mut fallback = None;
    for len in [8usize, 4, 2] {
        let spans = split(len);
        if spans.len() < 3 && !(len == 2 && fallback.is_none()) {
            continue;
        }
        let groups: Vec<&[BarContent]> = spans.iter().map(|&(s, e)| &contents[s..e]).collect();
        let letters = letter_groups(&groups);
        let repeats = letters
            .iter()
            .enumerate()
            .any(|(i, l)| letters[..i].contains(l));
        if repeats {
            chosen = Some((spans, letters));
            break;
        }
        if fallback.is_none() || len == 4 {
            fallback = Some((spans, letters));
        }
    }
    let Some((spans, letters)) = chosen.or(fallback) else {
        return whole(SectionLabel::A);
    };
    let mut sections: Vec<Section> = Vec::new();
    for (&(s, e), &l) in spans.iter().zip(&letters) {
        let label = SectionLabel::from_index(l).expect("letters are capped at D");
        match sections.last_mut() {
            Some(last) if last.label == label => {
                last.end_tick = lines[e].0;
                last.end_ms = lines[e].1;
            }
            _ => sections.push(Section {
                label,
                marker_text: "auto".into(),
                start_tick: lines[s].0,
                end_tick: lines[e].0,
                start_ms: lines[s].1,
                end_ms: lines[e].1,
            }),
        }
    }
    sections
}

/// The form string of a section list ("AABA").
pub fn form_string(sections: &[Section]) -> String {
    sections.iter().map(|s| s.label.letter()).collect()
}

/// Duration-weighted pitch-class histogram (sums to 1; all zeros without pitched notes).
pub fn pitch_class_histogram(notes: &[Note]) -> [f64; 12] {
    let mut h = [0f64; 12];
    for n in notes.iter().filter(|n| !n.is_drum()) {
        h[usize::from(n.pitch % 12)] += n.duration_ms().max(1.0);
    }
    let total: f64 = h.iter().sum();
    if total > 0.0 {
        h.iter_mut().for_each(|x| *x /= total);
    }
    h
}

/// Total-variation distance of two histograms: half their L1 distance, in [0, 1].
pub fn histogram_distance(a: &[f64; 12], b: &[f64; 12]) -> f64 {
    a.iter().zip(b).map(|(x, y)| (x - y).abs()).sum::<f64>() / 2.0
}

/// Notes per second over the span from the first onset to the last note end.
pub fn note_density(notes: &[Note]) -> f64 {
    let (Some(start), Some(end)) = (
        notes.iter().map(|n| n.start_ms).min_by(f64::total_cmp),
        notes.iter().map(|n| n.end_ms).max_by(f64::total_cmp),
    ) else {
        return 0.0;
    };
    notes.len() as f64 / ((end - start) / 1000.0).max(0.001)
}

/// |log2(a / b)|: how many doublings apart two densities are (symmetric, scale-free).
/// An empty side counts as a density of 0.01 notes/s so the distance stays finite.
pub fn density_distance(a: f64, b: f64) -> f64 {
    (a.max(0.01) / b.max(0.01)).log2().abs()
}

/// Notes shifted so that the earliest onset is at 0 (the alignment every bar comparison of
/// evaluation uses, so a pickup or a late first note does not shift the bar phase).
pub fn from_first_onset(notes: &[Note]) -> Vec<Note> {
    let t0 = notes
        .iter()
        .map(|n| n.start_ms)
        .min_by(f64::total_cmp)
        .unwrap_or(0.0);
    notes
        .iter()
        .map(|n| Note {
            start_ms: n.start_ms - t0,
            end_ms: n.end_ms - t0,
            ..*n
        })
        .collect()
}

/// Bar contents of notes (already aligned so that bar 0 starts at 0 ms) over
/// `ceil(len_ms / bar_ms)` bars (at least one) of `bar_ms` each.
pub fn bars_from_zero(notes: &[Note], len_ms: f64, bar_ms: f64) -> Vec<BarContent> {
    let n = ((len_ms / bar_ms).ceil().max(1.0) as usize).min(10_000);
    let bars: Vec<(f64, f64)> = (0..n)
        .map(|i| (i as f64 * bar_ms, (i + 1) as f64 * bar_ms))
        .collect();
    bar_contents_ms(notes, &bars)
}

/// A bar at least this similar (Jaccard) to the aligned bar of a snippet is a copied bar.
pub const COPY_BAR_SIMILARITY: f64 = 0.9;

/// A section whose compared bars are at least this share copied bars is a verbatim copy.
pub const COPY_BAR_SHARE: f64 = 0.75;

/// Whether `section` copies `snippet` verbatim: both as bar contents from their first onsets,
/// bar `i` of one against bar `i` of the other for `i < min(len)`, at least
/// [`COPY_BAR_SHARE`] of those bars have similarity ≥ [`COPY_BAR_SIMILARITY`]. False when
/// either is empty.
pub fn is_verbatim_copy(section: &[BarContent], snippet: &[BarContent]) -> bool {
    let n = section.len().min(snippet.len());
    if n == 0 {
        return false;
    }
    let copied = (0..n)
        .filter(|&i| bar_similarity(&section[i], &snippet[i]) >= COPY_BAR_SIMILARITY)
        .count();
    copied as f64 >= COPY_BAR_SHARE * n as f64
}

/// Notes per second of `a` relative to `b` is within this fraction for a density match.
pub const DENSITY_MATCH_TOLERANCE: f64 = 0.3;

/// Whether `a`'s [`note_density`] is within ±[`DENSITY_MATCH_TOLERANCE`] of `b`'s (false when
/// either has no note).
pub fn density_matches(a: &[Note], b: &[Note]) -> bool {
    let (da, db) = (note_density(a), note_density(b));
    !a.is_empty() && !b.is_empty() && (da - db).abs() <= DENSITY_MATCH_TOLERANCE * db
}

/// An onset this close (ms) to a grid line is on the grid.
pub const GRID_TOLERANCE_MS: f64 = 20.0;

/// Milliseconds per quarter note at `ms` in a song's tempo map (120 bpm before the first entry).
pub fn quarter_ms_at(song: &Song, ms: f64) -> f64 {
    let clock = Clock::new(song);
    let i = clock
        .segments
        .partition_point(|s| s.2 <= ms)
        .saturating_sub(1);
    f64::from(clock.segments[i].1) / 1000.0
}

/// How many of `onsets` (ms) lie within [`GRID_TOLERANCE_MS`] of the grid `anchor + k * step`
/// (any integer `k`): (on grid, total).
pub fn onsets_on_grid(
    onsets: impl IntoIterator<Item = f64>,
    anchor: f64,
    step: f64,
) -> (usize, usize) {
    let (mut hit, mut total) = (0, 0);
    for t in onsets {
        total += 1;
        let d = (t - anchor).rem_euclid(step.max(1e-6));
        if d.min(step - d) <= GRID_TOLERANCE_MS + 1e-9 {
            hit += 1;
        }
    }
    (hit, total)
}

/// The end of every time window this long (ms) is its edge.
pub const WINDOW_EDGE_MS: f64 = 100.0;

/// How many of `onsets` (ms from the piece start, `<S>`) fall in the last [`WINDOW_EDGE_MS`] of
/// their `window_ms` window: (at an edge, total).
pub fn onsets_at_window_edge(
    onsets: impl IntoIterator<Item = f64>,
    window_ms: f64,
) -> (usize, usize) {
    let (mut hit, mut total) = (0, 0);
    for t in onsets {
        total += 1;
        if t.rem_euclid(window_ms) >= window_ms - WINDOW_EDGE_MS - 1e-9 {
            hit += 1;
        }
    }
    (hit, total)
}

/// Percentile bootstrap 95% interval of the mean of `values`: `resamples` resamples with
/// replacement drawn from `StdRng::seed_from_u64(seed)`, the 2.5th and 97.5th percentiles of
/// their means (nearest rank). `(NaN, NaN)` without values.
pub fn bootstrap_interval(values: &[f64], resamples: usize, seed: u64) -> (f64, f64) {
    use rand::{Rng, SeedableRng};
    if values.is_empty() || resamples == 0 {
        return (f64::NAN, f64::NAN);
    }
    let mut rng = rand::rngs::StdRng::seed_from_u64(seed);
    let n = values.len();
    let mut means: Vec<f64> = (0..resamples)
        .map(|_| (0..n).map(|_| values[rng.random_range(0..n)]).sum::<f64>() / n as f64)
        .collect();
    means.sort_by(f64::total_cmp);
    let at = |q: f64| means[((q * resamples as f64).ceil() as usize).clamp(1, resamples) - 1];
    (at(0.025), at(0.975))
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use staria_models::{TempoChange, TimeSignature};

    /// A 4/4 song at 120 bpm (500 ms per beat, 480 ticks per quarter) from
    /// (pitch, start beat, length in beats) triples.
    pub fn song_from_beats(notes: &[(u8, f64, f64)]) -> Song {
        let mut ns: Vec<Note> = notes
            .iter()
            .map(|&(pitch, b, len)| Note {
                pitch,
                velocity: 80,
                channel: 0,
                program: 0,
                start_tick: (b * 480.0) as u64,
                end_tick: ((b + len) * 480.0) as u64,
                start_ms: b * 500.0,
                end_ms: (b + len) * 500.0,
            })
            .collect();
        ns.sort_by_key(|n| (n.start_tick, n.pitch));
        Song::with_fixed_tempo(480, 500_000, ns, vec![])
    }

    /// One bar of four quarter notes on the given pitches starting at `bar`.
    pub fn bar(pitches: [u8; 4], bar: usize) -> Vec<(u8, f64, f64)> {
        pitches
            .iter()
            .enumerate()
            .map(|(i, &p)| (p, (bar * 4 + i) as f64, 1.0))
            .collect()
    }

    #[test]
    fn clock_follows_tempo_changes() {
        let mut s = song_from_beats(&[(60, 0.0, 1.0)]);
        s.tempo_map.push(TempoChange {
            tick: 960,
            us_per_quarter: 1_000_000,
        });
        let c = Clock::new(&s);
        assert!((c.ms(480) - 500.0).abs() < 1e-9);
        assert!((c.ms(960) - 1000.0).abs() < 1e-9);
        assert!((c.ms(1440) - 2000.0).abs() < 1e-9);
    }

    #[test]
    fn bar_lines_cover_the_notes_and_follow_meter_changes() {
        let mut s = song_from_beats(&[(60, 0.0, 1.0), (62, 10.5, 1.0)]);
        s.time_signatures.push(TimeSignature {
            tick: 4 * 480,
            numerator: 3,
            denominator: 4,
        });
        let lines = bar_lines(&s);
        let ticks: Vec<u64> = lines.iter().map(|l| l.0).collect();
        assert_eq!(ticks, vec![0, 1920, 3360, 4800, 6240]);
    }

    #[test]
    fn similarity_is_jaccard() {
        let a: BarContent = [(60, 0), (62, 12)].into_iter().collect();
        let b: BarContent = [(60, 0), (64, 12)].into_iter().collect();
        assert!((bar_similarity(&a, &a) - 1.0).abs() < 1e-12);
        assert!((bar_similarity(&a, &b) - 1.0 / 3.0).abs() < 1e-12);
        assert_eq!(bar_similarity(&BarContent::new(), &BarContent::new()), 1.0);
        assert_eq!(bar_similarity(&a, &BarContent::new()), 0.0);
    }

    #[test]
    fn repetition_segmentation_finds_aaba() {
        // Four 4-bar phrases: A A B A (each phrase is 4 distinct bars).
        let a_phrase = [
            [60, 62, 64, 65],
            [67, 65, 64, 62],
            [60, 64, 67, 72],
            [71, 69, 67, 60],
        ];
        let b_phrase = [
            [69, 71, 72, 74],
            [76, 74, 72, 71],
            [69, 67, 65, 64],
            [62, 64, 65, 67],
        ];
        let mut notes = Vec::new();
        let mut b = 0;
        for phrase in [&a_phrase, &a_phrase, &b_phrase, &a_phrase] {
            for p in phrase.iter() {
                notes.extend(bar(*p, b));
                b += 1;
            }
        }
        let song = song_from_beats(&notes);
        let sections = segment_by_repetition(&song);
        assert_eq!(form_string(&sections), "ABA", "{sections:?}");
        // 8-bar groups would be only two, so 4-bar groups are lettered (A A B A) and the
        // repeated A at the start merges into one 8-bar section.
        assert_eq!(sections[0].end_tick, 8 * 1920);
        assert_eq!(sections[1].start_tick, 8 * 1920);
        assert_eq!(sections[2].start_tick, 12 * 1920);
        assert_eq!(sections[2].end_tick, 16 * 1920);
    }

    #[test]
    fn segmentation_of_tiny_or_empty_songs_is_one_section() {
        let s = song_from_beats(&bar([60, 62, 64, 65], 0));
        let sec = segment_by_repetition(&s);
        assert_eq!(sec.len(), 1);
        assert_eq!(sec[0].label, SectionLabel::A);
        let empty = song_from_beats(&[]);
        assert_eq!(segment_by_repetition(&empty).len(), 1);
    }

    #[test]
    fn histogram_and_density_distances() {
        let c = song_from_beats(&[(60, 0.0, 1.0), (72, 1.0, 1.0)]);
        let g = song_from_beats(&[(67, 0.0, 1.0), (60, 1.0, 1.0)]);
        let hc = pitch_class_histogram(&c.notes);
        let hg = pitch_class_histogram(&g.notes);
        assert!((hc[0] - 1.0).abs() < 1e-12);
        assert!((histogram_distance(&hc, &hg) - 0.5).abs() < 1e-12);
        assert!((note_density(&c.notes) - 2.0).abs() < 1e-9);
        assert!((density_distance(4.0, 2.0) - 1.0).abs() < 1e-12);
        assert!((density_distance(2.0, 4.0) - 1.0).abs() < 1e-12);
    }

    #[test]
    fn onsets_on_the_grid_agree_and_jittered_ones_less() {
        // Sixteenths at 120 bpm: 125 ms, anchored at 40 ms.
        let on: Vec<f64> = (0..32).map(|i| 40.0 + i as f64 * 125.0).collect();
        assert_eq!(onsets_on_grid(on.iter().copied(), 40.0, 125.0), (32, 32));
        // Within the tolerance either side still counts.
        assert_eq!(onsets_on_grid([60.0, 20.0, 145.0], 40.0, 125.0), (3, 3));
        let jittered: Vec<f64> = on
            .iter()
            .enumerate()
            .map(|(i, t)| t + [0.0, 35.0, -45.0, 60.0][i % 4])
            .collect();
        let (hit, total) = onsets_on_grid(jittered, 40.0, 125.0);
        assert_eq!((hit, total), (8, 32));
        assert_eq!(onsets_on_grid(std::iter::empty(), 0.0, 125.0), (0, 0));
    }

    #[test]
    fn window_edge_piling() {
        assert_eq!(
            onsets_at_window_edge([4950.0, 9950.0, 4900.0], 5000.0),
            (3, 3)
        );
        assert_eq!(
            onsets_at_window_edge([0.0, 2500.0, 4899.0, 5000.0], 5000.0),
            (0, 4)
        );
    }

    #[test]
    fn quarter_length_follows_the_tempo_map() {
        let mut s = song_from_beats(&[(60, 0.0, 1.0)]);
        s.tempo_map.push(TempoChange {
            tick: 960,
            us_per_quarter: 400_000,
        });
        assert_eq!(quarter_ms_at(&s, 0.0), 500.0);
        assert_eq!(quarter_ms_at(&s, 999.0), 500.0);
        assert_eq!(quarter_ms_at(&s, 1000.0), 400.0);
    }

    #[test]
    fn verbatim_copy_needs_most_bars_nearly_identical() {
        let x = bar_contents_ms(
            &song_from_beats(&[bar([60, 62, 64, 65], 0), bar([67, 65, 64, 62], 1)].concat()).notes,
            &[(0.0, 2000.0), (2000.0, 4000.0)],
        );
        assert!(is_verbatim_copy(&x, &x));
        let mut y = x.clone();
        y[1] = BarContent::new();
        // One of two bars copied: 50% < 75%.
        assert!(!is_verbatim_copy(&x, &y));
        assert!(!is_verbatim_copy(&[], &x));
        // Longer than the snippet: only the overlap counts.
        let mut z = x.clone();
        z.push([(70, 0)].into_iter().collect());
        assert!(is_verbatim_copy(&z, &x));
    }

    #[test]
    fn first_onset_alignment_and_density_match() {
        let s = song_from_beats(&[(60, 1.0, 1.0), (62, 2.0, 1.0)]);
        let a = from_first_onset(&s.notes);
        assert_eq!(a[0].start_ms, 0.0);
        assert_eq!(a[1].start_ms, 500.0);
        let twice = song_from_beats(&[
            (60, 0.0, 0.5),
            (62, 0.5, 0.5),
            (64, 1.0, 0.5),
            (65, 1.5, 0.5),
        ]);
        assert!(density_matches(&s.notes, &s.notes));
        assert!(!density_matches(&twice.notes, &s.notes));
        assert!(!density_matches(&[], &s.notes));
    }
}
