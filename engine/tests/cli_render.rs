//! `staria render`: a prompt and a "generation" drawn to a PNG through the CLI.

mod gen_support;

use std::process::Command;

use gen_support::prompt_song;

#[test]
fn render_writes_a_png_of_prompt_and_piece() {
    let dir = tempfile::tempdir().unwrap();
    let midi = dir.path().join("song.mid");
    let png = dir.path().join("song.png");
    staria_models::write_midi_file(&prompt_song(), &midi).unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_staria"))
        .args(["render", midi.to_str().unwrap(), "--prompt"])
        .arg(&midi)
        .arg("--png")
        .arg(&png)
        .args(["--width", "640", "--panel-height", "240"])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let bytes = std::fs::read(&png).unwrap();
    assert_eq!(&bytes[1..4], b"PNG");
    // IHDR: width and height (two panels).
    assert_eq!(u32::from_be_bytes(bytes[16..20].try_into().unwrap()), 640);
    assert_eq!(u32::from_be_bytes(bytes[20..24].try_into().unwrap()), 480);

    // A missing input is a one-line error with exit code 2.
    let out = Command::new(env!("CARGO_BIN_EXE_staria"))
        .args(["render", "/nonexistent.mid", "--png"])
        .arg(&png)
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
}
