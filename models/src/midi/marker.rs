//! # Marker rule ([`section_label_for_marker`])
//! Trimmed and case-insensitive:
//! 1. a letter alone or with variant marks: primes (`'`, `’`, `′`, `″`, `` ` ``, `*`), digits,
//!    `-`, `.`, `_`, spaces, and a trailing remark in parentheses or brackets ("A", "A'", "A''",
//!    "A2", "B1", "a (repeat)", "C-2"). "A".."D" give themselves; "E".."Z" give D: a four-section
//!    model treats every further section as D ("another section");
//! 2. "Section X" or "Part X" with X a letter form as in 1;
//! 3. a section word, alone or followed by anything but a letter ("Verse 2", "Chorus (x2)"):
//!    Verse -> A; Chorus, Refrain, Hook -> B; Bridge, Middle 8, Middle Eight -> C; Intro, Outro,
//!    Pre-Chorus (Prechorus, Pre Chorus), Solo, Interlude, Coda, Break, Breakdown, Instrumental -> D;
//! 4. anything else ("Take 3", lyrics, "II") -> `None`: not a section marker.

use crate::song::SectionLabel;

/// The section label a MIDI Marker's text stands for, or `None` when it is not a section marker.
///
/// Trimmed and case-insensitive:
/// 1. a letter alone or with variant marks (primes `'` `’` `′` `″` `` ` `` `*`, digits, `-`, `.`,
///    `_`, spaces, and a trailing remark in parentheses or brackets): "A", "A'", "A''", "A2",
///    "B1", "a (repeat)". "A".."D" give themselves; "E".."Z" fold into D: a four-section model
///    treats every further section as D, "another section";
/// 2. "Section X" or "Part X", X a letter form as in 1;
/// 3. a section word, alone or followed by anything but a letter ("Verse 2", "Chorus (x2)"):
///    Verse -> A; Chorus, Refrain, Hook -> B; Bridge, Middle 8, Middle Eight -> C; Intro, Outro,
///    Pre-Chorus (Prechorus, Pre Chorus), Solo, Interlude, Coda, Break, Breakdown,
///    Instrumental -> D;
/// 4. anything else ("Take 3", lyrics, "II") -> `None`.
pub fn section_label_for_marker(text: &str) -> Option<SectionLabel> {
    let lower = text.trim().to_lowercase();
    if let Some(label) = letter_form(&lower) {
        return Some(label);
    }
    for prefix in ["section", "part"] {
        if let Some(rest) = lower.strip_prefix(prefix)
            && rest.starts_with(char::is_whitespace)
            && let Some(label) = letter_form(rest.trim_start())
        {
            return Some(label);
        }
    }
    // Longer words first where one starts another ("breakdown" before "break").
    const WORDS: [(&str, SectionLabel); 18] = [
        ("verse", SectionLabel::A),
        ("chorus", SectionLabel::B),
        ("refrain", SectionLabel::B),
        ("hook", SectionLabel::B),
        ("bridge", SectionLabel::C),
        ("middle 8", SectionLabel::C),
        ("middle eight", SectionLabel::C),
        ("intro", SectionLabel::D),
        ("outro", SectionLabel::D),
        ("pre-chorus", SectionLabel::D),
        ("prechorus", SectionLabel::D),
        ("pre chorus", SectionLabel::D),
        ("solo", SectionLabel::D),
        ("interlude", SectionLabel::D),
        ("coda", SectionLabel::D),
        ("breakdown", SectionLabel::D),
        ("break", SectionLabel::D),
        ("instrumental", SectionLabel::D),
    ];
    WORDS.iter().find_map(|&(word, label)| {
        let rest = lower.strip_prefix(word)?;
        (!rest.starts_with(char::is_alphabetic)).then_some(label)
    })
}

/// Rule 1 of [`section_label_for_marker`] on trimmed, lower-case text.
fn letter_form(s: &str) -> Option<SectionLabel> {
    let mut chars = s.chars();
    let letter = chars.next().filter(char::is_ascii_lowercase)?;
    let mut rest = chars.as_str().trim_end();
    // A trailing remark: "a (repeat)", "b [2nd time]".
    for (open, close) in [('(', ')'), ('[', ']')] {
        if rest.ends_with(close)
            && let Some(i) = rest.find(open)
        {
            rest = &rest[..i];
        }
    }
    let variant_mark =
        |c: char| c.is_ascii_digit() || "'’′″`*-._ ".contains(c) || c.is_whitespace();
    if !rest.chars().all(variant_mark) {
        return None;
    }
    Some(match letter {
        'a' => SectionLabel::A,
        'b' => SectionLabel::B,
        'c' => SectionLabel::C,
        _ => SectionLabel::D,
    })
}
