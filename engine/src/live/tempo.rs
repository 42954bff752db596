//! Tempo changes during a live session.
//!
//! **Session time is musical time**: session ms are host beats times the beat length of the
//! session's reference tempo ([`LiveSettings::bpm`], the host's tempo when the session
//! started). The drivers convert both ways at that one tempo (`outbox::BeatClock` on the engine
//! thread), so when the host's tempo changes during a session (tempo automation, or the tempo
//! changed while the audio clock runs with the transport stopped) everything the session
//! measures in beats follows the new tempo by construction: the model's beat grid, the
//! handover silence, an answer's bars, the accompaniment's look-ahead, the bar lines a rebase
//! starts from. Nothing is re-encoded, no cached or planned note moves in session time, and
//! every note lands on the beat it was sampled for. The model hears the performance, and
//! plays, as at the reference tempo: a change stretches the music, it does not re-time it
//! (a model trained on real-time music plays at the host's new tempo what it would have
//! played at the old one).
//!
//! What must stay in real time are the margins that cover compute and delivery:
//! [`LiveSettings::reaction_ms`], [`LiveSettings::commit_ahead_ms`],
//! [`LiveSettings::generate_ahead_ms`], [`LiveSettings::handover_lead_ms`] and
//! [`LiveSettings::rechoose_window_ms`] (how far apart onsets are heard as together). The
//! session keeps them as they were set (real ms) and
//! [`LiveSession::set_host_tempo`] rewrites the settings' copies in session ms: a real ms is
//! `host_bpm / bpm` session ms (at twice the tempo a 50 ms commit window is 100 session ms,
//! still 50 ms of the clock).

use super::{LiveSession, LiveSettings};

/// The settings that are real time (ms of the clock), as the session was started with them.
#[derive(Debug, Clone, Copy, PartialEq)]
pub(super) struct RealMargins {
    reaction_ms: f64,
    commit_ahead_ms: f64,
    generate_ahead_ms: f64,
    handover_lead_ms: f64,
    rechoose_window_ms: f64,
}

impl RealMargins {
    pub(super) fn of(s: &LiveSettings) -> RealMargins {
        RealMargins {
            reaction_ms: s.reaction_ms,
            commit_ahead_ms: s.commit_ahead_ms,
            generate_ahead_ms: s.generate_ahead_ms,
            handover_lead_ms: s.handover_lead_ms,
            rechoose_window_ms: s.rechoose_window_ms,
        }
    }
}

impl LiveSession {
    /// The host's tempo is now `host_bpm` (the drivers call it whenever they read the
    /// transport; cheap when nothing changed). Session time stays beats at the reference tempo
    /// (see the module notes); the real-time margins in [`LiveSession::settings`] are rescaled
    /// so they stay the same time on the clock. A tempo that is not a positive finite number
    /// is ignored.
    pub fn set_host_tempo(&mut self, host_bpm: f64) {
        if !(host_bpm.is_finite() && host_bpm > 0.0) || host_bpm == self.host_bpm {
            return;
        }
        self.host_bpm = host_bpm;
        let speed = self.speed();
        let m = self.real_margins;
        self.settings.reaction_ms = m.reaction_ms * speed;
        self.settings.commit_ahead_ms = m.commit_ahead_ms * speed;
        self.settings.generate_ahead_ms = m.generate_ahead_ms * speed;
        self.settings.handover_lead_ms = m.handover_lead_ms * speed;
        self.settings.rechoose_window_ms = m.rechoose_window_ms * speed;
    }

    /// The host's tempo as last told ([`LiveSession::set_host_tempo`]; the reference tempo
    /// until then).
    pub fn host_bpm(&self) -> f64 {
        self.host_bpm
    }

    /// Session ms per real ms: the host's tempo over the reference tempo.
    pub fn speed(&self) -> f64 {
        self.host_bpm / self.settings.bpm
    }
}

#[cfg(test)]
mod tests {
    use super::super::{LiveEvent, LiveMode, LiveSession, LiveSettings};
    use crate::generate::{Generator, Snippets};
    use candle_core::Device;

    fn generator() -> (tempfile::TempDir, Generator) {
        let dir = tempfile::tempdir().unwrap();
        staria_test_support::tiny_checkpoint(dir.path(), "live-tempo-tiny");
        let g = Generator::load(dir.path(), &Device::Cpu).unwrap();
        (dir, g)
    }

    /// The margins follow the clock, the musical settings stay in beats.
    #[test]
    fn a_tempo_change_rescales_the_real_time_margins_only() {
        let (_dir, mut g) = generator();
        let settings = LiveSettings::new(LiveMode::Accompany, 120.0);
        let mut s = LiveSession::start(&mut g, &Snippets::default(), settings.clone()).unwrap();
        assert_eq!(s.host_bpm(), 120.0);
        s.set_host_tempo(180.0);
        assert_eq!(s.speed(), 1.5);
        let now = s.settings();
        assert_eq!(now.commit_ahead_ms, settings.commit_ahead_ms * 1.5);
        assert_eq!(now.reaction_ms, settings.reaction_ms * 1.5);
        assert_eq!(now.generate_ahead_ms, settings.generate_ahead_ms * 1.5);
        assert_eq!(now.handover_lead_ms, settings.handover_lead_ms * 1.5);
        assert_eq!(now.rechoose_window_ms, settings.rechoose_window_ms * 1.5);
        assert_eq!(
            (now.bpm, now.beat_ms(), now.lookahead_beats, now.keep_ms),
            (120.0, 500.0, settings.lookahead_beats, settings.keep_ms),
            "session time stays beats at the reference tempo"
        );
        for bad in [0.0, -3.0, f64::NAN, f64::INFINITY] {
            s.set_host_tempo(bad);
            assert_eq!(s.host_bpm(), 180.0);
        }
        s.set_host_tempo(60.0);
        assert_eq!(s.settings().commit_ahead_ms, settings.commit_ahead_ms * 0.5);
    }

    /// An answer after the host slowed to half the reference tempo: its notes are handed out
    /// the real commit window (50 ms of the clock, 25 session ms) before they start, and it
    /// keeps to its bars and its first beat in session time, which is beats.
    #[test]
    fn an_answer_at_a_new_tempo_keeps_its_bars_and_commits_in_real_time() {
        let (_dir, mut g) = generator();
        let mut settings = LiveSettings::new(LiveMode::Respond, 120.0);
        settings.handover_silence_beats = None;
        settings.sampling.seed = 11;
        let bar = settings.bar_ms();
        let mut s = LiveSession::start(&mut g, &Snippets::default(), settings).unwrap();
        let mut events = Vec::new();
        let mut out = |e| events.push(e);
        for k in 0..8 {
            let t = k as f64 * 250.0;
            s.note_on(&mut g, 60 + k as u8, 80, t, &mut out).unwrap();
            s.note_off(&mut g, 60 + k as u8, t + 200.0, &mut out)
                .unwrap();
        }
        s.set_host_tempo(60.0);
        let commit = s.settings().commit_ahead_ms;
        assert_eq!(commit, 25.0);
        let at = 2_100.0;
        assert!(s.handover(&mut g, at, &mut out).unwrap());
        let mut now = at;
        while s.is_responding() {
            now += 1.0;
            let mut due = Vec::new();
            s.advance(&mut g, now, &mut |e| due.push(e)).unwrap();
            for e in due {
                if let LiveEvent::Play(n) = e {
                    assert!(
                        n.start_ms >= now - 1.0 + commit - 1e-9 && n.start_ms <= now + commit,
                        "note at {} handed out at {now}",
                        n.start_ms
                    );
                }
                events.push(e);
            }
            assert!(now < at + 3.0 * bar, "the answer never ended");
        }
        let notes: Vec<_> = events
            .iter()
            .filter_map(|e| match e {
                LiveEvent::Play(n) => Some(*n),
                _ => None,
            })
            .collect();
        assert!(!notes.is_empty());
        assert!(notes[0].start_ms >= at && notes[0].start_ms < at + 500.0);
        assert!(
            notes.iter().all(|n| n.start_ms < at + 2.0 * bar),
            "the answer is two bars of reference beats: {notes:?}"
        );
    }
}
