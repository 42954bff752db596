//! Decoder-only transformer: the baseline model and the trunk of Staria.
//!
//! Token embedding, `n_layers` pre-LN blocks (LayerNorm without bias, fused QKV, rotate-half
//! RoPE, causal attention, SwiGLU; no biases anywhere), final LayerNorm, untied LM head.
//!
//! Tensor names (stable; checkpoints and Staria's trunk rely on them):
//! ```text
//! tok_emb.weight                  [vocab, dim]
//! layers.{i}.attn_norm.weight     [dim]
//! layers.{i}.attn.qkv.weight      [3 * dim, dim]   rows: q (all heads), k, v
//! layers.{i}.attn.out.weight      [dim, dim]
//! layers.{i}.ff_norm.weight       [dim]
//! layers.{i}.ff.w1.weight         [ff_mult * dim, dim]   gate
//! layers.{i}.ff.w3.weight         [ff_mult * dim, dim]   up
//! layers.{i}.ff.w2.weight         [dim, ff_mult * dim]   down
//! norm.weight                     [dim]
//! lm_head.weight                  [vocab, dim]
//! win_emb.weight                  [window_bins, dim]   only with window_bins > 0
//! grid_head.weight                [grid_bins, dim]     only with grid_bins > 0
//! ```

use candle_core::{D, DType, Device, Module, Tensor};
use candle_nn::{Embedding, Init, Linear, VarBuilder};
use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};
use crate::grid::{GridInput, GridRow};
use crate::layers::{self, Block, KvCache, Norm, Rope};

pub(crate) fn default_window_bin_ms() -> u32 {
    100
}

/// Decoder hyper-parameters. Key names are read by an external PyTorch peer benchmark from
/// `config.json`; keep them.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct DecoderConfig {
    pub vocab_size: usize,
    pub dim: usize,
    pub n_layers: usize,
    pub n_heads: usize,
    /// Feed-forward hidden size is `ff_mult * dim`.
    pub ff_mult: usize,
    pub max_seq_len: usize,
    #[serde(default = "crate::layers::default_rope_theta")]
    pub rope_theta: f64,
    #[serde(default = "crate::layers::default_norm_eps")]
    pub norm_eps: f64,
    /// Buckets of the window-position input (`crate::window`): each token's embedding gets the
    /// bucket of the window's latest onset added. 0 = no such input (checkpoints before it).
    #[serde(default)]
    pub window_bins: usize,
    /// Width of one window-position bucket in ms (the last bucket is open-ended).
    #[serde(default = "default_window_bin_ms")]
    pub window_bin_ms: u32,
    /// Phase buckets per beat of the beat-grid head (`crate::grid`): each onset logit gets the
    /// final hidden state's score for its candidate's phase added. 0 = no such head.
    #[serde(default)]
    pub grid_bins: usize,
}

impl DecoderConfig {
    /// The full-size model: 16 layers, 24 heads, dim 1536.
    pub fn seed(vocab_size: usize) -> Self {
        Self::preset(vocab_size, 1536, 16, 24, 4, 8192)
    }

    /// Small enough to decode in real time on one CPU core: 6 layers, 4 heads, dim 256.
    pub fn small(vocab_size: usize) -> Self {
        Self::preset(vocab_size, 256, 6, 4, 4, 4096)
    }

    /// For tests: 2 layers, 2 heads, dim 32.
    pub fn tiny(vocab_size: usize) -> Self {
        Self::preset(vocab_size, 32, 2, 2, 2, 512)
    }

    pub(crate) fn preset(
        vocab_size: usize,
        dim: usize,
        n_layers: usize,
        n_heads: usize,
        ff_mult: usize,
        max_seq_len: usize,
    ) -> Self {
        Self {
            vocab_size,
            dim,
            n_layers,
            n_heads,
            ff_mult,
            max_seq_len,
            rope_theta: crate::layers::default_rope_theta(),
            norm_eps: crate::layers::default_norm_eps(),
            window_bins: 0,
            window_bin_ms: default_window_bin_ms(),
            grid_bins: 0,
        }
    }

    pub fn head_dim(&self) -> Result<usize> {
        layers::head_dim("decoder", self.dim, self.n_heads)
    }

    pub fn validate(&self) -> Result<()> {
        validate_common(
            "decoder",
            self.vocab_size,
            self.n_layers,
            self.ff_mult,
            self.max_seq_len,
            self.norm_eps,
        )?;
        self.head_dim()?;
        if !(self.rope_theta.is_finite() && self.rope_theta > 0.0) {
            return Err(Error::Config(format!(
                "decoder: rope_theta {} must be a positive number",
                self.rope_theta
            )));
        }
        if self.window_bins > 0 && self.window_bin_ms == 0 {
            return Err(Error::Config(
                "decoder: window_bin_ms must be at least 1 when window_bins is set".into(),
            ));
        }
        Ok(())
    }
}

/// Checks shared by the decoder and encoder configs; `what` names the part in the error.
pub(crate) fn validate_common(
    what: &str,
    vocab_size: usize,
    n_layers: usize,
    ff_mult: usize,
    max_seq_len: usize,
    norm_eps: f64,
) -> Result<()> {
    let positive = [
        ("vocab_size", vocab_size),
        ("n_layers", n_layers),
        ("ff_mult", ff_mult),
        ("max_seq_len", max_seq_len),
    ];
    for (name, v) in positive {
        if v == 0 {
            return Err(Error::Config(format!("{what}: {name} must be at least 1")));
        }
    }
    if vocab_size > u32::MAX as usize {
        return Err(Error::Config(format!(
            "{what}: vocab_size {vocab_size} does not fit u32 token ids"
        )));
    }
    if !(norm_eps.is_finite() && norm_eps > 0.0) {
        return Err(Error::Config(format!(
            "{what}: norm_eps {norm_eps} must be a positive number"
        )));
    }
    Ok(())
}

/// The decoder-only transformer.
#[derive(Debug, Clone)]
pub struct Decoder {
    tok_emb: Embedding,
    /// Window-position embedding `[window_bins, dim]` (`crate::window`), zero at creation so a
    /// model fine-tuned from one without it starts out computing the same thing.
    win_emb: Option<Embedding>,
    /// Beat-grid head `[grid_bins, dim]` (`crate::grid`), zero at creation for the same reason.
    grid_head: Option<Linear>,
    layers: Vec<Block>,
    norm: Norm,
    lm_head: Linear,
    rope: Rope,
    cfg: DecoderConfig,
    head_dim: usize,
}

impl Decoder {
    /// Builds the model from `vb` (a `VarMap`-backed builder creates and initialises the
    /// variables for training; a safetensors-backed one loads them). The model's dtype and device
    /// are the builder's.
    pub fn new(cfg: &DecoderConfig, vb: VarBuilder) -> Result<Self> {
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
        let win_emb = (cfg.window_bins > 0)
            .then(|| {
                vb.pp("win_emb")
                    .get_with_hints((cfg.window_bins, cfg.dim), "weight", Init::Const(0.0))
                    .map(|w| Embedding::new(w, cfg.dim))
            })
            .transpose()?;
        let grid_head = (cfg.grid_bins > 0)
            .then(|| {
                vb.pp("grid_head")
                    .get_with_hints((cfg.grid_bins, cfg.dim), "weight", Init::Const(0.0))
                    .map(|w| Linear::new(w, None))
            })
            .transpose()?;
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
            win_emb,
            grid_head,
            layers,
            norm: Norm::new(cfg.dim, cfg.norm_eps, vb.pp("norm"))?,
            lm_head: layers::linear(cfg.dim, cfg.vocab_size, vb.pp("lm_head"))?,
            rope: Rope::new(
                head_dim,
                cfg.max_seq_len,
                cfg.rope_theta,
                vb.dtype(),
                vb.device(),
            )?,
            cfg: cfg.clone(),
            head_dim,
        })
    }

    pub fn config(&self) -> &DecoderConfig {
        &self.cfg
    }

    pub fn device(&self) -> &Device {
        self.tok_emb.embeddings().device()
    }

    pub fn dtype(&self) -> DType {
        self.tok_emb.embeddings().dtype()
    }

    /// Whether the model reads the window position (`crate::window`).
    pub fn reads_window(&self) -> bool {
        self.win_emb.is_some()
    }

    /// Whether the model has a beat-grid head (`crate::grid`).
    pub fn has_grid_head(&self) -> bool {
        self.grid_head.is_some()
    }

    /// Training forward: `ids` `[B, T]` u32 → logits `[B, T, vocab]` in the model dtype.
    /// `win` `[B, T]` u32 holds the window-position bins (`window::latest_onsets` bucketed by
    /// `WindowBins::bin`), required when the model reads them and ignored otherwise. `grid`
    /// gives the beat-grid rows (`crate::grid`) for a model with that head; `None` (tempo
    /// unknown) adds nothing. Differentiable through the `VarMap` variables.
    pub fn forward(
        &self,
        ids: &Tensor,
        win: Option<&Tensor>,
        grid: Option<&GridInput>,
    ) -> Result<Tensor> {
        self.forward_with(ids, win, grid, |_, x| Ok(x))
    }

    /// The full forward with `hook(i, x)` run on the residual stream after block `i`; Staria
    /// inserts its cross-attention there.
    pub(crate) fn forward_with<F>(
        &self,
        ids: &Tensor,
        win: Option<&Tensor>,
        grid: Option<&GridInput>,
        mut hook: F,
    ) -> Result<Tensor>
    where
        F: FnMut(usize, Tensor) -> Result<Tensor>,
    {
        let (_, t) = ids.dims2().map_err(|_| {
            Error::Config(format!(
                "decoder: ids must be [batch, seq], got {:?}",
                ids.shape()
            ))
        })?;
        if t == 0 || t > self.cfg.max_seq_len {
            return Err(Error::Config(format!(
                "decoder: sequence length {t} must be within 1..={} (max_seq_len)",
                self.cfg.max_seq_len
            )));
        }
        layers::check_id_tensor("decoder input", ids, self.cfg.vocab_size)?;
        let mask = layers::causal_mask(t, 0, self.dtype(), self.device())?;
        let mut x = self.tok_emb.forward(ids)?;
        if let Some(win_emb) = &self.win_emb {
            let win = win.ok_or_else(|| {
                Error::Config(format!(
                    "decoder: this model reads the window position (window_bins {}); the \
                     forward needs the bins of every token",
                    self.cfg.window_bins
                ))
            })?;
            if win.dims() != ids.dims() {
                return Err(Error::Config(format!(
                    "decoder: window bins have shape {:?}, the ids {:?}",
                    win.dims(),
                    ids.dims()
                )));
            }
            layers::check_id_tensor("decoder window bins", win, self.cfg.window_bins)?;
            x = (x + win_emb.forward(win)?)?;
        }
        for (i, block) in self.layers.iter().enumerate() {
            x = block.forward(&x, &self.rope, Some(&mask))?;
            x = hook(i, x)?;
        }
        let h = self.norm.forward(&x)?;
        let logits = self.lm_head.forward(&h)?;
        match (&self.grid_head, grid) {
            (Some(head), Some(grid)) => self.add_grid_scores(head, &h, logits, grid),
            _ => Ok(logits),
        }
    }

    /// `logits[.., first_onset + k] += (h · grid_head[rows[.., k]])`, a "no grid" entry
    /// (`grid_bins`) adding zero: the scores get a zero column that those entries gather.
    fn add_grid_scores(
        &self,
        head: &Linear,
        h: &Tensor,
        logits: Tensor,
        grid: &GridInput,
    ) -> Result<Tensor> {
        let (b, t, vocab) = logits.dims3()?;
        let onsets = grid.rows.dim(D::Minus1)?;
        if grid.rows.dims() != [b, t, onsets] || grid.first_onset + onsets > vocab {
            return Err(Error::Config(format!(
                "decoder: grid rows have shape {:?} from onset id {}; expected [{b}, {t}, \
                 onsets] within the vocabulary of {vocab}",
                grid.rows.dims(),
                grid.first_onset
            )));
        }
        layers::check_id_tensor("decoder grid rows", &grid.rows, self.cfg.grid_bins + 1)?;
        // [B, T, grid_bins + 1]: the last column is the "no grid" score, 0.
        let scores = Tensor::cat(
            &[
                head.forward(h)?,
                Tensor::zeros((b, t, 1), h.dtype(), h.device())?,
            ],
            D::Minus1,
        )?;
        // [B, T, onsets]
        let onset_scores = scores
            .contiguous()?
            .gather(&grid.rows.contiguous()?, D::Minus1)?;
        let start = grid.first_onset;
        let mut parts = Vec::with_capacity(3);
        if start > 0 {
            parts.push(logits.narrow(D::Minus1, 0, start)?);
        }
        parts.push((logits.narrow(D::Minus1, start, onsets)? + onset_scores)?);
        if start + onsets < vocab {
            parts.push(logits.narrow(D::Minus1, start + onsets, vocab - start - onsets)?);
        }
        Ok(Tensor::cat(&parts, D::Minus1)?)
    }

    /// An empty KV cache sized for this model (all layers up to `max_seq_len`, allocated now).
    pub fn new_cache(&self) -> Result<KvCache> {
        KvCache::new(
            self.cfg.n_layers,
            self.cfg.max_seq_len,
            self.cfg.n_heads,
            self.head_dim,
            self.dtype(),
            self.device(),
        )
    }

    /// Incremental decoding (inference only, batch 1): appends `ids` at positions
    /// `cache.len()..` and returns the logits of the last one, `[vocab]` f32 on the model device.
    /// Several ids at once is a prefill. `win` gives their window-position bins (required when
    /// the model reads them; `AnyModel` keeps the clock); `grid` the beat-grid row of the last
    /// position (`None`: no grid). On error the cache keeps its length.
    pub fn forward_cached(
        &self,
        ids: &[u32],
        win: Option<&[u32]>,
        grid: Option<GridRow>,
        cache: &mut KvCache,
    ) -> Result<Tensor> {
        self.forward_cached_with(ids, win, grid, cache, |_, x| Ok(x))
    }

    pub(crate) fn forward_cached_with<F>(
        &self,
        ids: &[u32],
        win: Option<&[u32]>,
        grid: Option<GridRow>,
        cache: &mut KvCache,
        mut hook: F,
    ) -> Result<Tensor>
    where
        F: FnMut(usize, Tensor) -> Result<Tensor>,
    {
        let t = ids.len();
        if t == 0 {
            return Err(Error::Config(
                "decoder: forward_cached needs at least one token".into(),
            ));
        }
        layers::check_ids("decoder input", ids, self.cfg.vocab_size)?;
        if cache.n_layers() != self.layers.len() || cache.max_seq_len() != self.cfg.max_seq_len {
            return Err(Error::Config(format!(
                "decoder: KV cache has {} layers / max_seq_len {}, model has {} / {}",
                cache.n_layers(),
                cache.max_seq_len(),
                self.layers.len(),
                self.cfg.max_seq_len
            )));
        }
        cache.check_room(t)?;
        let pos = cache.len();
        let emb = self.tok_emb.embeddings();
        let mut x = if t == 1 {
            // A row view of the table: no gather, no copy.
            emb.narrow(0, ids[0] as usize, 1)?
        } else {
            emb.index_select(&Tensor::new(ids, self.device())?, 0)?
        }
        .reshape((1, t, self.cfg.dim))?;
        if let Some(win_emb) = &self.win_emb {
            let win =
                win.ok_or_else(|| crate::window::missing_clock("decoder", self.cfg.window_bins))?;
            if win.len() != t {
                return Err(Error::Config(format!(
                    "decoder: {} window bins for {t} tokens",
                    win.len()
                )));
            }
            layers::check_ids("decoder window bins", win, self.cfg.window_bins)?;
            let rows = win_emb
                .embeddings()
                .index_select(&Tensor::new(win, self.device())?, 0)?;
            x = (x + rows.reshape((1, t, self.cfg.dim))?)?;
        }
        for (i, block) in self.layers.iter().enumerate() {
            x = block.forward_cached(&x, &self.rope, cache.layer(i), pos)?;
            x = hook(i, x)?;
        }
        let last = x.narrow(1, t - 1, 1)?;
        let h = self.norm.fused(&last)?;
        let logits = self
            .lm_head
            .forward(&h)?
            .flatten_all()?
            .to_dtype(DType::F32)?;
        let logits = match (&self.grid_head, grid) {
            (Some(head), Some(row)) => {
                let start = row.first_onset as usize;
                if start + row.bins.len() > self.cfg.vocab_size {
                    return Err(Error::Config(format!(
                        "decoder: a grid row of {} onsets from id {start} overruns the \
                         vocabulary of {}",
                        row.bins.len(),
                        self.cfg.vocab_size
                    )));
                }
                let scores = head
                    .forward(&h)?
                    .flatten_all()?
                    .to_dtype(DType::F32)?
                    .to_vec1::<f32>()?;
                let mut host = logits.to_vec1::<f32>()?;
                crate::grid::add_to_logits(&mut host, row.first_onset, row.bins, &scores);
                Tensor::new(host, logits.device())?
            }
            _ => logits,
        };
        cache.advance(t);
        Ok(logits)
    }
}
