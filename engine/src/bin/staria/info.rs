//! `staria info`: a checkpoint's description, without loading its weights.

use std::path::Path;

use crate::args::InfoArgs;
use crate::load::model_dir;
use crate::{Failure, bad};

pub(crate) fn cmd_info(a: InfoArgs) -> Result<(), Failure> {
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
pub(crate) fn count_parameters(path: &Path) -> Result<u64, Failure> {
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
