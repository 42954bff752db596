//! Staria as a CLAP/VST3 MIDI effect. Musicians record sections A..D as snippets (parameters or
//! keyswitches), aligned to the host's bars; the plugin saves them with the project, passes audio
//! and (optionally) its MIDI input through, and plays generated sections in time with the host.
//!
//! `process()` never allocates, locks, blocks, logs or touches files: it moves fixed-size values
//! through preallocated tables and atomics.

pub mod choices;
pub mod keyswitch;
pub mod midi_out;
pub mod params;
pub mod snippets;
pub mod timeline;

use nice_plug::midi::{Channel, Key, VoiceID};
use nice_plug::prelude::*;
use staria_models::SectionLabel;
use std::sync::Arc;

use keyswitch::KeyAction;
use midi_out::{Event, EventQueue, NoteTable};
use params::StariaParams;
use snippets::{Recorder, SnippetData};
use timeline::Timeline;

/// Positions further than this from where the previous block ended count as a transport jump.
const JUMP_TOLERANCE_BEATS: f64 = 1.0 / 64.0;

/// Last seen values of the edge-triggered parameters.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
struct Edges {
    arm: [bool; 4],
    clear: [bool; 4],
    play: bool,
    play_next: bool,
    continue_: bool,
    stop: bool,
    bypass: bool,
}

impl Edges {
    fn read(p: &StariaParams) -> Self {
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

/// The audio thread's state; every table is allocated once, in `Default`.
struct Live {
    recorder: Recorder,
    scratch: Box<SnippetData>,
    out: EventQueue,
    /// Input notes passed to the output and not yet released.
    thru: NoteTable,
    /// Keyswitch keys held down (their note-offs are consumed too).
    consumed: NoteTable,
    edges: Edges,
    last_captured: Option<SectionLabel>,
    /// The transport as the previous block left it.
    was_playing: bool,
    last_end_beat: f64,
    /// Notes were sounding when the plugin was deactivated: release them on the next block.
    release_on_resume: bool,
    /// Sections requested since the transport started, and the next position in the form.
    history: [SectionLabel; 16],
    history_len: usize,
    form_pos: usize,
}

impl Default for Live {
    fn default() -> Self {
        Self {
            recorder: Recorder::default(),
            scratch: Box::default(),
            out: EventQueue::default(),
            thru: NoteTable::default(),
            consumed: NoteTable::default(),
            edges: Edges::default(),
            last_captured: None,
            was_playing: false,
            last_end_beat: 0.0,
            release_on_resume: false,
            history: [SectionLabel::A; 16],
            history_len: 0,
            form_pos: 0,
        }
    }
}

pub struct Staria {
    params: Arc<StariaParams>,
    sample_rate: f64,
    live: Box<Live>,
}

impl Default for Staria {
    /// Cheap: hosts create instances just to scan them. No threads, no model.
    fn default() -> Self {
        Self {
            params: Arc::new(StariaParams::default()),
            sample_rate: 48_000.0,
            live: Box::default(),
        }
    }
}

fn velocity_u8(v: f32) -> u8 {
    (v * 127.0).round().clamp(1.0, 127.0) as u8
}

fn note_off(timing: u32, channel: u8, key: u8) -> Event {
    NoteEvent::NoteOff {
        timing,
        voice_id: VoiceID::Wildcard,
        channel: Channel::Number(channel),
        key: Key::Number(key),
        velocity: 0.0,
    }
}

/// Zeroes subnormal (and non-finite) samples so the output is clean.
fn clean_audio(buffer: &mut Buffer) {
    for channel in buffer.as_slice().iter_mut() {
        for s in channel.iter_mut() {
            if !s.is_normal() {
                *s = 0.0;
            }
        }
    }
}

impl Staria {
    pub fn params_handle(&self) -> Arc<StariaParams> {
        self.params.clone()
    }

    fn timeline(&self, transport: &Transport, samples: u32) -> Timeline {
        Timeline::from_host(
            transport.playing,
            transport.tempo,
            (transport.time_sig_numerator, transport.time_sig_denominator),
            transport.pos_beats(),
            transport.pos_seconds(),
            transport.bar_start_pos_beats(),
            samples,
            self.sample_rate,
        )
    }

    /// Ends the capture in progress (if any) at `end_beat` and publishes its snippet.
    fn finish_capture(&mut self, end_beat: f64, grid: &Timeline) {
        let live = &mut *self.live;
        let quantize = self.params.quantize.value();
        if let Some(done) = live
            .recorder
            .finish(end_beat, grid, quantize, &mut live.scratch)
        {
            self.params.snippets.publish(done.section, &live.scratch);
            live.last_captured = Some(done.section);
        }
    }

    fn start_capture(&mut self, section: SectionLabel, beat: f64, grid: &Timeline) {
        self.finish_capture(beat, grid);
        self.live.recorder.arm(section);
    }

    fn clear_section(&mut self, section: SectionLabel) {
        let live = &mut *self.live;
        if live.recorder.section() == Some(section) {
            live.recorder.disarm();
        }
        live.scratch.clear();
        self.params.snippets.publish(section, &live.scratch);
        if live.last_captured == Some(section) {
            live.last_captured = None;
        }
    }

    fn remember_section(&mut self, section: SectionLabel) {
        let live = &mut *self.live;
        if live.history_len < live.history.len() {
            live.history[live.history_len] = section;
            live.history_len += 1;
        } else {
            live.history.copy_within(1.., 0);
            live.history[live.history.len() - 1] = section;
        }
    }

    /// Performs a musician's action at host beat `beat`.
    fn perform(&mut self, action: KeyAction, beat: f64, grid: &Timeline) {
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
            KeyAction::Play(section) => self.remember_section(section),
            KeyAction::PlayNext => {
                let section = self.params.form.value().section_at(self.live.form_pos);
                self.live.form_pos += 1;
                self.remember_section(section);
            }
            KeyAction::Continue | KeyAction::Stop => {}
        }
    }

    /// Parameter edges, applied at the start of the block.
    fn handle_param_edges(&mut self, grid: &Timeline) {
        let now = Edges::read(&self.params);
        let before = self.live.edges;
        self.live.edges = now;
        let beat = grid.pos_beats;
        for (i, section) in SectionLabel::ALL.into_iter().enumerate() {
            if now.clear[i] && !before.clear[i] {
                self.clear_section(section);
            }
            if now.arm[i] && !before.arm[i] {
                self.start_capture(section, beat, grid);
            } else if !now.arm[i] && before.arm[i] && self.live.recorder.section() == Some(section)
            {
                self.finish_capture(beat, grid);
            }
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

    /// Routes one input event: keyswitches act, captured notes are recorded, the rest passes
    /// through (note-offs of passed notes always pass, so nothing hangs when pass-through is
    /// switched off mid-note).
    fn handle_input(&mut self, ev: Event, grid: &Timeline, bypassed: bool) {
        let thru = bypassed || self.params.thru.value();
        let ks_on = !bypassed && self.params.keyswitches.value();
        let ks_base = self.params.keyswitch_base.value().clamp(0, 127) as u8;
        let live = &mut *self.live;
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
                        live.out.push(ev);
                    }
                    return;
                };
                if ks_on && let Some(action) = keyswitch::action(k, ks_base) {
                    live.consumed.press(ch, k);
                    self.perform(action, grid.beat_at(timing), grid);
                    return;
                }
                if !bypassed && grid.playing {
                    live.recorder
                        .note_on(k, velocity_u8(velocity), grid.beat_at(timing));
                }
                if thru {
                    live.thru.press(ch, k);
                    live.out.push(ev);
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
                        live.out.push(ev);
                    }
                    return;
                };
                if live.consumed.release(ch, k) {
                    return;
                }
                live.recorder.note_off(k, grid.beat_at(timing));
                if live.thru.release(ch, k) || thru {
                    live.out.push(ev);
                }
            }
            _ => {
                if thru {
                    live.out.push(ev);
                }
            }
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

    type Editor = ();
    type SysExMessage = ();
    type BackgroundTask = ();

    fn params(&self) -> Arc<dyn Params> {
        self.params.clone()
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
        true
    }

    fn reset(&mut self) {
        let live = &mut *self.live;
        live.was_playing = false;
    }

    fn deactivate(&mut self) {
        let live = &mut *self.live;
        if live.recorder.section().is_some() {
            let end = live.last_end_beat;
            let grid = Timeline::from_host(
                true,
                None,
                (None, None),
                Some(end),
                None,
                None,
                0,
                self.sample_rate,
            );
            self.finish_capture(end, &grid);
        }
        self.live.release_on_resume = self.live.thru.count() > 0;
    }

    fn process(
        &mut self,
        buffer: &mut Buffer,
        _aux: &mut AuxiliaryBuffers,
        context: &mut impl ProcessContext<Self>,
    ) -> ProcessStatus {
        clean_audio(buffer);
        let grid = self.timeline(context.transport(), buffer.samples() as u32);
        self.live.out.clear();

        if self.live.release_on_resume {
            self.live.release_on_resume = false;
            let live = &mut *self.live;
            let out = &mut live.out;
            live.thru
                .release_all(|ch, key| out.push(note_off(0, ch, key)));
        }

        // Transport: a stop or a jump ends a capture where the music stopped.
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
            self.live.history_len = 0;
            self.live.form_pos = 0;
        }

        // A project (re)load hands its snippets over here.
        {
            let live = &mut *self.live;
            self.params.snippets.apply_restore(&mut live.scratch);
        }

        let bypassed = self.params.bypass.value();
        if bypassed && !self.live.edges.bypass && self.live.recorder.section().is_some() {
            self.finish_capture(grid.pos_beats, &grid);
        }
        self.handle_param_edges(&grid);

        while let Some(ev) = context.next_event() {
            self.handle_input(ev, &grid, bypassed);
        }

        for ev in self.live.out.as_slice() {
            // A full host queue drops the rest; nothing else can be done from here.
            if context.try_send_event(*ev).is_err() {
                break;
            }
        }

        let live = &mut *self.live;
        live.was_playing = grid.playing;
        if grid.playing {
            live.last_end_beat = grid.end_beat();
        }
        ProcessStatus::Normal
    }
}

impl ClapPlugin for Staria {
    const CLAP_ID: &'static str = "invalid.staria.plugin";
    const CLAP_DESCRIPTION: Option<&'static str> = Some(
        "Captures section snippets and plays generated structured music in time with the host",
    );
    const CLAP_MANUAL_URL: Option<&'static str> = None;
    const CLAP_SUPPORT_URL: Option<&'static str> = None;
    const CLAP_FEATURES: &'static [ClapFeature] = &[ClapFeature::NoteEffect, ClapFeature::Utility];
}

impl Vst3Plugin for Staria {
    const VST3_CLASS_ID: [u8; 16] = *b"StariaMidiGenr01";
    const VST3_SUBCATEGORIES: &'static [Vst3SubCategory] =
        &[Vst3SubCategory::Instrument, Vst3SubCategory::Generator];
}

nice_export_clap!(Staria);
nice_export_vst3!(Staria);
