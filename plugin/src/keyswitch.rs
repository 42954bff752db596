//! Keyswitches: one octave of MIDI notes, starting at a configurable base note (default 24 = C1
//! with middle C = C4 = 60: the lowest whole octave of an 88-key piano, whose keys run from
//! A0 = 21 to C8 = 108), that control the plugin instead of sounding. White keys record
//! sections, black keys play them.
//!
//! | key | action |
//! |---|---|
//! | C  | record A (press again to stop recording) |
//! | C# | play A |
//! | D  | record B |
//! | D# | play B |
//! | E  | record C |
//! | F  | record D |
//! | F# | play C |
//! | G  | continue (a continuation of what was just captured) |
//! | G# | play D |
//! | A  | play the next section of the form |
//! | A# | stop generated playback |
//! | B  | clear the section being recorded, else the last captured one |
//!
//! In the live modes (*Call and response*, *Accompany*) one more key is a keyswitch: the key
//! just below the octave ([`handover_key`], B0 = 23 by default) hands over to the model in
//! call and response (it does nothing in accompaniment). The octave is full, and the keys
//! below it sound as played in *Sections*, so projects that play B0 keep it there.

use staria_models::SectionLabel;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum KeyAction {
    ToggleRecord(SectionLabel),
    Play(SectionLabel),
    Continue,
    PlayNext,
    Stop,
    Clear,
}

/// The action of `key`, if it lies in the keyswitch octave starting at `base`.
pub fn action(key: u8, base: u8) -> Option<KeyAction> {
    use KeyAction::*;
    use SectionLabel as S;
    let offset = key.checked_sub(base)?;
    Some(match offset {
        0 => ToggleRecord(S::A),
        1 => Play(S::A),
        2 => ToggleRecord(S::B),
        3 => Play(S::B),
        4 => ToggleRecord(S::C),
        5 => ToggleRecord(S::D),
        6 => Play(S::C),
        7 => Continue,
        8 => Play(S::D),
        9 => PlayNext,
        10 => Stop,
        11 => Clear,
        _ => return None,
    })
}

/// The live modes' hand-over key: the one just below the keyswitch octave (`None` when the
/// octave starts at 0).
pub fn handover_key(base: u8) -> Option<u8> {
    base.checked_sub(1)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The hand-over key is free: no octave keyswitch, and B0 (23) on the default octave, a key
    /// of an 88-key piano.
    #[test]
    fn the_handover_key_is_below_the_octave() {
        assert_eq!(handover_key(24), Some(23));
        assert_eq!(handover_key(0), None);
        for base in 1..=116u8 {
            let k = handover_key(base).unwrap();
            assert_eq!(action(k, base), None);
        }
    }

    #[test]
    fn one_octave_from_the_base() {
        assert_eq!(
            action(12, 12),
            Some(KeyAction::ToggleRecord(SectionLabel::A))
        );
        assert_eq!(action(15, 12), Some(KeyAction::Play(SectionLabel::B)));
        assert_eq!(action(20, 12), Some(KeyAction::Play(SectionLabel::D)));
        assert_eq!(action(23, 12), Some(KeyAction::Clear));
        assert_eq!(action(11, 12), None);
        assert_eq!(action(24, 12), None);
        assert_eq!(
            action(36, 36),
            Some(KeyAction::ToggleRecord(SectionLabel::A))
        );
        // Every key of the octave does something, and each section can be recorded and played.
        let all: Vec<_> = (0..12).filter_map(|k| action(k, 0)).collect();
        assert_eq!(all.len(), 12);
        for s in SectionLabel::ALL {
            assert!(all.contains(&KeyAction::ToggleRecord(s)));
            assert!(all.contains(&KeyAction::Play(s)));
        }
    }
}
