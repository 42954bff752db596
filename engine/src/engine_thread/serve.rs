//! Serving a generate request: the request it replaces plays on up to the new start, the model
//! streams the section's notes into a [`Scheduler`] (the callback pauses generation once it is
//! `generate_ahead_secs` ahead of the playhead, still draining commands), and the outcome is
//! pushed. Also what a request is in the generation side's terms: the snippets, the `Continue`
//! context and the engine parameters as sampling settings and constraints.

use super::{Interrupt, Pending, Worker, panic_text, secs_to_beats};
use crate::capture::Capture;
use crate::constraints::{Constraints, Scale, ScaleKind};
use crate::generate::{Flow, GenRequest, GeneratedNote, Snippets, Target};
use crate::messages::Outcome;
use crate::sampling::SamplingParams;
use crate::schedule::{Added, Scheduler};
use crate::status::{EngineState, ParamValues};
use crate::timing::beats_per_bar;
use staria_models::{Note, SectionLabel, Tokenizer};
use std::panic::{AssertUnwindSafe, catch_unwind};
use std::sync::atomic::Ordering::Relaxed;

impl Worker {
    pub(super) fn serve(&mut self, req: Pending) {
        // A section request takes the model (and its cache) from a live session.
        self.end_live();
        let shared = self.link.shared.clone();
        let status = &shared.status;
        if !req.start_beat.is_finite() || req.bars == 0 {
            status.set_error(format!(
                "request {}: start beat {} / {} bars is not a section",
                req.id, req.start_beat, req.bars
            ));
            self.push_done(req.id, Outcome::Failed);
            return;
        }
        // The request it replaces plays on up to the new start. A start behind the playhead is
        // a loop's start (asked for in its last bar): the old request plays on to the wrap,
        // whose relocation ends it (tails are dropped on a new epoch).
        if let Some(mut old) = self.current.take() {
            let was_complete = old.is_complete();
            if req.start_beat < shared.transport.read().playhead {
                old.finish();
            } else {
                old.truncate(req.start_beat);
            }
            if !was_complete {
                self.push_done(old.request_id, Outcome::Replaced);
            }
            self.tails.push(old);
        }
        // After the truncation: a `Continue` picks up from what plays before its start.
        let snippets = self.snippets(shared.transport.read().playhead, req.target);
        let Some(mut generator) = self.generator.take() else {
            status.set_error("no model loaded");
            self.push_done(req.id, Outcome::Failed);
            return;
        };
        let t = shared.transport.read();
        let params = shared.params.values();
        let bpb = beats_per_bar(req.ts_num, req.ts_den);
        self.current = Some(Scheduler::new(
            req.id,
            self.epoch,
            req.start_beat,
            req.bars as u32,
            bpb,
            t.tempo_bpm,
            params,
        ));
        let gen_req = gen_request(&req, t.tempo_bpm, bpb, &params, generator.tokenizer());
        if req.form != self.warm_form {
            self.warm_form = req.form;
            self.prompt_stale = true;
        }

        status.current_request.store(req.id, Relaxed);
        status.set_state(EngineState::Generating);
        self.generating = true;
        self.interrupt = None;
        let result = catch_unwind(AssertUnwindSafe(|| {
            generator.generate(&snippets, &gen_req, &mut |n| self.on_note(n))
        }));
        self.generating = false;
        self.generator = Some(generator);
        status.current_request.store(0, Relaxed);

        let outcome = match result {
            Ok(Ok(summary)) => {
                status
                    .tokens_generated
                    .fetch_add(summary.sampled_tokens as u64, Relaxed);
                status.set_state(EngineState::Ready);
                match self.interrupt.take() {
                    None => Some(Outcome::Finished),
                    // Stays current (not complete) until the next request truncates it.
                    Some(Interrupt::NewRequest) => None,
                    Some(Interrupt::Cancelled) => Some(Outcome::Cancelled),
                    Some(Interrupt::Stopped | Interrupt::Shutdown) => Some(Outcome::Interrupted),
                }
            }
            Ok(Err(e)) => {
                status.set_error(format!("generation failed: {e}"));
                Some(Outcome::Failed)
            }
            Err(p) => {
                status.set_error(format!("generation panicked: {}", panic_text(p.as_ref())));
                Some(Outcome::Failed)
            }
        };
        match outcome {
            Some(Outcome::Finished) => {
                if let Some(cur) = &mut self.current {
                    cur.finish();
                }
                self.push_done(req.id, Outcome::Finished);
            }
            Some(o) => {
                // Silence it all (the audio side releases what sounds on this outcome).
                self.current = None;
                self.tails.clear();
                self.push_done(req.id, o);
            }
            None => {}
        }
        self.interrupt = None;
    }

    /// Called by the generator for each note: schedule it, then wait while far enough ahead,
    /// staying responsive to commands.
    pub(super) fn on_note(&mut self, n: GeneratedNote) -> Flow {
        self.link
            .shared
            .status
            .notes_generated
            .fetch_add(1, Relaxed);
        let Some(cur) = self.current.as_mut() else {
            return Flow::Stop;
        };
        if cur.add(n.pitch, n.velocity, n.start_ms, n.dur_ms) == Added::PastEnd {
            return Flow::Stop;
        }
        loop {
            self.poll();
            if self.interrupt.is_some() || self.shutdown {
                return Flow::Stop;
            }
            self.pump();
            let t = self.link.shared.transport.read();
            let Some(cur) = self.current.as_ref() else {
                return Flow::Stop;
            };
            let reference = t.playhead.max(cur.start_beat);
            if cur.watermark()
                <= reference + secs_to_beats(self.cfg.generate_ahead_secs, t.tempo_bpm)
            {
                return Flow::Continue;
            }
            if t.playing {
                // Until the playhead lets generation go on or an event is due to be pushed.
                let ahead = secs_to_beats(self.cfg.generate_ahead_secs, t.tempo_bpm);
                let timeout = self.until_next_push(&t, cur.watermark() - ahead);
                self.park_idle(timeout);
            } else {
                // Far enough ahead of a playhead that is not moving: wait for the transport.
                self.park_idle(self.cfg.idle_timeout);
            }
        }
    }

    /// The captured sections, and for `Continue` the music it continues (`continue_context`).
    pub(super) fn snippets(&self, now_beat: f64, target: Target) -> Snippets {
        let mut s = Snippets::default();
        for label in SectionLabel::ALL {
            s.set(label, self.capture.snippet(label, now_beat));
        }
        if target == Target::Continue {
            let generated = self.current.as_ref().or(self.tails.last());
            s.context = continue_context(&self.capture, generated, now_beat);
        }
        s
    }
}

/// A request in the generation side's terms.
pub(super) fn gen_request(
    req: &Pending,
    bpm: f64,
    bpb: f64,
    p: &ParamValues,
    tok: &Tokenizer,
) -> GenRequest {
    GenRequest {
        target: req.target,
        bars: req.bars as u32,
        bpm,
        beats_per_bar: bpb,
        form: req.form.to_string(),
        // A style the loaded model does not know is left out rather than failing the request.
        style: p.style_name().filter(|s| tok.style_id(s).is_some()),
        sampling: SamplingParams {
            temperature: p.temperature,
            top_p: p.top_p,
            min_p: p.min_p,
            seed: req.seed,
            // The plugin's "Adherence" parameter (default `SamplingParams::DEFAULT_FOLLOW_BIAS`).
            follow_bias: p.follow_bias,
        },
        constraints: Constraints {
            pitch_min: p.pitch_low,
            pitch_max: p.pitch_high,
            scale: scale_for_mask(p.key_mask),
            max_polyphony: Some(p.max_polyphony),
            drums: false,
            allow_early_end: false,
        },
    }
}

/// What a `Continue` request continues: the music heard last. That is what the musician just
/// captured when they played after the newest generated request started, otherwise the
/// generated music (times in ms from its start).
pub(super) fn continue_context(
    capture: &Capture,
    generated: Option<&Scheduler>,
    now_beat: f64,
) -> Vec<Note> {
    match (capture.last_played(), generated) {
        (Some((label, beat)), g) if g.is_none_or(|g| beat >= g.start_beat) => {
            capture.snippet(label, now_beat)
        }
        (_, Some(g)) => g.context_notes(),
        (_, None) => Vec::new(),
    }
}

/// The scale whose pitch classes are exactly `mask`, for the model's constraint masks; a mask no
/// named scale matches is still enforced by the scheduler's pitch filter.
fn scale_for_mask(mask: u16) -> Option<Scale> {
    if mask & 0xFFF == 0xFFF {
        return None;
    }
    (0..12u8)
        .flat_map(|root| ScaleKind::ALL.iter().map(move |&k| Scale::new(root, k)))
        .find(|s| s.pitch_classes() == mask & 0xFFF)
}
