//! The audio thread's side of the editor window: what it publishes each block, the window's
//! requests it acts on, and the form walk ("play the whole form" and the section queued next).
//! Atomics and the log ring only (see [`crate::gui_state`]): nothing here allocates, locks or
//! waits.

use staria_engine::{RequestId, Target};
use staria_models::SectionLabel;

use crate::Staria;
use crate::gui_state::{LogEntry, request};
use crate::keyswitch::KeyAction;
use crate::timeline::Timeline;

/// The section requested last: where it plays, and whether the next one has been asked for.
#[derive(Debug, Clone, Copy, PartialEq)]
pub(crate) struct SectionPlay {
    pub start_beat: f64,
    pub end_beat: f64,
    /// The section after it (queued or the form's next) has been requested.
    pub followed: bool,
}

impl Staria {
    /// Start of a block: note times for the log, and "the transport started" for the export.
    pub(crate) fn gui_begin_block(&mut self, grid: &Timeline) {
        let live = &mut *self.live;
        live.tap.begin_block(
            grid.pos_beats,
            grid.beats_per_sample() * grid.playing as u8 as f64,
        );
        if grid.playing && !live.was_playing {
            live.tap.push(LogEntry::TransportStart {
                beat: grid.pos_beats,
            });
        }
        if !grid.playing && live.was_playing {
            // What was requested is cut by the stop.
            self.forget_section_playing();
        }
    }

    /// Called when a generate request went out.
    pub(crate) fn note_section_request(
        &mut self,
        request_id: RequestId,
        target: Target,
        start_beat: f64,
        bars: u16,
        grid: &Timeline,
    ) {
        let label = match target {
            Target::Section(s) => Some(s),
            _ => None,
        };
        // Continue starts on the bar line after the music it continues (the engine knows where):
        // shown from the next bar line.
        let start_beat = if label.is_none() && grid.playing {
            grid.next_played_bar(start_beat)
        } else {
            start_beat
        };
        let end_beat = start_beat + bars as f64 * grid.beats_per_bar();
        self.live.section_playing = Some(SectionPlay {
            start_beat,
            end_beat,
            followed: false,
        });
        self.gui.publish_section(label, start_beat, end_beat);
        self.live.tap.push(LogEntry::Section {
            request_id,
            label,
            start_beat,
            bars,
            ts_num: grid.ts_num,
            ts_den: grid.ts_den,
            bpm: grid.tempo_bpm,
        });
    }

    pub(crate) fn forget_section_playing(&mut self) {
        self.live.section_playing = None;
        self.gui.clear_section();
    }

    /// The window's one-shot requests, then the form walk.
    pub(crate) fn handle_gui_requests(&mut self, grid: &Timeline, bypassed: bool) {
        let bits = self.gui.take_requests();
        let beat = grid.pos_beats;
        for s in SectionLabel::ALL {
            if bits & request::clear(s) != 0 {
                self.clear_section(s);
            }
        }
        if bits & request::STOP != 0 {
            self.gui.set_walk_form(false);
            self.perform(KeyAction::Stop, beat, grid);
        }
        if bypassed {
            return;
        }
        for s in SectionLabel::ALL {
            if bits & request::play(s) != 0 {
                self.perform(KeyAction::Play(s), beat, grid);
            }
        }
        if bits & request::CONTINUE != 0 {
            self.perform(KeyAction::Continue, beat, grid);
        }
        if bits & request::PLAY_NEXT != 0 {
            self.perform(KeyAction::PlayNext, beat, grid);
        }
        if bits & request::HANDOVER != 0 {
            let now = self.live.live_modes.now();
            self.live_handover(now);
        }
        self.step_form_walk(grid);
    }

    /// The section queued in the window, or with "play the whole form" on the form's next
    /// section, is requested in the last bar of the one playing (so it starts on the bar line
    /// where that one ends), or on the next bar line when nothing plays. The walk stops by
    /// itself after the form's last section.
    fn step_form_walk(&mut self, grid: &Timeline) {
        if !grid.playing {
            return;
        }
        let beat = grid.pos_beats;
        let due = match self.live.section_playing {
            Some(p) if beat < p.end_beat - 1e-9 => {
                !p.followed && grid.end_beat() >= p.end_beat - grid.beats_per_bar()
            }
            _ => true,
        };
        if !due {
            return;
        }
        let before = self.live.last_request;
        if let Some(next) = self.gui.take_queued() {
            self.perform(KeyAction::Play(next), beat, grid);
        } else if self.gui.walking_form() {
            let len = self.params.form.value().letters().len();
            if self.live.form_pos >= len {
                // The form is done: the last section plays out; a new walk starts at its top.
                self.gui.set_walk_form(false);
                self.live.form_pos = 0;
            } else {
                self.perform(KeyAction::PlayNext, beat, grid);
            }
        } else {
            return;
        }
        if self.live.last_request == before
            && let Some(p) = &mut self.live.section_playing
        {
            // Nothing new went out (the walk ended, or the engine's ring was full): do not ask
            // again for this section.
            p.followed = true;
        }
    }

    /// End of a block: what the window shows.
    pub(crate) fn publish_gui(&self, grid: &Timeline) {
        let live = &*self.live;
        self.gui.publish(
            grid.playing,
            if grid.playing {
                grid.end_beat()
            } else {
                grid.pos_beats
            },
            grid.tempo_bpm,
            (grid.ts_num, grid.ts_den),
            live.recorder.section(),
            live.edges.arm,
            live.form_pos,
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::engine_host::EngineHost;
    use crate::gui_state::PlayingView;
    use crate::timeline::HostReport;
    use nice_plug::prelude::Param;

    /// A playing 4/4 transport at 120 bpm whose block starts at `beat`.
    fn at(beat: f64) -> Timeline {
        Timeline::from_host(HostReport {
            playing: true,
            tempo: Some(120.0),
            time_sig: (Some(4), Some(4)),
            pos_beats: Some(beat),
            pos_seconds: Some(beat / 2.0),
            bar_start_beats: Some((beat / 4.0).floor() * 4.0),
            samples: 512,
            sample_rate: 48_000.0,
        })
    }

    /// A plugin with a running engine (requests go into its ring; no model is needed for that).
    fn with_engine() -> Staria {
        let mut p = Staria::default();
        p.engine = Some(EngineHost::start(p.params.clone(), p.gui.clone()).unwrap());
        p
    }

    fn playing(p: &Staria) -> Option<PlayingView> {
        p.gui.view().section
    }

    /// A section queued in the window starts on the next bar line when nothing plays; with
    /// "play the whole form" on, the form's sections follow one another, each asked for once in
    /// the last bar of the one before and starting where it ends; the walk stops after the
    /// form's last section.
    #[test]
    fn queued_section_then_the_form_walks_to_its_end() {
        let mut p = with_engine();
        let bar = 4.0;
        let len = p.params.bars.value() as f64 * bar; // 8 bars
        p.gui.queue_next(Some(SectionLabel::B));
        p.handle_gui_requests(&at(1.0), false);
        let b = playing(&p).expect("B requested");
        assert_eq!(
            (b.label, b.start_beat, b.end_beat),
            (Some(SectionLabel::B), 4.0, 4.0 + len)
        );
        assert_eq!(p.gui.queued(), None);

        p.gui.set_walk_form(true);
        p.handle_gui_requests(&at(20.0), false);
        assert_eq!(playing(&p), Some(b), "nothing before B's last bar");
        // The form (AABA by default) walks from its start.
        let mut start = b.end_beat;
        for (i, want) in "AABA".chars().enumerate() {
            let last_bar = start - bar + 0.5;
            p.handle_gui_requests(&at(last_bar), false);
            let s = playing(&p).unwrap();
            assert_eq!(s.label, SectionLabel::from_letter(want), "section {i}");
            assert_eq!(
                s.start_beat, start,
                "section {i} starts where the last ends"
            );
            let request = p.live.last_request;
            p.handle_gui_requests(&at(last_bar + 1.0), false);
            assert_eq!(p.live.last_request, request, "asked twice for section {i}");
            start += len;
        }
        assert_eq!(p.live.form_pos, 4);
        // In the last section's last bar the walk ends by itself; nothing more is asked for.
        let request = p.live.last_request;
        p.handle_gui_requests(&at(start - bar + 0.5), false);
        assert!(!p.gui.walking_form());
        assert_eq!(p.live.last_request, request);
        assert_eq!(p.live.form_pos, 0);
    }

    /// The window's buttons: play a section, clear one, stop (which also ends a form walk).
    #[test]
    fn window_requests_play_clear_and_stop() {
        let mut p = with_engine();
        let mut data = crate::snippets::SnippetData::default();
        data.notes[0] = crate::snippets::SnippetNote {
            start_ticks: 0,
            len_ticks: 960,
            pitch: 60,
            velocity: 90,
        };
        data.count = 1;
        data.bars = 1;
        p.params.snippets.publish(SectionLabel::C, &data);

        p.gui
            .request(request::play(SectionLabel::D) | request::clear(SectionLabel::C));
        p.handle_gui_requests(&at(6.0), false);
        let d = playing(&p).unwrap();
        assert_eq!((d.label, d.start_beat), (Some(SectionLabel::D), 8.0));
        let mut read = crate::snippets::SnippetData::default();
        assert!(
            p.params
                .snippets
                .try_read_published(SectionLabel::C, &mut read)
        );
        assert!(read.is_empty(), "C was cleared");

        p.gui.set_walk_form(true);
        p.gui.request(request::STOP);
        p.handle_gui_requests(&at(7.0), false);
        assert_eq!(playing(&p), None);
        assert!(!p.gui.walking_form());
        // Bypassed: play requests are ignored.
        p.gui.request(request::play(SectionLabel::A));
        p.handle_gui_requests(&at(8.0), true);
        assert_eq!(playing(&p), None);
    }

    /// The window writes Record A back to "on" after a keyswitch armed A: that edge must not
    /// end and restart the recording (its notes would be cut into a snippet of their own).
    #[test]
    fn record_parameter_written_back_does_not_restart_the_recording() {
        let mut p = Staria::default();
        let grid = at(4.0);
        p.perform(KeyAction::ToggleRecord(SectionLabel::A), 4.0, &grid);
        p.record_note_on(60, 100, 4.5, &grid);
        // The window's write-back, as the host applies it.
        let ptr = p.params.arm_a.as_ptr();
        // SAFETY: `ptr` points into `p.params`, alive for the whole test.
        unsafe { ptr._internal_set_normalized_value(1.0) };
        p.handle_param_edges(&at(5.0), false);
        assert_eq!(p.live.recorder.section(), Some(SectionLabel::A));
        assert!(p.live.recorder.has_notes(), "the recording was restarted");
        // What the window reads: A recording, and the parameter seen "on".
        p.publish_gui(&at(5.0));
        assert_eq!(p.gui.view().recording, Some(SectionLabel::A));
        assert_eq!(p.gui.arm_seen(), [true, false, false, false]);
    }

    /// End to end with the shipped model: section A generated in real time through the engine,
    /// its notes sent to the host as `process()` sends them, and the export of the last section
    /// re-opened with `read_midi`: the same notes (pitch, channel, start, end) as the host got,
    /// and an "A" marker at the file's start.
    #[test]
    fn what_the_host_heard_is_what_exports() {
        use nice_plug::prelude::NoteEvent;
        let mut p = with_engine();
        let waited = std::time::Instant::now();
        while p.params.status().state != staria_engine::EngineState::Ready {
            assert!(
                waited.elapsed().as_secs() < 120,
                "no model: {:?}",
                p.params.status()
            );
            std::thread::sleep(std::time::Duration::from_millis(20));
        }
        // Two bars of A from beat 4, at 120 bpm, 10 ms blocks played in real time.
        let ptr = p.params.bars.as_ptr();
        // SAFETY: `ptr` points into `p.params`, alive for the whole test.
        unsafe { ptr._internal_set_normalized_value(ptr.preview_normalized(2.0)) };
        let (rate, block) = (48_000.0, 480u32);
        let block_at = |beat: f64| {
            Timeline::from_host(HostReport {
                playing: true,
                tempo: Some(120.0),
                time_sig: (Some(4), Some(4)),
                pos_beats: Some(beat),
                pos_seconds: Some(beat / 2.0),
                bar_start_beats: Some((beat / 4.0).floor() * 4.0),
                samples: block,
                sample_rate: rate,
            })
        };
        // (pitch, channel, on beat, off beat) of what went to the host.
        let mut heard: Vec<(u8, u8, f64, f64)> = Vec::new();
        // 0.02 beats a block.
        for i in 0..625 {
            let pos = i as f64 * 0.02;
            let grid = block_at(pos);
            p.gui_begin_block(&grid);
            p.push_engine_params();
            let frame = staria_engine::TransportFrame {
                playing: true,
                pos_beats: pos,
                tempo_bpm: 120.0,
                samples: block,
                sample_rate: rate,
            };
            let live = &mut *p.live;
            let engine = p.engine.as_mut().unwrap();
            let (out, tap) = (&mut live.out, &mut live.tap);
            engine
                .audio
                .update_transport(&frame, |o, e| crate::generated(out, tap, o, e));
            if i == 1 {
                p.perform(KeyAction::Play(SectionLabel::A), pos, &grid);
            }
            let live = &mut *p.live;
            let engine = p.engine.as_mut().unwrap();
            let (out, tap) = (&mut live.out, &mut live.tap);
            engine
                .audio
                .pop_due(&frame.block(), |o, e| crate::generated(out, tap, o, e));
            for ev in live.out.as_slice() {
                let beat = grid.beat_at(ev.timing());
                match *ev {
                    NoteEvent::NoteOn { key, channel, .. } => heard.push((
                        key.number().unwrap(),
                        channel.number().unwrap(),
                        beat,
                        f64::NAN,
                    )),
                    NoteEvent::NoteOff { key, channel, .. } => {
                        let (k, c) = (key.number().unwrap(), channel.number().unwrap());
                        if let Some(n) = heard
                            .iter_mut()
                            .rev()
                            .find(|n| n.0 == k && n.1 == c && n.3.is_nan())
                        {
                            n.3 = beat;
                        }
                    }
                    _ => {}
                }
            }
            live.out.clear();
            live.was_playing = true;
            std::thread::sleep(std::time::Duration::from_millis(10));
        }
        assert!(!heard.is_empty(), "nothing was generated");
        assert!(heard.iter().all(|n| n.3.is_finite()), "a note was left on");
        assert!(
            heard.iter().all(|n| n.2 >= 4.0 - 1e-6 && n.1 == 1),
            "{heard:?}"
        );

        let dir = tempfile::tempdir().unwrap();
        let path = p
            .gui
            .with_log(|log| {
                crate::export::export(log, crate::export::Scope::LastSection, dir.path(), 0)
            })
            .unwrap();
        let song = staria_models::midi::read_midi_file(&path).unwrap();
        let ms = |beat: f64| (beat - 4.0) * 500.0;
        let mut want: Vec<(u8, u8, f64, f64)> =
            heard.iter().map(|n| (n.0, n.1, ms(n.2), ms(n.3))).collect();
        want.sort_by(|a, b| a.2.total_cmp(&b.2).then(a.0.cmp(&b.0)));
        let got: Vec<(u8, u8, f64, f64)> = song
            .notes
            .iter()
            .map(|n| (n.pitch, n.channel, n.start_ms, n.end_ms))
            .collect();
        assert_eq!(got.len(), want.len(), "{got:?}\n{want:?}");
        for (g, w) in got.iter().zip(&want) {
            // One tick at 480 per quarter and 120 bpm is 1.04 ms.
            assert!(
                g.0 == w.0 && g.1 == w.1 && (g.2 - w.2).abs() < 1.1 && (g.3 - w.3).abs() < 1.1,
                "{g:?} != {w:?}"
            );
        }
        assert_eq!(song.sections.len(), 1);
        assert_eq!(song.sections[0].label, SectionLabel::A);
        assert_eq!(song.sections[0].start_ms, 0.0);
    }

    /// Generated notes as they go out reach the export log with their sample-accurate beats,
    /// and the section they belong to.
    #[test]
    fn generated_notes_reach_the_export_log() {
        let mut p = with_engine();
        let grid = at(0.0);
        p.live.was_playing = false;
        p.gui_begin_block(&grid);
        p.perform(KeyAction::Play(SectionLabel::A), 0.0, &grid);
        let id = p.live.last_request;
        let ev = |on| {
            staria_engine::Event::Note(staria_engine::NoteEvent {
                beat: 0.0,
                request_id: id,
                epoch: 0,
                on,
                pitch: 64,
                velocity: 80,
                channel: 1,
            })
        };
        let live = &mut *p.live;
        crate::generated(&mut live.out, &mut live.tap, 0, ev(true));
        crate::generated(&mut live.out, &mut live.tap, 480, ev(false));
        assert_eq!(live.out.len(), 2);
        let (sections, notes) = p
            .gui
            .with_log(|l| (l.sounded_sections(), l.notes().to_vec()));
        assert_eq!(sections.len(), 1);
        assert_eq!(sections[0].label, Some(SectionLabel::A));
        assert_eq!(notes.len(), 1);
        // 480 samples at 120 bpm and 48 kHz = 0.02 beats.
        assert!((notes[0].end_beat - 0.02).abs() < 1e-9, "{:?}", notes[0]);
    }
}
