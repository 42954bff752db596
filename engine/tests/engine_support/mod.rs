//! Shared by the engine-thread tests that play requests out through the audio side.

use staria_engine::messages::NoteEvent;

/// Every note-on is followed on its key (channel and pitch) by a note-off, never a second
/// note-on, and nothing is left sounding: what the host hears has no hanging notes.
pub fn assert_paired<'a>(notes: impl IntoIterator<Item = &'a NoteEvent>) {
    let mut sounding = [false; 16 * 128];
    for e in notes {
        let k = e.channel as usize * 128 + e.pitch as usize;
        assert_ne!(
            sounding[k], e.on,
            "double note-on or orphan note-off on key {k}: {e:?}"
        );
        sounding[k] = e.on;
    }
    assert!(sounding.iter().all(|s| !s), "notes left hanging");
}
