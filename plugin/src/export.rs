//! Export of what Staria generated as a MIDI file with section markers.
//!
//! The audio thread pushes every generated note as it goes out (and every section request) into
//! a lock-free ring ([`crate::gui_state::LogTap`]); the monitor thread or the window drains it
//! into a [`GeneratedLog`] here, off the audio thread. Exporting builds a
//! [`staria_models::Song`] from the log (one tempo, the section's time signature, a marker per
//! section start named after its letter, which `read_midi` maps back to the section) and writes
//! it with `staria_models::midi::write_midi`.

use staria_models::song::{Note, Section, TimeSignature};
use staria_models::{SectionLabel, Song};
use std::collections::{HashMap, HashSet};
use std::path::{Path, PathBuf};

use crate::gui_state::LogEntry;

/// Notes the log keeps since the transport started (about 4 hours of dense playing); later
/// notes are counted, not kept.
pub const MAX_LOG_NOTES: usize = 200_000;
/// Sections the log keeps.
pub const MAX_LOG_SECTIONS: usize = 10_000;

/// A generated note as it sounded, in host beats. `end_beat` is NaN while it still sounds.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct LoggedNote {
    pub request_id: u32,
    pub start_beat: f64,
    pub end_beat: f64,
    pub pitch: u8,
    pub velocity: u8,
    pub channel: u8,
}

/// A section request: where it was to start and end.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct LoggedSection {
    pub request_id: u32,
    /// `None` for *Continue*.
    pub label: Option<SectionLabel>,
    pub start_beat: f64,
    pub end_beat: f64,
    pub ts_num: u8,
    pub ts_den: u8,
    pub bpm: f64,
}

/// What was generated since the transport last started.
#[derive(Debug, Clone, Default)]
pub struct GeneratedLog {
    notes: Vec<LoggedNote>,
    sections: Vec<LoggedSection>,
    /// Index into `notes` of the note sounding on (channel, pitch).
    open: HashMap<(u8, u8), usize>,
    /// Requests that played at least one note.
    sounded: HashSet<u32>,
    /// The latest beat any entry carried.
    latest_beat: f64,
    /// Notes not kept (over [`MAX_LOG_NOTES`]).
    pub notes_dropped: u64,
}

impl GeneratedLog {
    pub fn apply(&mut self, e: LogEntry) {
        match e {
            LogEntry::TransportStart { beat } => {
                *self = Self {
                    notes_dropped: 0,
                    latest_beat: beat,
                    ..Self::default()
                };
            }
            LogEntry::Section {
                request_id,
                label,
                start_beat,
                bars,
                ts_num,
                ts_den,
                bpm,
            } => {
                if self.sections.len() < MAX_LOG_SECTIONS {
                    let bar = crate::timeline::beats_per_bar(ts_num, ts_den);
                    self.sections.push(LoggedSection {
                        request_id,
                        label,
                        start_beat,
                        end_beat: start_beat + bars as f64 * bar,
                        ts_num,
                        ts_den,
                        bpm,
                    });
                }
            }
            LogEntry::Note {
                request_id,
                beat,
                on,
                pitch,
                velocity,
                channel,
            } => {
                self.latest_beat = self.latest_beat.max(beat);
                // A note-on over a sounding key, or its note-off, ends the sounding one.
                if let Some(i) = self.open.remove(&(channel, pitch)) {
                    let n = &mut self.notes[i];
                    n.end_beat = beat.max(n.start_beat);
                }
                if on {
                    if self.notes.len() >= MAX_LOG_NOTES {
                        self.notes_dropped += 1;
                        return;
                    }
                    self.open.insert((channel, pitch), self.notes.len());
                    self.sounded.insert(request_id);
                    self.notes.push(LoggedNote {
                        request_id,
                        start_beat: beat,
                        end_beat: f64::NAN,
                        pitch,
                        velocity,
                        channel,
                    });
                }
            }
        }
    }

    pub fn notes(&self) -> &[LoggedNote] {
        &self.notes
    }

    pub fn sections(&self) -> &[LoggedSection] {
        &self.sections
    }

    /// Sections that got at least one note, in order.
    pub fn sounded_sections(&self) -> Vec<LoggedSection> {
        self.sections
            .iter()
            .filter(|s| self.sounded.contains(&s.request_id))
            .copied()
            .collect()
    }

    pub fn is_empty(&self) -> bool {
        self.notes.is_empty()
    }

    /// A note's end, with notes still sounding ended at the latest beat seen.
    fn end_of(&self, n: &LoggedNote) -> f64 {
        if n.end_beat.is_finite() {
            n.end_beat
        } else {
            self.latest_beat.max(n.start_beat + 0.25)
        }
    }
}

/// What to export.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Scope {
    /// The last section that played notes.
    LastSection,
    /// Everything generated since the transport started.
    SinceTransportStart,
}

/// Why an export did not happen, in words for the window.
#[derive(Debug, Clone, PartialEq)]
pub struct ExportError(pub String);

impl std::fmt::Display for ExportError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

/// The song to write for `scope`, and its name's stem ("A", "AABA", "cont"). Times start at the
/// first exported section's start (a bar line), so the file opens on the beat.
pub fn build_song(log: &GeneratedLog, scope: Scope) -> Result<(Song, String), ExportError> {
    let sounded = log.sounded_sections();
    let chosen: Vec<LoggedSection> = match scope {
        Scope::LastSection => sounded.last().copied().into_iter().collect(),
        Scope::SinceTransportStart => sounded.clone(),
    };
    let Some(first) = chosen.first() else {
        return Err(ExportError(
            "nothing to export: no generated section has played since the transport started".into(),
        ));
    };
    let bpm = if first.bpm.is_finite() && first.bpm > 0.0 {
        first.bpm
    } else {
        120.0
    };
    let origin = first.start_beat;
    let ms = |beat: f64| (beat - origin).max(0.0) * 60_000.0 / bpm;
    let ids: HashSet<u32> = chosen.iter().map(|s| s.request_id).collect();
    let notes: Vec<Note> = log
        .notes
        .iter()
        .filter(|n| ids.contains(&n.request_id))
        .map(|n| Note {
            pitch: n.pitch,
            velocity: n.velocity.clamp(1, 127),
            channel: n.channel & 15,
            program: 0,
            start_tick: 0,
            end_tick: 0,
            start_ms: ms(n.start_beat),
            end_ms: ms(log.end_of(n)),
        })
        .collect();
    // A section lasts until the next one starts (a new trigger replaces what plays), the last
    // one until its planned end or its last note, whichever is later.
    let mut sections = Vec::new();
    for (i, s) in chosen.iter().enumerate() {
        let Some(label) = s.label else {
            continue; // Continue: no section letter to mark.
        };
        let last_note = log
            .notes
            .iter()
            .filter(|n| n.request_id == s.request_id)
            .map(|n| log.end_of(n))
            .fold(s.start_beat, f64::max);
        let end = chosen
            .get(i + 1)
            .map_or(s.end_beat.max(last_note), |next| next.start_beat);
        sections.push(Section {
            label,
            marker_text: label.letter().to_string(),
            start_tick: 0,
            end_tick: 0,
            start_ms: ms(s.start_beat),
            end_ms: ms(end),
        });
    }
    let mut song = Song::from_ms_notes(notes, sections, bpm);
    if first.ts_num > 0 && first.ts_den.is_power_of_two() {
        song.time_signatures = vec![TimeSignature {
            tick: 0,
            numerator: first.ts_num,
            denominator: first.ts_den,
        }];
    }
    let stem: String = chosen
        .iter()
        .map(|s| {
            s.label
                .map_or("cont".to_string(), |l| l.letter().to_string())
        })
        .collect::<Vec<_>>()
        .join("");
    let stem = if stem.len() > 40 {
        format!("{}-and-more", &stem[..40])
    } else {
        stem
    };
    Ok((song, stem))
}

/// `YYYYMMDD-HHMMSS` (UTC) of a time in seconds since the Unix epoch.
pub fn timestamp(unix_secs: u64) -> String {
    let days = (unix_secs / 86_400) as i64;
    let secs = unix_secs % 86_400;
    // Howard Hinnant's civil-from-days.
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1_460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = yoe + era * 400 + (m <= 2) as i64;
    format!(
        "{y:04}{m:02}{d:02}-{:02}{:02}{:02}",
        secs / 3600,
        secs / 60 % 60,
        secs % 60
    )
}

/// The file name of an export: `staria-<sections>-<YYYYMMDD-HHMMSS>.mid`.
pub fn file_name(stem: &str, unix_secs: u64) -> String {
    format!("staria-{stem}-{}.mid", timestamp(unix_secs))
}

/// Writes `scope` of the log into `folder`, named after its sections and `unix_secs`. Errors
/// name the folder or file and what is wrong with it.
pub fn export(
    log: &GeneratedLog,
    scope: Scope,
    folder: &Path,
    unix_secs: u64,
) -> Result<PathBuf, ExportError> {
    let (song, stem) = build_song(log, scope)?;
    let shown = folder.display();
    if folder.as_os_str().is_empty() {
        return Err(ExportError("choose a folder to export into".into()));
    }
    match std::fs::metadata(folder) {
        Ok(m) if m.is_dir() => {}
        Ok(_) => {
            return Err(ExportError(format!(
                "cannot export: {shown} is not a folder"
            )));
        }
        Err(e) => return Err(ExportError(format!("cannot export into {shown}: {e}"))),
    }
    let bytes = staria_models::midi::write_midi(&song)
        .map_err(|e| ExportError(format!("cannot write the MIDI file: {e}")))?;
    let path = folder.join(file_name(&stem, unix_secs));
    std::fs::write(&path, bytes)
        .map_err(|e| ExportError(format!("cannot write {}: {e}", path.display())))?;
    Ok(path)
}

#[cfg(test)]
mod tests {
    use super::*;
    use staria_models::midi::read_midi_file;

    fn section(log: &mut GeneratedLog, id: u32, label: SectionLabel, start: f64, bars: u16) {
        log.apply(LogEntry::Section {
            request_id: id,
            label: Some(label),
            start_beat: start,
            bars,
            ts_num: 4,
            ts_den: 4,
            bpm: 120.0,
        });
    }

    fn note(log: &mut GeneratedLog, id: u32, pitch: u8, on: f64, off: f64) {
        for (beat, on) in [(on, true), (off, false)] {
            log.apply(LogEntry::Note {
                request_id: id,
                beat,
                on,
                pitch,
                velocity: 100,
                channel: 1,
            });
        }
    }

    /// A log as two sections played: A (bars 3-4) then B (bars 5-6), at 120 bpm.
    fn two_sections() -> GeneratedLog {
        let mut log = GeneratedLog::default();
        log.apply(LogEntry::TransportStart { beat: 0.0 });
        section(&mut log, 1, SectionLabel::A, 8.0, 2);
        note(&mut log, 1, 60, 8.0, 9.0);
        note(&mut log, 1, 64, 10.0, 12.0);
        section(&mut log, 2, SectionLabel::B, 16.0, 2);
        note(&mut log, 2, 67, 16.0, 16.5);
        note(&mut log, 2, 72, 20.0, 24.0);
        log
    }

    /// (pitch, start ms, end ms) of a song's notes.
    fn timed(song: &Song) -> Vec<(u8, f64, f64)> {
        song.notes
            .iter()
            .map(|n| (n.pitch, n.start_ms.round(), n.end_ms.round()))
            .collect()
    }

    /// Everything since the transport started: the file re-opens with every note at its time
    /// from the first section's start (500 ms a beat) and a marker per section.
    #[test]
    fn export_everything_reopens_with_notes_and_markers() {
        let dir = tempfile::tempdir().unwrap();
        let log = two_sections();
        let path = export(&log, Scope::SinceTransportStart, dir.path(), 1_764_880_000).unwrap();
        assert_eq!(
            path.file_name().unwrap().to_str().unwrap(),
            "staria-AB-20251204-202640.mid"
        );
        let song = read_midi_file(&path).unwrap();
        assert_eq!(
            timed(&song),
            vec![
                (60, 0.0, 500.0),
                (64, 1000.0, 2000.0),
                (67, 4000.0, 4250.0),
                (72, 6000.0, 8000.0)
            ]
        );
        assert!(
            song.notes
                .iter()
                .all(|n| n.channel == 1 && n.velocity == 100)
        );
        let marks: Vec<(SectionLabel, f64)> = song
            .sections
            .iter()
            .map(|s| (s.label, s.start_ms.round()))
            .collect();
        assert_eq!(
            marks,
            vec![(SectionLabel::A, 0.0), (SectionLabel::B, 4000.0)]
        );
        assert_eq!(song.constant_quarter_ms(), Some(500.0));
    }

    /// The last section alone starts at 0 with its own marker.
    #[test]
    fn export_last_section() {
        let dir = tempfile::tempdir().unwrap();
        let path = export(&two_sections(), Scope::LastSection, dir.path(), 0).unwrap();
        assert!(path.ends_with("staria-B-19700101-000000.mid"), "{path:?}");
        let song = read_midi_file(&path).unwrap();
        assert_eq!(timed(&song), vec![(67, 0.0, 250.0), (72, 2000.0, 4000.0)]);
        assert_eq!(song.sections.len(), 1);
        assert_eq!(song.sections[0].label, SectionLabel::B);
        assert_eq!(song.sections[0].start_ms, 0.0);
    }

    /// A transport start forgets what came before; an empty log is refused in words.
    #[test]
    fn transport_start_clears_and_empty_log_is_refused() {
        let mut log = two_sections();
        log.apply(LogEntry::TransportStart { beat: 32.0 });
        assert!(log.is_empty());
        let dir = tempfile::tempdir().unwrap();
        let err = export(&log, Scope::LastSection, dir.path(), 0).unwrap_err();
        assert!(err.0.contains("nothing to export"), "{err}");
    }

    /// Folders that cannot take the file are named in the error.
    #[test]
    fn bad_folders_are_named() {
        let log = two_sections();
        let dir = tempfile::tempdir().unwrap();
        let missing = dir.path().join("nope");
        let err = export(&log, Scope::LastSection, &missing, 0).unwrap_err();
        assert!(err.0.contains("nope"), "{err}");
        let file = dir.path().join("a-file");
        std::fs::write(&file, b"x").unwrap();
        let err = export(&log, Scope::LastSection, &file, 0).unwrap_err();
        assert!(err.0.contains("is not a folder"), "{err}");
        let err = export(&log, Scope::LastSection, Path::new(""), 0).unwrap_err();
        assert!(err.0.contains("choose a folder"), "{err}");
    }

    /// A note still sounding ends at the latest beat seen; a re-struck key ends the first.
    #[test]
    fn open_and_restruck_notes_end() {
        let mut log = GeneratedLog::default();
        section(&mut log, 1, SectionLabel::C, 0.0, 1);
        for (beat, on) in [(0.0, true), (1.0, true), (2.0, false), (3.0, true)] {
            log.apply(LogEntry::Note {
                request_id: 1,
                beat,
                on,
                pitch: 50,
                velocity: 80,
                channel: 0,
            });
        }
        let (song, stem) = build_song(&log, Scope::LastSection).unwrap();
        assert_eq!(stem, "C");
        assert_eq!(
            timed(&song),
            vec![(50, 0.0, 500.0), (50, 500.0, 1000.0), (50, 1500.0, 1625.0)]
        );
    }

    #[test]
    fn timestamps_are_utc_dates() {
        assert_eq!(timestamp(0), "19700101-000000");
        assert_eq!(timestamp(951_782_400), "20000229-000000");
        assert_eq!(timestamp(1_764_880_000), "20251204-202640");
    }
}
