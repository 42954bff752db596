//! [`evaluate_model`]: one model in memory measured on the evaluation pieces, the NLL passes
//! then the generations, with their scores and the reference pieces' own.

use std::time::Instant;

use rand::SeedableRng;
use rand::rngs::StdRng;
use staria_models::SectionLabel;
use staria_models::fast::FastDecoder;
use staria_models::grid::{BeatGrid, GridRows};
use staria_models::midi::{read_midi, write_midi};
use staria_models::model::AnyModel;
use staria_models::tokenizer::{PromptSpec, Tokenizer};
use staria_models::window::WindowBins;

use super::form::{eval_form, mean_similarity};
use super::table::short;
use super::{
    BOOTSTRAP_RESAMPLES, BOOTSTRAP_SEED, EvalData, EvalOptions, EvalResult, FormScores, GenBackend,
    SnippetRef, reference_form, reference_rhythm, score_form, snippets_of,
};
use crate::batch::{Augment, Layout, collate, masked_nll, prepare_piece, truncate_snippet};
use crate::error::{Result, TrainError};
use crate::generate::{Sampling, generate};
use crate::music;
use crate::prepare::LoadedPiece;
use crate::sampler::{CandleLogits, FastLogits, Guided, LogitSource, rotated_snippets};

/// Evaluates a model in memory (also what the tests compare against a reloaded checkpoint).
/// `fast`, when not empty, is the same model's fast decoder and does the generating; a second
/// one is form guidance's contrasting stream (`opts.guidance`).
#[allow(clippy::too_many_arguments)]
pub fn evaluate_model(
    model: &mut AnyModel,
    fast: Vec<FastDecoder>,
    tok: &Tokenizer,
    name: &str,
    data: &EvalData,
    seq_len: usize,
    snippet_tokens: usize,
    opts: &EvalOptions,
) -> Result<EvalResult> {
    let device = &opts.device;
    let (layout, snippet_len) = match model.config() {
        staria_models::model::ModelConfig::Decoder(_) => (Layout::Inline, 0),
        staria_models::model::ModelConfig::Staria(s) => (Layout::Staria, s.encoder.max_seq_len),
    };
    // NLL.
    let t_nll = Instant::now();
    let (mut nats, mut count, mut seconds) = (0.0, 0.0, 0.0);
    // Pieces with two or more snippets, NLL with their own snippets and with the letters
    // rotated (nats, tokens each): what the right snippet in the right place is worth.
    let (mut own, mut rotated) = ((0.0, 0.0), (0.0, 0.0));
    let nll_pieces = if opts.max_pieces > 0 {
        opts.max_pieces.min(data.pieces.len())
    } else {
        data.pieces.len()
    };
    let piece_nll =
        |p: &LoadedPiece, snippets: &[(SectionLabel, Vec<u32>)]| -> Result<(f64, f64)> {
            let tokens = tok.encode_piece(&p.song);
            let form: String = p.song.sections.iter().map(|s| s.label.letter()).collect();
            let prepared = prepare_piece(
                tok,
                &tokens,
                snippets,
                p.style.as_deref(),
                &form,
                p.song.constant_quarter_ms(),
                Augment::NONE,
                snippet_tokens,
            )?;
            let (mut nats, mut count) = (0.0, 0.0);
            for chunk in prepared.all_examples(tok, seq_len)?.chunks(8) {
                let window = WindowBins::of(model.config().decoder());
                let grid = GridRows::of(model.config().decoder(), tok);
                let batch = collate(
                    chunk,
                    layout,
                    tok.pad_id(),
                    window,
                    grid,
                    snippet_len,
                    device,
                )?;
                let logits = model.forward_train(
                    &batch.ids,
                    batch.win.as_ref(),
                    batch.grid.as_ref(),
                    batch.snippets.as_ref(),
                )?;
                let (_, s, c) = masked_nll(&logits, &batch.targets, &batch.mask)?;
                nats += s;
                count += c;
            }
            Ok((nats, count))
        };
    // NLL with the own snippets and with the next piece's under the same letters.
    let (mut own_c, mut foreign) = ((0.0, 0.0), (0.0, 0.0));
    for (i, p) in data.pieces[..nll_pieces].iter().enumerate() {
        let snippets = snippets_of(tok, &p.song, tok.config().snippet_tokens);
        let (n, c) = piece_nll(p, &snippets)?;
        nats += n;
        count += c;
        if snippets.len() >= 2 {
            let (rn, rc) = piece_nll(p, &rotated_snippets(&snippets))?;
            own = (own.0 + n, own.1 + c);
            rotated = (rotated.0 + rn, rotated.1 + rc);
        }
        if nll_pieces >= 2 && !snippets.is_empty() {
            let other = &data.pieces[(i + 1) % nll_pieces];
            let theirs = snippets_of(tok, &other.song, tok.config().snippet_tokens);
            let swapped: Vec<(SectionLabel, Vec<u32>)> = snippets
                .iter()
                .filter_map(|(l, _)| theirs.iter().find(|(m, _)| m == l).cloned())
                .collect();
            if swapped.len() == snippets.len() {
                let (fnats, fc) = piece_nll(p, &swapped)?;
                own_c = (own_c.0 + n, own_c.1 + c);
                foreign = (foreign.0 + fnats, foreign.1 + fc);
            }
        }
        seconds += p.song.notes.iter().map(|n| n.end_ms).fold(0.0, f64::max) / 1000.0;
    }
    let snippet_gain_bits = if own.1 > 0.0 && rotated.1 > 0.0 {
        (rotated.0 / rotated.1 - own.0 / own.1) / std::f64::consts::LN_2
    } else {
        f64::NAN
    };
    let snippet_content_bits = if own_c.1 > 0.0 && foreign.1 > 0.0 {
        (foreign.0 / foreign.1 - own_c.0 / own_c.1) / std::f64::consts::LN_2
    } else {
        f64::NAN
    };
    let bits = nats / std::f64::consts::LN_2;
    let nll_seconds = t_nll.elapsed().as_secs_f64();

    // Generation: pieces with snippets A and B, `pieces` of them spread evenly.
    let t_gen = Instant::now();
    let kind = model.kind().to_string();
    let (mut fast_h, mut candle_h, mut guide_h);
    let mut guided: Option<Guided> = None;
    let mut fast = fast.into_iter();
    // `plain`: the model alone; `None` when `guided` wraps it.
    let (mut plain, backend): (Option<&mut dyn LogitSource>, String) =
        match (fast.next(), fast.next()) {
            (Some(f), None) => {
                fast_h = FastLogits::new(f, model);
                let name = GenBackend::Fast(fast_h.format()).name();
                (Some(&mut fast_h), name)
            }
            (Some(f), Some(g)) => {
                fast_h = FastLogits::new(f, model);
                guide_h = FastLogits::new(g, model);
                let name = format!(
                    "{} with form guidance {}",
                    GenBackend::Fast(fast_h.format()).name(),
                    opts.guidance
                );
                guided = Some(Guided::new(&mut fast_h, &mut guide_h, opts.guidance as f32));
                (None, name)
            }
            (None, _) => {
                candle_h = CandleLogits::new(model);
                (Some(&mut candle_h), GenBackend::Candle.name())
            }
        };
    let sampling = Sampling {
        temperature: opts.temperature,
        min_p: opts.min_p,
        max_tokens: seq_len.max(256) * 4,
        follow_bias: opts.follow_bias,
    };
    type Snippets = Vec<(SectionLabel, Vec<u32>)>;
    let eligible: Vec<(&LoadedPiece, Snippets)> = data
        .pieces
        .iter()
        .filter_map(|p| {
            let snippets: Snippets = snippets_of(tok, &p.song, tok.config().snippet_tokens)
                .into_iter()
                .filter(|(l, _)| matches!(l, SectionLabel::A | SectionLabel::B))
                .map(|(l, s)| (l, truncate_snippet(tok, &s, snippet_tokens)))
                .filter(|(_, s)| !s.is_empty())
                .collect();
            (snippets.len() == 2).then_some((p, snippets))
        })
        .collect();
    let chosen: Vec<usize> = if eligible.len() <= opts.pieces {
        (0..eligible.len()).collect()
    } else {
        (0..opts.pieces)
            .map(|i| i * eligible.len() / opts.pieces)
            .collect()
    };
    let window_ms = f64::from(tok.config().window_ms);
    let form_plan = eval_form(&opts.form)?;
    let (mut pc, mut dens, mut valid, mut clean, mut gens, mut errors, mut gen_tokens) =
        (0.0, 0.0, 0usize, 0usize, 0usize, 0usize, 0usize);
    let mut total = FormScores::default();
    let mut balanced = Vec::new();
    let mut edge = (0usize, 0usize);
    let (mut ref_dens, mut ref_grid, mut ref_edge) = ((0, 0), (0, 0), (0, 0));
    let mut ref_form = ((0, 0), (0, 0));
    let mut rng = StdRng::seed_from_u64(opts.seed);
    for &i in &chosen {
        let (p, snippets) = &eligible[i];
        let len_of = |label: SectionLabel| {
            p.song
                .sections
                .iter()
                .find(|s| s.label == label)
                .map_or(4_000.0, |s| {
                    (s.end_ms - s.start_ms).clamp(1_000.0, opts.max_section_ms)
                })
        };
        let plan: Vec<(SectionLabel, f64)> = form_plan.iter().map(|&l| (l, len_of(l))).collect();
        let spec = PromptSpec {
            style: p.style.clone().filter(|s| tok.style_id(s).is_some()),
            form: tok.form_id(&opts.form).map(|_| opts.form.clone()),
            snippets: snippets.clone(),
        };
        let prompt = tok.build_prompt(&spec)?;
        let gen_model: &mut dyn LogitSource = if let Some(g) = guided.as_mut() {
            g.set_guide_prompt(tok.build_prompt(&PromptSpec {
                snippets: rotated_snippets(&spec.snippets),
                ..spec.clone()
            })?);
            g
        } else if let Some(m) = plain.as_deref_mut() {
            m
        } else {
            return Err(TrainError::Data(
                "evaluation: no model to generate with".into(),
            ));
        };
        // The reference's tempo, a beat where the generated piece starts (as in training).
        gen_model.set_grid(
            p.song
                .constant_quarter_ms()
                .and_then(|q| BeatGrid::new(q, 0.0).ok()),
        );
        let g = generate(gen_model, tok, &prompt, &plan, &sampling, &mut rng)?;
        gens += 1;
        errors += g.grammar_errors;
        gen_tokens += g.tokens.len();
        let song = tok.decode(&g.tokens);
        if let Some(dir) = &opts.write_dir {
            let dir = dir.join(short(name));
            std::fs::create_dir_all(&dir).map_err(|e| TrainError::io(&dir, e))?;
            let n = gens - 1;
            staria_models::midi::write_midi_file(&song, &dir.join(format!("{n:03}.gen.mid")))?;
            staria_models::midi::write_midi_file(&p.song, &dir.join(format!("{n:03}.ref.mid")))?;
        }
        let midi_ok = !song.notes.is_empty()
            && write_midi(&song)
                .ok()
                .and_then(|b| read_midi(&b).ok())
                .is_some_and(|s| !s.notes.is_empty());
        valid += usize::from(midi_ok);
        clean += usize::from(g.grammar_errors == 0);
        pc += music::histogram_distance(
            &music::pitch_class_histogram(&song.notes),
            &music::pitch_class_histogram(&p.song.notes),
        );
        dens += music::density_distance(
            music::note_density(&song.notes),
            music::note_density(&p.song.notes),
        );

        let lines = music::bar_lines(&p.song);
        let bar_ms = (lines[1].1 - lines[0].1).max(100.0);
        let refs: Vec<SnippetRef> = snippets
            .iter()
            .map(|(l, s)| {
                let start = p
                    .song
                    .sections
                    .iter()
                    .filter(|x| x.label == *l)
                    .map(|x| x.start_ms)
                    .fold(f64::INFINITY, f64::min);
                let sixteenth = music::quarter_ms_at(&p.song, start) / 4.0;
                SnippetRef::new(*l, &tok.decode_snippet(s), bar_ms, sixteenth)
            })
            .collect();
        let sc = score_form(&song, &form_plan, &refs, bar_ms);
        balanced.push(sc.balanced());
        total.a.0 += sc.a.0;
        total.a.1 += sc.a.1;
        total.b.0 += sc.b.0;
        total.b.1 += sc.b.1;
        total.copies += sc.copies;
        total.density_matches += sc.density_matches;
        total.on_grid.0 += sc.on_grid.0;
        total.on_grid.1 += sc.on_grid.1;
        for (acc, x) in total.similarity.iter_mut().zip(sc.similarity) {
            *acc = (acc.0 + x.0, acc.1 + x.1, acc.2 + x.2);
        }
        let e = music::onsets_at_window_edge(song.notes.iter().map(|n| n.start_ms), window_ms);
        edge.0 += e.0;
        edge.1 += e.1;
        let (ra, rb) = reference_form(&p.song, &refs, bar_ms);
        for (acc, x) in [(&mut ref_form.0, ra), (&mut ref_form.1, rb)] {
            acc.0 += x.0;
            acc.1 += x.1;
        }
        let (d, gr, ed) = reference_rhythm(&p.song, &refs, window_ms);
        for (acc, x) in [(&mut ref_dens, d), (&mut ref_grid, gr), (&mut ref_edge, ed)] {
            acc.0 += x.0;
            acc.1 += x.1;
        }
    }
    let per = |x: f64| if gens > 0 { x / gens as f64 } else { f64::NAN };
    let share = |(h, n): (usize, usize)| {
        if n > 0 { h as f64 / n as f64 } else { f64::NAN }
    };
    let planned = total.planned();
    let (lo, hi) = music::bootstrap_interval(&balanced, BOOTSTRAP_RESAMPLES, BOOTSTRAP_SEED);
    Ok(EvalResult {
        model: name.to_string(),
        kind,
        nll_bits_per_token: bits / count.max(1.0),
        nll_bits_per_second: bits / f64::max(seconds, 1e-9),
        snippet_gain_bits,
        snippet_content_bits,
        form_adherence: if balanced.is_empty() {
            f64::NAN
        } else {
            balanced.iter().sum::<f64>() / balanced.len() as f64
        },
        form_adherence_lo: lo,
        form_adherence_hi: hi,
        form_adherence_a: share(total.a),
        form_adherence_b: share(total.b),
        form_adherence_pooled: share((total.a.0 + total.b.0, planned)),
        similarity_a: mean_similarity(total.similarity[0]),
        similarity_b: mean_similarity(total.similarity[1]),
        verbatim_copy_share: share((total.copies, planned)),
        density_match_rate: share((total.density_matches, planned)),
        onset_grid_agreement: share(total.on_grid),
        window_edge_piling: share(edge),
        reference_form_adherence: {
            let letters: Vec<f64> = [ref_form.0, ref_form.1]
                .into_iter()
                .filter(|x| x.1 > 0)
                .map(share)
                .collect();
            if letters.is_empty() {
                f64::NAN
            } else {
                letters.iter().sum::<f64>() / letters.len() as f64
            }
        },
        reference_repeats: ref_form.0.1 + ref_form.1.1,
        reference_density_match_rate: share(ref_dens),
        reference_onset_grid_agreement: share(ref_grid),
        reference_window_edge_piling: share(ref_edge),
        pitch_class_distance: per(pc),
        note_density_distance: per(dens),
        valid_rate: per(valid as f64),
        grammar_clean_rate: per(clean as f64),
        pieces: nll_pieces,
        generations: gens,
        target_tokens: count as u64,
        grammar_error_rate: if gen_tokens > 0 {
            errors as f64 / gen_tokens as f64
        } else {
            f64::NAN
        },
        skipped_files: data.skipped.len(),
        generation_backend: backend,
        form: opts.form.clone(),
        nll_seconds,
        generation_seconds: t_gen.elapsed().as_secs_f64(),
    })
}
