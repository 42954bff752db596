//! A small real CLAP host (clack-host) for testing and benchmarking the bundled `Staria.clap`.
//!
//! This crate deliberately does not link the plugin crate: it builds the bundle with the project's
//! own bundler (`cargo xtask bundle staria-plugin`), copies it to a private path (so a later
//! re-bundle cannot replace a library that is loaded) and loads it like a DAW would.
//!
//! Files: this one holds the CLAP host (`Instance`, `Session`) and the note checks; `bundle.rs`
//! finds and builds the bundles and runs scenarios in child processes; `vst3_host` is the VST3
//! host.

use clack_extensions::params::{ParamInfoBuffer, PluginParams};
use clack_extensions::state::PluginState;
use clack_host::events::event_types::{
    MidiEvent, NoteOffEvent, NoteOnEvent, ParamValueEvent, TransportEvent, TransportFlags,
};
use clack_host::events::spaces::CoreEventSpace;
use clack_host::events::{EventFlags, Match};
use clack_host::prelude::*;
use clack_host::utils::{BeatTime, SecondsTime};
use std::collections::HashMap;
use std::ffi::CStr;
use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

mod bundle;
pub mod scenario;
pub mod vst3_host;

pub const PLUGIN_ID: &CStr = c"org.staria.midi-generator"; // `tests::plugin_ids_are_stable` pins it in the plugin
pub const SAMPLE_RATE: f64 = 48_000.0;
pub const BLOCK: usize = 512;
pub use bundle::{
    GIVEN_CLAP_ENV, VST3_ENV, bundled_clap, bundled_vst3, given_clap, run_isolated,
    run_isolated_with_env, target_dir,
};

/// Host callbacks: the plugin may ask for a restart, a process call or a main-thread callback.
#[derive(Default)]
pub struct HostShared {
    pub restart_requested: AtomicBool,
    pub callback_requested: AtomicBool,
}

impl<'a> SharedHandler<'a> for HostShared {
    fn request_restart(&self) {
        self.restart_requested.store(true, Ordering::Relaxed);
    }
    fn request_process(&self) {}
    fn request_callback(&self) {
        self.callback_requested.store(true, Ordering::Relaxed);
    }
}

pub struct TestHost;

impl HostHandlers for TestHost {
    type Shared<'a> = HostShared;
    type MainThread<'a> = ();
    type AudioProcessor<'a> = ();
}

/// A parameter as the host sees it.
#[derive(Debug, Clone, Copy)]
pub struct ParamMeta {
    pub id: ClapId,
    pub min: f64,
    pub max: f64,
    pub default: f64,
}

/// A note the plugin sent, with its absolute sample position since the transport started.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct OutNote {
    pub sample: u64,
    pub on: bool,
    pub channel: u16,
    pub key: u16,
    pub velocity: f64,
}

/// A note to send, at a sample offset inside the next block.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum InNote {
    On {
        offset: u32,
        key: u16,
        velocity: f64,
    },
    Off {
        offset: u32,
        key: u16,
    },
    /// A MIDI control change on channel 1 (e.g. 64 = sustain pedal).
    Cc {
        offset: u32,
        cc: u8,
        value: u8,
    },
    /// A raw three-byte MIDI message, sent as it is (malformed data bytes included).
    Midi {
        offset: u32,
        data: [u8; 3],
    },
}

/// A loaded plugin instance.
pub struct Instance {
    pub entry: PluginEntry,
    pub instance: PluginInstance<TestHost>,
    pub params: HashMap<String, ParamMeta>,
}

impl Instance {
    /// Loads the bundle and creates one instance (not activated).
    pub fn load(clap: &Path) -> Self {
        // SAFETY: the bundle is our own plugin, built just now.
        let entry = unsafe { PluginEntry::load(clap) }.expect("load Staria.clap");
        Self::from_entry(entry)
    }

    pub fn from_entry(entry: PluginEntry) -> Self {
        let host_info = HostInfo::new(
            "staria-host-test",
            "Staria",
            "https://example.invalid",
            "0.1.0",
        )
        .unwrap();
        let mut instance = PluginInstance::<TestHost>::new(
            |_| HostShared::default(),
            |_| (),
            &entry,
            PLUGIN_ID,
            &host_info,
        )
        .expect("create a Staria instance");
        let mut params = HashMap::new();
        let handle = instance.plugin_handle();
        let ext: PluginParams = handle.get_extension().expect("params extension");
        let mut buf = ParamInfoBuffer::new();
        for i in 0..ext.count(&handle) {
            let info = ext.get_info(&handle, i, &mut buf).expect("param info");
            let name = String::from_utf8_lossy(info.name)
                .trim_end_matches('\0')
                .to_string();
            params.insert(
                name,
                ParamMeta {
                    id: info.id,
                    min: info.min_value,
                    max: info.max_value,
                    default: info.default_value,
                },
            );
        }
        Self {
            entry,
            instance,
            params,
        }
    }

    pub fn param(&self, name: &str) -> &ParamMeta {
        self.params.get(name).unwrap_or_else(|| {
            panic!(
                "no parameter named {name:?} (have {:?})",
                self.params.keys()
            )
        })
    }

    /// The plugin's state, as a host saves it into a project.
    pub fn save_state(&mut self) -> Vec<u8> {
        let handle = self.instance.plugin_handle();
        let ext: PluginState = handle.get_extension().expect("state extension");
        let mut bytes = Vec::new();
        ext.save(&handle, &mut bytes).expect("save state");
        bytes
    }

    pub fn load_state(&mut self, bytes: &[u8]) {
        self.try_load_state(bytes).expect("load state");
    }

    /// Loads a state the way a host does, returning the plugin's refusal instead of panicking.
    pub fn try_load_state(&mut self, bytes: &[u8]) -> Result<(), String> {
        let handle = self.instance.plugin_handle();
        let ext: PluginState = handle.get_extension().expect("state extension");
        ext.load(&handle, &mut &bytes[..])
            .map_err(|e| format!("{e:?}"))
    }

    /// The JSON part of a saved state (nice-plug writes an 8-byte length, then JSON).
    pub fn state_json(bytes: &[u8]) -> serde_json::Value {
        assert!(bytes.len() > 8, "state too short");
        let len = u64::from_le_bytes(bytes[..8].try_into().unwrap()) as usize;
        serde_json::from_slice(&bytes[8..8 + len]).expect("state JSON")
    }

    /// Activates at 48 kHz with 512-sample blocks and starts processing.
    pub fn start(&mut self) -> Session {
        let config = PluginAudioConfiguration {
            sample_rate: SAMPLE_RATE,
            min_frames_count: 1,
            max_frames_count: BLOCK as u32,
        };
        let processor = self.instance.activate(|_, _| (), config).expect("activate");
        let processor = processor.start_processing().expect("start processing");
        Session::new(processor)
    }

    pub fn stop(&mut self, session: Session) {
        let stopped = session.processor.stop_processing();
        self.instance.deactivate(stopped);
    }
}

/// An activated, processing instance with a host transport.
pub struct Session {
    pub processor: StartedPluginAudioProcessor<TestHost>,
    pub playing: bool,
    pub tempo: f64,
    pub ts: (u16, u16),
    /// Samples since the song start (the transport position).
    pub song_sample: u64,
    /// An active loop `[start, end)` in beats: the transport jumps back to its start after the
    /// block that reaches its end (choose block-aligned ends: at 120 bpm every 8 beats are 375
    /// blocks).
    pub loop_beats: Option<(f64, f64)>,
    /// Every note the plugin sent since the session started.
    pub notes: Vec<OutNote>,
    /// Output audio of the last block (two channels).
    pub last_audio: [Vec<f32>; 2],
    in_events: EventBuffer,
    out_events: EventBuffer,
    in_audio: [Vec<f32>; 2],
    out_audio: [Vec<f32>; 2],
    in_ports: AudioPorts,
    out_ports: AudioPorts,
    /// Blocks processed since real-time pacing started.
    paced: u64,
    /// Samples processed since the session started (steady time).
    steady: u64,
    /// Pace blocks like an audio callback (one block per 512/48000 s) instead of back to back:
    /// the engine generates in real time.
    pub realtime: bool,
    clock: Instant,
    /// Wall time of each `process()` call, when `timing` is on.
    pub timing: bool,
    pub process_times: Vec<Duration>,
}

impl Session {
    fn new(processor: StartedPluginAudioProcessor<TestHost>) -> Self {
        Self {
            processor,
            playing: false,
            tempo: 120.0,
            ts: (4, 4),
            song_sample: 0,
            loop_beats: None,
            notes: Vec::new(),
            last_audio: [vec![0.0; BLOCK], vec![0.0; BLOCK]],
            in_events: EventBuffer::with_capacity(256),
            out_events: EventBuffer::with_capacity(4096),
            in_audio: [vec![0.0; BLOCK], vec![0.0; BLOCK]],
            out_audio: [vec![0.0; BLOCK], vec![0.0; BLOCK]],
            in_ports: AudioPorts::with_capacity(2, 1),
            out_ports: AudioPorts::with_capacity(2, 1),
            paced: 0,
            steady: 0,
            realtime: false,
            clock: Instant::now(),
            timing: false,
            process_times: Vec::new(),
        }
    }

    /// Starts pacing blocks in real time from now.
    pub fn set_realtime(&mut self, on: bool) {
        self.realtime = on;
        self.clock = Instant::now();
        self.paced = 0;
    }

    pub fn samples_per_beat(&self) -> f64 {
        SAMPLE_RATE * 60.0 / self.tempo
    }

    pub fn beats_per_bar(&self) -> f64 {
        self.ts.0 as f64 * 4.0 / self.ts.1 as f64
    }

    /// The song position in beats.
    pub fn beat(&self) -> f64 {
        self.song_sample as f64 / self.samples_per_beat()
    }

    /// Samples from the song start to a beat.
    pub fn sample_of_beat(&self, beat: f64) -> u64 {
        (beat * self.samples_per_beat()).round() as u64
    }

    fn transport(&self) -> TransportEvent {
        let beats = self.beat();
        let bpb = self.beats_per_bar();
        let bar = (beats / bpb + 1e-9).floor();
        let mut flags = TransportFlags::HAS_TEMPO
            | TransportFlags::HAS_BEATS_TIMELINE
            | TransportFlags::HAS_SECONDS_TIMELINE
            | TransportFlags::HAS_TIME_SIGNATURE;
        if self.playing {
            flags |= TransportFlags::IS_PLAYING;
        }
        let (loop_start, loop_end) = self.loop_beats.unwrap_or((0.0, 0.0));
        if self.loop_beats.is_some() {
            flags |= TransportFlags::IS_LOOP_ACTIVE;
        }
        TransportEvent {
            header: EventHeader::new_core(0, EventFlags::empty()),
            flags,
            song_pos_beats: BeatTime::from_float(beats),
            song_pos_seconds: SecondsTime::from_float(self.song_sample as f64 / SAMPLE_RATE),
            tempo: self.tempo,
            tempo_inc: 0.0,
            loop_start_beats: BeatTime::from_float(loop_start),
            loop_end_beats: BeatTime::from_float(loop_end),
            loop_start_seconds: SecondsTime::from_int(0),
            loop_end_seconds: SecondsTime::from_int(0),
            bar_start: BeatTime::from_float(bar * bpb),
            bar_number: bar as i32,
            time_signature_numerator: self.ts.0,
            time_signature_denominator: self.ts.1,
        }
    }

    /// Fills the input audio (both channels) for the following blocks.
    pub fn set_input_audio(&mut self, f: impl Fn(usize) -> f32) {
        for ch in &mut self.in_audio {
            for (i, s) in ch.iter_mut().enumerate() {
                *s = f(i);
            }
        }
    }

    /// Processes one block with these notes and parameter changes (plain values, at offset 0).
    /// Returns the notes the plugin sent in this block.
    pub fn block(&mut self, notes: &[InNote], params: &[(ClapId, f64)]) -> Vec<OutNote> {
        self.in_events.clear();
        for &(id, value) in params {
            self.in_events
                .push(&ParamValueEvent::new(0, id, Pckn::match_all(), value));
        }
        let mut sorted = notes.to_vec();
        sorted.sort_by_key(|n| match n {
            InNote::On { offset, .. }
            | InNote::Off { offset, .. }
            | InNote::Cc { offset, .. }
            | InNote::Midi { offset, .. } => *offset,
        });
        for n in sorted {
            match n {
                InNote::On {
                    offset,
                    key,
                    velocity,
                } => self.in_events.push(&NoteOnEvent::new(
                    offset,
                    Pckn::new(0u16, 0u16, key, Match::All),
                    velocity,
                )),
                InNote::Cc { offset, cc, value } => self.in_events.push(&MidiEvent::new(
                    offset,
                    0,
                    [0xB0, cc.min(127), value.min(127)],
                )),
                InNote::Midi { offset, data } => {
                    self.in_events.push(&MidiEvent::new(offset, 0, data))
                }
                InNote::Off { offset, key } => self.in_events.push(&NoteOffEvent::new(
                    offset,
                    Pckn::new(0u16, 0u16, key, Match::All),
                    0.0,
                )),
            }
        }
        self.out_events.clear();
        let transport = self.transport();
        let in_audio = &mut self.in_audio;
        let input = self.in_ports.with_input_buffers([AudioPortBuffer {
            latency: 0,
            channels: AudioPortBufferType::f32_input_only(
                in_audio
                    .iter_mut()
                    .map(|b| InputChannel::variable(b.as_mut_slice())),
            ),
        }]);
        let mut output = self.out_ports.with_output_buffers([AudioPortBuffer {
            latency: 0,
            channels: AudioPortBufferType::f32_output_only(
                self.out_audio.iter_mut().map(|b| b.as_mut_slice()),
            ),
        }]);
        if self.realtime {
            let due = self.clock
                + Duration::from_secs_f64(self.paced as f64 * BLOCK as f64 / SAMPLE_RATE);
            let now = Instant::now();
            if due > now {
                std::thread::sleep(due - now);
            }
            self.paced += 1;
        }
        let t0 = Instant::now();
        self.processor
            .process(
                &input,
                &mut output,
                &self.in_events.as_input(),
                &mut self.out_events.as_output(),
                Some(self.steady),
                Some(&transport),
            )
            .expect("process");
        if self.timing {
            self.process_times.push(t0.elapsed());
        }
        let base = self.song_sample;
        let mut got = Vec::new();
        for ev in self.out_events.iter() {
            let t = ev.header().time() as u64;
            match ev.as_core_event() {
                Some(CoreEventSpace::NoteOn(e)) => got.push(OutNote {
                    sample: base + t,
                    on: true,
                    channel: e.channel().into_specific().unwrap_or(0),
                    key: e.key().into_specific().unwrap_or(0),
                    velocity: e.velocity(),
                }),
                Some(CoreEventSpace::NoteOff(e)) => got.push(OutNote {
                    sample: base + t,
                    on: false,
                    channel: e.channel().into_specific().unwrap_or(0),
                    key: e.key().into_specific().unwrap_or(0),
                    velocity: e.velocity(),
                }),
                _ => {}
            }
        }
        for (dst, src) in self.last_audio.iter_mut().zip(&self.out_audio) {
            dst.copy_from_slice(src);
        }
        self.steady += BLOCK as u64;
        if self.playing {
            self.song_sample += BLOCK as u64;
            if let Some((start, end)) = self.loop_beats
                && self.song_sample >= self.sample_of_beat(end)
            {
                self.song_sample = self.sample_of_beat(start);
            }
        }
        self.notes.extend_from_slice(&got);
        got
    }

    /// Runs plain blocks until the song position reaches `beat` (no-op if already there).
    pub fn run_until_beat(&mut self, beat: f64) {
        while self.playing && self.beat() < beat {
            self.block(&[], &[]);
        }
    }

    /// Runs `n` plain blocks.
    pub fn run_blocks(&mut self, n: usize) {
        for _ in 0..n {
            self.block(&[], &[]);
        }
    }

    /// The block offset and block count to reach a beat from the current position: plays blocks
    /// until the beat falls inside the next block and returns its offset there.
    pub fn advance_to_beat(&mut self, beat: f64) -> u32 {
        // A stopped transport never reaches the beat: fail instead of looping forever.
        assert!(
            self.playing,
            "advance_to_beat({beat}) with the transport stopped"
        );
        let target = self.sample_of_beat(beat);
        assert!(target >= self.song_sample, "beat {beat} is in the past");
        while target >= self.song_sample + BLOCK as u64 {
            self.block(&[], &[]);
        }
        (target - self.song_sample) as u32
    }
}

/// Every note-on in `notes` is followed by a note-off of the same channel and key, and nothing
/// is left sounding. Returns the number of note-ons.
pub fn assert_balanced(notes: &[OutNote]) -> usize {
    let mut sounding: HashMap<(u16, u16), usize> = HashMap::new();
    let mut ons = 0;
    for n in notes {
        let k = (n.channel, n.key);
        if n.on {
            ons += 1;
            *sounding.entry(k).or_default() += 1;
        } else if let Some(c) = sounding.get_mut(&k) {
            *c = c.saturating_sub(1);
        }
    }
    let hanging: Vec<_> = sounding.into_iter().filter(|(_, c)| *c > 0).collect();
    assert!(
        hanging.is_empty(),
        "notes left hanging (channel, key): {hanging:?}"
    );
    ons
}

/// Writes an untrained `tiny` decoder checkpoint (default tokenizer) into `dir`.
pub use staria_test_support::tiny_checkpoint;

/// A state with one persisted field replaced (its value as JSON), in nice-plug's CLAP layout.
pub fn with_field(state: &[u8], key: &str, value: &serde_json::Value) -> Vec<u8> {
    let mut json = Instance::state_json(state);
    json["fields"][key] = serde_json::Value::String(value.to_string());
    let body = serde_json::to_vec(&json).expect("state JSON");
    let mut out = (body.len() as u64).to_le_bytes().to_vec();
    out.extend_from_slice(&body);
    out
}

/// A persisted field of a saved state, parsed.
pub fn field(state: &[u8], key: &str) -> serde_json::Value {
    let json = Instance::state_json(state);
    let text = json["fields"][key]
        .as_str()
        .unwrap_or_else(|| panic!("no persisted field {key}"));
    serde_json::from_str(text).expect("field JSON")
}

impl Instance {
    /// Chooses a checkpoint folder the way a project does: through the plugin state.
    pub fn set_model_path(&mut self, dir: &Path) {
        let state = self.save_state();
        let path = serde_json::Value::String(dir.display().to_string());
        self.load_state(&with_field(&state, "model-path", &path));
    }

    /// The engine status the plugin keeps in its state.
    pub fn status(&mut self) -> serde_json::Value {
        field(&self.save_state(), "status")
    }

    /// Polls the status until `pred` holds (while `session`, if any, keeps processing).
    pub fn wait_status(
        &mut self,
        mut session: Option<&mut Session>,
        timeout: Duration,
        pred: impl Fn(&serde_json::Value) -> bool,
    ) -> serde_json::Value {
        let deadline = Instant::now() + timeout;
        loop {
            let st = self.status();
            if pred(&st) {
                return st;
            }
            assert!(
                Instant::now() < deadline,
                "status never reached the expected state: {st}"
            );
            match session.as_deref_mut() {
                Some(s) => s.block(&[], &[]),
                None => {
                    std::thread::sleep(Duration::from_millis(20));
                    Vec::new()
                }
            };
        }
    }
}
