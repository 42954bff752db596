//! The fast path against candle on a tiny decoder: same loss, same gradients, same AdamW step.

use std::collections::HashMap;

use candle_core::{Device, Tensor};
use staria_models::grid::{GridInput, GridRows};
use staria_models::params::SeededVars;
use staria_models::{Decoder, DecoderConfig};

use super::FastTrainer;
use crate::batch::masked_nll;
use crate::optim::{AdamW, AdamWParams};

fn tiny_config() -> DecoderConfig {
    let mut cfg = DecoderConfig::tiny(37);
    cfg.max_seq_len = 160;
    cfg
}

/// The same with the window-position input (5 buckets).
fn tiny_window_config() -> DecoderConfig {
    let mut cfg = tiny_config();
    cfg.window_bins = 5;
    cfg
}

/// The same with a beat-grid head (6 buckets).
fn tiny_grid_config() -> DecoderConfig {
    let mut cfg = tiny_window_config();
    cfg.grid_bins = 6;
    cfg
}

/// Grid geometry for the tiny vocabulary: ids 10..30 play the onset tokens.
fn tiny_grid_rows(cfg: &DecoderConfig) -> Option<GridRows> {
    (cfg.grid_bins > 0).then_some(GridRows {
        bins: cfg.grid_bins,
        first_onset: 10,
        onsets: 20,
        step_ms: 10.0,
    })
}

/// Grid rows for a `[b, t]` batch: empty without a head, else every bucket and "no grid"
/// (`grid_bins`) in a pseudo-random pattern.
fn grid(cfg: &DecoderConfig, b: usize, t: usize) -> Vec<u32> {
    let Some(g) = tiny_grid_rows(cfg) else {
        return Vec::new();
    };
    (0..b * t * g.onsets)
        .map(|i| ((i * 7 + i / 13) % (g.bins + 1)) as u32)
        .collect()
}

/// A seeded decoder whose norm gains are not all 1 (so their use is checked too).
fn seeded_vars(cfg: &DecoderConfig) -> SeededVars {
    let vars = SeededVars::new(11);
    let mut gains = HashMap::new();
    let mut names = vec!["norm.weight".to_string()];
    for i in 0..cfg.n_layers {
        names.push(format!("layers.{i}.attn_norm.weight"));
        names.push(format!("layers.{i}.ff_norm.weight"));
    }
    for (k, n) in names.into_iter().enumerate() {
        let g: Vec<f32> = (0..cfg.dim)
            .map(|j| 1.0 + 0.3 * ((k * 31 + j) as f32 * 0.7).sin())
            .collect();
        gains.insert(n, Tensor::from_vec(g, cfg.dim, &Device::Cpu).unwrap());
    }
    // A window table that is not zero (as it is at creation), so its use is checked too.
    if cfg.window_bins > 0 {
        let n = cfg.window_bins * cfg.dim;
        let w: Vec<f32> = (0..n).map(|j| 0.05 * (j as f32 * 1.3).sin()).collect();
        let t = Tensor::from_vec(w, (cfg.window_bins, cfg.dim), &Device::Cpu).unwrap();
        gains.insert("win_emb.weight".into(), t);
    }
    // Likewise the grid head.
    if cfg.grid_bins > 0 {
        let n = cfg.grid_bins * cfg.dim;
        let w: Vec<f32> = (0..n).map(|j| 0.2 * (j as f32 * 0.9).cos()).collect();
        let t = Tensor::from_vec(w, (cfg.grid_bins, cfg.dim), &Device::Cpu).unwrap();
        gains.insert("grid_head.weight".into(), t);
    }
    vars.load(&gains).unwrap();
    vars
}

/// Window bins for a `[b, t]` batch: empty without the input, else rising within runs.
fn window(cfg: &DecoderConfig, b: usize, t: usize) -> Vec<u32> {
    if cfg.window_bins == 0 {
        return Vec::new();
    }
    (0..b * t)
        .map(|i| ((i % t) / 4 % cfg.window_bins) as u32)
        .collect()
}

/// Pseudo-random ids, targets and a mask with zeros (a given prefix per row, a few holes).
fn batch(cfg: &DecoderConfig, b: usize, t: usize) -> (Vec<u32>, Vec<u32>, Vec<f32>) {
    let mut x = 12345u64;
    let mut next = || {
        x = x
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        ((x >> 33) % cfg.vocab_size as u64) as u32
    };
    let ids: Vec<u32> = (0..b * t).map(|_| next()).collect();
    let targets: Vec<u32> = (0..b * t).map(|_| next()).collect();
    let mask = (0..b * t)
        .map(|i| {
            let (row, pos) = (i / t, i % t);
            if pos < 3 + row || pos % 7 == 5 {
                0.0
            } else {
                1.0
            }
        })
        .collect();
    (ids, targets, mask)
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

/// `skip_near_zero`: leave entries whose gradient is within rounding of zero out of the check of
/// the step from each path's own gradients (see there).
fn check_against_candle(cfg: DecoderConfig, b: usize, t: usize, skip_near_zero: bool) {
    let dev = Device::Cpu;
    let vars = seeded_vars(&cfg);
    let model = Decoder::new(&cfg, vars.builder(&dev)).unwrap();
    let (ids, targets, mask) = batch(&cfg, b, t);
    let win = window(&cfg, b, t);
    let win_t = (!win.is_empty()).then(|| Tensor::from_slice(&win, (b, t), &dev).unwrap());
    let grid_rows = tiny_grid_rows(&cfg);
    let grid = grid(&cfg, b, t);
    let grid_t = grid_rows.map(|g| GridInput {
        rows: Tensor::from_slice(&grid, (b, t, g.onsets), &dev).unwrap(),
        first_onset: g.first_onset as usize,
    });
    let logits = model
        .forward(
            &Tensor::from_slice(&ids, (b, t), &dev).unwrap(),
            win_t.as_ref(),
            grid_t.as_ref(),
        )
        .unwrap();
    let (mean, sum, count) = masked_nll(
        &logits,
        &Tensor::from_slice(&targets, (b, t), &dev).unwrap(),
        &Tensor::from_slice(&mask, (b, t), &dev).unwrap(),
    )
    .unwrap();
    let grads = mean.backward().unwrap();

    let hyper = AdamWParams {
        lr: 1e-3,
        weight_decay: 0.1,
        ..AdamWParams::default()
    };
    let mut opt = AdamW::new(vars.named(), hyper).unwrap();
    let mut fast = FastTrainer::from_vars(&cfg, &vars, &opt, grid_rows).unwrap();
    let (fsum, fcount) = fast
        .loss_and_grads(&ids, &win, &grid, &targets, &mask, b, t)
        .unwrap();
    assert_eq!(fcount, count);
    let (want, got) = (sum / count, fsum / fcount);
    assert!(
        ((got - want) / want).abs() < 1e-5,
        "loss: fast {got} vs candle {want}"
    );

    let named: HashMap<String, candle_core::Var> = vars.named().into_iter().collect();
    for (name, g) in fast.grads.named() {
        let want = grads
            .get(named[&name].as_tensor())
            .unwrap_or_else(|| panic!("candle has no gradient for {name}"))
            .flatten_all()
            .unwrap()
            .to_vec1::<f32>()
            .unwrap();
        let r = rel_diff(g, &want);
        assert!(
            r < 1e-4,
            "{name}: gradient differs by {r} (relative to max)"
        );
    }

    // One AdamW step (clipping active) from the same gradients gives the same weights: the
    // flat update is candle's, operation for operation.
    let mut from_candle = Vec::new();
    for (name, g) in fast.grads.named_mut() {
        let want = grads.get(named[&name].as_tensor()).unwrap();
        g.copy_from_slice(&want.flatten_all().unwrap().to_vec1::<f32>().unwrap());
        from_candle.push(name);
    }
    let mut end_to_end = FastTrainer::from_vars(&cfg, &vars, &opt, grid_rows).unwrap();
    end_to_end
        .loss_and_grads(&ids, &win, &grid, &targets, &mask, b, t)
        .unwrap();
    opt.step(&grads, 0.5).unwrap();
    fast.apply_grads(&hyper, 0.5).unwrap();
    end_to_end.apply_grads(&hyper, 0.5).unwrap();
    assert_eq!(fast.step_count(), 1);
    for ((name, w), (_, w_own)) in fast
        .params
        .named()
        .into_iter()
        .zip(end_to_end.params.named())
    {
        let want = named[&name]
            .as_tensor()
            .flatten_all()
            .unwrap()
            .to_vec1::<f32>()
            .unwrap();
        // Adam's first step is g / (|g| + eps): an entry whose gradient is within rounding of
        // zero moves by about +-lr whichever sign rounding gave it. The window case has such an
        // entry (1.1e-4 apart on layers.0.attn.qkv.weight), so it leaves them out.
        let g = grads
            .get(named[&name].as_tensor())
            .unwrap()
            .flatten_all()
            .unwrap()
            .to_vec1::<f32>()
            .unwrap();
        let g_max = g.iter().fold(0f32, |m, x| m.max(x.abs()));
        let max_diff = |a: &[f32]| {
            a.iter()
                .zip(&want)
                .zip(&g)
                .filter(|(_, g)| !skip_near_zero || g.abs() > 1e-3 * g_max)
                .map(|((x, y), _)| (x - y).abs())
                .fold(0f32, f32::max)
        };
        // A few ulps: the global norm (so the clip factor) is summed in another order.
        let same_grads = w
            .iter()
            .zip(&want)
            .map(|(x, y)| (x - y).abs() / y.abs().max(1e-3))
            .fold(0f32, f32::max);
        assert!(
            same_grads <= 1e-6,
            "{name}: weights after one step from the same gradients differ by {same_grads} (relative)"
        );
        // From its own gradients: a few percent of one step.
        let own = max_diff(w_own);
        assert!(
            own < 0.1 * hyper.lr as f32,
            "{name}: weights after one step differ by {own}"
        );
    }
    // The optimizer state goes back to the candle optimizer intact.
    let flat = opt.to_flat().unwrap();
    fast.write_back(&vars, &mut opt).unwrap();
    assert_eq!(opt.step_count(), 1);
    assert_eq!(opt.to_flat().unwrap().slots.len(), flat.slots.len());
    let back = FastTrainer::from_vars(&cfg, &vars, &opt, grid_rows).unwrap();
    assert_eq!(back.params, fast.params);
}

#[test]
fn fast_loss_gradients_and_adamw_step_match_candle() {
    check_against_candle(tiny_config(), 2, 24, false);
}

#[test]
fn fast_matches_candle_across_attention_blocks() {
    // 150 positions: three query blocks, the last one partial.
    check_against_candle(tiny_config(), 2, 150, false);
}

#[test]
fn fast_matches_candle_with_the_window_input() {
    check_against_candle(tiny_window_config(), 2, 40, true);
}

#[test]
fn fast_matches_candle_with_the_beat_grid_head() {
    check_against_candle(tiny_grid_config(), 2, 40, true);
}

#[test]
fn fast_refuses_grid_rows_that_do_not_fit() {
    let cfg = tiny_grid_config();
    let vars = seeded_vars(&cfg);
    Decoder::new(&cfg, vars.builder(&Device::Cpu)).unwrap();
    let opt = AdamW::new(vars.named(), AdamWParams::default()).unwrap();
    // A grid-head model needs its rows' geometry.
    let err = FastTrainer::from_vars(&cfg, &vars, &opt, None)
        .err()
        .unwrap();
    assert!(err.to_string().contains("grid_bins 6"), "{err}");
    let mut fast = FastTrainer::from_vars(&cfg, &vars, &opt, tiny_grid_rows(&cfg)).unwrap();
    let (ids, targets, mask) = batch(&cfg, 1, 8);
    let win = window(&cfg, 1, 8);
    let err = fast
        .loss(&ids, &win, &[0; 7], &targets, &mask, 1, 8)
        .unwrap_err();
    assert!(err.to_string().contains("beat-grid entries"), "{err}");
    let err = fast
        .loss(&ids, &win, &[7; 160], &targets, &mask, 1, 8)
        .unwrap_err();
    assert!(err.to_string().contains("grid_bins 6"), "{err}");
    // No rows at all is a batch of unknown tempo: the head adds nothing, as in candle.
    let (sum, _) = fast.loss(&ids, &win, &[], &targets, &mask, 1, 8).unwrap();
    let model = Decoder::new(&cfg, vars.builder(&Device::Cpu)).unwrap();
    let dev = Device::Cpu;
    let logits = model
        .forward(
            &Tensor::from_slice(&ids, (1, 8), &dev).unwrap(),
            Some(&Tensor::from_slice(&win, (1, 8), &dev).unwrap()),
            None,
        )
        .unwrap();
    let (_, want, _) = masked_nll(
        &logits,
        &Tensor::from_slice(&targets, (1, 8), &dev).unwrap(),
        &Tensor::from_slice(&mask, (1, 8), &dev).unwrap(),
    )
    .unwrap();
    assert!(((sum - want) / want).abs() < 1e-5, "{sum} vs {want}");
}

#[test]
fn fast_refuses_window_bins_that_do_not_fit() {
    let cfg = tiny_window_config();
    let vars = seeded_vars(&cfg);
    Decoder::new(&cfg, vars.builder(&Device::Cpu)).unwrap();
    let opt = AdamW::new(vars.named(), AdamWParams::default()).unwrap();
    let mut fast = FastTrainer::from_vars(&cfg, &vars, &opt, None).unwrap();
    let (ids, targets, mask) = batch(&cfg, 1, 8);
    let err = fast
        .loss(&ids, &[], &[], &targets, &mask, 1, 8)
        .unwrap_err();
    assert!(err.to_string().contains("window bins"), "{err}");
    let err = fast
        .loss(&ids, &[9; 8], &[], &targets, &mask, 1, 8)
        .unwrap_err();
    assert!(err.to_string().contains("window_bins 5"), "{err}");
}

#[test]
fn fast_steps_reduce_loss_on_a_repeated_sequence() {
    let cfg = tiny_config();
    let vars = seeded_vars(&cfg);
    // Building the candle model creates (and seeds) the variables.
    Decoder::new(&cfg, vars.builder(&Device::Cpu)).unwrap();
    let hyper = AdamWParams {
        lr: 1e-2,
        ..AdamWParams::default()
    };
    let opt = AdamW::new(vars.named(), hyper).unwrap();
    let mut fast = FastTrainer::from_vars(&cfg, &vars, &opt, None).unwrap();
    let (b, t) = (2, 32);
    let seq: Vec<u32> = (0..=t).map(|i| [3u32, 9, 4, 20][i % 4]).collect();
    let ids: Vec<u32> = (0..b).flat_map(|_| seq[..t].to_vec()).collect();
    let targets: Vec<u32> = (0..b).flat_map(|_| seq[1..].to_vec()).collect();
    let mask = vec![1.0; b * t];
    let mut losses = Vec::new();
    for _ in 0..20 {
        let (sum, count) = fast
            .loss_and_grads(&ids, &[], &[], &targets, &mask, b, t)
            .unwrap();
        losses.push(sum / count);
        fast.apply_grads(&hyper, 1.0).unwrap();
    }
    let (first, last) = (losses[0], *losses.last().unwrap());
    assert!(last < first * 0.3, "loss {first} -> {last}");
}
