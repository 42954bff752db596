//! `staria live`: a MIDI file played as the performer into the engine's live modes
//! (`staria_engine::live`) on a simulated clock, the performer and the model written to one
//! MIDI file. The exact clock makes it reproducible: same model, file, settings and seed, same
//! notes. Each part gets the program of the tokenizer instrument it was encoded or sampled as:
//! the performer's (instrument 0, piano: program 0); the model's is the same in call and
//! response and with a one-instrument model, and with a two-voice model the accompaniment
//! instrument's (bass: program 32) in accompaniment (`LiveMode::model_instrument`).
//!
//! A performer file that changes tempo is played as a host with that tempo automation would
//! play it (`live::sim`, *Tempo changes*): the session's reference tempo is the file's first,
//! its notes reach the session by their beats, the session hears each tempo change at its
//! time, and the written file keeps the performer file's tempo map, time signatures and ticks
//! per quarter, the model's notes at their beats on it. `--bpm` is refused for such a file.

use staria_engine::generate::Snippets;
use staria_engine::live::sim::{
    Performance, SimClock, SimReport, has_tempo_changes, simulate_with_tempo, song_ms,
};
use staria_engine::live::{LiveMode, LiveSettings, TimedNote};
use staria_models::{Note, Song};

use crate::args::{LiveArgs, SampleArgs};
use crate::generate::{base_request, read_song, snippets_of, write_song};
use crate::load::load;
use crate::{Failure, bad};

/// MIDI channels (0-based) of the two parts in the written file.
pub(crate) const PERFORMER_CHANNEL: u8 = 0;
pub(crate) const MODEL_CHANNEL: u8 = 1;

/// The settings `staria live` runs with: the mode's defaults, then the command line.
pub(crate) fn live_settings(
    mode: LiveMode,
    bpm: f64,
    beats_per_bar: f64,
    s: &SampleArgs,
    song: &Song,
) -> Result<LiveSettings, Failure> {
    let mut settings = LiveSettings::new(mode, bpm);
    settings.beats_per_bar = beats_per_bar;
    // Sampling, style and an explicit pitch range, scale or polyphony from the shared flags.
    let req = base_request(staria_engine::Target::Continue, 1, s, song)?;
    settings.sampling = req.sampling;
    settings.style = req.style;
    if s.pitch_range.is_some() {
        settings.voice.pitch_min = req.constraints.pitch_min;
        settings.voice.pitch_max = req.constraints.pitch_max;
    }
    settings.voice.scale = req.constraints.scale;
    if s.max_polyphony.is_some() {
        settings.voice.max_polyphony = req.constraints.max_polyphony;
    }
    Ok(settings)
}

pub(crate) fn cmd_live(a: LiveArgs) -> Result<(), Failure> {
    let song = read_song(&a.performer)?;
    let tempo_changes = has_tempo_changes(&song);
    if tempo_changes && a.sample.bpm.is_some() {
        return Err(bad(format!(
            "--bpm: {} changes tempo, and its tempo map is the host's tempo in `staria live`; \
             leave --bpm out (the session starts at the file's first tempo)",
            a.performer.display()
        )));
    }
    let probe = base_request(staria_engine::Target::Continue, 1, &a.sample, &song)?;
    let (perf, tempo) = if tempo_changes {
        Performance::from_song_on_beats(&song, probe.bpm)
    } else {
        Performance::from_song(&song).map(|p| (p, Vec::new()))
    }
    .map_err(|e| bad(format!("{}: {e}", a.performer.display())))?;
    let mut settings = live_settings(a.mode, probe.bpm, probe.beats_per_bar, &a.sample, &song)?;
    settings.response_bars = a.bars;
    settings.handover_silence_beats = Some(a.handover_silence_beats);
    settings.lookahead_beats = a.lookahead_beats;
    settings.ghost_melody = a.ghost_melody;
    settings.consonant = a.consonant;
    settings
        .validate()
        .map_err(|e| bad(format!("staria live: {e}")))?;
    if !(a.tick_ms.is_finite() && (0.1..=100.0).contains(&a.tick_ms)) {
        return Err(bad(format!(
            "--tick-ms must be in 0.1..=100, got {}",
            a.tick_ms
        )));
    }
    let snippets = match &a.prompt {
        Some(p) => snippets_of(&read_song(p)?, None, p)?,
        None => Snippets::default(),
    };
    let mut loaded = load(&a.model, &a.backend)?;
    let bpm = settings.bpm;
    let tok = loaded.generator.tokenizer();
    let model_instrument = a.mode.model_instrument(tok);
    let programs = Programs {
        performer: tok.program_for_instrument(tok.performer_instrument()),
        model: tok.program_for_instrument(model_instrument),
    };
    // Named only where the model has two voices (one-instrument output is as it always was).
    let model_voice = match tok.accompaniment_instrument() {
        Some(_) => format!(
            " as {}{}",
            tok.config().instruments[model_instrument as usize],
            if settings.samples_ghost_melody(tok) {
                ", with a ghost melody"
            } else {
                ""
            }
        ),
        None => String::new(),
    };
    let mut report = simulate_with_tempo(
        &mut loaded.generator,
        &snippets,
        settings,
        &perf,
        &tempo,
        SimClock::Exact,
        a.tick_ms,
    )?;
    // Written (and drawn) on the performer file's time line.
    let mut heard = perf.clone();
    if tempo_changes {
        for n in heard.notes.iter_mut().chain(report.model_notes.iter_mut()) {
            (n.start_ms, n.end_ms) = (
                song_ms(&song, bpm, n.start_ms),
                song_ms(&song, bpm, n.end_ms),
            );
        }
    }
    let mut both = duet(&heard, &report, bpm, programs);
    if tempo_changes {
        both = on_tempo_map(both, &song);
    }
    write_song(&both, &a.out)?;
    if let Some(png) = &a.png {
        draw(&a, &both, png)?;
    }
    let what = match a.mode {
        LiveMode::Respond => format!(
            "{} answers, {} cut short by the performer",
            report.responses.len(),
            report.responses.iter().filter(|r| r.interrupted).count()
        ),
        LiveMode::Accompany => format!(
            "{} revisions of the look-ahead, {} re-chosen notes ({} replaced)",
            report.stats.revisions, report.stats.rechosen, report.stats.replaced
        ),
    };
    eprintln!(
        "staria: wrote {} ({} performer notes on channel {}, {} model notes on channel {}{model_voice}; {what}; {} collisions, {} context rebases)",
        a.out.display(),
        perf.notes.len(),
        PERFORMER_CHANNEL + 1,
        report.model_notes.len(),
        MODEL_CHANNEL + 1,
        report.collisions,
        report.stats.rebases
    );
    Ok(())
}

/// The General MIDI program of each part (see the module notes).
#[derive(Debug, Clone, Copy)]
pub(crate) struct Programs {
    pub(crate) performer: u8,
    pub(crate) model: u8,
}

/// The performer and the model in one song at `bpm`, each on its own channel (and track) with
/// its program.
pub(crate) fn duet(perf: &Performance, report: &SimReport, bpm: f64, programs: Programs) -> Song {
    let to_note = |n: &TimedNote, channel: u8| Note {
        pitch: n.pitch,
        velocity: n.velocity.max(1),
        channel,
        program: if channel == MODEL_CHANNEL {
            programs.model
        } else {
            programs.performer
        },
        start_tick: 0,
        end_tick: 0,
        start_ms: n.start_ms,
        end_ms: n.end_ms,
    };
    let mut notes: Vec<Note> = perf
        .notes
        .iter()
        .map(|n| to_note(n, PERFORMER_CHANNEL))
        .chain(report.model_notes.iter().map(|n| to_note(n, MODEL_CHANNEL)))
        .collect();
    notes.sort_by(|a, b| {
        a.start_ms
            .total_cmp(&b.start_ms)
            .then(a.channel.cmp(&b.channel))
    });
    Song::from_ms_notes(notes, Vec::new(), bpm)
}

/// `song` (notes in ms on `file`'s time line) with `file`'s tempo map, time signatures and
/// ticks per quarter, its notes' ticks read from that map.
fn on_tempo_map(mut song: Song, file: &Song) -> Song {
    song.ticks_per_quarter = file.ticks_per_quarter;
    song.tempo_map = file.tempo_map.clone();
    song.time_signatures = file.time_signatures.clone();
    for n in &mut song.notes {
        n.start_tick = file.ms_to_tick(n.start_ms);
        n.end_tick = file.ms_to_tick(n.end_ms).max(n.start_tick + 1);
    }
    song
}

/// The performer above the model (the parts of `both`, the written duet), one piano roll each
/// (`staria render`'s drawing).
fn draw(a: &LiveArgs, both: &Song, png: &std::path::Path) -> Result<(), Failure> {
    let part = |channel: u8| {
        let mut song = both.clone();
        song.notes.retain(|n| n.channel == channel);
        song
    };
    let (performer, model) = (part(PERFORMER_CHANNEL), part(MODEL_CHANNEL));
    let name = a.performer.file_name().map_or_else(
        || a.performer.display().to_string(),
        |n| n.to_string_lossy().into_owned(),
    );
    let mode = match a.mode {
        LiveMode::Respond => "response",
        LiveMode::Accompany => "accompaniment",
    };
    let titles = (
        format!("performer: {name}"),
        format!("staria live {mode} (seed {})", a.sample.seed),
    );
    staria_engine::render::render_png(
        png,
        &[(titles.0.as_str(), &performer), (titles.1.as_str(), &model)],
        &staria_engine::render::RenderOptions::default(),
    )
    .map_err(|e| Failure {
        code: 1,
        msg: e.to_string(),
    })?;
    eprintln!("staria: drew {}", png.display());
    Ok(())
}
