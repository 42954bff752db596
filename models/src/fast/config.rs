//! The fast decoder's settings: the weight format and [`FastConfig`], a [`DecoderConfig`] plus
//! the Staria cross-attention sites; the tensor names it reads.

use serde::{Deserialize, Serialize};

use crate::decoder::DecoderConfig;
use crate::error::{Error, Result};

/// How the projection matrices (QKV, attention output, SwiGLU, LM head, cross-attention) are
/// stored. Norm weights and the token embedding stay f32 in every format.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum WeightFormat {
    /// Exact: f32 weights and activations (reference numerics).
    F32,
    /// IEEE f16 weights, f32 activations and accumulation.
    F16,
    /// int8 weights with one f32 scale per block of 32 (per row), activations quantized to int8
    /// per block of 32 before every mat-vec (q8_0 x q8_0). The fastest format.
    Q8,
}

impl WeightFormat {
    pub const ALL: [WeightFormat; 3] = [WeightFormat::F32, WeightFormat::F16, WeightFormat::Q8];

    pub fn name(self) -> &'static str {
        match self {
            WeightFormat::F32 => "f32",
            WeightFormat::F16 => "f16",
            WeightFormat::Q8 => "q8",
        }
    }
}

impl std::str::FromStr for WeightFormat {
    type Err = Error;
    fn from_str(s: &str) -> Result<Self> {
        match s.to_ascii_lowercase().as_str() {
            "f32" => Ok(WeightFormat::F32),
            "f16" => Ok(WeightFormat::F16),
            "q8" | "q8_0" | "int8" => Ok(WeightFormat::Q8),
            _ => Err(Error::Config(format!(
                "unknown weight format {s:?} (expected f32, f16 or q8)"
            ))),
        }
    }
}

fn default_max_latents() -> usize {
    64
}

/// The fast decoder's hyper-parameters: a [`DecoderConfig`] (the trunk, read with the same serde
/// keys from the model's `config.json` and checked by [`DecoderConfig::validate`]) plus the
/// optional Staria cross-attention settings. Built from the candle model's config
/// (`FastConfig::from(&decoder_config)` or `FastConfig::from(&model_config)`), as
/// candle-transformers' `LlamaConfig::into_config` builds its `Config`; the decoder's fields read
/// through it (`cfg.dim`, `cfg.rope_theta`) by `Deref`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct FastConfig {
    /// The decoder trunk: every size, RoPE theta, norm eps, window and grid setting.
    #[serde(flatten)]
    pub decoder: DecoderConfig,
    /// A Staria cross-attention site after every `cross_every`-th block; 0 = plain decoder.
    #[serde(default)]
    pub cross_every: usize,
    /// Most latent vectors a prompt may provide (K/V space is preallocated for this many).
    #[serde(default = "default_max_latents")]
    pub max_latents: usize,
    /// Size of one latent vector; `None` = `dim`.
    #[serde(default)]
    pub latent_dim: Option<usize>,
}

impl std::ops::Deref for FastConfig {
    type Target = DecoderConfig;
    fn deref(&self) -> &DecoderConfig {
        &self.decoder
    }
}

impl std::ops::DerefMut for FastConfig {
    fn deref_mut(&mut self) -> &mut DecoderConfig {
        &mut self.decoder
    }
}

impl FastConfig {
    /// A plain decoder config (no cross-attention) with the default RoPE theta and norm eps.
    pub fn decoder(
        vocab_size: usize,
        dim: usize,
        n_layers: usize,
        n_heads: usize,
        ff_mult: usize,
        max_seq_len: usize,
    ) -> Self {
        FastConfig::from(DecoderConfig::preset(
            vocab_size,
            dim,
            n_layers,
            n_heads,
            ff_mult,
            max_seq_len,
        ))
    }

    /// The decoder's `small` preset ([`DecoderConfig::small`]).
    pub fn small(vocab_size: usize) -> Self {
        FastConfig::from(DecoderConfig::small(vocab_size))
    }

    /// Number of Staria cross-attention sites.
    pub fn n_cross_sites(&self) -> usize {
        self.n_layers.checked_div(self.cross_every).unwrap_or(0)
    }

    pub fn latent_dim(&self) -> usize {
        self.latent_dim.unwrap_or(self.dim)
    }

    /// The decoder's checks ([`DecoderConfig::validate`]) and those of the cross-attention
    /// settings.
    pub fn validate(&self) -> Result<()> {
        self.decoder.validate()?;
        if self.cross_every > 0 && (self.max_latents == 0 || self.latent_dim() == 0) {
            return Err(Error::Config(
                "fast decoder: cross-attention needs max_latents and latent_dim of at least 1"
                    .into(),
            ));
        }
        Ok(())
    }
}

impl From<DecoderConfig> for FastConfig {
    /// A plain decoder with the candle `Decoder`'s settings.
    fn from(decoder: DecoderConfig) -> Self {
        FastConfig {
            decoder,
            cross_every: 0,
            max_latents: default_max_latents(),
            latent_dim: None,
        }
    }
}

impl From<&DecoderConfig> for FastConfig {
    /// A plain decoder with the candle `Decoder`'s settings.
    fn from(d: &DecoderConfig) -> Self {
        FastConfig::from(d.clone())
    }
}

impl From<&crate::model::ModelConfig> for FastConfig {
    /// The decoder trunk of a checkpoint's model; for Staria also its cross-attention sites
    /// (`cross_every`), room for every section's latents (`n_sections * encoder.n_latents`) and
    /// the latent size (`encoder.dim`). The snippet encoder itself is not part of the fast path.
    fn from(m: &crate::model::ModelConfig) -> Self {
        match m {
            crate::model::ModelConfig::Decoder(d) => FastConfig::from(d),
            crate::model::ModelConfig::Staria(s) => {
                let mut f = FastConfig::from(&s.decoder);
                f.cross_every = s.cross_every;
                f.max_latents = s.n_sections * s.encoder.n_latents;
                f.latent_dim = Some(s.encoder.dim);
                f
            }
        }
    }
}

impl FastConfig {
    /// Same as `FastConfig::from(model)`.
    pub fn from_model_config(model: &crate::model::ModelConfig) -> Self {
        FastConfig::from(model)
    }
}

/// Tensor names read by [`FastDecoder::from_tensors`](super::FastDecoder::from_tensors) (candle
/// `Linear` layout `[out, in]`).
pub mod names {
    pub const TOK_EMB: &str = "tok_emb.weight";
    /// `[window_bins, dim]`, only with `window_bins > 0`.
    pub const WIN_EMB: &str = "win_emb.weight";
    /// `[grid_bins, dim]`, only with `grid_bins > 0`.
    pub const GRID_HEAD: &str = "grid_head.weight";
    pub const NORM: &str = "norm.weight";
    pub const LM_HEAD: &str = "lm_head.weight";

    /// `layers.{i}.{suffix}` with suffix one of `attn_norm.weight`, `attn.qkv.weight`,
    /// `attn.out.weight`, `ff_norm.weight`, `ff.w1.weight`, `ff.w3.weight`, `ff.w2.weight`.
    pub fn layer(i: usize, suffix: &str) -> String {
        format!("layers.{i}.{suffix}")
    }

    /// `xattn.{j}.{suffix}` (Staria's cross-attention site `j`) with suffix one of
    /// `norm.weight` `[dim]`, `q.weight` `[dim, dim]`, `kv.weight` `[2 * dim, latent_dim]`
    /// (rows: k, v), `out.weight` `[dim, dim]`, `attn_gate` (`[1]`, `[]` or `[dim]`),
    /// `ff_norm.weight`, `ff.w1.weight` / `ff.w3.weight` `[hidden, dim]`, `ff.w2.weight`
    /// `[dim, hidden]`, `ff_gate`.
    pub fn cross(j: usize, suffix: &str) -> String {
        format!("xattn.{j}.{suffix}")
    }
}
