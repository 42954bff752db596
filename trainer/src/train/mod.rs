//! The language-model stages: `train-decoder` (decoder-only baseline) and `train-staria`
//! (stages A, B, C), and the pieces they share with wake-sleep: data sampling, the train step,
//! validation loss, checkpointing and resuming.
//!
//! Determinism: every random choice of step `k` (pieces, augmentation, windows) comes from a
//! generator seeded by `(seed, stage, k)`, and initial weights from `(seed, variable name)`, so a
//! run is reproducible and a resumed run continues exactly where the saved one would have.
//!
//! Files: this one holds the run options, the data sampling, [`LmModel`] (the train step and
//! validation loss) and opening a run; `stages.rs` the shared loop [`run_lm`] and the stages
//! built on it ([`train_decoder`], [`train_staria`]).

use std::path::PathBuf;

use candle_core::Device;
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use sha2::{Digest, Sha256};
use staria_models::Tokenizer;
use staria_models::model::{AnyModel, ModelConfig, ModelKind};

use crate::batch::{Augment, Example, Layout, collate, masked_nll, prepare_piece};
use crate::config::{DataSection, ExperimentConfig, Hyper};
use crate::error::{Result, TrainError, fsx};
use crate::fast_train::{FastTrainer, StariaTrainer};
use crate::models::{self, TrainerState};
use crate::optim::{AdamW, AdamWParams, Schedule};
use crate::shards::{PieceMeta, SYNTHETIC, Shards, TRAIN, TWO_VOICE, VALIDATION};
use staria_models::grid::GridRows;
use staria_models::params::SeededVars;
use staria_models::window::WindowBins;

mod stages;

pub use stages::{run_lm, staria_trainable, train_decoder, train_decoder_from, train_staria};

/// Settings every stage command shares.
#[derive(Debug, Clone)]
pub struct RunOptions {
    pub out: PathBuf,
    pub device: Device,
    /// Continue from `out` when it holds a checkpoint of this stage.
    pub resume: bool,
    /// Draw progress bars on stderr.
    pub progress: bool,
    /// Stop after this many steps of this invocation (for tests and time-boxed runs); the
    /// schedule still spans the configured steps, so a resumed run continues it.
    pub max_steps: Option<u64>,
    /// Which implementation trains the model (`train-decoder`, `train-staria`).
    pub backend: Backend,
}

/// The implementation behind `train-decoder`'s and `train-staria`'s steps and validation loss.
/// Both train the same model to the same checkpoint and optimizer files, so a run resumes on
/// either.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, clap::ValueEnum)]
pub enum Backend {
    /// The fast path on a CPU device, candle on a GPU.
    #[default]
    Auto,
    /// candle's autograd (any device).
    Candle,
    /// The hand-written CPU path (`fast_train`), several times faster on a CPU.
    Fast,
}

impl Backend {
    /// Whether a model trains on the fast path on `device`.
    pub fn use_fast(self, device: &Device) -> Result<bool> {
        match self {
            Backend::Auto => Ok(device.is_cpu()),
            Backend::Candle => Ok(false),
            Backend::Fast if device.is_cpu() => Ok(true),
            Backend::Fast => Err(TrainError::config(
                "--backend fast runs on the CPU only; use --device cpu or --backend candle",
            )),
        }
    }
}

/// A generator for one step of one stage.
pub fn step_rng(seed: u64, stage: &str, step: u64) -> StdRng {
    let mut h = Sha256::new();
    h.update(seed.to_le_bytes());
    h.update(stage.as_bytes());
    h.update(step.to_le_bytes());
    let d = h.finalize();
    StdRng::seed_from_u64(u64::from_le_bytes(d[..8].try_into().expect("8 bytes")))
}

/// Piece drawing for training: two-voice copies with probability `two_voice_fraction`, else
/// synthetic pieces with probability `synthetic_fraction`, else train pieces (a kind the
/// shards lack is never drawn).
pub struct PiecePool<'a> {
    pub shards: &'a Shards,
    pub synthetic_fraction: f64,
    pub two_voice_fraction: f64,
}

impl<'a> PiecePool<'a> {
    pub fn new(shards: &'a Shards, data: &DataSection) -> Self {
        Self {
            shards,
            synthetic_fraction: data.synthetic_fraction,
            two_voice_fraction: data.two_voice_fraction,
        }
    }

    pub fn draw(&self, rng: &mut impl Rng) -> Result<(&'static str, &'a PieceMeta)> {
        let two_voice = self.shards.pieces(TWO_VOICE);
        if !two_voice.is_empty() && rng.random_bool(self.two_voice_fraction) {
            return Ok((TWO_VOICE, &two_voice[rng.random_range(0..two_voice.len())]));
        }
        let synth = self.shards.pieces(SYNTHETIC);
        let train = self.shards.pieces(TRAIN);
        let (split, pieces) = if !synth.is_empty()
            && (train.is_empty() || rng.random_bool(self.synthetic_fraction))
        {
            (SYNTHETIC, synth)
        } else {
            (TRAIN, train)
        };
        if pieces.is_empty() {
            return Err(TrainError::Data("the shards have no train pieces".into()));
        }
        Ok((split, &pieces[rng.random_range(0..pieces.len())]))
    }
}

/// A random augmented training sequence of a stored piece.
pub fn training_example(
    exp: &ExperimentConfig,
    shards: &Shards,
    split: &str,
    piece: &PieceMeta,
    rng: &mut impl Rng,
) -> Result<Example> {
    let tok = &shards.tokenizer;
    let aug = Augment::sample(&exp.data, rng);
    let prepared = prepare_piece(
        tok,
        shards.piece_tokens(split, piece),
        &shards.snippets(split, piece),
        piece.style.as_deref(),
        &piece.form,
        piece.quarter_ms,
        aug,
        exp.data.snippet_tokens,
    )?;
    prepared.random_example(tok, exp.data.seq_len, rng)
}

/// Fixed validation sequences: the first window of up to `n` validation pieces spread evenly over
/// the split (train pieces when there is no validation split), without augmentation.
pub fn validation_examples(
    exp: &ExperimentConfig,
    shards: &Shards,
    n: usize,
) -> Result<Vec<Example>> {
    let (split, pieces) = if shards.pieces(VALIDATION).is_empty() {
        (TRAIN, shards.pieces(TRAIN))
    } else {
        (VALIDATION, shards.pieces(VALIDATION))
    };
    let tok = &shards.tokenizer;
    let mut out = Vec::new();
    // Spread over the split (it is sorted by path, i.e. by collection).
    let stride = (pieces.len() / n.max(1)).max(1);
    for p in pieces.iter().step_by(stride).take(n) {
        let prepared = prepare_piece(
            tok,
            shards.piece_tokens(split, p),
            &shards.snippets(split, p),
            p.style.as_deref(),
            &p.form,
            p.quarter_ms,
            Augment::NONE,
            exp.data.snippet_tokens,
        )?;
        let budget = prepared.budget(exp.data.seq_len)?;
        out.push(prepared.example_at(tok, 0, budget).0);
    }
    Ok(out)
}

/// The examples whose next example (the last one's: the first) has snippets of exactly the
/// same letters, and the same examples with that example's snippets instead of their own;
/// `None` when fewer than two qualify. Only the `snippets` (a Staria model's encoder input)
/// change: a Staria decoder's tokens hold the letters' tags alone, so they stay the same.
pub fn swapped_snippets(examples: &[Example]) -> Option<(Vec<Example>, Vec<Example>)> {
    let n = examples.len();
    let letters = |e: &Example| -> Vec<staria_models::SectionLabel> {
        e.snippets.iter().map(|s| s.0).collect()
    };
    let (mut own, mut theirs) = (Vec::new(), Vec::new());
    for (i, e) in examples.iter().enumerate() {
        let next = &examples[(i + 1) % n];
        if n >= 2 && !e.snippets.is_empty() && letters(e) == letters(next) {
            own.push(e.clone());
            theirs.push(Example {
                snippets: next.snippets.clone(),
                ..e.clone()
            });
        }
    }
    (own.len() >= 2).then_some((own, theirs))
}

/// A model being trained with next-token loss.
pub struct LmModel {
    pub model: AnyModel,
    pub config: ModelConfig,
    pub vars: SeededVars,
    pub layout: Layout,
    pub snippet_len: usize,
    /// The beat-grid head's rows (`staria_models::grid`); `None` without a grid head.
    pub grid: Option<GridRows>,
    /// Set on the fast CPU path: it then owns the current weights and optimizer state, and
    /// [`LmModel::sync`] copies them back to `vars` and the `AdamW`.
    pub fast: Option<FastPath>,
}

/// The fast CPU path of an [`LmModel`], by model kind (boxed: each is a kilobyte or more of
/// fields).
pub enum FastPath {
    Decoder(Box<FastTrainer>),
    /// The decoder and cross-attention sites; the encoder stays on candle (`fast_train::staria`).
    Staria(Box<StariaTrainer>),
}

impl LmModel {
    pub fn build(
        config: ModelConfig,
        vars: SeededVars,
        tok: &Tokenizer,
        device: &Device,
    ) -> Result<Self> {
        let mut model = AnyModel::new(&config, vars.builder(device))?;
        model.set_tokenizer(tok);
        let grid = GridRows::of(config.decoder(), tok);
        let (layout, snippet_len) = match &config {
            ModelConfig::Decoder(_) => (Layout::Inline, 0),
            ModelConfig::Staria(s) => (Layout::Staria, s.encoder.max_seq_len),
        };
        Ok(Self {
            model,
            config,
            vars,
            layout,
            snippet_len,
            grid,
            fast: None,
        })
    }

    /// Moves training to the fast CPU path from the current weights and `opt`'s state, with
    /// buffers for batches of up to `batch` sequences of `seq` tokens. A Staria model's
    /// trainable set is the one `opt` holds: when it changes, [`LmModel::sync`] first, then
    /// enable again.
    pub fn enable_fast(&mut self, opt: &AdamW, batch: usize, seq: usize) -> Result<()> {
        self.fast = None;
        let fast = match &self.config {
            ModelConfig::Decoder(cfg) => {
                let mut fast = FastTrainer::from_vars(cfg, &self.vars, opt, self.grid)?;
                fast.reserve(batch, seq);
                FastPath::Decoder(Box::new(fast))
            }
            ModelConfig::Staria(cfg) => {
                let mut fast = StariaTrainer::new(cfg, &self.vars, opt, self.grid)?;
                fast.reserve(batch, seq);
                FastPath::Staria(Box::new(fast))
            }
        };
        self.fast = Some(fast);
        Ok(())
    }

    /// Copies the fast path's weights and optimizer state back into `vars` and `opt` (no-op on
    /// the candle path), so that they can be saved.
    pub fn sync(&self, opt: &mut AdamW) -> Result<()> {
        match &self.fast {
            Some(FastPath::Decoder(fast)) => fast.write_back(&self.vars, opt),
            Some(FastPath::Staria(fast)) => fast.write_back(&self.vars, opt),
            None => Ok(()),
        }
    }

    pub fn kind(&self) -> ModelKind {
        self.config.kind()
    }

    /// Rebuilds the network over the same variables (after `SeededVars::set_frozen`).
    pub fn rebuild(&mut self, device: &Device) -> Result<()> {
        self.model = AnyModel::new(&self.config, self.vars.builder(device))?;
        Ok(())
    }

    /// Loss (nats per target token) and input tokens of a batch, without gradients applied.
    pub fn loss(
        &self,
        examples: &[Example],
        device: &Device,
    ) -> Result<(candle_core::Tensor, f64, f64, usize)> {
        let window = WindowBins::of(self.config.decoder());
        let batch = collate(
            examples,
            self.layout,
            0,
            window,
            self.grid,
            self.snippet_len,
            device,
        )?;
        let logits = self.model.forward_train(
            &batch.ids,
            batch.win.as_ref(),
            batch.grid.as_ref(),
            batch.snippets.as_ref(),
        )?;
        let (mean, sum, count) = masked_nll(&logits, &batch.targets, &batch.mask)?;
        Ok((mean, sum, count, batch.tokens))
    }

    /// One optimizer step. Returns (loss, input tokens, gradient norm).
    pub fn train_step(
        &mut self,
        opt: &mut AdamW,
        examples: &[Example],
        clip: f64,
        device: &Device,
    ) -> Result<(f64, usize, f64)> {
        match &mut self.fast {
            Some(FastPath::Decoder(fast)) => return fast.train_step(examples, &opt.params, clip),
            Some(FastPath::Staria(fast)) => {
                let model = staria_net(&self.model)?;
                return fast.train_step(model, examples, &opt.params, clip);
            }
            None => {}
        }
        let (mean, sum, count, tokens) = self.loss(examples, device)?;
        let loss = sum / count.max(1.0);
        if !loss.is_finite() {
            return Err(TrainError::Diverged(format!(
                "loss is {loss} at step {}",
                opt.step_count() + 1
            )));
        }
        let grads = mean.backward()?;
        let norm = opt.step(&grads, clip)?;
        Ok((loss, tokens, norm))
    }

    /// Mean loss over examples (nats per target token), in batches of `batch`.
    pub fn eval_loss(
        &mut self,
        examples: &[Example],
        batch: usize,
        device: &Device,
    ) -> Result<f64> {
        let (mut sum, mut count) = (0.0, 0.0);
        for chunk in examples.chunks(batch.max(1)) {
            let (s, c) = match &mut self.fast {
                Some(FastPath::Decoder(fast)) => fast.examples_loss(chunk)?,
                Some(FastPath::Staria(fast)) => {
                    fast.examples_loss(staria_net(&self.model)?, chunk)?
                }
                None => {
                    let (_, s, c, _) = self.loss(chunk, device)?;
                    (s, c)
                }
            };
            sum += s;
            count += c;
        }
        Ok(sum / count.max(1.0))
    }
}

/// The Staria network of `model` (its encoder computes the fast path's latents).
fn staria_net(model: &AnyModel) -> Result<&staria_models::Staria> {
    model
        .staria()
        .ok_or_else(|| TrainError::config("the Staria fast path needs a Staria model"))
}

fn adamw(h: &Hyper) -> AdamWParams {
    AdamWParams {
        lr: h.lr,
        weight_decay: h.weight_decay,
        ..AdamWParams::default()
    }
}

fn schedule(h: &Hyper, total: u64) -> Schedule {
    Schedule {
        peak: h.lr,
        warmup: h.warmup_steps,
        total,
        min_ratio: h.min_lr_ratio,
    }
}

/// Prepares `out` for a stage: returns the saved state when resuming a run of the same stage.
pub fn open_run(opts: &RunOptions, stage: &str) -> Result<Option<TrainerState>> {
    fsx::create_dir_all(&opts.out)?;
    models::recover_interrupted_save(&opts.out)?;
    let state = models::load_state(&opts.out)?;
    match state {
        Some(s) if opts.resume => {
            if s.stage != stage {
                return Err(TrainError::file(
                    &opts.out,
                    format!(
                        "holds a `{}` run, not `{stage}`; use another --out to start a new run",
                        s.stage
                    ),
                ));
            }
            Ok(Some(s))
        }
        Some(s) => Err(TrainError::file(
            &opts.out,
            format!(
                "already holds a `{}` checkpoint at step {}; pass --resume to continue it or use another --out",
                s.stage, s.step
            ),
        )),
        None => Ok(None),
    }
}

/// What a finished stage reports.
#[derive(Debug, Clone)]
pub struct StageSummary {
    pub steps: u64,
    pub first_loss: Option<f64>,
    pub last_loss: Option<f64>,
    pub val_loss: Option<f64>,
    pub tokens_per_s: f64,
    pub out: PathBuf,
    /// The steps ran on the fast CPU path (`fast_train`), not on candle.
    pub fast: bool,
}
