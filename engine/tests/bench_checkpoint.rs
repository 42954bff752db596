//! Tools for measuring the generation backends by hand (ignored by default):
//!
//! ```text
//! STARIA_BENCH_DIR=/tmp/untrained-small cargo test -p staria-engine --release \
//!     --test bench_checkpoint -- --ignored --nocapture
//! ```
//! `make_untrained_small_checkpoint` writes an untrained decoder-only `small` checkpoint to
//! `$STARIA_BENCH_DIR` (for `staria bench --model`); `weight_format_report` then compares f16
//! and q8 against exact f32 on a real prompt with that checkpoint (or `$STARIA_QUALITY_MODEL`):
//! logit RMS error, argmax agreement along the exact model's greedy path, and the notes sampled
//! with the same seed.

use std::path::PathBuf;

use candle_core::{DType, Device};
use staria_engine::generate::{
    BackendChoice, Flow, GenRequest, GeneratedNote, Generator, GeneratorOptions, Snippets, Target,
};
use staria_models::fast::WeightFormat;
use staria_models::model::ModelKind;
use staria_models::tokenizer::{Tokenizer, TokenizerConfig};
use staria_models::{Note, SectionLabel};
use staria_test_support::{argmax, rms_rel};

fn bench_dir() -> PathBuf {
    PathBuf::from(
        std::env::var_os("STARIA_BENCH_DIR").expect("set STARIA_BENCH_DIR to a folder to write"),
    )
}

#[test]
#[ignore = "writes a checkpoint for manual benchmarks; needs STARIA_BENCH_DIR"]
fn make_untrained_small_checkpoint() {
    let dir = bench_dir();
    let tok = Tokenizer::new(TokenizerConfig::default()).unwrap();
    let cfg = staria_models::checkpoint::create_untrained(
        &dir,
        "untrained-small",
        ModelKind::Decoder,
        "small",
        &tok,
        DType::F32,
        7,
    )
    .unwrap();
    eprintln!("wrote {} ({:?})", dir.display(), cfg.kind());
}

/// The real prompt shipped in examples/prompts, its sections as snippets.
fn real_snippets() -> Snippets {
    let path = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../examples/prompts/mortons_reel.mid"
    );
    let song = staria_models::read_midi_file(std::path::Path::new(path)).unwrap();
    let mut s = Snippets::default();
    for label in SectionLabel::ALL {
        if let Some(sec) = song.sections.iter().find(|x| x.label == label) {
            let notes: Vec<Note> = song.section_notes(sec);
            s.set(label, notes);
        }
    }
    if s.captured().next().is_none() {
        s.set(SectionLabel::A, song.notes.clone());
    }
    s
}

#[test]
#[ignore = "manual measurement; needs STARIA_BENCH_DIR or STARIA_QUALITY_MODEL"]
fn weight_format_report() {
    let dir = std::env::var_os("STARIA_QUALITY_MODEL")
        .map(PathBuf::from)
        .unwrap_or_else(bench_dir);
    let load = |weights| {
        Generator::load_with(
            &dir,
            &Device::Cpu,
            &GeneratorOptions {
                backend: BackendChoice::Fast,
                weights,
            },
        )
        .unwrap()
    };
    let snippets = real_snippets();
    let mut req = GenRequest::new(Target::Section(SectionLabel::A), 8, 120.0);
    req.form = "AABA".into();
    req.sampling.seed = 1;
    let mut exact = load(WeightFormat::F32);
    let prompt = exact.prompt_for(&snippets, &req).unwrap();
    let notes_of = |g: &mut Generator, seed: u64| {
        let mut r = req.clone();
        r.sampling.seed = seed;
        let mut notes: Vec<GeneratedNote> = Vec::new();
        g.generate(&snippets, &r, &mut |n| {
            notes.push(n);
            if notes.len() >= 64 {
                Flow::Stop
            } else {
                Flow::Continue
            }
        })
        .unwrap();
        notes
    };
    let exact_notes: Vec<Vec<GeneratedNote>> = (1..=5).map(|s| notes_of(&mut exact, s)).collect();
    for format in [WeightFormat::F16, WeightFormat::Q8] {
        let mut g = load(format);
        let mut want = exact.begin(&prompt).unwrap().to_vec();
        let got = g.begin(&prompt).unwrap().to_vec();
        let (mut worst, mut sum, mut agree, mut n) = (rms_rel(&got, &want), 0.0, 0, 0);
        sum += worst;
        agree += usize::from(argmax(&got) == argmax(&want));
        n += 1;
        for _ in 0..255 {
            let next = argmax(&want) as u32;
            want = exact.step(next).unwrap().to_vec();
            let got = g.step(next).unwrap();
            let e = rms_rel(got, &want);
            worst = worst.max(e);
            sum += e;
            agree += usize::from(argmax(got) == argmax(&want));
            n += 1;
        }
        // Sampled notes (same seed): the leading notes that agree exactly, over 5 seeds.
        let mut same_prefix = 0;
        let mut total = 0;
        for (i, seed) in (1..=5).enumerate() {
            let notes = notes_of(&mut g, seed);
            let p = notes
                .iter()
                .zip(&exact_notes[i])
                .take_while(|(a, b)| a == b)
                .count();
            same_prefix += p;
            total += exact_notes[i].len();
        }
        eprintln!(
            "{}: {} positions: logit rms/std mean {:.4} worst {:.4}; greedy argmax agreement {:.3}; \
             sampled notes identical before the first difference: {same_prefix}/{total} over 5 seeds",
            format.name(),
            n,
            sum / n as f32,
            worst,
            agree as f32 / n as f32
        );
    }
}
