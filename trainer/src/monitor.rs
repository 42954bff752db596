//! Progress display and the metrics log: an indicatif bar with loss, tokens/s and ETA, and a
//! JSON-lines file holding every metric of every step (append-only, so a resumed run continues
//! the same log).

use std::fs::{File, OpenOptions};
use std::io::Write;
use std::path::{Path, PathBuf};
use std::time::Instant;

use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};
use serde_json::{Map, Value, json};

use crate::error::{Result, TrainError};

pub struct Monitor {
    bar: ProgressBar,
    log: Option<(PathBuf, File)>,
    started: Instant,
    tokens: u64,
    stage: String,
}

impl Monitor {
    /// `log_path`: the JSON-lines file (appended to); `show`: draw the bar on stderr.
    pub fn new(
        stage: &str,
        total_steps: u64,
        first_step: u64,
        log_path: Option<&Path>,
        show: bool,
    ) -> Result<Self> {
        let bar = if show {
            ProgressBar::with_draw_target(Some(total_steps), ProgressDrawTarget::stderr())
        } else {
            ProgressBar::hidden()
        };
        bar.set_style(
            ProgressStyle::with_template(
                "{prefix:>12} [{elapsed_precise}] {bar:30} {pos}/{len} ETA {eta_precise} {msg}",
            )
            .expect("static template is valid"),
        );
        bar.set_prefix(stage.to_string());
        bar.set_position(first_step);
        bar.reset_eta();
        let log = match log_path {
            Some(p) => {
                let f = OpenOptions::new()
                    .create(true)
                    .append(true)
                    .open(p)
                    .map_err(|e| TrainError::io(p, e))?;
                Some((p.to_path_buf(), f))
            }
            None => None,
        };
        Ok(Self {
            bar,
            log,
            started: Instant::now(),
            tokens: 0,
            stage: stage.to_string(),
        })
    }

    /// Records one training step: updates the bar and writes a log line with `metrics` plus
    /// `stage`, `step`, `tokens_per_s` and `elapsed_s`.
    pub fn step(&mut self, step: u64, tokens: u64, metrics: &[(&str, f64)]) -> Result<f64> {
        self.tokens += tokens;
        let elapsed = self.started.elapsed().as_secs_f64().max(1e-9);
        let tps = self.tokens as f64 / elapsed;
        let shown: Vec<String> = metrics
            .iter()
            .take(3)
            .map(|(k, v)| format!("{k} {v:.4}"))
            .collect();
        self.bar
            .set_message(format!("{} | {tps:.0} tok/s", shown.join(" ")));
        self.bar.set_position(step);
        let mut extra = metrics.to_vec();
        extra.push(("tokens_per_s", tps));
        extra.push(("elapsed_s", elapsed));
        self.write("train", step, &extra)?;
        Ok(tps)
    }

    /// Writes a log line of another kind (`eval`, `checkpoint`...).
    pub fn write(&mut self, kind: &str, step: u64, metrics: &[(&str, f64)]) -> Result<()> {
        let Some((path, file)) = &mut self.log else {
            return Ok(());
        };
        let mut obj = Map::new();
        obj.insert("stage".into(), json!(self.stage));
        obj.insert("kind".into(), json!(kind));
        obj.insert("step".into(), json!(step));
        for (k, v) in metrics {
            // JSON has no NaN/inf; write null so the line stays parseable.
            obj.insert(
                (*k).into(),
                if v.is_finite() { json!(v) } else { Value::Null },
            );
        }
        writeln!(file, "{}", Value::Object(obj)).map_err(|e| TrainError::io(path.as_path(), e))
    }

    /// Prints a line above the bar (or to stderr when hidden).
    pub fn println(&self, line: &str) {
        if self.bar.is_hidden() {
            eprintln!("{line}");
        } else {
            self.bar.println(line);
        }
    }

    pub fn tokens_per_second(&self) -> f64 {
        self.tokens as f64 / self.started.elapsed().as_secs_f64().max(1e-9)
    }

    pub fn finish(&self) {
        self.bar.finish();
    }
}
