//! The loaded model: a freshly loaded one swaps in between requests (never under a running
//! generation, and it ends a live session and silences the old model's notes first), and while
//! the thread is idle the prompt the next request will most likely start with is prefilled, so
//! that request's first note needs no prompt prefill.

use super::{Interrupt, WARM_QUIET, Worker};
use crate::generate::{Backend, GenRequest, Target};
use crate::status::EngineState;
use staria_models::SectionLabel;
use std::panic::{AssertUnwindSafe, catch_unwind};
use std::sync::atomic::Ordering::Relaxed;
use std::time::Duration;

impl Worker {
    /// Swaps a freshly loaded model in, between requests.
    pub(super) fn swap_in(&mut self) {
        if self.generating {
            return;
        }
        let Some((generator, name)) = self.incoming.take() else {
            return;
        };
        // The session's cache belongs to the old model.
        self.end_live();
        // Notes of the old model must not ring on under the new one.
        self.stop_all(Interrupt::Stopped);
        let old = self.generator.replace(generator);
        if old.is_some() {
            drop(old);
            crate::memory::release_freed_memory();
        }
        self.prompt_stale = true;
        let status = &self.link.shared.status;
        status.set_model_name(name);
        status.model_generation.fetch_add(1, Relaxed);
        status.set_state(EngineState::Ready);
    }

    /// While idle, prefills the prompt the next request will most likely start with (the
    /// captured snippets, the newest request's form, the style setting): the fast backend then
    /// reuses it, and that request's first note needs no prompt prefill. Waits until capturing
    /// has been quiet for a moment, so a musician playing does not cost a prefill per note.
    pub(super) fn warm_prompt(&mut self) {
        const QUIET: Duration = WARM_QUIET;
        let params = self.link.shared.params.values();
        if params.style != self.warm_style {
            self.warm_style = params.style;
            self.prompt_stale = true;
        }
        // The form setting (the plugin's) names what the next request carries.
        if !params.form.is_empty() && params.form != self.warm_form {
            self.warm_form = params.form;
            self.prompt_stale = true;
        }
        if !self.prompt_stale
            || self.live.is_some()
            || self.pending.is_some()
            || self.last_capture.elapsed() < QUIET
            || !self
                .generator
                .as_ref()
                .is_some_and(|g| g.backend() == Backend::Fast)
        {
            return;
        }
        let now_beat = self.link.shared.transport.read().playhead;
        let snippets = self.snippets(now_beat, Target::Section(SectionLabel::A));
        let Some(g) = self.generator.as_mut() else {
            return;
        };
        let mut req = GenRequest::new(Target::Section(SectionLabel::A), 1, 120.0);
        req.form = self.warm_form.to_string();
        req.style = params
            .style_name()
            .filter(|s| g.tokenizer().style_id(s).is_some());
        // Opportunistic: a failure here shows up (and is reported) when a request needs it.
        let warmed = catch_unwind(AssertUnwindSafe(|| {
            g.prompt_for(&snippets, &req)
                .and_then(|p| g.begin(&p).map(|_| ()))
                .is_ok()
        }));
        self.prompt_stale = false;
        if matches!(warmed, Ok(true)) {
            self.link.shared.status.prompts_warmed.fetch_add(1, Relaxed);
        }
    }
}
