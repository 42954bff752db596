//! Experiment configs: one TOML file per experiment (`trainer/configs/{tiny,small,seed}.toml`).
//! Every table rejects unknown keys, so a typo is an error naming the key, not a silent default.

use std::path::Path;

use serde::{Deserialize, Serialize};

use crate::error::{Result, TrainError, fsx};

/// Hyper-parameters every training stage has.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct Hyper {
    pub steps: u64,
    pub batch_size: usize,
    pub lr: f64,
    pub warmup_steps: u64,
    /// Cosine decay ends at `lr * min_lr_ratio`.
    pub min_lr_ratio: f64,
    pub weight_decay: f64,
    /// Global gradient-norm clip; 0 disables clipping.
    pub clip_norm: f64,
    /// Save a checkpoint every this many steps (0: only at the end).
    pub checkpoint_every: u64,
    /// Evaluate validation loss every this many steps (0: only at the end).
    pub eval_every: u64,
    /// Validation batches per evaluation.
    pub eval_batches: usize,
}

macro_rules! stage {
    ($(#[$doc:meta])* $name:ident { $($(#[$fdoc:meta])* $field:ident : $ty:ty = $def:expr),* $(,)? }) => {
        $(#[$doc])*
        #[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
        #[serde(deny_unknown_fields, default)]
        pub struct $name {
            pub steps: u64,
            pub batch_size: usize,
            pub lr: f64,
            pub warmup_steps: u64,
            pub min_lr_ratio: f64,
            pub weight_decay: f64,
            pub clip_norm: f64,
            pub checkpoint_every: u64,
            pub eval_every: u64,
            pub eval_batches: usize,
            $($(#[$fdoc])* pub $field: $ty,)*
        }
        impl Default for $name {
            fn default() -> Self {
                Self {
                    steps: 100,
                    batch_size: 8,
                    lr: 3e-4,
                    warmup_steps: 10,
                    min_lr_ratio: 0.1,
                    weight_decay: 0.01,
                    clip_norm: 1.0,
                    checkpoint_every: 0,
                    eval_every: 0,
                    eval_batches: 4,
                    $($field: $def,)*
                }
            }
        }
        impl $name {
            pub fn hyper(&self) -> Hyper {
                Hyper {
                    steps: self.steps,
                    batch_size: self.batch_size,
                    lr: self.lr,
                    warmup_steps: self.warmup_steps,
                    min_lr_ratio: self.min_lr_ratio,
                    weight_decay: self.weight_decay,
                    clip_norm: self.clip_norm,
                    checkpoint_every: self.checkpoint_every,
                    eval_every: self.eval_every,
                    eval_batches: self.eval_batches,
                }
            }
        }
    };
}

stage!(
    /// `train-decoder`: the decoder-only baseline.
    DecoderStage {}
);

stage!(
    /// `train-encoder`: contrastive (NT-Xent) snippet encoder.
    EncoderStage {
        /// NT-Xent temperature.
        temperature: f64 = 0.1,
        /// Width of the projection head the contrastive loss is computed on.
        projection_dim: usize = 64,
    }
);

stage!(
    /// `train-staria`: stage A (cross-attention + adapters on frozen decoder and encoder), B (the
    /// decoder's top layers unfrozen progressively at a lower LR), C (everything).
    StariaStage {
        stage_a_steps: u64 = 50,
        stage_b_steps: u64 = 30,
        stage_c_steps: u64 = 20,
        /// LR multiplier for pretrained decoder (stage B, C) and encoder (stage C) weights.
        pretrained_lr_scale: f64 = 0.1,
        /// LR multiplier for the cross-attention sites' gates (`xattn.*.attn_gate`,
        /// `ff_gate`: scalars starting at 0, used as tanh): AdamW moves a parameter by about
        /// the LR a step, so at 1e-3 a gate needs hundreds of steps to open; a short run
        /// raises this.
        gate_lr_scale: f64 = 1.0,
    }
);

stage!(
    /// `wake-sleep`: structure recognizer and generator trained in alternation.
    WakeSleepStage {
        rounds: u64 = 2,
        /// Generator steps on recognizer-labelled real pieces per round.
        wake_steps: u64 = 10,
        /// Recognizer steps on dreams and synthetic pieces per round.
        sleep_steps: u64 = 10,
        /// Pieces the generator dreams per round.
        dreams_per_round: usize = 4,
        /// Tokens generated per dream (after the prompt).
        dream_tokens: usize = 256,
        dream_temperature: f64 = 1.0,
        dream_min_p: f64 = 0.05,
        /// Recognizer size.
        recognizer_dim: usize = 64,
        recognizer_layers: usize = 2,
        recognizer_heads: usize = 4,
        recognizer_lr: f64 = 1e-3,
        /// Recognizer steps on synthetic pieces before the first wake phase.
        recognizer_warmup_steps: u64 = 20,
    }
);

/// Which architecture size to build; `preset` names a `staria_models` preset and `overrides`
/// replaces any of its fields (e.g. `overrides = { n_layers = 2 }`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ModelSection {
    pub preset: String,
    #[serde(default)]
    pub overrides: toml::Table,
    #[serde(default)]
    pub encoder_overrides: toml::Table,
}

/// Training data settings.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct DataSection {
    /// Tokens per training sequence (prompt + piece window); at most the model's max_seq_len.
    pub seq_len: usize,
    /// Random transposition within +-semitones.
    pub pitch_shift: i32,
    /// Random tempo factor within 1 +- this.
    pub tempo_scale: f64,
    /// Random velocity change within +- this many velocity levels of the tokenizer.
    pub velocity_shift: i32,
    /// Longest prompt snippet in training sequences (tokens; cut at a note boundary). Four of
    /// them sit inline in the baseline's prompt, so keep `4 * snippet_tokens` well under seq_len.
    pub snippet_tokens: usize,
    /// Share of training sequences drawn from synthetic form pieces (when the shards have them).
    pub synthetic_fraction: f64,
    /// Share of training sequences whose note values are doubled against the beat
    /// (`batch::LONGER_NOTE_VALUES`; the beat grid stays at the piece's tempo). The corpus is
    /// mostly running eighths, and a model that never met a line in quarters does not follow a
    /// snippet played in them. 0: off.
    pub note_value_fraction: f64,
    /// Share of training sequences drawn from two-voice copies (melody plus accompaniment,
    /// `prepare::two_voice_copy`) when the shards have them; they teach the accompaniment voice
    /// of a two-instrument tokenizer. Drawn first: `synthetic_fraction` is a share of the rest.
    pub two_voice_fraction: f64,
}

impl Default for DataSection {
    fn default() -> Self {
        Self {
            seq_len: 512,
            pitch_shift: 5,
            tempo_scale: 0.1,
            velocity_shift: 1,
            snippet_tokens: 64,
            synthetic_fraction: 0.3,
            note_value_fraction: 0.0,
            two_voice_fraction: 0.15,
        }
    }
}

/// A whole experiment config.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ExperimentConfig {
    pub name: String,
    pub seed: u64,
    pub model: ModelSection,
    #[serde(default)]
    pub data: DataSection,
    #[serde(default)]
    pub decoder: DecoderStage,
    #[serde(default)]
    pub encoder: EncoderStage,
    #[serde(default)]
    pub staria: StariaStage,
    #[serde(default)]
    pub wake_sleep: WakeSleepStage,
}

impl ExperimentConfig {
    pub fn from_toml_str(text: &str) -> Result<Self> {
        let cfg: Self = toml::from_str(text).map_err(|e| TrainError::config(e.to_string()))?;
        cfg.validate()?;
        Ok(cfg)
    }

    pub fn load(path: &Path) -> Result<Self> {
        let text = fsx::read_to_string(path)?;
        Self::from_toml_str(&text).map_err(|e| match e {
            TrainError::Config(msg) => TrainError::Config(format!("{}: {msg}", path.display())),
            other => other,
        })
    }

    /// Range checks the type system can't express.
    pub fn validate(&self) -> Result<()> {
        let bad = |msg: String| Err(TrainError::Config(msg));
        let d = &self.data;
        if d.seq_len < 32 {
            return bad(format!(
                "data.seq_len = {} is too short (at least 32 tokens)",
                d.seq_len
            ));
        }
        if !(0..=12).contains(&d.pitch_shift) {
            return bad(format!(
                "data.pitch_shift = {} must be within 0..=12 semitones",
                d.pitch_shift
            ));
        }
        if !(0.0..=0.5).contains(&d.tempo_scale) {
            return bad(format!(
                "data.tempo_scale = {} must be within [0, 0.5]",
                d.tempo_scale
            ));
        }
        if !(0.0..=1.0).contains(&d.note_value_fraction) {
            return bad(format!(
                "data.note_value_fraction = {} must be within [0, 1]",
                d.note_value_fraction
            ));
        }
        if !(0..=12).contains(&d.velocity_shift) {
            return bad(format!(
                "data.velocity_shift = {} must be within 0..=12 levels",
                d.velocity_shift
            ));
        }
        if d.snippet_tokens < 8 || 4 * (d.snippet_tokens + 1) + 16 > d.seq_len {
            return bad(format!(
                "data.snippet_tokens = {} must be at least 8 and leave room in seq_len = {} for four \
                 inline snippets and the piece (4 * (snippet_tokens + 1) + 16 <= seq_len)",
                d.snippet_tokens, d.seq_len
            ));
        }
        if !(0.0..=1.0).contains(&d.synthetic_fraction) {
            return bad(format!(
                "data.synthetic_fraction = {} must be within [0, 1]",
                d.synthetic_fraction
            ));
        }
        if !(0.0..=1.0).contains(&d.two_voice_fraction) {
            return bad(format!(
                "data.two_voice_fraction = {} must be within [0, 1]",
                d.two_voice_fraction
            ));
        }
        for (name, h) in [
            ("decoder", self.decoder.hyper()),
            ("encoder", self.encoder.hyper()),
            ("staria", self.staria.hyper()),
            ("wake_sleep", self.wake_sleep.hyper()),
        ] {
            check_hyper(name, &h)?;
        }
        if self.encoder.temperature <= 0.0 {
            return bad(format!(
                "encoder.temperature = {} must be positive",
                self.encoder.temperature
            ));
        }
        if self.encoder.batch_size < 2 {
            return bad(
                "encoder.batch_size must be at least 2 (the contrastive loss needs negatives)"
                    .into(),
            );
        }
        if self.encoder.projection_dim == 0 {
            return bad("encoder.projection_dim must be positive".into());
        }
        let s = &self.staria;
        if s.stage_a_steps + s.stage_b_steps + s.stage_c_steps == 0 {
            return bad(
                "staria: stage_a_steps + stage_b_steps + stage_c_steps is 0; nothing to train"
                    .into(),
            );
        }
        if !(s.pretrained_lr_scale > 0.0 && s.pretrained_lr_scale <= 1.0) {
            return bad(format!(
                "staria.pretrained_lr_scale = {} must be within (0, 1]",
                s.pretrained_lr_scale
            ));
        }
        if !(s.gate_lr_scale > 0.0 && s.gate_lr_scale <= 1000.0) {
            return bad(format!(
                "staria.gate_lr_scale = {} must be within (0, 1000]",
                s.gate_lr_scale
            ));
        }
        let w = &self.wake_sleep;
        if w.recognizer_dim == 0
            || w.recognizer_heads == 0
            || !w.recognizer_dim.is_multiple_of(w.recognizer_heads)
        {
            return bad(format!(
                "wake_sleep.recognizer_dim = {} must be a positive multiple of recognizer_heads = {}",
                w.recognizer_dim, w.recognizer_heads
            ));
        }
        if w.recognizer_layers == 0 {
            return bad("wake_sleep.recognizer_layers must be at least 1".into());
        }
        if w.dream_temperature <= 0.0 || !(0.0..1.0).contains(&w.dream_min_p) {
            return bad(
                "wake_sleep: dream_temperature must be > 0 and dream_min_p within [0, 1)".into(),
            );
        }
        Ok(())
    }
}

fn check_hyper(stage: &str, h: &Hyper) -> Result<()> {
    let bad = |msg: String| Err(TrainError::Config(format!("{stage}.{msg}")));
    if h.batch_size == 0 {
        return bad("batch_size must be at least 1".into());
    }
    if !(h.lr > 0.0 && h.lr < 1.0) {
        return bad(format!("lr = {} must be within (0, 1)", h.lr));
    }
    if !(0.0..=1.0).contains(&h.min_lr_ratio) {
        return bad(format!(
            "min_lr_ratio = {} must be within [0, 1]",
            h.min_lr_ratio
        ));
    }
    if !(0.0..1.0).contains(&h.weight_decay) {
        return bad(format!(
            "weight_decay = {} must be within [0, 1)",
            h.weight_decay
        ));
    }
    if h.clip_norm < 0.0 {
        return bad(format!(
            "clip_norm = {} must be >= 0 (0 disables clipping)",
            h.clip_norm
        ));
    }
    if h.eval_batches == 0 {
        return bad("eval_batches must be at least 1".into());
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shipped_configs_parse() {
        let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("configs");
        for name in ["tiny", "small", "seed"] {
            let cfg = ExperimentConfig::load(&dir.join(format!("{name}.toml"))).unwrap();
            assert_eq!(cfg.name, name);
            assert_eq!(cfg.model.preset, name);
        }
    }

    #[test]
    fn typos_and_bad_values_are_named() {
        let base = "name = \"x\"\nseed = 1\n[model]\npreset = \"tiny\"\n";
        let e =
            ExperimentConfig::from_toml_str(&format!("{base}[decoder]\nstpes = 3\n")).unwrap_err();
        assert!(e.to_string().contains("stpes"), "{e}");
        let e =
            ExperimentConfig::from_toml_str(&format!("{base}[decoder]\nlr = 2.0\n")).unwrap_err();
        assert!(e.to_string().contains("decoder.lr"), "{e}");
        let e = ExperimentConfig::from_toml_str(&format!("{base}[staria]\ngate_lr_scale = 0\n"))
            .unwrap_err();
        assert!(e.to_string().contains("staria.gate_lr_scale"), "{e}");
        let e = ExperimentConfig::from_toml_str(&format!("{base}[encoder]\nbatch_size = 1\n"))
            .unwrap_err();
        assert!(e.to_string().contains("encoder.batch_size"), "{e}");
        let e =
            ExperimentConfig::from_toml_str(&format!("{base}[data]\nseq_len = 4\n")).unwrap_err();
        assert!(e.to_string().contains("seq_len"), "{e}");
        let ok = ExperimentConfig::from_toml_str(base).unwrap();
        assert_eq!(ok.decoder, DecoderStage::default());
    }
}
