//! Keys for the scale constraint: [`ScaleKind`] (intervals from the root, a 12-bit pitch-class
//! mask) and [`Scale`] (a root and a kind), parsed from and printed as names like `D dorian`.

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};

/// A scale as intervals from its root; its pitch classes form a 12-bit mask.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum ScaleKind {
    Major,
    /// Natural minor (aeolian).
    Minor,
    HarmonicMinor,
    /// Ascending melodic minor.
    MelodicMinor,
    Dorian,
    Phrygian,
    Lydian,
    Mixolydian,
    Locrian,
    MajorPentatonic,
    MinorPentatonic,
    Blues,
    WholeTone,
    Chromatic,
}

impl ScaleKind {
    pub const ALL: [ScaleKind; 14] = [
        ScaleKind::Major,
        ScaleKind::Minor,
        ScaleKind::HarmonicMinor,
        ScaleKind::MelodicMinor,
        ScaleKind::Dorian,
        ScaleKind::Phrygian,
        ScaleKind::Lydian,
        ScaleKind::Mixolydian,
        ScaleKind::Locrian,
        ScaleKind::MajorPentatonic,
        ScaleKind::MinorPentatonic,
        ScaleKind::Blues,
        ScaleKind::WholeTone,
        ScaleKind::Chromatic,
    ];

    /// Semitones above the root.
    pub fn intervals(self) -> &'static [u8] {
        match self {
            ScaleKind::Major => &[0, 2, 4, 5, 7, 9, 11],
            ScaleKind::Minor => &[0, 2, 3, 5, 7, 8, 10],
            ScaleKind::HarmonicMinor => &[0, 2, 3, 5, 7, 8, 11],
            ScaleKind::MelodicMinor => &[0, 2, 3, 5, 7, 9, 11],
            ScaleKind::Dorian => &[0, 2, 3, 5, 7, 9, 10],
            ScaleKind::Phrygian => &[0, 1, 3, 5, 7, 8, 10],
            ScaleKind::Lydian => &[0, 2, 4, 6, 7, 9, 11],
            ScaleKind::Mixolydian => &[0, 2, 4, 5, 7, 9, 10],
            ScaleKind::Locrian => &[0, 1, 3, 5, 6, 8, 10],
            ScaleKind::MajorPentatonic => &[0, 2, 4, 7, 9],
            ScaleKind::MinorPentatonic => &[0, 3, 5, 7, 10],
            ScaleKind::Blues => &[0, 3, 5, 6, 7, 10],
            ScaleKind::WholeTone => &[0, 2, 4, 6, 8, 10],
            ScaleKind::Chromatic => &[0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11],
        }
    }

    pub fn name(self) -> &'static str {
        match self {
            ScaleKind::Major => "major",
            ScaleKind::Minor => "minor",
            ScaleKind::HarmonicMinor => "harmonic-minor",
            ScaleKind::MelodicMinor => "melodic-minor",
            ScaleKind::Dorian => "dorian",
            ScaleKind::Phrygian => "phrygian",
            ScaleKind::Lydian => "lydian",
            ScaleKind::Mixolydian => "mixolydian",
            ScaleKind::Locrian => "locrian",
            ScaleKind::MajorPentatonic => "pentatonic",
            ScaleKind::MinorPentatonic => "minor-pentatonic",
            ScaleKind::Blues => "blues",
            ScaleKind::WholeTone => "whole-tone",
            ScaleKind::Chromatic => "chromatic",
        }
    }

    /// Accepts the `name()` spellings plus common aliases ("ionian", "aeolian", "maj", "m").
    pub(super) fn parse(s: &str) -> Option<ScaleKind> {
        let s: String = s.trim().to_ascii_lowercase().replace(['_', ' '], "-");
        Some(match s.as_str() {
            "major" | "maj" | "ionian" => ScaleKind::Major,
            "minor" | "min" | "m" | "aeolian" | "natural-minor" => ScaleKind::Minor,
            "harmonic-minor" => ScaleKind::HarmonicMinor,
            "melodic-minor" => ScaleKind::MelodicMinor,
            "dorian" => ScaleKind::Dorian,
            "phrygian" => ScaleKind::Phrygian,
            "lydian" => ScaleKind::Lydian,
            "mixolydian" => ScaleKind::Mixolydian,
            "locrian" => ScaleKind::Locrian,
            "pentatonic" | "major-pentatonic" => ScaleKind::MajorPentatonic,
            "minor-pentatonic" => ScaleKind::MinorPentatonic,
            "blues" => ScaleKind::Blues,
            "whole-tone" | "wholetone" => ScaleKind::WholeTone,
            "chromatic" => ScaleKind::Chromatic,
            _ => return None,
        })
    }
}

const NOTE_NAMES: [&str; 12] = [
    "C", "C#", "D", "D#", "E", "F", "F#", "G", "G#", "A", "A#", "B",
];

/// A key: root pitch class (0 = C .. 11 = B) and scale kind.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct Scale {
    pub root: u8,
    pub kind: ScaleKind,
}

impl Scale {
    pub fn new(root: u8, kind: ScaleKind) -> Scale {
        Scale {
            root: root % 12,
            kind,
        }
    }

    /// Bit `pc` is set when pitch class `pc` (0 = C) is in the scale.
    pub fn pitch_classes(&self) -> u16 {
        self.kind
            .intervals()
            .iter()
            .fold(0u16, |m, &i| m | 1 << ((self.root as u16 + i as u16) % 12))
    }

    pub fn contains(&self, pitch: u8) -> bool {
        self.pitch_classes() & (1 << (pitch % 12)) != 0
    }
}

impl fmt::Display for Scale {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{} {}",
            NOTE_NAMES[(self.root % 12) as usize],
            self.kind.name()
        )
    }
}

impl FromStr for Scale {
    type Err = String;

    /// "C", "C major", "f#-minor", "Bb:dorian", "Eb mixolydian", "A minor-pentatonic";
    /// "chromatic" alone means C chromatic.
    fn from_str(s: &str) -> Result<Scale, String> {
        let t = s.trim();
        if let Some(kind) = ScaleKind::parse(t).filter(|k| *k == ScaleKind::Chromatic) {
            return Ok(Scale::new(0, kind));
        }
        let bad = || {
            let kinds: Vec<&str> = ScaleKind::ALL.iter().map(|k| k.name()).collect();
            format!(
                "scale {s:?} is not '<root> [<kind>]' with a root like C, F# or Bb and a kind among {}",
                kinds.join(", ")
            )
        };
        let mut chars = t.chars();
        let letter = chars.next().ok_or_else(bad)?.to_ascii_uppercase();
        let base: i32 = match letter {
            'C' => 0,
            'D' => 2,
            'E' => 4,
            'F' => 5,
            'G' => 7,
            'A' => 9,
            'B' => 11,
            _ => return Err(bad()),
        };
        let mut rest = chars.as_str();
        let mut root = base;
        // One accidental; "b" followed by a letter would be a kind name ("blues"), so a flat
        // counts only when what follows is not a letter.
        if let Some(r) = rest.strip_prefix(['#', '♯']) {
            root += 1;
            rest = r;
        } else if let Some(r) = rest.strip_prefix(['b', '♭'])
            && !r.starts_with(|c: char| c.is_ascii_alphabetic())
        {
            root -= 1;
            rest = r;
        }
        let rest = rest.trim_start_matches([' ', ':', '-', '_']);
        let kind = if rest.is_empty() {
            ScaleKind::Major
        } else {
            ScaleKind::parse(rest).ok_or_else(bad)?
        };
        Ok(Scale::new(root.rem_euclid(12) as u8, kind))
    }
}
