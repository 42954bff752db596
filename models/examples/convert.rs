//! Re-save a checkpoint folder with its weights in another dtype (e.g. f16 to halve the size of a
//! model to ship), leaving optimizer state and logs behind:
//!
//!     cargo run --release -p staria-models --example convert -- IN_DIR OUT_DIR [f16|bf16|f32] [NAME]

use std::path::PathBuf;
use std::process::ExitCode;

use candle_core::{DType, Device};
use staria_models::checkpoint;

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    if args.len() < 2 || args.len() > 4 {
        eprintln!("usage: convert IN_DIR OUT_DIR [f16|bf16|f32] [NAME]");
        return ExitCode::from(2);
    }
    let dtype = match args.get(2).map(String::as_str).unwrap_or("f16") {
        "f16" => DType::F16,
        "bf16" => DType::BF16,
        "f32" => DType::F32,
        other => {
            eprintln!("convert: unknown dtype {other:?}; expected f16, bf16 or f32");
            return ExitCode::from(2);
        }
    };
    let (input, output) = (PathBuf::from(&args[0]), PathBuf::from(&args[1]));
    let run = || -> staria_models::Result<()> {
        let (mut config, tokenizer) = checkpoint::load_config(&input)?;
        let tensors = checkpoint::load_tensors(&input, &Device::Cpu)?;
        // Building the model checks every tensor against the config before anything is written.
        checkpoint::build_model(&config.model, &tensors, &Device::Cpu)?;
        if let Some(name) = args.get(3) {
            config.name = name.clone();
        }
        checkpoint::save_tensors(&output, &config, &tokenizer, &tensors, dtype)
    };
    match run() {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("convert: {e}");
            ExitCode::FAILURE
        }
    }
}
