//! Fetches (or finds in the cache) QEMU, a kernel and busybox, and prints what it got.
//!
//! `cargo run -p vm-images --example fetch -- [--cache DIR] [--kernel debian:sid] [--refresh]`

use std::path::{Path, PathBuf};
use std::time::Instant;

use anyhow::{bail, Context, Result};
use vm_images::{busybox, debian::Suite, kernel, qemu, Cache, Fetcher, KernelSpec, Refresh};

fn main() -> Result<()> {
    let mut cache_dir: Option<PathBuf> = None;
    let mut spec: KernelSpec = "debian:sid".parse()?;
    let mut refresh = Refresh::IfMissing;
    let mut args = std::env::args().skip(1);
    while let Some(arg) = args.next() {
        match arg.as_str() {
            "--cache" => cache_dir = Some(args.next().context("--cache needs a directory")?.into()),
            "--kernel" => spec = args.next().context("--kernel needs a spec")?.parse()?,
            "--refresh" => refresh = Refresh::Always,
            other => bail!("unknown argument {other}"),
        }
    }
    let cache = match cache_dir {
        Some(dir) => Cache::new(dir),
        None => Cache::user()?,
    };
    let progress = |m: &str| eprintln!("  .. {m}");
    let fetcher = Fetcher::new(&cache).refresh(refresh).progress(&progress);

    let t = Instant::now();
    let q = qemu::obtain(&fetcher, None)?;
    println!("qemu {} {:?} in {:.1?}", q.version, q.origin, t.elapsed());
    println!("  command: {:?}", q.command());
    if let Some(prefix) = q
        .binary
        .parent()
        .and_then(Path::parent)
        .and_then(Path::parent)
    {
        println!("  tree {} : {}", prefix.display(), du(prefix));
    }

    let t = Instant::now();
    let k = kernel::obtain(&fetcher, &spec)?;
    println!(
        "kernel {} release {} package {} in {:.1?}",
        k.spec,
        k.release,
        k.package_version,
        t.elapsed()
    );
    println!("  image {} ({})", k.image.display(), du(&k.image));
    println!("  config {:?}", k.config);
    for m in &k.modules {
        println!("  module {}", m.display());
    }

    let t = Instant::now();
    let b = busybox::obtain(&fetcher, &Suite::sid())?;
    println!(
        "busybox {} {} ({}) in {:.1?}",
        b.package_version,
        b.binary.display(),
        du(&b.binary),
        t.elapsed()
    );
    println!("cache {} : {}", cache.root().display(), du(cache.root()));
    Ok(())
}

/// Disk usage as `du -sh` prints it.
fn du(path: &Path) -> String {
    std::process::Command::new("du")
        .arg("-sh")
        .arg(path)
        .output()
        .ok()
        .and_then(|o| String::from_utf8(o.stdout).ok())
        .and_then(|s| s.split_whitespace().next().map(str::to_owned))
        .unwrap_or_else(|| "?".into())
}
