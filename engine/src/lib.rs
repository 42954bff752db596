//! Staria inference engine: the real-time core that talks to the plugin (lock-free handover,
//! scheduling in host musical time, hanging-note safety, status, model hot-swap), and the
//! generation side (sampling, constraint masks, the streaming `Generator`) that the engine thread
//! and the `staria` command line drive. See `docs/ARCHITECTURE.md`.
//!
//! # Start here
//! Offline (what `staria generate` does): load a checkpoint into a [`generate::Generator`], give
//! it snippets and a request, get a song back.
//!
//! ```no_run
//! use staria_engine::generate::{GenRequest, Generator, Snippets};
//! use staria_engine::{SectionLabel, Target};
//! # fn main() -> Result<(), Box<dyn std::error::Error>> {
//! let prompt = staria_models::read_midi_file("tune.mid".as_ref())?;
//! let mut snippets = Snippets::default();
//! for section in &prompt.sections {
//!     snippets.set(section.label, prompt.section_notes(section));
//! }
//! let mut generator = Generator::load(
//!     "models/pretrained/baseline-small".as_ref(),
//!     &candle_core::Device::Cpu,
//! )?;
//! let mut request = GenRequest::new(Target::Section(SectionLabel::A), 8, 100.0);
//! request.form = "AABA".into();
//! let piece = generator.generate_piece(&snippets, &request)?;
//! staria_models::write_midi_file(&piece.song, "out.mid".as_ref())?;
//! # Ok(())
//! # }
//! ```
//!
//! Live (what the plugin does): [`handover::link`] makes the lock-free pair, the audio side
//! ([`AudioSide`]) sends fixed-size [`Command`]s from `process()` and the [`Engine`] thread
//! answers with [`Event`]s scheduled in host beats.
//!
//! Modules by room:
//! - real-time core (audio thread side, no allocation): [`audio`], [`messages`], [`handover`],
//!   [`timing`], [`schedule`];
//! - engine thread: [`engine_thread`], [`capture`], [`status`], [`swap`], [`default_model`],
//!   [`memory`];
//! - generation: [`generate`], [`sampling`], [`constraints`];
//! - live modes (call and response, accompaniment): [`live`] (the session, its simulation and
//!   its engine-thread driver);
//! - command line helpers: [`render`] (piano rolls), and the `staria` binary (`src/bin`).

pub mod audio;
pub mod capture;
pub mod constraints;
pub mod default_model;
pub mod engine_thread;
pub mod generate;
pub mod handover;
pub mod live;
pub mod memory;
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
