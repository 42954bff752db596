//! A minimal VST3 host for testing the bundled `Staria.vst3` the way a DAW loads it.
//!
//! It uses the `vst3` crate (0.3, the same bindings nice-plug's VST3 wrapper is built on) for the
//! interface definitions, and its `ComWrapper`/`Class` to implement the host-side objects (event
//! lists, parameter changes, a memory stream, the host application) instead of hand-written
//! vtables. The library is opened with `libloading`; `ModuleEntry` is called before
//! `GetPluginFactory` and `ModuleExit` after the last object is released, as the SDK's Linux
//! module loader does.
//!
//! Files: this one holds an instance and a session (setup, blocks, state, parameters);
//! `module.rs` the library and its factory; `objects.rs` the host-side COM objects.

use crate::{BLOCK, InNote, OutNote, SAMPLE_RATE};
use std::collections::HashMap;
use std::ffi::c_char;
use std::sync::Arc;
use std::time::{Duration, Instant};
use vst3::Steinberg::Vst::Event_::EventTypes_;
use vst3::Steinberg::Vst::ProcessContext_::StatesAndFlags_::{
    kBarPositionValid, kPlaying, kProjectTimeMusicValid, kTempoValid, kTimeSigValid,
};
use vst3::Steinberg::Vst::{
    AudioBusBuffers, AudioBusBuffers__type0, BusDirections_, BusInfo, Event, IAudioProcessor,
    IAudioProcessorTrait, IComponent, IComponentTrait, IEditController, IEditControllerTrait,
    IEventList, IParameterChanges, MediaTypes_, NoteOffEvent, NoteOnEvent, ParamID, ParameterInfo,
    ProcessContext, ProcessData, ProcessModes_, ProcessSetup, SymbolicSampleSizes_,
};
use vst3::Steinberg::{IBStream, IPluginBaseTrait, kResultOk};
use vst3::{ComPtr, ComWrapper};

mod module;
mod objects;

pub use module::{ClassInfo, Vst3Module};
pub use objects::{EventList, HostApplication, MemStream, ParamChanges, ParamQueue};

/// The folder under `Contents/` that holds the library on this machine.
#[cfg(target_arch = "x86_64")]
pub const ARCH_DIR: &str = "x86_64-linux";
#[cfg(target_arch = "aarch64")]
pub const ARCH_DIR: &str = "aarch64-linux";
#[cfg(not(any(target_arch = "x86_64", target_arch = "aarch64")))]
pub const ARCH_DIR: &str = "unknown-linux";

fn utf16_to_string(s: &[u16]) -> String {
    let end = s.iter().position(|&c| c == 0).unwrap_or(s.len());
    String::from_utf16_lossy(&s[..end])
}

fn cstr_to_string(s: &[c_char]) -> String {
    let bytes: Vec<u8> = s
        .iter()
        .take_while(|&&c| c != 0)
        .map(|&c| c as u8)
        .collect();
    String::from_utf8_lossy(&bytes).into_owned()
}

// ---------------------------------------------------------------------------------------------
// An instance
// ---------------------------------------------------------------------------------------------

/// A parameter as a VST3 host sees it.
#[derive(Debug, Clone, Copy)]
pub struct Vst3Param {
    pub id: ParamID,
    /// 0 = continuous; otherwise the plain range has `step_count + 1` values.
    pub step_count: i32,
    pub default_normalized: f64,
}

/// A bus as `getBusInfo` reports it.
#[derive(Debug, Clone, PartialEq)]
pub struct Bus {
    pub name: String,
    pub channels: i32,
    /// 0 = main, 1 = aux.
    pub bus_type: i32,
    pub flags: u32,
}

/// Every bus of the component, by media type and direction.
#[derive(Debug, Clone, PartialEq)]
pub struct Buses {
    pub audio_in: Vec<Bus>,
    pub audio_out: Vec<Bus>,
    pub event_in: Vec<Bus>,
    pub event_out: Vec<Bus>,
}

/// A created, initialized component (not active).
pub struct Vst3Instance {
    pub class: ClassInfo,
    pub component: ComPtr<IComponent>,
    pub processor: ComPtr<IAudioProcessor>,
    pub controller: Option<ComPtr<IEditController>>,
    /// Parameters by title (the generated MIDI CC parameters are left out).
    pub params: HashMap<String, Vst3Param>,
    _host: ComWrapper<HostApplication>,
    _module: Arc<Vst3Module>,
}

impl Vst3Instance {
    fn read_params(&mut self) {
        let Some(ctl) = &self.controller else { return };
        let n = unsafe { ctl.getParameterCount() };
        for i in 0..n {
            let mut info: ParameterInfo = unsafe { std::mem::zeroed() };
            if unsafe { ctl.getParameterInfo(i, &mut info) } != kResultOk {
                continue;
            }
            let title = utf16_to_string(&info.title);
            if title.starts_with("MIDI Ch. ") {
                continue;
            }
            self.params.insert(
                title,
                Vst3Param {
                    id: info.id,
                    step_count: info.stepCount,
                    default_normalized: info.defaultNormalizedValue,
                },
            );
        }
    }

    pub fn param(&self, name: &str) -> Vst3Param {
        *self.params.get(name).unwrap_or_else(|| {
            panic!(
                "no parameter named {name:?} (have {:?})",
                self.params.keys()
            )
        })
    }

    /// A parameter change in the CLAP tests' convention: `plain` counts steps from the
    /// parameter's minimum for stepped parameters (bool, int, enum), or is the normalized value
    /// of a continuous one.
    pub fn set(&self, name: &str, plain: f64) -> (ParamID, f64) {
        let p = self.param(name);
        let normalized = if p.step_count > 0 {
            plain / p.step_count as f64
        } else {
            plain
        };
        (p.id, normalized.clamp(0.0, 1.0))
    }

    fn bus_list(&self, media: i32, dir: i32) -> Vec<Bus> {
        let n = unsafe { self.component.getBusCount(media, dir) };
        (0..n)
            .map(|i| {
                let mut info: BusInfo = unsafe { std::mem::zeroed() };
                let r = unsafe { self.component.getBusInfo(media, dir, i, &mut info) };
                assert_eq!(r, kResultOk, "getBusInfo({media}, {dir}, {i})");
                assert_eq!(info.mediaType, media);
                assert_eq!(info.direction, dir);
                Bus {
                    name: utf16_to_string(&info.name),
                    channels: info.channelCount,
                    bus_type: info.busType,
                    flags: info.flags,
                }
            })
            .collect()
    }

    pub fn buses(&self) -> Buses {
        let (audio, event) = (MediaTypes_::kAudio as i32, MediaTypes_::kEvent as i32);
        let (input, output) = (
            BusDirections_::kInput as i32,
            BusDirections_::kOutput as i32,
        );
        Buses {
            audio_in: self.bus_list(audio, input),
            audio_out: self.bus_list(audio, output),
            event_in: self.bus_list(event, input),
            event_out: self.bus_list(event, output),
        }
    }

    /// The component state (`IComponent::getState`).
    pub fn get_state(&self) -> Vec<u8> {
        let stream = ComWrapper::new(MemStream::new(Vec::new()));
        let ptr = stream.to_com_ptr::<IBStream>().unwrap();
        let r = unsafe { self.component.getState(ptr.as_ptr()) };
        assert_eq!(r, kResultOk, "getState");
        stream.bytes()
    }

    /// The state's JSON (nice-plug writes plain JSON into a VST3 stream).
    pub fn state_json(&self) -> serde_json::Value {
        serde_json::from_slice(&self.get_state()).expect("VST3 state is JSON")
    }

    /// A persisted field of the state, parsed (like [`crate::field`]).
    pub fn field(&self, key: &str) -> serde_json::Value {
        let json = self.state_json();
        let text = json["fields"][key]
            .as_str()
            .unwrap_or_else(|| panic!("no persisted field {key}"));
        serde_json::from_str(text).expect("field JSON")
    }

    /// `setupProcessing` (48 kHz, 512, 32-bit, real time), `setActive(true)`,
    /// `setProcessing(true)`.
    pub fn start(&mut self) -> Vst3Session {
        let mut setup = ProcessSetup {
            processMode: ProcessModes_::kRealtime as i32,
            symbolicSampleSize: SymbolicSampleSizes_::kSample32 as i32,
            maxSamplesPerBlock: BLOCK as i32,
            sampleRate: SAMPLE_RATE,
        };
        unsafe {
            assert_eq!(
                self.processor
                    .canProcessSampleSize(SymbolicSampleSizes_::kSample32 as i32),
                kResultOk,
                "canProcessSampleSize(32)"
            );
            assert_eq!(
                self.processor.setupProcessing(&mut setup),
                kResultOk,
                "setupProcessing"
            );
            assert_eq!(self.component.setActive(1), kResultOk, "setActive(true)");
            assert_eq!(
                self.processor.setProcessing(1),
                kResultOk,
                "setProcessing(true)"
            );
        }
        Vst3Session::new(self.processor.clone())
    }

    /// `setProcessing(false)`, `setActive(false)`.
    pub fn stop(&mut self, session: Vst3Session) {
        drop(session);
        unsafe {
            assert_eq!(self.processor.setProcessing(0), kResultOk);
            assert_eq!(self.component.setActive(0), kResultOk);
        }
    }

    /// Polls the engine status in the state until `pred` holds, processing blocks meanwhile.
    pub fn wait_status(
        &self,
        s: &mut Vst3Session,
        timeout: Duration,
        pred: impl Fn(&serde_json::Value) -> bool,
    ) -> serde_json::Value {
        let deadline = Instant::now() + timeout;
        loop {
            let st = self.field("status");
            if pred(&st) {
                return st;
            }
            assert!(
                Instant::now() < deadline,
                "status never reached the expected state: {st}"
            );
            for _ in 0..4 {
                s.block(&[], &[]);
            }
        }
    }
}

impl Drop for Vst3Instance {
    fn drop(&mut self) {
        unsafe { self.component.terminate() };
    }
}

/// An active, processing component with a host transport (always 4/4).
pub struct Vst3Session {
    processor: ComPtr<IAudioProcessor>,
    pub playing: bool,
    pub tempo: f64,
    /// Samples since the song start.
    pub song_sample: u64,
    /// Every note the plugin sent since the session started.
    pub notes: Vec<OutNote>,
    /// Output events of other kinds (e.g. MIDI CC out), counted.
    pub other_events: usize,
    /// Output audio of the last block (two channels).
    pub last_audio: [Vec<f32>; 2],
    in_audio: [Vec<f32>; 2],
    out_audio: [Vec<f32>; 2],
    in_events: ComWrapper<EventList>,
    out_events: ComWrapper<EventList>,
    /// Pace blocks like an audio callback: the engine generates in real time.
    pub realtime: bool,
    paced: u64,
    clock: Instant,
}

impl Vst3Session {
    fn new(processor: ComPtr<IAudioProcessor>) -> Self {
        Self {
            processor,
            playing: false,
            tempo: 120.0,
            song_sample: 0,
            notes: Vec::new(),
            other_events: 0,
            last_audio: [vec![0.0; BLOCK], vec![0.0; BLOCK]],
            in_audio: [vec![0.0; BLOCK], vec![0.0; BLOCK]],
            out_audio: [vec![0.0; BLOCK], vec![0.0; BLOCK]],
            in_events: ComWrapper::new(EventList::with_capacity(256)),
            out_events: ComWrapper::new(EventList::with_capacity(4096)),
            realtime: false,
            paced: 0,
            clock: Instant::now(),
        }
    }

    pub fn set_realtime(&mut self, on: bool) {
        self.realtime = on;
        self.clock = Instant::now();
        self.paced = 0;
    }

    pub fn samples_per_beat(&self) -> f64 {
        SAMPLE_RATE * 60.0 / self.tempo
    }

    pub fn beat(&self) -> f64 {
        self.song_sample as f64 / self.samples_per_beat()
    }

    pub fn sample_of_beat(&self, beat: f64) -> u64 {
        (beat * self.samples_per_beat()).round() as u64
    }

    /// Fills the input audio (both channels) for the following blocks.
    pub fn set_input_audio(&mut self, f: impl Fn(usize) -> f32) {
        for ch in &mut self.in_audio {
            for (i, s) in ch.iter_mut().enumerate() {
                *s = f(i);
            }
        }
    }

    // The flags are `c_int` on Windows and `c_uint` elsewhere.
    #[allow(clippy::unnecessary_cast)]
    fn context(&self) -> ProcessContext {
        let mut c: ProcessContext = unsafe { std::mem::zeroed() };
        let beats = self.beat();
        c.state = (kTempoValid | kTimeSigValid | kProjectTimeMusicValid | kBarPositionValid) as u32;
        if self.playing {
            c.state |= kPlaying as u32;
        }
        c.sampleRate = SAMPLE_RATE;
        c.projectTimeSamples = self.song_sample as i64;
        c.continousTimeSamples = self.song_sample as i64;
        c.projectTimeMusic = beats;
        c.barPositionMusic = (beats / 4.0 + 1e-9).floor() * 4.0;
        c.tempo = self.tempo;
        c.timeSigNumerator = 4;
        c.timeSigDenominator = 4;
        c
    }

    /// Processes one block with these notes (MIDI channel `channel`, 0-based) and parameter
    /// changes (normalized, at offset 0). Returns the notes the plugin sent in this block.
    pub fn block_on(
        &mut self,
        channel: i16,
        notes: &[InNote],
        params: &[(ParamID, f64)],
    ) -> Vec<OutNote> {
        self.in_events.clear();
        let mut sorted = notes.to_vec();
        sorted.sort_by_key(|n| match n {
            InNote::On { offset, .. }
            | InNote::Off { offset, .. }
            | InNote::Cc { offset, .. }
            | InNote::Midi { offset, .. } => *offset,
        });
        for n in sorted {
            let mut e: Event = unsafe { std::mem::zeroed() };
            match n {
                InNote::On {
                    offset,
                    key,
                    velocity,
                } => {
                    e.sampleOffset = offset as i32;
                    e.r#type = EventTypes_::kNoteOnEvent as u16;
                    e.__field0.noteOn = NoteOnEvent {
                        channel,
                        pitch: key as i16,
                        tuning: 0.0,
                        velocity: velocity as f32,
                        length: 0,
                        noteId: -1,
                    };
                }
                InNote::Off { offset, key } => {
                    e.sampleOffset = offset as i32;
                    e.r#type = EventTypes_::kNoteOffEvent as u16;
                    e.__field0.noteOff = NoteOffEvent {
                        channel,
                        pitch: key as i16,
                        velocity: 0.0,
                        noteId: -1,
                        tuning: 0.0,
                    };
                }
                other => panic!("the VST3 host test sends notes only, not {other:?}"),
            }
            self.in_events.push(e);
        }
        self.out_events.clear();

        let changes = ComWrapper::new(ParamChanges {
            queues: params
                .iter()
                .map(|&(id, v)| {
                    ComWrapper::new(ParamQueue {
                        id,
                        points: vec![(0, v)],
                    })
                })
                .collect(),
        });
        let changes_ptr = changes.to_com_ptr::<IParameterChanges>().unwrap();
        let in_events = self.in_events.to_com_ptr::<IEventList>().unwrap();
        let out_events = self.out_events.to_com_ptr::<IEventList>().unwrap();
        let mut context = self.context();
        let mut in_ptrs: [*mut f32; 2] =
            [self.in_audio[0].as_mut_ptr(), self.in_audio[1].as_mut_ptr()];
        let mut out_ptrs: [*mut f32; 2] = [
            self.out_audio[0].as_mut_ptr(),
            self.out_audio[1].as_mut_ptr(),
        ];
        for ch in &mut self.out_audio {
            ch.fill(0.0);
        }
        let mut inputs = AudioBusBuffers {
            numChannels: 2,
            silenceFlags: 0,
            __field0: AudioBusBuffers__type0 {
                channelBuffers32: in_ptrs.as_mut_ptr(),
            },
        };
        let mut outputs = AudioBusBuffers {
            numChannels: 2,
            silenceFlags: 0,
            __field0: AudioBusBuffers__type0 {
                channelBuffers32: out_ptrs.as_mut_ptr(),
            },
        };
        let mut data = ProcessData {
            processMode: ProcessModes_::kRealtime as i32,
            symbolicSampleSize: SymbolicSampleSizes_::kSample32 as i32,
            numSamples: BLOCK as i32,
            numInputs: 1,
            numOutputs: 1,
            inputs: &mut inputs,
            outputs: &mut outputs,
            inputParameterChanges: changes_ptr.as_ptr(),
            outputParameterChanges: std::ptr::null_mut(),
            inputEvents: in_events.as_ptr(),
            outputEvents: out_events.as_ptr(),
            processContext: &mut context,
        };
        if self.realtime {
            let due = self.clock
                + Duration::from_secs_f64(self.paced as f64 * BLOCK as f64 / SAMPLE_RATE);
            let now = Instant::now();
            if due > now {
                std::thread::sleep(due - now);
            }
            self.paced += 1;
        }
        let r = unsafe { self.processor.process(&mut data) };
        assert_eq!(r, kResultOk, "process");
        self.last_audio = self.out_audio.clone();

        let base = self.song_sample;
        let mut got = Vec::new();
        for e in self.out_events.events() {
            let sample = base + e.sampleOffset.max(0) as u64;
            if e.r#type == EventTypes_::kNoteOnEvent as u16 {
                let n = unsafe { e.__field0.noteOn };
                got.push(OutNote {
                    sample,
                    on: true,
                    channel: n.channel as u16,
                    key: n.pitch as u16,
                    velocity: n.velocity as f64,
                });
            } else if e.r#type == EventTypes_::kNoteOffEvent as u16 {
                let n = unsafe { e.__field0.noteOff };
                got.push(OutNote {
                    sample,
                    on: false,
                    channel: n.channel as u16,
                    key: n.pitch as u16,
                    velocity: n.velocity as f64,
                });
            } else {
                self.other_events += 1;
            }
        }
        self.notes.extend_from_slice(&got);
        if self.playing {
            self.song_sample += BLOCK as u64;
        }
        got
    }

    /// [`Self::block_on`] on MIDI channel 1.
    pub fn block(&mut self, notes: &[InNote], params: &[(ParamID, f64)]) -> Vec<OutNote> {
        self.block_on(0, notes, params)
    }

    pub fn run_blocks(&mut self, n: usize) {
        for _ in 0..n {
            self.block(&[], &[]);
        }
    }

    /// Processes empty blocks until the block that holds `beat`; returns its offset in it.
    pub fn advance_to_beat(&mut self, beat: f64) -> u32 {
        assert!(self.playing, "advance_to_beat with the transport stopped");
        let target = self.sample_of_beat(beat);
        assert!(target >= self.song_sample, "beat {beat} is in the past");
        while target >= self.song_sample + BLOCK as u64 {
            self.block(&[], &[]);
        }
        (target - self.song_sample) as u32
    }

    pub fn run_until_beat(&mut self, beat: f64) {
        while self.beat() < beat {
            self.block(&[], &[]);
        }
    }
}
