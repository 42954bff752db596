//! The shared training loop ([`run_lm`]: batches, steps, logging, validation, checkpoints,
//! resuming) and the language-model stages on it: `train-decoder` ([`train_decoder`],
//! [`train_decoder_from`]) and `train-staria` ([`train_staria`], stages A, B, C).

use std::path::Path;

use staria_models::model::{ModelConfig, ModelKind};

use super::{
    LmModel, PiecePool, RunOptions, StageSummary, adamw, open_run, schedule, step_rng,
    swapped_snippets, training_example, validation_examples,
};
use crate::batch::Layout;
use crate::config::{ExperimentConfig, Hyper};
use crate::error::{Result, TrainError};
use crate::models::{self, InitVocabulary, TrainerState};
use crate::monitor::Monitor;
use crate::optim::AdamW;
use crate::shards::Shards;
use staria_models::params::SeededVars;

/// The shared loop: draws batches, steps, logs, validates and checkpoints. `before_step(step,
/// opt)` lets staged training change the trainable set and LR multipliers.
#[allow(clippy::too_many_arguments)]
pub fn run_lm(
    stage: &str,
    exp: &ExperimentConfig,
    shards: &Shards,
    opts: &RunOptions,
    lm: &mut LmModel,
    opt: &mut AdamW,
    hyper: &Hyper,
    total_steps: u64,
    mut state: TrainerState,
    mut before_step: impl FnMut(u64, &mut AdamW, &mut LmModel) -> Result<()>,
) -> Result<StageSummary> {
    let device = &opts.device;
    let sched = schedule(hyper, total_steps);
    let pool = PiecePool::new(shards, &exp.data);
    let val = validation_examples(exp, shards, hyper.eval_batches * hyper.batch_size)?;
    // For a Staria model: the validation examples whose next example has snippets of the same
    // letters, with their own and with that example's snippets (the decoder's tokens are the
    // same: tags only), so the log says how much it reads its snippets' music.
    let swapped = match lm.layout {
        Layout::Staria => swapped_snippets(&val),
        Layout::Inline => None,
    };
    let mut mon = Monitor::new(
        stage,
        total_steps,
        state.step,
        Some(&models::metrics_path(&opts.out)),
        opts.progress,
    )?;
    let stop = opts
        .max_steps
        .map_or(total_steps, |m| (state.step + m).min(total_steps));
    let (mut first, mut last) = (None, None);
    while state.step < stop {
        let step = state.step;
        before_step(step, opt, lm)?;
        let mut rng = step_rng(exp.seed, stage, step);
        let mut examples = Vec::with_capacity(hyper.batch_size);
        for _ in 0..hyper.batch_size {
            let (split, piece) = pool.draw(&mut rng)?;
            examples.push(training_example(exp, shards, split, piece, &mut rng)?);
        }
        let lr = sched.lr(step);
        opt.set_lr(lr);
        let (loss, tokens, norm) = lm.train_step(opt, &examples, hyper.clip_norm, device)?;
        first.get_or_insert(loss);
        last = Some(loss);
        state.step += 1;
        state.tokens_seen += tokens as u64;
        mon.step(
            state.step,
            tokens as u64,
            &[("loss", loss), ("lr", lr), ("grad_norm", norm)],
        )?;
        let at_end = state.step == total_steps;
        if (hyper.eval_every > 0 && state.step.is_multiple_of(hyper.eval_every)) || at_end {
            let v = lm.eval_loss(&val, hyper.batch_size, device)?;
            state.val_loss = Some(v);
            let mut row = vec![
                ("val_loss", v),
                ("val_bits_per_token", v / std::f64::consts::LN_2),
            ];
            let mut content = String::new();
            if let Some((own, theirs)) = &swapped {
                let o = lm.eval_loss(own, hyper.batch_size, device)?;
                let t = lm.eval_loss(theirs, hyper.batch_size, device)?;
                let bits = (t - o) / std::f64::consts::LN_2;
                row.push(("val_snippet_content_bits", bits));
                content = format!(
                    "; snippets' music worth {bits:.4} bits/token on {} pieces",
                    own.len()
                );
            }
            mon.write("eval", state.step, &row)?;
            mon.println(&format!(
                "{stage} step {}: val loss {v:.4} nats/token{content}",
                state.step
            ));
        }
        if (hyper.checkpoint_every > 0 && state.step.is_multiple_of(hyper.checkpoint_every))
            || state.step == stop
        {
            // The next step's trainable set is saved with the state it belongs to.
            if state.step < total_steps {
                before_step(state.step, opt, lm)?;
            }
            lm.sync(opt)?;
            models::save_model(
                &opts.out,
                &lm.config,
                &shards.tokenizer,
                &lm.vars,
                Some(opt),
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
        fast: lm.fast.is_some(),
    })
}

fn new_state(
    stage: &str,
    exp: &ExperimentConfig,
    shards: &Shards,
    total: u64,
    init: Vec<String>,
    prompt_velocity: Option<u8>,
) -> TrainerState {
    TrainerState {
        stage: stage.into(),
        step: 0,
        total_steps: total,
        tokens_seen: 0,
        config: exp.clone(),
        data: shards.dir.display().to_string(),
        init,
        extra: serde_json::Value::Null,
        val_loss: None,
        prompt_velocity,
    }
}

/// Restores weights and optimizer state saved in `opts.out`.
fn restore(opts: &RunOptions, lm: &LmModel, opt: &mut AdamW, state: &TrainerState) -> Result<()> {
    let (_, _, tensors) = models::load_model_tensors(&opts.out, &opts.device)?;
    lm.vars.load(&tensors)?;
    opt.load(&opts.out.join(models::OPTIMIZER_FILE), state.step)
}

/// `train-decoder`: the decoder-only baseline from scratch.
pub fn train_decoder(
    exp: &ExperimentConfig,
    shards: &Shards,
    opts: &RunOptions,
) -> Result<StageSummary> {
    train_decoder_from(exp, shards, opts, None)
}

/// `train-decoder`, starting from the weights of the decoder-only checkpoint `init` when given
/// (fine-tuning, e.g. the shipped model on your own MIDI): same size and tokenizer required (the
/// run may add the window-position input, `window_bins`, and the beat-grid head, `grid_bins`,
/// switch the tokenizer's layout to section windows, and add instruments: see
/// `models::init_vocabulary`); the optimizer and schedule start fresh.
pub fn train_decoder_from(
    exp: &ExperimentConfig,
    shards: &Shards,
    opts: &RunOptions,
    init: Option<&Path>,
) -> Result<StageSummary> {
    const STAGE: &str = "train-decoder";
    let h = exp.decoder.hyper();
    let saved = open_run(opts, STAGE)?;
    let cfg = models::model_config(exp, ModelKind::Decoder, shards.tokenizer.vocab_size())?;
    let vars = SeededVars::new(exp.seed);
    // From scratch the data says at which velocity snippets are followed; a fine-tune keeps
    // its starting checkpoint's.
    let mut init_prompt_velocity = shards.snippet_velocity();
    if let (Some(dir), None) = (init, &saved) {
        let (icfg, _, mut tensors) = models::load_model_tensors(dir, &opts.device)?;
        init_prompt_velocity = icfg.prompt_velocity;
        let vocabulary = models::init_vocabulary(dir, &icfg.tokenizer_hash, &shards.tokenizer)?;
        if let InitVocabulary::Grown(rows) = &vocabulary {
            models::grow_vocabulary(&mut tensors, rows)?;
        }
        // A checkpoint without the window-position input or the beat-grid head may start a
        // run that adds them: the new tables start at zero, so the model starts out computing
        // what the checkpoint did.
        let mut as_checkpoint = cfg.clone();
        if let (ModelConfig::Decoder(d), ModelConfig::Decoder(i)) =
            (&mut as_checkpoint, &icfg.model)
        {
            if i.window_bins == 0 {
                d.window_bins = 0;
            }
            if i.grid_bins == 0 {
                d.grid_bins = 0;
            }
            if matches!(vocabulary, InitVocabulary::Grown(_)) {
                d.vocab_size = i.vocab_size;
            }
        }
        if icfg.kind() != ModelKind::Decoder || icfg.model != as_checkpoint {
            return Err(TrainError::file(
                dir,
                format!(
                    "is not a decoder-only checkpoint of this experiment's size (it is a {} with {:?})",
                    icfg.kind(),
                    icfg.model.decoder()
                ),
            ));
        }
        vars.load(&tensors)?;
    }
    let mut lm = LmModel::build(cfg, vars, &shards.tokenizer, &opts.device)?;
    let mut opt = AdamW::new(lm.vars.named(), adamw(&h))?;
    let state = match saved {
        Some(s) => {
            restore(opts, &lm, &mut opt, &s)?;
            s
        }
        None => {
            let init = init.map(|d| d.display().to_string()).into_iter().collect();
            new_state(STAGE, exp, shards, h.steps, init, init_prompt_velocity)
        }
    };
    if opts.backend.use_fast(&opts.device)? {
        lm.enable_fast(&opt, h.batch_size, exp.data.seq_len)?;
    }
    run_lm(
        STAGE,
        exp,
        shards,
        opts,
        &mut lm,
        &mut opt,
        &h,
        h.steps,
        state,
        |_, _, _| Ok(()),
    )
}

/// Which Staria parameters train at a step (see [`train_staria`]).
pub fn staria_trainable(exp: &ExperimentConfig, n_layers: usize, step: u64, name: &str) -> bool {
    let s = &exp.staria;
    let new = name.starts_with("xattn.") || name.starts_with("section_emb.");
    if step < s.stage_a_steps || new {
        return new;
    }
    if step >= s.stage_a_steps + s.stage_b_steps {
        return true;
    }
    // Stage B: the head and final norm at once, then decoder layers from the top down, the
    // number unfrozen growing linearly to all of them by the end of the stage.
    if name.starts_with("encoder.") {
        return false;
    }
    if name.starts_with("lm_head.") || name == "norm.weight" {
        return true;
    }
    let done = (step - s.stage_a_steps + 1) as f64 / s.stage_b_steps.max(1) as f64;
    let unfrozen = ((done * n_layers as f64).ceil() as usize).clamp(1, n_layers);
    match name
        .strip_prefix("layers.")
        .and_then(|r| r.split('.').next())
        .and_then(|i| i.parse::<usize>().ok())
    {
        Some(i) => i >= n_layers - unfrozen,
        None => false, // token embedding: stage C
    }
}

/// `train-staria`: decoder trunk from a decoder-only checkpoint, snippet encoder from an encoder
/// checkpoint, fresh gated cross-attention. Stage A trains only the cross-attention sites and
/// section embedding (trunk and encoder frozen); stage B also unfreezes the decoder progressively
/// from the top at `pretrained_lr_scale` times the LR; stage C trains everything, pretrained
/// weights still at the lower LR. One warmup + cosine schedule spans A+B+C. The gates of the
/// cross-attention sites train at `gate_lr_scale` times the LR throughout. On the CPU the
/// decoder and the sites train on the fast path (`fast_train::staria`, per `opts.backend`),
/// the encoder on candle.
pub fn train_staria(
    exp: &ExperimentConfig,
    shards: &Shards,
    opts: &RunOptions,
    decoder_dir: &Path,
    encoder_dir: &Path,
) -> Result<StageSummary> {
    const STAGE: &str = "train-staria";
    let h = exp.staria.hyper();
    let total = exp.staria.stage_a_steps + exp.staria.stage_b_steps + exp.staria.stage_c_steps;
    let saved = open_run(opts, STAGE)?;
    let tok = &shards.tokenizer;
    let cfg = models::model_config(exp, ModelKind::Staria, tok.vocab_size())?;
    let ModelConfig::Staria(scfg) = &cfg else {
        unreachable!("asked for a Staria config")
    };
    let vars = SeededVars::new(exp.seed);
    let init = vec![
        decoder_dir.display().to_string(),
        encoder_dir.display().to_string(),
    ];
    let mut trunk_prompt_velocity = None;
    if saved.is_none() {
        let (dcfg, _, dec) = models::load_model_tensors(decoder_dir, &opts.device)?;
        trunk_prompt_velocity = dcfg.prompt_velocity;
        models::check_tokenizer(decoder_dir, &dcfg.tokenizer_hash, &tok.hash())?;
        if dcfg.kind() != ModelKind::Decoder || dcfg.model.decoder() != &scfg.decoder {
            return Err(TrainError::file(
                decoder_dir,
                format!(
                    "is not a decoder-only checkpoint of this experiment's decoder size (it is a {} with {:?})",
                    dcfg.kind(),
                    dcfg.model.decoder()
                ),
            ));
        }
        let (ecfg, enc) = models::load_encoder(encoder_dir, &opts.device)?;
        models::check_tokenizer(encoder_dir, &ecfg.tokenizer_hash, &tok.hash())?;
        if ecfg.encoder != scfg.encoder {
            return Err(TrainError::file(
                encoder_dir,
                "encoder size differs from this experiment's Staria encoder",
            ));
        }
        vars.load(&dec)?;
        // The projection head only served the contrastive loss.
        let enc: std::collections::HashMap<_, _> = enc
            .into_iter()
            .filter(|(k, _)| k.starts_with("encoder."))
            .collect();
        vars.load(&enc)?;
    }
    let mut lm = LmModel::build(cfg.clone(), vars, tok, &opts.device)?;
    let n_layers = scfg.decoder.n_layers;
    let trainable =
        |lm: &LmModel, step: u64| lm.vars.select(|n| staria_trainable(exp, n_layers, step, n));
    let is_new = |n: &str| n.starts_with("xattn.") || n.starts_with("section_emb.");
    let is_gate = |n: &str| n.starts_with("xattn.") && n.ends_with("_gate");
    let scale = exp.staria.pretrained_lr_scale;
    let gate_scale = exp.staria.gate_lr_scale;
    let mut opt = AdamW::new(Vec::new(), adamw(&h))?;
    let state = match saved {
        Some(s) => {
            let (_, _, tensors) = models::load_model_tensors(&opts.out, &opts.device)?;
            lm.vars.load(&tensors)?;
            opt.add(trainable(&lm, s.step), 1.0)?;
            opt.set_lr_scale(|n| !is_new(n), scale);
            opt.set_lr_scale(is_gate, gate_scale);
            opt.load(&opts.out.join(models::OPTIMIZER_FILE), s.step)?;
            s
        }
        None => new_state(STAGE, exp, shards, total, init, trunk_prompt_velocity),
    };
    // The trainable set in force; when it grows the network is rebuilt with the rest frozen
    // (detached), so frozen weights cost no gradient work. On the fast path the trainer is
    // rebuilt too, from the weights and optimizer state it hands back first.
    let mut current: Option<usize> = None;
    let device = opts.device.clone();
    let fast = opts.backend.use_fast(&opts.device)?;
    run_lm(
        STAGE,
        exp,
        shards,
        opts,
        &mut lm,
        &mut opt,
        &h,
        total,
        state,
        |step, opt, lm| {
            let vars = trainable(lm, step);
            if current == Some(vars.len()) {
                return Ok(());
            }
            current = Some(vars.len());
            lm.sync(opt)?;
            let train: std::collections::HashSet<&str> =
                vars.iter().map(|(n, _)| n.as_str()).collect();
            let frozen = lm
                .vars
                .named()
                .into_iter()
                .map(|(n, _)| n)
                .filter(|n| !train.contains(n.as_str()))
                .collect();
            lm.vars.set_frozen(frozen);
            lm.rebuild(&device)?;
            opt.add(vars, 1.0)?;
            opt.set_lr_scale(|n| !is_new(n), scale);
            opt.set_lr_scale(is_gate, gate_scale);
            if fast {
                lm.enable_fast(opt, h.batch_size, exp.data.seq_len)?;
            }
            Ok(())
        },
    )
}
