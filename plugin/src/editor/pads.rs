//! Section pads A..D: the captured snippet as a small piano roll, its length, and record / clear
//! / play. The pad recording lights red, the pad whose section sounds lights green, both pulsing
//! on the host's beats.

use egui::{self, Color32, Rect, Sense, Stroke, StrokeKind, vec2};
use nice_plug::prelude::ParamSetter;
use staria_models::SectionLabel;

use super::{Shared, WindowState, palette};
use crate::gui_state::{TransportView, request};
use crate::snippets::SnippetData;

/// Height of a pad's piano roll: what the window leaves, within these bounds.
pub const ROLL_HEIGHT: (f32, f32) = (40.0, 220.0);
/// A pad's height besides its roll: margins, header, buttons, spacing.
const PAD_CHROME: f32 = 100.0;

/// Where the pads were drawn last frame (the off-screen test checks inside them).
pub fn pad_id(s: SectionLabel) -> egui::Id {
    egui::Id::unique(("staria-pad", s.index()))
}

/// Where the pads' visible area was drawn last frame.
pub fn area_id() -> egui::Id {
    egui::Id::unique("staria-pads-area")
}

pub fn draw(
    ui: &mut egui::Ui,
    shared: &Shared,
    state: &mut WindowState,
    view: &TransportView,
    setter: &ParamSetter,
) {
    ui.heading("Sections");
    ui.add_space(4.0);
    let columns = 2;
    let gap = 10.0;
    let width = ((ui.available_width() - gap * (columns as f32 - 1.0)) / columns as f32).max(150.0);
    let rows = SectionLabel::ALL.len().div_ceil(columns) as f32;
    let roll = ((ui.available_height() - gap * (rows - 1.0)) / rows - PAD_CHROME)
        .clamp(ROLL_HEIGHT.0, ROLL_HEIGHT.1);
    egui::Grid::new("staria-pads")
        .num_columns(columns)
        .spacing(vec2(gap, gap))
        .show(ui, |ui| {
            for (i, s) in SectionLabel::ALL.into_iter().enumerate() {
                pad(ui, shared, state.snippet(s), s, view, setter, (width, roll));
                if i % columns == columns - 1 {
                    ui.end_row();
                }
            }
        });
}

/// 0..1, high on the beat and fading through it: the lights' pulse.
fn beat_pulse(view: &TransportView) -> f32 {
    if !view.playing {
        return 0.6;
    }
    let phase = view.pos_beats.rem_euclid(1.0) as f32;
    1.0 - 0.6 * phase
}

fn pad(
    ui: &mut egui::Ui,
    shared: &Shared,
    snippet: &SnippetData,
    s: SectionLabel,
    view: &TransportView,
    setter: &ParamSetter,
    (width, roll_height): (f32, f32),
) {
    let recording = view.recording == Some(s);
    let sounding = view.sounding().is_some_and(|p| p.label == Some(s));
    let light = if recording {
        Some(palette::RECORD)
    } else if sounding {
        Some(palette::PLAY)
    } else if view.queued == Some(s) {
        Some(palette::QUEUED)
    } else {
        None
    };
    let pulse = beat_pulse(view);
    let stroke = match light {
        Some(c) => Stroke::new(3.0, c.gamma_multiply(pulse)),
        None => Stroke::new(1.0, Color32::from_gray(70)),
    };
    let frame = egui::Frame::new()
        .fill(palette::PANEL)
        .stroke(stroke)
        .corner_radius(6.0)
        .inner_margin(8.0);
    let response = frame
        .show(ui, |ui| {
            ui.vertical(|ui| {
                ui.set_width(width - 22.0);
                ui.horizontal(|ui| {
                    ui.label(
                        egui::RichText::new(s.letter().to_string())
                            .size(26.0)
                            .strong()
                            .color(light.unwrap_or(Color32::WHITE)),
                    );
                    ui.vertical(|ui| {
                        let what = if snippet.is_empty() {
                            "empty".to_string()
                        } else {
                            format!(
                                "{} bar{}, {} notes, {}/{}",
                                snippet.bars,
                                if snippet.bars == 1 { "" } else { "s" },
                                snippet.count,
                                snippet.ts_num,
                                snippet.ts_den
                            )
                        };
                        ui.label(egui::RichText::new(what).color(palette::TEXT_DIM));
                        let status = if recording {
                            "recording"
                        } else if sounding {
                            "playing"
                        } else if view.queued == Some(s) {
                            "queued next"
                        } else {
                            ""
                        };
                        ui.label(
                            egui::RichText::new(status).color(light.unwrap_or(palette::TEXT_DIM)),
                        );
                    });
                });
                let (rect, _) =
                    ui.allocate_exact_size(vec2(ui.available_width(), roll_height), Sense::hover());
                piano_roll(ui, rect, snippet, recording);
                ui.horizontal(|ui| {
                    let rec_text = if recording { "Stop rec" } else { "Record" };
                    let rec = egui::Button::new(rec_text).selected(recording);
                    if ui
                        .add(rec)
                        .on_hover_text(format!(
                            "Record {} (the host's Record {} parameter)",
                            s.letter(),
                            s.letter()
                        ))
                        .clicked()
                    {
                        let param = shared.params.arm(s);
                        setter.begin_set_parameter(param);
                        setter.set_parameter(param, !recording);
                        setter.end_set_parameter(param);
                    }
                    if ui
                        .button("Play")
                        .on_hover_text("Generate this section from the next bar line")
                        .clicked()
                    {
                        shared.gui.request(request::play(s));
                    }
                    if ui
                        .add_enabled(!snippet.is_empty() || recording, egui::Button::new("Clear"))
                        .clicked()
                    {
                        shared.gui.request(request::clear(s));
                    }
                });
            });
        })
        .response;
    ui.ctx()
        .data_mut(|d| d.insert_temp(pad_id(s), response.rect));
}

/// The snippet's notes over its length (time across, pitch up), with bar lines.
fn piano_roll(ui: &egui::Ui, rect: Rect, snippet: &SnippetData, recording: bool) {
    let painter = ui.painter_at(rect);
    painter.rect_filled(rect, 4.0, palette::ROLL);
    let notes = snippet.notes();
    if notes.is_empty() {
        let text = if recording {
            "play: the notes appear when the recording ends"
        } else {
            "nothing captured"
        };
        painter.text(
            rect.center(),
            egui::Align2::CENTER_CENTER,
            text,
            egui::FontId::proportional(13.0),
            palette::TEXT_DIM,
        );
        return;
    }
    let length = snippet
        .length_beats()
        .max(notes.iter().map(|n| n.end_beats()).fold(0.0, f64::max))
        .max(1.0);
    let lo = notes
        .iter()
        .map(|n| n.pitch)
        .min()
        .unwrap_or(60)
        .saturating_sub(2);
    let hi = notes
        .iter()
        .map(|n| n.pitch)
        .max()
        .unwrap_or(72)
        .saturating_add(2)
        .max(lo + 12);
    let rows = (hi - lo + 1) as f32;
    let inner = rect.shrink(4.0);
    let row_h = inner.height() / rows;
    // Bar lines.
    let bar = crate::timeline::beats_per_bar(snippet.ts_num, snippet.ts_den);
    let mut b = bar;
    while b < length {
        let x = inner.left() + (b / length) as f32 * inner.width();
        painter.line_segment(
            [egui::pos2(x, inner.top()), egui::pos2(x, inner.bottom())],
            Stroke::new(1.0, Color32::from_gray(55)),
        );
        b += bar;
    }
    for n in notes {
        let x0 = inner.left() + (n.start_beats() / length) as f32 * inner.width();
        let x1 = inner.left() + (n.end_beats() / length) as f32 * inner.width();
        let y = inner.bottom() - (n.pitch - lo + 1) as f32 * row_h;
        let r = Rect::from_min_max(
            egui::pos2(x0, y),
            egui::pos2(x1.max(x0 + 2.0), y + row_h.max(2.0)),
        );
        let shade = 0.55 + 0.45 * (n.velocity as f32 / 127.0);
        painter.rect_filled(r, 1.0, palette::NOTE.gamma_multiply(shade));
        painter.rect_stroke(r, 1.0, Stroke::new(0.5, Color32::BLACK), StrokeKind::Inside);
    }
}
