//! `runner parse`: re-reading a saved run offline.
//!
//! Accepts an `--out` directory (its `results.ktap` and `console.log`), a KTAP
//! file, or a console log in which KTAP and kernel messages are interleaved (as
//! a real machine's serial log is). The same parser and oops watcher as the
//! live run judge it, so the table and exit status are the same.

use crate::console::Watcher;
use crate::ktap::Parser;
use crate::report::{KernelInfo, Outcome, QemuInfo, Results, Run};
use anyhow::{bail, Context, Result};
use std::path::Path;

/// Reads a saved run from `path` and rebuilds its record.
pub fn read(path: &Path) -> Result<Run> {
    let (ktap_text, console_text) = if path.is_dir() {
        let ktap = std::fs::read_to_string(path.join("results.ktap"))
            .with_context(|| format!("reading {}", path.join("results.ktap").display()))?;
        let console = std::fs::read_to_string(path.join("console.log")).unwrap_or_default();
        (ktap, console)
    } else {
        let bytes = std::fs::read(path).with_context(|| format!("reading {}", path.display()))?;
        let text = String::from_utf8_lossy(&bytes).into_owned();
        (text.clone(), text)
    };
    let saved = path
        .is_dir()
        .then(|| saved_metadata(&path.join("results.json")))
        .flatten();
    let mut ktap = Parser::new();
    for line in ktap_text.lines() {
        ktap.feed_line(line);
    }
    if !ktap.saw_version() {
        bail!(
            "{} holds no KTAP stream (no `TAP version` line)",
            path.display()
        );
    }
    let mut watcher = Watcher::new();
    for line in console_text.lines() {
        watcher.feed_line(line, None);
    }
    let outcome = judge(&ktap, &watcher);
    // A bare log says nothing about the kernel or the emulator.
    let mut run = saved.unwrap_or_else(|| Run {
        qemu: QemuInfo {
            version: "unknown".into(),
            path: String::new(),
        },
        accel: "unknown".into(),
        ..Run::blank("unknown (parsed log)", Outcome::Completed)
    });
    run.outcome = saved_outcome_or(&run.outcome, outcome);
    run.tests = ktap.into_results();
    run.kernel_reports = watcher.into_reports();
    Ok(run)
}

/// How the saved streams end: a kernel crash, a short KTAP stream, or complete.
fn judge(ktap: &Parser, watcher: &Watcher) -> Outcome {
    if let Some(first) = watcher.crash_summary() {
        return Outcome::KernelCrashed(first);
    }
    match ktap.shortfall() {
        Some(why) => Outcome::Infrastructure(why),
        None => Outcome::Completed,
    }
}

/// A timeout or infrastructure failure recorded live cannot be seen in the
/// streams alone; keep it when the streams look complete.
fn saved_outcome_or(saved: &Outcome, parsed: Outcome) -> Outcome {
    match (saved, &parsed) {
        (Outcome::TimedOut(_) | Outcome::Infrastructure(_), Outcome::Completed) => saved.clone(),
        _ => parsed,
    }
}

/// Kernel, QEMU and outcome of a saved `results.json`, when there is one.
fn saved_metadata(path: &Path) -> Option<Run> {
    let text = std::fs::read_to_string(path).ok()?;
    let v: serde_json::Value = serde_json::from_str(&text).ok()?;
    let r = v.get("runs")?.get(0)?;
    let s = |p: &[&str]| {
        p.iter()
            .try_fold(r, |v, k| v.get(k))
            .and_then(|v| v.as_str())
            .map(str::to_string)
    };
    let outcome = match (
        s(&["outcome", "status"]).as_deref(),
        s(&["outcome", "reason"]),
    ) {
        (Some("timed_out"), Some(why)) => Outcome::TimedOut(why),
        (Some("infrastructure"), Some(why)) => Outcome::Infrastructure(why),
        _ => Outcome::Completed,
    };
    Some(Run {
        kernel: KernelInfo {
            spec: s(&["kernel", "spec"])?,
            release: s(&["kernel", "release"]),
            package_version: s(&["kernel", "package_version"]),
        },
        qemu: QemuInfo {
            version: s(&["qemu", "version"]).unwrap_or_default(),
            path: s(&["qemu", "path"]).unwrap_or_default(),
        },
        accel: s(&["accel"]).unwrap_or_default(),
        accel_reason: s(&["accel_reason"]).unwrap_or_default(),
        bars: s(&["bars"]).unwrap_or_default(),
        outcome,
        guest_seconds: r
            .get("guest_seconds")
            .and_then(|v| v.as_f64())
            .unwrap_or(0.0),
        tests: vec![],
        kernel_reports: vec![],
        boots: vec![],
        run_dir: None,
    })
}

/// The parsed run wrapped as a whole results document.
pub fn results(run: Run) -> Results {
    Results { runs: vec![run] }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ktap::Verdict;

    #[test]
    fn interleaved_console_log_from_a_real_machine() {
        let dir = tempfile::tempdir().unwrap();
        let log = dir.path().join("serial.log");
        std::fs::write(
            &log,
            "[    1.0] vfio-pci 0000:01:00.0: enabling device\n\
             TAP version 13\n1..2\nok 1 setup.bind_vfio\n\
             [    2.0] some printk\n\
             # expected 1 got 2\nnot ok 2 f2.count\n",
        )
        .unwrap();
        let run = read(&log).unwrap();
        assert_eq!(run.outcome, Outcome::Completed);
        assert_eq!(run.tests.len(), 2);
        assert_eq!(run.tests[1].result, Verdict::Fail);
        assert_eq!(run.tests[1].diagnostic, "expected 1 got 2");
    }

    #[test]
    fn oops_in_the_log_is_a_crash() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("results.ktap"), "TAP version 13\n1..1\n").unwrap();
        std::fs::write(
            dir.path().join("console.log"),
            "[ 3.0] BUG: unable to handle page fault for address: 0\n[ 3.0] Oops: 0000 [#1]\n",
        )
        .unwrap();
        let run = read(dir.path()).unwrap();
        assert!(matches!(run.outcome, Outcome::KernelCrashed(ref s) if s.contains("BUG:")));
        assert_eq!(run.kernel_reports.len(), 1);
    }

    #[test]
    fn no_ktap_is_an_error() {
        let dir = tempfile::tempdir().unwrap();
        let f = dir.path().join("x.log");
        std::fs::write(&f, "just kernel messages\n").unwrap();
        let e = read(&f).unwrap_err().to_string();
        assert!(e.contains("no KTAP"), "{e}");
    }
}
