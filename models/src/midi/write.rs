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
use crate::song::{Note, Song};

use super::{MAX_DELTA, midi_err, section_label_for_marker};

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
