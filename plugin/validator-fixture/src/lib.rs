//! The validator fixture: the most trivial nice-plug note effect, built with the plugin's own
//! nice-plug version and features. One MIDI input passed unchanged to one MIDI output, a stereo
//! audio pass-through that leaves the buffer as the host gave it, and one parameter that does
//! nothing. `.ci/run` bundles it next to `Staria.clap` and runs clap-validator on both: a test
//! this fixture fails too is the framework's, not Staria's (`docs/clap-validator.md`).
//!
//! Its audio pass-through copies subnormal samples through, which the validator's fuzzer
//! stops on; Staria's flushes them.

use std::num::NonZeroU32;
use std::sync::Arc;

use nice_plug::prelude::*;

#[derive(Params)]
struct FixtureParams {
    /// Present so that the validator's parameter tests have something to test.
    #[id = "amount"]
    amount: FloatParam,
}

impl Default for FixtureParams {
    fn default() -> Self {
        Self {
            amount: FloatParam::new("Amount", 0.5, FloatRange::Linear { min: 0.0, max: 1.0 }),
        }
    }
}

#[derive(Default)]
pub struct ValidatorFixture {
    params: Arc<FixtureParams>,
}

impl Plugin for ValidatorFixture {
    const NAME: &'static str = "Staria Validator Fixture";
    const VENDOR: &'static str = "Staria";
    const URL: &'static str = "https://example.invalid/staria";
    const EMAIL: &'static str = "dev@staria.invalid";
    const VERSION: &'static str = env!("CARGO_PKG_VERSION");

    const AUDIO_IO_LAYOUTS: &'static [AudioIOLayout] = &[AudioIOLayout {
        main_input_channels: NonZeroU32::new(2),
        main_output_channels: NonZeroU32::new(2),
        ..AudioIOLayout::const_default()
    }];
    const MIDI_INPUT: MidiConfig = MidiConfig::MidiCCs;
    const MIDI_OUTPUT: MidiConfig = MidiConfig::MidiCCs;

    type Editor = ();
    type SysExMessage = ();
    type BackgroundTask = ();

    fn params(&self) -> Arc<dyn Params> {
        self.params.clone()
    }

    fn process(
        &mut self,
        _buffer: &mut Buffer,
        _aux: &mut AuxiliaryBuffers,
        context: &mut impl ProcessContext<Self>,
    ) -> ProcessStatus {
        while let Some(event) = context.next_event() {
            // A full host queue drops the rest.
            if context.try_send_event(event).is_err() {
                break;
            }
        }
        ProcessStatus::Normal
    }
}

impl ClapPlugin for ValidatorFixture {
    const CLAP_ID: &'static str = "org.staria.validator-fixture";
    const CLAP_DESCRIPTION: Option<&'static str> =
        Some("A trivial note effect: what clap-validator reports for nice-plug alone");
    const CLAP_MANUAL_URL: Option<&'static str> = None;
    const CLAP_SUPPORT_URL: Option<&'static str> = None;
    const CLAP_FEATURES: &'static [ClapFeature] = &[ClapFeature::NoteEffect, ClapFeature::Utility];
}

impl Vst3Plugin for ValidatorFixture {
    const VST3_CLASS_ID: [u8; 16] = *b"StariaValidFixt1";
    const VST3_SUBCATEGORIES: &'static [Vst3SubCategory] =
        &[Vst3SubCategory::Instrument, Vst3SubCategory::Generator];
}

nice_export_clap!(ValidatorFixture);
nice_export_vst3!(ValidatorFixture);
