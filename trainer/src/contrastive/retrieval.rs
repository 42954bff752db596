//! Retrieval: how well an encoder finds a section's other occurrence among the pool's snippets
//! ([`retrieval`], in memory; [`encoder_retrieval`], from a checkpoint or the untrained encoder).

use std::path::Path;

use candle_core::{Device, Tensor};
use serde::Serialize;
use staria_models::tokenizer::Tokenizer;

use super::{ContrastiveModel, PieceSections, section_pool, snippet_len, view};
use crate::batch::Augment;
use crate::config::{DataSection, ExperimentConfig};
use crate::error::{Result, TrainError};
use crate::models;
use crate::shards::Shards;
use crate::train::step_rng;
use staria_models::params::SeededVars;

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
