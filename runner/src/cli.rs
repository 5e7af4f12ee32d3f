//! The runner's command line.

use clap::{Args, Parser, Subcommand};
use std::path::PathBuf;

/// Exit status: every test passed (or was skipped / expectedly failed).
pub const EXIT_OK: u8 = 0;
/// Exit status: at least one test failed.
pub const EXIT_TEST_FAILED: u8 = 1;
/// Exit status: the command line cannot work (clap's own status for usage errors).
pub const EXIT_USAGE: u8 = 2;
/// Exit status: the kernel oopsed or panicked during the run.
pub const EXIT_KERNEL_CRASHED: u8 = 3;
/// Exit status: the guest did not finish within the time limits.
pub const EXIT_TIMEOUT: u8 = 4;
/// Exit status: the kernel could not be tested at all (fetch or build failed,
/// QEMU or device-emu died, interrupted). `git bisect run` skips such commits.
pub const EXIT_NOT_TESTED: u8 = 125;

const EXIT_HELP: &str = "\
Exit status:
  0    every test passed, was skipped, or failed as expected
  1    at least one test failed
  2    usage error
  3    the kernel oopsed or panicked (the report is printed and in results.json)
  4    the guest did not finish within --timeout / --idle-timeout
  125  the kernel could not be tested (fetch/build failed, QEMU or device-emu died,
       interrupted); `git bisect run` treats this as 'skip'";

/// Boot a Linux guest with bigbar's emulated large-BAR device and run the guest tests.
#[derive(Parser, Debug)]
#[command(version, after_help = EXIT_HELP, args_conflicts_with_subcommands = true)]
pub struct Cli {
    /// What to do; without a subcommand, boot and run the tests.
    #[command(subcommand)]
    pub command: Option<Command>,
    /// Options of a test run.
    #[command(flatten)]
    pub run: RunArgs,
}

/// Subcommands besides the default run.
#[derive(Subcommand, Debug)]
pub enum Command {
    /// Re-read a saved run (an --out directory, a results.ktap, or a console log
    /// with KTAP in it) and print the same table and exit status as the live run.
    Parse {
        /// The directory or file to read.
        path: PathBuf,
        /// Also write a JUnit XML report.
        #[arg(long, value_name = "FILE")]
        junit: Option<PathBuf>,
    },
    /// Write the guest-tests binary in the kselftest install layout (for
    /// run_kselftest.sh, LAVA, KernelCI or tuxrun jobs on real hardware).
    ExportKselftest {
        /// Installation directory (created).
        dir: PathBuf,
    },
    /// Measure runs (stages, cold and warm, per kernel), in-guest fault cost per
    /// mapping order, device-emu memory and register round trips; write
    /// bench.json and bench.md.
    Bench(crate::bench::BenchArgs),
}

/// Options of a test run.
#[derive(Args, Debug, Clone)]
pub struct RunArgs {
    /// Kernel to boot: `debian:sid`, `debian:trixie`, `debian:bookworm`, `stock`,
    /// `reference`, `fixed`, a bzImage, or a kernel build directory. Repeat it, or say
    /// `all`, for a matrix run (one kernel after another).
    #[arg(long, default_value = "debian:sid")]
    pub kernel: Vec<String>,
    /// QEMU binary (>= 10.1 with vfio-user-pci); default: PATH, else Debian sid's build.
    #[arg(long)]
    pub qemu: Option<PathBuf>,
    /// Output directory (default: a new directory under target/bigbar-runs).
    #[arg(long)]
    pub out: Option<PathBuf>,
    /// Time limit in seconds for all boots of a run together (a run boots again
    /// after a guest dies); per kernel in a matrix.
    #[arg(long, default_value_t = 900)]
    pub timeout: u64,
    /// Stop the guest when it prints nothing (console or KTAP) for this many seconds
    /// (at least 120 s before its first line: a kernel decompresses silently).
    #[arg(long, default_value_t = 180)]
    pub idle_timeout: u64,
    /// Cache of fetched QEMU, kernels and packages (default target/bigbar-cache,
    /// or $BIGBAR_CACHE).
    #[arg(long)]
    pub cache: Option<PathBuf>,
    /// BAR layout of the emulated device (device-emu's --bars syntax), e.g.
    /// `1=64M:32:msix@2M,2=16G,4=1G`.
    #[arg(long, default_value_t = device_emu::layout::BarLayout::default().to_string())]
    pub bars: String,
    /// Accelerator: `auto` (KVM if a probe boot shows it works, else TCG), `tcg` or `kvm`.
    #[arg(long, default_value = "auto", value_parser = ["auto", "tcg", "kvm"])]
    pub accel: String,
    /// Guest memory in MiB.
    #[arg(long, default_value_t = 1024)]
    pub memory: u32,
    /// Run only the guest tests whose name matches GLOB (`*` wildcards; repeatable).
    #[arg(long, value_name = "GLOB")]
    pub filter: Vec<String>,
    /// Pass ARG through to the guest test binary (repeatable), e.g.
    /// `--guest-arg=--require-placement`.
    #[arg(long, value_name = "ARG", allow_hyphen_values = true)]
    pub guest_arg: Vec<String>,
    /// Extra kernel command line arguments.
    #[arg(long, default_value = "")]
    pub append: String,
    /// Extra QEMU argument (repeatable), passed through as is.
    #[arg(long, value_name = "ARG", allow_hyphen_values = true)]
    pub qemu_arg: Vec<String>,
    /// Also run bigbar's kernel reproducers (kernel/selftests/vfio) in the guest,
    /// each case as a `repro.<program>.<case>` test, in a guest of their own
    /// after the catalogue. They are compiled with the host's `cc -static`
    /// against the kernel source the project builds from (Debian sid's
    /// linux-source, fetched into the cache once).
    #[arg(long)]
    pub reproducers: bool,
    /// Which tests to run: `bigbar` (the catalogue), `vfio-selftests` (the
    /// kernel's tools/testing/selftests/vfio, built statically from the source
    /// of the kernel under test, each case as `vfio-selftests.<program>.<case>`,
    /// in a guest of their own), or `all`.
    #[arg(long, value_enum, default_value_t = crate::suite::Suite::Bigbar)]
    pub suite: crate::suite::Suite,
    /// List the guest tests (after --filter) without booting.
    #[arg(long)]
    pub list: bool,
    /// Print the QEMU command line, the kernel command line and the initramfs
    /// contents, without booting.
    #[arg(long)]
    pub dry_run: bool,
    /// Boot into a shell on this terminal (device bound to vfio-pci, the test
    /// binary at /bin/guest-tests) instead of running the tests.
    #[arg(long)]
    pub shell: bool,
    /// Start QEMU's gdb stub on a socket in the run directory, boot with
    /// `nokaslr`, disable the time limits and print how to attach.
    #[arg(long)]
    pub gdb: bool,
    /// Keep the run directory (sockets, initramfs) and name it in the report.
    #[arg(long)]
    pub keep: bool,
    /// Also write a JUnit XML report (one test case per KTAP result).
    #[arg(long, value_name = "FILE")]
    pub junit: Option<PathBuf>,
    /// Echo the guest's kernel console to stderr while it runs.
    #[arg(long, short)]
    pub verbose: bool,
}

/// The kernels `--kernel all` stands for.
pub const ALL_KERNELS: [&str; 6] = [
    "debian:bookworm",
    "debian:trixie",
    "debian:sid",
    "stock",
    "reference",
    "fixed",
];

impl RunArgs {
    /// The `--kernel` values with `all` expanded, duplicates removed, in order.
    pub fn kernels(&self) -> Vec<String> {
        let mut out: Vec<String> = Vec::new();
        for k in &self.kernel {
            let expanded: Vec<String> = if k == "all" {
                ALL_KERNELS.iter().map(|s| s.to_string()).collect()
            } else {
                vec![k.clone()]
            };
            for e in expanded {
                if !out.contains(&e) {
                    out.push(e);
                }
            }
        }
        out
    }

    /// The guest test binary's arguments for `--filter` and `--guest-arg`.
    pub fn guest_args(&self) -> Vec<String> {
        let mut args = Vec::new();
        for f in &self.filter {
            args.extend(["--filter".to_string(), f.clone()]);
        }
        args.extend(self.guest_arg.iter().cloned());
        args
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(args: &[&str]) -> Cli {
        Cli::try_parse_from(std::iter::once("runner").chain(args.iter().copied())).unwrap()
    }

    #[test]
    fn run_is_the_default() {
        let c = parse(&[
            "--kernel",
            "debian:trixie",
            "--filter",
            "a*",
            "--filter",
            "f1.*",
        ]);
        assert!(c.command.is_none());
        assert_eq!(c.run.kernels(), ["debian:trixie"]);
        assert_eq!(c.run.guest_args(), ["--filter", "a*", "--filter", "f1.*"]);
    }

    #[test]
    fn pass_through_arguments_may_look_like_options() {
        let c = parse(&["--guest-arg", "--require-placement", "--qemu-arg", "-s"]);
        assert_eq!(c.run.guest_args(), ["--require-placement"]);
        assert_eq!(c.run.qemu_arg, ["-s"]);
    }

    #[test]
    fn all_expands_to_the_matrix() {
        let c = parse(&["--kernel", "stock", "--kernel", "all"]);
        assert_eq!(
            c.run.kernels(),
            [
                "stock",
                "debian:bookworm",
                "debian:trixie",
                "debian:sid",
                "reference",
                "fixed"
            ]
        );
        assert_eq!(parse(&[]).run.kernels(), ["debian:sid"]);
    }

    #[test]
    fn subcommands() {
        let c = parse(&["parse", "/tmp/x", "--junit", "/tmp/j.xml"]);
        assert!(matches!(c.command, Some(Command::Parse { .. })));
        let c = parse(&["export-kselftest", "/tmp/k"]);
        assert!(matches!(c.command, Some(Command::ExportKselftest { .. })));
    }

    #[test]
    fn bad_accelerator_is_a_usage_error() {
        let e = Cli::try_parse_from(["runner", "--accel", "hvf"]).unwrap_err();
        assert_eq!(e.exit_code(), 2);
    }
}
