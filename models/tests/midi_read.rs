//! Reading hand-built Standard MIDI Files: each fixture is written byte by byte so the test
//! states exactly what is in the file.

use staria_models::{
    Error, SectionLabel, Song, read_midi, read_midi_file, section_label_for_marker,
};

/// A MIDI variable-length number.
fn vlq(mut v: u32) -> Vec<u8> {
    let mut out = vec![(v & 0x7F) as u8];
    v >>= 7;
    while v > 0 {
        out.insert(0, (v & 0x7F) as u8 | 0x80);
        v >>= 7;
    }
    out
}

/// A track body under construction: events with delta times.
#[derive(Default, Clone)]
struct Trk(Vec<u8>);

impl Trk {
    fn ev(mut self, delta: u32, bytes: &[u8]) -> Self {
        self.0.extend(vlq(delta));
        self.0.extend_from_slice(bytes);
        self
    }
    fn on(self, delta: u32, ch: u8, key: u8, vel: u8) -> Self {
        self.ev(delta, &[0x90 | ch, key, vel])
    }
    fn off(self, delta: u32, ch: u8, key: u8) -> Self {
        self.ev(delta, &[0x80 | ch, key, 0x40])
    }
    fn cc(self, delta: u32, ch: u8, cc: u8, value: u8) -> Self {
        self.ev(delta, &[0xB0 | ch, cc, value])
    }
    fn program(self, delta: u32, ch: u8, program: u8) -> Self {
        self.ev(delta, &[0xC0 | ch, program])
    }
    fn meta(self, delta: u32, kind: u8, data: &[u8]) -> Self {
        let mut bytes = vec![0xFF, kind];
        bytes.extend(vlq(data.len() as u32));
        bytes.extend_from_slice(data);
        self.ev(delta, &bytes)
    }
    fn tempo(self, delta: u32, us: u32) -> Self {
        self.meta(delta, 0x51, &us.to_be_bytes()[1..])
    }
    fn marker(self, delta: u32, text: &str) -> Self {
        self.meta(delta, 0x06, text.as_bytes())
    }
    fn time_sig(self, delta: u32, num: u8, power: u8) -> Self {
        self.meta(delta, 0x58, &[num, power, 24, 8])
    }
    /// Closes the track with End of Track after `delta` ticks.
    fn end(self, delta: u32) -> Vec<u8> {
        self.meta(delta, 0x2F, &[]).0
    }
}

fn smf(format: u16, division: u16, tracks: &[Vec<u8>]) -> Vec<u8> {
    let mut out = b"MThd".to_vec();
    out.extend(6u32.to_be_bytes());
    out.extend(format.to_be_bytes());
    out.extend((tracks.len() as u16).to_be_bytes());
    out.extend(division.to_be_bytes());
    for t in tracks {
        out.extend(b"MTrk");
        out.extend((t.len() as u32).to_be_bytes());
        out.extend(t);
    }
    out
}

fn read(bytes: &[u8]) -> Song {
    read_midi(bytes).unwrap_or_else(|e| panic!("fixture should read: {e}"))
}

fn err_text(bytes: &[u8]) -> String {
    match read_midi(bytes) {
        Err(Error::Midi(msg)) => msg,
        Err(other) => panic!("expected a MIDI error, got {other}"),
        Ok(song) => panic!("expected an error, read {} notes", song.notes.len()),
    }
}

/// (pitch, channel, start_tick, end_tick) of every note, in the song's order.
fn spans(song: &Song) -> Vec<(u8, u8, u64, u64)> {
    song.notes
        .iter()
        .map(|n| (n.pitch, n.channel, n.start_tick, n.end_tick))
        .collect()
}

fn approx(a: f64, b: f64) -> bool {
    (a - b).abs() < 1e-6
}

#[test]
fn velocity_zero_note_on_ends_the_note() {
    let t = Trk::default()
        .on(0, 0, 60, 100)
        .on(480, 0, 60, 0)
        .on(0, 0, 62, 90)
        .on(240, 0, 62, 0)
        .end(0);
    let song = read(&smf(0, 480, &[t]));
    assert_eq!(spans(&song), vec![(60, 0, 0, 480), (62, 0, 480, 720)]);
    assert_eq!(song.notes[0].velocity, 100);
    assert_eq!(song.notes[1].velocity, 90);
    // 480 ticks at 120 bpm and 480 tpq is half a second.
    assert!(approx(song.notes[0].end_ms, 500.0));
    assert_eq!(song.ticks_per_quarter, 480);
}

#[test]
fn same_pitch_note_on_ends_the_sounding_note() {
    // 60 on at 0, again at 100 (first one ends there), offs at 300 and 400: the first off ends the
    // second note, the second off finds nothing sounding.
    let t = Trk::default()
        .on(0, 0, 60, 80)
        .on(100, 0, 60, 90)
        .off(200, 0, 60)
        .off(100, 0, 60)
        .end(0);
    let song = read(&smf(0, 480, &[t]));
    assert_eq!(spans(&song), vec![(60, 0, 0, 100), (60, 0, 100, 300)]);
    assert_eq!(song.notes[1].velocity, 90);
}

#[test]
fn note_on_written_before_the_replaced_notes_off_at_one_tick() {
    // Repeated notes from a writer that puts the new note-on before the old note-off.
    let t = Trk::default()
        .on(0, 0, 60, 80)
        .on(480, 0, 60, 81)
        .off(0, 0, 60)
        .off(480, 0, 60)
        // A zero-length note (on and off at one tick, nothing sounding before) is dropped.
        .on(0, 0, 64, 80)
        .off(0, 0, 64)
        .end(10);
    let song = read(&smf(0, 480, &[t]));
    assert_eq!(spans(&song), vec![(60, 0, 0, 480), (60, 0, 480, 960)]);
}

#[test]
fn unmatched_note_on_ends_at_the_last_event_of_the_file() {
    // Track 0 ends at 2000, track 1's note never ends: it lasts to tick 2000.
    let t0 = Trk::default().tempo(0, 500_000).end(2000);
    let t1 = Trk::default()
        .on(10, 1, 48, 70)
        .on(0, 1, 50, 70)
        .off(90, 1, 50)
        .end(0);
    let song = read(&smf(1, 480, &[t0, t1]));
    assert_eq!(spans(&song), vec![(48, 1, 10, 2000), (50, 1, 10, 100)]);
}

#[test]
fn sustain_pedal_holds_released_notes_until_it_comes_up() {
    let t = Trk::default()
        .cc(0, 0, 64, 127) // pedal down
        .on(0, 0, 60, 80)
        .on(0, 0, 64, 80)
        .off(100, 0, 60) // released under the pedal: held
        .on(50, 0, 60, 90) // same pitch again at 150: the held note ends here
        .off(50, 0, 60) // at 200, held again
        .off(0, 0, 64) // at 200, held
        .cc(300, 0, 64, 0) // pedal up at 500: both held notes end
        .on(0, 1, 70, 80) // channel 1 has no pedal
        .off(100, 1, 70)
        .cc(0, 0, 64, 100) // pedal down again at 600
        .on(0, 0, 72, 80)
        .off(10, 0, 72) // released, held until the end of the file at 700
        .end(90);
    let song = read(&smf(0, 480, &[t]));
    assert_eq!(
        spans(&song),
        vec![
            (60, 0, 0, 150),
            (64, 0, 0, 500),
            (60, 0, 150, 500),
            (70, 1, 500, 600),
            (72, 0, 600, 700)
        ]
    );
}

#[test]
fn pedal_down_does_not_shorten_or_lengthen_held_keys() {
    // Key still held when the pedal comes up: it ends at its own note-off.
    let t = Trk::default()
        .on(0, 0, 60, 80)
        .cc(10, 0, 64, 127)
        .cc(10, 0, 64, 0)
        .off(100, 0, 60)
        .end(0);
    let song = read(&smf(0, 480, &[t]));
    assert_eq!(spans(&song), vec![(60, 0, 0, 120)]);
}

#[test]
fn tempo_change_mid_file_is_followed_piecewise() {
    // 120 bpm for the first two beats, then 60 bpm (in a different track from the notes).
    let t0 = Trk::default()
        .tempo(0, 500_000)
        .tempo(960, 1_000_000)
        .end(0);
    let t1 = Trk::default()
        .on(480, 0, 60, 80)
        .off(960, 0, 60)
        .on(0, 0, 62, 80)
        .off(480, 0, 62)
        .end(0);
    let song = read(&smf(1, 480, &[t0, t1]));
    assert_eq!(song.tempo_map.len(), 2);
    assert_eq!(
        (song.tempo_map[1].tick, song.tempo_map[1].us_per_quarter),
        (960, 1_000_000)
    );
    let (a, b) = (&song.notes[0], &song.notes[1]);
    assert_eq!(
        (a.start_tick, a.end_tick, b.start_tick, b.end_tick),
        (480, 1440, 1440, 1920)
    );
    // 480 ticks at 120 bpm = 500 ms; tick 960 = 1000 ms; then 480 ticks per second.
    assert!(approx(a.start_ms, 500.0), "{}", a.start_ms);
    assert!(approx(a.end_ms, 2000.0), "{}", a.end_ms);
    assert!(approx(b.end_ms, 3000.0), "{}", b.end_ms);
    assert!(approx(song.tick_to_ms(1440), 2000.0));
    assert_eq!(song.ms_to_tick(2000.0), 1440);
    assert_eq!(song.ms_to_tick(750.0), 720);
}

#[test]
fn tempo_map_is_merged_from_any_track_with_default_at_tick_0() {
    // No tempo at 0: 120 bpm is assumed there; tempos come from track 1 and 2.
    let t0 = Trk::default().end(0);
    let t1 = Trk::default().tempo(960, 400_000).end(0);
    let t2 = Trk::default()
        .tempo(480, 600_000)
        .tempo(480, 300_000)
        .on(0, 0, 60, 1)
        .off(480, 0, 60)
        .end(0);
    let song = read(&smf(1, 480, &[t0, t1, t2]));
    let map: Vec<(u64, u32)> = song
        .tempo_map
        .iter()
        .map(|t| (t.tick, t.us_per_quarter))
        .collect();
    // Two changes at 960: the later in file order (track 2) wins.
    assert_eq!(map, vec![(0, 500_000), (480, 600_000), (960, 300_000)]);
    let n = &song.notes[0];
    // One quarter at 120 bpm, one at 600,000 us, one at 300,000 us.
    assert!(approx(n.start_ms, 500.0 + 600.0), "{}", n.start_ms);
    assert!(approx(n.end_ms, 1100.0 + 300.0), "{}", n.end_ms);
}

#[test]
fn no_tempo_and_no_time_signature_give_the_defaults() {
    let song = read(&smf(
        0,
        96,
        &[Trk::default().on(0, 3, 40, 50).off(96, 3, 40).end(0)],
    ));
    assert_eq!(song.tempo_map.len(), 1);
    assert_eq!(
        (song.tempo_map[0].tick, song.tempo_map[0].us_per_quarter),
        (0, 500_000)
    );
    assert_eq!(song.time_signatures.len(), 1);
    let ts = song.time_signatures[0];
    assert_eq!((ts.tick, ts.numerator, ts.denominator), (0, 4, 4));
    assert!(song.sections.is_empty());
    assert_eq!(song.section_form(), "");
}

#[test]
fn time_signatures_store_the_denominator_itself() {
    let t = Trk::default()
        .time_sig(0, 6, 3)
        .time_sig(1440 * 2, 2, 2)
        .time_sig(960, 7, 3)
        .on(0, 0, 60, 80)
        .off(10, 0, 60)
        .end(0);
    let song = read(&smf(0, 480, &[t]));
    let sigs: Vec<(u64, u8, u8)> = song
        .time_signatures
        .iter()
        .map(|t| (t.tick, t.numerator, t.denominator))
        .collect();
    assert_eq!(sigs, vec![(0, 6, 8), (2880, 2, 4), (3840, 7, 8)]);
    // 6/8 bars are 1440 ticks at 480 tpq; 2/4 bars are 960.
    assert_eq!(song.bar_start_tick(2), 2880);
    assert_eq!(song.bar_at_tick(3839), 2);
    assert_eq!(song.bar_at_tick(3840), 3);
}

#[test]
fn first_time_signature_after_tick_0_gets_4_4_before_it() {
    let t = Trk::default().time_sig(1920, 3, 2).end(0);
    let song = read(&smf(0, 480, &[t]));
    let sigs: Vec<(u64, u8, u8)> = song
        .time_signatures
        .iter()
        .map(|t| (t.tick, t.numerator, t.denominator))
        .collect();
    assert_eq!(sigs, vec![(0, 4, 4), (1920, 3, 4)]);
}

#[test]
fn program_in_force_on_the_channel_at_note_start() {
    let t0 = Trk::default()
        .program(0, 0, 40)
        .on(0, 0, 60, 80)
        .program(100, 0, 41) // changes while 60 sounds: 60 keeps 40
        .off(100, 0, 60)
        .on(0, 0, 62, 80)
        .off(100, 0, 62)
        .on(0, 2, 50, 80) // channel 2 never had a program change: 0
        .off(10, 2, 50)
        .end(0);
    // Track 1 changes channel 5's program at tick 0 but after track 0... program changes come
    // first within a tick, so track 0's note at tick 0 on channel 5 gets it.
    let t0b = Trk::default().on(0, 5, 70, 80).off(50, 5, 70).end(0);
    let t1 = Trk::default().program(0, 5, 73).end(0);
    let song = read(&smf(1, 480, &[t0, t0b, t1]));
    let programs: Vec<(u8, u8, u8)> = song
        .notes
        .iter()
        .map(|n| (n.pitch, n.channel, n.program))
        .collect();
    assert_eq!(
        programs,
        vec![(60, 0, 40), (70, 5, 73), (62, 0, 41), (50, 2, 0)]
    );
}

#[test]
fn format_0_and_format_1_read_the_same_notes() {
    let t0 = Trk::default()
        .tempo(0, 400_000)
        .time_sig(0, 3, 2)
        .on(0, 0, 60, 80)
        .on(0, 1, 48, 70)
        .off(480, 0, 60)
        .off(0, 1, 48)
        .end(0);
    let single = read(&smf(0, 480, &[t0]));

    let conductor = Trk::default().tempo(0, 400_000).time_sig(0, 3, 2).end(0);
    let melody = Trk::default().on(0, 0, 60, 80).off(480, 0, 60).end(0);
    let bass = Trk::default().on(0, 1, 48, 70).off(480, 1, 48).end(0);
    let multi = read(&smf(1, 480, &[conductor, melody, bass]));

    assert_eq!(single.notes.len(), 2);
    assert_eq!(single, multi);
    assert_eq!(spans(&single), vec![(48, 1, 0, 480), (60, 0, 0, 480)]);
    assert!(approx(single.notes[0].end_ms, 400.0));
}

#[test]
fn format_2_is_refused() {
    let t = Trk::default().on(0, 0, 60, 80).off(10, 0, 60).end(0);
    let msg = err_text(&smf(2, 480, &[t.clone(), t]));
    assert!(msg.contains("format 2"), "{msg}");
    assert!(err_text(&smf(3, 480, &[])).contains("format 3"));
}

#[test]
fn markers_become_sections() {
    let conductor = Trk::default()
        .marker(0, "A")
        .marker(960, "Take 3") // not a section marker: ignored
        .marker(0, "A'")
        .marker(960, "Verse")
        .marker(960, "junk")
        .marker(0, "E") // same tick as "junk", which is no section marker
        .marker(960, "B")
        .marker(0, "Chorus 2") // same tick as "B": the later wins
        .end(0);
    let notes = Trk::default().on(0, 0, 60, 80).off(5000, 0, 60).end(0);
    let song = read(&smf(1, 480, &[conductor, notes]));
    let secs: Vec<(SectionLabel, &str, u64, u64)> = song
        .sections
        .iter()
        .map(|s| (s.label, s.marker_text.as_str(), s.start_tick, s.end_tick))
        .collect();
    assert_eq!(
        secs,
        vec![
            (SectionLabel::A, "A", 0, 960),
            (SectionLabel::A, "A'", 960, 1920),
            (SectionLabel::A, "Verse", 1920, 2880),
            (SectionLabel::D, "E", 2880, 3840),
            (SectionLabel::B, "Chorus 2", 3840, 5000),
        ]
    );
    assert_eq!(song.section_form(), "AAADB");
    // The last section runs to the end of the piece; ms follow the tempo map.
    assert!(approx(song.sections[4].end_ms, 5000.0 / 960.0 * 1000.0));
    assert!(approx(song.sections[1].start_ms, 1000.0));
}

#[test]
fn last_section_ends_at_the_later_of_last_note_and_last_event() {
    // The conductor runs to 4000, past the last note (ends 1000).
    let conductor = Trk::default().marker(0, "A").marker(500, "B").end(3500);
    let notes = Trk::default().on(0, 0, 60, 80).off(1000, 0, 60).end(0);
    let song = read(&smf(1, 480, &[conductor, notes]));
    assert_eq!(song.sections.last().map(|s| s.end_tick), Some(4000));
    // A marker at the very end starts a section with no length: dropped.
    let conductor = Trk::default().marker(0, "A").marker(1000, "Coda").end(0);
    let notes = Trk::default().on(0, 0, 60, 80).off(1000, 0, 60).end(0);
    let song = read(&smf(1, 480, &[conductor, notes]));
    assert_eq!(song.section_form(), "A");
    assert_eq!(song.sections[0].end_tick, 1000);
}

#[test]
fn marker_rule() {
    use SectionLabel::*;
    let cases: &[(&str, Option<SectionLabel>)] = &[
        ("A", Some(A)),
        ("b", Some(B)),
        ("  C  ", Some(C)),
        ("D", Some(D)),
        ("A'", Some(A)),
        ("A''", Some(A)),
        ("B’", Some(B)),
        ("A2", Some(A)),
        ("B1", Some(B)),
        ("C-2", Some(C)),
        ("a (repeat)", Some(A)),
        ("B [2nd time]", Some(B)),
        ("E", Some(D)),
        ("F'", Some(D)),
        ("Z", Some(D)),
        ("Section B", Some(B)),
        ("part c'", Some(C)),
        ("Verse", Some(A)),
        ("VERSE 2", Some(A)),
        ("Chorus", Some(B)),
        ("chorus (x2)", Some(B)),
        ("Refrain", Some(B)),
        ("Hook", Some(B)),
        ("Bridge", Some(C)),
        ("Middle 8", Some(C)),
        ("Middle Eight", Some(C)),
        ("Intro", Some(D)),
        ("Outro", Some(D)),
        ("Pre-Chorus", Some(D)),
        ("Prechorus 2", Some(D)),
        ("Solo", Some(D)),
        ("Interlude", Some(D)),
        ("Coda", Some(D)),
        ("Break", Some(D)),
        ("Breakdown", Some(D)),
        ("Instrumental", Some(D)),
        ("Take 3", None),
        ("", None),
        ("   ", None),
        ("II", None),
        ("I love you", None),
        ("Verses of love", None),
        ("Chorusline", None),
        ("Section", None),
        ("3", None),
        ("É", None),
        ("AB", None),
    ];
    for &(text, want) in cases {
        assert_eq!(section_label_for_marker(text), want, "marker {text:?}");
    }
}

#[test]
fn corpus_style_file_reads_its_form() {
    // As the corpus writes them: markers with the letter in track 0, 480 tpq, a 2/4 reel at 100 qpm.
    let conductor = Trk::default()
        .meta(0, 0x03, b"7th Regiment -- Reel")
        .time_sig(0, 2, 2)
        .tempo(0, 600_000)
        .marker(0, "A")
        .marker(7680, "A")
        .marker(7680, "B")
        .marker(7680, "B")
        .end(0);
    let mut voice = Trk::default().meta(0, 0x03, b"voice 1").program(0, 0, 0);
    for _ in 0..32 {
        voice = voice.on(0, 0, 69, 80).off(960, 0, 69);
    }
    let song = read(&smf(1, 480, &[conductor, voice.end(0)]));
    assert_eq!(song.section_form(), "AABB");
    assert_eq!(song.notes.len(), 32);
    let bounds: Vec<(u64, u64)> = song
        .sections
        .iter()
        .map(|s| (s.start_tick, s.end_tick))
        .collect();
    assert_eq!(
        bounds,
        vec![(0, 7680), (7680, 15360), (15360, 23040), (23040, 30720)]
    );
    assert!(approx(song.duration_ms(), 30720.0 / 480.0 * 600.0));
}

#[test]
fn smpte_timing_reads_at_a_fixed_rate() {
    // 25 fps x 40 ticks per frame = 1000 ticks per second: 1 ms per tick; tempo events ignored.
    let division = ((-25i8 as u8 as u16) << 8) | 40;
    let t = Trk::default()
        .tempo(0, 250_000)
        .on(100, 0, 60, 80)
        .off(1500, 0, 60)
        .end(0);
    let song = read(&smf(0, division, &[t]));
    assert_eq!(song.ticks_per_quarter, 1000);
    assert_eq!(song.tempo_map.len(), 1);
    assert!(approx(song.notes[0].start_ms, 100.0));
    assert!(approx(song.notes[0].end_ms, 1600.0));
    // 29.97 drop-frame: 30 x 2 ticks per 1.001 s.
    let division = ((-29i8 as u8 as u16) << 8) | 2;
    let t = Trk::default().on(60, 0, 60, 80).off(60, 0, 60).end(0);
    let song = read(&smf(0, division, &[t]));
    assert!(approx(song.notes[0].start_ms, 1001.0));
    // Unknown frame rates and 0 ticks per frame are errors, also the header byte 0x80 (-128).
    assert!(err_text(&smf(0, 0xE600 | 4, &[])).contains("frames per second"));
    assert!(err_text(&smf(0, 0x8004, &[])).contains("frames per second"));
    assert!(err_text(&smf(0, 0xE700, &[])).contains("0 ticks per frame"));
}

#[test]
fn broken_files_give_errors_that_name_the_problem() {
    assert!(err_text(b"").contains("not a MIDI file"));
    assert!(err_text(b"RIFF\0\0\0\0RMIDdata").contains("RIFF"));
    assert!(err_text(b"MThd\0\0\0\x06\0\x01").contains("truncated header"));
    assert!(err_text(&smf(1, 0, &[])).contains("0 ticks per quarter"));

    let t0 = Trk::default().tempo(0, 500_000).end(0);
    let t1 = Trk::default()
        .on(0, 0, 60, 80)
        .off(480, 0, 60)
        .on(0, 0, 62, 80)
        .off(480, 0, 62)
        .end(0);
    let file = smf(1, 480, &[t0.clone(), t1.clone()]);
    // Cut inside the last track: its chunk declares more bytes than remain.
    let cut = &file[..file.len() - 5];
    let msg = err_text(cut);
    let track1_at = 14 + 8 + t0.len();
    assert!(
        msg.contains(&format!("truncated track 1 at byte {track1_at}")),
        "{msg}"
    );
    // Cut exactly after the first track: fewer tracks than declared.
    let msg = err_text(&file[..track1_at]);
    assert!(
        msg.contains("declares 2 tracks") && msg.contains("holds 1"),
        "{msg}"
    );
    // A chunk whose declared length cuts an event in two.
    let mut short = smf(1, 480, &[t0, t1[..5].to_vec()]);
    let msg = err_text(&short);
    assert!(
        msg.contains("truncated track 1") && msg.contains("runs past the end"),
        "{msg}"
    );
    // Data byte with no running status.
    short = smf(0, 480, &[Trk::default().ev(0, &[0x3C, 0x40]).end(0)]);
    assert!(err_text(&short).contains("no running status"));
    // System real-time byte in a track.
    short = smf(0, 480, &[Trk::default().ev(0, &[0xF8]).end(0)]);
    assert!(err_text(&short).contains("0xF8"));
    // Top bit set in a data byte.
    short = smf(0, 480, &[Trk::default().ev(0, &[0x90, 0x3C, 0x80]).end(0)]);
    assert!(err_text(&short).contains("top bit"));
}

#[test]
fn lenient_about_what_loses_nothing() {
    // Running status across a meta event, no End of Track, an unknown chunk, padding after.
    let body = Trk::default()
        .ev(0, &[0x90, 60, 80])
        .marker(0, "A")
        .ev(100, &[60, 0])
        .ev(0, &[62, 70])
        .ev(100, &[62, 0])
        .0;
    let mut file = smf(0, 480, &[]);
    file[10..12].copy_from_slice(&1u16.to_be_bytes());
    file.extend(b"XFIH\0\0\0\x02hi");
    file.extend(b"MTrk");
    file.extend((body.len() as u32).to_be_bytes());
    file.extend(&body);
    file.extend([0, 0, 0]);
    let song = read(&file);
    assert_eq!(spans(&song), vec![(60, 0, 0, 100), (62, 0, 100, 200)]);
    assert_eq!(song.section_form(), "A");
    // Events after End of Track are not played.
    let t = Trk::default()
        .on(0, 0, 60, 80)
        .off(10, 0, 60)
        .meta(0, 0x2F, &[])
        .on(0, 0, 70, 80)
        .off(10, 0, 70)
        .end(0);
    assert_eq!(read(&smf(0, 480, &[t])).notes.len(), 1);
}

#[test]
fn read_midi_file_reports_io_and_names_the_file() {
    let dir = tempfile::tempdir().expect("temp dir");
    let missing = dir.path().join("missing.mid");
    match read_midi_file(&missing) {
        Err(Error::Io { path, .. }) => assert_eq!(path, missing),
        other => panic!("expected an I/O error, got {other:?}"),
    }
    let bad = dir.path().join("bad.mid");
    std::fs::write(&bad, b"MThd").expect("write");
    let msg = read_midi_file(&bad).expect_err("bad file").to_string();
    assert!(
        msg.contains("bad.mid") && msg.contains("truncated header"),
        "{msg}"
    );
    let good = dir.path().join("good.mid");
    std::fs::write(
        &good,
        smf(
            0,
            480,
            &[Trk::default().on(0, 0, 60, 80).off(1, 0, 60).end(0)],
        ),
    )
    .expect("write");
    assert_eq!(read_midi_file(&good).expect("good file").notes.len(), 1);
}
