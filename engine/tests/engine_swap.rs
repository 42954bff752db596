//! Model hot-swap and failure handling on a running engine: a swap silences the old model's notes
//! and serves the next request with the new one; a failed load or a failing request leaves the
//! old model serving, the audio side silent and the reason in status.

mod engine_support;
use engine_support::assert_paired;

use staria_engine::messages::{Command, Event, Form, NoteEvent, Outcome, Target};
use staria_engine::timing::TransportFrame;
use staria_engine::{AudioSide, Engine, EngineConfig, EngineControl, EngineState, SectionLabel};
use std::sync::atomic::Ordering::Relaxed;
use std::time::{Duration, Instant};

struct Host {
    audio: AudioSide,
    control: EngineControl,
    pos: f64,
    notes: Vec<NoteEvent>,
    outcomes: Vec<(u32, Outcome)>,
}

impl Host {
    fn block(&mut self) {
        let frame = TransportFrame {
            playing: true,
            pos_beats: self.pos,
            tempo_bpm: 120.0,
            samples: 512,
            sample_rate: 48_000.0,
        };
        let (notes, outcomes) = (&mut self.notes, &mut self.outcomes);
        self.audio.process_block(&frame, |_, ev| match ev {
            Event::Note(n) => notes.push(n),
            Event::RequestDone {
                request_id,
                outcome,
            } => outcomes.push((request_id, outcome)),
            Event::Retract(_) => unreachable!("the audio side emits no retraction"),
        });
        self.pos = frame.block().end_beat;
        std::thread::sleep(Duration::from_millis(1));
    }

    fn run_while(&mut self, mut more: impl FnMut(&Host) -> bool) {
        let deadline = Instant::now() + Duration::from_secs(120);
        while more(self) {
            assert!(
                Instant::now() < deadline,
                "timed out: {:?}",
                self.control.snapshot()
            );
            self.block();
        }
    }

    fn request(&mut self, start_beat: f64, bars: u16) -> u32 {
        let request_id = self.audio.next_request_id();
        assert!(self.audio.send(Command::Generate {
            request_id,
            target: Target::Section(SectionLabel::A),
            bars,
            ts_num: 4,
            ts_den: 4,
            form: Form::parse("A").unwrap(),
            start_beat,
            seed: 3,
        }));
        request_id
    }

    fn outcome(&self, id: u32) -> Option<Outcome> {
        self.outcomes
            .iter()
            .find(|(r, _)| *r == id)
            .map(|(_, o)| *o)
    }

    fn wait_generation(&mut self, n: u64) {
        self.run_while(|h| h.control.status().model_generation.load(Relaxed) < n);
    }
}

#[test]
fn hot_swap_failed_load_and_failed_request() {
    let (a, b) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    staria_test_support::tiny_checkpoint(a.path(), "engine-test-tiny");
    staria_test_support::tiny_checkpoint(b.path(), "engine-test-tiny");
    let (mut audio, control) = Engine::spawn(EngineConfig {
        model_dir: Some(a.path().into()),
        ..EngineConfig::default()
    })
    .unwrap();
    audio.late_tolerance_beats = f64::INFINITY;
    let mut h = Host {
        audio,
        control,
        pos: 0.0,
        notes: Vec::new(),
        outcomes: Vec::new(),
    };
    h.block();
    h.wait_generation(1);

    // A long request is playing when the second model arrives.
    let first = h.request(h.pos + 1.0, 16);
    h.run_while(|h| h.audio.sounding_count() == 0);
    h.control.load_model(b.path());
    h.wait_generation(2);
    h.run_while(|h| {
        h.outcome(first).is_none()
            || h.outcome(first) == Some(Outcome::Finished) && h.audio.sounding_count() > 0
    });
    // Silenced however far it had got: interrupted mid-generation, or finished and cut.
    for _ in 0..50 {
        h.block();
    }
    assert_eq!(h.audio.sounding_count(), 0);
    let after_swap = h.notes.len();
    for _ in 0..400 {
        h.block();
    }
    assert!(
        h.notes[after_swap..].iter().all(|n| n.request_id != first),
        "old model's notes kept playing"
    );
    assert_paired(&h.notes);

    // The new model serves the next request.
    let second = h.request(h.pos + 0.5, 1);
    h.run_while(|h| h.outcome(second).is_none());
    assert_eq!(h.outcome(second), Some(Outcome::Finished));

    // A load that fails keeps the current model and says why.
    let missing = a.path().join("no-such-checkpoint");
    h.control.load_model(&missing);
    h.run_while(|h| h.control.status().state() != EngineState::Error);
    assert!(
        h.control
            .status()
            .last_error()
            .contains("no-such-checkpoint"),
        "{}",
        h.control.status().last_error()
    );
    assert_eq!(h.control.status().model_generation.load(Relaxed), 2);

    // A request the generator refuses (no pitch of the range is in the scale): failed, silent,
    // reported; the engine carries on.
    h.audio.params().set_pitch_range(61, 61);
    h.audio.params().set_key_mask(0b1010_1011_0101); // C major, which has no C#
    let bad = h.request(h.pos + 0.5, 1);
    h.run_while(|h| h.outcome(bad).is_none());
    assert_eq!(h.outcome(bad), Some(Outcome::Failed));
    assert!(
        h.control
            .status()
            .last_error()
            .contains("generation failed"),
        "{}",
        h.control.status().last_error()
    );
    assert!(!h.notes.iter().any(|n| n.request_id == bad));

    h.audio.params().set_pitch_range(0, 127);
    h.audio.params().set_key_mask(0xFFF);
    let good = h.request(h.pos + 0.5, 1);
    h.run_while(|h| h.outcome(good).is_none());
    assert_eq!(h.outcome(good), Some(Outcome::Finished));
    assert_eq!(h.control.status().state(), EngineState::Ready);
    for _ in 0..300 {
        h.block();
    }
    assert_paired(&h.notes);
    assert!(h.control.is_running());
}

/// Destroying an engine (the plugin instance that owns it) while a model loads returns at once:
/// the host's main thread does not wait for the load, which runs on and is then dropped.
#[test]
fn dropping_the_engine_during_a_slow_load_returns_at_once() {
    let dir = tempfile::tempdir().unwrap();
    staria_test_support::tiny_checkpoint(dir.path(), "engine-test-slow");
    let (audio, control) = Engine::spawn(EngineConfig::default()).unwrap();
    let (release, wait) = std::sync::mpsc::channel::<()>();
    let path = dir.path().to_path_buf();
    // A load that lasts until the test lets it end (a big checkpoint on a slow disk).
    control.load_with("a slow folder".into(), "slow".into(), move || {
        let _ = wait.recv();
        staria_engine::generate::Generator::load(&path, &candle_core::Device::Cpu)
    });
    let t = Instant::now();
    while control.snapshot().state != EngineState::Loading {
        assert!(t.elapsed() < Duration::from_secs(5), "never loading");
        std::thread::sleep(Duration::from_millis(1));
    }
    // Ends the load 1.5 s from now, whatever the drop does (a drop that waits for the load
    // then takes that long instead of hanging).
    let releaser = std::thread::spawn(move || {
        std::thread::sleep(Duration::from_millis(1500));
        let _ = release.send(());
    });
    let t0 = Instant::now();
    drop(control);
    let took = t0.elapsed();
    drop(audio);
    eprintln!("dropping the engine during a load took {took:?}");
    releaser.join().unwrap();
    assert!(
        staria_engine::swap::wait_for_detached_threads(Duration::from_secs(120)),
        "the loader never ended"
    );
    assert!(
        took < Duration::from_millis(100),
        "dropping the engine waited {took:?} for the load"
    );
}
