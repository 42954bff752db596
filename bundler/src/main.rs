//! `cargo xtask bundle staria-plugin [--release]`: builds the plugin and writes
//! `<target dir>/bundled/Staria.clap` and `Staria.vst3` (the target directory is the one
//! `cargo metadata` reports, so `CARGO_TARGET_DIR` and `.cargo/config.toml` are honoured).

fn main() -> nice_plug_xtask::Result<()> {
    nice_plug_xtask::main()
}
