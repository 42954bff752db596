//! The `Song` methods the tokenizer, engine and trainer use: time conversions, bars, form.

use staria_models::{Note, Section, SectionLabel, Song, TempoChange, TimeSignature};

fn song(tempo_map: Vec<TempoChange>, time_signatures: Vec<TimeSignature>) -> Song {
    Song {
        ticks_per_quarter: 480,
        tempo_map,
        time_signatures,
        notes: vec![],
        sections: vec![],
    }
}

fn tempo(tick: u64, us_per_quarter: u32) -> TempoChange {
    TempoChange {
        tick,
        us_per_quarter,
    }
}

fn sig(tick: u64, numerator: u8, denominator: u8) -> TimeSignature {
    TimeSignature {
        tick,
        numerator,
        denominator,
    }
}

#[test]
fn tick_and_ms_convert_through_the_whole_tempo_map() {
    let s = song(
        vec![
            tempo(0, 500_000),
            tempo(960, 1_000_000),
            tempo(1440, 250_000),
        ],
        vec![],
    );
    let cases = [
        (0, 0.0),
        (480, 500.0),
        (960, 1000.0),
        (1200, 1500.0),
        (1440, 2000.0),
        (1920, 2250.0),
    ];
    for (tick, ms) in cases {
        assert!(
            (s.tick_to_ms(tick) - ms).abs() < 1e-9,
            "tick {tick}: {}",
            s.tick_to_ms(tick)
        );
        assert_eq!(s.ms_to_tick(ms), tick, "ms {ms}");
    }
    // Nearest tick; before the start and NaN give 0.
    assert_eq!(s.ms_to_tick(1001.0), 960);
    assert_eq!(s.ms_to_tick(1001.1), 961);
    assert_eq!(s.ms_to_tick(-5.0), 0);
    assert_eq!(s.ms_to_tick(f64::NAN), 0);
    for tick in (0..3000).step_by(7) {
        assert_eq!(s.ms_to_tick(s.tick_to_ms(tick)), tick);
    }
}

#[test]
fn hand_built_tempo_maps_without_tick_0_or_empty_play_120_bpm_first() {
    let empty = song(vec![], vec![]);
    assert!((empty.tick_to_ms(480) - 500.0).abs() < 1e-9);
    let late = song(vec![tempo(960, 1_000_000)], vec![]);
    assert!((late.tick_to_ms(1440) - 2000.0).abs() < 1e-9);
    assert_eq!(late.ms_to_tick(2000.0), 1440);
}

#[test]
fn bars_follow_time_signature_changes() {
    // 4/4 (1920 ticks) for 2 bars, 3/4 (1440) for 2 bars, then 6/8 (1440).
    let s = song(vec![], vec![sig(0, 4, 4), sig(3840, 3, 4), sig(6720, 6, 8)]);
    let starts: Vec<u64> = (0..6).map(|b| s.bar_start_tick(b)).collect();
    assert_eq!(starts, vec![0, 1920, 3840, 5280, 6720, 8160]);
    for (bar, &start) in starts.iter().enumerate() {
        assert_eq!(s.bar_at_tick(start), bar as u32);
        if start > 0 {
            assert_eq!(s.bar_at_tick(start - 1), bar as u32 - 1);
        }
    }
    // A change in mid-bar closes that bar short: 4/4 then 3/4 from tick 960.
    let s = song(vec![], vec![sig(0, 4, 4), sig(960, 3, 4)]);
    assert_eq!(s.bar_start_tick(1), 960);
    assert_eq!(s.bar_start_tick(2), 2400);
    assert_eq!(s.bar_at_tick(959), 0);
    assert_eq!(s.bar_at_tick(2399), 1);
    // No time signature: 4/4.
    let s = song(vec![], vec![]);
    assert_eq!(s.bar_start_tick(3), 5760);
    assert_eq!(s.bar_at_tick(5759), 2);
    assert_eq!(s.bar_at_tick(u64::MAX), u32::MAX);
}

#[test]
fn odd_meters_at_low_resolution_do_not_drift() {
    // 3/8 at 1 tick per quarter: a bar is 1.5 ticks.
    let mut s = song(vec![], vec![sig(0, 3, 8)]);
    s.ticks_per_quarter = 1;
    let starts: Vec<u64> = (0..5).map(|b| s.bar_start_tick(b)).collect();
    assert_eq!(starts, vec![0, 1, 3, 4, 6]);
    assert_eq!(s.bar_start_tick(1000), 1500);
}

#[test]
fn form_and_duration() {
    let mut s = song(vec![], vec![]);
    assert_eq!(s.duration_ms(), 0.0);
    let n = |start_ms: f64, end_ms: f64| Note {
        pitch: 60,
        velocity: 80,
        channel: 0,
        program: 0,
        start_tick: 0,
        end_tick: 1,
        start_ms,
        end_ms,
    };
    s.notes = vec![n(0.0, 3000.0), n(100.0, 200.0), n(2500.0, 2600.0)];
    assert_eq!(s.duration_ms(), 3000.0);
    let sec = |label| Section {
        label,
        marker_text: String::new(),
        start_tick: 0,
        end_tick: 0,
        start_ms: 0.0,
        end_ms: 0.0,
    };
    s.sections = [
        SectionLabel::A,
        SectionLabel::A,
        SectionLabel::B,
        SectionLabel::D,
    ]
    .map(sec)
    .to_vec();
    assert_eq!(s.section_form(), "AABD");
}

#[test]
fn from_ms_notes_builds_a_fixed_tempo_song() {
    let n = |pitch: u8, start_ms: f64, end_ms: f64| Note {
        pitch,
        velocity: 64,
        channel: 2,
        program: 5,
        start_tick: 99,
        end_tick: 99,
        start_ms,
        end_ms,
    };
    let sections = vec![Section {
        label: SectionLabel::C,
        marker_text: "C".into(),
        start_tick: 0,
        end_tick: 0,
        start_ms: 250.0,
        end_ms: 1000.0,
    }];
    let s = Song::from_ms_notes(
        vec![n(64, 500.0, 750.0), n(60, 0.0, 499.9), n(61, -3.0, 0.1)],
        sections,
        120.0,
    );
    assert_eq!(s.ticks_per_quarter, 480);
    assert_eq!(s.tempo_map, vec![tempo(0, 500_000)]);
    assert_eq!(s.time_signatures, vec![sig(0, 4, 4)]);
    // 120 bpm at 480 tpq: 960 ticks per second. Sorted by start then pitch.
    let ticks: Vec<(u8, u64, u64)> = s
        .notes
        .iter()
        .map(|n| (n.pitch, n.start_tick, n.end_tick))
        .collect();
    assert_eq!(ticks, vec![(60, 0, 480), (61, 0, 1), (64, 480, 720)]);
    // ms now agree with the ticks.
    for note in &s.notes {
        assert_eq!(note.start_ms, s.tick_to_ms(note.start_tick));
        assert_eq!(note.end_ms, s.tick_to_ms(note.end_tick));
    }
    assert_eq!(
        (s.sections[0].start_tick, s.sections[0].end_tick),
        (240, 960)
    );
    // Unusable tempos fall back to 120 bpm.
    for bpm in [0.0, -1.0, f64::NAN, f64::INFINITY] {
        assert_eq!(
            Song::from_ms_notes(vec![], vec![], bpm).tempo_map,
            vec![tempo(0, 500_000)]
        );
    }
    assert_eq!(
        Song::from_ms_notes(vec![], vec![], 90.0).tempo_map,
        vec![tempo(0, 666_667)]
    );
}

/// A section's notes are those starting inside its span (end excluded), re-timed from its start.
#[test]
fn section_notes_start_inside_and_count_from_the_start() {
    let n = |pitch: u8, start_ms: f64, end_ms: f64| Note {
        pitch,
        velocity: 64,
        channel: 0,
        program: 0,
        start_tick: 0,
        end_tick: 0,
        start_ms,
        end_ms,
    };
    let section = Section {
        label: SectionLabel::B,
        marker_text: "B".into(),
        start_tick: 0,
        end_tick: 0,
        start_ms: 1000.0,
        end_ms: 2000.0,
    };
    let song = Song::from_ms_notes(
        vec![
            n(60, 900.0, 1100.0),
            n(62, 1000.0, 1250.0),
            n(64, 1975.0, 2300.0),
            n(65, 2000.0, 2100.0),
        ],
        vec![section.clone()],
        120.0,
    );
    let got: Vec<(u8, f64, f64)> = song
        .section_notes(&section)
        .iter()
        .map(|n| (n.pitch, n.start_ms, n.end_ms))
        .collect();
    assert_eq!(got, vec![(62, 0.0, 250.0), (64, 975.0, 1300.0)]);
    assert_eq!(song.notes_in(0.0, 1000.0).len(), 1);
}
