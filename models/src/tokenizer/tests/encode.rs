use super::*;

#[test]
fn encode_piece_layout() {
    let t = tok();
    assert_eq!(strs(&t, &t.encode_piece(&example())), EXAMPLE_TOKENS);
}

#[test]
fn encode_piece_without_drums_or_ending() {
    let c = TokenizerConfig {
        drums: false,
        ending_soon_ms: 10_000,
        ..legacy()
    };
    let t = Tokenizer::new(c).unwrap();
    assert_eq!(
        strs(&t, &t.encode_piece(&example())),
        "<S> <A_SECTION> piano:60:80 onset:0 dur:500 piano:64:60 onset:1000 dur:500 \
         <T> <B_SECTION> piano:67:100 onset:1000 dur:2000 <E>"
    );
    assert_eq!(strs(&t, &t.encode_piece(&song(vec![], vec![]))), "<S> <E>");
}

#[test]
fn empty_sections_keep_their_tag_and_place() {
    let t = tok();
    let s = song(
        vec![note(60, 80, 0.0, 100.0), note(62, 80, 12_000.0, 100.0)],
        vec![
            section(SectionLabel::A, 0.0, 1000.0),
            section(SectionLabel::B, 1000.0, 7000.0),
            section(SectionLabel::C, 7000.0, 11_000.0),
            section(SectionLabel::A, 11_000.0, 20_000.0),
            section(SectionLabel::D, 20_000.0, 21_000.0),
        ],
    );
    let toks = t.encode_piece(&s);
    assert_eq!(
        strs(&t, &toks),
        "<S> <A_SECTION> piano:60:80 onset:0 dur:100 <B_SECTION> <T> <C_SECTION> <T> <D> <A_SECTION> \
         piano:62:80 onset:2000 dur:100 <T> <T> <D_SECTION> <E>"
    );
    let d = t.decode(&toks);
    let got: Vec<(SectionLabel, f64)> = d.sections.iter().map(|s| (s.label, s.start_ms)).collect();
    use SectionLabel::*;
    assert_eq!(
        got,
        vec![
            (A, 0.0),
            (B, 0.0),
            (C, 5000.0),
            (A, 12_000.0),
            (D, 20_000.0)
        ]
    );
    assert_eq!(d.sections[3].end_ms, 20_000.0);
    assert_eq!(d.sections[4].end_ms, 20_000.0);
}

#[test]
fn bad_note_values_are_skipped() {
    let t = tok();
    let mut n = note(60, 80, f64::NAN, 100.0);
    let s = song(
        vec![
            n,
            note(200, 80, 0.0, 100.0),
            note(61, 80, -100.0, 100.0),
            note(62, 80, 1e300, 1.0),
            {
                n.start_ms = 0.0;
                n.end_ms = f64::INFINITY;
                n
            },
            note(63, 0, -4.0, -5.0), // rounds to onset 0; negative length -> one step
        ],
        vec![
            section(SectionLabel::A, f64::NAN, 1.0),
            section(SectionLabel::B, 1e300, 1e301),
        ],
    );
    assert_eq!(
        strs(&t, &t.encode_piece(&s)),
        "<S> piano:63:10 onset:0 dur:10 <E>"
    );
}

#[test]
fn snippets_truncate_whole_notes() {
    let t = tok();
    let notes = [
        note(60, 80, 1000.0, 100.0),
        note(62, 80, 1500.0, 100.0),
        note(64, 80, 7000.0, 100.0),
    ];
    let full = t.snippet_tokens(&notes, 1000.0, 100);
    assert_eq!(
        strs(&t, &full),
        "piano:60:80 onset:0 dur:100 piano:62:80 onset:500 dur:100 <T> piano:64:80 onset:1000 dur:100"
    );
    assert_eq!(t.snippet_tokens(&notes, 1000.0, 9), full[..6].to_vec());
    assert_eq!(t.snippet_tokens(&notes, 1000.0, 5), full[..3].to_vec());
    assert!(t.snippet_tokens(&notes, 1000.0, 2).is_empty());
    // Notes before the snippet start are left out.
    assert_eq!(
        t.snippet_tokens(&notes, 1200.0, 100)[..3],
        ids(&t, "piano:62:80 onset:300 dur:100")[..]
    );
}

#[test]
fn extract_snippet_uses_first_occurrence() {
    let t = tok();
    let s = song(
        vec![
            note(60, 80, 0.0, 100.0),
            note(62, 80, 2100.0, 100.0),
            note(64, 80, 4000.0, 100.0),
        ],
        vec![
            section(SectionLabel::A, 2000.0, 3000.0),
            section(SectionLabel::B, 3000.0, 5000.0),
            section(SectionLabel::A, 0.0, 2000.0),
        ],
    );
    assert_eq!(
        strs(&t, &t.extract_snippet(&s, SectionLabel::A, 256).unwrap()),
        "piano:60:80 onset:0 dur:100"
    );
    assert_eq!(
        strs(&t, &t.extract_snippet(&s, SectionLabel::B, 256).unwrap()),
        "piano:64:80 onset:1000 dur:100"
    );
    assert_eq!(t.extract_snippet(&s, SectionLabel::C, 256), None);
}

#[test]
fn prompt_layouts() {
    let t = tok();
    let a = ids(&t, "piano:60:80 onset:0 dur:100");
    let b = ids(&t, "drum:36 onset:0");
    let spec = PromptSpec {
        style: Some("reel".into()),
        form: Some("aaba".into()),
        snippets: vec![(SectionLabel::B, b.clone()), (SectionLabel::A, a.clone())],
    };
    let p = t.build_prompt(&spec).unwrap();
    assert_eq!(
        strs(&t, &p.inline),
        "style:reel <PROMPT_START> form:AABA <A_SECTION> piano:60:80 onset:0 dur:100 <B_SECTION> drum:36 onset:0 \
         <PROMPT_END> <S>"
    );
    assert_eq!(
        strs(&t, &p.decoder),
        "style:reel <PROMPT_START> form:AABA <A_SECTION> <B_SECTION> <PROMPT_END> <S>"
    );
    assert_eq!(
        p.snippets,
        vec![(SectionLabel::A, a.clone()), (SectionLabel::B, b)]
    );
    let bare = t.build_prompt(&PromptSpec::default()).unwrap();
    assert_eq!(strs(&t, &bare.inline), "<PROMPT_START> <PROMPT_END> <S>");
    assert_eq!(bare.inline, bare.decoder);

    let e = err_text(t.build_prompt(&PromptSpec {
        style: Some("polka".into()),
        ..PromptSpec::default()
    }));
    assert!(e.contains("polka"), "{e}");
    let e = err_text(t.build_prompt(&PromptSpec {
        form: Some("ABBA".into()),
        ..PromptSpec::default()
    }));
    assert!(e.contains("ABBA"), "{e}");
    let dup = vec![(SectionLabel::A, a.clone()), (SectionLabel::A, a.clone())];
    let e = err_text(t.build_prompt(&PromptSpec {
        snippets: dup,
        ..PromptSpec::default()
    }));
    assert!(e.contains("two snippets for section A"), "{e}");
    let mut bad = a;
    bad.push(t.end_id());
    let e = err_text(t.build_prompt(&PromptSpec {
        snippets: vec![(SectionLabel::C, bad)],
        ..PromptSpec::default()
    }));
    assert!(e.contains("section C") && e.contains("<E>"), "{e}");
}

#[test]
fn training_example_layouts() {
    let t = tok();
    let s = song(
        vec![
            note(60, 80, 0.0, 100.0),
            note(62, 80, 1000.0, 100.0),
            note(64, 80, 2000.0, 100.0),
            note(65, 80, 3000.0, 100.0),
        ],
        vec![
            section(SectionLabel::A, 0.0, 1000.0),
            section(SectionLabel::A, 1000.0, 2000.0),
            section(SectionLabel::B, 2000.0, 3000.0),
            section(SectionLabel::A, 3000.0, 4000.0),
        ],
    );
    let ex = t.encode_training(&s, Some("jig")).unwrap();
    assert_eq!(ex.form, "AABA");
    let piece = t.encode_piece(&s);
    assert_eq!(
        strs(&t, &ex.inline),
        format!(
            "style:jig <PROMPT_START> form:AABA <A_SECTION> piano:60:80 onset:0 dur:100 <B_SECTION> piano:64:80 onset:0 \
             dur:100 <PROMPT_END> {}",
            strs(&t, &piece)
        )
    );
    assert_eq!(
        strs(&t, &ex.decoder),
        format!(
            "style:jig <PROMPT_START> form:AABA <A_SECTION> <B_SECTION> <PROMPT_END> {}",
            strs(&t, &piece)
        )
    );
    assert_eq!(
        ex.snippets.iter().map(|(l, _)| *l).collect::<Vec<_>>(),
        vec![SectionLabel::A, SectionLabel::B]
    );
    // The prompt is skipped when decoding a training sequence.
    assert_eq!(t.decode(&ex.inline), t.decode(&piece));

    // A form without a token is left out of the prompt but kept in the example.
    let mut s2 = s.clone();
    s2.sections[1].label = SectionLabel::D;
    let ex2 = t.encode_training(&s2, None).unwrap();
    assert_eq!(ex2.form, "ADBA");
    assert_eq!(
        strs(&t, &ex2.decoder[..4]),
        "<PROMPT_START> <A_SECTION> <B_SECTION> <D_SECTION>"
    );
    assert!(err_text(t.encode_training(&s, Some("polka"))).contains("polka"));
}

#[test]
fn two_voice_pieces_state_the_melody_before_the_accompaniment_at_one_instant() {
    let t = Tokenizer::new(TokenizerConfig {
        instruments: vec!["piano".into(), "bass".into()],
        ..legacy()
    })
    .unwrap();
    let bass = |pitch, start_ms| Note {
        program: 32,
        channel: 3,
        ..note(pitch, 80, start_ms, 500.0)
    };
    // The bass sorts below the melody by pitch, yet at a shared instant the melody comes first;
    // a bass note alone keeps its place in time.
    let s = song(
        vec![bass(40, 0.0), note(64, 80, 0.0, 500.0), bass(43, 500.0)],
        vec![],
    );
    assert_eq!(
        strs(&t, &t.encode_piece(&s)),
        "<S> piano:64:80 onset:0 dur:500 bass:40:80 onset:0 dur:500 bass:43:80 onset:500 \
         dur:500 <E>"
    );
}
