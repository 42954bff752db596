//! Live modes: the model listens to a performer and answers (call and response) or plays along
//! (accompaniment), with its KV cache kept up to date note by note.
//!
//! [`LiveSession`] is the whole behaviour as a deterministic state machine on one clock (ms of
//! "session time"); it owns no thread and no clock. The engine thread drives it from the
//! command ring (host beats converted to ms: the host transport when it plays, the audio clock
//! otherwise, see `timing::LiveClock`), and [`sim`] drives it from a MIDI file on a simulated
//! clock (`staria live`, `staria bench --live`), so both run the same code.
//!
//! # Contracts
//! - **Time**: session ms are musical time, host beats at the session's reference tempo
//!   ([`LiveSettings::bpm`], the host's when it started), so a tempo change during the
//!   session stretches it: the beat grid, the handover silence, an answer's bars and the
//!   look-ahead follow the host's new tempo with nothing re-encoded; only the real-time
//!   margins (reaction, commit, generate-ahead, handover lead) are rescaled, by
//!   [`LiveSession::set_host_tempo`] (`tempo` module).
//! - **Prompt**: the captured snippets (and style) are the prompt, prefilled by
//!   [`LiveSession::start`] (the fast backend reuses a warm prompt); the performance is the
//!   piece after `<S>`, opened as section A at session time 0 (a bar line). New snippets
//!   during the session ([`LiveSession::change_prompt`], `prompt` module) replace the prompt
//!   and keep the session: the new prompt and the last [`LiveSettings::keep_ms`] of music
//!   are fed again from a bar line, as a rebase does (counted in
//!   [`LiveStats::prompt_changes`], not in `rebases`); the accompaniment's look-ahead is
//!   handed out first and goes in again after it; an answer under way finishes with the old
//!   prompt and the new one takes over when it ends.
//! - **Listening**: each performed note is fed to the cache with `Generator::extend` as soon as
//!   the mode's rule allows (`listen` module: at note-off in call and response, at note-on in
//!   accompaniment); the tokens are the streaming encoding of that one note after the cache's
//!   grammar state ([`listen::note_tokens`]), always as the performer's instrument
//!   (`Tokenizer::performer_instrument`, 0), whatever MIDI program it came with; nothing is
//!   ever re-encoded, except when the
//!   context is nearly full: then the prompt (reused from the cache) and the last
//!   [`LiveSettings::keep_ms`] of music are fed again from a bar line (a *rebase*, counted in
//!   [`LiveStats::rebases`]; the accompaniment rebases between performer notes, early, so a
//!   revision does not pay for it).
//! - **Call and response**: a [`handover`](LiveSession::handover) (the engine maps a command to
//!   it; the simulation a silence of [`LiveSettings::handover_silence_beats`]) continues the
//!   phrase from that instant for [`LiveSettings::response_bars`] bars on the session's beat
//!   grid: the first note is sampled before `handover` returns and starts within the first
//!   beat after the handover. A performer note during the
//!   response ends it at that note ([`LiveEvent::ResponseEnd`] `interrupted`): model notes
//!   sounding then are cut there, later ones never sound, the cache is rewound to the last
//!   model note that started before it, and listening goes on.
//! - **Voices**: the model samples one instrument, [`LiveMode::model_instrument`], and its
//!   notes go back into the cache as that instrument (sampled, fed again after a revision,
//!   or after a rebase, which remembers each note's instrument). With a two-voice model (a
//!   tokenizer with a second instrument, `Tokenizer::accompaniment_instrument`: the layout
//!   `["piano", "bass"]` learnt from the chorales' soprano and bass) the accompaniment samples
//!   only that instrument's notes (the other's are masked, `ConstrainedDecoder::only_instrument`)
//!   and an answer only the performer's (it continues the performer's phrase); at one instant
//!   the performer's note is fed before the model's, the order the encoder writes two voices
//!   in. With a one-instrument model both modes sample its one instrument, as before: its
//!   accompaniment is that stream kept to the voice's pitch range.
//! - **Ghost melody** (accompaniment with a two-voice model, [`LiveSettings::ghost_melody`],
//!   off by default: on the two-voice run of step 450 the bass was no more consonant with
//!   it): the look-ahead samples both instruments, so the accompaniment's note at
//!   an instant follows the melody's note there, as in training, where it would otherwise
//!   read "the melody holds". The performer-instrument notes it samples are predictions: kept
//!   in the cache only, never handed out, never cut, never in the rebase history; the voice's
//!   pitch range, scale and the held-pitch mask apply to the accompaniment instrument only; a
//!   prediction lies above the voice and is followed by an accompaniment note (at its instant
//!   or later; no `<T>` in between while one fits), else a model that reads the performance
//!   as one voice predicts the melody alone (`sample.rs`).
//!   Every performer note drops every prediction: the cache is rewound to before the first
//!   one as well (they all lie after the last performer note), the accompaniment notes
//!   between it and the performer's note (all handed out) are fed again before it, and the
//!   rest as the revision below says; the next look-ahead predicts anew. A rebase keeps no
//!   prediction.
//! - **Accompaniment**: the model's notes are a separate voice in [`LiveSettings::voice`]'s
//!   pitch range, generated at most [`LiveSettings::lookahead_beats`] (at most 1) ahead: the
//!   look-ahead bounds where notes start, not where they end (a note sounds as long as the
//!   model sampled it, unless cut; `ConstrainedDecoder::set_optional_span`). Every
//!   performer note revises that look-ahead: the cache is rewound to before the first model
//!   note after the performer's (at the performer's instant too, with two voices; before the
//!   first prediction if that is earlier, with a ghost melody), the
//!   performer's note is fed, the model notes already handed out ([`LiveEvent::Play`]) and
//!   those planned within [`LiveSettings::reaction_ms`] (30 ms) of it are fed again after it,
//!   and the look-ahead beyond is sampled again by the next [`advance`](LiveSession::advance),
//!   from the driver's "now" once the revision's work is done (new notes start
//!   [`LiveSettings::reaction_ms`] after that "now", so the revision's own time never makes
//!   one late). The model never sounds a pitch the performer holds:
//!   held pitches are masked while sampling, and a model note on the pitch the performer just
//!   struck is cut at that instant ([`LiveEvent::Cut`]). With [`LiveSettings::consonant`] (on
//!   by default) the pitches dissonant with a held one (interval class 1, 2, 6, 10 or 11, mod
//!   12) are masked too, for the model's instrument, unless no pitch would be left (then the
//!   choice is unmasked): every model note sampled while the performer holds a note is
//!   consonant with it. A note chosen before the performer's note came (handed out, or
//!   planned within the reaction time) that clashes with it (the same interval classes) and
//!   starts at most [`LiveSettings::rechoose_window_ms`] (50 ms) before it, with it or later
//!   is re-chosen (`rechoose` module, counted in [`LiveStats::rechosen`]): cut at the
//!   performer's note, or at its start if later (so one not started never sounds), left out
//!   of what is fed again, and replaced by the next [`advance`](LiveSession::advance), before
//!   the rest of the look-ahead, with a note the model samples under these masks (the
//!   performer's pitch counted as held) at its start or, if that is sooner,
//!   [`LiveSettings::reaction_ms`] after that call's "now" (the revision's time never makes
//!   it late), ending where it ended (dropped if under a 32nd note would be left). A note
//!   that started earlier stays (a suspension under a moving melody). In the plugin a note
//!   struck with the performer's has usually begun to sound when the engine hears the
//!   performer (its note-on was queued on the audio side when it was handed out): it stops
//!   then, a few ms in; one that has not started is retracted from the audio side and never
//!   sounds (`driver` module notes). It pauses with the performer: after a
//!   bar with no key down and nothing played or released, no new look-ahead is sampled until
//!   the next performer note.
//! - **Output**: a model note is handed out with [`LiveEvent::Play`] once its start is within
//!   [`LiveSettings::commit_ahead_ms`] of "now" and is final from then on, except for a
//!   [`LiveEvent::Cut`], which only shortens it (to nothing when it has not started). One
//!   call samples what is due within that window and at most one note beyond it (an answer's
//!   or the look-ahead's rest comes on the next calls), so a driver gets the due notes to hand
//!   on after a few ms of work, never after a beat or a second of sampling.
//! - Allocation: buffers are allocated in `start` (token scratch, note lists with capacity);
//!   per note the session copies into them. It runs on the engine thread, never the audio one.
//! - Backend: the fast backend (the engine's default on the CPU); it keeps the token record
//!   the grammar state is replayed from after a rewind. Candle is refused by name.
//!
//! Files: this one holds [`LiveSession`] and its events and stats; `settings.rs` the mode and
//! settings; `respond.rs` and `accompany.rs` the two modes' session methods; `rechoose.rs`
//! the accompaniment's re-choice of clashing notes (`rechoose_tests.rs` its tests);
//! `sample.rs` sampling with the live masks; `tempo.rs` the
//! host's tempo changes; `prompt.rs` new snippets during a session (`prompt_tests.rs` its
//! tests); `timing_tests.rs` tests of these timing rules on the shipped model;
//! `two_voice_tests.rs` and `ghost_tests.rs` the two-voice rules on a tiny two-voice model;
//! `listen`, `outbox`, `silence`, `driver` and `sim` the pieces named above.

pub mod driver;
pub mod listen;
pub mod outbox;
mod settings;
pub mod silence;
pub mod sim;

use std::collections::VecDeque;
use std::time::Instant;

use staria_models::grid::BeatGrid;
use staria_models::tokenizer::Tokenizer;
use staria_models::{Prompt, SectionLabel};

use crate::constraints::ConstrainedDecoder;
use crate::generate::{GenError, GenRequest, Generator, RawNote, Result, Target};
use crate::sampling::Sampler;
pub use listen::{Listener, TimedNote, note_tokens};
pub use settings::{LiveMode, LiveSettings};

/// What a session tells its driver.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum LiveEvent {
    /// A model note, final from now on (session ms), except for a later `Cut`.
    Play(TimedNote),
    /// The model's notes on `pitch` stop at `at_ms`; one starting at or after it never sounds.
    Cut { pitch: u8, at_ms: f64 },
    /// A response begins at `at_ms` (a handover).
    ResponseStart { at_ms: f64 },
    /// The response is over; `interrupted`: the performer came back at `at_ms` and every model
    /// note was cut there (the `Cut`s come first).
    ResponseEnd { at_ms: f64, interrupted: bool },
}

/// Measurements of a session.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct LiveStats {
    /// Milliseconds each absorbed performer note took (the encoding and `extend`), up to
    /// `MAX_SAMPLES` of them.
    pub absorb_ms: Vec<f64>,
    /// Milliseconds from each handover to its first generated note.
    pub handover_ms: Vec<f64>,
    pub absorbed_notes: usize,
    pub responses: usize,
    pub interrupted: usize,
    /// Times the context was nearly full and was fed again from the last `keep_ms`.
    pub rebases: usize,
    /// Milliseconds each rebase took.
    pub rebase_ms: Vec<f64>,
    /// Accompaniment: performer notes that revised the look-ahead.
    pub revisions: usize,
    /// Accompaniment with [`LiveSettings::consonant`]: model notes taken back at a performer's
    /// note because they clashed with it, and of those, the ones a replacement was sampled
    /// for (`rechoose` module).
    pub rechosen: usize,
    pub replaced: usize,
    /// New prompts taken during the session ([`LiveSession::change_prompt`]).
    pub prompt_changes: usize,
    /// Milliseconds each prompt change took (the new prompt's prefill and the kept music).
    pub prompt_change_ms: Vec<f64>,
}

impl LiveStats {
    pub const MAX_SAMPLES: usize = 16_384;
}

#[derive(Debug, Clone, Copy, PartialEq)]
enum Phase {
    Listening,
    Responding {
        /// The model may still add notes to the answer.
        generating: bool,
    },
    /// Accompaniment; `started` once the performer has played.
    Accompanying {
        started: bool,
    },
}

/// A model note in the cache, in session ms.
#[derive(Debug, Clone, Copy)]
struct FedNote {
    note: TimedNote,
    pos_after: usize,
    committed: bool,
    /// A ghost-melody note: the performer's instrument as the model predicts it, in the cache
    /// only (never handed out, dropped at the next performer note).
    predicted: bool,
}

impl FedNote {
    /// A note the model just sampled (piece time + `origin_ms` = session time), not handed out.
    fn sampled(n: &RawNote, origin_ms: f64, predicted: bool) -> FedNote {
        FedNote {
            note: TimedNote {
                pitch: n.pitch,
                velocity: n.velocity,
                start_ms: n.start_ms + origin_ms,
                end_ms: n.start_ms + n.dur_ms + origin_ms,
            },
            pos_after: n.pos_after,
            committed: false,
            predicted,
        }
    }
}

/// Tokens held back from the context's end for an answer and the look-ahead (at most a
/// quarter of the context).
const CONTEXT_RESERVE: usize = 600;

fn context_reserve(g: &Generator) -> usize {
    CONTEXT_RESERVE.min(g.max_seq_len() / 4)
}

/// One live performance (see the module notes).
pub struct LiveSession {
    settings: LiveSettings,
    tok: Tokenizer,
    prompt: Prompt,
    opening: SectionLabel,
    /// A new prompt (and its opening section) waiting for the answer under way to end.
    pending_prompt: Option<(Prompt, SectionLabel)>,
    /// Cache position right after the prompt (its `<S>`): the grammar state is replayed from
    /// here.
    body_start: usize,
    /// Session time (ms) of the model's piece time 0.
    origin_ms: f64,
    cd: ConstrainedDecoder,
    sampler: Sampler,
    listener: Listener,
    phase: Phase,
    /// Model notes fed after `base_pos`, in onset order.
    fed: Vec<FedNote>,
    /// Cache position a revision or interruption never rewinds below.
    base_pos: usize,
    /// The latest handed-out model note per pitch (start, end), for cuts.
    model_sounding: [Option<(f64, f64)>; 128],
    /// The instrument the model's notes are sampled as and fed back as (see the module notes).
    model_instrument: u8,
    /// The look-ahead also samples a predicted melody ([`LiveSettings::ghost_melody`]).
    ghost: bool,
    /// Pitches the model's voice allows ([`LiveSettings::voice`]); with a ghost melody they
    /// are masked while sampling (the constraints then leave every pitch to the prediction).
    voice_pitches: [bool; 128],
    /// Absorbed performer notes and handed-out model notes with their instruments, for a
    /// rebase.
    history: VecDeque<(TimedNote, u8)>,
    scratch: Vec<u32>,
    batch: Vec<u32>,
    /// Accompaniment: notes fed again after a revision's performer note (and whether they
    /// were handed out).
    refeed: Vec<(TimedNote, bool)>,
    /// Accompaniment: the next time the look-ahead is extended.
    next_generate_ms: f64,
    /// Accompaniment: notes taken back at the last performer note, to be replaced by the next
    /// `advance` (`rechoose` module).
    rechoices: Vec<rechoose::Rechoice>,
    /// The real-time margins as started, and the host's tempo they are scaled to (`tempo`).
    real_margins: tempo::RealMargins,
    host_bpm: f64,
    stats: LiveStats,
}

impl std::fmt::Debug for LiveSession {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LiveSession")
            .field("mode", &self.settings.mode)
            .field("phase", &self.phase)
            .field("origin_ms", &self.origin_ms)
            .field("fed", &self.fed.len())
            .finish()
    }
}

fn request(msg: impl Into<String>) -> GenError {
    GenError::Request(msg.into())
}

impl LiveSession {
    /// Prefills the prompt built from `snippets` and opens the performance at session time 0.
    pub fn start(
        g: &mut Generator,
        snippets: &crate::generate::Snippets,
        settings: LiveSettings,
    ) -> Result<LiveSession> {
        settings.validate().map_err(GenError::Request)?;
        if g.cached_tokens().is_none() {
            return Err(request(
                "live modes run on the fast backend (CPU); this generator uses candle",
            ));
        }
        let tok = g.tokenizer().clone();
        let (prompt, opening) = prompt_of(g, snippets, &settings)?;
        let model_instrument = settings.mode.model_instrument(&tok);
        let ghost = settings.samples_ghost_melody(&tok);
        let mut voice_pitches = [false; 128];
        for (p, ok) in voice_pitches.iter_mut().enumerate() {
            *ok = settings.voice.allows_pitch(p as u8);
        }
        // With a ghost melody both voices are sampled: the voice's pitch range and scale
        // apply to the model's instrument only, in `sample_notes`' mask.
        let constraints = if ghost {
            crate::constraints::Constraints {
                pitch_min: 0,
                pitch_max: 127,
                scale: None,
                ..settings.voice.clone()
            }
        } else {
            settings.voice.clone()
        };
        let mut cd = ConstrainedDecoder::new(&tok, &constraints).map_err(GenError::Request)?;
        if tok.accompaniment_instrument().is_some() && !ghost {
            cd.only_instrument(&tok, model_instrument);
        }
        let sampler = Sampler::new(tok.vocab_size(), settings.sampling);
        let (real_margins, host_bpm) = (tempo::RealMargins::of(&settings), settings.bpm);
        let mut s = LiveSession {
            listener: Listener::new(settings.beat_ms()),
            phase: match settings.mode {
                LiveMode::Respond => Phase::Listening,
                LiveMode::Accompany => Phase::Accompanying { started: false },
            },
            settings,
            tok,
            prompt,
            opening,
            pending_prompt: None,
            body_start: 0,
            origin_ms: 0.0,
            cd,
            sampler,
            fed: Vec::with_capacity(1024),
            base_pos: 0,
            model_sounding: [None; 128],
            model_instrument,
            ghost,
            voice_pitches,
            history: VecDeque::with_capacity(4096),
            scratch: Vec::with_capacity(256),
            batch: Vec::with_capacity(4096),
            refeed: Vec::with_capacity(64),
            next_generate_ms: 0.0,
            rechoices: Vec::with_capacity(64),
            real_margins,
            host_bpm,
            stats: LiveStats {
                absorb_ms: Vec::with_capacity(LiveStats::MAX_SAMPLES),
                handover_ms: Vec::with_capacity(1024),
                rebase_ms: Vec::with_capacity(256),
                prompt_change_ms: Vec::with_capacity(256),
                ..LiveStats::default()
            },
        };
        s.open(g, 0.0)?;
        Ok(s)
    }

    /// Prefills the prompt (the fast backend reuses what the cache shares with it) and forces
    /// the opening section at `origin_ms`, the new piece time 0.
    fn open(&mut self, g: &mut Generator, origin_ms: f64) -> Result<()> {
        g.set_grid(Some(BeatGrid::from_bpm(self.settings.bpm)?));
        g.begin(&self.prompt)?;
        g.stop_following();
        self.body_start = g.position();
        self.origin_ms = origin_ms;
        self.cd.restart();
        if !g.force_section(&mut self.cd, self.opening, 0.0)? {
            return Err(request(
                "the prompt fills the model's context; capture shorter snippets",
            ));
        }
        self.fed.clear();
        self.base_pos = g.position();
        Ok(())
    }

    pub fn settings(&self) -> &LiveSettings {
        &self.settings
    }

    pub fn stats(&self) -> &LiveStats {
        &self.stats
    }

    pub fn mode(&self) -> LiveMode {
        self.settings.mode
    }

    /// The tokenizer instrument the model's notes are sampled and fed back as: the
    /// accompaniment instrument when accompanying with a model that has one, else the
    /// performer's (0).
    pub fn model_instrument(&self) -> u8 {
        self.model_instrument
    }

    /// Whether an answer is under way (call and response).
    pub fn is_responding(&self) -> bool {
        matches!(self.phase, Phase::Responding { .. })
    }

    pub fn listener(&self) -> &Listener {
        &self.listener
    }

    fn piece_ms(&self, session_ms: f64) -> f64 {
        session_ms - self.origin_ms
    }

    /// The cache must be where this session left it (nothing else may feed the generator
    /// between calls).
    fn check_cache(&self, g: &Generator) -> Result<()> {
        match g.cached_tokens() {
            Some(t) if t.len() >= self.base_pos => Ok(()),
            _ => Err(request(
                "the model's cache changed under the live session (another request used the model); start the session again",
            )),
        }
    }

    /// Rewinds the cache to `pos` and replays the grammar state from the prompt's end.
    fn rewind_to(&mut self, g: &mut Generator, pos: usize) -> Result<()> {
        let n = g.position().saturating_sub(pos);
        g.rewind(n)?;
        self.cd.restart();
        let tokens = g.cached_tokens().expect("checked in start");
        for &id in &tokens[self.body_start..] {
            self.cd.push(&self.tok, id);
        }
        Ok(())
    }

    /// Feeds `self.batch` to the cache with one `extend` (the grammar state follows).
    fn feed_batch(&mut self, g: &mut Generator) -> Result<()> {
        if self.batch.is_empty() {
            return Ok(());
        }
        if g.position() + self.batch.len() >= g.max_seq_len() {
            return Err(request(format!(
                "the model's context ({} tokens) is full; the live session cannot absorb more",
                g.max_seq_len()
            )));
        }
        g.extend(&self.batch)?;
        for &id in &self.batch {
            self.cd.push(&self.tok, id);
        }
        self.batch.clear();
        Ok(())
    }

    /// Appends the tokens of `note` (session ms), a note of `instrument`, after the grammar
    /// state to `self.batch`.
    fn encode(&mut self, note: &TimedNote, instrument: u8) -> bool {
        let piece = TimedNote {
            start_ms: self.piece_ms(note.start_ms),
            end_ms: self.piece_ms(note.end_ms),
            ..*note
        };
        // The state after what `batch` already holds.
        let mut dec = *self.cd.decoder();
        for &id in &self.batch {
            dec.push(&self.tok, id);
        }
        self.scratch.clear();
        if !note_tokens(&self.tok, &dec, &piece, instrument, &mut self.scratch) {
            return false;
        }
        self.batch.extend_from_slice(&self.scratch);
        true
    }

    /// Feeds one performer note (as the performer's instrument) and remembers it for a rebase.
    fn absorb(&mut self, g: &mut Generator, note: TimedNote) -> Result<()> {
        if g.position() + context_reserve(g) >= g.max_seq_len() {
            self.rebase(g, note.start_ms)?;
        }
        let t0 = Instant::now();
        self.batch.clear();
        let performer = self.tok.performer_instrument();
        if self.encode(&note, performer) {
            self.feed_batch(g)?;
        }
        if self.stats.absorb_ms.len() < LiveStats::MAX_SAMPLES {
            self.stats.absorb_ms.push(ms_since(t0));
        }
        self.stats.absorbed_notes += 1;
        self.remember(note, performer);
        self.base_pos = g.position();
        Ok(())
    }

    fn remember(&mut self, note: TimedNote, instrument: u8) {
        if self.history.len() == self.history.capacity() {
            self.history.pop_front();
        }
        self.history.push_back((note, instrument));
    }

    /// The context is nearly full: the prompt, the opening tag at a bar line `keep_ms` before
    /// `at_ms`, and the music remembered from there up to `at_ms` are fed again.
    fn rebase(&mut self, g: &mut Generator, at_ms: f64) -> Result<()> {
        let t0 = Instant::now();
        self.refeed_upto(g, at_ms, at_ms)?;
        self.count_rebase(t0);
        Ok(())
    }

    /// A rebase begun at `t0` is done.
    fn count_rebase(&mut self, t0: Instant) {
        self.stats.rebases += 1;
        if self.stats.rebase_ms.len() < self.stats.rebase_ms.capacity() {
            self.stats.rebase_ms.push(ms_since(t0));
        }
    }

    /// [`Self::rebase`]'s work (up to `upto_ms`), counted by the caller (a rebase or a prompt change).
    fn refeed_upto(&mut self, g: &mut Generator, at_ms: f64, upto_ms: f64) -> Result<()> {
        let bar = self.settings.bar_ms();
        let from = at_ms - self.settings.keep_ms;
        let origin = self.origin_ms + ((from - self.origin_ms) / bar).floor().max(0.0) * bar;
        self.open(g, origin)?;
        self.history.retain(|n| n.0.start_ms >= origin);
        // Stable: at one instant, notes in the order they were remembered, except that the
        // performer's go first when the model plays another instrument (the encoder's order).
        let performer = self.tok.performer_instrument();
        self.history.make_contiguous().sort_by(|a, b| {
            a.0.start_ms
                .total_cmp(&b.0.start_ms)
                .then((a.1 != performer).cmp(&(b.1 != performer)))
        });
        self.batch.clear();
        for i in 0..self.history.len() {
            let (n, instrument) = self.history[i];
            if n.start_ms <= upto_ms {
                self.encode(&n, instrument);
            }
        }
        self.feed_batch(g)?;
        self.base_pos = g.position();
        Ok(())
    }

    /// A performer's key goes down at `at_ms` (not before earlier calls' times).
    pub fn note_on(
        &mut self,
        g: &mut Generator,
        pitch: u8,
        velocity: u8,
        at_ms: f64,
        out: &mut dyn FnMut(LiveEvent),
    ) -> Result<()> {
        if pitch > 127 {
            return Ok(());
        }
        self.check_cache(g)?;
        // The performance reaches the model at the velocity it was trained on, as the snippets
        // do (`Generator::prompt_velocity`).
        let velocity = g.prompt_velocity().unwrap_or(velocity);
        match self.settings.mode {
            LiveMode::Respond => self.respond_note_on(g, pitch, velocity, at_ms, out),
            LiveMode::Accompany => self.accompany_note_on(g, pitch, velocity, at_ms, out),
        }
    }

    /// A performer's key goes up at `at_ms`. Nothing is handed out here today (`_out` keeps
    /// the calls alike for the drivers).
    pub fn note_off(
        &mut self,
        g: &mut Generator,
        pitch: u8,
        at_ms: f64,
        _out: &mut dyn FnMut(LiveEvent),
    ) -> Result<()> {
        self.check_cache(g)?;
        self.listener.note_off(pitch, at_ms);
        if self.settings.mode == LiveMode::Respond && self.phase == Phase::Listening {
            self.absorb_ready(g, at_ms, false)?;
        }
        Ok(())
    }

    /// Does what is due by `now_ms`: hands out notes, extends an answer or the look-ahead,
    /// hands over after a silence. Call it often (the engine: every wake-up; the simulation:
    /// every tick).
    pub fn advance(
        &mut self,
        g: &mut Generator,
        now_ms: f64,
        out: &mut dyn FnMut(LiveEvent),
    ) -> Result<()> {
        self.check_cache(g)?;
        if self.pending_prompt.is_some() && !self.is_responding() {
            // The answer the new prompt waited for has ended.
            self.apply_prompt(g, now_ms, out)?;
        }
        match self.phase {
            Phase::Listening => {
                self.absorb_ready(g, now_ms, false)?;
                if let Some(beats) = self.settings.handover_silence_beats {
                    let silent_since = self.listener.last_activity_ms();
                    if self.listener.has_call()
                        && !self.listener.any_held()
                        && now_ms >= silent_since + beats * self.settings.beat_ms()
                    {
                        // As the plugin does: the answer's time line starts the lead later.
                        self.handover(g, now_ms + self.settings.handover_lead_ms, out)?;
                    }
                }
                Ok(())
            }
            Phase::Responding { .. } => self.advance_response(g, now_ms, out),
            Phase::Accompanying { started } => {
                if started {
                    self.advance_accompaniment(g, now_ms, out)?;
                }
                Ok(())
            }
        }
    }

    fn absorb_ready(&mut self, g: &mut Generator, now_ms: f64, flush: bool) -> Result<()> {
        while let Some(note) = self.listener.next_ready(now_ms, flush) {
            self.absorb(g, note)?;
        }
        Ok(())
    }

    /// Hands out fed notes starting by `now_ms + commit_ahead_ms`.
    fn commit_due(&mut self, now_ms: f64, out: &mut dyn FnMut(LiveEvent)) {
        let limit = now_ms + self.settings.commit_ahead_ms;
        for i in 0..self.fed.len() {
            let f = self.fed[i];
            if f.committed || f.predicted || f.note.start_ms > limit {
                continue;
            }
            self.fed[i].committed = true;
            self.model_sounding[f.note.pitch as usize] = Some((f.note.start_ms, f.note.end_ms));
            self.remember(f.note, self.model_instrument);
            out(LiveEvent::Play(f.note));
        }
    }
}

/// The prompt a session starts from `snippets` with (its style), and its opening section (the
/// first captured one, else A).
fn prompt_of(
    g: &Generator,
    snippets: &crate::generate::Snippets,
    settings: &LiveSettings,
) -> Result<(Prompt, SectionLabel)> {
    let mut req = GenRequest::new(Target::Continue, 1, settings.bpm);
    req.style = settings.style.clone();
    let prompt = g.prompt_for(snippets, &req)?;
    let opening = snippets
        .captured()
        .map(|(l, _)| l)
        .next()
        .unwrap_or(SectionLabel::A);
    Ok((prompt, opening))
}

fn ms_since(t: Instant) -> f64 {
    t.elapsed().as_secs_f64() * 1000.0
}

mod accompany;
mod prompt;
mod rechoose;
mod respond;
mod sample;
mod tempo;

#[cfg(test)]
mod ghost_tests;
#[cfg(test)]
mod prompt_tests;
#[cfg(test)]
mod rechoose_tests;
#[cfg(test)]
mod tests;
#[cfg(test)]
mod timing_tests;
#[cfg(test)]
mod two_voice_tests;
