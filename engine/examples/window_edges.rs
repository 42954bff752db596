//! Where notes start relative to the tokenizer's 5 s time windows, per MIDI file: notes, the
//! share starting in the last 100 ms of a window (uniform onsets: 2%), notes per second.
//!
//! `cargo run --release -p staria-engine --example window_edges -- FILE.mid...`

use staria_models::midi::read_midi_file;

fn main() {
    let files: Vec<String> = std::env::args().skip(1).collect();
    if files.is_empty() {
        eprintln!("usage: window_edges FILE.mid...");
        std::process::exit(2);
    }
    println!("notes  edge%  notes/s  file");
    for f in files {
        let song = match read_midi_file(std::path::Path::new(&f)) {
            Ok(s) => s,
            Err(e) => {
                eprintln!("{f}: {e}");
                continue;
            }
        };
        let n = song.notes.len();
        let edge = song
            .notes
            .iter()
            .filter(|n| n.start_ms.rem_euclid(5000.0) >= 4900.0)
            .count();
        let secs = song.duration_ms() / 1000.0;
        println!(
            "{n:5}  {:5.1}  {:7.2}  {f}",
            100.0 * edge as f64 / n.max(1) as f64,
            n as f64 / secs.max(1e-9)
        );
    }
}
