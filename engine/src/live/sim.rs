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

use std::time::Instant;

use staria_models::Song;

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
    if !(tick_ms.is_finite() && tick_ms > 0.0) {
        return Err(crate::generate::GenError::Request(format!(
            "the simulation tick must be positive, got {tick_ms} ms"
        )));
    }
    let tail = settings.response_bars as f64 * settings.bar_ms() + settings.bar_ms();
    let mut session = LiveSession::start(g, snippets, settings)?;
    let events = performer_events(perf);
    let end = perf.end_ms() + tail;

    let mut report = SimReport::default();
    let mut played: Vec<(TimedNote, bool)> = Vec::with_capacity(perf.notes.len() * 2);
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
                        SimClock::Charged => now0 + started.elapsed().as_secs_f64() * 1000.0,
                    };
                    if n.start_ms < now {
                        late += 1;
                    }
                    played.push((n, true));
                }
                LiveEvent::Cut { pitch, at_ms } => {
                    for (m, alive) in played.iter_mut() {
                        if *alive && m.pitch == pitch && m.end_ms > at_ms {
                            if m.start_ms >= at_ms {
                                *alive = false;
                            } else {
                                m.end_ms = at_ms;
                            }
                        }
                    }
                }
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
            busy_until = now0 + started.elapsed().as_secs_f64() * 1000.0;
        }
    }
    if let Some(start_ms) = open_response {
        report.responses.push(Response {
            start_ms,
            end_ms: end,
            interrupted: false,
        });
    }
    report.model_notes = played
        .into_iter()
        .filter(|(n, alive)| *alive && n.end_ms > n.start_ms)
        .map(|(n, _)| n)
        .collect();
    report.collisions = count_collisions(&report.model_notes, &perf.notes);
    report.stats = session.stats().clone();
    Ok(report)
}
