//! `staria generate` and `staria continue`, and the MIDI and request helpers they share.

use std::path::Path;

use staria_engine::constraints::{Constraints, Scale};
use staria_engine::generate::{Flow, GenRequest, Snippets, Target};
use staria_engine::sampling::SamplingParams;
use staria_models::{Note, SectionLabel, Song};

use crate::args::{ContinueArgs, GenerateArgs, SampleArgs};
use crate::load::load;
use crate::{Failure, bad};

pub(crate) fn read_song(path: &Path) -> Result<Song, Failure> {
    let song = staria_models::read_midi_file(path).map_err(|e| {
        let (msg, name) = (e.to_string(), path.display().to_string());
        bad(if msg.contains(&name) {
            msg
        } else {
            format!("{name}: {msg}")
        })
    })?;
    if song.notes.is_empty() {
        return Err(bad(format!(
            "{} has no notes to use as a prompt",
            path.display()
        )));
    }
    Ok(song)
}

/// The request fields shared by `generate` and `continue`.
pub(crate) fn base_request(
    target: Target,
    bars: u32,
    s: &SampleArgs,
    song: &Song,
) -> Result<GenRequest, Failure> {
    let bpm = match s.bpm {
        Some(b) => b,
        None => song
            .tempo_map
            .first()
            .map_or(120.0, |t| 60_000_000.0 / t.us_per_quarter.max(1) as f64),
    };
    let beats_per_bar = song
        .time_signatures
        .first()
        .filter(|ts| ts.numerator > 0 && ts.denominator > 0)
        .map_or(4.0, |ts| ts.numerator as f64 * 4.0 / ts.denominator as f64);
    let mut constraints = Constraints::default();
    if let Some(r) = &s.pitch_range {
        let (lo, hi) =
            parse_range(r, 0, 127).map_err(|e| bad(format!("--pitch-range {r:?}: {e}")))?;
        constraints.pitch_min = lo as u8;
        constraints.pitch_max = hi as u8;
    }
    if let Some(sc) = &s.scale {
        constraints.scale = Some(
            sc.parse::<Scale>()
                .map_err(|e| bad(format!("--scale: {e}")))?,
        );
    }
    constraints.max_polyphony = s.max_polyphony;
    // Drums only when the prompt has some: the engine's note events carry no channel.
    constraints.drums = song.notes.iter().any(Note::is_drum);
    let req = GenRequest {
        target,
        bars,
        bpm,
        beats_per_bar,
        form: String::new(),
        style: s.style.clone(),
        sampling: SamplingParams {
            temperature: s.temperature,
            top_p: s.top_p,
            min_p: s.min_p,
            seed: s.seed,
            follow_bias: s.follow_bias,
        },
        constraints,
    };
    req.validate().map_err(bad)?;
    Ok(req)
}

/// "A-B" or "A" within lo..=hi.
pub(crate) fn parse_range(s: &str, lo: u32, hi: u32) -> Result<(u32, u32), String> {
    let num = |t: &str| {
        t.trim()
            .parse::<u32>()
            .map_err(|_| format!("{t:?} is not a number"))
    };
    let (a, b) = match s.split_once('-') {
        Some((a, b)) => (num(a)?, num(b)?),
        None => {
            let a = num(s)?;
            (a, a)
        }
    };
    if a < lo || b > hi || a > b {
        return Err(format!("expected FROM-TO with {lo} <= FROM <= TO <= {hi}"));
    }
    Ok((a, b))
}

/// Snippets from `--sections` bar ranges, else the file's markers (first occurrence of each
/// letter), else the whole file as section A.
pub(crate) fn snippets_of(
    song: &Song,
    sections: Option<&str>,
    path: &Path,
) -> Result<Snippets, Failure> {
    let mut snippets = Snippets::default();
    if let Some(spec) = sections {
        for part in spec.split(',').map(str::trim).filter(|p| !p.is_empty()) {
            let (letter, range) = part.split_once('=').ok_or_else(|| {
                bad(format!(
                    "--sections: {part:?} is not LETTER=FROM-TO (e.g. A=1-4)"
                ))
            })?;
            let mut chars = letter.trim().chars();
            let label = match (chars.next(), chars.next()) {
                (Some(c), None) => SectionLabel::from_letter(c),
                _ => None,
            }
            .ok_or_else(|| {
                bad(format!(
                    "--sections: unknown section letter {:?} (use A, B, C or D)",
                    letter.trim()
                ))
            })?;
            let (from, to) = parse_range(range, 1, 100_000)
                .map_err(|e| bad(format!("--sections {part:?}: bars {e}")))?;
            let start = song.tick_to_ms(song.bar_start_tick(from - 1));
            let end = song.tick_to_ms(song.bar_start_tick(to));
            let notes = song.notes_in(start, end);
            if notes.is_empty() {
                return Err(bad(format!(
                    "--sections: section {label} (bars {from}-{to}) has no notes in {}",
                    path.display()
                )));
            }
            if !snippets.section(label).is_empty() {
                return Err(bad(format!("--sections: section {label} is given twice")));
            }
            snippets.set(label, notes);
        }
        if snippets.captured().next().is_none() {
            return Err(bad("--sections names no section"));
        }
        return Ok(snippets);
    }
    for label in SectionLabel::ALL {
        if let Some(s) = song.first_section(label) {
            snippets.set(label, song.section_notes(s));
        }
    }
    if snippets.captured().next().is_none() {
        eprintln!(
            "staria: {} has no section markers with notes; using the whole file as section A",
            path.display()
        );
        snippets.set(SectionLabel::A, song.notes.clone());
    }
    Ok(snippets)
}

pub(crate) fn write_song(song: &Song, out: &Path) -> Result<(), Failure> {
    let bytes = staria_models::write_midi(song)?;
    std::fs::write(out, bytes).map_err(|e| bad(format!("cannot write {}: {e}", out.display())))
}

pub(crate) fn cmd_generate(a: GenerateArgs) -> Result<(), Failure> {
    let form = a.form.trim().to_ascii_uppercase();
    if form.is_empty() || !form.chars().all(|c| ('A'..='D').contains(&c)) {
        return Err(bad(format!(
            "--form {:?} must be letters A..D, e.g. AABA",
            a.form
        )));
    }
    if a.bars == 0 {
        return Err(bad("--bars must be at least 1"));
    }
    let song = read_song(&a.prompt)?;
    let snippets = snippets_of(&song, a.sections.as_deref(), &a.prompt)?;
    let mut req = base_request(Target::Section(SectionLabel::A), a.bars, &a.sample, &song)?;
    req.form = form;
    let mut loaded = load(&a.model, &a.backend)?;
    let piece = loaded.generator.generate_piece(&snippets, &req)?;
    write_song(&piece.song, &a.out)?;
    for (i, r) in piece.sections.iter().enumerate() {
        if r.notes == 0 {
            eprintln!(
                "staria: warning: section {} ({}) came out empty: the model placed no notes in its {} bars ({:?})",
                i + 1,
                r.label,
                a.bars,
                r.stop
            );
        }
    }
    let counts: Vec<String> = piece
        .sections
        .iter()
        .map(|r| format!("{}:{}", r.label, r.notes))
        .collect();
    eprintln!(
        "staria: wrote {} ({} notes; {}; {} tokens in {:.0} ms)",
        a.out.display(),
        piece.summary.notes,
        counts.join(" "),
        piece.summary.sampled_tokens,
        piece.summary.prefill_ms + piece.summary.decode_ms
    );
    Ok(())
}

pub(crate) fn cmd_continue(a: ContinueArgs) -> Result<(), Failure> {
    let song = read_song(&a.input)?;
    // Marked sections also go in as snippets; without markers the file is only the context.
    let mut snippets = if song.sections.is_empty() {
        Snippets::default()
    } else {
        snippets_of(&song, None, &a.input)?
    };
    snippets.context = song.notes.clone();
    let probe = base_request(Target::Continue, 1, &a.sample, &song)?;
    let bar_ms = probe.span_ms();
    let (bars, limit_ms) = match (a.seconds, a.bars) {
        (Some(s), _) => {
            if !(s.is_finite() && s > 0.0 && s <= 3600.0) {
                return Err(bad(format!("--seconds must be in (0, 3600], got {s}")));
            }
            (((s * 1000.0) / bar_ms).ceil().max(1.0) as u32, s * 1000.0)
        }
        (None, Some(0)) | (None, None) => return Err(bad("--bars must be at least 1")),
        (None, Some(b)) => (b, b as f64 * bar_ms),
    };
    let req = GenRequest { bars, ..probe };
    req.validate().map_err(bad)?;
    let mut loaded = load(&a.model, &a.backend)?;

    let end_ms = song.notes.iter().map(|n| n.end_ms).fold(0.0, f64::max);
    // The continuation starts on the first bar line after the input's last note-off.
    let start_ms =
        staria_engine::generate::continue_start_ms(&song.notes, req.bpm, req.beats_per_bar);
    let template = song
        .notes
        .iter()
        .rev()
        .find(|n| !n.is_drum())
        .copied()
        .unwrap_or(song.notes[0]);
    let mut added = Vec::new();
    let summary = loaded.generator.generate(&snippets, &req, &mut |n| {
        if n.start_ms >= limit_ms {
            return Flow::Stop;
        }
        added.push((
            n.pitch,
            n.velocity,
            n.start_ms + start_ms,
            n.start_ms + start_ms + n.dur_ms.min(limit_ms - n.start_ms),
        ));
        Flow::Continue
    })?;
    let mut out = song.clone();
    for (pitch, velocity, s, e) in added {
        let (st, et) = (out.ms_to_tick(s), out.ms_to_tick(e));
        out.notes.push(Note {
            pitch,
            velocity: velocity.max(1),
            channel: template.channel,
            program: template.program,
            start_tick: st,
            end_tick: et.max(st + 1),
            start_ms: s,
            end_ms: e,
        });
    }
    out.notes.sort_by_key(|n| (n.start_tick, n.pitch));
    write_song(&out, &a.out)?;
    if summary.notes == 0 {
        eprintln!(
            "staria: warning: the model added no notes ({:?})",
            summary.stop
        );
    }
    eprintln!(
        "staria: wrote {} ({} notes added from {:.1} s, the bar line after {:.1} s; {} tokens in {:.0} ms)",
        a.out.display(),
        summary.notes,
        start_ms / 1000.0,
        end_ms / 1000.0,
        summary.sampled_tokens,
        summary.prefill_ms + summary.decode_ms
    );
    Ok(())
}
