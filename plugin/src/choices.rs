//! The enum parameters' choices: the mode, sections, forms, styles, key roots and scales.

use nice_plug::prelude::Enum;
use staria_models::SectionLabel;

/// What Staria does with the musician's playing (the *Mode* parameter, issue 11).
///
/// Saved by the variant IDs (`#[id]`), not by position, so the list can grow or be reordered
/// without changing what a saved project means; the IDs must never change. *Sections* is the
/// default: projects saved before the parameter existed (their state has no `live_mode`) open
/// in it and behave as before.
#[derive(Enum, Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum ModeChoice {
    /// Capture sections and play generated ones on triggers (the behaviour before the live
    /// modes).
    #[default]
    #[id = "sections"]
    #[name = "Sections"]
    Sections,
    /// The model listens and answers after a handover, until the musician plays again.
    #[id = "call-and-response"]
    #[name = "Call and response"]
    CallAndResponse,
    /// The model plays a second voice along with the musician.
    #[id = "accompany"]
    #[name = "Accompany"]
    Accompany,
}

impl ModeChoice {
    /// The engine's live mode, `None` for *Sections*.
    pub fn live(self) -> Option<staria_engine::live::LiveMode> {
        match self {
            Self::Sections => None,
            Self::CallAndResponse => Some(staria_engine::live::LiveMode::Respond),
            Self::Accompany => Some(staria_engine::live::LiveMode::Accompany),
        }
    }
}

#[derive(Enum, Debug, Clone, Copy, PartialEq, Eq)]
pub enum SectionChoice {
    #[name = "A"]
    A,
    #[name = "B"]
    B,
    #[name = "C"]
    C,
    #[name = "D"]
    D,
}

impl SectionChoice {
    pub fn label(self) -> SectionLabel {
        match self {
            Self::A => SectionLabel::A,
            Self::B => SectionLabel::B,
            Self::C => SectionLabel::C,
            Self::D => SectionLabel::D,
        }
    }
}

/// The tokenizer's default forms (`TokenizerConfig::default().forms`).
#[derive(Enum, Debug, Clone, Copy, PartialEq, Eq)]
pub enum FormChoice {
    #[name = "A"]
    A,
    #[name = "AA"]
    Aa,
    #[name = "AB"]
    Ab,
    #[name = "AAB"]
    Aab,
    #[name = "ABA"]
    Aba,
    #[name = "ABB"]
    Abb,
    #[name = "ABC"]
    Abc,
    #[name = "ABAB"]
    Abab,
    #[name = "ABAC"]
    Abac,
    #[name = "ABCA"]
    Abca,
    #[name = "ABCB"]
    Abcb,
    #[name = "ABCD"]
    Abcd,
    #[name = "AABB"]
    Aabb,
    #[name = "AABA"]
    Aaba,
    #[name = "AABC"]
    Aabc,
    #[name = "ABCC"]
    Abcc,
    #[name = "AABAAB"]
    Aabaab,
}

impl FormChoice {
    pub fn letters(self) -> &'static str {
        match self {
            Self::A => "A",
            Self::Aa => "AA",
            Self::Ab => "AB",
            Self::Aab => "AAB",
            Self::Aba => "ABA",
            Self::Abb => "ABB",
            Self::Abc => "ABC",
            Self::Abab => "ABAB",
            Self::Abac => "ABAC",
            Self::Abca => "ABCA",
            Self::Abcb => "ABCB",
            Self::Abcd => "ABCD",
            Self::Aabb => "AABB",
            Self::Aaba => "AABA",
            Self::Aabc => "AABC",
            Self::Abcc => "ABCC",
            Self::Aabaab => "AABAAB",
        }
    }

    /// The section at `i` (cycling through the form).
    pub fn section_at(self, i: usize) -> SectionLabel {
        let letters = self.letters().as_bytes();
        SectionLabel::from_letter(letters[i % letters.len()] as char).unwrap_or(SectionLabel::A)
    }
}

/// The tokenizer's default styles (`TokenizerConfig::default().styles`) and "none".
#[derive(Enum, Debug, Clone, Copy, PartialEq, Eq)]
pub enum StyleChoice {
    #[name = "None"]
    None,
    #[name = "Bach"]
    Bach,
    #[name = "Chorale"]
    Chorale,
    #[name = "Fiddle tune"]
    FiddleTune,
    #[name = "Reel"]
    Reel,
    #[name = "Jig"]
    Jig,
    #[name = "Hornpipe"]
    Hornpipe,
    #[name = "Folk song"]
    FolkSong,
}

impl StyleChoice {
    /// The tokenizer's style name, `None` for no style token.
    pub fn token_name(self) -> Option<&'static str> {
        match self {
            Self::None => None,
            Self::Bach => Some("bach"),
            Self::Chorale => Some("chorale"),
            Self::FiddleTune => Some("fiddle_tune"),
            Self::Reel => Some("reel"),
            Self::Jig => Some("jig"),
            Self::Hornpipe => Some("hornpipe"),
            Self::FolkSong => Some("folk_song"),
        }
    }

    /// The engine's style setting: 0 = none, `n` = the default tokenizer's `n`th style (the
    /// variants follow that list; a test checks).
    pub fn engine_code(self) -> u8 {
        self.to_index() as u8
    }
}

#[derive(Enum, Debug, Clone, Copy, PartialEq, Eq)]
pub enum RootChoice {
    #[name = "C"]
    C,
    #[name = "C#/Db"]
    Cs,
    #[name = "D"]
    D,
    #[name = "D#/Eb"]
    Ds,
    #[name = "E"]
    E,
    #[name = "F"]
    F,
    #[name = "F#/Gb"]
    Fs,
    #[name = "G"]
    G,
    #[name = "G#/Ab"]
    Gs,
    #[name = "A"]
    A,
    #[name = "A#/Bb"]
    As,
    #[name = "B"]
    B,
}

#[derive(Enum, Debug, Clone, Copy, PartialEq, Eq)]
pub enum ScaleChoice {
    #[name = "Chromatic (off)"]
    Chromatic,
    #[name = "Major"]
    Major,
    #[name = "Natural minor"]
    NaturalMinor,
    #[name = "Harmonic minor"]
    HarmonicMinor,
    #[name = "Melodic minor"]
    MelodicMinor,
    #[name = "Dorian"]
    Dorian,
    #[name = "Phrygian"]
    Phrygian,
    #[name = "Lydian"]
    Lydian,
    #[name = "Mixolydian"]
    Mixolydian,
    #[name = "Major pentatonic"]
    MajorPentatonic,
    #[name = "Minor pentatonic"]
    MinorPentatonic,
    #[name = "Blues"]
    Blues,
}

impl ScaleChoice {
    /// Semitones of the scale above its root.
    fn intervals(self) -> &'static [u8] {
        match self {
            Self::Chromatic => &[0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11],
            Self::Major => &[0, 2, 4, 5, 7, 9, 11],
            Self::NaturalMinor => &[0, 2, 3, 5, 7, 8, 10],
            Self::HarmonicMinor => &[0, 2, 3, 5, 7, 8, 11],
            Self::MelodicMinor => &[0, 2, 3, 5, 7, 9, 11],
            Self::Dorian => &[0, 2, 3, 5, 7, 9, 10],
            Self::Phrygian => &[0, 1, 3, 5, 7, 8, 10],
            Self::Lydian => &[0, 2, 4, 6, 7, 9, 11],
            Self::Mixolydian => &[0, 2, 4, 5, 7, 9, 10],
            Self::MajorPentatonic => &[0, 2, 4, 7, 9],
            Self::MinorPentatonic => &[0, 3, 5, 7, 10],
            Self::Blues => &[0, 3, 5, 6, 7, 10],
        }
    }

    /// Allowed pitch classes as a 12-bit mask (bit 0 = C).
    pub fn key_mask(self, root: RootChoice) -> u16 {
        let root = root as u8;
        self.intervals()
            .iter()
            .fold(0u16, |m, &i| m | 1 << ((root + i) % 12))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The mode is saved by these IDs: changing one silently changes what saved projects do.
    #[test]
    fn mode_ids_are_stable() {
        assert_eq!(
            ModeChoice::ids(),
            Some(&["sections", "call-and-response", "accompany"][..])
        );
        assert_eq!(ModeChoice::default(), ModeChoice::Sections);
        assert_eq!(ModeChoice::Sections.live(), None);
        assert_eq!(
            ModeChoice::Accompany.live(),
            Some(staria_engine::live::LiveMode::Accompany)
        );
    }

    #[test]
    fn key_masks() {
        assert_eq!(ScaleChoice::Chromatic.key_mask(RootChoice::Fs), 0xFFF);
        // C major: C D E F G A B.
        assert_eq!(ScaleChoice::Major.key_mask(RootChoice::C), 0b1010_1011_0101);
        // A natural minor has the same notes as C major.
        assert_eq!(
            ScaleChoice::NaturalMinor.key_mask(RootChoice::A),
            0b1010_1011_0101
        );
        // G major adds F#, drops F.
        let g = ScaleChoice::Major.key_mask(RootChoice::G);
        assert_ne!(g & 1 << 6, 0);
        assert_eq!(g & 1 << 5, 0);
    }

    #[test]
    fn styles_follow_the_default_tokenizer() {
        let styles = staria_models::TokenizerConfig::default().styles;
        assert_eq!(StyleChoice::variants().len(), styles.len() + 1);
        for i in 0..StyleChoice::variants().len() {
            let choice = StyleChoice::from_index(i);
            let code = choice.engine_code() as usize;
            assert_eq!(
                choice.token_name(),
                code.checked_sub(1).map(|n| styles[n].as_str())
            );
        }
    }

    #[test]
    fn forms_cycle_and_match_their_names() {
        assert_eq!(FormChoice::Aaba.letters(), "AABA");
        assert_eq!(FormChoice::Aaba.section_at(2), SectionLabel::B);
        assert_eq!(FormChoice::Aaba.section_at(4), SectionLabel::A);
        for i in 0..FormChoice::variants().len() {
            let f = FormChoice::from_index(i);
            assert_eq!(FormChoice::variants()[i], f.letters());
        }
    }
}
