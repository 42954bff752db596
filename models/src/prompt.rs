//! What a generation request hands to a model: the prompt in both layouts, since the
//! decoder-only baseline reads snippets inline while Staria's encoder reads them apart; and the
//! snippet follower both samplers (the engine's and the trainer's evaluation) use to keep a
//! generated section near its snippet.

use crate::song::SectionLabel;
use crate::tokenizer::{TokenKind, Tokenizer};

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

impl Prompt {
    /// The snippet tokens of section `label` (empty when it has none).
    pub fn snippet(&self, label: SectionLabel) -> &[u32] {
        self.snippets
            .iter()
            .find(|(l, _)| *l == label)
            .map_or(&[], |(_, t)| t.as_slice())
    }
}

/// Snippet following: where a generated section stands in its snippet, so a sampler can favour
/// the token the snippet has next (a logit bonus, `bias`). After the section's tag it is at
/// position 0; each generated token that takes the snippet's next token's place (the same
/// token, or one of the same kind: another note, onset, duration) moves it on, so the section
/// keeps its snippet's shape even where it changes notes. With section windows
/// (`TokenizerConfig::section_windows`) the snippet's tokens are the section's own time line and
/// every token is favoured; in the legacy layout onsets are shifted by the section's phase in
/// its window, so only notes and durations are. Allocates only when a longer snippet than any
/// before is started.
#[derive(Debug, Clone, Default)]
pub struct SnippetFollower {
    /// The snippet being followed (empty: none).
    snippet: Vec<u32>,
    /// Index of its next token.
    pos: usize,
}

impl SnippetFollower {
    /// Starts following `snippet` (a new section; empty: nothing to follow).
    pub fn start(&mut self, snippet: &[u32]) {
        self.snippet.clear();
        self.snippet.extend_from_slice(snippet);
        self.pos = 0;
    }

    /// Stops following (a section without a snippet, or a continuation).
    pub fn stop(&mut self) {
        self.snippet.clear();
        self.pos = 0;
    }

    /// The token to favour next, if the snippet has one left.
    pub fn next(&self) -> Option<u32> {
        self.snippet.get(self.pos).copied()
    }

    /// Adds `bias` to the logit of the snippet's next token when the sampler may draw it (its
    /// logit is finite, i.e. not masked) and the layout lines it up (see the type's docs).
    pub fn bias(&self, tok: &Tokenizer, logits: &mut [f32], bias: f32) {
        let Some(want) = self.next() else { return };
        let aligned =
            tok.config().section_windows || !matches!(tok.kind(want), TokenKind::Onset { .. });
        if let Some(l) = logits.get_mut(want as usize)
            && bias != 0.0
            && aligned
            && l.is_finite()
        {
            *l += bias;
        }
    }

    /// Reads a token fed to the model.
    pub fn advance(&mut self, tok: &Tokenizer, id: u32) {
        let Some(want) = self.next() else { return };
        let class = |k: TokenKind| match k {
            TokenKind::Note { .. } | TokenKind::Drum { .. } => 0,
            TokenKind::Onset { .. } => 1,
            TokenKind::Dur { .. } => 2,
            TokenKind::TimeShift => 3,
            _ => 4,
        };
        if id == want || class(tok.kind(id)) == class(tok.kind(want)) {
            self.pos += 1;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::tokenizer::TokenizerConfig;

    fn ids(t: &Tokenizer, s: &str) -> Vec<u32> {
        t.ids_of(&s.split_whitespace().collect::<Vec<_>>()).unwrap()
    }

    #[test]
    fn the_follower_favours_the_snippets_next_token_and_keeps_its_shape() {
        for section_windows in [false, true] {
            let t = Tokenizer::new(TokenizerConfig {
                section_windows,
                ..TokenizerConfig::default()
            })
            .unwrap();
            let snippet = ids(
                &t,
                "piano:60:80 onset:0 dur:100 piano:64:80 onset:500 dur:100",
            );
            let mut f = SnippetFollower::default();
            let mut logits = vec![0.0f32; t.vocab_size()];
            f.bias(&t, &mut logits, 3.0);
            assert!(logits.iter().all(|&l| l == 0.0), "nothing to follow yet");
            f.start(&snippet);
            f.bias(&t, &mut logits, 3.0);
            assert_eq!(logits[snippet[0] as usize], 3.0);
            // A different note takes the first note's place: the onset comes next.
            f.advance(&t, ids(&t, "piano:62:80")[0]);
            logits.fill(0.0);
            f.bias(&t, &mut logits, 3.0);
            // Legacy onsets are shifted by the section's phase: not favoured there.
            let want = if section_windows { 3.0 } else { 0.0 };
            assert_eq!(logits[snippet[1] as usize], want, "{section_windows}");
            // A masked token is left masked.
            logits[snippet[1] as usize] = f32::NEG_INFINITY;
            f.bias(&t, &mut logits, 3.0);
            assert_eq!(logits[snippet[1] as usize], f32::NEG_INFINITY);
            // `<T>` in place of an onset does not move it on; the onset does.
            f.advance(&t, t.time_shift_id());
            assert_eq!(f.next(), Some(snippet[1]));
            for &id in &snippet[1..] {
                f.advance(&t, id);
            }
            assert_eq!(f.next(), None);
            f.start(&[]);
            assert_eq!(f.next(), None);
        }
    }
}
