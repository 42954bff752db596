//! Shared by the generation and CLI tests: a tiny decoder-only model with deterministic random
//! weights (candle's CPU RNG cannot be seeded), and a short two-section prompt.
#![allow(dead_code)] // each test crate uses its own subset

use std::path::Path;

use candle_core::{DType, Device, Tensor};
use candle_nn::{VarBuilder, VarMap};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use staria_models::checkpoint::CheckpointConfig;
use staria_models::model::{AnyModel, ModelConfig, ModelKind};
use staria_models::tokenizer::{Tokenizer, TokenizerConfig};
use staria_models::{Note, Section, SectionLabel, Song};

pub fn tokenizer() -> Tokenizer {
    Tokenizer::new(TokenizerConfig::default()).unwrap()
}

/// A tiny decoder with the default tokenizer; `weights_seed` fixes every weight.
pub fn tiny_model(tok: &Tokenizer, weights_seed: u64) -> (ModelConfig, VarMap, AnyModel) {
    tiny_model_of(ModelKind::Decoder, tok, weights_seed)
}

/// A tiny model of either kind with the default tokenizer; `weights_seed` fixes every weight.
pub fn tiny_model_of(
    kind: ModelKind,
    tok: &Tokenizer,
    weights_seed: u64,
) -> (ModelConfig, VarMap, AnyModel) {
    let cfg = ModelConfig::preset(kind, "tiny", tok.vocab_size()).unwrap();
    let vars = VarMap::new();
    let vb = VarBuilder::from_varmap(&vars, DType::F32, &Device::Cpu);
    let model = AnyModel::new(&cfg, vb).unwrap();
    // Replace the unseeded initial values by seeded ones of the initialiser's nominal spread
    // (sorted names so the draw order is fixed; the nominal spread, not the drawn one, so the
    // weights are the same bits on every run). Constant tensors (norm gains, gates) stay.
    let mut rng = StdRng::seed_from_u64(weights_seed);
    let data = vars.data().lock().unwrap();
    let mut names: Vec<&String> = data.keys().collect();
    names.sort();
    for name in names {
        let var = &data[name];
        let t = var.as_tensor();
        let v: Vec<f32> = t.flatten_all().unwrap().to_vec1().unwrap();
        if v.iter().all(|&x| x == v[0]) {
            continue;
        }
        // Wider than the init so the random model has preferences to sample from.
        let a = 3.0f32.sqrt() * nominal_std(name, t.dims()) * 4.0;
        let new: Vec<f32> = (0..v.len()).map(|_| rng.random_range(-a..a)).collect();
        var.set(&Tensor::from_vec(new, t.shape(), &Device::Cpu).unwrap())
            .unwrap();
    }
    drop(data);
    (cfg, vars, model)
}

/// The standard deviation the models' initialisers draw a random tensor with (see
/// `models/src/{decoder,encoder,staria,layers}.rs`).
fn nominal_std(name: &str, dims: &[usize]) -> f32 {
    if name.ends_with("tok_emb.weight") || name == "section_emb.weight" {
        0.02
    } else if name.ends_with("latents") {
        1.0
    } else if name.ends_with(".weight") && dims.len() == 2 {
        // Kaiming normal (fan in, ReLU gain), candle's default for `linear_no_bias`.
        (2.0 / dims[1] as f32).sqrt()
    } else {
        panic!("gen_support: no nominal initialiser spread known for tensor {name} {dims:?}")
    }
}

/// A note at `start_ms` lasting `dur_ms` (ticks at 120 bpm, 480 per quarter).
pub fn note(pitch: u8, start_ms: f64, dur_ms: f64) -> Note {
    Note {
        pitch,
        velocity: 80,
        channel: 0,
        program: 0,
        start_tick: (start_ms * 0.96).round() as u64,
        end_tick: ((start_ms + dur_ms) * 0.96).round() as u64,
        start_ms,
        end_ms: start_ms + dur_ms,
    }
}

/// Two 2-bar sections at 120 bpm (2 s per bar): A rises in C major, B falls.
pub fn prompt_song() -> Song {
    let mut notes = Vec::new();
    for (i, p) in [60u8, 62, 64, 65, 67, 69, 71, 72].iter().enumerate() {
        notes.push(note(*p, i as f64 * 500.0, 450.0));
    }
    for (i, p) in [72u8, 71, 69, 67, 65, 64, 62, 60].iter().enumerate() {
        notes.push(note(*p, 4000.0 + i as f64 * 500.0, 450.0));
    }
    let section = |label: SectionLabel, s: f64, e: f64| Section {
        label,
        marker_text: label.to_string(),
        start_tick: 0,
        end_tick: 0,
        start_ms: s,
        end_ms: e,
    };
    Song::from_ms_notes(
        notes,
        vec![
            section(SectionLabel::A, 0.0, 4000.0),
            section(SectionLabel::B, 4000.0, 8000.0),
        ],
        120.0,
    )
}

/// Writes a tiny decoder checkpoint folder.
pub fn write_checkpoint(dir: &Path, weights_seed: u64) {
    let tok = tokenizer();
    let (cfg, vars, _) = tiny_model(&tok, weights_seed);
    let config = CheckpointConfig::new("test-tiny", "tiny", cfg, &tok);
    staria_models::checkpoint::save(dir, &config, &tok, &vars, DType::F32).unwrap();
}

/// Opens every Staria cross-attention gate (`attn_gate` 0.8, `ff_gate` -0.6): they start at zero,
/// which makes every site inert, so a test of the sites would prove nothing.
pub fn open_gates(vars: &VarMap) {
    let data = vars.data().lock().unwrap();
    for (name, var) in data.iter() {
        let g = if name.ends_with("attn_gate") {
            0.8f32
        } else if name.ends_with("ff_gate") {
            -0.6
        } else {
            continue;
        };
        let t = var.as_tensor();
        var.set(&Tensor::full(g, t.shape(), &Device::Cpu).unwrap())
            .unwrap();
    }
}

/// A tiny model of either kind on the fast backend (Staria: gates opened, the candle model kept
/// for its encoder).
pub fn tiny_fast_generator(
    kind: ModelKind,
    weights_seed: u64,
    format: staria_models::fast::WeightFormat,
) -> staria_engine::generate::Generator {
    tiny_fast_generator_for(tokenizer(), kind, weights_seed, format)
}

/// The default tokenizer with section windows (`TokenizerConfig::section_windows`).
pub fn section_windows_tokenizer() -> Tokenizer {
    Tokenizer::new(TokenizerConfig {
        section_windows: true,
        ..TokenizerConfig::default()
    })
    .unwrap()
}

/// [`tiny_fast_generator`] reading `tok`'s layout.
pub fn tiny_fast_generator_for(
    tok: Tokenizer,
    kind: ModelKind,
    weights_seed: u64,
    format: staria_models::fast::WeightFormat,
) -> staria_engine::generate::Generator {
    use staria_models::fast::{FastConfig, FastDecoder};
    let (cfg, vars, model) = tiny_model_of(kind, &tok, weights_seed);
    open_gates(&vars);
    let fast = FastDecoder::from_varmap(&FastConfig::from(&cfg), format, &vars).unwrap();
    let encoder = (kind == ModelKind::Staria).then_some(model);
    staria_engine::generate::Generator::new_fast(fast, encoder, tok).unwrap()
}

/// Writes a tiny checkpoint folder of either kind (Staria: gates opened).
pub fn write_checkpoint_of(dir: &Path, kind: ModelKind, weights_seed: u64) {
    let tok = tokenizer();
    let (cfg, vars, _) = tiny_model_of(kind, &tok, weights_seed);
    open_gates(&vars);
    let config = CheckpointConfig::new("test-tiny", "tiny", cfg, &tok);
    staria_models::checkpoint::save(dir, &config, &tok, &vars, DType::F32).unwrap();
}
