//! Unit tests of the live modes on a tiny untrained model whose tokenizer has two instruments,
//! the two-voice layout `["piano", "bass"]`: the performer is always piano (instrument 0,
//! whatever program its MIDI had), the accompaniment without a ghost melody samples only bass
//! (instrument 1) and goes back into the cache as bass after every revision and rebase, and an
//! answer (call and response) samples only piano (the ghost melody: `ghost_tests.rs`). The
//! tests decode the tokens in the model's cache after every call, not only the notes played.

use super::sim::Performance;
use super::*;
use crate::generate::{Generator, Snippets};
use candle_core::Device;
use staria_models::Note;
use staria_models::tokenizer::{StreamDecoder, StreamEvent, TokenizerConfig};

/// The layouts a two-voice model may read: legacy and section windows (the one
/// `trainer/configs/tokenizer-two-voice.json` asks for).
pub(super) const LAYOUTS: [bool; 2] = [false, true];

pub(super) fn two_voice_generator(section_windows: bool) -> (tempfile::TempDir, Generator) {
    let dir = tempfile::tempdir().unwrap();
    staria_test_support::tiny_checkpoint_with(
        dir.path(),
        "live-two-voices",
        TokenizerConfig {
            instruments: vec!["piano".into(), "bass".into()],
            section_windows,
            ..TokenizerConfig::default()
        },
    );
    let g = Generator::load(dir.path(), &Device::Cpu).unwrap();
    assert_eq!(g.tokenizer().accompaniment_instrument(), Some(1));
    (dir, g)
}

/// A note the cache holds after the session's prompt, in session ms.
#[derive(Debug, Clone, Copy)]
pub(super) struct CachedNote {
    pub(super) instrument: u8,
    pub(super) pitch: u8,
    pub(super) start_ms: f64,
}

/// Decodes the cache from the prompt's end, as the session's grammar state is replayed.
pub(super) fn cached_notes(g: &Generator, s: &LiveSession) -> Vec<CachedNote> {
    let tok = g.tokenizer();
    let mut dec = StreamDecoder::new();
    let mut out = Vec::new();
    for &id in &g.cached_tokens().unwrap()[s.body_start..] {
        if let Some(StreamEvent::Note {
            instrument,
            pitch,
            start_ms,
            ..
        }) = dec.push(tok, id)
        {
            out.push(CachedNote {
                instrument,
                pitch,
                start_ms: start_ms + s.origin_ms,
            });
        }
    }
    out
}

/// Plays `notes` into `s` on a 10 ms clock up to `until_ms` (note-offs first at equal times;
/// `advance` at every tick) and calls `check` after every call. Returns the session's events.
pub(super) fn drive(
    g: &mut Generator,
    s: &mut LiveSession,
    notes: &[TimedNote],
    until_ms: f64,
    check: &mut dyn FnMut(&Generator, &LiveSession),
) -> Vec<LiveEvent> {
    let mut calls: Vec<(f64, bool, TimedNote)> = notes
        .iter()
        .flat_map(|n| [(n.start_ms, true, *n), (n.end_ms, false, *n)])
        .collect();
    calls.sort_by(|a, b| a.0.total_cmp(&b.0).then(a.1.cmp(&b.1)));
    let mut events = Vec::new();
    let mut out = |e| events.push(e);
    let mut next = 0;
    let mut t = 0.0;
    while t <= until_ms {
        while next < calls.len() && calls[next].0 <= t {
            let (at, on, n) = calls[next];
            if on {
                s.note_on(g, n.pitch, n.velocity, at, &mut out).unwrap();
            } else {
                s.note_off(g, n.pitch, at, &mut out).unwrap();
            }
            check(g, s);
            next += 1;
        }
        s.advance(g, t, &mut out).unwrap();
        check(g, s);
        t += 10.0;
    }
    events
}

/// The notes played that no later [`LiveEvent::Cut`] reached (a note re-chosen at a
/// performer's note, `rechoose`, is taken out of the cache; the others stay in it).
pub(super) fn kept(events: &[LiveEvent]) -> Vec<TimedNote> {
    let cut = |i: usize, n: &TimedNote| {
        events[i + 1..].iter().any(|e| {
            matches!(*e, LiveEvent::Cut { pitch, at_ms } if pitch == n.pitch && at_ms < n.end_ms)
        })
    };
    events
        .iter()
        .enumerate()
        .filter_map(|(i, e)| match e {
            LiveEvent::Play(n) if !cut(i, n) => Some(*n),
            _ => None,
        })
        .collect()
}

pub(super) fn played(events: &[LiveEvent]) -> Vec<TimedNote> {
    events
        .iter()
        .filter_map(|e| match e {
            LiveEvent::Play(n) => Some(*n),
            _ => None,
        })
        .collect()
}

/// The performer (pitches 64 and up, from a MIDI part on an electric-bass program) is fed as
/// piano note by note; every note the model samples is a bass note in the voice's range
/// (36..=59), before and after each revision; every note handed out is in the cache as bass
/// (unless cut: a note re-chosen at a performer's note is taken out).
#[test]
fn the_accompaniment_samples_and_feeds_back_only_the_accompaniment_instrument() {
    for layout in LAYOUTS {
        let (_dir, mut g) = two_voice_generator(layout);
        let melody: Vec<Note> = (0..40)
            .map(|k| {
                let s = k as f64 * 300.0;
                Note {
                    pitch: 64 + (k % 12) as u8,
                    velocity: 80,
                    channel: 1,
                    program: 33,
                    start_tick: 0,
                    end_tick: 0,
                    start_ms: s,
                    end_ms: s + 250.0,
                }
            })
            .collect();
        let song = staria_models::Song::from_ms_notes(melody, Vec::new(), 120.0);
        let perf = Performance::from_song(&song).unwrap();
        assert_eq!(perf.notes.len(), 40);
        let mut settings = LiveSettings::new(LiveMode::Accompany, 120.0);
        settings.sampling.seed = 9;
        // The accompaniment alone (the ghost melody's predictions are `ghost_tests`').
        settings.ghost_melody = false;
        let mut s = LiveSession::start(&mut g, &Snippets::default(), settings).unwrap();
        assert_eq!(s.model_instrument(), 1);
        let mut checks = 0usize;
        let mut most_bass = 0usize;
        let events = drive(
            &mut g,
            &mut s,
            &perf.notes,
            perf.end_ms() + 1000.0,
            &mut |g, s| {
                let cached = cached_notes(g, s);
                let mut piano = 0;
                for n in &cached {
                    match n.instrument {
                        0 => {
                            assert!(n.pitch >= 64, "a model note fed as piano: {n:?}");
                            piano += 1;
                        }
                        1 => assert!((36..=59).contains(&n.pitch), "{n:?} outside the voice"),
                        _ => panic!("a third instrument: {n:?}"),
                    }
                }
                assert_eq!(
                    piano,
                    s.stats().absorbed_notes,
                    "every performer note is in the cache once, as piano"
                );
                most_bass = most_bass.max(cached.len() - piano);
                checks += 1;
            },
        );
        assert!(checks > 1000);
        assert!(most_bass > 0, "the model never sampled a note");
        assert_eq!(s.stats().rebases, 0);
        assert_eq!(s.stats().absorbed_notes, 40);
        let played = kept(&events);
        assert!(!played.is_empty());
        let cached = cached_notes(&g, &s);
        for p in &played {
            assert!(
                cached.iter().any(|c| c.instrument == 1
                    && c.pitch == p.pitch
                    && (c.start_ms - p.start_ms).abs() <= 10.0),
                "{p:?} was handed out but is not in the cache as bass"
            );
        }
    }
}

/// A performance longer than the context: every rebase feeds the remembered performer notes
/// as piano and the model's as bass again (the cache holds bass notes right after one).
#[test]
fn a_rebase_feeds_each_voice_back_as_its_instrument() {
    for layout in LAYOUTS {
        let (_dir, mut g) = two_voice_generator(layout);
        let notes: Vec<TimedNote> = (0..400)
            .map(|k| {
                let s = k as f64 * 250.0;
                TimedNote {
                    pitch: 60 + (k % 8) as u8 * 2,
                    velocity: 80,
                    start_ms: s,
                    end_ms: s + 200.0,
                }
            })
            .collect();
        let mut settings = LiveSettings::new(LiveMode::Accompany, 120.0);
        settings.keep_ms = 4000.0;
        settings.ghost_melody = false;
        let mut s = LiveSession::start(&mut g, &Snippets::default(), settings).unwrap();
        let mut rebases = 0;
        let mut bass_after_rebase = 0;
        drive(&mut g, &mut s, &notes, 100_500.0, &mut |g, s| {
            let cached = cached_notes(g, s);
            for n in &cached {
                match n.instrument {
                    0 => assert!(n.pitch >= 60, "a model note fed as piano: {n:?}"),
                    1 => assert!((36..=59).contains(&n.pitch), "{n:?} outside the voice"),
                    _ => panic!("a third instrument: {n:?}"),
                }
            }
            if s.stats().rebases > rebases {
                rebases = s.stats().rebases;
                bass_after_rebase += cached.iter().filter(|n| n.instrument == 1).count();
            }
            assert!(g.position() < g.max_seq_len());
        });
        assert!(rebases > 0, "400 notes fit a 512-token context?");
        assert!(
            bass_after_rebase > 0,
            "no rebase fed a model note back ({rebases} rebases)"
        );
    }
}

/// Call and response: the answer continues the performer's phrase, so it samples piano only.
#[test]
fn an_answer_samples_only_the_performers_instrument() {
    let (_dir, mut g) = two_voice_generator(true);
    let mut settings = LiveSettings::new(LiveMode::Respond, 120.0);
    settings.handover_silence_beats = None;
    settings.sampling.seed = 5;
    let mut s = LiveSession::start(&mut g, &Snippets::default(), settings).unwrap();
    assert_eq!(s.model_instrument(), 0);
    let call: Vec<TimedNote> = (0..8)
        .map(|k| {
            let s = k as f64 * 250.0;
            TimedNote {
                pitch: 60 + k as u8,
                velocity: 80,
                start_ms: s,
                end_ms: s + 200.0,
            }
        })
        .collect();
    let only_piano = &mut |g: &Generator, s: &LiveSession| {
        for n in cached_notes(g, s) {
            assert_eq!(n.instrument, 0, "{n:?}");
        }
    };
    let mut events = drive(&mut g, &mut s, &call, 2000.0, only_piano);
    assert!(s.handover(&mut g, 2000.0, &mut |e| events.push(e)).unwrap());
    only_piano(&g, &s);
    let mut t = 2000.0;
    while t < 6000.0 {
        s.advance(&mut g, t, &mut |e| events.push(e)).unwrap();
        only_piano(&g, &s);
        t += 10.0;
    }
    assert!(!played(&events).is_empty(), "the answer played nothing");
    let cached = cached_notes(&g, &s);
    assert!(cached.len() > call.len(), "the answer is not in the cache");
}

/// At one instant the performer's note goes into the cache before the model's (the order the
/// encoder writes a two-voice piece in), also when the model's note was handed out first.
#[test]
fn at_one_instant_the_performers_note_comes_first() {
    for layout in LAYOUTS {
        let (_dir, mut g) = two_voice_generator(layout);
        let mut settings = LiveSettings::new(LiveMode::Accompany, 120.0);
        settings.sampling.seed = 2;
        // The untrained model's bass is rare beside a predicted melody.
        settings.ghost_melody = false;
        let mut s = LiveSession::start(&mut g, &Snippets::default(), settings).unwrap();
        let mut events = Vec::new();
        s.note_on(&mut g, 72, 80, 0.0, &mut |e| events.push(e))
            .unwrap();
        let mut t = 0.0;
        let model = loop {
            assert!(t < 10_000.0, "the model never played");
            events.clear();
            s.advance(&mut g, t, &mut |e| events.push(e)).unwrap();
            if let Some(n) = played(&events).into_iter().find(|n| n.start_ms > t) {
                break n;
            }
            t += 10.0;
        };
        // A third above the model's note (consonant: it is not re-chosen, `rechoose`).
        let q = 64 + (model.pitch + 4) % 12;
        s.note_on(&mut g, q, 80, model.start_ms, &mut |e| events.push(e))
            .unwrap();
        let at: Vec<CachedNote> = cached_notes(&g, &s)
            .into_iter()
            .filter(|n| (n.start_ms - model.start_ms).abs() < 1.0)
            .collect();
        assert!(at.len() >= 2, "{at:?} at {model:?}");
        assert_eq!((at[0].instrument, at[0].pitch), (0, q), "{at:?}");
        assert!(
            at[1..]
                .iter()
                .any(|n| n.instrument == 1 && n.pitch == model.pitch),
            "{model:?} is not fed again after the performer's note: {at:?}"
        );
    }
}

/// A one-instrument model is unchanged: its one instrument is both voices.
#[test]
fn a_one_instrument_model_keeps_its_one_voice() {
    let dir = tempfile::tempdir().unwrap();
    staria_test_support::tiny_checkpoint(dir.path(), "live-one-voice");
    let mut g = Generator::load(dir.path(), &Device::Cpu).unwrap();
    assert_eq!(g.tokenizer().accompaniment_instrument(), None);
    for mode in [LiveMode::Accompany, LiveMode::Respond] {
        let s = LiveSession::start(&mut g, &Snippets::default(), LiveSettings::new(mode, 120.0))
            .unwrap();
        assert_eq!(s.model_instrument(), 0, "{mode:?}");
    }
}
