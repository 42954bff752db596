//! The fast CPU backend against the candle backend, both loaded from the same checkpoint folder:
//! with exact (f32) weights they give the same logits (prompt and every step) and the same notes;
//! f16 and q8 stay close. Both checkpoint kinds; Staria with its cross-attention gates opened so
//! the encoder's latents really steer the decoder.

mod gen_support;

use std::path::Path;

use candle_core::{DType, Device, Tensor};
use gen_support::{prompt_song, write_checkpoint_of};
use staria_engine::generate::{
    Backend, BackendChoice, GenRequest, Generator, GeneratorOptions, Snippets, Target,
};
use staria_models::fast::WeightFormat;
use staria_models::model::ModelKind;
use staria_models::{Prompt, SectionLabel};
use staria_test_support::{argmax, rms_rel};

fn load(dir: &Path, backend: BackendChoice, weights: WeightFormat) -> Generator {
    Generator::load_with(dir, &Device::Cpu, &GeneratorOptions { backend, weights }).unwrap()
}

fn snippets() -> Snippets {
    let song = prompt_song();
    let mut s = Snippets::default();
    for sec in &song.sections {
        let notes = song.section_notes(sec);
        s.set(sec.label, notes);
    }
    s
}

fn aaba(seed: u64, temperature: f32) -> GenRequest {
    let mut req = GenRequest::new(Target::Section(SectionLabel::A), 2, 120.0);
    req.form = "AABA".into();
    req.sampling.seed = seed;
    req.sampling.temperature = temperature;
    req.constraints.max_polyphony = Some(3);
    req
}

/// Largest absolute difference, relative to the reference's largest magnitude (at least 1).
fn rel_err(got: &[f32], want: &[f32]) -> f32 {
    assert_eq!(got.len(), want.len());
    let scale = want.iter().fold(1.0f32, |m, x| m.max(x.abs()));
    got.iter()
        .zip(want)
        .map(|(a, b)| (a - b).abs())
        .fold(0.0, f32::max)
        / scale
}

/// Feeds the prompt and then `steps` tokens (the candle model's greedy choices) to both
/// generators, calling `check(step, fast_logits, candle_logits)` at every position.
fn walk<F>(
    fast: &mut Generator,
    candle: &mut Generator,
    prompt: &Prompt,
    steps: usize,
    mut check: F,
) where
    F: FnMut(usize, &[f32], &[f32]),
{
    let want = candle.begin(prompt).unwrap().to_vec();
    check(0, fast.begin(prompt).unwrap(), &want);
    let mut next = argmax(&want) as u32;
    for i in 1..=steps {
        let want = candle.step(next).unwrap().to_vec();
        check(i, fast.step(next).unwrap(), &want);
        next = argmax(&want) as u32;
    }
    assert_eq!(fast.position(), candle.position());
}

fn exact_logits_match(kind: ModelKind) {
    let dir = tempfile::tempdir().unwrap();
    write_checkpoint_of(dir.path(), kind, 21);
    let mut candle = load(dir.path(), BackendChoice::Candle, WeightFormat::F32);
    let mut fast = load(dir.path(), BackendChoice::Fast, WeightFormat::F32);
    assert_eq!(candle.backend(), Backend::Candle);
    assert_eq!(fast.backend(), Backend::Fast);
    assert_eq!((fast.kind(), candle.kind()), (kind, kind));
    assert_eq!(fast.max_seq_len(), candle.max_seq_len());

    let prompt = fast.prompt_for(&snippets(), &aaba(0, 1.0)).unwrap();
    let mut worst = 0.0f32;
    walk(&mut fast, &mut candle, &prompt, 48, |i, got, want| {
        let e = rel_err(got, want);
        assert!(e < 1e-4, "{kind}: position {i}: relative error {e}");
        worst = worst.max(e);
    });
    eprintln!("{kind}: worst relative logit error f32 fast vs candle {worst:e}");

    // A second prompt on the same generators: the cache and (Staria) the latents are replaced.
    let mut no_snippets = aaba(0, 1.0);
    no_snippets.form.clear();
    let bare = fast.prompt_for(&Snippets::default(), &no_snippets).unwrap();
    assert!(bare.snippets.is_empty());
    walk(&mut fast, &mut candle, &bare, 16, |i, got, want| {
        let e = rel_err(got, want);
        assert!(e < 1e-4, "{kind} without snippets: position {i}: {e}");
    });
}

#[test]
fn fast_f32_gives_candle_logits_decoder() {
    exact_logits_match(ModelKind::Decoder);
}

#[test]
fn fast_f32_gives_candle_logits_staria() {
    exact_logits_match(ModelKind::Staria);
}

#[test]
fn staria_snippets_steer_the_fast_decoder() {
    // The same decoder tokens with and without the encoder's latents: the opened sites must
    // change the logits (the fast backend really applies the latents it was given).
    let dir = tempfile::tempdir().unwrap();
    write_checkpoint_of(dir.path(), ModelKind::Staria, 21);
    let mut fast = load(dir.path(), BackendChoice::Fast, WeightFormat::F32);
    let prompt = fast.prompt_for(&snippets(), &aaba(0, 1.0)).unwrap();
    assert!(!prompt.snippets.is_empty());
    let with = fast.begin(&prompt).unwrap().to_vec();
    assert!(fast.fast().unwrap().n_latents() > 0);
    let without = Prompt {
        snippets: Vec::new(),
        ..prompt.clone()
    };
    let bare = fast.begin(&without).unwrap().to_vec();
    assert_eq!(fast.fast().unwrap().n_latents(), 0);
    assert!(rel_err(&with, &bare) > 1e-3, "latents changed nothing");
    // And back: the same logits as the first time (nothing of the bare run is left over).
    assert!(rel_err(fast.begin(&prompt).unwrap(), &with) < 1e-6);
}

/// A prompt that shares a prefix with what the fast decoder holds reuses that part of its KV
/// cache: the logits (and the notes after) are exactly those of a fresh decoder.
#[test]
fn a_shared_prompt_prefix_is_reused_with_identical_results() {
    for kind in [ModelKind::Decoder, ModelKind::Staria] {
        let dir = tempfile::tempdir().unwrap();
        write_checkpoint_of(dir.path(), kind, 21);
        let mut warm = load(dir.path(), BackendChoice::Fast, WeightFormat::F16);
        let full = snippets();
        let mut a_only = full.clone();
        a_only.set(SectionLabel::B, Vec::new());
        let req = aaba(0, 1.0);
        let p_full = warm.prompt_for(&full, &req).unwrap();
        let p_a = warm.prompt_for(&a_only, &req).unwrap();
        let tokens = |p: &Prompt| match kind {
            ModelKind::Decoder => p.inline.clone(),
            ModelKind::Staria => p.decoder.clone(),
        };
        let shared = tokens(&p_full)
            .iter()
            .zip(&tokens(&p_a))
            .take_while(|(x, y)| x == y)
            .count();
        assert!(shared > 2, "{kind}: the prompts share only {shared} tokens");
        for p in [&p_full, &p_a, &p_a, &p_full] {
            warm.begin(&p_full).unwrap();
            for id in [7, 9, 11] {
                warm.step(id).unwrap();
            }
            let got = warm.begin(p).unwrap().to_vec();
            assert_eq!(warm.position(), tokens(p).len());
            let mut fresh = load(dir.path(), BackendChoice::Fast, WeightFormat::F16);
            let want = fresh.begin(p).unwrap().to_vec();
            assert_eq!(got, want, "{kind}: reused cache gives other logits");
            let (g, w) = (warm.step(5).unwrap().to_vec(), fresh.step(5).unwrap());
            assert_eq!(g, w, "{kind}: the step after differs");
        }
        // Whole requests: the same notes from a warm generator as from a fresh one.
        let notes = |g: &mut Generator| {
            let mut out = Vec::new();
            g.generate(&full, &req, &mut |n| {
                out.push(n.pitch);
                staria_engine::generate::Flow::Continue
            })
            .unwrap();
            out
        };
        let first = notes(&mut warm);
        assert!(!first.is_empty());
        assert_eq!(
            notes(&mut warm),
            first,
            "{kind}: a repeated request differs"
        );
    }
}

#[test]
fn fast_f32_and_candle_generate_the_same_notes() {
    for kind in [ModelKind::Decoder, ModelKind::Staria] {
        let dir = tempfile::tempdir().unwrap();
        write_checkpoint_of(dir.path(), kind, 5);
        let mut candle = load(dir.path(), BackendChoice::Candle, WeightFormat::F32);
        let mut fast = load(dir.path(), BackendChoice::Fast, WeightFormat::F32);
        // Temperature 0: every token is the argmax, so only a logit tie closer than the 1e-4
        // agreement above could tell the backends apart.
        let req = aaba(3, 0.0);
        let want = candle.generate_piece(&snippets(), &req).unwrap();
        let got = fast.generate_piece(&snippets(), &req).unwrap();
        assert!(want.summary.notes > 0, "{kind}: the candle piece is empty");
        assert_eq!(got.song.notes, want.song.notes, "{kind}");
        assert_eq!(got.sections, want.sections, "{kind}");
        assert_eq!(got.summary.sampled_tokens, want.summary.sampled_tokens);
    }
}

/// An untrained checkpoint as `create_untrained` writes it (candle's initialiser, the spread a
/// real model starts from), Staria gates opened.
fn untrained_checkpoint(dir: &Path, kind: ModelKind) {
    use staria_models::checkpoint;
    let tok = gen_support::tokenizer();
    let config =
        checkpoint::create_untrained(dir, "untrained-tiny", kind, "tiny", &tok, DType::F32, 7)
            .unwrap();
    let mut tensors = checkpoint::load_tensors(dir, &Device::Cpu).unwrap();
    for (name, t) in tensors.iter_mut() {
        let g = if name.ends_with("attn_gate") {
            0.8
        } else if name.ends_with("ff_gate") {
            -0.6
        } else {
            continue;
        };
        *t = Tensor::full(g as f32, t.shape(), &Device::Cpu).unwrap();
    }
    checkpoint::save_tensors(dir, &config, &tok, &tensors, DType::F32).unwrap();
}

#[test]
fn f16_and_q8_stay_close_to_exact() {
    // Along the exact model's greedy path through a real prompt, on untrained weights (candle's
    // initialiser is not seeded, so the bounds leave room for the spread between draws):
    // f16 within 1% RMS of the logit spread on average and the same argmax nearly everywhere;
    // q8 within 15% on average (int8 rounding grows through random layers, as in
    // models/tests/fast_vs_candle.rs).
    for kind in [ModelKind::Decoder, ModelKind::Staria] {
        let dir = tempfile::tempdir().unwrap();
        untrained_checkpoint(dir.path(), kind);
        let mut exact = load(dir.path(), BackendChoice::Fast, WeightFormat::F32);
        let prompt = exact.prompt_for(&snippets(), &aaba(0, 1.0)).unwrap();
        for (format, max_mean_rms, min_agree) in [
            (WeightFormat::F16, 0.01, 0.9),
            (WeightFormat::Q8, 0.15, 0.7),
        ] {
            let mut g = load(dir.path(), BackendChoice::Fast, format);
            assert_eq!(g.weights(), Some(format));
            let (mut worst, mut sum, mut agree, mut n) = (0.0f32, 0.0f32, 0usize, 0usize);
            walk(&mut g, &mut exact, &prompt, 64, |_, got, want| {
                let e = rms_rel(got, want);
                worst = worst.max(e);
                sum += e;
                agree += usize::from(argmax(got) == argmax(want));
                n += 1;
            });
            let (mean, agree) = (sum / n as f32, agree as f32 / n as f32);
            eprintln!(
                "{kind} {format:?}: rms/std mean {mean:.4} worst {worst:.4}, argmax agreement {agree:.2}"
            );
            assert!(
                mean < max_mean_rms && agree >= min_agree,
                "{kind} {format:?}: mean rms {mean}, agreement {agree}"
            );
        }
    }
}

#[test]
fn default_load_is_fast_f16_on_cpu() {
    let dir = tempfile::tempdir().unwrap();
    write_checkpoint_of(dir.path(), ModelKind::Decoder, 2);
    let g = Generator::load(dir.path(), &Device::Cpu).unwrap();
    assert_eq!(g.backend(), Backend::Fast);
    assert_eq!(g.weights(), Some(WeightFormat::F16));
    assert_eq!(GeneratorOptions::default().weights, WeightFormat::F16);
    assert!(g.model().is_none() && g.fast().is_some());
    assert_eq!(g.checkpoint_config().unwrap().name, "test-tiny");
    let c = load(dir.path(), BackendChoice::Candle, WeightFormat::Q8);
    assert_eq!((c.backend(), c.weights()), (Backend::Candle, None));
    assert!(c.model().is_some() && c.fast().is_none());
    assert_eq!(BackendChoice::Auto.resolve(&Device::Cpu), Backend::Fast);
    assert_eq!("Fast".parse::<BackendChoice>(), Ok(BackendChoice::Fast));
    assert!("gpu".parse::<BackendChoice>().unwrap_err().contains("gpu"));
}

#[test]
fn fast_load_errors_name_the_weights_file() {
    // A tensor of the wrong shape: the fast loader refuses with the file and the tensor named.
    let dir = tempfile::tempdir().unwrap();
    write_checkpoint_of(dir.path(), ModelKind::Decoder, 2);
    let path = dir.path().join(staria_models::checkpoint::WEIGHTS_FILE);
    let mut tensors = staria_models::checkpoint::load_tensors(dir.path(), &Device::Cpu).unwrap();
    let norm = tensors["norm.weight"].narrow(0, 0, 4).unwrap();
    tensors.insert("norm.weight".into(), norm);
    candle_core::safetensors::save(&tensors, &path).unwrap();
    let e = Generator::load_with(
        dir.path(),
        &Device::Cpu,
        &GeneratorOptions {
            backend: BackendChoice::Fast,
            weights: WeightFormat::F16,
        },
    )
    .unwrap_err()
    .to_string();
    assert!(
        e.contains("model.safetensors") && e.contains("norm.weight"),
        "{e}"
    );
}

#[test]
fn new_fast_checks_its_parts() {
    use staria_models::fast::{FastConfig, FastDecoder};
    let tok = gen_support::tokenizer();
    let (dcfg, dvars, dmodel) = gen_support::tiny_model_of(ModelKind::Decoder, &tok, 1);
    let (scfg, svars, smodel) = gen_support::tiny_model_of(ModelKind::Staria, &tok, 1);
    let dfast = || FastDecoder::from_varmap(&FastConfig::from(&dcfg), WeightFormat::F32, &dvars);
    let sfast = || FastDecoder::from_varmap(&FastConfig::from(&scfg), WeightFormat::F32, &svars);
    // A Staria fast decoder needs the Staria model for its encoder; a decoder takes none.
    let e = Generator::new_fast(sfast().unwrap(), None, tok.clone()).unwrap_err();
    assert!(e.to_string().contains("encoder"), "{e}");
    let e = Generator::new_fast(dfast().unwrap(), Some(dmodel), tok.clone()).unwrap_err();
    assert!(e.to_string().contains("no encoder"), "{e}");
    let g = Generator::new_fast(sfast().unwrap(), Some(smodel), tok.clone()).unwrap();
    assert_eq!(g.kind(), ModelKind::Staria);
    // The vocabulary must match the tokenizer's.
    let other =
        staria_models::tokenizer::Tokenizer::new(staria_models::tokenizer::TokenizerConfig {
            styles: vec!["x".into()],
            ..Default::default()
        })
        .unwrap();
    let e = Generator::new_fast(dfast().unwrap(), None, other).unwrap_err();
    assert!(e.to_string().contains("vocabulary"), "{e}");
}
