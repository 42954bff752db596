//! Staria inference engine: the real-time core that talks to the plugin, and the generation side
//! (sampling, constraint masks, the streaming `Generator`) that the engine thread and the `staria`
//! command line drive.

pub mod constraints;
pub mod generate;
pub mod sampling;
