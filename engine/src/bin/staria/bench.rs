//! `staria bench`: prefill and decode speed in one JSON line.

use std::time::Instant;

use staria_engine::generate::{Flow, GenRequest, Generator, Snippets, Target};
use staria_engine::live::sim::{Performance, SimClock, simulate};
use staria_engine::live::{LiveMode, LiveSettings, TimedNote};
use staria_models::fast::WeightFormat;
use staria_models::{Note, SectionLabel};

use crate::args::BenchArgs;
use crate::load::load;
use crate::{Failure, bad};

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

    let mut line = serde_json::json!({
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
    if a.live {
        let live = live_bench(g, a.live_minutes, a.ghost_melody, a.consonant)?;
        if let (Some(obj), serde_json::Value::Object(extra)) = (line.as_object_mut(), live) {
            obj.extend(extra);
        }
    }
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

/// Tempo of the live benchmarks.
const LIVE_BPM: f64 = 140.0;

/// A performer at 140 bpm for `minutes`: phrases of `phrase_bars` bars of eighth and quarter
/// notes on a D major scale between `low` and `low + 24`, each followed by `rest_bars` bars of
/// silence. Deterministic (a fixed linear congruential walk).
fn synthetic_performance(minutes: f64, phrase_bars: u32, rest_bars: u32, low: u8) -> Performance {
    const SCALE: [u8; 7] = [2, 4, 6, 7, 9, 11, 13];
    let beat = 60_000.0 / LIVE_BPM;
    let end = minutes * 60_000.0;
    let mut state: u64 = 0x5eed;
    let mut next = || {
        state = state
            .wrapping_mul(6_364_136_223_846_793_005)
            .wrapping_add(1_442_695_040_888_963_407);
        (state >> 33) as u32
    };
    let mut notes = Vec::new();
    let mut degree: i32 = 7;
    let mut t = 0.0;
    'phrases: loop {
        let phrase_end = t + phrase_bars as f64 * 4.0 * beat;
        while t < phrase_end {
            if t >= end {
                break 'phrases;
            }
            let len = if next() % 4 == 0 { beat } else { beat / 2.0 };
            degree = (degree + (next() % 5) as i32 - 2).clamp(0, 20);
            let pitch = low + 12 * (degree / 7) as u8 + SCALE[(degree % 7) as usize] - 2;
            notes.push(TimedNote {
                pitch,
                velocity: 70 + (next() % 30) as u8,
                start_ms: t,
                end_ms: t + len * 0.9,
            });
            t += len;
        }
        t = phrase_end + rest_bars as f64 * 4.0 * beat;
    }
    Performance { notes }
}

fn quantile(values: &[f64], q: f64) -> Option<f64> {
    let mut v = values.to_vec();
    v.sort_by(f64::total_cmp);
    let i = ((v.len() as f64 - 1.0) * q).round() as usize;
    v.get(i).copied()
}

/// The live figures of `staria bench --live` (see `BenchArgs::live`), on the compute-charged
/// clock: a slow machine falls behind and its late notes count.
fn live_bench(
    g: &mut Generator,
    minutes: f64,
    ghost_melody: bool,
    consonant: bool,
) -> Result<serde_json::Value, Failure> {
    if !(minutes.is_finite() && (0.1..=60.0).contains(&minutes)) {
        return Err(bad(format!(
            "--live-minutes must be in 0.1..=60, got {minutes}"
        )));
    }
    let snippets = Snippets::default();
    // Call and response: 2-bar calls, 2 bars of rest; a 2-beat silence hands over, the answer
    // (2 bars) is cut when the next call starts.
    let calls = synthetic_performance(minutes.min(3.0), 2, 2, 62);
    let mut settings = LiveSettings::new(LiveMode::Respond, LIVE_BPM);
    settings.sampling.seed = 1;
    let respond = simulate(g, &snippets, settings, &calls, SimClock::Charged, 10.0)?;
    // Accompaniment: a melody above middle C without rests, the model under it.
    let melody = synthetic_performance(minutes, 1_000, 0, 62);
    let mut settings = LiveSettings::new(LiveMode::Accompany, LIVE_BPM);
    settings.sampling.seed = 1;
    settings.ghost_melody = ghost_melody;
    settings.consonant = consonant;
    let ghost = settings.samples_ghost_melody(g.tokenizer());
    let accompany = simulate(g, &snippets, settings, &melody, SimClock::Charged, 10.0)?;
    let mut absorb = respond.stats.absorb_ms.clone();
    absorb.extend_from_slice(&accompany.stats.absorb_ms);
    let round = |x: Option<f64>| x.map(round2);
    Ok(serde_json::json!({
        "live_bpm": LIVE_BPM,
        "handovers": respond.stats.handover_ms.len(),
        "handover_ms_p50": round(quantile(&respond.stats.handover_ms, 0.5)),
        "handover_ms_p99": round(quantile(&respond.stats.handover_ms, 0.99)),
        "absorb_note_ms": round(quantile(&absorb, 0.5)),
        "absorb_note_ms_p99": round(quantile(&absorb, 0.99)),
        "absorbed_notes": absorb.len(),
        "accompany_minutes": minutes,
        "accompany_performer_notes": melody.notes.len(),
        "accompany_notes": accompany.model_notes.len(),
        "late_notes": accompany.late_notes,
        "collisions": accompany.collisions,
        "accompany_max_lag_ms": round2(accompany.max_lag_ms),
        "accompany_rebases": accompany.stats.rebases,
        "accompany_ghost_melody": ghost,
        "accompany_consonant": consonant,
        "accompany_rebase_ms_max": round(accompany.stats.rebase_ms.iter().copied().reduce(f64::max)),
        "respond_late_notes": respond.late_notes,
        "respond_collisions": respond.collisions,
    }))
}
