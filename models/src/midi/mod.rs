//! Standard MIDI File (SMF) in and out: what the corpus, the CLI and the plugin read into a
//! [`Song`](crate::song::Song), and what generated songs are saved as: [`read_midi`] ([`read`]),
//! [`write_midi`] ([`write`](mod@write)) and the rule that turns a Marker's text into a section label
//! ([`section_label_for_marker`], [`marker`]). Each submodule states its rules.

pub mod marker;
pub mod read;
pub mod write;

pub use marker::section_label_for_marker;
pub use read::{read_midi, read_midi_file};
pub use write::{write_midi, write_midi_file};

use crate::error::Error;

/// The largest delta time a track event can carry (a 28-bit variable-length number).
const MAX_DELTA: u64 = 0x0FFF_FFFF;

fn midi_err(msg: impl Into<String>) -> Error {
    Error::Midi(msg.into())
}
