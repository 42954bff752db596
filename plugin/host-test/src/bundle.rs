//! Finding and building the bundles under test (the project's own bundler, a private copy per
//! process so a re-bundle cannot replace a loaded library, or a given bundle), and running a
//! scenario in a child process of its own.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::OnceLock;

use crate::vst3_host;

/// Set in a child process that runs one scenario (see [`run_isolated`]).
const CHILD_ENV: &str = "STARIA_HOST_TEST_CHILD";
/// The bundle path handed from the parent test process to its children.
const CLAP_ENV: &str = "STARIA_HOST_TEST_CLAP";
/// A `Staria.clap` to test instead of the one the tests bundle themselves (the debug bundle
/// under `cargo test`, the release one under `cargo test --release`): e.g. the release bundle
/// `cargo xtask bundle staria-plugin --release` wrote, for the soak by hand:
/// `STARIA_TEST_CLAP=target/bundled/Staria.clap cargo test -p staria-plugin-host-test --test soak`.
/// It is copied first like a bundle the tests built (a rebuild cannot replace it under the run).
pub const GIVEN_CLAP_ENV: &str = "STARIA_TEST_CLAP";

/// The target directory the running test or bench binary was built in
/// (`<target>/<profile>/deps/<binary>`, or `<target>/<triple>/<profile>/deps/<binary>`).
pub fn target_dir() -> PathBuf {
    let exe = std::env::current_exe().expect("current_exe");
    let profile_dir = exe
        .parent()
        .and_then(Path::parent)
        .expect("binary under <target>/<profile>/deps");
    let above = profile_dir.parent().expect("target dir");
    // Cross builds add a target-triple level; it holds no `CACHEDIR.TAG`, the target dir does.
    if !above.join("CACHEDIR.TAG").exists()
        && let Some(up) = above.parent()
        && up.join("CACHEDIR.TAG").exists()
    {
        return up.to_path_buf();
    }
    above.to_path_buf()
}

fn workspace_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../..")
        .canonicalize()
        .expect("workspace root")
}

/// Runs the project's bundler (`cargo xtask bundle staria-plugin`, release or debug as this binary
/// was built) into this binary's target directory, once per process. Returns `<target>/bundled`.
fn run_bundler() -> PathBuf {
    static DONE: OnceLock<PathBuf> = OnceLock::new();
    DONE.get_or_init(|| {
        let target = target_dir();
        let cargo = std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
        let mut cmd = Command::new(cargo);
        cmd.current_dir(workspace_root())
            .env("CARGO_TARGET_DIR", &target)
            .args(["xtask", "bundle", "staria-plugin"]);
        if !cfg!(debug_assertions) {
            cmd.arg("--release");
        }
        let status = cmd
            .status()
            .expect("run `cargo xtask bundle staria-plugin`");
        assert!(
            status.success(),
            "`cargo xtask bundle staria-plugin` failed: {status}"
        );
        target.join("bundled")
    })
    .clone()
}

/// Where this process keeps its private copies of the bundles.
fn private_bundle_dir() -> PathBuf {
    let dir = target_dir()
        .join("staria-host-test")
        .join(if cfg!(debug_assertions) {
            "debug"
        } else {
            "release"
        });
    std::fs::create_dir_all(&dir).expect("create the test bundle folder");
    remove_copies_of_exited_processes(&dir);
    dir
}

/// Deletes the bundle copies (`Staria-<pid>.clap`, `Staria-<pid>.vst3`; a debug copy is about
/// 400 MB) of test processes that have exited, so repeated runs do not fill the disk. Linux only
/// (a process is alive while `/proc/<pid>` exists); elsewhere copies stay.
fn remove_copies_of_exited_processes(dir: &Path) {
    if !Path::new("/proc/self").exists() {
        return;
    }
    let Ok(entries) = std::fs::read_dir(dir) else {
        return;
    };
    for entry in entries.flatten() {
        let name = entry.file_name();
        let Some(pid) = name
            .to_str()
            .and_then(|n| n.strip_prefix("Staria-"))
            .and_then(|n| n.split('.').next())
            .and_then(|n| n.parse::<u32>().ok())
        else {
            continue;
        };
        if pid != std::process::id() && !Path::new(&format!("/proc/{pid}")).exists() {
            let path = entry.path();
            let _ = if path.is_dir() {
                std::fs::remove_dir_all(&path)
            } else {
                std::fs::remove_file(&path)
            };
        }
    }
}

/// Copies `from` to `to` through a temporary name, so `to` is never a half-written library.
fn copy_in_place(from: &Path, to: &Path) {
    assert!(
        from.exists(),
        "the bundler did not write {}",
        from.display()
    );
    let tmp = to.with_extension("tmp");
    std::fs::copy(from, &tmp).expect("copy the bundle");
    std::fs::rename(&tmp, to).expect("move the bundle copy in place");
}

/// Builds `Staria.clap` with the project's bundler (release or debug, as this binary was built)
/// into the same target directory, copies it to a private path (so a later re-bundle cannot
/// replace a library that is loaded) and returns that path. Runs the bundler once per process;
/// child processes reuse their parent's copy.
pub fn bundled_clap() -> PathBuf {
    static PATH: OnceLock<PathBuf> = OnceLock::new();
    PATH.get_or_init(|| {
        if let Some(p) = std::env::var_os(CLAP_ENV) {
            return PathBuf::from(p);
        }
        let bundle = match given_clap() {
            Some(given) => given,
            None => run_bundler().join("Staria.clap"),
        };
        let private = private_bundle_dir().join(format!("Staria-{}.clap", std::process::id()));
        copy_in_place(&bundle, &private);
        private
    })
    .clone()
}

/// The bundle named by [`GIVEN_CLAP_ENV`], if any (then the tests do not bundle one).
pub fn given_clap() -> Option<PathBuf> {
    std::env::var_os(GIVEN_CLAP_ENV)
        .filter(|p| !p.is_empty())
        .map(PathBuf::from)
}

/// Hands the VST3 bundle path from a parent test process to its children.
pub const VST3_ENV: &str = "STARIA_HOST_TEST_VST3";

/// Like [`bundled_clap`], for `Staria.vst3`: a private copy of the bundle folder (Linux layout,
/// `Staria-<pid>.vst3/Contents/x86_64-linux/Staria.so`). Child processes reuse their parent's
/// copy through [`VST3_ENV`] (see `tests/vst3.rs`).
pub fn bundled_vst3() -> PathBuf {
    static PATH: OnceLock<PathBuf> = OnceLock::new();
    PATH.get_or_init(|| {
        if let Some(p) = std::env::var_os(VST3_ENV) {
            return PathBuf::from(p);
        }
        let arch = vst3_host::ARCH_DIR;
        let so = run_bundler()
            .join("Staria.vst3")
            .join("Contents")
            .join(arch)
            .join("Staria.so");
        let private = private_bundle_dir().join(format!("Staria-{}.vst3", std::process::id()));
        let dir = private.join("Contents").join(arch);
        std::fs::create_dir_all(&dir).expect("create the VST3 bundle copy");
        copy_in_place(&so, &dir.join("Staria.so"));
        private
    })
    .clone()
}

/// Runs `body` in a child process (this test binary, filtered to `test_name`) and asserts that the
/// child succeeded. The plugin's allocation checker aborts the whole process on an allocation in
/// `process()`; isolating each scenario turns that into an ordinary test failure with a message.
pub fn run_isolated(test_name: &str, body: impl FnOnce()) {
    run_isolated_with_env(test_name, &[], &[], body);
}

/// [`run_isolated`] with environment variables set (`set`) and removed (`remove`) in the child
/// process, before the plugin is loaded there.
pub fn run_isolated_with_env(
    test_name: &str,
    set: &[(&str, &std::ffi::OsStr)],
    remove: &[&str],
    body: impl FnOnce(),
) {
    if std::env::var_os(CHILD_ENV).is_some() {
        body();
        return;
    }
    let clap = bundled_clap();
    let mut cmd = Command::new(std::env::current_exe().expect("current_exe"));
    cmd.args([test_name, "--exact", "--nocapture", "--test-threads=1"])
        .env(CHILD_ENV, "1")
        .env(CLAP_ENV, &clap);
    for (key, value) in set {
        cmd.env(key, value);
    }
    for key in remove {
        cmd.env_remove(key);
    }
    let out = cmd.output().expect("spawn the scenario process");
    let text = format!(
        "--- stdout\n{}\n--- stderr\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        out.status.success(),
        "scenario {test_name} failed ({}; SIGABRT = an allocation in process() or a crash)\n{text}",
        out.status
    );
    assert!(
        text.contains("1 passed"),
        "scenario {test_name} did not run\n{text}"
    );
    // What the scenario printed (figures), shown with --nocapture like a test's own output.
    print!("{}", String::from_utf8_lossy(&out.stdout));
}
