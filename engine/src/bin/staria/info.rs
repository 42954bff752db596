//! `staria info`: a checkpoint's description, without loading its weights.

use crate::Failure;
use crate::args::InfoArgs;
use crate::load::model_dir;

pub(crate) fn cmd_info(a: InfoArgs) -> Result<(), Failure> {
    let dir = model_dir(&a.model.model)?;
    // Config and tokenizer only (checked against each other); the weights are not loaded.
    let (config, tok) = staria_models::checkpoint::load_config(&dir)?;
    let weights = dir.join(staria_models::checkpoint::WEIGHTS_FILE);
    let params = staria_models::checkpoint::count_parameters(&weights)?;
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
