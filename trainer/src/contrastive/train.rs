//! [`train_encoder`]: the `train-encoder` stage, contrastive training of the snippet encoder with
//! its validation loss, twin accuracy and retrieval figures.

use std::collections::HashMap;

use candle_core::Tensor;

use super::{
    ContrastiveModel, MIN_SNIPPET_TOKENS, RetrievalOptions, STAGE, ViewSource, batch_views,
    nt_xent, retrieval, section_pool, snippet_len,
};
use crate::config::ExperimentConfig;
use crate::error::{Result, TrainError};
use crate::models::{self, TrainerState};
use crate::monitor::Monitor;
use crate::optim::{AdamW, AdamWParams, Schedule};
use crate::shards::{SYNTHETIC, Shards, TRAIN, VALIDATION};
use crate::train::{RunOptions, StageSummary, open_run, step_rng};
use staria_models::params::SeededVars;

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
        fast: false,
    })
}
