//! Token shards: what `staria-train prepare` writes and every training stage reads.
//!
//! A shard folder holds
//! - `index.json`: format version, tokenizer hash, token width, the split settings, one entry per
//!   split (`train`, `validation`, `synthetic`, and `two_voice` when the tokenizer has an
//!   accompaniment voice: see `prepare`) listing its pieces with their metadata, and the
//!   files that were skipped with the reason;
//! - `tokenizer.json`: the tokenizer the tokens were made with;
//! - `<split>.tokens`: the split's tokens back to back, little-endian `u16` (or `u32` when the
//!   vocabulary has more than 65,536 ids; `index.json` says which).
//!
//! Per piece the tokens are the whole piece as `Tokenizer::encode_piece` makes it (`<S>`, section
//! tags before each section occurrence, `<D>`, `<E>`) followed by one prompt snippet per section
//! label (`Tokenizer::extract_snippet`, times relative to the snippet); the index gives each one's
//! offset and length. Training builds either prompt layout from these with `build_prompt`, after
//! augmenting the piece and its snippets alike.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};
use staria_models::SectionLabel;
use staria_models::tokenizer::{Token, Tokenizer};

use crate::error::{Result, TrainError, fsx};

pub const FORMAT_VERSION: u32 = 1;
pub const TRAIN: &str = "train";
pub const VALIDATION: &str = "validation";
pub const SYNTHETIC: &str = "synthetic";
/// Train pieces re-voiced as melody plus accompaniment (`prepare::two_voice_copy`).
pub const TWO_VOICE: &str = "two_voice";

/// See [`Shards::snippet_velocity`].
pub const PROMPT_VELOCITY_SHARE: f64 = 0.9;

/// A run of tokens inside a split's token file.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Span {
    pub offset: u64,
    pub len: u32,
}

/// Where a piece's section labels came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum SectionOrigin {
    /// Marker meta events in the file.
    Markers,
    /// `music::segment_by_repetition` (the file had no usable markers).
    Repetition,
    /// Assembled by `synth` from labelled sections: the labels are exact.
    Synthetic,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SectionMeta {
    pub label: SectionLabel,
    pub start_ms: f64,
    pub end_ms: f64,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SnippetMeta {
    pub label: SectionLabel,
    pub span: Span,
}

/// One piece's metadata.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PieceMeta {
    /// Relative path of the MIDI file (`synthetic/NNNNNN` for synthetic pieces).
    pub id: String,
    /// Collection: the manifest's `source`, else the first folder of the path.
    pub source: String,
    /// Style token name, when the tokenizer has one for this source.
    pub style: Option<String>,
    /// Section letters in order ("AABB").
    pub form: String,
    pub origin: SectionOrigin,
    pub duration_ms: f64,
    pub notes: usize,
    /// The quarter note in ms when the piece keeps one tempo (the beat grid of
    /// `staria_models::grid`, a beat at time 0); `None` with tempo changes or from shards
    /// written before it.
    #[serde(default)]
    pub quarter_ms: Option<f64>,
    pub sections: Vec<SectionMeta>,
    pub piece: Span,
    pub snippets: Vec<SnippetMeta>,
}

/// What `prepare` could not use.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Skipped {
    pub file: String,
    pub reason: String,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SplitIndex {
    pub name: String,
    pub file: String,
    pub tokens: u64,
    pub pieces: Vec<PieceMeta>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ShardIndex {
    pub version: u32,
    pub tokenizer_hash: String,
    /// Bytes per token in the token files: 2 or 4.
    pub token_bytes: u8,
    pub source_dir: String,
    pub val_fraction: f64,
    pub seed: u64,
    pub splits: Vec<SplitIndex>,
    pub skipped: Vec<Skipped>,
}

/// Builds a shard folder piece by piece.
pub struct ShardWriter {
    dir: PathBuf,
    token_bytes: u8,
    tokenizer_json: String,
    tokenizer_hash: String,
    splits: BTreeMap<String, (Vec<u32>, Vec<PieceMeta>)>,
}

/// Metadata of a piece being added (spans are filled in by the writer).
pub struct NewPiece {
    pub id: String,
    pub source: String,
    pub style: Option<String>,
    pub origin: SectionOrigin,
    pub duration_ms: f64,
    pub notes: usize,
    pub quarter_ms: Option<f64>,
    pub sections: Vec<SectionMeta>,
}

impl ShardWriter {
    pub fn new(dir: &Path, tokenizer: &Tokenizer) -> Result<Self> {
        fsx::create_dir_all(dir)?;
        Ok(Self {
            dir: dir.to_path_buf(),
            token_bytes: if tokenizer.vocab_size() <= 1 << 16 {
                2
            } else {
                4
            },
            tokenizer_json: tokenizer.to_json(),
            tokenizer_hash: tokenizer.hash(),
            splits: BTreeMap::new(),
        })
    }

    pub fn add(
        &mut self,
        split: &str,
        piece: NewPiece,
        tokens: &[u32],
        snippets: &[(SectionLabel, Vec<u32>)],
    ) {
        let (buf, metas) = self.splits.entry(split.to_string()).or_default();
        let mut push = |toks: &[u32]| {
            let span = Span {
                offset: buf.len() as u64,
                len: toks.len() as u32,
            };
            buf.extend_from_slice(toks);
            span
        };
        let piece_span = push(tokens);
        let snippet_metas = snippets
            .iter()
            .map(|(label, toks)| SnippetMeta {
                label: *label,
                span: push(toks),
            })
            .collect();
        let form = piece.sections.iter().map(|s| s.label.letter()).collect();
        metas.push(PieceMeta {
            id: piece.id,
            source: piece.source,
            style: piece.style,
            form,
            origin: piece.origin,
            duration_ms: piece.duration_ms,
            quarter_ms: piece.quarter_ms,
            notes: piece.notes,
            sections: piece.sections,
            piece: piece_span,
            snippets: snippet_metas,
        });
    }

    pub fn piece_count(&self, split: &str) -> usize {
        self.splits.get(split).map_or(0, |s| s.1.len())
    }

    /// Writes the token files, `tokenizer.json` and, last, `index.json` (so a folder with an
    /// index is always complete). Splits are always present, possibly empty.
    pub fn finish(
        mut self,
        source_dir: &Path,
        val_fraction: f64,
        seed: u64,
        skipped: Vec<Skipped>,
    ) -> Result<ShardIndex> {
        for name in [TRAIN, VALIDATION, SYNTHETIC] {
            self.splits.entry(name.to_string()).or_default();
        }
        let mut splits = Vec::new();
        for (name, (tokens, pieces)) in self.splits {
            let file = format!("{name}.tokens");
            let mut bytes = Vec::with_capacity(tokens.len() * self.token_bytes as usize);
            for &t in &tokens {
                if self.token_bytes == 2 {
                    bytes.extend_from_slice(&(t as u16).to_le_bytes());
                } else {
                    bytes.extend_from_slice(&t.to_le_bytes());
                }
            }
            fsx::write_atomic(&self.dir.join(&file), bytes)?;
            splits.push(SplitIndex {
                name,
                file,
                tokens: tokens.len() as u64,
                pieces,
            });
        }
        fsx::write_atomic(&self.dir.join("tokenizer.json"), &self.tokenizer_json)?;
        let index = ShardIndex {
            version: FORMAT_VERSION,
            tokenizer_hash: self.tokenizer_hash,
            token_bytes: self.token_bytes,
            source_dir: source_dir.display().to_string(),
            val_fraction,
            seed,
            splits,
            skipped,
        };
        let json = serde_json::to_string(&index).expect("index is plain data");
        fsx::write_atomic(&self.dir.join("index.json"), json)?;
        Ok(index)
    }
}

/// A shard folder loaded into memory.
pub struct Shards {
    pub dir: PathBuf,
    pub index: ShardIndex,
    pub tokenizer: Tokenizer,
    tokens: BTreeMap<String, Vec<u32>>,
}

impl Shards {
    pub fn open(dir: &Path) -> Result<Self> {
        let index_path = dir.join("index.json");
        if !index_path.exists() {
            return Err(TrainError::file(
                dir,
                "no index.json here; make shards with `staria-train prepare`",
            ));
        }
        let index: ShardIndex = serde_json::from_str(&fsx::read_to_string(&index_path)?)
            .map_err(|e| TrainError::file(&index_path, e.to_string()))?;
        if index.version != FORMAT_VERSION {
            return Err(TrainError::file(
                &index_path,
                format!(
                    "shard format version {} (this trainer reads {FORMAT_VERSION}); re-run prepare",
                    index.version
                ),
            ));
        }
        let tok_path = dir.join("tokenizer.json");
        let tokenizer = Tokenizer::from_json(&fsx::read_to_string(&tok_path)?)
            .map_err(|e| TrainError::file(&tok_path, e.to_string()))?;
        if tokenizer.hash() != index.tokenizer_hash {
            return Err(TrainError::file(
                &tok_path,
                "tokenizer does not match the hash in index.json",
            ));
        }
        let mut tokens = BTreeMap::new();
        for split in &index.splits {
            let path = dir.join(&split.file);
            let bytes = fsx::read(&path)?;
            let width = index.token_bytes as usize;
            if (width != 2 && width != 4) || bytes.len() as u64 != split.tokens * width as u64 {
                return Err(TrainError::file(
                    &path,
                    format!(
                        "{} bytes, expected {} tokens of {width} bytes",
                        bytes.len(),
                        split.tokens
                    ),
                ));
            }
            let toks: Vec<u32> = if width == 2 {
                bytes
                    .chunks_exact(2)
                    .map(|c| u32::from(u16::from_le_bytes([c[0], c[1]])))
                    .collect()
            } else {
                bytes
                    .chunks_exact(4)
                    .map(|c| u32::from_le_bytes([c[0], c[1], c[2], c[3]]))
                    .collect()
            };
            let vocab = tokenizer.vocab_size() as u32;
            if let Some(bad) = toks.iter().find(|&&t| t >= vocab) {
                return Err(TrainError::file(
                    &path,
                    format!("token id {bad} is outside the vocabulary ({vocab})"),
                ));
            }
            for p in &split.pieces {
                for span in std::iter::once(&p.piece).chain(p.snippets.iter().map(|s| &s.span)) {
                    if span.offset + u64::from(span.len) > toks.len() as u64 {
                        return Err(TrainError::file(
                            &index_path,
                            format!("piece {} points past {}", p.id, split.file),
                        ));
                    }
                }
            }
            tokens.insert(split.name.clone(), toks);
        }
        Ok(Self {
            dir: dir.to_path_buf(),
            index,
            tokenizer,
            tokens,
        })
    }

    /// The pieces of a split (empty for a split the index lacks).
    pub fn pieces(&self, split: &str) -> &[PieceMeta] {
        self.index
            .splits
            .iter()
            .find(|s| s.name == split)
            .map_or(&[], |s| &s.pieces)
    }

    pub fn span(&self, split: &str, span: Span) -> &[u32] {
        let toks = &self.tokens[split];
        &toks[span.offset as usize..span.offset as usize + span.len as usize]
    }

    /// The whole-piece tokens (`<S> ... <E>`).
    pub fn piece_tokens(&self, split: &str, piece: &PieceMeta) -> &[u32] {
        self.span(split, piece.piece)
    }

    /// The velocity level shared by at least [`PROMPT_VELOCITY_SHARE`] of the snippet notes a run
    /// trains on (the train, synthetic and two-voice splits), if one is: a run from scratch records it as
    /// its checkpoints' `prompt_velocity`. A corpus written at one velocity (the fiddle tunes and
    /// chorales: 80) teaches the model to follow snippets at that velocity only, so the engine
    /// hands played notes to it there; a corpus with real dynamics records none.
    pub fn snippet_velocity(&self) -> Option<u8> {
        let mut count_by_level = BTreeMap::<u8, u64>::new();
        for split in [TRAIN, SYNTHETIC, TWO_VOICE] {
            for piece in self.pieces(split) {
                for snippet in &piece.snippets {
                    for &id in self.span(split, snippet.span) {
                        if let Some(Token::Note { velocity, .. }) = self.tokenizer.token(id) {
                            *count_by_level.entry(*velocity).or_default() += 1;
                        }
                    }
                }
            }
        }
        let notes: u64 = count_by_level.values().sum();
        let (&level, &at_level) = count_by_level.iter().max_by_key(|&(_, &n)| n)?;
        (at_level as f64 >= PROMPT_VELOCITY_SHARE * notes as f64).then_some(level)
    }

    /// The piece's snippets in A..D order, empty ones left out.
    pub fn snippets(&self, split: &str, piece: &PieceMeta) -> Vec<(SectionLabel, Vec<u32>)> {
        piece
            .snippets
            .iter()
            .filter(|s| s.span.len > 0)
            .map(|s| (s.label, self.span(split, s.span).to_vec()))
            .collect()
    }
}
