//! Staria inference engine: the real-time core that talks to the plugin (lock-free handover,
//! scheduling in host musical time, hanging-note safety, status, model hot-swap), and the
//! generation side (sampling, constraint masks, the streaming `Generator`) that the engine thread
//! and the `staria` command line drive. See `docs/ARCHITECTURE.md`.

pub mod audio;
pub mod capture;
pub mod constraints;
pub mod default_model;
pub mod engine_thread;
pub mod generate;
pub mod handover;
pub mod messages;
pub mod render;
pub mod sampling;
pub mod schedule;
pub mod status;
pub mod swap;
pub mod timing;

pub use audio::AudioSide;
pub use engine_thread::{Engine, EngineConfig};
pub use generate::Target;
pub use handover::{EngineLink, RingSizes, Shared, link};
pub use messages::{Command, Event, Form, NoteEvent, Outcome, RequestId};
pub use staria_models::SectionLabel;
pub use status::{EngineParams, EngineState, EngineStatus, ParamValues, StatusSnapshot};
pub use swap::EngineControl;
pub use timing::{BlockTiming, TransportChange, TransportFrame};
