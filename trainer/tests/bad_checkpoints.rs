//! Broken checkpoints (`staria_test_support::broken_checkpoints`) through the trainer's loaders:
//! `models::load_model_tensors` (`--init`, `--resume`, the Staria stage's decoder, wake-sleep)
//! and `checkpoint::load` (evaluation). Each is refused before anything is allocated for it,
//! with one line naming the file and the setting.

use candle_core::Device;
use staria_test_support::broken_checkpoints;

#[test]
fn the_trainer_refuses_broken_checkpoints_in_one_line() {
    let root = tempfile::tempdir().unwrap();
    for b in broken_checkpoints(root.path()) {
        let file = b.dir.join(b.file).display().to_string();
        let errors = [
            staria_trainer::models::load_model_tensors(&b.dir, &Device::Cpu)
                .map(drop)
                .map_err(|e| e.to_string()),
            staria_models::checkpoint::load(&b.dir, &Device::Cpu)
                .map(drop)
                .map_err(|e| e.to_string()),
        ];
        for msg in errors {
            let msg = msg.expect_err(b.what);
            assert!(
                msg.contains(&file) && msg.contains(&b.needle) && !msg.contains('\n'),
                "{}: expected one line naming {file} and {:?}, got: {msg}",
                b.what,
                b.needle
            );
        }
    }
}
