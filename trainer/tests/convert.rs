//! `staria-train convert`: a q8 copy of a checkpoint folder that loads as the model, and the
//! refusals (its own source, an unknown storage) as one line each, exit status non-zero.

use std::process::Command;

use candle_core::{DType, Device};
use staria_models::ModelKind;
use staria_models::checkpoint::{self, WEIGHTS_FILE};
use staria_models::tokenizer::{Tokenizer, TokenizerConfig};

fn convert(args: &[&std::ffi::OsStr]) -> std::process::Output {
    Command::new(env!("CARGO_BIN_EXE_staria-train"))
        .arg("convert")
        .args(args)
        .output()
        .unwrap()
}

#[test]
fn convert_writes_a_q8_copy_and_refuses_its_source() {
    let tok = Tokenizer::new(TokenizerConfig::default()).unwrap();
    let root = tempfile::tempdir().unwrap();
    let src = root.path().join("src");
    let dst = root.path().join("q8");
    checkpoint::create_untrained(&src, "t", ModelKind::Staria, "tiny", &tok, DType::F32, 3)
        .unwrap();

    let o = convert(&[
        "--model".as_ref(),
        src.as_os_str(),
        "--out".as_ref(),
        dst.as_os_str(),
        "--weights".as_ref(),
        "q8".as_ref(),
    ]);
    let stdout = String::from_utf8_lossy(&o.stdout);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    assert!(stdout.contains("f32 -> q8"), "{stdout}");
    let ck = checkpoint::load(&dst, &Device::Cpu).unwrap();
    assert_eq!(ck.config.weights_dtype, "q8");
    assert!(ck.config.provenance.notes.contains("convert"));
    let size = |d: &std::path::Path| std::fs::metadata(d.join(WEIGHTS_FILE)).unwrap().len();
    assert!(
        size(&dst) < size(&src) / 2,
        "{} vs {}",
        size(&dst),
        size(&src)
    );

    let before = std::fs::read(src.join(WEIGHTS_FILE)).unwrap();
    let other = root.path().join("x");
    for (out, weights, expect) in [
        (src.as_os_str(), "q8", "being converted"),
        (other.as_os_str(), "q9", "--weights"),
    ] {
        let o = convert(&[
            "--model".as_ref(),
            src.as_os_str(),
            "--out".as_ref(),
            out,
            "--weights".as_ref(),
            weights.as_ref(),
        ]);
        let stderr = String::from_utf8_lossy(&o.stderr);
        assert!(!o.status.success(), "{weights}: succeeded");
        assert!(stderr.contains(expect), "{stderr}");
        assert_eq!(stderr.trim().lines().count(), 1, "{stderr}");
    }
    assert_eq!(std::fs::read(src.join(WEIGHTS_FILE)).unwrap(), before);
}
