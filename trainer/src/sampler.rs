//! Model handles that generation can drive: the candle [`AnyModel`] or the fast CPU decoder
//! ([`FastDecoder`], the engine's default backend), both behind [`LogitSource`], and a copy of
//! `generate::generate` over it (`generate_with`), so evaluation can generate 60+ pieces in
//! minutes on one core.
//!
//! `generate_with` and `sample_slice` are `generate::generate` and `generate::sample` with
//! logits as a slice instead of a tensor; they are kept in step with those (same masks, same
//! draws from the same `rng`: the candle handle through either gives the same tokens). Once
//! `generate::generate` takes a `&mut impl LogitSource`, these copies can go.

use candle_core::Tensor;
use rand::Rng;
use staria_models::SectionLabel;
use staria_models::fast::{FastDecoder, WeightFormat};
use staria_models::model::{AnyModel, ModelKind};
use staria_models::prompt::Prompt;
use staria_models::tokenizer::{Expect, StreamDecoder, TokenKind, Tokenizer};

use crate::error::{Result, TrainError};
use crate::generate::{Generated, Sampling, grammar_error};

/// A model that turns a prompt and then one token at a time into next-token logits.
pub trait LogitSource {
    /// Resets the cache and prefills the prompt (its inline layout for a decoder-only model,
    /// the decoder layout plus encoded snippets for Staria); logits `[vocab]`.
    fn begin(&mut self, prompt: &Prompt) -> Result<&[f32]>;
    /// One token in, the next logits out.
    fn step(&mut self, token: u32) -> Result<&[f32]>;
    /// Tokens in the cache.
    fn position(&self) -> usize;
    fn max_seq_len(&self) -> usize;
}

fn copy_logits(t: &Tensor, out: &mut Vec<f32>) -> Result<()> {
    *out = t
        .flatten_all()?
        .to_dtype(candle_core::DType::F32)?
        .to_vec1()?;
    Ok(())
}

/// The candle model (any device, any kind).
pub struct CandleLogits<'a> {
    model: &'a mut AnyModel,
    logits: Vec<f32>,
}

impl<'a> CandleLogits<'a> {
    pub fn new(model: &'a mut AnyModel) -> Self {
        Self {
            model,
            logits: Vec::new(),
        }
    }
}

impl LogitSource for CandleLogits<'_> {
    fn begin(&mut self, prompt: &Prompt) -> Result<&[f32]> {
        let t = self.model.begin(prompt)?;
        copy_logits(&t, &mut self.logits)?;
        Ok(&self.logits)
    }
    fn step(&mut self, token: u32) -> Result<&[f32]> {
        let t = self.model.step(token)?;
        copy_logits(&t, &mut self.logits)?;
        Ok(&self.logits)
    }
    fn position(&self) -> usize {
        self.model.position()
    }
    fn max_seq_len(&self) -> usize {
        self.model.max_seq_len()
    }
}

/// The fast CPU decoder built from a candle model's weights; a Staria model's snippet encoder
/// stays the candle one (its latents are handed to the fast decoder once per prompt).
pub struct FastLogits<'a> {
    fast: FastDecoder,
    kind: ModelKind,
    /// The Staria model whose encoder makes the latents (`None` for decoder-only).
    encoder: Option<&'a AnyModel>,
}

impl<'a> FastLogits<'a> {
    /// `fast` is the decoder of `model` (built from the same weights, e.g.
    /// `FastDecoder::from_checkpoint_tensors`); `model` is only used for a Staria model's
    /// snippet encoder.
    pub fn new(fast: FastDecoder, model: &'a AnyModel) -> Self {
        let kind = model.kind();
        Self {
            fast,
            kind,
            encoder: (kind == ModelKind::Staria).then_some(model),
        }
    }

    pub fn format(&self) -> WeightFormat {
        self.fast.format()
    }
}

impl LogitSource for FastLogits<'_> {
    fn begin(&mut self, prompt: &Prompt) -> Result<&[f32]> {
        self.fast.reset();
        let tokens = match self.kind {
            ModelKind::Decoder => &prompt.inline,
            ModelKind::Staria => &prompt.decoder,
        };
        if tokens.is_empty() {
            return Err(TrainError::Data("generation prompt without tokens".into()));
        }
        if let Some(model) = self.encoder {
            self.fast.set_latents(&[], 0)?;
            let staria = model
                .staria()
                .ok_or_else(|| TrainError::Data("Staria kind without a Staria model".into()))?;
            let latents = staria.encode_snippets(&prompt.snippets)?;
            if let Some(t) = latents.latents() {
                self.fast.set_latents_tensor(t)?;
            }
        }
        Ok(self.fast.prefill(tokens)?)
    }
    fn step(&mut self, token: u32) -> Result<&[f32]> {
        Ok(self.fast.step(token)?)
    }
    fn position(&self) -> usize {
        self.fast.position()
    }
    fn max_seq_len(&self) -> usize {
        self.fast.max_seq_len()
    }
}

fn allowed(tok: &Tokenizer, id: u32) -> bool {
    matches!(
        tok.kind(id),
        TokenKind::Note { .. }
            | TokenKind::Drum { .. }
            | TokenKind::Onset { .. }
            | TokenKind::Dur { .. }
            | TokenKind::TimeShift
            | TokenKind::EndingSoon
            | TokenKind::End
    )
}

/// `generate::sample` on a logits slice.
pub fn sample_slice(tok: &Tokenizer, v: &[f32], s: &Sampling, rng: &mut impl Rng) -> u32 {
    let t = s.temperature.max(1e-4);
    let mut best = f64::NEG_INFINITY;
    for (i, &x) in v.iter().enumerate() {
        if allowed(tok, i as u32) && x.is_finite() {
            best = best.max(x as f64 / t);
        }
    }
    let mut probs: Vec<(u32, f64)> = v
        .iter()
        .enumerate()
        .filter(|(i, x)| allowed(tok, *i as u32) && x.is_finite())
        .map(|(i, &x)| (i as u32, (x as f64 / t - best).exp()))
        .filter(|&(_, p)| p >= s.min_p)
        .collect();
    if probs.is_empty() {
        return tok.end_id();
    }
    let total: f64 = probs.iter().map(|p| p.1).sum();
    let mut r = rng.random::<f64>() * total;
    for &(id, p) in &probs {
        r -= p;
        if r <= 0.0 {
            return id;
        }
    }
    probs.pop().expect("non-empty").0
}

/// `generate::generate` over any [`LogitSource`].
pub fn generate_with<M: LogitSource + ?Sized>(
    model: &mut M,
    tok: &Tokenizer,
    prompt: &Prompt,
    plan: &[(SectionLabel, f64)],
    s: &Sampling,
    rng: &mut impl Rng,
) -> Result<Generated> {
    let mut out = Vec::new();
    let mut dec = StreamDecoder::new();
    let mut errors = 0;
    let mut ended = false;
    let limit = model.max_seq_len().saturating_sub(2);
    let mut logits: Vec<f32> = model.begin(prompt)?.to_vec();
    let mut next_section = 0;
    let mut section_end = 0.0f64;
    while out.len() < s.max_tokens && model.position() < limit {
        // Force the next tag at the start and when the current section's time is up (only
        // between notes, so a tag never splits one).
        if next_section < plan.len()
            && dec.expects() == Expect::Any
            && (next_section == 0 || dec.now_ms(tok) >= section_end)
        {
            let (label, len) = plan[next_section];
            let id = tok.section_id(label);
            section_end = dec.now_ms(tok) + len;
            next_section += 1;
            dec.push(tok, id);
            out.push(id);
            logits.clear();
            logits.extend_from_slice(model.step(id)?);
            continue;
        }
        if next_section == plan.len()
            && dec.expects() == Expect::Any
            && dec.now_ms(tok) >= section_end
        {
            break;
        }
        let id = sample_slice(tok, &logits, s, rng);
        if grammar_error(tok, &dec, id) {
            errors += 1;
        }
        dec.push(tok, id);
        out.push(id);
        if id == tok.end_id() {
            ended = true;
            break;
        }
        logits.clear();
        logits.extend_from_slice(model.step(id)?);
    }
    Ok(Generated {
        tokens: out,
        grammar_errors: errors,
        sections_started: next_section,
        ended,
    })
}
