//! Fault injection against the runner: device-emu or QEMU killed mid-run, a
//! SIGINT to the runner, and two runners at once. Each must end with the right
//! report and exit status, and leave no process, socket or run directory behind.

mod common;

use common::{results, runner, verdict};
use nix::sys::signal::Signal::{self, SIGINT, SIGKILL};
use nix::unistd::Pid;
use serde_json::Value;
use std::collections::BTreeSet;
use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Stdio};
use std::time::{Duration, Instant};

/// The runner's exit status when the kernel could not be tested.
const EXIT_NOT_TESTED: i32 = 125;

/// A runner started with its console echoed, so the test can act at a known point.
struct Watched {
    child: Child,
    lines: std::io::Lines<BufReader<std::process::ChildStderr>>,
    seen: Vec<String>,
    run_dir: Option<PathBuf>,
    descendants: BTreeSet<i32>,
}

impl Watched {
    fn start(out: &Path, extra: &[&str]) -> Self {
        let mut child = runner()
            .args(["-v", "--filter", "fault_order.*", "--out"])
            .arg(out)
            .args(extra)
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        let lines = BufReader::new(child.stderr.take().unwrap()).lines();
        Self {
            child,
            lines,
            seen: Vec::new(),
            run_dir: None,
            descendants: BTreeSet::new(),
        }
    }

    /// Reads stderr until a line contains `marker`; records what it learns.
    fn wait_for(&mut self, marker: &str) {
        for line in self.lines.by_ref() {
            let line = line.unwrap();
            if let Some(d) = line.strip_prefix("bigbar: run directory ") {
                self.run_dir = Some(PathBuf::from(d));
            }
            let hit = line.contains(marker);
            self.seen.push(line);
            if hit {
                self.descendants = descendants(self.child.id() as i32);
                return;
            }
        }
        panic!("runner ended before {marker:?}:\n{}", self.seen.join("\n"));
    }

    /// Waits for the runner to exit; returns its status code and all stderr.
    fn finish(mut self) -> (Option<i32>, String, Option<PathBuf>, BTreeSet<i32>) {
        let rest: Vec<String> = self.lines.by_ref().map_while(Result::ok).collect();
        self.seen.extend(rest);
        let status = self.child.wait().unwrap();
        (
            status.code(),
            self.seen.join("\n"),
            self.run_dir,
            self.descendants,
        )
    }
}

/// Every process whose parent chain leads to `root`.
fn descendants(root: i32) -> BTreeSet<i32> {
    let mut parent_of = Vec::new();
    for entry in std::fs::read_dir("/proc").unwrap().flatten() {
        let Ok(pid) = entry.file_name().to_string_lossy().parse::<i32>() else {
            continue;
        };
        let Ok(stat) = std::fs::read_to_string(entry.path().join("stat")) else {
            continue;
        };
        // The field after the parenthesised command name: state, then ppid.
        let after = &stat[stat.rfind(')').unwrap() + 2..];
        let ppid: i32 = after.split(' ').nth(1).unwrap().parse().unwrap();
        parent_of.push((pid, ppid));
    }
    let mut found = BTreeSet::from([root]);
    loop {
        let before = found.len();
        for (pid, ppid) in &parent_of {
            if found.contains(ppid) {
                found.insert(*pid);
            }
        }
        if found.len() == before {
            found.remove(&root);
            return found;
        }
    }
}

fn cmdline(pid: i32) -> String {
    std::fs::read(format!("/proc/{pid}/cmdline"))
        .map(|b| String::from_utf8_lossy(&b).replace('\0', " "))
        .unwrap_or_default()
}

fn kill(pid: i32, sig: Signal) {
    nix::sys::signal::kill(Pid::from_raw(pid), sig).unwrap();
}

/// No process, run directory or socket of the run survives it.
fn assert_clean(pids: &BTreeSet<i32>, run_dir: Option<&Path>, log: &str) {
    for pid in pids {
        let alive = Path::new(&format!("/proc/{pid}")).exists()
            && !std::fs::read_to_string(format!("/proc/{pid}/stat"))
                .unwrap_or_default()
                .contains(") Z ");
        assert!(
            !alive,
            "process {pid} ({}) outlived the runner\n{log}",
            cmdline(*pid)
        );
    }
    let dir = run_dir.expect("the runner names its run directory");
    assert!(!dir.exists(), "{} was left behind", dir.display());
}

fn outcome(out: &Path) -> Value {
    results(out)["runs"][0]["outcome"].clone()
}

fn kill_child_matching(w: &Watched, needle: &str) {
    let pid = *w
        .descendants
        .iter()
        .find(|p| cmdline(**p).contains(needle))
        .unwrap_or_else(|| panic!("no {needle} among the runner's children"));
    kill(pid, SIGKILL);
}

#[test]
fn device_emu_killed_mid_run_is_reported_as_such() {
    let out = tempfile::tempdir().unwrap();
    let mut w = Watched::start(out.path(), &[]);
    w.wait_for("Run /init");
    kill_child_matching(&w, "device-emu --socket");
    let (code, log, run_dir, pids) = w.finish();
    assert_eq!(code, Some(EXIT_NOT_TESTED), "{log}");
    let o = outcome(out.path());
    assert_eq!(o["status"], "infrastructure", "{o}");
    assert!(
        o["reason"].as_str().unwrap().contains("device-emu exited"),
        "{o}"
    );
    assert_clean(&pids, run_dir.as_deref(), &log);
}

#[test]
fn qemu_killed_mid_run_is_reported_as_such() {
    let out = tempfile::tempdir().unwrap();
    let mut w = Watched::start(out.path(), &[]);
    w.wait_for("Run /init");
    kill_child_matching(&w, "qemu-system-x86_64");
    let (code, log, run_dir, pids) = w.finish();
    assert_eq!(code, Some(EXIT_NOT_TESTED), "{log}");
    let o = outcome(out.path());
    assert_eq!(o["status"], "infrastructure", "{o}");
    assert!(o["reason"].as_str().unwrap().contains("QEMU failed"), "{o}");
    assert_clean(&pids, run_dir.as_deref(), &log);
}

#[test]
fn sigint_stops_everything_and_cleans_up() {
    let out = tempfile::tempdir().unwrap();
    let mut w = Watched::start(out.path(), &[]);
    w.wait_for("Run /init");
    kill(w.child.id() as i32, SIGINT);
    let (code, log, run_dir, pids) = w.finish();
    assert_eq!(code, Some(EXIT_NOT_TESTED), "{log}");
    let o = outcome(out.path());
    assert!(o["reason"].as_str().unwrap().contains("signal 2"), "{o}");
    assert_clean(&pids, run_dir.as_deref(), &log);
}

#[test]
fn two_runners_at_once_share_the_cache_and_nothing_else() {
    let (a, b) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let mut wa = Watched::start(a.path(), &["--filter", "setup.*"]);
    let mut wb = Watched::start(b.path(), &["--filter", "setup.*"]);
    wa.wait_for("Run /init");
    wb.wait_for("Run /init");
    let (ca, la, da, pa) = wa.finish();
    let (cb, lb, db, pb) = wb.finish();
    assert_eq!(ca, Some(0), "{la}");
    assert_eq!(cb, Some(0), "{lb}");
    assert_ne!(da, db, "runs must not share a run directory");
    assert!(pa.is_disjoint(&pb));
    assert_clean(&pa, da.as_deref(), &la);
    assert_clean(&pb, db.as_deref(), &lb);
}

#[test]
fn a_truncated_cache_file_is_detected_and_fetched_again() {
    let cache = tempfile::tempdir().unwrap();
    // A dry run fills a private cache without booting.
    let dry = runner()
        .args(["--dry-run", "--cache"])
        .arg(cache.path())
        .output()
        .unwrap();
    assert!(
        dry.status.success(),
        "{}",
        String::from_utf8_lossy(&dry.stderr)
    );
    let kernels = cache.path().join("kernel/debian-sid");
    let entry = std::fs::read_dir(&kernels)
        .unwrap()
        .map(|e| e.unwrap().path())
        .find(|p| p.join("vmlinuz").is_file())
        .expect("a cached kernel");
    let image = entry.join("vmlinuz");
    let full = std::fs::metadata(&image).unwrap().len();
    std::fs::OpenOptions::new()
        .write(true)
        .open(&image)
        .unwrap()
        .set_len(full / 2)
        .unwrap();
    let out = tempfile::tempdir().unwrap();
    let run = runner()
        .args(["--filter", "setup.*", "--cache"])
        .arg(cache.path())
        .arg("--out")
        .arg(out.path())
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&run.stderr);
    assert_eq!(run.status.code(), Some(0), "{stderr}");
    assert!(stderr.contains("is damaged (vmlinuz has"), "{stderr}");
    assert_eq!(std::fs::metadata(&image).unwrap().len(), full);
}

/// Runs the runner with a deliberate guest failure first, then `setup.*`.
fn injected(kind: &str, extra: &[&str]) -> (Option<i32>, Value, String) {
    let out = tempfile::tempdir().unwrap();
    let run = runner()
        .arg(format!("--guest-arg=--inject={kind}"))
        .args(["--filter", "inject.*", "--filter", "setup.*"])
        .args(extra)
        .arg("--out")
        .arg(out.path())
        .output()
        .unwrap();
    let v = results(out.path());
    (
        run.status.code(),
        v["runs"][0].clone(),
        String::from_utf8_lossy(&run.stderr).into(),
    )
}

#[test]
fn a_kernel_panic_fails_its_test_and_the_rest_run_in_a_fresh_guest() {
    let (code, run, log) = injected("panic", &[]);
    assert_eq!(code, Some(3), "{log}");
    let (result, diag) = verdict(&run, "inject.panic");
    assert_eq!(result, "fail");
    assert!(
        diag.contains("the kernel crashed during this test"),
        "{diag}"
    );
    assert!(diag.contains("Kernel panic"), "{diag}");
    assert_eq!(verdict(&run, "setup.bind_vfio").0, "pass");
    let boots = run["boots"].as_array().unwrap();
    assert_eq!(boots.len(), 2, "{run}");
    assert_eq!(boots[0]["tests"][0], "inject.panic");
    assert_eq!(boots[1]["tests"][0], "setup.bind_vfio");
}

/// A runner's stderr lines, each with when the test read it, and the
/// runner's descendants when the first line containing `sample_at` arrived.
fn timed_lines(child: &mut Child, sample_at: &str) -> (Vec<(Instant, String)>, BTreeSet<i32>) {
    let err = BufReader::new(child.stderr.take().unwrap());
    let mut pids = BTreeSet::new();
    let mut lines = Vec::new();
    for line in err.lines().map_while(Result::ok) {
        if pids.is_empty() && line.contains(sample_at) {
            pids = descendants(child.id() as i32);
        }
        lines.push((Instant::now(), line));
    }
    (lines, pids)
}

/// When the first line containing `needle` was read.
fn seen_at(lines: &[(Instant, String)], needle: &str) -> Instant {
    lines
        .iter()
        .find(|(_, l)| l.contains(needle))
        .map(|(t, _)| *t)
        .unwrap_or_else(|| panic!("no line with {needle:?}"))
}

/// The runner's default `--progress-timeout`.
const PROGRESS_LIMIT: Duration = Duration::from_secs(30);

#[test]
fn a_hung_guest_is_found_in_30_s_and_a_slow_one_is_kept() {
    // Default limits: only the heartbeat can tell the 40 s of inject.slow
    // (longer than the 30 s progress limit) from the hang of inject.hang.
    let out = tempfile::tempdir().unwrap();
    let mut child = runner()
        .args([
            "-v",
            "--guest-arg=--inject=slow",
            "--guest-arg=--inject=hang",
        ])
        .args(["--filter", "inject.*", "--filter", "setup.*", "--out"])
        .arg(out.path())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let (lines, pids) = timed_lines(&mut child, "bigbar: begin inject.hang");
    let code = child.wait().unwrap().code();
    let log: Vec<&str> = lines.iter().map(|(_, l)| l.as_str()).collect();
    let log = log.join("\n");
    assert_eq!(code, Some(4), "{log}");
    let run = results(out.path())["runs"][0].clone();

    // Slow but beating: not stopped, passed.
    assert_eq!(verdict(&run, "inject.slow").0, "pass", "{log}");

    // Hung: found within the progress limit and named.
    let hung = seen_at(&lines, "bigbar: begin inject.hang");
    let found = seen_at(&lines, "the guest hung: no heartbeat");
    let took = found - hung;
    eprintln!(
        "hang of inject.hang found {:.1} s after it began",
        took.as_secs_f64()
    );
    // The limit counts from the last KTAP line, which is the begin line or a
    // heartbeat of the guest binary's parent (every 2 s) sent after it and
    // before the stop: so 30 s to 32 s by the runner's clock. This test stamps
    // each line when it reads it from the runner's stderr, which may lag the
    // runner by up to a second either way (seen: 29.997 s). Measured: 30.0 s.
    let margin = Duration::from_secs(1);
    assert!(
        took >= PROGRESS_LIMIT - margin && took <= PROGRESS_LIMIT + Duration::from_secs(2) + margin,
        "took {took:?}, the limit is {PROGRESS_LIMIT:?}\n{log}"
    );
    let (result, diag) = verdict(&run, "inject.hang");
    assert_eq!(result, "fail");
    assert!(diag.contains("the guest hung"), "{diag}");
    assert!(diag.contains("in flight: inject.hang"), "{diag}");
    assert!(
        diag.contains("bigbar: begin inject.hang"),
        "console lines: {diag}"
    );

    // The rest ran in a fresh guest.
    assert_eq!(verdict(&run, "setup.bind_vfio").0, "pass");
    let boots = run["boots"].as_array().unwrap();
    assert_eq!(boots.len(), 2, "{run}");
    assert_eq!(
        boots[0]["tests"],
        serde_json::json!(["inject.slow", "inject.hang"])
    );
    assert_eq!(boots[1]["tests"][0], "setup.bind_vfio");
    let run_dir = lines
        .iter()
        .find_map(|(_, l)| l.strip_prefix("bigbar: run directory "))
        .map(PathBuf::from);
    assert_clean(&pids, run_dir.as_deref(), &log);
}
