//! Tokenize a MIDI file, detokenize it, and write the result (with its section markers), so anyone
//! can check the round trip on any file:
//!
//!     cargo run --release -p staria-models --example roundtrip -- IN.mid OUT.mid
//!
//! Prints one JSON line: notes in and out, token count, the largest onset, duration and velocity
//! errors, and the section forms before and after.

use std::path::PathBuf;
use std::process::ExitCode;

use staria_models::midi::{read_midi_file, write_midi_file};
use staria_models::{Note, Tokenizer, TokenizerConfig};

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let [input, output] = args.as_slice() else {
        eprintln!("usage: roundtrip IN.mid OUT.mid");
        return ExitCode::from(2);
    };
    match run(PathBuf::from(input), PathBuf::from(output)) {
        Ok(line) => {
            println!("{line}");
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("roundtrip: {e}");
            ExitCode::FAILURE
        }
    }
}

fn run(input: PathBuf, output: PathBuf) -> staria_models::Result<String> {
    let tokenizer = Tokenizer::new(TokenizerConfig::default())?;
    let song = read_midi_file(&input)?;
    let tokens = tokenizer.encode_piece(&song);
    let decoded = tokenizer.decode(&tokens);
    write_midi_file(&decoded, &output)?;

    // Pair notes in the order the tokenizer writes them: by quantized onset, then pitch.
    let step = tokenizer.config().time_step_ms as f64;
    let cap = tokenizer.config().max_duration_ms as f64;
    let order = |n: &Note| ((n.start_ms / step).round() as i64, n.pitch);
    let mut notes_in: Vec<Note> = song
        .notes
        .iter()
        .filter(|n| !n.is_drum() || tokenizer.drum_id(n.pitch).is_some())
        .copied()
        .collect();
    notes_in.sort_by_key(order);
    let mut notes_out = decoded.notes.clone();
    notes_out.sort_by_key(order);

    let (mut onset_err, mut dur_err, mut vel_err, mut capped) = (0.0f64, 0.0f64, 0i32, 0usize);
    for (a, b) in notes_in.iter().zip(&notes_out) {
        onset_err = onset_err.max((a.start_ms - b.start_ms).abs());
        // Drum tokens carry no duration; capped durations come back at the cap.
        if a.is_drum() {
        } else if a.duration_ms() < cap {
            dur_err = dur_err.max((a.duration_ms() - b.duration_ms()).abs());
        } else {
            capped += 1;
        }
        vel_err = vel_err.max((a.velocity as i32 - b.velocity as i32).abs());
    }
    Ok(serde_json::json!({
        "input": input.display().to_string(),
        "output": output.display().to_string(),
        "notes_in": song.notes.len(),
        "notes_out": decoded.notes.len(),
        "tokens": tokens.len(),
        "max_onset_error_ms": (onset_err * 100.0).round() / 100.0,
        "max_duration_error_ms": (dur_err * 100.0).round() / 100.0,
        "durations_capped": capped,
        "max_velocity_error": vel_err,
        "form_in": song.section_form(),
        "form_out": decoded.section_form(),
    })
    .to_string())
}
