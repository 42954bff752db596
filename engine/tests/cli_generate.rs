//! The `staria` binary end to end with a tiny checkpoint and a prompt written by the test.

mod gen_support;

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use gen_support::{prompt_song, write_checkpoint};
use staria_models::SectionLabel;

struct Fixture {
    dir: tempfile::TempDir,
}

impl Fixture {
    fn new() -> Fixture {
        let dir = tempfile::tempdir().unwrap();
        write_checkpoint(&dir.path().join("ckpt"), 11);
        staria_models::write_midi_file(&prompt_song(), &dir.path().join("prompt.mid")).unwrap();
        Fixture { dir }
    }
    fn path(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }
    fn ckpt(&self) -> String {
        self.path("ckpt").display().to_string()
    }
}

fn staria(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_staria"))
        .args(args)
        .env_remove("STARIA_MODEL")
        .env("RAYON_NUM_THREADS", "2")
        .output()
        .unwrap()
}

fn s(p: &Path) -> String {
    p.display().to_string()
}

fn generate(f: &Fixture, out: &Path, extra: &[&str]) -> Output {
    let (prompt, out, ckpt) = (s(&f.path("prompt.mid")), s(out), f.ckpt());
    let mut args = vec![
        "generate", "--prompt", &prompt, "--seed", "7", "--out", &out, "--model", &ckpt,
    ];
    for (flag, default) in [
        ("--form", "AABA"),
        ("--bars", "2"),
        ("--max-polyphony", "2"),
    ] {
        if !extra.contains(&flag) {
            args.extend([flag, default]);
        }
    }
    args.extend_from_slice(extra);
    staria(&args)
}

/// A failed run: non-zero exit and exactly one stderr line containing `needle`.
fn assert_fails(o: &Output, needle: &str) {
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(
        !o.status.success(),
        "expected failure, got success; stderr: {err}"
    );
    assert!(
        matches!(o.status.code(), Some(1) | Some(2)),
        "exit {:?}: {err}",
        o.status.code()
    );
    assert_eq!(err.trim().lines().count(), 1, "one line expected: {err}");
    assert!(err.contains(needle), "{needle:?} not in: {err}");
    assert!(!err.contains("panicked"), "{err}");
}

#[test]
fn aaba_reopens_with_markers_in_order_and_is_reproducible() {
    let f = Fixture::new();
    let (o1, o2) = (f.path("one.mid"), f.path("two.mid"));
    let r = generate(&f, &o1, &[]);
    assert!(r.status.success(), "{}", String::from_utf8_lossy(&r.stderr));
    let song = staria_models::read_midi_file(&o1).unwrap();
    use SectionLabel::{A, B};
    assert_eq!(
        song.sections.iter().map(|s| s.label).collect::<Vec<_>>(),
        vec![A, A, B, A]
    );
    for sec in &song.sections {
        let n = song
            .notes
            .iter()
            .filter(|n| n.start_tick >= sec.start_tick && n.start_tick < sec.end_tick)
            .count();
        assert!(n > 0, "section {sec:?} has no notes");
    }
    let r = generate(&f, &o2, &[]);
    assert!(r.status.success());
    assert_eq!(
        std::fs::read(&o1).unwrap(),
        std::fs::read(&o2).unwrap(),
        "same command, same bytes"
    );
    // Another seed gives another piece.
    let o3 = f.path("three.mid");
    let r = staria(&[
        "generate",
        "--prompt",
        &s(&f.path("prompt.mid")),
        "--form",
        "AABA",
        "--bars",
        "2",
        "--seed",
        "8",
        "--out",
        &s(&o3),
        "--model",
        &f.ckpt(),
        "--max-polyphony",
        "2",
    ]);
    assert!(r.status.success());
    assert_ne!(std::fs::read(&o1).unwrap(), std::fs::read(&o3).unwrap());
}

#[test]
fn sections_from_bar_ranges_and_constraints() {
    let f = Fixture::new();
    let out = f.path("ranges.mid");
    let r = generate(
        &f,
        &out,
        &[
            "--sections",
            "A=1-2,B=3-4",
            "--scale",
            "G major",
            "--pitch-range",
            "50-80",
        ],
    );
    assert!(r.status.success(), "{}", String::from_utf8_lossy(&r.stderr));
    let song = staria_models::read_midi_file(&out).unwrap();
    assert!(!song.notes.is_empty());
    let g = "G major"
        .parse::<staria_engine::constraints::Scale>()
        .unwrap();
    assert!(
        song.notes
            .iter()
            .all(|n| (50..=80).contains(&n.pitch) && g.contains(n.pitch))
    );
}

#[test]
fn continue_appends_after_the_input() {
    let f = Fixture::new();
    let out = f.path("cont.mid");
    let r = staria(&[
        "continue",
        "--input",
        &s(&f.path("prompt.mid")),
        "--bars",
        "2",
        "--out",
        &s(&out),
        "--model",
        &f.ckpt(),
        "--max-polyphony",
        "2",
        "--seed",
        "3",
    ]);
    assert!(r.status.success(), "{}", String::from_utf8_lossy(&r.stderr));
    let input = prompt_song();
    let song = staria_models::read_midi_file(&out).unwrap();
    assert!(song.notes.len() > input.notes.len());
    let end = input.notes.iter().map(|n| n.end_ms).fold(0.0, f64::max);
    let added: Vec<_> = song
        .notes
        .iter()
        .filter(|n| n.start_ms >= end - 1.0)
        .collect();
    assert_eq!(added.len(), song.notes.len() - input.notes.len());
    // 2 bars of 4/4 at 120 bpm (2000 ms a bar) from the first bar line at or after the end, so
    // the added notes keep the input's beat.
    let start = (end / 2000.0 - 1e-6).ceil() * 2000.0;
    assert!(
        added
            .iter()
            .all(|n| n.start_ms >= start - 2.0 && n.end_ms <= start + 4000.0 + 2.0),
        "{added:?}"
    );
}

#[test]
fn info_and_bench_describe_the_checkpoint() {
    let f = Fixture::new();
    let r = staria(&["info", "--model", &f.ckpt()]);
    let text = String::from_utf8_lossy(&r.stdout);
    assert!(r.status.success() && text.contains("decoder"), "{text}");
    let r = staria(&["info", "--model", &f.ckpt(), "--json"]);
    let v: serde_json::Value = serde_json::from_slice(&r.stdout).unwrap();
    assert_eq!(v["kind"], "decoder");
    assert_eq!(v["preset"], "tiny");
    assert!(v["parameters"].as_u64().unwrap() > 1000);
    assert_eq!(
        v["vocab_size"].as_u64().unwrap() as usize,
        gen_support::tokenizer().vocab_size()
    );
    let ckpt = f.ckpt();
    let r = staria(&["bench", "--model", &ckpt, "--threads", "1"]);
    assert!(r.status.success(), "{}", String::from_utf8_lossy(&r.stderr));
    let out = String::from_utf8_lossy(&r.stdout);
    assert_eq!(out.trim().lines().count(), 1, "{out}");
    let v: serde_json::Value = serde_json::from_str(out.trim()).unwrap();
    for key in [
        "decode_tok_per_s",
        "prefill_ms_512",
        "first_note_ms",
        "peak_rss_mb",
        "model",
        "device",
        "threads",
    ] {
        assert!(!v[key].is_null(), "{key} missing in {out}");
    }
    assert_eq!(v["threads"], 1);
    assert!(v["decode_tok_per_s"].as_f64().unwrap() > 0.0);
    // The CPU default is the fast decoder with f16 weights; both can be chosen.
    assert_eq!(
        (&v["backend"], &v["weights"]),
        (&"fast".into(), &"f16".into())
    );
    for (extra, backend, weights) in [
        (&["--weights", "q8"][..], "fast", "q8"),
        (
            &["--backend", "fast", "--weights", "f32"][..],
            "fast",
            "f32",
        ),
        (&["--backend", "candle"][..], "candle", "f32"),
    ] {
        let mut args = vec!["bench", "--model", &ckpt, "--threads", "1"];
        args.extend_from_slice(extra);
        let r = staria(&args);
        assert!(r.status.success(), "{}", String::from_utf8_lossy(&r.stderr));
        let v: serde_json::Value = serde_json::from_slice(&r.stdout).unwrap();
        assert_eq!(v["backend"], backend, "{extra:?}");
        assert_eq!(v["weights"], weights, "{extra:?}");
        assert!(v["decode_tok_per_s"].as_f64().unwrap() > 0.0);
    }
}

#[test]
fn backends_write_the_same_piece_with_exact_weights() {
    // Greedy decoding: the fast f32 path and candle agree to 1e-4 on every logit, so they pick
    // the same tokens and write the same file.
    let f = Fixture::new();
    let (a, b) = (f.path("fast.mid"), f.path("candle.mid"));
    let greedy = ["--temperature", "0"];
    let r = generate(
        &f,
        &a,
        &[&greedy[..], &["--backend", "fast", "--weights", "f32"]].concat(),
    );
    assert!(r.status.success(), "{}", String::from_utf8_lossy(&r.stderr));
    let r = generate(&f, &b, &[&greedy[..], &["--backend", "candle"]].concat());
    assert!(r.status.success(), "{}", String::from_utf8_lossy(&r.stderr));
    assert_eq!(std::fs::read(&a).unwrap(), std::fs::read(&b).unwrap());
}

#[test]
fn bad_inputs_fail_with_one_line_naming_the_problem() {
    let f = Fixture::new();
    let out = f.path("never.mid");
    assert_fails(&generate(&f, &out, &["--bars", "0"]), "bars");
    assert_fails(&generate(&f, &out, &["--temperature", "-1"]), "temperature");
    assert_fails(&generate(&f, &out, &["--top-p", "0"]), "top-p");
    assert_fails(
        &generate(&f, &out, &["--sections", "E=1-2"]),
        "unknown section letter",
    );
    assert_fails(&generate(&f, &out, &["--sections", "A=9-12"]), "no notes");
    assert_fails(&generate(&f, &out, &["--scale", "H major"]), "scale");
    assert_fails(&generate(&f, &out, &["--device", "tpu"]), "device");
    assert_fails(&generate(&f, &out, &["--backend", "gpu"]), "--backend");
    assert_fails(&generate(&f, &out, &["--weights", "q4"]), "--weights");
    assert_fails(
        &generate(&f, &out, &["--backend", "candle", "--weights", "q8"]),
        "--weights applies to the fast backend",
    );
    assert_fails(&generate(&f, &out, &["--form", "AXBA"]), "form");
    assert_fails(&generate(&f, &out, &["--no-such-flag"]), "--no-such-flag");
    assert!(!out.exists());

    let ckpt = f.ckpt();
    let run = |prompt: &Path, model: &str| {
        staria(&[
            "generate",
            "--prompt",
            &s(prompt),
            "--form",
            "AABA",
            "--out",
            &s(&out),
            "--model",
            model,
        ])
    };
    let missing = f.path("nope.mid");
    assert_fails(&run(&missing, &ckpt), "nope.mid");
    let corrupt = f.path("corrupt.mid");
    std::fs::write(&corrupt, b"MThd\x00\x00\x00\x06garbage").unwrap();
    assert_fails(&run(&corrupt, &ckpt), "corrupt.mid");
    let empty = f.path("empty.mid");
    let mut song = prompt_song();
    song.notes.clear();
    staria_models::write_midi_file(&song, &empty).unwrap();
    assert_fails(&run(&empty, &ckpt), "no notes");

    let prompt = f.path("prompt.mid");
    assert_fails(&run(&prompt, &s(&f.path("no-such-model"))), "no-such-model");
    // A checkpoint whose tokenizer is not the model's.
    let other = f.path("mismatched");
    write_checkpoint(&other, 1);
    let tok = staria_models::tokenizer::Tokenizer::new(staria_models::tokenizer::TokenizerConfig {
        styles: vec!["x".into()],
        ..Default::default()
    })
    .unwrap();
    std::fs::write(other.join("tokenizer.json"), tok.to_json()).unwrap();
    let r = run(&prompt, &s(&other));
    assert_fails(&r, "tokenizer.json");
    assert!(!out.exists());
}

/// `staria models` lists every built-in model; `--model NAME` and `$STARIA_MODEL=NAME` choose one
/// (unpacked into `$STARIA_CACHE_DIR`); a folder of that name in the working folder wins; an
/// unknown name is refused naming the built-in names.
#[test]
fn built_in_models_are_listed_and_chosen_by_name() {
    use staria_engine::default_model::{BUILTIN_NAMES, DEFAULT_MODEL};
    let f = Fixture::new();
    let cache = f.path("cache");
    let run = |args: &[&str], cwd: &Path, env: Option<&str>| {
        let mut c = Command::new(env!("CARGO_BIN_EXE_staria"));
        c.args(args)
            .current_dir(cwd)
            .env_remove("STARIA_MODEL")
            .env("STARIA_CACHE_DIR", &cache);
        if let Some(v) = env {
            c.env("STARIA_MODEL", v);
        }
        c.output().unwrap()
    };
    let ok = |o: &Output| {
        assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
        String::from_utf8_lossy(&o.stdout).to_string()
    };

    let text = ok(&run(&["models"], f.dir.path(), None));
    for name in BUILTIN_NAMES {
        assert!(text.contains(name), "{name} missing: {text}");
    }
    let default_line = text.lines().find(|l| l.starts_with(DEFAULT_MODEL)).unwrap();
    assert!(default_line.trim_end().ends_with("default"), "{text}");
    let list: serde_json::Value =
        serde_json::from_str(&ok(&run(&["models", "--json"], f.dir.path(), None))).unwrap();
    let list = list.as_array().unwrap();
    assert_eq!(list.len(), BUILTIN_NAMES.len());
    for (row, name) in list.iter().zip(BUILTIN_NAMES) {
        assert_eq!(row["name"], name);
        assert!(row["kind"] == "decoder" || row["kind"] == "staria", "{row}");
        assert!(row["bytes"].as_u64().unwrap() > 100_000, "{row}");
        assert_eq!(row["default"], name == DEFAULT_MODEL, "{row}");
    }
    assert!(!cache.exists(), "listing unpacked something");

    // By name, from --model or $STARIA_MODEL: the built-in model, unpacked into the cache.
    for (args, env) in [
        (&["info", "--json", "--model", "baseline-small"][..], None),
        (&["info", "--json"][..], Some("baseline-small")),
    ] {
        let v: serde_json::Value =
            serde_json::from_str(&ok(&run(args, f.dir.path(), env))).unwrap();
        assert_eq!(v["name"], "baseline-small");
        assert_eq!(v["kind"], "decoder");
        assert!(
            Path::new(v["path"].as_str().unwrap()).starts_with(&cache),
            "{v}"
        );
    }
    // Each built-in model's kind, as its info says it (the Staria one with its encoder); both
    // kinds are built in (issue 9: the baseline and Staria, to switch between).
    let mut kinds = Vec::new();
    for name in BUILTIN_NAMES {
        let v: serde_json::Value = serde_json::from_str(&ok(&run(
            &["info", "--json", "--model", name],
            f.dir.path(),
            None,
        )))
        .unwrap();
        assert_eq!(v["name"], name);
        match v["kind"].as_str() {
            Some("staria") => assert!(v["encoder"]["latents"].as_u64().unwrap() > 0, "{v}"),
            Some("decoder") => assert!(v["encoder"].is_null(), "{v}"),
            _ => panic!("{name}: no kind: {v}"),
        }
        kinds.push(v["kind"].as_str().unwrap().to_string());
    }
    kinds.sort();
    kinds.dedup();
    assert_eq!(kinds, ["decoder", "staria"]);
    // A folder named like a built-in model, in the working folder, is that folder.
    let cwd = f.path("work");
    write_checkpoint(&cwd.join("baseline-small"), 3);
    let v: serde_json::Value = serde_json::from_str(&ok(&run(
        &["info", "--json", "--model", "baseline-small"],
        &cwd,
        None,
    )))
    .unwrap();
    assert_eq!(v["preset"], "tiny", "{v}");
    // Neither a folder nor a name.
    for (args, env, setting) in [
        (
            &["info", "--model", "no-such-model"][..],
            None,
            "model no-such-model",
        ),
        (
            &["info"][..],
            Some("no-such-model"),
            "$STARIA_MODEL no-such-model",
        ),
    ] {
        let o = run(args, f.dir.path(), env);
        assert_fails(&o, setting);
        let err = String::from_utf8_lossy(&o.stderr);
        for name in BUILTIN_NAMES {
            assert!(err.contains(name), "{name} missing: {err}");
        }
    }
}
