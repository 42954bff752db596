//! The model panel (what is loaded, its facts, loading, the last error, choosing a folder) and
//! the export panel (the generated MIDI into a folder).
//!
//! Choosing a model only writes the model path: the plugin's monitor thread sees it and the
//! engine loads the folder on its own thread while the old model keeps playing, so the window
//! never waits. Folders are typed, pasted or chosen with *Browse...* (a native dialog on a thread
//! of its own, see `folder_dialog`); a built-in model is chosen from the *Built-in* list, which
//! writes its name as the model path (`staria_engine::default_model`: a path that exists wins
//! over a name), so a saved project keeps the model by name.

use egui::{self, RichText};
use staria_engine::default_model::{BUILTIN_MODELS, DEFAULT_MODEL, builtin_choice};
use std::path::Path;
use std::sync::OnceLock;

use super::folder_dialog::{FolderDialog, NO_FOLDER};
use super::form_strip::state_word;
use super::{Shared, WindowState, palette};
use crate::export::{self, Scope};

/// A model folder typed into the window, checked before it is handed to the engine: what can be
/// told without reading the files (the engine's load names anything else wrong with them).
/// A built-in model's name that is not an existing path passes as it is (the engine unpacks it).
pub fn check_model_folder(text: &str) -> Result<String, String> {
    let path = text.trim();
    if path.is_empty() {
        return Err("type or paste a model folder first (or use the default model)".into());
    }
    if builtin_choice(path).is_some() {
        return Ok(path.to_string());
    }
    let p = Path::new(path);
    match std::fs::metadata(p) {
        Err(e) => {
            return Err(format!(
                "{path}: {e} (built-in models: {})",
                staria_engine::default_model::builtin_names_line()
            ));
        }
        Ok(m) if !m.is_dir() => {
            return Err(format!(
                "{path} is a file: choose the checkpoint folder that holds config.json, \
                 tokenizer.json and model.safetensors"
            ));
        }
        Ok(_) => {}
    }
    let missing: Vec<&str> = ["config.json", "tokenizer.json", "model.safetensors"]
        .into_iter()
        .filter(|f| !p.join(f).is_file())
        .collect();
    if !missing.is_empty() {
        return Err(format!(
            "{path} is not a Staria checkpoint: it has no {}",
            missing.join(", ")
        ));
    }
    Ok(path.to_string())
}

pub fn draw(ui: &mut egui::Ui, shared: &Shared, state: &mut WindowState) {
    ui.columns(2, |cols| {
        model(&mut cols[0], shared, state);
        export_panel(&mut cols[1], shared, state);
    });
}

fn model(ui: &mut egui::Ui, shared: &Shared, state: &mut WindowState) {
    let status = shared.params.status();
    let custom = shared.params.model_path();
    ui.horizontal(|ui| {
        ui.label(RichText::new("Model").strong());
        let mut word = state_word(status.state).to_string();
        if status.state == staria_engine::EngineState::Loading {
            ui.spinner();
            let since = *state
                .loading_since
                .get_or_insert_with(std::time::Instant::now);
            word = format!("{word}, {:.1} s", since.elapsed().as_secs_f32());
        } else {
            state.loading_since = None;
        }
        ui.label(RichText::new(word).color(palette::TEXT_DIM));
    });
    let facts = shared.gui.model_facts.lock().clone();
    match &facts {
        Some(f) => {
            ui.label(f.name_line());
            ui.label(RichText::new(f.size_line()).color(palette::TEXT_DIM));
            ui.label(RichText::new(f.shape_line()).color(palette::TEXT_DIM));
        }
        None if !status.model.is_empty() => {
            ui.label(status.model.clone());
        }
        None => {
            ui.label(RichText::new("no model loaded").color(palette::TEXT_DIM));
        }
    }
    let speed = shared
        .gui
        .tokens_per_second
        .load(std::sync::atomic::Ordering::Relaxed);
    if speed > 0.0 {
        ui.label(
            RichText::new(format!("generating at about {speed:.0} tokens/s"))
                .color(palette::TEXT_DIM),
        );
    }
    let chosen_builtin = custom.as_deref().and_then(builtin_choice);
    ui.label(
        RichText::new(match (&custom, chosen_builtin) {
            (Some(_), Some(m)) => format!("chosen: the built-in model {}", m.name),
            (Some(p), None) => format!("chosen: custom folder {p}"),
            (None, _) => format!("chosen: the default model ({DEFAULT_MODEL}, built in)"),
        })
        .color(palette::TEXT_DIM),
    );
    let mut load = false;
    if let Some(answer) = state.model_dialog.as_ref().and_then(|d| d.poll()) {
        state.model_dialog = None;
        match answer {
            Some(dir) => {
                state.model_path_text = dir.display().to_string();
                load = true;
            }
            None => state.model_message = Some(NO_FOLDER.into()),
        }
    }
    ui.horizontal(|ui| {
        ui.add(
            egui::TextEdit::singleline(&mut state.model_path_text)
                .hint_text("/path/to/checkpoint folder")
                .desired_width(220.0),
        );
        browse(
            ui,
            &mut state.model_dialog,
            "Choose a model folder",
            &state.model_path_text,
        );
        load |= ui.button("Load model folder").clicked();
    });
    if load {
        match check_model_folder(&state.model_path_text) {
            Ok(path) => {
                shared.params.set_model_path(&path);
                state.model_message = None;
            }
            Err(e) => state.model_message = Some(e),
        }
    }
    ui.horizontal(|ui| {
        ui.label("Built-in");
        // The built-in model in use: the one chosen by name, else the default when nothing is.
        let in_use = match &custom {
            Some(_) => chosen_builtin.map(|m| m.name),
            None => Some(DEFAULT_MODEL),
        };
        let selected = in_use.unwrap_or("choose a built-in model");
        let combo = egui::ComboBox::from_id_salt("staria-builtin-models")
            .selected_text(selected)
            .width(200.0)
            .show_ui(ui, |ui| {
                let mut picked = None;
                for (name, label) in builtin_labels() {
                    let on = in_use == Some(*name);
                    if ui.selectable_label(on, label.as_str()).clicked() {
                        picked = Some(*name);
                    }
                }
                picked
            });
        ui.ctx()
            .data_mut(|d| d.insert_temp(builtin_models_id(), combo.response.rect));
        if let Some(name) = combo.inner.flatten() {
            shared.params.set_model_path(name);
            state.model_path_text.clear();
            state.model_message = None;
        }
        if ui
            .add_enabled(custom.is_some(), egui::Button::new("Use the default model"))
            .clicked()
        {
            shared.params.set_model_path("");
            state.model_path_text.clear();
            state.model_message = None;
        }
    });
    if let Some(m) = &state.model_message {
        ui.label(RichText::new(m).color(palette::ERROR));
    }
    if !status.last_error.is_empty() {
        ui.label(RichText::new(format!("last error: {}", status.last_error)).color(palette::ERROR));
    }
}

/// Where the *Built-in* list's button was laid out (the off-screen test looks for it).
pub fn builtin_models_id() -> egui::Id {
    egui::Id::unique("staria-builtin-models")
}

/// (name, "baseline-small: decoder, 15.5 MB (default)") for every built-in model, read once
/// from the bytes built in.
fn builtin_labels() -> &'static [(&'static str, String)] {
    static LABELS: OnceLock<Vec<(&'static str, String)>> = OnceLock::new();
    LABELS.get_or_init(|| {
        BUILTIN_MODELS
            .iter()
            .map(|m| {
                let kind = m
                    .config()
                    .map_or_else(|_| "?".to_string(), |c| c.kind().to_string());
                let default = if m.is_default() { " (default)" } else { "" };
                let mb = m.size_bytes() as f64 / 1e6;
                (m.name, format!("{}: {kind}, {mb:.1} MB{default}", m.name))
            })
            .collect()
    })
}

/// A "Browse..." button: opens a folder dialog unless one is already open.
fn browse(ui: &mut egui::Ui, dialog: &mut Option<FolderDialog>, title: &str, start: &str) {
    let open = dialog.is_some();
    let text = if open { "Choosing..." } else { "Browse..." };
    if ui.add_enabled(!open, egui::Button::new(text)).clicked() {
        *dialog = Some(FolderDialog::open(title, start));
    }
    if open {
        // Poll for the answer.
        ui.ctx()
            .request_repaint_after(std::time::Duration::from_millis(100));
    }
}

fn export_panel(ui: &mut egui::Ui, shared: &Shared, state: &mut WindowState) {
    ui.label(RichText::new("Export MIDI").strong());
    let (sections, notes) = shared
        .gui
        .with_log(|log| (log.sounded_sections(), log.notes().len()));
    let letters: String = sections
        .iter()
        .map(|s| s.label.map_or('+', |l| l.letter()))
        .collect();
    ui.label(
        RichText::new(if sections.is_empty() {
            "nothing generated since the transport started".to_string()
        } else {
            format!(
                "since the transport started: {} sections ({letters}), {notes} notes",
                sections.len()
            )
        })
        .color(palette::TEXT_DIM),
    );
    if let Some(answer) = state.export_dialog.as_ref().and_then(|d| d.poll()) {
        state.export_dialog = None;
        match answer {
            Some(dir) => {
                state.export_folder_text = dir.display().to_string();
                shared.params.set_export_folder(&state.export_folder_text);
            }
            None => state.export_message = Some(Err(NO_FOLDER.into())),
        }
    }
    ui.horizontal(|ui| {
        ui.label("Folder");
        let edit = ui.add(
            egui::TextEdit::singleline(&mut state.export_folder_text)
                .hint_text("/path/to/folder")
                .desired_width(220.0),
        );
        if edit.changed() {
            shared.params.set_export_folder(&state.export_folder_text);
        }
        browse(
            ui,
            &mut state.export_dialog,
            "Choose the export folder",
            &state.export_folder_text,
        );
    });
    ui.horizontal(|ui| {
        for (text, scope) in [
            ("Export last section", Scope::LastSection),
            ("Export all since start", Scope::SinceTransportStart),
        ] {
            if ui
                .add_enabled(!sections.is_empty(), egui::Button::new(text))
                .clicked()
            {
                let now = std::time::SystemTime::now()
                    .duration_since(std::time::UNIX_EPOCH)
                    .map_or(0, |d| d.as_secs());
                let folder = state.export_folder_text.trim().to_string();
                state.export_message = Some(
                    shared
                        .gui
                        .with_log(|log| export::export(log, scope, Path::new(&folder), now))
                        .map(|p| p.display().to_string())
                        .map_err(|e| e.0),
                );
            }
        }
    });
    match &state.export_message {
        Some(Ok(path)) => {
            ui.label(RichText::new(format!("saved {path}")).color(palette::PLAY));
        }
        Some(Err(e)) => {
            ui.label(RichText::new(e).color(palette::ERROR));
        }
        None => {}
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Bad model folders are refused in words naming the problem; a checkpoint folder passes.
    #[test]
    fn model_folder_checks_name_the_problem() {
        assert!(
            check_model_folder("  ")
                .unwrap_err()
                .contains("model folder first")
        );
        let dir = tempfile::tempdir().unwrap();
        let missing = dir.path().join("nope");
        let err = check_model_folder(missing.to_str().unwrap()).unwrap_err();
        assert!(err.contains("nope") && err.contains(DEFAULT_MODEL), "{err}");
        // A built-in model's name passes as the name.
        assert_eq!(check_model_folder(DEFAULT_MODEL).unwrap(), DEFAULT_MODEL);
        let file = dir.path().join("model.safetensors");
        std::fs::write(&file, b"x").unwrap();
        let err = check_model_folder(file.to_str().unwrap()).unwrap_err();
        assert!(err.contains("is a file"), "{err}");
        let err = check_model_folder(dir.path().to_str().unwrap()).unwrap_err();
        assert!(
            err.contains("not a Staria checkpoint") && err.contains("config.json, tokenizer.json"),
            "{err}"
        );
        std::fs::write(dir.path().join("config.json"), b"{}").unwrap();
        std::fs::write(dir.path().join("tokenizer.json"), b"{}").unwrap();
        assert_eq!(
            check_model_folder(dir.path().to_str().unwrap()).unwrap(),
            dir.path().to_str().unwrap()
        );
    }
}
