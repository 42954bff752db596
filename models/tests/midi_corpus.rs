//! The training corpus reads as its manifest says: note counts, section forms and boundaries.
//! Skipped (with a message) when the corpus is not on this machine; the project's tests never
//! need it.

use std::path::{Path, PathBuf};

use staria_models::{SectionLabel, read_midi_file, section_label_for_marker};

/// `shared/` next to the workspace (the main checkout), or next to the worktrees' folder.
fn corpus_dir() -> Option<PathBuf> {
    let manifest = Path::new(env!("CARGO_MANIFEST_DIR"));
    ["../../shared/data/corpus", "../../../shared/data/corpus"]
        .iter()
        .map(|rel| manifest.join(rel))
        .find(|dir| dir.join("manifest.jsonl").is_file())
}

/// The manifest's letters as this crate's labels: letters past D fold into D.
fn folded(form: &str) -> String {
    form.chars()
        .map(|c| section_label_for_marker(&c.to_string()).map_or('?', SectionLabel::letter))
        .collect()
}

#[test]
fn corpus_files_match_their_manifest() {
    let Some(dir) = corpus_dir() else {
        println!("skipped: no shared/data/corpus next to the workspace");
        return;
    };
    let manifest = std::fs::read_to_string(dir.join("manifest.jsonl")).expect("read manifest");
    let rows: Vec<serde_json::Value> = manifest
        .lines()
        .filter(|l| !l.trim().is_empty())
        .map(|l| serde_json::from_str(l).expect("manifest line is JSON"))
        .collect();
    assert!(!rows.is_empty(), "empty manifest");
    // Every file (0.3 s in a debug build); STARIA_CORPUS_STRIDE=n checks every n-th, plus every
    // file whose form has letters past D.
    let stride = std::env::var("STARIA_CORPUS_STRIDE")
        .ok()
        .and_then(|s| s.parse::<usize>().ok())
        .unwrap_or(1)
        .max(1);
    let picked: Vec<&serde_json::Value> = rows
        .iter()
        .enumerate()
        .filter(|(i, r)| i % stride == 0 || r["form"].as_str().is_some_and(|f| f.contains('E')))
        .map(|(_, r)| r)
        .collect();
    assert!(
        picked.len() >= 50.min(rows.len()),
        "only {} files picked",
        picked.len()
    );
    let started = std::time::Instant::now();
    let mut unisons = 0;
    for row in &picked {
        let file = row["file"].as_str().expect("file");
        let song = read_midi_file(&dir.join(file)).unwrap_or_else(|e| panic!("{file}: {e}"));
        // The manifest counts the score's notes, which are the file's note-ons. Two note-ons of
        // one pitch on one channel at one tick (a unison of two voices) are one sound in MIDI:
        // the first ends at once and is dropped as zero-length. Count with midly's parser.
        let bytes = std::fs::read(dir.join(file)).expect("read file");
        let smf = midly::Smf::parse(&bytes).expect("midly parses corpus files");
        let mut note_ons = Vec::new();
        for track in &smf.tracks {
            let mut tick = 0u64;
            for e in track {
                tick += u64::from(e.delta.as_int());
                if let midly::TrackEventKind::Midi { channel, message } = e.kind
                    && let midly::MidiMessage::NoteOn { key, vel } = message
                    && vel.as_int() > 0
                {
                    note_ons.push((tick, channel.as_int(), key.as_int()));
                }
            }
        }
        let notes = row["notes"].as_u64().expect("notes");
        assert_eq!(note_ons.len() as u64, notes, "{file}: note-ons in the file");
        note_ons.sort_unstable();
        note_ons.dedup();
        unisons += notes as usize - note_ons.len();
        assert_eq!(song.notes.len(), note_ons.len(), "{file}: notes");

        // (letter, start, end) per manifest section. A section with no length shares its tick
        // with the next marker, and of two markers at one tick the later wins: leave it out.
        let want: Vec<(String, u64, u64)> = row["sections"]
            .as_array()
            .expect("sections")
            .iter()
            .map(|s| {
                let tick = |k: &str| s[k].as_u64().expect("section tick");
                let label = s["label"].as_str().expect("label").to_string();
                (label, tick("start_tick"), tick("end_tick"))
            })
            .filter(|s| s.2 > s.1)
            .collect();
        let letters: String = want.iter().map(|s| s.0.as_str()).collect();
        let form = row["form"].as_str().expect("form");
        assert_eq!(song.section_form(), folded(&letters), "{file}: form {form}");
        let texts: String = song
            .sections
            .iter()
            .map(|s| s.marker_text.as_str())
            .collect();
        assert_eq!(
            texts, letters,
            "{file}: marker texts keep the original letters"
        );

        // Boundaries match except the last end: the manifest takes it from the score's bars (which
        // may end before or after the last sound); a file can only end it at its last event.
        let starts: Vec<u64> = song.sections.iter().map(|s| s.start_tick).collect();
        let want_starts: Vec<u64> = want.iter().map(|s| s.1).collect();
        assert_eq!(starts, want_starts, "{file}: section starts");
        let ends: Vec<u64> = song.sections.iter().map(|s| s.end_tick).collect();
        let want_ends: Vec<u64> = want.iter().map(|s| s.2).collect();
        if let Some((last, inner)) = ends.split_last() {
            assert_eq!(inner, &want_ends[..inner.len()], "{file}: section ends");
            let outlasts = song.notes.iter().any(|n| n.end_tick > *last);
            assert!(!outlasts, "{file}: a note outlasts the last section");
        }
    }
    println!(
        "{} corpus files match the manifest in {:?} ({unisons} unison note-ons merged)",
        picked.len(),
        started.elapsed()
    );
}
