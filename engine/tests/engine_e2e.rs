//! End to end: a real (tiny, random-weight) checkpoint loaded by the engine thread, driven only
//! through the audio side's rings and a simulated host transport (48 kHz, 512-sample blocks).

mod engine_support;
use engine_support::assert_paired;

use staria_engine::engine_thread::{Engine, EngineConfig};
use staria_engine::messages::{Command, Event, Form, NoteEvent, Outcome, Target};
use staria_engine::swap::EngineControl;
use staria_engine::timing::{TransportChange, TransportFrame};
use staria_engine::{AudioSide, EngineState, SectionLabel};
use std::path::Path;
use std::time::{Duration, Instant};

const SR: f64 = 48_000.0;
const BLOCK: u32 = 512;
const TEMPO: f64 = 120.0;
/// Bar 2 (0-based) of a 4/4 song.
const START_BEAT: f64 = 8.0;
const BARS: u16 = 4;
const END_BEAT: f64 = START_BEAT + BARS as f64 * 4.0;
const PITCH_LOW: u8 = 48;
const PITCH_HIGH: u8 = 84;

struct Host {
    audio: AudioSide,
    control: EngineControl,
    pos: f64,
    playing: bool,
    notes: Vec<NoteEvent>,
    outcomes: Vec<(u32, Outcome)>,
}

impl Host {
    fn start(dir: &Path) -> Host {
        let config = EngineConfig {
            model_dir: Some(dir.to_path_buf()),
            ..EngineConfig::default()
        };
        let (mut audio, control) = Engine::spawn(config).expect("engine thread starts");
        // Compare notes by their scheduled beats: a slow debug build may deliver some late, and
        // they must still be played (at the block start) for the seed test to be meaningful.
        audio.late_tolerance_beats = f64::INFINITY;
        audio.params().set_pitch_range(PITCH_LOW, PITCH_HIGH);
        let deadline = Instant::now() + Duration::from_secs(120);
        while control
            .status()
            .model_generation
            .load(std::sync::atomic::Ordering::Relaxed)
            == 0
        {
            assert!(
                Instant::now() < deadline,
                "model never loaded: {:?}",
                control.snapshot()
            );
            assert_ne!(
                control.status().state(),
                EngineState::Error,
                "load failed: {}",
                control.status().last_error()
            );
            std::thread::sleep(Duration::from_millis(5));
        }
        Host {
            audio,
            control,
            pos: 0.0,
            playing: true,
            notes: Vec::new(),
            outcomes: Vec::new(),
        }
    }

    fn block(&mut self) -> TransportChange {
        let frame = TransportFrame {
            playing: self.playing,
            pos_beats: self.pos,
            tempo_bpm: TEMPO,
            samples: BLOCK,
            sample_rate: SR,
        };
        let (notes, outcomes) = (&mut self.notes, &mut self.outcomes);
        let change = self.audio.process_block(&frame, |_, ev| match ev {
            Event::Note(n) => notes.push(n),
            Event::RequestDone {
                request_id,
                outcome,
            } => outcomes.push((request_id, outcome)),
            Event::Retract(_) => unreachable!("the audio side emits no retraction"),
        });
        self.pos = frame.block().end_beat;
        // About ten times real time: the engine has to keep ahead of a moving playhead.
        std::thread::sleep(Duration::from_millis(1));
        change
    }

    fn send(&mut self, cmd: Command) {
        assert!(self.audio.send(cmd), "command ring full");
    }

    /// Plays section A (two bars of a C major figure) from beat 0 into the capture.
    fn capture_a(&mut self) {
        self.send(Command::CaptureArm {
            section: SectionLabel::A,
            origin_beat: 0.0,
        });
        for (i, p) in [60u8, 64, 67, 72, 67, 64, 62, 59].into_iter().enumerate() {
            let beat = i as f64;
            self.send(Command::CaptureNoteOn {
                section: SectionLabel::A,
                pitch: p,
                velocity: 90,
                beat,
            });
            self.send(Command::CaptureNoteOff {
                section: SectionLabel::A,
                pitch: p,
                beat: beat + 0.9,
            });
        }
        self.send(Command::CaptureArm {
            section: SectionLabel::B,
            origin_beat: 0.0,
        });
        self.send(Command::CaptureNoteOn {
            section: SectionLabel::B,
            pitch: 65,
            velocity: 80,
            beat: 0.0,
        });
        self.send(Command::CaptureNoteOff {
            section: SectionLabel::B,
            pitch: 65,
            beat: 2.0,
        });
    }

    fn request_b(&mut self, seed: u64) -> u32 {
        let request_id = self.audio.next_request_id();
        self.send(Command::Generate {
            request_id,
            target: Target::Section(SectionLabel::B),
            bars: BARS,
            ts_num: 4,
            ts_den: 4,
            form: Form::parse("AB").unwrap(),
            start_beat: START_BEAT,
            seed,
        });
        request_id
    }

    fn outcome(&self, id: u32) -> Option<Outcome> {
        self.outcomes
            .iter()
            .find(|(r, _)| *r == id)
            .map(|(_, o)| *o)
    }

    /// Runs blocks until `done` or the wall-clock limit.
    fn run_while(&mut self, mut more: impl FnMut(&Host) -> bool) {
        let deadline = Instant::now() + Duration::from_secs(180);
        while more(self) {
            assert!(
                Instant::now() < deadline,
                "timed out at beat {}: {:?}",
                self.pos,
                self.control.snapshot()
            );
            self.block();
        }
    }
}

/// With `warm`, the engine first prefills the prompt while idle (the request then reuses it).
fn generate_b(dir: &Path, seed: u64, warm: bool) -> Vec<(u8, bool, f64)> {
    let mut h = Host::start(dir);
    let warmed = |h: &Host| {
        h.control
            .status()
            .prompts_warmed
            .load(std::sync::atomic::Ordering::Relaxed)
    };
    h.audio.params().set_form(Form::parse("AB").unwrap());
    h.capture_a();
    // Read after the capture was sent: the engine only warms once capturing has been quiet.
    let before = warmed(&h);
    if warm {
        let deadline = Instant::now() + Duration::from_secs(60);
        while warmed(&h) == before {
            assert!(
                Instant::now() < deadline,
                "the engine never warmed the prompt"
            );
            std::thread::sleep(Duration::from_millis(5));
        }
    }
    let id = h.request_b(seed);
    h.run_while(|h| h.pos < END_BEAT + 1.0 || h.outcome(id).is_none());
    assert_eq!(
        h.outcome(id),
        Some(Outcome::Finished),
        "{:?}",
        h.control.snapshot()
    );
    assert_paired(&h.notes);
    assert_eq!(h.audio.sounding_count(), 0);
    assert!(h.notes.iter().any(|n| n.on), "the model generated no notes");
    for n in &h.notes {
        assert_eq!(n.request_id, id);
        assert!(
            n.beat >= START_BEAT - 1e-9,
            "{n:?} before the section start"
        );
        assert!(n.beat <= END_BEAT + 1e-9, "{n:?} after the bar limit");
        if n.on {
            assert!(n.beat < END_BEAT);
        }
        assert!(
            (PITCH_LOW..=PITCH_HIGH).contains(&n.pitch),
            "{n:?} outside the pitch range"
        );
    }
    let snap = h.control.snapshot();
    assert!(
        snap.tokens_generated > 0 && snap.notes_generated > 0,
        "{snap:?}"
    );
    assert_eq!(snap.dropped_commands, 0);
    assert_eq!(snap.model_name, "engine-test-tiny");
    h.notes.iter().map(|n| (n.pitch, n.on, n.beat)).collect()
}

#[test]
fn generates_section_b_in_time_and_reproducibly() {
    let dir = tempfile::tempdir().unwrap();
    staria_test_support::tiny_checkpoint(dir.path(), "engine-test-tiny");
    let first = generate_b(dir.path(), 42, false);
    let again = generate_b(dir.path(), 42, false);
    assert_eq!(first, again, "same seed, different notes");
    // A prompt prefilled while idle changes nothing but the wait.
    let warm = generate_b(dir.path(), 42, true);
    assert_eq!(first, warm, "the warmed prompt gave different notes");
}

#[test]
fn cancel_and_stop_leave_nothing_hanging() {
    let dir = tempfile::tempdir().unwrap();
    staria_test_support::tiny_checkpoint(dir.path(), "engine-test-tiny");
    let mut h = Host::start(dir.path());
    h.capture_a();

    // Cancel as soon as something sounds.
    let id = h.request_b(7);
    h.run_while(|h| h.audio.sounding_count() == 0 && h.outcome(id).is_none());
    h.send(Command::Cancel { request_id: id });
    h.block();
    assert_eq!(h.audio.sounding_count(), 0);
    h.run_while(|h| h.outcome(id).is_none());
    assert!(
        matches!(h.outcome(id), Some(Outcome::Cancelled | Outcome::Finished)),
        "{:?}",
        h.outcomes
    );
    let after_cancel = h.notes.len();
    for _ in 0..200 {
        h.block();
    }
    assert!(
        h.notes[after_cancel..].iter().all(|n| !n.on),
        "cancelled request kept playing"
    );
    assert_paired(&h.notes);

    // A new request from a loop back to the start; stop the transport while notes sound.
    h.pos = 0.0;
    assert_eq!(h.block(), TransportChange::Jumped);
    let id = h.request_b(8);
    h.run_while(|h| h.audio.sounding_count() == 0 && h.pos < END_BEAT);
    assert!(
        h.audio.sounding_count() > 0,
        "nothing sounded before the section end"
    );
    h.playing = false;
    assert_eq!(h.block(), TransportChange::Stopped);
    assert_eq!(h.audio.sounding_count(), 0);
    assert_paired(&h.notes);
    // Stopped: the engine pauses ahead of the playhead and plays nothing.
    let n = h.notes.len();
    for _ in 0..100 {
        h.block();
    }
    assert_eq!(h.notes.len(), n);
    // Start again: the request is re-timed from the playhead and plays out cleanly.
    h.playing = true;
    h.run_while(|h| h.pos < END_BEAT + 1.0 || h.outcome(id).is_none());
    assert_paired(&h.notes);
    assert_eq!(h.audio.sounding_count(), 0);
}

#[test]
fn bad_checkpoint_reports_and_stays_silent() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("config.json"), b"{ not json").unwrap();
    let config = EngineConfig {
        model_dir: Some(dir.path().to_path_buf()),
        ..EngineConfig::default()
    };
    let (mut audio, control) = Engine::spawn(config).unwrap();
    let deadline = Instant::now() + Duration::from_secs(30);
    while control.status().state() != EngineState::Error {
        assert!(
            Instant::now() < deadline,
            "no error reported: {:?}",
            control.snapshot()
        );
        std::thread::sleep(Duration::from_millis(5));
    }
    let err = control.status().last_error();
    assert!(
        err.contains(&dir.path().display().to_string()),
        "error does not name the folder: {err}"
    );
    // A request without a model fails cleanly and nothing plays.
    let id = audio.next_request_id();
    assert!(audio.send(Command::Generate {
        request_id: id,
        target: Target::Continue,
        bars: 2,
        ts_num: 4,
        ts_den: 4,
        form: Form::new(),
        start_beat: 0.0,
        seed: 1
    }));
    let mut outcome = None;
    let mut notes = 0;
    let mut pos = 0.0;
    let deadline = Instant::now() + Duration::from_secs(30);
    while outcome.is_none() {
        assert!(Instant::now() < deadline);
        let frame = TransportFrame {
            playing: true,
            pos_beats: pos,
            tempo_bpm: TEMPO,
            samples: BLOCK,
            sample_rate: SR,
        };
        audio.process_block(&frame, |_, ev| match ev {
            Event::Note(_) => notes += 1,
            Event::RequestDone { outcome: o, .. } => outcome = Some(o),
            Event::Retract(_) => unreachable!("the audio side emits no retraction"),
        });
        pos = frame.block().end_beat;
        std::thread::sleep(Duration::from_millis(1));
    }
    assert_eq!(outcome, Some(Outcome::Failed));
    assert_eq!(notes, 0);
    assert!(control.is_running());
}
