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

use std::collections::HashMap;
use std::path::Path;

use candle_core::{D, DType, Device, Module, Tensor};
use candle_nn::Linear;
use rand::Rng;
use rand::seq::SliceRandom;
use serde::Serialize;
use staria_models::SectionLabel;
use staria_models::encoder::{Encoder, EncoderConfig};
use staria_models::tokenizer::Tokenizer;

use crate::batch::Augment;
use crate::config::{DataSection, ExperimentConfig};
use crate::error::{Result, TrainError};
use crate::models::{self, TrainerState};
use crate::monitor::Monitor;
use crate::optim::{AdamW, AdamWParams, Schedule};
use crate::shards::{SYNTHETIC, Shards, TRAIN, VALIDATION};
use crate::train::{RunOptions, StageSummary, open_run, step_rng};
use staria_models::params::SeededVars;

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

/// Retrieval settings (see the module docs).
#[derive(Debug, Clone)]
pub struct RetrievalOptions {
    /// Pieces per group for the batch figure.
    pub batch: usize,
    /// At most this many pieces (with >= 2 letters), spread evenly; 0: all.
    pub max_pieces: usize,
    /// Seed of the queries' augmentation and crops.
    pub seed: u64,
    /// Augment the queries as `[data]` says (transposition, tempo, velocity); crops always.
    pub augment: bool,
}

impl Default for RetrievalOptions {
    fn default() -> Self {
        Self {
            batch: 16,
            max_pieces: 0,
            seed: 0,
            augment: true,
        }
    }
}

/// Retrieval figures (see the module docs); accuracies in [0, 1].
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct Retrieval {
    /// Pieces with two or more letters that were used, and their queries (one per letter).
    pub pieces: usize,
    pub queries: usize,
    /// Queries made from a repeat (another occurrence than the key's).
    pub repeat_queries: usize,
    /// Of those, repeats whose notes are the key's exactly (before augmentation and crop).
    pub identical_repeats: usize,
    /// Projection cosine: right among the piece's sections / among the batch's.
    pub piece_accuracy: f64,
    pub batch_accuracy: f64,
    /// The same on repeat queries only.
    pub repeat_piece_accuracy: f64,
    pub repeat_batch_accuracy: f64,
    /// Mean-latent cosine (what the decoder reads): among the piece's / the batch's.
    pub latent_piece_accuracy: f64,
    pub latent_batch_accuracy: f64,
    /// What picking a key at random scores: mean of 1 / keys of the piece (of the batch).
    pub piece_chance: f64,
    pub batch_chance: f64,
}

/// Encoder retrieval on `pieces` (see the module docs).
pub fn retrieval(
    model: &ContrastiveModel,
    tok: &Tokenizer,
    data: &DataSection,
    pieces: &[PieceSections],
    max_len: usize,
    opts: &RetrievalOptions,
    device: &Device,
) -> Result<Retrieval> {
    let mut eligible: Vec<&PieceSections> =
        pieces.iter().filter(|p| p.letters.len() >= 2).collect();
    if eligible.is_empty() {
        return Err(TrainError::Data(
            "encoder retrieval needs pieces with two or more section letters".into(),
        ));
    }
    if opts.max_pieces > 0 && eligible.len() > opts.max_pieces {
        let stride = eligible.len() as f64 / opts.max_pieces as f64;
        eligible = (0..opts.max_pieces)
            .map(|k| eligible[(k as f64 * stride) as usize])
            .collect();
    }
    let mut r = Retrieval {
        pieces: eligible.len(),
        ..Retrieval::default()
    };
    // Tallies: (piece hits, batch hits) for projection, latent, and repeat-only projection.
    let (mut ph, mut bh, mut lph, mut lbh, mut rph, mut rbh) = (0usize, 0, 0, 0, 0, 0);
    let (mut pchance, mut bchance) = (0.0f64, 0.0f64);
    for (g, group) in eligible.chunks(opts.batch.max(1)).enumerate() {
        let mut keys = Vec::new();
        let mut queries = Vec::new();
        // (piece within group, key index of its own letter, first key index of the piece,
        // keys of the piece, from a repeat)
        let mut meta: Vec<(usize, usize, usize, usize, bool)> = Vec::new();
        for (pi, p) in group.iter().enumerate() {
            let first_key = keys.len();
            for (li, (_, occ)) in p.letters.iter().enumerate() {
                keys.push(occ[0].clone());
                let mut rng = step_rng(
                    opts.seed,
                    "encoder-retrieval",
                    ((g * 1000 + pi) * 4 + li) as u64,
                );
                let aug = if opts.augment {
                    Augment::sample(data, &mut rng)
                } else {
                    Augment::NONE
                };
                let repeat = occ.len() >= 2;
                let src = if repeat { &occ[1] } else { &occ[0] };
                if repeat {
                    r.repeat_queries += 1;
                    if occ[1] == occ[0] {
                        r.identical_repeats += 1;
                    }
                }
                queries.push(view(tok, src, aug, max_len, &mut rng)?);
                meta.push((pi, first_key + li, first_key, p.letters.len(), repeat));
            }
        }
        let (kz, kl) = embed_chunked(model, &keys, device)?;
        let (qz, ql) = embed_chunked(model, &queries, device)?;
        let sim_z: Vec<Vec<f32>> = qz.matmul(&kz.t()?)?.to_vec2()?;
        let sim_l: Vec<Vec<f32>> = ql.matmul(&kl.t()?)?.to_vec2()?;
        for (q, &(_, own, first_key, n_keys, repeat)) in meta.iter().enumerate() {
            let best = |row: &[f32], range: std::ops::Range<usize>| -> usize {
                range
                    .max_by(|&a, &b| row[a].total_cmp(&row[b]))
                    .expect("non-empty")
            };
            let piece_keys = first_key..first_key + n_keys;
            let all = 0..keys.len();
            let pz = best(&sim_z[q], piece_keys.clone()) == own;
            let bz = best(&sim_z[q], all.clone()) == own;
            ph += usize::from(pz);
            bh += usize::from(bz);
            if repeat {
                rph += usize::from(pz);
                rbh += usize::from(bz);
            }
            lph += usize::from(best(&sim_l[q], piece_keys) == own);
            lbh += usize::from(best(&sim_l[q], all) == own);
            pchance += 1.0 / n_keys as f64;
            bchance += 1.0 / keys.len() as f64;
        }
        r.queries += meta.len();
    }
    let q = r.queries.max(1) as f64;
    let rq = r.repeat_queries.max(1) as f64;
    r.piece_accuracy = ph as f64 / q;
    r.batch_accuracy = bh as f64 / q;
    r.latent_piece_accuracy = lph as f64 / q;
    r.latent_batch_accuracy = lbh as f64 / q;
    r.repeat_piece_accuracy = rph as f64 / rq;
    r.repeat_batch_accuracy = rbh as f64 / rq;
    r.piece_chance = pchance / q;
    r.batch_chance = bchance / q;
    Ok(r)
}

/// Embeddings of many snippets, 64 at a time.
fn embed_chunked(
    model: &ContrastiveModel,
    snippets: &[Vec<u32>],
    device: &Device,
) -> Result<(Tensor, Tensor)> {
    let (mut zs, mut ls) = (Vec::new(), Vec::new());
    for chunk in snippets.chunks(64) {
        let (z, l) = model.embed_both(chunk, device)?;
        zs.push(z);
        ls.push(l);
    }
    Ok((Tensor::cat(&zs, 0)?, Tensor::cat(&ls, 0)?))
}

/// The snippet length an experiment's encoder sees.
fn snippet_len(exp: &ExperimentConfig, enc: &EncoderConfig) -> usize {
    enc.max_seq_len.min(exp.data.snippet_tokens.max(8))
}

/// `train-encoder`.
pub fn train_encoder(
    exp: &ExperimentConfig,
    shards: &Shards,
    opts: &RunOptions,
) -> Result<StageSummary> {
    let h = exp.encoder.hyper();
    let saved = open_run(opts, STAGE)?;
    let tok = &shards.tokenizer;
    let enc_cfg = models::encoder_config(exp, tok.vocab_size())?;
    let max_len = snippet_len(exp, &enc_cfg);
    let model = ContrastiveModel::build(
        enc_cfg.clone(),
        exp.encoder.projection_dim,
        SeededVars::new(exp.seed),
        &opts.device,
    )?;
    let mut opt = AdamW::new(
        model.vars.named(),
        AdamWParams {
            lr: h.lr,
            weight_decay: h.weight_decay,
            ..AdamWParams::default()
        },
    )?;
    let mut state = match saved {
        Some(s) => {
            let w = opts.out.join(staria_models::checkpoint::WEIGHTS_FILE);
            let t: HashMap<String, Tensor> = candle_core::safetensors::load(&w, &opts.device)
                .map_err(|e| TrainError::file(&w, e.to_string()))?;
            model.vars.load(&t)?;
            opt.load(&opts.out.join(models::OPTIMIZER_FILE), s.step)?;
            s
        }
        None => TrainerState {
            stage: STAGE.into(),
            step: 0,
            total_steps: h.steps,
            tokens_seen: 0,
            config: exp.clone(),
            data: shards.dir.display().to_string(),
            init: vec![],
            extra: serde_json::Value::Null,
            val_loss: None,
            // The encoder's checkpoint is not one the engine plays from.
            prompt_velocity: None,
        },
    };
    let train_pool = section_pool(shards, TRAIN, max_len);
    let synth_pool = section_pool(shards, SYNTHETIC, max_len);
    if train_pool.is_empty() && synth_pool.is_empty() {
        return Err(TrainError::Data(format!(
            "{}: no train or synthetic piece has a section snippet of {MIN_SNIPPET_TOKENS} or more tokens for the encoder",
            shards.dir.display()
        )));
    }
    let val_pool = match section_pool(shards, VALIDATION, max_len) {
        v if v.iter().map(|p| p.letters.len()).sum::<usize>() >= 4 => v,
        _ => train_pool.clone(),
    };
    let sched = Schedule {
        peak: h.lr,
        warmup: h.warmup_steps,
        total: h.steps,
        min_ratio: h.min_lr_ratio,
    };
    let mut mon = Monitor::new(
        STAGE,
        h.steps,
        state.step,
        Some(&models::metrics_path(&opts.out)),
        opts.progress,
    )?;
    let stop = opts
        .max_steps
        .map_or(h.steps, |m| (state.step + m).min(h.steps));
    let (mut first, mut last) = (None, None);
    let tau = exp.encoder.temperature;
    let train_src = ViewSource {
        tok,
        data: &exp.data,
        pieces: &train_pool,
        synthetic: &synth_pool,
        synthetic_fraction: exp.data.synthetic_fraction,
        max_len,
    };
    let val_src = ViewSource {
        tok,
        data: &exp.data,
        pieces: &val_pool,
        synthetic: &[],
        synthetic_fraction: 0.0,
        max_len,
    };
    while state.step < stop {
        let step = state.step;
        let mut rng = step_rng(exp.seed, STAGE, step);
        let batch = batch_views(&train_src, h.batch_size, &mut rng)?;
        let tokens: usize = batch.views.iter().map(Vec::len).sum();
        let z = model.embed(&batch.views, &opts.device)?;
        let (loss, acc) = nt_xent(&z, tau)?;
        let lr = sched.lr(step);
        opt.set_lr(lr);
        let loss_v = loss.to_scalar::<f32>()? as f64;
        if !loss_v.is_finite() {
            return Err(TrainError::Diverged(format!(
                "contrastive loss is {loss_v} at step {}",
                step + 1
            )));
        }
        let norm = opt.step(&loss.backward()?, h.clip_norm)?;
        first.get_or_insert(loss_v);
        last = Some(loss_v);
        state.step += 1;
        state.tokens_seen += tokens as u64;
        mon.step(
            state.step,
            tokens as u64,
            &[
                ("loss", loss_v),
                ("twin_accuracy", acc),
                ("lr", lr),
                ("grad_norm", norm),
                ("items", batch.items.len() as f64),
                ("cross_occurrence_items", batch.cross_occurrence as f64),
            ],
        )?;
        if (h.eval_every > 0 && state.step.is_multiple_of(h.eval_every)) || state.step == h.steps {
            let (mut vl, mut va) = (0.0, 0.0);
            for k in 0..h.eval_batches {
                let mut rng = step_rng(exp.seed, "train-encoder-validation", k as u64);
                let batch = batch_views(&val_src, h.batch_size, &mut rng)?;
                let (l, a) = nt_xent(&model.embed(&batch.views, &opts.device)?, tau)?;
                vl += l.to_scalar::<f32>()? as f64;
                va += a;
            }
            let (vl, va) = (vl / h.eval_batches as f64, va / h.eval_batches as f64);
            state.val_loss = Some(vl);
            let ret = retrieval(
                &model,
                tok,
                &exp.data,
                &val_pool,
                max_len,
                &RetrievalOptions {
                    max_pieces: 64,
                    ..RetrievalOptions::default()
                },
                &opts.device,
            )
            .ok();
            let mut row = vec![("val_loss", vl), ("val_twin_accuracy", va)];
            if let Some(r) = &ret {
                row.extend([
                    ("val_piece_retrieval", r.piece_accuracy),
                    ("val_batch_retrieval", r.batch_accuracy),
                    ("val_latent_piece_retrieval", r.latent_piece_accuracy),
                ]);
            }
            mon.write("eval", state.step, &row)?;
            mon.println(&format!(
                "{STAGE} step {}: val loss {vl:.4}, twin accuracy {va:.3}{}",
                state.step,
                ret.map_or(String::new(), |r| format!(
                    ", retrieval among the piece's sections {:.3} (chance {:.3}), among the batch {:.3} (chance {:.3})",
                    r.piece_accuracy, r.piece_chance, r.batch_accuracy, r.batch_chance
                ))
            ));
        }
        if (h.checkpoint_every > 0 && state.step.is_multiple_of(h.checkpoint_every))
            || state.step == stop
        {
            models::save_encoder(
                &opts.out,
                &enc_cfg,
                exp.encoder.projection_dim,
                tok,
                &model.vars,
                Some(&opt),
                &state,
            )?;
            mon.write("checkpoint", state.step, &[])?;
        }
    }
    mon.finish();
    Ok(StageSummary {
        steps: state.step,
        first_loss: first,
        last_loss: last,
        val_loss: state.val_loss,
        tokens_per_s: mon.tokens_per_second(),
        out: opts.out.clone(),
    })
}

/// `encoder-retrieval`: the retrieval figures of an encoder checkpoint (`encoder`, from
/// `train-encoder`), or of the untrained encoder `exp` starts from (its step-0 weights) when
/// `encoder` is `None`, on the pieces of `split`. Augmentation settings come from `exp` when
/// given, else from the checkpoint's run.
pub fn encoder_retrieval(
    exp: Option<&ExperimentConfig>,
    encoder: Option<&Path>,
    shards: &Shards,
    split: &str,
    opts: &RetrievalOptions,
    device: &Device,
) -> Result<Retrieval> {
    let tok = &shards.tokenizer;
    let (exp, model) = match encoder {
        Some(dir) => {
            let (cfg, tensors) = models::load_encoder(dir, device)?;
            models::check_tokenizer(dir, &cfg.tokenizer_hash, &tok.hash())?;
            let exp = match exp {
                Some(e) => e.clone(),
                None => {
                    models::load_state(dir)?
                        .ok_or_else(|| {
                            TrainError::file(
                                dir,
                                "has no trainer_state.json to take the data settings from; give --config",
                            )
                        })?
                        .config
                }
            };
            let model = ContrastiveModel::build(
                cfg.encoder,
                cfg.projection_dim,
                SeededVars::new(exp.seed),
                device,
            )?;
            model.vars.load(&tensors)?;
            (exp, model)
        }
        None => {
            let exp = exp
                .ok_or_else(|| TrainError::config("encoder-retrieval: give --encoder or --config"))?
                .clone();
            let cfg = models::encoder_config(&exp, tok.vocab_size())?;
            let model = ContrastiveModel::build(
                cfg,
                exp.encoder.projection_dim,
                SeededVars::new(exp.seed),
                device,
            )?;
            (exp, model)
        }
    };
    let max_len = snippet_len(&exp, &model.config);
    let pool = section_pool(shards, split, max_len);
    retrieval(&model, tok, &exp.data, &pool, max_len, opts, device).map_err(|e| match e {
        TrainError::Data(m) => {
            TrainError::Data(format!("{} split `{split}`: {m}", shards.dir.display()))
        }
        other => other,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::SeedableRng;
    use rand::rngs::StdRng;
    use staria_models::tokenizer::TokenizerConfig;
    use staria_models::{Note, Section, Song};

    fn note(pitch: u8, start_ms: f64) -> Note {
        Note {
            pitch,
            velocity: 80,
            channel: 0,
            program: 0,
            start_tick: (start_ms * 0.96) as u64,
            end_tick: ((start_ms + 200.0) * 0.96) as u64,
            start_ms,
            end_ms: start_ms + 200.0,
        }
    }

    /// A piece `form` of 2 s sections, 8 notes each; letter `c`'s notes start at `base[c]`
    /// (repeats of a letter identical unless `vary` shifts the second occurrence).
    fn piece(tok: &Tokenizer, form: &str, base: u8, vary: i32) -> Vec<u32> {
        let mut notes = Vec::new();
        let mut sections = Vec::new();
        let mut seen = std::collections::HashMap::new();
        for (k, c) in form.chars().enumerate() {
            let t0 = k as f64 * 2000.0;
            let count = seen.entry(c).or_insert(0);
            let shift = if *count > 0 { vary } else { 0 };
            *count += 1;
            let root = i32::from(base) + 7 * (c as i32 - 'A' as i32) + shift;
            for i in 0..8 {
                notes.push(note(
                    (root + [0, 2, 4, 5, 7, 5, 4, 2][i]) as u8,
                    t0 + i as f64 * 250.0,
                ));
            }
            let label = SectionLabel::from_letter(c).unwrap();
            sections.push(Section {
                label,
                marker_text: c.to_string(),
                start_tick: (t0 * 0.96) as u64,
                end_tick: ((t0 + 2000.0) * 0.96) as u64,
                start_ms: t0,
                end_ms: t0 + 2000.0,
            });
        }
        tok.encode_piece(&Song::from_ms_notes(notes, sections, 120.0))
    }

    #[test]
    fn every_occurrence_of_a_letter_is_a_sample() {
        let tok = Tokenizer::new(TokenizerConfig::default()).unwrap();
        let p = PieceSections::of_piece(&tok, "x", &piece(&tok, "AABA", 60, 5), 64).unwrap();
        assert_eq!(p.letters.len(), 2);
        assert_eq!(p.letters[0].0, SectionLabel::A);
        assert_eq!(p.letters[0].1.len(), 3, "A occurs three times");
        assert_eq!(p.letters[1].1.len(), 1);
        assert_eq!(p.repeated_letters(), 1);
        // The repeat is the first occurrence transposed: same length, different notes; the third
        // occurrence is also transposed by the same amount.
        let a = &p.letters[0].1;
        assert_eq!(tok.pitch_shift(&a[0], 5), a[1]);
        assert_eq!(a[1], a[2]);
    }

    #[test]
    fn batches_hold_every_section_of_a_piece_and_pair_repeats() {
        let tok = Tokenizer::new(TokenizerConfig::default()).unwrap();
        let pool: Vec<PieceSections> = (0..6u8)
            .map(|i| {
                PieceSections::of_piece(
                    &tok,
                    &format!("p{i}"),
                    &piece(&tok, "AABB", 50 + 3 * i, 2),
                    64,
                )
                .unwrap()
            })
            .collect();
        let data = DataSection::default();
        let src = ViewSource {
            tok: &tok,
            data: &data,
            pieces: &pool,
            synthetic: &[],
            synthetic_fraction: 0.0,
            max_len: 64,
        };
        let b = batch_views(&src, 8, &mut StdRng::seed_from_u64(1)).unwrap();
        assert_eq!(b.items.len(), 8);
        assert_eq!(b.views.len(), 16);
        // Four pieces, each with both its letters: the same piece's other section is in the
        // batch as a negative.
        for &(_, pi, _) in &b.items {
            assert_eq!(b.items.iter().filter(|x| x.1 == pi).count(), 2);
        }
        // Every letter of these pieces repeats, so every pair spans two occurrences.
        assert_eq!(b.cross_occurrence, 8);
    }

    #[test]
    fn retrieval_scores_a_perfect_and_a_blind_encoder_apart() {
        // The bookkeeping, on an untrained tiny encoder: counts, chance levels, ranges.
        let tok = Tokenizer::new(TokenizerConfig::default()).unwrap();
        let pool: Vec<PieceSections> = (0..5u8)
            .map(|i| {
                PieceSections::of_piece(
                    &tok,
                    &format!("p{i}"),
                    &piece(&tok, "ABAB", 48 + 5 * i, 0),
                    64,
                )
                .unwrap()
            })
            .collect();
        let cfg = EncoderConfig::tiny(tok.vocab_size());
        let model = ContrastiveModel::build(cfg, 8, SeededVars::new(1), &Device::Cpu).unwrap();
        let opts = RetrievalOptions {
            batch: 5,
            augment: false,
            ..RetrievalOptions::default()
        };
        let r = retrieval(
            &model,
            &tok,
            &DataSection::default(),
            &pool,
            64,
            &opts,
            &Device::Cpu,
        )
        .unwrap();
        assert_eq!(r.pieces, 5);
        assert_eq!(r.queries, 10);
        assert_eq!(r.repeat_queries, 10);
        assert_eq!(r.identical_repeats, 10, "verbatim repeats are counted");
        assert!((r.piece_chance - 0.5).abs() < 1e-9, "{}", r.piece_chance);
        assert!((r.batch_chance - 0.1).abs() < 1e-9, "{}", r.batch_chance);
        for x in [r.piece_accuracy, r.batch_accuracy, r.latent_piece_accuracy] {
            assert!((0.0..=1.0).contains(&x));
        }
        // Found among the whole batch implies found among its own piece's sections.
        assert!(r.batch_accuracy <= r.piece_accuracy + 1e-9);
        assert!(r.latent_batch_accuracy <= r.latent_piece_accuracy + 1e-9);
        // One-letter pieces are no retrieval task.
        let single =
            vec![PieceSections::of_piece(&tok, "s", &piece(&tok, "AA", 60, 0), 64).unwrap()];
        let e = retrieval(
            &model,
            &tok,
            &DataSection::default(),
            &single,
            64,
            &opts,
            &Device::Cpu,
        )
        .unwrap_err();
        assert!(e.to_string().contains("two or more section letters"), "{e}");
    }
}
