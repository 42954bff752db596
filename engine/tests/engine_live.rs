//! Live modes through the engine thread: a tiny checkpoint loaded by the engine, driven only
//! through the audio side's rings and a simulated host transport in real time (48 kHz,
//! 512-sample blocks, 120 bpm unless a test changes the tempo).
//!
//! Every note-on the audio side plays is checked against the block it came in: one whose beat
//! lies before the block's start arrived late (the tests report those; the loaded machine they
//! run on decides how many, so only the timing tests with their own margins assert none).

use staria_engine::engine_thread::{Engine, EngineConfig};
use staria_engine::live::LiveMode;
use staria_engine::live::silence::SilenceWatch;
use staria_engine::messages::{Command, Event, NoteEvent, Outcome, RequestId};
use staria_engine::swap::EngineControl;
use staria_engine::timing::{LiveClock, TransportFrame};
use staria_engine::{AudioSide, EngineState};
use staria_models::SectionLabel;
use std::path::Path;
use std::sync::atomic::Ordering::Relaxed;
use std::time::{Duration, Instant};

const SR: f64 = 48_000.0;
const BLOCK: u32 = 512;
const TEMPO: f64 = 120.0;

struct Host {
    audio: AudioSide,
    control: EngineControl,
    clock: LiveClock,
    pos: f64,
    host_playing: bool,
    /// The host's tempo (the audio clock runs at it too while the host is stopped).
    tempo: f64,
    notes: Vec<NoteEvent>,
    /// Note-ons played after their beat: (the note, beats late).
    late: Vec<(NoteEvent, f64)>,
    outcomes: Vec<(u32, Outcome)>,
}

impl Host {
    fn start(dir: &Path) -> Host {
        let config = EngineConfig {
            model_dir: Some(dir.to_path_buf()),
            ..EngineConfig::default()
        };
        let (mut audio, control) = Engine::spawn(config).expect("engine thread starts");
        // Notes are checked by their scheduled beats: one a loaded machine delivers late must
        // still be played (at the block start), not dropped, for the checks to see it.
        audio.late_tolerance_beats = f64::INFINITY;
        let deadline = Instant::now() + Duration::from_secs(120);
        while control.status().model_generation.load(Relaxed) == 0 {
            assert!(Instant::now() < deadline, "model never loaded");
            assert_ne!(control.status().state(), EngineState::Error);
            std::thread::sleep(Duration::from_millis(5));
        }
        Host {
            audio,
            control,
            clock: LiveClock::new(0.0),
            pos: 0.0,
            host_playing: true,
            tempo: TEMPO,
            notes: Vec::new(),
            late: Vec::new(),
            outcomes: Vec::new(),
        }
    }

    /// One block in real time; the engine sees the host's transport, or the audio clock while
    /// the host is stopped.
    fn block(&mut self) {
        let host = TransportFrame {
            playing: self.host_playing,
            pos_beats: self.pos,
            tempo_bpm: self.tempo,
            samples: BLOCK,
            sample_rate: SR,
        };
        let frame = self.clock.frame(&host);
        let (notes, outcomes, late) = (&mut self.notes, &mut self.outcomes, &mut self.late);
        let block_start = frame.pos_beats;
        self.audio.process_block(&frame, |_, ev| match ev {
            Event::Note(n) => {
                if n.on && n.beat < block_start - 1e-9 {
                    late.push((n, block_start - n.beat));
                }
                notes.push(n)
            }
            Event::RequestDone {
                request_id,
                outcome,
            } => outcomes.push((request_id, outcome)),
            Event::Retract(_) => unreachable!("the audio side emits no retraction"),
        });
        if self.host_playing {
            self.pos = frame.block().end_beat;
        }
        std::thread::sleep(Duration::from_secs_f64(BLOCK as f64 / SR));
    }

    /// The beat the next block starts at (what the engine's playhead reads).
    fn now(&self) -> f64 {
        let mut clock = self.clock;
        clock
            .frame(&TransportFrame {
                playing: self.host_playing,
                pos_beats: self.pos,
                tempo_bpm: self.tempo,
                samples: 0,
                sample_rate: SR,
            })
            .pos_beats
    }

    /// A host on an engine with a tiny untrained model, and the folder holding the model.
    fn with_tiny_model() -> (tempfile::TempDir, Host) {
        let dir = tempfile::tempdir().unwrap();
        staria_test_support::tiny_checkpoint(dir.path(), "engine-live-tiny");
        let host = Host::start(dir.path());
        (dir, host)
    }

    /// Starts a live session at beat 0 (answers of `response_bars`, consonant on); its id.
    fn start_live(&mut self, mode: LiveMode, response_bars: u8, seed: u32) -> RequestId {
        let session = self.audio.next_request_id();
        self.send(Command::LiveStart {
            request_id: session,
            mode,
            origin_beat: 0.0,
            response_bars,
            seed,
            consonant: true,
        });
        session
    }

    fn send(&mut self, cmd: Command) {
        assert!(self.audio.send(cmd), "command ring full");
    }

    fn run_until_beat(&mut self, beat: f64) {
        while self.now() < beat {
            self.block();
        }
    }

    fn outcome(&self, id: u32) -> Option<Outcome> {
        self.outcomes
            .iter()
            .find(|(r, _)| *r == id)
            .map(|(_, o)| *o)
    }

    /// Plays `pitches` as eighth notes from the current beat; returns (pitch, on, off) beats.
    fn perform(&mut self, pitches: &[u8]) -> Vec<(u8, f64, f64)> {
        let mut played = Vec::new();
        for &p in pitches {
            let beat = self.now();
            // As the plugin does in `process()`: the audio side takes the key from the model at
            // once, the engine hears of the note through the ring.
            let notes = &mut self.notes;
            self.audio.performer_key(p, true, |_, ev| {
                if let Event::Note(n) = ev {
                    notes.push(n)
                }
            });
            self.send(Command::LiveNoteOn {
                pitch: p,
                velocity: 90,
                beat,
            });
            self.run_until_beat(beat + 0.45);
            let off = self.now();
            self.audio.performer_key(p, false, |_, _| {});
            self.send(Command::LiveNoteOff {
                pitch: p,
                beat: off,
            });
            played.push((p, beat, off));
            self.run_until_beat(beat + 0.5);
        }
        played
    }
}

/// Every note-on has a later (or simultaneous) note-off of the same key and request.
fn assert_paired(notes: &[NoteEvent]) {
    let mut down = std::collections::HashMap::new();
    for n in notes {
        let key = (n.channel, n.pitch);
        if n.on {
            assert!(
                down.insert(key, n.request_id).is_none(),
                "{n:?} struck twice"
            );
        } else {
            down.remove(&key);
        }
    }
    assert!(down.is_empty(), "left sounding: {down:?}");
}

/// Call, handover, the answer starts within a beat of the handover on the model's channel;
/// the performer plays again, the answer is cancelled and every note released at once; the
/// session listens again, a silence hands over again, and its end leaves nothing sounding.
#[test]
fn handover_answer_then_the_performer_returns_and_everything_is_released() {
    let (_dir, mut h) = Host::with_tiny_model();
    h.audio.params().set_channel(2);
    h.start_live(LiveMode::Respond, 4, 7);
    h.run_until_beat(0.1);
    h.perform(&[60, 62, 64, 65, 67, 65, 64, 62]);
    assert!(h.notes.is_empty(), "the model played while listening");
    let answer = h.audio.next_request_id();
    let handover = h.now();
    h.send(Command::Handover {
        request_id: answer,
        beat: handover,
    });
    let deadline = Instant::now() + Duration::from_secs(20);
    while h.audio.sounding_count() == 0 {
        assert!(
            Instant::now() < deadline,
            "no answer: {:?}",
            h.control.snapshot()
        );
        h.block();
    }
    let first = h.notes.iter().find(|n| n.on).copied().unwrap();
    assert_eq!(first.request_id, answer);
    assert_eq!(first.channel, 2);
    assert!(
        first.beat >= handover - 1e-9 && first.beat < handover + 1.0,
        "the answer starts at beat {} after a handover at {handover}",
        first.beat
    );
    // Let it play a little, then the performer comes back.
    let back_at = h.now() + 0.5;
    h.run_until_beat(back_at);
    let back = h.now();
    h.send(Command::LiveNoteOn {
        pitch: 72,
        velocity: 90,
        beat: back,
    });
    let deadline = Instant::now() + Duration::from_secs(5);
    while h.outcome(answer).is_none() {
        assert!(Instant::now() < deadline, "the answer was never ended");
        h.block();
    }
    assert_eq!(h.outcome(answer), Some(Outcome::Cancelled));
    assert_eq!(h.audio.sounding_count(), 0, "answer notes ring on");
    let ended = h.notes.len();
    h.run_until_beat(back + 4.0);
    assert!(
        h.notes[ended..].iter().all(|n| !n.on),
        "the answer played on after the performer returned: {:?}",
        &h.notes[ended..]
    );
    assert!(
        h.notes.iter().filter(|n| n.on).all(|n| n.beat < back + 0.1),
        "a note started after the performer's return"
    );
    let released = h.now();
    h.send(Command::LiveNoteOff {
        pitch: 72,
        beat: released,
    });
    // Listening again: a beat of silence hands over a second time, measured on the audio side
    // as the plugin does (`SilenceWatch`).
    let mut watch = SilenceWatch::new(1.0);
    watch.note_on(72, back);
    watch.note_off(72, released);
    let at = loop {
        if let Some(at) = watch.poll(h.now()) {
            break at;
        }
        h.block();
    };
    assert!((at - (released + 1.0)).abs() < 1e-9);
    let second = h.audio.next_request_id();
    h.send(Command::Handover {
        request_id: second,
        beat: at,
    });
    let deadline = Instant::now() + Duration::from_secs(20);
    while !h.notes.iter().any(|n| n.on && n.request_id == second) {
        assert!(Instant::now() < deadline, "no second answer");
        h.block();
    }
    h.send(Command::LiveStop);
    for _ in 0..20 {
        h.block();
    }
    assert_eq!(h.audio.sounding_count(), 0);
    assert_paired(&h.notes);
    let status = h.control.snapshot();
    assert!(status.last_error.is_empty(), "{status:?}");
}

/// The host stopped: the audio clock carries the accompaniment; its notes keep to the voice
/// (48..=60 here) on the model's channel and never sound a key while the performer holds it
/// (the melody dips into the voice's range).
#[test]
fn accompaniment_plays_on_the_audio_clock_with_the_transport_stopped() {
    let (_dir, mut h) = Host::with_tiny_model();
    h.host_playing = false;
    h.audio.params().set_channel(3);
    h.audio.params().set_pitch_range(48, 60);
    let session = h.start_live(LiveMode::Accompany, 1, 2);
    h.run_until_beat(0.2);
    let melody = [60u8, 62, 59, 57, 60, 55, 57, 59, 60, 64, 55, 57, 59, 60];
    let start = h.now();
    let played = h.perform(&melody);
    let end = h.now();
    h.send(Command::LiveStop);
    for _ in 0..20 {
        h.block();
    }
    assert!(end - start > 5.0, "the audio clock did not run");
    let status = h.control.status();
    println!(
        "accompaniment on the audio clock: {} note-ons retracted before playing, {} released \
         after playing (the race)",
        status.notes_retracted.load(Relaxed),
        status.retracted_after_playing.load(Relaxed)
    );
    let model: Vec<&NoteEvent> = h.notes.iter().filter(|n| n.on).collect();
    assert!(!model.is_empty(), "{:?}", h.control.snapshot());
    for n in &model {
        assert_eq!((n.request_id, n.channel), (session, 3));
        assert!((48..=60).contains(&n.pitch), "{n:?}");
        let off = h
            .notes
            .iter()
            .find(|m| !m.on && m.pitch == n.pitch && m.beat >= n.beat)
            .map_or(f64::INFINITY, |m| m.beat);
        for &(p, on, p_off) in &played {
            let overlap = n.beat.max(on) + 1e-9 < off.min(p_off);
            assert!(
                !(p == n.pitch && overlap),
                "model {n:?}..{off} with performer {p} {on}..{p_off}"
            );
        }
    }
    assert_eq!(h.audio.sounding_count(), 0);
    assert_paired(&h.notes);
}

/// The model's onsets are 10 ms steps of session time, which is beats at the tempo the
/// session started with (`live::tempo`): at 120 bpm every note-on lies on a 0.02-beat grid
/// from the origin, whatever the host's tempo did since. (A session that re-timed its notes in
/// real ms after a change to 84 bpm would put them on 0.014-beat steps.)
fn assert_on_reference_grid(notes: &[NoteEvent], origin: f64) {
    let step = 0.01 * TEMPO / 60.0;
    for n in notes.iter().filter(|n| n.on) {
        let steps = (n.beat - origin) / step;
        assert!(
            (steps - steps.round()).abs() < 1e-6,
            "{n:?} is off the session's beat grid ({steps} steps of {step} beat)"
        );
    }
}

fn report_late(what: &str, h: &Host) {
    let worst = h.late.iter().map(|l| l.1).fold(0.0, f64::max);
    println!(
        "{what}: {} model notes, {} late (worst {:.1} ms at the tempo then)",
        h.notes.iter().filter(|n| n.on).count(),
        h.late.len(),
        worst * 60_000.0 / h.tempo
    );
}

/// Accompaniment on the host transport while the host slows from 120 to 84 bpm mid-melody
/// (tempo automation): the model keeps playing after the change, and every note it plays,
/// before and after, lands on the session's beat grid: the look-ahead, the grid and the notes
/// follow the host's beats with nothing restarted.
#[test]
fn accompaniment_follows_a_tempo_change_on_the_host_transport() {
    let (_dir, mut h) = Host::with_tiny_model();
    h.audio.params().set_channel(3);
    h.audio.params().set_pitch_range(48, 60);
    let session = h.start_live(LiveMode::Accompany, 1, 1);
    h.run_until_beat(0.2);
    h.perform(&[64, 62, 60, 59, 57, 59, 60, 62]);
    let change = h.now();
    h.tempo = 84.0;
    h.perform(&[64, 65, 67, 65, 64, 62, 60, 59, 57, 55]);
    h.send(Command::LiveStop);
    for _ in 0..20 {
        h.block();
    }
    report_late("accompaniment across 120 -> 84 bpm", &h);
    let model: Vec<NoteEvent> = h.notes.iter().filter(|n| n.on).copied().collect();
    assert!(
        model.iter().any(|n| n.beat > change + 0.5),
        "the model stopped at the tempo change (beat {change}): {model:?}"
    );
    assert!(
        model
            .iter()
            .all(|n| n.request_id == session && n.channel == 3)
    );
    assert_on_reference_grid(&h.notes, 0.0);
    assert_eq!(h.audio.sounding_count(), 0);
    assert_paired(&h.notes);
    let status = h.control.snapshot();
    assert!(status.last_error.is_empty(), "{status:?}");
}

/// Call and response on the audio clock (host stopped) when the tempo is changed from 120 to
/// 150 bpm between the call and the handover: the answer's first note comes within the beat
/// after the handover and the answer keeps to its 4 bars counted in the new tempo's beats, on
/// the session's beat grid; the session's end releases what the finished answer still sounds.
#[test]
fn an_answer_after_a_tempo_change_on_the_audio_clock_keeps_its_bars_in_beats() {
    let (_dir, mut h) = Host::with_tiny_model();
    h.host_playing = false;
    h.audio.params().set_channel(2);
    h.start_live(LiveMode::Respond, 4, 6);
    h.run_until_beat(0.1);
    h.perform(&[60, 62, 64, 65, 67, 65, 64, 62]);
    h.tempo = 150.0;
    h.run_until_beat(h.now() + 0.5);
    let answer = h.audio.next_request_id();
    // As the plugin does: the answer's time line starts 30 ms and a block after the gesture.
    let handover = h.now() + (0.03 + BLOCK as f64 / SR) * h.tempo / 60.0;
    h.send(Command::Handover {
        request_id: answer,
        beat: handover,
    });
    let deadline = Instant::now() + Duration::from_secs(30);
    while h.outcome(answer).is_none() {
        assert!(
            Instant::now() < deadline,
            "the answer never ended: {:?}",
            h.control.snapshot()
        );
        h.block();
    }
    assert_eq!(h.outcome(answer), Some(Outcome::Finished));
    h.run_until_beat(h.now() + 1.0);
    h.send(Command::LiveStop);
    for _ in 0..20 {
        h.block();
    }
    report_late("answer at 150 bpm after a call at 120", &h);
    let ons: Vec<NoteEvent> = h.notes.iter().filter(|n| n.on).copied().collect();
    assert!(!ons.is_empty());
    assert!(ons.iter().all(|n| n.request_id == answer && n.channel == 2));
    assert!(
        ons[0].beat >= handover - 1e-9 && ons[0].beat < handover + 1.0,
        "the answer starts at beat {} after a handover at {handover}",
        ons[0].beat
    );
    assert!(
        ons.iter().all(|n| n.beat < handover + 16.0),
        "the answer runs past its 4 bars (16 beats from {handover}): {ons:?}"
    );
    assert_on_reference_grid(&h.notes, 0.0);
    assert_eq!(h.audio.sounding_count(), 0);
    assert_paired(&h.notes);
}

/// A snippet recorded during an accompaniment (capture commands beside the live ones, as the
/// plugin sends them) and then `LivePrompt`: the session goes on under the same request with
/// the new prompt (counted in the status), nothing is cancelled or left sounding, and the
/// model keeps playing after the change.
#[test]
fn a_snippet_recorded_while_accompanying_changes_the_prompt_and_the_session_goes_on() {
    let (_dir, mut h) = Host::with_tiny_model();
    h.audio.params().set_channel(3);
    h.audio.params().set_pitch_range(36, 60);
    let session = h.start_live(LiveMode::Accompany, 1, 5);
    h.run_until_beat(0.2);
    h.perform(&[64, 62, 60, 59]);
    let arm = h.now();
    h.send(Command::CaptureArm {
        section: SectionLabel::B,
        origin_beat: arm,
    });
    let phrase = [64u8, 65, 67, 65, 64, 62];
    for (pitch, on, off) in h.perform(&phrase) {
        // The plugin records what the performer plays: the same notes, to the capture.
        h.send(Command::CaptureNoteOn {
            section: SectionLabel::B,
            pitch,
            velocity: 90,
            beat: on,
        });
        h.send(Command::CaptureNoteOff {
            section: SectionLabel::B,
            pitch,
            beat: off,
        });
    }
    let changed = h.now();
    h.send(Command::LivePrompt);
    let deadline = Instant::now() + Duration::from_secs(20);
    while h.control.status().live_prompt_changes.load(Relaxed) == 0 {
        assert!(
            Instant::now() < deadline,
            "no prompt change: {:?}",
            h.control.snapshot()
        );
        h.block();
    }
    h.perform(&[
        60, 62, 64, 65, 67, 65, 64, 62, 60, 64, 67, 72, 67, 64, 62, 60,
    ]);
    let played_on = h
        .notes
        .iter()
        .filter(|n| n.on && n.beat > changed + 1.0)
        .count();
    println!("{played_on} model notes from a beat after the prompt change");
    assert_eq!(h.outcome(session), None, "the session ended at the change");
    h.send(Command::LiveStop);
    for _ in 0..20 {
        h.block();
    }
    report_late("accompaniment across a prompt change", &h);
    assert!(played_on > 0, "the model stopped at the prompt change");
    assert_eq!(h.control.status().live_prompt_changes.load(Relaxed), 1);
    assert!(
        h.notes
            .iter()
            .all(|n| n.request_id == session && n.channel == 3)
    );
    assert_eq!(h.audio.sounding_count(), 0);
    assert_paired(&h.notes);
    let status = h.control.snapshot();
    assert!(status.last_error.is_empty(), "{status:?}");
}
