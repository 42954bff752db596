//! What a generation request hands to a model: the prompt in both layouts, since the
//! decoder-only baseline reads snippets inline while Staria's encoder reads them apart; and the
//! snippet follower both samplers (the engine's and the trainer's evaluation) use to keep a
//! generated section near its snippet.

use crate::song::SectionLabel;
use crate::tokenizer::{StreamDecoder, TokenKind, Tokenizer};

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
/// every token is favoured as it is. In the legacy layout a section starts anywhere in a time
/// window, so the snippet's `<T>`s are not followed and each of its onsets is moved to the
/// body's time line: the onset token that puts the note at the section's start (`origin_ms`)
/// plus the note's time in the snippet, when that lies in the current window and not before its
/// latest onset (else no onset is favoured, and the model's `<T>`s carry time on). Allocates
/// only when a longer snippet than any before is started.
#[derive(Debug, Clone, Default)]
pub struct SnippetFollower {
    /// The snippet tokens being followed (empty: none); without `<T>`s in the legacy layout.
    snippet: Vec<u32>,
    /// Parallel to `snippet`: each token's time (ms) from the snippet's start, as piece time
    /// from the section's start (the time of the latest onset up to it).
    times_ms: Vec<f64>,
    /// Piece time (ms) where the section starts: the snippet's time 0.
    origin_ms: f64,
    /// Index of its next token.
    pos: usize,
}

impl SnippetFollower {
    /// Starts following `snippet` (a new section starting at piece time `origin_ms`; empty:
    /// nothing to follow).
    pub fn start(&mut self, tok: &Tokenizer, snippet: &[u32], origin_ms: f64) {
        self.snippet.clear();
        self.times_ms.clear();
        self.origin_ms = origin_ms;
        self.pos = 0;
        let legacy = !tok.config().section_windows;
        let window_ms = tok.config().window_ms as f64;
        let (mut window_start, mut onset) = (0.0, 0.0);
        for &id in snippet {
            match tok.kind(id) {
                TokenKind::TimeShift => {
                    window_start += window_ms;
                    onset = 0.0;
                    if legacy {
                        continue;
                    }
                }
                TokenKind::Onset { ms } => onset = ms as f64,
                _ => {}
            }
            self.snippet.push(id);
            self.times_ms.push(window_start + onset);
        }
    }

    /// Stops following (a section without a snippet, or a continuation).
    pub fn stop(&mut self) {
        self.snippet.clear();
        self.times_ms.clear();
        self.pos = 0;
    }

    /// The snippet's next token, if it has one left (as the snippet has it; see [`want`]).
    ///
    /// [`want`]: Self::want
    pub fn next(&self) -> Option<u32> {
        self.snippet.get(self.pos).copied()
    }

    /// The token to favour after the body tokens `dec` has read: the snippet's next token, in
    /// the legacy layout an onset moved to the body's time line (see the type's docs).
    pub fn want(&self, tok: &Tokenizer, dec: &StreamDecoder) -> Option<u32> {
        let next = self.next()?;
        if tok.config().section_windows || !matches!(tok.kind(next), TokenKind::Onset { .. }) {
            return Some(next);
        }
        let in_window = self.origin_ms + self.times_ms[self.pos] - dec.window_start_ms() as f64;
        if in_window < dec.min_onset_ms() as f64 {
            return None;
        }
        tok.onset_id(in_window)
    }

    /// Adds `bias` to the logit of the token to favour ([`want`](Self::want)) when the sampler
    /// may draw it (its logit is finite, i.e. not masked).
    pub fn bias(&self, tok: &Tokenizer, dec: &StreamDecoder, logits: &mut [f32], bias: f32) {
        if bias == 0.0 {
            return;
        }
        if let Some(want) = self.want(tok, dec)
            && let Some(l) = logits.get_mut(want as usize)
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
            let mut dec = StreamDecoder::new();
            let mut f = SnippetFollower::default();
            let mut logits = vec![0.0f32; t.vocab_size()];
            f.bias(&t, &dec, &mut logits, 3.0);
            assert!(logits.iter().all(|&l| l == 0.0), "nothing to follow yet");
            f.start(&t, &snippet, 0.0);
            f.bias(&t, &dec, &mut logits, 3.0);
            assert_eq!(logits[snippet[0] as usize], 3.0);
            // A different note takes the first note's place: the onset comes next.
            let other = ids(&t, "piano:62:80")[0];
            f.advance(&t, other);
            dec.push(&t, other);
            logits.fill(0.0);
            f.bias(&t, &dec, &mut logits, 3.0);
            // The section starts at the window's start: both layouts favour the snippet's onset.
            assert_eq!(logits[snippet[1] as usize], 3.0, "{section_windows}");
            // A masked token is left masked.
            logits[snippet[1] as usize] = f32::NEG_INFINITY;
            f.bias(&t, &dec, &mut logits, 3.0);
            assert_eq!(logits[snippet[1] as usize], f32::NEG_INFINITY);
            // `<T>` in place of an onset does not move it on; the onset does.
            f.advance(&t, t.time_shift_id());
            assert_eq!(f.next(), Some(snippet[1]));
            for &id in &snippet[1..] {
                f.advance(&t, id);
            }
            assert_eq!(f.next(), None);
            f.start(&t, &[], 0.0);
            assert_eq!(f.next(), None);
        }
    }

    #[test]
    fn legacy_onsets_follow_the_snippet_on_the_bodys_time_line() {
        let t = Tokenizer::new(TokenizerConfig::default()).unwrap();
        let window_ms = t.config().window_ms as f64;
        // A snippet crossing its own window: its `<T>` is not followed, its notes keep their
        // times from the snippet's start.
        let snippet = ids(
            &t,
            "piano:60:80 onset:4500 dur:100 <T> piano:64:80 onset:250 dur:100",
        );
        let mut f = SnippetFollower::default();
        // The section starts 1,000 ms into the body's second window.
        let origin = window_ms + 1000.0;
        f.start(&t, &snippet, origin);
        let mut dec = StreamDecoder::new();
        for id in ids(
            &t,
            "piano:55:80 onset:3000 dur:100 <T> piano:57:80 onset:900 dur:100",
        ) {
            dec.push(&t, id);
        }
        let note = ids(&t, "piano:62:80")[0];
        let want_at =
            |f: &SnippetFollower, dec: &StreamDecoder| f.want(&t, dec).map(|id| t.kind(id));
        assert_eq!(f.want(&t, &dec), Some(snippet[0]));
        f.advance(&t, note);
        dec.push(&t, note);
        // 1,000 + 4,500 ms: past this window, so no onset is favoured (the model moves time).
        assert_eq!(want_at(&f, &dec), None);
        let mut next_window = dec;
        next_window.retract_pending();
        for id in [t.time_shift_id(), note] {
            next_window.push(&t, id);
        }
        // In the next window: 5,500 ms after the window start at 5,000 is onset 500.
        assert_eq!(
            want_at(&f, &next_window),
            Some(TokenKind::Onset { ms: 500 }),
            "the snippet's onset on the body's time line"
        );
        f.advance(&t, ids(&t, "onset:500")[0]);
        f.advance(&t, ids(&t, "dur:100")[0]);
        // The snippet's `<T>` is skipped: its next note comes next, then 1,000 + 5,250.
        assert_eq!(f.next(), Some(snippet[4]));
        f.advance(&t, note);
        let mut third = StreamDecoder::new();
        for id in ids(&t, "<T> <T> piano:55:80 onset:1000 dur:100") {
            third.push(&t, id);
        }
        third.push(&t, note);
        assert_eq!(want_at(&f, &third), Some(TokenKind::Onset { ms: 1250 }));
        // Not before the window's latest onset: nothing favoured rather than a vote for `<T>`.
        let mut late = StreamDecoder::new();
        for id in ids(&t, "<T> <T> piano:55:80 onset:2000 dur:100") {
            late.push(&t, id);
        }
        late.push(&t, note);
        assert_eq!(want_at(&f, &late), None);
    }
}
