//! `staria-train`: prepare data, train the Staria models, evaluate them.

use std::io::IsTerminal;
use std::path::PathBuf;
use std::process::ExitCode;

use candle_core::Device;
use clap::{Args, Parser, Subcommand};
use staria_models::checkpoint;
use staria_models::tokenizer::{Tokenizer, TokenizerConfig};
use staria_trainer::config::ExperimentConfig;
use staria_trainer::error::{Result, TrainError, fsx};
use staria_trainer::eval::{self, EvalData, EvalOptions};
use staria_trainer::prepare::{self, PrepareOptions};
use staria_trainer::shards::Shards;
use staria_trainer::train::{self, Backend, RunOptions, StageSummary};
use staria_trainer::{contrastive, wake_sleep};

#[derive(Parser)]
#[command(
    name = "staria-train",
    version,
    about = "Prepare data, train and evaluate Staria models"
)]
struct Cli {
    #[command(subcommand)]
    cmd: Cmd,
}

#[derive(Subcommand)]
enum Cmd {
    /// Turn a folder of MIDI files into token shards (train/validation split by piece).
    Prepare {
        /// Folder searched recursively for .mid/.midi files.
        dir: PathBuf,
        /// Output shard folder.
        #[arg(long)]
        out: PathBuf,
        /// Share of pieces held out for validation.
        #[arg(long, default_value_t = 0.05)]
        val_fraction: f64,
        /// Seed of the split and of the synthetic pieces.
        #[arg(long, default_value_t = 0)]
        seed: u64,
        /// Synthetic form pieces (AB, ABC, ABA, ABAB, ABAC, ABCA, ABCB, ABCD, AABA, AABB; repeats
        /// verbatim, transposed or ornamented) to add.
        #[arg(long, default_value_t = 0)]
        synthetic: usize,
        /// Tokenizer config JSON (a TokenizerConfig, or a tokenizer.json); default: the standard one.
        #[arg(long)]
        tokenizer: Option<PathBuf>,
    },
    /// Train the decoder-only baseline.
    TrainDecoder {
        #[command(flatten)]
        common: Common,
        /// Start from this decoder-only checkpoint's weights (fine-tune, e.g. the shipped
        /// model on your own MIDI) instead of random ones; same size and tokenizer.
        #[arg(long)]
        init: Option<PathBuf>,
        /// Training implementation: `fast` (hand-written CPU path), `candle` (autograd, any
        /// device) or `auto` (fast on the CPU, candle elsewhere). Checkpoints are shared.
        #[arg(long, value_enum, default_value_t = Backend::Auto)]
        backend: Backend,
    },
    /// Contrastive pre-training of the snippet encoder.
    TrainEncoder {
        #[command(flatten)]
        common: Common,
    },
    /// Encoder retrieval: a snippet (a section's repeat, augmented and cropped) to its own
    /// section among the piece's sections and among a batch of pieces.
    EncoderRetrieval {
        /// Encoder checkpoint (from train-encoder); without it, the untrained encoder of
        /// --config (its step-0 weights).
        #[arg(long)]
        encoder: Option<PathBuf>,
        /// Experiment config (TOML): the encoder to build without --encoder, and the
        /// augmentation of the queries (default: the checkpoint's run).
        #[arg(long)]
        config: Option<PathBuf>,
        /// Shard folder from `prepare`.
        #[arg(long)]
        data: PathBuf,
        /// Split of the shards: validation, train or synthetic.
        #[arg(long, default_value = "validation")]
        split: String,
        /// Pieces per group for the among-the-batch figure.
        #[arg(long, default_value_t = 16)]
        batch: usize,
        /// At most this many pieces (with two or more letters), spread evenly (0: all).
        #[arg(long, default_value_t = 0)]
        max_pieces: usize,
        #[arg(long, default_value_t = 0)]
        seed: u64,
        /// Queries without transposition, tempo or velocity augmentation (crops stay).
        #[arg(long)]
        no_augment: bool,
        #[arg(long, default_value = "cpu")]
        device: String,
        /// Print one JSON line.
        #[arg(long)]
        json: bool,
    },
    /// Staged Staria training from a decoder-only and an encoder checkpoint.
    TrainStaria {
        #[command(flatten)]
        common: Common,
        /// Decoder-only checkpoint (from train-decoder) for the trunk.
        #[arg(long)]
        decoder: PathBuf,
        /// Encoder checkpoint (from train-encoder).
        #[arg(long)]
        encoder: PathBuf,
        /// Training implementation: `fast` (the decoder and cross-attention on the hand-written
        /// CPU path, the encoder on candle), `candle` (autograd, any device) or `auto` (fast on
        /// the CPU, candle elsewhere). Checkpoints are shared.
        #[arg(long, value_enum, default_value_t = Backend::Auto)]
        backend: Backend,
    },
    /// Wake-sleep training of a generator checkpoint with a structure recognizer.
    WakeSleep {
        #[command(flatten)]
        common: Common,
        /// Generator checkpoint (decoder-only or Staria) to continue.
        #[arg(long)]
        model: PathBuf,
    },
    /// Write a copy of a checkpoint folder with its weights stored as q8, f16 or f32 (the
    /// model, tokenizer and provenance kept; the provenance notes the conversion).
    Convert {
        /// The checkpoint folder to convert (read only).
        #[arg(long)]
        model: PathBuf,
        /// The folder to write (created if needed; not the source folder).
        #[arg(long)]
        out: PathBuf,
        /// q8 (int8 matrices, one f16 scale per 32 values; small tensors and embeddings f16),
        /// f16, bf16 or f32.
        #[arg(long)]
        weights: String,
    },
    /// Evaluate checkpoints on a folder of MIDI files (give --model twice to compare).
    Eval {
        /// Checkpoint folder; repeat to compare models side by side.
        #[arg(long, required = true)]
        model: Vec<PathBuf>,
        /// Folder of MIDI files.
        #[arg(long)]
        data: PathBuf,
        /// Print one JSON line per model.
        #[arg(long)]
        json: bool,
        /// Generations: one per piece with sections A and B, spread evenly over those pieces.
        #[arg(long, default_value_t = 60)]
        pieces: usize,
        /// Pieces to measure NLL on, at most: the first ones (0: all).
        #[arg(long, default_value_t = 0)]
        max_pieces: usize,
        /// Only the pieces `prepare --seed S --val-fraction F` holds out (give both).
        #[arg(long, requires = "split_fraction")]
        split_seed: Option<u64>,
        #[arg(long, requires = "split_seed")]
        split_fraction: Option<f64>,
        /// Tokens per window (default: the training run's seq_len).
        #[arg(long)]
        seq_len: Option<usize>,
        #[arg(long, default_value_t = 0)]
        seed: u64,
        /// Default: the engine's (`staria generate`'s) temperature.
        #[arg(long, default_value_t = 1.0)]
        temperature: f64,
        /// Default: the engine's min-p (chosen on validation with these measures).
        #[arg(long, default_value_t = 0.15)]
        min_p: f64,
        #[arg(long, default_value = "cpu")]
        device: String,
        /// Generation backend: fast (the engine's CPU decoder; candle on a GPU device) or candle.
        #[arg(long, default_value = "fast")]
        backend: String,
        /// Weight format of the fast backend: f32, f16 (the engine's default) or q8.
        #[arg(long, default_value = "f16")]
        weights: String,
        /// Form guidance: sample from log p + G (log p - log p with the snippets' letters
        /// swapped), a second decode of every token; 0: the model alone. Fast backend only.
        #[arg(long, default_value_t = 0.0)]
        guidance: f64,
        /// The form generated from snippets A and B (letters A and B, both).
        #[arg(long, default_value = "AABA")]
        form: String,
        /// Snippet following: added to the logit of the token the section's snippet has next
        /// (0: the model alone).
        #[arg(long, default_value_t = 0.0)]
        follow_bias: f32,
        /// Write each generation and its reference piece as MIDI under `DIR/<model>/` (NNN.gen.mid,
        /// NNN.ref.mid; `staria render NNN.gen.mid --prompt NNN.ref.mid --png` draws them).
        #[arg(long, value_name = "DIR")]
        write: Option<PathBuf>,
    },
}

#[derive(Args)]
struct Common {
    /// Experiment config (TOML), e.g. trainer/configs/small.toml.
    #[arg(long)]
    config: PathBuf,
    /// Shard folder from `prepare`.
    #[arg(long)]
    data: PathBuf,
    /// Checkpoint folder to write (and resume from with --resume).
    #[arg(long)]
    out: PathBuf,
    /// Continue the run saved in --out.
    #[arg(long)]
    resume: bool,
    /// cpu, cuda or metal (the latter two need the matching cargo feature).
    #[arg(long, default_value = "cpu")]
    device: String,
    /// Stop after this many steps (rounds for wake-sleep) of this invocation; resume later.
    #[arg(long)]
    max_steps: Option<u64>,
    /// No progress bars.
    #[arg(long)]
    quiet: bool,
}

fn device(name: &str) -> Result<Device> {
    match name {
        "cpu" => Ok(Device::Cpu),
        "cuda" => Device::new_cuda(0).map_err(|e| {
            TrainError::config(format!("--device cuda: {e} (build with --features cuda)"))
        }),
        "metal" => Device::new_metal(0).map_err(|e| {
            TrainError::config(format!("--device metal: {e} (build with --features metal)"))
        }),
        other => Err(TrainError::config(format!(
            "--device {other:?}: expected cpu, cuda or metal"
        ))),
    }
}

fn setup(c: &Common) -> Result<(ExperimentConfig, Shards, RunOptions)> {
    let exp = ExperimentConfig::load(&c.config)?;
    let shards = Shards::open(&c.data)?;
    let opts = RunOptions {
        out: c.out.clone(),
        device: device(&c.device)?,
        resume: c.resume,
        progress: !c.quiet && std::io::stderr().is_terminal(),
        max_steps: c.max_steps,
        backend: Backend::Auto,
    };
    Ok((exp, shards, opts))
}

fn report(stage: &str, s: &StageSummary) {
    let f = |x: Option<f64>| x.map_or("-".to_string(), |v| format!("{v:.4}"));
    println!(
        "{stage}: {} steps, loss {} -> {}, validation {}, {:.0} tokens/s; checkpoint in {}",
        s.steps,
        f(s.first_loss),
        f(s.last_loss),
        f(s.val_loss),
        s.tokens_per_s,
        s.out.display()
    );
}

fn load_tokenizer(path: Option<&PathBuf>) -> Result<Tokenizer> {
    let Some(path) = path else {
        return Ok(Tokenizer::new(TokenizerConfig::default())?);
    };
    let text = fsx::read_to_string(path)?;
    // A tokenizer.json (config + vocab) or a bare config.
    Tokenizer::from_json(&text).or_else(|_| {
        let cfg: TokenizerConfig =
            serde_json::from_str(&text).map_err(|e| TrainError::file(path, e.to_string()))?;
        Ok(Tokenizer::new(cfg)?)
    })
}

fn run(cli: Cli) -> Result<()> {
    match cli.cmd {
        Cmd::Prepare {
            dir,
            out,
            val_fraction,
            seed,
            synthetic,
            tokenizer,
        } => {
            let tok = load_tokenizer(tokenizer.as_ref())?;
            let opts = PrepareOptions {
                val_fraction,
                seed,
                synthetic,
                verbose: true,
            };
            let r = prepare::prepare(&dir, &out, &tok, &opts)?;
            for s in &r.index.skipped {
                eprintln!("skipped {}: {}", s.file, s.reason);
            }
            println!("{}; shards in {}", r.summary(), out.display());
        }
        Cmd::TrainDecoder {
            common,
            init,
            backend,
        } => {
            let (exp, shards, mut opts) = setup(&common)?;
            opts.backend = backend;
            report(
                "train-decoder",
                &train::train_decoder_from(&exp, &shards, &opts, init.as_deref())?,
            );
        }
        Cmd::TrainEncoder { common } => {
            let (exp, shards, opts) = setup(&common)?;
            report(
                "train-encoder",
                &contrastive::train_encoder(&exp, &shards, &opts)?,
            );
        }
        Cmd::EncoderRetrieval {
            encoder,
            config,
            data,
            split,
            batch,
            max_pieces,
            seed,
            no_augment,
            device: dev,
            json,
        } => {
            let exp = config.as_deref().map(ExperimentConfig::load).transpose()?;
            let shards = Shards::open(&data)?;
            let opts = contrastive::RetrievalOptions {
                batch,
                max_pieces,
                seed,
                augment: !no_augment,
            };
            let r = contrastive::encoder_retrieval(
                exp.as_ref(),
                encoder.as_deref(),
                &shards,
                &split,
                &opts,
                &device(&dev)?,
            )?;
            let what = encoder.as_ref().map_or_else(
                || {
                    format!(
                        "untrained encoder of {}",
                        config.as_ref().expect("checked").display()
                    )
                },
                |e| e.display().to_string(),
            );
            if json {
                let mut v = serde_json::to_value(&r).expect("plain data");
                v["encoder"] = serde_json::Value::String(what);
                v["split"] = serde_json::Value::String(split);
                println!("{v}");
            } else {
                println!(
                    "{what} on {} `{split}`: {} pieces, {} queries ({} from a repeat, {} of them verbatim)",
                    data.display(),
                    r.pieces,
                    r.queries,
                    r.repeat_queries,
                    r.identical_repeats
                );
                println!(
                    "  among the piece's sections: {:.3} (repeats {:.3}; mean latent {:.3}; chance {:.3})",
                    r.piece_accuracy,
                    r.repeat_piece_accuracy,
                    r.latent_piece_accuracy,
                    r.piece_chance
                );
                println!(
                    "  among the batch ({batch} pieces): {:.3} (repeats {:.3}; mean latent {:.3}; chance {:.3})",
                    r.batch_accuracy,
                    r.repeat_batch_accuracy,
                    r.latent_batch_accuracy,
                    r.batch_chance
                );
            }
        }
        Cmd::TrainStaria {
            common,
            decoder,
            encoder,
            backend,
        } => {
            let (exp, shards, mut opts) = setup(&common)?;
            opts.backend = backend;
            report(
                "train-staria",
                &train::train_staria(&exp, &shards, &opts, &decoder, &encoder)?,
            );
        }
        Cmd::WakeSleep { common, model } => {
            let (exp, shards, opts) = setup(&common)?;
            report(
                "wake-sleep",
                &wake_sleep::wake_sleep(&exp, &shards, &opts, &model)?,
            );
        }
        Cmd::Convert {
            model,
            out,
            weights,
        } => {
            let storage: checkpoint::WeightsStorage = weights
                .parse()
                .map_err(|e| TrainError::config(format!("--weights {e}")))?;
            let command = format!("staria-train {} convert", env!("CARGO_PKG_VERSION"));
            let c = checkpoint::convert(&model, &out, storage, &command)?;
            println!(
                "{}: {} -> {}, model.safetensors {:.1} MB -> {:.1} MB; written to {}",
                c.config.name,
                c.from,
                storage,
                c.from_bytes as f64 / 1e6,
                c.to_bytes as f64 / 1e6,
                out.display()
            );
        }
        Cmd::Eval {
            model,
            data,
            json,
            pieces,
            max_pieces,
            split_seed,
            split_fraction,
            seq_len,
            seed,
            temperature,
            min_p,
            device: dev,
            backend,
            weights,
            guidance,
            form,
            follow_bias,
            write,
        } => {
            let backend = match backend.as_str() {
                "candle" => eval::GenBackend::Candle,
                "fast" => eval::GenBackend::Fast(
                    weights
                        .parse()
                        .map_err(|e| TrainError::config(format!("--weights {weights}: {e}")))?,
                ),
                other => {
                    return Err(TrainError::config(format!(
                        "--backend {other}: expected fast or candle"
                    )));
                }
            };
            let opts = EvalOptions {
                seq_len,
                snippet_tokens: None,
                pieces,
                max_pieces,
                validation_split: split_seed.zip(split_fraction),
                seed,
                temperature,
                min_p,
                max_section_ms: 12_000.0,
                device: device(&dev)?,
                backend,
                guidance,
                form,
                follow_bias,
                write_dir: write,
            };
            let data = EvalData::load(&data, &opts)?;
            let mut results = Vec::new();
            for m in &model {
                let r = eval::evaluate(m, &data, &opts)?;
                if json {
                    println!("{}", serde_json::to_string(&r).expect("plain data"));
                }
                results.push(r);
            }
            if !json {
                print!("{}", eval::table(&results));
            }
        }
    }
    Ok(())
}

/// Training allocates and frees tensors of tens of megabytes every step. glibc serves those with
/// fresh `mmap`s whose pages the kernel must zero on first touch, which cost ~40% of a CPU
/// training step in system time; keeping them in the heap instead removes that.
#[cfg(all(target_os = "linux", target_env = "gnu"))]
fn tune_allocator() {
    unsafe extern "C" {
        fn mallopt(param: i32, value: i32) -> i32;
    }
    const M_TRIM_THRESHOLD: i32 = -1;
    const M_TOP_PAD: i32 = -2;
    const M_MMAP_THRESHOLD: i32 = -3;
    // SAFETY: mallopt only changes allocator tunables; called before any other thread exists.
    unsafe {
        // 32 MiB is the largest threshold glibc accepts on 64-bit.
        mallopt(M_MMAP_THRESHOLD, 32 << 20);
        mallopt(M_TRIM_THRESHOLD, i32::MAX);
        mallopt(M_TOP_PAD, 256 << 20);
    }
}

#[cfg(not(all(target_os = "linux", target_env = "gnu")))]
fn tune_allocator() {}

fn main() -> ExitCode {
    tune_allocator();
    match run(Cli::parse()) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("staria-train: {e}");
            ExitCode::FAILURE
        }
    }
}
