//! `runner`: builds bigbar, boots a guest with the emulated large-BAR device,
//! collects the KTAP results of the guest tests and reports them.

mod accel;
mod artefacts;
mod console;
mod device;
mod ktap;
mod machine;
mod process;
mod report;
mod session;
mod stages;

use anyhow::{Context, Result};
use clap::Parser;
use report::{Outcome, Results, Tally};
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::Duration;

/// Exit status: every test passed (or was skipped / expectedly failed).
const EXIT_OK: u8 = 0;
/// Exit status: at least one test failed.
const EXIT_TEST_FAILED: u8 = 1;
/// Exit status: the kernel oopsed or panicked during the run.
const EXIT_KERNEL_CRASHED: u8 = 3;
/// Exit status: the guest did not finish within `--timeout`.
const EXIT_TIMEOUT: u8 = 4;
/// Exit status: the kernel could not be tested at all (fetch or build failed,
/// QEMU or device-emu died, interrupted). `git bisect run` skips such commits.
const EXIT_NOT_TESTED: u8 = 125;

const EXIT_HELP: &str = "\
Exit status:
  0    every test passed, was skipped, or failed as expected
  1    at least one test failed
  2    usage error
  3    the kernel oopsed or panicked (the report is printed and in results.json)
  4    the guest did not finish within --timeout
  125  the kernel could not be tested (fetch/build failed, QEMU or device-emu died,
       interrupted); `git bisect run` treats this as 'skip'";

/// Boot a Linux guest with bigbar's emulated large-BAR device and run the guest tests.
#[derive(Parser, Debug)]
#[command(version, after_help = EXIT_HELP)]
struct Cli {
    /// Kernel to boot: `debian:sid`, `debian:trixie` or `debian:bookworm`.
    #[arg(long, default_value = "debian:sid")]
    kernel: String,
    /// QEMU binary (>= 10.1 with vfio-user-pci); default: PATH, else Debian sid's build.
    #[arg(long)]
    qemu: Option<PathBuf>,
    /// Output directory (default: a new directory under target/bigbar-runs).
    #[arg(long)]
    out: Option<PathBuf>,
    /// Whole-boot time limit in seconds.
    #[arg(long, default_value_t = 600)]
    timeout: u64,
    /// Cache of fetched QEMU, kernels and packages (default target/bigbar-cache,
    /// or $BIGBAR_CACHE).
    #[arg(long)]
    cache: Option<PathBuf>,
    /// BAR layout of the emulated device (device-emu's --bars syntax).
    #[arg(long, default_value_t = device_emu::layout::BarLayout::default().to_string())]
    bars: String,
    /// Accelerator: `auto` (KVM if a probe boot shows it works, else TCG), `tcg` or `kvm`.
    #[arg(long, default_value = "auto", value_parser = ["auto", "tcg", "kvm"])]
    accel: String,
    /// Guest memory in MiB.
    #[arg(long, default_value_t = 1024)]
    memory: u32,
    /// Run only the guest tests whose name matches GLOB (`*` wildcards; repeatable).
    #[arg(long, value_name = "GLOB")]
    filter: Vec<String>,
    /// Pass ARG through to the guest test binary (repeatable), e.g.
    /// `--guest-arg=--seed=42`.
    #[arg(long, value_name = "ARG", allow_hyphen_values = true)]
    guest_arg: Vec<String>,
    /// Extra kernel command line arguments.
    #[arg(long, default_value = "")]
    append: String,
    /// Echo the guest's kernel console to stderr while it runs.
    #[arg(long, short)]
    verbose: bool,
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    match run(&cli) {
        Ok(code) => ExitCode::from(code),
        Err(e) => {
            eprintln!("bigbar: error: {e:#}");
            ExitCode::from(EXIT_NOT_TESTED)
        }
    }
}

/// The workspace root, for building and for the default cache and output dirs.
fn workspace_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("runner lives in a workspace")
        .to_path_buf()
}

/// Picks and creates the output directory.
fn out_dir(cli: &Cli, target: &Path) -> Result<PathBuf> {
    let dir = match &cli.out {
        Some(d) => d.clone(),
        None => {
            let stamp = std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map(|d| d.as_secs())
                .unwrap_or(0);
            target
                .join("bigbar-runs")
                .join(format!("{stamp}-{}", std::process::id()))
        }
    };
    std::fs::create_dir_all(&dir).with_context(|| format!("creating {}", dir.display()))?;
    Ok(dir)
}

fn run(cli: &Cli) -> Result<u8> {
    let layout: device_emu::layout::BarLayout = cli
        .bars
        .parse()
        .map_err(|e| anyhow::anyhow!("--bars {}: {e}", cli.bars))?;
    let root = workspace_root();
    let target = std::env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| root.join("target"));
    let out = out_dir(cli, &target)?;
    let cache_root = cli
        .cache
        .clone()
        .or_else(|| std::env::var_os("BIGBAR_CACHE").map(PathBuf::from))
        .unwrap_or_else(|| target.join("bigbar-cache"));
    let plan = machine::Plan {
        kernel_spec: cli.kernel.clone(),
        qemu: cli.qemu.clone(),
        cache: cache_root,
        layout,
        accel: cli.accel.clone(),
        memory_mib: cli.memory,
        timeout: Duration::from_secs(cli.timeout),
        echo_console: cli.verbose,
        guest_args: guest_args(cli),
        append: cli.append.clone(),
    };
    let run = machine::boot_and_test(&root, &plan, &out)?;
    eprintln!();
    print!("{}", report::table(&run));
    for r in &run.kernel_reports {
        eprintln!(
            "kernel {:?} during {}:\n{}",
            r.kind,
            r.during_test.as_deref().unwrap_or("boot"),
            r.text
        );
    }
    let tally = Tally::of(&run.tests);
    let code = exit_code(&run.outcome, &tally);
    if let Outcome::KernelCrashed(why) | Outcome::TimedOut(why) | Outcome::Infrastructure(why) =
        &run.outcome
    {
        eprintln!("bigbar: the run did not complete: {why}");
    }
    let results = Results { runs: vec![run] };
    results.write(&out)?;
    eprintln!("bigbar: results in {}", out.display());
    println!("{}", tally.summary_line());
    Ok(code)
}

/// The guest test binary's arguments for `--filter` and `--guest-arg`.
fn guest_args(cli: &Cli) -> Vec<String> {
    let mut args = Vec::new();
    for f in &cli.filter {
        args.extend(["--filter".to_string(), f.clone()]);
    }
    args.extend(cli.guest_arg.iter().cloned());
    args
}

/// Maps how the run ended and what the tests said to the exit status.
fn exit_code(outcome: &Outcome, tally: &Tally) -> u8 {
    match outcome {
        Outcome::KernelCrashed(_) => EXIT_KERNEL_CRASHED,
        Outcome::TimedOut(_) => EXIT_TIMEOUT,
        Outcome::Infrastructure(_) => EXIT_NOT_TESTED,
        Outcome::Completed if tally.failed > 0 => EXIT_TEST_FAILED,
        Outcome::Completed if tally.passed + tally.skipped + tally.xfailed == 0 => EXIT_NOT_TESTED,
        Outcome::Completed => EXIT_OK,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn exit_codes() {
        let ok = Tally {
            passed: 5,
            ..Default::default()
        };
        let failed = Tally {
            passed: 4,
            failed: 1,
            ..Default::default()
        };
        assert_eq!(exit_code(&Outcome::Completed, &ok), EXIT_OK);
        assert_eq!(exit_code(&Outcome::Completed, &failed), EXIT_TEST_FAILED);
        assert_eq!(
            exit_code(&Outcome::Completed, &Tally::default()),
            EXIT_NOT_TESTED
        );
        assert_eq!(
            exit_code(&Outcome::KernelCrashed("x".into()), &ok),
            EXIT_KERNEL_CRASHED
        );
        assert_eq!(exit_code(&Outcome::TimedOut("x".into()), &ok), EXIT_TIMEOUT);
        assert_eq!(
            exit_code(&Outcome::Infrastructure("x".into()), &ok),
            EXIT_NOT_TESTED
        );
    }
}
