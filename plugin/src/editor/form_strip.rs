//! The form strip: the transport, the form with the position in it (click a letter to queue that
//! section next), "play the whole form", and the play / continue / stop buttons.

use egui::{self, Color32, RichText, Sense, Stroke, StrokeKind, vec2};
use nice_plug::prelude::ParamSetter;
use nice_plug_egui::widgets::ParamSlider;
use staria_models::SectionLabel;

use super::{Shared, palette};
use crate::gui_state::{LivePhase, TransportView, request};

/// Bar and beat (1-based) of a host position in beats.
pub fn bar_beat(view: &TransportView) -> (i64, i64) {
    let bpb = view.beats_per_bar();
    let bar = (view.pos_beats / bpb).floor();
    let beat = (view.pos_beats - bar * bpb).floor();
    (bar as i64 + 1, beat as i64 + 1)
}

pub fn draw(ui: &mut egui::Ui, shared: &Shared, view: &TransportView, setter: &ParamSetter) {
    ui.horizontal(|ui| {
        ui.label(RichText::new("Staria").size(22.0).strong());
        ui.separator();
        let (bar, beat) = bar_beat(view);
        let transport = if view.playing {
            format!(
                "Playing  bar {bar} beat {beat}   {:.0} bpm  {}/{}",
                view.tempo_bpm, view.ts_num, view.ts_den
            )
        } else {
            format!(
                "Stopped  bar {bar}   {:.0} bpm  {}/{}",
                view.tempo_bpm, view.ts_num, view.ts_den
            )
        };
        ui.label(RichText::new(transport).monospace());
        ui.separator();
        live_mode(ui, shared, view, setter);
    });
    ui.add_space(4.0);
    ui.horizontal(|ui| {
        ui.label("Form");
        ui.add(ParamSlider::for_param(&shared.params.form, setter).with_width(90.0));
        let letters = shared.params.form.value().letters();
        let sounding = view.sounding();
        // The section sounding is the one before the form position when it came from the form.
        let current = view
            .form_pos
            .checked_sub(1)
            .map(|i| i as usize % letters.len().max(1));
        for (i, c) in letters.chars().enumerate() {
            let Some(label) = SectionLabel::from_letter(c) else {
                continue;
            };
            let is_current = sounding.is_some_and(|p| p.label == Some(label)) && current == Some(i);
            let is_next = view.walking_form && i == view.form_pos as usize;
            let (rect, resp) = ui.allocate_exact_size(vec2(30.0, 30.0), Sense::click());
            let fill = if is_current {
                palette::PLAY
            } else if view.queued == Some(label) {
                palette::QUEUED
            } else {
                Color32::from_gray(50)
            };
            let painter = ui.painter();
            painter.rect_filled(rect, 4.0, fill);
            if is_next {
                let stroke = Stroke::new(2.0, palette::QUEUED);
                painter.rect_stroke(rect, 4.0, stroke, StrokeKind::Inside);
            }
            painter.text(
                rect.center(),
                egui::Align2::CENTER_CENTER,
                c.to_string(),
                egui::FontId::proportional(17.0),
                if is_current {
                    Color32::BLACK
                } else {
                    Color32::WHITE
                },
            );
            if resp
                .on_hover_text(format!(
                    "Queue {c} next: it starts when the section playing ends \
                     (or on the next bar line)"
                ))
                .clicked()
            {
                shared.gui.queue_next(Some(label));
            }
        }
        ui.separator();
        let mut walk = view.walking_form;
        if ui
            .checkbox(&mut walk, "Play the whole form")
            .on_hover_text(
                "Plays the form's sections one after another from its start (or where it \
                 is), then stops",
            )
            .changed()
        {
            shared.gui.set_walk_form(walk);
        }
        if let Some(q) = view.queued {
            ui.label(RichText::new(format!("next: {}", q.letter())).color(palette::QUEUED));
            if ui.small_button("x").on_hover_text("Unqueue").clicked() {
                shared.gui.queue_next(None);
            }
        }
    });
    ui.add_space(2.0);
    ui.horizontal(|ui| {
        if ui.button("Play next in form").clicked() {
            shared.gui.request(request::PLAY_NEXT);
        }
        if ui
            .button("Continue")
            .on_hover_text("Carry on from the music heard last")
            .clicked()
        {
            shared.gui.request(request::CONTINUE);
        }
        if ui
            .button("Stop")
            .on_hover_text("Silence generated notes now")
            .clicked()
        {
            shared.gui.request(request::STOP);
        }
        ui.separator();
        let status = shared.params.status();
        ui.label(
            RichText::new(format!("engine: {}", state_word(status.state))).color(palette::TEXT_DIM),
        );
        if let Some(p) = view.sounding() {
            let what = p.label.map_or("continuation".to_string(), |l| {
                format!("section {}", l.letter())
            });
            let bars_left = ((p.end_beat - view.pos_beats) / view.beats_per_bar()).ceil();
            ui.label(
                RichText::new(format!("playing {what}, {bars_left} bars left"))
                    .color(palette::PLAY),
            );
        }
    });
}

/// The Mode selector, what the live mode is doing (a light and its word) and, in call and
/// response, a button that hands over.
fn live_mode(ui: &mut egui::Ui, shared: &Shared, view: &TransportView, setter: &ParamSetter) {
    ui.label("Mode");
    ui.add(ParamSlider::for_param(&shared.params.mode, setter).with_width(130.0));
    let colour = match view.live {
        LivePhase::Off => return,
        LivePhase::Waiting => palette::TEXT_DIM,
        LivePhase::Listening => palette::NOTE,
        LivePhase::Responding => palette::PLAY,
        LivePhase::Accompanying => palette::QUEUED,
    };
    let (rect, _) = ui.allocate_exact_size(vec2(14.0, 14.0), Sense::hover());
    ui.painter().circle_filled(rect.center(), 6.0, colour);
    ui.label(RichText::new(view.live.text()).color(colour).strong());
    if view.live_prompts > 0 && view.live != LivePhase::Waiting {
        ui.label(
            RichText::new(format!("prompt updated \u{d7}{}", view.live_prompts))
                .color(palette::TEXT_DIM),
        )
        .on_hover_text(
            "Snippets recorded or cleared during this session became its prompt; the session \
             went on with what it had heard (an answer under way finished first)",
        );
    }
    if view.live_retracted > 0 && view.live != LivePhase::Waiting {
        ui.label(
            RichText::new(format!("taken back \u{d7}{}", view.live_retracted))
                .color(palette::TEXT_DIM),
        )
        .on_hover_text(format!(
            "Model notes this session took back before they sounded (re-chosen to fit a note \
             you played, or on a key you struck); {} of them had just begun and were \
             released at once",
            view.live_retracted_playing
        ));
    }
    if shared.params.mode.value() == crate::choices::ModeChoice::CallAndResponse
        && ui
            .button("Hand over")
            .on_hover_text(
                "The model answers now (also: the key below the keyswitch octave, the soft \
                 pedal, or a silence of Handover silence beats)",
            )
            .clicked()
    {
        shared.gui.request(request::HANDOVER);
    }
}

pub fn state_word(s: staria_engine::EngineState) -> &'static str {
    use staria_engine::EngineState as S;
    match s {
        S::Idle => "idle (no model yet)",
        S::Loading => "loading a model",
        S::Ready => "ready",
        S::Generating => "generating",
        S::Error => "error",
        S::Stopped => "stopped",
    }
}

#[cfg(test)]
mod tests {
    use super::super::no_host::NoHost;
    use super::super::{WindowState, draw};
    use super::*;
    use crate::gui_state::GuiShared;
    use crate::params::StariaParams;
    use egui::epaint::Shape;
    use nice_plug::prelude::Param;
    use std::sync::Arc;

    fn texts(shape: &Shape, out: &mut Vec<String>) {
        match shape {
            Shape::Text(t) => out.push(t.galley.text().to_string()),
            Shape::Vec(v) => v.iter().for_each(|s| texts(s, out)),
            _ => {}
        }
    }

    /// The words the whole window shows for this state.
    fn window_text(shared: &Shared) -> Vec<String> {
        let ctx = egui::Context::default();
        let mut state = WindowState::new(shared);
        let host = NoHost;
        let setter = ParamSetter::new(&host);
        let mut found = Vec::new();
        for _ in 0..2 {
            let input = egui::RawInput {
                screen_rect: Some(egui::Rect::from_min_size(
                    egui::pos2(0.0, 0.0),
                    vec2(1040.0, 700.0),
                )),
                ..Default::default()
            };
            let mut out = ctx.run_ui(input, |ui| draw(ui, shared, &mut state, &setter));
            // Nothing is drawn on a GPU here: the font atlas is not uploaded.
            out.textures_delta.clear();
            found.clear();
            for s in &out.shapes {
                texts(&s.shape, &mut found);
            }
        }
        found
    }

    /// The top strip says what the live mode does, and offers Hand over in call and response
    /// only; in Sections it shows neither.
    #[test]
    fn the_live_phase_and_the_hand_over_button_show() {
        let (gui, _tap) = GuiShared::new();
        let shared = Shared {
            params: Arc::new(StariaParams::default()),
            gui,
        };
        let has = |t: &[String], w: &str| t.iter().any(|s| s == w);
        let t = window_text(&shared);
        assert!(has(&t, "Sections") && !has(&t, "Hand over"), "{t:?}");
        assert!(!has(&t, "listening") && !has(&t, "responding"));
        let mode = shared.params.mode.as_ptr();
        // SAFETY: `mode` points into `shared.params`, alive for the whole test.
        unsafe { mode._internal_set_normalized_value(mode.preview_normalized(1.0)) };
        shared.gui.publish_live(LivePhase::Responding);
        let t = window_text(&shared);
        assert!(has(&t, "responding") && has(&t, "Hand over"), "{t:?}");
        // SAFETY: as above.
        unsafe { mode._internal_set_normalized_value(mode.preview_normalized(2.0)) };
        shared.gui.publish_live(LivePhase::Accompanying);
        let t = window_text(&shared);
        assert!(has(&t, "accompanying") && !has(&t, "Hand over"), "{t:?}");
        assert!(!t.iter().any(|s| s.starts_with("prompt updated")), "{t:?}");
        // New snippets taken by the running session are counted beside the light.
        shared.gui.publish_live_prompts(2);
        let t = window_text(&shared);
        assert!(has(&t, "prompt updated \u{d7}2"), "{t:?}");
        assert!(!t.iter().any(|s| s.starts_with("taken back")), "{t:?}");
        // So are the model notes it took back.
        shared.gui.publish_live_retracted(3, 1);
        let t = window_text(&shared);
        assert!(has(&t, "taken back \u{d7}3"), "{t:?}");
    }
}
