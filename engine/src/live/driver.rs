//! A live session on the engine thread: the live commands (`Command::LiveStart`,
//! `LiveNoteOn`/`LiveNoteOff`, `Handover`, `LivePrompt`, `LiveStop`) in, note events and request outcomes out
//! through the same lock-free rings as section requests.
//!
//! Contract with the audio side:
//! - Time is the published playhead (host beats): the host's transport while it plays, the
//!   audio side's free-running clock otherwise (`timing::LiveClock`). Session ms are beats from
//!   the start's origin at the tempo of the start ([`BeatClock`]), whatever the tempo does
//!   later: a tempo change stretches session time with the host's beats, and every pump tells
//!   the session the host's tempo so its real-time margins stay real (`live::tempo`). A
//!   relocation (a jump, a loop, the switch between host and audio clock) moves the time line
//!   with it: the notes pushed (those sounding, and the queued look-ahead of a few tens of ms)
//!   are released or dropped by the audio side, which never re-queues a live session's events
//!   from its memory (so a loop never replays the model's notes heard before it, and no pushed
//!   note-on is left without its note-off); the notes not pushed yet play at their new beats
//!   (`engine/tests/engine_live_relocate.rs`).
//! - Accompaniment notes are request `LiveStart::request_id`; each answer of call and response
//!   is its `Handover`'s request. An answer ends with `Outcome::Finished` (bars full) or
//!   `Outcome::Cancelled` when the performer plays again (the audio side then releases every
//!   note of it at once and drops the rest); `LiveStop`, a section request, a model swap or
//!   shutdown cancel what the session plays, and a session that fails (an error or a panic
//!   in the model) ends what it plays with `Outcome::Failed`, the reason in the status.
//! - A note is pushed as soon as the session hands it out (it is final then: the session's
//!   commit window, `LiveSettings::commit_ahead_ms`, 50 ms before it sounds), or `push_ahead`
//!   beats before it sounds if that is earlier, and right after the call that handed it out
//!   (a command, a handover, a pump), never after other work: a stall of the engine thread
//!   after that cannot make it late. Nothing later is pushed, so a revision or an
//!   interruption rarely has to take back an event already queued on the audio side (the
//!   audio side drops a cancelled answer's queued notes and never starts a note on a key the
//!   performer holds); a `Cut` is the one case (next point).
//! - A `Cut` reaches notes already pushed: the accompaniment's note on the pitch the
//!   performer strikes, and a note re-chosen at a performer's note (`LiveSettings::consonant`,
//!   the `rechoose` module), pushed when it was handed out. A cut at or before the pushed
//!   note's start takes it back whole, as the session's contract says (the simulation does):
//!   the outbox sends `Event::Retract` for it, before any other event, instead of a note-off,
//!   and the audio side drops the queued note-on (and its note-off, and its copy in the
//!   memory a relocation re-queues from), or, if the audio thread played it already (a race
//!   the engine cannot see: the push window is a few tens of ms), releases it at the start of
//!   the block that receives the retraction (`audio` module notes). So no cut note sounds a
//!   blip before its replacement. A cut after the note's start moves the note-off earlier
//!   (late by the engine's reaction, as any cut), to no less than `schedule::MIN_NOTE_BEATS`
//!   (a 128th of a beat) after the note-on, which keeps that note-off ordered after it. A note
//!   struck with the performer's has usually begun when the engine hears the performer. At
//!   the session's end (`stop`) the pushed notes of a finished answer that have not started
//!   are retracted the same way.
//! - New snippets (`LivePrompt`, [`LiveRun::change_prompt`]) keep the session and its
//!   request: the accompaniment's look-ahead is handed out and pushed at once (up to a beat
//!   ahead: it is final, and nothing may fall due while the new prompt is prefilled), then the
//!   session takes the new prompt (`live::prompt`); an answer under way finishes first. Each
//!   change done counts in `EngineStatus::live_prompt_changes`.

use std::sync::atomic::Ordering::Relaxed;
use std::time::{Duration, Instant};

use super::outbox::{BeatClock, Outbox};
use super::{LiveEvent, LiveMode, LiveSession, LiveSettings};
use crate::constraints::Constraints;
use crate::generate::{Generator, Result, Snippets};
use crate::handover::EngineLink;
use crate::messages::{Event, Outcome, RequestId};
use crate::sampling::SamplingParams;
use crate::status::ParamValues;
use crate::timing::TransportReading;

/// How a live session on the engine thread starts (the fields of `Command::LiveStart`).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct LiveStart {
    pub request_id: RequestId,
    pub mode: LiveMode,
    pub origin_beat: f64,
    pub response_bars: u8,
    pub seed: u32,
    /// [`LiveSettings::consonant`].
    pub consonant: bool,
}

/// The running session and what it has handed out.
pub struct LiveRun {
    session: LiveSession,
    clock: BeatClock,
    outbox: Outbox,
    /// Accompaniment: the session's request; call and response: the current answer (0: none).
    request_id: RequestId,
    /// `LiveStart::request_id`: a failure ends it too, so the plugin knows the session is gone
    /// even in call and response between answers.
    session_id: RequestId,
    /// What the session said during the current call (allocated once).
    events: Vec<LiveEvent>,
    last_playhead: f64,
    epoch: u32,
    /// The engine's push window (beats), as last given to `pump`.
    push_ahead: f64,
    /// The session's prompt changes already counted in the status.
    prompt_changes: usize,
}

impl std::fmt::Debug for LiveRun {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LiveRun")
            .field("session", &self.session)
            .field("request_id", &self.request_id)
            .finish()
    }
}

/// The session settings from the engine's parameters: sampling as for sections; the voice's
/// pitch range from the range parameter when it is narrowed, else the mode's default.
pub fn settings_from(start: &LiveStart, bpm: f64, p: &ParamValues) -> LiveSettings {
    let mut s = LiveSettings::new(start.mode, bpm);
    s.response_bars = start.response_bars.max(1) as u32;
    s.consonant = start.consonant;
    // The audio side measures silences and sends `Handover`s.
    s.handover_silence_beats = None;
    s.sampling = SamplingParams {
        temperature: p.temperature,
        top_p: p.top_p,
        min_p: p.min_p,
        seed: start.seed as u64,
        follow_bias: p.follow_bias,
    };
    if (p.pitch_low, p.pitch_high) != (0, 127) && p.pitch_low <= p.pitch_high {
        s.voice.pitch_min = p.pitch_low;
        s.voice.pitch_max = p.pitch_high.min(127);
    }
    s.voice = Constraints {
        max_polyphony: Some(p.max_polyphony.max(1)),
        ..s.voice
    };
    s.style = p.style_name();
    s
}

/// Pushes a request outcome, retrying a full ring for up to 250 ms (as section requests do).
fn push_done(link: &mut EngineLink, request_id: RequestId, outcome: Outcome) {
    let deadline = Instant::now() + Duration::from_millis(250);
    while !link.push_event(Event::RequestDone {
        request_id,
        outcome,
    }) {
        if Instant::now() >= deadline {
            link.shared.status.dropped_events.fetch_add(1, Relaxed);
            return;
        }
        std::thread::sleep(Duration::from_millis(1));
    }
}

impl LiveRun {
    pub fn start(
        g: &mut Generator,
        snippets: &Snippets,
        start: LiveStart,
        t: &TransportReading,
        params: &ParamValues,
    ) -> Result<LiveRun> {
        let settings = settings_from(&start, t.tempo_bpm, params);
        let session = LiveSession::start(g, snippets, settings)?;
        Ok(LiveRun {
            session,
            clock: BeatClock {
                origin_beat: start.origin_beat,
                bpm: t.tempo_bpm,
            },
            outbox: Outbox::new(params.channel, t.epoch),
            request_id: match start.mode {
                LiveMode::Accompany => start.request_id,
                LiveMode::Respond => 0,
            },
            session_id: start.request_id,
            events: Vec::with_capacity(256),
            last_playhead: t.playhead,
            epoch: t.epoch,
            push_ahead: 0.0,
            prompt_changes: 0,
        })
    }

    pub fn session(&self) -> &LiveSession {
        &self.session
    }

    pub fn note_on(
        &mut self,
        g: &mut Generator,
        link: &mut EngineLink,
        pitch: u8,
        velocity: u8,
        beat: f64,
    ) -> Result<()> {
        let at = self.clock.ms(beat);
        let events = &mut self.events;
        self.session
            .note_on(g, pitch, velocity, at, &mut |e| events.push(e))?;
        self.apply(link);
        self.push(link);
        Ok(())
    }

    pub fn note_off(
        &mut self,
        g: &mut Generator,
        link: &mut EngineLink,
        pitch: u8,
        beat: f64,
    ) -> Result<()> {
        let at = self.clock.ms(beat);
        let events = &mut self.events;
        self.session
            .note_off(g, pitch, at, &mut |e| events.push(e))?;
        self.apply(link);
        self.push(link);
        Ok(())
    }

    /// An answer from `beat` as request `request_id`; one refused (accompaniment, an answer
    /// already under way) is reported `Finished` with no notes.
    pub fn handover(
        &mut self,
        g: &mut Generator,
        link: &mut EngineLink,
        request_id: RequestId,
        beat: f64,
    ) -> Result<()> {
        let at = self.clock.ms(beat);
        let events = &mut self.events;
        if self.session.mode() != LiveMode::Respond || self.session.is_responding() {
            push_done(link, request_id, Outcome::Finished);
            return Ok(());
        }
        self.request_id = request_id;
        self.session.handover(g, at, &mut |e| events.push(e))?;
        self.apply(link);
        self.push(link);
        Ok(())
    }

    /// The snippets changed: the session takes `snippets` as its prompt at the playhead `t` and
    /// goes on (see the module notes).
    pub fn change_prompt(
        &mut self,
        g: &mut Generator,
        link: &mut EngineLink,
        snippets: &Snippets,
        t: &TransportReading,
    ) -> Result<()> {
        if t.epoch != self.epoch {
            // Moving the time line is `pump`'s business: let it do that first.
            self.pump(g, link, t, self.push_ahead)?;
        }
        self.session.set_host_tempo(t.tempo_bpm);
        let now = self.clock.ms(t.playhead);
        let events = &mut self.events;
        self.session
            .hand_out_before_prompt_change(now, &mut |e| events.push(e));
        self.apply(link);
        let s = self.session.settings();
        let ahead_ms = s.lookahead_beats * s.beat_ms() + s.commit_ahead_ms;
        let limit = self.clock.beat(now + ahead_ms);
        if link.shared.transport.read().epoch == self.epoch {
            self.outbox.pump(limit, |ev| link.push_event(ev));
        }
        let events = &mut self.events;
        self.session
            .change_prompt(g, snippets, now, &mut |e| events.push(e))?;
        self.apply(link);
        self.push(link);
        Ok(())
    }

    /// Follows the transport, lets the session do what is due and pushes what it handed out
    /// (see the module notes; `push_ahead`: the engine's push window in beats).
    pub fn pump(
        &mut self,
        g: &mut Generator,
        link: &mut EngineLink,
        t: &TransportReading,
        push_ahead: f64,
    ) -> Result<()> {
        if t.epoch != self.epoch {
            let shift = t.playhead - self.last_playhead;
            self.clock.origin_beat += shift;
            self.outbox.relocate(shift, t.epoch);
            self.epoch = t.epoch;
        }
        self.last_playhead = t.playhead;
        self.session.set_host_tempo(t.tempo_bpm);
        self.push_ahead = push_ahead;
        let events = &mut self.events;
        self.session
            .advance(g, self.clock.ms(t.playhead), &mut |e| events.push(e))?;
        self.apply(link);
        self.push(link);
        Ok(())
    }

    /// Pushes the events handed out (the commit window) or due within `push_ahead`, from the
    /// newest playhead. After a relocation the next `pump` moves the time line first.
    fn push(&mut self, link: &mut EngineLink) {
        let t = link.shared.transport.read();
        if t.epoch != self.epoch {
            return;
        }
        let commit_beats = self.session.settings().commit_ahead_ms * self.clock.bpm / 60_000.0;
        let limit = t.playhead + self.push_ahead.max(commit_beats);
        self.outbox.pump(limit, |ev| link.push_event(ev));
    }

    /// The session ends: what it plays ends with `outcome` (`Cancelled` when it is stopped,
    /// `Failed` when it failed, and then the session's own request too; the audio side
    /// silences it now either way), and the notes of a finished answer still sounding get their
    /// note-offs now.
    pub fn stop(&mut self, link: &mut EngineLink, outcome: Outcome) {
        if outcome == Outcome::Failed && self.session_id != 0 && self.session_id != self.request_id
        {
            push_done(link, self.session_id, outcome);
        }
        if self.request_id != 0 {
            push_done(link, self.request_id, outcome);
            self.outbox.drop_request(self.request_id);
            self.request_id = 0;
        }
        let now = link.shared.transport.read().playhead;
        self.outbox.release_all(now, |ev| link.push_event(ev));
    }

    /// The host beat of the next event to push, if any.
    pub fn next_event_beat(&self) -> Option<f64> {
        self.outbox.next_beat()
    }

    fn apply(&mut self, link: &mut EngineLink) {
        for i in 0..self.events.len() {
            match self.events[i] {
                LiveEvent::Play(n) => {
                    let (s, e) = (self.clock.beat(n.start_ms), self.clock.beat(n.end_ms));
                    self.outbox.add(self.request_id, n.pitch, n.velocity, s, e);
                    link.shared.status.notes_generated.fetch_add(1, Relaxed);
                }
                LiveEvent::Cut { pitch, at_ms } => self.outbox.cut(pitch, self.clock.beat(at_ms)),
                LiveEvent::ResponseStart { .. } => {}
                LiveEvent::ResponseEnd { interrupted, .. } => {
                    let id = std::mem::take(&mut self.request_id);
                    if id == 0 {
                        continue;
                    }
                    if interrupted {
                        self.outbox.drop_request(id);
                        push_done(link, id, Outcome::Cancelled);
                    } else {
                        push_done(link, id, Outcome::Finished);
                    }
                }
            }
        }
        self.events.clear();
        let changes = self.session.stats().prompt_changes;
        if changes > self.prompt_changes {
            let new = (changes - self.prompt_changes) as u64;
            link.shared
                .status
                .live_prompt_changes
                .fetch_add(new, Relaxed);
            self.prompt_changes = changes;
        }
    }
}
