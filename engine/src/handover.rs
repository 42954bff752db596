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
use std::sync::OnceLock;
use std::sync::atomic::{AtomicBool, AtomicU32, Ordering, fence};
use std::thread::Thread;
use std::time::Duration;

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
    /// The engine thread, registered when it starts, so the audio side can wake it.
    engine_thread: OnceLock<Thread>,
    /// The engine thread is parked with nothing to do (until a command, a transport change or
    /// its idle timeout).
    parked: AtomicBool,
}

impl Shared {
    /// Called on the engine thread when it starts.
    pub(crate) fn register_engine_thread(&self) {
        let _ = self.engine_thread.set(std::thread::current());
    }

    /// Wakes the engine thread if it is parked idle. Safe on the audio thread: atomics only, plus,
    /// when the engine was actually parked, `Thread::unpark`, which in std (1.95) is an atomic
    /// swap and a wake system call — `FUTEX_WAKE` on Linux, `dispatch_semaphore_signal` on macOS,
    /// `WakeByAddressSingle` on Windows: no lock, no allocation, never blocks. (std's pthread
    /// fallback for other Unixes takes a mutex; Staria is not built for those.)
    pub fn wake_engine(&self) {
        // Pairs with the fence in `park_idle`: either the engine sees what was published before
        // this call, or this call sees `parked` set.
        fence(Ordering::SeqCst);
        if self.parked.load(Ordering::Relaxed)
            && self.parked.swap(false, Ordering::AcqRel)
            && let Some(t) = self.engine_thread.get()
        {
            t.unpark();
        }
    }

    /// Engine thread: parks for at most `timeout` unless `has_work()` (checked after announcing
    /// the park, so a wake-up in between is never lost).
    pub(crate) fn park_idle(&self, timeout: Duration, has_work: impl FnOnce() -> bool) {
        self.parked.store(true, Ordering::Relaxed);
        fence(Ordering::SeqCst);
        if !has_work() {
            std::thread::park_timeout(timeout);
        }
        self.parked.store(false, Ordering::Relaxed);
    }
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

    /// Commands are waiting in the ring.
    pub fn has_commands(&self) -> bool {
        !self.commands.is_empty()
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
