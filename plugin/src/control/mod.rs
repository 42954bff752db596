//! The audio thread's control logic: what the plugin does with the host's input in `process()`
//! (capture into sections, keyswitches and parameter edges, triggers and form position, input
//! sanitising and pass-through, the sustain pedal) and the replay of restored snippets to the
//! engine; the state it keeps (`Live`, allocated once). `lib.rs` keeps the nice-plug shape: the
//! `Plugin` impl and its `process` loop, which call in here.
//!
//! Like `process()`, nothing here allocates, locks, blocks, logs or touches files.
//!
//! Files: this one holds the state (`Live`, `Edges`, `Replay`) and the free helpers (event
//! sanitising, note-offs, generated events); `handlers.rs` the `Staria` methods `process()` calls;
//! `tests.rs` the unit tests.

use nice_plug::midi::{Channel, Key, VoiceID};
use nice_plug::prelude::*;
use staria_engine::{Event as EngineEvent, RequestId};
use staria_models::SectionLabel;

use crate::gui_link;
use crate::gui_state::LogTap;
use crate::live_control::LiveModes;
use crate::midi_out::{Event, EventQueue, NoteTable};
use crate::params::StariaParams;
use crate::snippets::{Recorder, ReplayCursor, SnippetData};

mod handlers;
#[cfg(test)]
mod tests;

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
