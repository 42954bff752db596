use super::*;

#[test]
fn decode_example() {
    let t = tok();
    let d = t.decode(&t.encode_piece(&example()));
    assert_eq!(d.ticks_per_quarter, 480);
    assert_eq!(
        d.tempo_map,
        vec![TempoChange {
            tick: 0,
            us_per_quarter: 500_000
        }]
    );
    assert_eq!(
        (
            d.time_signatures[0].numerator,
            d.time_signatures[0].denominator
        ),
        (4, 4)
    );
    let got: Vec<_> = d
        .notes
        .iter()
        .map(|n| {
            (
                n.pitch,
                n.velocity,
                n.channel,
                n.program,
                n.start_ms,
                n.end_ms,
                n.start_tick,
                n.end_tick,
            )
        })
        .collect();
    assert_eq!(
        got,
        vec![
            (60, 80, 0, 0, 0.0, 500.0, 0, 480),
            (64, 60, 0, 0, 1000.0, 1500.0, 960, 1440),
            (36, 100, 9, 0, 6000.0, 6000.0 + DRUM_DURATION_MS, 5760, 5856),
            (67, 100, 0, 0, 6000.0, 8000.0, 5760, 7680),
        ]
    );
    let secs: Vec<_> = d
        .sections
        .iter()
        .map(|s| (s.label, s.start_ms, s.end_ms, s.start_tick))
        .collect();
    assert_eq!(
        secs,
        vec![
            (SectionLabel::A, 0.0, 6000.0, 0),
            (SectionLabel::B, 6000.0, 8000.0, 5760)
        ]
    );
    assert_eq!(d.sections[1].marker_text, "B");
}

#[test]
fn decode_skips_malformed_tokens() {
    let t = tok();
    let seq = ids(
        &t,
        "piano:60:80 <T> onset:100 dur:100 onset:200 dur:10 piano:61:80 onset:300 piano:62:80 onset:400 dur:20 \
         drum:40 dur:10 drum:41 onset:500 <E> piano:63:80 onset:0 dur:10",
    );
    let mut seq2 = vec![u32::MAX, 99_999];
    seq2.extend(&seq);
    let d = t.decode(&seq2);
    let got: Vec<(u8, f64, f64)> = d
        .notes
        .iter()
        .map(|n| (n.pitch, n.start_ms, n.duration_ms()))
        .collect();
    // 60 lost its onset to `<T>`; 61 lost its duration; 40 lost its onset; 63 is after `<E>`.
    assert_eq!(
        got,
        vec![(62, 5400.0, 20.0), (41, 5500.0, DRUM_DURATION_MS)]
    );
    assert!(t.decode(&[]).notes.is_empty());
}

#[test]
fn stream_decoder_grammar_state() {
    let t = tok();
    let mut d = StreamDecoder::new();
    assert_eq!(d.expects(), Expect::Any);
    let seq = ids(
        &t,
        "piano:60:80 onset:450 dur:100 drum:36 onset:500 <T> <B_SECTION> <D> <E>",
    );
    assert_eq!(d.push(&t, seq[0]), None);
    assert_eq!(d.expects(), Expect::Onset);
    assert_eq!(d.push(&t, seq[1]), None);
    assert_eq!(d.expects(), Expect::Dur);
    assert_eq!(d.min_onset_ms(), 450);
    assert_eq!(
        t.allowed_onset_ids(&d),
        t.onset_ids().start + 45..t.onset_ids().end
    );
    assert_eq!(
        d.push(&t, seq[2]),
        Some(StreamEvent::Note {
            pitch: 60,
            velocity: 80,
            instrument: 0,
            drum: false,
            start_ms: 450.0,
            dur_ms: 100.0
        })
    );
    assert_eq!(d.push(&t, seq[3]), None);
    assert_eq!(d.expects(), Expect::Onset);
    assert!(matches!(
        d.push(&t, seq[4]),
        Some(StreamEvent::Note {
            pitch: 36,
            drum: true,
            ..
        })
    ));
    assert_eq!(d.push(&t, seq[5]), None);
    assert_eq!(
        (d.window_start_ms(), d.min_onset_ms(), d.now_ms()),
        (5000, 0, 5000.0)
    );
    assert_eq!(
        d.push(&t, seq[6]),
        Some(StreamEvent::Section(SectionLabel::B))
    );
    assert_eq!(d.push(&t, seq[7]), Some(StreamEvent::EndingSoon));
    assert_eq!(d.push(&t, seq[8]), Some(StreamEvent::End));
    assert_eq!(d.push(&t, t.start_id()), None);
    assert_eq!(d, StreamDecoder::new());
}

#[test]
fn onset_before_the_last_one_votes_for_the_next_window() {
    let t = tok();
    let mut d = StreamDecoder::new();
    let seq = ids(&t, "piano:60:80 onset:4800 dur:100 piano:62:80");
    for &id in &seq {
        d.push(&t, id);
    }
    assert_eq!(d.expects(), Expect::Onset);
    // The grammar: any onset fits a pending note, nothing else does.
    assert!(d.fits(&t, t.onset_id(0.0).unwrap()) && d.fits(&t, t.onset_id(4990.0).unwrap()));
    assert!(!d.fits(&t, t.dur_id(100.0)) && !d.fits(&t, t.time_shift_id()));
    assert_eq!(
        d.onset_vote(&t, t.onset_id(4800.0).unwrap()),
        OnsetVote::Here
    );
    assert_eq!(
        d.onset_vote(&t, t.onset_id(4900.0).unwrap()),
        OnsetVote::Here
    );
    assert_eq!(
        d.onset_vote(&t, t.onset_id(300.0).unwrap()),
        OnsetVote::NextWindow
    );
    // Taking the note back, then `<T>` and the note again: the onset lands in the next window.
    let before = d;
    assert!(d.retract_pending());
    assert_eq!(d.expects(), Expect::Any);
    assert!(!d.retract_pending(), "nothing pending any more");
    d.push(&t, t.time_shift_id());
    d.push(&t, seq[3]);
    assert_ne!(d, before);
    assert_eq!(
        d.onset_vote(&t, t.onset_id(300.0).unwrap()),
        OnsetVote::Here
    );
    d.push(&t, t.onset_id(300.0).unwrap());
    assert!(matches!(
        d.push(&t, t.dur_id(100.0)),
        Some(StreamEvent::Note { pitch: 62, start_ms, .. }) if start_ms == 5300.0
    ));
    assert!(d.fits(&t, t.time_shift_id()) && !d.fits(&t, t.onset_id(0.0).unwrap()));
}

#[test]
fn stream_decoder_restarts_time_per_snippet_and_is_silent_in_the_prompt() {
    let t = tok();
    let seq = ids(
        &t,
        "<PROMPT_START> <A_SECTION> piano:60:80 onset:3000 dur:100 <B_SECTION> piano:62:80 onset:100 dur:100 \
         <PROMPT_END> <S> <A_SECTION> piano:64:80 onset:200 dur:100",
    );
    let mut d = StreamDecoder::new();
    let mut events = Vec::new();
    for (i, &id) in seq.iter().enumerate() {
        if i == 6 {
            // Right after `<B_SECTION>` in the prompt: snippet B's time line starts afresh.
            assert_eq!((d.window_start_ms(), d.min_onset_ms()), (0, 0));
        }
        events.extend(d.push(&t, id));
    }
    assert_eq!(
        events,
        vec![
            StreamEvent::Section(SectionLabel::A),
            StreamEvent::Note {
                pitch: 64,
                velocity: 80,
                instrument: 0,
                drum: false,
                start_ms: 200.0,
                dur_ms: 100.0
            },
        ]
    );
}
