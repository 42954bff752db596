//! What a generation request hands to a model: the prompt in both layouts, since the
//! decoder-only baseline reads snippets inline while Staria's encoder reads them apart.

use crate::song::SectionLabel;

/// A tokenized prompt, built by `Tokenizer::build_prompt`.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Prompt {
    /// Baseline layout: `[style] <PROMPT_START> <FORM> <A_SECTION> snippet A ... <PROMPT_END> <S>`.
    pub inline: Vec<u32>,
    /// Staria decoder layout: the same with the snippet tokens left out (section tags kept).
    pub decoder: Vec<u32>,
    /// Each captured section's snippet tokens (times relative to the snippet start), in A..D order.
    pub snippets: Vec<(SectionLabel, Vec<u32>)>,
}
