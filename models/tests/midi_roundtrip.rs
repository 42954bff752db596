//! Writing songs and reading them back.

use staria_models::{
    Error, Note, Section, SectionLabel, Song, TempoChange, TimeSignature, read_midi,
    read_midi_file, write_midi, write_midi_file,
};

fn note(pitch: u8, channel: u8, program: u8, start: u64, end: u64, velocity: u8) -> Note {
    Note {
        pitch,
        velocity,
        channel,
        program,
        start_tick: start,
        end_tick: end,
        start_ms: 0.0,
        end_ms: 0.0,
    }
}

fn section(label: SectionLabel, text: &str, start: u64, end: u64) -> Section {
    Section {
        label,
        marker_text: text.to_string(),
        start_tick: start,
        end_tick: end,
        start_ms: 0.0,
        end_ms: 0.0,
    }
}

/// A song with everything the writer handles, ms fields filled through its tempo map and notes
/// in the reader's order, so a faithful round trip gives it back exactly.
fn rich_song() -> Song {
    let mut song = Song {
        ticks_per_quarter: 480,
        tempo_map: vec![
            TempoChange {
                tick: 0,
                us_per_quarter: 500_000,
            },
            TempoChange {
                tick: 1920,
                us_per_quarter: 1_000_000,
            },
            TempoChange {
                tick: 3000,
                us_per_quarter: 428_571,
            },
        ],
        time_signatures: vec![
            TimeSignature {
                tick: 0,
                numerator: 4,
                denominator: 4,
            },
            TimeSignature {
                tick: 3840,
                numerator: 6,
                denominator: 8,
            },
        ],
        notes: vec![
            note(60, 0, 0, 0, 480, 100),
            note(60, 0, 0, 480, 960, 90), // same pitch right after: off before on
            note(64, 0, 0, 0, 960, 80),
            note(36, 9, 0, 0, 60, 127), // drums
            note(48, 1, 32, 0, 1920, 70),
            note(50, 1, 33, 1920, 2400, 71), // program change on channel 1
            note(52, 1, 32, 2400, 5000, 72), // and back
            note(72, 15, 127, 4000, 5280, 1),
        ],
        sections: vec![
            section(SectionLabel::A, "A", 0, 1920),
            section(SectionLabel::A, "A'", 1920, 3840),
            section(SectionLabel::B, "", 3840, 4800), // empty text: the letter is written
            section(SectionLabel::C, "Bridge", 4800, 5280), // text that maps to its label is kept
            section(SectionLabel::D, "Verse", 5280, 6000), // text that maps elsewhere: the letter
        ],
    };
    let ms = |t: u64| song.tick_to_ms(t);
    let notes: Vec<Note> = song
        .notes
        .iter()
        .map(|n| Note {
            start_ms: ms(n.start_tick),
            end_ms: ms(n.end_tick),
            ..*n
        })
        .collect();
    let sections: Vec<Section> = song
        .sections
        .iter()
        .map(|s| Section {
            start_ms: ms(s.start_tick),
            end_ms: ms(s.end_tick),
            ..s.clone()
        })
        .collect();
    song.notes = notes;
    song.notes
        .sort_by_key(|n| (n.start_tick, n.pitch, n.channel));
    song.sections = sections;
    song
}

#[test]
fn write_then_read_gives_the_song_back() {
    let song = rich_song();
    let bytes = write_midi(&song).expect("write");
    assert_eq!(&bytes[..4], b"MThd");
    assert_eq!(&bytes[8..10], &[0, 1], "format 1");
    assert_eq!(&bytes[10..12], &[0, 5], "conductor + channels 0, 1, 9, 15");
    let back = read_midi(&bytes).expect("read back");
    assert_eq!(back.ticks_per_quarter, song.ticks_per_quarter);
    assert_eq!(back.tempo_map, song.tempo_map);
    assert_eq!(back.time_signatures, song.time_signatures);
    assert_eq!(back.notes, song.notes);
    let texts: Vec<&str> = back
        .sections
        .iter()
        .map(|s| s.marker_text.as_str())
        .collect();
    assert_eq!(texts, vec!["A", "A'", "B", "Bridge", "D"]);
    let mut expected_sections = song.sections.clone();
    for (s, text) in expected_sections.iter_mut().zip(texts) {
        s.marker_text = text.to_string();
    }
    assert_eq!(back.sections, expected_sections);
    assert_eq!(back.section_form(), "AABCD");
    // Writing what was read gives the same bytes: the layout is deterministic.
    assert_eq!(write_midi(&back).expect("rewrite"), bytes);
}

#[test]
fn written_tracks_are_laid_out_for_daws() {
    let bytes = write_midi(&rich_song()).expect("write");
    let smf = midly::Smf::parse(&bytes).expect("midly reads it");
    assert_eq!(smf.tracks.len(), 5);
    use midly::{MetaMessage, MidiMessage, TrackEventKind};
    // Conductor: name, tempos, time signatures, markers, end; no channel events.
    let conductor = &smf.tracks[0];
    assert!(matches!(
        conductor[0].kind,
        TrackEventKind::Meta(MetaMessage::TrackName(b"Staria"))
    ));
    let count = |f: &dyn Fn(&MetaMessage) -> bool| {
        conductor
            .iter()
            .filter(|e| matches!(e.kind, TrackEventKind::Meta(m) if f(&m)))
            .count()
    };
    assert_eq!(count(&|m| matches!(m, MetaMessage::Tempo(_))), 3);
    assert_eq!(count(&|m| matches!(m, MetaMessage::TimeSignature(..))), 2);
    assert_eq!(count(&|m| matches!(m, MetaMessage::Marker(_))), 5);
    assert!(
        conductor
            .iter()
            .all(|e| !matches!(e.kind, TrackEventKind::Midi { .. }))
    );
    for track in &smf.tracks {
        assert!(matches!(
            track.last().map(|e| e.kind),
            Some(TrackEventKind::Meta(MetaMessage::EndOfTrack))
        ));
    }
    // Channel 1's track: a program change before its first note, then at each change.
    let programs: Vec<(u32, u8)> = {
        let mut tick = 0;
        let mut out = Vec::new();
        for e in &smf.tracks[2] {
            tick += e.delta.as_int();
            if let TrackEventKind::Midi {
                channel,
                message: MidiMessage::ProgramChange { program },
            } = e.kind
            {
                assert_eq!(channel.as_int(), 1);
                out.push((tick, program.as_int()));
            }
        }
        out
    };
    assert_eq!(programs, vec![(0, 32), (1920, 33), (2400, 32)]);
    // Channel 0 at tick 480: the note-off of the first 60 comes before the note-on of the second.
    let mut tick = 0;
    let at_480: Vec<&str> = smf.tracks[1]
        .iter()
        .filter_map(|e| {
            tick += e.delta.as_int();
            match e.kind {
                TrackEventKind::Midi {
                    message: MidiMessage::NoteOff { .. },
                    ..
                } if tick == 480 => Some("off"),
                TrackEventKind::Midi {
                    message: MidiMessage::NoteOn { .. },
                    ..
                } if tick == 480 => Some("on"),
                _ => None,
            }
        })
        .collect();
    assert_eq!(at_480, vec!["off", "on"]);
}

#[test]
fn overlapping_same_pitch_notes_are_written_as_midi_can_hold_them() {
    let mut song = rich_song();
    song.sections.clear();
    song.notes = vec![
        note(60, 0, 0, 0, 1000, 80),
        note(60, 0, 0, 500, 700, 80),
        note(61, 0, 0, 0, 10, 80),
    ];
    let back = read_midi(&write_midi(&song).expect("write")).expect("read");
    let spans: Vec<(u8, u64, u64)> = back
        .notes
        .iter()
        .map(|n| (n.pitch, n.start_tick, n.end_tick))
        .collect();
    assert_eq!(spans, vec![(60, 0, 500), (61, 0, 10), (60, 500, 700)]);
}

#[test]
fn invalid_notes_are_refused_with_their_index() {
    let base = rich_song();
    // (note index, how to spoil it, what the error must say)
    type Spoil = fn(&mut Note);
    let cases: [(usize, Spoil, &str); 6] = [
        (2, |n| n.pitch = 128, "pitch 128"),
        (0, |n| n.velocity = 0, "velocity 0"),
        (5, |n| n.velocity = 200, "velocity 200"),
        (3, |n| n.channel = 16, "channel 16"),
        (1, |n| n.program = 128, "program 128"),
        (4, |n| n.end_tick = n.start_tick, "not after start"),
    ];
    for (index, spoil, what) in cases {
        let mut song = base.clone();
        spoil(&mut song.notes[index]);
        match write_midi(&song) {
            Err(Error::Midi(msg)) => {
                assert!(
                    msg.contains(&format!("note {index}")) && msg.contains(what),
                    "{msg}"
                )
            }
            other => panic!("expected an error for {what}, got {other:?}"),
        }
    }
    let mut song = base.clone();
    song.ticks_per_quarter = 0x8000;
    assert!(write_midi(&song).is_err());
    let mut song = base.clone();
    song.tempo_map[1].us_per_quarter = 0;
    assert!(
        write_midi(&song)
            .expect_err("tempo 0")
            .to_string()
            .contains("tempo change 1")
    );
    let mut song = base;
    song.time_signatures[1].denominator = 6;
    assert!(
        write_midi(&song)
            .expect_err("x/6")
            .to_string()
            .contains("time signature 1")
    );
}

#[test]
fn songs_from_ms_notes_write_and_read_back() {
    let ms_note = |pitch: u8, start_ms: f64, end_ms: f64| Note {
        pitch,
        velocity: 90,
        channel: 0,
        program: 0,
        start_tick: 0,
        end_tick: 0,
        start_ms,
        end_ms,
    };
    let notes = vec![
        ms_note(62, 500.0, 1000.0),
        ms_note(60, 0.0, 250.0),
        ms_note(64, 1000.4, 1000.6),
    ];
    let sections = vec![
        Section {
            label: SectionLabel::A,
            marker_text: String::new(),
            start_tick: 0,
            end_tick: 0,
            start_ms: 0.0,
            end_ms: 500.0,
        },
        Section {
            label: SectionLabel::B,
            marker_text: String::new(),
            start_tick: 0,
            end_tick: 0,
            start_ms: 500.0,
            end_ms: 1001.0,
        },
    ];
    // 100 bpm at 480 tpq: 1.25 ms per tick.
    let song = Song::from_ms_notes(notes, sections, 100.0);
    let dir = tempfile::tempdir().expect("temp dir");
    let path = dir.path().join("decoded.mid");
    write_midi_file(&song, &path).expect("write file");
    let back = read_midi_file(&path).expect("read file");
    assert_eq!(back.notes, song.notes);
    assert_eq!(back.tempo_map, song.tempo_map);
    assert_eq!(back.section_form(), "AB");
    assert_eq!(back.sections[1].start_tick, 400);
    assert_eq!(back.sections[1].end_tick, 801);
    // The tiny note kept one tick.
    let tiny = back
        .notes
        .iter()
        .find(|n| n.pitch == 64)
        .expect("tiny note");
    assert_eq!((tiny.start_tick, tiny.end_tick), (800, 801));
}

#[test]
fn write_midi_file_reports_io() {
    let dir = tempfile::tempdir().expect("temp dir");
    let path = dir.path().join("no/such/folder/x.mid");
    match write_midi_file(&rich_song(), &path) {
        Err(Error::Io { path: p, .. }) => assert_eq!(p, path),
        other => panic!("expected an I/O error, got {other:?}"),
    }
}
