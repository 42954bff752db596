//! The parameters the host automates, as nice-plug-egui's `ParamSlider`s bound to the real
//! parameters (they change them through the host like automation does).

use egui::{self, RichText};
use nice_plug::prelude::{Param, ParamSetter};
use nice_plug_egui::widgets::ParamSlider;

use super::Shared;

fn row<P: Param>(ui: &mut egui::Ui, param: &P, setter: &ParamSetter) {
    labelled(ui, param.name(), param, setter);
}

/// A row under a shorter label than the parameter's name (the host shows the full name).
fn labelled<P: Param>(ui: &mut egui::Ui, label: &str, param: &P, setter: &ParamSetter) {
    ui.label(label).on_hover_text(param.name());
    ui.add(ParamSlider::for_param(param, setter).with_width(120.0));
    ui.end_row();
}

fn group(ui: &mut egui::Ui, title: &str, id: &str, rows: impl FnOnce(&mut egui::Ui)) {
    ui.label(RichText::new(title).strong());
    egui::Grid::new(id)
        .num_columns(2)
        .spacing([10.0, 4.0])
        .show(ui, rows);
    ui.add_space(6.0);
}

pub fn draw(ui: &mut egui::Ui, shared: &Shared, setter: &ParamSetter) {
    let p = &*shared.params;
    group(ui, "Live", "staria-live", |ui| {
        row(ui, &p.mode, setter);
        labelled(ui, "Hand over after", &p.handover_silence, setter);
        labelled(ui, "Answer length", &p.response_bars, setter);
        labelled(ui, "Accomp. channel", &p.acc_channel, setter);
        labelled(ui, "Accomp. lowest", &p.acc_low, setter);
        labelled(ui, "Accomp. highest", &p.acc_high, setter);
        labelled(ui, "Accomp. consonant", &p.acc_consonant, setter);
    });
    group(ui, "Generate", "staria-generate", |ui| {
        row(ui, &p.section, setter);
        row(ui, &p.bars, setter);
        row(ui, &p.style, setter);
        row(ui, &p.immediate, setter);
    });
    group(ui, "Sampling", "staria-sampling", |ui| {
        row(ui, &p.temperature, setter);
        row(ui, &p.top_p, setter);
        row(ui, &p.min_p, setter);
        row(ui, &p.adherence, setter);
        row(ui, &p.seed, setter);
    });
    group(ui, "Pitch", "staria-pitch", |ui| {
        row(ui, &p.key_root, setter);
        row(ui, &p.scale, setter);
        row(ui, &p.pitch_low, setter);
        row(ui, &p.pitch_high, setter);
    });
    group(ui, "MIDI", "staria-midi", |ui| {
        row(ui, &p.channel, setter);
        row(ui, &p.thru, setter);
        row(ui, &p.quantize, setter);
        row(ui, &p.keyswitches, setter);
        row(ui, &p.keyswitch_base, setter);
    });
}
