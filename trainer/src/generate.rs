//! Minimal sampling for evaluation and dreaming: temperature and min-p over the logits of any
//! [`LogitSource`] (the candle model or the fast CPU decoder, see `sampler`), with the section
//! plan forced (the trainer may not depend on the engine crate, so this is the
//! engine's approach in its simplest form).
//!
//! The model may emit notes, onsets, durations, `<T>`, `<D>` and `<E>`; prompt-only tokens
//! (`<P>`, `<U>`, `<S>`, prompt markers, forms, styles) and section tags are masked, since tags
//! come from the plan: `<X_SECTION>` is fed when the previous section has played its length.
//!
//! The note grammar is masked as the engine masks it (`StreamDecoder::fits`: an onset after a
//! note, a duration after its onset, neither elsewhere), so every generated note decodes, and
//! onsets follow the engine's rule (`staria_models::tokenizer::OnsetVote`): the onset is
//! sampled over the whole window, and one before the window's last onset is read as a vote for
//! `<T>` (the note token is taken back, `<T>` and the note are fed, the onset is sampled in the
//! next window) instead of being moved to the window's last onset.
//!
//! `grammar_errors` counts the steps where the model's most likely token (among the tokens the
//! sampler may emit at all) broke the note grammar: what sampling without the mask would have
//! got wrong at temperature 0. Until this change it counted sampled tokens that broke the grammar
//! (and the decoder dropped those notes); the rate stays a measure of how well the model has
//! learnt the grammar, but no note is lost to it any more.

use candle_core::Tensor;
use rand::Rng;
use staria_models::SectionLabel;
use staria_models::prompt::Prompt;
use staria_models::tokenizer::{Expect, OnsetVote, StreamDecoder, TokenKind, Tokenizer};

use crate::error::Result;
use crate::sampler::LogitSource;

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
    /// Steps where the model's most likely token broke the note grammar (see the module docs);
    /// the sampled tokens never do.
    pub grammar_errors: usize,
    /// Notes whose sampled onset lay before the window's last onset and went to the next window
    /// behind a `<T>` (see `OnsetVote::NextWindow`).
    pub time_shift_votes: usize,
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

fn logits_vec(logits: &Tensor) -> Result<Vec<f32>> {
    Ok(logits
        .flatten_all()?
        .to_dtype(candle_core::DType::F32)?
        .to_vec1()?)
}

/// The model's most likely token among those the sampler may emit at all (grammar ignored).
fn top_choice(tok: &Tokenizer, v: &[f32]) -> Option<u32> {
    v.iter()
        .enumerate()
        .filter(|&(i, x)| allowed(tok, i as u32) && x.is_finite())
        .max_by(|a, b| a.1.total_cmp(b.1))
        .map(|(i, _)| i as u32)
}

/// Draws a token: logits / temperature, softmax, drop tokens below `min_p` times the top
/// probability, renormalise, sample. Only tokens `allowed` (see the module docs) and for which
/// `keep` holds are candidates.
pub fn sample(tok: &Tokenizer, logits: &Tensor, s: &Sampling, rng: &mut impl Rng) -> Result<u32> {
    Ok(sample_from(tok, &logits_vec(logits)?, s, rng, |_| true))
}

fn sample_from(
    tok: &Tokenizer,
    v: &[f32],
    s: &Sampling,
    rng: &mut impl Rng,
    keep: impl Fn(u32) -> bool,
) -> u32 {
    let t = s.temperature.max(1e-4);
    let ok = |i: usize, x: f32| allowed(tok, i as u32) && keep(i as u32) && x.is_finite();
    let mut best = f64::NEG_INFINITY;
    for (i, &x) in v.iter().enumerate() {
        if ok(i, x) {
            best = best.max(x as f64 / t);
        }
    }
    let mut probs: Vec<(u32, f64)> = v
        .iter()
        .enumerate()
        .filter(|&(i, &x)| ok(i, x))
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

/// Whether `id` is out of place for the decoder's state (see `StreamDecoder::fits`).
pub fn grammar_error(tok: &Tokenizer, dec: &StreamDecoder, id: u32) -> bool {
    !dec.fits(tok, id)
}

/// Generates a piece following `plan`: (section, length in ms) in order. The first tag is fed
/// right after the prompt; each next one once the music's time passes the previous section's end.
/// Stops after the last section's length, at `<E>`, at `max_tokens`, or at the model's context.
pub fn generate<M: LogitSource + ?Sized>(
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
    let mut votes = 0;
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
            refill(&mut logits, model.step(id)?);
            continue;
        }
        if next_section == plan.len()
            && dec.expects() == Expect::Any
            && dec.now_ms(tok) >= section_end
        {
            break;
        }
        let v = &logits;
        if top_choice(tok, v).is_some_and(|id| grammar_error(tok, &dec, id)) {
            errors += 1;
        }
        let id = sample_from(tok, v, s, rng, |id| dec.fits(tok, id));
        if dec.expects() == Expect::Onset && dec.onset_vote(tok, id) == OnsetVote::NextWindow {
            // A vote for `<T>`: take the note token back, feed `<T>` and the note again, and
            // sample its onset in the new window (the next turn of the loop).
            let note = *out.last().expect("a note token is pending");
            dec.retract_pending();
            out.pop();
            model.truncate(model.position() - 1);
            votes += 1;
            for t in [tok.time_shift_id(), note] {
                dec.push(tok, t);
                out.push(t);
                refill(&mut logits, model.step(t)?);
            }
            continue;
        }
        dec.push(tok, id);
        out.push(id);
        if id == tok.end_id() {
            ended = true;
            break;
        }
        refill(&mut logits, model.step(id)?);
    }
    Ok(Generated {
        tokens: out,
        grammar_errors: errors,
        time_shift_votes: votes,
        sections_started: next_section,
        ended,
    })
}

/// Copies the model's logits into the buffer the sampler reads (the model's own buffer is
/// borrowed until the next call).
fn refill(buf: &mut Vec<f32>, logits: &[f32]) {
    buf.clear();
    buf.extend_from_slice(logits);
}

#[cfg(test)]
mod tests {
    use super::*;
    use candle_core::{DType, Device};
    use candle_nn::{VarBuilder, VarMap};
    use rand::SeedableRng;
    use rand::rngs::StdRng;
    use staria_models::model::{AnyModel, ModelConfig, ModelKind};
    use staria_models::tokenizer::{PromptSpec, TokenizerConfig};

    /// A random tiny model spreads its onset mass over the whole window: onsets before the last
    /// one are frequent, so the vote rule is exercised; every sampled token fits the grammar.
    #[test]
    fn generated_tokens_keep_the_grammar_and_onsets_never_go_back() {
        let tok = Tokenizer::new(TokenizerConfig::default()).unwrap();
        let cfg = ModelConfig::preset(ModelKind::Decoder, "tiny", tok.vocab_size()).unwrap();
        let vars = VarMap::new();
        let mut model = AnyModel::new(
            &cfg,
            VarBuilder::from_varmap(&vars, DType::F32, &Device::Cpu),
        )
        .unwrap();
        let prompt = tok.build_prompt(&PromptSpec::default()).unwrap();
        let plan = [(SectionLabel::A, 8_000.0), (SectionLabel::B, 8_000.0)];
        let s = Sampling {
            temperature: 1.0,
            min_p: 0.0,
            max_tokens: 300,
        };
        let g = generate(
            &mut crate::sampler::CandleLogits::new(&mut model),
            &tok,
            &prompt,
            &plan,
            &s,
            &mut StdRng::seed_from_u64(3),
        )
        .unwrap();
        let mut dec = StreamDecoder::new();
        for &id in &g.tokens {
            assert!(dec.fits(&tok, id), "{:?}", tok.token(id));
            assert_eq!(dec.onset_vote(&tok, id), OnsetVote::Here);
            dec.push(&tok, id);
        }
        assert!(g.time_shift_votes > 0, "{g:?}");
        assert!(g.tokens.len() > 20);
        // The model's argmax breaks the grammar now and then; the sampled tokens never do.
        assert!(g.grammar_errors <= g.tokens.len());
    }
}
