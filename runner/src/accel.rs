//! Choosing the accelerator: KVM where it really runs a Linux guest, TCG otherwise.
//!
//! `/dev/kvm` existing proves little: on some hosts (nested virtualisation
//! without VMX features) KVM starts and then stops the guest with "KVM internal
//! error ... emulation failure". So the probe boots the real kernel under KVM
//! with no initramfs: reaching the root-mount panic proves KVM works; an
//! internal error, an early exit or silence means TCG. The verdict is cached per
//! host CPU and QEMU version, so the probe runs once per machine.

use anyhow::{Context, Result};
use std::fs::OpenOptions;
use std::io::{BufRead, BufReader, Read};
use std::path::Path;
use std::process::{Command, Stdio};
use std::sync::mpsc::{channel, RecvTimeoutError};
use std::time::{Duration, Instant};
use vm_images::launch::{Accel, QemuArgs, SerialSink};
use vm_images::Cache;

/// How long the probe boot may take before KVM is declared unusable.
const PROBE_TIMEOUT: Duration = Duration::from_secs(30);

/// The accelerator chosen, and why.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Choice {
    /// The accelerator.
    pub accel: Accel,
    /// Why it was chosen.
    pub reason: String,
}

impl Choice {
    fn new(accel: Accel, reason: impl Into<String>) -> Self {
        Self {
            accel,
            reason: reason.into(),
        }
    }
}

/// Resolves `requested` (`tcg`, `kvm` or `auto`) to an accelerator.
pub fn choose(
    requested: &str,
    qemu: impl Fn() -> Command,
    qemu_version: &str,
    kernel: &Path,
    cache: &Cache,
) -> Result<Choice> {
    match Accel::from_name(requested) {
        Some(accel) => Ok(Choice::new(accel, "requested")),
        None => {
            if let Err(e) = OpenOptions::new().read(true).write(true).open("/dev/kvm") {
                return Ok(Choice::new(Accel::Tcg, format!("/dev/kvm not usable: {e}")));
            }
            let record = format!("{}-{qemu_version}", host_cpu_key());
            let cached = cache.read_record(&[RECORDS], &record).ok().flatten();
            if let Some(c) = cached.as_deref().and_then(parse_record) {
                return Ok(c);
            }
            let (choice, definite) = probe(qemu(), kernel)?;
            // Only a verdict the boot itself gave is kept: a probe that timed out
            // on a loaded host says nothing lasting about KVM. A lost record only
            // means probing again next time.
            if definite {
                let text = format!("{}\n{}", choice.accel.name(), choice.reason);
                let _ = cache.write_record(&[RECORDS], &record, &text);
            }
            Ok(choice)
        }
    }
}

/// Boots `kernel` under KVM without an initramfs and watches how far it gets;
/// the verdict is definite when the boot's own output decided it.
fn probe(mut qemu: Command, kernel: &Path) -> Result<(Choice, bool)> {
    // The console on stdout is all the probe reads.
    let args = QemuArgs {
        memory_mib: 256,
        ..QemuArgs::new(Accel::Kvm, kernel, SerialSink::Stdio { signal: true })
    };
    qemu.args(args.args())
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    // The probe QEMU dies with the runner.
    crate::process::die_with_parent(&mut qemu);
    let mut child = qemu.spawn().context("starting QEMU for the KVM probe")?;
    let (tx, rx) = channel::<String>();
    for stream in [
        child
            .stdout
            .take()
            .map(|s| Box::new(s) as Box<dyn Read + Send>),
        child
            .stderr
            .take()
            .map(|s| Box::new(s) as Box<dyn Read + Send>),
    ]
    .into_iter()
    .flatten()
    {
        let tx = tx.clone();
        std::thread::spawn(move || {
            for line in BufReader::new(stream).lines().map_while(Result::ok) {
                if tx.send(line).is_err() {
                    return;
                }
            }
        });
    }
    drop(tx);
    let deadline = Instant::now() + PROBE_TIMEOUT;
    let verdict = loop {
        match rx.recv_timeout(deadline.saturating_duration_since(Instant::now())) {
            Ok(line) => {
                if let Some(v) = judge_line(&line) {
                    break (v, true);
                }
            }
            Err(RecvTimeoutError::Timeout) => {
                break (
                    Choice::new(Accel::Tcg, "KVM probe boot made no progress in 30 s"),
                    false,
                )
            }
            Err(RecvTimeoutError::Disconnected) => {
                break (
                    Choice::new(Accel::Tcg, "QEMU exited during the KVM probe boot"),
                    false,
                )
            }
        }
    };
    let _ = child.kill();
    let _ = child.wait();
    Ok(verdict)
}

/// What one line of the probe boot's output says about KVM, if anything.
fn judge_line(line: &str) -> Option<Choice> {
    if line.contains("KVM internal error") || line.contains("emulation failure") {
        Some(Choice::new(
            Accel::Tcg,
            format!("KVM cannot run the guest here: {line}"),
        ))
    } else if line.contains("Kernel panic") || line.contains("VFS: Unable to mount root") {
        Some(Choice::new(
            Accel::Kvm,
            "a KVM probe boot reached the root mount",
        ))
    } else {
        None
    }
}

/// Identifies the host CPU (model and flags) so a cached verdict follows the machine.
fn host_cpu_key() -> String {
    let info = std::fs::read_to_string("/proc/cpuinfo").unwrap_or_default();
    let relevant: String = info
        .lines()
        .filter(|l| l.starts_with("model name") || l.starts_with("flags"))
        .take(2)
        .collect();
    // FNV-1a: a stable, dependency-free fingerprint (not a security boundary).
    let hash = relevant.bytes().fold(0xcbf2_9ce4_8422_2325u64, |h, b| {
        (h ^ b as u64).wrapping_mul(0x100_0000_01b3)
    });
    format!("{hash:016x}")
}

/// The cache category of probe verdicts (one small record per host and QEMU).
const RECORDS: &str = "accel-probe";

/// A cached verdict: the accelerator on the first line, the reason on the second.
fn parse_record(text: &str) -> Option<Choice> {
    let (accel, reason) = text.trim_end().split_once('\n')?;
    Accel::from_name(accel).map(|a| Choice::new(a, format!("{reason} (cached)")))
}

#[cfg(test)]
mod tests {
    use super::*;
    use rstest::rstest;

    #[rstest]
    #[case("KVM internal error. Suberror: 1", Some(Accel::Tcg))]
    #[case("emulation failure", Some(Accel::Tcg))]
    #[case(
        "[    1.2] Kernel panic - not syncing: VFS: Unable to mount root fs",
        Some(Accel::Kvm)
    )]
    #[case("[    0.0] Linux version 7.2.13", None)]
    fn probe_lines(#[case] line: &str, #[case] accel: Option<Accel>) {
        assert_eq!(judge_line(line).map(|c| c.accel), accel);
    }

    #[test]
    fn explicit_choice_needs_no_probe() {
        let c = choose(
            "tcg",
            || Command::new("false"),
            "1",
            Path::new("/k"),
            &Cache::new("/nonexistent"),
        )
        .unwrap();
        assert_eq!(c, Choice::new(Accel::Tcg, "requested"));
    }

    #[test]
    fn records_round_trip() {
        let dir = tempfile::tempdir().unwrap();
        let cache = Cache::new(dir.path());
        cache
            .write_record(&[RECORDS], "rec", "tcg\nbecause")
            .unwrap();
        let text = cache.read_record(&[RECORDS], "rec").unwrap().unwrap();
        let c = parse_record(&text).unwrap();
        assert_eq!(c.accel, Accel::Tcg);
        assert_eq!(c.reason, "because (cached)");
        assert!(parse_record("bogus\nx\n").is_none());
    }
}
