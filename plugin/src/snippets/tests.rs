use super::*;
use crate::timeline::HostReport;

fn grid() -> Timeline {
    Timeline::from_host(HostReport {
        playing: true,
        tempo: Some(120.0),
        time_sig: (Some(4), Some(4)),
        pos_beats: Some(0.0),
        bar_start_beats: Some(0.0),
        samples: 512,
        sample_rate: 48_000.0,
        ..HostReport::default()
    })
}

#[test]
fn packing_round_trips() {
    let n = SnippetNote {
        start_ticks: 123_456,
        len_ticks: 960,
        pitch: 127,
        velocity: 100,
    };
    assert_eq!(SnippetNote::unpack(n.pack()), n);
    let big = SnippetNote {
        start_ticks: u32::MAX,
        len_ticks: u32::MAX,
        pitch: 0,
        velocity: 1,
    };
    assert_eq!(SnippetNote::unpack(big.pack()).start_ticks, MAX_TICKS);
}

#[test]
fn capture_is_quantised_to_whole_bars() {
    let g = grid();
    let mut r = Recorder::default();
    r.arm(SectionLabel::B);
    // A pickup in bar 2 (beats 4..8), then bar 3; disarmed a little after the bar 4 line.
    assert!(r.note_on(60, 100, 5.5));
    assert!(r.note_off(60, 6.0));
    assert!(r.note_on(64, 90, 8.0));
    assert!(r.note_on(67, 80, 9.0));
    assert!(r.note_off(64, 10.0));
    let mut out = SnippetData::default();
    let fin = r.finish(12.2, &g, true, &mut out).unwrap();
    assert_eq!(fin.section, SectionLabel::B);
    assert_eq!(fin.origin_beat, 4.0);
    assert_eq!(fin.end_beat, 12.0);
    assert_eq!(out.bars, 2);
    assert_eq!(out.length_beats(), 8.0);
    let notes = out.notes();
    assert_eq!(notes.len(), 3);
    assert_eq!(
        (notes[0].pitch, notes[0].start_beats(), notes[0].end_beats()),
        (60, 1.5, 2.0)
    );
    assert_eq!(
        (notes[1].pitch, notes[1].start_beats(), notes[1].end_beats()),
        (64, 4.0, 6.0)
    );
    // Still held at the end: cut at the snippet's end.
    assert_eq!(
        (notes[2].pitch, notes[2].start_beats(), notes[2].end_beats()),
        (67, 5.0, 8.0)
    );
    assert_eq!(r.section(), None);
}

#[test]
fn early_disarm_still_covers_the_last_note() {
    let g = grid();
    let mut r = Recorder::default();
    r.arm(SectionLabel::A);
    r.note_on(60, 100, 1.0);
    r.note_off(60, 1.5);
    r.note_on(62, 100, 6.5);
    r.note_off(62, 7.0);
    let mut out = SnippetData::default();
    // Disarmed at 5.0 after playing at 6.5? The disarm came before the note (clock skew):
    // the snippet still ends after the bar holding the last note.
    let fin = r.finish(5.0, &g, true, &mut out).unwrap();
    assert_eq!((fin.origin_beat, fin.end_beat), (0.0, 8.0));
    assert_eq!(out.bars, 2);
}

#[test]
fn unquantised_capture_starts_on_the_first_note() {
    let g = grid();
    let mut r = Recorder::default();
    r.arm(SectionLabel::C);
    r.note_on(60, 100, 1.25);
    r.note_off(60, 2.0);
    let mut out = SnippetData::default();
    let fin = r.finish(3.0, &g, false, &mut out).unwrap();
    assert_eq!((fin.origin_beat, fin.end_beat), (1.25, 3.0));
    assert_eq!(out.notes()[0].start_ticks, 0);
    assert_eq!(out.length_beats(), 1.75);
}

#[test]
fn empty_capture_keeps_the_old_snippet_and_full_capture_counts_drops() {
    let g = grid();
    let mut r = Recorder::default();
    let mut out = SnippetData::default();
    r.arm(SectionLabel::D);
    assert!(r.finish(4.0, &g, true, &mut out).is_none());
    r.arm(SectionLabel::D);
    for i in 0..MAX_SNIPPET_NOTES + 3 {
        r.note_on((i % 100) as u8, 100, i as f64 * 0.01);
    }
    assert_eq!(r.dropped, 3);
    r.finish(8.0, &g, true, &mut out).unwrap();
    assert_eq!(out.count, MAX_SNIPPET_NOTES);
}

#[test]
fn store_saves_restores_and_applies_on_the_audio_side() {
    let g = grid();
    let store = SnippetStore::default();
    let mut r = Recorder::default();
    let mut data = SnippetData::default();
    r.arm(SectionLabel::A);
    r.note_on(60, 100, 0.0);
    r.note_off(60, 1.0);
    r.finish(4.0, &g, true, &mut data).unwrap();
    store.publish(SectionLabel::A, &data);
    let saved = store.map(|s| s.clone());
    assert_eq!(saved.sections.len(), 1);
    assert_eq!(saved.sections[0].section, 'A');
    assert_eq!(
        saved.sections[0].notes[0],
        SavedNote {
            pitch: 60,
            velocity: 100,
            start: 0.0,
            length: 1.0
        }
    );

    // Serde round trip, as the plugin state does it.
    let json = serde_json::to_string(&saved).unwrap();
    let back: SavedSnippets = serde_json::from_str(&json).unwrap();
    assert_eq!(back, saved);

    // Load into a fresh store: visible to a save before the audio thread applied it...
    let fresh = SnippetStore::default();
    let mut moved = back.clone();
    moved.sections[0].section = 'C';
    fresh.set(moved.clone());
    assert_eq!(fresh.snapshot(), moved);
    // ...and after.
    let mut scratch = SnippetData::default();
    assert!(fresh.apply_restore(&mut scratch));
    assert!(!fresh.apply_restore(&mut scratch));
    assert_eq!(fresh.snapshot(), moved);
    assert!(fresh.try_read_published(SectionLabel::C, &mut scratch));
    assert_eq!(scratch.count, 1);
    assert!(fresh.try_read_published(SectionLabel::A, &mut scratch));
    assert_eq!(scratch.count, 0);
}

#[test]
fn replay_orders_offs_before_ons_and_handles_restrikes() {
    let mut data = SnippetData::default();
    let notes = [
        SnippetNote {
            start_ticks: 0,
            len_ticks: 960,
            pitch: 60,
            velocity: 100,
        },
        SnippetNote {
            start_ticks: 0,
            len_ticks: 3000,
            pitch: 64,
            velocity: 90,
        },
        SnippetNote {
            start_ticks: 960,
            len_ticks: 960,
            pitch: 60,
            velocity: 80,
        },
        // Overlaps the 64 above: re-strike.
        SnippetNote {
            start_ticks: 1920,
            len_ticks: 480,
            pitch: 64,
            velocity: 70,
        },
    ];
    data.notes[..4].copy_from_slice(&notes);
    data.count = 4;
    let on = |pitch, velocity, beat| ReplayStep::On {
        pitch,
        velocity,
        beat,
    };
    let off = |pitch, beat| ReplayStep::Off { pitch, beat };
    let mut cur = ReplayCursor::default();
    let mut steps = Vec::new();
    while let Some(s) = cur.next(&data) {
        steps.push(s);
    }
    assert_eq!(
        steps,
        vec![
            on(60, 100, 0.0),
            on(64, 90, 0.0),
            off(60, 1.0),
            on(60, 80, 1.0),
            off(60, 2.0),
            off(64, 2.0),
            on(64, 70, 2.0),
            off(64, 2.5),
        ]
    );
}
