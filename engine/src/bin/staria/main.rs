//! `staria`: generate structured music from MIDI snippet prompts on the command line.
//!
//! Every failure prints one line naming the problem and exits non-zero: 2 for input the user can
//! fix (files, arguments, checkpoints), 1 for failures inside generation.
//!
//! One module per subcommand family: [`args`] (the command line's shape), [`load`] (checkpoint,
//! device, threads), [`generate`] (`generate`, `continue`), [`info`] (`info`, `models`),
//! [`render`], [`bench`](mod@bench) and [`live`] (a performer from a MIDI file into the live
//! modes).

mod args;
mod bench;
mod generate;
mod info;
mod live;
mod load;
mod render;

use std::process::ExitCode;

use clap::{Parser, Subcommand};
use staria_engine::generate::GenError;

use args::{BenchArgs, ContinueArgs, GenerateArgs, InfoArgs, LiveArgs, ModelsArgs, RenderArgs};

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
    /// Describe a checkpoint (a folder or a built-in model's name).
    Info(InfoArgs),
    /// List the built-in models (name, kind, size, which is the default); `--model NAME`
    /// chooses one.
    Models(ModelsArgs),
    /// Measure prefill and decode speed; prints one JSON line.
    Bench(BenchArgs),
    /// Draw a MIDI file as a piano roll (PNG), optionally below its prompt.
    Render(RenderArgs),
    /// Play a MIDI file as the performer into a live mode (call and response, accompaniment)
    /// on a simulated clock; write the performer and the model to one MIDI file.
    Live(LiveArgs),
}

/// A one-line failure and its exit code.
pub(crate) struct Failure {
    pub(crate) code: u8,
    pub(crate) msg: String,
}

pub(crate) fn bad(msg: impl Into<String>) -> Failure {
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
        Command::Generate(a) => generate::cmd_generate(a),
        Command::Continue(a) => generate::cmd_continue(a),
        Command::Info(a) => info::cmd_info(a),
        Command::Models(a) => info::cmd_models(a),
        Command::Bench(a) => bench::cmd_bench(a),
        Command::Render(a) => render::cmd_render(a),
        Command::Live(a) => live::cmd_live(a),
    }
}
