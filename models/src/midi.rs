//! Standard MIDI File (SMF) in and out: what the corpus, the CLI and the plugin read into a
//! [`Song`], and what generated songs are saved as.
//!
//! # Reading ([`read_midi`])
//! - SMF format 0 and 1. Format 2 (sequential, independent tracks) is refused: its tracks are
//!   separate pieces, not parts of one. A format 0 file with several tracks is read like format 1.
//! - Timing: metrical (ticks per quarter note, 0 is an error) or SMPTE timecode. A timecode file
//!   ticks at a fixed rate whatever tempo events say, so it is read as
//!   `ticks_per_quarter = frames per second x ticks per frame` at a fixed 60 bpm
//!   (one quarter = one second; 29.97 drop-frame uses 30 fps at 1,001,000 us per quarter), which
//!   gives exactly the file's ms per tick; its tempo events are ignored.
//! - The file is parsed by this module rather than by `midly`'s reader, which silently stops at
//!   a malformed event, takes "the rest of the file" for an over-long chunk (a truncated file
//!   reads as a shorter one) and overflows on some SMPTE headers. Every problem is an
//!   [`Error::Midi`] naming the track (counted from 0, as in the file) and the byte offset in the
//!   file. Nothing is allocated from a length a header declares before checking that many bytes
//!   are there, so any byte string returns quickly, `Ok` or `Err`.
//! - Lenient where real files are sloppy and nothing is lost: unknown chunks are skipped; bytes
//!   after the last declared track that do not form a whole chunk are ignored (padding); a track
//!   may lack its End of Track event (the chunk length already bounds it); events after End of
//!   Track are ignored; running status survives meta and SysEx events; malformed tempo or
//!   time-signature meta events (too short, tempo 0, numerator 0, denominator above 2^7) are
//!   skipped. A file with fewer tracks than its header declares is truncated: an error.
//! - All tracks are merged into one event stream, as a synthesizer hears them, so channel state
//!   (program, sustain pedal, sounding notes) is per channel across tracks. Within one tick, events
//!   keep file order (track, then position), except that program changes come first, so a program
//!   change at a note's own tick applies to it whichever track holds it.
//! - Tempo map: tempo events of all tracks, sorted, one per tick (the later in file order wins),
//!   with 120 bpm at tick 0 when the first change is later. Times in ms go through the full map.
//! - Notes: a note-on with velocity 0 is a note-off. A note-on while the same pitch sounds on that
//!   channel ends the sounding note at that tick (MIDI cannot tell two same-pitch notes apart; a
//!   synth retriggers). When a note-on comes before the note-off of the note it replaced at the
//!   same tick (a common writer habit), that note-off is taken for the replaced note. Zero-length
//!   notes are dropped. Notes still sounding at the end end at the file's last event tick (over all
//!   tracks). Sustain pedal (CC64 >= 64 down, < 64 up, per channel): a note released while the
//!   pedal is down ends when the pedal comes up, or earlier at the next note-on of the same pitch
//!   and channel (so notes never overlap). Notes are sorted by (start tick, pitch, channel).
//! - Time signatures: from meta events, one per tick, 4/4 at tick 0 when none is there.
//! - Sections: Marker meta events (FF 06) in any track whose text maps to a label by
//!   [`section_label_for_marker`] start a section; it ends where the next one starts, the last at
//!   the end of the piece (the later of the last note end and the last event tick). Two markers at
//!   one tick: the later in file order wins. Sections with no length are dropped. Other markers are
//!   ignored. The corpus convention, one marker per section start in track 0 with the letter as its
//!   text, reads back exactly.
//!
//! # Marker rule ([`section_label_for_marker`])
//! Trimmed and case-insensitive:
//! 1. a letter alone or with variant marks: primes (`'`, `’`, `′`, `″`, `` ` ``, `*`), digits,
//!    `-`, `.`, `_`, spaces, and a trailing remark in parentheses or brackets ("A", "A'", "A''",
//!    "A2", "B1", "a (repeat)", "C-2"). "A".."D" give themselves; "E".."Z" give D: a four-section
//!    model treats every further section as D ("another section");
//! 2. "Section X" or "Part X" with X a letter form as in 1;
//! 3. a section word, alone or followed by anything but a letter ("Verse 2", "Chorus (x2)"):
//!    Verse -> A; Chorus, Refrain, Hook -> B; Bridge, Middle 8, Middle Eight -> C; Intro, Outro,
//!    Pre-Chorus (Prechorus, Pre Chorus), Solo, Interlude, Coda, Break, Breakdown, Instrumental -> D;
//! 4. anything else ("Take 3", lyrics, "II") -> `None`: not a section marker.
//!
//! # Writing ([`write_midi`])
//! SMF format 1 at the song's ticks per quarter: track 0 is the conductor (track name, tempo map,
//! time signatures, one marker per section start, End of Track at the end of the piece), then one
//! track per channel used, in channel order, with a program change before the first note and
//! wherever the program changes, and note-offs before note-ons at the same tick. Notes are
//! validated first (an error names the note's index). Same-pitch notes that overlap on one channel
//! are written the way MIDI can hold them: the earlier ends where the later starts (what reading
//! gives back).

use std::path::Path;

use midly::num::{u4, u7, u15, u24, u28};
use midly::{Format, Header, MetaMessage, MidiMessage, Smf, Timing, TrackEvent, TrackEventKind};

use crate::error::{Error, Result};
use crate::song::{
    DEFAULT_US_PER_QUARTER, Note, Section, SectionLabel, Song, TempoChange, TempoIndex,
    TimeSignature,
};

/// The largest delta time a track event can carry (a 28-bit variable-length number).
const MAX_DELTA: u64 = 0x0FFF_FFFF;

fn midi_err(msg: impl Into<String>) -> Error {
    Error::Midi(msg.into())
}

// ---------------------------------------------------------------------------------------------
// Reading
// ---------------------------------------------------------------------------------------------

/// Reads a MIDI file from disk; see [`read_midi`].
pub fn read_midi_file(path: &Path) -> Result<Song> {
    let bytes = std::fs::read(path).map_err(|e| Error::io(path, e))?;
    read_midi(&bytes).map_err(|e| match e {
        Error::Midi(msg) => Error::Midi(format!("{}: {msg}", path.display())),
        other => other,
    })
}

/// Reads a Standard MIDI File from its bytes into a [`Song`]. See the module documentation for
/// the rules; any byte string gives `Ok` or `Err`, never a panic.
pub fn read_midi(bytes: &[u8]) -> Result<Song> {
    let header = read_header(bytes)?;
    let mut events: Vec<Event> = Vec::new();
    let mut end_tick: u64 = 0;
    for (track, (offset, data)) in split_tracks(bytes, &header)?.into_iter().enumerate() {
        let last = parse_track(data, offset, track, &mut events)?;
        end_tick = end_tick.max(last);
    }
    // Stable: file order (track, then position) is kept within a tick, program changes first.
    events.sort_by_key(|e| (e.tick, !matches!(e.kind, Kind::Program { .. })));

    let tempo_map = match header.smpte_us_per_quarter {
        Some(us) => vec![TempoChange {
            tick: 0,
            us_per_quarter: us,
        }],
        None => merged_tempo_map(&events),
    };
    let index = TempoIndex::new(&tempo_map, header.ticks_per_quarter);
    let notes = extract_notes(&events, end_tick, &index);
    let piece_end = notes.iter().map(|n| n.end_tick).fold(end_tick, u64::max);
    let sections = extract_sections(&events, piece_end, &index);
    Ok(Song {
        ticks_per_quarter: header.ticks_per_quarter,
        tempo_map,
        time_signatures: merged_time_signatures(&events),
        notes,
        sections,
    })
}

struct FileHeader {
    declared_tracks: u16,
    ticks_per_quarter: u16,
    /// Set for SMPTE timing: the fixed tempo that gives the file's tick rate.
    smpte_us_per_quarter: Option<u32>,
    /// Offset of the first chunk after the header chunk.
    body: usize,
}

fn be_u16(b: &[u8], at: usize) -> u16 {
    u16::from_be_bytes([b[at], b[at + 1]])
}

fn be_u32(b: &[u8], at: usize) -> u32 {
    u32::from_be_bytes([b[at], b[at + 1], b[at + 2], b[at + 3]])
}

fn read_header(bytes: &[u8]) -> Result<FileHeader> {
    if !bytes.starts_with(b"MThd") {
        if bytes.starts_with(b"RIFF") {
            return Err(midi_err(
                "RIFF-wrapped MIDI (RMID) is not supported: save it as a plain .mid file",
            ));
        }
        return Err(midi_err("not a MIDI file: it does not start with \"MThd\""));
    }
    if bytes.len() < 14 {
        return Err(midi_err(format!(
            "truncated header: the file is {} bytes, a MIDI header needs 14",
            bytes.len()
        )));
    }
    let header_len = be_u32(bytes, 4) as usize;
    if header_len < 6 {
        return Err(midi_err(format!(
            "header chunk is {header_len} bytes long, it needs at least 6"
        )));
    }
    let body = header_len.saturating_add(8);
    if body > bytes.len() {
        return Err(midi_err(format!(
            "truncated header: it declares {header_len} bytes but the file ends at byte {}",
            bytes.len()
        )));
    }
    match be_u16(bytes, 8) {
        0 | 1 => {}
        2 => {
            return Err(midi_err(
                "SMF format 2 (sequential tracks) is not supported",
            ));
        }
        f => {
            return Err(midi_err(format!(
                "unknown SMF format {f} (only 0 and 1 exist)"
            )));
        }
    }
    let declared_tracks = be_u16(bytes, 10);
    let division = be_u16(bytes, 12);
    let (ticks_per_quarter, smpte_us_per_quarter) = if division & 0x8000 == 0 {
        if division == 0 {
            return Err(midi_err("the header gives 0 ticks per quarter note"));
        }
        (division, None)
    } else {
        // The high byte is minus the frame rate in two's complement.
        let fps = -i16::from((division >> 8) as u8 as i8);
        let per_frame = division & 0xFF;
        if per_frame == 0 {
            return Err(midi_err("SMPTE timing with 0 ticks per frame"));
        }
        // One quarter = one second (1,001,000 us for 29.97 fps, counted as 30 frames).
        let (frames, us) = match fps {
            24 | 25 | 30 => (fps as u16, 1_000_000),
            29 => (30, 1_001_000),
            _ => {
                return Err(midi_err(format!(
                    "SMPTE timing at {fps} frames per second (only 24, 25, 29 and 30 exist)"
                )));
            }
        };
        (frames * per_frame, Some(us))
    };
    Ok(FileHeader {
        declared_tracks,
        ticks_per_quarter,
        smpte_us_per_quarter,
        body,
    })
}

/// The track chunks as (offset of their data in the file, data), checked against the file length.
fn split_tracks<'a>(bytes: &'a [u8], header: &FileHeader) -> Result<Vec<(usize, &'a [u8])>> {
    let declared = usize::from(header.declared_tracks);
    let mut tracks = Vec::new();
    let mut pos = header.body;
    while pos < bytes.len() {
        let complete = tracks.len() >= declared;
        let left = bytes.len() - pos;
        if left < 8 {
            if complete {
                break; // padding after the last track
            }
            return Err(midi_err(format!(
                "truncated track {} at byte {pos}: the chunk header is cut short",
                tracks.len()
            )));
        }
        let id = &bytes[pos..pos + 4];
        let len = be_u32(bytes, pos + 4) as usize;
        let avail = left - 8;
        if len > avail {
            if complete {
                break; // trailing garbage after every declared track: nothing is missing
            }
            return Err(midi_err(format!(
                "truncated track {} at byte {pos}: the chunk declares {len} bytes but only \
                 {avail} remain",
                tracks.len()
            )));
        }
        if id == b"MTrk" {
            tracks.push((pos + 8, &bytes[pos + 8..pos + 8 + len]));
        } else if id == b"MThd" && !complete {
            return Err(midi_err(format!("a second header chunk at byte {pos}")));
        }
        // Other chunk types are skipped, as the SMF specification asks.
        pos += 8 + len;
    }
    if tracks.len() < declared {
        return Err(midi_err(format!(
            "truncated file: the header declares {declared} tracks but the file holds {}",
            tracks.len()
        )));
    }
    Ok(tracks)
}

/// The events reading needs; everything else only moves time on.
#[derive(Debug, Clone)]
enum Kind {
    NoteOn {
        channel: u8,
        key: u8,
        velocity: u8,
    },
    NoteOff {
        channel: u8,
        key: u8,
    },
    Program {
        channel: u8,
        program: u8,
    },
    Sustain {
        channel: u8,
        down: bool,
    },
    Tempo(u32),
    TimeSignature {
        numerator: u8,
        denominator: u8,
    },
    /// A marker whose text names a section (other markers are not kept).
    Section(SectionLabel, String),
}

#[derive(Debug, Clone)]
struct Event {
    tick: u64,
    kind: Kind,
}

/// Reads a variable-length number (at most 4 bytes) at `*pos`.
fn read_varlen(data: &[u8], pos: &mut usize) -> Option<std::result::Result<u32, ()>> {
    let mut value: u32 = 0;
    for _ in 0..4 {
        let byte = *data.get(*pos)?;
        *pos += 1;
        value = (value << 7) | u32::from(byte & 0x7F);
        if byte & 0x80 == 0 {
            return Some(Ok(value));
        }
    }
    Some(Err(()))
}

/// Parses one track's events into `out`; returns the tick of its last event.
fn parse_track(data: &[u8], offset: usize, track: usize, out: &mut Vec<Event>) -> Result<u64> {
    let truncated = |at: usize, what: &str| {
        midi_err(format!(
            "truncated track {track} at byte {}: {what} runs past the end of the track chunk",
            offset + at
        ))
    };
    let mut tick: u64 = 0;
    let mut pos = 0;
    let mut running: Option<u8> = None;
    while pos < data.len() {
        let event_at = pos;
        match read_varlen(data, &mut pos) {
            None => return Err(truncated(event_at, "a delta time")),
            Some(Err(())) => {
                return Err(midi_err(format!(
                    "track {track} at byte {}: delta time longer than 4 bytes",
                    offset + event_at
                )));
            }
            Some(Ok(delta)) => tick += u64::from(delta),
        }
        let status_at = pos;
        let first = *data
            .get(pos)
            .ok_or_else(|| truncated(status_at, "an event"))?;
        let status = if first >= 0x80 {
            pos += 1;
            first
        } else {
            running.ok_or_else(|| {
                midi_err(format!(
                    "track {track} at byte {}: data byte 0x{first:02X} without a status \
                     (no running status in force)",
                    offset + status_at
                ))
            })?
        };
        match status {
            0x80..=0xEF => {
                running = Some(status);
                let n = if matches!(status >> 4, 0xC | 0xD) {
                    1
                } else {
                    2
                };
                let d = data
                    .get(pos..pos + n)
                    .ok_or_else(|| truncated(pos, "a MIDI message"))?;
                if let Some(bad) = d.iter().position(|&b| b >= 0x80) {
                    return Err(midi_err(format!(
                        "track {track} at byte {}: data byte 0x{:02X} has its top bit set",
                        offset + pos + bad,
                        d[bad]
                    )));
                }
                pos += n;
                let channel = status & 0x0F;
                let kind = match status >> 4 {
                    0x8 => Some(Kind::NoteOff { channel, key: d[0] }),
                    0x9 if d[1] == 0 => Some(Kind::NoteOff { channel, key: d[0] }),
                    0x9 => Some(Kind::NoteOn {
                        channel,
                        key: d[0],
                        velocity: d[1],
                    }),
                    0xB if d[0] == 64 => Some(Kind::Sustain {
                        channel,
                        down: d[1] >= 64,
                    }),
                    0xC => Some(Kind::Program {
                        channel,
                        program: d[0],
                    }),
                    _ => None,
                };
                if let Some(kind) = kind {
                    out.push(Event { tick, kind });
                }
            }
            0xFF => {
                let kind_byte = *data
                    .get(pos)
                    .ok_or_else(|| truncated(pos, "a meta event"))?;
                pos += 1;
                let payload = read_payload(data, &mut pos).map_err(|e| match e {
                    PayloadError::Truncated(at) => truncated(at, "a meta event"),
                    PayloadError::LongLength(at) => midi_err(format!(
                        "track {track} at byte {}: meta event length longer than 4 bytes",
                        offset + at
                    )),
                })?;
                match kind_byte {
                    0x2F => return Ok(tick), // End of Track: anything after it is not played
                    0x51 if payload.len() >= 3 => {
                        let us = u32::from_be_bytes([0, payload[0], payload[1], payload[2]]);
                        if us > 0 {
                            out.push(Event {
                                tick,
                                kind: Kind::Tempo(us),
                            });
                        }
                    }
                    0x58 if payload.len() >= 4 => {
                        let (numerator, power) = (payload[0], payload[1]);
                        if numerator > 0 && power <= 7 {
                            let denominator = 1u8 << power;
                            out.push(Event {
                                tick,
                                kind: Kind::TimeSignature {
                                    numerator,
                                    denominator,
                                },
                            });
                        }
                    }
                    0x06 => {
                        // Only section markers are kept: nothing is stored for the others.
                        let text = String::from_utf8_lossy(payload);
                        if let Some(label) = section_label_for_marker(&text) {
                            let kind = Kind::Section(label, text.into_owned());
                            out.push(Event { tick, kind });
                        }
                    }
                    _ => {}
                }
            }
            0xF0 | 0xF7 => {
                read_payload(data, &mut pos).map_err(|e| match e {
                    PayloadError::Truncated(at) => truncated(at, "a SysEx event"),
                    PayloadError::LongLength(at) => midi_err(format!(
                        "track {track} at byte {}: SysEx length longer than 4 bytes",
                        offset + at
                    )),
                })?;
            }
            _ => {
                return Err(midi_err(format!(
                    "track {track} at byte {}: status 0x{status:02X} (a system real-time or \
                     common message) cannot appear in a MIDI file",
                    offset + status_at
                )));
            }
        }
    }
    Ok(tick)
}

enum PayloadError {
    Truncated(usize),
    LongLength(usize),
}

/// Reads a variable-length count and that many bytes at `*pos`.
fn read_payload<'a>(
    data: &'a [u8],
    pos: &mut usize,
) -> std::result::Result<&'a [u8], PayloadError> {
    let at = *pos;
    let len = match read_varlen(data, pos) {
        None => return Err(PayloadError::Truncated(at)),
        Some(Err(())) => return Err(PayloadError::LongLength(at)),
        Some(Ok(len)) => len as usize,
    };
    let payload = data
        .get(*pos..)
        .and_then(|rest| rest.get(..len))
        .ok_or(PayloadError::Truncated(at))?;
    *pos += len;
    Ok(payload)
}

fn merged_tempo_map(events: &[Event]) -> Vec<TempoChange> {
    let mut map: Vec<TempoChange> = Vec::new();
    for e in events {
        if let Kind::Tempo(us) = e.kind {
            match map.last_mut() {
                Some(last) if last.tick == e.tick => last.us_per_quarter = us,
                _ => map.push(TempoChange {
                    tick: e.tick,
                    us_per_quarter: us,
                }),
            }
        }
    }
    if map.first().is_none_or(|t| t.tick > 0) {
        map.insert(
            0,
            TempoChange {
                tick: 0,
                us_per_quarter: DEFAULT_US_PER_QUARTER,
            },
        );
    }
    map
}

fn merged_time_signatures(events: &[Event]) -> Vec<TimeSignature> {
    let mut sigs: Vec<TimeSignature> = Vec::new();
    for e in events {
        if let Kind::TimeSignature {
            numerator,
            denominator,
        } = e.kind
        {
            match sigs.last_mut() {
                Some(last) if last.tick == e.tick => {
                    *last = TimeSignature {
                        tick: e.tick,
                        numerator,
                        denominator,
                    }
                }
                _ => sigs.push(TimeSignature {
                    tick: e.tick,
                    numerator,
                    denominator,
                }),
            }
        }
    }
    if sigs.first().is_none_or(|t| t.tick > 0) {
        sigs.insert(
            0,
            TimeSignature {
                tick: 0,
                numerator: 4,
                denominator: 4,
            },
        );
    }
    sigs
}

/// A note that has started and not yet ended.
#[derive(Debug, Clone, Copy)]
struct Sounding {
    start: u64,
    velocity: u8,
    program: u8,
    /// Its key was released while the pedal was down: it ends when the pedal comes up.
    released: bool,
    /// It replaced a held note of the same pitch at its start tick, so a note-off at that same
    /// tick belongs to the replaced note (writers often put the new note-on first).
    replaced_held: bool,
}

struct ChannelState {
    program: u8,
    pedal_down: bool,
    sounding: [Option<Sounding>; 128],
}

fn extract_notes(events: &[Event], end_tick: u64, index: &TempoIndex) -> Vec<Note> {
    let mut channels: Vec<ChannelState> = (0..16)
        .map(|_| ChannelState {
            program: 0,
            pedal_down: false,
            sounding: [None; 128],
        })
        .collect();
    let mut notes = Vec::new();
    let mut finish = |channel: u8, pitch: u8, s: Sounding, end: u64| {
        if end > s.start {
            notes.push(Note {
                pitch,
                velocity: s.velocity,
                channel,
                program: s.program,
                start_tick: s.start,
                end_tick: end,
                start_ms: index.tick_to_ms(s.start),
                end_ms: index.tick_to_ms(end),
            });
        }
    };
    for e in events {
        let t = e.tick;
        match e.kind {
            Kind::NoteOn {
                channel,
                key,
                velocity,
            } => {
                let ch = &mut channels[usize::from(channel)];
                let mut replaced_held = false;
                if let Some(prev) = ch.sounding[usize::from(key)].take() {
                    replaced_held = !prev.released && prev.start < t;
                    finish(channel, key, prev, t);
                }
                ch.sounding[usize::from(key)] = Some(Sounding {
                    start: t,
                    velocity,
                    program: ch.program,
                    released: false,
                    replaced_held,
                });
            }
            Kind::NoteOff { channel, key } => {
                let ch = &mut channels[usize::from(channel)];
                let slot = &mut ch.sounding[usize::from(key)];
                let Some(s) = slot.as_mut() else { continue };
                if s.replaced_held && s.start == t {
                    s.replaced_held = false;
                } else if s.released {
                    // Already released under the pedal: nothing more to release.
                } else if ch.pedal_down {
                    s.released = true;
                } else if let Some(s) = slot.take() {
                    finish(channel, key, s, t);
                }
            }
            Kind::Sustain { channel, down } => {
                let ch = &mut channels[usize::from(channel)];
                if ch.pedal_down && !down {
                    for key in 0..128u8 {
                        let slot = &mut ch.sounding[usize::from(key)];
                        if slot.is_some_and(|s| s.released)
                            && let Some(s) = slot.take()
                        {
                            finish(channel, key, s, t);
                        }
                    }
                }
                ch.pedal_down = down;
            }
            Kind::Program { channel, program } => channels[usize::from(channel)].program = program,
            Kind::Tempo(_) | Kind::TimeSignature { .. } | Kind::Section(..) => {}
        }
    }
    for (channel, ch) in channels.iter_mut().enumerate() {
        for key in 0..128u8 {
            if let Some(s) = ch.sounding[usize::from(key)].take() {
                finish(channel as u8, key, s, end_tick);
            }
        }
    }
    notes.sort_by_key(|n| (n.start_tick, n.pitch, n.channel));
    notes
}

fn extract_sections(events: &[Event], piece_end: u64, index: &TempoIndex) -> Vec<Section> {
    let mut starts: Vec<(u64, SectionLabel, &str)> = Vec::new();
    for e in events {
        if let Kind::Section(label, text) = &e.kind {
            let label = *label;
            match starts.last_mut() {
                Some(last) if last.0 == e.tick => *last = (e.tick, label, text.as_str()),
                _ => starts.push((e.tick, label, text.as_str())),
            }
        }
    }
    let mut sections = Vec::with_capacity(starts.len());
    for (i, &(start, label, text)) in starts.iter().enumerate() {
        let end = starts.get(i + 1).map_or(piece_end, |next| next.0);
        if end > start {
            sections.push(Section {
                label,
                marker_text: text.to_string(),
                start_tick: start,
                end_tick: end,
                start_ms: index.tick_to_ms(start),
                end_ms: index.tick_to_ms(end),
            });
        }
    }
    sections
}

// ---------------------------------------------------------------------------------------------
// Marker rule
// ---------------------------------------------------------------------------------------------

/// The section label a MIDI Marker's text stands for, or `None` when it is not a section marker.
///
/// Trimmed and case-insensitive:
/// 1. a letter alone or with variant marks (primes `'` `’` `′` `″` `` ` `` `*`, digits, `-`, `.`,
///    `_`, spaces, and a trailing remark in parentheses or brackets): "A", "A'", "A''", "A2",
///    "B1", "a (repeat)". "A".."D" give themselves; "E".."Z" fold into D: a four-section model
///    treats every further section as D, "another section";
/// 2. "Section X" or "Part X", X a letter form as in 1;
/// 3. a section word, alone or followed by anything but a letter ("Verse 2", "Chorus (x2)"):
///    Verse -> A; Chorus, Refrain, Hook -> B; Bridge, Middle 8, Middle Eight -> C; Intro, Outro,
///    Pre-Chorus (Prechorus, Pre Chorus), Solo, Interlude, Coda, Break, Breakdown,
///    Instrumental -> D;
/// 4. anything else ("Take 3", lyrics, "II") -> `None`.
pub fn section_label_for_marker(text: &str) -> Option<SectionLabel> {
    let lower = text.trim().to_lowercase();
    if let Some(label) = letter_form(&lower) {
        return Some(label);
    }
    for prefix in ["section", "part"] {
        if let Some(rest) = lower.strip_prefix(prefix)
            && rest.starts_with(char::is_whitespace)
            && let Some(label) = letter_form(rest.trim_start())
        {
            return Some(label);
        }
    }
    // Longer words first where one starts another ("breakdown" before "break").
    const WORDS: [(&str, SectionLabel); 18] = [
        ("verse", SectionLabel::A),
        ("chorus", SectionLabel::B),
        ("refrain", SectionLabel::B),
        ("hook", SectionLabel::B),
        ("bridge", SectionLabel::C),
        ("middle 8", SectionLabel::C),
        ("middle eight", SectionLabel::C),
        ("intro", SectionLabel::D),
        ("outro", SectionLabel::D),
        ("pre-chorus", SectionLabel::D),
        ("prechorus", SectionLabel::D),
        ("pre chorus", SectionLabel::D),
        ("solo", SectionLabel::D),
        ("interlude", SectionLabel::D),
        ("coda", SectionLabel::D),
        ("breakdown", SectionLabel::D),
        ("break", SectionLabel::D),
        ("instrumental", SectionLabel::D),
    ];
    WORDS.iter().find_map(|&(word, label)| {
        let rest = lower.strip_prefix(word)?;
        (!rest.starts_with(char::is_alphabetic)).then_some(label)
    })
}

/// Rule 1 of [`section_label_for_marker`] on trimmed, lower-case text.
fn letter_form(s: &str) -> Option<SectionLabel> {
    let mut chars = s.chars();
    let letter = chars.next().filter(char::is_ascii_lowercase)?;
    let mut rest = chars.as_str().trim_end();
    // A trailing remark: "a (repeat)", "b [2nd time]".
    for (open, close) in [('(', ')'), ('[', ']')] {
        if rest.ends_with(close)
            && let Some(i) = rest.find(open)
        {
            rest = &rest[..i];
        }
    }
    let variant_mark =
        |c: char| c.is_ascii_digit() || "'’′″`*-._ ".contains(c) || c.is_whitespace();
    if !rest.chars().all(variant_mark) {
        return None;
    }
    Some(match letter {
        'a' => SectionLabel::A,
        'b' => SectionLabel::B,
        'c' => SectionLabel::C,
        _ => SectionLabel::D,
    })
}

// ---------------------------------------------------------------------------------------------
// Writing
// ---------------------------------------------------------------------------------------------

/// Writes a song to disk as a Standard MIDI File; see [`write_midi`].
pub fn write_midi_file(song: &Song, path: &Path) -> Result<()> {
    let bytes = write_midi(song)?;
    std::fs::write(path, bytes).map_err(|e| Error::io(path, e))
}

/// Writes a song as an SMF format 1 file (see the module documentation for the layout).
///
/// Errors name what cannot be written: a note out of range (pitch or program above 127, velocity
/// outside 1..=127, channel above 15, end not after start), ticks per quarter outside 1..=32767,
/// a tempo outside 1..=16,777,215 us, a time signature that MIDI cannot hold, or a gap between
/// events longer than a delta time can hold.
pub fn write_midi(song: &Song) -> Result<Vec<u8>> {
    validate(song)?;
    let ticks_per_quarter = u15::try_from(song.ticks_per_quarter)
        .filter(|t| t.as_int() > 0)
        .ok_or_else(|| {
            midi_err(format!(
                "ticks per quarter {} is out of range (1..=32767)",
                song.ticks_per_quarter
            ))
        })?;

    let marker_texts: Vec<String> = song
        .sections
        .iter()
        .map(|s| {
            // Keep the text when it reads back as the same label; otherwise the letter does.
            if section_label_for_marker(&s.marker_text) == Some(s.label) {
                s.marker_text.clone()
            } else {
                s.label.letter().to_string()
            }
        })
        .collect();

    // Track names as DAWs show them (channels counted from 1, as on a synth).
    let channel_names: Vec<String> = (0..16u8)
        .map(|c| match c {
            9 => "Drums".to_string(),
            _ => format!("Channel {}", c + 1),
        })
        .collect();

    let piece_end = song
        .notes
        .iter()
        .map(|n| n.end_tick)
        .chain(song.sections.iter().map(|s| s.end_tick))
        .fold(0, u64::max);

    let mut tracks: Vec<Vec<TrackEvent>> = Vec::new();
    tracks.push(to_track(
        conductor_events(song, &marker_texts),
        piece_end,
        0,
    )?);
    for (channel, name) in (0..16u8).zip(&channel_names) {
        let notes: Vec<&Note> = song.notes.iter().filter(|n| n.channel == channel).collect();
        if notes.is_empty() {
            continue;
        }
        let index = tracks.len();
        tracks.push(to_track(channel_events(channel, name, &notes), 0, index)?);
    }

    let smf = Smf {
        header: Header::new(Format::Parallel, Timing::Metrical(ticks_per_quarter)),
        tracks,
    };
    let mut bytes = Vec::new();
    smf.write_std(&mut bytes)
        .map_err(|e| midi_err(format!("encoding the file failed: {e}")))?;
    Ok(bytes)
}

fn validate(song: &Song) -> Result<()> {
    for (i, n) in song.notes.iter().enumerate() {
        let problem = if n.pitch > 127 {
            format!("pitch {} is out of range (0..=127)", n.pitch)
        } else if !(1..=127).contains(&n.velocity) {
            format!("velocity {} is out of range (1..=127)", n.velocity)
        } else if n.channel > 15 {
            format!("channel {} is out of range (0..=15)", n.channel)
        } else if n.program > 127 {
            format!("program {} is out of range (0..=127)", n.program)
        } else if n.end_tick <= n.start_tick {
            format!(
                "end tick {} is not after start tick {}",
                n.end_tick, n.start_tick
            )
        } else {
            continue;
        };
        return Err(midi_err(format!("cannot write note {i}: {problem}")));
    }
    for (i, t) in song.tempo_map.iter().enumerate() {
        if !(1..=0xFF_FFFF).contains(&t.us_per_quarter) {
            return Err(midi_err(format!(
                "cannot write tempo change {i}: {} us per quarter is out of range (1..=16777215)",
                t.us_per_quarter
            )));
        }
    }
    for (i, ts) in song.time_signatures.iter().enumerate() {
        if ts.numerator == 0 || !ts.denominator.is_power_of_two() {
            return Err(midi_err(format!(
                "cannot write time signature {i}: {}/{} (the numerator must be at least 1 and \
                 the denominator a power of two)",
                ts.numerator, ts.denominator
            )));
        }
    }
    Ok(())
}

/// (tick, order within the tick, event) before delta times are worked out.
type Timed<'a> = (u64, u8, TrackEventKind<'a>);

fn conductor_events<'a>(song: &Song, marker_texts: &'a [String]) -> Vec<Timed<'a>> {
    let mut events: Vec<Timed<'a>> = vec![(
        0,
        0,
        TrackEventKind::Meta(MetaMessage::TrackName(b"Staria")),
    )];
    for ts in &song.time_signatures {
        let power = ts.denominator.trailing_zeros() as u8;
        // MIDI clocks per metronome click: one click per beat of the denominator's note value.
        let clocks = (96 / u32::from(ts.denominator)).max(1) as u8;
        let meta = MetaMessage::TimeSignature(ts.numerator, power, clocks, 8);
        events.push((ts.tick, 1, TrackEventKind::Meta(meta)));
    }
    for t in &song.tempo_map {
        let meta = MetaMessage::Tempo(u24::new(t.us_per_quarter));
        events.push((t.tick, 2, TrackEventKind::Meta(meta)));
    }
    for (s, text) in song.sections.iter().zip(marker_texts) {
        events.push((
            s.start_tick,
            3,
            TrackEventKind::Meta(MetaMessage::Marker(text.as_bytes())),
        ));
    }
    events
}

fn channel_events<'a>(channel: u8, name: &'a str, notes: &[&Note]) -> Vec<Timed<'a>> {
    let ch = u4::new(channel);
    let mut sorted: Vec<&Note> = notes.to_vec();
    sorted.sort_by_key(|n| (n.start_tick, n.pitch, n.end_tick));
    let mut events: Vec<Timed<'a>> = Vec::with_capacity(sorted.len() * 2 + 2);
    let name = MetaMessage::TrackName(name.as_bytes());
    events.push((0, 0, TrackEventKind::Meta(name)));
    let mut program: Option<u8> = None;
    for (i, n) in sorted.iter().enumerate() {
        // MIDI holds one sounding note per pitch and channel: a later same-pitch note that starts
        // before this one ends cuts it there (reading gives the same back).
        let next_same_pitch = sorted[i + 1..].iter().find(|m| m.pitch == n.pitch);
        let end = next_same_pitch.map_or(n.end_tick, |m| m.start_tick.min(n.end_tick));
        if end <= n.start_tick {
            continue;
        }
        if program != Some(n.program) {
            program = Some(n.program);
            let message = MidiMessage::ProgramChange {
                program: u7::new(n.program),
            };
            events.push((
                n.start_tick,
                1,
                TrackEventKind::Midi {
                    channel: ch,
                    message,
                },
            ));
        }
        let key = u7::new(n.pitch);
        let on = MidiMessage::NoteOn {
            key,
            vel: u7::new(n.velocity),
        };
        let off = MidiMessage::NoteOff {
            key,
            vel: u7::new(64),
        };
        // Order in a tick: note-offs, then program changes, then note-ons.
        events.push((
            n.start_tick,
            2,
            TrackEventKind::Midi {
                channel: ch,
                message: on,
            },
        ));
        events.push((
            end,
            0,
            TrackEventKind::Midi {
                channel: ch,
                message: off,
            },
        ));
    }
    events
}

/// Sorts timed events into a track with delta times and an End of Track at `end` or after the
/// last event, whichever is later.
fn to_track(mut events: Vec<Timed<'_>>, end: u64, track: usize) -> Result<Vec<TrackEvent<'_>>> {
    events.sort_by_key(|e| (e.0, e.1));
    let last = events.last().map_or(0, |e| e.0).max(end);
    events.push((last, u8::MAX, TrackEventKind::Meta(MetaMessage::EndOfTrack)));
    let mut out = Vec::with_capacity(events.len());
    let mut now = 0u64;
    for (tick, _, kind) in events {
        let delta = tick - now;
        if delta > MAX_DELTA {
            return Err(midi_err(format!(
                "cannot write track {track}: a gap of {delta} ticks before tick {tick} is longer \
                 than a delta time can hold ({MAX_DELTA})"
            )));
        }
        out.push(TrackEvent {
            delta: u28::new(delta as u32),
            kind,
        });
        now = tick;
    }
    Ok(out)
}
