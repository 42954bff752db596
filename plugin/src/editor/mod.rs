//! The plugin window (nice-plug-egui: egui 0.37 over baseview and OpenGL).
//!
//! Everything it shows comes from what the other threads publish without waiting on the audio
//! thread: the transport, the section recording or playing and the window's requests through
//! [`GuiShared`]'s atomics, the generated notes through its lock-free ring (drained by the
//! monitor thread), the snippets through the sequence-locked [`crate::snippets::SnippetStore`],
//! the engine status and model facts through locks the audio thread never takes. Parameters
//! change through nice-plug's [`ParamSetter`] like host automation. Model loading runs on the
//! engine's threads (the window only writes the model path); the window never blocks on it.
//!
//! [`draw`] is the whole window: the editor calls it every frame, and the off-screen render
//! (`plugin/tests/window_png.rs`, `docs/plugin-window.png`) calls the same function.

mod controls;
mod folder_dialog;
mod form_strip;
mod model_panel;
pub mod no_host;
pub mod pads;

pub use model_panel::builtin_models_id;

use nice_plug::context::gui::GuiContext;
use nice_plug::editor::Editor;
use nice_plug::prelude::ParamSetter;

use nice_plug_egui::{
    EguiEditor, EguiEditorHandle, EguiEditorState, EguiNiceSettings, NiceEguiApp, RepaintNotifier,
    create_egui_editor,
};
use parking_lot::Mutex;
use serde::{Deserialize, Serialize};
use staria_models::SectionLabel;
use std::sync::Arc;
use std::time::Duration;

use crate::gui_state::GuiShared;
use crate::params::StariaParams;
use crate::snippets::SnippetData;

/// The window's logical size, saved with the project (persisted field `editor-size`).
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct EditorSize {
    pub width: u32,
    pub height: u32,
}

pub const DEFAULT_SIZE: EditorSize = EditorSize {
    width: 1040,
    height: 700,
};
/// The smallest window in which all four pads show without scrolling.
pub const MIN_SIZE: EditorSize = EditorSize {
    width: 900,
    height: 640,
};

impl Default for EditorSize {
    fn default() -> Self {
        DEFAULT_SIZE
    }
}

impl EditorSize {
    /// A saved size made sane (a hand-edited or corrupt state cannot open a 0 or 1e9 px window).
    pub fn sane(self) -> Self {
        Self {
            width: self.width.clamp(MIN_SIZE.width, 8192),
            height: self.height.clamp(MIN_SIZE.height, 8192),
        }
    }
}

/// The handles the window draws from.
#[derive(Clone)]
pub struct Shared {
    pub params: Arc<StariaParams>,
    pub gui: Arc<GuiShared>,
}

/// What only the window keeps between frames.
pub struct WindowState {
    pub model_path_text: String,
    pub export_folder_text: String,
    /// The last export's outcome (`Ok(path)` or the error in words).
    pub export_message: Option<Result<String, String>>,
    /// The window's own message about the model field (an empty path, ...).
    pub model_message: Option<String>,
    /// When the engine was first seen loading (the panel shows how long it has been).
    pub loading_since: Option<std::time::Instant>,
    /// "Browse..." dialogs in flight (model folder, export folder).
    model_dialog: Option<folder_dialog::FolderDialog>,
    export_dialog: Option<folder_dialog::FolderDialog>,
    snippets: [Box<SnippetData>; 4],
    snippets_seen: Option<u64>,
}

impl WindowState {
    pub fn new(shared: &Shared) -> Self {
        Self {
            // A built-in model's name shows in the Built-in list, not as a folder.
            model_path_text: shared
                .params
                .model_path()
                .filter(|p| staria_engine::default_model::builtin_choice(p).is_none())
                .unwrap_or_default(),
            export_folder_text: shared.params.export_folder(),
            export_message: None,
            model_message: None,
            loading_since: None,
            model_dialog: None,
            export_dialog: None,
            snippets: Default::default(),
            snippets_seen: None,
        }
    }

    /// The published snippets, re-read when they changed.
    fn refresh_snippets(&mut self, shared: &Shared) {
        let changes = shared.params.snippets.changes();
        if self.snippets_seen == Some(changes) {
            return;
        }
        let mut all_read = true;
        for s in SectionLabel::ALL {
            all_read &= shared
                .params
                .snippets
                .try_read_published(s, &mut self.snippets[s.index()]);
        }
        // A write in progress: try again next frame.
        self.snippets_seen = all_read.then_some(changes);
    }

    pub fn snippet(&self, s: SectionLabel) -> &SnippetData {
        &self.snippets[s.index()]
    }
}

/// Staria's colours.
pub mod palette {
    use egui::Color32;
    pub const BG: Color32 = Color32::from_rgb(24, 26, 31);
    pub const PANEL: Color32 = Color32::from_rgb(34, 37, 44);
    pub const ROLL: Color32 = Color32::from_rgb(16, 18, 22);
    pub const NOTE: Color32 = Color32::from_rgb(120, 200, 255);
    pub const RECORD: Color32 = Color32::from_rgb(235, 70, 70);
    pub const PLAY: Color32 = Color32::from_rgb(90, 220, 120);
    pub const QUEUED: Color32 = Color32::from_rgb(240, 190, 60);
    pub const TEXT_DIM: Color32 = Color32::from_rgb(150, 155, 165);
    pub const ERROR: Color32 = Color32::from_rgb(255, 120, 110);
}

/// Staria's look on top of egui's dark theme.
pub fn apply_style(ctx: &egui::Context) {
    ctx.set_visuals(egui::Visuals::dark());
    ctx.global_style_mut(|style| {
        style.visuals.panel_fill = palette::BG;
        style.visuals.window_fill = palette::BG;
        style.spacing.item_spacing = egui::vec2(8.0, 6.0);
        style.spacing.slider_width = 160.0;
    });
}

/// The whole window, drawn into `ui` (the editor's root, or an off-screen context).
pub fn draw(ui: &mut egui::Ui, shared: &Shared, state: &mut WindowState, setter: &ParamSetter) {
    state.refresh_snippets(shared);
    let view = shared.gui.view();
    let ctx = ui.ctx().clone();
    egui::Panel::top("staria-form")
        .frame(egui::Frame::new().fill(palette::PANEL).inner_margin(8.0))
        .show(ui, |ui| form_strip::draw(ui, shared, &view, setter));
    egui::Panel::bottom("staria-model")
        .frame(egui::Frame::new().fill(palette::PANEL).inner_margin(8.0))
        .show(ui, |ui| model_panel::draw(ui, shared, state));
    egui::Panel::right("staria-controls")
        .frame(egui::Frame::new().fill(palette::PANEL).inner_margin(8.0))
        .resizable(false)
        .exact_size(370.0)
        .show(ui, |ui| {
            egui::ScrollArea::vertical().show(ui, |ui| controls::draw(ui, shared, setter));
        });
    egui::CentralPanel::default()
        .frame(egui::Frame::new().fill(palette::BG).inner_margin(8.0))
        .show(ui, |ui| {
            // The pads' visible area (the off-screen test checks every pad lies inside it).
            let visible = ui.clip_rect();
            ui.ctx()
                .data_mut(|d| d.insert_temp(pads::area_id(), visible));
            egui::ScrollArea::vertical()
                .show(ui, |ui| pads::draw(ui, shared, state, &view, setter));
        });
    // Lights follow the host: redraw at the display rate while something moves.
    let moving = view.playing
        || view.recording.is_some()
        || shared.params.status().state == staria_engine::EngineState::Loading;
    if moving {
        ctx.request_repaint_after(Duration::from_millis(16));
    } else {
        ctx.request_repaint_after(Duration::from_millis(250));
    }
}

/// Writes the Record A..D parameters back to what the audio thread does, so the host shows the
/// truth after a keyswitch or a transport stop started or ended a recording. Only once the audio
/// thread has seen the parameter's current value (else a click on a Record parameter that has
/// not reached the audio thread yet would be undone).
pub fn sync_record_params(shared: &Shared, setter: &ParamSetter) {
    let p = &shared.params;
    let seen = shared.gui.arm_seen();
    let recording = shared.gui.view().recording;
    for (i, s) in SectionLabel::ALL.into_iter().enumerate() {
        let param = p.arm(s);
        let value = param.value();
        let truth = recording == Some(s);
        if seen[i] == value && value != truth {
            setter.begin_set_parameter(param);
            setter.set_parameter(param, truth);
            setter.end_set_parameter(param);
        }
    }
}

/// Frames the editor windows of this process have drawn (the `open_window` example checks a
/// real window draws).
pub static FRAMES_DRAWN: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);

/// The egui app behind the editor.
struct App {
    shared: Shared,
    state: WindowState,
    gui_context: Option<GuiContext>,
}

impl NiceEguiApp for App {
    fn build(
        &mut self,
        egui_ctx: egui::Context,
        nice_gui_ctx: GuiContext,
        _frame: &mut nice_plug_egui::Frame,
    ) -> Result<(), nice_plug_egui::baseview::HandlerError> {
        apply_style(&egui_ctx);
        self.gui_context = Some(nice_gui_ctx);
        Ok(())
    }

    fn ui(&mut self, ui: &mut egui::Ui, _frame: &mut nice_plug_egui::Frame) {
        let Some(ctx) = self.gui_context.clone() else {
            return;
        };
        let setter = ctx.param_setter();
        FRAMES_DRAWN.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        sync_record_params(&self.shared, &setter);
        nice_plug_egui::resizable_window::ResizableWindow::new("staria")
            .min_size(egui::vec2(MIN_SIZE.width as f32, MIN_SIZE.height as f32))
            .show(ui, |ui| draw(ui, &self.shared, &mut self.state, &setter));
    }

    fn resized(&mut self, new_size: nice_plug_egui::baseview::WindowSize) {
        let size = EditorSize {
            width: new_size.logical.width.round() as u32,
            height: new_size.logical.height.round() as u32,
        };
        *self.shared.params.editor_size.write() = size.sane();
    }

    fn editor_closed(&mut self) {
        self.gui_context = None;
    }
}

/// The editor nice-plug opens: a fresh egui editor at the size saved with the project each
/// time the host opens the window (nice-plug creates the editor before the project's state is
/// loaded, so the size is read at opening).
pub struct StariaEditor {
    shared: Shared,
    open: Mutex<Option<EguiEditor<App>>>,
}

impl StariaEditor {
    pub fn new(params: Arc<StariaParams>, gui: Arc<GuiShared>) -> Self {
        Self {
            shared: Shared { params, gui },
            open: Mutex::new(None),
        }
    }

    fn resize_hint() -> nice_plug::editor::ResizeHint {
        use nice_plug::editor::dpi::LogicalSize;
        use nice_plug::editor::{ResizeHint, SizeConstraints};
        ResizeHint {
            can_resize: true,
            can_resize_horizontally: true,
            can_resize_vertically: true,
            size_constraints: SizeConstraints::Logical {
                min_size: Some(LogicalSize::new(
                    MIN_SIZE.width as f32,
                    MIN_SIZE.height as f32,
                )),
                max_size: None,
            },
            ..ResizeHint::NON_RESIZABLE
        }
    }
}

impl Editor for StariaEditor {
    type Handle = EguiEditorHandle;

    fn spawn(
        &self,
        parent: Option<nice_plug::editor::ParentWindowHandle>,
        wait_for_parent: bool,
        fallback_scale_factor: Option<f64>,
        gui_context: GuiContext,
        host: Option<nice_plug::editor::HostMethods>,
    ) -> Result<nice_plug::editor::SpawnedEditor<Self::Handle>, Box<dyn std::error::Error>> {
        let size = self.shared.params.editor_size.read().sane();
        let state = EguiEditorState::from_size(
            nice_plug::editor::dpi::LogicalSize::new(size.width as f64, size.height as f64),
            1.0,
        );
        let app = App {
            shared: self.shared.clone(),
            state: WindowState::new(&self.shared),
            gui_context: None,
        };
        let settings = EguiNiceSettings::new()
            .with_tile("Staria")
            .with_resize_hint(Self::resize_hint());
        let editor = create_egui_editor(state, RepaintNotifier::new(), settings, app)
            .ok_or("nice-plug-egui made no editor")?;
        let spawned = editor.spawn(
            parent,
            wait_for_parent,
            fallback_scale_factor,
            gui_context,
            host,
        )?;
        *self.open.lock() = Some(editor);
        Ok(spawned)
    }

    fn size(&self) -> nice_plug::editor::dpi::NativeSize<u32> {
        if let Some(e) = self.open.lock().as_ref() {
            return e.size();
        }
        let size = self.shared.params.editor_size.read().sane();
        nice_plug::editor::dpi::NativeSize::from_size(
            nice_plug::editor::dpi::LogicalSize::new(size.width as f64, size.height as f64).into(),
            1.0,
        )
    }

    fn resize_hint(&self) -> nice_plug::editor::ResizeHint {
        Self::resize_hint()
    }

    fn track_info_updated(&self, info: nice_plug::plugin::TrackInfo) {
        if let Some(e) = self.open.lock().as_ref() {
            e.track_info_updated(info);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::no_host::NoHost;
    use super::*;
    use nice_plug::prelude::Param;

    fn arms(p: &StariaParams) -> [bool; 4] {
        SectionLabel::ALL.map(|s| p.arm(s).value())
    }

    /// The window writes Record A..D back to what the audio thread does (a keyswitch armed B,
    /// a transport stop ended A), but never undoes a change the audio thread has not seen yet.
    #[test]
    fn record_parameters_follow_the_audio_thread_once_it_has_seen_them() {
        let (gui, _tap) = GuiShared::new();
        let shared = Shared {
            params: Arc::new(StariaParams::default()),
            gui,
        };
        let ctx = NoHost;
        let setter = ParamSetter::new(&ctx);
        let publish = |recording, seen| {
            shared
                .gui
                .publish(true, 0.0, 120.0, (4, 4), recording, seen, 0)
        };
        // A keyswitch armed B.
        publish(Some(SectionLabel::B), [false; 4]);
        sync_record_params(&shared, &setter);
        assert_eq!(arms(&shared.params), [false, true, false, false]);
        // Record A switched on in the host; the audio thread has not seen it yet.
        let a = shared.params.arm_a.as_ptr();
        // SAFETY: `a` points into `shared.params`, alive for the whole test.
        unsafe { a._internal_set_normalized_value(1.0) };
        sync_record_params(&shared, &setter);
        assert_eq!(arms(&shared.params), [true, true, false, false]);
        // It has: A records now (which ended B).
        publish(Some(SectionLabel::A), [true, true, false, false]);
        sync_record_params(&shared, &setter);
        assert_eq!(arms(&shared.params), [true, false, false, false]);
        // A transport stop ended A.
        publish(None, [true, false, false, false]);
        sync_record_params(&shared, &setter);
        assert_eq!(arms(&shared.params), [false; 4]);
    }

    #[test]
    fn saved_sizes_are_made_sane() {
        let tiny = EditorSize {
            width: 0,
            height: 1,
        };
        assert_eq!(tiny.sane(), MIN_SIZE);
        let huge = EditorSize {
            width: u32::MAX,
            height: 900,
        };
        assert_eq!(huge.sane().width, 8192);
        assert_eq!(huge.sane().height, 900);
        assert_eq!(DEFAULT_SIZE.sane(), DEFAULT_SIZE);
    }
}
