//! The structure recognizer of wake-sleep: a small bidirectional transformer that reads a piece's
//! tokens with the section tags removed and labels every token with its section (A..D, letters in
//! order of first appearance, as in the corpus and the synthetic forms).
//!
//! Token embedding + learned positions, pre-LN blocks (multi-head self-attention with a key
//! padding mask, GELU MLP), final LayerNorm, a 4-way linear head. Pieces longer than `max_len`
//! tokens are labelled on their first `max_len` tokens.

use candle_core::{D, DType, Device, Module, Tensor};
use candle_nn::{Embedding, LayerNorm, Linear, VarBuilder};
use serde::{Deserialize, Serialize};
use staria_models::tokenizer::{StreamDecoder, StreamEvent, TokenKind, Tokenizer};
use staria_models::{Section, SectionLabel};

use crate::error::{Result, TrainError};

/// Runs of fewer notes than this are merged into the section before them when tokens' labels
/// are turned into sections (single stray labels are noise, not sections).
pub const MIN_RUN_NOTES: usize = 4;

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RecognizerConfig {
    pub vocab_size: usize,
    pub dim: usize,
    pub n_layers: usize,
    pub n_heads: usize,
    pub max_len: usize,
}

struct Block {
    ln1: LayerNorm,
    qkv: Linear,
    out: Linear,
    ln2: LayerNorm,
    ff1: Linear,
    ff2: Linear,
}

pub struct Recognizer {
    emb: Embedding,
    pos: Tensor,
    blocks: Vec<Block>,
    norm: LayerNorm,
    head: Linear,
    pub config: RecognizerConfig,
}

impl Recognizer {
    pub fn new(cfg: &RecognizerConfig, vb: VarBuilder) -> Result<Self> {
        if cfg.dim == 0
            || cfg.n_heads == 0
            || !cfg.dim.is_multiple_of(cfg.n_heads)
            || cfg.n_layers == 0
            || cfg.max_len == 0
        {
            return Err(TrainError::config(format!(
                "recognizer: bad size {cfg:?} (dim must be a multiple of heads)"
            )));
        }
        let d = cfg.dim;
        let emb = candle_nn::embedding(cfg.vocab_size, d, vb.pp("emb"))?;
        let pos = vb.get_with_hints(
            (cfg.max_len, d),
            "pos",
            candle_nn::Init::Randn {
                mean: 0.0,
                stdev: 0.02,
            },
        )?;
        let blocks = (0..cfg.n_layers)
            .map(|i| {
                let vb = vb.pp(format!("blocks.{i}"));
                Ok(Block {
                    ln1: candle_nn::layer_norm(d, 1e-5, vb.pp("ln1"))?,
                    qkv: candle_nn::linear(d, 3 * d, vb.pp("qkv"))?,
                    out: candle_nn::linear(d, d, vb.pp("out"))?,
                    ln2: candle_nn::layer_norm(d, 1e-5, vb.pp("ln2"))?,
                    ff1: candle_nn::linear(d, 4 * d, vb.pp("ff1"))?,
                    ff2: candle_nn::linear(4 * d, d, vb.pp("ff2"))?,
                })
            })
            .collect::<Result<Vec<_>>>()?;
        Ok(Self {
            emb,
            pos,
            blocks,
            norm: candle_nn::layer_norm(d, 1e-5, vb.pp("norm"))?,
            head: candle_nn::linear(d, SectionLabel::ALL.len(), vb.pp("head"))?,
            config: cfg.clone(),
        })
    }

    /// `ids` `[B, T]` u32, `mask` `[B, T]` f32 (1 = token) → logits `[B, T, 4]`.
    pub fn forward(&self, ids: &Tensor, mask: &Tensor) -> Result<Tensor> {
        let (b, t) = ids.dims2()?;
        if t > self.config.max_len {
            return Err(TrainError::Data(format!(
                "recognizer input of {t} tokens exceeds max_len {}",
                self.config.max_len
            )));
        }
        let (h, d) = (self.config.n_heads, self.config.dim);
        let hd = d / h;
        let key_mask = ((mask.to_dtype(DType::F32)? - 1.0)? * 1e9)?.reshape((b, 1, 1, t))?;
        let mut x = self
            .emb
            .forward(ids)?
            .broadcast_add(&self.pos.narrow(0, 0, t)?.unsqueeze(0)?)?;
        for blk in &self.blocks {
            let y = blk.ln1.forward(&x)?;
            let qkv = blk.qkv.forward(&y)?.reshape((b, t, 3, h, hd))?;
            let q = qkv
                .narrow(2, 0, 1)?
                .squeeze(2)?
                .transpose(1, 2)?
                .contiguous()?;
            let k = qkv
                .narrow(2, 1, 1)?
                .squeeze(2)?
                .transpose(1, 2)?
                .contiguous()?;
            let v = qkv
                .narrow(2, 2, 1)?
                .squeeze(2)?
                .transpose(1, 2)?
                .contiguous()?;
            let att = (q.matmul(&k.t()?)? / (hd as f64).sqrt())?.broadcast_add(&key_mask)?;
            let att = candle_nn::ops::softmax_last_dim(&att)?;
            let y = att.matmul(&v)?.transpose(1, 2)?.reshape((b, t, d))?;
            x = (x + blk.out.forward(&y)?)?;
            let y = blk
                .ff2
                .forward(&blk.ff1.forward(&blk.ln2.forward(&x)?)?.gelu()?)?;
            x = (x + y)?;
        }
        Ok(self.head.forward(&self.norm.forward(&x)?)?)
    }

    /// Per-token labels of one tag-free sequence (cut to `max_len`).
    pub fn label(&self, ids: &[u32], device: &Device) -> Result<Vec<SectionLabel>> {
        let ids = &ids[..ids.len().min(self.config.max_len)];
        if ids.is_empty() {
            return Ok(Vec::new());
        }
        let t = Tensor::new(ids, device)?.unsqueeze(0)?;
        let m = Tensor::ones((1, ids.len()), DType::F32, device)?;
        let best: Vec<u32> = self
            .forward(&t, &m)?
            .squeeze(0)?
            .argmax(D::Minus1)?
            .to_vec1()?;
        Ok(best
            .into_iter()
            .map(|i| SectionLabel::from_index(i as usize).expect("4-way head"))
            .collect())
    }
}

/// A piece body without its section tags, and the label in force at each remaining token
/// (tokens before the first tag take the first tag's label).
pub fn strip_tags(tok: &Tokenizer, tokens: &[u32]) -> (Vec<u32>, Vec<SectionLabel>) {
    if let Some(stripped) = tok.strip_section_tags(tokens) {
        let (ids, starts) = (stripped.tokens, stripped.section_starts);
        // Section windows: tags, their onsets and the time lines restarting there are gone.
        let mut current = starts.first().map_or(SectionLabel::A, |s| s.1);
        let mut next = starts.iter().peekable();
        let mut kept = Vec::with_capacity(ids.len());
        let mut labels = Vec::with_capacity(ids.len());
        for (i, &t) in ids.iter().enumerate() {
            while let Some(&&(at, l)) = next.peek() {
                if at > i {
                    break;
                }
                current = l;
                next.next();
            }
            if !matches!(tok.kind(t), TokenKind::Start | TokenKind::Pad) {
                kept.push(t);
                labels.push(current);
            }
        }
        return (kept, labels);
    }
    let first = tokens.iter().find_map(|&t| match tok.kind(t) {
        TokenKind::Section(l) => Some(l),
        _ => None,
    });
    let mut current = first.unwrap_or(SectionLabel::A);
    let mut ids = Vec::with_capacity(tokens.len());
    let mut labels = Vec::with_capacity(tokens.len());
    for &t in tokens {
        match tok.kind(t) {
            TokenKind::Section(l) => current = l,
            TokenKind::Start | TokenKind::Pad => {}
            _ => {
                ids.push(t);
                labels.push(current);
            }
        }
    }
    (ids, labels)
}

/// Sections (in ms) from per-token labels of a tag-free sequence: each note takes its note
/// token's label; runs shorter than [`MIN_RUN_NOTES`] join the run before; letters are renamed
/// in order of first appearance. `None` when the sequence has no notes.
pub fn sections_from_labels(
    tok: &Tokenizer,
    ids: &[u32],
    labels: &[SectionLabel],
) -> Option<Vec<Section>> {
    let mut dec = StreamDecoder::new();
    let mut notes: Vec<(f64, f64, SectionLabel)> = Vec::new();
    let mut last_note_token = 0;
    for (i, &t) in ids.iter().enumerate() {
        if matches!(tok.kind(t), TokenKind::Note { .. } | TokenKind::Drum { .. }) {
            last_note_token = i;
        }
        if let Some(StreamEvent::Note {
            start_ms, dur_ms, ..
        }) = dec.push(tok, t)
        {
            let label = labels
                .get(last_note_token)
                .copied()
                .unwrap_or(SectionLabel::A);
            notes.push((start_ms, start_ms + dur_ms, label));
        }
    }
    if notes.is_empty() {
        return None;
    }
    notes.sort_by(|a, b| a.0.total_cmp(&b.0));
    // Runs of equal labels: (first note index, label, length).
    let mut runs: Vec<(usize, SectionLabel, usize)> = Vec::new();
    for (i, n) in notes.iter().enumerate() {
        match runs.last_mut() {
            Some(r) if r.1 == n.2 => r.2 += 1,
            _ => runs.push((i, n.2, 1)),
        }
    }
    let mut merged: Vec<(usize, SectionLabel, usize)> = Vec::new();
    for r in runs {
        match merged.last_mut() {
            Some(m) if r.2 < MIN_RUN_NOTES || m.1 == r.1 => m.2 += r.2,
            _ => merged.push(r),
        }
    }
    // A short first run takes the label of the run after it.
    if merged.len() > 1 && merged[0].2 < MIN_RUN_NOTES {
        let first = merged.remove(0);
        merged[0].0 = first.0;
        merged[0].2 += first.2;
    }
    let mut rename: Vec<SectionLabel> = Vec::new();
    let end = notes.iter().map(|n| n.1).fold(0.0, f64::max);
    let mut sections = Vec::with_capacity(merged.len());
    for (k, &(start, label, _)) in merged.iter().enumerate() {
        let letter = match rename.iter().position(|&l| l == label) {
            Some(i) => i,
            None => {
                rename.push(label);
                rename.len() - 1
            }
        };
        let label = SectionLabel::from_index(letter.min(3)).expect("capped at D");
        let start_ms = notes[start].0;
        let end_ms = merged.get(k + 1).map_or(end, |n| notes[n.0].0);
        match sections.last_mut() {
            Some(Section {
                label: l,
                end_ms: e,
                ..
            }) if *l == label => *e = end_ms,
            _ => sections.push(Section {
                label,
                marker_text: label.to_string(),
                start_tick: (start_ms * 0.96).round() as u64,
                end_tick: (end_ms * 0.96).round() as u64,
                start_ms,
                end_ms,
            }),
        }
    }
    for s in &mut sections {
        s.end_tick = (s.end_ms * 0.96).round() as u64;
    }
    Some(sections)
}

/// A padded recognizer batch: ids, label targets and mask.
pub fn collate(
    seqs: &[(Vec<u32>, Vec<SectionLabel>)],
    device: &Device,
) -> Result<(Tensor, Tensor, Tensor)> {
    let t = seqs.iter().map(|s| s.0.len()).max().unwrap_or(1).max(1);
    let b = seqs.len();
    let mut ids = vec![0u32; b * t];
    let mut tg = vec![0u32; b * t];
    let mut mask = vec![0f32; b * t];
    for (r, (s, l)) in seqs.iter().enumerate() {
        for i in 0..s.len() {
            ids[r * t + i] = s[i];
            tg[r * t + i] = l[i].index() as u32;
            mask[r * t + i] = 1.0;
        }
    }
    Ok((
        Tensor::from_vec(ids, (b, t), device)?,
        Tensor::from_vec(tg, (b, t), device)?,
        Tensor::from_vec(mask, (b, t), device)?,
    ))
}

/// Mean cross-entropy over real tokens, and token accuracy.
pub fn loss(
    rec: &Recognizer,
    seqs: &[(Vec<u32>, Vec<SectionLabel>)],
    device: &Device,
) -> Result<(Tensor, f64)> {
    let (ids, tg, mask) = collate(seqs, device)?;
    let logits = rec.forward(&ids, &mask)?;
    let logp = candle_nn::ops::log_softmax(&logits, D::Minus1)?;
    let picked = logp
        .gather(&tg.unsqueeze(D::Minus1)?, D::Minus1)?
        .squeeze(D::Minus1)?;
    let count = mask.sum_all()?.to_scalar::<f32>()? as f64;
    let l = ((picked.neg()? * &mask)?.sum_all()? / count.max(1.0))?;
    let hit = logits.argmax(D::Minus1)?.eq(&tg)?.to_dtype(DType::F32)?;
    let acc = (hit * &mask)?.sum_all()?.to_scalar::<f32>()? as f64 / count.max(1.0);
    Ok((l, acc))
}

#[cfg(test)]
mod tests {
    use super::*;
    use staria_models::tokenizer::TokenizerConfig;

    /// Both layouts give the recognizer the same tag-free notes with the same labels; with
    /// section windows the section starts' onsets go too and time runs on without restarting.
    #[test]
    fn stripping_tags_gives_the_same_notes_and_labels_in_both_layouts() {
        let body = "<S> piano:60:80 onset:0 dur:100 <T> piano:62:80 onset:2000 dur:100 \
                    piano:64:80 onset:3000 dur:100 <E>";
        let legacy = Tokenizer::new(TokenizerConfig::default()).unwrap();
        let windows = Tokenizer::new(TokenizerConfig {
            section_windows: true,
            ..TokenizerConfig::default()
        })
        .unwrap();
        // The same piece: B starts at 7000 ms, with its first note at 8000.
        let legacy_ids = legacy
            .ids_of(
                &"<S> <A_SECTION> piano:60:80 onset:0 dur:100 <T> piano:62:80 onset:2000 dur:100 \
                  <B_SECTION> piano:64:80 onset:3000 dur:100 <E>"
                    .split_whitespace()
                    .collect::<Vec<_>>(),
            )
            .unwrap();
        let windows_ids = windows
            .ids_of(
                &"<S> onset:0 <A_SECTION> piano:60:80 onset:0 dur:100 <T> piano:62:80 onset:2000 \
                  dur:100 onset:2000 <B_SECTION> piano:64:80 onset:1000 dur:100 <E>"
                    .split_whitespace()
                    .collect::<Vec<_>>(),
            )
            .unwrap();
        let want = legacy
            .ids_of(&body.split_whitespace().collect::<Vec<_>>())
            .unwrap();
        for (tok, ids) in [(&legacy, legacy_ids), (&windows, windows_ids)] {
            let (stripped, labels) = strip_tags(tok, &ids);
            assert_eq!(stripped, want[1..], "{:?}", tok.to_strings(&stripped));
            let note_labels: Vec<_> = stripped
                .iter()
                .zip(&labels)
                .filter(|(id, _)| matches!(tok.kind(**id), TokenKind::Note { .. }))
                .map(|(_, l)| *l)
                .collect();
            use SectionLabel::{A, B};
            assert_eq!(note_labels, [A, A, B]);
        }
    }
}
