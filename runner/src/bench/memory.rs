//! Resident memory of QEMU and device-emu, read from `/proc/PID/status`.

use serde::{Deserialize, Serialize};
use std::path::Path;

/// The memory figures of one process, in KiB.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Status {
    /// Resident now (VmRSS).
    pub rss_kib: u64,
    /// Highest resident so far (VmHWM).
    pub hwm_kib: u64,
    /// Resident shared memory (RssShmem: touched memfd BAR pages).
    pub shmem_kib: u64,
}

/// Parses the fields of [`Status`] from the text of `/proc/PID/status`.
pub fn parse_status(text: &str) -> Option<Status> {
    let field = |name: &str| -> Option<u64> {
        let line = text.lines().find(|l| l.starts_with(name))?;
        line[name.len()..]
            .trim()
            .trim_end_matches("kB")
            .trim()
            .parse()
            .ok()
    };
    Some(Status {
        rss_kib: field("VmRSS:")?,
        hwm_kib: field("VmHWM:")?,
        shmem_kib: field("RssShmem:").unwrap_or(0),
    })
}

/// Reads the memory figures of process `pid` (`None` once it has exited).
pub fn read_status(pid: u32) -> Option<Status> {
    let text = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    parse_status(&text)
}

/// Which of the runner's children a process is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// QEMU (started directly or through the dynamic loader of its prefix).
    Qemu,
    /// The vfio-user device server.
    Device,
}

/// Classifies a process by its NUL-separated command line.
pub fn classify(cmdline: &[u8]) -> Option<Kind> {
    let mut words = cmdline.split(|&b| b == 0).filter(|w| !w.is_empty());
    let argv0 = words.next()?;
    let name = |w: &[u8]| {
        Path::new(std::str::from_utf8(w).unwrap_or(""))
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default()
    };
    if name(argv0) == "device-emu" {
        return Some(Kind::Device);
    }
    let is_qemu = |w: &[u8]| name(w).starts_with("qemu-system");
    if is_qemu(argv0) || words.take(4).any(is_qemu) {
        return Some(Kind::Qemu);
    }
    None
}

/// Peak memory of a run's QEMU and device-emu processes, in KiB.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Peak {
    /// Highest VmHWM of any QEMU process.
    pub qemu_hwm_kib: u64,
    /// Highest VmHWM of any device-emu process.
    pub device_hwm_kib: u64,
    /// Highest sum of QEMU's and device-emu's VmRSS seen in one sample (the
    /// run's host memory; memfd pages both map count twice).
    pub sum_rss_kib: u64,
    /// device-emu's VmRSS in the last sample that saw it (after the tests).
    pub device_last_rss_kib: u64,
    /// Samples that saw at least one of them.
    pub samples: u64,
}

impl Peak {
    /// Takes one sample's figures into account.
    pub fn add(&mut self, seen: &[(Kind, Status)]) {
        if seen.is_empty() {
            return;
        }
        self.samples += 1;
        let mut sum = 0;
        for (kind, st) in seen {
            sum += st.rss_kib;
            match kind {
                Kind::Qemu => self.qemu_hwm_kib = self.qemu_hwm_kib.max(st.hwm_kib),
                Kind::Device => {
                    self.device_hwm_kib = self.device_hwm_kib.max(st.hwm_kib);
                    self.device_last_rss_kib = st.rss_kib;
                }
            }
        }
        self.sum_rss_kib = self.sum_rss_kib.max(sum);
    }
}

/// The direct children of `pid` (from `/proc/PID/task/*/children`).
fn children(pid: u32) -> Vec<u32> {
    let Ok(tasks) = std::fs::read_dir(format!("/proc/{pid}/task")) else {
        return Vec::new();
    };
    let mut out = Vec::new();
    for t in tasks.flatten() {
        if let Ok(text) = std::fs::read_to_string(t.path().join("children")) {
            out.extend(
                text.split_whitespace()
                    .filter_map(|w| w.parse::<u32>().ok()),
            );
        }
    }
    out
}

/// Every process below `pid`: the runner's QEMU and device-emu are its
/// children, or its grandchildren when the runner itself runs under `cargo run`.
fn descendants(pid: u32) -> Vec<u32> {
    let mut out = children(pid);
    let mut next = 0;
    while next < out.len() {
        let below = children(out[next]);
        out.extend(below);
        next += 1;
    }
    out
}

/// Samples the QEMU and device-emu processes below `pid` into `peak`.
pub fn sample_children(pid: u32, peak: &mut Peak) {
    let mut seen = Vec::new();
    for child in descendants(pid) {
        let Ok(cmdline) = std::fs::read(format!("/proc/{child}/cmdline")) else {
            continue;
        };
        if let (Some(kind), Some(st)) = (classify(&cmdline), read_status(child)) {
            seen.push((kind, st));
        }
    }
    peak.add(&seen);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn status_fields() {
        let text = "Name:\tqemu\nVmHWM:\t  123456 kB\nVmRSS:\t  100000 kB\nRssAnon:\t 1 kB\nRssShmem:\t   2048 kB\n";
        assert_eq!(
            parse_status(text),
            Some(Status {
                rss_kib: 100000,
                hwm_kib: 123456,
                shmem_kib: 2048
            })
        );
        // A zombie has no Vm lines.
        assert_eq!(parse_status("Name:\tx\nState:\tZ (zombie)\n"), None);
    }

    #[test]
    fn classifies_qemu_through_its_loader_and_the_device() {
        let qemu =
            b"/c/ld-linux-x86-64.so.2\0--library-path\0/c/lib\0/c/usr/bin/qemu-system-x86_64\0-L\0";
        assert_eq!(classify(qemu), Some(Kind::Qemu));
        assert_eq!(
            classify(b"/usr/bin/qemu-system-x86_64\0-m\0"),
            Some(Kind::Qemu)
        );
        assert_eq!(
            classify(b"/t/release/device-emu\0--socket\0/s\0"),
            Some(Kind::Device)
        );
        assert_eq!(classify(b"cargo\0build\0"), None);
        assert_eq!(classify(b""), None);
    }

    #[test]
    fn peak_keeps_the_highest_simultaneous_sum() {
        let st = |rss, hwm| Status {
            rss_kib: rss,
            hwm_kib: hwm,
            shmem_kib: 0,
        };
        let mut p = Peak::default();
        p.add(&[(Kind::Device, st(10, 10))]);
        p.add(&[(Kind::Device, st(12, 15)), (Kind::Qemu, st(300, 300))]);
        p.add(&[(Kind::Device, st(11, 15)), (Kind::Qemu, st(200, 350))]);
        p.add(&[]);
        assert_eq!(p.sum_rss_kib, 312);
        assert_eq!(p.qemu_hwm_kib, 350);
        assert_eq!(p.device_hwm_kib, 15);
        assert_eq!(p.device_last_rss_kib, 11);
        assert_eq!(p.samples, 3);
    }

    #[test]
    fn own_status_is_readable() {
        let st = read_status(std::process::id()).unwrap();
        assert!(st.rss_kib > 0 && st.hwm_kib >= st.rss_kib);
    }
}
