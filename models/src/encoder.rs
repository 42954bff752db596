//! Bidirectional snippet encoder: compresses each section snippet into `n_latents` vectors.
//!
//! Same block design as the decoder (pre-LN, fused QKV, RoPE, SwiGLU, no biases) without the
//! causal mask; padded batches use a key padding mask. After a final norm, learned latent
//! queries cross-attend to the encoded tokens (Perceiver-style pooling), get a residual SwiGLU,
//! and a last norm.
//!
//! Tensor names (relative to the encoder's prefix; Staria puts them under `encoder.`):
//! ```text
//! tok_emb.weight                       [vocab, dim]
//! layers.{i}.{attn_norm,attn.qkv,attn.out,ff_norm,ff.w1,ff.w2,ff.w3}.weight   as in the decoder
//! norm.weight                          [dim]             final norm of the token stream
//! pool.latents                         [n_latents, dim]  learned latent queries
//! pool.q.weight                        [dim, dim]
//! pool.kv.weight                       [2 * dim, dim]    rows: k, v
//! pool.out.weight                      [dim, dim]
//! pool.ff_norm.weight                  [dim]
//! pool.ff.{w1,w2,w3}.weight            SwiGLU, hidden ff_mult * dim
//! pool.norm.weight                     [dim]             final norm of the latents
//! ```

use candle_core::{DType, Device, Module, Tensor};
use candle_nn::{Embedding, Init, Linear, VarBuilder};
use serde::{Deserialize, Serialize};

use crate::decoder::validate_common;
use crate::error::{Error, Result};
use crate::layers::{self, Block, Norm, Rope, SwiGlu};

fn default_n_latents() -> usize {
    8
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct EncoderConfig {
    pub vocab_size: usize,
    pub dim: usize,
    pub n_layers: usize,
    pub n_heads: usize,
    pub ff_mult: usize,
    /// Longest snippet (in tokens) the encoder accepts.
    pub max_seq_len: usize,
    /// Vectors each snippet is compressed into.
    #[serde(default = "default_n_latents")]
    pub n_latents: usize,
    #[serde(default = "crate::layers::default_norm_eps")]
    pub norm_eps: f64,
    #[serde(default = "crate::layers::default_rope_theta")]
    pub rope_theta: f64,
}

impl EncoderConfig {
    /// 6 layers, 8 heads, dim 1536, 8 latents.
    pub fn seed(vocab_size: usize) -> Self {
        Self::preset(vocab_size, 1536, 6, 8, 4, 1024, 8)
    }

    /// 2 layers, 4 heads, dim 256, 8 latents.
    pub fn small(vocab_size: usize) -> Self {
        Self::preset(vocab_size, 256, 2, 4, 4, 1024, 8)
    }

    /// For tests: 1 layer, 2 heads, dim 32, 2 latents.
    pub fn tiny(vocab_size: usize) -> Self {
        Self::preset(vocab_size, 32, 1, 2, 2, 128, 2)
    }

    fn preset(
        vocab_size: usize,
        dim: usize,
        n_layers: usize,
        n_heads: usize,
        ff_mult: usize,
        max_seq_len: usize,
        n_latents: usize,
    ) -> Self {
        Self {
            vocab_size,
            dim,
            n_layers,
            n_heads,
            ff_mult,
            max_seq_len,
            n_latents,
            norm_eps: crate::layers::default_norm_eps(),
            rope_theta: crate::layers::default_rope_theta(),
        }
    }

    pub fn head_dim(&self) -> Result<usize> {
        layers::head_dim("encoder", self.dim, self.n_heads)
    }

    pub fn validate(&self) -> Result<()> {
        validate_common(
            "encoder",
            self.vocab_size,
            self.n_layers,
            self.ff_mult,
            self.max_seq_len,
            self.norm_eps,
        )?;
        self.head_dim()?;
        if self.n_latents == 0 {
            return Err(Error::Config(
                "encoder: n_latents must be at least 1".into(),
            ));
        }
        if !(self.rope_theta.is_finite() && self.rope_theta > 0.0) {
            return Err(Error::Config(format!(
                "encoder: rope_theta {} must be a positive number",
                self.rope_theta
            )));
        }
        Ok(())
    }
}

/// Learned latent queries cross-attending to the encoded tokens (no RoPE: the latents have no
/// position), then a residual SwiGLU and a final norm.
#[derive(Debug, Clone)]
struct LatentPool {
    latents: Tensor,
    q: Linear,
    kv: Linear,
    out: Linear,
    ff_norm: Norm,
    ff: SwiGlu,
    norm: Norm,
    n_heads: usize,
    head_dim: usize,
}

impl LatentPool {
    fn new(cfg: &EncoderConfig, head_dim: usize, vb: VarBuilder) -> Result<Self> {
        let d = cfg.dim;
        Ok(Self {
            // Unit scale so the queries differ from the start (they see no norm before `q`).
            latents: vb.get_with_hints(
                (cfg.n_latents, d),
                "latents",
                Init::Randn {
                    mean: 0.0,
                    stdev: 1.0,
                },
            )?,
            q: layers::linear(d, d, vb.pp("q"))?,
            kv: layers::linear(d, 2 * d, vb.pp("kv"))?,
            out: layers::linear(d, d, vb.pp("out"))?,
            ff_norm: Norm::new(d, cfg.norm_eps, vb.pp("ff_norm"))?,
            ff: SwiGlu::new(d, cfg.ff_mult * d, vb.pp("ff"))?,
            norm: Norm::new(d, cfg.norm_eps, vb.pp("norm"))?,
            n_heads: cfg.n_heads,
            head_dim,
        })
    }

    /// `x` `[N, L, D]` (normed tokens), `key_mask` additive `[N, 1, 1, L]` → `[N, n_latents, D]`.
    fn forward(&self, x: &Tensor, key_mask: &Tensor) -> Result<Tensor> {
        let (n, l, d) = x.dims3()?;
        let (h, hd) = (self.n_heads, self.head_dim);
        let n_lat = self.latents.dim(0)?;
        let q = self
            .q
            .forward(&self.latents)?
            .reshape((1, n_lat, h, hd))?
            .transpose(1, 2)?
            // Matmul needs a real batch stride, not a broadcast one.
            .broadcast_as((n, h, n_lat, hd))?
            .contiguous()?;
        let kv = self
            .kv
            .forward(x)?
            .reshape((n, l, 2, h, hd))?
            .permute((2, 0, 3, 1, 4))?
            .contiguous()?;
        let y = layers::sdpa(&q, &kv.get(0)?, &kv.get(1)?, Some(key_mask))?;
        let y = self
            .out
            .forward(&y.transpose(1, 2)?.reshape((n, n_lat, d))?)?;
        let lat = self.latents.unsqueeze(0)?.broadcast_add(&y)?;
        let lat = (&lat + self.ff.forward(&self.ff_norm.forward(&lat)?)?)?;
        self.norm.forward(&lat)
    }
}

/// The snippet encoder.
#[derive(Debug, Clone)]
pub struct Encoder {
    tok_emb: Embedding,
    layers: Vec<Block>,
    norm: Norm,
    pool: LatentPool,
    rope: Rope,
    cfg: EncoderConfig,
}

impl Encoder {
    pub fn new(cfg: &EncoderConfig, vb: VarBuilder) -> Result<Self> {
        cfg.validate()?;
        let head_dim = cfg.head_dim()?;
        let emb = vb.pp("tok_emb").get_with_hints(
            (cfg.vocab_size, cfg.dim),
            "weight",
            Init::Randn {
                mean: 0.0,
                stdev: 0.02,
            },
        )?;
        let layers = (0..cfg.n_layers)
            .map(|i| {
                Block::new(
                    cfg.dim,
                    cfg.n_heads,
                    head_dim,
                    cfg.ff_mult * cfg.dim,
                    cfg.norm_eps,
                    vb.pp(format!("layers.{i}")),
                )
            })
            .collect::<Result<Vec<_>>>()?;
        Ok(Self {
            tok_emb: Embedding::new(emb, cfg.dim),
            layers,
            norm: Norm::new(cfg.dim, cfg.norm_eps, vb.pp("norm"))?,
            pool: LatentPool::new(cfg, head_dim, vb.pp("pool"))?,
            rope: Rope::new(
                head_dim,
                cfg.max_seq_len,
                cfg.rope_theta,
                vb.dtype(),
                vb.device(),
            )?,
            cfg: cfg.clone(),
        })
    }

    pub fn config(&self) -> &EncoderConfig {
        &self.cfg
    }

    pub fn device(&self) -> &Device {
        self.tok_emb.embeddings().device()
    }

    pub fn dtype(&self) -> DType {
        self.tok_emb.embeddings().dtype()
    }

    /// `ids` `[N, L]` u32 (padded), `mask` `[N, L]` (any numeric dtype; 1 = real token, 0 = pad)
    /// → latents `[N, n_latents, dim]`. Padding never influences real rows. A row with no real
    /// token gives finite but meaningless latents (training masks such absent slots out).
    /// Differentiable through the `VarMap` variables.
    pub fn encode(&self, ids: &Tensor, mask: &Tensor) -> Result<Tensor> {
        let (n, l) = ids.dims2().map_err(|_| {
            Error::Config(format!(
                "encoder: ids must be [snippets, len], got {:?}",
                ids.shape()
            ))
        })?;
        if n == 0 || l == 0 || l > self.cfg.max_seq_len {
            return Err(Error::Config(format!(
                "encoder: got {n} snippets of length {l}; need at least one, of length 1..={} \
                 (max_seq_len)",
                self.cfg.max_seq_len
            )));
        }
        if mask.dims() != ids.dims() {
            return Err(Error::Config(format!(
                "encoder: mask shape {:?} differs from ids shape {:?}",
                mask.shape(),
                ids.shape()
            )));
        }
        layers::check_id_tensor("encoder input", ids, self.cfg.vocab_size)?;
        let dtype = self.dtype();
        // 1 → 0, 0 → large negative, as an additive key mask [N, 1, 1, L].
        let big = -(layers::mask_value(dtype) as f64);
        let key_mask = mask
            .to_dtype(dtype)?
            .affine(big, -big)?
            .reshape((n, 1, 1, l))?;
        let mut x = self.tok_emb.forward(ids)?;
        for block in &self.layers {
            x = block.forward(&x, &self.rope, Some(&key_mask))?;
        }
        let x = self.norm.forward(&x)?;
        self.pool.forward(&x, &key_mask)
    }

    /// Mean of the latents, `[N, dim]`; what contrastive pre-training projects.
    pub fn pooled(&self, ids: &Tensor, mask: &Tensor) -> Result<Tensor> {
        Ok(self.encode(ids, mask)?.mean(1)?)
    }

    /// One snippet, unpadded → `[1, n_latents, dim]`.
    pub fn encode_one(&self, ids: &[u32]) -> Result<Tensor> {
        if ids.is_empty() {
            return Err(Error::Tokenizer("encoder: snippet has no tokens".into()));
        }
        let t = Tensor::new(ids, self.device())?.unsqueeze(0)?;
        let mask = Tensor::ones((1, ids.len()), DType::U8, self.device())?;
        self.encode(&t, &mask)
    }
}
