//! Preallocated buffers of the fast training step: the activations the forward saves for the
//! backward, and the backward's gradient scratch.
//!
//! Every buffer is sized for a capacity of `batch x seq` tokens (rows) when the trainer is built
//! and grows only when a larger batch arrives; a smaller batch uses the leading part of each
//! buffer, laid out for its own shape. `rows` below is `batch * seq`, `dim` the model width,
//! `ff_hidden` = `ff_mult * dim`, `heads` the attention heads.

/// What one block's forward saves.
#[derive(Debug, Default)]
pub(crate) struct LayerActs {
    /// `[rows, dim]` residual stream entering the block.
    pub input: Vec<f32>,
    /// `[rows]` mean of each `input` row (attention LayerNorm).
    pub attn_mean: Vec<f32>,
    /// `[rows]` 1 / sqrt(variance + eps) of each `input` row.
    pub attn_rstd: Vec<f32>,
    /// `[rows, dim]` attention LayerNorm output (the QKV projection's input).
    pub attn_normed: Vec<f32>,
    /// `[rows, 3 * dim]` per row: q (all heads) | k | v, q and k after RoPE.
    pub qkv: Vec<f32>,
    /// `[batch, heads, seq, seq]` causal softmax probabilities; entries above the diagonal
    /// inside a computed block are zero, those of skipped blocks are never read.
    pub probs: Vec<f32>,
    /// `[rows, dim]` attention output, heads concatenated (the out projection's input).
    pub attn_out: Vec<f32>,
    /// `[rows, dim]` residual stream after the attention half.
    pub mid: Vec<f32>,
    /// `[rows]` mean / rstd of each `mid` row (MLP LayerNorm).
    pub ff_mean: Vec<f32>,
    pub ff_rstd: Vec<f32>,
    /// `[rows, dim]` MLP LayerNorm output (w1 / w3 input).
    pub ff_normed: Vec<f32>,
    /// `[rows, ff_hidden]` w1 x, before SiLU.
    pub gate: Vec<f32>,
    /// `[rows, ff_hidden]` w3 x.
    pub up: Vec<f32>,
    /// `[rows, ff_hidden]` silu(gate) * up (w2's input).
    pub hidden: Vec<f32>,
}

/// Everything the forward saves, plus the backward's scratch.
#[derive(Debug, Default)]
pub(crate) struct Buffers {
    /// Capacity in sequences and in positions per sequence.
    pub cap_batch: usize,
    pub cap_seq: usize,
    pub layers: Vec<LayerActs>,
    /// `[rows, dim]` residual stream: the forward's running value, then the backward's
    /// gradient with respect to it.
    pub resid: Vec<f32>,
    /// `[rows, dim]` residual stream after the last block (final LayerNorm input).
    pub final_input: Vec<f32>,
    /// `[rows]` mean / rstd of the final LayerNorm.
    pub final_mean: Vec<f32>,
    pub final_rstd: Vec<f32>,
    /// `[rows, dim]` final LayerNorm output (LM head input).
    pub final_normed: Vec<f32>,
    /// `[rows, vocab]` logits; after the loss, d loss / d logits.
    pub logits: Vec<f32>,
    /// `[rows]` token ids, next-token targets and the 0/1 loss mask.
    pub ids: Vec<u32>,
    /// `[rows]` window-position bins of the ids (unused without that input).
    pub win: Vec<u32>,
    /// `[rows, grid_onsets]` beat-grid rows (`staria_models::grid`; unused without them).
    pub grid: Vec<u32>,
    /// `[rows, grid_bins]` beat-grid head scores; in the backward, their gradient.
    pub grid_scores: Vec<f32>,
    pub targets: Vec<u32>,
    pub mask: Vec<f32>,
    /// `[rows]` per-row loss (nats; 0 where masked out), summed in row order.
    pub row_loss: Vec<f64>,
    /// Backward scratch: `[rows, dim]` gradient of a LayerNorm output / of `attn_out`.
    pub d_normed: Vec<f32>,
    pub d_attn_out: Vec<f32>,
    /// `[rows, 3 * dim]` gradient of the (RoPE'd) q | k | v.
    pub d_qkv: Vec<f32>,
    /// `[batch, heads, seq, seq]` gradient of the attention scores.
    pub d_scores: Vec<f32>,
    /// `[rows, ff_hidden]` gradients of `hidden`, `gate` and `up`.
    pub d_hidden: Vec<f32>,
    pub d_gate: Vec<f32>,
    pub d_up: Vec<f32>,
}

/// Model sizes the buffers depend on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Widths {
    pub dim: usize,
    pub heads: usize,
    pub ff_hidden: usize,
    pub vocab: usize,
    pub n_layers: usize,
    /// Beat-grid head buckets and onset tokens per row (0 without a grid head).
    pub grid_bins: usize,
    pub grid_onsets: usize,
}

impl Buffers {
    /// Makes room for `batch x seq` (no-op when it already fits).
    pub(crate) fn ensure(&mut self, w: Widths, batch: usize, seq: usize) {
        if batch <= self.cap_batch
            && seq <= self.cap_seq
            && self.layers.len() == w.n_layers
            && self.grid.len() == self.cap_batch * self.cap_seq * w.grid_onsets
        {
            return;
        }
        let (b, t) = (batch.max(self.cap_batch), seq.max(self.cap_seq));
        let rows = b * t;
        let z = |n: usize| vec![0f32; n];
        let (d, f) = (w.dim, w.ff_hidden);
        let scores = b * w.heads * t * t;
        *self = Buffers {
            cap_batch: b,
            cap_seq: t,
            layers: (0..w.n_layers)
                .map(|_| LayerActs {
                    input: z(rows * d),
                    attn_mean: z(rows),
                    attn_rstd: z(rows),
                    attn_normed: z(rows * d),
                    qkv: z(rows * 3 * d),
                    probs: z(scores),
                    attn_out: z(rows * d),
                    mid: z(rows * d),
                    ff_mean: z(rows),
                    ff_rstd: z(rows),
                    ff_normed: z(rows * d),
                    gate: z(rows * f),
                    up: z(rows * f),
                    hidden: z(rows * f),
                })
                .collect(),
            resid: z(rows * d),
            final_input: z(rows * d),
            final_mean: z(rows),
            final_rstd: z(rows),
            final_normed: z(rows * d),
            logits: z(rows * w.vocab),
            ids: vec![0; rows],
            win: vec![0; rows],
            grid: vec![0; rows * w.grid_onsets],
            grid_scores: z(rows * w.grid_bins),
            targets: vec![0; rows],
            mask: z(rows),
            row_loss: vec![0.0; rows],
            d_normed: z(rows * d),
            d_attn_out: z(rows * d),
            d_qkv: z(rows * 3 * d),
            d_scores: z(scores),
            d_hidden: z(rows * f),
            d_gate: z(rows * f),
            d_up: z(rows * f),
        };
    }
}
