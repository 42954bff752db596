//! Killing `staria-train` at any moment never spoils its run (issue 12): the `staria-train
//! train-decoder` binary is killed with SIGKILL at 20 seeded random moments of one run that
//! checkpoints every step (so many kills land inside a save); after each kill the run folder,
//! when it holds a checkpoint at all, loads as a model and as a resumable run, and `--resume`
//! takes the run on to its last step with the very weights an uninterrupted run ends with.

mod common;

use std::path::Path;
use std::process::{Command, Stdio};
use std::time::Instant;

use candle_core::Device;
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use staria_models::tokenizer::{Tokenizer, TokenizerConfig};
use staria_trainer::models;
use staria_trainer::prepare::{self, PrepareOptions};

const KILLS: usize = 20;
const STEPS: u64 = 160;

fn train(config: &Path, shards: &Path, out: &Path, resume: bool) -> Command {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_staria-train"));
    cmd.arg("train-decoder")
        .arg("--config")
        .arg(config)
        .arg("--data")
        .arg(shards)
        .arg("--out")
        .arg(out)
        .args(["--quiet", "--backend", "fast"])
        .stdout(Stdio::null())
        .stderr(Stdio::piped());
    if resume {
        cmd.arg("--resume");
    }
    cmd
}

/// The step a run folder's trainer state records, after checking the folder loads both as a
/// model (what `staria`, the plugin and `eval` do) and as a run (what `--resume` does).
fn check_folder(out: &Path) -> Option<u64> {
    // As the kill left it: a model loader (staria, the plugin, eval) must be able to read it.
    if out.join(staria_models::checkpoint::CONFIG_FILE).exists() {
        staria_models::checkpoint::load(out, &Device::Cpu)
            .unwrap_or_else(|e| panic!("the killed run's checkpoint no longer loads: {e}"));
    }
    // As `--resume` reads it: one step's weights, optimizer moments and state.
    if models::recover_interrupted_save(out).unwrap() {
        println!("a kill interrupted a save; recovered");
    }
    let state = models::load_state(out)
        .unwrap_or_else(|e| panic!("the trainer state no longer reads: {e}"))?;
    let ckpt = staria_models::checkpoint::load(out, &Device::Cpu).unwrap_or_else(|e| {
        panic!(
            "killed at step {}: the checkpoint no longer loads: {e}",
            state.step
        )
    });
    assert_eq!(
        ckpt.config.provenance.steps, state.step,
        "the weights and the trainer state are from different steps"
    );
    Some(state.step)
}

#[test]
fn sigkill_at_random_moments_never_spoils_the_run() {
    let tmp = tempfile::tempdir().unwrap();
    let corpus = tmp.path().join("corpus");
    common::write_corpus(&corpus);
    let shards = tmp.path().join("shards");
    let tok = Tokenizer::new(TokenizerConfig::default()).unwrap();
    let opts = PrepareOptions {
        val_fraction: 0.2,
        seed: 3,
        synthetic: 8,
        verbose: false,
    };
    prepare::prepare(&corpus, &shards, &tok, &opts).unwrap();

    let mut exp = common::tiny_config();
    exp.decoder.steps = STEPS;
    exp.decoder.checkpoint_every = 1;
    exp.decoder.eval_every = 8;
    let config = tmp.path().join("kill.toml");
    std::fs::write(&config, toml::to_string(&exp).unwrap()).unwrap();

    // The uninterrupted run: its length sets the range the kills are drawn from.
    let whole = tmp.path().join("whole");
    let started = Instant::now();
    let done = train(&config, &shards, &whole, false).output().unwrap();
    let run_time = started.elapsed();
    assert!(
        done.status.success(),
        "{}",
        String::from_utf8_lossy(&done.stderr)
    );
    assert_eq!(check_folder(&whole), Some(STEPS));

    let out = tmp.path().join("killed");
    let mut rng = StdRng::seed_from_u64(0x4B11);
    let mut seen_steps = Vec::new();
    for _ in 0..KILLS {
        let resume = models::load_state(&out).unwrap().is_some();
        let mut child = train(&config, &shards, &out, resume).spawn().unwrap();
        // Kill anywhere in the first 15% of a whole run's time (start-up included), so that
        // about twenty kills fit in one run.
        let wait = run_time.mul_f64(rng.random_range(0.0..0.15));
        std::thread::sleep(wait);
        let _ = child.kill(); // SIGKILL on Unix; a run that already finished is fine too
        let _ = child.wait();
        seen_steps.push(check_folder(&out));
        if seen_steps.last() == Some(&Some(STEPS)) {
            break;
        }
    }
    let finished = train(&config, &shards, &out, true).output().unwrap();
    assert!(
        finished.status.success() || check_folder(&out) == Some(STEPS),
        "--resume failed after the kills: {}",
        String::from_utf8_lossy(&finished.stderr)
    );
    assert_eq!(
        check_folder(&out),
        Some(STEPS),
        "kills saw steps {seen_steps:?}"
    );
    // Killed runs must have been caught at several different points, or the test proves little.
    let distinct: std::collections::BTreeSet<_> = seen_steps.iter().collect();
    assert!(distinct.len() >= 5, "kills saw steps {seen_steps:?}");
    println!(
        "whole run {run_time:?}; {} kills saw steps {seen_steps:?}",
        seen_steps.len()
    );
    // Exact resume: the killed-and-resumed run's weights equal the uninterrupted run's.
    let a = models::load_model_tensors(&whole, &Device::Cpu).unwrap().2;
    let b = models::load_model_tensors(&out, &Device::Cpu).unwrap().2;
    for (name, ta) in &a {
        let tb = &b[name];
        let diff = (ta - tb)
            .unwrap()
            .abs()
            .unwrap()
            .flatten_all()
            .unwrap()
            .max(0)
            .unwrap()
            .to_scalar::<f32>()
            .unwrap();
        assert!(
            diff == 0.0,
            "{name} differs by {diff} from the uninterrupted run (kills saw steps {seen_steps:?})"
        );
    }
}
