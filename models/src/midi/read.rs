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

use std::path::Path;

use crate::error::{Error, Result};
use crate::song::{
    DEFAULT_US_PER_QUARTER, Note, Section, SectionLabel, Song, TempoChange, TempoIndex,
    TimeSignature,
};

use super::{midi_err, section_label_for_marker};

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
