//! Choosing the accelerator: KVM where it really runs a Linux guest, TCG otherwise.
//!
//! `/dev/kvm` existing proves little: on some hosts (nested virtualisation
//! without VMX features) KVM starts and then stops the guest with "KVM internal
//! error ... emulation failure", and on others its vCPU spins in the host
//! kernel without ever running the guest. So the probe boots the real kernel
//! under KVM with no initramfs: reaching the root-mount panic proves KVM works;
//! an internal error, an early exit, or QEMU spending [`SILENT_CPU`] of CPU time
//! without the guest printing a line means TCG. The verdict is cached per host
//! CPU and QEMU version, so the probe runs once per machine.

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

/// CPU time QEMU may spend before the guest's first console line. Under working
/// KVM the kernel prints its banner after about a tenth of a second of CPU
/// (loading the kernel included); a vCPU that cannot run the guest burns CPU in
/// the host kernel instead. CPU time, not wall time, so that a loaded host
/// (where QEMU gets less of it) is never judged by it: there the verdict waits
/// for [`PROBE_TIMEOUT`], which is not kept.
const SILENT_CPU: Duration = Duration::from_secs(2);

/// How often the probe looks at QEMU's CPU time while the guest is silent.
const CPU_CHECK_INTERVAL: Duration = Duration::from_millis(250);

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
    let (tx, rx) = channel::<(Stream, String)>();
    let streams = [
        (
            Stream::Console,
            child
                .stdout
                .take()
                .map(|s| Box::new(s) as Box<dyn Read + Send>),
        ),
        (
            Stream::Qemu,
            child
                .stderr
                .take()
                .map(|s| Box::new(s) as Box<dyn Read + Send>),
        ),
    ];
    for (kind, stream) in streams {
        let Some(stream) = stream else { continue };
        let tx = tx.clone();
        std::thread::spawn(move || {
            for line in BufReader::new(stream).lines().map_while(Result::ok) {
                if tx.send((kind, line)).is_err() {
                    return;
                }
            }
        });
    }
    drop(tx);
    let verdict = watch(&rx, || cpu_time(child.id()));
    let _ = child.kill();
    let _ = child.wait();
    Ok(verdict)
}

/// Where a line of the probe's output came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Stream {
    /// The guest's serial console (QEMU's stdout).
    Console,
    /// QEMU's own messages (its stderr), where KVM errors appear.
    Qemu,
}

/// Reads the probe's output until it decides, checking QEMU's CPU time
/// (`cpu`) while the guest has printed nothing; the verdict is definite when
/// the boot itself gave it.
fn watch(
    rx: &std::sync::mpsc::Receiver<(Stream, String)>,
    cpu: impl Fn() -> Option<Duration>,
) -> (Choice, bool) {
    let deadline = Instant::now() + PROBE_TIMEOUT;
    let mut guest_spoke = false;
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        match rx.recv_timeout(left.min(CPU_CHECK_INTERVAL)) {
            Ok((stream, line)) => {
                guest_spoke |= stream == Stream::Console;
                if let Some(v) = judge_line(&line) {
                    return (v, true);
                }
            }
            Err(RecvTimeoutError::Timeout) if left.is_zero() => {
                return (
                    Choice::new(Accel::Tcg, "KVM probe boot made no progress in 30 s"),
                    false,
                )
            }
            Err(RecvTimeoutError::Timeout) => {
                if let Some(v) = judge_silence(guest_spoke, cpu()) {
                    return (v, true);
                }
            }
            Err(RecvTimeoutError::Disconnected) => {
                return (
                    Choice::new(Accel::Tcg, "QEMU exited during the KVM probe boot"),
                    false,
                )
            }
        }
    }
}

/// What QEMU's CPU time says about KVM while the guest has not spoken.
fn judge_silence(guest_spoke: bool, cpu: Option<Duration>) -> Option<Choice> {
    match cpu {
        Some(cpu) if !guest_spoke && cpu >= SILENT_CPU => Some(Choice::new(
            Accel::Tcg,
            format!(
                "KVM cannot run the guest here: QEMU spent {:.1} s of CPU under KVM \
                 without the guest printing a line",
                cpu.as_secs_f64()
            ),
        )),
        _ => None,
    }
}

/// The CPU time (user and system) process `pid` has used so far.
fn cpu_time(pid: u32) -> Option<Duration> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    let ticks = nix::unistd::sysconf(nix::unistd::SysconfVar::CLK_TCK)
        .ok()
        .flatten()?;
    let used = stat_cpu_ticks(&stat)?;
    Some(Duration::from_secs_f64(used as f64 / ticks as f64))
}

/// utime + stime from the text of `/proc/PID/stat`, in clock ticks.
fn stat_cpu_ticks(stat: &str) -> Option<u64> {
    // The command name (field 2) is in parentheses and may hold spaces or
    // parentheses itself: the fields after it start at the last ')'.
    let rest = &stat[stat.rfind(')')? + 1..];
    let mut fields = rest.split_whitespace();
    // After the name come state (3), ..., utime (14) and stime (15).
    let utime: u64 = fields.nth(11)?.parse().ok()?;
    let stime: u64 = fields.next()?.parse().ok()?;
    Some(utime + stime)
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

    #[rstest]
    #[case::spinning_vcpu(false, Some(3), Some(Accel::Tcg))]
    #[case::not_yet(false, Some(1), None)]
    #[case::guest_printed(true, Some(20), None)]
    #[case::cpu_unknown(false, None, None)]
    fn silence(#[case] spoke: bool, #[case] cpu_s: Option<u64>, #[case] accel: Option<Accel>) {
        let cpu = cpu_s.map(Duration::from_secs);
        assert_eq!(judge_silence(spoke, cpu).map(|c| c.accel), accel);
    }

    #[rstest]
    #[case::plain(
        "1234 (qemu-system-x86) S 1 1234 1234 0 -1 4194560 100 0 0 0 250 730 0 0 20 0",
        Some(980)
    )]
    #[case::name_with_parens("7 (a) b) R 1 7 7 0 -1 0 0 0 0 0 3 4 0 0", Some(7))]
    #[case::truncated("7 (x) R 1 7", None)]
    fn stat_ticks(#[case] stat: &str, #[case] ticks: Option<u64>) {
        assert_eq!(stat_cpu_ticks(stat), ticks);
    }

    #[test]
    fn a_silent_cpu_burning_probe_is_definitely_tcg() {
        let (_tx, rx) = channel();
        let (choice, definite) = watch(&rx, || Some(SILENT_CPU));
        assert_eq!(choice.accel, Accel::Tcg);
        assert!(definite, "{choice:?}");
        assert!(
            choice.reason.contains("without the guest printing"),
            "{choice:?}"
        );
    }

    #[test]
    fn a_guest_line_then_the_panic_is_kvm_whatever_the_cpu_time() {
        let (tx, rx) = channel();
        tx.send((Stream::Qemu, "qemu: warning: something".into()))
            .unwrap();
        tx.send((Stream::Console, "[    0.0] Linux version 7.2".into()))
            .unwrap();
        tx.send((Stream::Console, "Kernel panic - not syncing: VFS".into()))
            .unwrap();
        let (choice, definite) = watch(&rx, || Some(Duration::from_secs(100)));
        assert_eq!((choice.accel, definite), (Accel::Kvm, true));
    }

    #[test]
    fn qemu_exiting_is_tcg_but_not_kept() {
        let (tx, rx) = channel::<(Stream, String)>();
        drop(tx);
        let (choice, definite) = watch(&rx, || None);
        assert_eq!((choice.accel, definite), (Accel::Tcg, false));
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
