//! One complete run: build, obtain QEMU and the kernel, assemble the initramfs,
//! start the device, boot, and turn what happened into a [`Run`].

use crate::report::{KernelInfo, QemuInfo, Run};
use crate::session::{self, GuestConfig};
use crate::{accel, artefacts, device, stages};
use anyhow::{Context, Result};
use device_emu::layout::BarLayout;
use std::path::{Path, PathBuf};
use std::time::Duration;
use vm_images::debian::Suite;
use vm_images::{busybox, initramfs, kernel, qemu, Cache, Fetcher};

/// What the user asked for.
#[derive(Debug, Clone)]
pub struct Plan {
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
    /// Whole-boot time limit.
    pub timeout: Duration,
    /// Longest silence (no console or KTAP line) before the guest is stopped.
    pub idle_timeout: Duration,
    /// Echo the console.
    pub echo_console: bool,
    /// Extra arguments for the guest test binary.
    pub guest_args: Vec<String>,
    /// Extra kernel command line.
    pub append: String,
    /// Extra QEMU arguments.
    pub qemu_args: Vec<String>,
    /// Print the QEMU and kernel command lines and the initramfs, do not boot.
    pub dry_run: bool,
    /// Keep the run directory.
    pub keep: bool,
}

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

/// Runs everything for one kernel and returns the run's record (`None` for a
/// dry run, which prints what it would boot instead).
pub fn boot_and_test(root: &Path, plan: &Plan, out: &Path) -> Result<Option<Run>> {
    let cache = Cache::new(plan.cache.clone());
    let fetcher = Fetcher::new(&cache);
    let built = stages::run(
        "build",
        |_| artefacts::build(root),
        |_| "device-emu, guest-tests".into(),
    )?;
    let qemu = stages::run(
        "qemu",
        |_| qemu::obtain(&fetcher, plan.qemu.as_deref()).context("obtaining QEMU"),
        |q| format!("QEMU {} ({})", q.version, q.binary.display()),
    )?;
    let spec: kernel::KernelSpec = plan.kernel_spec.parse().context("--kernel")?;
    let kern = stages::run(
        "kernel",
        |_| kernel::obtain(&fetcher, &spec).context("obtaining the kernel"),
        |k| format!("{} ({})", k.release, k.image.display()),
    )?;
    let bb = stages::run(
        "busybox",
        |_| busybox::obtain(&fetcher, &Suite::sid()).context("obtaining busybox"),
        |b| format!("busybox-static {}", b.package_version),
    )?;
    let accel = stages::run(
        "accelerator",
        |_| {
            let version = qemu.version.to_string();
            accel::choose(
                &plan.accel,
                || qemu.command(),
                &version,
                &kern.image,
                &plan.cache,
            )
        },
        |c| format!("{} ({})", c.accel, c.reason),
    )?;
    let run_dir = tempfile::Builder::new()
        .prefix("bigbar-run-")
        .tempdir()
        .context("creating the private run directory")?;
    let initrd = run_dir.path().join("initramfs.cpio");
    let spec_rd = initramfs::InitramfsSpec {
        busybox: bb.binary,
        guest_tests: built.guest_tests.clone(),
        modules: kern.modules.clone(),
        test_args: [
            vec!["--bars".into(), plan.layout.to_string()],
            plan.guest_args.clone(),
        ]
        .concat(),
        shell: false,
    };
    stages::run(
        "initramfs",
        |_| initramfs::build(&spec_rd, &initrd).context("building the initramfs"),
        |_| initrd.display().to_string(),
    )?;
    let hole = pci_hole64(&plan.layout);
    let socket = run_dir.path().join("device.sock");
    let cfg = GuestConfig {
        kernel: kern.image.clone(),
        initramfs: initrd,
        append: plan.append.clone(),
        accel: accel.accel.clone(),
        iommu: true,
        pci_hole64: hole,
        phys_bits: phys_bits(hole),
        device_socket: socket.clone(),
        memory_mib: plan.memory_mib,
        timeout: plan.timeout,
        idle_timeout: plan.idle_timeout,
        echo_console: plan.echo_console,
        extra_qemu_args: plan.qemu_args.clone(),
    };
    if plan.dry_run {
        print_dry_run(&cfg, qemu.command(), run_dir.path())?;
        return Ok(None);
    }
    let (tx, rx) = session::event_channel()?;
    let dev = stages::run(
        "device",
        |_| {
            device::start(
                &built.device_emu,
                &socket,
                &plan.layout.to_string(),
                &out.join("device-emu.log"),
                tx.clone(),
            )
        },
        |_| format!("bars {}", plan.layout),
    )?;
    let result = stages::run(
        "boot and tests",
        |_| session::run(&cfg, qemu.command(), out, run_dir.path(), (tx, &rx)),
        |r| {
            format!(
                "{} results, {:.1} s guest wall time",
                r.tests.len(),
                r.guest_seconds
            )
        },
    )?;
    dev.stop();
    let kept = plan.keep.then(|| run_dir.keep());
    if result.outcome != crate::report::Outcome::Completed {
        eprintln!("bigbar: last console lines:\n{}", result.console_tail);
    }
    if let Some(dir) = &kept {
        eprintln!(
            "bigbar: kept run directory {} (device socket {})",
            dir.display(),
            socket.display()
        );
    }
    Ok(Some(Run {
        kernel: KernelInfo {
            spec: plan.kernel_spec.clone(),
            release: Some(kern.release.clone()),
            package_version: Some(kern.package_version.clone()),
        },
        qemu: QemuInfo {
            version: qemu.version.to_string(),
            path: qemu.binary.display().to_string(),
        },
        accel: accel.accel,
        accel_reason: accel.reason,
        bars: plan.layout.to_string(),
        outcome: result.outcome,
        guest_seconds: result.guest_seconds,
        tests: result.tests,
        kernel_reports: result.kernel_reports,
        run_dir: kept.map(|d| d.display().to_string()),
    }))
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
    use rstest::rstest;

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
