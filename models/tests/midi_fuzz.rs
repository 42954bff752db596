//! Any byte string must read as `Ok` or `Err`, never panic: random bytes and mutations of valid
//! files (bit flips, truncations, inserted and deleted bytes, corrupted length fields) and the
//! extremes a hostile file may hold (0 or 65,535 tracks, tempo 0, huge deltas, running-status
//! abuse, SysEx). `STARIA_MIDI_FUZZ_CASES` sets how many (40,000 by default).

use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use staria_models::{
    Note, Section, SectionLabel, Song, TempoChange, TimeSignature, read_midi, write_midi,
};

/// Valid files to mutate: written by `write_midi` (format 1, several tracks, markers) plus a
/// hand-made format 0 file with running status, SysEx, a pedal and an SMPTE header variant.
fn seeds() -> Vec<Vec<u8>> {
    let note = |pitch: u8, channel: u8, start: u64, end: u64| Note {
        pitch,
        velocity: 90,
        channel,
        program: channel * 3,
        start_tick: start,
        end_tick: end,
        start_ms: 0.0,
        end_ms: 0.0,
    };
    let section = |label: SectionLabel, start: u64, end: u64| Section {
        label,
        marker_text: label.letter().to_string(),
        start_tick: start,
        end_tick: end,
        start_ms: 0.0,
        end_ms: 0.0,
    };
    let song = Song {
        ticks_per_quarter: 480,
        tempo_map: vec![
            TempoChange {
                tick: 0,
                us_per_quarter: 500_000,
            },
            TempoChange {
                tick: 960,
                us_per_quarter: 700_000,
            },
        ],
        time_signatures: vec![TimeSignature {
            tick: 0,
            numerator: 3,
            denominator: 4,
        }],
        notes: (0..40)
            .map(|i| note(40 + i as u8, (i % 3) as u8, i * 120, i * 120 + 200))
            .collect(),
        sections: vec![
            section(SectionLabel::A, 0, 1440),
            section(SectionLabel::B, 1440, 5000),
        ],
    };
    let written = write_midi(&song).expect("seed song writes");

    let track: Vec<u8> = vec![
        0x00, 0xFF, 0x51, 0x03, 0x07, 0xA1, 0x20, // tempo
        0x00, 0xFF, 0x58, 0x04, 0x06, 0x03, 0x18, 0x08, // 6/8
        0x00, 0xFF, 0x06, 0x02, b'A', b'\'', // marker
        0x00, 0xC0, 0x05, // program
        0x00, 0xB0, 0x40, 0x7F, // pedal down
        0x00, 0x90, 0x3C, 0x50, // note on
        0x00, 0x3E, 0x50, // running status
        0x81, 0x00, 0x3C, 0x00, // velocity 0
        0x00, 0xF0, 0x03, 0x7E, 0x7F, 0xF7, // SysEx
        0x60, 0xB0, 0x40, 0x00, // pedal up
        0x00, 0x80, 0x3E, 0x40, // note off
        0x83, 0x60, 0xFF, 0x2F, 0x00, // end of track
    ];
    let mut hand = b"MThd\x00\x00\x00\x06\x00\x00\x00\x01\x00\x60MTrk".to_vec();
    hand.extend((track.len() as u32).to_be_bytes());
    hand.extend(&track);
    let mut smpte = hand.clone();
    smpte[12] = 0xE7; // -25 fps
    smpte[13] = 0x28;
    vec![written, hand, smpte]
}

/// How many inputs [`any_bytes_read_without_panic`] tries: `$STARIA_MIDI_FUZZ_CASES`, else 40,000
/// (CI). The long run is a million (BENCHMARKS.md has the command and figures).
fn fuzz_cases() -> usize {
    match std::env::var("STARIA_MIDI_FUZZ_CASES") {
        Ok(v) => v
            .parse()
            .unwrap_or_else(|_| panic!("STARIA_MIDI_FUZZ_CASES={v:?} is not a number")),
        Err(_) => 40_000,
    }
}

/// A MIDI variable-length quantity (at most 4 bytes, 28 bits).
fn varlen(mut value: u32) -> Vec<u8> {
    value &= 0x0FFF_FFFF;
    let mut out = vec![(value & 0x7F) as u8];
    value >>= 7;
    while value > 0 {
        out.insert(0, 0x80 | (value & 0x7F) as u8);
        value >>= 7;
    }
    out
}

/// A file with the given header fields around `tracks` copies of `body`.
fn file_with(
    format: u16,
    declared_tracks: u16,
    division: u16,
    tracks: usize,
    body: &[u8],
) -> Vec<u8> {
    let mut out = b"MThd\x00\x00\x00\x06".to_vec();
    out.extend(format.to_be_bytes());
    out.extend(declared_tracks.to_be_bytes());
    out.extend(division.to_be_bytes());
    for _ in 0..tracks {
        out.extend(b"MTrk");
        out.extend((body.len() as u32).to_be_bytes());
        out.extend(body);
    }
    out
}

/// The shapes the issue names, each with random details: 0 tracks, 65,535 tracks (declared, and
/// present as empty ones), tempo 0 and extreme tempi, huge delta times, running status with no
/// status before it, SysEx (long, unterminated, continuation packets), notes left hanging.
fn extreme(rng: &mut StdRng, seeds: &[Vec<u8>]) -> Vec<u8> {
    const END: [u8; 4] = [0x00, 0xFF, 0x2F, 0x00];
    let note_on = |key: u8| [0x00, 0x90, key & 0x7F, 0x50];
    let division = match rng.random_range(0..4) {
        0 => 0,
        1 => 0xFFFF,
        2 => 0xE728, // SMPTE
        _ => rng.random_range(1..=960),
    };
    match rng.random_range(0..8) {
        0 => file_with(rng.random_range(0..3), 0, division, 0, &[]),
        1 => {
            // 65,535 tracks declared; present: none, a few, or all of them (each tiny).
            let present = match rng.random_range(0..3) {
                0 => 0,
                1 => rng.random_range(1..8),
                _ => 65_535,
            };
            file_with(1, 65_535, division, present, &END)
        }
        2 => {
            // Tempo 0, 1 µs or the 24-bit maximum, then notes.
            let tempo: u32 =
                [0, 1, 0xFF_FFFF, rng.random_range(0..0x100_0000)][rng.random_range(0..4)];
            let mut body = vec![0x00, 0xFF, 0x51, 0x03];
            body.extend(&tempo.to_be_bytes()[1..]);
            body.extend(note_on(60));
            body.extend(varlen(rng.random_range(0..0x0FFF_FFFF)));
            body.extend([0x80, 60, 0x40]);
            body.extend(END);
            file_with(0, 1, division, 1, &body)
        }
        3 => {
            // Huge delta times, many of them: ticks that overflow 32 bits when summed.
            let mut body = Vec::new();
            for i in 0..rng.random_range(1..400) {
                body.extend(varlen(0x0FFF_FFFF - rng.random_range(0..4)));
                body.extend([
                    0x90 | (i % 16) as u8,
                    rng.random_range(0..128),
                    rng.random_range(0..128),
                ]);
            }
            body.extend(END);
            file_with(1, 1, division, 1, &body)
        }
        4 => {
            // Running status with no status byte before it, and after meta/SysEx (which cancel it).
            let mut body = vec![0x00, 0x3C, 0x40];
            for _ in 0..rng.random_range(1..50) {
                match rng.random_range(0..3) {
                    0 => body.extend([0x00, 0xFF, 0x01, 0x01, b'x', 0x00, 0x40, 0x40]),
                    1 => body.extend([0x00, 0xF0, 0x01, 0xF7, 0x00, 0x41, 0x40]),
                    _ => body.extend([0x00, rng.random_range(0..128), rng.random_range(0..128)]),
                }
            }
            body.extend(END);
            file_with(0, 1, division, 1, &body)
        }
        5 => {
            // SysEx: long, declared longer than the track, unterminated, continuation packets.
            let mut body = vec![0x00, 0xF0];
            let len = rng.random_range(0..100_000u32);
            body.extend(varlen(len));
            let have = if rng.random_bool(0.5) {
                len
            } else {
                rng.random_range(0..=len)
            };
            body.extend((0..have).map(|i| (i % 0x7F) as u8));
            body.extend([0x00, 0xF7, 0x02, 0x01, 0x02]);
            body.extend(END);
            file_with(0, 1, division, 1, &body)
        }
        6 => {
            // Notes that never end, on every channel and key.
            let mut body = Vec::new();
            for k in 0..rng.random_range(1..2000u32) {
                body.extend([0x00, 0x90 | (k % 16) as u8, (k % 128) as u8, 0x7F]);
            }
            if rng.random_bool(0.5) {
                body.extend(END);
            }
            file_with(0, 1, division, 1, &body)
        }
        _ => {
            // A valid seed with its header's track count or format changed.
            let mut b = seeds[rng.random_range(0..seeds.len())].clone();
            if rng.random_bool(0.5) {
                b[10..12].copy_from_slice(&rng.random::<u16>().to_be_bytes());
            } else {
                b[8..10].copy_from_slice(&rng.random_range(0u16..4).to_be_bytes());
            }
            b
        }
    }
}

/// Offsets of chunk length fields (4 bytes after each "MThd"/"MTrk"), the targets that make a
/// reader allocate or skip by a declared length.
fn length_fields(bytes: &[u8]) -> Vec<usize> {
    bytes
        .windows(4)
        .enumerate()
        .filter(|(_, w)| *w == b"MTrk" || *w == b"MThd")
        .map(|(i, _)| i + 4)
        .filter(|&i| i + 4 <= bytes.len())
        .collect()
}

fn mutate(rng: &mut StdRng, seed: &[u8]) -> Vec<u8> {
    let mut b = seed.to_vec();
    let rounds = rng.random_range(1..=4);
    for _ in 0..rounds {
        if b.is_empty() {
            break;
        }
        let at = rng.random_range(0..b.len());
        match rng.random_range(0..7) {
            0 => b[at] ^= 1 << rng.random_range(0..8),
            1 => b[at] = rng.random(),
            2 => b.truncate(at),
            3 => {
                let n = rng.random_range(1..=8);
                for _ in 0..n {
                    b.insert(at, rng.random());
                }
            }
            4 => {
                let end = (at + rng.random_range(1..=8)).min(b.len());
                b.drain(at..end);
            }
            5 => {
                let fields = length_fields(&b);
                if !fields.is_empty() {
                    let f = fields[rng.random_range(0..fields.len())];
                    let value: u32 = match rng.random_range(0..4) {
                        0 => u32::MAX,
                        1 => 0,
                        2 => rng.random(),
                        _ => u32::from_be_bytes([b[f], b[f + 1], b[f + 2], b[f + 3]])
                            .wrapping_add(rng.random_range(1..16)),
                    };
                    b[f..f + 4].copy_from_slice(&value.to_be_bytes());
                }
            }
            _ => {
                // Status-like bytes where events are: system, meta and running-status confusion.
                let choices = [0xFF, 0xF0, 0xF7, 0xF8, 0x80, 0x90, 0x7F, 0x00, 0x2F, 0x51];
                b[at] = choices[rng.random_range(0..choices.len())];
            }
        }
    }
    b
}

/// A chunk's id and body.
type Chunk = ([u8; 4], Vec<u8>);

/// A file's header chunk and its other chunks as (id, body), for mutations that keep the chunk
/// lengths right so the event parser, not the chunk check, meets the damage.
fn split_chunks(file: &[u8]) -> (Vec<u8>, Vec<Chunk>) {
    let mut chunks = Vec::new();
    let mut pos = 14;
    while pos + 8 <= file.len() {
        let len = u32::from_be_bytes([file[pos + 4], file[pos + 5], file[pos + 6], file[pos + 7]]);
        let end = (pos + 8 + len as usize).min(file.len());
        let id = [file[pos], file[pos + 1], file[pos + 2], file[pos + 3]];
        chunks.push((id, file[pos + 8..end].to_vec()));
        pos = end;
    }
    (file[..14].to_vec(), chunks)
}

fn join_chunks(header: &[u8], chunks: &[Chunk]) -> Vec<u8> {
    let mut out = header.to_vec();
    for (id, body) in chunks {
        out.extend(id);
        out.extend((body.len() as u32).to_be_bytes());
        out.extend(body);
    }
    out
}

/// Damages the events of one track, then fixes the chunk lengths.
fn mutate_events(rng: &mut StdRng, seed: &[u8]) -> Vec<u8> {
    let (header, mut chunks) = split_chunks(seed);
    let pick = rng.random_range(0..chunks.len());
    let body = &mut chunks[pick].1;
    for _ in 0..rng.random_range(1..=3) {
        if body.is_empty() {
            break;
        }
        let at = rng.random_range(0..body.len());
        match rng.random_range(0..5) {
            0 => body[at] ^= 1 << rng.random_range(0..8),
            1 => body[at] = rng.random(),
            2 => body.insert(at, rng.random()),
            3 => {
                body.remove(at);
            }
            _ => body.truncate(at),
        }
    }
    join_chunks(&header, &chunks)
}

/// A valid header and chunk framing around a random event stream.
fn random_track(rng: &mut StdRng) -> Vec<u8> {
    let header = b"MThd\x00\x00\x00\x06\x00\x01\x00\x01\x01\xE0";
    let len = rng.random_range(0..300);
    // Mostly small values, so delta times end and statuses look like channel messages.
    let body: Vec<u8> = (0..len)
        .map(|_| match rng.random_range(0..4) {
            0 => rng.random_range(0x80..=0xFF),
            _ => rng.random_range(0..0x80),
        })
        .collect();
    join_chunks(header, &[(*b"MTrk", body)])
}

#[test]
fn any_bytes_read_without_panic() {
    let seeds = seeds();
    for s in &seeds {
        read_midi(s).expect("seeds are valid");
    }
    let mut rng = StdRng::seed_from_u64(0x5EED_0F57_A71A);
    let started = std::time::Instant::now();
    let (mut ok, mut err) = (0usize, 0usize);
    let cases = fuzz_cases();
    for case in 0..cases {
        let input: Vec<u8> = match case % 5 {
            0 => {
                // Random bytes, a third of them behind a plausible header to get further.
                let len = rng.random_range(0..600);
                let mut b: Vec<u8> = (0..len).map(|_| rng.random()).collect();
                if case % 3 == 0 && b.len() >= 22 {
                    b[..4].copy_from_slice(b"MThd");
                    b[4..8].copy_from_slice(&6u32.to_be_bytes());
                    b[8] = 0;
                    b[9] = rng.random_range(0..2);
                    b[14..18].copy_from_slice(b"MTrk");
                }
                b
            }
            1 if case % 20 == 1 => {
                // Truncations walking through each seed.
                let s = &seeds[(case / 20) % seeds.len()];
                s[..(case / 20 / seeds.len() * 7) % (s.len() + 1)].to_vec()
            }
            1 => {
                let pick = rng.random_range(0..seeds.len());
                mutate(&mut rng, &seeds[pick])
            }
            2 => {
                let pick = rng.random_range(0..seeds.len());
                mutate_events(&mut rng, &seeds[pick])
            }
            3 => random_track(&mut rng),
            _ => extreme(&mut rng, &seeds),
        };
        match read_midi(&input) {
            Ok(song) => {
                ok += 1;
                // What reads is consistent.
                assert!(song.ticks_per_quarter > 0);
                assert_eq!(song.tempo_map.first().map(|t| t.tick), Some(0));
                assert_eq!(song.time_signatures.first().map(|t| t.tick), Some(0));
                assert!(
                    song.notes
                        .iter()
                        .all(|n| n.end_tick > n.start_tick && n.pitch < 128)
                );
                assert!(
                    song.notes
                        .windows(2)
                        .all(|w| w[0].start_tick <= w[1].start_tick)
                );
            }
            Err(e) => {
                err += 1;
                assert!(!e.to_string().is_empty());
            }
        }
    }
    println!(
        "{cases} inputs: {ok} read, {err} refused, in {:?}",
        started.elapsed()
    );
    assert_eq!(ok + err, cases);
    // The mutations must exercise both outcomes, or the generator is broken.
    assert!(ok > 100 && err > 100, "{ok} read, {err} refused");
}

#[test]
fn every_truncation_of_a_valid_file_is_an_error() {
    // Cutting a file anywhere before its last byte loses data, so it must not read as a
    // shorter valid file. (The last track's End of Track is its last 4 bytes: cutting those
    // still leaves a declared chunk length that does not fit.)
    for seed in seeds() {
        for cut in 0..seed.len() {
            assert!(
                read_midi(&seed[..cut]).is_err(),
                "cut at {cut} of {} read as valid",
                seed.len()
            );
        }
    }
}
