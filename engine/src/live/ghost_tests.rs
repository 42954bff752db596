//! Unit tests of the ghost melody ([`LiveSettings::ghost_melody`]) on the tiny untrained
//! two-voice model (`["piano", "bass"]`): after every call the cache, decoded, holds the
//! performer's notes as piano in playing order, then the predicted piano notes, all after the
//! last performer note (a prediction never stays before a real note that came later); every
//! note handed out is bass, in the voice, and still in the cache at the end (revisions keep
//! what was handed out); the note events the engine's outbox makes of them are paired.

use super::outbox::{BeatClock, Outbox};
use super::two_voice_tests::{
    CachedNote, LAYOUTS, cached_notes, drive, kept, played, two_voice_generator,
};
use super::*;
use crate::generate::{Generator, Snippets};
use crate::messages::Event;

/// A chorale-like melody at 120 bpm: quarters and halves above middle C, legato.
fn melody(notes: usize) -> Vec<TimedNote> {
    let mut t = 0.0;
    (0..notes)
        .map(|k| {
            let len = if k % 5 == 4 { 1000.0 } else { 500.0 };
            let n = TimedNote {
                pitch: 64 + [0u8, 2, 4, 5, 7, 5, 4, 2][k % 8],
                velocity: 80,
                start_ms: t,
                end_ms: t + len - 20.0,
            };
            t += len;
            n
        })
        .collect()
}

fn ghost_settings(seed: u64) -> LiveSettings {
    let mut settings = LiveSettings::new(LiveMode::Accompany, 120.0);
    settings.sampling.seed = seed;
    assert!(!settings.ghost_melody, "off by default");
    settings.ghost_melody = true;
    settings
}

/// The invariants of the module notes, on the cache after one call; returns the number of
/// predictions it holds.
fn check_cache(g: &Generator, s: &LiveSession, perf: &[TimedNote]) -> usize {
    let cached = cached_notes(g, s);
    let absorbed = s.stats().absorbed_notes;
    let piano: Vec<&CachedNote> = cached.iter().filter(|n| n.instrument == 0).collect();
    let predicted = s.fed.iter().filter(|f| f.predicted).count();
    // After a rebase the cache holds the performance from the rebase's bar on.
    let real = piano
        .len()
        .checked_sub(predicted)
        .expect("fewer piano notes than predictions");
    if s.stats().rebases == 0 {
        assert_eq!(real, absorbed, "{piano:?}");
    }
    assert!(real <= absorbed, "{piano:?}");
    // A rebase hands out and feeds the look-ahead's beat before the performer's next notes,
    // which then go in no earlier than its last onset (up to a beat late).
    let late = if s.stats().rebases == 0 { 10.0 } else { 510.0 };
    for (c, p) in piano.iter().zip(&perf[absorbed - real..absorbed]) {
        assert!(
            c.pitch == p.pitch && (-10.0..=late).contains(&(c.start_ms - p.start_ms)),
            "the cache's piano notes are not the performance in order: {c:?} for {p:?}"
        );
    }
    let last_real = absorbed
        .checked_sub(1)
        .map_or(f64::NEG_INFINITY, |i| perf[i].start_ms);
    let predictions = &piano[real..];
    for c in predictions {
        assert!(
            c.start_ms >= last_real - 10.0,
            "a prediction {c:?} before the last performer note ({last_real} ms)"
        );
    }
    for n in cached.iter().filter(|n| n.instrument != 0) {
        assert_eq!(n.instrument, 1, "{n:?}");
        assert!((36..=59).contains(&n.pitch), "{n:?} outside the voice");
    }
    predictions.len()
}

#[test]
fn predictions_stay_in_the_cache_and_never_reach_the_output() {
    for layout in LAYOUTS {
        let (_dir, mut g) = two_voice_generator(layout);
        let perf = melody(40);
        let end = perf.last().unwrap().end_ms;
        let mut s = LiveSession::start(&mut g, &Snippets::default(), ghost_settings(3)).unwrap();
        assert!(s.ghost);
        let mut most_predictions = 0;
        let mut checks = 0;
        let events = drive(&mut g, &mut s, &perf, end + 4000.0, &mut |g, s| {
            most_predictions = most_predictions.max(check_cache(g, s, &perf));
            checks += 1;
        });
        assert!(checks > 1000);
        assert!(most_predictions > 0, "the model never predicted the melody");
        assert_eq!((s.stats().absorbed_notes, s.stats().rebases), (40, 0));
        // Long after the performance every note sampled was handed out: the cache's bass is
        // exactly what was played and not cut, in order (no revision lost a handed-out note;
        // one re-chosen at a performer's note is cut and taken out, `rechoose`).
        let played = kept(&events);
        assert!(!played.is_empty());
        let bass: Vec<CachedNote> = cached_notes(&g, &s)
            .into_iter()
            .filter(|n| n.instrument == 1)
            .collect();
        assert_eq!(bass.len(), played.len(), "{bass:?}\n{played:?}");
        for (c, p) in bass.iter().zip(&played) {
            assert!(
                c.pitch == p.pitch && (c.start_ms - p.start_ms).abs() <= 10.0,
                "{p:?} was handed out, the cache holds {c:?}"
            );
        }
        assert!(s.fed.iter().all(|f| f.committed || f.predicted));
    }
}

/// The events go through the engine's outbox as the driver pushes them: every note-on has its
/// note-off, nothing hangs, nothing sounds the performer's held pitch.
#[test]
fn the_ghost_melodys_accompaniment_is_paired_and_never_collides() {
    let (_dir, mut g) = two_voice_generator(true);
    let perf = melody(32);
    let end = perf.last().unwrap().end_ms;
    let mut s = LiveSession::start(&mut g, &Snippets::default(), ghost_settings(11)).unwrap();
    let events = drive(&mut g, &mut s, &perf, end + 3000.0, &mut |g, s| {
        check_cache(g, s, &perf);
    });
    let clock = BeatClock {
        origin_beat: 0.0,
        bpm: 120.0,
    };
    let mut outbox = Outbox::new(1, 0);
    for e in &events {
        match *e {
            LiveEvent::Play(n) => outbox.add(
                7,
                n.pitch,
                n.velocity,
                clock.beat(n.start_ms),
                clock.beat(n.end_ms),
            ),
            LiveEvent::Cut { pitch, at_ms } => outbox.cut(pitch, clock.beat(at_ms)),
            other => panic!("{other:?} in an accompaniment"),
        }
    }
    let mut pushed = Vec::new();
    // All handed out before any push: nothing to retract.
    outbox.pump(f64::INFINITY, |e| {
        match e {
            Event::Note(n) => pushed.push(n),
            other => panic!("{other:?} for notes cut before they were pushed"),
        }
        true
    });
    assert!(outbox.is_empty());
    assert!(pushed.iter().filter(|e| e.on).count() > 0);
    let mut sounding = [false; 128];
    for e in &pushed {
        assert_eq!(e.channel, 1);
        assert!((36..=59).contains(&e.pitch), "{e:?}");
        assert_ne!(sounding[e.pitch as usize], e.on, "unpaired {e:?}");
        sounding[e.pitch as usize] = e.on;
    }
    assert!(sounding.iter().all(|s| !s), "notes left hanging");
    let model: Vec<TimedNote> = played(&events);
    assert_eq!(sim::count_collisions(&model, &perf), 0);
}

/// A long performance: rebases keep no prediction and feed the voices back as their
/// instruments; the invariants hold throughout.
#[test]
fn rebases_keep_no_prediction() {
    let (_dir, mut g) = two_voice_generator(false);
    let perf = melody(300);
    let end = perf.last().unwrap().end_ms;
    let mut settings = ghost_settings(4);
    settings.keep_ms = 4000.0;
    let mut s = LiveSession::start(&mut g, &Snippets::default(), settings).unwrap();
    let (mut rebases, mut most_predictions) = (0, 0);
    drive(&mut g, &mut s, &perf, end + 500.0, &mut |g, s| {
        most_predictions = most_predictions.max(check_cache(g, s, &perf));
        if s.stats().rebases > rebases {
            rebases = s.stats().rebases;
            assert!(
                s.fed.iter().all(|f| !f.predicted),
                "a rebase fed a prediction"
            );
        }
        assert!(g.position() < g.max_seq_len());
    });
    assert!(rebases > 0, "300 notes fit a 512-token context?");
    assert!(most_predictions > 0);
}

/// Off where it does not apply: call and response, a one-instrument model, the setting off.
#[test]
fn the_ghost_melody_is_only_for_a_two_voice_accompaniment() {
    let (_dir, mut g) = two_voice_generator(true);
    let tok = g.tokenizer().clone();
    assert!(ghost_settings(1).samples_ghost_melody(&tok));
    assert!(!LiveSettings::new(LiveMode::Respond, 120.0).samples_ghost_melody(&tok));
    let mut off = ghost_settings(1);
    off.ghost_melody = false;
    assert!(!off.samples_ghost_melody(&tok));
    let perf = melody(12);
    let mut s = LiveSession::start(&mut g, &Snippets::default(), off).unwrap();
    drive(&mut g, &mut s, &perf, 7000.0, &mut |g, s| {
        assert_eq!(
            check_cache(g, s, &perf),
            0,
            "a prediction with the setting off"
        );
    });
    let dir = tempfile::tempdir().unwrap();
    staria_test_support::tiny_checkpoint(dir.path(), "live-one-voice-ghost");
    let one = Generator::load(dir.path(), &candle_core::Device::Cpu).unwrap();
    assert!(!ghost_settings(1).samples_ghost_melody(one.tokenizer()));
}
