//! The window-position input (`staria_models::window`): what it reads from a token sequence, and
//! that the training forward, the candle cached decoder and the fast decoder agree on it, rewinds
//! included.

use candle_core::{Device, Tensor};
use staria_models::fast::{FastConfig, FastDecoder, WeightFormat};
use staria_models::tokenizer::StreamDecoder;
use staria_models::window::{WindowBins, WindowClock, latest_onsets};
use staria_models::{DecoderConfig, Tokenizer, TokenizerConfig};

mod common;
use common::{assert_cached_decoders_replay, max_diff, token_ids, window_decoder};

fn tok() -> Tokenizer {
    Tokenizer::new(TokenizerConfig::default()).unwrap()
}

/// A prompt with two snippets and a piece over three windows.
const SEQ: &str = "<PROMPT_START> <A_SECTION> piano:60:80 onset:0 dur:200 piano:62:80 onset:1200 \
    dur:200 <B_SECTION> piano:64:80 onset:300 dur:200 <PROMPT_END> <S> <A_SECTION> \
    piano:60:80 onset:0 dur:400 piano:64:80 onset:450 dur:400 piano:67:80 onset:2600 dur:400 \
    piano:72:80 onset:4900 dur:400 <T> piano:71:80 onset:200 dur:400 <B_SECTION> \
    piano:69:80 onset:3100 dur:400 <T> <T> piano:67:80 onset:4300 dur:400 piano:65:80 \
    onset:4990 dur:400";

#[test]
fn latest_onsets_follow_the_window_and_reset_where_time_restarts() {
    let t = tok();
    let seq = token_ids(&t, SEQ);
    let on = latest_onsets(&t, &mut StreamDecoder::new(), &seq);
    assert_eq!(on.len(), seq.len());
    let at = |s: &str, nth: usize| {
        let id = token_ids(&t, s)[0];
        let i = seq
            .iter()
            .enumerate()
            .filter(|(_, x)| **x == id)
            .nth(nth)
            .unwrap()
            .0;
        on[i]
    };
    // In the prompt each section tag restarts the snippet's time line.
    assert_eq!(at("onset:1200", 0), 1200);
    assert_eq!(at("<B_SECTION>", 0), 0);
    assert_eq!(at("onset:300", 0), 300);
    // `<S>` starts the piece at 0; a tag in the piece does not move time.
    assert_eq!(at("<S>", 0), 0);
    assert_eq!(at("onset:4900", 0), 4900);
    assert_eq!(at("<T>", 0), 0);
    assert_eq!(at("onset:200", 0), 200);
    assert_eq!(at("onset:3100", 0), 3100);
    assert_eq!(
        at("<B_SECTION>", 1),
        200,
        "a piece's section tag keeps the window's time"
    );
    // A note token is read before its onset: it still sees the previous onset.
    assert_eq!(at("piano:65:80", 0), 4300);
    assert_eq!(*on.last().unwrap(), 4990);

    let bins = WindowBins {
        count: 50,
        bin_ms: 100,
    };
    assert_eq!(bins.bin(0), 0);
    assert_eq!(bins.bin(4990), 49);
    assert_eq!(bins.bin(99_999), 49, "the last bucket is open-ended");
}

#[test]
fn the_clock_rewinds_with_the_cache() {
    let t = tok();
    let seq = token_ids(&t, SEQ);
    let mut cfg = DecoderConfig::tiny(t.vocab_size());
    cfg.window_bins = 8;
    cfg.window_bin_ms = 700;
    let bins = WindowBins::of(&cfg).unwrap();
    let want: Vec<u32> = latest_onsets(&t, &mut StreamDecoder::new(), &seq)
        .into_iter()
        .map(|ms| bins.bin(ms))
        .collect();
    let mut clock = WindowClock::new(&t, &cfg).unwrap();
    assert_eq!(clock.feed(0, &seq).unwrap(), &want[..]);
    // Back to position 20, then the rest one by one: the same bins.
    for (i, &id) in seq.iter().enumerate().skip(20) {
        assert_eq!(clock.feed(i, &[id]).unwrap(), &want[i..=i], "token {i}");
    }
    // A position past what was fed, or past max_seq_len, is refused.
    let err = clock.feed(seq.len() + 1, &seq[..1]).unwrap_err();
    assert!(err.to_string().contains("window clock"), "{err}");
    let long = vec![seq[0]; cfg.max_seq_len + 1];
    assert!(clock.feed(0, &long).is_err());
    assert!(WindowClock::new(&t, &DecoderConfig::tiny(t.vocab_size())).is_none());
}

/// A tiny decoder with a window input and a non-zero window table.
#[test]
fn training_forward_cached_candle_and_fast_decoders_agree() {
    let t = tok();
    let seq = token_ids(&t, SEQ);
    let (cfg, vm, mut model) = window_decoder(&t, 0);
    let bins = WindowBins::of(&cfg).unwrap();
    let win: Vec<u32> = latest_onsets(&t, &mut StreamDecoder::new(), &seq)
        .into_iter()
        .map(|ms| bins.bin(ms))
        .collect();
    let n = seq.len();
    let row = |v: &[u32]| Tensor::from_slice(v, (1, n), &Device::Cpu).unwrap();
    let full = model
        .forward_train(&row(&seq), Some(&row(&win)), None, None)
        .unwrap()
        .squeeze(0)
        .unwrap();
    // The input matters: all-zero bins give other logits.
    let blind = model
        .forward_train(&row(&seq), Some(&row(&vec![0; n])), None, None)
        .unwrap()
        .squeeze(0)
        .unwrap();
    let last = |x: &Tensor| x.get(n - 1).unwrap().to_vec1::<f32>().unwrap();
    assert!(max_diff(&last(&full), &last(&blind)) > 1e-3);
    // Without the bins the training forward refuses.
    let err = model
        .forward_train(&row(&seq), None, None, None)
        .unwrap_err();
    assert!(err.to_string().contains("window_bins 8"), "{err}");

    // Cached decoding needs the tokenizer; then every step matches the full forward.
    let err = model.extend(&seq[..3]).unwrap_err();
    assert!(err.to_string().contains("window_bins 8"), "{err}");
    model.set_tokenizer(&t);
    let mut fast =
        FastDecoder::from_varmap(&FastConfig::from(&cfg), WeightFormat::F32, &vm).unwrap();
    let err = fast.step(seq[0]).unwrap_err();
    assert!(err.to_string().contains("window_bins 8"), "{err}");
    assert_eq!(fast.position(), 0, "a refused step changes nothing");
    fast.set_tokenizer(&t);

    // Rewound to a point inside the second window and replayed: the same logits.
    let want = |i: usize| full.get(i).unwrap().to_vec1::<f32>().unwrap();
    assert_cached_decoders_replay(&mut model, &mut fast, &seq, (10, 30), want);
}
