//! Boots a (cached) Debian kernel with a given guest program and shows both serial
//! streams: a manual check of the whole chain (fetch, initramfs, QEMU, modules, ttyS1).
//!
//! `cargo run -p vm-images --example boot -- GUEST_PROGRAM [--no-iommu] [--kernel SPEC] [--cache DIR] [--out DIR]`

use std::path::PathBuf;
use std::time::Instant;

use anyhow::{bail, Context, Result};
use vm_images::launch::{Accel, QemuArgs, SerialSink};
use vm_images::{busybox, debian::Suite, initramfs, kernel, qemu, Cache, Fetcher, InitramfsSpec};

fn main() -> Result<()> {
    let mut guest: Option<PathBuf> = None;
    let mut iommu = true;
    let mut cache_dir: Option<PathBuf> = None;
    let mut out: Option<PathBuf> = None;
    let mut spec: vm_images::KernelSpec = "debian:sid".parse()?;
    let mut args = std::env::args().skip(1);
    while let Some(arg) = args.next() {
        match arg.as_str() {
            "--no-iommu" => iommu = false,
            "--cache" => cache_dir = Some(args.next().context("--cache needs a directory")?.into()),
            "--kernel" => spec = args.next().context("--kernel needs a spec")?.parse()?,
            "--out" => out = Some(args.next().context("--out needs a directory")?.into()),
            _ if guest.is_none() => guest = Some(arg.into()),
            other => bail!("unexpected argument {other}"),
        }
    }
    let guest = guest.context(
        "usage: boot GUEST_PROGRAM [--no-iommu] [--kernel SPEC] [--cache DIR] [--out DIR]",
    )?;
    let cache = match cache_dir {
        Some(dir) => Cache::new(dir),
        None => Cache::user()?,
    };
    let progress = |m: &str| eprintln!("  .. {m}");
    let fetcher = Fetcher::new(&cache).progress(&progress);
    let q = qemu::obtain(&fetcher, None)?;
    let k = kernel::obtain(&fetcher, &spec)?;
    let b = busybox::obtain(&fetcher, &Suite::sid())?;

    let tmp = tempfile::tempdir()?;
    let work = out.unwrap_or_else(|| tmp.path().to_owned());
    std::fs::create_dir_all(&work)?;
    let initrd = work.join("initramfs.cpio");
    initramfs::build(
        &InitramfsSpec {
            busybox: b.binary,
            guest_tests: guest,
            modules: k.modules.clone(),
            test_args: vec!["--demo".into(), "two words".into()],
            shell: false,
            kselftests: Vec::new(),
        },
        &initrd,
    )?;
    let console = work.join("console.log");
    let ktap = work.join("ktap.log");
    // The same builder as the runner's boots, with files for the serial ports
    // and no device.
    let args = QemuArgs {
        iommu,
        initramfs: Some(initrd.clone()),
        ktap: Some(SerialSink::File(ktap.clone())),
        ..QemuArgs::new(
            Accel::Tcg,
            k.boot_image(),
            SerialSink::File(console.clone()),
        )
    };
    let mut cmd = q.command();
    cmd.args(args.args());
    println!("command: {cmd:?}");
    let t = Instant::now();
    let status = cmd.status()?;
    println!("qemu exited {status} after {:.2?}", t.elapsed());
    let console = std::fs::read_to_string(&console)?;
    for line in console.lines().filter(|l| {
        l.contains("bigbar-init")
            || l.contains("guest-demo")
            || l.contains("DMAR") && l.contains("IOMMU")
            || l.contains("vfio")
            || l.contains("Run /init")
    }) {
        println!("console| {line}");
    }
    println!("console: {} lines", console.lines().count());
    print!(
        "{}",
        std::fs::read_to_string(&ktap)?
            .lines()
            .map(|l| format!("ktap| {l}\n"))
            .collect::<String>()
    );
    Ok(())
}
