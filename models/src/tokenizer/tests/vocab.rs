use super::*;

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

/// The performer is instrument 0; the accompaniment is the second listed instrument when there
/// is one, and its note ids are exactly that instrument's.
#[test]
fn performer_and_accompaniment_instruments() {
    let one = tok();
    assert_eq!(one.performer_instrument(), 0);
    assert_eq!(one.accompaniment_instrument(), None);
    assert_eq!(one.instrument_note_ids(0), one.note_ids());
    assert!(one.instrument_note_ids(1).is_empty());
    let two = Tokenizer::new(TokenizerConfig {
        instruments: vec!["piano".into(), "bass".into()],
        ..legacy()
    })
    .unwrap();
    assert_eq!(two.accompaniment_instrument(), Some(1));
    let (piano, bass) = (two.instrument_note_ids(0), two.instrument_note_ids(1));
    assert_eq!(
        (piano.start, piano.end, bass.end),
        (two.note_ids().start, bass.start, two.note_ids().end)
    );
    for id in two.note_ids() {
        let TokenKind::Note { instrument, .. } = two.kind(id) else {
            panic!("{id} is not a note");
        };
        assert_eq!(bass.contains(&id), instrument == 1, "{id}");
    }
    assert!(
        two.token(bass.start)
            .unwrap()
            .to_string()
            .starts_with("bass:0:")
    );
    assert_eq!(two.program_for_instrument(1), 32);
    assert_eq!(two.instrument_for_program(33), 1); // electric bass -> bass
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
