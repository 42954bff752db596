//! Minimal sampling for evaluation and dreaming: temperature and min-p over the logits of any
//! [`LogitSource`] (the candle model or the fast CPU decoder, see `sampler`), with the section
//! plan forced (the trainer may not depend on the engine crate, so this is the
//! engine's approach in its simplest form).
//!
//! The model may emit notes, onsets, durations, `<T>`, `<D>` and `<E>`; prompt-only tokens
//! (`<P>`, `<U>`, `<S>`, prompt markers, forms, styles) and section tags are masked, since tags
//! come from the plan: `<X_SECTION>` is fed when the previous section has played its length.
//! With section windows (`TokenizerConfig::section_windows`) a section starts on time, as the
//! engine starts it: a note whose sampled onset reaches the section's end is taken back, the
//! onset of that end and the next tag are fed (after `<T>`s to its window), and the note is fed
//! again to sample its onset in the new section (a `<T>` that would pass the end starts the
//! next section instead); a note or `<T>` reaching the last section's end ends the piece. Without, the tag is fed before the first note after the end.
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
use staria_models::prompt::{Prompt, SnippetFollower};
use staria_models::tokenizer::{Expect, OnsetVote, StreamDecoder, TokenKind, Tokenizer};

use crate::error::Result;
use crate::sampler::LogitSource;

#[derive(Debug, Clone, Copy)]
pub struct Sampling {
    pub temperature: f64,
    pub min_p: f64,
    /// Tokens generated after the prompt, at most.
    pub max_tokens: usize,
    /// Snippet following: added to the logit of the token the current section's snippet has
    /// next (`staria_models::prompt::SnippetFollower`); 0 leaves the model alone.
    pub follow_bias: f32,
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
/// right after the prompt; each next one once the music's time reaches the previous section's
/// end (see the module docs). Stops after the last section's length, at `<E>`, at
/// `max_tokens`, or at the model's context.
pub fn generate<M: LogitSource + ?Sized>(
    model: &mut M,
    tok: &Tokenizer,
    prompt: &Prompt,
    plan: &[(SectionLabel, f64)],
    s: &Sampling,
    rng: &mut impl Rng,
) -> Result<Generated> {
    let mut errors = 0;
    let mut votes = 0;
    let mut ended = false;
    let limit = model.max_seq_len().saturating_sub(2);
    let section_windows = tok.config().section_windows;
    let mut follower = SnippetFollower::default();
    let mut next_section = 0;
    let mut section_end = 0.0f64;
    let mut body = Body {
        tok,
        dec: StreamDecoder::new(),
        out: Vec::new(),
        logits: model.begin(prompt)?.to_vec(),
        limit,
    };
    while body.out.len() < s.max_tokens && model.position() < limit {
        let expects = body.dec.expects();
        // Force the next tag at the start and when the current section's time is up (only
        // between notes, so a tag never splits one).
        if next_section < plan.len()
            && expects == Expect::Any
            && (next_section == 0 || body.dec.now_ms() >= section_end)
        {
            let (label, len) = plan[next_section];
            next_section += 1;
            // The section's time 0: where it was planned to start (legacy sections start at the
            // next note after their tag).
            follower.start(tok, prompt.snippet(label), section_end);
            if !section_windows {
                section_end = body.dec.now_ms() + len;
                body.feed(model, tok.section_id(label))?;
                continue;
            }
            // On time: at the planned end, or now when the music has gone past it.
            let start = section_end.max(body.dec.now_ms());
            if !body.start_section(model, label, start)? {
                break;
            }
            section_end = start + len;
            continue;
        }
        if next_section == plan.len() && expects == Expect::Any && body.dec.now_ms() >= section_end
        {
            break;
        }
        let dec = body.dec;
        if top_choice(tok, &body.logits).is_some_and(|id| grammar_error(tok, &dec, id)) {
            errors += 1;
        }
        if follower
            .want(tok, &dec)
            .is_some_and(|want| dec.fits(tok, want))
        {
            follower.bias(tok, &dec, &mut body.logits, s.follow_bias);
        }
        let id = sample_from(tok, &body.logits, s, rng, |id| dec.fits(tok, id));
        let window_end = dec.window_start_ms() as f64 + tok.config().window_ms as f64;
        let vote = expects == Expect::Onset && dec.onset_vote(tok, id) == OnsetVote::NextWindow;
        if vote && !(section_windows && window_end > section_end) {
            // A vote for `<T>`: take the note token back, feed `<T>` and the note again, and
            // sample its onset in the new window (the next turn of the loop).
            let note = body.retract(model);
            votes += 1;
            for t in [tok.time_shift_id(), note] {
                body.feed(model, t)?;
            }
            continue;
        }
        if section_windows && id == tok.time_shift_id() && window_end > section_end {
            // `<T>` would pass the section's end: the next section starts there instead (or
            // the piece ends after the last one).
            if next_section == plan.len() {
                break;
            }
            let (label, len) = plan[next_section];
            next_section += 1;
            follower.start(tok, prompt.snippet(label), section_end);
            if !body.start_section(model, label, section_end)? {
                break;
            }
            section_end += len;
            continue;
        }
        if section_windows
            && expects == Expect::Onset
            && let TokenKind::Onset { ms } = tok.kind(id)
            && (vote || dec.window_start_ms() as f64 + ms as f64 >= section_end)
        {
            // The note would start at or after the section's end (or votes for a `<T>` that
            // would pass it): take it back; the next section starts first, then the note is
            // fed again; after the last section the piece ends.
            let note = body.retract(model);
            if next_section == plan.len() {
                break;
            }
            let (label, len) = plan[next_section];
            next_section += 1;
            follower.start(tok, prompt.snippet(label), section_end);
            if !body.start_section(model, label, section_end)? || model.position() >= limit {
                break;
            }
            body.feed(model, note)?;
            follower.advance(tok, note);
            section_end += len;
            continue;
        }
        if id == tok.end_id() {
            body.dec.push(tok, id);
            body.out.push(id);
            ended = true;
            break;
        }
        follower.advance(tok, id);
        body.feed(model, id)?;
    }
    Ok(Generated {
        tokens: body.out,
        grammar_errors: errors,
        time_shift_votes: votes,
        sections_started: next_section,
        ended,
    })
}

/// The body being generated: the grammar state, the tokens so far and the logits of the next.
struct Body<'a> {
    tok: &'a Tokenizer,
    dec: StreamDecoder,
    out: Vec<u32>,
    /// Logits of the next token: `[vocab]`, refilled after every step.
    logits: Vec<f32>,
    /// Positions the model may fill (a margin below its context).
    limit: usize,
}

impl Body<'_> {
    /// Feeds a token to the grammar and the model.
    fn feed<M: LogitSource + ?Sized>(&mut self, model: &mut M, id: u32) -> Result<()> {
        self.dec.push(self.tok, id);
        self.out.push(id);
        refill(&mut self.logits, model.step(id)?);
        Ok(())
    }

    /// Takes back the pending note or drum token (grammar, tokens and one cache position) and
    /// returns it; the logits stay stale until the next `feed`.
    fn retract<M: LogitSource + ?Sized>(&mut self, model: &mut M) -> u32 {
        self.dec.retract_pending();
        model.truncate(model.position() - 1);
        self.out.pop().expect("a note token is pending")
    }

    /// Starts section `label` at `start_ms` (section windows): `<T>`s to its window, the onset
    /// of the start and the tag. `false` when the context has no room for it.
    fn start_section<M: LogitSource + ?Sized>(
        &mut self,
        model: &mut M,
        label: SectionLabel,
        start_ms: f64,
    ) -> Result<bool> {
        for id in self.tok.section_start(&self.dec, label, start_ms) {
            if model.position() >= self.limit {
                return Ok(false);
            }
            self.feed(model, id)?;
        }
        Ok(true)
    }
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
        keeps_the_grammar(TokenizerConfig::default());
    }

    /// With section windows the forced section starts (`onset:k <B_SECTION>`) come on time, at
    /// the plan's boundary, and every sampled token still fits the grammar.
    #[test]
    fn section_windows_start_sections_on_time() {
        let tok = keeps_the_grammar(TokenizerConfig {
            section_windows: true,
            ..TokenizerConfig::default()
        });
        let song = tok.0.decode(&tok.1);
        let starts: Vec<_> = song
            .sections
            .iter()
            .map(|s| (s.label, s.start_ms))
            .collect();
        assert_eq!(starts, [(SectionLabel::A, 0.0), (SectionLabel::B, 8_000.0)]);
        assert!(song.notes.iter().all(|n| n.start_ms < 16_000.0));
    }

    /// Generates two 8 s sections with a random tiny model and checks every token against the
    /// grammar; returns the tokenizer and the body.
    fn keeps_the_grammar(config: TokenizerConfig) -> (Tokenizer, Vec<u32>) {
        let tok = Tokenizer::new(config).unwrap();
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
            max_tokens: 600,
            follow_bias: 0.0,
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
        for (i, &id) in g.tokens.iter().enumerate() {
            // A section start's onset stands where no note waits for one (it is forced).
            let section_start = tok.config().section_windows
                && matches!(
                    g.tokens.get(i + 1).map(|&n| tok.kind(n)),
                    Some(TokenKind::Section(_))
                );
            if !section_start && !dec.section_pending() {
                assert!(dec.fits(&tok, id), "{:?}", tok.token(id));
                assert_eq!(dec.onset_vote(&tok, id), OnsetVote::Here);
            }
            dec.push(&tok, id);
        }
        assert!(g.time_shift_votes > 0, "{g:?}");
        assert!(g.tokens.len() > 10, "{:?}", tok.to_strings(&g.tokens));
        assert_eq!(g.sections_started, 2);
        // The model's argmax breaks the grammar now and then; the sampled tokens never do.
        assert!(g.grammar_errors <= g.tokens.len());
        (tok, g.tokens)
    }
}
