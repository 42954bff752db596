//! Staria's window as a CLAP host sees it: the bundle offers an embeddable X11 window (macOS and
//! Windows: their native ones), resizable, and the window's size is saved with the project and
//! comes back when the project is reopened (before the window opens: hosts size the frame
//! first). No display is needed: the window is not opened here (`examples/open_window.rs` opens
//! the real one).

use clack_extensions::gui::{GuiApiType, GuiConfiguration, PluginGui};
use serde_json::json;
use staria_plugin_host_test::*;

/// The window's size as the host reads it.
fn window_size(inst: &mut Instance) -> (u32, u32) {
    let handle = inst.instance.plugin_handle();
    let gui: PluginGui = handle.get_extension().expect("the gui extension");
    let size = gui.get_size(&handle).expect("a window size");
    (size.width, size.height)
}

#[test]
fn the_window_is_offered_and_its_size_is_saved_with_the_project() {
    run_isolated(
        "the_window_is_offered_and_its_size_is_saved_with_the_project",
        || {
            let mut inst = Instance::load(&bundled_clap());
            {
                let handle = inst.instance.plugin_handle();
                let gui: PluginGui = handle.get_extension().expect("the gui extension");
                let api = GuiApiType::default_for_current_platform().unwrap();
                assert!(gui.is_api_supported(
                    &handle,
                    GuiConfiguration {
                        api_type: api,
                        is_floating: false,
                    }
                ));
                assert!(gui.can_resize(&handle));
            }
            // The default size, saved with the project.
            assert_eq!(window_size(&mut inst), (1040, 700));
            let state = inst.save_state();
            assert_eq!(
                field(&state, "editor-size"),
                json!({"width": 1040, "height": 700})
            );
            // A project saved with a bigger window reopens at that size.
            let bigger = with_field(
                &state,
                "editor-size",
                &json!({"width": 1300, "height": 820}),
            );
            let mut reopened = Instance::load(&bundled_clap());
            reopened.load_state(&bigger);
            assert_eq!(window_size(&mut reopened), (1300, 820));
            // A size no window can have is made sane (at least 900 x 640).
            let broken = with_field(&state, "editor-size", &json!({"width": 0, "height": 5}));
            reopened.load_state(&broken);
            assert_eq!(window_size(&mut reopened), (900, 640));
        },
    );
}
