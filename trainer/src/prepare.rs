//! `staria-train prepare`: a folder of MIDI files to token shards.
//!
//! - Every `*.mid` / `*.midi` below the folder is read; a file that cannot be read, has no notes
//!   or yields no tokens is skipped and listed (in `index.json` and on stderr), never fatal.
//! - Sections come from the file's markers; a file without markers gets sections from
//!   [`music::segment_by_repetition`].
//! - The train/validation split is by piece: a piece is in validation when
//!   `sha256(seed as 8 LE bytes ++ relative path)` read as a number in [0, 1) is below the
//!   validation fraction. Adding or removing other files never moves a piece.
//! - Style: the manifest's `source` (a `manifest.jsonl` at the folder root, as in the corpus), else
//!   the first folder of the relative path: `bach` gives `chorale` for chorales (`bwvN_M` or
//!   `bwvN.M` names) and `bach` otherwise, `ryans` gives `reel`/`jig`/`hornpipe` when the title
//!   says so and `fiddle_tune` otherwise, `essen` gives `folk_song`; a name that is itself a style
//!   of the tokenizer is used as is. Styles the tokenizer lacks are left out.
//! - Synthetic form pieces (see [`synth`]) are assembled from train pieces only, so validation
//!   stays unseen.
//! - Two-voice copies: when the tokenizer has an accompaniment voice
//!   (`Tokenizer::accompaniment_instrument`), every piece whose notes lie on two or more MIDI
//!   channels (the chorales: one voice per channel) is also written re-voiced by
//!   [`two_voice_copy`]: its highest voice as the performer's instrument, its lowest as the
//!   accompaniment's, the voices between left out. The copy of a train piece goes to the
//!   `two_voice` split (drawn with `data.two_voice_fraction`), that of a validation piece to
//!   validation as `<id>#two-voice`, so a held-out chorale stays held out in both layouts.

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use rand::SeedableRng;
use rand::rngs::StdRng;
use sha2::{Digest, Sha256};
use staria_models::midi::read_midi_file;
use staria_models::tokenizer::Tokenizer;
use staria_models::{SectionLabel, Song};

use crate::error::{Result, TrainError, fsx};
use crate::music;
use crate::shards::{
    NewPiece, SYNTHETIC, SectionMeta, SectionOrigin, ShardIndex, ShardWriter, Skipped, TRAIN,
    TWO_VOICE, VALIDATION,
};
use crate::synth::{self, SourcePiece};

#[derive(Debug, Clone)]
pub struct PrepareOptions {
    pub val_fraction: f64,
    pub seed: u64,
    /// Synthetic form pieces to add (0: none).
    pub synthetic: usize,
    /// Print progress and skipped files to stderr.
    pub verbose: bool,
}

impl Default for PrepareOptions {
    fn default() -> Self {
        Self {
            val_fraction: 0.05,
            seed: 0,
            synthetic: 0,
            verbose: false,
        }
    }
}

/// All MIDI files below `dir`, as sorted relative paths (sorted so the run is deterministic).
pub fn find_midi_files(dir: &Path) -> Result<Vec<PathBuf>> {
    let mut out = Vec::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        let entries = std::fs::read_dir(&d).map_err(|e| TrainError::io(&d, e))?;
        for entry in entries {
            let entry = entry.map_err(|e| TrainError::io(&d, e))?;
            let path = entry.path();
            let ft = entry.file_type().map_err(|e| TrainError::io(&path, e))?;
            if ft.is_dir() {
                stack.push(path);
            } else if path
                .extension()
                .and_then(|e| e.to_str())
                .is_some_and(|e| e.eq_ignore_ascii_case("mid") || e.eq_ignore_ascii_case("midi"))
            {
                out.push(path.strip_prefix(dir).unwrap_or(&path).to_path_buf());
            }
        }
    }
    out.sort();
    Ok(out)
}

/// Whether a piece goes to validation (see the module docs).
pub fn is_validation(rel_path: &str, seed: u64, val_fraction: f64) -> bool {
    let mut h = Sha256::new();
    h.update(seed.to_le_bytes());
    h.update(rel_path.as_bytes());
    let d = h.finalize();
    let x = u64::from_le_bytes(d[..8].try_into().expect("8 bytes"));
    (x as f64 / 2f64.powi(64)) < val_fraction
}

/// The fields of a `manifest.jsonl` row prepare uses.
#[derive(Debug, Clone, Default)]
pub struct ManifestRow {
    source: Option<String>,
    title: Option<String>,
}

/// `manifest.jsonl` at the folder root, by relative path (empty when there is none).
pub fn read_manifest(dir: &Path) -> HashMap<String, ManifestRow> {
    let path = dir.join("manifest.jsonl");
    let Ok(text) = std::fs::read_to_string(&path) else {
        return HashMap::new();
    };
    text.lines()
        .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
        .filter_map(|v| {
            let file = v.get("file")?.as_str()?.to_string();
            let s = |k: &str| v.get(k).and_then(|x| x.as_str()).map(str::to_string);
            Some((
                file,
                ManifestRow {
                    source: s("source"),
                    title: s("title"),
                },
            ))
        })
        .collect()
}

/// The style name for a piece (see the module docs); `None` if the tokenizer has no fitting style.
pub fn infer_style(
    tok: &Tokenizer,
    source: &str,
    rel_path: &str,
    title: Option<&str>,
) -> Option<String> {
    let name = rel_path
        .rsplit('/')
        .next()
        .unwrap_or(rel_path)
        .to_lowercase();
    let title = title.map(str::to_lowercase).unwrap_or_else(|| name.clone());
    let candidate = match source.to_lowercase().as_str() {
        "bach" => {
            let chorale = name.strip_prefix("bwv").is_some_and(|rest| {
                let digits = rest.trim_start_matches(|c: char| c.is_ascii_digit());
                digits.len() < rest.len()
                    && (digits.starts_with('_') || digits.starts_with('.'))
                    && digits[1..].starts_with(|c: char| c.is_ascii_digit())
            });
            if chorale { "chorale" } else { "bach" }.to_string()
        }
        "ryans" => ["reel", "jig", "hornpipe"]
            .into_iter()
            .find(|k| title.contains(k))
            .unwrap_or("fiddle_tune")
            .to_string(),
        "essen" => "folk_song".to_string(),
        other => other.to_string(),
    };
    tok.style_id(&candidate).map(|_| candidate)
}

/// A read piece before it is split and written.
pub struct LoadedPiece {
    pub id: String,
    pub source: String,
    pub style: Option<String>,
    pub origin: SectionOrigin,
    pub song: Song,
}

/// Reads one file: sections from markers, else by repetition.
pub fn load_piece(
    dir: &Path,
    rel: &Path,
    tok: &Tokenizer,
    manifest: &HashMap<String, ManifestRow>,
) -> std::result::Result<LoadedPiece, String> {
    let id = rel.to_string_lossy().replace('\\', "/");
    let mut song = read_midi_file(&dir.join(rel)).map_err(|e| e.to_string())?;
    if song.notes.is_empty() {
        return Err("no notes".into());
    }
    let origin = if song.sections.is_empty() {
        song.sections = music::segment_by_repetition(&song);
        SectionOrigin::Repetition
    } else {
        SectionOrigin::Markers
    };
    let row = manifest.get(&id).cloned().unwrap_or_default();
    let source = row.source.unwrap_or_else(|| match id.split_once('/') {
        Some((first, _)) => first.to_string(),
        None => String::new(),
    });
    let style = infer_style(tok, &source, &id, row.title.as_deref());
    Ok(LoadedPiece {
        id,
        source,
        style,
        origin,
        song,
    })
}

/// Fewest notes a voice needs for a piece to get a two-voice copy (a stray note on another
/// channel is no voice).
const MIN_VOICE_NOTES: usize = 8;
/// Fewest distinct pitches a voice needs: timpani (two or three pitches, the lowest part of 13
/// of the corpus's cantata chorales) are no bass line.
const MIN_VOICE_PITCHES: usize = 5;

/// The piece re-voiced as melody plus accompaniment (see the module docs): `None` when the
/// tokenizer has no accompaniment voice or the piece has fewer than two voices, i.e. fewer
/// than two non-drum MIDI channels with [`MIN_VOICE_NOTES`] notes on [`MIN_VOICE_PITCHES`]
/// pitches or more. The highest voice (by
/// mean pitch) gets the performer instrument's program, the lowest the accompaniment's; tempo,
/// metre and sections are the piece's own.
pub fn two_voice_copy(song: &Song, tok: &Tokenizer) -> Option<Song> {
    let accompaniment = tok.accompaniment_instrument()?;
    // (channel, note count, pitch sum, pitches used) of every voice.
    let mut voices: Vec<(u8, usize, u64, [bool; 128])> = Vec::new();
    for n in song.notes.iter().filter(|n| !n.is_drum() && n.pitch < 128) {
        let v = match voices.iter().position(|v| v.0 == n.channel) {
            Some(i) => &mut voices[i],
            None => {
                voices.push((n.channel, 0, 0, [false; 128]));
                voices.last_mut().expect("just pushed")
            }
        };
        v.1 += 1;
        v.2 += u64::from(n.pitch);
        v.3[usize::from(n.pitch)] = true;
    }
    voices.retain(|v| {
        v.1 >= MIN_VOICE_NOTES && v.3.iter().filter(|&&used| used).count() >= MIN_VOICE_PITCHES
    });
    if voices.len() < 2 {
        return None;
    }
    let mean = |v: &(u8, usize, u64, [bool; 128])| v.2 as f64 / v.1 as f64;
    let melody = voices.iter().max_by(|a, b| mean(a).total_cmp(&mean(b)))?.0;
    let bass = voices.iter().min_by(|a, b| mean(a).total_cmp(&mean(b)))?.0;
    let melody_program = tok.program_for_instrument(tok.performer_instrument());
    let bass_program = tok.program_for_instrument(accompaniment);
    let mut copy = song.clone();
    copy.notes
        .retain(|n| !n.is_drum() && (n.channel == melody || n.channel == bass));
    for n in &mut copy.notes {
        n.program = if n.channel == melody {
            melody_program
        } else {
            bass_program
        };
    }
    Some(copy)
}

/// Tokenizes a song and adds it to a split: whole piece plus one snippet per section label.
pub fn add_song(
    writer: &mut ShardWriter,
    tok: &Tokenizer,
    split: &str,
    piece: LoadedPiece,
) -> std::result::Result<(), String> {
    let LoadedPiece {
        id,
        source,
        style,
        origin,
        song,
    } = piece;
    let song = &song;
    let tokens = tok.encode_piece(song);
    // `<S>`, `<E>` and maybe tags and `<D>`: a piece without a single note token is no piece.
    if !tokens
        .iter()
        .any(|&t| tok.note_ids().contains(&t) || tok.drum_ids().contains(&t))
    {
        return Err("no notes the tokenizer can encode".into());
    }
    let snippets: Vec<(SectionLabel, Vec<u32>)> = SectionLabel::ALL
        .iter()
        .filter_map(|&l| {
            tok.extract_snippet(song, l, tok.config().snippet_tokens)
                .map(|t| (l, t))
        })
        .collect();
    let mut sections: Vec<SectionMeta> = song
        .sections
        .iter()
        .map(|s| SectionMeta {
            label: s.label,
            start_ms: s.start_ms,
            end_ms: s.end_ms,
        })
        .collect();
    sections.sort_by(|a, b| a.start_ms.total_cmp(&b.start_ms));
    let duration_ms = song.notes.iter().map(|n| n.end_ms).fold(0.0, f64::max);
    let piece = NewPiece {
        id,
        source,
        style,
        origin,
        duration_ms,
        notes: song.notes.len(),
        quarter_ms: song.constant_quarter_ms(),
        sections,
    };
    writer.add(split, piece, &tokens, &snippets);
    Ok(())
}

/// What a `prepare` run did.
#[derive(Debug, Clone)]
pub struct PrepareReport {
    pub index: ShardIndex,
    pub files: usize,
}

impl PrepareReport {
    pub fn summary(&self) -> String {
        let mut s = format!("{} MIDI files:", self.files);
        for split in &self.index.splits {
            s.push_str(&format!(
                " {} {} pieces ({} tokens);",
                split.name,
                split.pieces.len(),
                split.tokens
            ));
        }
        s.push_str(&format!(" {} skipped", self.index.skipped.len()));
        s
    }
}

pub fn prepare(
    dir: &Path,
    out: &Path,
    tok: &Tokenizer,
    opts: &PrepareOptions,
) -> Result<PrepareReport> {
    if !(0.0..1.0).contains(&opts.val_fraction) {
        return Err(TrainError::config(format!(
            "--val-fraction {} must be within [0, 1)",
            opts.val_fraction
        )));
    }
    if !dir.is_dir() {
        return Err(TrainError::file(dir, "not a folder"));
    }
    let files = find_midi_files(dir)?;
    if files.is_empty() {
        return Err(TrainError::Data(format!(
            "no .mid/.midi files below {}",
            dir.display()
        )));
    }
    let manifest = read_manifest(dir);
    let mut writer = ShardWriter::new(out, tok)?;
    let mut skipped = Vec::new();
    let mut pool = Vec::new();
    for (i, rel) in files.iter().enumerate() {
        let id = rel.to_string_lossy().replace('\\', "/");
        let piece = match load_piece(dir, rel, tok, &manifest) {
            Ok(p) => p,
            Err(reason) => {
                if opts.verbose {
                    eprintln!("skipped {id}: {reason}");
                }
                skipped.push(Skipped { file: id, reason });
                continue;
            }
        };
        let split = if is_validation(&piece.id, opts.seed, opts.val_fraction) {
            VALIDATION
        } else {
            TRAIN
        };
        let two_voice = two_voice_copy(&piece.song, tok).map(|song| {
            let split = if split == TRAIN {
                TWO_VOICE
            } else {
                VALIDATION
            };
            let id = format!("{}#two-voice", piece.id);
            let piece = LoadedPiece {
                id,
                source: piece.source.clone(),
                style: piece.style.clone(),
                origin: piece.origin,
                song,
            };
            (split, piece)
        });
        if split == TRAIN
            && opts.synthetic > 0
            && let Some(sp) = SourcePiece::from_song(
                &piece.id,
                &piece.source,
                piece.style.as_deref(),
                &piece.song,
            )
        {
            pool.push(sp);
        }
        if let Err(reason) = add_song(&mut writer, tok, split, piece) {
            if opts.verbose {
                eprintln!("skipped {id}: {reason}");
            }
            skipped.push(Skipped { file: id, reason });
        }
        if let Some((split, piece)) = two_voice {
            let copy_id = piece.id.clone();
            if let Err(reason) = add_song(&mut writer, tok, split, piece) {
                skipped.push(Skipped {
                    file: copy_id,
                    reason,
                });
            }
        }
        if opts.verbose && (i + 1) % 500 == 0 {
            eprintln!("read {}/{} files", i + 1, files.len());
        }
    }
    if opts.synthetic > 0 {
        if pool.is_empty() {
            return Err(TrainError::Data(
                "no train piece has a usable section for synthetic pieces".into(),
            ));
        }
        let mut rng = StdRng::seed_from_u64(opts.seed ^ 0x5eed_f0e5);
        for k in 0..opts.synthetic {
            let form = synth::FORMS[k % synth::FORMS.len()];
            let Some(p) = synth::assemble(&pool, form, &mut rng) else {
                continue;
            };
            let id = format!("synthetic/{k:06}");
            let piece = LoadedPiece {
                id: id.clone(),
                source: p.source,
                style: p.style,
                origin: SectionOrigin::Synthetic,
                song: p.song,
            };
            if let Err(reason) = add_song(&mut writer, tok, SYNTHETIC, piece) {
                skipped.push(Skipped { file: id, reason });
            }
        }
    }
    if writer.piece_count(TRAIN) == 0 {
        return Err(TrainError::Data(format!(
            "none of the {} MIDI files below {} could be used ({} skipped)",
            files.len(),
            dir.display(),
            skipped.len()
        )));
    }
    let index = writer.finish(dir, opts.val_fraction, opts.seed, skipped)?;
    let report = serde_json::json!({
        "files": files.len(),
        "splits": index.splits.iter().map(|s| (s.name.clone(), serde_json::json!({"pieces": s.pieces.len(), "tokens": s.tokens}))).collect::<serde_json::Map<_, _>>(),
        "skipped": index.skipped,
    });
    fsx::write_atomic(
        &out.join("report.json"),
        serde_json::to_string_pretty(&report).expect("plain data"),
    )?;
    Ok(PrepareReport {
        index,
        files: files.len(),
    })
}
