//! The audio thread's control logic: what the plugin does with the host's input in `process()`
//! (capture into sections, keyswitches and parameter edges, triggers and form position, input
//! sanitising and pass-through, the sustain pedal) and the replay of restored snippets to the
//! engine; the state it keeps (`Live`, allocated once). `lib.rs` keeps the nice-plug shape: the
//! `Plugin` impl and its `process` loop, which call in here.
//!
//! Like `process()`, nothing here allocates, locks, blocks, logs or touches files.

use nice_plug::midi::{Channel, Key, VoiceID};
use nice_plug::prelude::*;
use staria_engine::{Command, Event as EngineEvent, Form, RequestId, Target};
use staria_models::SectionLabel;
use std::sync::Arc;

use crate::Staria;
use crate::gui_link;
use crate::gui_state::LogTap;
use crate::keyswitch::{self, KeyAction};
use crate::live_control::LiveModes;
use crate::midi_out::{Event, EventQueue, NoteTable};
use crate::params::StariaParams;
use crate::snippets::{Finished, Recorder, ReplayCursor, ReplayStep, SnippetData};
use crate::timeline::{HostReport, Timeline};

/// Commands a restored snippet may put into the engine's ring per block.
pub(crate) const REPLAY_BUDGET: usize = 64;

/// Last seen values of the edge-triggered parameters.
///
/// nice-plug 0.4.2 gives `process()` no way to change the plugin's own parameters
/// (`ProcessContext` has no `set_parameter`; it is a TODO in nice-plug-core's
/// `context/process.rs`); the only way that exists, `GuiContext::set_parameter`, is handed only
/// to an editor while the host has it open. So while the window is open it writes the Record
/// A..D parameters back when a keyswitch or a transport stop starts or ends a recording (see
/// `editor::sync_record_params`); with it closed they can go stale. The parameters therefore act
/// on their *changes* only: a stale "on" is harmless (off, then on again arms), an "on" edge for
/// the section already recording (the window's write-back) does not restart it, and a restored
/// project's values are not edges (see `activate`).
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub(crate) struct Edges {
    pub(crate) arm: [bool; 4],
    pub(crate) clear: [bool; 4],
    pub(crate) play: bool,
    pub(crate) play_next: bool,
    pub(crate) continue_: bool,
    pub(crate) stop: bool,
    pub(crate) bypass: bool,
}

impl Edges {
    pub(crate) fn read(p: &StariaParams) -> Self {
        Self {
            arm: [
                p.arm_a.value(),
                p.arm_b.value(),
                p.arm_c.value(),
                p.arm_d.value(),
            ],
            clear: [
                p.clear_a.value(),
                p.clear_b.value(),
                p.clear_c.value(),
                p.clear_d.value(),
            ],
            play: p.play.value(),
            play_next: p.play_next.value(),
            continue_: p.continue_.value(),
            stop: p.stop.value(),
            bypass: p.bypass.value(),
        }
    }
}

/// Handing the published snippets to the engine, a few commands per block.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum ReplayPhase {
    Clear,
    Arm,
    Notes,
}

/// `Replay::section` past the last section: nothing left to replay.
pub(crate) const REPLAY_DONE: usize = SectionLabel::ALL.len();

pub(crate) struct Replay {
    /// Index into `SectionLabel::ALL` of the section being replayed; `REPLAY_DONE`: idle.
    pub(crate) section: usize,
    pub(crate) phase: ReplayPhase,
    pub(crate) cursor: ReplayCursor,
    pub(crate) data: Box<SnippetData>,
}

impl Default for Replay {
    fn default() -> Self {
        Self {
            section: REPLAY_DONE,
            phase: ReplayPhase::Clear,
            cursor: ReplayCursor::default(),
            data: Box::default(),
        }
    }
}

impl Replay {
    pub(crate) fn restart(&mut self) {
        self.section = 0;
        self.phase = ReplayPhase::Clear;
    }
}

/// The audio thread's state; every table is allocated once, in `Default`.
pub(crate) struct Live {
    pub(crate) recorder: Recorder,
    pub(crate) scratch: Box<SnippetData>,
    pub(crate) out: EventQueue,
    /// Input notes passed to the output and not yet released.
    pub(crate) thru: NoteTable,
    /// Keyswitch keys held down (their note-offs are consumed too).
    pub(crate) consumed: NoteTable,
    /// Generated notes that were sounding when the plugin was deactivated.
    pub(crate) orphaned: NoteTable,
    pub(crate) edges: Edges,
    pub(crate) last_captured: Option<SectionLabel>,
    /// The transport as the previous block left it.
    pub(crate) was_playing: bool,
    pub(crate) last_end_beat: f64,
    /// Notes were sounding when the plugin was deactivated: release them on the next block.
    pub(crate) release_on_resume: bool,
    /// The next position in the form for "play next".
    pub(crate) form_pos: usize,
    /// The newest generate request sent, 0 = none.
    pub(crate) last_request: RequestId,
    pub(crate) replay: Replay,
    pub(crate) rng: u64,
    /// Generated notes and section requests, for the window's export (lock-free ring).
    pub(crate) tap: LogTap,
    /// The section requested last, for the window's lights and the form walk.
    pub(crate) section_playing: Option<gui_link::SectionPlay>,
    /// The sustain pedal (CC 64) is down: captured notes released meanwhile sound on until it
    /// comes up, as the musician heard them.
    pub(crate) pedal_down: bool,
    /// Captured keys released while the pedal was down (their note-off waits for pedal up).
    pub(crate) sustained: [bool; 128],
    /// The live modes (`live_control`).
    pub(crate) live_modes: LiveModes,
}

impl Live {
    pub(crate) fn new(tap: LogTap) -> Self {
        Self {
            tap,
            section_playing: None,
            recorder: Recorder::default(),
            scratch: Box::default(),
            out: EventQueue::default(),
            thru: NoteTable::default(),
            consumed: NoteTable::default(),
            orphaned: NoteTable::default(),
            edges: Edges::default(),
            last_captured: None,
            was_playing: false,
            last_end_beat: 0.0,
            release_on_resume: false,
            form_pos: 0,
            last_request: 0,
            pedal_down: false,
            sustained: [false; 128],
            live_modes: LiveModes::default(),
            replay: Replay::default(),
            rng: 0x9E37_79B9_7F4A_7C15,
        }
    }
}

impl Live {
    /// xorshift64*: seeds for "seed 0 = random" without a syscall on the audio thread.
    pub(crate) fn next_seed(&mut self) -> u64 {
        let mut x = self.rng;
        x ^= x >> 12;
        x ^= x << 25;
        x ^= x >> 27;
        self.rng = x;
        x.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }
}

pub(crate) fn velocity_u8(v: f32) -> u8 {
    (v * 127.0).round().clamp(1.0, 127.0) as u8
}

pub(crate) fn note_off(timing: u32, channel: u8, key: u8) -> Event {
    NoteEvent::NoteOff {
        timing,
        voice_id: VoiceID::Wildcard,
        channel: Channel::Number(channel),
        key: Key::Number(key),
        velocity: 0.0,
    }
}

/// A generated note as a host event (and into the export log).
pub(crate) fn generated(out: &mut EventQueue, tap: &mut LogTap, offset: u32, ev: EngineEvent) {
    if let EngineEvent::Note(n) = ev {
        tap.note(offset, &n);
        let (channel, key) = (Channel::Number(n.channel & 15), Key::Number(n.pitch & 127));
        out.push(if n.on {
            NoteEvent::NoteOn {
                timing: offset,
                voice_id: VoiceID::Wildcard,
                channel,
                key,
                velocity: n.velocity.clamp(1, 127) as f32 / 127.0,
            }
        } else {
            NoteEvent::NoteOff {
                timing: offset,
                voice_id: VoiceID::Wildcard,
                channel,
                key,
                velocity: 0.0,
            }
        });
    }
}

/// Makes a host's input event safe to use, or drops it. nice-plug copies raw MIDI data bytes as
/// they come (`NoteEvent::from_midi`), so a malformed message can carry a key, CC or program
/// number above 127 and a velocity or value above 1.0: an event naming a key, channel, controller
/// or program out of range is dropped (it would index past the note tables and means nothing to
/// the instrument downstream), and normalized values are clamped to 0..=1 (non-finite ones drop
/// the event).
pub(crate) fn sanitize(mut ev: Event) -> Option<Event> {
    fn key_ok(k: &Key) -> bool {
        k.number().is_none_or(|n| n <= 127)
    }
    fn channel_ok(c: &Channel) -> bool {
        c.number().is_none_or(|n| n <= 15)
    }
    fn unit(x: &mut f32) -> bool {
        *x = x.clamp(0.0, 1.0);
        x.is_finite()
    }
    let ok = match &mut ev {
        NoteEvent::NoteOn {
            channel,
            key,
            velocity,
            ..
        }
        | NoteEvent::NoteOff {
            channel,
            key,
            velocity,
            ..
        } => key_ok(key) && channel_ok(channel) && unit(velocity),
        NoteEvent::PolyPressure {
            channel,
            key,
            pressure,
            ..
        } => key_ok(key) && channel_ok(channel) && unit(pressure),
        NoteEvent::Choke { channel, key, .. }
        | NoteEvent::VoiceTerminated { channel, key, .. }
        | NoteEvent::PolyVolume { channel, key, .. }
        | NoteEvent::PolyPan { channel, key, .. }
        | NoteEvent::PolyTuning { channel, key, .. }
        | NoteEvent::PolyVibrato { channel, key, .. }
        | NoteEvent::PolyExpression { channel, key, .. }
        | NoteEvent::PolyBrightness { channel, key, .. } => key_ok(key) && channel_ok(channel),
        NoteEvent::MidiChannelPressure {
            channel, pressure, ..
        } => *channel <= 15 && unit(pressure),
        NoteEvent::MidiPitchBend { channel, value, .. } => *channel <= 15 && unit(value),
        NoteEvent::MidiCC {
            channel, cc, value, ..
        } => *channel <= 15 && *cc <= 127 && unit(value),
        NoteEvent::MidiProgramChange {
            channel, program, ..
        } => *channel <= 15 && *program <= 127,
        _ => true,
    };
    ok.then_some(ev)
}

/// Zeroes subnormal (and non-finite) samples so the output is clean.
pub(crate) fn clean_audio(buffer: &mut Buffer) {
    for channel in buffer.as_slice().iter_mut() {
        for s in channel.iter_mut() {
            if !s.is_normal() {
                *s = 0.0;
            }
        }
    }
}

impl Staria {
    /// The parameters and persisted fields (snippets, model path, status).
    pub fn params_handle(&self) -> Arc<StariaParams> {
        self.params.clone()
    }

    pub(crate) fn timeline(&self, transport: &Transport, samples: u32) -> Timeline {
        Timeline::from_host(HostReport {
            playing: transport.playing,
            tempo: transport.tempo,
            time_sig: (transport.time_sig_numerator, transport.time_sig_denominator),
            pos_beats: transport.pos_beats(),
            pos_seconds: transport.pos_seconds(),
            bar_start_beats: transport.bar_start_pos_beats(),
            samples,
            sample_rate: self.sample_rate,
        })
        .with_loop(transport.loop_range_beats())
    }

    pub(crate) fn send(&mut self, cmd: Command) -> bool {
        self.engine.as_mut().is_some_and(|e| e.audio.send(cmd))
    }

    /// Copies the sampling and constraint parameters into the engine's atomics.
    pub(crate) fn push_engine_params(&self) {
        if let Some(engine) = &self.engine {
            self.params.write_engine_params(engine.audio.params());
        }
    }

    /// Ends the capture in progress (if any) at `end_beat`, publishes its snippet and ends the
    /// engine's copy the same way.
    pub(crate) fn finish_capture(&mut self, end_beat: f64, grid: &Timeline) {
        if self.live.recorder.section().is_none() {
            return;
        }
        self.live.sustained = [false; 128];
        let quantize = self.params.quantize.value();
        // Keys still held (or sustained) end where the capture stopped, as in the saved snippet.
        let mut held = [false; 128];
        for p in self.live.recorder.held() {
            held[p as usize] = true;
        }
        let live = &mut *self.live;
        let done = live
            .recorder
            .finish(end_beat, grid, quantize, &mut live.scratch);
        if let Some(Finished {
            section,
            end_beat: snippet_end,
            ..
        }) = done
        {
            self.params.snippets.publish(section, &self.live.scratch);
            self.live.live_modes.snippets += 1;
            self.live.last_captured = Some(section);
            if self.live.recorder.dropped > 0 {
                self.gui
                    .report_capture_overflow(section, self.live.recorder.dropped);
            }
            let off_beat = end_beat.min(snippet_end);
            for (pitch, _) in held.iter().enumerate().filter(|(_, h)| **h) {
                self.send(Command::CaptureNoteOff {
                    section,
                    pitch: pitch as u8,
                    beat: off_beat,
                });
            }
        }
    }

    pub(crate) fn start_capture(&mut self, section: SectionLabel, beat: f64, grid: &Timeline) {
        self.finish_capture(beat, grid);
        self.live.recorder.arm(section);
    }

    pub(crate) fn clear_section(&mut self, section: SectionLabel) {
        let live = &mut *self.live;
        if live.recorder.section() == Some(section) {
            live.recorder.disarm();
            live.sustained = [false; 128];
        }
        live.scratch.clear();
        self.params.snippets.publish(section, &self.live.scratch);
        self.live.live_modes.snippets += 1;
        if self.live.last_captured == Some(section) {
            self.live.last_captured = None;
        }
        self.send(Command::ClearSection { section });
    }

    /// Asks the engine for `target`, starting on the next bar line the transport will play after
    /// `beat` (in a loop's last bar: the loop's first bar), or at `beat` with "play immediately"
    /// or while the transport is stopped.
    pub(crate) fn generate(&mut self, target: Target, beat: f64, grid: &Timeline) {
        // In the live modes the session has the model (a section request would end it).
        if self.engine.is_none() || self.live.live_modes.mode().is_some() {
            return;
        }
        let p = &self.params;
        let start_beat = if p.immediate.value() || !grid.playing {
            beat
        } else {
            grid.next_played_bar(beat)
        };
        let seed = match p.seed.value() {
            0 => self.live.next_seed(),
            s => s as u64,
        };
        let bars = p.bars.value().clamp(1, u16::MAX as i32) as u16;
        let form = Form::parse(p.form.value().letters()).unwrap_or_default();
        let Some(engine) = self.engine.as_mut() else {
            return;
        };
        let request_id = engine.audio.next_request_id();
        let cmd = Command::Generate {
            request_id,
            target,
            bars,
            ts_num: grid.ts_num,
            ts_den: grid.ts_den,
            form,
            start_beat,
            seed,
        };
        if engine.audio.send(cmd) {
            self.live.last_request = request_id;
            self.note_section_request(request_id, target, start_beat, bars, grid);
        }
    }

    /// Silences generated notes now and stops the request in flight.
    pub(crate) fn stop_playback(&mut self) {
        if self.live.live_modes.mode().is_some() {
            self.live_stop_output();
        }
        let last = self.live.last_request;
        let live = &mut *self.live;
        if let Some(engine) = self.engine.as_mut() {
            if last != 0 {
                engine.audio.send(Command::Cancel { request_id: last });
            }
            let (out, tap) = (&mut live.out, &mut live.tap);
            engine
                .audio
                .all_notes_off(|off, ev| generated(out, tap, off, ev));
        }
        self.forget_section_playing();
    }

    /// Performs a musician's action at host beat `beat`.
    pub(crate) fn perform(&mut self, action: KeyAction, beat: f64, grid: &Timeline) {
        match action {
            KeyAction::ToggleRecord(section) => {
                if self.live.recorder.section() == Some(section) {
                    self.finish_capture(beat, grid);
                } else {
                    self.start_capture(section, beat, grid);
                }
            }
            KeyAction::Clear => {
                if let Some(section) = self.live.recorder.section().or(self.live.last_captured) {
                    self.clear_section(section);
                }
            }
            KeyAction::Play(section) => self.generate(Target::Section(section), beat, grid),
            KeyAction::PlayNext => {
                let section = self.params.form.value().section_at(self.live.form_pos);
                self.live.form_pos += 1;
                self.generate(Target::Section(section), beat, grid);
            }
            KeyAction::Continue => self.generate(Target::Continue, beat, grid),
            KeyAction::Stop => self.stop_playback(),
        }
    }

    /// Parameter edges, applied at the start of the block.
    pub(crate) fn handle_param_edges(&mut self, grid: &Timeline, bypassed: bool) {
        let now = Edges::read(&self.params);
        let before = self.live.edges;
        self.live.edges = now;
        let beat = grid.pos_beats;
        for (i, section) in SectionLabel::ALL.into_iter().enumerate() {
            if now.clear[i] && !before.clear[i] {
                self.clear_section(section);
            }
            // Already recording this section (the window wrote the parameter back): no restart.
            if now.arm[i]
                && !before.arm[i]
                && !bypassed
                && self.live.recorder.section() != Some(section)
            {
                self.start_capture(section, beat, grid);
            } else if !now.arm[i] && before.arm[i] && self.live.recorder.section() == Some(section)
            {
                self.finish_capture(beat, grid);
            }
        }
        if bypassed {
            return;
        }
        if now.play && !before.play {
            self.perform(
                KeyAction::Play(self.params.section.value().label()),
                beat,
                grid,
            );
        }
        if now.play_next && !before.play_next {
            self.perform(KeyAction::PlayNext, beat, grid);
        }
        if now.continue_ && !before.continue_ {
            self.perform(KeyAction::Continue, beat, grid);
        }
        if now.stop && !before.stop {
            self.perform(KeyAction::Stop, beat, grid);
        }
    }

    pub(crate) fn record_note_on(&mut self, pitch: u8, velocity: u8, beat: f64, grid: &Timeline) {
        let Some(section) = self.live.recorder.section() else {
            return;
        };
        if pitch > 127 {
            return;
        }
        // A re-strike ends the sustained note here (the recorder and the engine both close it).
        self.live.sustained[pitch as usize] = false;
        let first = !self.live.recorder.has_notes();
        if !self.live.recorder.note_on(pitch, velocity, beat) {
            return;
        }
        if first {
            // The engine's snippet starts where the saved one will: on the bar line at or before
            // the first note when quantising.
            let origin_beat = if self.params.quantize.value() {
                grid.bar_floor(beat)
            } else {
                beat
            };
            self.send(Command::CaptureArm {
                section,
                origin_beat,
            });
        }
        self.send(Command::CaptureNoteOn {
            section,
            pitch,
            velocity,
            beat,
        });
    }

    pub(crate) fn record_note_off(&mut self, pitch: u8, beat: f64) {
        let Some(section) = self.live.recorder.section() else {
            return;
        };
        if pitch > 127 {
            return;
        }
        if self.live.pedal_down && self.live.recorder.is_held(pitch) {
            self.live.sustained[pitch as usize] = true;
            return;
        }
        if self.live.recorder.note_off(pitch, beat) {
            self.send(Command::CaptureNoteOff {
                section,
                pitch,
                beat,
            });
        }
    }

    /// Routes one input event: keyswitches act, captured notes are recorded, the rest passes
    /// through (note-offs of passed notes always pass, so nothing hangs when pass-through is
    /// switched off mid-note). Malformed events are dropped or clamped first ([`sanitize`]).
    pub(crate) fn handle_input(&mut self, ev: Event, grid: &Timeline, bypassed: bool) {
        let Some(ev) = sanitize(ev) else {
            return;
        };
        let thru = bypassed || self.params.thru.value();
        let ks_on = !bypassed && self.params.keyswitches.value();
        let ks_base = self.params.keyswitch_base.value().clamp(0, 127) as u8;
        match ev {
            NoteEvent::NoteOn {
                timing,
                channel,
                key,
                velocity,
                ..
            } => {
                let (Some(k), ch) = (key.number(), channel.number().unwrap_or(0)) else {
                    if thru {
                        self.live.out.push(ev);
                    }
                    return;
                };
                if ks_on && let Some(action) = keyswitch::action(k, ks_base) {
                    self.live.consumed.press(ch, k);
                    self.perform(action, grid.beat_at(timing), grid);
                    return;
                }
                let live = self.live.live_modes.mode().is_some();
                if live && ks_on && keyswitch::handover_key(ks_base) == Some(k) {
                    self.live.consumed.press(ch, k);
                    let beat = self.live.live_modes.beat_at(timing);
                    self.live_handover(beat);
                    return;
                }
                if !bypassed && grid.playing {
                    self.record_note_on(k, velocity_u8(velocity), grid.beat_at(timing), grid);
                }
                if live {
                    self.live_note_on(k, velocity_u8(velocity), timing);
                }
                if thru {
                    self.live.thru.press(ch, k);
                    self.live.out.push(ev);
                }
            }
            NoteEvent::NoteOff {
                timing,
                channel,
                key,
                ..
            }
            | NoteEvent::Choke {
                timing,
                channel,
                key,
                ..
            } => {
                let (Some(k), ch) = (key.number(), channel.number().unwrap_or(0)) else {
                    if thru {
                        self.live.out.push(ev);
                    }
                    return;
                };
                if self.live.consumed.release(ch, k) {
                    return;
                }
                self.record_note_off(k, grid.beat_at(timing));
                if self.live.live_modes.mode().is_some() {
                    self.live_note_off(k, timing);
                }
                if self.live.thru.release(ch, k) || thru {
                    self.live.out.push(ev);
                }
            }
            NoteEvent::MidiCC {
                timing,
                cc: 64,
                value,
                ..
            } => {
                self.sustain_pedal(value >= 0.5, grid.beat_at(timing));
                if thru {
                    self.live.out.push(ev);
                }
            }
            // Call and response: the soft pedal hands over (and is consumed: it is a gesture
            // for Staria there, not for the instrument).
            NoteEvent::MidiCC {
                timing,
                cc: 67,
                value,
                ..
            } if self.live.live_modes.mode() == Some(staria_engine::live::LiveMode::Respond) => {
                self.live_soft_pedal(value >= 0.5, timing);
            }
            _ => {
                if thru {
                    self.live.out.push(ev);
                }
            }
        }
    }

    /// Pedal up ends the captured notes it was sustaining.
    pub(crate) fn sustain_pedal(&mut self, down: bool, beat: f64) {
        self.live.pedal_down = down;
        if down {
            return;
        }
        for pitch in 0..128u8 {
            if std::mem::take(&mut self.live.sustained[pitch as usize]) {
                self.record_note_off(pitch, beat);
            }
        }
    }

    /// Hands the published snippets to the engine after a state restore or an engine start.
    pub(crate) fn step_replay(&mut self) {
        let Some(engine) = self.engine.as_mut() else {
            return;
        };
        let live = &mut *self.live;
        let r = &mut live.replay;
        let mut budget = REPLAY_BUDGET;
        while budget > 0 && r.section < REPLAY_DONE {
            let section = SectionLabel::ALL[r.section];
            if live.recorder.section() == Some(section) {
                // Being recorded right now: the live capture is newer.
                r.section += 1;
                r.phase = ReplayPhase::Clear;
                continue;
            }
            let cmd = match r.phase {
                ReplayPhase::Clear => Command::ClearSection { section },
                ReplayPhase::Arm => Command::CaptureRestore { section },
                ReplayPhase::Notes => match r.cursor.next(&r.data) {
                    Some(ReplayStep::On {
                        pitch,
                        velocity,
                        beat,
                    }) => Command::CaptureNoteOn {
                        section,
                        pitch,
                        velocity,
                        beat,
                    },
                    Some(ReplayStep::Off { pitch, beat }) => Command::CaptureNoteOff {
                        section,
                        pitch,
                        beat,
                    },
                    None => {
                        r.section += 1;
                        r.phase = ReplayPhase::Clear;
                        live.live_modes.snippets += 1;
                        continue;
                    }
                },
            };
            if !engine.audio.send(cmd) {
                if r.phase == ReplayPhase::Notes {
                    // The ring is full mid-snippet and the cursor has moved on: send the whole
                    // section again (it starts with a clear) on a later block.
                    r.phase = ReplayPhase::Clear;
                }
                return;
            }
            budget -= 1;
            match r.phase {
                ReplayPhase::Clear => {
                    self.params
                        .snippets
                        .try_read_published(section, &mut r.data);
                    if r.data.is_empty() {
                        r.section += 1;
                    } else {
                        r.phase = ReplayPhase::Arm;
                    }
                }
                ReplayPhase::Arm => {
                    r.cursor = ReplayCursor::default();
                    r.phase = ReplayPhase::Notes;
                }
                ReplayPhase::Notes => {}
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::gui_state::GuiShared;
    use crate::snippets;
    fn playing_grid() -> Timeline {
        Timeline::from_host(HostReport {
            playing: true,
            tempo: Some(120.0),
            time_sig: (Some(4), Some(4)),
            pos_beats: Some(4.0),
            pos_seconds: Some(2.0),
            bar_start_beats: Some(4.0),
            samples: 512,
            sample_rate: 48_000.0,
        })
    }

    /// More notes than a snippet holds: the first ones are kept and the overflow is published
    /// for the status (never dropped silently).
    #[test]
    fn an_overflowing_capture_keeps_the_first_notes_and_says_so() {
        let mut plugin = Staria::default();
        let grid = playing_grid();
        assert_eq!(plugin.gui.capture_overflow(), None);
        plugin.live.recorder.arm(SectionLabel::B);
        let extra = 37;
        for i in 0..snippets::MAX_SNIPPET_NOTES + extra {
            let key = 40 + (i % 40) as u8;
            plugin.handle_input(Event::from_midi(0, &[0x90, key, 90]).unwrap(), &grid, false);
            plugin.handle_input(Event::from_midi(0, &[0x80, key, 0]).unwrap(), &grid, false);
        }
        plugin.finish_capture(12.0, &grid);
        let overflow = plugin
            .gui
            .capture_overflow()
            .expect("the overflow is published");
        assert_eq!(overflow.section, SectionLabel::B);
        assert_eq!(overflow.dropped, extra as u32);
        let notice = overflow.notice();
        assert!(
            notice.contains("section B") && notice.contains("37"),
            "{notice}"
        );
        let saved = plugin.params.snippets.snapshot();
        let b = saved.get(SectionLabel::B).expect("B was captured");
        assert_eq!(b.notes.len(), snippets::MAX_SNIPPET_NOTES);
        // A second capture that fits says nothing new.
        plugin.live.recorder.arm(SectionLabel::C);
        plugin.handle_input(Event::from_midi(0, &[0x90, 60, 90]).unwrap(), &grid, false);
        plugin.finish_capture(16.0, &grid);
        assert_eq!(plugin.gui.capture_overflow(), Some(overflow));
    }

    /// Raw MIDI with data bytes above 127 (nice-plug passes them on as they come) is dropped or
    /// clamped on the whole input path: recording (with the pedal down), keyswitches and
    /// pass-through; nothing panics and nothing out of range reaches the output.
    #[test]
    fn malformed_midi_data_bytes_are_ignored() {
        let mut plugin = Staria::default();
        let grid = playing_grid();
        plugin.live.recorder.arm(SectionLabel::A);
        let raw: &[[u8; 3]] = &[
            [0x90, 200, 100], // note on, key 200
            [0x90, 128, 255], // note on, key 128, velocity 255
            [0xB0, 64, 127],  // pedal down (valid)
            [0x80, 200, 0],   // note off, key 200
            [0x90, 0, 0],     // note off (velocity 0), key 0 (valid)
            [0x90, 255, 0],   // note off (velocity 0), key 255
            [0xA0, 200, 200], // poly pressure, key 200
            [0xB0, 200, 10],  // CC 200
            [0xB0, 64, 200],  // pedal with value 200
            [0xB0, 64, 0],    // pedal up (valid)
            [0xE0, 255, 255], // pitch bend, both bytes out of range
            [0xC0, 200, 0],   // program 200
            [0xD0, 255, 0],   // channel pressure 255
            [0x90, 60, 200],  // valid key, velocity 200
            [0x80, 60, 0],    // its note-off
        ];
        for bytes in raw {
            let ev = Event::from_midi(0, bytes).expect("a channel message");
            plugin.handle_input(ev, &grid, false);
        }
        let out = plugin.live.out.as_slice();
        for ev in out {
            match *ev {
                NoteEvent::NoteOn { key, velocity, .. }
                | NoteEvent::NoteOff { key, velocity, .. } => {
                    assert!(key.number().is_some_and(|k| k <= 127), "{ev:?}");
                    assert!((0.0..=1.0).contains(&velocity), "{ev:?}");
                }
                NoteEvent::PolyPressure { .. } => panic!("malformed poly pressure passed"),
                NoteEvent::MidiCC { cc, value, .. } => {
                    assert!(cc <= 127 && (0.0..=1.0).contains(&value), "{ev:?}")
                }
                NoteEvent::MidiPitchBend { value, .. }
                | NoteEvent::MidiChannelPressure {
                    pressure: value, ..
                } => assert!((0.0..=1.0).contains(&value), "{ev:?}"),
                NoteEvent::MidiProgramChange { .. } => panic!("program 200 passed"),
                _ => {}
            }
        }
        // The valid note (60) passed through, on and off; nothing is left sounding.
        let sixty = out
            .iter()
            .filter(|e| {
                matches!(
                    e,
                    NoteEvent::NoteOn {
                        key: Key::Number(60),
                        ..
                    } | NoteEvent::NoteOff {
                        key: Key::Number(60),
                        ..
                    }
                )
            })
            .count();
        assert_eq!(sixty, 2);
        assert_eq!(plugin.live.thru.count(), 0);
        // The capture kept only the valid note.
        assert!(!plugin.live.recorder.is_held(60));
        assert!(plugin.live.recorder.has_notes());
    }

    fn note_on(key: u8) -> Event {
        NoteEvent::NoteOn {
            timing: 0,
            voice_id: VoiceID::Wildcard,
            channel: Channel::Number(0),
            key: Key::Number(key),
            velocity: 0.8,
        }
    }

    /// On an 88-key keyboard (A0..C8) the default keyswitches are its lowest whole octave,
    /// C1..B1: playable, consumed, with *clear* on B1 rather than at the keyboard's edge. The
    /// keys below (A0, A#0, B0) and above sound as played.
    #[test]
    fn default_keyswitches_are_c1_to_b1_on_an_88_key_piano() {
        let mut plugin = Staria::default();
        let grid = playing_grid();
        for key in (21..=23).chain(36..=108) {
            plugin.live.out.clear();
            plugin.handle_input(note_on(key), &grid, false);
            assert_eq!(
                plugin.live.out.len(),
                1,
                "piano key {key} did not pass through"
            );
            assert!(!plugin.live.consumed.is_on(0, key));
        }
        for key in 24..=35 {
            plugin.live.out.clear();
            plugin.handle_input(note_on(key), &grid, false);
            assert!(plugin.live.out.is_empty(), "keyswitch {key} passed through");
            assert!(plugin.live.consumed.is_on(0, key));
        }
        // C1 (24) is "record A", B1 (35) is clear.
        assert_eq!(
            keyswitch::action(24, 24),
            Some(KeyAction::ToggleRecord(SectionLabel::A))
        );
        assert_eq!(keyswitch::action(35, 24), Some(KeyAction::Clear));
    }

    #[test]
    fn random_seeds_differ() {
        let mut live = Live::new(GuiShared::new().1);
        let a = live.next_seed();
        let b = live.next_seed();
        assert_ne!(a, b);
        assert_ne!(a, 0);
    }
}
