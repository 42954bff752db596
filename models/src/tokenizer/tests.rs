use super::*;
use crate::song::{Note, Section, Song, TempoChange};

/// The default (legacy) layout, which most tests here pin; `windows_tok` has section windows.
fn tok() -> Tokenizer {
    Tokenizer::new(legacy()).unwrap()
}

fn legacy() -> TokenizerConfig {
    TokenizerConfig::default()
}

fn windows_tok() -> Tokenizer {
    Tokenizer::new(TokenizerConfig {
        section_windows: true,
        ..TokenizerConfig::default()
    })
    .unwrap()
}

fn note(pitch: u8, velocity: u8, start_ms: f64, dur_ms: f64) -> Note {
    Note {
        pitch,
        velocity,
        channel: 0,
        program: 0,
        start_tick: 0,
        end_tick: 0,
        start_ms,
        end_ms: start_ms + dur_ms,
    }
}

fn drum(pitch: u8, start_ms: f64) -> Note {
    Note {
        channel: 9,
        ..note(pitch, 100, start_ms, 50.0)
    }
}

fn section(label: SectionLabel, start_ms: f64, end_ms: f64) -> Section {
    Section {
        label,
        marker_text: label.to_string(),
        start_tick: 0,
        end_tick: 0,
        start_ms,
        end_ms,
    }
}

fn song(notes: Vec<Note>, sections: Vec<Section>) -> Song {
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
}

fn strs(t: &Tokenizer, ids: &[u32]) -> String {
    t.to_strings(ids).join(" ")
}

fn ids(t: &Tokenizer, s: &str) -> Vec<u32> {
    t.ids_of(&s.split_whitespace().collect::<Vec<_>>()).unwrap()
}

fn err_text<T: std::fmt::Debug>(r: Result<T>) -> String {
    match r {
        Err(Error::Tokenizer(m)) => m,
        other => panic!("expected a tokenizer error, got {other:?}"),
    }
}

#[test]
fn default_vocab_size_and_ranges() {
    let t = tok();
    // 12 specials + 128*13 notes + 61 drums + 500 onsets + 500 durations + 17 forms + 7 styles.
    assert_eq!(t.vocab_size(), 2761);
    assert_eq!(
        t.velocity_levels(),
        &[10, 20, 30, 40, 50, 60, 70, 80, 90, 100, 110, 120, 127]
    );
    assert_eq!(t.note_ids(), 12..12 + 1664);
    assert_eq!(t.drum_ids().len(), 61);
    assert_eq!(t.onset_ids().len(), 500);
    assert_eq!(t.dur_ids().len(), 500);
    assert_eq!(t.form_ids().len(), 17);
    assert_eq!(t.style_ids().len(), 7);
    assert_eq!(t.style_ids().end as usize, t.vocab_size());
    assert_eq!(t.pad_id(), 0);
    assert_eq!(t.token(t.start_id()), Some(&Token::Start));
    assert_eq!(t.token(t.end_id()), Some(&Token::End));
    assert_eq!(
        t.token(t.section_id(SectionLabel::C))
            .map(|x| x.to_string())
            .as_deref(),
        Some("<C_SECTION>")
    );
    for id in t.onset_ids() {
        assert!(matches!(t.kind(id), TokenKind::Onset { .. }));
    }
    for id in t.dur_ids() {
        assert!(matches!(t.kind(id), TokenKind::Dur { .. }));
    }
}

#[test]
fn every_token_string_round_trips() {
    let t = tok();
    for id in 0..t.vocab_size() as u32 {
        let s = t.token(id).unwrap().to_string();
        let parsed: Token = s.parse().unwrap();
        assert_eq!(t.id(&parsed), Some(id), "{s}");
    }
    for bad in [
        "",
        "piano:60",
        "piano:128:80",
        "piano:60:0",
        "drum:20",
        "onset:x",
        "<E_SECTION>",
        "violin:60:80",
    ] {
        assert!(bad.parse::<Token>().is_err(), "{bad:?} parsed");
    }
    // Syntactically fine but not in this vocabulary.
    assert!(err_text(t.ids_of(&["piano:60:81"])).contains("piano:60:81"));
}

#[test]
fn config_validation_names_the_setting() {
    let bad = |f: &dyn Fn(&mut TokenizerConfig), needle: &str| {
        let mut c = TokenizerConfig::default();
        f(&mut c);
        let m = err_text(Tokenizer::new(c));
        assert!(m.contains(needle), "{m:?} lacks {needle:?}");
    };
    bad(&|c| c.window_ms = 5005, "window_ms");
    bad(&|c| c.time_step_ms = 0, "time_step_ms");
    bad(&|c| c.max_duration_ms = 0, "max_duration_ms");
    bad(&|c| c.velocity_step = 0, "velocity_step");
    bad(&|c| c.velocity_step = 121, "velocity_step");
    bad(&|c| c.instruments.clear(), "instruments");
    bad(&|c| c.instruments = vec!["violin".into()], "violin");
    bad(
        &|c| c.instruments = vec!["piano".into(), "piano".into()],
        "twice",
    );
    bad(&|c| c.forms.push("ABE".into()), "ABE");
    bad(&|c| c.forms.push("AB".into()), "twice");
    bad(&|c| c.styles.push("two words".into()), "two words");
    bad(&|c| c.snippet_tokens = 0, "snippet_tokens");
    bad(
        &|c| {
            c.time_step_ms = 1;
            c.window_ms = 2_000_000;
        },
        "limit",
    );
}

#[test]
fn velocity_quantization() {
    let t = tok();
    for (v, q) in [
        (0, 10),
        (1, 10),
        (4, 10),
        (5, 10),
        (14, 10),
        (15, 20),
        (80, 80),
        (123, 120),
        (124, 127),
        (127, 127),
    ] {
        assert_eq!(t.quantize_velocity(v), q, "velocity {v}");
    }
    for v in 5..=127u8 {
        assert!((t.quantize_velocity(v) as i32 - v as i32).abs() <= 5);
    }
    let c = TokenizerConfig {
        velocity_step: 7,
        ..legacy()
    };
    let t7 = Tokenizer::new(c).unwrap();
    assert_eq!(t7.velocity_levels().len(), 18); // 7..=119 and 127
}

#[test]
fn programs_fold_to_listed_families() {
    let t = tok();
    assert_eq!(t.instrument_for_program(40), 0);
    let c = TokenizerConfig {
        instruments: vec!["piano".into(), "strings".into()],
        ..legacy()
    };
    let t2 = Tokenizer::new(c).unwrap();
    assert_eq!(t2.instrument_for_program(40), 1); // violin -> strings
    assert_eq!(t2.instrument_for_program(24), 0); // guitar is not listed -> piano
    assert_eq!(t2.program_for_instrument(1), 40);
    let id = t2.note_id(1, 60, 80).unwrap();
    assert_eq!(t2.token(id).unwrap().to_string(), "strings:60:80");
    assert_eq!(
        t2.kind(id),
        TokenKind::Note {
            instrument: 1,
            pitch: 60,
            velocity: 80
        }
    );
    assert_eq!(t2.note_id(2, 60, 80), None);
    assert_eq!(t2.vocab_size(), 2761 + 1664);
}

#[test]
fn forms_and_styles() {
    let t = tok();
    let aaba = t.form_id("AABA").unwrap();
    assert_eq!(t.token(aaba).unwrap().to_string(), "form:AABA");
    assert_eq!(t.form_id("aaba"), Some(aaba));
    // E folds to D: "ABCDE" is "ABCDD", which has no token.
    assert_eq!(t.form_id("ABCDE"), None);
    assert_eq!(t.form_id("ABCE"), t.form_id("ABCD"));
    assert_eq!(t.form_id("A B"), None);
    assert_eq!(t.form_id(""), None);
    assert_eq!(
        t.token(t.style_id("reel").unwrap()).unwrap().to_string(),
        "style:reel"
    );
    assert_eq!(t.style_id("polka"), None);
    assert_eq!(normalize_form("abcxyz").as_deref(), Some("ABCDDD"));
}

#[test]
fn kind_lookups_are_total() {
    let t = tok();
    assert_eq!(t.kind(u32::MAX), TokenKind::Unknown);
    assert_eq!(t.kind(t.vocab_size() as u32), TokenKind::Unknown);
    assert_eq!(t.kind(t.time_shift_id()), TokenKind::TimeShift);
    assert_eq!(
        t.kind(t.drum_id(36).unwrap()),
        TokenKind::Drum { pitch: 36 }
    );
    assert_eq!(t.drum_id(26), None);
    assert_eq!(t.onset_id(4994.9), Some(t.onset_ids().end - 1));
    assert_eq!(t.onset_id(4995.0), None);
    assert_eq!(t.kind(t.dur_id(0.0)), TokenKind::Dur { ms: 10 });
    assert_eq!(t.kind(t.dur_id(f64::NAN)), TokenKind::Dur { ms: 10 });
    assert_eq!(t.kind(t.dur_id(1e9)), TokenKind::Dur { ms: 5000 });
    assert_eq!(t.kind(t.dur_id(1234.0)), TokenKind::Dur { ms: 1230 });
    assert!(std::mem::size_of::<StreamDecoder>() <= 32);
}

/// The worked example of the layout: two windows, drums, two sections, `<D>`.
fn example() -> Song {
    song(
        vec![
            note(60, 80, 0.0, 500.0),
            note(64, 64, 1003.0, 497.0),
            drum(36, 6000.0),
            note(67, 100, 6000.0, 2000.0),
            drum(20, 6500.0), // no drum token below 27: dropped
        ],
        vec![
            section(SectionLabel::A, 0.0, 5000.0),
            section(SectionLabel::B, 5000.0, 9000.0),
        ],
    )
}

const EXAMPLE_TOKENS: &str = "<S> <A_SECTION> piano:60:80 onset:0 dur:500 piano:64:60 onset:1000 dur:500 \
     <T> <D> <B_SECTION> drum:36 onset:1000 piano:67:100 onset:1000 dur:2000 <E>";

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
fn json_round_trip_and_mismatch() {
    let c = TokenizerConfig {
        styles: vec!["reel".into()],
        drums: false,
        ..legacy()
    };
    let t = Tokenizer::new(c).unwrap();
    let json = t.to_json();
    let back = Tokenizer::from_json(&json).unwrap();
    assert_eq!(back.config(), t.config());
    assert_eq!(back.hash(), t.hash());
    assert_eq!(back.vocab_size(), t.vocab_size());
    assert_ne!(t.hash(), tok().hash());
    assert_eq!(tok().hash(), tok().hash());
    assert_eq!(tok().hash().len(), 64);

    let edited = json.replacen("\"style:reel\"", "\"style:jig\"", 1);
    let e = err_text(Tokenizer::from_json(&edited));
    assert!(e.contains("style:jig") && e.contains("style:reel"), "{e}");
    let mut v: serde_json::Value = serde_json::from_str(&json).unwrap();
    v["vocab"].as_array_mut().unwrap().pop();
    let e = err_text(Tokenizer::from_json(&v.to_string()));
    assert!(e.contains("style:reel"), "{e}");
    v["config"]["window_ms"] = 7.into();
    assert!(err_text(Tokenizer::from_json(&v.to_string())).contains("window_ms"));
    assert!(err_text(Tokenizer::from_json("{")).contains("tokenizer.json"));
    // Missing config fields take their defaults.
    let partial = format!(
        "{{\"config\": {{}}, \"vocab\": {}}}",
        serde_json::to_string(&tok().to_strings(&(0..2761).collect::<Vec<_>>())).unwrap()
    );
    assert_eq!(Tokenizer::from_json(&partial).unwrap().hash(), tok().hash());
}

#[test]
fn pitch_shift_drops_notes_leaving_the_range() {
    let t = tok();
    let seq = ids(
        &t,
        "<S> piano:120:80 onset:0 dur:100 drum:36 onset:10 piano:60:80 onset:20 dur:10 <E>",
    );
    assert_eq!(
        strs(&t, &t.pitch_shift(&seq, 10)),
        "<S> drum:36 onset:10 piano:70:80 onset:20 dur:10 <E>"
    );
    assert_eq!(
        strs(&t, &t.pitch_shift(&seq, -61)),
        "<S> piano:59:80 onset:0 dur:100 drum:36 onset:10 <E>"
    );
    assert_eq!(t.pitch_shift(&seq, 0), seq);
    assert_eq!(
        strs(&t, &t.pitch_shift(&seq, i32::MIN)),
        "<S> drum:36 onset:10 <E>"
    );
}

#[test]
fn velocity_shift_clamps() {
    let t = tok();
    let seq = ids(
        &t,
        "piano:60:10 onset:0 dur:10 piano:61:120 onset:0 dur:10 drum:40 onset:0",
    );
    assert_eq!(
        strs(&t, &t.velocity_shift(&seq, 1)),
        "piano:60:20 onset:0 dur:10 piano:61:127 onset:0 dur:10 drum:40 onset:0"
    );
    assert_eq!(
        strs(&t, &t.velocity_shift(&seq, -100)),
        "piano:60:10 onset:0 dur:10 piano:61:10 onset:0 dur:10 drum:40 onset:0"
    );
}

#[test]
fn tempo_scale_piece_and_prompt() {
    let t = tok();
    for f in [0.24, 4.01, f64::NAN, f64::INFINITY] {
        assert!(err_text(t.tempo_scale(&[], f)).contains("factor"));
    }
    let piece = t.encode_piece(&example());
    assert_eq!(
        strs(&t, &t.tempo_scale(&piece, 2.0).unwrap()),
        "<S> <A_SECTION> piano:60:80 onset:0 dur:1000 piano:64:60 onset:2000 dur:1000 \
         <T> <T> <D> <B_SECTION> drum:36 onset:2000 piano:67:100 onset:2000 dur:4000 <E>"
    );
    assert_eq!(
        strs(&t, &t.tempo_scale(&piece, 0.5).unwrap()),
        "<S> <A_SECTION> piano:60:80 onset:0 dur:250 piano:64:60 onset:500 dur:250 \
         <D> <B_SECTION> drum:36 onset:3000 piano:67:100 onset:3000 dur:1000 <E>"
    );
    assert_eq!(t.tempo_scale(&piece, 1.0).unwrap(), piece);

    // Each snippet keeps its own time line; the piece restarts at `<S>`.
    let seq = ids(
        &t,
        "style:reel <PROMPT_START> <A_SECTION> piano:60:80 onset:3000 dur:100 <B_SECTION> piano:62:80 onset:2600 dur:100 \
         <PROMPT_END> <S> piano:64:80 onset:2500 dur:5000 <T> <T> <C_SECTION> <E>",
    );
    assert_eq!(
        strs(&t, &t.tempo_scale(&seq, 2.0).unwrap()),
        "style:reel <PROMPT_START> <A_SECTION> <T> piano:60:80 onset:1000 dur:200 <B_SECTION> <T> piano:62:80 onset:200 \
         dur:200 <PROMPT_END> <S> <T> piano:64:80 onset:0 dur:5000 <T> <T> <T> <C_SECTION> <E>"
    );
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

// ---- Section windows ----

const EXAMPLE_WINDOWS: &str = "<S> onset:0 <A_SECTION> piano:60:80 onset:0 dur:500 \
     piano:64:60 onset:1000 dur:500 <T> onset:0 <B_SECTION> <D> drum:36 onset:1000 \
     piano:67:100 onset:1000 dur:2000 <E>";

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
