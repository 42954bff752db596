//! `staria info`: a checkpoint's description, without loading its weights. It names the
//! tokenizer's instruments and which voice each is in the live modes: the first is the
//! performer's; a second, when there is one, is the accompaniment's
//! (`Tokenizer::accompaniment_instrument`); a one-instrument model accompanies with its one
//! instrument limited to a pitch range.
//!
//! `staria models`: the built-in models (`staria_engine::default_model::BUILTIN_MODELS`) with
//! their kind, preset, size and which is the default, read from the bytes built into the binary
//! (nothing is unpacked).

use staria_engine::default_model::{BUILTIN_MODELS, MODEL_ENV};
use staria_models::ModelConfig;

use crate::args::{InfoArgs, ModelsArgs};
use crate::load::model_dir;
use crate::{Failure, bad};

pub(crate) fn cmd_models(a: ModelsArgs) -> Result<(), Failure> {
    let mut rows = Vec::new();
    for m in &BUILTIN_MODELS {
        let config = m.config().map_err(bad)?;
        rows.push(serde_json::json!({
            "name": m.name,
            "kind": config.kind().to_string(),
            "preset": config.preset,
            "weights_dtype": config.weights_dtype,
            "bytes": m.size_bytes(),
            "default": m.is_default(),
        }));
    }
    if a.json {
        println!("{}", serde_json::Value::Array(rows));
        return Ok(());
    }
    let width = BUILTIN_MODELS
        .iter()
        .map(|m| m.name.len())
        .max()
        .unwrap_or(0)
        .max(4);
    println!("{:width$}  kind     preset  size", "name");
    for r in &rows {
        println!(
            "{:width$}  {:7}  {:6}  {:.1} MB ({}){}",
            r["name"].as_str().unwrap_or_default(),
            r["kind"].as_str().unwrap_or_default(),
            r["preset"].as_str().unwrap_or_default(),
            r["bytes"].as_u64().unwrap_or(0) as f64 / 1e6,
            r["weights_dtype"].as_str().unwrap_or_default(),
            if r["default"] == true {
                "  default"
            } else {
                ""
            }
        );
    }
    println!(
        "choose one with --model NAME (or ${MODEL_ENV}=NAME); a folder of that name, if one exists, wins"
    );
    Ok(())
}

pub(crate) fn cmd_info(a: InfoArgs) -> Result<(), Failure> {
    let dir = model_dir(&a.model.model)?;
    // Config and tokenizer only (checked against each other); the weights are not loaded.
    let (config, tok) = staria_models::checkpoint::load_config(&dir)?;
    let instrument_name = |i: u8| {
        tok.config()
            .instruments
            .get(i as usize)
            .cloned()
            .unwrap_or_default()
    };
    let weights = dir.join(staria_models::checkpoint::WEIGHTS_FILE);
    let params = staria_models::checkpoint::count_parameters(&weights)?;
    let dc = config.model.decoder();
    // A Staria model's snippet encoder and where the decoder reads it (none for a decoder-only).
    let staria = match &config.model {
        ModelConfig::Staria(sc) => Some(sc),
        ModelConfig::Decoder(_) => None,
    };
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
        "encoder": staria.map(|sc| serde_json::json!({
            "dim": sc.encoder.dim,
            "layers": sc.encoder.n_layers,
            "heads": sc.encoder.n_heads,
            "latents": sc.encoder.n_latents,
            "max_snippet_tokens": sc.encoder.max_seq_len,
            "cross_attention_sites": sc.n_sites(),
        })),
        "vocab_size": tok.vocab_size(),
        "instruments": tok.config().instruments,
        "performer_instrument": instrument_name(tok.performer_instrument()),
        "accompaniment_instrument": tok.accompaniment_instrument().map(instrument_name),
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
    if let Some(sc) = staria {
        let e = &sc.encoder;
        println!(
            "encoder     dim {}, {} layers, {} heads, {} latents per snippet of up to {} tokens; \
             read by {} cross-attention sites in the decoder's {} layers",
            e.dim,
            e.n_layers,
            e.n_heads,
            e.n_latents,
            e.max_seq_len,
            sc.n_sites(),
            dc.n_layers,
        );
    }
    println!("vocabulary  {} tokens", tok.vocab_size());
    let performer = instrument_name(tok.performer_instrument());
    match tok.accompaniment_instrument() {
        Some(a) => {
            let others: Vec<&str> = tok
                .config()
                .instruments
                .iter()
                .skip(a as usize + 1)
                .map(String::as_str)
                .collect();
            let others = if others.is_empty() {
                String::new()
            } else {
                format!("; also {}", others.join(" "))
            };
            println!(
                "instruments {performer} (performer), {} (accompaniment voice){others}",
                instrument_name(a)
            );
        }
        None => println!(
            "instruments {performer} (one voice: the accompaniment is its notes in a pitch range)"
        ),
    }
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
