//! Minimal sampling for evaluation and dreaming: temperature and min-p over `AnyModel` logits,
//! with the section plan forced (the trainer may not depend on the engine crate, so this is the
//! engine's approach in its simplest form).
//!
//! The model may emit notes, onsets, durations, `<T>`, `<D>` and `<E>`; prompt-only tokens
//! (`<P>`, `<U>`, `<S>`, prompt markers, forms, styles) and section tags are masked, since tags
//! come from the plan: `<X_SECTION>` is fed when the previous section has played its length.
//! Nothing else is constrained, so grammar errors are the model's and are counted.

use candle_core::Tensor;
use rand::Rng;
use staria_models::SectionLabel;
use staria_models::model::AnyModel;
use staria_models::prompt::Prompt;
use staria_models::tokenizer::{Expect, StreamDecoder, TokenKind, Tokenizer};

use crate::error::Result;

#[derive(Debug, Clone, Copy)]
pub struct Sampling {
    pub temperature: f64,
    pub min_p: f64,
    /// Tokens generated after the prompt, at most.
    pub max_tokens: usize,
}

/// What came out.
#[derive(Debug, Clone)]
pub struct Generated {
    /// Body tokens (forced tags included), without the prompt.
    pub tokens: Vec<u32>,
    /// Sampled tokens that broke the note grammar (see `StreamDecoder::expects`).
    pub grammar_errors: usize,
    /// Sections of the plan that were started.
    pub sections_started: usize,
    /// Whether the model ended with `<E>` itself.
    pub ended: bool,
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

/// Draws a token: logits / temperature, softmax, drop tokens below `min_p` times the top
/// probability, renormalise, sample.
pub fn sample(tok: &Tokenizer, logits: &Tensor, s: &Sampling, rng: &mut impl Rng) -> Result<u32> {
    let v: Vec<f32> = logits
        .flatten_all()?
        .to_dtype(candle_core::DType::F32)?
        .to_vec1()?;
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
        return Ok(tok.end_id());
    }
    let total: f64 = probs.iter().map(|p| p.1).sum();
    let mut r = rng.random::<f64>() * total;
    for &(id, p) in &probs {
        r -= p;
        if r <= 0.0 {
            return Ok(id);
        }
    }
    Ok(probs.pop().expect("non-empty").0)
}

/// Whether `id` is out of place for the decoder's state.
pub fn grammar_error(tok: &Tokenizer, dec: &StreamDecoder, id: u32) -> bool {
    let kind = tok.kind(id);
    match dec.expects() {
        Expect::Onset => !matches!(kind, TokenKind::Onset { .. }),
        Expect::Dur => !matches!(kind, TokenKind::Dur { .. }),
        Expect::Any => matches!(kind, TokenKind::Onset { .. } | TokenKind::Dur { .. }),
    }
}

/// Generates a piece following `plan`: (section, length in ms) in order. The first tag is fed
/// right after the prompt; each next one once the music's time passes the previous section's end.
/// Stops after the last section's length, at `<E>`, at `max_tokens`, or at the model's context.
pub fn generate(
    model: &mut AnyModel,
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
    let mut logits = model.begin(prompt)?;
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
            logits = model.step(id)?;
            continue;
        }
        if next_section == plan.len()
            && dec.expects() == Expect::Any
            && dec.now_ms(tok) >= section_end
        {
            break;
        }
        let id = sample(tok, &logits, s, rng)?;
        if grammar_error(tok, &dec, id) {
            errors += 1;
        }
        dec.push(tok, id);
        out.push(id);
        if id == tok.end_id() {
            ended = true;
            break;
        }
        logits = model.step(id)?;
    }
    Ok(Generated {
        tokens: out,
        grammar_errors: errors,
        sections_started: next_section,
        ended,
    })
}
