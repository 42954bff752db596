//! Parameters (automatable, plain values as nice-plug defines them) and the persisted non-parameter
//! state: captured snippets, the custom model folder and the last engine status.

use nice_plug::prelude::*;
use parking_lot::RwLock;
use serde::{Deserialize, Serialize};
use std::sync::Arc;

use crate::choices::{FormChoice, ModeChoice, RootChoice, ScaleChoice, SectionChoice, StyleChoice};
use crate::editor::EditorSize;
use crate::snippets::SnippetStore;
use staria_engine::Form;
use staria_engine::status::{EngineParams, EngineState};
use staria_models::SectionLabel;

/// The engine status as last seen by the plugin's monitor thread; saved with the project so a
/// host or the window can show why a model failed even before the engine restarts.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
pub struct StatusRecord {
    /// The loaded model's name (empty before one is loaded).
    pub model: String,
    /// What the engine was doing (saved as its lowercase name: "idle", "ready", "error", ...).
    pub state: EngineState,
    /// The last load or generation error ("" if none).
    pub last_error: String,
}

#[derive(Params)]
pub struct StariaParams {
    /// Captured snippets of sections A..D.
    #[persist = "snippets"]
    pub snippets: SnippetStore,
    /// A checkpoint folder, or a built-in model's name (a path that exists wins over a name,
    /// see `staria_engine::default_model`); empty means the default built-in model. Set it in
    /// the window's Model panel, through the plugin state or [`StariaParams::set_model_path`].
    #[persist = "model-path"]
    pub model_path: RwLock<String>,
    #[persist = "status"]
    pub status: Arc<RwLock<StatusRecord>>,
    /// The editor window's size (logical pixels), saved with the project.
    #[persist = "editor-size"]
    pub editor_size: RwLock<EditorSize>,
    /// The folder the window exports MIDI into.
    #[persist = "export-folder"]
    pub export_folder: RwLock<String>,

    #[id = "bypass"]
    pub bypass: BoolParam,

    // Capture.
    #[id = "arm_a"]
    pub arm_a: BoolParam,
    #[id = "arm_b"]
    pub arm_b: BoolParam,
    #[id = "arm_c"]
    pub arm_c: BoolParam,
    #[id = "arm_d"]
    pub arm_d: BoolParam,
    #[id = "clear_a"]
    pub clear_a: BoolParam,
    #[id = "clear_b"]
    pub clear_b: BoolParam,
    #[id = "clear_c"]
    pub clear_c: BoolParam,
    #[id = "clear_d"]
    pub clear_d: BoolParam,
    #[id = "quantize"]
    pub quantize: BoolParam,

    // Generation triggers and what to generate.
    #[id = "section"]
    pub section: EnumParam<SectionChoice>,
    #[id = "play"]
    pub play: BoolParam,
    #[id = "play_next"]
    pub play_next: BoolParam,
    #[id = "continue"]
    pub continue_: BoolParam,
    #[id = "stop"]
    pub stop: BoolParam,
    #[id = "bars"]
    pub bars: IntParam,
    #[id = "immediate"]
    pub immediate: BoolParam,
    #[id = "form"]
    pub form: EnumParam<FormChoice>,
    #[id = "style"]
    pub style: EnumParam<StyleChoice>,

    // Sampling.
    #[id = "temperature"]
    pub temperature: FloatParam,
    #[id = "top_p"]
    pub top_p: FloatParam,
    #[id = "min_p"]
    pub min_p: FloatParam,
    /// How closely a generated section keeps its captured snippet (the engine's snippet
    /// following bias): 0 = the model alone.
    #[id = "adherence"]
    pub adherence: FloatParam,
    #[id = "seed"]
    pub seed: IntParam,

    // Pitch constraints.
    #[id = "key_root"]
    pub key_root: EnumParam<RootChoice>,
    #[id = "scale"]
    pub scale: EnumParam<ScaleChoice>,
    #[id = "pitch_low"]
    pub pitch_low: IntParam,
    #[id = "pitch_high"]
    pub pitch_high: IntParam,
    /// Generated notes sounding at once, at most (a constraint while sampling; the engine's
    /// default is 16).
    #[id = "polyphony"]
    pub polyphony: IntParam,

    // MIDI routing.
    #[id = "channel"]
    pub channel: IntParam,
    #[id = "thru"]
    pub thru: BoolParam,
    #[id = "keyswitches"]
    pub keyswitches: BoolParam,
    #[id = "ks_base"]
    pub keyswitch_base: IntParam,

    // Live modes (issue 11). Added after the first saved projects: a state without these IDs
    // loads with their defaults, and the Mode default (Sections) is the behaviour such a
    // project was saved with. The IDs must never change.
    /// Sections (the default), Call and response, Accompany.
    #[id = "live_mode"]
    pub mode: EnumParam<ModeChoice>,
    /// Call and response: a silence of this many beats after the musician's phrase hands over
    /// (0 = off: only the keyswitch, CC 67 or *Hand over*).
    #[id = "live_silence"]
    pub handover_silence: FloatParam,
    /// Call and response: an answer's length.
    #[id = "live_bars"]
    pub response_bars: IntParam,
    /// Call and response: the trigger that hands over (off -> on).
    #[id = "live_handover"]
    pub handover: BoolParam,
    /// Accompany: the MIDI channel of the model's voice (1..16).
    #[id = "acc_channel"]
    pub acc_channel: IntParam,
    /// Accompany: the model's register.
    #[id = "acc_low"]
    pub acc_low: IntParam,
    #[id = "acc_high"]
    pub acc_high: IntParam,
    /// Accompany: no model note dissonant (a second, tritone or seventh) with a note the
    /// musician holds, unless the register has no other (on by default).
    #[id = "acc_consonant"]
    pub acc_consonant: BoolParam,
}

/// The keyswitch octave's default start: MIDI 24 (C1), the lowest whole octave of an 88-key
/// piano (A0 = 21 .. C8 = 108), so every keyswitch can be played on one, and *clear* (the
/// octave's B, the destructive one) is B1 = 35, well inside the keyboard rather than at its
/// edge. The three keys below it (A0, A#0, B0) sound as played. Earlier builds used C-1 (0),
/// below the keyboard, and before that C0 (12), which put play next, stop and clear on A0, A#0
/// and B0, the keyboard's lowest keys.
pub const DEFAULT_KEYSWITCH_BASE: i32 = 24;
/// The MIDI channel (1..16) generated notes go out on by default: not channel 1, where played and
/// passed-through notes usually are.
pub const DEFAULT_OUTPUT_CHANNEL: i32 = 2;
/// The accompaniment's channel by default: apart from the performer (1) and the sections and
/// answers (2).
pub const DEFAULT_ACCOMPANIMENT_CHANNEL: i32 = 3;
/// The accompaniment's register by default: C2..B3 (36..59), a lower voice under a melody
/// (`staria live --mode accompany`'s default).
pub const DEFAULT_ACCOMPANIMENT_RANGE: (i32, i32) = (36, 59);

fn note_name(n: i32) -> String {
    const NAMES: [&str; 12] = [
        "C", "C#", "D", "D#", "E", "F", "F#", "G", "G#", "A", "A#", "B",
    ];
    format!(
        "{}{} ({n})",
        NAMES[(n.rem_euclid(12)) as usize],
        n.div_euclid(12) - 1
    )
}

/// Reads a MIDI note number from a note parameter's text: its own display ("C#-1 (1)"), a plain
/// note name ("C#4", "Db4", "c4", middle C = C4 = 60) or a number ("61"). `None` for anything
/// else or a note outside 0..=127.
fn parse_note(text: &str) -> Option<i32> {
    let text = text.trim();
    // "C#-1 (1)": the number in brackets is exact.
    if let Some(open) = text.rfind('(')
        && let Some(inner) = text[open + 1..].strip_suffix(')')
    {
        return parse_note(inner);
    }
    if let Ok(n) = text.parse::<i32>() {
        return (0..=127).contains(&n).then_some(n);
    }
    let mut chars = text.chars();
    let pitch_class = match chars.next()?.to_ascii_uppercase() {
        'C' => 0,
        'D' => 2,
        'E' => 4,
        'F' => 5,
        'G' => 7,
        'A' => 9,
        'B' => 11,
        _ => return None,
    };
    let rest = chars.as_str();
    let (shift, octave) = if let Some(o) = rest.strip_prefix('#') {
        (1, o)
    } else if let Some(o) = rest.strip_prefix('b') {
        (-1, o)
    } else {
        (0, rest)
    };
    let octave: i32 = octave.trim().parse().ok()?;
    let n = octave.checked_add(1)?.checked_mul(12)? + pitch_class + shift;
    (0..=127).contains(&n).then_some(n)
}

fn trigger(name: &str) -> BoolParam {
    BoolParam::new(name, false)
}

impl Default for StariaParams {
    fn default() -> Self {
        let sampling = staria_engine::sampling::SamplingParams::default();
        let note = Arc::new(note_name);
        let parse = Arc::new(parse_note);
        Self {
            snippets: SnippetStore::default(),
            model_path: RwLock::new(String::new()),
            status: Arc::new(RwLock::new(StatusRecord::default())),
            editor_size: RwLock::new(EditorSize::default()),
            export_folder: RwLock::new(String::new()),
            bypass: BoolParam::new("Bypass", false).make_bypass(),
            arm_a: BoolParam::new("Record A", false),
            arm_b: BoolParam::new("Record B", false),
            arm_c: BoolParam::new("Record C", false),
            arm_d: BoolParam::new("Record D", false),
            clear_a: trigger("Clear A"),
            clear_b: trigger("Clear B"),
            clear_c: trigger("Clear C"),
            clear_d: trigger("Clear D"),
            quantize: BoolParam::new("Quantize to bars", true),
            section: EnumParam::new("Section to generate", SectionChoice::B),
            play: trigger("Play section"),
            play_next: trigger("Play next in form"),
            continue_: trigger("Continue"),
            stop: trigger("Stop playback"),
            bars: IntParam::new("Bars to generate", 8, IntRange::Linear { min: 1, max: 64 })
                .with_unit(" bars"),
            immediate: BoolParam::new("Play immediately", false),
            form: EnumParam::new("Form", FormChoice::Aaba),
            style: EnumParam::new("Style", StyleChoice::None),
            // The engine's defaults (chosen on validation, see `SamplingParams`).
            temperature: FloatParam::new(
                "Temperature",
                sampling.temperature,
                FloatRange::Linear { min: 0.0, max: 2.0 },
            )
            .with_step_size(0.01),
            top_p: FloatParam::new(
                "Top-p",
                sampling.top_p,
                FloatRange::Linear { min: 0.0, max: 1.0 },
            )
            .with_step_size(0.01),
            min_p: FloatParam::new(
                "Min-p",
                sampling.min_p,
                FloatRange::Linear { min: 0.0, max: 1.0 },
            )
            .with_step_size(0.01),
            adherence: FloatParam::new(
                "Adherence",
                sampling.follow_bias,
                FloatRange::Linear {
                    min: 0.0,
                    max: 20.0,
                },
            )
            .with_step_size(0.1),
            seed: IntParam::new(
                "Seed (0 = random)",
                0,
                IntRange::Linear {
                    min: 0,
                    max: 65_535,
                },
            ),
            key_root: EnumParam::new("Key root", RootChoice::C),
            scale: EnumParam::new("Scale lock", ScaleChoice::Chromatic),
            pitch_low: IntParam::new("Lowest pitch", 21, IntRange::Linear { min: 0, max: 127 })
                .with_value_to_string(note.clone())
                .with_string_to_value(parse.clone()),
            pitch_high: IntParam::new("Highest pitch", 108, IntRange::Linear { min: 0, max: 127 })
                .with_value_to_string(note.clone())
                .with_string_to_value(parse.clone()),
            polyphony: IntParam::new("Max polyphony", 16, IntRange::Linear { min: 1, max: 64 })
                .with_unit(" notes"),
            // Generated notes default to channel 2, apart from what is played (usually on
            // channel 1) and passed through: on one channel they would cut each other off.
            channel: IntParam::new(
                "Output channel",
                DEFAULT_OUTPUT_CHANNEL,
                IntRange::Linear { min: 1, max: 16 },
            ),
            thru: BoolParam::new("Pass input through", true),
            keyswitches: BoolParam::new("Keyswitches", true),
            keyswitch_base: IntParam::new(
                "Keyswitch octave start",
                DEFAULT_KEYSWITCH_BASE,
                IntRange::Linear { min: 0, max: 116 },
            )
            .with_value_to_string(note.clone())
            .with_string_to_value(parse.clone()),
            mode: EnumParam::new("Mode", ModeChoice::Sections),
            handover_silence: FloatParam::new(
                "Handover silence",
                2.0,
                FloatRange::Linear {
                    min: 0.0,
                    max: 16.0,
                },
            )
            .with_step_size(0.5)
            .with_unit(" beats"),
            response_bars: IntParam::new(
                "Response length",
                2,
                IntRange::Linear { min: 1, max: 16 },
            )
            .with_unit(" bars"),
            handover: trigger("Hand over"),
            acc_channel: IntParam::new(
                "Accompaniment channel",
                DEFAULT_ACCOMPANIMENT_CHANNEL,
                IntRange::Linear { min: 1, max: 16 },
            ),
            acc_low: IntParam::new(
                "Accompaniment lowest note",
                DEFAULT_ACCOMPANIMENT_RANGE.0,
                IntRange::Linear { min: 0, max: 127 },
            )
            .with_value_to_string(note.clone())
            .with_string_to_value(parse.clone()),
            acc_high: IntParam::new(
                "Accompaniment highest note",
                DEFAULT_ACCOMPANIMENT_RANGE.1,
                IntRange::Linear { min: 0, max: 127 },
            )
            .with_value_to_string(note)
            .with_string_to_value(parse),
            acc_consonant: BoolParam::new("Accompaniment consonant", true),
        }
    }
}

impl StariaParams {
    /// The chosen model (a folder or a built-in model's name), `None` for the default.
    pub fn model_path(&self) -> Option<String> {
        let p = self.model_path.read();
        if p.trim().is_empty() {
            None
        } else {
            Some(p.trim().to_string())
        }
    }

    /// Choose a checkpoint folder or a built-in model by name (empty: the default built-in
    /// model). The engine loads it in the background; a bad folder or an unknown name keeps the
    /// old model and reports why in the status.
    pub fn set_model_path(&self, path: &str) {
        *self.model_path.write() = path.to_string();
    }

    pub fn status(&self) -> StatusRecord {
        self.status.read().clone()
    }

    /// The Record parameter of a section.
    pub fn arm(&self, s: SectionLabel) -> &BoolParam {
        match s {
            SectionLabel::A => &self.arm_a,
            SectionLabel::B => &self.arm_b,
            SectionLabel::C => &self.arm_c,
            SectionLabel::D => &self.arm_d,
        }
    }

    /// The folder the window exports into: the saved one, else the home folder.
    pub fn export_folder(&self) -> String {
        let saved = self.export_folder.read().trim().to_string();
        if saved.is_empty() {
            std::env::var("HOME").unwrap_or_default()
        } else {
            saved
        }
    }

    pub fn set_export_folder(&self, folder: &str) {
        *self.export_folder.write() = folder.to_string();
    }

    /// Copies the sampling, constraint and routing parameters into the engine's atomics, where
    /// the next request reads them. Atomics only: called from `process()` every block.
    pub fn write_engine_params(&self, e: &EngineParams) {
        e.set_temperature(self.temperature.value());
        e.set_top_p(self.top_p.value());
        e.set_min_p(self.min_p.value());
        e.set_follow_bias(self.adherence.value());
        e.set_pitch_range(
            self.pitch_low.value().clamp(0, 127) as u8,
            self.pitch_high.value().clamp(0, 127) as u8,
        );
        e.set_key_mask(self.scale.value().key_mask(self.key_root.value()));
        e.set_channel((self.channel.value() - 1).clamp(0, 15) as u8);
        e.set_max_polyphony(self.polyphony.value().clamp(1, 64) as u8);
        e.set_style(self.style.value().engine_code());
        e.set_form(Form::parse(self.form.value().letters()).unwrap_or_default());
        if self.mode.value() == ModeChoice::Accompany {
            // The engine reads the voice's channel and register from here when a live session
            // starts; no section plays meanwhile (a live session has the model to itself).
            let (low, high) = self.accompaniment_range();
            e.set_pitch_range(low, high);
            e.set_channel((self.acc_channel.value() - 1).clamp(0, 15) as u8);
        }
    }

    /// The accompaniment's register, lowest first (a range set backwards is swapped).
    pub fn accompaniment_range(&self) -> (u8, u8) {
        let a = self.acc_low.value().clamp(0, 127) as u8;
        let b = self.acc_high.value().clamp(0, 127) as u8;
        (a.min(b), a.max(b))
    }

    /// The silence that hands over, in beats; `None` when off (0).
    pub fn handover_silence_beats(&self) -> Option<f64> {
        let b = self.handover_silence.value() as f64;
        (b.is_finite() && b > 0.0).then_some(b)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The lowest and highest keys of an 88-key keyboard.
    const A0: i32 = 21;
    const C8: i32 = 108;

    /// Every keyswitch can be played on an 88-key keyboard, and *clear* (destructive) is not
    /// at its edge.
    #[test]
    fn default_keyswitches_lie_on_an_88_key_piano_away_from_its_edge() {
        let p = StariaParams::default();
        assert!(p.keyswitches.value());
        let base = p.keyswitch_base.value();
        assert_eq!(base, 24, "C1");
        let keys: Vec<(i32, crate::keyswitch::KeyAction)> = (0..=127)
            .filter_map(|k| crate::keyswitch::action(k as u8, base as u8).map(|a| (k, a)))
            .collect();
        assert_eq!(keys.len(), 12);
        for (k, a) in &keys {
            assert!((A0..=C8).contains(k), "{a:?} on {k}, off an 88-key piano");
        }
        let clear = keys
            .iter()
            .find(|(_, a)| *a == crate::keyswitch::KeyAction::Clear)
            .map(|(k, _)| *k)
            .unwrap();
        assert!(
            clear - A0 >= 12 && C8 - clear >= 12,
            "clear on {clear}, near the keyboard's edge"
        );
    }

    #[test]
    fn generated_notes_default_to_their_own_channel() {
        let p = StariaParams::default();
        // Channel 1 is where played (and passed-through) notes usually are.
        assert_eq!(p.channel.value(), 2);
        assert_eq!(p.channel.name(), "Output channel");
        // What the engine is told: MIDI channel 2 is index 1.
        let engine = EngineParams::default();
        p.write_engine_params(&engine);
        assert_eq!(engine.values().channel, 1);
    }

    /// "Adherence" (the engine's snippet-following bias) defaults to the measured 4, spans 0..20
    /// and reaches the engine's settings, which every request samples with.
    #[test]
    fn adherence_reaches_the_engine() {
        let p = StariaParams::default();
        assert_eq!(p.adherence.name(), "Adherence");
        assert_eq!(
            p.adherence.value(),
            staria_engine::sampling::SamplingParams::DEFAULT_FOLLOW_BIAS
        );
        assert_eq!(p.adherence.preview_plain(0.0), 0.0);
        assert_eq!(p.adherence.preview_plain(1.0), 20.0);
        let engine = EngineParams::default();
        p.write_engine_params(&engine);
        assert_eq!(engine.values().follow_bias, 4.0);
        // As host automation sets it (the wrapper sets normalized values this way).
        let ptr = p.adherence.as_ptr();
        // SAFETY: `ptr` points into `p`, alive for the whole test.
        unsafe { ptr._internal_set_normalized_value(0.5) };
        p.write_engine_params(&engine);
        assert_eq!(engine.values().follow_bias, 10.0);
        unsafe { ptr._internal_set_normalized_value(0.0) };
        p.write_engine_params(&engine);
        assert_eq!(engine.values().follow_bias, 0.0);
    }

    /// "Max polyphony" (1..64, the engine's default 16) reaches the engine's settings.
    #[test]
    fn polyphony_reaches_the_engine() {
        let p = StariaParams::default();
        assert_eq!(p.polyphony.name(), "Max polyphony");
        assert_eq!(p.polyphony.value(), 16);
        let engine = EngineParams::default();
        assert_eq!(
            engine.values().max_polyphony,
            16,
            "the engine's own default"
        );
        let ptr = p.polyphony.as_ptr();
        // SAFETY: `ptr` points into `p`, alive for the whole test.
        unsafe { ptr._internal_set_normalized_value(ptr.preview_normalized(3.0)) };
        p.write_engine_params(&engine);
        assert_eq!(engine.values().max_polyphony, 3);
        unsafe { ptr._internal_set_normalized_value(1.0) };
        p.write_engine_params(&engine);
        assert_eq!(engine.values().max_polyphony, 64);
    }

    #[test]
    fn note_text_parses_back() {
        for n in 0..=127 {
            assert_eq!(parse_note(&note_name(n)), Some(n), "{}", note_name(n));
        }
        assert_eq!(parse_note("C#4"), Some(61));
        assert_eq!(parse_note("Db4"), Some(61));
        assert_eq!(parse_note(" c4 "), Some(60));
        assert_eq!(parse_note("A0"), Some(21));
        assert_eq!(parse_note("C-1"), Some(0));
        assert_eq!(parse_note("G9"), Some(127));
        assert_eq!(parse_note("61"), Some(61));
        for bad in [
            "", "H4", "C", "G#9", "Cb-1", "128", "-1", "C#x", "(", "C4 (x)",
        ] {
            assert_eq!(parse_note(bad), None, "{bad:?}");
        }
    }

    /// What clap-validator's `param-conversions` checks, over every parameter: the text a value
    /// is shown as (with its unit, as the CLAP wrapper shows it) parses back to the same value.
    #[test]
    fn every_parameter_text_parses_back_to_its_value() {
        let params = StariaParams::default();
        let map = params.param_map();
        assert!(map.len() >= 30);
        for (id, ptr, _) in &map {
            // SAFETY: the pointers point into `params`, alive for the whole test.
            let (steps, name) = unsafe { (ptr.step_count(), ptr.name().to_string()) };
            let samples: Vec<f32> = match steps {
                Some(n) => (0..=n).map(|i| i as f32 / n as f32).collect(),
                None => (0..=200).map(|i| i as f32 / 200.0).collect(),
            };
            for v in samples {
                // SAFETY: as above.
                let (text, back, text_back) = unsafe {
                    let text = ptr.normalized_value_to_string(v, true);
                    let back = ptr.string_to_normalized_value(&text);
                    let text_back = back.map(|b| ptr.normalized_value_to_string(b, true));
                    (text, back, text_back)
                };
                let back = back.unwrap_or_else(|| panic!("{id} ({name}): {text:?} does not parse"));
                assert_eq!(text_back.as_deref(), Some(text.as_str()), "{id} ({name})");
                if steps.is_some() {
                    // SAFETY: as above.
                    let same = unsafe { ptr.preview_plain(v) == ptr.preview_plain(back) };
                    assert!(same, "{id} ({name}): {v} -> {text:?} -> {back}");
                }
            }
        }
    }

    /// The live parameters: Sections by default (projects saved before them behave as before),
    /// the accompaniment's channel and register reach the engine only in Accompany.
    #[test]
    fn live_parameters_and_what_the_engine_is_told() {
        let p = StariaParams::default();
        assert_eq!(p.mode.value(), ModeChoice::Sections);
        assert_eq!(p.mode.name(), "Mode");
        assert_eq!(p.handover_silence_beats(), Some(2.0));
        assert_eq!(p.response_bars.value(), 2);
        assert_eq!(p.accompaniment_range(), (36, 59));
        assert!(p.acc_consonant.value());
        let engine = EngineParams::default();
        p.write_engine_params(&engine);
        assert_eq!(
            (engine.values().channel, engine.values().pitch_low),
            (1, 21)
        );
        let set = |param: nice_plug::prelude::ParamPtr, plain: f32| {
            // SAFETY: the pointers point into `p`, alive for the whole test.
            unsafe { param._internal_set_normalized_value(param.preview_normalized(plain)) };
        };
        set(p.mode.as_ptr(), 2.0);
        assert_eq!(p.mode.value(), ModeChoice::Accompany);
        set(p.acc_low.as_ptr(), 60.0);
        set(p.acc_high.as_ptr(), 48.0);
        set(p.acc_channel.as_ptr(), 5.0);
        p.write_engine_params(&engine);
        let v = engine.values();
        assert_eq!((v.channel, v.pitch_low, v.pitch_high), (4, 48, 60));
        set(p.handover_silence.as_ptr(), 0.0);
        assert_eq!(p.handover_silence_beats(), None);
        // The register's text is a note name that parses back.
        assert_eq!(p.acc_low.to_string(), "C4 (60)");
        assert_eq!(
            p.acc_low.string_to_normalized_value("C2"),
            Some(p.acc_low.preview_normalized(36))
        );
    }

    #[test]
    fn note_names_use_middle_c_as_c4() {
        assert_eq!(note_name(60), "C4 (60)");
        assert_eq!(note_name(12), "C0 (12)");
        assert_eq!(note_name(0), "C-1 (0)");
        assert_eq!(note_name(21), "A0 (21)");
    }
}
