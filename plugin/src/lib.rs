//! Staria as a CLAP/VST3 MIDI effect. Musicians record sections A..D as snippets (parameters or
//! keyswitches), aligned to the host's bars; the plugin saves them with the project, hands them to
//! the engine, and plays generated sections in time with the host. Audio and (optionally) MIDI
//! input pass through.
//!
//! `process()` never allocates, locks, blocks, logs or touches files: it moves fixed-size values
//! through preallocated tables, the engine's lock-free rings and atomics.
//!
//! Where things are:
//! - the nice-plug shape: this file (`Staria`, its `Plugin` impl and the `process` loop);
//! - what `process()` does with the host's input: `control` (capture, keyswitches, parameter
//!   edges and triggers, input sanitising and pass-through, the sustain pedal, replaying restored
//!   snippets), with [`snippets`], [`keyswitch`], [`timeline`] and [`midi_out`];
//! - the live modes (call and response, accompaniment): `live_control` (the live clock, the
//!   engine's live session, the performer's notes, handovers);
//! - the engine: [`engine_host`] (its thread, the model monitor, the status);
//! - the window: [`editor`], [`gui_state`] (what the audio thread publishes), `gui_link` (the
//!   window's buttons as the audio thread reads them), [`export`], [`model_info`];
//! - parameters and the saved state: [`params`], [`choices`], [`saved_state`].

pub mod choices;
mod control;
pub mod editor;
pub mod engine_host;
pub mod export;
mod gui_link;
pub mod gui_state;
pub mod keyswitch;
mod live_control;
pub mod midi_out;
pub mod model_info;
pub mod params;
pub mod saved_state;
pub mod snippets;
pub mod timeline;

use nice_plug::prelude::*;
use staria_engine::{Event as EngineEvent, TransportFrame};
use std::sync::Arc;

use control::{Edges, Live, clean_audio, generated, note_off};
use engine_host::EngineHost;
use gui_state::GuiShared;
use params::{StariaParams, StatusRecord};
use timeline::{HostReport, Timeline};

/// Positions further than this from where the previous block ended count as a transport jump.
const JUMP_TOLERANCE_BEATS: f64 = 1.0 / 64.0;

pub struct Staria {
    params: Arc<StariaParams>,
    /// What the audio thread and the editor window share (atomics, a ring).
    gui: Arc<GuiShared>,
    sample_rate: f64,
    live: Box<Live>,
    /// Started on the first activation, dropped (threads joined) with the plugin.
    engine: Option<EngineHost>,
}

impl Default for Staria {
    /// Cheap: hosts create instances just to scan them. No threads, no model.
    fn default() -> Self {
        let (gui, tap) = GuiShared::new();
        Self {
            params: Arc::new(StariaParams::default()),
            gui,
            sample_rate: 48_000.0,
            live: Box::new(Live::new(tap)),
            engine: None,
        }
    }
}

impl Plugin for Staria {
    const NAME: &'static str = "Staria";
    const VENDOR: &'static str = "Staria";
    const URL: &'static str = "https://example.invalid/staria";
    const EMAIL: &'static str = "dev@staria.invalid";
    const VERSION: &'static str = env!("CARGO_PKG_VERSION");

    // A stereo pass-through: some hosts (Ableton Live) refuse VST3 plugins without audio ports.
    const AUDIO_IO_LAYOUTS: &'static [AudioIOLayout] = &[AudioIOLayout {
        main_input_channels: NonZeroU32::new(2),
        main_output_channels: NonZeroU32::new(2),
        ..AudioIOLayout::const_default()
    }];

    const MIDI_INPUT: MidiConfig = MidiConfig::MidiCCs;
    const MIDI_OUTPUT: MidiConfig = MidiConfig::MidiCCs;
    const SAMPLE_ACCURATE_AUTOMATION: bool = false;

    type Editor = editor::StariaEditor;
    type SysExMessage = ();
    type BackgroundTask = ();

    fn params(&self) -> Arc<dyn Params> {
        self.params.clone()
    }

    fn filter_state(state: &mut PluginState) {
        saved_state::check_fields(state);
    }

    fn editor(&mut self, _async_executor: AsyncExecutor<Self>) -> Option<Self::Editor> {
        Some(editor::StariaEditor::new(
            self.params.clone(),
            self.gui.clone(),
        ))
    }

    fn activate(
        &mut self,
        _audio_io_layout: &AudioIOLayout,
        buffer_config: &BufferConfig,
        _context: &mut impl ActivateContext<Self>,
    ) -> bool {
        self.sample_rate = buffer_config.sample_rate as f64;
        // Parameters restored with the project are not edges.
        self.live.edges = Edges::read(&self.params);
        if self.engine.is_none() {
            // Hosts may activate repeatedly (state loads, buffer size changes): one engine.
            match EngineHost::start(self.params.clone(), self.gui.clone()) {
                Ok(engine) => {
                    self.engine = Some(engine);
                    self.live.replay.restart();
                }
                Err(e) => {
                    // Silent but running: the reason is in the status.
                    let text = format!("cannot start the engine: {e}");
                    nice_error!("Staria: {text}");
                    *self.params.status.write() = StatusRecord {
                        model: String::new(),
                        state: staria_engine::status::EngineState::Error,
                        last_error: text,
                    };
                }
            }
            let nanos = std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map(|d| d.as_nanos() as u64)
                .unwrap_or(1);
            self.live.rng = (nanos ^ (self as *const Self as u64)) | 1;
        }
        true
    }

    fn reset(&mut self) {
        self.live.was_playing = false;
    }

    fn deactivate(&mut self) {
        if self.live.recorder.section().is_some() {
            let end = self.live.last_end_beat;
            let grid = Timeline::from_host(HostReport {
                playing: true,
                pos_beats: Some(end),
                samples: 0,
                sample_rate: self.sample_rate,
                ..HostReport::default()
            });
            self.finish_capture(end, &grid);
        }
        // The host gets no more events until it processes again: remember what was sounding and
        // release it then.
        let live = &mut *self.live;
        if let Some(engine) = self.engine.as_mut() {
            let orphaned = &mut live.orphaned;
            engine.audio.reset(|_, ev| {
                if let EngineEvent::Note(n) = ev
                    && !n.on
                {
                    orphaned.press(n.channel, n.pitch);
                }
            });
        }
        live.release_on_resume = live.thru.count() > 0 || live.orphaned.count() > 0;
        live.live_modes.deactivated();
    }

    fn process(
        &mut self,
        buffer: &mut Buffer,
        _aux: &mut AuxiliaryBuffers,
        context: &mut impl ProcessContext<Self>,
    ) -> ProcessStatus {
        clean_audio(buffer);
        let samples = buffer.samples() as u32;
        let grid = self.timeline(context.transport(), samples);
        self.live.out.clear();
        self.gui_begin_block(&grid);

        if self.live.release_on_resume {
            self.live.release_on_resume = false;
            let live = &mut *self.live;
            let out = &mut live.out;
            live.thru
                .release_all(|ch, key| out.push(note_off(0, ch, key)));
            live.orphaned
                .release_all(|ch, key| out.push(note_off(0, ch, key)));
        }

        // Transport: the engine re-times on starts, stops and jumps (its notes are released).
        self.push_engine_params();
        let host_frame = TransportFrame {
            playing: grid.playing,
            pos_beats: grid.pos_beats,
            tempo_bpm: grid.tempo_bpm,
            samples,
            sample_rate: self.sample_rate,
        };
        // The live modes run on the host's transport while it plays, else the audio clock.
        let mode = self.live_mode_wanted();
        let frame = self.live.live_modes.frame(&host_frame, mode);
        if let Some(engine) = self.engine.as_mut() {
            let live = &mut *self.live;
            let (out, tap, lm) = (&mut live.out, &mut live.tap, &mut live.live_modes);
            let change = engine.audio.update_transport(&frame, |off, ev| {
                lm.on_event(&ev);
                generated(out, tap, off, ev)
            });
            if change.relocates() {
                lm.relocated();
            }
        }
        // A stop or a jump ends a capture where the music stopped.
        let live = &*self.live;
        let stopped = live.was_playing && !grid.playing;
        let jumped = live.was_playing
            && grid.playing
            && (grid.pos_beats - live.last_end_beat).abs() > JUMP_TOLERANCE_BEATS;
        if (stopped || jumped) && live.recorder.section().is_some() {
            let end = live.last_end_beat;
            self.finish_capture(end, &grid);
        }
        if grid.playing && !self.live.was_playing {
            self.live.form_pos = 0;
        }

        // A project (re)load hands its snippets over here, and on to the engine.
        {
            let live = &mut *self.live;
            if self.params.snippets.apply_restore(&mut live.scratch) {
                live.replay.restart();
            }
        }
        self.step_replay();

        let bypassed = self.params.bypass.value();
        if bypassed && !self.live.edges.bypass {
            if self.live.recorder.section().is_some() {
                self.finish_capture(grid.pos_beats, &grid);
            }
            self.stop_playback();
        }
        self.handle_param_edges(&grid, bypassed);
        self.handle_gui_requests(&grid, bypassed);
        self.step_live(grid.beats_per_bar());

        while let Some(ev) = context.next_event() {
            self.handle_input(ev, &grid, bypassed);
        }

        if let Some(engine) = self.engine.as_mut() {
            let live = &mut *self.live;
            let (out, tap, lm) = (&mut live.out, &mut live.tap, &mut live.live_modes);
            engine.audio.pop_due(&frame.block(), |off, ev| {
                lm.on_event(&ev);
                generated(out, tap, off, ev)
            });
        }
        self.end_live_block();

        for ev in self.live.out.as_slice() {
            // A full host queue drops the rest; nothing else can be done from here.
            if context.try_send_event(*ev).is_err() {
                break;
            }
        }

        self.publish_gui(&grid);
        let live = &mut *self.live;
        live.was_playing = grid.playing;
        if grid.playing {
            live.last_end_beat = grid.end_beat();
        }
        ProcessStatus::Normal
    }
}

impl ClapPlugin for Staria {
    /// Hosts save projects under this ID: it must never change (a test pins it).
    const CLAP_ID: &'static str = "org.staria.midi-generator";
    const CLAP_DESCRIPTION: Option<&'static str> = Some(
        "Captures section snippets and plays generated structured music in time with the host",
    );
    const CLAP_MANUAL_URL: Option<&'static str> = None;
    const CLAP_SUPPORT_URL: Option<&'static str> = None;
    const CLAP_FEATURES: &'static [ClapFeature] = &[ClapFeature::NoteEffect, ClapFeature::Utility];
}

impl Vst3Plugin for Staria {
    /// Hosts save projects under this class ID (not derived from the CLAP ID): it must never
    /// change (a test pins it).
    const VST3_CLASS_ID: [u8; 16] = *b"StariaMidiGenr01";
    const VST3_SUBCATEGORIES: &'static [Vst3SubCategory] =
        &[Vst3SubCategory::Instrument, Vst3SubCategory::Generator];
}

nice_export_clap!(Staria);
nice_export_vst3!(Staria);

#[cfg(test)]
mod tests {
    use super::*;
    /// Hosts create instances just to scan them: no engine (threads, model) until activated.
    #[test]
    fn default_starts_no_engine() {
        let plugins: Vec<Staria> = (0..8).map(|_| Staria::default()).collect();
        assert!(plugins.iter().all(|p| p.engine.is_none()));
        assert_eq!(plugins[0].params.status(), StatusRecord::default());
        assert_eq!(plugins[0].params.model_path(), None);
    }

    /// Hosts find saved instances by these IDs: changing either silently orphans every project.
    #[test]
    fn plugin_ids_are_stable() {
        assert_eq!(Staria::CLAP_ID, "org.staria.midi-generator");
        assert_eq!(&Staria::VST3_CLASS_ID, b"StariaMidiGenr01");
    }
}
