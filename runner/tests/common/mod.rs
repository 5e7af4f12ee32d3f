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
    let out = runner()
        .args(["--kernel", spec, "--dry-run"])
        .output()
        .unwrap();
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
