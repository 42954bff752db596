//! The decoder cursor of a [`Generator`]: starting a piece from a prompt (prefill, keeping the
//! cached part a repeated prompt shares), stepping one token, rewinding and extending the KV
//! cache. Every call leaves the next token's logits in the generator's buffer.

use staria_models::Prompt;
use staria_models::grid::BeatGrid;
use staria_models::model::ModelKind;

use super::{Generator, Net, Result, copy_logits, request};

impl Generator {
    /// Starts a piece from `prompt`; returns the next token's logits. Afterwards the cache holds
    /// exactly the prompt: the fast backend keeps the part of its cache the prompt shares (with
    /// the same snippets, for Staria) and prefills only the rest, so a repeated or re-triggered
    /// request starts sooner; the results are identical to a fresh start. On error the cache
    /// holds at most a prefix of the prompt.
    pub fn begin(&mut self, prompt: &Prompt) -> Result<&[f32]> {
        let kind = self.kind();
        let tokens = match kind {
            ModelKind::Decoder => &prompt.inline,
            ModelKind::Staria => &prompt.decoder,
        };
        let len = tokens.len();
        if len >= self.max_seq_len() {
            return Err(request(format!(
                "the prompt has {len} tokens but the model's context holds {}; capture shorter snippets",
                self.max_seq_len()
            )));
        }
        match &mut self.net {
            Net::Candle(m) => {
                let t = m.begin(prompt)?;
                copy_logits(&t, &mut self.logits)?;
            }
            Net::Fast {
                fast,
                encoder,
                cached,
                cached_snippets,
                ..
            } => {
                if tokens.is_empty() {
                    fast.reset();
                    cached.clear();
                    return Err(request(format!(
                        "{kind} model: the prompt's {} token list is empty; begin needs at least one token",
                        match kind {
                            ModelKind::Decoder => "inline",
                            ModelKind::Staria => "decoder",
                        }
                    )));
                }
                // Keep the cached prefix this prompt shares (the same snippets for Staria), less
                // its last token at least, whose logits are needed again.
                let same_latents = encoder.is_none() || *cached_snippets == prompt.snippets;
                let shared = if same_latents {
                    cached
                        .iter()
                        .zip(tokens)
                        .take_while(|(a, b)| a == b)
                        .count()
                } else {
                    0
                };
                let keep = shared.min(len - 1);
                fast.truncate(keep);
                cached.truncate(keep);
                if !same_latents && let Some(model) = encoder {
                    // The previous prompt's latents must not survive a failed encode.
                    fast.set_latents(&[], 0)?;
                    cached_snippets.clear();
                    let staria = model.staria().ok_or_else(|| {
                        request("the fast backend's encoder model is not a Staria model")
                    })?;
                    let latents = staria.encode_snippets(&prompt.snippets)?;
                    if let Some(t) = latents.latents() {
                        fast.set_latents_tensor(t)?;
                    }
                    cached_snippets.clone_from(&prompt.snippets);
                }
                self.logits.copy_from_slice(fast.prefill(&tokens[keep..])?);
                cached.extend_from_slice(&tokens[keep..]);
            }
        }
        Ok(&self.logits)
    }

    /// The tempo grid of the pieces generated from now on (`None`: tempo unknown), for a model
    /// with a beat-grid head (`staria_models::grid`; a no-op for others). It changes only the
    /// logits, not the KV cache, so the prompt reuse of `begin` stays exact.
    pub fn set_grid(&mut self, grid: Option<BeatGrid>) {
        match &mut self.net {
            Net::Candle(m) => m.set_grid(grid),
            Net::Fast { fast, .. } => fast.set_grid(grid),
        }
    }

    /// Forgets the KV cache (and Staria latents), so the next `begin` prefills its whole prompt.
    pub fn reset(&mut self) -> Result<()> {
        if let Net::Fast {
            fast,
            cached,
            cached_snippets,
            encoder,
            ..
        } = &mut self.net
        {
            fast.reset();
            cached.clear();
            cached_snippets.clear();
            if encoder.is_some() {
                fast.set_latents(&[], 0)?;
            }
        }
        // The candle backend's `begin` always starts from an empty cache.
        Ok(())
    }

    /// Feeds one token; returns the next token's logits. Allocates nothing on the fast backend.
    pub fn step(&mut self, id: u32) -> Result<&[f32]> {
        match &mut self.net {
            Net::Candle(m) => {
                let t = m.step(id)?;
                copy_logits(&t, &mut self.logits)?;
            }
            Net::Fast { fast, cached, .. } => {
                self.logits.copy_from_slice(fast.step(id)?);
                cached.push(id);
            }
        }
        Ok(&self.logits)
    }

    /// Drops the last `n` tokens from the KV cache (both backends), so that the next
    /// `step`/`extend` continues from `position() - n` and gives bit-identical logits to the
    /// first time those positions were fed. The logits buffer keeps the newest logits (feed a
    /// token to get fresh ones). Allocates nothing.
    pub fn rewind(&mut self, n: usize) -> Result<()> {
        let pos = self.position();
        if n > pos {
            return Err(request(format!(
                "cannot rewind {n} tokens: the cache holds {pos}"
            )));
        }
        match &mut self.net {
            Net::Candle(m) => m.truncate(pos - n),
            Net::Fast { fast, cached, .. } => {
                fast.truncate(pos - n);
                cached.truncate(pos - n);
            }
        }
        Ok(())
    }

    /// Feeds several tokens; returns the last one's logits.
    pub fn extend(&mut self, ids: &[u32]) -> Result<&[f32]> {
        match &mut self.net {
            Net::Candle(m) => {
                let t = m.extend(ids)?;
                copy_logits(&t, &mut self.logits)?;
            }
            Net::Fast { fast, cached, .. } => {
                self.logits.copy_from_slice(fast.prefill(ids)?);
                cached.extend_from_slice(ids);
            }
        }
        Ok(&self.logits)
    }
}
