//! The beat-grid head (`staria_models::grid`): the phase formula, the rows it reads from a token
//! sequence, and that the training forward, the candle cached decoder and the fast decoder agree
//! on it, rewinds included.

use candle_core::{DType, Device, Tensor};
use staria_models::fast::{FastConfig, FastDecoder, WeightFormat};
use staria_models::grid::{BeatGrid, GridInput, GridRows, NO_WINDOW, grid_windows, phase_bin};
use staria_models::tokenizer::StreamDecoder;
use staria_models::{Tokenizer, TokenizerConfig};

mod common;
use common::{assert_cached_decoders_replay, max_diff, token_ids, window_decoder};

fn tok() -> Tokenizer {
    Tokenizer::new(TokenizerConfig::default()).unwrap()
}

/// A prompt with a snippet and a piece over three windows (eighths at 100 bpm: 300 ms).
const SEQ: &str = "<PROMPT_START> <A_SECTION> piano:60:80 onset:0 dur:200 piano:62:80 onset:300 \
    dur:200 <PROMPT_END> <S> <A_SECTION> piano:60:80 onset:0 dur:250 piano:64:80 onset:300 \
    dur:250 piano:67:80 onset:600 dur:250 piano:72:80 onset:4800 dur:250 <T> piano:71:80 \
    onset:100 dur:250 <B_SECTION> piano:69:80 onset:400 dur:250 <T> <T> piano:67:80 \
    onset:4300 dur:250 piano:65:80 onset:4600 dur:250";

#[test]
fn phases_are_read_from_the_beat_with_early_onsets_in_the_last_bucket() {
    let grid = BeatGrid::from_bpm(100.0).unwrap();
    assert_eq!(grid.beat_ms, 600.0);
    // 24 buckets of 25 ms: the beat, the sixteenths, and a little off them.
    assert_eq!(phase_bin(grid, 24, 0.0), 0);
    assert_eq!(phase_bin(grid, 24, 150.0), 6);
    assert_eq!(phase_bin(grid, 24, 600.0 * 7.0 + 450.0), 18);
    assert_eq!(
        phase_bin(grid, 24, 590.0),
        0,
        "10 ms early rounds to the beat"
    );
    assert_eq!(phase_bin(grid, 24, 1210.0), 0);
    assert_eq!(phase_bin(grid, 24, 1220.0), 1);
    // An origin moves the grid; scaling keeps each time's phase.
    let moved = BeatGrid::new(600.0, 150.0).unwrap();
    assert_eq!(phase_bin(moved, 24, 150.0), 0);
    assert_eq!(phase_bin(grid.scaled(1.1), 24, 150.0 * 1.1 * 3.0), 18);
    for bad in [0.0, -1.0, f64::NAN, f64::INFINITY] {
        let err = BeatGrid::from_bpm(bad).unwrap_err();
        assert!(err.to_string().contains("bpm"), "{err}");
    }
}

#[test]
fn grid_windows_give_the_piece_window_starts_and_skip_the_prompt() {
    let t = tok();
    let seq = token_ids(&t, SEQ);
    let w = grid_windows(&t, &mut StreamDecoder::new(), &seq);
    let pos = |s: &str, nth: usize| {
        let id = token_ids(&t, s)[0];
        seq.iter()
            .enumerate()
            .filter(|(_, x)| **x == id)
            .nth(nth)
            .unwrap()
            .0
    };
    assert_eq!(w[pos("onset:300", 0)], NO_WINDOW, "inside the prompt");
    assert_eq!(w[pos("<PROMPT_END>", 0)], 0);
    assert_eq!(w[pos("<S>", 0)], 0);
    assert_eq!(w[pos("piano:72:80", 0)], 0);
    assert_eq!(w[pos("<T>", 0)], 5000);
    assert_eq!(w[pos("piano:71:80", 0)], 5000);
    assert_eq!(w[pos("<T>", 2)], 15_000);
    assert_eq!(*w.last().unwrap(), 15_000);
    // With section windows the onset before a body tag starts the next window.
    let seq = token_ids(
        &t,
        "<S> onset:0 <A_SECTION> piano:60:80 onset:0 dur:250 <T> onset:1200 <B_SECTION> \
         piano:62:80 onset:100 dur:250",
    );
    let t = Tokenizer::new(TokenizerConfig {
        section_windows: true,
        ..TokenizerConfig::default()
    })
    .unwrap();
    let w = grid_windows(&t, &mut StreamDecoder::new(), &seq);
    assert_eq!(w[6..], [5000, 5000, 6200, 6200, 6200, 6200]);

    // Rows: a piece window's onsets take their phase; prompt rows are "no grid".
    let rows = GridRows::new(24, &t).unwrap();
    assert_eq!(rows.onsets, 500);
    let grid = Some(BeatGrid::from_bpm(100.0).unwrap());
    let mut row = vec![0; rows.onsets];
    rows.fill(grid, 5000, &mut row);
    // Window 1 starts at 5000 ms = 8 1/3 beats: onset 100 ms is at 5100 = 8.5 beats.
    assert_eq!(row[10], 12);
    assert_eq!(row[0], 8);
    rows.fill(grid, NO_WINDOW, &mut row);
    assert!(row.iter().all(|&b| b == 24));
    rows.fill(None, 10_000, &mut row);
    assert!(row.iter().all(|&b| b == 24), "no tempo, no grid");
    assert!(GridRows::new(0, &t).is_none());
}

#[test]
fn training_forward_cached_candle_and_fast_decoders_agree_on_the_grid() {
    let t = tok();
    let seq = token_ids(&t, SEQ);
    let (cfg, vm, mut model) = window_decoder(&t, 24);
    let n = seq.len();
    let grid = BeatGrid::from_bpm(100.0).unwrap();
    let rows = GridRows::of(&cfg, &t).unwrap();
    let win: Vec<u32> = {
        let bins = staria_models::window::WindowBins::of(&cfg).unwrap();
        staria_models::window::latest_onsets(&t, &mut StreamDecoder::new(), &seq)
            .into_iter()
            .map(|ms| bins.bin(ms))
            .collect()
    };
    let windows = grid_windows(&t, &mut StreamDecoder::new(), &seq);
    let input = |g: Option<BeatGrid>| GridInput {
        rows: Tensor::from_vec(rows.rows(g, &windows), (1, n, rows.onsets), &Device::Cpu).unwrap(),
        first_onset: rows.first_onset as usize,
    };
    let row = |v: &[u32]| Tensor::from_slice(v, (1, n), &Device::Cpu).unwrap();
    let forward = |g: Option<&GridInput>| {
        model
            .forward_train(&row(&seq), Some(&row(&win)), g, None)
            .unwrap()
            .squeeze(0)
            .unwrap()
    };
    let full = forward(Some(&input(Some(grid))));
    let no_rows = forward(None);
    let no_tempo = forward(Some(&input(None)));
    // The head moves only onset logits, only in the piece, only with a tempo.
    let at = |x: &Tensor, i: usize| x.get(i).unwrap().to_vec1::<f32>().unwrap();
    let onsets = t.onset_ids();
    let (o0, o1) = (onsets.start as usize, onsets.end as usize);
    let last = n - 1;
    assert!(max_diff(&at(&full, last)[o0..o1], &at(&no_rows, last)[o0..o1]) > 1e-3);
    assert_eq!(at(&full, last)[..o0], at(&no_rows, last)[..o0]);
    assert_eq!(at(&full, last)[o1..], at(&no_rows, last)[o1..]);
    assert_eq!(at(&no_tempo, last), at(&no_rows, last));
    assert_eq!(at(&full, 3), at(&no_rows, 3), "a prompt position");

    model.set_tokenizer(&t);
    model.set_grid(Some(grid));
    let mut fast =
        FastDecoder::from_varmap(&FastConfig::from(&cfg), WeightFormat::F32, &vm).unwrap();
    fast.set_tokenizer(&t);
    fast.set_grid(Some(grid));
    // Rewound into the second window and replayed: the same logits.
    assert_cached_decoders_replay(&mut model, &mut fast, &seq, (12, 30), |i| at(&full, i));
    // Without a grid the cached decoders give the no-tempo logits.
    model.set_grid(None);
    fast.set_grid(None);
    model.truncate(n - 1);
    fast.truncate(n - 1);
    let c = model.step(seq[n - 1]).unwrap().to_vec1::<f32>().unwrap();
    let f = fast.step(seq[n - 1]).unwrap().to_vec();
    assert!(max_diff(&c, &at(&no_tempo, last)) < 1e-4);
    assert!(max_diff(&f, &at(&no_tempo, last)) < 1e-4);
}

#[test]
fn bad_grid_rows_are_refused_by_name() {
    let t = tok();
    let seq = token_ids(&t, SEQ);
    let (cfg, _vm, model) = window_decoder(&t, 24);
    let n = seq.len();
    let row = |v: &[u32]| Tensor::from_slice(v, (1, n), &Device::Cpu).unwrap();
    let win = row(&vec![0; n]);
    let rows = GridRows::of(&cfg, &t).unwrap();
    let wrong_len = GridInput {
        rows: Tensor::zeros((1, n - 1, rows.onsets), DType::U32, &Device::Cpu).unwrap(),
        first_onset: rows.first_onset as usize,
    };
    let err = model
        .forward_train(&row(&seq), Some(&win), Some(&wrong_len), None)
        .unwrap_err();
    assert!(err.to_string().contains("grid rows"), "{err}");
    let past_bins = GridInput {
        rows: Tensor::full(25u32, (1, n, rows.onsets), &Device::Cpu).unwrap(),
        first_onset: rows.first_onset as usize,
    };
    let err = model
        .forward_train(&row(&seq), Some(&win), Some(&past_bins), None)
        .unwrap_err();
    assert!(err.to_string().contains("grid rows"), "{err}");
}
