//! q8 weight storage: the `q8_0` format of the fast decoder's [`WeightFormat::Q8`]
//! (`crate::fast`), kept on disk so a checkpoint takes about a quarter of its f32 size.
//!
//! ## Format (inside the one `model.safetensors`)
//!
//! A weight `NAME` stored as q8 is two tensors:
//! - `NAME`: dtype `I8`, the tensor's own shape, each value in `-127..=127`;
//! - `NAME.q8_scales` ([`SCALES_SUFFIX`]): dtype `F16`, the same shape with the last dimension
//!   divided by [`Q8_BLOCK`] (32): one scale per block of 32 consecutive values along the last
//!   dimension (for a `[rows, cols]` matrix in candle's `Linear` layout, blocks along each row,
//!   as the fast decoder packs them).
//!
//! A value is `q as f32 * scale as f32`. Which tensors are stored as q8 is
//! [`stores_as_q8`]: at least two dimensions, a last dimension that is a multiple of 32, at least
//! [`Q8_MIN_ELEMENTS`] values, and not an embedding table (`*_emb.weight`, a lookup rather than
//! a mat-vec, and a small part of the file). Everything else (norms, gates, latents, embeddings,
//! and any matrix whose rows are not a whole number of blocks) is stored as f16. `config.json`
//! says `"weights_dtype": "q8"`. Readers before this format refuse such a file (its scale
//! tensors are ones no model uses); f32, f16 and bf16 files are read as before.
//!
//! ## Quantisation and what it keeps
//!
//! Per block: `amax` = the largest `|v|`; the scale `s` is `amax / 127` rounded *down* to an f16
//! (so the largest value of the block maps to exactly ±127); `q = round_ties_even(v * (1/s))`
//! clamped to ±127, as `fast::kernels::quantize_weight_row` does with an f32 scale. Each value
//! comes back within `amax/254 + 127·2⁻²⁴` of the original (half a step; the second term only
//! where the scale is an f16 subnormal: a block whose values are all below 7.8e-3).
//!
//! Because every non-zero block holds a ±127 and `q·s` is exact in f32, the fast decoder's own
//! q8 packing of the loaded values (`quantize_weight_row`) gives back exactly the stored `q`
//! and `s`: running a q8 checkpoint with `--weights q8` re-quantises no weight.
//!
//! [`WeightFormat::Q8`]: crate::fast::WeightFormat::Q8

use std::collections::HashMap;

use half::f16;
use safetensors::Dtype;

/// Values per scale, along the last dimension (`fast::kernels::QBLOCK`).
pub const Q8_BLOCK: usize = 32;
/// The suffix of a q8 tensor's scales: `NAME` + `.q8_scales`.
pub const SCALES_SUFFIX: &str = ".q8_scales";
/// Tensors with fewer values stay f16 (they are a negligible part of the file).
pub const Q8_MIN_ELEMENTS: usize = 1024;

/// How a checkpoint's weights are stored: `config.json`'s `weights_dtype`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum WeightsStorage {
    F32,
    F16,
    BF16,
    /// Matrices as int8 with one f16 scale per 32 values, the rest f16 (see the module notes).
    Q8,
}

impl WeightsStorage {
    /// The name written to `weights_dtype`.
    pub fn name(self) -> &'static str {
        match self {
            WeightsStorage::F32 => "f32",
            WeightsStorage::F16 => "f16",
            WeightsStorage::BF16 => "bf16",
            WeightsStorage::Q8 => "q8",
        }
    }
}

impl std::fmt::Display for WeightsStorage {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

impl std::str::FromStr for WeightsStorage {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "f32" => Ok(WeightsStorage::F32),
            "f16" => Ok(WeightsStorage::F16),
            "bf16" => Ok(WeightsStorage::BF16),
            "q8" => Ok(WeightsStorage::Q8),
            other => Err(format!("{other:?}: expected f32, f16, bf16 or q8")),
        }
    }
}

/// Whether a tensor of this name and shape is stored as q8 in a q8 checkpoint.
pub fn stores_as_q8(name: &str, shape: &[usize]) -> bool {
    let embedding = name
        .strip_suffix(".weight")
        .is_some_and(|s| s.ends_with("_emb"));
    shape.len() >= 2
        && shape
            .last()
            .is_some_and(|&c| c > 0 && c.is_multiple_of(Q8_BLOCK))
        && shape.iter().product::<usize>() >= Q8_MIN_ELEMENTS
        && !embedding
}

/// The f16 scale of a block whose largest magnitude is `amax` (finite, ≥ 0): `amax / 127`
/// rounded down to an f16, or `None` when that is above the largest f16.
fn block_scale(amax: f32) -> Option<f16> {
    let d = amax / 127.0;
    let s = f16::from_f32(d);
    if !s.is_finite() {
        return None;
    }
    // Round down: the block's largest value then maps to exactly ±127.
    Some(if s.to_f32() > d {
        f16::from_bits(s.to_bits() - 1)
    } else {
        s
    })
}

/// Quantises row-major `values` in blocks of [`Q8_BLOCK`] (their count a multiple of it).
/// Errors (a sentence without the tensor's name) on a non-finite value or one too large for an
/// f16 scale.
pub fn quantize(values: &[f32]) -> Result<(Vec<i8>, Vec<f16>), String> {
    if !values.len().is_multiple_of(Q8_BLOCK) {
        return Err(format!(
            "{} values are not a whole number of {Q8_BLOCK}-value blocks",
            values.len()
        ));
    }
    let mut q = Vec::with_capacity(values.len());
    let mut scales = Vec::with_capacity(values.len() / Q8_BLOCK);
    for (b, block) in values.chunks_exact(Q8_BLOCK).enumerate() {
        if let Some(i) = block.iter().position(|v| !v.is_finite()) {
            return Err(format!(
                "holds a non-finite value at flat index {}",
                b * Q8_BLOCK + i
            ));
        }
        let amax = block.iter().fold(0f32, |m, v| m.max(v.abs()));
        let s = block_scale(amax).ok_or_else(|| {
            format!("holds {amax}, too large for a q8 scale (an f16 of at most 65504 per 127)")
        })?;
        let id = if s.to_f32() > 0.0 {
            1.0 / s.to_f32()
        } else {
            0.0
        };
        q.extend(
            block
                .iter()
                .map(|v| (v * id).round_ties_even().clamp(-127.0, 127.0) as i8),
        );
        scales.push(s);
    }
    Ok((q, scales))
}

/// The values of q8 data: `q[i] * scales[i / 32]`. The caller has checked the lengths.
pub fn dequantize(q: &[i8], scales: &[f16]) -> Vec<f32> {
    debug_assert_eq!(q.len(), scales.len() * Q8_BLOCK);
    q.chunks_exact(Q8_BLOCK)
        .zip(scales)
        .flat_map(|(block, s)| {
            let s = s.to_f32();
            block.iter().map(move |&v| v as f32 * s)
        })
        .collect()
}

/// The shape a q8 tensor of `shape` has scales of (last dimension / 32), or `None` when its last
/// dimension is not a whole number of blocks (or it has none).
pub fn scales_shape(shape: &[usize]) -> Option<Vec<usize>> {
    let (&last, rest) = shape.split_last()?;
    if last == 0 || !last.is_multiple_of(Q8_BLOCK) {
        return None;
    }
    let mut s = rest.to_vec();
    s.push(last / Q8_BLOCK);
    Some(s)
}

/// A tensor of a weights header: its dtype and shape.
pub(super) struct HeaderTensor<'a> {
    pub dtype: Dtype,
    pub shape: &'a [usize],
}

/// From a weights header's tensors, the model's tensors and their shapes: a q8 tensor (`I8`)
/// counts as one tensor of its own shape and its scales are not listed. Checks every q8 pair:
/// each I8 tensor has its scales, each scales tensor belongs to an I8 tensor, scales are F16 and
/// shaped as [`scales_shape`] says. The error is a sentence naming the tensor.
pub(super) fn model_shapes<'a>(
    tensors: impl IntoIterator<Item = (String, HeaderTensor<'a>)>,
) -> Result<HashMap<String, Vec<usize>>, String> {
    let all: HashMap<String, HeaderTensor<'a>> = tensors.into_iter().collect();
    let mut out = HashMap::with_capacity(all.len());
    let mut names: Vec<&String> = all.keys().collect();
    names.sort_unstable();
    for name in names {
        let t = &all[name];
        if let Some(base) = name.strip_suffix(SCALES_SUFFIX) {
            match all.get(base) {
                Some(b) if b.dtype == Dtype::I8 => {}
                Some(b) => {
                    return Err(format!(
                        "tensor {name} holds q8 scales, but {base} is stored as {:?}, not I8",
                        b.dtype
                    ));
                }
                None => {
                    return Err(format!(
                        "tensor {name} holds q8 scales, but there is no tensor {base} they scale"
                    ));
                }
            }
            continue;
        }
        if t.dtype == Dtype::I8 {
            let scales_name = format!("{name}{SCALES_SUFFIX}");
            let Some(s) = all.get(&scales_name) else {
                return Err(format!(
                    "tensor {name} is stored as q8 (I8) but its scales {scales_name} are missing"
                ));
            };
            let Some(want) = scales_shape(t.shape) else {
                return Err(format!(
                    "tensor {name} is stored as q8 with shape {:?}, whose last dimension is not \
                     a multiple of {Q8_BLOCK}",
                    t.shape
                ));
            };
            if s.dtype != Dtype::F16 || s.shape != want.as_slice() {
                return Err(format!(
                    "the q8 scales {scales_name} are {:?} {:?}, but tensor {name} of shape {:?} \
                     needs F16 {want:?} (one per {Q8_BLOCK} values)",
                    s.dtype, s.shape, t.shape
                ));
            }
        }
        out.insert(name.clone(), t.shape.to_vec());
    }
    Ok(out)
}

/// Decodes a q8 pair's raw little-endian bytes (already checked against the header by
/// [`model_shapes`]) into f32 values, refusing a scale that is negative or not finite.
pub(super) fn decode(q: &[u8], scales: &[u8]) -> Result<Vec<f32>, String> {
    if q.len() != scales.len() / 2 * Q8_BLOCK || !scales.len().is_multiple_of(2) {
        return Err(format!(
            "{} q8 values do not match {} bytes of scales",
            q.len(),
            scales.len()
        ));
    }
    let scales: Vec<f16> = scales
        .chunks_exact(2)
        .map(|b| f16::from_le_bytes([b[0], b[1]]))
        .collect();
    if let Some(i) = scales
        .iter()
        .position(|s| !s.is_finite() || s.to_f32() < 0.0)
    {
        return Err(format!(
            "q8 scale {i} is {}, not a finite value ≥ 0",
            scales[i]
        ));
    }
    let q: Vec<i8> = q.iter().map(|&b| b as i8).collect();
    if let Some(i) = q.iter().position(|&v| v == i8::MIN) {
        return Err(format!("q8 value {i} is -128, outside -127..=127"));
    }
    Ok(dequantize(&q, &scales))
}

/// A tensor to write: owned bytes of a safetensors dtype (what q8 data and its scales are).
pub(super) struct Raw {
    pub dtype: Dtype,
    pub shape: Vec<usize>,
    pub data: Vec<u8>,
}

impl Raw {
    pub fn q8(shape: &[usize], q: &[i8]) -> Raw {
        Raw {
            dtype: Dtype::I8,
            shape: shape.to_vec(),
            data: q.iter().map(|&v| v as u8).collect(),
        }
    }
    pub fn f16(shape: Vec<usize>, values: &[f16]) -> Raw {
        Raw {
            dtype: Dtype::F16,
            shape,
            data: values.iter().flat_map(|v| v.to_le_bytes()).collect(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::fast::kernels::quantize_weight_row;

    /// Deterministic values of every magnitude: ordinary weights, blocks of tiny values (f16
    /// subnormal scales), zeros, and one large outlier per block.
    fn values(n: usize, seed: u64) -> Vec<f32> {
        let mut s = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
        (0..n)
            .map(|i| {
                s ^= s << 13;
                s ^= s >> 7;
                s ^= s << 17;
                let u = (s >> 40) as f32 / (1u64 << 24) as f32 - 0.5;
                match (i / Q8_BLOCK) % 5 {
                    0 => u * 0.1,
                    1 => u * 1e-5,
                    2 => 0.0,
                    3 if i % Q8_BLOCK == 7 => 40.0,
                    _ => u * 3.0,
                }
            })
            .collect()
    }

    /// The module's bound: half a step of the block, plus 127·2⁻²⁴ where the scale is an f16
    /// subnormal (and a little for the f32 arithmetic of `v * (1/s)`).
    fn bound(block: &[f32]) -> f32 {
        let amax = block.iter().fold(0f32, |m, v| m.max(v.abs()));
        amax / 254.0 * 1.0001 + 127.0 * 2f32.powi(-24)
    }

    #[test]
    fn every_value_comes_back_within_half_a_step() {
        let v = values(32 * 40, 3);
        let (q, s) = quantize(&v).unwrap();
        let back = dequantize(&q, &s);
        for (b, (orig, got)) in v
            .chunks_exact(Q8_BLOCK)
            .zip(back.chunks_exact(Q8_BLOCK))
            .enumerate()
        {
            let tol = bound(orig);
            for (a, g) in orig.iter().zip(got) {
                assert!((a - g).abs() <= tol, "block {b}: {a} -> {g} (bound {tol})");
            }
        }
        // Scales are rounded down, so a non-zero block holds ±127.
        for (b, block) in q.chunks_exact(Q8_BLOCK).enumerate() {
            if s[b].to_f32() > 0.0 {
                assert_eq!(block.iter().map(|v| v.unsigned_abs()).max(), Some(127));
            }
        }
    }

    /// The fast decoder's q8 packing of the loaded values gives back exactly what was stored.
    #[test]
    fn the_fast_decoders_quantisation_reproduces_the_stored_values() {
        let v = values(32 * 40, 5);
        let (q, s) = quantize(&v).unwrap();
        let back = dequantize(&q, &s);
        let mut fq = vec![0u8; back.len()];
        let mut fs = vec![0f32; s.len()];
        quantize_weight_row(&back, &mut fq, &mut fs);
        let fq: Vec<i8> = fq.iter().map(|&b| (b as i32 - 128) as i8).collect();
        assert_eq!(fq, q);
        let s32: Vec<f32> = s.iter().map(|s| s.to_f32()).collect();
        assert_eq!(fs, s32);
    }

    #[test]
    fn bad_values_and_bad_data_are_refused() {
        let mut v = values(64, 9);
        v[40] = f32::NAN;
        assert!(quantize(&v).unwrap_err().contains("flat index 40"));
        assert!(quantize(&[1.0; 33]).is_err());
        assert!(quantize(&[1e7; 32]).unwrap_err().contains("too large"));
        let q = [1u8; 32];
        assert!(
            decode(&q, &[0, 0, 0, 0]).is_err(),
            "two scales for one block"
        );
        let nan = f16::NAN.to_le_bytes();
        assert!(decode(&q, &nan).unwrap_err().contains("not a finite"));
        let neg = f16::from_f32(-0.5).to_le_bytes();
        assert!(decode(&q, &neg).is_err());
        let mut q = [0u8; 32];
        q[3] = 0x80;
        let one = f16::ONE.to_le_bytes();
        assert!(decode(&q, &one).unwrap_err().contains("-128"));
    }

    #[test]
    fn which_tensors_are_stored_as_q8() {
        assert!(stores_as_q8("layers.0.attn.qkv.weight", &[96, 32]));
        assert!(stores_as_q8("lm_head.weight", &[2761, 256]));
        assert!(!stores_as_q8("tok_emb.weight", &[2761, 256]), "embedding");
        assert!(!stores_as_q8("encoder.tok_emb.weight", &[2761, 256]));
        assert!(!stores_as_q8("norm.weight", &[256]), "1-D");
        assert!(
            !stores_as_q8("x.weight", &[100, 40]),
            "rows not whole blocks"
        );
        assert!(!stores_as_q8("encoder.pool.latents", &[2, 32]), "small");
        assert_eq!(scales_shape(&[96, 64]), Some(vec![96, 2]));
        assert_eq!(scales_shape(&[96, 40]), None);
        assert_eq!(scales_shape(&[]), None);
    }
}
