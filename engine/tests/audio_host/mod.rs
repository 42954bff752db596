//! The host harness of `engine_audio.rs`: a transport feeding the audio side's `process_block`
//! block by block and recording what comes out, with the engine's end of the rings fed by hand.

use staria_engine::handover::{EngineLink, RingSizes, Shared, link};
use staria_engine::messages::{Command, Event, Form, NoteEvent, Target};
use staria_engine::timing::{TransportChange, TransportFrame};
use staria_engine::{AudioSide, SectionLabel};
use std::sync::Arc;

pub const SR: f64 = 48_000.0;
pub const BLOCK: u32 = 512;

/// A host transport feeding `process_block` and recording what comes out.
pub struct Host {
    pub audio: AudioSide,
    pub engine: EngineLink,
    pub pos: f64,
    pub tempo: f64,
    pub playing: bool,
    /// (absolute sample of the event, event)
    pub out: Vec<(f64, Event)>,
    pub sample_clock: f64,
}

impl Host {
    pub fn new(sizes: RingSizes) -> Self {
        let (audio, engine) = link(sizes, Arc::new(Shared::default()));
        let mut h = Self {
            audio,
            engine,
            pos: 0.0,
            tempo: 120.0,
            playing: true,
            out: Vec::new(),
            sample_clock: 0.0,
        };
        // The first playing block is a transport start (a new epoch): events pushed before it
        // would belong to the old timeline.
        assert_eq!(h.block(), TransportChange::Started);
        h
    }

    pub fn frame(&self) -> TransportFrame {
        TransportFrame {
            playing: self.playing,
            pos_beats: self.pos,
            tempo_bpm: self.tempo,
            samples: BLOCK,
            sample_rate: SR,
        }
    }

    pub fn block(&mut self) -> TransportChange {
        let frame = self.frame();
        let clock = self.sample_clock;
        let out = &mut self.out;
        let mut last = 0;
        let change = self.audio.process_block(&frame, |offset, ev| {
            assert!(offset < BLOCK);
            if let Event::Note(_) = ev {
                assert!(offset >= last, "events out of time order within a block");
                last = offset;
            }
            out.push((clock + offset as f64, ev));
        });
        if self.playing {
            self.pos = frame.block().end_beat;
            self.sample_clock += BLOCK as f64;
        }
        change
    }

    pub fn run_until(&mut self, beat: f64) {
        while self.pos < beat {
            self.block();
        }
    }

    pub fn note(&mut self, request_id: u32, on: bool, pitch: u8, beat: f64) {
        let ev = NoteEvent {
            beat,
            request_id,
            epoch: self.audio.epoch(),
            on,
            pitch,
            velocity: 100,
            channel: 0,
        };
        assert!(self.engine.push_event(Event::Note(ev)));
    }

    pub fn notes(&self) -> Vec<(f64, NoteEvent)> {
        self.out
            .iter()
            .filter_map(|(s, e)| {
                if let Event::Note(n) = e {
                    Some((*s, *n))
                } else {
                    None
                }
            })
            .collect()
    }
}

pub fn generate(id: u32, start_beat: f64) -> Command {
    Command::Generate {
        request_id: id,
        target: Target::Section(SectionLabel::B),
        bars: 4,
        ts_num: 4,
        ts_den: 4,
        form: Form::parse("AB").unwrap(),
        start_beat,
        seed: 1,
    }
}

/// `engine_support::assert_paired` on timed events.
pub fn assert_paired(events: &[(f64, NoteEvent)]) {
    crate::engine_support::assert_paired(events.iter().map(|(_, e)| e));
}
