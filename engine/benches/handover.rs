//! Audio-side cost per 512-sample block: one `send` plus `process_block` with a busy event queue
//! (a few notes due every block, a second of events staged ahead). Only the audio thread's calls
//! are timed; refilling the ring from the "engine" side is not.

use criterion::{Criterion, criterion_group, criterion_main};
use staria_engine::AudioSide;
use staria_engine::SectionLabel;
use staria_engine::handover::{EngineLink, RingSizes, Shared, link};
use staria_engine::messages::{Command, Event, NoteEvent};
use staria_engine::timing::TransportFrame;
use std::hint::black_box;
use std::sync::Arc;
use std::time::{Duration, Instant};

const SR: f64 = 48_000.0;
const BLOCK: u32 = 512;
const TEMPO: f64 = 120.0;

struct Rig {
    audio: AudioSide,
    engine: EngineLink,
    pos: f64,
    /// Beat of the next note the "engine" will push.
    next_note: f64,
    pitch: u8,
}

impl Rig {
    fn new(events_per_beat: f64) -> (Self, f64) {
        let (audio, engine) = link(RingSizes::default(), Arc::new(Shared::default()));
        let mut rig = Rig {
            audio,
            engine,
            pos: 0.0,
            next_note: 0.0,
            pitch: 36,
        };
        // Start the transport so events carry the live epoch.
        rig.block(&mut 0);
        (rig, 1.0 / events_per_beat)
    }

    fn frame(&self) -> TransportFrame {
        TransportFrame {
            playing: true,
            pos_beats: self.pos,
            tempo_bpm: TEMPO,
            samples: BLOCK,
            sample_rate: SR,
        }
    }

    /// Keeps one beat (half a second) of notes queued ahead of the playhead.
    fn refill(&mut self, spacing: f64) {
        let epoch = self.audio.epoch();
        while self.next_note < self.pos + 1.0 {
            let beat = self.next_note;
            self.pitch = if self.pitch >= 96 { 36 } else { self.pitch + 7 };
            for (on, b) in [(true, beat), (false, beat + spacing * 3.0)] {
                let ev = NoteEvent {
                    beat: b,
                    request_id: 1,
                    epoch,
                    on,
                    pitch: self.pitch,
                    velocity: 100,
                    channel: 0,
                };
                if !self.engine.push_event(Event::Note(ev)) {
                    return;
                }
            }
            self.next_note += spacing;
        }
        while self.engine.pop_command().is_some() {}
    }

    fn block(&mut self, emitted: &mut usize) {
        let frame = self.frame();
        self.audio.send(Command::CaptureNoteOn {
            section: SectionLabel::A,
            pitch: 60,
            velocity: 90,
            beat: self.pos,
        });
        self.audio.process_block(&frame, |off, ev| {
            black_box((off, ev));
            *emitted += 1;
        });
        self.pos = frame.block().end_beat;
    }
}

fn bench(c: &mut Criterion) {
    let mut group = c.benchmark_group("audio_block_512");
    // 16 notes per beat at 120 bpm: ~0.7 notes (1.4 events) due per block, 32 events staged.
    // 128 notes per beat: ~5.5 notes due per block, 256 events staged.
    for density in [16.0, 128.0] {
        group.bench_function(format!("{density}_notes_per_beat"), |b| {
            let (mut rig, spacing) = Rig::new(density);
            let mut emitted = 0usize;
            b.iter_custom(|iters| {
                let mut total = Duration::ZERO;
                for _ in 0..iters {
                    rig.refill(spacing);
                    let t = Instant::now();
                    rig.block(&mut emitted);
                    total += t.elapsed();
                }
                total
            });
            assert!(emitted > 0);
        });
    }
    group.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
