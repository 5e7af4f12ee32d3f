//! The run of one kernel: unpack the programs, obtain QEMU and the kernel,
//! assemble the initramfs, start the device, boot (again after a guest that
//! died), and turn what happened into a [`Run`].
//! The guest itself is [`session`]'s, its command line `vm_images::launch`'s.

use crate::recovery::Recovery;
use crate::report::{KernelInfo, Outcome, QemuInfo, Run};
use crate::session::{self, Event, GuestConfig, SessionResult};
use crate::suite::{self, Suite as TestSuite};
use crate::{accel, artefacts, device_emu, stages};
use anyhow::{Context, Result};
use protocol::layout::BarLayout;
use std::path::{Path, PathBuf};
use std::sync::mpsc::{Receiver, Sender};
use std::time::{Duration, Instant};
use vm_images::debian::Suite;
use vm_images::kernel::requirements::{self, IommuMode};
use vm_images::kselftests::{self, Collection};
use vm_images::{busybox, initramfs, kernel, qemu, Cache, Fetcher};

/// What the user asked for.
#[derive(Debug, Clone)]
pub struct BootPlan {
    /// `--kernel`.
    pub kernel_spec: String,
    /// `--qemu`.
    pub qemu: Option<PathBuf>,
    /// Cache root.
    pub cache: PathBuf,
    /// Device BAR layout.
    pub layout: BarLayout,
    /// `auto`, `tcg` or `kvm`.
    pub accel: String,
    /// Guest memory in MiB.
    pub memory_mib: u32,
    /// Guest vCPUs.
    pub cpus: u32,
    /// Whole-boot time limit.
    pub timeout: Duration,
    /// Longest silence (no console or KTAP line) before the guest is stopped.
    pub idle_timeout: Duration,
    /// Longest silence of the KTAP port while a test runs (its heartbeats
    /// stopped) before the guest is taken for hung.
    pub progress_timeout: Duration,
    /// Echo the console.
    pub echo_console: bool,
    /// Extra arguments for the guest test binary (`--vfio-api` included).
    pub guest_args: Vec<String>,
    /// The interface the guest opens the device through, as recorded.
    pub vfio_api: crate::cli::VfioApi,
    /// Extra kernel command line.
    pub append: String,
    /// Extra QEMU arguments.
    pub qemu_args: Vec<String>,
    /// Print the QEMU and kernel command lines and the initramfs, do not boot.
    pub dry_run: bool,
    /// Keep the run directory.
    pub keep: bool,
    /// Boot into an interactive shell.
    pub shell: bool,
    /// Start the gdb stub.
    pub gdb: bool,
    /// Build and run the kernel reproducers (`--reproducers`).
    pub reproducers: bool,
    /// `--suite`.
    pub suite: TestSuite,
}

impl BootPlan {
    /// Whether time limits apply: `--gdb` and `--shell` sessions are a human's.
    fn limited(&self) -> bool {
        !(self.gdb || self.shell)
    }
}

/// A time limit that never strikes while someone debugs by hand.
const NO_LIMIT: Duration = Duration::from_secs(365 * 24 * 3600);

/// Smallest 64-bit PCI window offered to the guest (QEMU's own default).
const MIN_HOLE64: u64 = 32 << 30;

/// Size of the 64-bit PCI window that fits every 64-bit BAR of `layout`, each
/// naturally aligned, with room to spare for the firmware's placement.
pub fn pci_hole64(layout: &BarLayout) -> u64 {
    let total: u64 = layout
        .bars()
        .iter()
        .filter(|b| b.is_64bit())
        .map(|b| b.size())
        .sum();
    total
        .checked_next_power_of_two()
        .and_then(|p| p.checked_mul(2))
        .unwrap_or(u64::MAX)
        .max(MIN_HOLE64)
}

/// Guest physical address bits for a 64-bit window of `hole64` bytes (at least
/// 40, QEMU's TCG default).
///
/// SeaBIOS places the 64-bit window near the top of the physical address space;
/// with 40 bits it leaves a 512 GiB BAR unmapped, with 44 it maps it. Sixteen
/// times the window leaves that room for any size.
pub fn phys_bits(hole64: u64) -> u32 {
    let bits = 64 - hole64.saturating_sub(1).leading_zeros();
    (bits + 4).clamp(40, 52)
}

/// Everything a boot needs, obtained once per run.
struct Prepared {
    built: artefacts::Artefacts,
    qemu: qemu::Qemu,
    kernel: kernel::Kernel,
    iommu: IommuMode,
    busybox: PathBuf,
    accel: accel::Choice,
    /// External kselftest programs for the guest (`--reproducers`).
    kselftests: Vec<Collection>,
}

/// Most boots one run may take when guests keep dying.
const MAX_BOOTS: usize = 8;

/// Builds the programs and obtains QEMU, the kernel and busybox.
fn prepare(plan: &BootPlan) -> Result<Prepared> {
    let cache = Cache::new(plan.cache.clone());
    let fetcher = Fetcher::new(&cache);
    let built = stages::run(
        "build",
        |_| artefacts::unpack(&cache),
        |_| "device-emu, guest-tests".into(),
    )?;
    let qemu = stages::run(
        "qemu",
        |_| qemu::obtain(&fetcher, plan.qemu.as_deref()).context("obtaining QEMU"),
        |q| format!("QEMU {} ({})", q.version, q.binary.display()),
    )?;
    let spec = kernel_spec(&plan.kernel_spec)?;
    let kernel = stages::run(
        "kernel",
        |_| kernel::obtain(&fetcher, &spec).context("obtaining the kernel"),
        |k| match &k.pvh_image {
            Some(pvh) => format!(
                "{} ({}, booted through its PVH entry)",
                k.release,
                pvh.display()
            ),
            None => format!("{} ({})", k.release, k.image.display()),
        },
    )?;
    let iommu = check_config(&kernel)?;
    let busybox = stages::run(
        "busybox",
        |_| busybox::obtain(&fetcher, &Suite::sid()).context("obtaining busybox"),
        |b| format!("busybox-static {}", b.package_version),
    )?
    .binary;
    let mut kselftests = Vec::new();
    if plan.reproducers {
        kselftests.push(stages::run(
            "reproducers",
            |_| build_reproducers(&fetcher),
            |c| format!("{} against {}", c.programs.join(", "), c.source),
        )?);
    }
    if plan.suite.vfio_selftests() {
        kselftests.push(stages::run(
            "vfio-selftests",
            |_| suite::build_vfio_selftests(&fetcher, &spec),
            |c| format!("{} programs from {}", c.programs.len(), c.source),
        )?);
    }
    let accel = stages::run(
        "accelerator",
        |_| {
            let version = qemu.version.to_string();
            accel::choose(
                &plan.accel,
                || qemu.command(),
                &version,
                kernel.boot_image(),
                &cache,
            )
        },
        |c| format!("{} ({})", c.accel.name(), c.reason),
    )?;
    Ok(Prepared {
        built,
        qemu,
        kernel,
        iommu,
        busybox,
        accel,
        kselftests,
    })
}

/// Compiles the workspace's kernel reproducers (`kernel/selftests/vfio` of the
/// source tree the runner was built from).
pub fn build_reproducers(fetcher: &Fetcher<'_>) -> Result<Collection> {
    let sources = crate::places::source_root().join("kernel/selftests/vfio");
    kselftests::build_reproducers(fetcher, &sources)
        .with_context(|| format!("building the reproducers of {}", sources.display()))
}

/// The guest binary's `--kselftest-dir`s for listing `collections` on the
/// host: each one's cache entry holds it in the install layout.
pub fn host_kselftest_args(collections: &[Collection]) -> Vec<String> {
    collections
        .iter()
        .filter_map(|c| c.dir.parent())
        .flat_map(|d| ["--kselftest-dir".to_string(), d.display().to_string()])
        .collect()
}

/// The run's selected tests in the guests they run in: the catalogue, then the
/// external kselftest cases in a guest of their own. A test of the catalogue
/// that oopses leaves a task stuck in the kernel holding the device's VFIO
/// group, and the external programs open that group themselves.
fn phases(all: &[String], collections: &[Collection]) -> Vec<Vec<String>> {
    let external = |n: &String| {
        collections
            .iter()
            .any(|c| n.starts_with(&format!("{}.", c.name)))
    };
    let (ext, catalogue): (Vec<String>, Vec<String>) = all.iter().cloned().partition(external);
    [catalogue, ext]
        .into_iter()
        .filter(|p| !p.is_empty())
        .collect()
}

/// A new run directory only the user can enter (device-emu refuses sockets in
/// directories others can reach).
pub fn private_run_dir(prefix: &str) -> Result<tempfile::TempDir> {
    use std::os::unix::fs::PermissionsExt;
    tempfile::Builder::new()
        .prefix(prefix)
        .permissions(std::fs::Permissions::from_mode(0o700))
        .tempdir()
        .context("creating the private run directory")
}

/// Parses `--kernel`; an existing path that is not written as one (`linux`,
/// `build/`) is taken as a local kernel too. An existing path is made
/// absolute, so that the stages name the image of `--kernel .` by its place.
pub fn kernel_spec(spec: &str) -> Result<kernel::KernelSpec> {
    match spec.parse::<kernel::KernelSpec>() {
        // A missing path is reported by the kernel stage, as before.
        Ok(kernel::KernelSpec::Path(p)) => {
            Ok(kernel::KernelSpec::Path(p.canonicalize().unwrap_or(p)))
        }
        Ok(s) => Ok(s),
        Err(e) => {
            let p = Path::new(spec);
            if p.exists() {
                let abs = p
                    .canonicalize()
                    .with_context(|| format!("--kernel {spec}"))?;
                Ok(kernel::KernelSpec::Path(abs))
            } else {
                Err(e).context("--kernel")
            }
        }
    }
}

/// Checks the kernel's configuration (when known) before booting it, and picks
/// the IOMMU mode it offers. Debian's kernels and bigbar's builds carry theirs;
/// a local kernel was checked while it was obtained and says its mode.
fn check_config(k: &kernel::Kernel) -> Result<IommuMode> {
    if let Some(mode) = k.iommu {
        return Ok(mode);
    }
    let Some(path) = &k.config else {
        return Ok(IommuMode::Intel);
    };
    requirements::check_file(path).with_context(|| format!("kernel {}", k.spec))
}

/// The guest tests `plan` selects, in run order, with the rule IDs each
/// declares (the static guest binary lists them on the host).
fn selected_tests(prep: &Prepared, plan: &BootPlan) -> Result<Vec<(String, Vec<String>)>> {
    let out = std::process::Command::new(&prep.built.guest_tests)
        .arg("--list")
        .args(host_kselftest_args(&prep.kselftests))
        .args(&plan.guest_args)
        .output()
        .context("listing the guest tests")?;
    Ok(parse_listing(&String::from_utf8_lossy(&out.stdout))
        .into_iter()
        .filter(|(name, _)| plan.suite.includes(name))
        .collect())
}

/// The guest binary's `--list` output: one test a line, its name, then (after a
/// tab) its rule IDs separated by commas when it declares any.
pub fn parse_listing(text: &str) -> Vec<(String, Vec<String>)> {
    text.lines()
        .map(str::trim)
        .filter(|l| !l.is_empty() && !l.starts_with('#'))
        .map(|l| match l.split_once('\t') {
            Some((name, rules)) => (
                name.trim().to_string(),
                rules.split(',').map(|r| r.trim().to_string()).collect(),
            ),
            None => (l.to_string(), Vec::new()),
        })
        .collect()
}

/// Runs everything for one kernel and returns the run's record (`None` for a
/// dry run, which prints what it would boot instead).
///
/// When a guest dies before its tests finished (panic, hang), the test in flight
/// is failed with the kernel's report and the remaining tests run in a fresh guest.
pub fn boot_and_test(plan: &BootPlan, out: &Path) -> Result<Option<Run>> {
    let prep = prepare(plan)?;
    let run_dir = private_run_dir("bigbar-run-")?;
    if plan.dry_run {
        let cfg = guest_config(&prep, plan, run_dir.path(), 1);
        build_initramfs(&prep, plan, &cfg.initramfs, &[])?;
        print_dry_run(&cfg, prep.qemu.command(), run_dir.path())?;
        return Ok(None);
    }
    eprintln!("bigbar: run directory {}", run_dir.path().display());
    let listed = selected_tests(&prep, plan)?;
    let all: Vec<String> = listed.iter().map(|(name, _)| name.clone()).collect();
    let phases = phases(&all, &prep.kselftests);
    let mut record = Recovery::new(all);
    let (tx, rx, _route) = session::event_channel()?;
    // --timeout bounds the whole run, however many boots the recovery needs.
    let budget = if plan.limited() {
        plan.timeout
    } else {
        NO_LIMIT
    };
    let mut boots = Boots {
        run_dir: run_dir.path(),
        deadline: Instant::now() + budget,
        done: 0,
        // A suite without the catalogue must name its tests, or the guest
        // would run the catalogue too.
        single: phases.len() <= 1 && plan.suite != TestSuite::VfioSelftests,
    };
    for (i, phase) in phases.iter().enumerate() {
        if i > 0 {
            eprintln!(
                "bigbar: {} external kselftest cases run in a guest of their own",
                phase.len()
            );
        }
        let events = (tx.clone(), &rx);
        if !boots.run_phase(&prep, plan, out, phase, &mut record, events)? {
            break;
        }
    }
    let kept = plan.keep.then(|| run_dir.keep());
    if let Some(dir) = &kept {
        eprintln!(
            "bigbar: kept run directory {} (device sockets device-N.sock)",
            dir.display()
        );
    }
    let mut record = record.finish();
    for t in &mut record.tests {
        if let Some((_, rules)) = listed.iter().find(|(name, _)| *name == t.name) {
            t.rules = rules.clone();
        }
    }
    Ok(Some(Run {
        kernel: KernelInfo {
            spec: plan.kernel_spec.clone(),
            release: Some(prep.kernel.release.clone()),
            package_version: Some(prep.kernel.package_version.clone()),
            vfio_api: plan.vfio_api.name().to_string(),
        },
        qemu: QemuInfo {
            version: prep.qemu.version.to_string(),
            path: prep.qemu.binary.display().to_string(),
        },
        accel: prep.accel.accel.name().to_string(),
        accel_reason: prep.accel.reason.clone(),
        bars: plan.layout.to_string(),
        outcome: record.outcome,
        guest_seconds: record.guest_seconds,
        tests: record.tests,
        kernel_reports: record.kernel_reports,
        kernel_log_outside_tests: record.outside_tests,
        boots: record.boots,
        run_dir: kept.map(|d| d.display().to_string()),
    }))
}

/// The boots of one run, across its phases.
struct Boots<'a> {
    run_dir: &'a Path,
    /// When --timeout is used up.
    deadline: Instant,
    /// Boots taken so far.
    done: usize,
    /// Whether the run has one phase, whose first boot then runs the selection
    /// as the user wrote it (filters, not a list of names).
    single: bool,
}

impl Boots<'_> {
    /// Runs the tests of `phase` not yet run, booting again after a guest that
    /// died; returns whether the run goes on (false when it must stop: time or
    /// boots used up, or a boot that could not start).
    fn run_phase(
        &mut self,
        prep: &Prepared,
        plan: &BootPlan,
        out: &Path,
        phase: &[String],
        record: &mut Recovery,
        (tx, rx): (Sender<Event>, &Receiver<Event>),
    ) -> Result<bool> {
        let mut first = true;
        loop {
            let left = self.deadline.saturating_duration_since(Instant::now());
            if left.is_zero() || self.done == MAX_BOOTS {
                eprintln!("bigbar: --timeout or the boot limit is used up; the remaining tests are not run");
                return Ok(false);
            }
            let selection = if self.single && first {
                Vec::new()
            } else {
                let left: Vec<String> = record.remaining();
                phase.iter().filter(|n| left.contains(n)).cloned().collect()
            };
            if selection.is_empty() && !(self.single && first) {
                return Ok(true);
            }
            first = false;
            self.done += 1;
            let boot = self.done;
            let at = BootAt {
                run_dir: self.run_dir,
                boot,
                time_left: left,
            };
            let result = match one_boot(prep, plan, out, &at, &selection, (tx.clone(), rx)) {
                Ok(result) => result,
                // What earlier boots found must survive a later boot that cannot start.
                Err(e) if boot > 1 => {
                    eprintln!("bigbar: boot {boot} could not start: {e:#}");
                    record.absorb_failure(boot, format!("boot {boot} could not start: {e:#}"));
                    return Ok(false);
                }
                Err(e) => return Err(e),
            };
            if result.outcome != Outcome::Completed {
                eprintln!("bigbar: last console lines:\n{}", result.console_tail);
            }
            if !record.absorb(boot, result) {
                return Ok(true);
            }
            let left_here = record
                .remaining()
                .iter()
                .filter(|n| phase.contains(n))
                .count();
            if left_here == 0 {
                return Ok(true);
            }
            eprintln!(
                "bigbar: the guest died; {left_here} tests remain, continuing in a fresh guest"
            );
        }
    }
}

/// The guest configuration of boot number `boot`.
fn guest_config(prep: &Prepared, plan: &BootPlan, run_dir: &Path, boot: usize) -> GuestConfig {
    let hole = pci_hole64(&plan.layout);
    let mut extra = plan.qemu_args.clone();
    let mut append = plan.append.clone();
    let config = suite::read_config(prep.kernel.config.as_deref());
    if let Some(args) = suite::kernel_args(plan.suite, config.as_deref()) {
        append = format!("{args} {append}").trim().to_string();
    }
    if prep.iommu == IommuMode::NoIommu {
        append = format!("vfio.enable_unsafe_noiommu_mode=1 {append}")
            .trim()
            .to_string();
    }
    if plan.gdb {
        let sock = run_dir.join("gdb.sock");
        extra.extend([
            "-gdb".into(),
            format!("unix:{},server=on,wait=off", sock.display()),
        ]);
        append = format!("{append} nokaslr").trim().to_string();
    }
    let limited = plan.limited();
    GuestConfig {
        kernel: prep.kernel.boot_image().to_owned(),
        initramfs: run_dir.join(format!("initramfs-{boot}.cpio")),
        append,
        accel: prep.accel.accel,
        iommu: prep.iommu == IommuMode::Intel,
        pci_hole64: hole,
        phys_bits: phys_bits(hole),
        device_socket: run_dir.join(format!("device-{boot}.sock")),
        memory_mib: suite::memory_mib(plan.suite, config.as_deref(), plan.memory_mib),
        cpus: plan.cpus,
        timeout: if limited { plan.timeout } else { NO_LIMIT },
        idle_timeout: if limited { plan.idle_timeout } else { NO_LIMIT },
        progress_timeout: if limited {
            plan.progress_timeout
        } else {
            NO_LIMIT
        },
        echo_console: plan.echo_console,
        extra_qemu_args: extra,
    }
}

/// How to attach gdb to the guest of `run_dir`.
fn gdb_instructions(prep: &Prepared, run_dir: &Path) -> String {
    let sock = run_dir.join("gdb.sock");
    let vmlinux = prep
        .kernel
        .image
        .parent()
        .map(|d| d.join("vmlinux"))
        .filter(|p| p.exists());
    let vmlinux = match vmlinux {
        Some(p) => p.display().to_string(),
        None => "vmlinux  (for a Debian kernel: from its -dbg package)".to_string(),
    };
    format!(
        "the guest's gdb stub listens on {}; attach with\n  gdb {vmlinux} -ex 'target remote {}'\n(the kernel boots with nokaslr; time limits are off)",
        sock.display(),
        sock.display()
    )
}

/// Where a boot stands within its run.
struct BootAt<'a> {
    run_dir: &'a Path,
    /// Its number, from 1.
    boot: usize,
    /// What is left of the run's --timeout.
    time_left: Duration,
}

/// Boot number `at.boot` of a run: its initramfs (running `selection`, or every
/// selected test when empty), its own device-emu, and the supervised guest.
fn one_boot(
    prep: &Prepared,
    plan: &BootPlan,
    out: &Path,
    at: &BootAt<'_>,
    selection: &[String],
    (tx, rx): (Sender<Event>, &Receiver<Event>),
) -> Result<SessionResult> {
    let (run_dir, boot) = (at.run_dir, at.boot);
    let mut cfg = guest_config(prep, plan, run_dir, boot);
    cfg.timeout = cfg.timeout.min(at.time_left);
    build_initramfs(prep, plan, &cfg.initramfs, selection)?;
    if plan.gdb {
        eprintln!("bigbar: {}", gdb_instructions(prep, run_dir));
    }
    let dev = stages::run(
        "device",
        |_| {
            let log = out.join(session::boot_file("device-emu", "log", boot));
            device_emu::start(
                &prep.built.device_emu,
                &cfg.device_socket,
                &plan.layout.to_string(),
                &log,
                tx.clone(),
            )
        },
        |_| format!("bars {}", plan.layout),
    )?;
    let result = stages::run(
        &format!("boot {boot} and tests"),
        |_| {
            session::run(
                &cfg,
                prep.qemu.command(),
                out,
                run_dir,
                (tx.clone(), rx),
                boot,
            )
        },
        |r| {
            format!(
                "{} results, {:.1} s guest wall time",
                r.tests.len(),
                r.guest_seconds
            )
        },
    )?;
    dev.stop();
    Ok(result)
}

/// The stage of a bare boot: QEMU's start to its exit.
pub const BARE_BOOT_STAGE: &str = "bare boot";

/// `--bare-boot`: the floor a run is measured against (`runner bench`). The
/// same machine as a run's, device included, boots the same kernel with an
/// init that powers off at once; exit status 0 when it did.
pub fn bare_boot(plan: &BootPlan, out: &Path) -> Result<u8> {
    let prep = prepare(plan)?;
    let run_dir = private_run_dir("bigbar-bare-")?;
    let cfg = guest_config(&prep, plan, run_dir.path(), 1);
    initramfs::build_poweroff(&prep.busybox, &cfg.initramfs)
        .context("building the bare-boot initramfs")?;
    let (tx, rx, _route) = session::event_channel()?;
    let dev = stages::run(
        "device",
        |_| {
            let log = out.join(session::boot_file("device-emu", "log", 1));
            let layout = plan.layout.to_string();
            device_emu::start(
                &prep.built.device_emu,
                &cfg.device_socket,
                &layout,
                &log,
                tx.clone(),
            )
        },
        |_| format!("bars {}", plan.layout),
    )?;
    let result = stages::run(
        BARE_BOOT_STAGE,
        |_| {
            let events = (tx.clone(), &rx);
            session::run(&cfg, prep.qemu.command(), out, run_dir.path(), events, 1)
        },
        |r| format!("QEMU ran {:.2} s", r.guest_seconds),
    )?;
    dev.stop();
    match result.outcome {
        Outcome::Infrastructure(why) if why.starts_with(session::POWERED_OFF_UNTESTED) => {
            Ok(crate::cli::EXIT_OK)
        }
        other => {
            eprintln!(
                "bigbar: the bare boot did not power off cleanly: {other:?}\n{}",
                result.console_tail
            );
            Ok(crate::cli::EXIT_NOT_TESTED)
        }
    }
}

/// `--shell`: boots into a shell on this terminal with the device bound.
pub fn shell(plan: &BootPlan) -> Result<u8> {
    let prep = prepare(plan)?;
    let run_dir = private_run_dir("bigbar-shell-")?;
    let cfg = guest_config(&prep, plan, run_dir.path(), 1);
    let mut spec = initramfs_spec(&prep, plan, &[]);
    spec.shell = true;
    initramfs::build(&spec, &cfg.initramfs).context("building the initramfs")?;
    // The terminal is in raw mode, so Ctrl-C goes to the guest; a SIGTERM to the
    // runner keeps its default action and ends it, and with it (parent-death
    // signal) QEMU and device-emu.
    let (tx, _rx, route) = session::event_channel()?;
    drop(route);
    let log = run_dir.path().join("device-emu.log");
    let dev = device_emu::start(
        &prep.built.device_emu,
        &cfg.device_socket,
        &plan.layout.to_string(),
        &log,
        tx,
    )?;
    if plan.gdb {
        eprintln!("bigbar: {}", gdb_instructions(&prep, run_dir.path()));
    }
    eprintln!("bigbar: shell on the guest console; `poweroff -f` or exiting the shell ends it");
    let status = session::interactive(&cfg, prep.qemu.command(), run_dir.path())?;
    dev.stop();
    Ok(if status.success() {
        0
    } else {
        crate::cli::EXIT_NOT_TESTED
    })
}

/// Writes the initramfs; `only` (exact test names) narrows the selection.
fn build_initramfs(prep: &Prepared, plan: &BootPlan, path: &Path, only: &[String]) -> Result<()> {
    let spec = initramfs_spec(prep, plan, only);
    initramfs::build(&spec, path).context("building the initramfs")
}

/// The initramfs contents; `only` (exact test names) narrows the selection.
fn initramfs_spec(prep: &Prepared, plan: &BootPlan, only: &[String]) -> initramfs::InitramfsSpec {
    let mut args = vec!["--bars".to_string(), plan.layout.to_string()];
    if !prep.kselftests.is_empty() {
        args.extend([
            "--kselftest-dir".to_string(),
            kselftests::GUEST_DIR.to_string(),
        ]);
    }
    if only.is_empty() {
        args.extend(plan.guest_args.iter().cloned());
    } else {
        // A filter without `*` matches exactly one name.
        args.extend(
            only.iter()
                .flat_map(|n| ["--filter".to_string(), n.clone()]),
        );
        args.extend(without_filters(&plan.guest_args));
    }
    initramfs::InitramfsSpec {
        busybox: prep.busybox.clone(),
        guest_tests: prep.built.guest_tests.clone(),
        modules: prep.kernel.modules.clone(),
        test_args: args,
        shell: false,
        kselftests: prep.kselftests.clone(),
    }
}

/// `args` without its `--filter GLOB` / `--filter=GLOB` options.
fn without_filters(args: &[String]) -> Vec<String> {
    let mut out = Vec::new();
    let mut skip_value = false;
    for a in args {
        if std::mem::take(&mut skip_value) {
            continue;
        }
        if a == "--filter" {
            skip_value = true;
        } else if !a.starts_with("--filter=") {
            out.push(a.clone());
        }
    }
    out
}

/// `--dry-run`: the QEMU command, the kernel command line and the initramfs.
fn print_dry_run(cfg: &GuestConfig, mut qemu: std::process::Command, run_dir: &Path) -> Result<()> {
    qemu.args(session::qemu_args(cfg, run_dir));
    let words: Vec<String> = std::iter::once(qemu.get_program())
        .chain(qemu.get_args())
        .map(|w| shell_quote(&w.to_string_lossy()))
        .collect();
    println!("QEMU command line:\n  {}", words.join(" "));
    println!("kernel command line:\n  {}", session::kernel_cmdline(cfg));
    println!("initramfs {}:", cfg.initramfs.display());
    for (name, mode, size) in initramfs_entries(&cfg.initramfs)? {
        println!("  {mode:06o} {size:>10} {name}");
    }
    Ok(())
}

/// Quotes a word for a POSIX shell when it needs it.
fn shell_quote(w: &str) -> String {
    if !w.is_empty()
        && w.bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"-_=/.,:@+".contains(&b))
    {
        w.to_string()
    } else {
        format!("'{}'", w.replace('\'', "'\\''"))
    }
}

/// Name, mode and size of every entry of a newc initramfs.
fn initramfs_entries(path: &Path) -> Result<Vec<(String, u32, u32)>> {
    let mut file = std::io::BufReader::new(
        std::fs::File::open(path).with_context(|| format!("opening {}", path.display()))?,
    );
    let mut entries = Vec::new();
    loop {
        let reader = cpio::NewcReader::new(file).context("reading the initramfs")?;
        let e = reader.entry();
        if e.is_trailer() {
            break;
        }
        entries.push((e.name().to_string(), e.mode(), e.file_size()));
        file = reader.finish().context("reading the initramfs")?;
    }
    Ok(entries)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[rstest::rstest]
    #[case("f6.x\tF6\n", &[("f6.x", &["F6"][..])])]
    #[case("fault_order.a\tF1,F2\nsetup.b\n", &[("fault_order.a", &["F1", "F2"][..]), ("setup.b", &[][..])])]
    #[case("# a comment\n\n  repro.p.c  \n", &[("repro.p.c", &[][..])])]
    fn listings(#[case] text: &str, #[case] want: &[(&str, &[&str])]) {
        let got = parse_listing(text);
        let want: Vec<(String, Vec<String>)> = want
            .iter()
            .map(|(n, r)| (n.to_string(), r.iter().map(|x| x.to_string()).collect()))
            .collect();
        assert_eq!(got, want);
    }
    use rstest::rstest;

    #[test]
    fn filters_are_dropped_from_pass_through_arguments() {
        let args: Vec<String> = ["--filter", "a*", "--seed", "1", "--filter=b", "--no-risky"]
            .map(String::from)
            .to_vec();
        assert_eq!(without_filters(&args), ["--seed", "1", "--no-risky"]);
    }

    #[test]
    fn per_boot_file_names() {
        assert_eq!(session::boot_file("console", "log", 1), "console.log");
        assert_eq!(
            session::boot_file("results", "ktap", 3),
            "results.boot3.ktap"
        );
        assert_eq!(session::boot_file("qemu", "log", 2), "qemu.boot2.log");
    }

    fn collection(name: &str) -> Collection {
        Collection {
            name: name.into(),
            dir: PathBuf::from(format!("/cache/kselftests/{name}/entry/{name}")),
            programs: vec!["x_test".into()],
            source: "linux-source-7.2 7.2.13-1".into(),
        }
    }

    #[rstest]
    #[case::catalogue_only(&["f1.a", "f6.b"], &[&["f1.a", "f6.b"][..]])]
    #[case::both(&["f1.a", "repro.x.f.t", "f6.b", "repro.x.f.u"],
                 &[&["f1.a", "f6.b"][..], &["repro.x.f.t", "repro.x.f.u"][..]])]
    #[case::external_only(&["repro.x.f.t"], &[&["repro.x.f.t"][..]])]
    #[case::prefix_needs_the_dot(&["reproducible.a"], &[&["reproducible.a"][..]])]
    #[case::nothing(&[], &[])]
    fn external_cases_get_their_own_guest(#[case] all: &[&str], #[case] want: &[&[&str]]) {
        let all: Vec<String> = all.iter().map(|s| s.to_string()).collect();
        assert_eq!(phases(&all, &[collection("repro")]), want);
    }

    #[test]
    fn host_listing_points_at_the_install_layout() {
        assert_eq!(
            host_kselftest_args(&[collection("repro")]),
            ["--kselftest-dir", "/cache/kselftests/repro/entry"]
        );
        assert_eq!(
            host_kselftest_args(&[collection("repro"), collection("vfio-selftests")]),
            [
                "--kselftest-dir",
                "/cache/kselftests/repro/entry",
                "--kselftest-dir",
                "/cache/kselftests/vfio-selftests/entry"
            ]
        );
        assert!(host_kselftest_args(&[]).is_empty());
    }

    #[rstest]
    #[case("plain", "plain")]
    #[case("a b", "'a b'")]
    #[case("{\"driver\":1}", "'{\"driver\":1}'")]
    #[case("it's", "'it'\\''s'")]
    fn quoting(#[case] word: &str, #[case] quoted: &str) {
        assert_eq!(shell_quote(word), quoted);
    }

    #[rstest]
    #[case("1=64M:32:msix@2M,2=16G,4=1G", 64 << 30, 40)]
    #[case("2=512G", 1 << 40, 44)]
    #[case("2=1G", 32 << 30, 40)]
    fn window_and_address_bits(#[case] bars: &str, #[case] hole: u64, #[case] bits: u32) {
        let layout: BarLayout = bars.parse().unwrap();
        assert_eq!(pci_hole64(&layout), hole);
        assert_eq!(phys_bits(hole), bits);
    }
}
