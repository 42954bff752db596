//! End to end on fixtures the tests write: prepare -> train-decoder -> train-encoder ->
//! train-staria -> wake-sleep -> eval, plus loss decrease and exact resume.

mod common;

use std::path::Path;

use candle_core::Device;
use staria_models::tokenizer::{Tokenizer, TokenizerConfig};
use staria_trainer::eval::{self, EvalData, EvalOptions};
use staria_trainer::prepare::{self, PrepareOptions};
use staria_trainer::shards::{SYNTHETIC, SectionOrigin, Shards, TRAIN, VALIDATION};
use staria_trainer::train::{self, Backend, RunOptions};
use staria_trainer::{contrastive, wake_sleep};

fn run_opts(out: &Path) -> RunOptions {
    RunOptions {
        out: out.to_path_buf(),
        device: Device::Cpu,
        resume: false,
        progress: false,
        max_steps: None,
        backend: Backend::Auto,
    }
}

fn prepared(tmp: &Path) -> Shards {
    let corpus = tmp.join("corpus");
    let good = common::write_corpus(&corpus);
    let tok = Tokenizer::new(TokenizerConfig::default()).unwrap();
    let opts = PrepareOptions {
        val_fraction: 0.2,
        seed: 3,
        synthetic: 16,
        verbose: false,
    };
    let r = prepare::prepare(&corpus, &tmp.join("shards"), &tok, &opts).unwrap();
    assert_eq!(r.files, good + 1);
    assert_eq!(r.index.skipped.len(), 1, "{:?}", r.index.skipped);
    assert_eq!(r.index.skipped[0].file, "essen/broken.mid");
    Shards::open(&tmp.join("shards")).unwrap()
}

fn eval_opts() -> EvalOptions {
    EvalOptions {
        pieces: 2,
        ..EvalOptions::default()
    }
}

#[test]
fn prepare_splits_by_piece_labels_and_styles() {
    let tmp = tempfile::tempdir().unwrap();
    let shards = prepared(tmp.path());
    let train = shards.pieces(TRAIN);
    let val = shards.pieces(VALIDATION);
    assert_eq!(train.len() + val.len(), 22);
    assert!(!val.is_empty());
    // The split is a function of the path: the same seed gives the same split.
    for p in val {
        assert!(prepare::is_validation(&p.id, 3, 0.2));
    }
    for p in train {
        assert!(!prepare::is_validation(&p.id, 3, 0.2));
    }
    let all: Vec<_> = train.iter().chain(val).collect();
    let get = |id: &str| all.iter().find(|p| p.id == id).unwrap();
    let reel = get("ryans/reel_0.mid");
    assert_eq!(reel.style.as_deref(), Some("reel"));
    assert_eq!(reel.origin, SectionOrigin::Markers);
    assert_eq!(reel.form, "AABB");
    assert_eq!(
        get("ryans/tune_3.mid").style.as_deref(),
        Some("fiddle_tune")
    );
    assert_eq!(get("bach/bwv10_1.mid").style.as_deref(), Some("chorale"));
    let folk = get("essen/song0.mid");
    assert_eq!(folk.style.as_deref(), Some("folk_song"));
    assert_eq!(folk.origin, SectionOrigin::Repetition);
    // ABAB of 2-bar phrases, found by repetition alone.
    assert_eq!(folk.form, "ABAB");
    // Tokens: the piece starts with <S>, ends with <E>; snippets are non-empty.
    let split = if train.iter().any(|p| p.id == reel.id) {
        TRAIN
    } else {
        VALIDATION
    };
    let toks = shards.piece_tokens(split, reel);
    assert_eq!(toks[0], shards.tokenizer.start_id());
    assert_eq!(*toks.last().unwrap(), shards.tokenizer.end_id());
    assert_eq!(shards.snippets(split, reel).len(), 2);
    // Synthetic pieces cover the forms with exact labels.
    let synth = shards.pieces(SYNTHETIC);
    assert_eq!(synth.len(), 16);
    assert_eq!(synth[0].form, "AB");
    assert_eq!(synth[7].form, "ABCD");
    assert!(synth.iter().all(|p| p.origin == SectionOrigin::Synthetic));
}

#[test]
fn decoder_loss_decreases_on_fixtures() {
    let tmp = tempfile::tempdir().unwrap();
    let shards = prepared(tmp.path());
    let mut exp = common::tiny_config();
    exp.decoder.steps = 30;
    exp.decoder.checkpoint_every = 0;
    exp.decoder.eval_every = 0;
    let out = tmp.path().join("dec");
    train::train_decoder(&exp, &shards, &run_opts(&out)).unwrap();
    let log = std::fs::read_to_string(out.join("metrics.jsonl")).unwrap();
    let losses: Vec<f64> = log
        .lines()
        .map(|l| serde_json::from_str::<serde_json::Value>(l).unwrap())
        .filter(|v| v["kind"] == "train")
        .map(|v| v["loss"].as_f64().unwrap())
        .collect();
    assert_eq!(losses.len(), 30);
    let head: f64 = losses[..3].iter().sum::<f64>() / 3.0;
    let tail: f64 = losses[27..].iter().sum::<f64>() / 3.0;
    assert!(
        tail < head * 0.8,
        "loss did not decrease: {head:.3} -> {tail:.3}"
    );
}

#[test]
fn resumed_run_matches_uninterrupted_run() {
    let tmp = tempfile::tempdir().unwrap();
    let shards = prepared(tmp.path());
    let exp = common::tiny_config();
    let a = tmp.path().join("a");
    let sa = train::train_decoder(&exp, &shards, &run_opts(&a)).unwrap();
    assert_eq!(sa.steps, 12);

    let b = tmp.path().join("b");
    let sb = train::train_decoder(
        &exp,
        &shards,
        &RunOptions {
            max_steps: Some(5),
            ..run_opts(&b)
        },
    )
    .unwrap();
    assert_eq!(sb.steps, 5);
    // Refuses to overwrite without --resume.
    assert!(train::train_decoder(&exp, &shards, &run_opts(&b)).is_err());
    let sb = train::train_decoder(
        &exp,
        &shards,
        &RunOptions {
            resume: true,
            ..run_opts(&b)
        },
    )
    .unwrap();
    assert_eq!(sb.steps, 12);
    assert_eq!(
        sa.last_loss, sb.last_loss,
        "the resumed run's last step differs"
    );

    let data = EvalData::load(&tmp.path().join("corpus"), &eval_opts()).unwrap();
    let ea = eval::evaluate(&a, &data, &eval_opts()).unwrap();
    let eb = eval::evaluate(&b, &data, &eval_opts()).unwrap();
    assert_eq!(ea.nll_bits_per_token, eb.nll_bits_per_token);
    assert_eq!(ea.form_adherence, eb.form_adherence);
    assert_eq!(ea.pitch_class_distance, eb.pitch_class_distance);
    // Evaluating again gives the same figures (sampling is seeded).
    let mut ea2 = eval::evaluate(&a, &data, &eval_opts()).unwrap();
    // Wall times differ from run to run.
    ea2.nll_seconds = ea.nll_seconds;
    ea2.generation_seconds = ea.generation_seconds;
    assert_eq!(ea, ea2);
}

#[test]
fn every_stage_runs_end_to_end() {
    let tmp = tempfile::tempdir().unwrap();
    let shards = prepared(tmp.path());
    let exp = common::tiny_config();
    let dec = tmp.path().join("decoder");
    let enc = tmp.path().join("encoder");
    let sta = tmp.path().join("staria");
    let ws = tmp.path().join("wake_sleep");
    train::train_decoder(&exp, &shards, &run_opts(&dec)).unwrap();
    let e = contrastive::train_encoder(&exp, &shards, &run_opts(&enc)).unwrap();
    assert!(e.last_loss.unwrap().is_finite());
    let s = train::train_staria(&exp, &shards, &run_opts(&sta), &dec, &enc).unwrap();
    assert_eq!(s.steps, 8);
    // Staria's validation also says what its snippets' music is worth (other pieces' snippets
    // under the same letters).
    let log = std::fs::read_to_string(sta.join("metrics.jsonl")).unwrap();
    assert!(
        log.lines()
            .any(|l| l.contains("\"eval\"") && l.contains("val_snippet_content_bits")),
        "{log}"
    );
    let w = wake_sleep::wake_sleep(&exp, &shards, &run_opts(&ws), &sta).unwrap();
    assert_eq!(w.steps, 4);
    assert!(ws.join("recognizer/model.safetensors").exists());
    let log = std::fs::read_to_string(ws.join("metrics.jsonl")).unwrap();
    assert!(log.lines().any(|l| l.contains("recognizer_val_accuracy")));
    // The recognizer on real annotated pieces, after its warm-up and after every round.
    assert!(
        log.lines()
            .any(|l| l.contains("recognizer_warmup_eval") && l.contains("recognizer_real_accuracy"))
    );
    assert_eq!(
        log.lines()
            .filter(|l| l.contains("\"kind\":\"train\"") && l.contains("recognizer_real_accuracy"))
            .count(),
        2
    );

    let data = EvalData::load(&tmp.path().join("corpus"), &eval_opts()).unwrap();
    assert_eq!(data.skipped.len(), 1);
    for (dir, kind) in [(&dec, "decoder"), (&sta, "staria"), (&ws, "staria")] {
        let r = eval::evaluate(dir, &data, &eval_opts()).unwrap();
        assert_eq!(r.kind, kind);
        assert_eq!(r.pieces, 22);
        assert!(r.nll_bits_per_token.is_finite() && r.nll_bits_per_token > 0.0);
        assert!(r.nll_bits_per_second > r.nll_bits_per_token);
        assert_eq!(r.generations, 2);
        assert!((0.0..=1.0).contains(&r.form_adherence));
        assert!((0.0..=1.0).contains(&r.pitch_class_distance));
        assert!(r.note_density_distance >= 0.0);
        assert!((0.0..=1.0).contains(&r.valid_rate));
        // The fixture's pieces have A and B sections: the snippet gain is measured.
        assert!(r.snippet_gain_bits.is_finite(), "{}", r.snippet_gain_bits);
        assert!(
            r.snippet_content_bits.is_finite(),
            "{}",
            r.snippet_content_bits
        );
        assert!(r.reference_repeats > 0);
        assert!((0.0..=1.0).contains(&r.reference_form_adherence));
    }
    // Form guidance runs the fast decoder twice; the figures stay in range, and it refuses the
    // candle backend by name.
    let written = tmp.path().join("generations");
    let guided = EvalOptions {
        guidance: 2.0,
        write_dir: Some(written.clone()),
        ..eval_opts()
    };
    let r = eval::evaluate(&dec, &data, &guided).unwrap();
    assert_eq!(r.generations, 2);
    // Each generation and its reference piece are written, and read back as MIDI.
    for n in 0..2 {
        for part in ["gen", "ref"] {
            let path = written.join("decoder").join(format!("{n:03}.{part}.mid"));
            let song = staria_models::midi::read_midi_file(&path).unwrap();
            assert!(!song.sections.is_empty(), "{}", path.display());
        }
    }
    for (own, other) in [r.similarity_a, r.similarity_b] {
        assert!((0.0..=1.0).contains(&own) && (0.0..=1.0).contains(&other));
    }
    assert!(
        r.generation_backend.contains("form guidance 2"),
        "{}",
        r.generation_backend
    );
    assert!((0.0..=1.0).contains(&r.form_adherence));
    let err = eval::evaluate(
        &dec,
        &data,
        &EvalOptions {
            backend: eval::GenBackend::Candle,
            write_dir: None,
            ..guided
        },
    )
    .unwrap_err()
    .to_string();
    assert!(err.contains("--guidance"), "{err}");

    // Fine-tuning starts from the given decoder: its first loss is the trained one's, well
    // below a fresh start's. A Staria checkpoint is not a decoder to start from.
    let tuned = tmp.path().join("tuned");
    let opts = RunOptions {
        max_steps: Some(1),
        ..run_opts(&tuned)
    };
    train::train_decoder_from(&exp, &shards, &opts, Some(&dec)).unwrap();
    assert!(
        common::first_train_loss(&tuned) < common::first_train_loss(&dec) * 0.9,
        "fine-tuning did not start from the trained weights: {} vs {}",
        common::first_train_loss(&tuned),
        common::first_train_loss(&dec)
    );
    let err =
        train::train_decoder_from(&exp, &shards, &run_opts(&tmp.path().join("x")), Some(&sta))
            .unwrap_err()
            .to_string();
    assert!(
        err.contains("staria") && err.contains("is not a decoder-only"),
        "{err}"
    );
}

#[test]
fn staria_stages_freeze_and_unfreeze_in_order() {
    let mut exp = common::tiny_config();
    exp.staria.stage_a_steps = 2;
    exp.staria.stage_b_steps = 4;
    exp.staria.stage_c_steps = 1;
    let t = |step, name| train::staria_trainable(&exp, 4, step, name);
    assert!(t(0, "xattn.0.q.weight"));
    assert!(t(0, "section_emb.weight"));
    assert!(!t(0, "layers.3.attn.qkv.weight"));
    assert!(!t(0, "lm_head.weight"));
    // Stage B, first step: head and the top layer.
    assert!(t(2, "lm_head.weight"));
    assert!(t(2, "layers.3.attn.qkv.weight"));
    assert!(!t(2, "layers.2.attn.qkv.weight"));
    assert!(!t(2, "encoder.layers.0.attn.qkv.weight"));
    // Stage B, last step: every decoder layer, still no encoder or embedding.
    assert!(t(5, "layers.0.attn.qkv.weight"));
    assert!(!t(5, "tok_emb.weight"));
    assert!(!t(5, "encoder.tok_emb.weight"));
    // Stage C: everything.
    assert!(t(6, "tok_emb.weight"));
    assert!(t(6, "encoder.tok_emb.weight"));
}

#[test]
fn shipped_configs_build_valid_models() {
    let vocab = Tokenizer::new(TokenizerConfig::default())
        .unwrap()
        .vocab_size();
    // Every config the repository ships, the run configs behind the shipped model included.
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("configs");
    let mut paths: Vec<_> = std::fs::read_dir(&dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|x| x == "toml"))
        .collect();
    paths.sort();
    assert!(paths.len() >= 3, "{paths:?}");
    for path in paths {
        let exp = staria_trainer::config::ExperimentConfig::load(&path)
            .unwrap_or_else(|e| panic!("{}: {e}", path.display()));
        for kind in [
            staria_models::model::ModelKind::Decoder,
            staria_models::model::ModelKind::Staria,
        ] {
            staria_trainer::models::model_config(&exp, kind, vocab).unwrap();
        }
    }
    // The tokenizer settings shipped for `prepare --tokenizer`.
    let text = std::fs::read_to_string(dir.join("tokenizer-section-windows.json")).unwrap();
    let cfg: TokenizerConfig = serde_json::from_str(&text).unwrap();
    assert!(cfg.section_windows);
    assert_eq!(Tokenizer::new(cfg).unwrap().vocab_size(), vocab);
    // An override of an unknown field is an error naming it.
    let mut exp = common::tiny_config();
    exp.model
        .overrides
        .insert("n_layerz".into(), toml::Value::Integer(3));
    let e =
        staria_trainer::models::model_config(&exp, staria_models::model::ModelKind::Decoder, vocab)
            .unwrap_err();
    assert!(e.to_string().contains("n_layerz"), "{e}");
}

/// On the real corpus when it is there (CI machines may not have it).
#[test]
fn prepares_the_real_corpus_when_present() {
    // `../shared/data/corpus` next to the repository (a worktree sits one level deeper), or
    // STARIA_CORPUS.
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
    let candidates = [
        std::env::var_os("STARIA_CORPUS").map(std::path::PathBuf::from),
        Some(root.join("../shared/data/corpus")),
        Some(root.join("../../shared/data/corpus")),
    ];
    let Some(corpus) = candidates
        .into_iter()
        .flatten()
        .find(|c| c.join("manifest.jsonl").exists())
    else {
        eprintln!("skipping: no corpus at ../shared/data/corpus");
        return;
    };
    let tmp = tempfile::tempdir().unwrap();
    let tok = Tokenizer::new(TokenizerConfig::default()).unwrap();
    let opts = PrepareOptions {
        val_fraction: 0.05,
        seed: 0,
        synthetic: 40,
        verbose: false,
    };
    let r = prepare::prepare(&corpus, tmp.path(), &tok, &opts).unwrap();
    let shards = Shards::open(tmp.path()).unwrap();
    let (train, val) = (shards.pieces(TRAIN), shards.pieces(VALIDATION));
    assert_eq!(train.len() + val.len() + r.index.skipped.len(), r.files);
    assert!(
        r.index.skipped.len() * 100 < r.files,
        "{} skipped",
        r.index.skipped.len()
    );
    let frac = val.len() as f64 / (train.len() + val.len()) as f64;
    assert!((0.03..0.07).contains(&frac), "validation fraction {frac}");
    for p in train.iter().chain(val) {
        match p.source.as_str() {
            "essen" => {
                assert_eq!(p.origin, SectionOrigin::Repetition);
                assert_eq!(p.style.as_deref(), Some("folk_song"));
            }
            "ryans" | "bach" => assert_eq!(p.origin, SectionOrigin::Markers, "{}", p.id),
            other => panic!("unexpected source {other}"),
        }
    }
    assert_eq!(shards.pieces(SYNTHETIC).len(), 40);
}

#[test]
fn runs_resume_across_the_candle_and_fast_backends() {
    let tmp = tempfile::tempdir().unwrap();
    let shards = prepared(tmp.path());
    let exp = common::tiny_config();
    let opts = |dir: &str, backend, resume, max_steps| RunOptions {
        backend,
        resume,
        max_steps,
        ..run_opts(&tmp.path().join(dir))
    };
    let candle = train::train_decoder(&exp, &shards, &opts("c", Backend::Candle, false, None))
        .unwrap()
        .last_loss
        .unwrap();
    let fast = train::train_decoder(&exp, &shards, &opts("f", Backend::Fast, false, None))
        .unwrap()
        .last_loss
        .unwrap();
    let mut crossed = Vec::new();
    for (dir, first, second) in [
        ("cf", Backend::Candle, Backend::Fast),
        ("fc", Backend::Fast, Backend::Candle),
    ] {
        let s = train::train_decoder(&exp, &shards, &opts(dir, first, false, Some(5))).unwrap();
        assert_eq!(s.steps, 5);
        let s = train::train_decoder(&exp, &shards, &opts(dir, second, true, None)).unwrap();
        assert_eq!(s.steps, 12);
        crossed.push(s.last_loss.unwrap());
    }
    // Same maths, different rounding: the four runs agree closely after 12 steps.
    for (what, loss) in [
        ("fast", fast),
        ("candle->fast", crossed[0]),
        ("fast->candle", crossed[1]),
    ] {
        assert!(
            ((loss - candle) / candle).abs() < 2e-3,
            "{what} run ends at loss {loss}, candle at {candle}"
        );
    }
}

#[test]
fn staria_runs_resume_across_the_candle_and_fast_backends() {
    let tmp = tempfile::tempdir().unwrap();
    let shards = prepared(tmp.path());
    let exp = common::tiny_config();
    let dec = tmp.path().join("decoder");
    let enc = tmp.path().join("encoder");
    train::train_decoder(&exp, &shards, &run_opts(&dec)).unwrap();
    contrastive::train_encoder(&exp, &shards, &run_opts(&enc)).unwrap();
    let opts = |dir: &str, backend, resume, max_steps| RunOptions {
        backend,
        resume,
        max_steps,
        ..run_opts(&tmp.path().join(dir))
    };
    // Stages A (3 steps), B (3) and C (2, the encoder training too).
    let run = |dir: &str, backend, resume, max_steps| {
        train::train_staria(
            &exp,
            &shards,
            &opts(dir, backend, resume, max_steps),
            &dec,
            &enc,
        )
        .unwrap()
    };
    let candle = run("c", Backend::Candle, false, None);
    let fast = run("f", Backend::Fast, false, None);
    assert!(
        !candle.fast && fast.fast,
        "the fast run must run on the fast path"
    );
    let mut runs = vec![("fast", fast)];
    // Stopped inside stage B, resumed on the other backend through stage C.
    for (dir, first, second) in [
        ("cf", Backend::Candle, Backend::Fast),
        ("fc", Backend::Fast, Backend::Candle),
    ] {
        let s = run(dir, first, false, Some(4));
        assert_eq!(s.steps, 4);
        let s = run(dir, second, true, None);
        assert_eq!(s.steps, 8);
        assert_eq!(s.fast, second == Backend::Fast);
        runs.push((dir, s));
    }
    let weights = |dir: &std::path::Path| {
        candle_core::safetensors::load(dir.join("model.safetensors"), &Device::Cpu).unwrap()
    };
    let want = weights(&candle.out);
    for (what, s) in &runs {
        // Same maths, different rounding: the runs agree closely after 8 steps (measured:
        // losses within 1e-7 relative, weights within 2e-6).
        let (loss, val) = (s.last_loss.unwrap(), s.val_loss.unwrap());
        let (c_loss, c_val) = (candle.last_loss.unwrap(), candle.val_loss.unwrap());
        assert!(
            ((loss - c_loss) / c_loss).abs() < 1e-5 && ((val - c_val) / c_val).abs() < 1e-5,
            "{what} run ends at loss {loss} (validation {val}), candle at {c_loss} ({c_val})"
        );
        let got = weights(&s.out);
        assert_eq!(got.len(), want.len());
        for (name, w) in &want {
            let diff = (w - &got[name])
                .unwrap()
                .abs()
                .unwrap()
                .max_all()
                .unwrap()
                .to_scalar::<f32>()
                .unwrap();
            let scale = w
                .abs()
                .unwrap()
                .max_all()
                .unwrap()
                .to_scalar::<f32>()
                .unwrap();
            assert!(
                diff <= 1e-4 * scale.max(1.0),
                "{what} run: {name} differs from candle's by {diff} (max |w| {scale})"
            );
        }
    }
}

#[test]
fn a_run_adds_the_window_input_to_a_decoder_without_it() {
    let tmp = tempfile::tempdir().unwrap();
    let shards = prepared(tmp.path());
    let exp = common::tiny_config();
    let dec = tmp.path().join("decoder");
    train::train_decoder(&exp, &shards, &run_opts(&dec)).unwrap();

    let mut with_window = exp.clone();
    with_window
        .model
        .overrides
        .insert("window_bins".into(), toml::Value::Integer(8));
    let tuned = tmp.path().join("tuned");
    let opts = RunOptions {
        max_steps: Some(3),
        backend: Backend::Fast,
        ..run_opts(&tuned)
    };
    train::train_decoder_from(&with_window, &shards, &opts, Some(&dec)).unwrap();
    let config: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(tuned.join("config.json")).unwrap()).unwrap();
    assert_eq!(config["window_bins"], 8);
    let tensors = staria_models::checkpoint::load_tensors(&tuned, &Device::Cpu).unwrap();
    let table = tensors["win_emb.weight"]
        .flatten_all()
        .unwrap()
        .to_vec1::<f32>()
        .unwrap();
    assert!(table.iter().any(|&x| x != 0.0), "the table trained");

    // The checkpoint evaluates (training forward with bins, generation on the fast decoder
    // with its clock) like any other.
    let data = EvalData::load(&tmp.path().join("corpus"), &eval_opts()).unwrap();
    let r = eval::evaluate(&tuned, &data, &eval_opts()).unwrap();
    assert!(r.nll_bits_per_token.is_finite() && r.nll_bits_per_token > 0.0);
    assert_eq!(r.generations, 2);
    assert!((0.0..=1.0).contains(&r.valid_rate));

    // The other way round is refused: a window model is not this experiment's size.
    let err = train::train_decoder_from(
        &exp,
        &shards,
        &run_opts(&tmp.path().join("back")),
        Some(&tuned),
    )
    .unwrap_err()
    .to_string();
    assert!(err.contains("is not a decoder-only"), "{err}");
}

#[test]
fn a_run_adds_the_beat_grid_head_and_the_data_sits_on_its_grid() {
    use staria_trainer::batch::Augment;

    let tmp = tempfile::tempdir().unwrap();
    let shards = prepared(tmp.path());
    // The fixtures keep 120 bpm: every piece records its quarter note.
    for split in [TRAIN, VALIDATION, SYNTHETIC] {
        for p in shards.pieces(split) {
            assert_eq!(p.quarter_ms, Some(500.0), "{}", p.id);
        }
    }
    // Training rows put every onset the data plays on an eighth (the fixtures play eighths),
    // through windows, cut points and a tempo augmentation whose beat (535 ms) does not divide
    // the 5 s window.
    let aug = Augment {
        tempo: 1.07,
        ..Augment::NONE
    };
    let (bins, checked_later_windows) = onset_grid_bins(&shards, aug);
    assert!(bins.iter().all(|&b| b == 0 || b == 24), "{bins:?}");
    assert!(
        bins.len() > 50 && checked_later_windows > 10,
        "{} {checked_later_windows}",
        bins.len()
    );
    // Doubled note values against the same beat: the eighths become quarters, every onset on a
    // beat (with the grid stretched alike they would stay on eighths).
    let aug = Augment {
        tempo: 1.07,
        note_value: staria_trainer::batch::LONGER_NOTE_VALUES,
        ..Augment::NONE
    };
    let (bins, _) = onset_grid_bins(&shards, aug);
    assert!(bins.len() > 25, "{}", bins.len());
    assert!(bins.iter().all(|&b| b == 0), "{bins:?}");

    // A decoder without the head gets one added by a run from it (the head starts at zero).
    let exp = common::tiny_config();
    let dec = tmp.path().join("decoder");
    train::train_decoder(&exp, &shards, &run_opts(&dec)).unwrap();
    let mut with_grid = exp.clone();
    with_grid
        .model
        .overrides
        .insert("grid_bins".into(), toml::Value::Integer(48));
    let tuned = tmp.path().join("tuned");
    let opts = RunOptions {
        max_steps: Some(3),
        backend: Backend::Fast,
        ..run_opts(&tuned)
    };
    train::train_decoder_from(&with_grid, &shards, &opts, Some(&dec)).unwrap();
    let tensors = staria_models::checkpoint::load_tensors(&tuned, &Device::Cpu).unwrap();
    let head = tensors["grid_head.weight"]
        .flatten_all()
        .unwrap()
        .to_vec1::<f32>()
        .unwrap();
    assert_eq!(head.len(), 48 * 32);
    assert!(head.iter().any(|&x| x != 0.0), "the head trained");
    // It evaluates (generation sets the reference's tempo grid) like any other checkpoint.
    let data = EvalData::load(&tmp.path().join("corpus"), &eval_opts()).unwrap();
    let r = eval::evaluate(&tuned, &data, &eval_opts()).unwrap();
    assert!(r.nll_bits_per_token.is_finite() && r.nll_bits_per_token > 0.0);
    assert_eq!(r.generations, 2);
}

#[test]
fn gate_lr_scale_opens_the_cross_attention_gates_faster() {
    let tmp = tempfile::tempdir().unwrap();
    let shards = prepared(tmp.path());
    let mut exp = common::tiny_config();
    let dec = tmp.path().join("decoder");
    let enc = tmp.path().join("encoder");
    train::train_decoder(&exp, &shards, &run_opts(&dec)).unwrap();
    contrastive::train_encoder(&exp, &shards, &run_opts(&enc)).unwrap();
    exp.staria.stage_a_steps = 4;
    exp.staria.stage_b_steps = 0;
    exp.staria.stage_c_steps = 0;
    // The mean |gate| over the sites after stage A at each scale.
    let mut gates = Vec::new();
    for scale in [1.0, 20.0] {
        exp.staria.gate_lr_scale = scale;
        let out = tmp.path().join(format!("staria-{scale}"));
        train::train_staria(&exp, &shards, &run_opts(&out), &dec, &enc).unwrap();
        let t =
            candle_core::safetensors::load(out.join("model.safetensors"), &Device::Cpu).unwrap();
        let g: Vec<f32> = t
            .iter()
            .filter(|(k, _)| k.starts_with("xattn.") && k.ends_with("_gate"))
            .map(|(_, v)| v.flatten_all().unwrap().to_vec1::<f32>().unwrap()[0].abs())
            .collect();
        assert!(!g.is_empty());
        gates.push(g.iter().sum::<f32>() / g.len() as f32);
    }
    assert!(
        gates[1] > 5.0 * gates[0],
        "gates at scale 1 and 20: {gates:?}"
    );
}

/// The beat-grid bin (48 per quarter note) of every target onset in the training rows of the
/// first six train pieces under `aug`, and how many of them sit in a later grid window.
fn onset_grid_bins(shards: &Shards, aug: staria_trainer::batch::Augment) -> (Vec<u32>, usize) {
    use staria_models::grid::GridRows;
    use staria_models::tokenizer::TokenKind;
    use staria_trainer::batch::{Layout, collate, prepare_piece};

    let tok = &shards.tokenizer;
    let rows = GridRows::new(48, tok).unwrap();
    let (mut bins, mut later_windows) = (Vec::new(), 0);
    for p in shards.pieces(TRAIN).iter().take(6) {
        let prepared = prepare_piece(
            tok,
            shards.piece_tokens(TRAIN, p),
            &shards.snippets(TRAIN, p),
            p.style.as_deref(),
            &p.form,
            p.quarter_ms,
            aug,
            64,
        )
        .unwrap();
        for ex in prepared.all_examples(tok, 320).unwrap() {
            let b = collate(
                std::slice::from_ref(&ex),
                Layout::Inline,
                0,
                None,
                Some(rows),
                0,
                &Device::Cpu,
            )
            .unwrap();
            let grid = b.grid.unwrap().rows.flatten_all().unwrap();
            let grid = grid.to_vec1::<u32>().unwrap();
            for (i, &target) in ex.inline[1..].iter().enumerate() {
                if i + 1 < ex.inline_given {
                    continue;
                }
                if let TokenKind::Onset { .. } = tok.kind(target) {
                    let row = &grid[i * rows.onsets..(i + 1) * rows.onsets];
                    bins.push(row[(target - rows.first_onset) as usize]);
                    later_windows += usize::from(ex.inline_grid_windows[i] > 0);
                }
            }
        }
    }
    (bins, later_windows)
}
