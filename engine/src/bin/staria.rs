//! `staria`: generate structured music from MIDI snippet prompts on the command line.
//!
//! Every failure prints one line naming the problem and exits non-zero: 2 for input the user can
//! fix (files, arguments, checkpoints), 1 for failures inside generation.

use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::Instant;

use candle_core::Device;
use clap::{Args, Parser, Subcommand};
use staria_engine::constraints::{Constraints, Scale};
use staria_engine::generate::{
    Backend, BackendChoice, Flow, GenError, GenRequest, Generator, GeneratorOptions, Snippets,
    Target,
};
use staria_engine::sampling::SamplingParams;
use staria_models::fast::WeightFormat;
use staria_models::{Note, SectionLabel, Song};

#[derive(Parser, Debug)]
#[command(
    name = "staria",
    version,
    about = "Generate structured music (forms like AABA) from MIDI snippet prompts"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand, Debug)]
enum Command {
    /// Generate a piece in a form (e.g. AABA) from the sections of a prompt MIDI file.
    Generate(GenerateArgs),
    /// Continue a MIDI file for a number of seconds or bars.
    Continue(ContinueArgs),
    /// Describe a checkpoint.
    Info(InfoArgs),
    /// Measure prefill and decode speed; prints one JSON line.
    Bench(BenchArgs),
    /// Draw a MIDI file as a piano roll (PNG), optionally below its prompt.
    Render(RenderArgs),
}

#[derive(Args, Debug)]
struct RenderArgs {
    /// MIDI file to draw.
    input: PathBuf,
    /// PNG file to write.
    #[arg(long)]
    png: PathBuf,
    /// A prompt MIDI file to draw above it, on the same time scale.
    #[arg(long)]
    prompt: Option<PathBuf>,
    /// Picture width in pixels.
    #[arg(long, default_value_t = 1600)]
    width: u32,
    /// Height of each piano roll in pixels.
    #[arg(long, default_value_t = 420)]
    panel_height: u32,
}

#[derive(Args, Debug, Clone)]
struct ModelArgs {
    /// Checkpoint folder (config.json, tokenizer.json, model.safetensors). Default: $STARIA_MODEL,
    /// else the shipped model in models/pretrained/.
    #[arg(long)]
    model: Option<PathBuf>,
    /// cpu, cuda[:N] or metal[:N].
    #[arg(long, default_value = "cpu")]
    device: String,
    /// CPU threads for tensor maths (default: candle's choice, the physical core count).
    #[arg(long)]
    threads: Option<usize>,
}

#[derive(Args, Debug, Clone)]
struct BackendArgs {
    /// Decode path: auto (the fast decoder on the CPU, candle on a GPU), candle, or fast (the
    /// single-core decoder, CPU only).
    #[arg(long, default_value = "auto")]
    backend: BackendChoice,
    /// Weight format of the fast backend: f32, f16 (the default) or q8.
    #[arg(long)]
    weights: Option<WeightFormat>,
}

impl BackendArgs {
    fn options(&self, device: &Device) -> Result<GeneratorOptions, Failure> {
        let (backend, weights) = (self.backend, self.weights);
        match backend.resolve(device) {
            Backend::Fast if !device.is_cpu() => {
                return Err(bad(
                    "--backend fast runs on the CPU only; use --device cpu or --backend candle",
                ));
            }
            Backend::Candle if weights.is_some() => {
                return Err(bad(
                    "--weights applies to the fast backend only (candle runs the checkpoint in f32)",
                ));
            }
            _ => {}
        }
        Ok(GeneratorOptions {
            backend,
            weights: weights.unwrap_or(GeneratorOptions::DEFAULT_WEIGHTS),
        })
    }
}

#[derive(Args, Debug, Clone)]
struct SampleArgs {
    #[arg(long, default_value_t = 0)]
    seed: u64,
    /// 0 = always the most likely token.
    #[arg(long, default_value_t = SamplingParams::default().temperature, allow_negative_numbers = true)]
    temperature: f32,
    #[arg(long, default_value_t = SamplingParams::default().top_p, allow_negative_numbers = true)]
    top_p: f32,
    #[arg(long, default_value_t = SamplingParams::DEFAULT_MIN_P, allow_negative_numbers = true)]
    min_p: f32,
    /// Snippet following: logit bonus for the token the section's snippet has next, so each
    /// section keeps its snippet's shape (0: the model alone).
    #[arg(long, default_value_t = SamplingParams::DEFAULT_FOLLOW_BIAS, allow_negative_numbers = true)]
    follow_bias: f32,
    /// Style token, e.g. reel (see `staria info` for the model's styles).
    #[arg(long)]
    style: Option<String>,
    /// Lowest and highest pitch, e.g. 48-84.
    #[arg(long)]
    pitch_range: Option<String>,
    /// Keep to a scale, e.g. "D major", "A dorian", "E minor-pentatonic".
    #[arg(long)]
    scale: Option<String>,
    /// At most this many notes sounding at once.
    #[arg(long)]
    max_polyphony: Option<u8>,
    /// Tempo in bpm (default: the input file's first tempo).
    #[arg(long, allow_negative_numbers = true)]
    bpm: Option<f64>,
}

#[derive(Args, Debug)]
struct GenerateArgs {
    /// Prompt MIDI file; its markers ("A", "B", ...) delimit the sections.
    #[arg(long)]
    prompt: PathBuf,
    /// Sections as bar ranges instead of markers, e.g. A=1-4,B=5-8 (bars counted from 1).
    #[arg(long)]
    sections: Option<String>,
    /// The form to generate, letters A..D.
    #[arg(long, default_value = "AABA")]
    form: String,
    /// Bars per section.
    #[arg(long, default_value_t = 8)]
    bars: u32,
    #[arg(long)]
    out: PathBuf,
    #[command(flatten)]
    model: ModelArgs,
    #[command(flatten)]
    backend: BackendArgs,
    #[command(flatten)]
    sample: SampleArgs,
}

#[derive(Args, Debug)]
#[command(group(clap::ArgGroup::new("length").required(true).args(["seconds", "bars"])))]
struct ContinueArgs {
    #[arg(long)]
    input: PathBuf,
    #[arg(long, allow_negative_numbers = true)]
    seconds: Option<f64>,
    #[arg(long)]
    bars: Option<u32>,
    #[arg(long)]
    out: PathBuf,
    #[command(flatten)]
    model: ModelArgs,
    #[command(flatten)]
    backend: BackendArgs,
    #[command(flatten)]
    sample: SampleArgs,
}

#[derive(Args, Debug)]
struct InfoArgs {
    #[command(flatten)]
    model: ModelArgs,
    /// One JSON object instead of text.
    #[arg(long)]
    json: bool,
}

#[derive(Args, Debug)]
struct BenchArgs {
    #[command(flatten)]
    model: ModelArgs,
    #[command(flatten)]
    backend: BackendArgs,
}

/// A one-line failure and its exit code.
struct Failure {
    code: u8,
    msg: String,
}

fn bad(msg: impl Into<String>) -> Failure {
    Failure {
        code: 2,
        msg: msg.into(),
    }
}

impl From<GenError> for Failure {
    fn from(e: GenError) -> Self {
        let code = match &e {
            GenError::Model(staria_models::Error::Candle(_)) | GenError::Sample(_) => 1,
            _ => 2,
        };
        Failure {
            code,
            msg: e.to_string(),
        }
    }
}

impl From<staria_models::Error> for Failure {
    fn from(e: staria_models::Error) -> Self {
        GenError::Model(e).into()
    }
}

fn main() -> ExitCode {
    let cli = match Cli::try_parse() {
        Ok(c) => c,
        Err(e) if !e.use_stderr() => {
            // --help and --version.
            let _ = e.print();
            return ExitCode::SUCCESS;
        }
        Err(e) => {
            // Usage errors in one line too: clap's first line names the problem.
            let text = e.render().to_string();
            let problem: Vec<&str> = text
                .lines()
                .take_while(|l| !l.starts_with("Usage:"))
                .collect();
            let problem = problem.join(" ");
            let problem = problem.strip_prefix("error: ").unwrap_or(&problem);
            eprintln!("staria: error: {} (see staria --help)", one_line(problem));
            return ExitCode::from(2);
        }
    };
    // A bug must still end in one line, not a backtrace dump into a musician's terminal.
    std::panic::set_hook(Box::new(|info| {
        let msg = info
            .payload()
            .downcast_ref::<&str>()
            .map(|s| s.to_string())
            .or_else(|| info.payload().downcast_ref::<String>().cloned())
            .unwrap_or_default();
        let at = info
            .location()
            .map(|l| format!(" at {}:{}", l.file(), l.line()))
            .unwrap_or_default();
        eprintln!("staria: internal error{at}: {}", one_line(&msg));
    }));
    match std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| run(cli))) {
        Ok(Ok(())) => ExitCode::SUCCESS,
        Ok(Err(f)) => {
            eprintln!("staria: error: {}", one_line(&f.msg));
            ExitCode::from(f.code)
        }
        Err(_) => ExitCode::from(1),
    }
}

fn one_line(s: &str) -> String {
    s.split_whitespace().collect::<Vec<_>>().join(" ")
}

fn run(cli: Cli) -> Result<(), Failure> {
    match cli.command {
        Command::Generate(a) => cmd_generate(a),
        Command::Continue(a) => cmd_continue(a),
        Command::Info(a) => cmd_info(a),
        Command::Bench(a) => cmd_bench(a),
        Command::Render(a) => cmd_render(a),
    }
}

fn cmd_render(a: RenderArgs) -> Result<(), Failure> {
    if !(64..=16_384).contains(&a.width) || !(64..=8_192).contains(&a.panel_height) {
        return Err(bad(
            "--width must be in 64..=16384 and --panel-height in 64..=8192",
        ));
    }
    let read = |path: &Path| {
        staria_models::read_midi_file(path).map_err(|e| {
            let (msg, name) = (e.to_string(), path.display().to_string());
            bad(if msg.contains(&name) {
                msg
            } else {
                format!("{name}: {msg}")
            })
        })
    };
    let song = read(&a.input)?;
    let prompt = a.prompt.as_deref().map(read).transpose()?;
    let name = |p: &Path| {
        p.file_name().map_or_else(
            || p.display().to_string(),
            |n| n.to_string_lossy().into_owned(),
        )
    };
    let (input_name, prompt_name) = (name(&a.input), a.prompt.as_deref().map(name));
    let mut songs: Vec<(&str, &Song)> = Vec::new();
    if let (Some(p), Some(n)) = (&prompt, &prompt_name) {
        songs.push((n.as_str(), p));
    }
    songs.push((input_name.as_str(), &song));
    let opts = staria_engine::render::RenderOptions {
        width: a.width,
        panel_height: a.panel_height,
    };
    staria_engine::render::render_png(&a.png, &songs, &opts).map_err(|e| Failure {
        code: 1,
        msg: e.to_string(),
    })?;
    eprintln!("wrote {}", a.png.display());
    Ok(())
}

/// Pins the tensor thread count. Must run before the first tensor op: candle sizes its pools
/// once, from RAYON_NUM_THREADS / CANDLE_NUM_THREADS.
fn set_threads(threads: Option<usize>) -> Result<usize, Failure> {
    if let Some(n) = threads {
        if n == 0 || n > 1024 {
            return Err(bad(format!("--threads must be in 1..=1024, got {n}")));
        }
        // SAFETY: called at the start of `run`, before this process starts any other thread.
        unsafe {
            std::env::set_var("RAYON_NUM_THREADS", n.to_string());
            std::env::set_var("CANDLE_NUM_THREADS", n.to_string());
        }
    }
    Ok(candle_core::utils::get_num_threads())
}

fn parse_device(spec: &str) -> Result<Device, Failure> {
    let (name, ordinal) = match spec.split_once(':') {
        Some((n, o)) => {
            let o = o
                .parse::<usize>()
                .map_err(|_| bad(format!("--device {spec:?}: {o:?} is not a device number")))?;
            (n, o)
        }
        None => (spec, 0),
    };
    match name.to_ascii_lowercase().as_str() {
        "cpu" => Ok(Device::Cpu),
        "cuda" => {
            if !cfg!(feature = "cuda") {
                return Err(bad(
                    "this staria binary was built without CUDA support; rebuild with `--features cuda`",
                ));
            }
            Device::new_cuda(ordinal).map_err(|e| bad(format!("--device {spec}: {e}")))
        }
        "metal" => {
            if !cfg!(feature = "metal") {
                return Err(bad(
                    "this staria binary was built without Metal support; rebuild with `--features metal`",
                ));
            }
            Device::new_metal(ordinal).map_err(|e| bad(format!("--device {spec}: {e}")))
        }
        _ => Err(bad(format!(
            "unknown --device {spec:?}; expected cpu, cuda[:N] or metal[:N]"
        ))),
    }
}

/// `--model`, else $STARIA_MODEL, else the one checkpoint in models/pretrained/ (or the one
/// named `default` when there are several).
fn model_dir(arg: &Option<PathBuf>) -> Result<PathBuf, Failure> {
    staria_engine::default_model::resolve_model_dir(arg.as_deref()).map_err(bad)
}

struct Loaded {
    generator: Generator,
    dir: PathBuf,
    device: String,
    threads: usize,
}

fn load(args: &ModelArgs, backend: &BackendArgs) -> Result<Loaded, Failure> {
    let threads = set_threads(args.threads)?;
    let device = parse_device(&args.device)?;
    let opts = backend.options(&device)?;
    let dir = model_dir(&args.model)?;
    let generator = Generator::load_with(&dir, &device, &opts)?;
    Ok(Loaded {
        generator,
        dir,
        device: args.device.clone(),
        threads,
    })
}

fn read_song(path: &Path) -> Result<Song, Failure> {
    let song = staria_models::read_midi_file(path).map_err(|e| {
        let (msg, name) = (e.to_string(), path.display().to_string());
        bad(if msg.contains(&name) {
            msg
        } else {
            format!("{name}: {msg}")
        })
    })?;
    if song.notes.is_empty() {
        return Err(bad(format!(
            "{} has no notes to use as a prompt",
            path.display()
        )));
    }
    Ok(song)
}

/// The request fields shared by `generate` and `continue`.
fn base_request(
    target: Target,
    bars: u32,
    s: &SampleArgs,
    song: &Song,
) -> Result<GenRequest, Failure> {
    let bpm = match s.bpm {
        Some(b) => b,
        None => song
            .tempo_map
            .first()
            .map_or(120.0, |t| 60_000_000.0 / t.us_per_quarter.max(1) as f64),
    };
    let beats_per_bar = song
        .time_signatures
        .first()
        .filter(|ts| ts.numerator > 0 && ts.denominator > 0)
        .map_or(4.0, |ts| ts.numerator as f64 * 4.0 / ts.denominator as f64);
    let mut constraints = Constraints::default();
    if let Some(r) = &s.pitch_range {
        let (lo, hi) =
            parse_range(r, 0, 127).map_err(|e| bad(format!("--pitch-range {r:?}: {e}")))?;
        constraints.pitch_min = lo as u8;
        constraints.pitch_max = hi as u8;
    }
    if let Some(sc) = &s.scale {
        constraints.scale = Some(
            sc.parse::<Scale>()
                .map_err(|e| bad(format!("--scale: {e}")))?,
        );
    }
    constraints.max_polyphony = s.max_polyphony;
    // Drums only when the prompt has some: the engine's note events carry no channel.
    constraints.drums = song.notes.iter().any(Note::is_drum);
    let req = GenRequest {
        target,
        bars,
        bpm,
        beats_per_bar,
        form: String::new(),
        style: s.style.clone(),
        sampling: SamplingParams {
            temperature: s.temperature,
            top_p: s.top_p,
            min_p: s.min_p,
            seed: s.seed,
            follow_bias: s.follow_bias,
        },
        constraints,
    };
    req.validate().map_err(bad)?;
    Ok(req)
}

/// "A-B" or "A" within lo..=hi.
fn parse_range(s: &str, lo: u32, hi: u32) -> Result<(u32, u32), String> {
    let num = |t: &str| {
        t.trim()
            .parse::<u32>()
            .map_err(|_| format!("{t:?} is not a number"))
    };
    let (a, b) = match s.split_once('-') {
        Some((a, b)) => (num(a)?, num(b)?),
        None => {
            let a = num(s)?;
            (a, a)
        }
    };
    if a < lo || b > hi || a > b {
        return Err(format!("expected FROM-TO with {lo} <= FROM <= TO <= {hi}"));
    }
    Ok((a, b))
}

/// Snippets from `--sections` bar ranges, else the file's markers (first occurrence of each
/// letter), else the whole file as section A.
fn snippets_of(song: &Song, sections: Option<&str>, path: &Path) -> Result<Snippets, Failure> {
    let mut snippets = Snippets::default();
    if let Some(spec) = sections {
        for part in spec.split(',').map(str::trim).filter(|p| !p.is_empty()) {
            let (letter, range) = part.split_once('=').ok_or_else(|| {
                bad(format!(
                    "--sections: {part:?} is not LETTER=FROM-TO (e.g. A=1-4)"
                ))
            })?;
            let mut chars = letter.trim().chars();
            let label = match (chars.next(), chars.next()) {
                (Some(c), None) => SectionLabel::from_letter(c),
                _ => None,
            }
            .ok_or_else(|| {
                bad(format!(
                    "--sections: unknown section letter {:?} (use A, B, C or D)",
                    letter.trim()
                ))
            })?;
            let (from, to) = parse_range(range, 1, 100_000)
                .map_err(|e| bad(format!("--sections {part:?}: bars {e}")))?;
            let start = song.tick_to_ms(song.bar_start_tick(from - 1));
            let end = song.tick_to_ms(song.bar_start_tick(to));
            let notes = song.notes_in(start, end);
            if notes.is_empty() {
                return Err(bad(format!(
                    "--sections: section {label} (bars {from}-{to}) has no notes in {}",
                    path.display()
                )));
            }
            if !snippets.section(label).is_empty() {
                return Err(bad(format!("--sections: section {label} is given twice")));
            }
            snippets.set(label, notes);
        }
        if snippets.captured().next().is_none() {
            return Err(bad("--sections names no section"));
        }
        return Ok(snippets);
    }
    for label in SectionLabel::ALL {
        let first = song
            .sections
            .iter()
            .filter(|s| s.label == label)
            .min_by(|a, b| a.start_ms.total_cmp(&b.start_ms));
        if let Some(s) = first {
            snippets.set(label, song.section_notes(s));
        }
    }
    if snippets.captured().next().is_none() {
        eprintln!(
            "staria: {} has no section markers with notes; using the whole file as section A",
            path.display()
        );
        snippets.set(SectionLabel::A, song.notes.clone());
    }
    Ok(snippets)
}

fn write_song(song: &Song, out: &Path) -> Result<(), Failure> {
    let bytes = staria_models::write_midi(song)?;
    std::fs::write(out, bytes).map_err(|e| bad(format!("cannot write {}: {e}", out.display())))
}

fn cmd_generate(a: GenerateArgs) -> Result<(), Failure> {
    let form = a.form.trim().to_ascii_uppercase();
    if form.is_empty() || !form.chars().all(|c| ('A'..='D').contains(&c)) {
        return Err(bad(format!(
            "--form {:?} must be letters A..D, e.g. AABA",
            a.form
        )));
    }
    if a.bars == 0 {
        return Err(bad("--bars must be at least 1"));
    }
    let song = read_song(&a.prompt)?;
    let snippets = snippets_of(&song, a.sections.as_deref(), &a.prompt)?;
    let mut req = base_request(Target::Section(SectionLabel::A), a.bars, &a.sample, &song)?;
    req.form = form;
    let mut loaded = load(&a.model, &a.backend)?;
    let piece = loaded.generator.generate_piece(&snippets, &req)?;
    write_song(&piece.song, &a.out)?;
    for (i, r) in piece.sections.iter().enumerate() {
        if r.notes == 0 {
            eprintln!(
                "staria: warning: section {} ({}) came out empty: the model placed no notes in its {} bars ({:?})",
                i + 1,
                r.label,
                a.bars,
                r.stop
            );
        }
    }
    let counts: Vec<String> = piece
        .sections
        .iter()
        .map(|r| format!("{}:{}", r.label, r.notes))
        .collect();
    eprintln!(
        "staria: wrote {} ({} notes; {}; {} tokens in {:.0} ms)",
        a.out.display(),
        piece.summary.notes,
        counts.join(" "),
        piece.summary.sampled_tokens,
        piece.summary.prefill_ms + piece.summary.decode_ms
    );
    Ok(())
}

fn cmd_continue(a: ContinueArgs) -> Result<(), Failure> {
    let song = read_song(&a.input)?;
    // Marked sections also go in as snippets; without markers the file is only the context.
    let mut snippets = if song.sections.is_empty() {
        Snippets::default()
    } else {
        snippets_of(&song, None, &a.input)?
    };
    snippets.context = song.notes.clone();
    let probe = base_request(Target::Continue, 1, &a.sample, &song)?;
    let bar_ms = probe.span_ms();
    let (bars, limit_ms) = match (a.seconds, a.bars) {
        (Some(s), _) => {
            if !(s.is_finite() && s > 0.0 && s <= 3600.0) {
                return Err(bad(format!("--seconds must be in (0, 3600], got {s}")));
            }
            (((s * 1000.0) / bar_ms).ceil().max(1.0) as u32, s * 1000.0)
        }
        (None, Some(0)) | (None, None) => return Err(bad("--bars must be at least 1")),
        (None, Some(b)) => (b, b as f64 * bar_ms),
    };
    let req = GenRequest { bars, ..probe };
    req.validate().map_err(bad)?;
    let mut loaded = load(&a.model, &a.backend)?;

    let end_ms = song.notes.iter().map(|n| n.end_ms).fold(0.0, f64::max);
    // The continuation starts on the first bar line after the input's last note-off.
    let start_ms =
        staria_engine::generate::continue_start_ms(&song.notes, req.bpm, req.beats_per_bar);
    let template = song
        .notes
        .iter()
        .rev()
        .find(|n| !n.is_drum())
        .copied()
        .unwrap_or(song.notes[0]);
    let mut added = Vec::new();
    let summary = loaded.generator.generate(&snippets, &req, &mut |n| {
        if n.start_ms >= limit_ms {
            return Flow::Stop;
        }
        added.push((
            n.pitch,
            n.velocity,
            n.start_ms + start_ms,
            n.start_ms + start_ms + n.dur_ms.min(limit_ms - n.start_ms),
        ));
        Flow::Continue
    })?;
    let mut out = song.clone();
    for (pitch, velocity, s, e) in added {
        let (st, et) = (out.ms_to_tick(s), out.ms_to_tick(e));
        out.notes.push(Note {
            pitch,
            velocity: velocity.max(1),
            channel: template.channel,
            program: template.program,
            start_tick: st,
            end_tick: et.max(st + 1),
            start_ms: s,
            end_ms: e,
        });
    }
    out.notes.sort_by_key(|n| (n.start_tick, n.pitch));
    write_song(&out, &a.out)?;
    if summary.notes == 0 {
        eprintln!(
            "staria: warning: the model added no notes ({:?})",
            summary.stop
        );
    }
    eprintln!(
        "staria: wrote {} ({} notes added from {:.1} s, the bar line after {:.1} s; {} tokens in {:.0} ms)",
        a.out.display(),
        summary.notes,
        start_ms / 1000.0,
        end_ms / 1000.0,
        summary.sampled_tokens,
        summary.prefill_ms + summary.decode_ms
    );
    Ok(())
}

fn cmd_info(a: InfoArgs) -> Result<(), Failure> {
    let dir = model_dir(&a.model.model)?;
    // Config and tokenizer only (checked against each other); the weights are not loaded.
    let (config, tok) = staria_models::checkpoint::load_config(&dir)?;
    let weights = dir.join(staria_models::checkpoint::WEIGHTS_FILE);
    let params = count_parameters(&weights)?;
    let dc = config.model.decoder();
    let p = &config.provenance;
    let info = serde_json::json!({
        "path": dir.display().to_string(),
        "name": config.name,
        "kind": config.kind().to_string(),
        "preset": config.preset,
        "parameters": params,
        "weights_dtype": config.weights_dtype,
        "dim": dc.dim,
        "layers": dc.n_layers,
        "heads": dc.n_heads,
        "max_seq_len": dc.max_seq_len,
        "vocab_size": tok.vocab_size(),
        "tokenizer_hash": tok.hash(),
        "forms": tok.config().forms,
        "styles": tok.config().styles,
        "provenance": p,
    });
    if a.json {
        println!("{info}");
        return Ok(());
    }
    let or_dash = |s: &str| {
        if s.is_empty() {
            "-".to_string()
        } else {
            s.to_string()
        }
    };
    println!("model       {} ({})", config.name, dir.display());
    println!("kind        {}", config.kind());
    println!("preset      {}", config.preset);
    println!(
        "parameters  {params} ({:.2} M), stored as {}",
        params as f64 / 1e6,
        config.weights_dtype
    );
    println!(
        "decoder     dim {}, {} layers, {} heads, context {} tokens",
        dc.dim, dc.n_layers, dc.n_heads, dc.max_seq_len
    );
    println!("vocabulary  {} tokens", tok.vocab_size());
    println!("tokenizer   sha256 {}", tok.hash());
    println!("forms       {}", tok.config().forms.join(" "));
    println!("styles      {}", tok.config().styles.join(" "));
    println!("created by  {}", or_dash(&p.created_by));
    println!("command     {}", or_dash(&p.command));
    println!("data        {}", or_dash(&p.data));
    println!("steps       {}", p.steps);
    println!("notes       {}", or_dash(&p.notes));
    Ok(())
}

/// Sum of tensor sizes from a safetensors header (8-byte length, then JSON), without reading
/// the weights.
fn count_parameters(path: &Path) -> Result<u64, Failure> {
    use std::io::Read;
    let bad_file = |why: String| bad(format!("{}: {why}", path.display()));
    let mut f = std::fs::File::open(path).map_err(|e| bad_file(e.to_string()))?;
    let mut len = [0u8; 8];
    f.read_exact(&mut len)
        .map_err(|e| bad_file(format!("no safetensors header ({e})")))?;
    let len = u64::from_le_bytes(len);
    if len > 100 << 20 {
        return Err(bad_file(format!(
            "safetensors header of {len} bytes is not plausible"
        )));
    }
    let mut header = vec![0u8; len as usize];
    f.read_exact(&mut header)
        .map_err(|e| bad_file(format!("truncated safetensors header ({e})")))?;
    let json: serde_json::Value = serde_json::from_slice(&header)
        .map_err(|e| bad_file(format!("safetensors header: {e}")))?;
    let tensors = json
        .as_object()
        .ok_or_else(|| bad_file("safetensors header is not an object".into()))?;
    Ok(tensors
        .iter()
        .filter(|(k, _)| *k != "__metadata__")
        .filter_map(|(_, v)| {
            v.get("shape")?
                .as_array()
                .map(|d| d.iter().filter_map(|x| x.as_u64()).product::<u64>())
        })
        .sum())
}

fn cmd_bench(a: BenchArgs) -> Result<(), Failure> {
    let t0 = Instant::now();
    let mut loaded = load(&a.model, &a.backend)?;
    let load_ms = t0.elapsed().as_secs_f64() * 1000.0;
    let g = &mut loaded.generator;
    let tok = g.tokenizer().clone();

    // Prefill: a prompt of real note tokens (eighth-note arpeggios at 120 bpm), 512 tokens or
    // half the context when that is shorter.
    let n_prefill = 512.min(g.max_seq_len() / 2);
    let arpeggio: Vec<Note> = (0..n_prefill as u32)
        .map(|k| {
            let start_ms = k as f64 * 250.0;
            Note {
                pitch: 48 + (k % 36) as u8,
                velocity: 80,
                channel: 0,
                program: 0,
                start_tick: k as u64 * 240,
                end_tick: k as u64 * 240 + 230,
                start_ms,
                end_ms: start_ms + 240.0,
            }
        })
        .collect();
    let mut ids = vec![tok.prompt_start_id(), tok.prompt_end_id(), tok.start_id()];
    ids.extend(tok.snippet_tokens(&arpeggio, 0.0, n_prefill - ids.len()));
    let prompt = staria_models::Prompt {
        inline: ids.clone(),
        decoder: ids.clone(),
        snippets: Vec::new(),
    };
    g.begin(&prompt)?; // warm-up: first-touch allocations and lazy kernels
    let mut runs = Vec::new();
    for _ in 0..3 {
        // Cold: without the reset the cached prompt would be reused.
        g.reset()?;
        let t = Instant::now();
        g.begin(&prompt)?;
        runs.push(t.elapsed().as_secs_f64() * 1000.0);
    }
    runs.sort_by(f64::total_cmp);
    let prefill_ms = runs[1];

    // Decode through the real path (masks, sampler, callbacks) on a fresh A section.
    let mut snippets = Snippets::default();
    snippets.set(SectionLabel::A, arpeggio[..16].to_vec());
    let mut req = GenRequest::new(Target::Section(SectionLabel::A), 64, 120.0);
    req.sampling.seed = 1;
    let mut notes = 0;
    let summary = g.generate(&snippets, &req, &mut |_| {
        notes += 1;
        if notes >= 100 {
            Flow::Stop
        } else {
            Flow::Continue
        }
    })?;
    // The same request again (a re-trigger with unchanged snippets): the fast backend reuses
    // the prompt's KV cache, so only the first notes' tokens stand between command and note.
    let mut first = true;
    let repeat = g.generate(&snippets, &req, &mut |_| {
        if std::mem::take(&mut first) {
            Flow::Stop
        } else {
            Flow::Continue
        }
    })?;
    let decode_tok_per_s = if summary.decode_ms > 0.0 {
        summary.sampled_tokens as f64 / (summary.decode_ms / 1000.0)
    } else {
        0.0
    };

    let line = serde_json::json!({
        "model": loaded.dir.display().to_string(),
        "kind": g.kind().to_string(),
        "device": loaded.device,
        "backend": g.backend().name(),
        // The candle backend computes in f32 (checkpoint::load builds the model in f32).
        "weights": g.weights().map_or("f32", WeightFormat::name),
        "threads": loaded.threads,
        "load_ms": round2(load_ms),
        "prefill_tokens": ids.len(),
        "prefill_ms_512": round2(prefill_ms),
        "decode_tokens": summary.sampled_tokens,
        "decode_tok_per_s": round2(decode_tok_per_s),
        "first_note_ms": summary.first_note_ms.map(round2),
        "first_note_ms_repeat": repeat.first_note_ms.map(round2),
        // What the cold first note waited for: the request's prompt and its prefill.
        "first_request_prompt_tokens": summary.prompt_tokens,
        "first_request_prefill_ms": round2(summary.prefill_ms),
        "peak_rss_mb": peak_rss_mb(),
    });
    println!("{line}");
    Ok(())
}

fn round2(x: f64) -> f64 {
    (x * 100.0).round() / 100.0
}

/// Peak resident set (VmHWM) in MB; `None` where /proc is not available.
fn peak_rss_mb() -> Option<f64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let kb: f64 = status
        .lines()
        .find_map(|l| l.strip_prefix("VmHWM:"))?
        .trim()
        .trim_end_matches("kB")
        .trim()
        .parse()
        .ok()?;
    Some(round2(kb / 1024.0))
}
