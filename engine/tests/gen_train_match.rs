//! Train/generate agreement. What the engine computes while generating must be what the model
//! was trained on:
//! - the engine's prompt (snippets, form, style, `<S>`) has the training layout: the trainer
//!   builds its prompts with `Tokenizer::extract_snippet` + `Tokenizer::build_prompt`
//!   (`trainer/src/prepare.rs`, `trainer/src/batch.rs`), the piece body follows with its section
//!   tag first (docs/ARCHITECTURE.md, "Token sequence layout");
//! - the engine's per-token log-probabilities of a real piece (prompt + body fed token by token
//!   through `Generator`) equal the teacher-forced ones of `AnyModel::forward_train` on the same
//!   ids, on both backends;
//! - the constraint masks never exclude the token the data has next.
//!
//! The `#[ignore]`d tests measure the same on the shipped model and the corpus (paths from
//! environment variables); the others run on fixtures.

mod gen_support;

use std::path::{Path, PathBuf};

use candle_core::{D, DType, Device, Tensor};
use staria_engine::constraints::{ConstrainedDecoder, Constraints};
use staria_engine::generate::{
    BackendChoice, GenRequest, Generator, GeneratorOptions, Snippets, Target,
};
use staria_models::checkpoint;
use staria_models::fast::WeightFormat;
use staria_models::grid::{BeatGrid, GridInput, GridRows, grid_windows};
use staria_models::midi::read_midi_file;
use staria_models::model::ModelConfig;
use staria_models::model::ModelKind;
use staria_models::params::SeededVars;
use staria_models::tokenizer::{PromptSpec, StreamDecoder, TokenKind, Tokenizer};
use staria_models::window::{WindowBins, latest_onsets};
use staria_models::{CheckpointConfig, DecoderConfig, Prompt, SectionLabel, Song};

fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..")
}

fn mortons_reel() -> Song {
    read_midi_file(&repo().join("examples/prompts/mortons_reel.mid")).unwrap()
}

/// Snippets as `staria generate` takes them from a prompt file: the notes starting in the first
/// occurrence of each marked section, re-timed from its start.
fn cli_snippets(song: &Song) -> Snippets {
    let mut s = Snippets::default();
    for label in SectionLabel::ALL {
        if let Some(sec) = song.first_section(label) {
            s.set(label, song.section_notes(sec));
        }
    }
    s
}

fn form_of(song: &Song) -> String {
    let mut secs: Vec<_> = song.sections.iter().collect();
    secs.sort_by(|a, b| a.start_ms.total_cmp(&b.start_ms));
    secs.iter().map(|s| s.label.letter()).collect()
}

fn request(form: &str, style: Option<&str>) -> GenRequest {
    let mut req = GenRequest::new(Target::Section(SectionLabel::A), 8, 120.0);
    req.form = form.into();
    req.style = style.map(str::to_string);
    req
}

/// The prompt the trainer builds for `song` (no augmentation): first-occurrence snippets of
/// `snippet_tokens` each, the form token when there is one, the style.
fn trainer_prompt(tok: &Tokenizer, song: &Song, style: Option<&str>) -> Prompt {
    let form = form_of(song);
    let spec = PromptSpec {
        style: style.map(str::to_string),
        form: tok.form_id(&form).map(|_| form.clone()),
        snippets: SectionLabel::ALL
            .iter()
            .filter_map(|&l| {
                tok.extract_snippet(song, l, tok.config().snippet_tokens)
                    .filter(|t| !t.is_empty())
                    .map(|t| (l, t))
            })
            .collect(),
    };
    tok.build_prompt(&spec).unwrap()
}

/// The piece body after `<S>` as training sequences hold it.
fn body_of(tok: &Tokenizer, song: &Song) -> Vec<u32> {
    let piece = tok.encode_piece(song);
    assert_eq!(piece[0], tok.start_id());
    piece[1..].to_vec()
}

fn log_softmax_at(logits: &[f32], id: u32) -> f64 {
    let m = logits.iter().fold(f32::NEG_INFINITY, |a, &b| a.max(b)) as f64;
    let z: f64 = logits.iter().map(|&l| (l as f64 - m).exp()).sum();
    logits[id as usize] as f64 - m - z.ln()
}

/// The engine's log-probability of each body token: prompt prefilled by `begin`, then the body
/// fed token by token with `step`.
fn engine_logprobs(g: &mut Generator, prompt: &Prompt, body: &[u32]) -> Vec<f64> {
    let mut out = Vec::with_capacity(body.len());
    let mut logits = g.begin(prompt).unwrap().to_vec();
    for (i, &id) in body.iter().enumerate() {
        out.push(log_softmax_at(&logits, id));
        if i + 1 < body.len() {
            logits = g.step(id).unwrap().to_vec();
        }
    }
    out
}

/// Teacher-forced log-probabilities of the body tokens, as the training loss sees them
/// (`trainer/src/batch.rs`, `masked_nll`: log-softmax of `forward_train` over the sequence).
/// `grid`: the piece's beat grid, as the trainer's batches build it from the tempo map.
fn train_logprobs(dir: &Path, prompt: &Prompt, body: &[u32], grid: Option<BeatGrid>) -> Vec<f64> {
    let ck = checkpoint::load(dir, &Device::Cpu).unwrap();
    assert_eq!(ck.model.kind(), ModelKind::Decoder);
    let mut seq = prompt.inline.clone();
    seq.extend_from_slice(body);
    let n = seq.len();
    // The window-position bins as the trainer's batches compute them (`Example`'s onsets).
    let win = WindowBins::of(ck.config.model.decoder()).map(|bins| {
        let onsets = latest_onsets(&ck.tokenizer, &mut StreamDecoder::new(), &seq);
        let v: Vec<u32> = onsets.into_iter().map(|ms| bins.bin(ms)).collect();
        Tensor::from_vec(v, (1, n), &Device::Cpu).unwrap()
    });
    let grid = GridRows::of(ck.config.model.decoder(), &ck.tokenizer).map(|rows| {
        let windows = grid_windows(&ck.tokenizer, &mut StreamDecoder::new(), &seq);
        GridInput {
            rows: Tensor::from_vec(rows.rows(grid, &windows), (1, n, rows.onsets), &Device::Cpu)
                .unwrap(),
            first_onset: rows.first_onset as usize,
        }
    });
    let ids = Tensor::from_vec(seq, (1, n), &Device::Cpu).unwrap();
    let logits = ck
        .model
        .forward_train(&ids, win.as_ref(), grid.as_ref(), None)
        .unwrap();
    let logp = candle_nn::ops::log_softmax(&logits.to_dtype(DType::F32).unwrap(), D::Minus1)
        .unwrap()
        .squeeze(0)
        .unwrap();
    let rows: Vec<Vec<f32>> = logp.to_vec2().unwrap();
    let given = prompt.inline.len();
    body.iter()
        .enumerate()
        .map(|(i, &id)| rows[given - 1 + i][id as usize] as f64)
        .collect()
}

/// Largest absolute and relative (to max(1, |want|)) differences.
fn max_diff(got: &[f64], want: &[f64]) -> (f64, f64) {
    assert_eq!(got.len(), want.len());
    got.iter()
        .zip(want)
        .fold((0.0f64, 0.0f64), |(a, r), (g, w)| {
            let d = (g - w).abs();
            (a.max(d), r.max(d / w.abs().max(1.0)))
        })
}

fn load(dir: &Path, backend: BackendChoice, weights: WeightFormat) -> Generator {
    Generator::load_with(dir, &Device::Cpu, &GeneratorOptions { backend, weights }).unwrap()
}

#[test]
fn engine_prompt_has_the_training_layout() {
    let tok = gen_support::tokenizer();
    let song = mortons_reel();
    let dir = tempfile::tempdir().unwrap();
    checkpoint::create_untrained(
        dir.path(),
        "untrained-tiny",
        ModelKind::Decoder,
        "tiny",
        &tok,
        DType::F32,
        7,
    )
    .unwrap();
    let g = load(dir.path(), BackendChoice::Candle, WeightFormat::F32);
    let form = form_of(&song);
    for style in [None, Some("reel")] {
        let engine = g
            .prompt_for(&cli_snippets(&song), &request(&form, style))
            .unwrap();
        let trainer = trainer_prompt(&tok, &song, style);
        assert_eq!(engine, trainer, "style {style:?}");
        // The documented layout: [style] <PROMPT_START> form <A_SECTION> snippet A ...
        // <PROMPT_END> <S>.
        let mut i = 0;
        if style.is_some() {
            assert!(matches!(tok.kind(engine.inline[0]), TokenKind::Style(_)));
            i = 1;
        }
        assert_eq!(engine.inline[i], tok.prompt_start_id());
        assert!(matches!(tok.kind(engine.inline[i + 1]), TokenKind::Form(_)));
        assert_eq!(engine.inline[i + 2], tok.section_id(SectionLabel::A));
        let n = engine.inline.len();
        assert_eq!(
            engine.inline[n - 2..],
            [tok.prompt_end_id(), tok.start_id()]
        );
    }
    // The body the engine generates starts where training bodies start: with the section start
    // (its onset, with section windows) and tag the engine forces after `<S>`.
    let body = body_of(&tok, &song);
    let mut start = vec![tok.section_id(SectionLabel::A)];
    if tok.config().section_windows {
        start.insert(0, tok.onset_id(0.0).unwrap());
    }
    assert_eq!(body[..start.len()], start[..]);
}

/// A tiny decoder with the window-position input and a non-zero window table (a fresh one is
/// zero, which would hide a misplaced bin); with `grid_bins > 0` a non-zero beat-grid head too.
fn window_checkpoint(dir: &Path, tok: &Tokenizer, grid_bins: usize) {
    let mut dc = DecoderConfig::tiny(tok.vocab_size());
    dc.window_bins = 8;
    dc.window_bin_ms = 700;
    dc.grid_bins = grid_bins;
    let model = ModelConfig::Decoder(dc.clone());
    let vars = SeededVars::new(7);
    staria_models::AnyModel::new(&model, vars.builder(&Device::Cpu)).unwrap();
    let table = |rows: usize, scale: f32| {
        let v: Vec<f32> = (0..rows * dc.dim)
            .map(|i| (i as f32 * scale).sin())
            .collect();
        Tensor::from_vec(v, (rows, dc.dim), &Device::Cpu).unwrap()
    };
    let mut tables = vec![("win_emb.weight".to_string(), table(8, 0.37))];
    if grid_bins > 0 {
        tables.push(("grid_head.weight".to_string(), table(grid_bins, 0.53)));
    }
    vars.load(&tables.into_iter().collect()).unwrap();
    let config = CheckpointConfig::new("window-tiny", "tiny", model, tok);
    checkpoint::save(dir, &config, tok, &vars.map, DType::F32).unwrap();
}

#[test]
fn engine_logprobs_equal_teacher_forced_training_logprobs() {
    let tok = gen_support::tokenizer();
    let dir = tempfile::tempdir().unwrap();
    checkpoint::create_untrained(
        dir.path(),
        "untrained-tiny",
        ModelKind::Decoder,
        "tiny",
        &tok,
        DType::F32,
        7,
    )
    .unwrap();
    check_engine_against_training(dir.path(), &tok);
}

#[test]
fn engine_and_training_agree_on_the_window_position_input() {
    let tok = gen_support::tokenizer();
    let dir = tempfile::tempdir().unwrap();
    window_checkpoint(dir.path(), &tok, 0);
    check_engine_against_training(dir.path(), &tok);
}

#[test]
fn engine_and_training_agree_on_the_beat_grid_head() {
    let tok = gen_support::tokenizer();
    let dir = tempfile::tempdir().unwrap();
    window_checkpoint(dir.path(), &tok, 48);
    check_engine_against_training(dir.path(), &tok);
}

fn check_engine_against_training(dir: &Path, tok: &Tokenizer) {
    let song = mortons_reel();
    let mut candle = load(dir, BackendChoice::Candle, WeightFormat::F32);
    let prompt = candle
        .prompt_for(
            &cli_snippets(&song),
            &request(&form_of(&song), Some("reel")),
        )
        .unwrap();
    let mut body = body_of(tok, &song);
    body.truncate(candle.max_seq_len() - prompt.inline.len() - 1);
    assert!(
        body.len() > 100,
        "a real stretch of the piece: {}",
        body.len()
    );
    // The engine's grid comes from the request's tempo, the trainer's from the tempo map:
    // the same grid for a prompt at the piece's own tempo.
    let quarter_ms = song.constant_quarter_ms().unwrap();
    let grid = BeatGrid::from_bpm(60_000.0 / quarter_ms).unwrap();
    assert!((grid.beat_ms - quarter_ms).abs() < 1e-9);
    let want = train_logprobs(dir, &prompt, &body, Some(grid));
    candle.set_grid(Some(grid));

    let (abs, _) = max_diff(&engine_logprobs(&mut candle, &prompt, &body), &want);
    eprintln!(
        "candle: max |engine - train| log-prob {abs:e} over {} tokens",
        body.len()
    );
    assert!(abs < 1e-4, "candle backend: {abs}");

    let mut fast = load(dir, BackendChoice::Fast, WeightFormat::F32);
    fast.set_grid(Some(grid));
    let (_, rel) = max_diff(&engine_logprobs(&mut fast, &prompt, &body), &want);
    eprintln!("fast f32: max relative log-prob difference {rel:e}");
    assert!(rel < 1e-4, "fast f32 backend: {rel}");
    // Again on the same generator: its prompt cache is reused, the window clock with it.
    let (_, rel) = max_diff(&engine_logprobs(&mut fast, &prompt, &body), &want);
    assert!(rel < 1e-4, "fast f32 backend, reused prompt: {rel}");

    let mut fast16 = load(dir, BackendChoice::Fast, WeightFormat::F16);
    fast16.set_grid(Some(grid));
    let (_, rel) = max_diff(&engine_logprobs(&mut fast16, &prompt, &body), &want);
    eprintln!("fast f16: max relative log-prob difference {rel:e}");
    assert!(rel < 2e-2, "fast f16 backend: {rel}");
}

/// Feeds `body` through a `ConstrainedDecoder` (unbounded span) and returns the data tokens whose
/// logit the mask sets to -inf, with their positions.
fn masked_data_tokens(tok: &Tokenizer, c: &Constraints, body: &[u32]) -> Vec<(usize, u32)> {
    let mut cd = ConstrainedDecoder::new(tok, c).unwrap();
    let mut logits = vec![0.0f32; tok.vocab_size()];
    let mut out = Vec::new();
    for (i, &id) in body.iter().enumerate() {
        logits.fill(0.0);
        cd.apply(&mut logits);
        if !logits[id as usize].is_finite() {
            out.push((i, id));
        }
        cd.push(tok, id);
    }
    out
}

fn is_structural(tok: &Tokenizer, id: u32) -> bool {
    matches!(
        tok.kind(id),
        TokenKind::End | TokenKind::EndingSoon | TokenKind::Section(_)
    )
}

/// A section start's onset (section windows: the onset right before a body section tag), which
/// the generator forces with the tag.
fn is_section_start(tok: &Tokenizer, body: &[u32], i: usize) -> bool {
    matches!(tok.kind(body[i]), TokenKind::Onset { .. })
        && matches!(
            body.get(i + 1).map(|&n| tok.kind(n)),
            Some(TokenKind::Section(_))
        )
}

/// Default constraints mask `<E>`, `<D>`, section tags and section starts by design (the
/// generator forces the tags and a request gets all its bars); every note, onset, duration and
/// `<T>` of the data must stay allowed. With early ends allowed, only section starts may be
/// masked.
fn check_masks_keep_data(tok: &Tokenizer, body: &[u32], what: &str) -> (usize, usize) {
    let default = masked_data_tokens(tok, &Constraints::default(), body);
    let grammar: Vec<_> = default
        .iter()
        .filter(|(i, id)| !is_structural(tok, *id) && !is_section_start(tok, body, *i))
        .collect();
    assert!(
        grammar.is_empty(),
        "{what}: data tokens masked: {:?}",
        grammar
            .iter()
            .take(5)
            .map(|(i, id)| (i, tok.token(*id).map(|t| t.to_string())))
            .collect::<Vec<_>>()
    );
    let early = Constraints {
        allow_early_end: true,
        drums: true,
        ..Constraints::default()
    };
    let all: Vec<_> = masked_data_tokens(tok, &early, body)
        .into_iter()
        .filter(|(i, _)| !is_section_start(tok, body, *i))
        .collect();
    assert!(all.is_empty(), "{what}: {all:?} masked with early ends on");
    (default.len(), body.len())
}

#[test]
fn masks_never_exclude_the_data_token() {
    for tok in [
        gen_support::tokenizer(),
        gen_support::section_windows_tokenizer(),
    ] {
        masks_keep_the_data_of(&tok);
    }
}

fn masks_keep_the_data_of(tok: &Tokenizer) {
    for (name, song) in [
        ("mortons_reel.mid", mortons_reel()),
        ("prompt_song", gen_support::prompt_song()),
    ] {
        let body = body_of(tok, &song);
        let (structural, n) = check_masks_keep_data(tok, &body, name);
        eprintln!("{name}: {n} tokens, {structural} structural (tags, <D>, <E>) masked by default");
        // Snippet token streams (what `Continue` feeds) too.
        check_masks_keep_data(tok, &tok.snippet_tokens(&song.notes, 0.0, usize::MAX), name);
    }
}

/// MIDI files named by `STARIA_PIECES`: a folder (every `.mid` below it) or a text file with one
/// path per line.
fn pieces_from_env() -> Option<Vec<PathBuf>> {
    let p = PathBuf::from(std::env::var_os("STARIA_PIECES")?);
    if p.is_dir() {
        let mut out = Vec::new();
        let mut stack = vec![p];
        while let Some(d) = stack.pop() {
            for e in std::fs::read_dir(&d).unwrap() {
                let path = e.unwrap().path();
                if path.is_dir() {
                    stack.push(path);
                } else if path.extension().is_some_and(|x| x == "mid" || x == "midi") {
                    out.push(path);
                }
            }
        }
        out.sort();
        Some(out)
    } else {
        let text = std::fs::read_to_string(&p).unwrap();
        Some(
            text.lines()
                .filter(|l| !l.trim().is_empty())
                .map(|l| PathBuf::from(l.trim()))
                .collect(),
        )
    }
}

/// `STARIA_PIECES=<folder or list> cargo test -p staria-engine --release --test gen_train_match
/// -- --ignored masks_on_corpus --nocapture`
#[test]
#[ignore = "measurement: needs STARIA_PIECES (corpus files)"]
fn masks_on_corpus() {
    let Some(files) = pieces_from_env() else {
        eprintln!("STARIA_PIECES not set; nothing measured");
        return;
    };
    let (_, tok) =
        checkpoint::load_config(&repo().join("models/pretrained/baseline-small")).unwrap();
    let (mut pieces, mut tokens, mut structural) = (0, 0, 0);
    for f in &files {
        let Ok(song) = read_midi_file(f) else {
            eprintln!("skipped (unreadable): {}", f.display());
            continue;
        };
        let body = body_of(&tok, &song);
        let (s, n) = check_masks_keep_data(&tok, &body, &f.display().to_string());
        pieces += 1;
        tokens += n;
        structural += s;
    }
    eprintln!(
        "{pieces} pieces, {tokens} body tokens: 0 notes/onsets/durations/<T> masked; \
         {structural} tags/<D>/<E> masked by the default constraints (by design), 0 with \
         allow_early_end"
    );
}

/// `STARIA_PIECE=<file.mid> [STARIA_MODEL=<dir>] cargo test -p staria-engine --release --test
/// gen_train_match -- --ignored logprobs_on_shipped_model --nocapture`
#[test]
#[ignore = "measurement: needs STARIA_PIECE (a corpus file)"]
fn logprobs_on_shipped_model() {
    let Some(piece) = std::env::var_os("STARIA_PIECE").map(PathBuf::from) else {
        eprintln!("STARIA_PIECE not set; nothing measured");
        return;
    };
    let dir = std::env::var_os("STARIA_MODEL")
        .map(PathBuf::from)
        .unwrap_or_else(|| repo().join("models/pretrained/baseline-small"));
    let style = std::env::var("STARIA_STYLE").ok();
    let song = read_midi_file(&piece).unwrap();
    let mut candle = load(&dir, BackendChoice::Candle, WeightFormat::F32);
    let tok = candle.tokenizer().clone();
    let prompt = candle
        .prompt_for(
            &cli_snippets(&song),
            &request(&form_of(&song), style.as_deref()),
        )
        .unwrap();
    assert_eq!(prompt, trainer_prompt(&tok, &song, style.as_deref()));
    let mut body = body_of(&tok, &song);
    let max_body = std::env::var("STARIA_MAX_BODY")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(640 - prompt.inline.len());
    body.truncate(max_body);
    let grid = song
        .constant_quarter_ms()
        .and_then(|q| BeatGrid::new(q, 0.0).ok());
    let want = train_logprobs(&dir, &prompt, &body, grid);
    candle.set_grid(grid);
    let nll = -want.iter().sum::<f64>() / want.len() as f64;
    eprintln!(
        "{}: prompt {} tokens, body {} tokens, teacher-forced NLL {nll:.3} nats/token",
        piece.display(),
        prompt.inline.len(),
        body.len()
    );
    onset_report(&mut candle, &prompt, &body);
    for (name, backend, weights) in [
        ("candle", BackendChoice::Candle, WeightFormat::F32),
        ("fast f32", BackendChoice::Fast, WeightFormat::F32),
        ("fast f16", BackendChoice::Fast, WeightFormat::F16),
    ] {
        let mut g = if backend == BackendChoice::Candle {
            candle.reset().unwrap();
            std::mem::replace(&mut candle, load(&dir, backend, weights))
        } else {
            load(&dir, backend, weights)
        };
        g.set_grid(grid);
        let (abs, rel) = max_diff(&engine_logprobs(&mut g, &prompt, &body), &want);
        eprintln!("{name}: max |engine - train| log-prob {abs:.3e} (relative {rel:.3e})");
    }
}

/// Teacher-forced (through the engine, whose log-probs equal training's): at each data onset
/// whose window already has a later onset than its start, the model's onset mass before the
/// window's last onset (the mass a plain mask moves to the last onset, and the rule reads as a
/// vote for `<T>`), overall and where the last onset is >= 4.5 s; and the probability of `<T>`
/// where the data has `<T>` next.
fn onset_report(g: &mut Generator, prompt: &Prompt, body: &[u32]) {
    let tok = g.tokenizer().clone();
    let mut dec = staria_models::tokenizer::StreamDecoder::new();
    let onsets = tok.onset_ids();
    let soft = |l: &[f32]| {
        let m = l.iter().fold(f32::NEG_INFINITY, |a, &b| a.max(b));
        let z: f64 = l.iter().map(|&x| ((x - m) as f64).exp()).sum();
        l.iter()
            .map(|&x| ((x - m) as f64).exp() / z)
            .collect::<Vec<f64>>()
    };
    let (mut n, mut before, mut n_late, mut before_late) = (0, 0.0, 0, 0.0);
    let (mut n_t, mut p_t) = (0, 0.0);
    let mut logits = g.begin(prompt).unwrap().to_vec();
    for (i, &id) in body.iter().enumerate() {
        let p = soft(&logits);
        let last = dec.min_onset_ms();
        if dec.expects() == staria_models::tokenizer::Expect::Onset && last > 0 {
            let onset_mass: f64 = onsets.clone().map(|o| p[o as usize]).sum();
            let below: f64 = onsets
                .clone()
                .filter(|&o| matches!(tok.kind(o), TokenKind::Onset { ms } if ms < last))
                .map(|o| p[o as usize])
                .sum::<f64>()
                / onset_mass;
            n += 1;
            before += below;
            if last >= 4500 {
                n_late += 1;
                before_late += below;
            }
        }
        if id == tok.time_shift_id() {
            n_t += 1;
            p_t += p[id as usize];
        }
        dec.push(&tok, id);
        if i + 1 < body.len() {
            logits = g.step(id).unwrap().to_vec();
        }
    }
    eprintln!(
        "teacher-forced onset mass before the window's last onset: mean {:.3} over {n} onsets; \
         {:.3} over the {n_late} with the last onset >= 4.5 s; mean P(<T>) where the data has \
         <T>: {:.3} ({n_t})",
        before / n.max(1) as f64,
        before_late / n_late.max(1) as f64,
        p_t / n_t.max(1) as f64
    );
}
