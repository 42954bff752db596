//! `wake-sleep`: the generator and a structure recognizer teach each other.
//!
//! - Recognizer warm-up: the recognizer learns section labels on synthetic form pieces (exact
//!   labels), before the first round.
//! - Wake: the recognizer labels real pieces that have no markers (train pieces whose sections
//!   came from repetition; all train pieces if there are none, their labels ignored). The labelled
//!   piece's snippets are extracted and the generator learns to produce the real piece from them
//!   (the usual next-token loss, in its own layout).
//! - Sleep: the generator dreams pieces from the snippets of labelled train pieces and a chosen
//!   form (section tags forced by the plan, so the dream's labels are known); the recognizer
//!   learns to recover them from the dreams (tags removed) and from synthetic pieces.
//!
//! Checkpoints (generator + `recognizer/`) are written after every round; `--resume` continues
//! from the last finished round.

use std::path::Path;

use candle_core::Device;
use rand::Rng;
use rand::seq::IndexedRandom;
use staria_models::SectionLabel;
use staria_models::tokenizer::{PromptSpec, TokenKind, Tokenizer};

use crate::batch::{Augment, Example, prepare_piece, truncate_snippet};
use crate::config::ExperimentConfig;
use crate::error::{Result, TrainError, fsx};
use crate::generate::{Sampling, generate};
use crate::models::{self, TrainerState};
use crate::monitor::Monitor;
use crate::optim::{AdamW, AdamWParams, Schedule};
use crate::recognizer::{self, Recognizer, RecognizerConfig, sections_from_labels, strip_tags};
use crate::sampler::CandleLogits;
use crate::shards::{PieceMeta, SYNTHETIC, SectionOrigin, Shards, TRAIN, VALIDATION};
use crate::synth::FORMS;
use crate::train::{LmModel, RunOptions, StageSummary, open_run, step_rng};
use staria_models::params::SeededVars;

const STAGE: &str = "wake-sleep";
pub const RECOGNIZER_DIR: &str = "recognizer";

/// A recognizer example: the first `max_len` tag-free tokens of an (augmented) piece.
fn recognizer_example(
    tok: &Tokenizer,
    piece: &[u32],
    aug: Augment,
    max_len: usize,
) -> Result<(Vec<u32>, Vec<SectionLabel>)> {
    let (mut ids, mut labels) = strip_tags(tok, &aug.apply(tok, piece)?);
    ids.truncate(max_len);
    labels.truncate(max_len);
    Ok((ids, labels))
}

/// Synthetic pieces for the recognizer: every tenth is held out for validation. Falls back to
/// marker-labelled train pieces when the shards have no synthetic split.
fn labelled_pool(shards: &Shards, validation: bool) -> Vec<(&'static str, &PieceMeta)> {
    let synth = shards.pieces(SYNTHETIC);
    let (split, pieces): (&'static str, &[PieceMeta]) = if synth.is_empty() {
        (TRAIN, shards.pieces(TRAIN))
    } else {
        (SYNTHETIC, synth)
    };
    pieces
        .iter()
        .enumerate()
        .filter(|(i, p)| (i % 10 == 0) == validation && p.origin != SectionOrigin::Repetition)
        .map(|(_, p)| (split, p))
        .collect()
}

/// Crops a tag-free sequence to `max` tokens, ending before a note token so no note is split.
fn crop(tok: &Tokenizer, ids: &[u32], max: usize) -> Vec<u32> {
    if ids.len() <= max {
        return ids.to_vec();
    }
    let mut end = max;
    while end > 0
        && !matches!(
            tok.kind(ids[end]),
            TokenKind::Note { .. } | TokenKind::Drum { .. } | TokenKind::TimeShift
        )
    {
        end -= 1;
    }
    ids[..end.max(1)].to_vec()
}

/// Wake: a generator training sequence from a real piece labelled by the recognizer.
fn wake_example(
    exp: &ExperimentConfig,
    shards: &Shards,
    rec: &Recognizer,
    split: &str,
    piece: &PieceMeta,
    device: &Device,
    rng: &mut impl Rng,
) -> Result<Option<Example>> {
    let tok = &shards.tokenizer;
    let (ids, _) = strip_tags(tok, shards.piece_tokens(split, piece));
    let ids = crop(tok, &ids, rec.config.max_len);
    let labels = rec.label(&ids, device)?;
    let Some(sections) = sections_from_labels(tok, &ids, &labels) else {
        return Ok(None);
    };
    let mut song = tok.decode(&ids);
    song.sections = sections;
    let form: String = song.sections.iter().map(|s| s.label.letter()).collect();
    let snippets: Vec<(SectionLabel, Vec<u32>)> = SectionLabel::ALL
        .iter()
        .filter_map(|&l| {
            tok.extract_snippet(&song, l, tok.config().snippet_tokens)
                .map(|t| (l, t))
        })
        .collect();
    let prepared = prepare_piece(
        tok,
        &tok.encode_piece(&song),
        &snippets,
        piece.style.as_deref(),
        &form,
        // A decoded piece's tempo is the tokenizer's, not the music's: no grid.
        None,
        Augment::sample(&exp.data, rng),
        exp.data.snippet_tokens,
    )?;
    Ok(Some(prepared.random_example(tok, exp.data.seq_len, rng)?))
}

/// A dream: the generator plays a chosen form from a labelled piece's snippets. Returns the
/// dream body (tags included) and the planned form.
fn dream(
    exp: &ExperimentConfig,
    shards: &Shards,
    lm: &mut LmModel,
    rng: &mut impl Rng,
) -> Result<Option<(Vec<u32>, String)>> {
    let tok = &shards.tokenizer;
    let ws = &exp.wake_sleep;
    let candidates: Vec<(&str, &PieceMeta)> = [TRAIN, SYNTHETIC]
        .into_iter()
        .flat_map(|s| shards.pieces(s).iter().map(move |p| (s, p)))
        .filter(|(_, p)| {
            p.origin != SectionOrigin::Repetition
                && p.snippets.iter().filter(|s| s.span.len > 0).count() >= 2
        })
        .collect();
    let Some(&(split, piece)) = candidates.choose(rng) else {
        return Ok(None);
    };
    let snippets: Vec<(SectionLabel, Vec<u32>)> = shards
        .snippets(split, piece)
        .into_iter()
        .map(|(l, s)| (l, truncate_snippet(tok, &s, exp.data.snippet_tokens)))
        .filter(|(_, s)| !s.is_empty())
        .collect();
    let have: Vec<SectionLabel> = snippets.iter().map(|s| s.0).collect();
    let forms: Vec<&str> = FORMS
        .iter()
        .copied()
        .filter(|f| {
            f.chars()
                .all(|c| SectionLabel::from_letter(c).is_some_and(|l| have.contains(&l)))
        })
        .collect();
    let Some(&form) = forms.choose(rng) else {
        return Ok(None);
    };
    let used: Vec<(SectionLabel, Vec<u32>)> = snippets
        .into_iter()
        .filter(|(l, _)| form.contains(l.letter()))
        .collect();
    let plan: Vec<(SectionLabel, f64)> = form
        .chars()
        .filter_map(SectionLabel::from_letter)
        .map(|l| {
            let notes = used
                .iter()
                .find(|s| s.0 == l)
                .map(|s| tok.decode_snippet(&s.1))
                .unwrap_or_default();
            let len = notes.iter().map(|n| n.end_ms).fold(0.0, f64::max);
            (l, len.clamp(2_000.0, 8_000.0))
        })
        .collect();
    let spec = PromptSpec {
        style: piece.style.clone().filter(|s| tok.style_id(s).is_some()),
        form: tok.form_id(form).map(|_| form.to_string()),
        snippets: used,
    };
    let prompt = tok.build_prompt(&spec)?;
    let sampling = Sampling {
        temperature: ws.dream_temperature,
        min_p: ws.dream_min_p,
        max_tokens: ws.dream_tokens,
        follow_bias: 0.0,
    };
    // The network may have been rebuilt since the last dream; its window clock with it.
    lm.model.set_tokenizer(tok);
    let g = generate(
        &mut CandleLogits::new(&mut lm.model),
        tok,
        &prompt,
        &plan,
        &sampling,
        rng,
    )?;
    let started: String = form.chars().take(g.sections_started).collect();
    Ok(Some((g.tokens, started)))
}

fn recognizer_config(exp: &ExperimentConfig, vocab: usize) -> RecognizerConfig {
    let ws = &exp.wake_sleep;
    RecognizerConfig {
        vocab_size: vocab,
        dim: ws.recognizer_dim,
        n_layers: ws.recognizer_layers,
        n_heads: ws.recognizer_heads,
        max_len: exp.data.seq_len,
    }
}

/// Token accuracy and form accuracy of the recognizer on held-out labelled pieces: the
/// synthetic pieces it never trains on (every tenth) and, separately, the real validation
/// pieces with section markers (whether its labels transfer to real music). `(NaN, NaN)` for a
/// set without pieces.
fn recognizer_validation(
    shards: &Shards,
    rec: &Recognizer,
    device: &Device,
    n: usize,
) -> Result<((f64, f64), (f64, f64))> {
    let real: Vec<(&'static str, &PieceMeta)> = shards
        .pieces(VALIDATION)
        .iter()
        .filter(|p| p.origin == SectionOrigin::Markers)
        .map(|p| (VALIDATION, p))
        .collect();
    Ok((
        recognizer_accuracy(shards, rec, device, labelled_pool(shards, true), n)?,
        recognizer_accuracy(shards, rec, device, real, n)?,
    ))
}

fn recognizer_accuracy(
    shards: &Shards,
    rec: &Recognizer,
    device: &Device,
    pool: Vec<(&'static str, &PieceMeta)>,
    n: usize,
) -> Result<(f64, f64)> {
    let tok = &shards.tokenizer;
    let (mut hit, mut total, mut forms, mut count) = (0.0f64, 0.0f64, 0.0f64, 0.0f64);
    for (split, p) in pool.into_iter().take(n) {
        let (ids, labels) = recognizer_example(
            tok,
            shards.piece_tokens(split, p),
            Augment::NONE,
            rec.config.max_len,
        )?;
        if ids.is_empty() {
            continue;
        }
        let got = rec.label(&ids, device)?;
        hit += got.iter().zip(&labels).filter(|(a, b)| a == b).count() as f64;
        total += ids.len() as f64;
        let want = sections_from_labels(tok, &ids, &labels)
            .map(|s| s.iter().map(|x| x.label.letter()).collect::<String>());
        let have = sections_from_labels(tok, &ids, &got)
            .map(|s| s.iter().map(|x| x.label.letter()).collect::<String>());
        forms += f64::from(u8::from(want.is_some() && want == have));
        count += 1.0;
    }
    if count == 0.0 {
        return Ok((f64::NAN, f64::NAN));
    }
    Ok((hit / total.max(1.0), forms / count))
}

/// `wake-sleep`, continuing the generator in `model_dir` (a decoder-only or Staria checkpoint).
pub fn wake_sleep(
    exp: &ExperimentConfig,
    shards: &Shards,
    opts: &RunOptions,
    model_dir: &Path,
) -> Result<StageSummary> {
    let ws = &exp.wake_sleep;
    let h = ws.hyper();
    let device = &opts.device;
    let tok = &shards.tokenizer;
    let saved = open_run(opts, STAGE)?;
    let from = if saved.is_some() {
        opts.out.as_path()
    } else {
        model_dir
    };
    let (ccfg, _, tensors) = models::load_model_tensors(from, device)?;
    models::check_tokenizer(from, &ccfg.tokenizer_hash, &tok.hash())?;
    if exp.data.seq_len > ccfg.model.max_seq_len() {
        return Err(TrainError::config(format!(
            "data.seq_len = {} exceeds the generator's max_seq_len = {}",
            exp.data.seq_len,
            ccfg.model.max_seq_len()
        )));
    }
    let vars = SeededVars::new(exp.seed);
    vars.load(&tensors)?;
    let mut lm = LmModel::build(ccfg.model.clone(), vars, tok, device)?;
    let mut opt_g = AdamW::new(
        lm.vars.named(),
        AdamWParams {
            lr: h.lr,
            weight_decay: h.weight_decay,
            ..AdamWParams::default()
        },
    )?;

    let rcfg = recognizer_config(exp, tok.vocab_size());
    let rvars = SeededVars::new(exp.seed ^ 0x7265_636f_676e);
    let rec = Recognizer::new(&rcfg, rvars.builder(device))?;
    let mut opt_r = AdamW::new(
        rvars.named(),
        AdamWParams {
            lr: ws.recognizer_lr,
            weight_decay: 0.01,
            ..AdamWParams::default()
        },
    )?;
    let rec_dir = opts.out.join(RECOGNIZER_DIR);

    let total_rounds = ws.rounds;
    let mut state = match saved {
        Some(s) => {
            opt_g.load(&opts.out.join(models::OPTIMIZER_FILE), s.step)?;
            let w = rec_dir.join("model.safetensors");
            let t = candle_core::safetensors::load(&w, device)
                .map_err(|e| TrainError::file(&w, e.to_string()))?;
            rvars.load(&t)?;
            let rsteps = s
                .extra
                .get("recognizer_steps")
                .and_then(|v| v.as_u64())
                .unwrap_or(0);
            opt_r.load(&rec_dir.join(models::OPTIMIZER_FILE), rsteps)?;
            s
        }
        None => TrainerState {
            stage: STAGE.into(),
            step: 0,
            total_steps: total_rounds * ws.wake_steps,
            tokens_seen: 0,
            config: exp.clone(),
            data: shards.dir.display().to_string(),
            init: vec![model_dir.display().to_string()],
            extra: serde_json::json!({"round": 0, "recognizer_steps": 0}),
            val_loss: None,
            prompt_velocity: ccfg.prompt_velocity,
        },
    };
    let started = std::time::Instant::now();
    let round_of = |s: &TrainerState| s.extra.get("round").and_then(|v| v.as_u64()).unwrap_or(0);
    let mut rsteps = state
        .extra
        .get("recognizer_steps")
        .and_then(|v| v.as_u64())
        .unwrap_or(0);
    let g_sched = Schedule {
        peak: h.lr,
        warmup: h.warmup_steps,
        total: total_rounds * ws.wake_steps,
        min_ratio: h.min_lr_ratio,
    };
    let r_total = ws.recognizer_warmup_steps + total_rounds * ws.sleep_steps;
    let r_sched = Schedule {
        peak: ws.recognizer_lr,
        warmup: (r_total / 10).max(1),
        total: r_total,
        min_ratio: 0.1,
    };
    let mut mon = Monitor::new(
        STAGE,
        total_rounds,
        round_of(&state),
        Some(&models::metrics_path(&opts.out)),
        opts.progress,
    )?;

    let synth_pool = labelled_pool(shards, false);
    if synth_pool.is_empty() {
        return Err(TrainError::Data(
            "no labelled pieces (synthetic or with markers) for the recognizer".into(),
        ));
    }
    let unannotated: Vec<&PieceMeta> = {
        let u: Vec<&PieceMeta> = shards
            .pieces(TRAIN)
            .iter()
            .filter(|p| p.origin == SectionOrigin::Repetition)
            .collect();
        if u.is_empty() {
            shards.pieces(TRAIN).iter().collect()
        } else {
            u
        }
    };
    if unannotated.is_empty() {
        return Err(TrainError::Data(
            "no train pieces for the wake phase".into(),
        ));
    }

    let recognizer_step = |seqs: &[(Vec<u32>, Vec<SectionLabel>)],
                           opt_r: &mut AdamW,
                           rsteps: &mut u64|
     -> Result<(f64, f64)> {
        let (l, acc) = recognizer::loss(&rec, seqs, device)?;
        let lv = l.to_scalar::<f32>()? as f64;
        if !lv.is_finite() {
            return Err(TrainError::Diverged(format!("recognizer loss is {lv}")));
        }
        opt_r.set_lr(r_sched.lr(*rsteps));
        opt_r.step(&l.backward()?, h.clip_norm)?;
        *rsteps += 1;
        Ok((lv, acc))
    };
    let synth_batch = |rng: &mut rand::rngs::StdRng| -> Result<Vec<(Vec<u32>, Vec<SectionLabel>)>> {
        (0..h.batch_size)
            .map(|_| {
                let &(split, p) = synth_pool.choose(rng).expect("non-empty");
                recognizer_example(
                    tok,
                    shards.piece_tokens(split, p),
                    Augment::sample(&exp.data, rng),
                    rcfg.max_len,
                )
            })
            .collect()
    };

    // Warm-up (skipped when resuming after it).
    let warming = rsteps < ws.recognizer_warmup_steps;
    while rsteps < ws.recognizer_warmup_steps {
        let mut rng = step_rng(exp.seed, "wake-sleep-warmup", rsteps);
        let seqs = synth_batch(&mut rng)?;
        let (l, acc) = recognizer_step(&seqs, &mut opt_r, &mut rsteps)?;
        mon.write(
            "recognizer_warmup",
            rsteps,
            &[("recognizer_loss", l), ("recognizer_accuracy", acc)],
        )?;
    }

    if warming {
        // What the recognizer reads before any wake or sleep phase: the "before" of its
        // accuracy on real pieces.
        let ((acc, form), (real_acc, real_form)) =
            recognizer_validation(shards, &rec, device, h.eval_batches * h.batch_size)?;
        mon.write(
            "recognizer_warmup_eval",
            rsteps,
            &[
                ("recognizer_val_accuracy", acc),
                ("recognizer_val_form_accuracy", form),
                ("recognizer_real_accuracy", real_acc),
                ("recognizer_real_form_accuracy", real_form),
            ],
        )?;
        mon.println(&format!(
            "wake-sleep recognizer after warm-up: accuracy {acc:.3}, form accuracy {form:.3} (held-out synthetic); on real validation pieces with markers {real_acc:.3}, form {real_form:.3}"
        ));
    }
    let stop = opts
        .max_steps
        .map_or(total_rounds, |m| (round_of(&state) + m).min(total_rounds));
    let (mut first, mut last) = (None, None);
    while round_of(&state) < stop {
        let round = round_of(&state);
        // Wake.
        let mut wake_loss = 0.0;
        for k in 0..ws.wake_steps {
            let step = round * ws.wake_steps + k;
            let mut rng = step_rng(exp.seed, "wake", step);
            let mut examples = Vec::with_capacity(h.batch_size);
            let mut tries = 0;
            while examples.len() < h.batch_size && tries < h.batch_size * 10 {
                tries += 1;
                let p = unannotated.choose(&mut rng).expect("non-empty");
                if let Some(ex) = wake_example(exp, shards, &rec, TRAIN, p, device, &mut rng)? {
                    examples.push(ex);
                }
            }
            if examples.is_empty() {
                return Err(TrainError::Data(
                    "the recognizer found no notes in any drawn piece".into(),
                ));
            }
            let lr = g_sched.lr(step);
            opt_g.set_lr(lr);
            let (loss, tokens, norm) = lm.train_step(&mut opt_g, &examples, h.clip_norm, device)?;
            first.get_or_insert(loss);
            last = Some(loss);
            wake_loss += loss / ws.wake_steps.max(1) as f64;
            state.step += 1;
            state.tokens_seen += tokens as u64;
            mon.write(
                "wake",
                state.step,
                &[("loss", loss), ("lr", lr), ("grad_norm", norm)],
            )?;
        }
        // Sleep: dream, then teach the recognizer on dreams and synthetic pieces.
        let mut rng = step_rng(exp.seed, "dream", round);
        let mut dreams = Vec::new();
        let mut dream_form_hits = 0.0;
        for _ in 0..ws.dreams_per_round {
            if let Some((tokens, form)) = dream(exp, shards, &mut lm, &mut rng)? {
                let (ids, labels) = strip_tags(tok, &tokens);
                let ids = ids.into_iter().take(rcfg.max_len).collect::<Vec<_>>();
                let labels = labels.into_iter().take(ids.len()).collect::<Vec<_>>();
                if ids.is_empty() {
                    continue;
                }
                // Before learning from it: can the recognizer already read this dream's form?
                let got = rec.label(&ids, device)?;
                let have = sections_from_labels(tok, &ids, &got)
                    .map(|s| s.iter().map(|x| x.label.letter()).collect::<String>());
                dream_form_hits += f64::from(u8::from(have.as_deref() == Some(form.as_str())));
                dreams.push((ids, labels));
            }
        }
        let n_dreams = dreams.len();
        let mut sleep_loss = 0.0;
        for k in 0..ws.sleep_steps {
            let mut rng = step_rng(exp.seed, "sleep", round * ws.sleep_steps + k);
            let mut seqs = synth_batch(&mut rng)?;
            // Half the batch from dreams when there are any.
            for s in seqs.iter_mut().take(h.batch_size / 2) {
                if let Some(d) = dreams.choose(&mut rng) {
                    *s = d.clone();
                }
            }
            let (l, _) = recognizer_step(&seqs, &mut opt_r, &mut rsteps)?;
            sleep_loss += l / ws.sleep_steps.max(1) as f64;
        }
        let ((val_acc, val_form), (real_acc, real_form)) =
            recognizer_validation(shards, &rec, device, h.eval_batches * h.batch_size)?;
        state.extra = serde_json::json!({"round": round + 1, "recognizer_steps": rsteps});
        mon.step(
            round + 1,
            0,
            &[
                ("wake_loss", wake_loss),
                ("sleep_loss", sleep_loss),
                ("recognizer_val_accuracy", val_acc),
                ("recognizer_val_form_accuracy", val_form),
                ("recognizer_real_accuracy", real_acc),
                ("recognizer_real_form_accuracy", real_form),
                (
                    "dream_form_accuracy",
                    dream_form_hits / (n_dreams.max(1)) as f64,
                ),
                ("dreams", n_dreams as f64),
            ],
        )?;
        mon.println(&format!(
            "wake-sleep round {}: wake loss {wake_loss:.4}, sleep loss {sleep_loss:.4}, recognizer accuracy {val_acc:.3}, form accuracy {val_form:.3} (held-out synthetic); on real validation pieces with markers {real_acc:.3}, form {real_form:.3}",
            round + 1
        ));
        // Checkpoint every round.
        models::save_model(&opts.out, &lm.config, tok, &lm.vars, Some(&opt_g), &state)?;
        fsx::create_dir_all(&rec_dir)?;
        models::save_safetensors_atomic(
            &rec_dir.join("model.safetensors"),
            &rvars.tensors(|_| true),
        )?;
        opt_r.save(&rec_dir.join(models::OPTIMIZER_FILE))?;
        fsx::write_atomic(
            &rec_dir.join("config.json"),
            serde_json::to_string_pretty(&rcfg).expect("plain data"),
        )?;
    }
    mon.finish();
    Ok(StageSummary {
        steps: state.step,
        first_loss: first,
        last_loss: last,
        val_loss: None,
        tokens_per_s: state.tokens_seen as f64 / started.elapsed().as_secs_f64().max(1e-9),
        out: opts.out.clone(),
        fast: false,
    })
}
