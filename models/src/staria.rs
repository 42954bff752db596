//! Staria: the decoder trunk plus gated cross-attention to snippet-encoder latents
//! (Flamingo-style).
//!
//! The trunk is exactly [`Decoder`] with the same tensor names, so a trained decoder-only
//! checkpoint initialises it. After every `cross_every`-th decoder layer sits a cross-attention
//! site: queries from the (normed) decoder stream, keys/values from the latents (projected from
//! the encoder dim to the decoder dim), no RoPE (latents have no position), then a SwiGLU adapter;
//! each half is scaled by `tanh` of its own gate, initialised to zero, so a fresh Staria model
//! computes exactly what its trunk computes. A learned section embedding is added to each
//! snippet's latents so the decoder knows which latent belongs to which section.
//!
//! Tensor names (besides the decoder's, at the root):
//! ```text
//! encoder.*                          the snippet encoder (see `encoder`)
//! section_emb.weight                 [n_sections, encoder dim]
//! xattn.{j}.norm.weight              [dim]        site j follows decoder layer (j+1)*cross_every-1
//! xattn.{j}.q.weight                 [dim, dim]
//! xattn.{j}.kv.weight                [2 * dim, encoder dim]   rows: k, v
//! xattn.{j}.out.weight               [dim, dim]
//! xattn.{j}.attn_gate                [1]          zero-initialised, used as tanh(gate)
//! xattn.{j}.ff_norm.weight           [dim]
//! xattn.{j}.ff.{w1,w2,w3}.weight     SwiGLU, hidden ff_mult * dim
//! xattn.{j}.ff_gate                  [1]          zero-initialised, used as tanh(gate)
//! ```

use std::collections::HashSet;

use candle_core::{DType, Device, Module, Tensor};
use candle_nn::{Embedding, Init, Linear, VarBuilder};
use serde::{Deserialize, Serialize};

use crate::decoder::{Decoder, DecoderConfig};
use crate::encoder::{Encoder, EncoderConfig};
use crate::error::{Error, Result};
use crate::grid::{GridInput, GridRow};
use crate::layers::{self, KvCache, Norm, SwiGlu};
use crate::song::SectionLabel;

fn default_cross_every() -> usize {
    1
}

fn default_n_sections() -> usize {
    SectionLabel::ALL.len()
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct StariaConfig {
    pub decoder: DecoderConfig,
    pub encoder: EncoderConfig,
    /// A gated cross-attention site after every `cross_every`-th decoder layer.
    #[serde(default = "default_cross_every")]
    pub cross_every: usize,
    /// Section labels the section embedding knows (A..D).
    #[serde(default = "default_n_sections")]
    pub n_sections: usize,
}

impl StariaConfig {
    /// Seed decoder and encoder, cross-attention after every second layer.
    pub fn seed(vocab_size: usize) -> Self {
        Self::preset(
            DecoderConfig::seed(vocab_size),
            EncoderConfig::seed(vocab_size),
            2,
        )
    }

    pub fn small(vocab_size: usize) -> Self {
        Self::preset(
            DecoderConfig::small(vocab_size),
            EncoderConfig::small(vocab_size),
            1,
        )
    }

    pub fn tiny(vocab_size: usize) -> Self {
        Self::preset(
            DecoderConfig::tiny(vocab_size),
            EncoderConfig::tiny(vocab_size),
            1,
        )
    }

    fn preset(decoder: DecoderConfig, encoder: EncoderConfig, cross_every: usize) -> Self {
        Self {
            decoder,
            encoder,
            cross_every,
            n_sections: default_n_sections(),
        }
    }

    /// Number of cross-attention sites.
    pub fn n_sites(&self) -> usize {
        self.decoder.n_layers / self.cross_every.max(1)
    }

    /// The site after decoder layer `layer`, if any.
    pub fn site_after(&self, layer: usize) -> Option<usize> {
        let k = self.cross_every.max(1);
        (layer + 1).is_multiple_of(k).then(|| (layer + 1) / k - 1)
    }

    pub fn validate(&self) -> Result<()> {
        self.decoder.validate()?;
        self.encoder.validate()?;
        if self.encoder.vocab_size != self.decoder.vocab_size {
            return Err(Error::Config(format!(
                "staria: encoder vocab_size {} differs from decoder vocab_size {} (one tokenizer \
                 feeds both)",
                self.encoder.vocab_size, self.decoder.vocab_size
            )));
        }
        if self.cross_every == 0 || self.cross_every > self.decoder.n_layers {
            return Err(Error::Config(format!(
                "staria: cross_every {} must be within 1..={} (decoder n_layers)",
                self.cross_every, self.decoder.n_layers
            )));
        }
        if self.n_sections == 0 || self.n_sections > SectionLabel::ALL.len() {
            return Err(Error::Config(format!(
                "staria: n_sections {} must be within 1..={}",
                self.n_sections,
                SectionLabel::ALL.len()
            )));
        }
        Ok(())
    }
}

/// One gated cross-attention site.
#[derive(Debug, Clone)]
struct CrossAttn {
    norm: Norm,
    q: Linear,
    kv: Linear,
    out: Linear,
    attn_gate: Tensor,
    ff_norm: Norm,
    ff: SwiGlu,
    ff_gate: Tensor,
    n_heads: usize,
    head_dim: usize,
}

impl CrossAttn {
    fn new(cfg: &StariaConfig, head_dim: usize, vb: VarBuilder) -> Result<Self> {
        let (d, de) = (cfg.decoder.dim, cfg.encoder.dim);
        let eps = cfg.decoder.norm_eps;
        Ok(Self {
            norm: Norm::new(d, eps, vb.pp("norm"))?,
            q: layers::linear(d, d, vb.pp("q"))?,
            kv: layers::linear(de, 2 * d, vb.pp("kv"))?,
            out: layers::linear(d, d, vb.pp("out"))?,
            attn_gate: vb.get_with_hints(1, "attn_gate", Init::Const(0.0))?,
            ff_norm: Norm::new(d, eps, vb.pp("ff_norm"))?,
            ff: SwiGlu::new(d, cfg.decoder.ff_mult * d, vb.pp("ff"))?,
            ff_gate: vb.get_with_hints(1, "ff_gate", Init::Const(0.0))?,
            n_heads: cfg.decoder.n_heads,
            head_dim,
        })
    }

    /// Latents `[B, M, De]` → K, V `[B, M, 2, H, hd]` (not yet split).
    fn project_kv(&self, latents: &Tensor) -> Result<Tensor> {
        let (b, m, _) = latents.dims3()?;
        Ok(self
            .kv
            .forward(latents)?
            .reshape((b, m, 2, self.n_heads, self.head_dim))?)
    }

    /// Training path. `kv` `[2, B, H, M, hd]`, `key_mask` additive `[B, 1, 1, M]`, `present`
    /// `[B, 1, 1]` (0 for a prompt without any snippet: its site is skipped).
    fn forward(
        &self,
        x: &Tensor,
        kv: &Tensor,
        key_mask: &Tensor,
        present: &Tensor,
    ) -> Result<Tensor> {
        let (b, t, d) = x.dims3()?;
        let q = self
            .q
            .forward(&self.norm.forward(x)?)?
            .reshape((b, t, self.n_heads, self.head_dim))?
            .transpose(1, 2)?
            .contiguous()?;
        let y = layers::sdpa(&q, &kv.get(0)?, &kv.get(1)?, Some(key_mask))?;
        let y = self.out.forward(&y.transpose(1, 2)?.reshape((b, t, d))?)?;
        let gate = present.broadcast_mul(&self.attn_gate.tanh()?)?;
        let x = (x + y.broadcast_mul(&gate)?)?;
        let h = self.ff.forward(&self.ff_norm.forward(&x)?)?;
        let gate = present.broadcast_mul(&self.ff_gate.tanh()?)?;
        Ok((&x + h.broadcast_mul(&gate)?)?)
    }

    /// Inference path: `x` `[1, T, D]`; `k`, `v` `[1, M, H, hd]` computed once per prompt.
    fn forward_cached(&self, x: &Tensor, k: &Tensor, v: &Tensor) -> Result<Tensor> {
        let (_, t, _) = x.dims3()?;
        let q =
            self.q
                .forward(&self.norm.fused(x)?)?
                .reshape((1, t, self.n_heads, self.head_dim))?;
        let y = self.out.forward(&layers::attend_bthd(&q, k, v, None)?)?;
        let x = (x + y.broadcast_mul(&self.attn_gate.tanh()?)?)?;
        let h = self.ff.forward(&self.ff_norm.fused(&x)?)?;
        Ok((&x + h.broadcast_mul(&self.ff_gate.tanh()?)?)?)
    }
}

/// One prompt's encoded snippets, with each site's cross-attention K/V computed once.
#[derive(Debug, Clone, Default)]
pub struct Latents {
    sections: Vec<SectionLabel>,
    /// `[1, sections * n_latents, encoder dim]`, section embedding included; `None` if empty.
    latents: Option<Tensor>,
    /// Per site: K and V, `[1, M, H, hd]` contiguous.
    kv: Vec<(Tensor, Tensor)>,
}

impl Latents {
    /// No snippets: every cross-attention site is skipped.
    pub fn empty() -> Self {
        Self::default()
    }

    pub fn is_empty(&self) -> bool {
        self.latents.is_none()
    }

    /// Sections encoded, in the order given.
    pub fn sections(&self) -> &[SectionLabel] {
        &self.sections
    }

    /// `[1, sections * n_latents, encoder dim]`.
    pub fn latents(&self) -> Option<&Tensor> {
        self.latents.as_ref()
    }
}

/// A training batch's snippets, for [`Staria::forward`].
#[derive(Debug, Clone)]
pub struct SnippetBatch {
    /// `[B * S, L]` u32, padded; row `b * S + s` is prompt `b`'s slot `s`.
    pub ids: Tensor,
    /// `[B * S, L]`, 1 = real token, 0 = pad (any numeric dtype).
    pub mask: Tensor,
    /// `[B, S]` u32 section label index (A = 0 .. D = 3) of each slot.
    pub sections: Tensor,
    /// `[B, S]`, 1 = the slot holds a snippet, 0 = absent (ignored). Any numeric dtype.
    pub present: Tensor,
}

/// The hierarchical model.
#[derive(Debug, Clone)]
pub struct Staria {
    decoder: Decoder,
    encoder: Encoder,
    section_emb: Embedding,
    xattn: Vec<CrossAttn>,
    cfg: StariaConfig,
}

impl Staria {
    pub fn new(cfg: &StariaConfig, vb: VarBuilder) -> Result<Self> {
        cfg.validate()?;
        let decoder = Decoder::new(&cfg.decoder, vb.clone())?;
        let encoder = Encoder::new(&cfg.encoder, vb.pp("encoder"))?;
        let section_emb = vb.pp("section_emb").get_with_hints(
            (cfg.n_sections, cfg.encoder.dim),
            "weight",
            Init::Randn {
                mean: 0.0,
                stdev: 0.02,
            },
        )?;
        let head_dim = cfg.decoder.head_dim()?;
        let xattn = (0..cfg.n_sites())
            .map(|j| CrossAttn::new(cfg, head_dim, vb.pp(format!("xattn.{j}"))))
            .collect::<Result<Vec<_>>>()?;
        Ok(Self {
            decoder,
            encoder,
            section_emb: Embedding::new(section_emb, cfg.encoder.dim),
            xattn,
            cfg: cfg.clone(),
        })
    }

    pub fn config(&self) -> &StariaConfig {
        &self.cfg
    }

    pub fn decoder(&self) -> &Decoder {
        &self.decoder
    }

    pub fn encoder(&self) -> &Encoder {
        &self.encoder
    }

    pub fn device(&self) -> &Device {
        self.decoder.device()
    }

    pub fn dtype(&self) -> DType {
        self.decoder.dtype()
    }

    /// Encodes one prompt's snippets (in any order; each label at most once, none empty) into
    /// latents and precomputes every site's K/V. No snippets gives [`Latents::empty`].
    pub fn encode_snippets(&self, snippets: &[(SectionLabel, Vec<u32>)]) -> Result<Latents> {
        if snippets.is_empty() {
            return Ok(Latents::empty());
        }
        let mut seen = HashSet::new();
        let max_len = self.cfg.encoder.max_seq_len;
        for (label, ids) in snippets {
            if label.index() >= self.cfg.n_sections {
                return Err(Error::Config(format!(
                    "staria: section {label} is beyond n_sections {}",
                    self.cfg.n_sections
                )));
            }
            if !seen.insert(*label) {
                return Err(Error::Tokenizer(format!(
                    "staria: section {label} has more than one snippet"
                )));
            }
            if ids.is_empty() || ids.len() > max_len {
                return Err(Error::Tokenizer(format!(
                    "staria: snippet for section {label} has {} tokens; need 1..={max_len} \
                     (encoder max_seq_len)",
                    ids.len()
                )));
            }
            layers::check_ids(
                &format!("snippet for section {label}"),
                ids,
                self.cfg.encoder.vocab_size,
            )?;
        }
        // One padded batch; the key padding mask makes this equal to encoding one by one.
        let s = snippets.len();
        let l = snippets.iter().map(|(_, ids)| ids.len()).max().unwrap_or(1);
        let mut ids = vec![0u32; s * l];
        let mut mask = vec![0u8; s * l];
        for (row, (_, snip)) in snippets.iter().enumerate() {
            ids[row * l..row * l + snip.len()].copy_from_slice(snip);
            mask[row * l..row * l + snip.len()].fill(1);
        }
        let dev = self.device();
        let ids = Tensor::from_vec(ids, (s, l), dev)?;
        let mask = Tensor::from_vec(mask, (s, l), dev)?;
        let labels: Vec<u32> = snippets.iter().map(|(lb, _)| lb.index() as u32).collect();
        let labels = Tensor::from_vec(labels, (1, s), dev)?;
        let lat = self.latents_for(&self.encoder.encode(&ids, &mask)?, &labels)?;
        let m = lat.dim(1)?;
        let kv = self
            .xattn
            .iter()
            .map(|site| {
                let kv = site.project_kv(&lat)?;
                let (h, hd) = (site.n_heads, site.head_dim);
                let k = kv.narrow(2, 0, 1)?.reshape((1, m, h, hd))?;
                let v = kv.narrow(2, 1, 1)?.reshape((1, m, h, hd))?;
                Ok((k.contiguous()?, v.contiguous()?))
            })
            .collect::<Result<Vec<_>>>()?;
        Ok(Latents {
            sections: snippets.iter().map(|(lb, _)| *lb).collect(),
            latents: Some(lat),
            kv,
        })
    }

    /// Encoder output `[B * S, n, De]` + section embedding of `labels` `[B, S]` →
    /// `[B, S * n, De]`.
    fn latents_for(&self, encoded: &Tensor, labels: &Tensor) -> Result<Tensor> {
        let (b, s) = labels.dims2()?;
        let (_, n, de) = encoded.dims3()?;
        let sec = self.section_emb.forward(labels)?.unsqueeze(2)?;
        Ok(encoded
            .reshape((b, s, n, de))?
            .broadcast_add(&sec)?
            .reshape((b, s * n, de))?)
    }

    /// Training forward: `dec_ids` `[B, T]` u32 (decoder layout) and the batch's snippets →
    /// logits `[B, T, vocab]`. `None` (or a prompt whose slots are all absent) skips the
    /// cross-attention, as at inference. `win` and `grid` as in [`Decoder::forward`].
    /// Differentiable through the `VarMap` variables.
    pub fn forward(
        &self,
        dec_ids: &Tensor,
        win: Option<&Tensor>,
        grid: Option<&GridInput>,
        snippets: Option<&SnippetBatch>,
    ) -> Result<Tensor> {
        let Some(sb) = snippets else {
            return self.decoder.forward(dec_ids, win, grid);
        };
        let (b, _) = dec_ids.dims2().map_err(|_| {
            Error::Config(format!(
                "staria: dec_ids must be [batch, seq], got {:?}",
                dec_ids.shape()
            ))
        })?;
        let lat = self.snippet_latents(b, sb)?;
        let s = sb.sections.dim(1)?;
        let dtype = self.dtype();
        let n = self.cfg.encoder.n_latents;
        let present = sb.present.to_dtype(dtype)?;
        let big = -(layers::mask_value(dtype) as f64);
        let key_mask = present
            .unsqueeze(2)?
            .broadcast_as((b, s, n))?
            .reshape((b, 1, 1, s * n))?
            .affine(big, -big)?;
        let any = present.max_keepdim(1)?.reshape((b, 1, 1))?;
        let kvs = self
            .xattn
            .iter()
            .map(|site| {
                Ok(site
                    .project_kv(&lat)?
                    .permute((2, 0, 3, 1, 4))?
                    .contiguous()?)
            })
            .collect::<Result<Vec<_>>>()?;
        self.decoder
            .forward_with(dec_ids, win, grid, |i, x| match self.cfg.site_after(i) {
                Some(j) => self.xattn[j].forward(&x, &kvs[j], &key_mask, &any),
                None => Ok(x),
            })
    }

    /// The cross-attention sites' input for a training batch of `b` prompts: the encoded
    /// snippets plus their section embeddings, `[b, slots * n_latents, encoder dim]` (the
    /// latents of absent slots included; [`Staria::forward`] masks them out). Differentiable
    /// through the encoder's and section embedding's variables; the trainer's CPU fast path
    /// runs the decoder and the sites itself and calls this for their input.
    pub fn snippet_latents(&self, b: usize, sb: &SnippetBatch) -> Result<Tensor> {
        let (sb_b, s) = sb.sections.dims2().map_err(|_| {
            Error::Config(format!(
                "staria: sections must be [batch, slots], got {:?}",
                sb.sections.shape()
            ))
        })?;
        if sb_b != b || sb.present.dims() != sb.sections.dims() || sb.ids.dim(0)? != b * s {
            return Err(Error::Config(format!(
                "staria: batch {b} with sections {:?}, present {:?} and snippet ids {:?} do not \
                 line up (need [B, S], [B, S], [B * S, L])",
                sb.sections.shape(),
                sb.present.shape(),
                sb.ids.shape()
            )));
        }
        if sb.sections.dtype() != DType::U32 {
            return Err(Error::Config("staria: sections must be u32".into()));
        }
        let max_label = sb.sections.flatten_all()?.max(0)?.to_scalar::<u32>()?;
        if max_label as usize >= self.cfg.n_sections {
            return Err(Error::Config(format!(
                "staria: section label {max_label} is beyond n_sections {}",
                self.cfg.n_sections
            )));
        }
        self.latents_for(&self.encoder.encode(&sb.ids, &sb.mask)?, &sb.sections)
    }

    /// An empty KV cache for the decoder trunk.
    pub fn new_cache(&self) -> Result<KvCache> {
        self.decoder.new_cache()
    }

    /// Incremental decoding (inference only, batch 1) against one prompt's `latents` (from
    /// [`Staria::encode_snippets`]); returns the last position's logits `[vocab]` f32. `win`
    /// and `grid` as in [`Decoder::forward_cached`].
    pub fn forward_cached(
        &self,
        ids: &[u32],
        win: Option<&[u32]>,
        grid: Option<GridRow>,
        cache: &mut KvCache,
        latents: &Latents,
    ) -> Result<Tensor> {
        if !latents.is_empty() && latents.kv.len() != self.xattn.len() {
            return Err(Error::Config(format!(
                "staria: latents carry {} cross-attention sites, model has {}",
                latents.kv.len(),
                self.xattn.len()
            )));
        }
        if latents.is_empty() {
            return self.decoder.forward_cached(ids, win, grid, cache);
        }
        self.decoder
            .forward_cached_with(ids, win, grid, cache, |i, x| match self.cfg.site_after(i) {
                Some(j) => {
                    let (k, v) = &latents.kv[j];
                    self.xattn[j].forward_cached(&x, k, v)
                }
                None => Ok(x),
            })
    }
}
