//! An idle engine sleeps: no busy polling while there is nothing to do, yet a command or a
//! transport change wakes it at once. (Its own test binary: it measures the one engine thread.)

use staria_engine::messages::{Command, Event, Form, Outcome, Target};
use staria_engine::timing::TransportFrame;
use staria_engine::{Engine, EngineConfig, SectionLabel};
use std::time::{Duration, Instant};

/// CPU time (ns) and voluntary context switches (wake-ups) of the engine thread.
fn engine_thread_usage() -> (u64, u64) {
    let mut found = None;
    for task in std::fs::read_dir("/proc/self/task").unwrap() {
        let dir = task.unwrap().path();
        let comm = std::fs::read_to_string(dir.join("comm")).unwrap_or_default();
        if comm.trim() != "staria-engine" {
            continue;
        }
        assert!(found.is_none(), "one engine thread expected");
        // schedstat: time on the CPU (ns), time waiting, timeslices.
        let schedstat = std::fs::read_to_string(dir.join("schedstat")).unwrap();
        let cpu_ns: u64 = schedstat
            .split_whitespace()
            .next()
            .unwrap()
            .parse()
            .unwrap();
        let status = std::fs::read_to_string(dir.join("status")).unwrap();
        let switches: u64 = status
            .lines()
            .find_map(|l| l.strip_prefix("voluntary_ctxt_switches:"))
            .unwrap()
            .trim()
            .parse()
            .unwrap();
        found = Some((cpu_ns, switches));
    }
    found.expect("no staria-engine thread")
}

fn frame(playing: bool, pos_beats: f64) -> TransportFrame {
    TransportFrame {
        playing,
        pos_beats,
        tempo_bpm: 120.0,
        samples: 512,
        sample_rate: 48_000.0,
    }
}

#[test]
fn an_idle_engine_sleeps_and_wakes_on_commands() {
    // No model: nothing to generate or warm. The audio side exists but sends nothing.
    let (audio, control) = Engine::spawn(EngineConfig::default()).unwrap();
    std::thread::sleep(Duration::from_millis(300));
    let (cpu0, wakes0) = engine_thread_usage();
    let t0 = Instant::now();
    std::thread::sleep(Duration::from_secs(2));
    let (cpu1, wakes1) = engine_thread_usage();
    let secs = t0.elapsed().as_secs_f64();
    let cpu_share = (cpu1 - cpu0) as f64 / 1e9 / secs;
    let wakes_per_sec = (wakes1 - wakes0) as f64 / secs;
    eprintln!(
        "idle engine: {:.3}% of a core, {wakes_per_sec:.1} wake-ups/s",
        cpu_share * 100.0
    );
    assert!(
        cpu_share < 0.01,
        "idle engine used {:.2}% of a core",
        cpu_share * 100.0
    );
    // The 100 ms idle timeout: about 10 a second (a 1 ms poll would be about 1000).
    assert!(
        wakes_per_sec < 30.0,
        "{wakes_per_sec} wake-ups/s while idle"
    );
    drop(audio);
    drop(control);

    // With an idle timeout far longer than the test, only a wake-up can answer in time.
    let (mut audio, control) = Engine::spawn(EngineConfig {
        idle_timeout: Duration::from_secs(60),
        ..EngineConfig::default()
    })
    .unwrap();
    std::thread::sleep(Duration::from_millis(300));
    let answer = |audio: &mut staria_engine::AudioSide, id: u32| {
        let t = Instant::now();
        while t.elapsed() < Duration::from_secs(5) {
            let mut got = None;
            audio.process_block(&frame(false, 0.0), |_, ev| {
                if let Event::RequestDone {
                    request_id,
                    outcome,
                } = ev
                    && request_id == id
                {
                    got = Some(outcome);
                }
            });
            if let Some(o) = got {
                return (o, t.elapsed());
            }
            std::thread::sleep(Duration::from_millis(2));
        }
        panic!("no answer to request {id}");
    };
    let id = audio.next_request_id();
    assert!(audio.send(Command::Generate {
        request_id: id,
        target: Target::Section(SectionLabel::A),
        bars: 1,
        ts_num: 4,
        ts_den: 4,
        form: Form::new(),
        start_beat: 0.0,
        seed: 1,
    }));
    // No model: the request fails, at once.
    let (o, took) = answer(&mut audio, id);
    assert_eq!(o, Outcome::Failed);
    assert!(took < Duration::from_secs(4), "answered after {took:?}");
    // A transport start wakes it too (it re-times from the new epoch), and it sleeps again.
    audio.process_block(&frame(true, 0.0), |_, _| {});
    std::thread::sleep(Duration::from_millis(200));
    let (_, w0) = engine_thread_usage();
    std::thread::sleep(Duration::from_millis(500));
    let (_, w1) = engine_thread_usage();
    assert!(w1 - w0 <= 3, "{} wake-ups in 0.5 s while idle", w1 - w0);
    drop(audio);
    drop(control);

    // A generated request playing out: the thread wakes when an event is due to be pushed,
    // not every millisecond (it used to poll every `poll_interval` until the request was over,
    // and again after every loop of the host).
    let dir = tempfile::tempdir().unwrap();
    staria_test_support::tiny_checkpoint(dir.path(), "idle-test-tiny");
    let (mut audio, control) = Engine::spawn(EngineConfig {
        model_dir: Some(dir.path().to_path_buf()),
        // Generate it all while the transport stands.
        generate_ahead_secs: 60.0,
        ..EngineConfig::default()
    })
    .unwrap();
    let t = Instant::now();
    while control.snapshot().model_generation == 0 {
        assert!(t.elapsed() < Duration::from_secs(120), "model never loaded");
        std::thread::sleep(Duration::from_millis(10));
    }
    // Sparse music: one voice.
    control.params().set_max_polyphony(1);
    let id = audio.next_request_id();
    // Two bars from beat 0, asked for while stopped there.
    assert!(audio.send(Command::Generate {
        request_id: id,
        target: Target::Section(SectionLabel::A),
        bars: 2,
        ts_num: 4,
        ts_den: 4,
        form: Form::new(),
        start_beat: 0.0,
        seed: 1,
    }));
    let (o, _) = answer(&mut audio, id);
    let generated = control.snapshot().notes_generated;
    assert_eq!(o, Outcome::Finished, "{:?}", control.snapshot());
    // Play in real time from beat 0 (512-sample blocks at 48 kHz, 120 bpm) for 3 s: the
    // request's first six beats.
    let mut pos = 0.0;
    let mut notes = 0;
    let mut measure = None;
    let t0 = Instant::now();
    for block in 0.. {
        let due = t0 + Duration::from_secs_f64(block as f64 * 512.0 / 48_000.0);
        if let Some(wait) = due.checked_duration_since(Instant::now()) {
            std::thread::sleep(wait);
        }
        let f = frame(true, pos);
        audio.process_block(&f, |_, ev| {
            if let Event::Note(n) = ev
                && n.on
            {
                notes += 1;
            }
        });
        pos = f.block().end_beat;
        let elapsed = t0.elapsed();
        if measure.is_none() && elapsed >= Duration::from_secs(1) {
            measure = Some((engine_thread_usage(), Instant::now()));
        }
        if elapsed >= Duration::from_secs(3) {
            break;
        }
    }
    let ((cpu0, w0), m0) = measure.unwrap();
    let (cpu1, w1) = engine_thread_usage();
    let secs = m0.elapsed().as_secs_f64();
    let wakes_per_sec = (w1 - w0) as f64 / secs;
    eprintln!(
        "playing out: {notes} of {generated} notes, {wakes_per_sec:.1} wake-ups/s, {:.3}% of a core",
        (cpu1 - cpu0) as f64 / 1e9 / secs * 100.0
    );
    assert!(notes > 0, "nothing played");
    assert!(
        wakes_per_sec < 200.0,
        "{wakes_per_sec} wake-ups/s while a finished request plays out"
    );
    drop(audio);
    drop(control);
}
