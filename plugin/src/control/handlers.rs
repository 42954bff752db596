//! `Staria`'s audio-thread handlers, called from `process()`: sending to the engine, capture
//! (start, finish, clear), generate and stop, keyswitch actions and parameter edges, the host's
//! note and controller input, the sustain pedal, and the replay of restored snippets.

use nice_plug::prelude::*;
use staria_engine::{Command, Form, Target};
use staria_models::SectionLabel;
use std::sync::Arc;

use super::{Edges, REPLAY_BUDGET, REPLAY_DONE, ReplayPhase, generated, sanitize, velocity_u8};
use crate::Staria;
use crate::keyswitch::{self, KeyAction};
use crate::midi_out::Event;
use crate::params::StariaParams;
use crate::snippets::{Finished, ReplayCursor, ReplayStep};
use crate::timeline::{HostReport, Timeline};

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
