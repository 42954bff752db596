//! A saved state's persisted fields, checked before nice-plug applies them
//! ([`Plugin::filter_state`](nice_plug::prelude::Plugin::filter_state)).
//!
//! nice-plug skips a persisted field whose JSON does not read (with a debug-build warning
//! nobody sees), and a whole state that does not read is refused to the host (the CLAP/VST3
//! state call fails; the instance keeps what it had). Here each field that does not read is set
//! to its default and the musician is told which: the notice travels in the snippets field (the
//! hook has no instance to write to) and the store hands it to the status
//! ([`crate::snippets::SnippetStore::take_load_notice`]).
//!
//! **Parameters added later.** nice-plug sets only the parameters a state holds and leaves the
//! others as the instance has them: an old project loaded into an instance switched to
//! *Accompany* would stay in it. So a state without a parameter added since projects were first
//! saved gets that parameter's default here ([`ADDED_PARAMS`]), which is the behaviour it was
//! saved with (*Mode*: *Sections*). Parameter IDs never change; a new parameter goes into
//! [`ADDED_PARAMS`] (a test checks that every parameter is either there or in the first saved
//! states, `plugin/host-test/fixtures/state/`).

use nice_plug::plugin::ParamValue;
use nice_plug::prelude::PluginState;
use serde::Serialize;
use serde::de::DeserializeOwned;

use crate::editor::EditorSize;
use crate::params::StatusRecord;
use crate::snippets::SavedSnippets;

/// The `#[persist = ...]` keys of [`crate::params::StariaParams`] (a test checks this list
/// against the fields the parameters object saves).
pub const PERSIST_KEYS: [&str; 5] = [
    "snippets",
    "model-path",
    "status",
    "editor-size",
    "export-folder",
];

/// Parameters added after the first saved states (*Max polyphony*, then issue 11's live
/// modes), with the plain value a state without them opens with: their defaults (a test
/// checks).
pub const ADDED_PARAMS: [(&str, AddedDefault); 9] = [
    ("polyphony", AddedDefault::Int(16)),
    ("live_mode", AddedDefault::EnumId("sections")),
    ("live_silence", AddedDefault::Float(2.0)),
    ("live_bars", AddedDefault::Int(2)),
    ("live_handover", AddedDefault::Bool(false)),
    (
        "acc_channel",
        AddedDefault::Int(crate::params::DEFAULT_ACCOMPANIMENT_CHANNEL),
    ),
    (
        "acc_low",
        AddedDefault::Int(crate::params::DEFAULT_ACCOMPANIMENT_RANGE.0),
    ),
    (
        "acc_high",
        AddedDefault::Int(crate::params::DEFAULT_ACCOMPANIMENT_RANGE.1),
    ),
    ("acc_consonant", AddedDefault::Bool(true)),
];

/// A parameter's saved value, as a constant.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum AddedDefault {
    Float(f32),
    Int(i32),
    Bool(bool),
    EnumId(&'static str),
}

impl AddedDefault {
    fn value(self) -> ParamValue {
        match self {
            Self::Float(v) => ParamValue::F32(v),
            Self::Int(v) => ParamValue::I32(v),
            Self::Bool(v) => ParamValue::Bool(v),
            Self::EnumId(id) => ParamValue::String(id.to_string()),
        }
    }
}

/// Gives a state saved before [`ADDED_PARAMS`] existed their defaults (see the module notes).
pub fn fill_added_params(state: &mut PluginState) {
    for (id, default) in ADDED_PARAMS {
        state
            .params
            .entry(id.to_string())
            .or_insert_with(|| default.value());
    }
}

/// Sets every persisted field that does not read to its default and records a notice naming
/// them; parameters a state predates get their defaults ([`fill_added_params`]).
pub fn check_fields(state: &mut PluginState) {
    fill_added_params(state);
    let mut unreadable = Vec::new();
    check::<SavedSnippets>(state, PERSIST_KEYS[0], &mut unreadable);
    check::<String>(state, PERSIST_KEYS[1], &mut unreadable);
    check::<StatusRecord>(state, PERSIST_KEYS[2], &mut unreadable);
    check::<EditorSize>(state, PERSIST_KEYS[3], &mut unreadable);
    check::<String>(state, PERSIST_KEYS[4], &mut unreadable);
    if unreadable.is_empty() {
        return;
    }
    let key = PERSIST_KEYS[0];
    let mut snippets: SavedSnippets = state
        .fields
        .get(key)
        .and_then(|text| serde_json::from_str(text).ok())
        .unwrap_or_default();
    snippets.load_notice = Some(format!(
        "the saved state's {} could not be read and {} left at {}",
        unreadable.join("; "),
        if unreadable.len() == 1 { "was" } else { "were" },
        if unreadable.len() == 1 {
            "its default"
        } else {
            "their defaults"
        }
    ));
    state.fields.insert(
        key.to_string(),
        serde_json::to_string(&snippets).expect("plain data"),
    );
}

fn check<T: DeserializeOwned + Serialize + Default>(
    state: &mut PluginState,
    key: &str,
    unreadable: &mut Vec<String>,
) {
    let Some(text) = state.fields.get(key) else {
        return;
    };
    if let Err(e) = serde_json::from_str::<T>(text) {
        unreadable.push(format!("`{key}` ({e})"));
        state.fields.insert(
            key.to_string(),
            serde_json::to_string(&T::default()).expect("plain data"),
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::params::StariaParams;
    use nice_plug::prelude::Params;

    fn saved() -> PluginState {
        PluginState {
            version: String::new(),
            params: Default::default(),
            fields: StariaParams::default().serialize_fields(),
        }
    }

    #[test]
    fn the_keys_are_the_persisted_fields() {
        let fields = StariaParams::default().serialize_fields();
        let mut keys: Vec<&str> = fields.keys().map(String::as_str).collect();
        let mut listed = PERSIST_KEYS.to_vec();
        keys.sort_unstable();
        listed.sort_unstable();
        assert_eq!(keys, listed);
    }

    /// The parameters of the first saved states (`fixtures/state/2026-12-04.bin`).
    const FIRST_SAVED: [&str; 32] = [
        "adherence",
        "arm_a",
        "arm_b",
        "arm_c",
        "arm_d",
        "bars",
        "bypass",
        "channel",
        "clear_a",
        "clear_b",
        "clear_c",
        "clear_d",
        "continue",
        "form",
        "immediate",
        "key_root",
        "keyswitches",
        "ks_base",
        "min_p",
        "pitch_high",
        "pitch_low",
        "play",
        "play_next",
        "quantize",
        "scale",
        "section",
        "seed",
        "stop",
        "style",
        "temperature",
        "thru",
        "top_p",
    ];

    /// Every parameter is in the first saved states or listed as added, with its default.
    #[test]
    fn added_parameters_are_listed_with_their_defaults() {
        let params = StariaParams::default();
        for (id, ptr, _) in params.param_map() {
            if FIRST_SAVED.contains(&id.as_str()) {
                continue;
            }
            let (_, default) = ADDED_PARAMS
                .iter()
                .find(|(a, _)| *a == id)
                .unwrap_or_else(|| panic!("parameter {id} is neither first-saved nor added"));
            // SAFETY: `ptr` points into `params`, alive for the whole test.
            let plain = unsafe { ptr.preview_plain(ptr.default_normalized_value()) };
            let want = match *default {
                AddedDefault::Float(v) => v,
                AddedDefault::Int(v) => v as f32,
                AddedDefault::Bool(v) => v as u8 as f32,
                AddedDefault::EnumId(id) => {
                    use nice_plug::prelude::Enum;
                    let ids = crate::choices::ModeChoice::ids().unwrap();
                    ids.iter().position(|i| *i == id).unwrap() as f32
                }
            };
            assert_eq!(plain, want, "{id}");
        }
    }

    /// A state saved before the live modes opens in Sections even in an instance switched to
    /// Accompany; one that has them keeps its own.
    #[test]
    fn a_state_without_the_live_parameters_gets_their_defaults() {
        let mut old = saved();
        old.params.insert("channel".into(), ParamValue::I32(5));
        check_fields(&mut old);
        assert!(matches!(&old.params["live_mode"], ParamValue::String(s) if s == "sections"));
        assert!(matches!(old.params["acc_channel"], ParamValue::I32(3)));
        assert!(matches!(old.params["channel"], ParamValue::I32(5)));
        let mut new = saved();
        new.params
            .insert("live_mode".into(), ParamValue::String("accompany".into()));
        check_fields(&mut new);
        assert!(matches!(&new.params["live_mode"], ParamValue::String(s) if s == "accompany"));
    }

    #[test]
    fn a_readable_state_is_left_as_it_is() {
        let mut state = saved();
        let before = state.fields.clone();
        check_fields(&mut state);
        assert_eq!(state.fields, before);
    }

    #[test]
    fn unreadable_fields_get_their_defaults_and_a_notice() {
        let mut state = saved();
        state
            .fields
            .insert("snippets".into(), "{\"sections\": [{\"section\": ".into());
        state.fields.insert("editor-size".into(), "[1, 2".into());
        check_fields(&mut state);
        let snippets: SavedSnippets = serde_json::from_str(&state.fields["snippets"]).unwrap();
        assert!(snippets.sections.is_empty());
        let notice = snippets.load_notice.expect("a notice");
        assert!(
            notice.contains("`snippets`") && notice.contains("`editor-size`"),
            "{notice}"
        );
        assert!(!notice.contains("model-path"), "{notice}");
        let size: EditorSize = serde_json::from_str(&state.fields["editor-size"]).unwrap();
        assert_eq!(size, EditorSize::default());
    }

    #[test]
    fn a_notice_rides_on_readable_snippets_without_losing_them() {
        let mut state = saved();
        let mut snippets = SavedSnippets::default();
        snippets.sections.push(crate::snippets::SavedSnippet {
            section: 'A',
            bars: 1,
            ts_num: 4,
            ts_den: 4,
            length_beats: 4.0,
            notes: Vec::new(),
        });
        state
            .fields
            .insert("snippets".into(), serde_json::to_string(&snippets).unwrap());
        state.fields.insert("model-path".into(), "42".into());
        check_fields(&mut state);
        let back: SavedSnippets = serde_json::from_str(&state.fields["snippets"]).unwrap();
        assert_eq!(back.sections, snippets.sections);
        assert!(back.load_notice.unwrap().contains("`model-path`"));
        assert_eq!(state.fields["model-path"], "\"\"");
    }
}
