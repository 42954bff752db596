//! The largest sizes a checkpoint's `config.json` may ask for. Sizes from a file are checked
//! before anything is allocated for them: those the weights have a tensor for against the
//! tensor's shape in the `model.safetensors` header, and all of them against these bounds, which
//! leave the presets far inside (`seed`: dim 1536, 16 layers, 8192 positions) while refusing a
//! setting that would exhaust memory (a billion layers, a context of 2^40 positions).

/// `vocab_size` (the tokenizer's own limit is lower).
pub const VOCAB_SIZE: usize = 1 << 20;
/// `dim` of the decoder and the encoder.
pub const DIM: usize = 1 << 14;
/// `n_layers` of the decoder and the encoder.
pub const N_LAYERS: usize = 256;
/// `ff_mult`.
pub const FF_MULT: usize = 64;
/// `max_seq_len` of the decoder and the encoder.
pub const MAX_SEQ_LEN: usize = 1 << 20;
/// `window_bins` and `grid_bins`.
pub const BINS: usize = 1 << 12;
/// `n_latents` of the encoder.
pub const N_LATENTS: usize = 1 << 10;
/// `n_layers × max_seq_len × dim`: the decoder's KV cache holds twice this many values, and
/// every backend allocates it whole when the model is built (`seed`: 2.0e8).
pub const KV_VALUES: u128 = 1 << 29;
/// `max_seq_len × dim`: the RoPE tables hold three times this many values (`seed`: 1.3e7).
pub const CONTEXT_VALUES: u128 = 1 << 26;
/// Bytes of run-time state (f32 at worst) a model may allocate when it is built: the KV cache,
/// the cross-attention caches and the RoPE tables. The fast decoder checks the config it is
/// handed against it, which need not have come through [`check_sizes`]: it bounds what the
/// weights do not imply (`max_seq_len`, the fast decoder's `max_latents`).
pub const STATE_BYTES: u128 = 16 << 30;
// Whatever the bounds above let a checkpoint ask for fits inside it.
const _: () = assert!(4 * (2 * KV_VALUES + 3 * CONTEXT_VALUES) <= STATE_BYTES);

use super::*;

/// Checks every size in a model config against [`limits`]; `config_file` is named in the error,
/// with the setting and its value. `load_config` runs it; call it on a config from elsewhere
/// before building a model from it.
pub fn check_sizes(config_file: &Path, model: &ModelConfig) -> Result<()> {
    let refuse = |part: &str, setting: &str, value: u128, max: u128| -> Result<()> {
        if value <= max {
            return Ok(());
        }
        Err(Error::checkpoint(
            config_file,
            format!(
                "{part}{setting} = {value} is more than a checkpoint may ask for (at most {max})"
            ),
        ))
    };
    // The sizes a decoder and an encoder trunk share, and the RoPE tables they imply.
    let trunk = |part: &str, sizes: [(&str, usize, usize); 6], context: u128| -> Result<()> {
        for (setting, value, max) in sizes {
            refuse(part, setting, value as u128, max as u128)?;
        }
        refuse(part, "max_seq_len × dim", context, limits::CONTEXT_VALUES)
    };
    let decoder = |part: &str, c: &crate::decoder::DecoderConfig| -> Result<()> {
        let context = c.max_seq_len as u128 * c.dim as u128;
        trunk(
            part,
            [
                ("vocab_size", c.vocab_size, limits::VOCAB_SIZE),
                ("dim", c.dim, limits::DIM),
                ("n_layers", c.n_layers, limits::N_LAYERS),
                ("n_heads", c.n_heads, c.dim),
                ("ff_mult", c.ff_mult, limits::FF_MULT),
                ("max_seq_len", c.max_seq_len, limits::MAX_SEQ_LEN),
            ],
            context,
        )?;
        refuse(
            part,
            "window_bins",
            c.window_bins as u128,
            limits::BINS as u128,
        )?;
        refuse(part, "grid_bins", c.grid_bins as u128, limits::BINS as u128)?;
        refuse(
            part,
            "n_layers × max_seq_len × dim (the KV cache)",
            context * c.n_layers as u128,
            limits::KV_VALUES,
        )
    };
    match model {
        ModelConfig::Decoder(c) => decoder("", c),
        ModelConfig::Staria(c) => {
            decoder("decoder.", &c.decoder)?;
            let e = &c.encoder;
            trunk(
                "encoder.",
                [
                    ("vocab_size", e.vocab_size, limits::VOCAB_SIZE),
                    ("dim", e.dim, limits::DIM),
                    ("n_layers", e.n_layers, limits::N_LAYERS),
                    ("n_heads", e.n_heads, e.dim),
                    ("ff_mult", e.ff_mult, limits::FF_MULT),
                    ("max_seq_len", e.max_seq_len, limits::MAX_SEQ_LEN),
                ],
                e.max_seq_len as u128 * e.dim as u128,
            )?;
            refuse(
                "encoder.",
                "n_latents",
                e.n_latents as u128,
                limits::N_LATENTS as u128,
            )
        }
    }
}
