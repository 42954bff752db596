use super::*;

#[test]
fn section_windows_tags_follow_their_onset_and_start_a_window() {
    let t = windows_tok();
    let toks = t.encode_piece(&example());
    assert_eq!(strs(&t, &toks), EXAMPLE_WINDOWS);
    // Decoding gives the legacy layout's notes, and sections at their exact starts.
    let (d, legacy) = (
        t.decode(&toks),
        tok().decode(&tok().encode_piece(&example())),
    );
    assert_eq!(d.notes, legacy.notes);
    let starts: Vec<_> = d.sections.iter().map(|s| (s.label, s.start_ms)).collect();
    assert_eq!(starts, [(SectionLabel::A, 0.0), (SectionLabel::B, 5000.0)]);

    // A section starting part-way through a window: its onsets count from its start.
    let s = song(
        vec![
            note(60, 80, 0.0, 100.0),
            note(62, 80, 3200.0, 100.0),
            note(64, 80, 3300.0, 100.0),
            note(65, 80, 9000.0, 100.0),
        ],
        vec![
            section(SectionLabel::A, 0.0, 3200.0),
            section(SectionLabel::B, 3200.0, 10_000.0),
        ],
    );
    let toks = t.encode_piece(&s);
    assert_eq!(
        strs(&t, &toks),
        "<S> onset:0 <A_SECTION> piano:60:80 onset:0 dur:100 onset:3200 <B_SECTION> \
         piano:62:80 onset:0 dur:100 piano:64:80 onset:100 dur:100 <T> <D> piano:65:80 onset:800 \
         dur:100 <E>"
    );
    let d = t.decode(&toks);
    let times: Vec<f64> = d.notes.iter().map(|n| n.start_ms).collect();
    assert_eq!(times, [0.0, 3200.0, 3300.0, 9000.0]);
    assert_eq!(d.sections[1].start_ms, 3200.0);
    assert_eq!(t.tempo_scale(&toks, 1.0).unwrap(), toks);
}

/// The point of the layout: a section restated later, at any phase of a window, is written
/// with the very onset tokens of its snippet in the prompt.
#[test]
fn a_restated_section_reads_as_its_snippet() {
    let t = windows_tok();
    let phrase = [(60, 0.0), (62, 250.0), (64, 500.0), (65, 1250.0)];
    let mut notes = Vec::new();
    let starts = [0.0, 2000.0, 3700.0];
    for &start in &starts {
        notes.extend(phrase.iter().map(|&(p, at)| note(p, 80, start + at, 200.0)));
    }
    let s = song(
        notes,
        vec![
            section(SectionLabel::A, 0.0, 2000.0),
            section(SectionLabel::B, 2000.0, 3700.0),
            section(SectionLabel::A, 3700.0, 5700.0),
        ],
    );
    let snippet = t.extract_snippet(&s, SectionLabel::A, 256).unwrap();
    let body = t.encode_piece(&s);
    let a = t.section_id(SectionLabel::A);
    let second = body.iter().rposition(|&id| id == a).unwrap();
    // After the tag (as after the snippet's tag in a prompt), the notes up to `<E>`.
    assert_eq!(&body[second + 1..body.len() - 1], &snippet[..]);
    // The legacy layout writes them shifted by the section's phase in its window.
    let legacy = tok().encode_piece(&s);
    let second = legacy.iter().rposition(|&id| id == a).unwrap();
    assert_ne!(&legacy[second + 1..legacy.len() - 1], &snippet[..]);
}

#[test]
fn stream_decoder_reads_a_section_start_and_its_tag() {
    let t = windows_tok();
    let mut d = StreamDecoder::new();
    for id in ids(
        &t,
        "<S> piano:60:80 onset:700 dur:10 <T> piano:60:80 onset:400 dur:10",
    ) {
        d.push(&t, id);
    }
    assert_eq!((d.window_start_ms(), d.min_onset_ms()), (5000, 400));
    assert_eq!(d.push(&t, ids(&t, "onset:1200")[0]), None);
    assert!(d.section_pending());
    assert!(!d.retract_pending(), "only notes are taken back");
    assert_eq!(
        d.push(&t, t.section_id(SectionLabel::B)),
        Some(StreamEvent::Section(SectionLabel::B))
    );
    assert!(!d.section_pending());
    assert_eq!((d.window_start_ms(), d.min_onset_ms()), (6200, 0));
    // A tag with no onset before it (a training window's header) starts at the current time.
    assert_eq!(
        d.push(&t, t.section_id(SectionLabel::C)),
        Some(StreamEvent::Section(SectionLabel::C))
    );
    assert_eq!(d.window_start_ms(), 6200);
    // An onset no tag follows is dropped; the next token reads afresh.
    d.push(&t, ids(&t, "onset:300")[0]);
    assert_eq!(d.push(&t, t.end_id()), Some(StreamEvent::End));
    assert_eq!(d.window_start_ms(), 6200);
    // A section cannot start before the window's latest onset; in a prompt onsets start none.
    let mut d = StreamDecoder::new();
    for id in ids(&t, "<S> piano:60:80 onset:700 dur:10 onset:300 <B_SECTION>") {
        d.push(&t, id);
    }
    assert_eq!(d.window_start_ms(), 700);
    let mut d = StreamDecoder::new();
    for id in ids(&t, "<PROMPT_START> <A_SECTION> onset:300 <B_SECTION>") {
        d.push(&t, id);
    }
    assert!(!d.section_pending());
    assert_eq!(d.window_start_ms(), 0);
}

#[test]
fn tempo_scale_moves_section_starts_with_the_notes() {
    let t = windows_tok();
    let piece = t.encode_piece(&example());
    assert_eq!(
        strs(&t, &t.tempo_scale(&piece, 2.0).unwrap()),
        "<S> onset:0 <A_SECTION> piano:60:80 onset:0 dur:1000 piano:64:60 onset:2000 dur:1000 \
         <T> <T> onset:0 <B_SECTION> <D> drum:36 onset:2000 piano:67:100 onset:2000 dur:4000 <E>"
    );
    let half = t.tempo_scale(&piece, 0.5).unwrap();
    assert_eq!(
        strs(&t, &half),
        "<S> onset:0 <A_SECTION> piano:60:80 onset:0 dur:250 piano:64:60 onset:500 dur:250 \
         onset:2500 <B_SECTION> <D> drum:36 onset:500 piano:67:100 onset:500 dur:1000 <E>"
    );
    let d = t.decode(&half);
    assert_eq!(d.sections[1].start_ms, 2500.0);
    assert_eq!(d.notes.last().unwrap().start_ms, 3000.0);
}

#[test]
fn stripping_section_tags_keeps_one_time_line() {
    let t = windows_tok();
    let piece = t.encode_piece(&example());
    let stripped = t.strip_section_tags(&piece).unwrap();
    let (ids_, starts) = (stripped.tokens, stripped.section_starts);
    assert_eq!(
        strs(&t, &ids_),
        "<S> piano:60:80 onset:0 dur:500 piano:64:60 onset:1000 dur:500 <T> <D> drum:36 \
         onset:1000 piano:67:100 onset:1000 dur:2000 <E>"
    );
    assert_eq!(starts, [(1, SectionLabel::A), (7, SectionLabel::B)]);
    assert_eq!(t.decode(&ids_).notes, t.decode(&piece).notes);
    assert!(tok().strip_section_tags(&piece).is_none());
}

#[test]
fn the_layout_is_part_of_the_hash_and_old_files_read_as_legacy() {
    let (new, old) = (windows_tok(), tok());
    assert_ne!(new.hash(), old.hash());
    // A tokenizer.json written before the setting existed has no such key.
    let mut v: serde_json::Value = serde_json::from_str(&old.to_json()).unwrap();
    v["config"]
        .as_object_mut()
        .unwrap()
        .remove("section_windows");
    let read = Tokenizer::from_json(&v.to_string()).unwrap();
    assert!(!read.config().section_windows);
    assert_eq!(read.hash(), old.hash());
    assert!(
        Tokenizer::from_json(&new.to_json())
            .unwrap()
            .config()
            .section_windows
    );
}

#[test]
fn section_starts_walk_to_their_window_and_carry_their_onset() {
    let mut d = StreamDecoder::new();
    let (w, l) = (windows_tok(), tok());
    for id in ids(&w, "<S> piano:60:80 onset:700 dur:10") {
        d.push(&w, id);
    }
    let start = |t: &Tokenizer, ms: f64| {
        strs(
            t,
            &t.section_start(&d, SectionLabel::B, ms).collect::<Vec<_>>(),
        )
    };
    assert_eq!(start(&w, 3200.0), "onset:3200 <B_SECTION>");
    assert_eq!(start(&w, 12_300.0), "<T> <T> onset:2300 <B_SECTION>");
    // Not before the window's latest onset.
    assert_eq!(start(&w, 500.0), "onset:700 <B_SECTION>");
    // Legacy: the `<T>`s and the tag (its notes give its time).
    assert_eq!(start(&l, 12_300.0), "<T> <T> <B_SECTION>");
    // Fed, the windows layout starts the section where it was asked to.
    for id in w.section_start(&d, SectionLabel::B, 12_300.0) {
        d.push(&w, id);
    }
    assert_eq!((d.window_start_ms(), d.min_onset_ms()), (12_300, 0));
}
