//! `train-encoder`: contrastive pre-training of the snippet encoder (NT-Xent, as in SimCLR),
//! made to learn *sections*, and `encoder-retrieval`, which measures what it learnt.
//!
//! # Samples
//! A sample is one section letter of one piece (its *item*). Every piece in the shards is
//! decoded once at the start and each occurrence of each letter becomes a snippet of at most
//! `max_len` tokens (its notes, times from the occurrence's start: what the prompt would hold
//! had that occurrence been captured); occurrences with fewer than [`MIN_SNIPPET_TOKENS`]
//! tokens are left out, and so are letters without one.
//!
//! # Batches
//! `encoder.batch_size` is the number of items `N`. Pieces are drawn without repetition (train
//! pieces, and synthetic form pieces with probability `data.synthetic_fraction` when the shards
//! have them) and *all* their letters join the batch, so a batch holds the other sections of
//! the same piece as well as other pieces. Each item gets two views: two *different*
//! occurrences of its letter when the piece repeats it (A and its repeat; a synthetic piece's
//! transposed or ornamented copy), else the same occurrence twice; each view is augmented
//! independently (transposition, tempo, velocity as in `[data]`) and cropped to a random
//! contiguous run of at least 60% of its notes.
//!
//! # Loss
//! The encoder's `pooled` output goes through a projection head (`proj.0` linear, ReLU,
//! `proj.1` linear) and is L2-normalised; with `sim = z zᵀ / τ` over the 2N views
//! (self-similarity masked), each view's positive is its twin (the same letter of the same
//! piece) and the other 2N - 2 views, the same piece's other sections included, are its
//! negatives: loss = mean cross-entropy of picking the twin.
//!
//! # Retrieval ([`retrieval`])
//! On pieces with two or more letters: the key of each letter is its first occurrence's
//! snippet as the prompt holds it (no augmentation, whole); the query is a view (augmented and
//! cropped as in training, from a fixed seed) of its first *repeat* when it has one, else of
//! the first occurrence. A query is right *among the piece's sections* when its most similar
//! key of that piece is its own letter's, and *among the batch* when its most similar key of
//! the whole group of `batch` consecutive pieces is its own. Chance levels are reported
//! alongside. Similarity is the cosine of the projection (what the loss shapes) and, as a
//! second figure, of the mean encoder latent (what Staria's decoder reads).
//!
//! # Files
//! This one holds the model, the loss, the sample pool and the batches of views; `train.rs`
//! runs [`train_encoder`]; `retrieval.rs` measures [`retrieval`] and [`encoder_retrieval`];
//! `tests.rs` the unit tests.

use candle_core::{D, DType, Device, Module, Tensor};
use candle_nn::Linear;
use rand::Rng;
use rand::seq::SliceRandom;
use staria_models::SectionLabel;
use staria_models::encoder::{Encoder, EncoderConfig};
use staria_models::tokenizer::Tokenizer;

use crate::batch::Augment;
use crate::config::{DataSection, ExperimentConfig};
use crate::error::{Result, TrainError};
use crate::shards::Shards;
use staria_models::params::SeededVars;

mod retrieval;
#[cfg(test)]
mod tests;
mod train;

pub use retrieval::{Retrieval, RetrievalOptions, encoder_retrieval, retrieval};
pub use train::train_encoder;

const STAGE: &str = "train-encoder";

/// Occurrence snippets shorter than this (tokens) are not samples.
pub const MIN_SNIPPET_TOKENS: usize = 6;

/// The encoder plus its projection head.
pub struct ContrastiveModel {
    pub encoder: Encoder,
    proj0: Linear,
    proj1: Linear,
    pub vars: SeededVars,
    pub config: EncoderConfig,
}

impl ContrastiveModel {
    pub fn build(
        config: EncoderConfig,
        projection_dim: usize,
        vars: SeededVars,
        device: &Device,
    ) -> Result<Self> {
        let vb = vars.builder(device);
        let encoder = Encoder::new(&config, vb.pp("encoder"))?;
        let d = config.dim;
        let proj0 = candle_nn::linear(d, d, vb.pp("proj.0"))?;
        let proj1 = candle_nn::linear(d, projection_dim, vb.pp("proj.1"))?;
        Ok(Self {
            encoder,
            proj0,
            proj1,
            vars,
            config,
        })
    }

    /// Normalised projections `[N, projection_dim]` of padded snippets, and the normalised mean
    /// latents `[N, dim]` they are projected from.
    pub fn embed_both(&self, views: &[Vec<u32>], device: &Device) -> Result<(Tensor, Tensor)> {
        let l = views
            .iter()
            .map(Vec::len)
            .max()
            .unwrap_or(1)
            .clamp(1, self.config.max_seq_len);
        let n = views.len();
        let mut ids = vec![0u32; n * l];
        let mut mask = vec![0u8; n * l];
        for (i, v) in views.iter().enumerate() {
            let k = v.len().min(l);
            ids[i * l..i * l + k].copy_from_slice(&v[..k]);
            mask[i * l..i * l + k.max(1)].fill(1);
        }
        let ids = Tensor::from_vec(ids, (n, l), device)?;
        let mask = Tensor::from_vec(mask, (n, l), device)?;
        let pooled = self.encoder.pooled(&ids, &mask)?;
        let z = self.proj1.forward(&self.proj0.forward(&pooled)?.relu()?)?;
        Ok((l2_normalise(&z)?, l2_normalise(&pooled)?))
    }

    /// Normalised projections `[N, projection_dim]` of padded snippets.
    pub fn embed(&self, views: &[Vec<u32>], device: &Device) -> Result<Tensor> {
        Ok(self.embed_both(views, device)?.0)
    }
}

fn l2_normalise(z: &Tensor) -> Result<Tensor> {
    let norm = z
        .sqr()?
        .sum_keepdim(D::Minus1)?
        .sqrt()?
        .clamp(1e-6, f64::INFINITY)?;
    Ok(z.broadcast_div(&norm)?)
}

/// NT-Xent over `2N` normalised views where rows `i` and `i + N` are twins. Returns the loss and
/// the share of views whose most similar other view is their twin.
pub fn nt_xent(z: &Tensor, temperature: f64) -> Result<(Tensor, f64)> {
    let n = z.dim(0)?;
    if n < 4 || n % 2 != 0 {
        return Err(TrainError::Data(format!(
            "NT-Xent needs an even number >= 4 of views, got {n}"
        )));
    }
    let b = n / 2;
    let sim = (z.matmul(&z.t()?)? / temperature)?;
    let eye = Tensor::eye(n, DType::F32, z.device())?;
    let sim = (sim - (eye * 1e9)?)?;
    let logp = candle_nn::ops::log_softmax(&sim, D::Minus1)?;
    let twins: Vec<u32> = (0..n).map(|i| ((i + b) % n) as u32).collect();
    let twins = Tensor::from_vec(twins.clone(), (n, 1), z.device())?;
    let picked = logp.gather(&twins, D::Minus1)?;
    let loss = picked.neg()?.mean_all()?;
    let best: Vec<u32> = sim.argmax(D::Minus1)?.to_vec1()?;
    let twins: Vec<u32> = twins.flatten_all()?.to_vec1()?;
    let acc = best.iter().zip(&twins).filter(|(a, b)| a == b).count() as f64 / n as f64;
    Ok((loss, acc))
}

/// One view of a snippet: augmented, then cropped to a random contiguous run of >= 60% of its
/// notes (re-encoded relative to the run's first note), at most `max_len` tokens.
pub fn view(
    tok: &Tokenizer,
    snippet: &[u32],
    aug: Augment,
    max_len: usize,
    rng: &mut impl Rng,
) -> Result<Vec<u32>> {
    let s = aug.apply(tok, snippet)?;
    let notes = tok.decode_snippet(&s);
    if notes.len() < 3 {
        return Ok(tok.snippet_tokens(&notes, 0.0, max_len));
    }
    let keep =
        ((notes.len() as f64 * rng.random_range(0.6..=1.0)).ceil() as usize).clamp(2, notes.len());
    let start = rng.random_range(0..=notes.len() - keep);
    let run = &notes[start..start + keep];
    Ok(tok.snippet_tokens(run, run[0].start_ms, max_len))
}

/// One piece's sections as contrastive samples.
#[derive(Debug, Clone, PartialEq)]
pub struct PieceSections {
    pub id: String,
    /// Per distinct letter (A..D order), the snippet of each occurrence in time order.
    pub letters: Vec<(SectionLabel, Vec<Vec<u32>>)>,
}

impl PieceSections {
    /// The occurrences of every letter of a piece body (`<S> ... <E>`, tags included), as
    /// snippets of at most `max_len` tokens; `None` when no letter has a usable occurrence.
    pub fn of_piece(tok: &Tokenizer, id: &str, piece: &[u32], max_len: usize) -> Option<Self> {
        let song = tok.decode(piece);
        let mut letters = Vec::new();
        for label in SectionLabel::ALL {
            let mut occ: Vec<&staria_models::Section> =
                song.sections.iter().filter(|s| s.label == label).collect();
            occ.sort_by(|a, b| a.start_ms.total_cmp(&b.start_ms));
            let snippets: Vec<Vec<u32>> = occ
                .iter()
                .map(|s| tok.snippet_tokens(&song.section_notes(s), 0.0, max_len))
                .filter(|s| s.len() >= MIN_SNIPPET_TOKENS)
                .collect();
            if !snippets.is_empty() {
                letters.push((label, snippets));
            }
        }
        (!letters.is_empty()).then(|| PieceSections {
            id: id.to_string(),
            letters,
        })
    }

    /// Letters occurring more than once (with usable snippets).
    pub fn repeated_letters(&self) -> usize {
        self.letters.iter().filter(|l| l.1.len() > 1).count()
    }
}

/// The contrastive samples of a split: every piece with a usable section.
pub fn section_pool(shards: &Shards, split: &str, max_len: usize) -> Vec<PieceSections> {
    shards
        .pieces(split)
        .iter()
        .filter_map(|p| {
            PieceSections::of_piece(
                &shards.tokenizer,
                &p.id,
                shards.piece_tokens(split, p),
                max_len,
            )
        })
        .collect()
}

/// Where a contrastive batch's pieces come from.
pub struct ViewSource<'a> {
    pub tok: &'a Tokenizer,
    pub data: &'a DataSection,
    /// Real pieces.
    pub pieces: &'a [PieceSections],
    /// Synthetic form pieces, drawn with probability `synthetic_fraction` when non-empty.
    pub synthetic: &'a [PieceSections],
    pub synthetic_fraction: f64,
    pub max_len: usize,
}

/// A batch: `views[i]` and `views[i + n]` are the two views of item `i`; `items[i]` says which
/// (pool, piece index, letter) it is (pool 0 real, 1 synthetic).
pub struct ViewBatch {
    pub views: Vec<Vec<u32>>,
    pub items: Vec<(u8, usize, SectionLabel)>,
    /// Items whose two views come from different occurrences of their letter.
    pub cross_occurrence: usize,
}

/// Draws a batch of up to `n` items (see the module docs).
pub fn batch_views(src: &ViewSource, n: usize, rng: &mut impl Rng) -> Result<ViewBatch> {
    let mut items: Vec<(u8, usize, SectionLabel)> = Vec::with_capacity(n);
    let mut used: Vec<(u8, usize)> = Vec::new();
    let mut first = Vec::with_capacity(n);
    let mut second = Vec::with_capacity(n);
    let mut cross = 0;
    let mut tries = 0;
    while items.len() < n && tries < n * 50 {
        tries += 1;
        let synth = !src.synthetic.is_empty()
            && (src.pieces.is_empty() || rng.random_bool(src.synthetic_fraction));
        let (pool, which) = if synth {
            (src.synthetic, 1u8)
        } else {
            (src.pieces, 0u8)
        };
        if pool.is_empty() {
            break;
        }
        let pi = rng.random_range(0..pool.len());
        if used.contains(&(which, pi)) {
            continue;
        }
        used.push((which, pi));
        let mut letters: Vec<&(SectionLabel, Vec<Vec<u32>>)> = pool[pi].letters.iter().collect();
        letters.shuffle(rng);
        for (label, occ) in letters {
            if items.len() == n {
                break;
            }
            let (i, j) = if occ.len() >= 2 {
                let i = rng.random_range(0..occ.len());
                let j = (i + rng.random_range(1..occ.len())) % occ.len();
                cross += 1;
                (i, j)
            } else {
                (0, 0)
            };
            let a1 = Augment::sample(src.data, rng);
            let a2 = Augment::sample(src.data, rng);
            first.push(view(src.tok, &occ[i], a1, src.max_len, rng)?);
            second.push(view(src.tok, &occ[j], a2, src.max_len, rng)?);
            items.push((which, pi, *label));
        }
    }
    if items.len() < 2 {
        return Err(TrainError::Data(
            "need at least 2 sections with snippets for the contrastive loss".into(),
        ));
    }
    first.extend(second);
    Ok(ViewBatch {
        views: first,
        items,
        cross_occurrence: cross,
    })
}

/// The snippet length an experiment's encoder sees.
fn snippet_len(exp: &ExperimentConfig, enc: &EncoderConfig) -> usize {
    enc.max_seq_len.min(exp.data.snippet_tokens.max(8))
}
