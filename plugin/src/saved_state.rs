//! A saved state's persisted fields, checked before nice-plug applies them
//! ([`Plugin::filter_state`](nice_plug::prelude::Plugin::filter_state)).
//!
//! nice-plug skips a persisted field whose JSON does not read (with a debug-build warning
//! nobody sees), and a whole state that does not read is refused to the host (the CLAP/VST3
//! state call fails; the instance keeps what it had). Here each field that does not read is set
//! to its default and the musician is told which: the notice travels in the snippets field (the
//! hook has no instance to write to) and the store hands it to the status
//! ([`crate::snippets::SnippetStore::take_load_notice`]).

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

/// Sets every persisted field that does not read to its default and records a notice naming them.
pub fn check_fields(state: &mut PluginState) {
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
