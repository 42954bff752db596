//! The live modes on the audio thread (issue 11): *Call and response* and *Accompany*.
//!
//! The engine's live session (`staria_engine::live`) listens and makes the music; this module is
//! what `process()` does for it:
//! - **Time**: the host's transport while it plays, the audio clock otherwise ([`LiveClock`]).
//!   In the live modes the engine sees that clock's frames and performed notes are timed on it,
//!   so the modes work with no transport running. In *Sections* the engine sees the host's
//!   frames as before.
//! - **Session**: a `LiveStart` once a live mode is chosen and a model is loaded, and again
//!   when what it started with changes (mode, answer length, the accompaniment's channel,
//!   register and consonance, a newly loaded model); a `LiveStop` when *Sections* is chosen or
//!   the plugin is bypassed. A session the engine refused (see its status) is not retried
//!   until one of those changes. Section triggers do nothing in the live modes (a section
//!   request would take the model from the session); *Stop* silences the model and starts the
//!   session afresh.
//! - **Snippets** (the session's prompt): when only they change (one recorded, cleared or
//!   restored during the session) a `LivePrompt` goes instead of a `LiveStart`, after the
//!   capture commands that changed them: the engine's session takes the new prompt and keeps
//!   what it heard (`staria_engine::live::prompt`: the new prompt and the last seconds of
//!   music fed again; the accompaniment plays the beat it had handed out meanwhile and goes
//!   on, an answer under way finishes first). The cost is the new snippet's prefill, about
//!   100 ms per 512 tokens (`staria bench`) plus the kept music. Counted in
//!   [`LiveModes::prompt_changes`] (per session) and the engine's `live_prompt_changes`; the
//!   window shows "prompt updated ×N" next to the live light, and "taken back ×N": the
//!   engine's retractions since the `LiveStart` (`notes_retracted` + `retracted_after_playing`).
//! - **Performer**: each note passes through as in *Sections* (a MIDI effect) and goes to the
//!   engine (`LiveNoteOn` / `LiveNoteOff`, on the live clock) to be absorbed. The audio side
//!   takes the performer's keys from the model at once (`AudioSide::performer_key`): a model
//!   note sounding a key the performer strikes is released, none starts on a key held; a key
//!   released in a block stays the performer's until the block's end, so a model note-on
//!   earlier in that block cannot overlap it.
//! - **Handover** (call and response): the hand-over key ([`keyswitch::handover_key`], B0 by
//!   default), CC 67 (soft pedal) pressed, the *Hand over* parameter going on, or a silence of
//!   *Handover silence* beats after a phrase (0 = off): `Command::Handover` as a new request,
//!   once per phrase. The performer's next note-on cancels the answer there and then
//!   (`Command::Cancel`: every sounding note of it is released at the block's start and nothing
//!   more of it plays); the engine hears the note too, rewinds and listens again.
//!
//! Like `process()`, nothing here allocates, locks, blocks, logs or touches files.
//!
//! [`keyswitch::handover_key`]: crate::keyswitch::handover_key

use staria_engine::live::LiveMode;
use staria_engine::live::silence::SilenceWatch;
use staria_engine::timing::{LiveClock, TransportFrame};
use staria_engine::{BlockTiming, Command, Event as EngineEvent, Outcome, RequestId};

use crate::Staria;
use crate::control::generated;
use crate::gui_state::LivePhase;

/// The engine's time for a handover (`staria bench --live`: p99 under 18 ms on one core to
/// sample the first note), as the accompaniment's reaction time (30 ms). An answer's time line
/// starts this long plus one block after the later of the gesture and the start of the block
/// that sends it ([`Staria::live_handover`]): whatever the block size, the block holding the
/// first note is processed at least this long after the engine got the handover.
pub const HANDOVER_LEAD_MS: f64 = 30.0;

/// What a running session was started with; a change starts it again.
#[derive(Debug, Clone, Copy, PartialEq)]
pub(crate) struct SessionKey {
    mode: LiveMode,
    response_bars: u8,
    /// Accompaniment: channel (0..15) and register; 0 in call and response.
    channel: u8,
    low: u8,
    high: u8,
    /// Accompaniment: consonant with the performer (`LiveSettings::consonant`); false in call
    /// and response.
    consonant: bool,
    model_generation: u64,
    snippets: u64,
}

impl SessionKey {
    fn with_snippets(self, snippets: u64) -> SessionKey {
        SessionKey { snippets, ..self }
    }
}

/// The live modes' state on the audio thread (fixed size, allocated with [`crate::control::Live`]).
pub(crate) struct LiveModes {
    clock: LiveClock,
    /// The live mode this block runs in (`None`: Sections, or bypassed).
    mode: Option<LiveMode>,
    /// This block on the engine's time line (the live clock in the live modes).
    block: BlockTiming,
    tempo_bpm: f64,
    silence: SilenceWatch,
    /// The session running on the engine and its request id.
    running: Option<SessionKey>,
    session_id: RequestId,
    /// Settings a session failed with: not started again until they change.
    refused: Option<SessionKey>,
    /// The answer being generated (0: none) and the latest answer (its tail may still sound).
    answer: RequestId,
    last_answer: RequestId,
    /// Handed over since the performer's last note-on (a silence does not hand over again).
    answered: bool,
    soft_pedal: bool,
    handover_param: bool,
    /// Performer keys released in this block: given back to the model at its end.
    released: [u64; 2],
    /// The audio side holds performer keys (given back when the live mode ends).
    took_keys: bool,
    /// Bumped whenever the snippets (the session's prompt) change.
    pub(crate) snippets: u64,
    /// Handovers sent (for tests and the window).
    pub(crate) handovers: u64,
    /// `LivePrompt`s sent to the running session (new snippets it took as its prompt); 0 at
    /// each `LiveStart`. The window shows it.
    pub(crate) prompt_changes: u64,
    /// The engine's retraction counters (`notes_retracted`, `retracted_after_playing`) at the
    /// last `LiveStart`: the window shows the session's own.
    retracted_base: [u64; 2],
}

impl Default for LiveModes {
    fn default() -> Self {
        Self {
            clock: LiveClock::new(0.0),
            mode: None,
            block: BlockTiming {
                start_beat: 0.0,
                end_beat: 0.0,
                samples: 0,
            },
            tempo_bpm: 120.0,
            silence: SilenceWatch::new(f64::NAN),
            running: None,
            session_id: 0,
            refused: None,
            answer: 0,
            last_answer: 0,
            answered: false,
            soft_pedal: false,
            handover_param: false,
            released: [0; 2],
            took_keys: false,
            snippets: 0,
            handovers: 0,
            prompt_changes: 0,
            retracted_base: [0; 2],
        }
    }
}

/// The engine's retraction counters: taken back before playing, after playing.
fn retracted(audio: &staria_engine::AudioSide) -> [u64; 2] {
    let s = audio.status();
    let load = |a: &std::sync::atomic::AtomicU64| a.load(std::sync::atomic::Ordering::Relaxed);
    [load(&s.notes_retracted), load(&s.retracted_after_playing)]
}

impl LiveModes {
    /// The frame the engine sees this block: the live clock's in a live mode (`mode`), the
    /// host's otherwise. The clock follows the host in every mode, so switching to a live mode
    /// carries on from the host's position.
    pub(crate) fn frame(
        &mut self,
        host: &TransportFrame,
        mode: Option<LiveMode>,
    ) -> TransportFrame {
        let live = self.clock.frame(host);
        self.mode = mode;
        let frame = if mode.is_some() { live } else { *host };
        self.block = frame.block();
        self.tempo_bpm = crate::timeline::sane_bpm(frame.tempo_bpm);
        frame
    }

    pub(crate) fn mode(&self) -> Option<LiveMode> {
        self.mode
    }

    /// The engine-time beat this block starts at.
    pub(crate) fn now(&self) -> f64 {
        self.block.start_beat
    }

    /// The engine-time beat of a sample offset in this block.
    pub(crate) fn beat_at(&self, offset: u32) -> f64 {
        let b = &self.block;
        if b.samples == 0 {
            return b.start_beat;
        }
        b.start_beat + (b.end_beat - b.start_beat) * offset.min(b.samples) as f64 / b.samples as f64
    }

    /// The time line jumped (a host jump or loop, a start, the switch between clocks): the
    /// silence being measured means nothing any more.
    pub(crate) fn relocated(&mut self) {
        self.silence.reset();
        self.answered = false;
    }

    /// The plugin was deactivated: the engine session is started afresh on the next block.
    pub(crate) fn deactivated(&mut self) {
        self.running = None;
        self.answer = 0;
        self.silence.reset();
        self.released = [0; 2];
        self.soft_pedal = false;
    }

    /// An engine event, as the audio side hands it out.
    pub(crate) fn on_event(&mut self, ev: &EngineEvent) {
        let EngineEvent::RequestDone {
            request_id,
            outcome,
        } = *ev
        else {
            return;
        };
        if request_id == self.answer && request_id != 0 {
            self.answer = 0;
        }
        if request_id == self.session_id && request_id != 0 && outcome.silences() {
            // The engine ended the session (a failure, a model swap): start it again only
            // when something changes.
            if outcome == Outcome::Failed {
                self.refused = self.running;
            }
            self.running = None;
        }
    }

    /// What the window shows.
    pub(crate) fn phase(&self, model_sounding: bool) -> LivePhase {
        match (self.mode, self.running) {
            (None, _) => LivePhase::Off,
            (Some(_), None) => LivePhase::Waiting,
            (Some(LiveMode::Accompany), Some(_)) => LivePhase::Accompanying,
            (Some(LiveMode::Respond), Some(_)) => {
                if self.answer != 0 || (self.last_answer != 0 && model_sounding) {
                    LivePhase::Responding
                } else {
                    LivePhase::Listening
                }
            }
        }
    }
}

impl Staria {
    /// The live mode the parameters ask for this block (`None`: Sections, or bypassed).
    pub(crate) fn live_mode_wanted(&self) -> Option<LiveMode> {
        if self.params.bypass.value() {
            None
        } else {
            self.params.mode.value().live()
        }
    }

    /// Once per block, after the transport: starts, restarts or stops the engine's session,
    /// and hands over on the *Hand over* parameter or a silence.
    pub(crate) fn step_live(&mut self, beats_per_bar: f64) {
        let handover_param = self.params.handover.value();
        let pressed = handover_param && !self.live.live_modes.handover_param;
        self.live.live_modes.handover_param = handover_param;
        let silence = self
            .params
            .handover_silence_beats()
            .unwrap_or(f64::INFINITY);
        self.live.live_modes.silence.set_beats(silence);
        let Some(engine) = self.engine.as_mut() else {
            return;
        };
        let lm = &mut self.live.live_modes;
        let Some(mode) = lm.mode else {
            if std::mem::take(&mut lm.took_keys) {
                // Sections again: generated notes may sound any key.
                for pitch in 0..128u8 {
                    engine.audio.performer_key(pitch, false, |_, _| {});
                }
                lm.released = [0; 2];
            }
            if lm.running.take().is_some() {
                engine.audio.send(Command::Cancel {
                    request_id: lm.session_id.max(lm.last_answer),
                });
                engine.audio.send(Command::LiveStop);
            }
            lm.answer = 0;
            return;
        };
        let (low, high) = self.params.accompaniment_range();
        let key = SessionKey {
            mode,
            response_bars: self.params.response_bars.value().clamp(1, 64) as u8,
            channel: match mode {
                LiveMode::Accompany => (self.params.acc_channel.value() - 1).clamp(0, 15) as u8,
                LiveMode::Respond => 0,
            },
            low: if mode == LiveMode::Accompany { low } else { 0 },
            high: if mode == LiveMode::Accompany { high } else { 0 },
            consonant: mode == LiveMode::Accompany && self.params.acc_consonant.value(),
            model_generation: engine
                .audio
                .status()
                .model_generation
                .load(std::sync::atomic::Ordering::Relaxed),
            snippets: lm.snippets,
        };
        let replaying = self.live.replay.section < crate::control::REPLAY_DONE;
        let ready = key.model_generation > 0 && !replaying && lm.refused != Some(key);
        if let Some(running) = lm.running
            && running != key
            && ready
            && running.with_snippets(key.snippets) == key
        {
            // Only the snippets changed: the session takes them as its prompt and goes on.
            if engine.audio.send(Command::LivePrompt) {
                lm.running = Some(key);
                lm.prompt_changes += 1;
            }
        }
        if lm.running != Some(key) && ready {
            let seed = match self.params.seed.value() {
                0 => self.live.next_seed() as u32,
                s => s as u32,
            };
            let Some(engine) = self.engine.as_mut() else {
                return;
            };
            let lm = &mut self.live.live_modes;
            let request_id = engine.audio.next_request_id();
            let bar = beats_per_bar.max(1e-3);
            let start = Command::LiveStart {
                request_id,
                mode,
                origin_beat: (lm.block.start_beat / bar).floor() * bar,
                response_bars: key.response_bars,
                seed,
                consonant: key.consonant,
            };
            if engine.audio.send(start) {
                lm.running = Some(key);
                lm.prompt_changes = 0;
                lm.retracted_base = retracted(&engine.audio);
                lm.session_id = request_id;
                lm.refused = None;
                lm.answer = 0;
                lm.answered = false;
            }
        }
        let lm = &mut self.live.live_modes;
        if mode != LiveMode::Respond || lm.running.is_none() {
            return;
        }
        if pressed {
            let at = lm.block.start_beat;
            self.live_handover(at);
        } else if let Some(at) = self
            .live
            .live_modes
            .silence
            .poll(self.live.live_modes.block.start_beat)
            && !self.live.live_modes.answered
        {
            self.live_handover(at);
        }
    }

    /// Call and response: the musician hands over at engine beat `beat` (ignored while an answer
    /// is being generated, or with no session). The answer's time line starts
    /// [`HANDOVER_LEAD_MS`] and one block after `beat`, or after this block's start if `beat`
    /// is earlier (a silence that ended in the previous block): the block its first note falls
    /// in is then processed at least [`HANDOVER_LEAD_MS`] after this one sent the handover, so
    /// the note is never due before the engine can have sampled and pushed it (one due earlier
    /// would sound late, at the start of a later block).
    pub(crate) fn live_handover(&mut self, beat: f64) {
        let lm = &mut self.live.live_modes;
        if lm.mode != Some(LiveMode::Respond) || lm.running.is_none() || lm.answer != 0 {
            return;
        }
        let Some(engine) = self.engine.as_mut() else {
            return;
        };
        let block = lm.block.end_beat - lm.block.start_beat;
        let beat =
            beat.max(lm.block.start_beat) + HANDOVER_LEAD_MS / 60_000.0 * lm.tempo_bpm + block;
        let request_id = engine.audio.next_request_id();
        if engine.audio.send(Command::Handover { request_id, beat }) {
            lm.answer = request_id;
            lm.last_answer = request_id;
            lm.answered = true;
            lm.handovers += 1;
        }
    }

    /// CC 67 (soft pedal) in call and response: pressing it hands over at `offset`.
    pub(crate) fn live_soft_pedal(&mut self, down: bool, offset: u32) {
        let lm = &mut self.live.live_modes;
        let press = down && !lm.soft_pedal;
        lm.soft_pedal = down;
        if press {
            let at = lm.beat_at(offset);
            self.live_handover(at);
        }
    }

    /// A performer's note-on at `offset` in a live mode: the model lets go of the key (and, in
    /// call and response, of its answer), the engine absorbs the note.
    pub(crate) fn live_note_on(&mut self, pitch: u8, velocity: u8, offset: u32) {
        let Some(engine) = self.engine.as_mut() else {
            return;
        };
        let live = &mut *self.live;
        let lm = &mut live.live_modes;
        let beat = lm.beat_at(offset);
        let answer_sounds = lm.answer != 0 || engine.audio.sounding_count() > 0;
        if lm.mode == Some(LiveMode::Respond) && lm.last_answer != 0 && answer_sounds {
            // The performer is back: the answer stops here, every note of it released.
            engine.audio.send(Command::Cancel {
                request_id: lm.last_answer,
            });
            lm.answer = 0;
            lm.last_answer = 0;
        }
        lm.answered = false;
        lm.took_keys = true;
        lm.silence.note_on(pitch, beat);
        lm.released[pitch as usize / 64] &= !(1u64 << (pitch % 64));
        let (out, tap) = (&mut live.out, &mut live.tap);
        engine
            .audio
            .performer_key(pitch, true, |off, ev| generated(out, tap, off, ev));
        engine.audio.send(Command::LiveNoteOn {
            pitch,
            velocity,
            beat,
        });
    }

    /// A performer's note-off at `offset` in a live mode.
    pub(crate) fn live_note_off(&mut self, pitch: u8, offset: u32) {
        let Some(engine) = self.engine.as_mut() else {
            return;
        };
        let lm = &mut self.live.live_modes;
        let beat = lm.beat_at(offset);
        lm.silence.note_off(pitch, beat);
        if engine.audio.performer_holds(pitch) {
            lm.released[pitch as usize / 64] |= 1u64 << (pitch % 64);
        }
        engine.audio.send(Command::LiveNoteOff { pitch, beat });
    }

    /// End of the block: keys the performer released go back to the model; the window learns
    /// what the live mode is doing.
    pub(crate) fn end_live_block(&mut self) {
        let lm = &mut self.live.live_modes;
        let mut sounding = false;
        if let Some(engine) = self.engine.as_mut() {
            for word in 0..2 {
                while lm.released[word] != 0 {
                    let bit = lm.released[word].trailing_zeros();
                    lm.released[word] &= !(1u64 << bit);
                    engine
                        .audio
                        .performer_key((word * 64) as u8 + bit as u8, false, |_, _| {});
                }
            }
            sounding = engine.audio.sounding_count() > 0;
            let [all, played] = retracted(&engine.audio);
            let [all_0, played_0] = lm.retracted_base;
            let count = |n: u64, base: u64| n.saturating_sub(base).min(u32::MAX as u64) as u32;
            let played = count(played, played_0);
            self.gui
                .publish_live_retracted(count(all, all_0).saturating_add(played), played);
        }
        self.gui.publish_live(lm.phase(sounding));
        self.gui
            .publish_live_prompts(lm.prompt_changes.min(u32::MAX as u64) as u32);
    }

    /// *Stop* in a live mode: what the model plays is silenced now and the session starts
    /// afresh on the next block.
    pub(crate) fn live_stop_output(&mut self) {
        let live = &mut *self.live;
        let lm = &mut live.live_modes;
        let Some(engine) = self.engine.as_mut() else {
            return;
        };
        let last = lm.session_id.max(lm.last_answer);
        if last != 0 {
            engine.audio.send(Command::Cancel { request_id: last });
        }
        let (out, tap) = (&mut live.out, &mut live.tap);
        engine
            .audio
            .all_notes_off(|off, ev| generated(out, tap, off, ev));
        lm.running = None;
        lm.answer = 0;
    }
}

#[cfg(test)]
mod prompt_tests;
#[cfg(test)]
mod tests;
