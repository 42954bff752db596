//! Opens Staria's editor as a top-level window (no host) for a few seconds and reports how many
//! frames it drew: a check that the real window (baseview, OpenGL) opens and draws on this
//! machine, e.g. under Xvfb: `xvfb-run -a cargo run -p staria-plugin --example open_window`.
//! Exits 0 when frames were drawn, 1 otherwise.

use nice_plug::context::gui::GuiContext;
use nice_plug::editor::{Editor, EditorHandle};
use staria_plugin::editor::no_host::NoHost;
use staria_plugin::editor::{FRAMES_DRAWN, StariaEditor};
use staria_plugin::gui_state::GuiShared;
use staria_plugin::params::StariaParams;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

fn main() {
    let seconds: u64 = std::env::args()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or(4);
    let params = Arc::new(StariaParams::default());
    let (gui, _tap) = GuiShared::new();
    let editor = StariaEditor::new(params, gui);
    let spawned = match editor.spawn(None, false, None, GuiContext::new(Arc::new(NoHost)), None) {
        Ok(s) => s,
        Err(e) => {
            eprintln!("the window did not open: {e}");
            std::process::exit(1);
        }
    };
    if let Err(e) = spawned.handle.show(&spawned.window) {
        eprintln!("the window did not show: {e}");
        std::process::exit(1);
    }
    let size = editor.size();
    std::thread::spawn(move || {
        std::thread::sleep(Duration::from_secs(seconds));
        let frames = FRAMES_DRAWN.load(Ordering::Relaxed);
        println!(
            "Staria window {}x{}: {frames} frames drawn in {seconds} s",
            size.width, size.height
        );
        std::process::exit(if frames > 0 { 0 } else { 1 });
    });
    let _ = <nice_plug_egui::EguiEditorHandle as EditorHandle>::run_until_closed(spawned.window);
}
