//! Generation loops of a [`Generator`]: the prompt for a request, [`Generator::generate`] (one
//! section or a continuation, streaming notes), [`Generator::generate_piece`] (a whole form),
//! and the shared span loop that samples under the constraint masks.

use std::time::Instant;

use staria_models::grid::BeatGrid;
use staria_models::tokenizer::{Expect, PromptSpec, StreamEvent, TokenKind, normalize_form};
use staria_models::{Note, Prompt, Section, SectionLabel, Song, TimeSignature};

use super::{
    ExtraMask, Flow, GenError, GenRequest, GenSummary, GeneratedNote, Generator, Net, Piece,
    RawNote, Result, SectionReport, Snippets, StopReason, Target, continue_start_ms, ms_since,
    no_extra_mask, request,
};
use crate::constraints::{ConstrainedDecoder, OnsetRead};
use crate::sampling::Sampler;

impl Generator {
    /// The prompt for a request: the form token, the style, and every captured snippet.
    pub fn prompt_for(&self, snippets: &Snippets, req: &GenRequest) -> Result<Prompt> {
        let budget = self.tok.config().snippet_tokens;
        let spec =
            PromptSpec {
                style: req.style.clone(),
                form: if req.form.is_empty() {
                    None
                } else {
                    Some(normalize_form(&req.form).ok_or_else(|| {
                        request(format!("form {:?} must be letters A..D", req.form))
                    })?)
                },
                snippets: snippets
                    .captured()
                    .map(|(l, notes)| (l, self.snippet_tokens(notes, budget)))
                    .collect(),
            };
        Ok(self.tok.build_prompt(&spec)?)
    }

    /// The velocity the model is handed played notes at (the checkpoint's `prompt_velocity`),
    /// if its checkpoint names one.
    pub fn prompt_velocity(&self) -> Option<u8> {
        self.checkpoint.as_ref().and_then(|c| c.prompt_velocity)
    }

    /// Played notes as the model is handed them: at the checkpoint's `prompt_velocity` when it
    /// has one (snippets and the `Continue` context alike). A musician plays at any velocity,
    /// and a model follows only notes at the velocities it was trained on (measured with the
    /// shipped model: a C major scale at velocity 80 or 90 is restated 14-16 pitches of 16, at
    /// 64, 100 or 110 0-3).
    fn at_prompt_velocity<'a>(&self, notes: &'a [Note]) -> std::borrow::Cow<'a, [Note]> {
        match self.prompt_velocity() {
            Some(velocity) => notes
                .iter()
                .map(|n| Note {
                    velocity: velocity.clamp(1, 127),
                    ..*n
                })
                .collect(),
            None => std::borrow::Cow::Borrowed(notes),
        }
    }

    fn snippet_tokens(&self, notes: &[Note], budget: usize) -> Vec<u32> {
        self.tok
            .snippet_tokens(&self.at_prompt_velocity(notes), 0.0, budget)
    }

    /// Generates one request, calling `on_note` for each note as soon as it is complete (notes
    /// come in start order). Times are relative to the span start: the forced section's start,
    /// or for `Continue` the first bar line after `snippets.context` ([`continue_start_ms`]).
    pub fn generate(
        &mut self,
        snippets: &Snippets,
        req: &GenRequest,
        on_note: &mut dyn FnMut(GeneratedNote) -> Flow,
    ) -> Result<GenSummary> {
        let t0 = Instant::now();
        req.validate().map_err(GenError::Request)?;
        let mut cd =
            ConstrainedDecoder::new(&self.tok, &req.constraints).map_err(GenError::Request)?;
        let mut sampler = Sampler::new(self.tok.vocab_size(), req.sampling);
        let prompt = self.prompt_for(snippets, req)?;
        // A beat where the piece starts: the forced section's start (a bar line), or the
        // context's start (moved below when a long context is cut by whole windows).
        let beat_grid = BeatGrid::from_bpm(req.bpm)?;
        self.set_grid(Some(beat_grid));
        self.begin(&prompt)?;
        let mut prompt_tokens = self.position();

        let origin = match req.target {
            Target::Section(label) => {
                self.follower.start(&self.tok, prompt.snippet(label), 0.0);
                let before = self.position();
                if !self.force_section(&mut cd, label, 0.0)? {
                    return Err(request(
                        "the prompt fills the model's context; nothing can be generated",
                    ));
                }
                prompt_tokens += self.position() - before;
                0.0
            }
            Target::Continue => {
                self.follower.stop();
                let (ids, _end_ms, cut_ms) =
                    self.context_tokens(&snippets.context, prompt_tokens)?;
                self.set_grid(Some(BeatGrid::new(beat_grid.beat_ms, -cut_ms)?));
                if !ids.is_empty() {
                    self.extend(&ids)?;
                    for &id in &ids {
                        cd.push(&self.tok, id);
                    }
                }
                prompt_tokens += ids.len();
                // On the clock the model reads (it starts at the cut).
                continue_start_ms(&snippets.context, req.bpm, req.beats_per_bar) - cut_ms
            }
        };
        let span_start_ms = match req.target {
            Target::Section(_) => 0.0,
            Target::Continue => continue_start_ms(&snippets.context, req.bpm, req.beats_per_bar),
        };
        cd.set_span(origin, origin + req.span_ms());
        let prefill_ms = ms_since(t0);

        let t1 = Instant::now();
        let mut notes = 0usize;
        let mut first_note_ms = None;
        let limit = self.max_seq_len();
        let (stop, sampled, votes) = self.run_span(
            &mut cd,
            &mut sampler,
            limit,
            &no_extra_mask,
            &mut |n: RawNote| {
                notes += 1;
                first_note_ms.get_or_insert_with(|| ms_since(t0));
                on_note(GeneratedNote {
                    pitch: n.pitch,
                    velocity: n.velocity,
                    start_ms: n.start_ms - origin,
                    dur_ms: n.dur_ms,
                })
            },
        )?;
        Ok(GenSummary {
            notes,
            prompt_tokens,
            sampled_tokens: sampled,
            time_shift_votes: votes,
            stop,
            prefill_ms,
            decode_ms: ms_since(t1),
            first_note_ms,
            span_start_ms,
        })
    }

    /// Generates every section of `req.form` in order (`req.target` is not used): each
    /// occurrence is `req.bars` bars long, starts with its section tag, and is conditioned on
    /// everything generated before it. Sections the model leaves empty stay empty.
    pub fn generate_piece(&mut self, snippets: &Snippets, req: &GenRequest) -> Result<Piece> {
        let t0 = Instant::now();
        req.validate().map_err(GenError::Request)?;
        let form = normalize_form(&req.form)
            .filter(|f| f.bytes().all(|b| (b'A'..=b'D').contains(&b)))
            .ok_or_else(|| {
                request(format!(
                    "form {:?} must be a non-empty string of letters A..D",
                    req.form
                ))
            })?;
        let labels: Vec<SectionLabel> =
            form.chars().filter_map(SectionLabel::from_letter).collect();
        let mut cd =
            ConstrainedDecoder::new(&self.tok, &req.constraints).map_err(GenError::Request)?;
        let mut sampler = Sampler::new(self.tok.vocab_size(), req.sampling);
        let prompt = self.prompt_for(snippets, req)?;
        // The piece starts on a bar line: a beat at 0.
        self.set_grid(Some(BeatGrid::from_bpm(req.bpm)?));
        self.begin(&prompt)?;
        let prompt_tokens = self.position();
        let prefill_ms = ms_since(t0);

        let t1 = Instant::now();
        let span = req.span_ms();
        let window_ms = self.tok.config().window_ms as f64;
        let mut raw: Vec<RawNote> = Vec::new();
        let mut reports = Vec::with_capacity(labels.len());
        let mut sampled_total = 0;
        let mut votes_total = 0;
        let mut first_note_ms = None;
        let mut out_of_context = false;
        for (i, &label) in labels.iter().enumerate() {
            let (start, end) = (i as f64 * span, (i + 1) as f64 * span);
            let before = raw.len();
            let mut stop = StopReason::MaxSeqLen;
            if !out_of_context {
                self.follower.start(&self.tok, prompt.snippet(label), start);
                if self.force_section(&mut cd, label, start)? {
                    cd.set_span(start, end);
                    // An equal share of what is left, after reserving the `<T>`s and tags that
                    // later sections are forced to start with.
                    let later = labels.len() - i - 1;
                    let reserve = later * ((span / window_ms).ceil() as usize + 2);
                    let left = self.max_seq_len().saturating_sub(self.position() + reserve);
                    let limit = self.position() + left / (later + 1);
                    let (s, n, v) = self.run_span(
                        &mut cd,
                        &mut sampler,
                        limit,
                        &no_extra_mask,
                        &mut |note: RawNote| {
                            first_note_ms.get_or_insert_with(|| ms_since(t0));
                            raw.push(note);
                            Flow::Continue
                        },
                    )?;
                    stop = s;
                    sampled_total += n;
                    votes_total += v;
                }
                out_of_context = stop == StopReason::MaxSeqLen;
            }
            reports.push(SectionReport {
                label,
                start_ms: start,
                end_ms: end,
                notes: raw.len() - before,
                stop,
            });
        }

        let notes: Vec<Note> = raw.iter().map(|n| self.to_note(n)).collect();
        let sections: Vec<Section> = reports
            .iter()
            .map(|r| Section {
                label: r.label,
                marker_text: r.label.to_string(),
                start_tick: 0,
                end_tick: 0,
                start_ms: r.start_ms,
                end_ms: r.end_ms,
            })
            .collect();
        let mut song = Song::from_ms_notes(notes, sections, req.bpm);
        // Bars in the file should match the bars generated (from_ms_notes writes 4/4).
        let bpb = req.beats_per_bar;
        if bpb.fract() == 0.0 && (1.0..=32.0).contains(&bpb) {
            song.time_signatures = vec![TimeSignature {
                tick: 0,
                numerator: bpb as u8,
                denominator: 4,
            }];
        }
        let summary = GenSummary {
            notes: raw.len(),
            prompt_tokens,
            sampled_tokens: sampled_total,
            time_shift_votes: votes_total,
            stop: reports.last().map_or(StopReason::BarLimit, |r| r.stop),
            prefill_ms,
            decode_ms: ms_since(t1),
            first_note_ms,
            span_start_ms: 0.0,
        };
        Ok(Piece {
            song,
            sections: reports,
            summary,
        })
    }

    /// Piece tokens of the material to continue. A long context is cut from the front by whole
    /// windows until it fits the model's context with room to generate; the piece then starts at
    /// the cut. Returns the tokens, the material's end (ms, on that shortened clock) and the cut
    /// (ms of the original clock where the shortened one starts).
    fn context_tokens(&self, context: &[Note], prompt_len: usize) -> Result<(Vec<u32>, f64, f64)> {
        let end_ms = context
            .iter()
            .map(|n| n.end_ms)
            .filter(|e| e.is_finite())
            .fold(0.0, f64::max);
        if context.is_empty() {
            return Ok((Vec::new(), 0.0, 0.0));
        }
        let context = self.at_prompt_velocity(context);
        // Keep at least a quarter of the context for new tokens.
        let max_len = self.max_seq_len();
        let budget = (max_len - max_len / 4).saturating_sub(prompt_len);
        let window_ms = self.tok.config().window_ms as f64;
        let mut cut = 0.0;
        loop {
            let ids = self.tok.snippet_tokens(&context, cut, usize::MAX);
            if ids.len() <= budget {
                return Ok((ids, end_ms - cut, cut));
            }
            cut += window_ms;
        }
    }

    /// Starts section `label` at `start_ms` (not before the latest note) the way the model was
    /// trained to read it: `<T>`s to the window holding the start, with section windows the
    /// onset of the start (a new window starts there), and the section tag; without, the tag
    /// stands right before the section's first note. `false` when the context filled up on the
    /// way.
    pub(crate) fn force_section(
        &mut self,
        cd: &mut ConstrainedDecoder,
        label: SectionLabel,
        start_ms: f64,
    ) -> Result<bool> {
        for id in self.tok.section_start(cd.decoder(), label, start_ms) {
            if !self.feed(cd, id)? {
                return Ok(false);
            }
        }
        Ok(true)
    }

    /// Feeds a forced or sampled token to the model and the decoder. `false` when the context is
    /// full (nothing was fed).
    pub(crate) fn feed(&mut self, cd: &mut ConstrainedDecoder, id: u32) -> Result<bool> {
        if self.position() >= self.max_seq_len() {
            return Ok(false);
        }
        self.step(id)?;
        cd.push(&self.tok, id);
        Ok(true)
    }

    /// Samples until the span is full or something stops it; returns why, how many tokens were
    /// sampled and how many notes an onset vote moved behind a `<T>`. Notes are clipped at the
    /// span end (`ConstrainedDecoder::notes_end_ms`; an optional span's end does not clip).
    /// Past the cache position `limit` the span ends at the next note boundary (so what follows
    /// still reads as well formed).
    ///
    /// A note's onset is sampled from the model's whole onset distribution over the window
    /// (`ConstrainedDecoder::apply_open`); one before the window's last onset is a vote for
    /// `<T>`: the note token is taken back (one position of the KV cache), `<T>` and the note
    /// token are fed, and the onset is sampled in the new window (`OnsetRead`).
    pub(crate) fn run_span(
        &mut self,
        cd: &mut ConstrainedDecoder,
        sampler: &mut Sampler,
        limit: usize,
        extra_mask: ExtraMask<'_>,
        emit: &mut dyn FnMut(RawNote) -> Flow,
    ) -> Result<(StopReason, usize, usize)> {
        let notes_end = cd.notes_end_ms();
        let mut sampled = 0;
        let mut votes = 0;
        // The last token fed: at `Expect::Onset`, the note or drum token waiting for its onset.
        let mut last_fed: Option<u32> = None;
        loop {
            if cd.span_exhausted() {
                return Ok((StopReason::BarLimit, sampled, votes));
            }
            if self.position() >= self.max_seq_len() {
                return Ok((StopReason::MaxSeqLen, sampled, votes));
            }
            if self.position() >= limit && cd.expects() == Expect::Any {
                return Ok((StopReason::TokenBudget, sampled, votes));
            }
            let open = cd.onset_may_vote() && last_fed.is_some();
            if open {
                self.spare.copy_from_slice(&self.logits);
                cd.apply_open(&mut self.logits);
            } else {
                cd.apply(&mut self.logits);
            }
            extra_mask(cd, &mut self.logits);
            let follow_bias = sampler.params().follow_bias;
            self.follower
                .bias(&self.tok, cd.decoder(), &mut self.logits, follow_bias);
            let mut id = sampler.sample(&self.logits)?;
            sampled += 1;
            if open {
                match cd.read_onset(&self.tok, id) {
                    OnsetRead::Accept => {}
                    OnsetRead::TimeShift => {
                        let note = last_fed.expect("`open` needs the pending note token");
                        self.rewind(1)?;
                        cd.retract_pending();
                        votes += 1;
                        if !self.feed(cd, self.tok.time_shift_id())? || !self.feed(cd, note)? {
                            return Ok((StopReason::MaxSeqLen, sampled, votes));
                        }
                        continue;
                    }
                    OnsetRead::Clamp => {
                        self.logits.copy_from_slice(&self.spare);
                        cd.apply(&mut self.logits);
                        extra_mask(cd, &mut self.logits);
                        self.follower
                            .bias(&self.tok, cd.decoder(), &mut self.logits, follow_bias);
                        id = sampler.sample(&self.logits)?;
                    }
                }
            }
            // The model moving time past the span ends it (a pending note token without its
            // onset is dropped by the decoder when the next section tag is forced).
            if cd.ends_span(&self.tok, id) {
                return Ok((StopReason::BarLimit, sampled, votes));
            }
            // Stops are not fed, so a following section can be forced right after the last note.
            match self.tok.kind(id) {
                TokenKind::End => return Ok((StopReason::End, sampled, votes)),
                TokenKind::Section(l) => return Ok((StopReason::Section(l), sampled, votes)),
                _ => {}
            }
            last_fed = Some(id);
            self.follower.advance(&self.tok, id);
            if let Some(StreamEvent::Note {
                pitch,
                velocity,
                instrument,
                drum,
                start_ms,
                dur_ms,
            }) = self.feed_event(cd, id)?
            {
                let dur_ms = dur_ms.min(notes_end - start_ms);
                if dur_ms > 0.0 {
                    let flow = emit(RawNote {
                        pitch,
                        velocity,
                        instrument,
                        drum,
                        start_ms,
                        dur_ms,
                        pos_after: self.position(),
                    });
                    if flow == Flow::Stop {
                        return Ok((StopReason::Stopped, sampled, votes));
                    }
                }
            }
        }
    }

    /// Live modes: stop following a snippet (the performance is not a section's copy).
    pub(crate) fn stop_following(&mut self) {
        self.follower.stop();
    }

    /// The tokens in the KV cache, oldest first, on the fast backend (`None` on candle, which
    /// keeps no record). The live modes replay them into their grammar state after a rewind.
    pub fn cached_tokens(&self) -> Option<&[u32]> {
        match &self.net {
            Net::Candle(_) => None,
            Net::Fast { cached, .. } => Some(cached),
        }
    }

    fn feed_event(&mut self, cd: &mut ConstrainedDecoder, id: u32) -> Result<Option<StreamEvent>> {
        self.step(id)?;
        Ok(cd.push(&self.tok, id))
    }

    fn to_note(&self, n: &RawNote) -> Note {
        // Instruments get channels in order, skipping the drum channel 9.
        let channel = if n.drum {
            9
        } else if n.instrument >= 9 {
            (n.instrument + 1).min(15)
        } else {
            n.instrument
        };
        Note {
            pitch: n.pitch,
            velocity: n.velocity.max(1),
            channel,
            program: if n.drum {
                0
            } else {
                self.tok.program_for_instrument(n.instrument)
            },
            start_tick: 0,
            end_tick: 0,
            start_ms: n.start_ms,
            end_ms: n.start_ms + n.dur_ms,
        }
    }
}
