//! `staria bench`: prefill and decode speed in one JSON line.

use std::time::Instant;

use staria_engine::generate::{Flow, GenRequest, Snippets, Target};
use staria_models::fast::WeightFormat;
use staria_models::{Note, SectionLabel};

use crate::Failure;
use crate::args::BenchArgs;
use crate::load::load;

pub(crate) fn cmd_bench(a: BenchArgs) -> Result<(), Failure> {
    let t0 = Instant::now();
    let mut loaded = load(&a.model, &a.backend)?;
    let load_ms = t0.elapsed().as_secs_f64() * 1000.0;
    let g = &mut loaded.generator;
    let tok = g.tokenizer().clone();

    // Prefill: a prompt of real note tokens (eighth-note arpeggios at 120 bpm), 512 tokens or
    // half the context when that is shorter.
    let n_prefill = 512.min(g.max_seq_len() / 2);
    let arpeggio: Vec<Note> = (0..n_prefill as u32)
        .map(|k| {
            let start_ms = k as f64 * 250.0;
            Note {
                pitch: 48 + (k % 36) as u8,
                velocity: 80,
                channel: 0,
                program: 0,
                start_tick: k as u64 * 240,
                end_tick: k as u64 * 240 + 230,
                start_ms,
                end_ms: start_ms + 240.0,
            }
        })
        .collect();
    let mut ids = vec![tok.prompt_start_id(), tok.prompt_end_id(), tok.start_id()];
    ids.extend(tok.snippet_tokens(&arpeggio, 0.0, n_prefill - ids.len()));
    let prompt = staria_models::Prompt {
        inline: ids.clone(),
        decoder: ids.clone(),
        snippets: Vec::new(),
    };
    g.begin(&prompt)?; // warm-up: first-touch allocations and lazy kernels
    let mut runs = Vec::new();
    for _ in 0..3 {
        // Cold: without the reset the cached prompt would be reused.
        g.reset()?;
        let t = Instant::now();
        g.begin(&prompt)?;
        runs.push(t.elapsed().as_secs_f64() * 1000.0);
    }
    runs.sort_by(f64::total_cmp);
    let prefill_ms = runs[1];

    // Decode through the real path (masks, sampler, callbacks) on a fresh A section.
    let mut snippets = Snippets::default();
    snippets.set(SectionLabel::A, arpeggio[..16].to_vec());
    let mut req = GenRequest::new(Target::Section(SectionLabel::A), 64, 120.0);
    req.sampling.seed = 1;
    let mut notes = 0;
    let summary = g.generate(&snippets, &req, &mut |_| {
        notes += 1;
        if notes >= 100 {
            Flow::Stop
        } else {
            Flow::Continue
        }
    })?;
    // The same request again (a re-trigger with unchanged snippets): the fast backend reuses
    // the prompt's KV cache, so only the first notes' tokens stand between command and note.
    let mut first = true;
    let repeat = g.generate(&snippets, &req, &mut |_| {
        if std::mem::take(&mut first) {
            Flow::Stop
        } else {
            Flow::Continue
        }
    })?;
    let decode_tok_per_s = if summary.decode_ms > 0.0 {
        summary.sampled_tokens as f64 / (summary.decode_ms / 1000.0)
    } else {
        0.0
    };

    let line = serde_json::json!({
        "model": loaded.dir.display().to_string(),
        "kind": g.kind().to_string(),
        "device": loaded.device,
        "backend": g.backend().name(),
        // The candle backend computes in f32 (checkpoint::load builds the model in f32).
        "weights": g.weights().map_or("f32", WeightFormat::name),
        "threads": loaded.threads,
        "load_ms": round2(load_ms),
        "prefill_tokens": ids.len(),
        "prefill_ms_512": round2(prefill_ms),
        "decode_tokens": summary.sampled_tokens,
        "decode_tok_per_s": round2(decode_tok_per_s),
        "first_note_ms": summary.first_note_ms.map(round2),
        "first_note_ms_repeat": repeat.first_note_ms.map(round2),
        // What the cold first note waited for: the request's prompt and its prefill.
        "first_request_prompt_tokens": summary.prompt_tokens,
        "first_request_prefill_ms": round2(summary.prefill_ms),
        "peak_rss_mb": peak_rss_mb(),
    });
    println!("{line}");
    Ok(())
}

pub(crate) fn round2(x: f64) -> f64 {
    (x * 100.0).round() / 100.0
}

/// Peak resident set (VmHWM) in MB; `None` where /proc is not available.
pub(crate) fn peak_rss_mb() -> Option<f64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let kb: f64 = status
        .lines()
        .find_map(|l| l.strip_prefix("VmHWM:"))?
        .trim()
        .trim_end_matches("kB")
        .trim()
        .parse()
        .ok()?;
    Some(round2(kb / 1024.0))
}
