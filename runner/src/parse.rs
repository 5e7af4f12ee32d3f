//! `runner parse`: re-reading a saved run offline.
//!
//! Accepts an `--out` directory (its `results.ktap` and `console.log`), a KTAP
//! file, or a console log in which KTAP and kernel messages are interleaved (as
//! a real machine's serial log is). The same parser and oops watcher as the
//! live run judge it, so the table and exit status are the same.

use crate::console::Watcher;
use crate::klog::Attributor;
use crate::ktap::Parser;
use crate::recovery::Recovery;
use crate::report::{KernelInfo, Outcome, QemuInfo, Results, Run};
use crate::session::{self, SessionResult};
use anyhow::{bail, Context, Result};
use std::path::Path;

/// Reads a saved run from `path` and rebuilds its record.
///
/// A directory may hold several boots (`results.ktap`, `results.boot2.ktap`, ...,
/// with their console logs); they are combined as the live run combined them.
pub fn read(path: &Path) -> Result<Run> {
    let streams = if path.is_dir() {
        boot_streams(path)?
    } else {
        let bytes = std::fs::read(path).with_context(|| format!("reading {}", path.display()))?;
        let text = String::from_utf8_lossy(&bytes).into_owned();
        vec![(text.clone(), text)]
    };
    let saved = path
        .is_dir()
        .then(|| saved_metadata(&path.join("results.json")))
        .flatten();
    let mut record = Recovery::new(Vec::new());
    for (i, (ktap_text, console_text)) in streams.iter().enumerate() {
        let boot = judge_boot(ktap_text, console_text);
        if i == 0 && !boot.ktap_seen {
            bail!(
                "{} holds no KTAP stream (no `TAP version` line)",
                path.display()
            );
        }
        record.absorb(i + 1, boot.result);
    }
    let record = record.finish();
    // A bare log says nothing about the kernel or the emulator.
    let mut run = saved.unwrap_or_else(|| Run {
        qemu: QemuInfo {
            version: "unknown".into(),
            path: String::new(),
        },
        accel: "unknown".into(),
        ..Run::blank("unknown (parsed log)", Outcome::Completed)
    });
    run.outcome = saved_outcome_or(&run.outcome, record.outcome);
    run.tests = record.tests;
    if path.is_dir() {
        // The KTAP stream does not carry the tests' rule IDs; the saved record does.
        let rules = saved_rules(&path.join("results.json"));
        for t in &mut run.tests {
            if let Some((_, r)) = rules.iter().find(|(name, _)| *name == t.name) {
                t.rules = r.clone();
            }
        }
    }
    run.kernel_reports = record.kernel_reports;
    run.kernel_log_outside_tests = record.outside_tests;
    if streams.len() > 1 {
        run.boots = record.boots;
    }
    Ok(run)
}

/// The KTAP and console text of each boot saved in `dir`, in boot order.
fn boot_streams(dir: &Path) -> Result<Vec<(String, String)>> {
    let mut out = Vec::new();
    for boot in 1.. {
        let ktap_path = dir.join(session::boot_file("results", "ktap", boot));
        if boot > 1 && !ktap_path.is_file() {
            break;
        }
        let ktap = std::fs::read_to_string(&ktap_path)
            .with_context(|| format!("reading {}", ktap_path.display()))?;
        let console_path = dir.join(session::boot_file("console", "log", boot));
        let console = std::fs::read_to_string(console_path).unwrap_or_default();
        out.push((ktap, console));
    }
    Ok(out)
}

/// One saved boot, judged as the live run judges a boot.
struct ParsedBoot {
    result: SessionResult,
    ktap_seen: bool,
}

fn judge_boot(ktap_text: &str, console_text: &str) -> ParsedBoot {
    let mut ktap = Parser::new();
    for line in ktap_text.lines() {
        ktap.feed_line(line);
    }
    // As live: the console's test markers, not the KTAP stream, say which test
    // a kernel line was printed during.
    let mut watcher = Watcher::new();
    let mut klog = Attributor::new();
    for line in console_text.lines() {
        let during = klog.feed_line(line);
        watcher.feed_line(line, during);
    }
    let outcome = judge(&ktap, &watcher);
    let console_tail = crate::device_emu::tail(console_text, session::TAIL_LINES);
    ParsedBoot {
        ktap_seen: ktap.saw_version(),
        result: SessionResult {
            outcome,
            in_flight: ktap.in_flight().map(str::to_string),
            ktap_complete: ktap.complete(),
            tests: ktap.into_results(),
            kernel_reports: watcher.into_reports(),
            findings: klog.into_findings(),
            guest_seconds: 0.0,
            console_tail,
        },
    }
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

/// A timeout or infrastructure failure recorded live cannot be told from the
/// streams alone (they just end); keep it unless the streams show a crash.
fn saved_outcome_or(saved: &Outcome, parsed: Outcome) -> Outcome {
    match (saved, &parsed) {
        (_, Outcome::KernelCrashed(_)) => parsed,
        (Outcome::TimedOut(_) | Outcome::Infrastructure(_), _) => saved.clone(),
        _ => parsed,
    }
}

/// Kernel, QEMU and outcome of a saved `results.json`, when there is one.
/// The rule IDs of each test of the first run in a saved `results.json`.
fn saved_rules(path: &Path) -> Vec<(String, Vec<String>)> {
    let Some(v) = std::fs::read_to_string(path)
        .ok()
        .and_then(|t| serde_json::from_str::<serde_json::Value>(&t).ok())
    else {
        return Vec::new();
    };
    let tests = v["runs"][0]["tests"]
        .as_array()
        .cloned()
        .unwrap_or_default();
    tests
        .iter()
        .filter_map(|t| {
            let name = t["name"].as_str()?.to_string();
            let rules = t["rules"].as_array()?;
            let rules = rules.iter().filter_map(|r| r.as_str().map(String::from));
            Some((name, rules.collect()))
        })
        .collect()
}

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
            vfio_api: s(&["kernel", "vfio_api"])
                .unwrap_or_else(|| crate::cli::VfioApi::Group.name().to_string()),
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
        kernel_log_outside_tests: vec![],
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
    fn a_saved_timeout_stays_a_timeout() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(
            dir.path().join("results.ktap"),
            "TAP version 13\n1..2\nok 1 a\n",
        )
        .unwrap();
        std::fs::write(
            dir.path().join("results.json"),
            r#"{"runs":[{"kernel":{"spec":"debian:sid"},
                "outcome":{"status":"timed_out","reason":"the guest printed nothing for 180 s"}}]}"#,
        )
        .unwrap();
        let run = read(dir.path()).unwrap();
        assert_eq!(
            run.outcome,
            Outcome::TimedOut("the guest printed nothing for 180 s".into())
        );
        assert_eq!(run.kernel.spec, "debian:sid");
    }

    #[test]
    fn every_boot_of_a_directory_is_read() {
        let dir = tempfile::tempdir().unwrap();
        let write = |name: &str, text: &str| std::fs::write(dir.path().join(name), text).unwrap();
        write(
            "results.ktap",
            "TAP version 13\n1..3\n#  RUN           a ...\nok 1 a\n#  RUN           b ...\n",
        );
        write(
            "console.log",
            "[    3.0] Kernel panic - not syncing: sysrq triggered crash\n",
        );
        write("results.boot2.ktap", "TAP version 13\n1..1\nok 1 c\n");
        let run = read(dir.path()).unwrap();
        assert!(
            matches!(run.outcome, Outcome::KernelCrashed(ref s) if s.contains("Kernel panic")),
            "{:?}",
            run.outcome
        );
        let verdicts: Vec<_> = run
            .tests
            .iter()
            .map(|t| (t.name.as_str(), &t.result))
            .collect();
        assert_eq!(
            verdicts,
            [
                ("a", &Verdict::Pass),
                ("b", &Verdict::Fail),
                ("c", &Verdict::Pass)
            ]
        );
        assert_eq!(run.boots.len(), 2);
    }

    #[test]
    fn a_stream_without_a_plan_is_incomplete() {
        let dir = tempfile::tempdir().unwrap();
        let f = dir.path().join("x.log");
        std::fs::write(&f, "TAP version 13\nok 1 a\n").unwrap();
        let run = read(&f).unwrap();
        assert!(
            matches!(run.outcome, Outcome::Infrastructure(ref s) if s.contains("no plan")),
            "{:?}",
            run.outcome
        );
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
