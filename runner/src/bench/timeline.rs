//! Splitting a run's wall time into stages from the runner's own progress lines.
//!
//! The benchmark runs the runner as a child with `-v` and stderr piped, and
//! stamps every line when it arrives. Stage lines (`bigbar: NAME ...` when a
//! stage starts, `bigbar: NAME done in ...` when it ends) and the echoed guest
//! console (`| ...`) then give every boundary without any hook in the runner:
//! the kernel's `Run /init` line ends the boot, init's exit line ends the tests,
//! and the end of the `boot N and tests` stage ends the shutdown.

use crate::kernel_run::BARE_BOOT_STAGE;
use serde::{Deserialize, Serialize};
use vm_images::initramfs::EXIT_LINE_PREFIX;

/// A stderr line of the runner and when it arrived (seconds since the start).
#[derive(Debug, Clone, PartialEq)]
pub struct Stamped {
    /// Seconds since the runner was started.
    pub at: f64,
    /// The line, without its newline.
    pub line: String,
}

/// Wall time of one run split into stages, in seconds. A stage the run did not
/// reach (or whose boundary line never came) is `None`.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Stages {
    /// From starting the runner to its exit.
    pub total: Option<f64>,
    /// From the start to the runner's first progress line: `cargo run`'s
    /// compile on a fresh clone, only the process start otherwise.
    pub startup: Option<f64>,
    /// Unpacking the embedded device-emu and guest-tests.
    pub build: Option<f64>,
    /// Obtaining QEMU (download on a cold cache).
    pub qemu: Option<f64>,
    /// Obtaining the kernel (download, or build for stock/reference).
    pub kernel: Option<f64>,
    /// Obtaining busybox.
    pub busybox: Option<f64>,
    /// Choosing the accelerator (a probe boot on a cold cache).
    pub accelerator: Option<f64>,
    /// Listing the selected tests and writing the initramfs.
    pub initramfs: Option<f64>,
    /// Starting device-emu until its socket listens.
    pub device: Option<f64>,
    /// Starting QEMU until the kernel runs `/init` (host clock).
    pub boot_to_init: Option<f64>,
    /// From `/init` to the test binary's exit.
    pub tests: Option<f64>,
    /// From the test binary's exit to QEMU's exit being seen.
    pub shutdown: Option<f64>,
    /// A bare boot's QEMU, from its start to its exit (`--bare-boot`).
    pub bare_boot: Option<f64>,
    /// The kernel's own timestamp of `Run /init` (guest clock, first boot).
    pub guest_init_timestamp: Option<f64>,
    /// Number of guest boots (more than one when a guest died mid-run).
    pub boots: u32,
}

impl Stages {
    /// Everything before the runner had its programs: compiling and unpacking.
    pub fn build_total(&self) -> Option<f64> {
        sum([self.startup, self.build])
    }

    /// The fetch stages together (QEMU, kernel, busybox, accelerator probe).
    pub fn fetch(&self) -> Option<f64> {
        sum([self.qemu, self.kernel, self.busybox, self.accelerator])
    }
}

fn sum<const N: usize>(parts: [Option<f64>; N]) -> Option<f64> {
    parts.iter().flatten().copied().reduce(|a, b| a + b)
}

fn add(slot: &mut Option<f64>, d: f64) {
    *slot = Some(slot.unwrap_or(0.0) + d.max(0.0));
}

/// The stage a progress line names, and whether it starts or ends it.
fn stage_line(line: &str) -> Option<(&str, bool)> {
    let rest = line.strip_prefix("bigbar: ")?;
    if let Some(name) = rest.strip_suffix(" ...") {
        return Some((name, true));
    }
    for end in [" done in ", " FAILED in "] {
        if let Some(i) = rest.find(end) {
            return Some((&rest[..i], false));
        }
    }
    None
}

/// The printk timestamp at the start of a console line, `[   1.234567] ...`.
pub fn printk_seconds(line: &str) -> Option<f64> {
    let rest = line.trim_start().strip_prefix('[')?;
    let end = rest.find(']')?;
    rest[..end].trim().parse().ok()
}

/// Splits a run into stages from its stamped stderr lines and its total time.
pub fn stages(lines: &[Stamped], total: f64) -> Stages {
    let mut s = Stages {
        total: Some(total),
        ..Stages::default()
    };
    let mut starts: Vec<(String, f64)> = Vec::new();
    let mut accel_done: Option<f64> = None;
    let mut boot_start: Option<f64> = None;
    let mut init_at: Option<f64> = None;
    let mut tests_end: Option<f64> = None;
    for Stamped { at, line } in lines {
        let at = *at;
        if let Some(console) = line.strip_prefix("| ") {
            if console.contains("Run /init as init process") && init_at.is_none() {
                init_at = Some(at);
                if let Some(b) = boot_start {
                    add(&mut s.boot_to_init, at - b);
                }
                if s.boots == 1 {
                    s.guest_init_timestamp = printk_seconds(console);
                }
            } else if console.contains(EXIT_LINE_PREFIX) {
                tests_end = Some(at);
                if let Some(i) = init_at {
                    add(&mut s.tests, at - i);
                }
            }
            continue;
        }
        let Some((name, is_start)) = stage_line(line) else {
            continue;
        };
        if s.startup.is_none() {
            s.startup = Some(at);
        }
        if is_start {
            if name == "device" {
                // Between the accelerator (or the previous boot) and the device:
                // listing the tests and writing the initramfs.
                if let Some(from) = accel_done.take() {
                    add(&mut s.initramfs, at - from);
                }
            }
            if name.starts_with("boot ") || name == BARE_BOOT_STAGE {
                s.boots += 1;
                boot_start = Some(at);
                init_at = None;
                tests_end = None;
            }
            starts.push((name.to_string(), at));
            continue;
        }
        let Some(pos) = starts.iter().rposition(|(n, _)| n == name) else {
            continue;
        };
        let (_, began) = starts.remove(pos);
        let took = at - began;
        match name {
            "build" => add(&mut s.build, took),
            "qemu" => add(&mut s.qemu, took),
            "kernel" => add(&mut s.kernel, took),
            "busybox" => add(&mut s.busybox, took),
            "accelerator" => {
                add(&mut s.accelerator, took);
                accel_done = Some(at);
            }
            "device" => add(&mut s.device, took),
            BARE_BOOT_STAGE => {
                add(&mut s.bare_boot, took);
                if let Some(t) = init_at {
                    add(&mut s.shutdown, at - t);
                }
            }
            n if n.starts_with("boot ") => {
                if let Some(t) = tests_end.or(init_at) {
                    add(&mut s.shutdown, at - t);
                }
                // A later boot's initramfs is written after this one ended.
                accel_done = Some(at);
            }
            _ => {}
        }
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    fn stamped(lines: &[(f64, &str)]) -> Vec<Stamped> {
        lines
            .iter()
            .map(|(at, l)| Stamped {
                at: *at,
                line: l.to_string(),
            })
            .collect()
    }

    #[test]
    fn a_warm_run_splits_into_its_stages() {
        let lines = stamped(&[
            (0.1, "bigbar: build ..."),
            (0.6, "bigbar: build done in 0.5 s: device-emu, guest-tests"),
            (0.6, "bigbar: qemu ..."),
            (0.7, "bigbar: qemu done in 0.1 s: QEMU 11.1.3 (/q)"),
            (0.7, "bigbar: kernel ..."),
            (0.9, "bigbar: kernel done in 0.2 s: 7.2"),
            (0.9, "bigbar: busybox ..."),
            (1.0, "bigbar: busybox done in 0.1 s: busybox-static 1"),
            (1.0, "bigbar: accelerator ..."),
            (1.1, "bigbar: accelerator done in 0.1 s: tcg (cached)"),
            (1.1, "bigbar: run directory /tmp/x"),
            (1.5, "bigbar: device ..."),
            (1.6, "bigbar: device done in 0.1 s: bars 2=16G"),
            (1.6, "bigbar: boot 1 and tests ..."),
            (2.0, "| [    0.000000] Linux version 7.2"),
            (4.6, "| [    2.345678] Run /init as init process"),
            (20.6, "| bigbar-init: guest-tests exited with status 0"),
            (21.6, "bigbar: boot 1 and tests done in 20.0 s: 45 results"),
        ]);
        let s = stages(&lines, 22.0);
        let near = |got: Option<f64>, want: f64| {
            let g = got.unwrap();
            assert!((g - want).abs() < 1e-9, "got {g}, want {want}");
        };
        near(s.total, 22.0);
        near(s.build, 0.5);
        // The first progress line came 0.1 s after the start.
        near(s.build_total(), 0.6);
        near(s.fetch(), 0.5);
        near(s.initramfs, 0.4);
        near(s.device, 0.1);
        near(s.boot_to_init, 3.0);
        near(s.tests, 16.0);
        near(s.shutdown, 1.0);
        near(s.guest_init_timestamp, 2.345678);
        assert_eq!(s.boots, 1);
    }

    #[test]
    fn a_second_boot_adds_to_the_same_stages() {
        let lines = stamped(&[
            (0.0, "bigbar: accelerator ..."),
            (1.0, "bigbar: accelerator done in 1.0 s: tcg"),
            (2.0, "bigbar: device ..."),
            (2.0, "bigbar: device done in 0.0 s"),
            (2.0, "bigbar: boot 1 and tests ..."),
            (3.0, "| [    1.0] Run /init as init process"),
            (9.0, "bigbar: boot 1 and tests done in 7.0 s"),
            (9.5, "bigbar: device ..."),
            (9.5, "bigbar: device done in 0.0 s"),
            (9.5, "bigbar: boot 2 and tests ..."),
            (10.5, "| [    1.1] Run /init as init process"),
            (12.5, "| bigbar-init: guest-tests exited with status 1"),
            (13.0, "bigbar: boot 2 and tests done in 3.5 s"),
        ]);
        let s = stages(&lines, 13.5);
        assert_eq!(s.boots, 2);
        assert_eq!(s.initramfs, Some(1.5));
        assert_eq!(s.boot_to_init, Some(2.0));
        assert_eq!(s.tests, Some(2.0));
        // The first boot died after /init: its remainder counts as shutdown.
        assert_eq!(s.shutdown, Some(6.5));
        assert_eq!(s.guest_init_timestamp, Some(1.0));
        assert_eq!(s.build, None);
        assert_eq!(s.fetch(), Some(1.0));
    }

    #[test]
    fn a_bare_boot_is_timed_from_qemu_start_to_its_exit() {
        let lines = stamped(&[
            (1.0, "bigbar: accelerator done in 0.1 s: tcg (cached)"),
            (1.1, "bigbar: device ..."),
            (1.2, "bigbar: device done in 0.1 s: bars 2=16G"),
            (1.2, "bigbar: bare boot ..."),
            (2.7, "| [    1.0] Run /init as init process"),
            (3.0, "bigbar: bare boot done in 1.8 s: QEMU ran 1.79 s"),
        ]);
        let s = stages(&lines, 3.1);
        let near = |got: Option<f64>, want: f64| {
            let g = got.unwrap();
            assert!((g - want).abs() < 1e-9, "got {g}, want {want}");
        };
        near(s.bare_boot, 1.8);
        near(s.boot_to_init, 1.5);
        near(s.shutdown, 0.3);
        assert_eq!(s.tests, None);
        assert_eq!(s.guest_init_timestamp, Some(1.0));
    }

    #[test]
    fn failed_stages_and_noise() {
        let lines = stamped(&[
            (0.0, "bigbar: kernel ..."),
            (5.0, "bigbar: kernel FAILED in 5.0 s"),
            (5.0, "bigbar: error: obtaining the kernel"),
            (5.1, "| Run /init as init process"),
        ]);
        let s = stages(&lines, 5.2);
        assert_eq!(s.kernel, Some(5.0));
        assert_eq!(s.boot_to_init, None);
        assert_eq!(s.boots, 0);
    }

    #[test]
    fn printk_timestamps() {
        assert_eq!(printk_seconds("[    2.345678] Run /init"), Some(2.345678));
        assert_eq!(printk_seconds("Run /init"), None);
        assert_eq!(printk_seconds("[ x ] y"), None);
    }
}
