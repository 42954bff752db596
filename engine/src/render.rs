//! Piano-roll pictures of songs (`staria render`): time in seconds on x, pitch on y, every note
//! a bar coloured by the section it starts in, section starts as vertical lines with their
//! letter, bar lines faint. Several songs stack top to bottom on one time scale (the prompt above
//! the generation), each panel with its own pitch range.
//!
//! Drawn with `plotters`' bitmap backend; text goes through `ab_glyph` with DejaVu Sans Mono,
//! shipped in `engine/assets/fonts` (its licence beside it), so no system font library is needed.

use std::path::Path;
use std::sync::Once;

use plotters::prelude::*;
use plotters::style::{FontStyle, register_font};
use staria_models::{SectionLabel, Song};

/// The font every text is drawn with.
static FONT: &[u8] = include_bytes!("../assets/fonts/DejaVuSansMono.ttf");
const FAMILY: &str = "sans-serif";

/// Background of the picture.
pub const BACKGROUND: RGBColor = RGBColor(255, 255, 255);

/// Section colours A..D (notes before any section: grey).
pub const SECTION_COLOURS: [RGBColor; 4] = [
    RGBColor(31, 119, 180),  // A blue
    RGBColor(214, 39, 40),   // B red
    RGBColor(44, 160, 44),   // C green
    RGBColor(148, 103, 189), // D purple
];
const NO_SECTION: RGBColor = RGBColor(120, 120, 120);

/// Picture size and layout.
#[derive(Debug, Clone)]
pub struct RenderOptions {
    /// Width in pixels.
    pub width: u32,
    /// Height of one song's panel in pixels.
    pub panel_height: u32,
}

impl Default for RenderOptions {
    fn default() -> Self {
        Self {
            width: 1600,
            panel_height: 420,
        }
    }
}

#[derive(Debug, thiserror::Error)]
#[error("render: {0}")]
pub struct RenderError(pub String);

fn err(e: impl std::fmt::Display) -> RenderError {
    RenderError(e.to_string())
}

fn ensure_font() -> Result<(), RenderError> {
    static REGISTER: Once = Once::new();
    let mut result = Ok(());
    REGISTER.call_once(|| {
        result = register_font(FAMILY, FontStyle::Normal, FONT)
            .map_err(|_| RenderError("the shipped font does not load".into()));
    });
    result
}

/// The section of `song` that `ms` falls in (the last one starting at or before it).
fn section_at(song: &Song, ms: f64) -> Option<SectionLabel> {
    song.sections
        .iter()
        .filter(|s| s.start_ms <= ms + 1e-6)
        .max_by(|a, b| a.start_ms.total_cmp(&b.start_ms))
        .map(|s| s.label)
}

/// Colour of a note starting at `ms`.
pub fn colour_at(song: &Song, ms: f64) -> RGBColor {
    section_at(song, ms).map_or(NO_SECTION, |l| SECTION_COLOURS[l.index().min(3)])
}

/// Bar line times (ms) of a song up to `end_ms`, from its time signatures and tempo map.
fn bar_lines_ms(song: &Song, end_ms: f64) -> Vec<f64> {
    let mut out = Vec::new();
    for bar in 0..10_000u32 {
        let ms = song.tick_to_ms(song.bar_start_tick(bar));
        if ms > end_ms || (bar > 0 && out.last().is_some_and(|&l: &f64| ms <= l)) {
            break;
        }
        out.push(ms);
    }
    out
}

fn song_end_ms(song: &Song) -> f64 {
    song.notes
        .iter()
        .map(|n| n.end_ms)
        .chain(song.sections.iter().map(|s| s.end_ms))
        .fold(0.0, f64::max)
}

/// Draws `songs` (title, song), top to bottom, into an RGB buffer of
/// `width x panel_height * songs.len()` pixels.
pub fn render_rgb(songs: &[(&str, &Song)], opts: &RenderOptions) -> Result<Vec<u8>, RenderError> {
    let height = opts.panel_height * songs.len().max(1) as u32;
    let mut buf = vec![0u8; opts.width as usize * height as usize * 3];
    {
        let root = BitMapBackend::with_buffer(&mut buf, (opts.width, height)).into_drawing_area();
        draw(&root, songs)?;
        root.present().map_err(err)?;
    }
    Ok(buf)
}

/// Draws `songs` into a PNG file.
pub fn render_png(
    path: &Path,
    songs: &[(&str, &Song)],
    opts: &RenderOptions,
) -> Result<(), RenderError> {
    let height = opts.panel_height * songs.len().max(1) as u32;
    let root = BitMapBackend::new(path, (opts.width, height)).into_drawing_area();
    draw(&root, songs)?;
    root.present()
        .map_err(|e| RenderError(format!("{}: {e}", path.display())))
}

fn draw<DB: DrawingBackend>(
    root: &DrawingArea<DB, plotters::coord::Shift>,
    songs: &[(&str, &Song)],
) -> Result<(), RenderError> {
    ensure_font()?;
    root.fill(&BACKGROUND).map_err(err)?;
    if songs.is_empty() {
        return Ok(());
    }
    // One time scale for every panel, so prompt and generation line up.
    let t_max = songs
        .iter()
        .map(|(_, s)| song_end_ms(s))
        .fold(1000.0, f64::max)
        / 1000.0;
    let panels = root.split_evenly((songs.len(), 1));
    for (area, (title, song)) in panels.iter().zip(songs) {
        draw_panel(area, title, song, t_max)?;
    }
    Ok(())
}

fn draw_panel<DB: DrawingBackend>(
    area: &DrawingArea<DB, plotters::coord::Shift>,
    title: &str,
    song: &Song,
    t_max: f64,
) -> Result<(), RenderError> {
    let pitched = || song.notes.iter().map(|n| f64::from(n.pitch));
    let lo = pitched().fold(f64::INFINITY, f64::min);
    let hi = pitched().fold(f64::NEG_INFINITY, f64::max);
    let (lo, hi) = if lo.is_finite() {
        (lo - 2.0, hi + 3.0)
    } else {
        (55.0, 80.0)
    };
    let form = song.section_form();
    let caption = if form.is_empty() {
        format!("{title}: {} notes", song.notes.len())
    } else {
        format!("{title}: form {form}, {} notes", song.notes.len())
    };
    let mut chart = ChartBuilder::on(area)
        .caption(caption, (FAMILY, 22))
        .margin(12)
        .x_label_area_size(34)
        .y_label_area_size(48)
        .build_cartesian_2d(0f64..t_max, lo..hi)
        .map_err(err)?;
    chart
        .configure_mesh()
        .disable_x_mesh()
        .y_labels(((hi - lo) / 4.0).ceil() as usize)
        .light_line_style(RGBColor(240, 240, 240))
        .x_desc("seconds")
        .y_desc("MIDI pitch")
        .axis_desc_style((FAMILY, 15))
        .label_style((FAMILY, 13))
        .x_label_formatter(&|x| seconds_label(*x))
        .y_label_formatter(&|y| format!("{y:.0}"))
        .draw()
        .map_err(err)?;

    // Faint bar lines.
    let bar_style = RGBColor(215, 215, 215).stroke_width(1);
    chart
        .draw_series(
            bar_lines_ms(song, t_max * 1000.0)
                .into_iter()
                .map(|ms| PathElement::new(vec![(ms / 1000.0, lo), (ms / 1000.0, hi)], bar_style)),
        )
        .map_err(err)?;

    // Notes: a bar per note, one semitone high, with a darker outline so neighbours separate.
    chart
        .draw_series(song.notes.iter().map(|n| {
            let c = colour_at(song, n.start_ms);
            let p = f64::from(n.pitch);
            let x1 = (n.end_ms / 1000.0).max(n.start_ms / 1000.0 + 0.02);
            Rectangle::new(
                [(n.start_ms / 1000.0, p - 0.45), (x1, p + 0.45)],
                c.filled(),
            )
        }))
        .map_err(err)?;

    // Section starts: a line and the letter at the top.
    for s in &song.sections {
        let x = s.start_ms / 1000.0;
        let c = SECTION_COLOURS[s.label.index().min(3)];
        chart
            .draw_series(std::iter::once(PathElement::new(
                vec![(x, lo), (x, hi)],
                c.stroke_width(2),
            )))
            .map_err(err)?;
        chart
            .draw_series(std::iter::once(Text::new(
                s.label.letter().to_string(),
                (x + t_max * 0.004, hi - 0.3),
                (FAMILY, 22).into_font().color(&c),
            )))
            .map_err(err)?;
    }
    Ok(())
}

/// A time axis label: as many decimals as the tick needs (a short roll ticks every half second,
/// which whole seconds would print as "0, 0, 1, 2, 2").
fn seconds_label(seconds: f64) -> String {
    let fixed = format!("{seconds:.2}");
    fixed
        .trim_end_matches('0')
        .trim_end_matches('.')
        .to_string()
}

#[cfg(test)]
mod tests {
    use super::*;
    use staria_models::{Note, Section};

    #[test]
    fn time_labels_keep_the_decimals_a_tick_needs() {
        let labels: Vec<String> = [0.0, 0.5, 1.0, 1.25, 12.0]
            .into_iter()
            .map(seconds_label)
            .collect();
        assert_eq!(labels, ["0", "0.5", "1", "1.25", "12"]);
    }

    fn song() -> Song {
        let notes: Vec<Note> = (0..16)
            .map(|i| Note {
                pitch: 60 + (i % 8) as u8,
                velocity: 80,
                channel: 0,
                program: 0,
                start_tick: 0,
                end_tick: 0,
                start_ms: i as f64 * 250.0,
                end_ms: i as f64 * 250.0 + 200.0,
            })
            .collect();
        let sections = vec![
            Section {
                label: SectionLabel::A,
                marker_text: "A".into(),
                start_tick: 0,
                end_tick: 0,
                start_ms: 0.0,
                end_ms: 2000.0,
            },
            Section {
                label: SectionLabel::B,
                marker_text: "B".into(),
                start_tick: 0,
                end_tick: 0,
                start_ms: 2000.0,
                end_ms: 4000.0,
            },
        ];
        Song::from_ms_notes(notes, sections, 120.0)
    }

    fn count(buf: &[u8], c: RGBColor) -> usize {
        buf.chunks(3)
            .filter(|p| p[0] == c.0 && p[1] == c.1 && p[2] == c.2)
            .count()
    }

    #[test]
    fn a_small_song_draws_notes_in_section_colours() {
        let s = song();
        let opts = RenderOptions {
            width: 400,
            panel_height: 200,
        };
        let buf = render_rgb(&[("prompt", &s), ("generated", &s)], &opts).unwrap();
        assert_eq!(buf.len(), 400 * 400 * 3);
        let bg = count(&buf, BACKGROUND);
        assert!(bg < buf.len() / 3, "not blank");
        // Both sections' note colours are present, in both panels.
        let (top, bottom) = buf.split_at(buf.len() / 2);
        for half in [top, bottom] {
            assert!(count(half, SECTION_COLOURS[0]) > 50, "A notes drawn");
            assert!(count(half, SECTION_COLOURS[1]) > 50, "B notes drawn");
        }
    }

    #[test]
    fn png_file_is_written_and_not_blank() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("roll.png");
        render_png(&path, &[("song", &song())], &RenderOptions::default()).unwrap();
        let bytes = std::fs::read(&path).unwrap();
        assert_eq!(&bytes[1..4], b"PNG");
        assert!(bytes.len() > 2000);
        assert_eq!(colour_at(&song(), 2500.0), SECTION_COLOURS[1]);
    }
}
