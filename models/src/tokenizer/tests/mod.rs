use super::*;
use crate::song::{Note, Section, Song, TempoChange};

mod augment;
mod decode;
mod encode;
mod vocab;
mod windows;

/// The default (legacy) layout, which most tests here pin; `windows_tok` has section windows.
fn tok() -> Tokenizer {
    Tokenizer::new(legacy()).unwrap()
}

fn legacy() -> TokenizerConfig {
    TokenizerConfig::default()
}

fn windows_tok() -> Tokenizer {
    Tokenizer::new(TokenizerConfig {
        section_windows: true,
        ..TokenizerConfig::default()
    })
    .unwrap()
}

fn note(pitch: u8, velocity: u8, start_ms: f64, dur_ms: f64) -> Note {
    Note {
        pitch,
        velocity,
        channel: 0,
        program: 0,
        start_tick: 0,
        end_tick: 0,
        start_ms,
        end_ms: start_ms + dur_ms,
    }
}

fn drum(pitch: u8, start_ms: f64) -> Note {
    Note {
        channel: 9,
        ..note(pitch, 100, start_ms, 50.0)
    }
}

fn section(label: SectionLabel, start_ms: f64, end_ms: f64) -> Section {
    Section {
        label,
        marker_text: label.to_string(),
        start_tick: 0,
        end_tick: 0,
        start_ms,
        end_ms,
    }
}

fn song(notes: Vec<Note>, sections: Vec<Section>) -> Song {
    Song {
        ticks_per_quarter: 480,
        tempo_map: vec![TempoChange {
            tick: 0,
            us_per_quarter: 500_000,
        }],
        time_signatures: vec![],
        notes,
        sections,
    }
}

fn strs(t: &Tokenizer, ids: &[u32]) -> String {
    t.to_strings(ids).join(" ")
}

fn ids(t: &Tokenizer, s: &str) -> Vec<u32> {
    t.ids_of(&s.split_whitespace().collect::<Vec<_>>()).unwrap()
}

fn err_text<T: std::fmt::Debug>(r: Result<T>) -> String {
    match r {
        Err(Error::Tokenizer(m)) => m,
        other => panic!("expected a tokenizer error, got {other:?}"),
    }
}

/// The worked example of the layout: two windows, drums, two sections, `<D>`.
fn example() -> Song {
    song(
        vec![
            note(60, 80, 0.0, 500.0),
            note(64, 64, 1003.0, 497.0),
            drum(36, 6000.0),
            note(67, 100, 6000.0, 2000.0),
            drum(20, 6500.0), // no drum token below 27: dropped
        ],
        vec![
            section(SectionLabel::A, 0.0, 5000.0),
            section(SectionLabel::B, 5000.0, 9000.0),
        ],
    )
}

const EXAMPLE_TOKENS: &str = "<S> <A_SECTION> piano:60:80 onset:0 dur:500 piano:64:60 onset:1000 dur:500 \
     <T> <D> <B_SECTION> drum:36 onset:1000 piano:67:100 onset:1000 dur:2000 <E>";

// ---- Section windows ----

const EXAMPLE_WINDOWS: &str = "<S> onset:0 <A_SECTION> piano:60:80 onset:0 dur:500 \
     piano:64:60 onset:1000 dur:500 <T> onset:0 <B_SECTION> <D> drum:36 onset:1000 \
     piano:67:100 onset:1000 dur:2000 <E>";
