//! Helpers shared by the runner's end-to-end tests: starting the runner and
//! reading what it wrote.

// Each test file uses its own subset of these.
#![allow(dead_code)]

use serde_json::Value;
use std::path::{Path, PathBuf};
use std::process::{Child, Command};
use std::sync::mpsc::{channel, RecvTimeoutError, Sender};
use std::time::Duration;

/// A command running the runner binary under test.
pub fn runner() -> Command {
    Command::new(env!("CARGO_BIN_EXE_bigbar"))
}

/// The `results.json` a run wrote into `dir`.
pub fn results(dir: &Path) -> Value {
    let path = dir.join("results.json");
    let json = std::fs::read_to_string(&path)
        .unwrap_or_else(|e| panic!("reading {}: {e}", path.display()));
    serde_json::from_str(&json).expect("results.json is JSON")
}

/// Name, verdict and diagnostic of every test of a run record, in order.
pub fn verdicts(run: &Value) -> Vec<(String, String, String)> {
    run["tests"]
        .as_array()
        .expect("tests array")
        .iter()
        .map(|t| {
            (
                t["name"].as_str().unwrap().to_string(),
                t["result"].as_str().unwrap().to_string(),
                t["diagnostic"].as_str().unwrap_or("").to_string(),
            )
        })
        .collect()
}

/// The verdict and diagnostic of test `name` in a run record.
pub fn verdict(run: &Value, name: &str) -> (String, String) {
    verdicts(run)
        .into_iter()
        .find(|(n, _, _)| n == name)
        .map(|(_, r, d)| (r, d))
        .unwrap_or_else(|| panic!("{name} missing: {run}"))
}

/// Sends SIGTERM to a child that outlives its deadline, so that a stuck guest in
/// a run without time limits (`--gdb`, `--shell`) fails the test instead of
/// stalling CI. The runner then stops its own children and exits.
pub struct Watchdog {
    cancel: Sender<()>,
}

impl Watchdog {
    /// Arms the watchdog for `child`.
    pub fn arm(child: &Child, deadline: Duration) -> Self {
        let pid = nix::unistd::Pid::from_raw(child.id() as i32);
        let (cancel, cancelled) = channel::<()>();
        std::thread::spawn(move || {
            if let Err(RecvTimeoutError::Timeout) = cancelled.recv_timeout(deadline) {
                eprintln!("watchdog: the runner outlived {deadline:?}; sending SIGTERM");
                let _ = nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGTERM);
            }
        });
        Self { cancel }
    }
}

impl Drop for Watchdog {
    fn drop(&mut self) {
        let _ = self.cancel.send(());
    }
}

/// The kernel findings (docs/findings) as the catalogue shows them on 7.2
/// without the fixes: they fail whatever the configuration, and the mprotect and
/// mremap siblings of the oopsing split skip after it.
pub const FINDINGS: [&str; 5] = [
    "f8.mremap_move_pud_congruent",
    "f8.mremap_move_pud_incongruent",
    "f6.munmap_pud_unaligned",
    "f6.mprotect_pud_unaligned",
    "f6.mremap_shrink_pud_unaligned",
];

/// The image and release of the project-built kernel `spec` (`stock`,
/// `minimal`, ...), built or taken from the cache by `runner --dry-run`, whose
/// stage line reads "bigbar: kernel done in 0.0 s: RELEASE (IMAGE)".
pub fn built_kernel(spec: &str) -> (PathBuf, String) {
    built_kernel_in(spec, None)
}

/// [`built_kernel`] in the store `cache` (the user's when `None`).
pub fn built_kernel_in(spec: &str, cache: Option<&Path>) -> (PathBuf, String) {
    let mut cmd = runner();
    cmd.args(["--kernel", spec, "--dry-run"]);
    if let Some(dir) = cache {
        cmd.arg("--cache").arg(dir);
    }
    let out = cmd.output().unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{stderr}");
    let line = stderr
        .lines()
        .find(|l| l.starts_with("bigbar: kernel done"))
        .unwrap_or_else(|| panic!("no kernel stage in:\n{stderr}"));
    let what = line.split_once(": ").unwrap().1.split_once(": ").unwrap().1;
    let (release, image) = what.split_once(" (").unwrap();
    (
        PathBuf::from(image.trim_end_matches(')')),
        release.to_string(),
    )
}

/// Categories of the user's store a cold store shares with it: what the runner
/// fetches (and the tests do not mean to prove cold), made first if absent so
/// that the cold store fills the shared one instead of a copy.
const SHARED_CATEGORIES: [&str; 6] = [
    "apt",
    "keyrings",
    "qemu",
    "busybox",
    "kernel-source",
    "programs",
];

/// A private store that is empty in the categories `cold` (e.g. `kernel/built`,
/// `build-tools`) and shares every other category with the user's store
/// (symbolic links), so a test builds those from nothing on every run without
/// fetching QEMU or the kernel source again.
pub fn cold_store(cold: &[&str]) -> tempfile::TempDir {
    let user = vm_images::cache::default_root().expect("a store");
    for c in SHARED_CATEGORIES {
        std::fs::create_dir_all(user.join(c)).unwrap();
    }
    let dir = tempfile::tempdir().expect("temp dir");
    let cold: Vec<&Path> = cold.iter().map(Path::new).collect();
    link_all_but(&user, dir.path(), Path::new(""), &cold);
    dir
}

/// Links every entry of `from/rel` into `to/rel`, but the `cold` paths, and
/// descends into the directories that hold one.
fn link_all_but(from: &Path, to: &Path, rel: &Path, cold: &[&Path]) {
    std::fs::create_dir_all(to.join(rel)).unwrap();
    for item in std::fs::read_dir(from.join(rel)).unwrap() {
        let name = rel.join(item.unwrap().file_name());
        if cold.contains(&name.as_path()) {
            continue;
        }
        if cold.iter().any(|c| c.starts_with(&name)) {
            link_all_but(from, to, &name, cold);
        } else {
            std::os::unix::fs::symlink(from.join(&name), to.join(&name)).unwrap();
        }
    }
}

/// The names of the tests a run with `args` selects, from `runner --list`
/// (the catalogue itself), so a test compares a run's count with it exactly.
pub fn listed(args: &[&str]) -> Vec<String> {
    let out = runner().arg("--list").args(args).output().unwrap();
    assert!(
        out.status.success(),
        "--list {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter_map(|l| l.split_whitespace().next())
        .map(str::to_string)
        .collect()
}

/// `names` in order.
pub fn sorted(mut names: Vec<String>) -> Vec<String> {
    names.sort();
    names
}

/// The names of `verdicts` in order.
pub fn sorted_names(verdicts: &[(String, String, String)]) -> Vec<String> {
    sorted(verdicts.iter().map(|(n, _, _)| n.clone()).collect())
}
