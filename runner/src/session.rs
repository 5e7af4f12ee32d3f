//! One guest boot: QEMU's command line, the two serial streams, and the event
//! loop that decides how the boot ended.
//!
//! Serial port 0 carries the kernel console, serial port 1 only the KTAP
//! stream of the test binary, so printk lines can never corrupt KTAP. The
//! runner listens on both sockets before QEMU starts, so no line is lost and
//! nothing waits by sleeping.

use crate::console::{KernelReport, Watcher};
use crate::device::tail;
use crate::klog::{Attributor, Finding};
use crate::ktap::{Parser, TestResult};
use crate::process::Supervised;
use crate::progress::{self, Clock, Stall};
use crate::report::Outcome;
use anyhow::{Context, Result};
use nix::sys::signal::Signal;
use std::fs::File;
use std::io::{BufRead, BufReader, Write};
use std::os::unix::net::UnixListener;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Command, ExitStatus, Stdio};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::mpsc::{channel, Receiver, RecvTimeoutError, Sender};
use std::sync::Mutex;
use std::time::{Duration, Instant};

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
    /// `tcg` or `kvm`.
    pub accel: String,
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

/// The kernel command line for a run.
pub fn kernel_cmdline(cfg: &GuestConfig) -> String {
    // panic=-1 reboots at once on panic, and -no-reboot turns that into QEMU's exit.
    // no_timer_check: under TCG on a loaded host the IO-APIC timer check can miss
    // its ticks and panic ("timer doesn't work through Interrupt-remapped IO-APIC").
    let mut s = String::from("console=ttyS0,115200 panic=-1 printk.time=1 no_timer_check");
    s.push(' ');
    s.push_str(HANG_DETECTORS);
    if cfg.iommu {
        s.push_str(" intel_iommu=on");
    }
    if !cfg.append.is_empty() {
        s.push(' ');
        s.push_str(&cfg.append);
    }
    s
}

/// The kernel's own hang detectors, set to report within the runner's 30 s
/// progress limit, so that a hung guest's last console lines say why: soft
/// lockups after the default 2 × 10 s (a shorter threshold reports a vCPU that a
/// loaded host did not schedule under TCG), RCU stalls after 20 s (21 s), tasks
/// blocked for 20 s, checked every 20 s (120 s). `softlockup_panic=0`:
/// a lockup under TCG on a loaded host may be transient, and the runner, not
/// the kernel, decides when a guest is dead. Kernels without a detector (the
/// project's own configurations have only the RCU one) ignore its parameter;
/// `sysctl.` parameters need 5.8 or later.
pub const HANG_DETECTORS: &str = "softlockup_panic=0 \
     rcupdate.rcu_cpu_stall_timeout=20 sysctl.kernel.hung_task_timeout_secs=20";

/// QEMU's arguments (after the prefix) for a run whose serial sockets are in `dir`.
pub fn qemu_args(cfg: &GuestConfig, dir: &Path) -> Vec<String> {
    let mut a: Vec<String> = Vec::new();
    let mut push = |items: &[&str]| a.extend(items.iter().map(|s| s.to_string()));
    let machine = if cfg.accel == "kvm" && cfg.iommu {
        // KVM's in-kernel irqchip cannot do interrupt remapping for the IOMMU.
        "q35,kernel-irqchip=split"
    } else {
        "q35"
    };
    let cpu = format!(
        "{},phys-bits={}",
        if cfg.accel == "kvm" { "host" } else { "max" },
        cfg.phys_bits
    );
    let mem = cfg.memory_mib.to_string();
    push(&["-machine", machine, "-accel", &cfg.accel, "-cpu", &cpu]);
    push(&["-smp", "1", "-m", &mem, "-nodefaults", "-no-user-config"]);
    push(&["-display", "none", "-no-reboot"]);
    let hole = format!("q35-pcihost.pci-hole64-size={}", cfg.pci_hole64);
    push(&["-global", &hole]);
    let kernel = cfg.kernel.display().to_string();
    let initrd = cfg.initramfs.display().to_string();
    let cmdline = kernel_cmdline(cfg);
    push(&["-kernel", &kernel, "-initrd", &initrd, "-append", &cmdline]);
    for name in ["console", "ktap"] {
        let chardev = format!(
            "socket,id={name},path={}",
            dir.join(format!("{name}.sock")).display()
        );
        push(&["-chardev", &chardev, "-serial", &format!("chardev:{name}")]);
    }
    if cfg.iommu {
        push(&["-device", "intel-iommu,caching-mode=on"]);
    }
    let dev = serde_json::json!({
        "driver": "vfio-user-pci",
        "socket": {"type": "unix", "path": cfg.device_socket},
    });
    push(&["-device", &dev.to_string()]);
    a.extend(cfg.extra_qemu_args.iter().cloned());
    a
}

/// Boots the guest with its console on this terminal (for `--shell`) and
/// waits for QEMU to exit. The KTAP port goes to `ktap.log` in `run_dir`.
pub fn interactive(cfg: &GuestConfig, mut qemu_cmd: Command, run_dir: &Path) -> Result<ExitStatus> {
    let args = qemu_args(cfg, run_dir);
    let ktap_file = format!("file,id=ktap,path={}", run_dir.join("ktap.log").display());
    let args = args.into_iter().map(|a| {
        if a.starts_with("socket,id=console,") {
            // signal=off: Ctrl-C goes to the guest's shell, not to QEMU.
            "stdio,id=console,signal=off".to_string()
        } else if a.starts_with("socket,id=ktap,") {
            ktap_file.clone()
        } else {
            a
        }
    });
    // SAFETY: the closure runs in the forked child before exec and only calls
    // prctl, which is async-signal-safe. QEMU stays in the terminal's process
    // group (it reads the console from it) but dies with the runner.
    unsafe {
        qemu_cmd.pre_exec(|| {
            nix::sys::prctl::set_pdeathsig(Signal::SIGKILL)?;
            Ok(())
        });
    }
    qemu_cmd
        .args(args)
        .status()
        .context("running QEMU with the console on this terminal")
}

/// Listens on a serial socket and forwards each received line as an event.
fn serve_serial(
    listener: UnixListener,
    name: &'static str,
    log: File,
    events: Sender<Event>,
    boot: usize,
    make: fn(usize, String) -> Event,
) {
    let spawned = std::thread::Builder::new()
        .name(format!("serial-{name}"))
        .spawn(move || {
            let mut log = log;
            if let Ok((stream, _)) = listener.accept() {
                let mut reader = BufReader::new(stream);
                let mut buf = Vec::new();
                while matches!(reader.read_until(b'\n', &mut buf), Ok(n) if n > 0) {
                    let _ = log.write_all(&buf);
                    let line = String::from_utf8_lossy(&buf)
                        .trim_end_matches(['\n', '\r'])
                        .to_string();
                    buf.clear();
                    if events.send(make(boot, line)).is_err() {
                        return;
                    }
                }
            }
            let _ = events.send(Event::StreamClosed(boot));
        });
    if let Err(e) = spawned {
        eprintln!("bigbar: cannot read serial port {name}: {e}");
    }
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
    for (name, file, make) in [
        (
            "console",
            boot_file("console", "log", boot),
            Event::Console as fn(usize, String) -> Event,
        ),
        (
            "ktap",
            boot_file("results", "ktap", boot),
            Event::Ktap as fn(usize, String) -> Event,
        ),
    ] {
        let sock = run_dir.join(format!("{name}.sock"));
        // A previous boot of the same run leaves its socket file behind.
        let _ = std::fs::remove_file(&sock);
        let listener =
            UnixListener::bind(&sock).with_context(|| format!("binding {}", sock.display()))?;
        let log = File::create(out.join(&file))
            .with_context(|| format!("creating {}", out.join(&file).display()))?;
        serve_serial(listener, name, log, tx.clone(), boot, make);
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

/// Why a boot whose guest powered off cleanly without a KTAP stream is not a
/// run; a bare boot (`--bare-boot`) ends so on purpose.
pub const POWERED_OFF_UNTESTED: &str = "the guest powered off without running the tests";

/// When the event loop gives up on a guest.
#[derive(Debug, Clone, Copy)]
struct Limits {
    /// The whole boot must end by then.
    deadline: Instant,
    /// How long the guest may stay silent.
    silence: progress::Limits,
}

/// The event loop's state while one guest runs.
struct LoopState {
    ktap: Parser,
    watcher: Watcher,
    klog: Attributor,
    console_tail: Vec<String>,
    open_streams: u8,
    echo: bool,
    device_socket: PathBuf,
    /// This guest's boot number; serial events of other boots are stale.
    boot: usize,
}

/// The least silence allowed before the guest's first console line.
const FIRST_LINE_GRACE: Duration = Duration::from_secs(120);

/// Console lines kept for error messages.
pub const TAIL_LINES: usize = 40;

impl LoopState {
    fn new(echo: bool, device_socket: PathBuf, boot: usize) -> Self {
        Self {
            ktap: Parser::new(),
            watcher: Watcher::new(),
            klog: Attributor::new(),
            console_tail: Vec::new(),
            open_streams: 2,
            echo,
            device_socket,
            boot,
        }
    }

    /// The test in flight: the one announced, else the one after the last result.
    fn current_test(&self) -> Option<String> {
        if let Some(name) = self.ktap.in_flight() {
            return Some(name.to_string());
        }
        let last = self.ktap.results().last().map(|r| r.name.clone());
        Some(match last {
            Some(name) => format!("(the test after {name})"),
            None if self.ktap.saw_version() => "(the first test)".into(),
            None => return None,
        })
    }

    fn on_console(&mut self, line: String) {
        if self.echo {
            eprintln!("| {line}");
        }
        // The console's own test markers say which test a report belongs to;
        // the KTAP stream's RUN lines race it on the other serial port.
        let during = self.klog.feed_line(&line);
        self.watcher.feed_line(&line, during);
        if self.console_tail.len() == TAIL_LINES {
            self.console_tail.remove(0);
        }
        self.console_tail.push(line);
    }

    /// Processes events until QEMU has exited and both streams are drained.
    fn drive(
        &mut self,
        rx: &Receiver<Event>,
        qemu: &Supervised,
        limits: Limits,
        qemu_log: &Path,
    ) -> Outcome {
        let mut qemu_status: Option<ExitStatus> = None;
        let mut forced: Option<Outcome> = None;
        let mut clock = Clock::new(limits.silence, Instant::now());
        while qemu_status.is_none() || self.open_streams > 0 {
            let (expiry, stall) = clock.expiry(self.ktap.in_flight().is_some());
            let wake = limits.deadline.min(expiry);
            match rx.recv_timeout(wake.saturating_duration_since(Instant::now())) {
                Ok(Event::Console(b, _) | Event::Ktap(b, _) | Event::StreamClosed(b))
                    if b != self.boot => {}
                Ok(Event::Console(_, l)) => {
                    clock.console(Instant::now());
                    self.on_console(l)
                }
                Ok(Event::Ktap(_, l)) => {
                    clock.ktap(Instant::now());
                    self.ktap.feed_line(&l);
                }
                Ok(Event::StreamClosed(_)) => {
                    self.open_streams = self.open_streams.saturating_sub(1)
                }
                Ok(Event::QemuExited(s)) => {
                    qemu_status = Some(s);
                    // If QEMU never connected a serial socket, nothing will close it.
                    if self.console_tail.is_empty() && !self.ktap.saw_version() {
                        self.open_streams = 0;
                    }
                }
                Ok(Event::DeviceExited(sock, _)) if sock != self.device_socket => {}
                Ok(Event::DeviceExited(_, s)) => {
                    forced.get_or_insert(Outcome::Infrastructure(format!(
                        "device-emu exited while the guest ran ({s})"
                    )));
                    qemu.signal(Signal::SIGKILL);
                }
                Ok(Event::Signal(sig)) => {
                    forced.get_or_insert(Outcome::Infrastructure(format!(
                        "interrupted by signal {sig}"
                    )));
                    qemu.signal(Signal::SIGKILL);
                }
                Err(RecvTimeoutError::Timeout) => {
                    if qemu_status.is_some() {
                        break; // QEMU gone; a stream that never closes is not worth waiting for.
                    }
                    let why = if Instant::now() >= limits.deadline {
                        "the guest did not finish within --timeout".to_string()
                    } else {
                        self.stalled(stall)
                    };
                    forced.get_or_insert(Outcome::TimedOut(why));
                    qemu.signal(Signal::SIGKILL);
                }
                Err(RecvTimeoutError::Disconnected) => break,
            }
        }
        match forced {
            // A kernel that oopsed and then fell silent crashed; the silence is
            // its consequence, not the finding.
            Some(Outcome::TimedOut(why)) => match self.watcher.crash_summary() {
                Some(crash) => Outcome::KernelCrashed(format!("{crash} (then {why})")),
                None => Outcome::TimedOut(why),
            },
            Some(other) => other,
            None => self.judge(qemu_status, qemu_log),
        }
    }

    /// Says, on stderr at once and in the returned reason, that the guest stalled
    /// and which test was in flight (with how long it had beaten, if it had).
    fn stalled(&self, stall: Stall) -> String {
        let current = self.current_test().unwrap_or_else(|| "(boot)".into());
        let beat = match self.ktap.heartbeat_in_flight() {
            Some(b) => format!(" (its last heartbeat at {} s)", b.seconds),
            None => String::new(),
        };
        let why = format!("{stall}; in flight: {current}{beat}");
        eprintln!("bigbar: boot {}: {why}; stopping the guest", self.boot);
        why
    }

    /// Decides the outcome of a boot that ended by itself.
    fn judge(&self, status: Option<ExitStatus>, qemu_log: &Path) -> Outcome {
        if let Some(first) = self.watcher.crash_summary() {
            return Outcome::KernelCrashed(first);
        }
        match status {
            Some(s) if s.success() && self.ktap.saw_version() => match self.ktap.shortfall() {
                Some(why) => Outcome::Infrastructure(why),
                None => Outcome::Completed,
            },
            Some(s) => {
                let log = std::fs::read_to_string(qemu_log).unwrap_or_default();
                let why = if s.success() {
                    POWERED_OFF_UNTESTED.to_string()
                } else {
                    format!("QEMU failed ({s})")
                };
                let name = qemu_log.file_name().unwrap_or_default().to_string_lossy();
                Outcome::Infrastructure(format!("{why}\n{name}:\n{}", tail(&log, 20)))
            }
            None => Outcome::Infrastructure("QEMU's exit was not observed".into()),
        }
    }

    fn finish(self, outcome: Outcome, guest_seconds: f64) -> SessionResult {
        let in_flight = self.ktap.in_flight().map(str::to_string);
        let ktap_complete = self.ktap.complete();
        SessionResult {
            outcome,
            tests: self.ktap.into_results(),
            kernel_reports: self.watcher.into_reports(),
            findings: self.klog.into_findings(),
            guest_seconds,
            console_tail: self.console_tail.join("\n"),
            in_flight,
            ktap_complete,
        }
    }
}

/// The channels of the guests being supervised (a matrix boots several at once):
/// where SIGINT and SIGTERM go, each under the id of its [`SignalRoute`].
static SIGNAL_ROUTES: Mutex<Vec<(u64, Sender<Event>)>> = Mutex::new(Vec::new());
/// The id of the next [`SignalRoute`].
static NEXT_ROUTE: AtomicU64 = AtomicU64::new(0);
/// Set once a signal was forwarded to a guest's channel.
static INTERRUPTED: AtomicBool = AtomicBool::new(false);
/// Whether the one signal thread of the process runs.
static SIGNAL_THREAD: Mutex<bool> = Mutex::new(false);

/// Whether SIGINT or SIGTERM interrupted a guest (a matrix then stops).
pub fn interrupted() -> bool {
    INTERRUPTED.load(Ordering::SeqCst)
}

fn routes() -> std::sync::MutexGuard<'static, Vec<(u64, Sender<Event>)>> {
    SIGNAL_ROUTES.lock().unwrap_or_else(|e| e.into_inner())
}

/// While alive, SIGINT and SIGTERM become [`Event::Signal`] on its channel.
///
/// Dropping it stops the routing to its channel; with no channel left, the
/// signals take their default action (the process ends), so an interrupt during
/// a later kernel build or download is not swallowed.
pub struct SignalRoute(u64);

impl Drop for SignalRoute {
    fn drop(&mut self) {
        routes().retain(|(id, _)| *id != self.0);
    }
}

/// Creates the event channel of one guest and routes SIGINT/SIGTERM into it
/// (and into those of the other guests running) until the returned
/// [`SignalRoute`] is dropped.
///
/// signal-hook's handlers, once installed, stay for the life of the process, so
/// one thread (installed on first use) owns them and either forwards a signal to
/// the routed channels or emulates its default action.
pub fn event_channel() -> Result<(Sender<Event>, Receiver<Event>, SignalRoute)> {
    install_signal_thread()?;
    let (tx, rx) = channel();
    let id = NEXT_ROUTE.fetch_add(1, Ordering::SeqCst);
    routes().push((id, tx.clone()));
    Ok((tx, rx, SignalRoute(id)))
}

fn install_signal_thread() -> Result<()> {
    let mut running = SIGNAL_THREAD.lock().unwrap_or_else(|e| e.into_inner());
    if *running {
        return Ok(());
    }
    let mut signals = signal_hook::iterator::Signals::new([
        signal_hook::consts::SIGINT,
        signal_hook::consts::SIGTERM,
    ])
    .context("installing signal handlers")?;
    std::thread::Builder::new()
        .name("signals".into())
        .spawn(move || {
            for sig in signals.forever() {
                let senders: Vec<Sender<Event>> =
                    routes().iter().map(|(_, tx)| tx.clone()).collect();
                let delivered = senders
                    .iter()
                    .filter(|tx| tx.send(Event::Signal(sig)).is_ok())
                    .count();
                if delivered > 0 {
                    INTERRUPTED.store(true, Ordering::SeqCst);
                } else {
                    let _ = signal_hook::low_level::emulate_default_handler(sig);
                }
            }
        })
        .context("starting the signal thread")?;
    *running = true;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Drives a [`LoopState`] of boot `boot` over `events`, sent before a
    /// stand-in for QEMU (`sh -c script`) starts, so their order is fixed.
    fn drive_events(
        boot: usize,
        events: Vec<Event>,
        script: &str,
        (idle, progress): (Duration, Duration),
    ) -> SessionResult {
        let dir = tempfile::tempdir().unwrap();
        let (tx, rx) = channel();
        for e in events {
            tx.send(e).unwrap();
        }
        let qemu = Supervised::spawn(
            "qemu",
            Command::new("sh").args(["-c", script]),
            tx,
            Event::QemuExited,
        )
        .unwrap();
        let mut state = LoopState::new(false, dir.path().join("dev.sock"), boot);
        let limits = Limits {
            deadline: Instant::now() + Duration::from_secs(60),
            silence: progress::Limits {
                idle,
                progress,
                first_line: FIRST_LINE_GRACE,
            },
        };
        let outcome = state.drive(&rx, &qemu, limits, &dir.path().join("qemu.log"));
        state.finish(outcome, 0.0)
    }

    #[test]
    fn events_of_an_earlier_boot_are_ignored() {
        let stale_panic = "[    9.0] Kernel panic - not syncing: of boot 1".to_string();
        let events = vec![
            Event::Console(1, stale_panic),
            Event::StreamClosed(1),
            Event::StreamClosed(1),
            Event::Console(2, "[    0.0] Linux version 7.2".into()),
            Event::Ktap(2, "TAP version 13".into()),
            Event::Ktap(2, "1..1".into()),
            Event::Ktap(2, "ok 1 a".into()),
            Event::StreamClosed(2),
            Event::StreamClosed(2),
        ];
        let r = drive_events(
            2,
            events,
            "exit 0",
            (Duration::from_secs(30), Duration::from_secs(30)),
        );
        assert_eq!(r.outcome, Outcome::Completed);
        assert!(r.kernel_reports.is_empty(), "{:?}", r.kernel_reports);
        assert_eq!(r.tests.len(), 1);
        assert!(r.ktap_complete);
    }

    #[test]
    fn an_oops_then_silence_is_a_crash_not_a_timeout() {
        let events = vec![
            Event::Ktap(1, "TAP version 13".into()),
            Event::Ktap(1, "1..2".into()),
            Event::Ktap(1, "#  RUN           f6.munmap_pud_unaligned ...".into()),
            Event::Console(1, "[    5.0] Oops: general protection fault".into()),
        ];
        // The stand-in for QEMU never exits by itself: the idle limit ends it.
        let r = drive_events(
            1,
            events,
            "exec sleep 60",
            (Duration::from_millis(300), Duration::from_secs(30)),
        );
        match &r.outcome {
            Outcome::KernelCrashed(why) => {
                assert!(why.starts_with("[    5.0] Oops"), "{why}");
                assert!(why.contains("printed nothing"), "{why}");
            }
            other => panic!("expected a crash, got {other:?}"),
        }
        assert_eq!(r.in_flight.as_deref(), Some("f6.munmap_pud_unaligned"));
    }

    /// The console of a debian:sid boot around its `bad pud` finding, with the
    /// guest's test markers, and its KTAP stream.
    const SID_CONSOLE: [&str; 9] = [
        "[    3.114130] Run /init as init process",
        "[    3.200000] WARNING: CPU: 0 PID: 1 at drivers/x.c:1 probe+0x1/0x2",
        "[    7.300000] bigbar: begin f8.mremap_move_pud_incongruent",
        "[    7.310000] bigbar: end f8.mremap_move_pud_incongruent",
        "[    7.440000] bigbar: begin f8.mremap_move_pud_congruent",
        "[    7.442449] mm/pgtable-generic.c:44: bad pud 000000003ad0a0f5(800000f8400002b7)",
        "[    7.450000] bigbar: end f8.mremap_move_pud_congruent",
        "[    7.500000] bigbar: begin f9.map_private_einval",
        "[    7.510000] bigbar: end f9.map_private_einval",
    ];
    const SID_KTAP: [&str; 12] = [
        "TAP version 13",
        "1..3",
        "#  RUN           f8.mremap_move_pud_incongruent ...",
        "# f8.mremap_move_pud_incongruent: 0.020 s",
        "ok 1 f8.mremap_move_pud_incongruent",
        "#  RUN           f8.mremap_move_pud_congruent ...",
        "# f8.mremap_move_pud_congruent: 0.016 s",
        "ok 2 f8.mremap_move_pud_congruent",
        "#  RUN           f9.map_private_einval ...",
        "# f9.map_private_einval: 0.005 s",
        "ok 3 f9.map_private_einval",
        "# Totals: pass:3 fail:0 xfail:0 xpass:0 skip:0 error:0",
    ];

    /// Name, verdict, reason and kernel-log lines of a record's tests.
    fn verdicts(tests: &[TestResult]) -> Vec<(String, crate::ktap::Verdict, String, usize)> {
        tests
            .iter()
            .map(|t| {
                (
                    t.name.clone(),
                    t.result,
                    t.reason.clone(),
                    t.kernel_log.len(),
                )
            })
            .collect()
    }

    #[test]
    fn a_kernel_log_line_fails_its_test_whatever_order_the_ports_deliver_in() {
        // The whole KTAP stream first, the console after it: the worst race. The
        // markers on the console still put the bad pud in its test.
        let mut events: Vec<Event> = SID_KTAP
            .iter()
            .map(|l| Event::Ktap(1, l.to_string()))
            .collect();
        events.extend(SID_CONSOLE.iter().map(|l| Event::Console(1, l.to_string())));
        events.extend([Event::StreamClosed(1), Event::StreamClosed(1)]);
        let live = drive_events(
            1,
            events,
            "exit 0",
            (Duration::from_secs(30), Duration::from_secs(30)),
        );
        assert_eq!(live.outcome, Outcome::Completed);
        let mut record = crate::recovery::Recovery::new(Vec::new());
        record.absorb(1, live);
        let live = record.finish();

        use crate::ktap::Verdict::{Fail, Pass};
        let bad_pud =
            "[kernel log] mm/pgtable-generic.c:44: bad pud 000000003ad0a0f5(800000f8400002b7)";
        let want = [
            (
                "f8.mremap_move_pud_incongruent".to_string(),
                Pass,
                String::new(),
                0,
            ),
            (
                "f8.mremap_move_pud_congruent".to_string(),
                Fail,
                bad_pud.to_string(),
                1,
            ),
            ("f9.map_private_einval".to_string(), Pass, String::new(), 0),
        ];
        assert_eq!(verdicts(&live.tests), want);
        assert_eq!(live.outside_tests.len(), 1, "{:?}", live.outside_tests);
        assert_eq!(live.outside_tests[0].boot, 1);
        assert!(live.outside_tests[0].line.contains("WARNING: CPU: 0"));

        // The same boot saved and parsed again is judged the same.
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("results.ktap"), SID_KTAP.join("\n")).unwrap();
        std::fs::write(dir.path().join("console.log"), SID_CONSOLE.join("\n")).unwrap();
        let parsed = crate::parse::read(dir.path()).unwrap();
        assert_eq!(verdicts(&parsed.tests), want);
        assert_eq!(parsed.kernel_log_outside_tests, live.outside_tests);
        assert_eq!(parsed.outcome, Outcome::Completed);
    }

    #[test]
    fn silence_alone_is_a_timeout() {
        let events = vec![Event::Console(1, "[    0.0] Linux version 7.2".into())];
        let r = drive_events(
            1,
            events,
            "exec sleep 60",
            (Duration::from_millis(300), Duration::from_secs(30)),
        );
        assert!(
            matches!(r.outcome, Outcome::TimedOut(ref why) if why.contains("printed nothing")),
            "{:?}",
            r.outcome
        );
    }

    /// A guest whose test binary announced `t.hang`, beat twice, then stopped.
    fn hung_in_a_test() -> Vec<Event> {
        [
            "TAP version 13",
            "1..2",
            "#  RUN           t.hang ...",
            "# heartbeat t.hang 2",
            "# heartbeat t.hang 4",
        ]
        .iter()
        .map(|l| Event::Ktap(1, l.to_string()))
        .chain([Event::Console(1, "[    9.0] bigbar: begin t.hang".into())])
        .collect()
    }

    #[test]
    fn a_test_whose_heartbeat_stops_is_a_hang_of_that_test() {
        let limits = (Duration::from_secs(30), Duration::from_millis(300));
        let started = Instant::now();
        let r = drive_events(1, hung_in_a_test(), "exec sleep 60", limits);
        // Well before the idle limit: the progress limit struck.
        assert!(started.elapsed() < Duration::from_secs(20));
        let Outcome::TimedOut(why) = &r.outcome else {
            panic!("expected a hang, got {:?}", r.outcome);
        };
        assert!(why.starts_with("the guest hung: no heartbeat"), "{why}");
        assert!(
            why.contains("in flight: t.hang (its last heartbeat at 4 s)"),
            "{why}"
        );
        assert_eq!(r.in_flight.as_deref(), Some("t.hang"));
        assert!(!r.ktap_complete);
        assert!(r.console_tail.contains("bigbar: begin t.hang"));
        // Recovery fails the test with the reason and the console lines.
        let mut record = crate::recovery::Recovery::new(vec!["t.hang".into(), "t.next".into()]);
        assert!(record.absorb(1, r), "the rest must go to a fresh guest");
        let rec = record.finish();
        assert_eq!(rec.tests[0].result, crate::ktap::Verdict::Fail);
        assert!(
            rec.tests[0].reason.contains("the guest hung"),
            "{}",
            rec.tests[0].reason
        );
        assert!(rec.tests[0].diagnostic.contains("bigbar: begin t.hang"));
    }

    #[test]
    fn a_slow_test_that_keeps_beating_is_not_stopped() {
        // The progress limit is 300 ms; the test runs four times that, beating
        // every 50 ms, as a slow but alive guest would.
        let limits = (Duration::from_secs(30), Duration::from_millis(300));
        let dir = tempfile::tempdir().unwrap();
        let (tx, rx) = channel();
        for l in ["TAP version 13", "1..1", "#  RUN           t.slow ..."] {
            tx.send(Event::Ktap(1, l.into())).unwrap();
        }
        let qemu = Supervised::spawn(
            "qemu",
            Command::new("sh").args(["-c", "exec sleep 60"]),
            tx.clone(),
            Event::QemuExited,
        )
        .unwrap();
        let guest = std::thread::spawn(move || {
            for i in 0..24 {
                // The pace of the simulated guest, not a synchronisation.
                std::thread::sleep(Duration::from_millis(50));
                let beat = format!("# heartbeat t.slow {i}");
                tx.send(Event::Ktap(1, beat)).unwrap();
            }
            tx.send(Event::Ktap(1, "ok 1 t.slow".into())).unwrap();
            let status = Command::new("true").status().unwrap();
            for e in [
                Event::StreamClosed(1),
                Event::StreamClosed(1),
                Event::QemuExited(status),
            ] {
                tx.send(e).unwrap();
            }
        });
        let mut state = LoopState::new(false, dir.path().join("dev.sock"), 1);
        let limits = Limits {
            deadline: Instant::now() + Duration::from_secs(60),
            silence: progress::Limits {
                idle: limits.0,
                progress: limits.1,
                first_line: FIRST_LINE_GRACE,
            },
        };
        let outcome = state.drive(&rx, &qemu, limits, &dir.path().join("qemu.log"));
        guest.join().unwrap();
        assert_eq!(outcome, Outcome::Completed);
        let r = state.finish(outcome, 0.0);
        assert_eq!(r.tests.len(), 1);
        assert_eq!(r.tests[0].result, crate::ktap::Verdict::Pass);
        assert_eq!(r.tests[0].diagnostic, "", "heartbeats are no diagnostics");
    }

    #[test]
    fn between_tests_only_silence_on_both_ports_counts() {
        // A finished test and then a long fixture setup: no test in flight, so
        // the short progress limit does not apply and the idle limit strikes.
        let events = [
            "TAP version 13",
            "1..2",
            "#  RUN           t.a ...",
            "ok 1 t.a",
        ]
        .iter()
        .map(|l| Event::Ktap(1, l.to_string()))
        .collect();
        let limits = (Duration::from_millis(600), Duration::from_millis(100));
        let r = drive_events(1, events, "exec sleep 60", limits);
        let Outcome::TimedOut(why) = &r.outcome else {
            panic!("expected a timeout, got {:?}", r.outcome);
        };
        assert!(
            why.starts_with("the guest printed nothing for 0 s"),
            "{why}"
        );
        assert!(why.contains("in flight: (the test after t.a)"), "{why}");
    }

    fn cfg() -> GuestConfig {
        GuestConfig {
            kernel: "/k".into(),
            initramfs: "/i".into(),
            append: "quiet".into(),
            accel: "tcg".into(),
            iommu: true,
            pci_hole64: 1 << 36,
            phys_bits: 40,
            device_socket: "/d/dev.sock".into(),
            memory_mib: 1024,
            timeout: Duration::from_secs(1),
            idle_timeout: Duration::from_secs(1),
            progress_timeout: Duration::from_secs(1),
            echo_console: false,
            extra_qemu_args: vec!["-s".into()],
        }
    }

    #[test]
    fn iommu_precedes_the_device_and_serials_are_separate() {
        let a = qemu_args(&cfg(), Path::new("/run"));
        let iommu = a.iter().position(|s| s.starts_with("intel-iommu")).unwrap();
        let dev = a.iter().position(|s| s.contains("vfio-user-pci")).unwrap();
        assert!(iommu < dev);
        assert!(a.contains(&"chardev:console".to_string()));
        assert!(a.contains(&"chardev:ktap".to_string()));
        assert!(a.contains(&"socket,id=ktap,path=/run/ktap.sock".to_string()));
        assert!(a.contains(&"max,phys-bits=40".to_string()));
        let dev_json: serde_json::Value = serde_json::from_str(&a[dev]).unwrap();
        assert_eq!(dev_json["socket"]["path"], "/d/dev.sock");
    }

    #[test]
    fn cmdline_has_console_iommu_and_extra() {
        let c = kernel_cmdline(&cfg());
        assert!(c.starts_with("console=ttyS0"));
        assert!(c.contains("intel_iommu=on"));
        assert!(!c.contains("watchdog_thresh"), "{c}");
        assert!(
            c.contains(" sysctl.kernel.hung_task_timeout_secs=20"),
            "{c}"
        );
        assert!(c.ends_with(" quiet"));
        let mut no = cfg();
        no.iommu = false;
        assert!(!kernel_cmdline(&no).contains("intel_iommu"));
    }
}
