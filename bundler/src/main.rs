//! `cargo xtask bundle staria-plugin [--release]`: builds the plugin and writes
//! `<target dir>/bundled/Staria.clap` and `Staria.vst3` (the target directory is the one
//! `cargo metadata` reports, so `CARGO_TARGET_DIR` and `.cargo/config.toml` are honoured).
//!
//! `cargo xtask clap-validate [--release | --profile P] [--fuzz 60s] [--validator PATH]`: bundles
//! Staria and the validator fixture and runs free-audio's clap-validator on them (`validate`).

mod validate;

fn main() -> nice_plug_xtask::Result<()> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    if args.first().map(String::as_str) == Some("clap-validate") {
        return validate::main(&args[1..]);
    }
    nice_plug_xtask::main()
}
