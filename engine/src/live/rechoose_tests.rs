//! Unit tests of the re-choice of clashing notes (`rechoose` module) on tiny untrained models
//! (one instrument, and the two-voice layout): their choices are random, so clashes are
//! frequent and the tests check the rules every choice must keep.

use super::outbox::{BeatClock, Outbox};
use super::sim::Sounded;
use super::tests::generator;
use super::two_voice_tests::two_voice_generator;
use super::*;
use crate::generate::{Generator, Snippets};
use crate::messages::Event;

/// A melody at 120 bpm: eighths and quarters for eight seconds, one note at a time.
fn melody() -> Vec<TimedNote> {
    let pitches = [67u8, 69, 71, 72, 74, 72, 71, 69, 66, 64, 67, 71];
    let mut t = 0.0;
    let mut out = Vec::new();
    for k in 0..24 {
        let len = if k % 3 == 2 { 500.0 } else { 250.0 };
        out.push(TimedNote {
            pitch: pitches[k % pitches.len()],
            velocity: 80,
            start_ms: t,
            end_ms: t + len - 20.0,
        });
        t += len;
    }
    out
}

/// The accompaniment's defaults, except a re-choice window of 200 ms: the tiny models place
/// onsets at random, so few would fall within the default 50 ms of a performer's onset.
fn settings(consonant: bool, seed: u64) -> LiveSettings {
    let mut s = LiveSettings::new(LiveMode::Accompany, 120.0);
    s.consonant = consonant;
    s.sampling.seed = seed;
    s.rechoose_window_ms = 200.0;
    s
}

/// What a performance gave: every event with the session time of the call that sent it, and
/// the replacements with the `now` of the call that sampled them and the notes they replace.
#[derive(Default)]
struct Run {
    events: Vec<(f64, LiveEvent)>,
    replacements: Vec<(f64, TimedNote, Vec<rechoose::Rechoice>)>,
    /// Notes taken back that had room for a replacement (over a 32nd note left after the
    /// latest time it may start at) and got none.
    unreplaced: usize,
    stats: LiveStats,
}

/// Plays `perf` into a fresh session on a 10 ms clock (note-offs first at equal times,
/// `advance` at every tick, as `sim` does) and a bar on.
fn run(g: &mut Generator, settings: LiveSettings, perf: &[TimedNote]) -> Run {
    let mut s = LiveSession::start(g, &Snippets::default(), settings).unwrap();
    let mut calls: Vec<(f64, bool, TimedNote)> = perf
        .iter()
        .flat_map(|n| [(n.start_ms, true, *n), (n.end_ms, false, *n)])
        .collect();
    calls.sort_by(|a, b| a.0.total_cmp(&b.0).then(a.1.cmp(&b.1)));
    let end = perf.iter().map(|n| n.end_ms).fold(0.0, f64::max) + s.settings.bar_ms();
    let mut r = Run::default();
    let (mut next, mut t) = (0, 0.0);
    while t <= end {
        let mut got = Vec::new();
        while next < calls.len() && calls[next].0 <= t {
            let (at, on, n) = calls[next];
            if on {
                s.note_on(g, n.pitch, n.velocity, at, &mut |e| got.push(e))
                    .unwrap();
            } else {
                s.note_off(g, n.pitch, at, &mut |e| got.push(e)).unwrap();
            }
            r.events.extend(got.drain(..).map(|e| (at, e)));
            next += 1;
        }
        let pending = s.rechoices.clone();
        let (fed_before, replaced_before) = (s.fed.len(), s.stats.replaced);
        s.advance(g, t, &mut |e| got.push(e)).unwrap();
        // The replacements are the first notes an advance samples.
        let new = s.stats.replaced - replaced_before;
        if !pending.is_empty() && s.rechoices.is_empty() {
            let latest = t + s.settings.reaction_ms + s.settings.commit_ahead_ms + 10.0;
            let room = pending
                .iter()
                .filter(|p| {
                    p.note.end_ms - p.note.start_ms.max(latest) >= s.settings.beat_ms() / 8.0
                })
                .count();
            r.unreplaced += room.saturating_sub(new);
        }
        for f in &s.fed[fed_before..fed_before + new] {
            r.replacements.push((t, f.note, pending.clone()));
        }
        r.events.extend(got.drain(..).map(|e| (t, e)));
        t += 10.0;
    }
    r.stats = s.stats.clone();
    r
}

/// The model's notes as they sound (cuts applied, as `sim` applies them; notes cut before
/// their start left out).
fn sounded(events: &[(f64, LiveEvent)]) -> Vec<TimedNote> {
    let mut sounded = Sounded::default();
    for (_, e) in events {
        match *e {
            LiveEvent::Play(n) => sounded.play(n),
            LiveEvent::Cut { pitch, at_ms } => sounded.cut(pitch, at_ms),
            _ => {}
        }
    }
    sounded.into_notes()
}

/// Model notes sounding at a performer's onset that started within the re-choice window
/// before it (or with it) and are dissonant with it: (model pitch, performer pitch, start).
fn clashes_at_onsets(notes: &[TimedNote], perf: &[TimedNote], window: f64) -> Vec<(u8, u8, f64)> {
    let mut bad = Vec::new();
    for m in notes {
        for p in perf {
            if (p.start_ms - window..=p.start_ms).contains(&m.start_ms)
                && m.end_ms > p.start_ms
                && sample::dissonant(m.pitch, p.pitch)
            {
                bad.push((m.pitch, p.pitch, m.start_ms));
            }
        }
    }
    bad
}

/// With `consonant` on, no model note that started within the window before a performer's
/// onset, or with it, still sounds there dissonant with it (the voice, 36..=59, always has a
/// consonant pitch); with it off the same check finds clashes (it can fail). Every replacement
/// starts no earlier than its note did nor than `reaction_ms` after the call that sampled it,
/// ends where its note ended (to the tokenizer's 10 ms step) and is consonant with the
/// performer's pitch, and every note taken back with room left is replaced (the polyphony
/// limit, which counts the performer's new note, does not stop it). One instrument and two
/// voices alike.
#[test]
fn clashing_notes_at_a_performer_onset_are_re_chosen_later_and_consonant() {
    let perf = melody();
    let (_d1, mut one) = generator();
    let (_d2, mut two) = two_voice_generator(true);
    let mut replaced = 0;
    for (name, g) in [("one voice", &mut one), ("two voices", &mut two)] {
        let mut off_clashes = 0;
        for seed in 1..=3 {
            let on = settings(true, seed);
            let (window, reaction) = (on.rechoose_window_ms, on.reaction_ms);
            let r = run(g, on, &perf);
            let bad = clashes_at_onsets(&sounded(&r.events), &perf, window);
            assert!(bad.is_empty(), "{name}, seed {seed}: {bad:?}");
            assert!(r.stats.replaced <= r.stats.rechosen);
            assert_eq!(
                r.unreplaced, 0,
                "{name}, seed {seed}: notes with room not replaced"
            );
            for (now, n, pending) in &r.replacements {
                assert!(
                    n.start_ms >= now + reaction - 1e-6,
                    "{name}: {n:?} at {now}"
                );
                let of = pending
                    .iter()
                    .find(|p| (p.note.end_ms - n.end_ms).abs() <= 5.0 + 1e-6)
                    .unwrap_or_else(|| panic!("{name}: {n:?} replaces none of {pending:?}"));
                assert!(
                    n.start_ms >= of.note.start_ms - 1e-6,
                    "{name}: {n:?} {of:?}"
                );
                assert!(
                    !sample::dissonant(n.pitch, of.against),
                    "{name}: {n:?} {of:?}"
                );
                assert_ne!(n.pitch, of.against);
            }
            replaced += r.replacements.len();
            let r = run(g, settings(false, seed), &perf);
            assert_eq!((r.stats.rechosen, r.stats.replaced), (0, 0));
            off_clashes += clashes_at_onsets(&sounded(&r.events), &perf, window).len();
        }
        assert!(
            off_clashes > 0,
            "{name}: no clash even with the setting off"
        );
    }
    assert!(
        replaced > 0,
        "no note was ever replaced: the checks above saw nothing"
    );
}

/// A `Cut` reaches only notes it was meant for: every model note it drops whole (cut before it
/// started) or shortens clashes with (or doubles) a performer note struck at its cut, within
/// the window before the note's start; and through the engine thread's outbox every note-on
/// pushed gets its note-off or a retraction, none twice (no hanging note), and the notes
/// left sounding are the session's (a note cut at or before its start is retracted, never a
/// blip: fails with the note-off a 128th of a beat after its start the outbox sent before).
#[test]
fn cuts_reach_only_clashing_notes_and_every_note_ends() {
    let perf = melody();
    let (_dir, mut g) = generator();
    let (mut cut_any, mut retracted) = (false, 0);
    for seed in 1..=3 {
        let s = settings(true, seed);
        let (window, commit) = (s.rechoose_window_ms, s.commit_ahead_ms);
        let r = run(&mut g, s, &perf);
        let plays: Vec<TimedNote> = r
            .events
            .iter()
            .filter_map(|(_, e)| match e {
                LiveEvent::Play(n) => Some(*n),
                _ => None,
            })
            .collect();
        let kept = sounded(&r.events);
        for n in &plays {
            let now = kept
                .iter()
                .find(|k| k.pitch == n.pitch && k.start_ms == n.start_ms);
            if now.is_some_and(|k| k.end_ms == n.end_ms) {
                continue;
            }
            cut_any = true;
            // Cut at the performer's onset (or at the note's start after it).
            let cut_at = now.map_or(n.start_ms, |k| k.end_ms);
            let meant = perf.iter().any(|p| {
                (sample::dissonant(n.pitch, p.pitch) || n.pitch == p.pitch)
                    && (p.start_ms == cut_at
                        || (n.start_ms == cut_at
                            && (p.start_ms..=p.start_ms + commit).contains(&n.start_ms)))
                    && n.start_ms >= p.start_ms - window
            });
            assert!(
                meant,
                "seed {seed}: {n:?} cut at {cut_at} for no performer note"
            );
        }
        // The engine thread's side (`driver::LiveRun::apply` and `push`), a retraction
        // applied as the audio side applies one it gets before the note-on plays.
        let clock = BeatClock {
            origin_beat: 0.0,
            bpm: 120.0,
        };
        let mut o = Outbox::new(0, 0);
        let mut pushed: Vec<(f64, bool, u8)> = Vec::new();
        let mut take = |ev: Event| {
            match ev {
                Event::Note(n) => pushed.push((n.beat, n.on, n.pitch)),
                Event::Retract(r) => {
                    let i = pushed
                        .iter()
                        .position(|&(b, on, p)| on && b == r.beat && p == r.pitch)
                        .unwrap_or_else(|| panic!("seed {seed}: {r:?} names no note-on"));
                    pushed.remove(i);
                    retracted += 1;
                }
                other => panic!("{other:?}"),
            }
            true
        };
        for (now, e) in &r.events {
            match *e {
                LiveEvent::Play(n) => {
                    o.add(1, n.pitch, 80, clock.beat(n.start_ms), clock.beat(n.end_ms))
                }
                LiveEvent::Cut { pitch, at_ms } => o.cut(pitch, clock.beat(at_ms)),
                _ => {}
            }
            o.pump(clock.beat(now + commit), &mut take);
        }
        o.pump(f64::INFINITY, &mut take);
        assert!(o.is_empty());
        let mut down = [false; 128];
        pushed.sort_by(|a, b| a.0.total_cmp(&b.0).then(a.1.cmp(&b.1)));
        for &(beat, on, p) in &pushed {
            assert_ne!(down[p as usize], on, "seed {seed}: key {p} at beat {beat}");
            down[p as usize] = on;
        }
        assert!(down.iter().all(|d| !d), "seed {seed}: a key left down");
        // What sounds is what the session says sounds: no note cut before its start blips.
        let mut ons: Vec<(f64, u8)> = pushed
            .iter()
            .filter(|e| e.1)
            .map(|&(b, _, p)| (b, p))
            .collect();
        let mut want: Vec<(f64, u8)> = kept
            .iter()
            .map(|k| (clock.beat(k.start_ms), k.pitch))
            .collect();
        ons.sort_by(|a, b| a.0.total_cmp(&b.0).then(a.1.cmp(&b.1)));
        want.sort_by(|a, b| a.0.total_cmp(&b.0).then(a.1.cmp(&b.1)));
        assert_eq!(ons, want, "seed {seed}");
    }
    assert!(cut_any, "no note was cut: the check above saw nothing");
    assert!(retracted > 0, "no pushed note was cut before it started");
}

/// With `consonant` off nothing is taken back: every cut is the performer's own pitch struck
/// at that instant (as before the re-choice), and a rerun gives the same events.
#[test]
fn with_consonant_off_only_the_struck_pitch_is_cut() {
    let perf = melody();
    let (_dir, mut g) = generator();
    let r = run(&mut g, settings(false, 2), &perf);
    assert_eq!((r.stats.rechosen, r.stats.replaced), (0, 0));
    for (_, e) in &r.events {
        if let LiveEvent::Cut { pitch, at_ms } = *e {
            assert!(
                perf.iter().any(|p| p.pitch == pitch && p.start_ms == at_ms),
                "cut of {pitch} at {at_ms}"
            );
        }
    }
    let again = run(&mut g, settings(false, 2), &perf);
    assert_eq!(r.events, again.events);
}

/// The window is checked with the other margins, and its error names it.
#[test]
fn a_bad_window_is_refused_by_name() {
    let mut s = LiveSettings::new(LiveMode::Accompany, 120.0);
    assert_eq!(s.rechoose_window_ms, 50.0);
    for bad in [-1.0, f64::NAN, 1001.0] {
        s.rechoose_window_ms = bad;
        let e = s.validate().unwrap_err();
        assert!(e.contains("re-choice window"), "{e}");
    }
}
