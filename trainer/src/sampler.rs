//! Model handles that generation (`generate::generate`) can drive: the candle [`AnyModel`] or
//! the fast CPU decoder ([`FastDecoder`], the engine's default backend), both behind
//! [`LogitSource`], so evaluation can generate 60+ pieces in minutes on one core.

use candle_core::Tensor;
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
