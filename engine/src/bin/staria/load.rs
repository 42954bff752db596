//! Loading a generator: threads, device, checkpoint folder.

use std::path::PathBuf;

use candle_core::Device;
use staria_engine::generate::Generator;

use crate::args::{BackendArgs, ModelArgs};
use crate::{Failure, bad};

/// Pins the tensor thread count. Must run before the first tensor op: candle sizes its pools
/// once, from RAYON_NUM_THREADS / CANDLE_NUM_THREADS.
pub(crate) fn set_threads(threads: Option<usize>) -> Result<usize, Failure> {
    if let Some(n) = threads {
        if n == 0 || n > 1024 {
            return Err(bad(format!("--threads must be in 1..=1024, got {n}")));
        }
        // SAFETY: called at the start of `run`, before this process starts any other thread.
        unsafe {
            std::env::set_var("RAYON_NUM_THREADS", n.to_string());
            std::env::set_var("CANDLE_NUM_THREADS", n.to_string());
        }
    }
    Ok(candle_core::utils::get_num_threads())
}

pub(crate) fn parse_device(spec: &str) -> Result<Device, Failure> {
    let (name, ordinal) = match spec.split_once(':') {
        Some((n, o)) => {
            let o = o
                .parse::<usize>()
                .map_err(|_| bad(format!("--device {spec:?}: {o:?} is not a device number")))?;
            (n, o)
        }
        None => (spec, 0),
    };
    match name.to_ascii_lowercase().as_str() {
        "cpu" => Ok(Device::Cpu),
        "cuda" => {
            if !cfg!(feature = "cuda") {
                return Err(bad(
                    "this staria binary was built without CUDA support; rebuild with `--features cuda`",
                ));
            }
            Device::new_cuda(ordinal).map_err(|e| bad(format!("--device {spec}: {e}")))
        }
        "metal" => {
            if !cfg!(feature = "metal") {
                return Err(bad(
                    "this staria binary was built without Metal support; rebuild with `--features metal`",
                ));
            }
            Device::new_metal(ordinal).map_err(|e| bad(format!("--device {spec}: {e}")))
        }
        _ => Err(bad(format!(
            "unknown --device {spec:?}; expected cpu, cuda[:N] or metal[:N]"
        ))),
    }
}

/// `--model` (a folder that exists, else a built-in model's name), else $STARIA_MODEL (the same
/// rule), else the default built-in model (`staria_engine::default_model`).
pub(crate) fn model_dir(arg: &Option<PathBuf>) -> Result<PathBuf, Failure> {
    staria_engine::default_model::resolve_model_dir(arg.as_deref()).map_err(bad)
}

pub(crate) struct Loaded {
    pub(crate) generator: Generator,
    pub(crate) dir: PathBuf,
    pub(crate) device: String,
    pub(crate) threads: usize,
}

pub(crate) fn load(args: &ModelArgs, backend: &BackendArgs) -> Result<Loaded, Failure> {
    let threads = set_threads(args.threads)?;
    let device = parse_device(&args.device)?;
    let opts = backend.options(&device)?;
    let dir = model_dir(&args.model)?;
    let generator = Generator::load_with(&dir, &device, &opts)?;
    Ok(Loaded {
        generator,
        dir,
        device: args.device.clone(),
        threads,
    })
}
