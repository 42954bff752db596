//! A `GuiContext` without a host, for drawing the window outside one (the off-screen render,
//! `examples/open_window`, tests): parameter changes go straight into the parameters, as a host
//! would apply them; there is no state to save or restart to ask for.

use nice_plug::context::PluginApi;
use nice_plug::prelude::{GuiContextInner, ParamPtr, PluginState};

pub struct NoHost;

impl GuiContextInner for NoHost {
    fn plugin_api(&self) -> PluginApi {
        PluginApi::Clap
    }
    unsafe fn raw_begin_set_parameter(&self, _param: ParamPtr) {}
    unsafe fn raw_set_parameter_normalized(&self, param: ParamPtr, normalized: f32) {
        // SAFETY: `param` comes from the plugin's own parameters, which outlive the window.
        unsafe { param._internal_set_normalized_value(normalized) };
    }
    unsafe fn raw_end_set_parameter(&self, _param: ParamPtr) {}
    fn get_state(&self) -> PluginState {
        PluginState {
            version: String::new(),
            params: Default::default(),
            fields: Default::default(),
        }
    }
    fn set_state(&self, _state: PluginState) {}
    fn request_restart(&self) {}
}
