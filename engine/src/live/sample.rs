//! Sampling the model's notes into the cache: the masks of the live modes (the performer's
//! held pitches and, with [`super::LiveSettings::consonant`], the pitches dissonant with
//! them; with a ghost melody, which instrument may come next) on top of the session's
//! constraints. See the contracts in the module notes of `live`.

use staria_models::tokenizer::Expect;

use super::{FedNote, Listener, LiveMode, LiveSession};
use crate::constraints::ConstrainedDecoder;
use crate::generate::{Flow, Generator, RawNote, Result, StopReason};

impl LiveSession {
    /// The live masks as they stand (the performer's held pitches now), with `also_held`
    /// counted as held too.
    pub(super) fn note_mask(&self, also_held: Option<u8>) -> NoteMask {
        let mut held = held_mask(&self.listener);
        if let Some(p) = also_held {
            held[p as usize & 127] = true;
        }
        NoteMask {
            notes_start: self.tok.note_ids().start,
            levels: self.tok.velocity_levels().len() as u32,
            instruments: self.tok.config().instruments.len() as u32,
            held,
            consonant: self.settings.consonant && self.settings.mode == LiveMode::Accompany,
            dissonant: dissonant_mask(&held),
            ghost: self.ghost,
            voice: self.voice_pitches,
            above: self.settings.voice.pitch_max as usize,
            model: self.model_instrument as u32,
            performer: self.tok.performer_instrument() as u32,
        }
    }

    /// Samples model notes into `fed` (with a ghost melody, predictions too) until one starts
    /// at or after `until_ms`, the span ends or `first_only` and a note came. Returns why
    /// sampling stopped.
    ///
    /// With a ghost melody a prediction is always followed by an accompaniment note (at its
    /// instant or later, as the model places it): the model, free to choose, may otherwise
    /// read the performance as a one-voice piece and predict the melody alone.
    pub(super) fn sample_notes(
        &mut self,
        g: &mut Generator,
        until_ms: f64,
        first_only: bool,
    ) -> Result<StopReason> {
        loop {
            let accompaniment_next = self.ghost && self.fed.last().is_some_and(|f| f.predicted);
            let (stop, prediction_came) =
                self.sample_span(g, until_ms, first_only, accompaniment_next)?;
            if !(stop == StopReason::Stopped && prediction_came) {
                return Ok(stop);
            }
        }
    }

    /// One `run_span`; with a ghost melody it also stops after a prediction (returned `true`
    /// when that alone stopped it), and `accompaniment_next` masks the performer's instrument.
    fn sample_span(
        &mut self,
        g: &mut Generator,
        until_ms: f64,
        first_only: bool,
        accompaniment_next: bool,
    ) -> Result<(StopReason, bool)> {
        let origin = self.origin_ms;
        let until_piece = until_ms - origin;
        let live = self.note_mask(None);
        let ghost = self.ghost;
        let (notes, levels) = (self.tok.note_ids(), self.tok.velocity_levels().len() as u32);
        let model = self.model_instrument as u32;
        let time_shift = self.tok.time_shift_id() as usize;
        let mask = move |cd: &ConstrainedDecoder, logits: &mut [f32]| {
            if cd.expects() != Expect::Any {
                return;
            }
            live.apply(logits, accompaniment_next);
            // After a prediction the accompaniment's note comes in this window if one still
            // can (a `<T>` would let the model drop the accompaniment altogether).
            if accompaniment_next {
                let from = (notes.start + model * 128 * levels) as usize;
                let to = (from + 128 * levels as usize).min(logits.len());
                if logits[from.min(to)..to].iter().any(|l| l.is_finite())
                    && time_shift < logits.len()
                {
                    logits[time_shift] = f32::NEG_INFINITY;
                }
            }
        };
        let model_instrument = self.model_instrument;
        let fed = &mut self.fed;
        let limit = g.max_seq_len();
        let mut prediction_came = false;
        let (stop, _, _) = g.run_span(
            &mut self.cd,
            &mut self.sampler,
            limit,
            &mask,
            &mut |n: RawNote| {
                let predicted = ghost && n.instrument != model_instrument;
                fed.push(FedNote::sampled(&n, origin, predicted));
                if first_only || n.start_ms >= until_piece {
                    Flow::Stop
                } else if predicted {
                    prediction_came = true;
                    Flow::Stop
                } else {
                    Flow::Continue
                }
            },
        )?;
        Ok((stop, prediction_came))
    }
}

/// The live masks on a note token's logits (the model's choice of instrument and pitch): the
/// performer's held pitches, with a ghost melody which instrument may come where, and with
/// [`super::LiveSettings::consonant`] the pitches dissonant with a held one. Copied into the
/// sampling closures (on the stack: nothing is allocated while sampling).
#[derive(Clone, Copy)]
pub(super) struct NoteMask {
    notes_start: u32,
    levels: u32,
    instruments: u32,
    held: [bool; 128],
    consonant: bool,
    dissonant: [bool; 128],
    ghost: bool,
    voice: [bool; 128],
    above: usize,
    model: u32,
    performer: u32,
}

impl NoteMask {
    /// Masks the note tokens the live rules forbid; `accompaniment_next` (ghost melody) also
    /// masks the performer's instrument.
    pub(super) fn apply(&self, logits: &mut [f32], accompaniment_next: bool) {
        let (notes_start, levels) = (self.notes_start, self.levels);
        for inst in 0..self.instruments {
            for pitch in 0..128u32 {
                // Held pitches are the model's to avoid. With a ghost melody the model's
                // instrument also keeps to its voice (the constraints let every pitch
                // through), a prediction lies above the voice (the melody over the
                // accompaniment) and never right after another, and a third instrument
                // is never sampled.
                let p = pitch as usize;
                let off = if !self.ghost {
                    self.held[p]
                } else if inst == self.model {
                    self.held[p] || !self.voice[p]
                } else {
                    inst != self.performer || p <= self.above || accompaniment_next
                };
                if off {
                    let from = (notes_start + (inst * 128 + pitch) * levels) as usize;
                    let to = (from + levels as usize).min(logits.len());
                    logits[from.min(to)..to].fill(f32::NEG_INFINITY);
                }
            }
        }
        // Consonant with the performer: the model's pitches dissonant with a held one are
        // masked, unless that would leave the model no pitch at all.
        if self.consonant {
            let from = (notes_start + self.model * 128 * levels) as usize;
            let len = logits.len();
            let band = |p: usize| {
                let lo = (from + p * levels as usize).min(len);
                lo..(lo + levels as usize).min(len)
            };
            let some_left = (0..128)
                .any(|p| !self.dissonant[p] && logits[band(p)].iter().any(|l| l.is_finite()));
            if some_left {
                for p in (0..128).filter(|&p| self.dissonant[p]) {
                    logits[band(p)].fill(f32::NEG_INFINITY);
                }
            }
        }
    }
}

/// The performer's held pitches as a table the sampling mask reads.
fn held_mask(listener: &Listener) -> [bool; 128] {
    let mut held = [false; 128];
    for (p, h) in held.iter_mut().enumerate() {
        *h = listener.holds(p as u8);
    }
    held
}

/// Interval classes (semitones mod 12) a model note may not form with a held pitch when the
/// accompaniment is consonant with the performer: seconds, the tritone and sevenths.
const DISSONANT_CLASSES: [u8; 5] = [1, 2, 6, 10, 11];

/// Whether a pitch forms a dissonant interval ([`DISSONANT_CLASSES`]) with `b`.
pub(super) fn dissonant(a: u8, b: u8) -> bool {
    DISSONANT_CLASSES.contains(&(a.abs_diff(b) % 12))
}

/// The pitches dissonant with some held pitch, as a table the sampling mask reads (on the
/// stack, like `held_mask`: nothing is allocated while sampling).
fn dissonant_mask(held: &[bool; 128]) -> [bool; 128] {
    let mut out = [false; 128];
    for (h, _) in held.iter().enumerate().filter(|(_, on)| **on) {
        for (p, d) in out.iter_mut().enumerate() {
            *d |= dissonant(p as u8, h as u8);
        }
    }
    out
}
