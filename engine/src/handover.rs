//! The lock-free handover: two SPSC rings of `Copy` messages plus the shared atomics. One end
//! ([`AudioSide`]) lives in the plugin's `process()`, the other ([`EngineLink`]) on the engine
//! thread.

use crate::audio::AudioSide;
use crate::messages::{Command, Event, RequestId};
use crate::status::{EngineParams, EngineStatus};
use crate::timing::SharedTransport;
use ringbuf::traits::{Consumer, Observer, Producer, Split};
use ringbuf::{HeapCons, HeapProd, HeapRb};
use std::sync::Arc;
use std::sync::atomic::{AtomicU32, Ordering};

/// State both sides see: counters and text, generation settings, transport position.
#[derive(Debug, Default)]
pub struct Shared {
    pub status: EngineStatus,
    pub params: EngineParams,
    pub transport: SharedTransport,
    /// The newest request a `Cancel` asked to stop (0 = none). Raised by the audio side before it
    /// even tries the command ring, so a cancel (the plugin's *Stop playback*) reaches the engine
    /// even when the ring is full.
    pub cancel_upto: AtomicU32,
}

/// Ring sizes. Both are allocated once, when the link is made.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RingSizes {
    pub commands: usize,
    pub events: usize,
}

impl Default for RingSizes {
    fn default() -> Self {
        // Commands: a dense chord-heavy capture at ~100 notes/s for the seconds a model step can
        // hold the engine up. Events: a couple of seconds of lookahead at very dense output.
        Self {
            commands: 1024,
            events: 2048,
        }
    }
}

/// The engine thread's end of the handover.
pub struct EngineLink {
    commands: HeapCons<Command>,
    events: HeapProd<Event>,
    pub shared: Arc<Shared>,
}

impl EngineLink {
    pub fn pop_command(&mut self) -> Option<Command> {
        self.commands.try_pop()
    }

    /// `false` when the event ring is full; the engine decides whether to wait or give up.
    pub fn push_event(&mut self, ev: Event) -> bool {
        self.events.try_push(ev).is_ok()
    }

    /// The newest request id any `Cancel` named so far (0 = none), whether or not the command
    /// itself fitted into the ring. The engine treats a rise as a `Cancel` for that id.
    pub fn cancelled_upto(&self) -> RequestId {
        self.shared.cancel_upto.load(Ordering::Acquire)
    }

    pub fn events_vacant(&self) -> usize {
        self.events.vacant_len()
    }
}

/// Makes both ends of a handover (what [`crate::engine_thread::Engine::spawn`] does before it
/// starts the thread).
pub fn link(sizes: RingSizes, shared: Arc<Shared>) -> (AudioSide, EngineLink) {
    let (cmd_prod, cmd_cons) = HeapRb::<Command>::new(sizes.commands.max(1)).split();
    let (ev_prod, ev_cons): (HeapProd<Event>, HeapCons<Event>) =
        HeapRb::<Event>::new(sizes.events.max(1)).split();
    let audio = AudioSide::new(cmd_prod, ev_cons, shared.clone());
    (
        audio,
        EngineLink {
            commands: cmd_cons,
            events: ev_prod,
            shared,
        },
    )
}
