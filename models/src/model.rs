//! Either architecture behind one generation interface (see `docs/ARCHITECTURE.md`), plus the
//! config that says which one a checkpoint holds.

use candle_core::{Device, Tensor};
use candle_nn::VarBuilder;
use serde::{Deserialize, Serialize};

use crate::decoder::{Decoder, DecoderConfig};
use crate::encoder::Encoder;
use crate::error::{Error, Result};
use crate::grid::{self, BeatGrid, GridInput, GridRow, GridRows};
use crate::layers::KvCache;
use crate::prompt::Prompt;
use crate::staria::{Latents, SnippetBatch, Staria, StariaConfig};
use crate::tokenizer::Tokenizer;
use crate::window::{self, WindowClock};

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ModelKind {
    /// Decoder-only baseline; snippets are read inline.
    Decoder,
    /// Decoder + snippet encoder + gated cross-attention.
    Staria,
}

impl std::fmt::Display for ModelKind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            ModelKind::Decoder => "decoder",
            ModelKind::Staria => "staria",
        })
    }
}

/// A model's hyper-parameters, tagged by kind:
/// `{"kind": "decoder", "vocab_size": .., "dim": .., ...}` or
/// `{"kind": "staria", "decoder": {..}, "encoder": {..}, "cross_every": .., "n_sections": ..}`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "lowercase")]
pub enum ModelConfig {
    Decoder(DecoderConfig),
    Staria(StariaConfig),
}

impl ModelConfig {
    /// `name` is `"seed"`, `"small"` or `"tiny"`.
    pub fn preset(kind: ModelKind, name: &str, vocab_size: usize) -> Result<Self> {
        let cfg = match (kind, name) {
            (ModelKind::Decoder, "seed") => Self::Decoder(DecoderConfig::seed(vocab_size)),
            (ModelKind::Decoder, "small") => Self::Decoder(DecoderConfig::small(vocab_size)),
            (ModelKind::Decoder, "tiny") => Self::Decoder(DecoderConfig::tiny(vocab_size)),
            (ModelKind::Staria, "seed") => Self::Staria(StariaConfig::seed(vocab_size)),
            (ModelKind::Staria, "small") => Self::Staria(StariaConfig::small(vocab_size)),
            (ModelKind::Staria, "tiny") => Self::Staria(StariaConfig::tiny(vocab_size)),
            _ => {
                return Err(Error::Config(format!(
                    "unknown {kind} preset {name:?}; expected seed, small or tiny"
                )));
            }
        };
        cfg.validate()?;
        Ok(cfg)
    }

    pub fn kind(&self) -> ModelKind {
        match self {
            Self::Decoder(_) => ModelKind::Decoder,
            Self::Staria(_) => ModelKind::Staria,
        }
    }

    pub fn validate(&self) -> Result<()> {
        match self {
            Self::Decoder(c) => c.validate(),
            Self::Staria(c) => c.validate(),
        }
    }

    /// The decoder (trunk) settings.
    pub fn decoder(&self) -> &DecoderConfig {
        match self {
            Self::Decoder(c) => c,
            Self::Staria(c) => &c.decoder,
        }
    }

    pub fn vocab_size(&self) -> usize {
        self.decoder().vocab_size
    }

    pub fn max_seq_len(&self) -> usize {
        self.decoder().max_seq_len
    }
}

enum Net {
    Decoder(Decoder),
    /// `latents`: the current prompt's snippets; kept until the next `begin`.
    Staria {
        model: Box<Staria>,
        latents: Latents,
    },
}

/// A model of either kind that owns its KV cache (batch 1). `begin` starts a piece; `step` and
/// `extend` continue it; `truncate` rewinds it (live modes).
pub struct AnyModel {
    net: Net,
    cache: KvCache,
    config: ModelConfig,
    /// The window position of the cached tokens, for a model that reads it (`crate::window`);
    /// set by [`set_tokenizer`](Self::set_tokenizer).
    clock: Option<WindowClock>,
    /// The beat-grid head's geometry (`crate::grid`), with its tokenizer; `None` without one.
    grid_rows: Option<GridRows>,
    /// The tempo grid of the piece being decoded; `None` = unknown (the head adds nothing).
    grid: Option<BeatGrid>,
    /// `[onsets]` grid row of the last position.
    grid_row: Vec<u32>,
}

impl std::fmt::Debug for AnyModel {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AnyModel")
            .field("kind", &self.kind())
            .field("position", &self.position())
            .field("config", &self.config)
            .finish()
    }
}

impl AnyModel {
    /// Builds the model and allocates its KV cache (all layers up to `max_seq_len`).
    pub fn new(config: &ModelConfig, vb: VarBuilder) -> Result<Self> {
        let (net, cache) = match config {
            ModelConfig::Decoder(c) => {
                let model = Decoder::new(c, vb)?;
                let cache = model.new_cache()?;
                (Net::Decoder(model), cache)
            }
            ModelConfig::Staria(c) => {
                let model = Box::new(Staria::new(c, vb)?);
                let cache = model.new_cache()?;
                let latents = Latents::empty();
                (Net::Staria { model, latents }, cache)
            }
        };
        Ok(Self {
            net,
            cache,
            config: config.clone(),
            clock: None,
            grid_rows: None,
            grid: None,
            grid_row: Vec::new(),
        })
    }

    /// Gives the model its tokenizer, which a model with a window-position input needs to
    /// decode (`crate::window`) and a beat-grid head to place onsets (`crate::grid`); a no-op
    /// for one with neither. Checkpoint loading calls it.
    pub fn set_tokenizer(&mut self, tokenizer: &Tokenizer) {
        self.clock = WindowClock::new(tokenizer, self.config.decoder());
        self.grid_rows = GridRows::of(self.config.decoder(), tokenizer);
        self.grid_row = vec![0; self.grid_rows.map_or(0, |g| g.onsets)];
    }

    /// The tempo grid of the pieces decoded from now on (`None`: tempo unknown); only a model
    /// with a beat-grid head reads it. Takes effect at the next `begin`/`step`/`extend`.
    pub fn set_grid(&mut self, grid: Option<BeatGrid>) {
        self.grid = grid;
    }

    /// Whether the model has a beat-grid head (`crate::grid`).
    pub fn has_grid_head(&self) -> bool {
        self.config.decoder().grid_bins > 0
    }

    pub fn kind(&self) -> ModelKind {
        self.config.kind()
    }

    pub fn config(&self) -> &ModelConfig {
        &self.config
    }

    pub fn vocab_size(&self) -> usize {
        self.config.vocab_size()
    }

    pub fn max_seq_len(&self) -> usize {
        self.config.max_seq_len()
    }

    pub fn device(&self) -> &Device {
        match &self.net {
            Net::Decoder(m) => m.device(),
            Net::Staria { model, .. } => model.device(),
        }
    }

    /// Tokens in the KV cache.
    pub fn position(&self) -> usize {
        self.cache.len()
    }

    /// Starts a piece: clears the cache, encodes the snippets (Staria), prefills `prompt.inline`
    /// (decoder kind) or `prompt.decoder` (Staria). Returns the last logits, `[vocab]` f32 on the
    /// CPU. On error the cache is left empty (position 0).
    pub fn begin(&mut self, prompt: &Prompt) -> Result<Tensor> {
        self.cache.reset();
        let tokens = match &mut self.net {
            Net::Decoder(_) => &prompt.inline,
            Net::Staria { model, latents } => {
                *latents = Latents::empty();
                *latents = model.encode_snippets(&prompt.snippets)?;
                &prompt.decoder
            }
        };
        if tokens.is_empty() {
            return Err(Error::Tokenizer(format!(
                "{} model: the prompt's {} token list is empty; begin needs at least one token",
                self.kind(),
                match self.kind() {
                    ModelKind::Decoder => "inline",
                    ModelKind::Staria => "decoder",
                }
            )));
        }
        self.extend(tokens)
    }

    /// One token in, the next token's logits (`[vocab]` f32, CPU) out.
    pub fn step(&mut self, token: u32) -> Result<Tensor> {
        self.extend(&[token])
    }

    /// Several tokens in (live modes), the last one's logits out. On error nothing is appended.
    pub fn extend(&mut self, tokens: &[u32]) -> Result<Tensor> {
        match &mut self.clock {
            Some(clock) => {
                clock.feed(self.cache.len(), tokens)?;
            }
            None if self.config.decoder().window_bins > 0 => {
                return Err(window::missing_clock(
                    "model",
                    self.config.decoder().window_bins,
                ));
            }
            None => {}
        }
        let win = (self.config.decoder().window_bins > 0)
            .then(|| self.clock.as_ref().map(|c| c.fed_bins(tokens.len())))
            .flatten();
        let grid_row = match (&self.clock, self.grid_rows) {
            (Some(clock), Some(rows)) if self.grid.is_some() => {
                rows.fill(
                    self.grid,
                    grid::window_of(clock.state()),
                    &mut self.grid_row,
                );
                Some(GridRow {
                    first_onset: rows.first_onset,
                    bins: &self.grid_row,
                })
            }
            _ => None,
        };
        let logits = match &self.net {
            Net::Decoder(m) => m.forward_cached(tokens, win, grid_row, &mut self.cache)?,
            Net::Staria { model, latents } => {
                model.forward_cached(tokens, win, grid_row, &mut self.cache, latents)?
            }
        };
        Ok(logits.to_device(&Device::Cpu)?)
    }

    /// Drops cached positions `>= len` (no-op if `len >= position()`); the snippets stay. The
    /// next `step`/`extend` continues from `len`.
    pub fn truncate(&mut self, len: usize) {
        self.cache.truncate(len);
    }

    /// Training forward (no cache): `ids` `[B, T]` u32 in the kind's layout → logits
    /// `[B, T, vocab]`. `win` holds the window-position bins `[B, T]` (`window::latest_onsets` bucketed by `WindowBins::bin`),
    /// required when the model reads them; `grid` the beat-grid rows (`crate::grid`; `None`:
    /// tempo unknown). `snippets` is for Staria (`None` = no cross-attention); a decoder-only
    /// model refuses them.
    pub fn forward_train(
        &self,
        ids: &Tensor,
        win: Option<&Tensor>,
        grid: Option<&GridInput>,
        snippets: Option<&SnippetBatch>,
    ) -> Result<Tensor> {
        match (&self.net, snippets) {
            (Net::Decoder(m), None) => m.forward(ids, win, grid),
            (Net::Decoder(_), Some(_)) => Err(Error::Config(
                "decoder model: forward_train got snippets; the decoder-only baseline reads \
                 them inline"
                    .into(),
            )),
            (Net::Staria { model, .. }, sb) => model.forward(ids, win, grid, sb),
        }
    }

    /// The snippet encoder (Staria only), e.g. for contrastive pre-training.
    pub fn encoder(&self) -> Option<&Encoder> {
        match &self.net {
            Net::Decoder(_) => None,
            Net::Staria { model, .. } => Some(model.encoder()),
        }
    }

    /// The decoder trunk.
    pub fn decoder(&self) -> &Decoder {
        match &self.net {
            Net::Decoder(m) => m,
            Net::Staria { model, .. } => model.decoder(),
        }
    }

    /// The Staria model, if this is one.
    pub fn staria(&self) -> Option<&Staria> {
        match &self.net {
            Net::Decoder(_) => None,
            Net::Staria { model, .. } => Some(model),
        }
    }
}
