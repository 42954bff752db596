//! The Staria fast path against candle on a tiny Staria model, with the trainable sets of the
//! stages: same loss, same gradient for every trainable parameter (decoder, sites, gates,
//! section embedding, encoder), and the same weights after one AdamW step.

use std::collections::{HashMap, HashSet};

use candle_core::{Device, Tensor, Var};
use staria_models::grid::{GridInput, GridRows};
use staria_models::params::SeededVars;
use staria_models::{SnippetBatch, Staria, StariaConfig};

use super::StariaTrainer;
use crate::batch::{Batch, masked_nll};
use crate::optim::{AdamW, AdamWParams};

/// `inputs`: with the window-position input (5 buckets) and a beat-grid head (6 buckets).
fn tiny_config(inputs: bool) -> StariaConfig {
    let mut cfg = StariaConfig::tiny(37);
    cfg.decoder.max_seq_len = 64;
    if inputs {
        cfg.decoder.window_bins = 5;
        cfg.decoder.grid_bins = 6;
    }
    cfg
}

/// Grid geometry for the tiny vocabulary (ids 10..30 play the onset tokens); `None` without
/// a grid head.
fn tiny_grid_rows(cfg: &StariaConfig) -> Option<GridRows> {
    (cfg.decoder.grid_bins > 0).then_some(GridRows {
        bins: cfg.decoder.grid_bins,
        first_onset: 10,
        onsets: 20,
        step_ms: 10.0,
    })
}

/// Seeded weights with every norm gain away from 1 and every gate away from 0 (a fresh site's
/// gates are 0, which would hide everything behind them from the check), the same for every
/// call.
fn seeded_vars(cfg: &StariaConfig) -> SeededVars {
    let vars = SeededVars::new(5);
    Staria::new(cfg, vars.builder(&Device::Cpu)).unwrap();
    let mut set = HashMap::new();
    for (k, (name, var)) in vars.named().into_iter().enumerate() {
        let n = var.elem_count();
        let values: Vec<f32> = if name.ends_with("norm.weight") {
            (0..n)
                .map(|j| 1.0 + 0.3 * ((k * 31 + j) as f32 * 0.7).sin())
                .collect()
        } else if name.ends_with("attn_gate") {
            vec![0.4 + 0.1 * k as f32 / 100.0]
        } else if name.ends_with("ff_gate") {
            vec![-0.5]
        } else if name == "win_emb.weight" || name == "grid_head.weight" {
            // Zero at creation; made non-zero so their use is checked too.
            (0..n).map(|j| 0.1 * (j as f32 * 1.3).sin()).collect()
        } else {
            continue;
        };
        set.insert(
            name,
            Tensor::from_vec(values, var.shape(), &Device::Cpu).unwrap(),
        );
    }
    vars.load(&set).unwrap();
    vars
}

/// A `[b, t]` batch: pseudo-random ids and targets, a mask with a given prefix and holes, and
/// snippet slots with some absent and one example without any snippet.
fn batch(cfg: &StariaConfig, b: usize, t: usize) -> Batch {
    let dev = Device::Cpu;
    let mut x = 987654321u64;
    let mut next = |m: usize| {
        x = x
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        ((x >> 33) % m as u64) as u32
    };
    let vocab = cfg.decoder.vocab_size;
    let ids: Vec<u32> = (0..b * t).map(|_| next(vocab)).collect();
    let targets: Vec<u32> = (0..b * t).map(|_| next(vocab)).collect();
    let mask: Vec<f32> = (0..b * t)
        .map(|i| {
            let (row, pos) = (i / t, i % t);
            if pos < 2 + row || pos % 5 == 3 {
                0.0
            } else {
                1.0
            }
        })
        .collect();
    let (slots, len) = (4, 7);
    // Example 0 has slots A, C and D; example 1 none; example 2 only B.
    let present: Vec<u8> = [[1, 0, 1, 1], [0, 0, 0, 0], [0, 1, 0, 0]]
        .iter()
        .cycle()
        .take(b)
        .flatten()
        .copied()
        .collect();
    let mut snip_ids = vec![0u32; b * slots * len];
    let mut snip_mask = vec![0u8; b * slots * len];
    for row in 0..b * slots {
        let n = if present[row] == 1 { 3 + row % 5 } else { 1 };
        for i in 0..n {
            snip_ids[row * len + i] = next(vocab);
            snip_mask[row * len + i] = 1;
        }
    }
    let sections: Vec<u32> = (0..b * slots).map(|i| (i % slots) as u32).collect();
    let bins = cfg.decoder.window_bins;
    let win = (bins > 0).then(|| {
        let w: Vec<u32> = (0..b * t).map(|i| ((i % t) / 4 % bins) as u32).collect();
        Tensor::from_vec(w, (b, t), &dev).unwrap()
    });
    // Every bucket and "no grid" (`grid_bins`) in a pseudo-random pattern.
    let grid = tiny_grid_rows(cfg).map(|g| {
        let rows: Vec<u32> = (0..b * t * g.onsets)
            .map(|i| ((i * 7 + i / 13) % (g.bins + 1)) as u32)
            .collect();
        GridInput {
            rows: Tensor::from_vec(rows, (b, t, g.onsets), &dev).unwrap(),
            first_onset: g.first_onset as usize,
        }
    });
    Batch {
        ids: Tensor::from_vec(ids, (b, t), &dev).unwrap(),
        win,
        grid,
        targets: Tensor::from_vec(targets, (b, t), &dev).unwrap(),
        mask: Tensor::from_vec(mask, (b, t), &dev).unwrap(),
        snippets: Some(SnippetBatch {
            ids: Tensor::from_vec(snip_ids, (b * slots, len), &dev).unwrap(),
            mask: Tensor::from_vec(snip_mask, (b * slots, len), &dev).unwrap(),
            sections: Tensor::from_vec(sections, (b, slots), &dev).unwrap(),
            present: Tensor::from_vec(present, (b, slots), &dev).unwrap(),
        }),
        tokens: b * t,
    }
}

fn rel_diff(a: &[f32], b: &[f32]) -> f32 {
    assert_eq!(a.len(), b.len());
    let diff = a
        .iter()
        .zip(b)
        .map(|(x, y)| (x - y).abs())
        .fold(0f32, f32::max);
    let scale = b.iter().map(|y| y.abs()).fold(0f32, f32::max);
    if scale == 0.0 { diff } else { diff / scale }
}

fn values(t: &Tensor) -> Vec<f32> {
    t.flatten_all().unwrap().to_vec1::<f32>().unwrap()
}

/// A model over `vars` with everything but `trainable` frozen, as `train_staria` builds it,
/// and an optimizer over `trainable`.
fn staged(
    cfg: &StariaConfig,
    vars: &SeededVars,
    trainable: &dyn Fn(&str) -> bool,
    hyper: AdamWParams,
) -> (Staria, AdamW) {
    let frozen: HashSet<String> = vars
        .named()
        .into_iter()
        .map(|(n, _)| n)
        .filter(|n| !trainable(n))
        .collect();
    vars.set_frozen(frozen);
    let model = Staria::new(cfg, vars.builder(&Device::Cpu)).unwrap();
    let mut opt = AdamW::new(vars.select(trainable), hyper).unwrap();
    // As train_staria: pretrained weights and gates at their own LR multipliers.
    opt.set_lr_scale(
        |n| !(n.starts_with("xattn.") || n.starts_with("section_emb.")),
        0.5,
    );
    opt.set_lr_scale(|n| n.starts_with("xattn.") && n.ends_with("_gate"), 3.0);
    (model, opt)
}

/// Checks the fast path against candle with `trainable` training (`inputs`: see
/// [`tiny_config`]); returns the names checked.
fn check_against_candle(trainable: &dyn Fn(&str) -> bool, inputs: bool) -> Vec<String> {
    let cfg = tiny_config(inputs);
    let (b, t) = (3, 24);
    let batch = batch(&cfg, b, t);
    let hyper = AdamWParams {
        lr: 1e-3,
        weight_decay: 0.1,
        ..AdamWParams::default()
    };

    // candle
    let vars_c = seeded_vars(&cfg);
    let (model_c, mut opt_c) = staged(&cfg, &vars_c, trainable, hyper);
    let logits = model_c
        .forward(
            &batch.ids,
            batch.win.as_ref(),
            batch.grid.as_ref(),
            batch.snippets.as_ref(),
        )
        .unwrap();
    let (mean, sum, count) = masked_nll(&logits, &batch.targets, &batch.mask).unwrap();
    let grads = mean.backward().unwrap();

    // fast
    let vars_f = seeded_vars(&cfg);
    let (model_f, opt_f) = staged(&cfg, &vars_f, trainable, hyper);
    let mut fast = StariaTrainer::new(&cfg, &vars_f, &opt_f, tiny_grid_rows(&cfg)).unwrap();
    let (fsum, fcount) = fast.loss_and_grads(&model_f, &batch).unwrap();
    assert_eq!(fcount, count);
    let (want, got) = (sum / count, fsum / fcount);
    assert!(
        ((got - want) / want).abs() < 1e-5,
        "loss: fast {got} vs candle {want}"
    );

    let mut fast_grads: HashMap<String, Vec<f32>> = HashMap::new();
    for (n, g) in fast.decoder().grads.named() {
        fast_grads.insert(n, g.to_vec());
    }
    for (j, g) in fast.site_grads.iter().enumerate() {
        for (n, g) in g.named(&cfg, j) {
            fast_grads.insert(n, g.to_vec());
        }
    }
    for (n, g) in fast.candle_grads() {
        fast_grads.insert(n.to_string(), g.to_vec());
    }
    let vars_by_name: HashMap<String, Var> = vars_c.named().into_iter().collect();
    let checked: Vec<String> = opt_c.var_names().map(str::to_string).collect();
    for name in &checked {
        let want = values(
            grads
                .get(vars_by_name[name].as_tensor())
                .unwrap_or_else(|| panic!("candle has no gradient for {name}")),
        );
        let got = &fast_grads[name];
        let r = rel_diff(got, &want);
        assert!(
            r < 1e-4,
            "{name}: gradient differs by {r} (relative to max): fast {:?}.. candle {:?}..",
            &got[..got.len().min(3)],
            &want[..want.len().min(3)]
        );
    }

    // One step each (clipping active): the same weights, up to Adam's sign for gradients within
    // rounding of zero (its first step is g / (|g| + eps), about +-lr whatever g's size).
    opt_c.step(&grads, 0.5).unwrap();
    fast.apply_grads(&hyper, 0.5).unwrap();
    let mut opt_back = AdamW::new(vars_f.select(trainable), hyper).unwrap();
    fast.write_back(&vars_f, &mut opt_back).unwrap();
    let after_f: HashMap<String, Var> = vars_f.named().into_iter().collect();
    for (name, var) in &vars_by_name {
        let (want, got) = (values(var.as_tensor()), values(after_f[name].as_tensor()));
        let g = fast_grads.get(name).filter(|_| checked.contains(name));
        let g_max = g.map_or(0.0, |g| g.iter().fold(0f32, |m, x| m.max(x.abs())));
        let diff = want
            .iter()
            .zip(&got)
            .enumerate()
            .filter(|(i, _)| g.is_none_or(|g| g[*i].abs() > 1e-3 * g_max))
            .map(|(_, (x, y))| (x - y).abs())
            .fold(0f32, f32::max);
        assert!(
            diff < 0.1 * hyper.lr as f32,
            "{name}: weights after one step differ by {diff}"
        );
    }
    assert_eq!(opt_back.step_count(), 1);
    checked
}

fn is_new(n: &str) -> bool {
    n.starts_with("xattn.") || n.starts_with("section_emb.")
}

#[test]
fn stage_a_sites_gates_and_section_embedding_match_candle() {
    let checked = check_against_candle(&is_new, false);
    for name in ["xattn.0.attn_gate", "xattn.1.ff_gate", "section_emb.weight"] {
        assert!(checked.iter().any(|n| n == name), "{name} not checked");
    }
    assert!(!checked.iter().any(|n| n.starts_with("layers.")));
}

#[test]
fn stage_b_top_block_and_head_match_candle() {
    let checked = check_against_candle(
        &|n: &str| {
            is_new(n) || n.starts_with("layers.1.") || n == "norm.weight" || n == "lm_head.weight"
        },
        false,
    );
    assert!(checked.iter().any(|n| n.starts_with("layers.1.")));
    assert!(!checked.iter().any(|n| n.starts_with("layers.0.")));
}

#[test]
fn stage_c_everything_including_the_encoder_matches_candle() {
    let checked = check_against_candle(&|_: &str| true, false);
    assert!(checked.iter().any(|n| n.starts_with("encoder.")));
    assert!(checked.iter().any(|n| n == "tok_emb.weight"));
}

#[test]
fn stage_c_with_the_window_input_and_the_grid_head_matches_candle() {
    let checked = check_against_candle(&|_: &str| true, true);
    assert!(checked.iter().any(|n| n == "win_emb.weight"));
    assert!(checked.iter().any(|n| n == "grid_head.weight"));
}
