use super::*;
use staria_models::tokenizer::TokenizerConfig;

fn tok() -> Tokenizer {
    Tokenizer::new(TokenizerConfig::default()).unwrap()
}

fn allowed(logits: &[f32]) -> Vec<u32> {
    logits
        .iter()
        .enumerate()
        .filter(|(_, l)| l.is_finite())
        .map(|(i, _)| i as u32)
        .collect()
}

fn masked(cd: &ConstrainedDecoder, vocab: usize) -> Vec<u32> {
    let mut l = vec![0.0f32; vocab];
    cd.apply(&mut l);
    allowed(&l)
}

#[test]
fn scale_masks_and_parsing() {
    assert_eq!(
        Scale::new(0, ScaleKind::Major).pitch_classes(),
        0b1010_1011_0101
    );
    // A minor has the same pitch classes as C major.
    assert_eq!(
        "A minor".parse::<Scale>().unwrap().pitch_classes(),
        Scale::new(0, ScaleKind::Major).pitch_classes()
    );
    assert_eq!(
        "f#-dorian".parse::<Scale>().unwrap(),
        Scale::new(6, ScaleKind::Dorian)
    );
    assert_eq!(
        "Bb:mixolydian".parse::<Scale>().unwrap(),
        Scale::new(10, ScaleKind::Mixolydian)
    );
    assert_eq!(
        "B blues".parse::<Scale>().unwrap(),
        Scale::new(11, ScaleKind::Blues)
    );
    assert_eq!(
        "Cb".parse::<Scale>().unwrap(),
        Scale::new(11, ScaleKind::Major)
    );
    assert_eq!("chromatic".parse::<Scale>().unwrap().pitch_classes(), 0xFFF);
    assert_eq!(
        Scale::new(9, ScaleKind::MinorPentatonic)
            .pitch_classes()
            .count_ones(),
        5
    );
    let e = "H major".parse::<Scale>().unwrap_err();
    assert!(e.contains("\"H major\""), "{e}");
    assert!("C lydianish".parse::<Scale>().is_err());
    assert!(
        Scale::new(0, ScaleKind::Major).contains(60)
            && !Scale::new(0, ScaleKind::Major).contains(61)
    );
    for k in ScaleKind::ALL {
        assert_eq!(ScaleKind::parse(k.name()), Some(k));
    }
}

#[test]
fn validate_names_the_problem() {
    let c = Constraints {
        pitch_min: 70,
        pitch_max: 60,
        ..Default::default()
    };
    assert!(c.validate().unwrap_err().contains("pitch range"));
    let c = Constraints {
        max_polyphony: Some(0),
        ..Default::default()
    };
    assert!(c.validate().unwrap_err().contains("polyphony"));
    // 61..=61 is C#, not in C major.
    let c = Constraints {
        pitch_min: 61,
        pitch_max: 61,
        scale: Some(Scale::new(0, ScaleKind::Major)),
        ..Default::default()
    };
    assert!(c.validate().unwrap_err().contains("C major"));
}

#[test]
fn any_mask_keeps_allowed_pitches_and_time_shift_only() {
    let t = tok();
    let c = Constraints {
        pitch_min: 60,
        pitch_max: 72,
        scale: Some(Scale::new(0, ScaleKind::Major)),
        ..Default::default()
    };
    let cd = ConstrainedDecoder::new(&t, &c).unwrap();
    let ok = masked(&cd, t.vocab_size());
    let mut pitches = std::collections::BTreeSet::new();
    for &id in &ok {
        match t.kind(id) {
            TokenKind::Note { pitch, .. } => {
                pitches.insert(pitch);
            }
            TokenKind::TimeShift => {}
            k => panic!("{k:?} must be masked at the start of a note"),
        }
    }
    assert_eq!(
        pitches.into_iter().collect::<Vec<_>>(),
        vec![60, 62, 64, 65, 67, 69, 71, 72]
    );
    // Every velocity level of an allowed pitch stays.
    assert_eq!(ok.len(), 8 * t.velocity_levels().len() + 1);
}

#[test]
fn early_end_tokens_and_drums_follow_their_flags() {
    let t = tok();
    let c = Constraints {
        drums: true,
        allow_early_end: true,
        ..Default::default()
    };
    let cd = ConstrainedDecoder::new(&t, &c).unwrap();
    let ok = masked(&cd, t.vocab_size());
    assert!(ok.contains(&t.end_id()) && ok.contains(&t.ending_soon_id()));
    assert!(ok.contains(&t.section_id(staria_models::SectionLabel::B)));
    assert!(t.drum_ids().all(|id| ok.contains(&id)));
    for id in [
        t.start_id(),
        t.pad_id(),
        t.unknown_id(),
        t.prompt_start_id(),
        t.prompt_end_id(),
    ] {
        assert!(!ok.contains(&id), "{:?}", t.token(id));
    }
    assert!(
        t.form_ids()
            .chain(t.style_ids())
            .chain(t.onset_ids())
            .all(|id| !ok.contains(&id))
    );
    let cd = ConstrainedDecoder::new(&t, &Constraints::default()).unwrap();
    let ok = masked(&cd, t.vocab_size());
    assert!(!ok.contains(&t.end_id()) && t.drum_ids().all(|id| !ok.contains(&id)));
}

#[test]
fn grammar_after_note_only_onsets_not_before_the_last_then_only_durations() {
    let t = tok();
    let mut cd = ConstrainedDecoder::new(&t, &Constraints::default()).unwrap();
    let v = t.vocab_size();
    let note = t.note_id(0, 60, 80).unwrap();
    cd.push(&t, note);
    assert_eq!(masked(&cd, v), t.onset_ids().collect::<Vec<_>>());
    cd.push(&t, t.onset_id(450.0).unwrap());
    assert_eq!(masked(&cd, v), t.dur_ids().collect::<Vec<_>>());
    let ev = cd.push(&t, t.dur_id(500.0));
    assert!(matches!(ev, Some(StreamEvent::Note { pitch: 60, .. })));
    cd.push(&t, note);
    // Onsets never go back within a window.
    let first = t.onset_id(450.0).unwrap();
    assert_eq!(
        masked(&cd, v),
        (first..t.onset_ids().end).collect::<Vec<_>>()
    );
}

#[test]
fn span_bounds_onsets_and_time_shifts() {
    let t = tok(); // 5000 ms windows, 10 ms steps
    let v = t.vocab_size();
    let mut cd = ConstrainedDecoder::new(&t, &Constraints::default()).unwrap();
    cd.set_span(1000.0, 2500.0);
    assert!(
        cd.ends_span(&t, t.time_shift_id()),
        "<T> would leave the span"
    );
    // An empty span cannot be left: `<T>` is masked and onsets stay inside it.
    assert!(!masked(&cd, v).contains(&t.time_shift_id()));
    cd.push(&t, t.note_id(0, 60, 80).unwrap());
    let on = masked(&cd, v);
    assert_eq!(on.first(), t.onset_id(1000.0).as_ref());
    assert_eq!(on.last(), t.onset_id(2490.0).as_ref());
    cd.push(&t, t.onset_id(1200.0).unwrap());
    cd.push(&t, t.dur_id(100.0));
    assert_eq!(cd.notes_in_span(), 1);
    // Once it has a note, leaving the span is possible again: it is how the model ends it.
    assert!(masked(&cd, v).contains(&t.time_shift_id()));
    cd.push(&t, t.note_id(0, 60, 80).unwrap());
    let on = masked(&cd, v);
    assert_eq!(on.first(), t.onset_id(1200.0).as_ref());
    assert_eq!(on.last(), t.onset_id(4990.0).as_ref());
    assert!(!cd.ends_span(&t, t.onset_id(2490.0).unwrap()));
    assert!(cd.ends_span(&t, t.onset_id(2500.0).unwrap()));
    assert!(!cd.ends_span(&t, t.note_id(0, 62, 80).unwrap()));
    cd.push(&t, t.onset_id(2490.0).unwrap());
    cd.push(&t, t.dur_id(100.0));
    // At 2490 a later onset (>= 2490) is still inside, so not exhausted yet.
    assert!(!cd.span_exhausted());
    cd.set_span(2500.0, 12000.0);
    assert_eq!(cd.notes_in_span(), 0);
    assert!(!cd.ends_span(&t, t.time_shift_id()));
    cd.push(&t, t.time_shift_id());
    cd.push(&t, t.time_shift_id());
    // Window 10000..15000, span ends at 12000: onsets from 2000 ms and <T> end the span.
    assert!(cd.ends_span(&t, t.time_shift_id()));
    cd.push(&t, t.note_id(0, 60, 80).unwrap());
    assert!(!cd.ends_span(&t, t.onset_id(1990.0).unwrap()));
    assert!(cd.ends_span(&t, t.onset_id(2000.0).unwrap()));
    cd.push(&t, t.onset_id(1990.0).unwrap());
    cd.push(&t, t.dur_id(10.0));
    assert!(!cd.span_exhausted());
    cd.set_span(0.0, 11990.0);
    assert!(cd.span_exhausted());
}

#[test]
fn an_empty_span_is_not_ended_early_but_a_full_voice_set_may_end_it() {
    let t = tok();
    let v = t.vocab_size();
    let c = Constraints {
        allow_early_end: true,
        max_polyphony: Some(1),
        ..Constraints::default()
    };
    let mut cd = ConstrainedDecoder::new(&t, &c).unwrap();
    // A note sounding from before the span until after it: nothing fits in the span.
    cd.push(&t, t.note_id(0, 60, 80).unwrap());
    cd.push(&t, t.onset_id(0.0).unwrap());
    cd.push(&t, t.dur_id(4000.0));
    cd.set_span(1000.0, 2000.0);
    assert!(masked(&cd, v).contains(&t.end_id()));
    // Once a voice is free in time, the empty span must get its note first.
    cd.set_span(1000.0, 4500.0);
    let m = masked(&cd, v);
    assert!(!m.contains(&t.end_id()));
    assert!(!m.contains(&t.time_shift_id()));
    assert!(m.contains(&t.note_id(0, 64, 80).unwrap()));
}

#[test]
fn polyphony_limit_delays_onsets_until_a_voice_frees() {
    let t = tok();
    let v = t.vocab_size();
    let c = Constraints {
        max_polyphony: Some(2),
        ..Default::default()
    };
    let mut cd = ConstrainedDecoder::new(&t, &c).unwrap();
    let play = |cd: &mut ConstrainedDecoder, pitch: u8, at: f64, dur: f64| {
        cd.push(&t, t.note_id(0, pitch, 80).unwrap());
        cd.push(&t, t.onset_id(at).unwrap());
        cd.push(&t, t.dur_id(dur));
    };
    play(&mut cd, 60, 0.0, 1000.0); // 0..1000
    play(&mut cd, 64, 100.0, 500.0); // 100..600
    cd.push(&t, t.note_id(0, 67, 80).unwrap());
    let on = masked(&cd, v);
    assert_eq!(
        on.first(),
        t.onset_id(600.0).as_ref(),
        "third voice waits for the 600 ms end"
    );
    cd.push(&t, t.onset_id(600.0).unwrap());
    cd.push(&t, t.dur_id(2000.0)); // 600..2600; sounding: 0..1000, 600..2600
    cd.push(&t, t.note_id(0, 72, 80).unwrap());
    assert_eq!(masked(&cd, v).first(), t.onset_id(1000.0).as_ref());
    // Drums ignore polyphony.
    let c = Constraints {
        max_polyphony: Some(1),
        drums: true,
        ..Default::default()
    };
    let mut cd = ConstrainedDecoder::new(&t, &c).unwrap();
    play(&mut cd, 60, 0.0, 3000.0);
    cd.push(&t, t.drum_id(36).unwrap());
    assert_eq!(masked(&cd, v).first(), t.onset_id(0.0).as_ref());
}

/// The generator's onset step (`Generator::run_span`) on constructed logits: sample under
/// `apply_open`, read the onset; a vote takes the note back, feeds `<T>` and the note, and
/// samples again. Returns the tokens fed after the note token was first fed.
fn onset_with_votes(
    t: &Tokenizer,
    cd: &mut ConstrainedDecoder,
    sampler: &mut crate::sampling::Sampler,
    note: u32,
    logits: &[f32],
) -> Vec<u32> {
    let mut fed = Vec::new();
    loop {
        let mut l = logits.to_vec();
        cd.apply_open(&mut l);
        let mut id = sampler.sample(&l).unwrap();
        match cd.read_onset(t, id) {
            OnsetRead::Accept => {}
            OnsetRead::TimeShift => {
                assert!(cd.retract_pending());
                fed.pop();
                for tok in [t.time_shift_id(), note] {
                    cd.push(t, tok);
                    fed.push(tok);
                }
                continue;
            }
            OnsetRead::Clamp => {
                let mut l = logits.to_vec();
                cd.apply(&mut l);
                id = sampler.sample(&l).unwrap();
            }
        }
        cd.push(t, id);
        fed.push(id);
        return fed;
    }
}

/// Onset logits: 0 on `steps` (10 ms each), -20 elsewhere; other tokens 0.
fn onset_logits(t: &Tokenizer, steps: Range<u32>) -> Vec<f32> {
    let mut l = vec![0.0f32; t.vocab_size()];
    for (i, id) in t.onset_ids().enumerate() {
        l[id as usize] = if steps.contains(&(i as u32)) {
            0.0
        } else {
            -20.0
        };
    }
    l
}

#[test]
fn an_onset_before_the_last_one_is_a_vote_for_the_next_window() {
    use crate::sampling::{Sampler, SamplingParams};
    let t = tok();
    let note = t.note_id(0, 62, 80).unwrap();
    // All onset mass on 0..300 ms while the window's last onset is 4800 ms.
    let logits = onset_logits(&t, 0..30);
    let run = |seed: u64, span: Option<(f64, f64)>| {
        let mut cd = ConstrainedDecoder::new(&t, &Constraints::default()).unwrap();
        if let Some((a, b)) = span {
            cd.set_span(a, b);
        }
        cd.push(&t, t.note_id(0, 60, 80).unwrap());
        cd.push(&t, t.onset_id(4800.0).unwrap());
        cd.push(&t, t.dur_id(100.0));
        cd.push(&t, note);
        assert_eq!(cd.expects(), Expect::Onset);
        let params = SamplingParams {
            temperature: 1.0,
            top_p: 1.0,
            min_p: 0.0,
            seed,
            follow_bias: 0.0,
        };
        let mut sampler = Sampler::new(t.vocab_size(), params);
        let fed = onset_with_votes(&t, &mut cd, &mut sampler, note, &logits);
        let ev = cd.push(&t, t.dur_id(100.0));
        (fed, ev, cd)
    };
    for seed in 0..5 {
        let (fed, ev, cd) = run(seed, None);
        // `<T>`, the note again, its onset in the new window.
        assert_eq!(fed.len(), 3, "seed {seed}: {fed:?}");
        assert_eq!(fed[..2], [t.time_shift_id(), note]);
        let Some(StreamEvent::Note { start_ms, .. }) = ev else {
            panic!("{ev:?}");
        };
        assert!((5000.0..5300.0).contains(&start_ms), "{start_ms}");
        assert_eq!(cd.decoder().window_start_ms(), 5000);
        // The same seed gives the same tokens.
        assert_eq!(run(seed, None).0, fed);
    }
    // The plain mask (`apply`) would have put the note on the window's last onset.
    let (_, _, mut cd) = run(0, None);
    cd.push(&t, t.note_id(0, 60, 80).unwrap());
    cd.push(&t, t.onset_id(4800.0).unwrap());
    cd.push(&t, t.dur_id(100.0));
    cd.push(&t, note);
    let mut l = logits.clone();
    cd.apply(&mut l);
    assert_eq!(allowed(&l).first(), t.onset_id(4800.0).as_ref());

    // Span end: `<T>` would leave a span ending at 5000 ms, so no vote: today's behaviour,
    // the note goes to the last onset.
    let (fed, ev, _) = run(3, Some((0.0, 5000.0)));
    assert_eq!(fed.len(), 1);
    assert!(matches!(ev, Some(StreamEvent::Note { start_ms, .. }) if start_ms >= 4800.0));
    // A span that goes on past the next window: the vote stands.
    let (fed, _, _) = run(3, Some((0.0, 10_001.0)));
    assert_eq!(fed[0], t.time_shift_id());
}

#[test]
fn onsets_between_the_last_one_and_a_busy_voice_are_clamped_not_voted() {
    let t = tok();
    let c = Constraints {
        max_polyphony: Some(1),
        ..Default::default()
    };
    let mut cd = ConstrainedDecoder::new(&t, &c).unwrap();
    cd.push(&t, t.note_id(0, 60, 80).unwrap());
    cd.push(&t, t.onset_id(1000.0).unwrap());
    cd.push(&t, t.dur_id(2000.0)); // busy until 3000
    cd.push(&t, t.note_id(0, 62, 80).unwrap());
    assert!(cd.onset_may_vote());
    assert_eq!(
        cd.read_onset(&t, t.onset_id(500.0).unwrap()),
        OnsetRead::TimeShift
    );
    assert_eq!(
        cd.read_onset(&t, t.onset_id(2000.0).unwrap()),
        OnsetRead::Clamp
    );
    assert_eq!(
        cd.read_onset(&t, t.onset_id(3000.0).unwrap()),
        OnsetRead::Accept
    );
    // `apply_open` keeps the whole window, `apply` only from the free voice on.
    let v = t.vocab_size();
    let mut l = vec![0.0; v];
    cd.apply_open(&mut l);
    assert_eq!(allowed(&l), t.onset_ids().collect::<Vec<_>>());
    assert_eq!(masked(&cd, v).first(), t.onset_id(3000.0).as_ref());
    // At the window start there is nothing before the last onset: no vote.
    let mut cd = ConstrainedDecoder::new(&t, &Constraints::default()).unwrap();
    cd.push(&t, t.note_id(0, 62, 80).unwrap());
    assert!(!cd.onset_may_vote());
}

#[test]
fn busy_voices_past_the_window_mask_notes_but_not_time_shift() {
    let t = tok();
    let v = t.vocab_size();
    let c = Constraints {
        max_polyphony: Some(1),
        ..Default::default()
    };
    let mut cd = ConstrainedDecoder::new(&t, &c).unwrap();
    cd.push(&t, t.note_id(0, 60, 80).unwrap());
    cd.push(&t, t.onset_id(4000.0).unwrap());
    cd.push(&t, t.dur_id(3000.0)); // sounds until 7000, past the 5000 ms window
    let ok = masked(&cd, v);
    assert_eq!(ok, vec![t.time_shift_id()]);
    assert!(!cd.span_exhausted());
    cd.push(&t, t.time_shift_id());
    cd.push(&t, t.note_id(0, 62, 80).unwrap());
    assert_eq!(masked(&cd, v).first(), t.onset_id(2000.0).as_ref());
    // With the span ending before the voice frees, the span is over.
    let mut cd = ConstrainedDecoder::new(&t, &c).unwrap();
    cd.set_span(0.0, 5000.0);
    cd.push(&t, t.note_id(0, 60, 80).unwrap());
    cd.push(&t, t.onset_id(4000.0).unwrap());
    cd.push(&t, t.dur_id(3000.0));
    assert!(cd.span_exhausted());
}

/// On a two-instrument vocabulary `only_instrument` leaves exactly that instrument's notes
/// (within the pitch range) and the rest of the `Any` mask as it was; reading a note of the
/// other instrument still works.
#[test]
fn only_instrument_masks_the_other_instruments_notes() {
    let t = Tokenizer::new(TokenizerConfig {
        instruments: vec!["piano".into(), "bass".into()],
        ..TokenizerConfig::default()
    })
    .unwrap();
    let c = Constraints {
        pitch_min: 36,
        pitch_max: 59,
        ..Constraints::default()
    };
    let full = ConstrainedDecoder::new(&t, &c).unwrap();
    let before = masked(&full, t.vocab_size());
    for (only, other) in [(1u8, 0u8), (0, 1)] {
        let mut cd = full.clone();
        cd.only_instrument(&t, only);
        let after = masked(&cd, t.vocab_size());
        let notes: Vec<u32> = after
            .iter()
            .copied()
            .filter(|&id| t.note_ids().contains(&id))
            .collect();
        assert_eq!(notes.len(), 24 * t.velocity_levels().len());
        for &id in &notes {
            let TokenKind::Note {
                instrument, pitch, ..
            } = t.kind(id)
            else {
                panic!("{id} is not a note");
            };
            assert!(instrument == only && (36..=59).contains(&pitch), "{id}");
        }
        let others = |v: &[u32]| -> Vec<u32> {
            v.iter()
                .copied()
                .filter(|id| !t.note_ids().contains(id))
                .collect()
        };
        assert_eq!(others(&after), others(&before));
        // The other voice's notes (the performer's) are still read.
        let id = t.note_id(other, 72, 80).unwrap();
        cd.push(&t, id);
        assert_eq!(cd.expects(), Expect::Onset);
        cd.restart();
        assert_eq!(masked(&cd, t.vocab_size()), after, "restart keeps it");
    }
    let mut none = full.clone();
    none.only_instrument(&t, 2);
    assert!(
        masked(&none, t.vocab_size())
            .iter()
            .all(|id| !t.note_ids().contains(id))
    );
}

/// A section's span clips its notes at its end; an optional span (the live look-ahead) only
/// bounds where notes start (`Generator::run_span` clips at `notes_end_ms`).
#[test]
fn only_a_sections_span_end_clips_notes() {
    let t = tok();
    let mut cd = ConstrainedDecoder::new(&t, &Constraints::default()).unwrap();
    assert_eq!(cd.notes_end_ms(), f64::INFINITY);
    cd.set_span(0.0, 2000.0);
    assert_eq!(cd.notes_end_ms(), 2000.0);
    cd.set_span_end(8000.0);
    assert_eq!(cd.notes_end_ms(), 8000.0);
    cd.set_optional_span(1000.0, 1500.0);
    assert_eq!(cd.span(), (1000.0, 1500.0));
    assert_eq!(cd.notes_end_ms(), f64::INFINITY);
    cd.set_span(0.0, 2000.0);
    cd.restart();
    assert_eq!(cd.notes_end_ms(), f64::INFINITY);
}
