//! [`table`]: several models' figures side by side, as `staria-train eval` prints them.

use std::path::PathBuf;

use super::{BOOTSTRAP_RESAMPLES, BOOTSTRAP_SEED, EvalResult};

/// A table of several models' figures, side by side, with the reference pieces' rhythm
/// measures in the last column (taken from the first model's run: the same pieces for all).
pub fn table(results: &[EvalResult]) -> String {
    let mut s = String::new();
    type Row = (
        &'static str,
        fn(&EvalResult) -> String,
        Option<fn(&EvalResult) -> f64>,
    );
    fn f(x: f64) -> String {
        format!("{x:.4}")
    }
    let rows: [Row; 19] = [
        ("nll bits/token", |r| f(r.nll_bits_per_token), None),
        ("nll bits/second", |r| f(r.nll_bits_per_second), None),
        ("snippet gain bits/token", |r| f(r.snippet_gain_bits), None),
        (
            "snippet content bits/token",
            |r| f(r.snippet_content_bits),
            None,
        ),
        (
            "form adherence [95%]",
            |r| {
                format!(
                    "{:.3} [{:.3},{:.3}]",
                    r.form_adherence, r.form_adherence_lo, r.form_adherence_hi
                )
            },
            Some(|r| r.reference_form_adherence),
        ),
        (
            "  A / B sections",
            |r| format!("{:.3} / {:.3}", r.form_adherence_a, r.form_adherence_b),
            None,
        ),
        (
            "  A sim own / other",
            |r| format!("{:.3} / {:.3}", r.similarity_a.0, r.similarity_a.1),
            None,
        ),
        (
            "  B sim own / other",
            |r| format!("{:.3} / {:.3}", r.similarity_b.0, r.similarity_b.1),
            None,
        ),
        (
            "  pooled (unbalanced)",
            |r| f(r.form_adherence_pooled),
            None,
        ),
        ("verbatim-copy share", |r| f(r.verbatim_copy_share), None),
        (
            "density match (±30%)",
            |r| f(r.density_match_rate),
            Some(|r| r.reference_density_match_rate),
        ),
        (
            "onset-grid agreement",
            |r| f(r.onset_grid_agreement),
            Some(|r| r.reference_onset_grid_agreement),
        ),
        (
            "window-edge piling",
            |r| f(r.window_edge_piling),
            Some(|r| r.reference_window_edge_piling),
        ),
        ("pitch-class distance", |r| f(r.pitch_class_distance), None),
        (
            "note-density distance",
            |r| f(r.note_density_distance),
            None,
        ),
        ("valid rate", |r| f(r.valid_rate), None),
        ("grammar-clean rate", |r| f(r.grammar_clean_rate), None),
        ("grammar error rate", |r| f(r.grammar_error_rate), None),
        (
            "seconds (nll + gen)",
            |r| format!("{:.0} + {:.0}", r.nll_seconds, r.generation_seconds),
            None,
        ),
    ];
    s.push_str(&format!("{:<24}", "metric"));
    for r in results {
        s.push_str(&format!(
            " {:>22}",
            format!("{} ({})", short(&r.model), r.kind)
        ));
    }
    s.push_str(&format!(" {:>10}\n", "reference"));
    for (name, val, reference) in rows {
        s.push_str(&format!("{name:<24}"));
        for r in results {
            s.push_str(&format!(" {:>22}", val(r)));
        }
        match (reference, results.first()) {
            (Some(g), Some(r)) => s.push_str(&format!(" {:>10.4}", g(r))),
            _ => s.push_str(&format!(" {:>10}", "")),
        }
        s.push('\n');
    }
    if let Some(r) = results.first() {
        s.push_str(&format!(
            "{} pieces for NLL ({} target tokens), {} generations each ({} from snippets A and B, {} backend; interval: percentile bootstrap over generations, {} resamples, seed {}; reference adherence: the pieces' own {} repeat sections); {} files skipped\n",
            r.pieces,
            r.target_tokens,
            r.generations,
            r.form,
            r.generation_backend,
            BOOTSTRAP_RESAMPLES,
            BOOTSTRAP_SEED,
            r.reference_repeats,
            r.skipped_files
        ));
    }
    s
}

pub(super) fn short(path: &str) -> String {
    let p = PathBuf::from(path);
    p.file_name()
        .map_or_else(|| path.to_string(), |n| n.to_string_lossy().into_owned())
}
