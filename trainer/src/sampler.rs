//! Model handles that generation (`generate::generate`) can drive: the candle [`AnyModel`] or
//! the fast CPU decoder ([`FastDecoder`], the engine's default backend), both behind
//! [`LogitSource`], so evaluation can generate 60+ pieces in minutes on one core.

use candle_core::Tensor;
use staria_models::SectionLabel;
use staria_models::fast::{FastDecoder, WeightFormat};
use staria_models::grid::BeatGrid;
use staria_models::model::{AnyModel, ModelKind};
use staria_models::prompt::Prompt;

use crate::error::{Result, TrainError};

/// A model that turns a prompt and then one token at a time into next-token logits.
pub trait LogitSource {
    /// Resets the cache and prefills the prompt (its inline layout for a decoder-only model,
    /// the decoder layout plus encoded snippets for Staria); logits `[vocab]`.
    fn begin(&mut self, prompt: &Prompt) -> Result<&[f32]>;
    /// One token in, the next logits out.
    fn step(&mut self, token: u32) -> Result<&[f32]>;
    /// Tokens in the cache.
    fn position(&self) -> usize;
    /// Drops the cache past its first `len` tokens (the onset vote takes a note token back).
    fn truncate(&mut self, len: usize);
    fn max_seq_len(&self) -> usize;
    /// The tempo grid of the pieces generated from now on, for a model with a beat-grid head
    /// (`staria_models::grid`); `None`: tempo unknown.
    fn set_grid(&mut self, grid: Option<BeatGrid>);
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
    fn truncate(&mut self, len: usize) {
        self.model.truncate(len);
    }
    fn max_seq_len(&self) -> usize {
        self.model.max_seq_len()
    }
    fn set_grid(&mut self, grid: Option<BeatGrid>) {
        self.model.set_grid(grid);
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
    fn truncate(&mut self, len: usize) {
        self.fast.truncate(len);
    }
    fn max_seq_len(&self) -> usize {
        self.fast.max_seq_len()
    }
    fn set_grid(&mut self, grid: Option<BeatGrid>) {
        self.fast.set_grid(grid);
    }
}

/// Form guidance (classifier-free guidance against a swapped form): two copies of one model
/// decode the same body, `cond` from the real prompt and `guide` from one whose snippets trade
/// letters (A's material under the B tag and the other way round); the sampler reads
/// `log p_cond + scale * (log p_cond - log p_guide)`, which favours what the model plays
/// *because* a section's own snippet is its own, i.e. form. `scale` 0 is the model alone.
/// Costs a second decode of every token.
pub struct Guided<'a> {
    cond: &'a mut dyn LogitSource,
    guide: &'a mut dyn LogitSource,
    scale: f32,
    /// The prompt `guide` begins from on the next `begin`.
    guide_prompt: Option<Prompt>,
    /// `[vocab]` the guided logits (log-probabilities up to a constant).
    logits: Vec<f32>,
    /// `[vocab]` scratch: the cond stream's log-probabilities.
    cond_logp: Vec<f32>,
}

impl<'a> Guided<'a> {
    pub fn new(cond: &'a mut dyn LogitSource, guide: &'a mut dyn LogitSource, scale: f32) -> Self {
        Self {
            cond,
            guide,
            scale,
            guide_prompt: None,
            logits: Vec::new(),
            cond_logp: Vec::new(),
        }
    }

    /// The contrasting prompt for the next piece (built with [`rotated_snippets`]); required
    /// before `begin`.
    pub fn set_guide_prompt(&mut self, prompt: Prompt) {
        self.guide_prompt = Some(prompt);
    }
}

/// `out = cond_logp + scale * (cond_logp - log_softmax(guide))`; a token either stream rules
/// out keeps its own score (no infinities from the contrast).
fn guide_into(cond_logp: &[f32], guide: &[f32], scale: f32, out: &mut Vec<f32>) {
    log_softmax_into(guide, out);
    for (out, &cond) in out.iter_mut().zip(cond_logp) {
        let guide = *out;
        let contrast = if guide.is_finite() && cond.is_finite() {
            cond - guide
        } else {
            0.0
        };
        *out = cond + scale * contrast;
    }
}

/// The snippets with their letters rotated (A plays B's material, B the next letter's, the last
/// letter A's; two letters swap): the contrasting prompt of [`Guided`]. The letters' order and
/// the total length stay, so both prompts are equally long.
pub fn rotated_snippets(snippets: &[(SectionLabel, Vec<u32>)]) -> Vec<(SectionLabel, Vec<u32>)> {
    let k = snippets.len();
    (0..k)
        .map(|i| (snippets[i].0, snippets[(i + 1) % k].1.clone()))
        .collect()
}

/// `out[i] = x[i] - logsumexp(x)` (non-finite entries stay as they are).
fn log_softmax_into(x: &[f32], out: &mut Vec<f32>) {
    let max = x
        .iter()
        .copied()
        .filter(|v| v.is_finite())
        .fold(f32::NEG_INFINITY, f32::max);
    let sum: f64 = x
        .iter()
        .filter(|v| v.is_finite())
        .map(|&v| f64::from(v - max).exp())
        .sum();
    let log_z = max + sum.ln() as f32;
    out.clear();
    out.extend(x.iter().map(|&v| if v.is_finite() { v - log_z } else { v }));
}

impl LogitSource for Guided<'_> {
    fn begin(&mut self, prompt: &Prompt) -> Result<&[f32]> {
        let guide_prompt = self.guide_prompt.take().ok_or_else(|| {
            TrainError::Data("form guidance: no contrasting prompt was set for this piece".into())
        })?;
        log_softmax_into(self.cond.begin(prompt)?, &mut self.cond_logp);
        let guide = self.guide.begin(&guide_prompt)?;
        guide_into(&self.cond_logp, guide, self.scale, &mut self.logits);
        Ok(&self.logits)
    }
    fn step(&mut self, token: u32) -> Result<&[f32]> {
        log_softmax_into(self.cond.step(token)?, &mut self.cond_logp);
        let guide = self.guide.step(token)?;
        guide_into(&self.cond_logp, guide, self.scale, &mut self.logits);
        Ok(&self.logits)
    }
    fn position(&self) -> usize {
        self.cond.position()
    }
    fn truncate(&mut self, len: usize) {
        // Both take back the same body tokens (the prompts are equally long with rotated
        // snippets; this stays right if they are not).
        let back = self.cond.position().saturating_sub(len);
        self.cond.truncate(len);
        let guide_len = self.guide.position().saturating_sub(back);
        self.guide.truncate(guide_len);
    }
    fn max_seq_len(&self) -> usize {
        // Both streams must fit.
        self.cond.max_seq_len().min(self.guide.max_seq_len())
    }
    fn set_grid(&mut self, grid: Option<BeatGrid>) {
        self.cond.set_grid(grid);
        self.guide.set_grid(grid);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use candle_core::{DType, Device};
    use candle_nn::{VarBuilder, VarMap};
    use staria_models::model::ModelConfig;
    use staria_models::tokenizer::{PromptSpec, Tokenizer, TokenizerConfig};

    #[test]
    fn rotated_snippets_swap_two_letters_and_rotate_more() {
        use SectionLabel::{A, B, C};
        let two = [(A, vec![1, 2]), (B, vec![3])];
        assert_eq!(rotated_snippets(&two), vec![(A, vec![3]), (B, vec![1, 2])]);
        let three = [(A, vec![1]), (B, vec![2]), (C, vec![3])];
        assert_eq!(
            rotated_snippets(&three),
            vec![(A, vec![2]), (B, vec![3]), (C, vec![1])]
        );
    }

    #[test]
    fn guidance_amplifies_the_difference_and_scale_zero_is_the_model_alone() {
        let cond = [2.0f32, 1.0, 0.0, f32::NEG_INFINITY];
        let guide = [1.0f32, 1.0, 1.0, 0.0];
        let mut cond_logp = Vec::new();
        log_softmax_into(&cond, &mut cond_logp);
        let mut out = Vec::new();
        guide_into(&cond_logp, &guide, 0.0, &mut out);
        assert_eq!(out, cond_logp);
        guide_into(&cond_logp, &guide, 2.0, &mut out);
        // Token 0 is what the real prompt favours over the contrast: it gains on token 2.
        let gap = |v: &[f32]| v[0] - v[2];
        assert!((gap(&out) - 3.0 * gap(&cond_logp)).abs() < 1e-5);
        // A token the model rules out stays out; no NaN or infinity enters.
        assert_eq!(out[3], f32::NEG_INFINITY);
        assert!(out[..3].iter().all(|x| x.is_finite()));
    }

    /// Two copies of one model through `Guided` at scale 0 read the model alone, step by step
    /// and after a truncation; at scale 1 the logits differ once the prompts differ.
    #[test]
    fn guided_streams_follow_the_model() {
        let tok = Tokenizer::new(TokenizerConfig::default()).unwrap();
        let cfg = ModelConfig::preset(ModelKind::Decoder, "tiny", tok.vocab_size()).unwrap();
        let vars = VarMap::new();
        let build = || {
            AnyModel::new(
                &cfg,
                VarBuilder::from_varmap(&vars, DType::F32, &Device::Cpu),
            )
            .unwrap()
        };
        let (mut alone, mut cond, mut guide) = (build(), build(), build());
        let note = tok.ids_of(&["piano:60:80", "onset:0", "dur:500"]).unwrap();
        let other = tok
            .ids_of(&["piano:72:80", "onset:250", "dur:250"])
            .unwrap();
        let spec = PromptSpec {
            snippets: vec![(SectionLabel::A, note.clone()), (SectionLabel::B, other)],
            ..PromptSpec::default()
        };
        let prompt = tok.build_prompt(&spec).unwrap();
        let contrast = tok
            .build_prompt(&PromptSpec {
                snippets: rotated_snippets(&spec.snippets),
                ..spec.clone()
            })
            .unwrap();
        let mut plain = CandleLogits::new(&mut alone);
        let mut g1 = CandleLogits::new(&mut cond);
        let mut g2 = CandleLogits::new(&mut guide);
        let mut guided = Guided::new(&mut g1, &mut g2, 0.0);
        let close = |a: &[f32], b: &[f32]| {
            let mut la = Vec::new();
            log_softmax_into(a, &mut la);
            la.iter().zip(b).all(|(x, y)| (x - y).abs() < 1e-4)
        };
        guided.set_guide_prompt(contrast.clone());
        let g = guided.begin(&prompt).unwrap().to_vec();
        assert!(close(plain.begin(&prompt).unwrap(), &g));
        for &id in &note {
            let g = guided.step(id).unwrap().to_vec();
            assert!(close(plain.step(id).unwrap(), &g));
        }
        let back = plain.position() - 2;
        plain.truncate(back);
        guided.truncate(back);
        assert_eq!(guided.position(), back);
        let g = guided.step(note[1]).unwrap().to_vec();
        assert!(close(plain.step(note[1]).unwrap(), &g));

        let mut g1 = CandleLogits::new(&mut cond);
        let mut g2 = CandleLogits::new(&mut guide);
        let mut guided = Guided::new(&mut g1, &mut g2, 1.0);
        assert!(guided.begin(&prompt).is_err(), "no contrasting prompt set");
        guided.set_guide_prompt(contrast);
        let g = guided.begin(&prompt).unwrap().to_vec();
        assert!(!close(plain.begin(&prompt).unwrap(), &g));
    }
}
