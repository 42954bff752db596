//! `staria render`: a MIDI file as a piano roll.

use std::path::Path;

use staria_models::Song;

use crate::args::RenderArgs;
use crate::{Failure, bad};

pub(crate) fn cmd_render(a: RenderArgs) -> Result<(), Failure> {
    if !(64..=16_384).contains(&a.width) || !(64..=8_192).contains(&a.panel_height) {
        return Err(bad(
            "--width must be in 64..=16384 and --panel-height in 64..=8192",
        ));
    }
    let read = |path: &Path| {
        staria_models::read_midi_file(path).map_err(|e| {
            let (msg, name) = (e.to_string(), path.display().to_string());
            bad(if msg.contains(&name) {
                msg
            } else {
                format!("{name}: {msg}")
            })
        })
    };
    let song = read(&a.input)?;
    let prompt = a.prompt.as_deref().map(read).transpose()?;
    let name = |p: &Path| {
        p.file_name().map_or_else(
            || p.display().to_string(),
            |n| n.to_string_lossy().into_owned(),
        )
    };
    let (input_name, prompt_name) = (name(&a.input), a.prompt.as_deref().map(name));
    let mut songs: Vec<(&str, &Song)> = Vec::new();
    if let (Some(p), Some(n)) = (&prompt, &prompt_name) {
        songs.push((n.as_str(), p));
    }
    songs.push((input_name.as_str(), &song));
    let opts = staria_engine::render::RenderOptions {
        width: a.width,
        panel_height: a.panel_height,
    };
    staria_engine::render::render_png(&a.png, &songs, &opts).map_err(|e| Failure {
        code: 1,
        msg: e.to_string(),
    })?;
    eprintln!("wrote {}", a.png.display());
    Ok(())
}
