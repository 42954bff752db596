//! The two-voice layout (issue 11's accompaniment): `prepare` with a tokenizer that has an
//! accompaniment voice adds a re-voiced copy of every piece with several voices (melody as the
//! performer's instrument, bass as the accompaniment's, inner voices left out), and
//! `train-decoder --init` grows a one-instrument checkpoint's vocabulary into that tokenizer.

mod common;

use std::path::Path;

use candle_core::{Device, Tensor};
use staria_models::Song;
use staria_models::midi::write_midi;
use staria_models::tokenizer::{Token, Tokenizer, TokenizerConfig};
use staria_trainer::models::{self, InitVocabulary};
use staria_trainer::prepare::{self, PrepareOptions};
use staria_trainer::shards::{Shards, TRAIN, TWO_VOICE, VALIDATION};
use staria_trainer::train::{self, Backend, RunOptions};

const SOPRANO_ROOT: u8 = 67;
/// The fixture's phrases span this many semitones above their root (an octave, and section B
/// starts a tone higher).
const PHRASE_SPAN: u8 = 14;
/// Inner voice and bass below the soprano, in pitch ranges that overlap neither it nor each
/// other: a note of the copy is then the melody's or the bass's by its pitch alone.
const INNER_BELOW: u8 = 15;
const BASS_BELOW: u8 = 30;
/// Below the bass.
const TIMPANI: [u8; 2] = [28, 33];

fn two_voice_tokenizer() -> Tokenizer {
    Tokenizer::new(TokenizerConfig {
        instruments: vec!["piano".into(), "bass".into()],
        ..TokenizerConfig::default()
    })
    .unwrap()
}

/// A three-voice chorale: the fixture melody on channel 0, an inner voice on channel 1, a bass
/// on channel 2 (all program 0, as the corpus's chorales are), and timpani below them all on
/// channel 4 (two pitches: no voice to keep).
fn chorale(seed: u64) -> Song {
    let mut song = common::song("AAB", seed, SOPRANO_ROOT, true);
    let melody = song.notes.clone();
    for (channel, below) in [(1u8, INNER_BELOW), (2, BASS_BELOW)] {
        song.notes
            .extend(melody.iter().map(|n| staria_models::Note {
                pitch: n.pitch - below,
                channel,
                ..*n
            }));
    }
    let timpani = melody.iter().enumerate().map(|(i, n)| staria_models::Note {
        pitch: TIMPANI[i % 2],
        channel: 4,
        ..*n
    });
    song.notes.extend(timpani);
    song.notes.sort_by_key(|n| (n.start_tick, n.pitch));
    song
}

fn write_corpus(dir: &Path) {
    let put = |rel: &str, song: &Song| {
        let path = dir.join(rel);
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        std::fs::write(&path, write_midi(song).unwrap()).unwrap();
    };
    for i in 0..6u64 {
        put(
            &format!("bach/bwv{}_{}.mid", 20 + i, i + 1),
            &chorale(500 + i),
        );
        put(
            &format!("ryans/reel_{i}.mid"),
            &common::song("AABB", 600 + i, 62, true),
        );
    }
}

fn prepare_with(corpus: &Path, out: &Path, tok: &Tokenizer) -> Shards {
    let opts = PrepareOptions {
        val_fraction: 0.3,
        // Two of the six chorales in validation (the split hashes path and seed).
        seed: 0,
        synthetic: 0,
        verbose: false,
    };
    prepare::prepare(corpus, out, tok, &opts).unwrap();
    Shards::open(out).unwrap()
}

#[test]
fn prepare_adds_a_two_voice_copy_of_each_piece_with_voices_in_its_own_split() {
    let tmp = tempfile::tempdir().unwrap();
    let corpus = tmp.path().join("corpus");
    write_corpus(&corpus);
    let tok = two_voice_tokenizer();
    let shards = prepare_with(&corpus, &tmp.path().join("shards"), &tok);

    let chorales = |split: &str| -> Vec<String> {
        let mut ids: Vec<String> = shards
            .pieces(split)
            .iter()
            .map(|p| p.id.clone())
            .filter(|id| id.starts_with("bach/") && !id.ends_with("#two-voice"))
            .collect();
        ids.sort();
        ids
    };
    let copies = |split: &str| -> Vec<String> {
        let mut ids: Vec<String> = shards
            .pieces(split)
            .iter()
            .filter_map(|p| p.id.strip_suffix("#two-voice").map(str::to_string))
            .collect();
        ids.sort();
        ids
    };
    // One copy per chorale, in its own piece's split; none of the one-voice reels.
    assert!(!chorales(TRAIN).is_empty() && !chorales(VALIDATION).is_empty());
    assert_eq!(copies(TWO_VOICE), chorales(TRAIN));
    assert_eq!(copies(VALIDATION), chorales(VALIDATION));
    assert!(copies(TRAIN).is_empty());

    let piano = tok.performer_instrument();
    let bass = tok.accompaniment_instrument().unwrap();
    for piece in shards.pieces(TWO_VOICE) {
        let (mut melody, mut accompaniment) = (0, 0);
        for &id in shards.piece_tokens(TWO_VOICE, piece) {
            if let Some(Token::Note {
                instrument, pitch, ..
            }) = tok.token(id)
            {
                let i = tok
                    .config()
                    .instruments
                    .iter()
                    .position(|x| x == instrument);
                if i == Some(usize::from(piano)) {
                    assert!(*pitch >= SOPRANO_ROOT, "{} melody {pitch}", piece.id);
                    melody += 1;
                } else {
                    assert_eq!(i, Some(usize::from(bass)), "{}", piece.id);
                    // The bass voice's range: neither an inner voice nor the timpani.
                    assert!(
                        (SOPRANO_ROOT - BASS_BELOW..=SOPRANO_ROOT + PHRASE_SPAN - BASS_BELOW)
                            .contains(pitch),
                        "{} bass {pitch}",
                        piece.id
                    );
                    accompaniment += 1;
                }
            }
        }
        assert!(
            melody >= 16 && accompaniment >= 16,
            "{melody} {accompaniment}"
        );
    }

    // A one-instrument tokenizer has no accompaniment voice: no copies.
    let one = Tokenizer::new(TokenizerConfig::default()).unwrap();
    let plain = prepare_with(&corpus, &tmp.path().join("plain"), &one);
    assert!(plain.pieces(TWO_VOICE).is_empty());
    assert!(
        plain
            .pieces(VALIDATION)
            .iter()
            .all(|p| !p.id.ends_with("#two-voice"))
    );
}

#[test]
fn init_vocabulary_maps_new_instrument_rows_to_the_first_instruments_notes() {
    let tmp = tempfile::tempdir().unwrap();
    let one = Tokenizer::new(TokenizerConfig::default()).unwrap();
    let two = two_voice_tokenizer();
    std::fs::write(tmp.path().join("tokenizer.json"), one.to_json()).unwrap();

    assert_eq!(
        models::init_vocabulary(tmp.path(), &two.hash(), &two).unwrap(),
        InitVocabulary::Same
    );
    let InitVocabulary::Grown(rows) =
        models::init_vocabulary(tmp.path(), &one.hash(), &two).unwrap()
    else {
        panic!("a grown vocabulary");
    };
    assert_eq!(rows.len(), two.vocab_size());
    for (new_id, &old_id) in rows.iter().enumerate() {
        let new = two.token(new_id as u32).unwrap().to_string();
        let old = one.token(old_id).unwrap().to_string();
        match new.strip_prefix("bass:") {
            Some(rest) => assert_eq!(old, format!("piano:{rest}")),
            None => assert_eq!(old, new),
        }
    }
    // The tensors follow the rows; others are untouched.
    let width = 3;
    let table: Vec<f32> = (0..one.vocab_size() * width).map(|x| x as f32).collect();
    let table = Tensor::from_vec(table, (one.vocab_size(), width), &Device::Cpu).unwrap();
    let mut tensors = std::collections::HashMap::from([
        ("tok_emb.weight".to_string(), table.clone()),
        ("lm_head.weight".to_string(), table.clone()),
        ("norm.weight".to_string(), table.clone()),
    ]);
    models::grow_vocabulary(&mut tensors, &rows).unwrap();
    let bass_note = two.note_id(1, 40, 80).unwrap();
    let piano_note = one.note_id(0, 40, 80).unwrap();
    for name in models::VOCAB_TENSORS {
        let grown = &tensors[name];
        assert_eq!(grown.dims(), &[two.vocab_size(), width]);
        assert_eq!(
            grown
                .get(bass_note as usize)
                .unwrap()
                .to_vec1::<f32>()
                .unwrap(),
            table
                .get(piano_note as usize)
                .unwrap()
                .to_vec1::<f32>()
                .unwrap()
        );
    }
    assert_eq!(tensors["norm.weight"].dims(), table.dims());

    // A tokenizer that differs otherwise is refused, naming the reason.
    let other = Tokenizer::new(TokenizerConfig {
        instruments: vec!["piano".into(), "bass".into()],
        velocity_step: 20,
        ..TokenizerConfig::default()
    })
    .unwrap();
    let e = models::init_vocabulary(tmp.path(), &one.hash(), &other).unwrap_err();
    assert!(e.to_string().contains("tokenizer hashes differ"), "{e}");
}

#[test]
fn fine_tuning_a_one_instrument_decoder_into_the_two_voice_layout_starts_from_its_weights() {
    let tmp = tempfile::tempdir().unwrap();
    let corpus = tmp.path().join("corpus");
    write_corpus(&corpus);
    let one = prepare_with(
        &corpus,
        &tmp.path().join("one"),
        &Tokenizer::new(TokenizerConfig::default()).unwrap(),
    );
    let two = prepare_with(&corpus, &tmp.path().join("two"), &two_voice_tokenizer());
    let exp = common::tiny_config();
    let opts = |out: &Path, max_steps| RunOptions {
        out: out.to_path_buf(),
        device: Device::Cpu,
        resume: false,
        progress: false,
        max_steps,
        backend: Backend::Auto,
    };
    let base = tmp.path().join("base");
    train::train_decoder(&exp, &one, &opts(&base, None)).unwrap();

    let grown = tmp.path().join("grown");
    train::train_decoder_from(&exp, &two, &opts(&grown, Some(1)), Some(&base)).unwrap();
    let fresh = tmp.path().join("fresh");
    train::train_decoder(&exp, &two, &opts(&fresh, Some(1))).unwrap();
    assert!(
        common::first_train_loss(&grown) < common::first_train_loss(&fresh) * 0.9,
        "the grown run did not start from the trained weights: {} vs {}",
        common::first_train_loss(&grown),
        common::first_train_loss(&fresh)
    );
    let (cfg, tok, _) = models::load_model_tensors(&grown, &Device::Cpu).unwrap();
    assert_eq!(tok.hash(), two.tokenizer.hash());
    assert_eq!(cfg.model.decoder().vocab_size, tok.vocab_size());
}
