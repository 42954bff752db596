//! Staria's real-time engine: the lock-free handover between a plugin's audio thread and the
//! inference thread, scheduling of generated notes in host musical time, hanging-note safety,
//! status and model hot-swap. See `docs/ARCHITECTURE.md`.

pub mod audio;
pub mod handover;
pub mod messages;
pub mod status;
pub mod timing;

pub use audio::AudioSide;
pub use handover::{EngineLink, RingSizes, Shared, link};
pub use messages::{Command, Event, Form, GenTarget, NoteEvent, Outcome, RequestId};
pub use status::{EngineParams, EngineState, EngineStatus, ParamValues, StatusSnapshot};
pub use timing::{BlockTiming, TransportChange, TransportFrame};
