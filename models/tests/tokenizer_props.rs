//! Property tests of the tokenizer: round trips within the documented quantization, the grammar
//! contract the engine's logit masks rely on, augmentation invariants, and robustness to garbage.

use proptest::prelude::*;
use staria_models::tokenizer::{Expect, GM_FAMILIES, StreamDecoder, StreamEvent};
use staria_models::{
    Note, Section, SectionLabel, Song, TempoChange, TokenKind, Tokenizer, TokenizerConfig,
};

/// The default (legacy) layout, or with section windows.
fn tok(section_windows: bool) -> Tokenizer {
    Tokenizer::new(TokenizerConfig {
        section_windows,
        ..TokenizerConfig::default()
    })
    .unwrap()
}

fn arb_note() -> impl Strategy<Value = Note> {
    (
        0u8..128,
        5u8..=127,
        0.0f64..60_000.0,
        1.0f64..8_000.0,
        0u8..128,
        prop::bool::weighted(0.15),
        27u8..=87,
    )
        .prop_map(
            |(pitch, velocity, start_ms, dur, program, drum, drum_pitch)| Note {
                pitch: if drum { drum_pitch } else { pitch },
                velocity,
                channel: if drum { 9 } else { 0 },
                program,
                start_tick: 0,
                end_tick: 0,
                start_ms,
                end_ms: start_ms + dur,
            },
        )
}

fn arb_song() -> impl Strategy<Value = Song> {
    let sections = prop::collection::vec((0usize..4, 0.0f64..65_000.0), 0..6);
    (prop::collection::vec(arb_note(), 0..60), sections).prop_map(|(mut notes, mut secs)| {
        notes.sort_by(|a, b| {
            a.start_ms
                .total_cmp(&b.start_ms)
                .then(a.pitch.cmp(&b.pitch))
        });
        secs.sort_by(|a, b| a.1.total_cmp(&b.1));
        let sections = (0..secs.len())
            .map(|i| {
                let label = SectionLabel::from_index(secs[i].0).unwrap();
                let end_ms = secs.get(i + 1).map_or(70_000.0, |s| s.1);
                Section {
                    label,
                    marker_text: label.to_string(),
                    start_tick: 0,
                    end_tick: 0,
                    start_ms: secs[i].1,
                    end_ms,
                }
            })
            .collect();
        Song {
            ticks_per_quarter: 480,
            tempo_map: vec![TempoChange {
                tick: 0,
                us_per_quarter: 500_000,
            }],
            time_signatures: vec![],
            notes,
            sections,
        }
    })
}

type Key = (i64, u8, bool, u8, i64);

/// (start ms, pitch, drum, velocity, duration ms) of a decoded note. Drums carry neither
/// velocity nor duration in their tokens, so those compare as 0.
fn key_decoded(n: &Note) -> Key {
    let dur = if n.is_drum() {
        0
    } else {
        n.duration_ms().round() as i64
    };
    (
        n.start_ms.round() as i64,
        n.pitch,
        n.is_drum(),
        if n.is_drum() { 0 } else { n.velocity },
        dur,
    )
}

/// The same for an original note quantized by the documented rules: nearest 10 ms step, nearest
/// velocity level, duration at least one step and at most the 5 s cap.
fn key_original(t: &Tokenizer, n: &Note) -> Key {
    let start = (n.start_ms / 10.0).round() as i64 * 10;
    let dur = if n.is_drum() {
        0
    } else {
        ((n.duration_ms() / 10.0).round() as i64).clamp(1, 500) * 10
    };
    (
        start,
        n.pitch,
        n.is_drum(),
        if n.is_drum() {
            0
        } else {
            t.quantize_velocity(n.velocity)
        },
        dur,
    )
}

fn event_key(ev: StreamEvent) -> Option<Key> {
    match ev {
        StreamEvent::Note {
            pitch,
            velocity,
            drum,
            start_ms,
            dur_ms,
            ..
        } => Some((
            start_ms.round() as i64,
            pitch,
            drum,
            if drum { 0 } else { velocity },
            if drum { 0 } else { dur_ms.round() as i64 },
        )),
        _ => None,
    }
}

fn decoded_keys(t: &Tokenizer, toks: &[u32]) -> Vec<Key> {
    let mut k: Vec<_> = t.decode(toks).notes.iter().map(key_decoded).collect();
    k.sort();
    k
}

/// Checks that a sequence follows the grammar the engine's masks enforce: onset after a note or
/// drum, duration after a note's onset, nothing else there, onsets never back in a window. With
/// section windows a body section tag comes right after an onset of its own (the section
/// start, not back in the window either), which generation forces with the tag.
fn assert_grammar(t: &Tokenizer, toks: &[u32]) -> Result<(), TestCaseError> {
    let mut d = StreamDecoder::new();
    for (i, &id) in toks.iter().enumerate() {
        let k = t.kind(id);
        if d.section_pending() {
            prop_assert!(
                matches!(k, TokenKind::Section(_)),
                "token {i}: {k:?} after a section start"
            );
            d.push(t, id);
            continue;
        }
        let section_start = t.config().section_windows
            && !d.in_prompt()
            && matches!(
                toks.get(i + 1).map(|&n| t.kind(n)),
                Some(TokenKind::Section(_))
            );
        if section_start && matches!(k, TokenKind::Onset { .. }) && d.expects() == Expect::Any {
            prop_assert!(
                t.allowed_onset_ids(&d).contains(&id),
                "token {i}: section start {k:?} before the window's latest onset {}",
                d.min_onset_ms()
            );
            d.push(t, id);
            continue;
        }
        match d.expects() {
            Expect::Onset => prop_assert!(
                t.allowed_onset_ids(&d).contains(&id),
                "token {i}: {k:?} where an onset >= {} was due",
                d.min_onset_ms()
            ),
            Expect::Dur => prop_assert!(
                t.dur_ids().contains(&id),
                "token {i}: {k:?} where a duration was due"
            ),
            Expect::Any => {
                prop_assert!(
                    !matches!(k, TokenKind::Onset { .. } | TokenKind::Dur { .. }),
                    "token {i}: stray {k:?}"
                )
            }
        }
        d.push(t, id);
    }
    prop_assert_eq!(d.expects(), Expect::Any, "sequence ends inside a note");
    Ok(())
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(256))]

    #[test]
    fn piece_round_trips_within_quantization(song in arb_song(), section_windows in any::<bool>()) {
        let t = tok(section_windows);
        let toks = t.encode_piece(&song);
        assert_grammar(&t, &toks)?;
        let d = t.decode(&toks);
        prop_assert_eq!(d.notes.len(), song.notes.len());

        let mut dec: Vec<_> = d.notes.iter().map(|n| (key_decoded(n), *n)).collect();
        let mut orig: Vec<_> = song.notes.iter().map(|n| (key_original(&t, n), *n)).collect();
        dec.sort_by_key(|a| a.0);
        orig.sort_by_key(|a| a.0);
        for ((dk, dn), (ok, on)) in dec.iter().zip(&orig) {
            prop_assert_eq!(dk, ok);
            prop_assert_eq!(dn.pitch, on.pitch);
            prop_assert_eq!(dn.is_drum(), on.is_drum());
            prop_assert!((dn.start_ms - on.start_ms).abs() <= 5.0, "onset {} vs {}", dn.start_ms, on.start_ms);
            if !on.is_drum() {
                let want = on.duration_ms().clamp(10.0, 5000.0);
                prop_assert!((dn.duration_ms() - want).abs() <= 5.0, "duration {} vs {}", dn.duration_ms(), on.duration_ms());
                if on.duration_ms() >= 5000.0 {
                    prop_assert_eq!(dn.duration_ms(), 5000.0);
                }
                prop_assert!((dn.velocity as i32 - on.velocity as i32).abs() <= 5);
                if on.velocity == 127 {
                    prop_assert_eq!(dn.velocity, 127);
                }
            }
        }
        let want: Vec<SectionLabel> = song.sections.iter().map(|s| s.label).collect();
        let got: Vec<SectionLabel> = d.sections.iter().map(|s| s.label).collect();
        prop_assert_eq!(got, want);
        for w in d.sections.windows(2) {
            prop_assert!(w[0].start_ms <= w[1].start_ms && w[0].end_ms == w[1].start_ms);
        }
    }

    #[test]
    fn stream_decoder_matches_decode(song in arb_song(), section_windows in any::<bool>()) {
        let t = tok(section_windows);
        let toks = t.encode_piece(&song);
        let mut d = StreamDecoder::new();
        let mut streamed: Vec<_> = toks.iter().filter_map(|&id| d.push(&t, id)).filter_map(event_key).collect();
        streamed.sort();
        prop_assert_eq!(streamed, decoded_keys(&t, &toks));
    }

    #[test]
    fn snippets_respect_the_budget(song in arb_song(), budget in 0usize..80, section_windows in any::<bool>()) {
        let t = tok(section_windows);
        let toks = t.snippet_tokens(&song.notes, 0.0, budget);
        prop_assert!(toks.len() <= budget);
        prop_assert_ne!(toks.last().copied(), Some(t.time_shift_id()));
        assert_grammar(&t, &toks)?;
        // A truncated snippet is a prefix of the full one.
        let full = t.snippet_tokens(&song.notes, 0.0, usize::MAX);
        prop_assert_eq!(&full[..toks.len()], &toks[..]);
    }

    #[test]
    fn training_sequences_follow_the_grammar(song in arb_song(), f in 0.25f64..=4.0, k in -12i32..=12, section_windows in any::<bool>()) {
        let t = tok(section_windows);
        let ex = t.encode_training(&song, Some("reel")).unwrap();
        assert_grammar(&t, &ex.inline)?;
        assert_grammar(&t, &ex.decoder)?;
        // Augmented training sequences (prompt included) stay well formed.
        assert_grammar(&t, &t.tempo_scale(&ex.inline, f).unwrap())?;
        assert_grammar(&t, &t.pitch_shift(&ex.inline, k))?;
        let piece = decoded_keys(&t, &t.encode_piece(&song));
        prop_assert_eq!(&decoded_keys(&t, &ex.inline), &piece);
        // Streaming the whole training sequence yields only the piece's notes (none from the prompt).
        let mut d = StreamDecoder::new();
        let mut streamed: Vec<_> = ex.inline.iter().filter_map(|&id| d.push(&t, id)).filter_map(event_key).collect();
        streamed.sort();
        prop_assert_eq!(streamed, piece);
    }

    #[test]
    fn pitch_shift_there_and_back(song in arb_song(), k in -24i32..=24, section_windows in any::<bool>()) {
        let t = tok(section_windows);
        let toks = t.encode_piece(&song);
        let shifted = t.pitch_shift(&toks, k);
        assert_grammar(&t, &shifted)?;
        let back = t.pitch_shift(&shifted, -k);
        let want: Vec<_> = decoded_keys(&t, &toks)
            .into_iter()
            .filter(|n| n.2 || (0..=127).contains(&(n.1 as i32 + k)))
            .collect();
        prop_assert_eq!(decoded_keys(&t, &back), want);
    }

    #[test]
    fn velocity_shift_moves_levels(song in arb_song(), k in -14i32..=14, section_windows in any::<bool>()) {
        let t = tok(section_windows);
        let toks = t.encode_piece(&song);
        let shifted = t.velocity_shift(&toks, k);
        prop_assert_eq!(shifted.len(), toks.len());
        let levels = t.velocity_levels();
        for (&a, &b) in toks.iter().zip(&shifted) {
            match (t.kind(a), t.kind(b)) {
                (TokenKind::Note { pitch: p1, velocity: v1, .. }, TokenKind::Note { pitch: p2, velocity: v2, .. }) => {
                    prop_assert_eq!(p1, p2);
                    let i1 = levels.iter().position(|&l| l == v1).unwrap() as i32;
                    let i2 = levels.iter().position(|&l| l == v2).unwrap() as i32;
                    prop_assert_eq!(i2, (i1 + k).clamp(0, levels.len() as i32 - 1));
                }
                _ => prop_assert_eq!(a, b),
            }
        }
    }

    #[test]
    fn tempo_scale_scales_times(song in arb_song(), f in 0.25f64..=4.0, section_windows in any::<bool>()) {
        let t = tok(section_windows);
        let toks = t.encode_piece(&song);
        let scaled = t.tempo_scale(&toks, f).unwrap();
        assert_grammar(&t, &scaled)?;
        let orig = t.decode(&toks);
        let got = t.decode(&scaled);
        prop_assert_eq!(got.notes.len(), orig.notes.len());
        let mut a: Vec<_> = orig.notes.iter().map(|n| (n.start_ms * f, n.pitch, n.is_drum(), n.duration_ms() * f)).collect();
        let mut b: Vec<_> = got.notes.iter().map(|n| (n.start_ms, n.pitch, n.is_drum(), n.duration_ms())).collect();
        // Scaling is monotone, so sorting by (rounded time, pitch, ...) pairs the notes up.
        let key = |x: &(f64, u8, bool, f64)| ((x.0 / 10.0).round() as i64, x.1, x.2, (x.3.min(5000.0) / 10.0).round() as i64);
        a.sort_by_key(key);
        b.sort_by_key(key);
        for (x, y) in a.iter().zip(&b) {
            prop_assert_eq!((x.1, x.2), (y.1, y.2));
            prop_assert!((x.0 - y.0).abs() <= 5.0, "onset {} scaled to {}", x.0, y.0);
            if !x.2 {
                let want = x.3.clamp(10.0, 5000.0);
                prop_assert!((want - y.3).abs() <= 5.0, "duration {} scaled to {}", x.3, y.3);
            }
        }
        let labels = |s: &Song| s.sections.iter().map(|s| s.label).collect::<Vec<_>>();
        prop_assert_eq!(labels(&got), labels(&orig));
        // Every token that is not part of a note or a time shift is kept, in order.
        let others = |v: &[u32]| {
            v.iter()
                .copied()
                .filter(|&id| {
                    matches!(t.kind(id), TokenKind::Section(_) | TokenKind::Start | TokenKind::End | TokenKind::EndingSoon)
                })
                .collect::<Vec<_>>()
        };
        prop_assert_eq!(others(&scaled), others(&toks));
    }

    #[test]
    fn tempo_scale_doubles_onsets(song in arb_song(), section_windows in any::<bool>()) {
        let t = tok(section_windows);
        let toks = t.encode_piece(&song);
        let a = decoded_keys(&t, &toks);
        let b = decoded_keys(&t, &t.tempo_scale(&toks, 2.0).unwrap());
        // Decoded onsets are multiples of 10 ms, so doubling them is exact.
        let mut want: Vec<_> = a.iter().map(|n| (n.0 * 2, n.1, n.2, n.3, (n.4 * 2).min(5000))).collect();
        want.sort();
        prop_assert_eq!(b, want);
    }

    #[test]
    fn tokenizer_json_round_trips(
        step in prop::sample::select(vec![1u32, 5, 10, 20]),
        window_steps in 1u32..600,
        dur_steps in 1u32..600,
        velocity_step in 1u8..=120,
        families in prop::sample::subsequence(GM_FAMILIES.to_vec(), 1..4),
        drums in any::<bool>(),
        n_styles in 0usize..8,
    ) {
        let c = TokenizerConfig {
            window_ms: window_steps * step,
            time_step_ms: step,
            max_duration_ms: dur_steps * step,
            velocity_step,
            instruments: families.iter().map(|f| f.to_string()).collect(),
            drums,
            styles: TokenizerConfig::default().styles.into_iter().take(n_styles).collect(),
            ..TokenizerConfig::default()
        };
        let t = Tokenizer::new(c.clone()).unwrap();
        let back = Tokenizer::from_json(&t.to_json()).unwrap();
        prop_assert_eq!(back.config(), &c);
        prop_assert_eq!(back.hash(), t.hash());
        let levels = t.velocity_levels().len();
        let expected = 12 + families.len() * 128 * levels + if drums { 61 } else { 0 }
            + (window_steps + dur_steps) as usize + 17 + n_styles;
        prop_assert_eq!(t.vocab_size(), expected);
    }

    #[test]
    fn garbage_never_panics(
        seq in prop::collection::vec(prop_oneof![0u32..2800, any::<u32>()], 0..400),
        f in 0.25f64..=4.0,
        k in any::<i32>(),
    ) {
        let t = tok(false);
        let song = t.decode(&seq);
        for w in song.notes.windows(2) {
            prop_assert!((w[0].start_tick, w[0].pitch) <= (w[1].start_tick, w[1].pitch));
        }
        for n in &song.notes {
            prop_assert!(n.end_ms >= n.start_ms && n.start_ms >= 0.0);
        }
        for s in &song.sections {
            prop_assert!(s.end_ms >= s.start_ms);
        }
        t.decode_snippet(&seq);
        t.pitch_shift(&seq, k);
        t.velocity_shift(&seq, k);
        t.tempo_scale(&seq, f).unwrap();
        let mut d = StreamDecoder::new();
        for &id in &seq {
            d.push(&t, id);
            t.allowed_onset_ids(&d);
        }
    }
}
