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
/// Exit status of `--repeat N`: some test's verdict (or the run's outcome)
/// varied between repetitions.
pub const EXIT_FLAKY: u8 = 5;

const EXIT_HELP: &str = "\
Exit status:
  0    every test passed, was skipped, or failed as expected
  1    at least one test failed
  2    usage error
  3    the kernel oopsed or panicked (the report is printed and in results.json)
  4    the guest did not finish within --timeout / --idle-timeout, or hung in a
       test (no heartbeat for --progress-timeout)
  5    with --repeat: a test's verdict varied between repetitions (flaky)
  125  the kernel could not be tested (fetch/build failed, QEMU or device-emu died,
       interrupted); `git bisect run` treats this as 'skip'

With --baseline, 1 means a failure the baseline does not expect (or, with
--fixed-is fail, a known failure that now passes) and 3 a crash it does not
expect; known failures and known crashes leave 0.
`runner compare A B`: 0 no regression, 1 a regression, 2 bad input.";

/// Boot a Linux guest with bigbar's emulated large-BAR device and run the guest tests.
#[derive(Parser, Debug)]
#[command(name = "bigbar", version, after_help = EXIT_HELP, args_conflicts_with_subcommands = true)]
pub struct Cli {
    /// What to do; without a subcommand, boot and run the tests.
    #[command(subcommand)]
    pub command: Option<Command>,
    /// Options of a test run.
    #[command(flatten)]
    pub run: RunArgs,
}

/// The least guest memory a run accepts. Linux turns transparent hugepages
/// off by default when it has less than 512 MiB of RAM (`hugepage_init` in
/// mm/huge_memory.c), and then every huge-fault test skips; with `-m 576` a
/// debian:sid guest had less than that left after the kernel's own
/// reservations (its `fault_order.*` skipped), with `-m 640` they ran.
pub const MIN_MEMORY_MIB: u32 = 640;

/// `--memory`'s parser: a number of MiB, no less than [`MIN_MEMORY_MIB`].
fn memory_mib(text: &str) -> Result<u32, String> {
    let mib: u32 = text
        .parse()
        .map_err(|_| format!("`{text}` is not a number of MiB"))?;
    if mib < MIN_MEMORY_MIB {
        return Err(format!(
            "{mib} MiB is below the {MIN_MEMORY_MIB} MiB a guest needs: Linux turns \
             transparent hugepages off with less than 512 MiB of RAM, and the huge-fault \
             tests would all skip"
        ));
    }
    Ok(mib)
}

/// Subcommands besides the default run.
#[derive(Subcommand, Debug)]
pub enum Command {
    /// Re-read a saved run (an --out directory, a results.ktap, or a console log
    /// with KTAP in it) and print the same table and exit status as the live run.
    Parse {
        /// The directory or file to read (a directory also gets its
        /// `report.html` rewritten from what this parse judged).
        path: PathBuf,
        /// Also write a JUnit XML report.
        #[arg(long, value_name = "FILE")]
        junit: Option<PathBuf>,
        /// Judge the verdicts against a baseline, as the run's --baseline does.
        #[arg(long, value_name = "FILE")]
        baseline: Option<PathBuf>,
        /// With --baseline: `ok` or `fail` for a known failure that now passes.
        #[arg(long, value_enum, default_value_t = crate::baseline::FixedIs::Ok)]
        fixed_is: crate::baseline::FixedIs,
    },
    /// Write the guest-tests binary in the kselftest install layout (for
    /// run_kselftest.sh, LAVA, KernelCI or tuxrun jobs on real hardware).
    ExportKselftest {
        /// Installation directory (created).
        dir: PathBuf,
        /// Install the kernel's own run_kselftest.sh and kselftest/ helpers
        /// (from the cached linux-source, fetched if missing) instead of
        /// bigbar's small run script.
        #[arg(long)]
        kernel_runner: bool,
    },
    /// Measure runs (stages, cold and warm, per kernel), in-guest fault cost per
    /// mapping order, device-emu memory and register round trips; write
    /// bench.json and bench.md.
    Bench(crate::bench::BenchArgs),
    /// Compare two saved runs (results.json files or --out directories, of one
    /// kernel or a matrix): regressions, fixes, still failing, new and removed
    /// tests, changed diagnostics. Markdown on stdout; exit 1 on a regression.
    Compare(CompareArgs),
    /// Show and manage the artefact store shared by every clone and the
    /// installed bigbar: list, du, gc --max-size SIZE, clean.
    Cache(crate::store::CacheArgs),
}

/// Arguments of `runner compare`.
#[derive(Args, Debug, Clone)]
pub struct CompareArgs {
    /// The baseline (the older run): a results.json or an --out directory.
    pub a: PathBuf,
    /// The run judged against it (the newer run).
    pub b: PathBuf,
    /// Write the Markdown report to FILE instead of stdout.
    #[arg(long, value_name = "FILE")]
    pub markdown: Option<PathBuf>,
    /// Also write the comparison as JSON.
    #[arg(long, value_name = "FILE")]
    pub json: Option<PathBuf>,
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
    /// Output directory [default: a new directory under target/bigbar-runs when
    /// run inside the bigbar workspace, else under $XDG_STATE_HOME/bigbar/runs
    /// or ~/.local/state/bigbar/runs].
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
    /// Take the guest for hung when, while a test runs, its test binary writes
    /// nothing on the KTAP port (it beats every 2 s) for this many seconds; the
    /// test fails and the rest run in a fresh guest. At least 10 (five beats).
    #[arg(long, default_value_t = 30, value_parser = clap::value_parser!(u64).range(10..))]
    pub progress_timeout: u64,
    /// The artefact store of fetched QEMU, kernels and packages and of built
    /// kernels, shared by every clone and the installed bigbar
    /// [default: $XDG_CACHE_HOME/bigbar, else ~/.cache/bigbar].
    #[arg(long, env = vm_images::cache::CACHE_ENV)]
    pub cache: Option<PathBuf>,
    /// Warn after a run when the store holds more than SIZE (K, M, G or T).
    #[arg(long, env = crate::store::WARN_ENV, value_name = "SIZE",
          default_value = "20G", value_parser = crate::store::size_arg)]
    pub cache_warn_size: u64,
    /// BAR layout of the emulated device (device-emu's --bars syntax), e.g.
    /// `1=64M:32:msix@2M,2=16G,4=1G`.
    #[arg(long, default_value_t = protocol::layout::BarLayout::default().to_string())]
    pub bars: String,
    /// Accelerator: `auto` (KVM if a probe boot shows it works, else TCG), `tcg` or `kvm`.
    #[arg(long, default_value = "auto", value_parser = ["auto", "tcg", "kvm"])]
    pub accel: String,
    /// Guest vCPUs (multi-threaded under TCG): the race tests need two and
    /// skip, saying so, with one.
    #[arg(long, default_value_t = 2, value_parser = clap::value_parser!(u32).range(1..=64))]
    pub smp: u32,
    /// Guest memory in MiB (at least 640: see [`MIN_MEMORY_MIB`]).
    #[arg(long, default_value_t = 1024, value_parser = memory_mib)]
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
    /// Boot the first kernel with an init that powers off at once, on the same
    /// machine and device as a run, and test nothing: the floor `runner bench`
    /// compares a run with.
    #[arg(long, hide = true, conflicts_with_all = ["shell", "dry_run", "gdb"])]
    pub bare_boot: bool,
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
    /// Judge the verdicts against FILE: a saved results.json (or --out
    /// directory) or an expectations file (TOML, see expectations/debian.toml).
    /// Known failures and known crashes no longer fail the exit status; new
    /// failures do.
    #[arg(long, value_name = "FILE")]
    pub baseline: Option<PathBuf>,
    /// What a known failure that now passes does to the exit status with
    /// --baseline: `ok` (exit 0, printed loudly) or `fail` (exit 1, as does any
    /// verdict the baseline does not name: the baseline is kept exact).
    #[arg(long, value_enum, default_value_t = crate::baseline::FixedIs::Ok)]
    pub fixed_is: crate::baseline::FixedIs,
    /// Run the selection N times, each in fresh guests, and report per test how
    /// often each verdict occurred; a varying verdict exits 5. Repetition K is
    /// saved in OUT/repK/ (a complete --out directory).
    #[arg(long, value_name = "N", default_value_t = 1, value_parser = clap::value_parser!(u32).range(1..=1000))]
    pub repeat: u32,
    /// Kernels of a matrix to run at once, each with its own device-emu, QEMU and
    /// run directory; results stay in --kernel order. Default: one per core,
    /// at most one per 2 GiB of memory.
    #[arg(long, short = 'j', value_name = "N", value_parser = clap::value_parser!(u32).range(1..=64))]
    pub jobs: Option<u32>,
    /// Echo the guest's kernel console to stderr while it runs.
    #[arg(long, short)]
    pub verbose: bool,
    /// How the guest tests open the device: `group` (/dev/vfio/<group> in
    /// the type1 container), `cdev` (/dev/vfio/devices/vfioN bound to an
    /// iommufd IOAS; on a kernel without CONFIG_IOMMUFD or
    /// CONFIG_VFIO_DEVICE_CDEV every device test skips, naming the option) or
    /// `both`: every kernel twice, the cdev run labelled `<kernel> (cdev)`.
    #[arg(long, value_enum, default_value_t = VfioApiChoice::Group)]
    pub vfio_api: VfioApiChoice,
}

/// What `--vfio-api` asks for.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, clap::ValueEnum)]
pub enum VfioApiChoice {
    /// The group/container interface only.
    #[default]
    Group,
    /// The cdev/iommufd interface only.
    Cdev,
    /// Each kernel through both.
    Both,
}

pub use protocol::vfio_api::VfioApi;

impl VfioApiChoice {
    /// The interfaces each kernel runs with, in order.
    pub fn apis(self) -> &'static [VfioApi] {
        match self {
            VfioApiChoice::Group => &[VfioApi::Group],
            VfioApiChoice::Cdev => &[VfioApi::Cdev],
            VfioApiChoice::Both => &[VfioApi::Group, VfioApi::Cdev],
        }
    }
}

/// One run of a matrix: a kernel and the interface its guest uses.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Cell {
    /// The `--kernel` spec.
    pub spec: String,
    /// The interface.
    pub api: VfioApi,
}

impl Cell {
    /// The run's name in tables and comparisons, see [`run_label`].
    pub fn label(&self) -> String {
        run_label(&self.spec, self.api.name())
    }
}

/// A run's name: the kernel spec, with the interface when it is not `group`
/// (`fixed (cdev)`), so the two runs of `--vfio-api both` are told apart.
pub fn run_label(spec: &str, vfio_api: &str) -> String {
    if vfio_api == VfioApi::Group.name() {
        spec.to_string()
    } else {
        format!("{spec} ({vfio_api})")
    }
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

    /// The runs `--kernel` and `--vfio-api` ask for: each kernel with each
    /// interface, kernel by kernel.
    pub fn cells(&self) -> Vec<Cell> {
        self.kernels()
            .into_iter()
            .flat_map(|spec| {
                self.vfio_api.apis().iter().map(move |&api| Cell {
                    spec: spec.clone(),
                    api,
                })
            })
            .collect()
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

    #[rstest::rstest]
    #[case("1", false)]
    #[case("576", false)]
    #[case("640", true)]
    #[case("1024", true)]
    #[case("1G", false)]
    fn memory_below_what_keeps_thp_on_is_refused(#[case] mib: &str, #[case] ok: bool) {
        let got = Cli::try_parse_from(["runner", "--memory", mib]);
        assert_eq!(got.is_ok(), ok, "{mib}");
        if let Err(e) = got {
            assert_eq!(e.exit_code(), i32::from(EXIT_USAGE));
            let text = e.to_string();
            assert!(text.contains("--memory") && text.contains(mib), "{text}");
        }
    }

    #[test]
    fn both_interfaces_run_each_kernel_twice() {
        let c = parse(&[
            "--kernel",
            "stock",
            "--kernel",
            "fixed",
            "--vfio-api",
            "both",
        ]);
        let labels: Vec<String> = c.run.cells().iter().map(Cell::label).collect();
        assert_eq!(labels, ["stock", "stock (cdev)", "fixed", "fixed (cdev)"]);
        let c = parse(&["--kernel", "fixed"]);
        assert_eq!(
            c.run.cells(),
            [Cell {
                spec: "fixed".into(),
                api: VfioApi::Group
            }]
        );
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
        let c = parse(&["compare", "a.json", "b", "--json", "c.json"]);
        assert!(matches!(
            c.command,
            Some(Command::Compare(CompareArgs { json: Some(_), .. }))
        ));
    }

    #[test]
    fn baseline_and_repeat() {
        let c = parse(&[
            "--baseline",
            "e.toml",
            "--fixed-is",
            "fail",
            "--repeat",
            "20",
        ]);
        assert_eq!(c.run.fixed_is, crate::baseline::FixedIs::Fail);
        assert_eq!(c.run.repeat, 20);
        assert_eq!(parse(&[]).run.fixed_is, crate::baseline::FixedIs::Ok);
        for bad in [&["--repeat", "0"][..], &["--fixed-is", "maybe"]] {
            let e = Cli::try_parse_from(std::iter::once("runner").chain(bad.iter().copied()))
                .unwrap_err();
            assert_eq!(e.exit_code(), 2, "{bad:?}");
        }
    }

    #[test]
    fn exit_statuses_are_distinct() {
        let all = [
            EXIT_OK,
            EXIT_TEST_FAILED,
            EXIT_USAGE,
            EXIT_KERNEL_CRASHED,
            EXIT_TIMEOUT,
            EXIT_FLAKY,
            EXIT_NOT_TESTED,
        ];
        let set: std::collections::BTreeSet<u8> = all.into_iter().collect();
        assert_eq!(set.len(), all.len());
    }

    #[test]
    fn progress_limit_defaults_to_30_s_and_stays_above_the_heartbeat() {
        assert_eq!(parse(&[]).run.progress_timeout, 30);
        assert_eq!(
            parse(&["--progress-timeout", "10"]).run.progress_timeout,
            10
        );
        let e = Cli::try_parse_from(["runner", "--progress-timeout", "4"]).unwrap_err();
        assert_eq!(e.exit_code(), 2);
    }

    #[test]
    fn bad_accelerator_is_a_usage_error() {
        let e = Cli::try_parse_from(["runner", "--accel", "hvf"]).unwrap_err();
        assert_eq!(e.exit_code(), 2);
    }
}
