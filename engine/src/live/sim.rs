//! A performance from a file played into a [`LiveSession`] on a simulated clock: what
//! `staria live` and `staria bench --live` run.
//!
//! The clock ticks every `tick_ms`; each performer note-on/off is handed to the session at its
//! own time (note-offs first at equal times), and `advance` runs at every tick. With
//! [`SimClock::Exact`] compute takes no simulated time, so the same model, settings, seed and
//! file give the same notes on any machine. With [`SimClock::Charged`] every call's measured
//! wall time is added to the clock (the session falls behind when it computes slower than
//! real time), and a model note handed out after its start counts as late: what a real-time
//! run on this machine would have played late.
//!
//! **Tempo changes** in the performer's file: [`Performance::from_song_on_beats`] times its
//! notes the way the engine times a host's, by their beats (ticks) at the session's reference
//! tempo (session ms are musical time, `live::tempo`), and lists the file's tempo changes; the
//! simulation tells the session the host's tempo ([`LiveSession::set_host_tempo`]) before every
//! call from each change's time on, as the engine thread does at every pump. The model's notes
//! come back in session ms; [`song_ms`] puts them on the file's time line (its tempo map).
//! With `Charged`, a call's wall time is charged in session ms at the host's tempo then.

use std::time::Instant;

use staria_models::Song;
use staria_models::song::TempoChange;

use super::{LiveEvent, LiveSession, LiveSettings, LiveStats, TimedNote};
use crate::generate::{Generator, Result, Snippets};

/// How simulated time relates to compute (see the module notes).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SimClock {
    Exact,
    Charged,
}

/// The performer's notes in ms, sorted by start.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Performance {
    pub notes: Vec<TimedNote>,
}

impl Performance {
    /// The pitched notes of `song` (drums are left out). Refuses a song with none, naming it.
    pub fn from_song(song: &Song) -> Result<Performance, String> {
        let mut notes: Vec<TimedNote> = song
            .notes
            .iter()
            .filter(|n| !n.is_drum() && n.start_ms.is_finite() && n.end_ms.is_finite())
            .map(|n| TimedNote {
                pitch: n.pitch,
                velocity: n.velocity.max(1),
                start_ms: n.start_ms.max(0.0),
                end_ms: n.end_ms.max(n.start_ms.max(0.0)),
            })
            .collect();
        if notes.is_empty() {
            return Err("it has no pitched notes to perform".into());
        }
        notes.sort_by(|a, b| a.start_ms.total_cmp(&b.start_ms));
        Ok(Performance { notes })
    }

    /// The pitched notes of `song` timed as a host plays them to a session whose reference
    /// tempo is `bpm`: each at its beat (tick) times the beat's length at `bpm`, whatever the
    /// file's tempo there; and the file's tempo changes as (session ms, bpm), from which the
    /// host plays at that tempo (see the module notes). A file with one tempo equal to `bpm`
    /// gives the notes [`Performance::from_song`] gives (up to rounding).
    pub fn from_song_on_beats(
        song: &Song,
        bpm: f64,
    ) -> Result<(Performance, Vec<(f64, f64)>), String> {
        if !(bpm.is_finite() && bpm > 0.0) {
            return Err(format!(
                "the reference tempo must be positive, got {bpm} bpm"
            ));
        }
        let tpq = song.ticks_per_quarter.max(1) as f64;
        let ms = |tick: u64| tick as f64 / tpq * 60_000.0 / bpm;
        let mut notes: Vec<TimedNote> = song
            .notes
            .iter()
            .filter(|n| !n.is_drum())
            .map(|n| TimedNote {
                pitch: n.pitch,
                velocity: n.velocity.max(1),
                start_ms: ms(n.start_tick),
                end_ms: ms(n.end_tick.max(n.start_tick)),
            })
            .collect();
        if notes.is_empty() {
            return Err("it has no pitched notes to perform".into());
        }
        notes.sort_by(|a, b| a.start_ms.total_cmp(&b.start_ms));
        let tempo = song
            .tempo_map
            .iter()
            .map(|t: &TempoChange| (ms(t.tick), 60_000_000.0 / t.us_per_quarter.max(1) as f64))
            .collect();
        Ok((Performance { notes }, tempo))
    }

    pub fn end_ms(&self) -> f64 {
        self.notes.iter().map(|n| n.end_ms).fold(0.0, f64::max)
    }
}

/// A response of call and response, as the session reported it.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Response {
    pub start_ms: f64,
    pub end_ms: f64,
    pub interrupted: bool,
}

/// What a simulated performance gave.
#[derive(Debug, Clone, Default)]
pub struct SimReport {
    /// The model's notes as they sounded (cuts applied; notes cut before their start left out).
    pub model_notes: Vec<TimedNote>,
    /// Model notes handed out after their start time.
    pub late_notes: usize,
    /// Model notes sounding a pitch the performer sounds at the same instant.
    pub collisions: usize,
    pub responses: Vec<Response>,
    pub stats: LiveStats,
    /// Simulated ms the session ran behind the performance at worst (`Charged` only).
    pub max_lag_ms: f64,
}

/// Performer events in playing order: note-offs before note-ons at the same time.
fn performer_events(perf: &Performance) -> Vec<(f64, bool, TimedNote)> {
    let mut events: Vec<(f64, bool, TimedNote)> = perf
        .notes
        .iter()
        .flat_map(|n| [(n.start_ms, true, *n), (n.end_ms, false, *n)])
        .collect();
    events.sort_by(|a, b| a.0.total_cmp(&b.0).then(a.1.cmp(&b.1)));
    events
}

/// The model's notes as they sound: `Play`s with the `Cut`s applied (a cut ends the notes on
/// its pitch sounding then, and removes those that start at or after it).
#[derive(Debug, Default)]
pub struct Sounded {
    /// Each note handed out, and whether a cut removed it before it started.
    played: Vec<(TimedNote, bool)>,
}

impl Sounded {
    pub fn with_capacity(n: usize) -> Sounded {
        Sounded {
            played: Vec::with_capacity(n),
        }
    }

    pub fn play(&mut self, note: TimedNote) {
        self.played.push((note, true));
    }

    pub fn cut(&mut self, pitch: u8, at_ms: f64) {
        for (m, alive) in self.played.iter_mut() {
            if *alive && m.pitch == pitch && m.end_ms > at_ms {
                if m.start_ms >= at_ms {
                    *alive = false;
                } else {
                    m.end_ms = at_ms;
                }
            }
        }
    }

    /// The notes that sound, in the order they were handed out.
    pub fn into_notes(self) -> Vec<TimedNote> {
        self.played
            .into_iter()
            .filter(|(n, alive)| *alive && n.end_ms > n.start_ms)
            .map(|(n, _)| n)
            .collect()
    }
}

/// Sounding notes that share a pitch at the same instant (overlap longer than 1 µs).
pub fn count_collisions(model: &[TimedNote], performer: &[TimedNote]) -> usize {
    model
        .iter()
        .filter(|m| {
            performer.iter().any(|p| {
                p.pitch == m.pitch && m.start_ms.max(p.start_ms) + 1e-3 < m.end_ms.min(p.end_ms)
            })
        })
        .count()
}

/// Whether `song` changes tempo (more than one tempo in its map).
pub fn has_tempo_changes(song: &Song) -> bool {
    song.tempo_map
        .windows(2)
        .any(|w| w[0].us_per_quarter != w[1].us_per_quarter)
}

/// Session ms (at the reference tempo `bpm`) on the time line of `song`, the file a
/// performance came from with [`Performance::from_song_on_beats`]: its beat, then the file's
/// ms at that beat (its tempo map).
pub fn song_ms(song: &Song, bpm: f64, session_ms: f64) -> f64 {
    let beats = session_ms.max(0.0) * bpm / 60_000.0;
    song.tick_to_ms((beats * song.ticks_per_quarter.max(1) as f64).round() as u64)
}

/// Plays `perf` into a fresh session (see the module notes) and runs on for the answer's
/// length (call and response) or a bar (accompaniment) after its end.
pub fn simulate(
    g: &mut Generator,
    snippets: &Snippets,
    settings: LiveSettings,
    perf: &Performance,
    clock: SimClock,
    tick_ms: f64,
) -> Result<SimReport> {
    simulate_with_tempo(g, snippets, settings, perf, &[], clock, tick_ms)
}

/// [`simulate`] with the host's tempo changes, (session ms, bpm) sorted by time (from
/// [`Performance::from_song_on_beats`]): the session hears of each before the first call at
/// or after its time.
pub fn simulate_with_tempo(
    g: &mut Generator,
    snippets: &Snippets,
    settings: LiveSettings,
    perf: &Performance,
    tempo: &[(f64, f64)],
    clock: SimClock,
    tick_ms: f64,
) -> Result<SimReport> {
    if !(tick_ms.is_finite() && tick_ms > 0.0) {
        return Err(crate::generate::GenError::Request(format!(
            "the simulation tick must be positive, got {tick_ms} ms"
        )));
    }
    let tail = settings.response_bars as f64 * settings.bar_ms() + settings.bar_ms();
    let reference_bpm = settings.bpm;
    let mut host_bpm = reference_bpm;
    let mut next_tempo = 0;
    let mut session = LiveSession::start(g, snippets, settings)?;
    let events = performer_events(perf);
    let end = perf.end_ms() + tail;

    let mut report = SimReport::default();
    let mut played = Sounded::with_capacity(perf.notes.len() * 2);
    let mut open_response: Option<f64> = None;
    // Charged: the simulated time the session is busy until (an event waits for it).
    let mut busy_until = 0.0f64;
    let mut calls: Vec<(f64, Option<(bool, TimedNote)>)> = Vec::new();
    let mut next_event = 0;
    let mut tick = 0u64;
    loop {
        let t = tick as f64 * tick_ms;
        if t > end {
            break;
        }
        tick += 1;
        calls.clear();
        while next_event < events.len() && events[next_event].0 <= t {
            let (at, on, n) = events[next_event];
            calls.push((at, Some((on, n))));
            next_event += 1;
        }
        calls.push((t, None));
        for &(at, what) in &calls {
            while next_tempo < tempo.len() && tempo[next_tempo].0 <= at {
                host_bpm = tempo[next_tempo].1;
                session.set_host_tempo(host_bpm);
                next_tempo += 1;
            }
            // Wall time in session ms at the host's tempo (`Charged`).
            let speed = host_bpm / reference_bpm;
            let started = Instant::now();
            let now0 = match clock {
                SimClock::Exact => at,
                SimClock::Charged => at.max(busy_until),
            };
            report.max_lag_ms = report.max_lag_ms.max(now0 - at);
            let mut late = 0usize;
            let mut out = |ev: LiveEvent| match ev {
                LiveEvent::Play(n) => {
                    let now = match clock {
                        SimClock::Exact => at,
                        SimClock::Charged => {
                            now0 + started.elapsed().as_secs_f64() * 1000.0 * speed
                        }
                    };
                    if n.start_ms < now {
                        late += 1;
                    }
                    played.play(n);
                }
                LiveEvent::Cut { pitch, at_ms } => played.cut(pitch, at_ms),
                LiveEvent::ResponseStart { at_ms } => open_response = Some(at_ms),
                LiveEvent::ResponseEnd { at_ms, interrupted } => {
                    if let Some(start_ms) = open_response.take() {
                        report.responses.push(Response {
                            start_ms,
                            end_ms: at_ms,
                            interrupted,
                        });
                    }
                }
            };
            match what {
                Some((true, n)) => session.note_on(g, n.pitch, n.velocity, at, &mut out)?,
                Some((false, n)) => session.note_off(g, n.pitch, at, &mut out)?,
                None => session.advance(g, at, &mut out)?,
            }
            report.late_notes += late;
            busy_until = now0 + started.elapsed().as_secs_f64() * 1000.0 * speed;
        }
    }
    if let Some(start_ms) = open_response {
        report.responses.push(Response {
            start_ms,
            end_ms: end,
            interrupted: false,
        });
    }
    report.model_notes = played.into_notes();
    report.collisions = count_collisions(&report.model_notes, &perf.notes);
    report.stats = session.stats().clone();
    Ok(report)
}

#[cfg(test)]
mod tests {
    use super::*;
    use staria_models::{Note, TempoChange};

    /// 120 bpm for two bars, then 60 bpm: a quarter note on every beat for four bars.
    fn slowing_song() -> Song {
        let tempo_map = vec![
            TempoChange {
                tick: 0,
                us_per_quarter: 500_000,
            },
            TempoChange {
                tick: 8 * 480,
                us_per_quarter: 1_000_000,
            },
        ];
        let mut song = Song {
            ticks_per_quarter: 480,
            tempo_map,
            time_signatures: Vec::new(),
            notes: Vec::new(),
            sections: Vec::new(),
        };
        song.notes = (0..16u64)
            .map(|beat| Note {
                pitch: 64 + (beat % 5) as u8,
                velocity: 80,
                channel: 0,
                program: 0,
                start_tick: beat * 480,
                end_tick: beat * 480 + 400,
                start_ms: song.tick_to_ms(beat * 480),
                end_ms: song.tick_to_ms(beat * 480 + 400),
            })
            .collect();
        song
    }

    /// The file's notes reach the session at their beats at the reference tempo, its tempo
    /// change at its beat; session ms go back onto the file's time line.
    #[test]
    fn a_file_that_changes_tempo_is_timed_by_its_beats() {
        let song = slowing_song();
        assert!(has_tempo_changes(&song));
        let (perf, tempo) = Performance::from_song_on_beats(&song, 120.0).unwrap();
        assert_eq!(tempo, [(0.0, 120.0), (4000.0, 60.0)]);
        // Beat 10 is 6 s into the file (8 beats at 120, 2 at 60), 5 s of session time.
        assert_eq!(song.notes[10].start_ms, 6000.0);
        assert_eq!(perf.notes[10].start_ms, 5000.0);
        assert_eq!(song_ms(&song, 120.0, 5000.0), 6000.0);
        assert_eq!(song_ms(&song, 120.0, 3000.0), 3000.0);
        // One tempo: the same notes as `from_song`.
        let steady = Song::from_ms_notes(song.notes.clone(), Vec::new(), 120.0);
        assert!(!has_tempo_changes(&steady));
        let (beats, _) = Performance::from_song_on_beats(&steady, 120.0).unwrap();
        let ms = Performance::from_song(&steady).unwrap();
        for (a, b) in beats.notes.iter().zip(&ms.notes) {
            assert!((a.start_ms - b.start_ms).abs() < 1.0, "{a:?} vs {b:?}");
        }
        assert!(Performance::from_song_on_beats(&song, 0.0).is_err());
    }

    /// The session is told the host's tempo at the change: after it (60 bpm, half the
    /// reference's) the real-time margins are half as many session ms, so an answer after the
    /// call's closing silence starts its time line 15 session ms (30 real ms) after the
    /// handover instead of 30; the accompaniment plays on across the change, collision-free.
    #[test]
    fn the_simulation_tells_the_session_the_host_tempo() {
        let dir = tempfile::tempdir().unwrap();
        staria_test_support::tiny_checkpoint(dir.path(), "sim-tempo-tiny");
        let mut g = Generator::load(dir.path(), &candle_core::Device::Cpu).unwrap();
        let song = slowing_song();
        let (perf, tempo) = Performance::from_song_on_beats(&song, 120.0).unwrap();
        let mode = |m| {
            let mut s = LiveSettings::new(m, 120.0);
            s.sampling.seed = 2;
            s
        };
        let respond = |g: &mut Generator, tempo: &[(f64, f64)]| {
            let settings = mode(super::super::LiveMode::Respond);
            let r = simulate_with_tempo(
                g,
                &Snippets::default(),
                settings,
                &perf,
                tempo,
                SimClock::Exact,
                10.0,
            )
            .unwrap();
            // The 2-beat silence after the last note ends, seen at the next 10 ms tick.
            let silent = perf.end_ms() + 2.0 * 500.0;
            r.responses[0].start_ms - (silent / 10.0).ceil() * 10.0
        };
        assert_eq!(respond(&mut g, &tempo), 15.0);
        assert_eq!(respond(&mut g, &[]), 30.0, "without the host's tempo");
        let mut settings = mode(super::super::LiveMode::Accompany);
        settings.voice.pitch_min = 40;
        settings.voice.pitch_max = 60;
        let r = simulate_with_tempo(
            &mut g,
            &Snippets::default(),
            settings,
            &perf,
            &tempo,
            SimClock::Exact,
            10.0,
        )
        .unwrap();
        assert_eq!(r.collisions, 0);
        assert!(
            r.model_notes.iter().any(|n| n.start_ms > 4000.0),
            "nothing after the change: {:?}",
            r.model_notes
        );
    }
}
