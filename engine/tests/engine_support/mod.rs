//! A real checkpoint folder for the engine tests: an untrained `tiny` decoder with the default
//! tokenizer, written through the models crate's checkpoint code.

use candle_core::DType;
use staria_models::checkpoint::create_untrained;
use staria_models::model::ModelKind;
use staria_models::tokenizer::{Tokenizer, TokenizerConfig};
use std::path::Path;

pub fn tiny_checkpoint(dir: &Path) {
    let tok = Tokenizer::new(TokenizerConfig::default()).expect("default tokenizer");
    create_untrained(
        dir,
        "engine-test-tiny",
        ModelKind::Decoder,
        "tiny",
        &tok,
        DType::F32,
        7,
    )
    .expect("tiny checkpoint");
}
