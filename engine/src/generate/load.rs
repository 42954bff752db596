//! Building a [`Generator`]: loading a checkpoint folder, the fast decoder or a candle model,
//! and the accessors that say what was loaded (backend, kind, weights, cache position).

use std::path::Path;

use candle_core::Device;
use staria_models::checkpoint::CheckpointConfig;
use staria_models::fast::{FastDecoder, WeightFormat};
use staria_models::model::{AnyModel, ModelKind};
use staria_models::prompt::SnippetFollower;
use staria_models::tokenizer::Tokenizer;

use super::{Backend, Generator, GeneratorOptions, Net, Result, request};

impl Generator {
    /// Loads a checkpoint folder (`config.json`, `tokenizer.json`, `model.safetensors`) with the
    /// default options: the fast decoder with f16 weights on the CPU, candle elsewhere.
    pub fn load(dir: &Path, device: &Device) -> Result<Generator> {
        Generator::load_with(dir, device, &GeneratorOptions::default())
    }

    /// Loads a checkpoint folder with a chosen backend and weight format. The fast backend
    /// needs a CPU device.
    pub fn load_with(dir: &Path, device: &Device, opts: &GeneratorOptions) -> Result<Generator> {
        use staria_models::checkpoint;
        if opts.backend.resolve(device) == Backend::Candle {
            let ckpt = checkpoint::load(dir, device)?;
            let mut g = Generator::new(ckpt.model, ckpt.tokenizer)?;
            g.checkpoint = Some(ckpt.config);
            return Ok(g);
        }
        if !device.is_cpu() {
            return Err(request(
                "the fast backend runs on the CPU; use the cpu device or the candle backend",
            ));
        }
        let (config, tok) = checkpoint::load_config(dir)?;
        let tensors = checkpoint::load_weights(dir, &config.model, &Device::Cpu)?;
        let weights = dir.join(checkpoint::WEIGHTS_FILE);
        let at_weights =
            |e: staria_models::Error| staria_models::Error::checkpoint(&weights, e.to_string());
        // The candle model checks every tensor against the config, both ways (cheap: it shares
        // the tensors); for Staria it also encodes the snippets.
        let candle =
            checkpoint::build_model(&config.model, &tensors, &Device::Cpu).map_err(at_weights)?;
        let encoder = match config.kind() {
            ModelKind::Decoder => None,
            ModelKind::Staria => Some(candle),
        };
        let fast = FastDecoder::from_checkpoint_tensors(&config.model, opts.weights, &tensors)
            .map_err(at_weights)?;
        drop(tensors);
        let mut g = Generator::new_fast(fast, encoder, tok)?;
        g.checkpoint = Some(config);
        Ok(g)
    }

    /// A generator on the fast backend. `encoder` is the Staria model whose snippet encoder
    /// feeds the fast decoder's cross-attention sites: required when `fast` has sites, refused
    /// otherwise (a decoder-only model reads its snippets inline).
    pub fn new_fast(
        fast: FastDecoder,
        encoder: Option<AnyModel>,
        tok: Tokenizer,
    ) -> Result<Generator> {
        let cfg = fast.config();
        if cfg.vocab_size != tok.vocab_size() {
            return Err(request(format!(
                "model has a vocabulary of {} tokens but the tokenizer has {}; they are not from the same checkpoint",
                cfg.vocab_size,
                tok.vocab_size()
            )));
        }
        let kind = match (&encoder, cfg.n_cross_sites()) {
            (None, 0) => ModelKind::Decoder,
            (Some(m), sites) if sites > 0 => {
                let Some(st) = m.staria() else {
                    return Err(request(
                        "the fast decoder has cross-attention sites but the encoder model is not a Staria model",
                    ));
                };
                let sc = st.config();
                if sc.encoder.dim != cfg.latent_dim()
                    || sc.n_sections * sc.encoder.n_latents > cfg.max_latents
                    || sc.n_sites() != sites
                {
                    return Err(request(format!(
                        "the Staria encoder (dim {}, {} x {} latents, {} sites) does not fit the fast decoder (latent_dim {}, max_latents {}, {} sites)",
                        sc.encoder.dim,
                        sc.n_sections,
                        sc.encoder.n_latents,
                        sc.n_sites(),
                        cfg.latent_dim(),
                        cfg.max_latents,
                        sites
                    )));
                }
                ModelKind::Staria
            }
            (None, _) => {
                return Err(request(
                    "the fast decoder has cross-attention sites: pass the Staria model for its snippet encoder",
                ));
            }
            (Some(_), _) => {
                return Err(request(
                    "a decoder-only fast decoder takes no encoder model (snippets are read inline)",
                ));
            }
        };
        let mut fast = fast;
        fast.set_tokenizer(&tok);
        let logits = vec![0.0; tok.vocab_size()];
        let cached = Vec::with_capacity(fast.max_seq_len());
        Ok(Generator {
            net: Net::Fast {
                fast: Box::new(fast),
                kind,
                encoder: encoder.map(Box::new),
                cached,
                cached_snippets: Vec::new(),
            },
            tok,
            spare: logits.clone(),
            logits,
            follower: SnippetFollower::default(),
            checkpoint: None,
        })
    }

    /// Pairs a candle model with its tokenizer (the candle backend); they must agree on the
    /// vocabulary size.
    pub fn new(mut model: AnyModel, tok: Tokenizer) -> Result<Generator> {
        if model.vocab_size() != tok.vocab_size() {
            return Err(request(format!(
                "model has a vocabulary of {} tokens but the tokenizer has {}; they are not from the same checkpoint",
                model.vocab_size(),
                tok.vocab_size()
            )));
        }
        model.set_tokenizer(&tok);
        let logits = vec![0.0; tok.vocab_size()];
        Ok(Generator {
            net: Net::Candle(Box::new(model)),
            tok,
            spare: logits.clone(),
            logits,
            follower: SnippetFollower::default(),
            checkpoint: None,
        })
    }

    /// The checkpoint's config, when loaded with `Generator::load`.
    pub fn checkpoint_config(&self) -> Option<&CheckpointConfig> {
        self.checkpoint.as_ref()
    }

    pub fn tokenizer(&self) -> &Tokenizer {
        &self.tok
    }

    /// The candle model that decodes, on the candle backend; `None` on the fast backend.
    pub fn model(&self) -> Option<&AnyModel> {
        match &self.net {
            Net::Candle(m) => Some(m),
            Net::Fast { .. } => None,
        }
    }

    /// See [`model`](Self::model).
    pub fn model_mut(&mut self) -> Option<&mut AnyModel> {
        match &mut self.net {
            Net::Candle(m) => Some(m),
            Net::Fast { .. } => None,
        }
    }

    /// The fast decoder, on the fast backend.
    pub fn fast(&self) -> Option<&FastDecoder> {
        match &self.net {
            Net::Candle(_) => None,
            Net::Fast { fast, .. } => Some(fast),
        }
    }

    pub fn backend(&self) -> Backend {
        match &self.net {
            Net::Candle(_) => Backend::Candle,
            Net::Fast { .. } => Backend::Fast,
        }
    }

    /// The fast backend's weight format; `None` on candle.
    pub fn weights(&self) -> Option<WeightFormat> {
        self.fast().map(FastDecoder::format)
    }

    /// Decoder-only or Staria.
    pub fn kind(&self) -> ModelKind {
        match &self.net {
            Net::Candle(m) => m.kind(),
            Net::Fast { kind, .. } => *kind,
        }
    }

    /// Tokens in the model's cache.
    pub fn position(&self) -> usize {
        match &self.net {
            Net::Candle(m) => m.position(),
            Net::Fast { fast, .. } => fast.position(),
        }
    }

    /// The model's context length.
    pub fn max_seq_len(&self) -> usize {
        match &self.net {
            Net::Candle(m) => m.max_seq_len(),
            Net::Fast { fast, .. } => fast.max_seq_len(),
        }
    }
}
