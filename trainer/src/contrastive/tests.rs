use super::*;
use rand::SeedableRng;
use rand::rngs::StdRng;
use staria_models::tokenizer::TokenizerConfig;
use staria_models::{Note, Section, Song};

fn note(pitch: u8, start_ms: f64) -> Note {
    Note {
        pitch,
        velocity: 80,
        channel: 0,
        program: 0,
        start_tick: (start_ms * 0.96) as u64,
        end_tick: ((start_ms + 200.0) * 0.96) as u64,
        start_ms,
        end_ms: start_ms + 200.0,
    }
}

/// A piece `form` of 2 s sections, 8 notes each; letter `c`'s notes start at `base[c]`
/// (repeats of a letter identical unless `vary` shifts the second occurrence).
fn piece(tok: &Tokenizer, form: &str, base: u8, vary: i32) -> Vec<u32> {
    let mut notes = Vec::new();
    let mut sections = Vec::new();
    let mut seen = std::collections::HashMap::new();
    for (k, c) in form.chars().enumerate() {
        let t0 = k as f64 * 2000.0;
        let count = seen.entry(c).or_insert(0);
        let shift = if *count > 0 { vary } else { 0 };
        *count += 1;
        let root = i32::from(base) + 7 * (c as i32 - 'A' as i32) + shift;
        for i in 0..8 {
            notes.push(note(
                (root + [0, 2, 4, 5, 7, 5, 4, 2][i]) as u8,
                t0 + i as f64 * 250.0,
            ));
        }
        let label = SectionLabel::from_letter(c).unwrap();
        sections.push(Section {
            label,
            marker_text: c.to_string(),
            start_tick: (t0 * 0.96) as u64,
            end_tick: ((t0 + 2000.0) * 0.96) as u64,
            start_ms: t0,
            end_ms: t0 + 2000.0,
        });
    }
    tok.encode_piece(&Song::from_ms_notes(notes, sections, 120.0))
}

#[test]
fn every_occurrence_of_a_letter_is_a_sample() {
    let tok = Tokenizer::new(TokenizerConfig::default()).unwrap();
    let p = PieceSections::of_piece(&tok, "x", &piece(&tok, "AABA", 60, 5), 64).unwrap();
    assert_eq!(p.letters.len(), 2);
    assert_eq!(p.letters[0].0, SectionLabel::A);
    assert_eq!(p.letters[0].1.len(), 3, "A occurs three times");
    assert_eq!(p.letters[1].1.len(), 1);
    assert_eq!(p.repeated_letters(), 1);
    // The repeat is the first occurrence transposed: same length, different notes; the third
    // occurrence is also transposed by the same amount.
    let a = &p.letters[0].1;
    assert_eq!(tok.pitch_shift(&a[0], 5), a[1]);
    assert_eq!(a[1], a[2]);
}

#[test]
fn batches_hold_every_section_of_a_piece_and_pair_repeats() {
    let tok = Tokenizer::new(TokenizerConfig::default()).unwrap();
    let pool: Vec<PieceSections> = (0..6u8)
        .map(|i| {
            PieceSections::of_piece(
                &tok,
                &format!("p{i}"),
                &piece(&tok, "AABB", 50 + 3 * i, 2),
                64,
            )
            .unwrap()
        })
        .collect();
    let data = DataSection::default();
    let src = ViewSource {
        tok: &tok,
        data: &data,
        pieces: &pool,
        synthetic: &[],
        synthetic_fraction: 0.0,
        max_len: 64,
    };
    let b = batch_views(&src, 8, &mut StdRng::seed_from_u64(1)).unwrap();
    assert_eq!(b.items.len(), 8);
    assert_eq!(b.views.len(), 16);
    // Four pieces, each with both its letters: the same piece's other section is in the
    // batch as a negative.
    for &(_, pi, _) in &b.items {
        assert_eq!(b.items.iter().filter(|x| x.1 == pi).count(), 2);
    }
    // Every letter of these pieces repeats, so every pair spans two occurrences.
    assert_eq!(b.cross_occurrence, 8);
}

#[test]
fn retrieval_scores_a_perfect_and_a_blind_encoder_apart() {
    // The bookkeeping, on an untrained tiny encoder: counts, chance levels, ranges.
    let tok = Tokenizer::new(TokenizerConfig::default()).unwrap();
    let pool: Vec<PieceSections> = (0..5u8)
        .map(|i| {
            PieceSections::of_piece(
                &tok,
                &format!("p{i}"),
                &piece(&tok, "ABAB", 48 + 5 * i, 0),
                64,
            )
            .unwrap()
        })
        .collect();
    let cfg = EncoderConfig::tiny(tok.vocab_size());
    let model = ContrastiveModel::build(cfg, 8, SeededVars::new(1), &Device::Cpu).unwrap();
    let opts = RetrievalOptions {
        batch: 5,
        augment: false,
        ..RetrievalOptions::default()
    };
    let r = retrieval(
        &model,
        &tok,
        &DataSection::default(),
        &pool,
        64,
        &opts,
        &Device::Cpu,
    )
    .unwrap();
    assert_eq!(r.pieces, 5);
    assert_eq!(r.queries, 10);
    assert_eq!(r.repeat_queries, 10);
    assert_eq!(r.identical_repeats, 10, "verbatim repeats are counted");
    assert!((r.piece_chance - 0.5).abs() < 1e-9, "{}", r.piece_chance);
    assert!((r.batch_chance - 0.1).abs() < 1e-9, "{}", r.batch_chance);
    for x in [r.piece_accuracy, r.batch_accuracy, r.latent_piece_accuracy] {
        assert!((0.0..=1.0).contains(&x));
    }
    // Found among the whole batch implies found among its own piece's sections.
    assert!(r.batch_accuracy <= r.piece_accuracy + 1e-9);
    assert!(r.latent_batch_accuracy <= r.latent_piece_accuracy + 1e-9);
    // One-letter pieces are no retrieval task.
    let single = vec![PieceSections::of_piece(&tok, "s", &piece(&tok, "AA", 60, 0), 64).unwrap()];
    let e = retrieval(
        &model,
        &tok,
        &DataSection::default(),
        &single,
        64,
        &opts,
        &Device::Cpu,
    )
    .unwrap_err();
    assert!(e.to_string().contains("two or more section letters"), "{e}");
}
