//! The static guest test binary: binds bigbar's device (or any device given with
//! `--bdf`) to vfio-pci and checks how its BARs map, printing KTAP on stdout.
//!
//! Exit status follows kselftest: 0 all passed (skips allowed), 1 a test failed,
//! 4 everything was skipped (as when there is no device: each test is then
//! `ok N name # SKIP no device ...`); 2 for a command-line error.

mod suite;

use std::io;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use anyhow::Context;
use clap::Parser;
use guest_tests::fixture::{Bound, Fixture, FixtureError, Options};
use guest_tests::harness::{Group, SkipAll, TestCase};
use guest_tests::pci::PciError;
use guest_tests::stop::skip_if;
use guest_tests::vfio::VfioError;
use guest_tests::{harness, isolate, kselftest, vfio_caps};
use protocol::layout::BarLayout;

/// KTAP conformance tests for huge VFIO BAR mappings.
#[derive(Parser, Debug)]
#[command(version)]
struct Cli {
    /// PCI address of the device, e.g. 0000:00:03.0 [default: $VFIO_SELFTESTS_BDF
    /// as for the kernel's vfio selftests, else the device with bigbar's
    /// vendor/device ID]
    #[arg(long, env = "BIGBAR_BDF")]
    bdf: Option<String>,
    /// Expected BAR layout in device-emu's --bars syntax, or "none" to only report
    /// [default: device-emu's default layout, or none when --bdf is given]
    #[arg(long, value_name = "SPEC")]
    bars: Option<String>,
    /// List the test names (after --filter) and exit.
    #[arg(long)]
    list: bool,
    /// Run only tests whose name matches GLOB (`*` matches anything); repeatable.
    #[arg(long = "filter", value_name = "GLOB")]
    filters: Vec<String>,
    /// Seed for tags and random choices [default: from the clock, printed].
    #[arg(long)]
    seed: Option<u64>,
    /// Make the placement tests (a1–a5) mandatory: fail instead of XFAIL when the
    /// kernel does not implement offset-aware placement (for testing a patch).
    #[arg(long)]
    require_placement: bool,
    /// Skip the tests that may oops the kernel (non-2 MiB splits and moves of a
    /// PUD-mapped block; they run last).
    #[arg(long)]
    no_risky: bool,
    /// How to open the device: `group` (/dev/vfio/<group> in the type1
    /// container) or `cdev` (/dev/vfio/devices/vfioN bound to /dev/iommu,
    /// attached to an IOAS; needs CONFIG_IOMMUFD and CONFIG_VFIO_DEVICE_CDEV).
    #[arg(long, default_value_t = guest_tests::vfio::VfioApi::Group)]
    vfio_api: guest_tests::vfio::VfioApi,
    /// Also offer the benchmarks (`bench.*`: fault cost per mapping order,
    /// register round trips); they are measurements, not checks, and never run
    /// unless asked for.
    #[arg(long)]
    bench: bool,
    /// Run a deliberate failure first: `panic` (the kernel, through sysrq),
    /// `hang` (this binary stops printing) or `slow` (a test that takes 40 s,
    /// printing only heartbeats). Repeatable, run in the order given. For
    /// testing the runner.
    #[arg(long, value_name = "KIND", hide = true, value_parser = suite::inject::KINDS)]
    inject: Vec<String>,
    /// Seconds between two `# heartbeat NAME SECONDS` lines while a test runs
    /// (0: none); the runner takes their absence for a hung guest.
    #[arg(long, value_name = "SECS", default_value_t = harness::DEFAULT_HEARTBEAT.as_secs())]
    heartbeat: u64,
    /// Also run the external kselftest programs installed under DIR
    /// (`DIR/<collection>/<program>`; repeatable), after the other tests, each case as
    /// `<collection>.<program>.<case>` with VFIO_SELFTESTS_BDF set to the device.
    #[arg(long, value_name = "DIR")]
    kselftest_dir: Vec<PathBuf>,
    /// Root under which sys/, proc/, dev/vfio and dev/kmsg are found.
    #[arg(long, default_value = "/", hide = true)]
    root: PathBuf,
}

const EXIT_USAGE: u8 = 2;

/// The variable the kernel's vfio selftests take the device from.
const VFIO_SELFTESTS_BDF: &str = "VFIO_SELFTESTS_BDF";

/// `--bdf` (or `BIGBAR_BDF`), else `VFIO_SELFTESTS_BDF`; an empty value is none.
fn device_bdf(cli: &Cli) -> Option<String> {
    cli.bdf
        .clone()
        .or_else(|| std::env::var(VFIO_SELFTESTS_BDF).ok())
        .filter(|b| !b.is_empty())
}

/// A setup error as the harness reports it: no device at all skips every test
/// (kselftest's convention: the kernel's vfio selftests exit KSFT_SKIP without
/// one); any other error fails them, with `what` in the reason.
fn setup_error(e: FixtureError, what: &'static str) -> anyhow::Error {
    match e {
        FixtureError::Pci(PciError::NotFound { .. }) => anyhow::Error::new(SkipAll(format!(
            "no device: {e} (give --bdf or {VFIO_SELFTESTS_BDF})"
        ))),
        // Asked for the cdev interface where the kernel has none: every test
        // of the fixture skips, naming the missing option.
        FixtureError::Vfio(VfioError::NoCdev { .. }) => anyhow::Error::new(SkipAll(e.to_string())),
        e => anyhow::Error::new(e).context(what),
    }
}

fn expected_layout(cli: &Cli) -> anyhow::Result<Option<BarLayout>> {
    match cli.bars.as_deref() {
        Some("none") => Ok(None),
        Some(spec) => spec
            .parse()
            .map(Some)
            .with_context(|| format!("--bars {spec:?}")),
        None if device_bdf(cli).is_some() => Ok(None),
        None => Ok(Some(BarLayout::default())),
    }
}

/// One test per case of the programs under each of `dirs`.
/// Cases of the kernel's VFIO selftests that this kernel or device cannot
/// support skip with the reason, decided from what `root` offers.
fn external_tests(
    dirs: &[PathBuf],
    root: &std::path::Path,
) -> anyhow::Result<Vec<TestCase<Bound>>> {
    let mut cases = Vec::new();
    for dir in dirs {
        cases.extend(
            kselftest::discover(dir)
                .with_context(|| format!("finding the kselftest programs in {}", dir.display()))?,
        );
    }
    Ok(cases
        .into_iter()
        .map(|case| {
            let timeout = case.timeout;
            let name = case.name.clone();
            let root = root.to_owned();
            TestCase::new(name, move |dev: &Bound| {
                skip_if(unsupported(&case, &root, dev.pci.bdf()))?;
                kselftest::run_case(&case, dev.pci.bdf())
            })
            .with_timeout(timeout)
        })
        .collect())
}

/// Why a VFIO selftest case cannot run on this kernel and device, if it cannot.
fn unsupported(case: &kselftest::Case, root: &std::path::Path, bdf: &str) -> Option<String> {
    if case.collection != vfio_caps::COLLECTION {
        return None;
    }
    let caps = vfio_caps::Capabilities::probe(root, bdf);
    let program = case.program.file_name()?.to_string_lossy();
    vfio_caps::skip_reason(&program, &case.case, &caps)
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let mut tests = suite::all();
    if cli.bench {
        tests.extend(suite::bench::all());
    }
    let injected = cli.inject.iter().filter_map(|k| suite::inject::test(k));
    tests.splice(0..0, injected);
    let external = match external_tests(&cli.kselftest_dir, &cli.root) {
        Ok(t) => t,
        Err(e) => {
            eprintln!("guest-tests: {e:#}");
            return ExitCode::from(guest_tests::ktap::KSFT_FAIL as u8);
        }
    };
    let selected = harness::select(&tests, &cli.filters);
    let selected_external = harness::select(&external, &cli.filters);
    if cli.list {
        let lines = selected
            .iter()
            .map(|t| harness::listing_line(&t.name, &t.rules))
            .chain(
                selected_external
                    .iter()
                    .map(|t| harness::listing_line(&t.name, &t.rules)),
            );
        for line in lines {
            println!("{line}");
        }
        return ExitCode::SUCCESS;
    }
    let expected = match expected_layout(&cli) {
        Ok(e) => e,
        Err(e) => {
            eprintln!("guest-tests: {e:#}");
            return ExitCode::from(EXIT_USAGE);
        }
    };
    let seed = cli.seed.unwrap_or_else(|| {
        SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map(|d| d.as_secs())
            .unwrap_or(0)
    });
    let opts = Options {
        root: cli.root.clone(),
        bdf: device_bdf(&cli),
        expected,
        seed,
        require_placement: cli.require_placement,
        risky: !cli.no_risky,
        vfio_api: cli.vfio_api,
    };
    let setup = || {
        let fx = Fixture::open(&opts).map_err(|e| setup_error(e, "opening the device"))?;
        isolate::diag(&fx.describe());
        Ok(fx)
    };
    // The external programs open the device themselves, which they cannot while
    // the fixture holds its VFIO group: they run in a second group, after it.
    let bind = || {
        let bound = Bound::bind(&opts).map_err(|e| setup_error(e, "binding the device"))?;
        for set in vfio_caps::shared_memory_in_huge_pages(&opts.root) {
            isolate::diag(&format!("external kselftests: {set}"));
        }
        isolate::diag(&format!(
            "external kselftests: {} bound to vfio-pci (previous driver {:?})",
            bound.pci.bdf(),
            bound.previous_driver
        ));
        Ok(bound)
    };
    let groups = vec![
        Group::boxed(selected, setup),
        Group::boxed(selected_external, bind),
    ];
    let options = harness::RunOptions {
        times: true,
        kmsg: Some(cli.root.join("dev/kmsg")),
        heartbeat: (cli.heartbeat > 0).then(|| Duration::from_secs(cli.heartbeat)),
        // This binary starts no threads in the parent (tests that need threads
        // start them in their child), which the harness checks before each fork.
        ..harness::RunOptions::default()
    };
    match harness::run_groups(io::stdout(), groups, options) {
        Ok(totals) => ExitCode::from(totals.exit_code() as u8),
        Err(e) => {
            eprintln!("guest-tests: writing KTAP: {e}");
            ExitCode::from(guest_tests::ktap::KSFT_FAIL as u8)
        }
    }
}
