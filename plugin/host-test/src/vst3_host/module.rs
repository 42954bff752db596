//! The module: the VST3 library opened with `libloading`, its plugin factory and its entry
//! points (`ModuleEntry` before `GetPluginFactory`, `ModuleExit` after the last release).

use std::collections::HashMap;
use std::ffi::{c_char, c_void};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use vst3::Steinberg::Vst::{IAudioProcessor, IComponent, IEditController};
use vst3::Steinberg::{
    FUnknown, IPluginBaseTrait, IPluginFactory, IPluginFactoryTrait, PClassInfo, TUID, kResultOk,
};
use vst3::{ComPtr, ComWrapper, Interface};

use super::{ARCH_DIR, HostApplication, Vst3Instance, cstr_to_string};

// ---------------------------------------------------------------------------------------------
// The module: the library, its factory and its entry points
// ---------------------------------------------------------------------------------------------

/// A loaded VST3 library and its plugin factory.
pub struct Vst3Module {
    factory: Option<ComPtr<IPluginFactory>>,
    lib: Option<libloading::Library>,
    /// Whether the library exported `ModuleEntry` (and it returned true).
    pub module_entry_called: bool,
}

/// A class the factory offers.
#[derive(Debug, Clone)]
pub struct ClassInfo {
    pub cid: TUID,
    pub category: String,
    pub name: String,
}

impl Vst3Module {
    /// The library inside a `.vst3` bundle folder.
    pub fn library_path(bundle: &Path) -> PathBuf {
        let stem = bundle
            .file_stem()
            .expect("a bundle name")
            .to_string_lossy()
            .into_owned();
        // The bundler names the library after the plugin; a private copy `Staria-<pid>.vst3`
        // keeps `Staria.so` inside.
        let dir = bundle.join("Contents").join(ARCH_DIR);
        let named = dir.join(format!("{stem}.so"));
        if named.exists() {
            return named;
        }
        std::fs::read_dir(&dir)
            .unwrap_or_else(|e| panic!("{}: {e}", dir.display()))
            .map(|e| e.expect("bundle entry").path())
            .find(|p| p.extension().is_some_and(|x| x == "so"))
            .unwrap_or_else(|| panic!("no .so in {}", dir.display()))
    }

    /// Opens the bundle: dlopen, `ModuleEntry` (if exported), `GetPluginFactory`.
    pub fn load(bundle: &Path) -> Result<Self, String> {
        let path = Self::library_path(bundle);
        // SAFETY: the bundle is our own plugin, built just now.
        let lib = unsafe { libloading::Library::new(&path) }
            .map_err(|e| format!("dlopen {}: {e}", path.display()))?;
        let mut module_entry_called = false;
        // SAFETY: the signatures are the VST3 SDK's (linuxmain.cpp, ipluginbase.h).
        unsafe {
            if let Ok(entry) =
                lib.get::<unsafe extern "C" fn(*mut c_void) -> bool>(b"ModuleEntry\0")
            {
                if !entry(std::ptr::null_mut()) {
                    return Err("ModuleEntry returned false".into());
                }
                module_entry_called = true;
            }
            let get_factory = lib
                .get::<unsafe extern "system" fn() -> *mut c_void>(b"GetPluginFactory\0")
                .map_err(|e| format!("GetPluginFactory: {e}"))?;
            let raw = get_factory() as *mut IPluginFactory;
            // GetPluginFactory hands over one reference.
            let factory = ComPtr::from_raw(raw)
                .ok_or_else(|| "GetPluginFactory returned null".to_string())?;
            Ok(Self {
                factory: Some(factory),
                lib: Some(lib),
                module_entry_called,
            })
        }
    }

    fn factory(&self) -> &ComPtr<IPluginFactory> {
        self.factory.as_ref().expect("factory")
    }

    /// Every class the factory offers.
    pub fn classes(&self) -> Vec<ClassInfo> {
        let f = self.factory();
        let n = unsafe { f.countClasses() };
        (0..n)
            .map(|i| {
                let mut info: PClassInfo = unsafe { std::mem::zeroed() };
                let r = unsafe { f.getClassInfo(i, &mut info) };
                assert_eq!(r, kResultOk, "getClassInfo({i})");
                ClassInfo {
                    cid: info.cid,
                    category: cstr_to_string(&info.category),
                    name: cstr_to_string(&info.name),
                }
            })
            .collect()
    }

    /// Creates the first "Audio Module Class" and initializes it with a host application.
    pub fn create_audio_module(self: &Arc<Self>) -> Result<Vst3Instance, String> {
        let class = self
            .classes()
            .into_iter()
            .find(|c| c.category == "Audio Module Class")
            .ok_or("no Audio Module Class in the factory")?;
        let mut obj: *mut c_void = std::ptr::null_mut();
        let r = unsafe {
            self.factory().createInstance(
                class.cid.as_ptr(),
                IComponent::IID.as_ptr() as *const c_char,
                &mut obj,
            )
        };
        if r != kResultOk {
            return Err(format!("createInstance: {r}"));
        }
        let component = unsafe { ComPtr::from_raw(obj as *mut IComponent) }
            .ok_or("createInstance gave null")?;
        let host = ComWrapper::new(HostApplication);
        let host_ptr = host
            .to_com_ptr::<FUnknown>()
            .expect("host application as FUnknown");
        let r = unsafe { component.initialize(host_ptr.as_ptr()) };
        if r != kResultOk {
            return Err(format!("IComponent::initialize: {r}"));
        }
        let processor = component
            .cast::<IAudioProcessor>()
            .ok_or("the component has no IAudioProcessor")?;
        // Single-component plugin: the controller is the component itself.
        let controller = component.cast::<IEditController>();
        let mut inst = Vst3Instance {
            class,
            component,
            processor,
            controller,
            params: HashMap::new(),
            _host: host,
            _module: self.clone(),
        };
        inst.read_params();
        Ok(inst)
    }
}

impl Drop for Vst3Module {
    fn drop(&mut self) {
        self.factory = None;
        if let Some(lib) = self.lib.take() {
            if self.module_entry_called {
                // SAFETY: as ModuleEntry above.
                unsafe {
                    if let Ok(exit) = lib.get::<unsafe extern "C" fn() -> bool>(b"ModuleExit\0") {
                        exit();
                    }
                }
            }
            drop(lib);
        }
    }
}
