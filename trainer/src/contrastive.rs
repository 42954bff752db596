//! `train-encoder`: contrastive pre-training of the snippet encoder (NT-Xent, as in SimCLR).
//!
//! A batch holds `B` sections (distinct pieces' snippets). Each gets two views: its snippet
//! augmented (transposition, tempo, velocity as configured) and cropped to a random contiguous
//! run of at least 60% of its notes. The encoder's `pooled` output goes through a projection head
//! (`proj.0` linear, ReLU, `proj.1` linear) and is L2-normalised; with `sim = z zᵀ / τ` over the
//! 2B views (self-similarity masked), each view's positive is its twin and the other 2B - 2
//! views are its negatives: loss = mean cross-entropy of picking the twin.

use std::collections::HashMap;

use candle_core::{D, DType, Device, Module, Tensor};
use candle_nn::Linear;
use rand::Rng;
use staria_models::encoder::{Encoder, EncoderConfig};
use staria_models::tokenizer::Tokenizer;

use crate::batch::Augment;
use crate::config::ExperimentConfig;
use crate::error::{Result, TrainError};
use crate::models::{self, TrainerState};
use crate::monitor::Monitor;
use crate::optim::{AdamW, AdamWParams, Schedule};
use crate::shards::{Shards, TRAIN, VALIDATION};
use crate::train::{RunOptions, StageSummary, open_run, step_rng};
use staria_models::params::SeededVars;

const STAGE: &str = "train-encoder";

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

    /// Normalised projections `[N, projection_dim]` of padded snippets.
    pub fn embed(&self, views: &[Vec<u32>], device: &Device) -> Result<Tensor> {
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
        let norm = z
            .sqr()?
            .sum_keepdim(D::Minus1)?
            .sqrt()?
            .clamp(1e-6, f64::INFINITY)?;
        Ok(z.broadcast_div(&norm)?)
    }
}

/// NT-Xent over `2B` normalised views where rows `i` and `i + B` are twins. Returns the loss and
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

/// Sections usable as contrastive samples: (piece index, snippet index) with a non-trivial snippet.
fn sections(shards: &Shards, split: &str) -> Vec<(usize, usize)> {
    let mut out = Vec::new();
    for (pi, p) in shards.pieces(split).iter().enumerate() {
        for (si, s) in p.snippets.iter().enumerate() {
            if s.span.len >= 6 {
                out.push((pi, si));
            }
        }
    }
    out
}

/// Where a contrastive batch's sections come from.
struct ViewSource<'a> {
    exp: &'a ExperimentConfig,
    shards: &'a Shards,
    split: &'a str,
    pool: &'a [(usize, usize)],
    max_len: usize,
}

fn batch_views(
    src: &ViewSource,
    b: usize,
    augment: bool,
    rng: &mut impl Rng,
) -> Result<Vec<Vec<u32>>> {
    let ViewSource {
        exp,
        shards,
        split,
        pool,
        max_len,
    } = *src;
    let tok = &shards.tokenizer;
    // Distinct pieces, so no two samples are the same music under another label.
    let mut chosen: Vec<(usize, usize)> = Vec::with_capacity(b);
    let mut tries = 0;
    while chosen.len() < b && tries < b * 50 {
        tries += 1;
        let c = pool[rng.random_range(0..pool.len())];
        if !chosen.iter().any(|x| x.0 == c.0) {
            chosen.push(c);
        }
    }
    if chosen.len() < 2 {
        return Err(TrainError::Data(format!(
            "need sections from at least 2 pieces in `{split}` for the contrastive loss"
        )));
    }
    let pieces = shards.pieces(split);
    let mut first = Vec::with_capacity(chosen.len());
    let mut second = Vec::with_capacity(chosen.len());
    for &(pi, si) in &chosen {
        let snip = shards.span(split, pieces[pi].snippets[si].span);
        let a1 = if augment {
            Augment::sample(&exp.data, rng)
        } else {
            Augment::NONE
        };
        let a2 = if augment {
            Augment::sample(&exp.data, rng)
        } else {
            Augment::NONE
        };
        first.push(view(tok, snip, a1, max_len, rng)?);
        second.push(view(tok, snip, a2, max_len, rng)?);
    }
    first.extend(second);
    Ok(first)
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
    let max_len = enc_cfg.max_seq_len.min(exp.data.snippet_tokens.max(8));
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
        },
    };
    let train_pool = sections(shards, TRAIN);
    if train_pool.is_empty() {
        return Err(TrainError::Data(
            "no train piece has a snippet for the encoder".into(),
        ));
    }
    let (val_split, val_pool) = match sections(shards, VALIDATION) {
        v if v.len() >= 4 => (VALIDATION, v),
        _ => (TRAIN, train_pool.clone()),
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
        exp,
        shards,
        split: TRAIN,
        pool: &train_pool,
        max_len,
    };
    let val_src = ViewSource {
        exp,
        shards,
        split: val_split,
        pool: &val_pool,
        max_len,
    };
    while state.step < stop {
        let step = state.step;
        let mut rng = step_rng(exp.seed, STAGE, step);
        let views = batch_views(&train_src, h.batch_size, true, &mut rng)?;
        let tokens: usize = views.iter().map(Vec::len).sum();
        let z = model.embed(&views, &opts.device)?;
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
            ],
        )?;
        if (h.eval_every > 0 && state.step.is_multiple_of(h.eval_every)) || state.step == h.steps {
            let (mut vl, mut va) = (0.0, 0.0);
            for k in 0..h.eval_batches {
                let mut rng = step_rng(exp.seed, "train-encoder-validation", k as u64);
                let views = batch_views(&val_src, h.batch_size, false, &mut rng)?;
                let (l, a) = nt_xent(&model.embed(&views, &opts.device)?, tau)?;
                vl += l.to_scalar::<f32>()? as f64;
                va += a;
            }
            let (vl, va) = (vl / h.eval_batches as f64, va / h.eval_batches as f64);
            state.val_loss = Some(vl);
            mon.write(
                "eval",
                state.step,
                &[("val_loss", vl), ("val_twin_accuracy", va)],
            )?;
            mon.println(&format!(
                "{STAGE} step {}: val loss {vl:.4}, twin accuracy {va:.3}",
                state.step
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
