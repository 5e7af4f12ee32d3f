//! One guest boot: the serial streams, the event loop that decides how the
//! boot ended, and the pieces around it, one role a module:
//!
//! - [`args`]: the guest's QEMU and kernel command lines (through
//!   `vm_images::launch`, which every boot shares);
//! - [`serial`]: the reader threads of the serial ports;
//! - [`event_loop`]: what the console, the KTAP stream and the processes say,
//!   turned into an outcome;
//! - [`signals`]: SIGINT and SIGTERM routed to the guests being supervised;
//! - [`shell`]: the interactive boot of `--shell`.
//!
//! Serial port 0 carries the kernel console, serial port 1 only the KTAP
//! stream of the test binary, so printk lines can never corrupt KTAP. The
//! runner listens on both sockets before QEMU starts, so no line is lost and
//! nothing waits by sleeping.

mod args;
mod event_loop;
mod serial;
mod shell;
mod signals;

pub use args::{kernel_cmdline, qemu_args};
pub use event_loop::{POWERED_OFF_UNTESTED, TAIL_LINES};
pub use shell::interactive;
pub use signals::{event_channel, interrupted};

use crate::console::KernelReport;
use crate::klog::Finding;
use crate::ktap::TestResult;
use crate::process::Supervised;
use crate::progress;
use crate::report::Outcome;
use anyhow::{Context, Result};
use event_loop::{Limits, LoopState, FIRST_LINE_GRACE};
use std::fs::File;
use std::os::unix::net::UnixListener;
use std::path::{Path, PathBuf};
use std::process::{Command, ExitStatus, Stdio};
use std::sync::mpsc::{Receiver, Sender};
use std::time::{Duration, Instant};
use vm_images::launch::{Accel, SerialPort};

/// Something that happened while the guest ran.
#[derive(Debug)]
pub enum Event {
    /// A line on the kernel console (serial 0) of the given boot.
    Console(usize, String),
    /// A line of KTAP (serial 1) of the given boot.
    Ktap(usize, String),
    /// A serial stream of the given boot reached its end (QEMU closed it).
    ///
    /// Serial events carry their boot number because a killed guest's reader
    /// threads may still deliver its last lines and end-of-stream while the next
    /// boot of the same run is already using the channel.
    StreamClosed(usize),
    /// QEMU exited.
    QemuExited(ExitStatus),
    /// The device-emu serving the given socket exited (a run's boots each have
    /// their own device; an exit of an earlier boot's device is not news).
    DeviceExited(PathBuf, ExitStatus),
    /// The runner received SIGINT or SIGTERM.
    Signal(i32),
}

/// Everything needed to boot the guest once.
#[derive(Debug, Clone)]
pub struct GuestConfig {
    /// Kernel image.
    pub kernel: PathBuf,
    /// Initramfs.
    pub initramfs: PathBuf,
    /// Extra kernel command line.
    pub append: String,
    /// The accelerator.
    pub accel: Accel,
    /// Add an emulated Intel IOMMU (needed by kernels without VFIO no-IOMMU mode).
    pub iommu: bool,
    /// Size of the 64-bit PCI window QEMU must offer for the device's BARs.
    pub pci_hole64: u64,
    /// Guest physical address bits (large BAR layouts need more than the default).
    pub phys_bits: u32,
    /// The device's vfio-user socket.
    pub device_socket: PathBuf,
    /// Guest memory in MiB.
    pub memory_mib: u32,
    /// Guest vCPUs.
    pub cpus: u32,
    /// Whole-boot time limit.
    pub timeout: Duration,
    /// Longest silence on both serial ports before the guest is stopped.
    pub idle_timeout: Duration,
    /// Longest silence on the KTAP port (no heartbeat, no result) while a test
    /// runs before the guest is taken for hung and stopped.
    pub progress_timeout: Duration,
    /// Extra QEMU arguments, appended last.
    pub extra_qemu_args: Vec<String>,
    /// Echo the kernel console to stderr as it arrives.
    pub echo_console: bool,
}

/// How a boot ended, with what it produced.
#[derive(Debug)]
pub struct SessionResult {
    /// How the run ended.
    pub outcome: Outcome,
    /// KTAP results.
    pub tests: Vec<TestResult>,
    /// Kernel reports from the console.
    pub kernel_reports: Vec<KernelReport>,
    /// Kernel-log lines reporting trouble, with the test each was printed during.
    pub findings: Vec<Finding>,
    /// QEMU's wall time.
    pub guest_seconds: f64,
    /// Last console lines, for error messages.
    pub console_tail: String,
    /// The test announced and not finished when the guest stopped.
    pub in_flight: Option<String>,
    /// Whether the KTAP stream ran to its plan.
    pub ktap_complete: bool,
}

/// Names a per-boot output file: `console.log` for the first boot,
/// `console.boot2.log` for the second, and so on.
pub fn boot_file(stem: &str, ext: &str, boot: usize) -> String {
    if boot == 1 {
        format!("{stem}.{ext}")
    } else {
        format!("{stem}.boot{boot}.{ext}")
    }
}

/// Boots the guest (boot number `boot` of its run) and supervises it to the end.
///
/// `out` receives the console, the KTAP stream and QEMU's own output, named per
/// boot by [`boot_file`]; `run_dir` holds the sockets.
pub fn run(
    cfg: &GuestConfig,
    mut qemu_cmd: Command,
    out: &Path,
    run_dir: &Path,
    events: (Sender<Event>, &Receiver<Event>),
    boot: usize,
) -> Result<SessionResult> {
    let (tx, rx) = events;
    for port in SerialPort::ALL {
        let (file, make) = match port {
            SerialPort::Console => (
                boot_file("console", "log", boot),
                Event::Console as fn(usize, String) -> Event,
            ),
            SerialPort::Ktap => (
                boot_file("results", "ktap", boot),
                Event::Ktap as fn(usize, String) -> Event,
            ),
        };
        let name = port.id();
        let sock = args::serial_socket(run_dir, port);
        // A previous boot of the same run leaves its socket file behind.
        let _ = std::fs::remove_file(&sock);
        let listener =
            UnixListener::bind(&sock).with_context(|| format!("binding {}", sock.display()))?;
        let log = File::create(out.join(&file))
            .with_context(|| format!("creating {}", out.join(&file).display()))?;
        serial::serve(listener, name, log, tx.clone(), boot, make);
    }
    let qemu_log = out.join(boot_file("qemu", "log", boot));
    let qemu_err =
        File::create(&qemu_log).with_context(|| format!("creating {}", qemu_log.display()))?;
    qemu_cmd
        .args(qemu_args(cfg, run_dir))
        .stdin(Stdio::null())
        .stdout(qemu_err.try_clone()?)
        .stderr(qemu_err);
    let start = Instant::now();
    let qemu = Supervised::spawn("qemu", &mut qemu_cmd, tx, Event::QemuExited)?;
    let mut state = LoopState::new(cfg.echo_console, cfg.device_socket.clone(), boot);
    let limits = Limits {
        deadline: start + cfg.timeout,
        silence: progress::Limits {
            idle: cfg.idle_timeout,
            progress: cfg.progress_timeout,
            first_line: FIRST_LINE_GRACE,
        },
    };
    let outcome = state.drive(rx, &qemu, limits, &qemu_log);
    let guest_seconds = start.elapsed().as_secs_f64();
    drop(qemu);
    Ok(state.finish(outcome, guest_seconds))
}
