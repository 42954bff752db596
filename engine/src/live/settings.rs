//! [`LiveMode`] and [`LiveSettings`]: what a live session does and how it plays (tempo, bars,
//! look-ahead, voice, reaction and commit windows), with the checks a session starts with.

use staria_models::tokenizer::Tokenizer;

use crate::constraints::Constraints;
use crate::generate::{GenRequest, Target};
use crate::sampling::SamplingParams;

/// What the model does while the musician plays.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum LiveMode {
    /// Listen; answer at a handover; stop when the musician plays again.
    #[default]
    Respond,
    /// Play along as a second voice.
    Accompany,
}

impl LiveMode {
    /// The tokenizer instrument the model plays in this mode: in accompaniment, the
    /// accompaniment instrument when the vocabulary has one
    /// ([`Tokenizer::accompaniment_instrument`], the two-voice layout's bass); otherwise (an
    /// answer continues the performer's phrase, a one-instrument model has one voice) the
    /// performer's ([`Tokenizer::performer_instrument`], 0).
    pub fn model_instrument(self, tok: &Tokenizer) -> u8 {
        match (self, tok.accompaniment_instrument()) {
            (LiveMode::Accompany, Some(accompaniment)) => accompaniment,
            _ => tok.performer_instrument(),
        }
    }
}

impl std::str::FromStr for LiveMode {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s.to_ascii_lowercase().as_str() {
            "respond" | "call-and-response" => Ok(LiveMode::Respond),
            "accompany" => Ok(LiveMode::Accompany),
            _ => Err(format!(
                "unknown live mode {s:?} (expected respond or accompany)"
            )),
        }
    }
}

/// How a live session plays.
#[derive(Debug, Clone, PartialEq)]
pub struct LiveSettings {
    pub mode: LiveMode,
    pub bpm: f64,
    pub beats_per_bar: f64,
    /// Call and response: length of an answer in bars.
    pub response_bars: u32,
    /// Call and response: a silence this long (beats, after the last note-off) hands over;
    /// `None`: only explicit handovers.
    pub handover_silence_beats: Option<f64>,
    /// Call and response: a silence's answer starts this long (real ms) after the silence
    /// handed over, the engine's time to sample its first note (the plugin's
    /// `HANDOVER_LEAD_MS`, which the plugin adds to the handovers it sends).
    pub handover_lead_ms: f64,
    /// Accompaniment: how far ahead the model's notes are generated (beats, at most 1).
    pub lookahead_beats: f64,
    /// Accompaniment: new notes start at least this much after "now"; after a performer's
    /// note the look-ahead planned within this time of it is kept and only what lies beyond
    /// is sampled again (the time a revision may take without a note coming late).
    pub reaction_ms: f64,
    /// A model note is handed out this long before it starts.
    pub commit_ahead_ms: f64,
    /// Call and response: how far ahead of "now" the answer is generated.
    /// (This, `reaction_ms`, `commit_ahead_ms`, `handover_lead_ms` and `rechoose_window_ms`
    /// are real ms: a session rescales them when the host's tempo changes,
    /// `LiveSession::set_host_tempo`.)
    pub generate_ahead_ms: f64,
    /// The model's voice: pitch range, scale, polyphony.
    pub voice: Constraints,
    pub sampling: SamplingParams,
    pub style: Option<String>,
    /// Music kept when the context is rebased (ms).
    pub keep_ms: f64,
    /// Accompaniment with a two-voice model: the look-ahead also samples the performer's
    /// instrument, a predicted ("ghost") melody that is never played, so that the
    /// accompaniment's note at an instant is sampled after the melody's there, the order the
    /// model learnt; every performer note replaces the predictions. Ignored in call and
    /// response and with a one-instrument model. Off by default: on the two-voice run (step
    /// 450) the bass was no more consonant with it and started with the melody less often.
    pub ghost_melody: bool,
    /// Accompaniment: "consonant with the performer". While a model note's pitch is sampled,
    /// the pitches that form a dissonant interval (interval class 1, 2, 6, 10 or 11 semitones,
    /// mod 12) with a pitch the performer holds then are masked, as the held pitches
    /// themselves are; the look-ahead is sampled again at every performer note, so the notes
    /// not yet handed out are re-chosen against it. When every pitch the voice may play then
    /// would be masked, the choice is left unmasked. And at a performer's note, the model's
    /// notes that clash with it although they were chosen before it came (handed out, or
    /// planned within `reaction_ms`; starting at most
    /// [`rechoose_window_ms`](Self::rechoose_window_ms) before it, with it or later) are taken
    /// back and re-chosen: cut ([`super::LiveEvent::Cut`]: in the session one not started
    /// never sounds; the plugin's side, `driver` module notes), and replaced by a note the
    /// model samples under these masks at the same time or, when that is too soon,
    /// `reaction_ms` after the next "now", with the same end (counted in
    /// [`super::LiveStats::rechosen`]). Ignored in call and response. On
    /// by default: on the 16 held-out chorales (`scripts/accompaniment-eval.py`,
    /// baseline-small, `--style chorale`, seeds 1-3) the masks took the onsets consonant with
    /// the melody from 0.56 to 0.59 (from 0.55 to 0.78 for the notes starting under a held
    /// melody note), and the re-choice from 0.59 to 0.76 (from 0.51 to 0.76 for the notes
    /// starting with a melody note, at the price of starting those about 30 ms after it;
    /// BENCHMARKS.md, "The accompaniment's voice leading").
    pub consonant: bool,
    /// Accompaniment with [`consonant`](Self::consonant): how long (real ms) before a
    /// performer's note a model note may have started and still be re-chosen when it clashes
    /// with it; one started earlier stays (a suspension under a moving melody). 50 ms by
    /// default: notes this close are heard as struck together (players in an ensemble are
    /// commonly tens of ms apart on a shared onset), so a replacement reads as the same chord
    /// struck a little late, not as a second attack; and a performer playing up to 50 ms late
    /// against the model's beat is still answered. 0: only notes starting with the
    /// performer's or later.
    pub rechoose_window_ms: f64,
}

impl LiveSettings {
    /// Defaults for a mode at a tempo: answers of 2 bars after 2 beats of silence; an
    /// accompaniment under middle C (36..=59, two voices), one beat ahead.
    pub fn new(mode: LiveMode, bpm: f64) -> LiveSettings {
        let voice = match mode {
            LiveMode::Respond => Constraints {
                max_polyphony: Some(4),
                ..Constraints::default()
            },
            LiveMode::Accompany => Constraints {
                pitch_min: 36,
                pitch_max: 59,
                max_polyphony: Some(2),
                ..Constraints::default()
            },
        };
        LiveSettings {
            mode,
            bpm,
            beats_per_bar: 4.0,
            response_bars: 2,
            handover_silence_beats: Some(2.0),
            handover_lead_ms: 30.0,
            lookahead_beats: 1.0,
            reaction_ms: 30.0,
            commit_ahead_ms: 50.0,
            generate_ahead_ms: 1000.0,
            voice,
            sampling: SamplingParams::default(),
            style: None,
            // An accompaniment's rebase must fit in the reaction time of a revision that may
            // follow it: 3 s of two voices is about 80 tokens.
            keep_ms: match mode {
                LiveMode::Respond => 8000.0,
                LiveMode::Accompany => 3000.0,
            },
            ghost_melody: false,
            consonant: true,
            rechoose_window_ms: 50.0,
        }
    }

    /// Whether a session with these settings on a model with this vocabulary samples a ghost
    /// melody ([`LiveSettings::ghost_melody`]): accompaniment with a two-voice model only.
    pub fn samples_ghost_melody(&self, tok: &Tokenizer) -> bool {
        self.ghost_melody
            && self.mode == LiveMode::Accompany
            && self.mode.model_instrument(tok) != tok.performer_instrument()
    }

    pub fn beat_ms(&self) -> f64 {
        60_000.0 / self.bpm
    }

    pub fn bar_ms(&self) -> f64 {
        self.beats_per_bar * self.beat_ms()
    }

    /// Checks every setting; the message names the one at fault.
    pub fn validate(&self) -> Result<(), String> {
        let mut probe = GenRequest::new(Target::Continue, self.response_bars.max(1), self.bpm);
        probe.beats_per_bar = self.beats_per_bar;
        probe.sampling = self.sampling;
        probe.constraints = self.voice.clone();
        probe.validate()?;
        if self.response_bars == 0 {
            return Err("response bars must be at least 1".into());
        }
        if let Some(b) = self.handover_silence_beats
            && !(b.is_finite() && b > 0.0 && b <= 64.0)
        {
            return Err(format!(
                "handover silence must be in (0, 64] beats, got {b}"
            ));
        }
        if !(self.lookahead_beats > 0.0 && self.lookahead_beats <= 1.0) {
            return Err(format!(
                "look-ahead must be in (0, 1] beat, got {}",
                self.lookahead_beats
            ));
        }
        for (name, v, max) in [
            ("reaction", self.reaction_ms, 1000.0),
            ("handover lead", self.handover_lead_ms, 1000.0),
            ("commit-ahead", self.commit_ahead_ms, 1000.0),
            ("generate-ahead", self.generate_ahead_ms, 10_000.0),
            ("keep", self.keep_ms, 60_000.0),
            ("re-choice window", self.rechoose_window_ms, 1000.0),
        ] {
            if !(v.is_finite() && (0.0..=max).contains(&v)) {
                return Err(format!("{name} time must be in 0..={max} ms, got {v}"));
            }
        }
        Ok(())
    }
}
