//! `runner`: builds bigbar, boots a guest with the emulated large-BAR device,
//! collects the KTAP results of the guest tests and reports them.

mod accel;
mod artefacts;
mod baseline;
mod bench;
mod cli;
mod compare;
mod console;
mod device_emu;
mod export;
mod html;
mod junit;
mod kernel_run;
mod klog;
mod ktap;
mod layout;
mod matrix;
mod parse;
mod picture;
mod places;
mod process;
mod progress;
mod recovery;
mod repeat;
mod report;
mod saved;
mod session;
mod stages;
mod store;
mod suite;

use anyhow::{Context, Result};
use clap::Parser;
use cli::{Cli, Command, RunArgs};
use report::{Outcome, Results, Run, Tally};
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::Duration;

fn main() -> ExitCode {
    let cli = Cli::parse();
    let result = match &cli.command {
        None => run(&cli.run),
        Some(Command::Parse {
            path,
            junit,
            baseline,
            fixed_is,
        }) => parse_saved(path, junit.as_deref(), baseline.as_deref(), *fixed_is),
        Some(Command::ExportKselftest { dir, kernel_runner }) => {
            export_kselftest(dir, *kernel_runner, &cli.run)
        }
        Some(Command::Bench(args)) => bench::run(args),
        Some(Command::Compare(args)) => compare_saved(args),
        Some(Command::Cache(args)) => store::run(args),
    };
    match result {
        Ok(code) => ExitCode::from(code),
        Err(e) => {
            eprintln!("bigbar: error: {e:#}");
            let usage = e.downcast_ref::<UsageError>().is_some();
            ExitCode::from(if usage {
                cli::EXIT_USAGE
            } else {
                cli::EXIT_NOT_TESTED
            })
        }
    }
}

/// A command line that cannot work, found before anything is built or fetched:
/// exit status 2 (not 125, which `git bisect run` would take as "skip").
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
struct UsageError(String);

/// Picks and creates the output directory.
fn out_dir(args: &RunArgs) -> Result<PathBuf> {
    let dir = match &args.out {
        Some(d) => d.clone(),
        None => {
            let stamp = std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map(|d| d.as_secs())
                .unwrap_or(0);
            places::defaults()?
                .runs
                .join(format!("{stamp}-{}", std::process::id()))
        }
    };
    std::fs::create_dir_all(&dir).with_context(|| format!("creating {}", dir.display()))?;
    Ok(dir)
}

fn run(args: &RunArgs) -> Result<u8> {
    let layout: protocol::layout::BarLayout = args
        .bars
        .parse()
        .map_err(|e| UsageError(format!("--bars {}: {e}", args.bars)))?;
    if args.list {
        return list_tests(args);
    }
    let kernels = args.cells();
    for cell in &kernels {
        kernel_run::kernel_spec(&cell.spec).map_err(|e| UsageError(format!("{e:#}")))?;
    }
    // A baseline that cannot be read is refused before anything boots.
    let base = match &args.baseline {
        Some(p) => Some(baseline::Baseline::load(p).map_err(|e| UsageError(e.to_string()))?),
        None => None,
    };
    let out = out_dir(args)?;
    let store = places::cache(args.cache.as_deref())?;
    // Before any thread that spawns children exists (see `artefacts::unpack`).
    artefacts::unpack(&vm_images::Cache::new(store.clone()))?;
    check_filter(args)?;
    if args.shell {
        return kernel_run::shell(&plan(args, &kernels[0], layout)?);
    }
    if args.bare_boot {
        return kernel_run::bare_boot(&plan(args, &kernels[0], layout)?, &out);
    }
    if args.repeat > 1 {
        return run_repeated(args, &kernels, &layout, &out, base.as_ref());
    }
    let Some(results) = run_kernels(args, &kernels, &layout, &out)? else {
        return Ok(cli::EXIT_OK);
    };
    results.write(&out)?;
    if let Some(path) = &args.junit {
        junit::write(&results, path)?;
    }
    let code = if results.runs.len() == 1 {
        present(&results.runs[0])
    } else {
        present_matrix(&results, &out)?
    };
    let code = match &base {
        Some(b) => judge_against(&results, b, args.fixed_is, true),
        None => code,
    };
    store::warn_if_large(&store, args.cache_warn_size);
    eprintln!("bigbar: results in {}", out.display());
    Ok(code)
}

/// Runs every kernel once into `out` (a matrix: one subdirectory per kernel, up to
/// `--jobs` at once); `None` when nothing ran (`--dry-run`).
fn run_kernels(
    args: &RunArgs,
    kernels: &[cli::Cell],
    layout: &protocol::layout::BarLayout,
    out: &Path,
) -> Result<Option<Results>> {
    let jobs = matrix_jobs(args, kernels.len());
    let next = std::sync::atomic::AtomicUsize::new(0);
    let slots: Vec<std::sync::Mutex<Option<Result<Option<Run>>>>> = kernels
        .iter()
        .map(|_| std::sync::Mutex::new(None))
        .collect();
    let worker = || loop {
        let i = next.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
        let Some(cell) = kernels.get(i) else {
            break;
        };
        if session::interrupted() {
            eprintln!("bigbar: interrupted; {} is not run", cell.label());
            continue;
        }
        let result = run_kernel(args, cell, kernels.len(), layout, out);
        *slots[i].lock().unwrap_or_else(|e| e.into_inner()) = Some(result);
    };
    std::thread::scope(|s| {
        for _ in 1..jobs {
            s.spawn(worker);
        }
        worker();
    });
    let mut results = Results::default();
    for (cell, slot) in kernels.iter().zip(slots) {
        match slot.into_inner().unwrap_or_else(|e| e.into_inner()) {
            None | Some(Ok(None)) => {} // not reached, or --dry-run printed it
            Some(Ok(Some(run))) => results.runs.push(run),
            Some(Err(e)) if kernels.len() > 1 => {
                // One kernel that cannot be tested must not lose the others.
                eprintln!("bigbar: error: {}: {e:#}", cell.label());
                let mut run = Run::untested(&cell.spec, format!("{e:#}"));
                run.kernel.vfio_api = cell.api.name().to_string();
                results.runs.push(run);
            }
            Some(Err(e)) => return Err(e),
        }
    }
    Ok((!results.runs.is_empty()).then_some(results))
}

/// How many kernels of a matrix of `count` run at once: `--jobs`, else one per
/// core and at most one per 2 GiB of memory (a guest takes 1 GiB and QEMU,
/// device-emu and the runner the rest), never more than there are kernels.
fn matrix_jobs(args: &RunArgs, count: usize) -> usize {
    if args.dry_run || args.gdb || args.shell {
        return 1;
    }
    let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
    let memory = nix::sys::sysinfo::sysinfo().map_or(0, |i| i.ram_total());
    jobs_for(args.jobs, cores, memory, count)
}

/// [`matrix_jobs`] from its inputs: `requested` (`--jobs`), the cores, the
/// memory in bytes and the number of kernels.
fn jobs_for(requested: Option<u32>, cores: usize, memory: u64, count: usize) -> usize {
    let by_memory = (memory / (2 << 30)).max(1) as usize;
    let jobs = requested.map_or(cores.min(by_memory), |j| j as usize);
    jobs.clamp(1, count.max(1))
}

/// Boots `spec` into its directory of `out` (the whole `out` for a single run).
fn run_kernel(
    args: &RunArgs,
    cell: &cli::Cell,
    count: usize,
    layout: &protocol::layout::BarLayout,
    out: &Path,
) -> Result<Option<Run>> {
    let dir = if count == 1 {
        out.to_path_buf()
    } else {
        let name = cell.spec.replace(['/', ':'], "_");
        match cell.api {
            cli::VfioApi::Group => out.join(name),
            api => out.join(format!("{name}_{}", api.name())),
        }
    };
    std::fs::create_dir_all(&dir).with_context(|| format!("creating {}", dir.display()))?;
    let plan = plan(args, cell, layout.clone())?;
    kernel_run::boot_and_test(&plan, &dir)
}

/// Judges every run of `results` against the baseline, prints what it found
/// when `print`, and returns the exit status (the highest over the kernels).
/// A kernel a results baseline lacks is judged on its own, as without one.
fn judge_against(
    results: &Results,
    base: &baseline::Baseline,
    fixed_is: baseline::FixedIs,
    print: bool,
) -> u8 {
    let single = results.runs.len() == 1;
    let mut code = cli::EXIT_OK;
    for run in &results.runs {
        let saved = saved::SavedRun::from(run);
        let status = match base.for_kernel(&run.kernel.spec, &run.kernel.label(), single) {
            Some(kb) => {
                let j = baseline::judge(&kb, &saved);
                if print {
                    print!("{}", baseline::summary(&j, fixed_is));
                }
                j.exit_status(fixed_is)
            }
            None => {
                if print {
                    println!(
                        "baseline has no run of {}: judged on its own",
                        run.kernel.label()
                    );
                }
                exit_code(&run.outcome, &Tally::of(&run.tests))
            }
        };
        code = code.max(status);
    }
    code
}

/// `--repeat N`: N repetitions into OUT/repK, then the verdict histograms.
fn run_repeated(
    args: &RunArgs,
    kernels: &[cli::Cell],
    layout: &protocol::layout::BarLayout,
    out: &Path,
    base: Option<&baseline::Baseline>,
) -> Result<u8> {
    let mut reps = Vec::new();
    let mut statuses = Vec::new();
    let mut first: Option<Results> = None;
    for k in 1..=args.repeat {
        if session::interrupted() {
            eprintln!(
                "bigbar: interrupted; repetitions {k} to {} are not run",
                args.repeat
            );
            break;
        }
        let dir = out.join(format!("rep{k}"));
        let Some(results) = run_kernels(args, kernels, layout, &dir)? else {
            return Ok(cli::EXIT_OK);
        };
        results.write(&dir)?;
        let status = match base {
            Some(b) => judge_against(&results, b, args.fixed_is, false),
            None => plain_status(&results),
        };
        for run in &results.runs {
            let tally = Tally::of(&run.tests);
            println!(
                "repetition {k}/{}: {}: {} (exit {status})",
                args.repeat,
                run.kernel.label(),
                tally.summary_line()
            );
        }
        statuses.push(status);
        reps.push(saved::SavedResults::from(&results));
        first.get_or_insert(results);
    }
    let Some(first) = first else {
        return Ok(cli::EXIT_NOT_TESTED);
    };
    let flakiness = repeat::histograms(&reps);
    for f in &flakiness {
        print!("{}", repeat::table(f));
    }
    write_repeated(out, &first, &flakiness, &statuses)?;
    if let Some(path) = &args.junit {
        junit::write(&first, path)?;
    }
    eprintln!(
        "bigbar: results in {} (repetition K in rep K/)",
        out.display()
    );
    Ok(repeat::exit_status(&flakiness, &statuses))
}

/// The exit status of a run without a baseline (the highest over its kernels).
fn plain_status(results: &Results) -> u8 {
    results
        .runs
        .iter()
        .map(|r| exit_code(&r.outcome, &Tally::of(&r.tests)))
        .max()
        .unwrap_or(cli::EXIT_OK)
}

/// OUT/results.json of a repeated run: repetition 1's `runs` (so `compare`,
/// `parse` and `--baseline` read it as a run), each repetition's directory and
/// exit status, and the histograms (`flakiness`).
fn write_repeated(
    out: &Path,
    first: &Results,
    flakiness: &[repeat::Flakiness],
    statuses: &[u8],
) -> Result<()> {
    let repetitions: Vec<serde_json::Value> = statuses
        .iter()
        .enumerate()
        .map(|(i, s)| serde_json::json!({"repetition": i + 1, "dir": format!("rep{}", i + 1), "exit_status": s}))
        .collect();
    let doc = serde_json::json!({
        "runs": first.runs,
        "repetitions": repetitions,
        "flakiness": flakiness,
    });
    let path = out.join("results.json");
    std::fs::write(&path, serde_json::to_string_pretty(&doc)? + "\n")
        .with_context(|| format!("writing {}", path.display()))?;
    html::write(first, out)
}

/// `runner compare A B`: bad input (missing, malformed) is exit 2.
fn compare_saved(args: &cli::CompareArgs) -> Result<u8> {
    let load = |p: &Path| saved::load(p).map_err(|e| UsageError(e.to_string()));
    let (a, b) = (load(&args.a)?, load(&args.b)?);
    let c = compare::compare(&a, &b);
    let md = c.markdown(&args.a.display().to_string(), &args.b.display().to_string());
    match &args.markdown {
        Some(p) => std::fs::write(p, &md).with_context(|| format!("writing {}", p.display()))?,
        None => print!("{md}"),
    }
    if let Some(p) = &args.json {
        let json = serde_json::to_string_pretty(&c)? + "\n";
        std::fs::write(p, json).with_context(|| format!("writing {}", p.display()))?;
    }
    for k in &c.kernels {
        eprintln!("bigbar: compare {}", k.judgement.count_line());
    }
    Ok(c.exit_status())
}

/// The plan of one kernel's run.
fn plan(
    args: &RunArgs,
    cell: &cli::Cell,
    layout: protocol::layout::BarLayout,
) -> Result<kernel_run::BootPlan> {
    let cache = places::cache(args.cache.as_deref())?;
    let mut guest_args = args.guest_args();
    if cell.api != cli::VfioApi::Group {
        guest_args.extend(["--vfio-api".to_string(), cell.api.name().to_string()]);
    }
    Ok(kernel_run::BootPlan {
        kernel_spec: cell.spec.clone(),
        vfio_api: cell.api,
        qemu: args.qemu.clone(),
        cache,
        layout,
        accel: args.accel.clone(),
        memory_mib: args.memory,
        cpus: args.smp,
        timeout: Duration::from_secs(args.timeout),
        idle_timeout: Duration::from_secs(args.idle_timeout),
        progress_timeout: Duration::from_secs(args.progress_timeout),
        echo_console: args.verbose,
        guest_args,
        append: args.append.clone(),
        qemu_args: args.qemu_arg.clone(),
        dry_run: args.dry_run,
        keep: args.keep || args.gdb,
        shell: args.shell,
        gdb: args.gdb,
        reproducers: args.reproducers,
        suite: args.suite,
    })
}

/// Prints and writes (`matrix.md`) the tests × kernels table; returns the exit
/// status: the highest of the runs' statuses (125 > 4 > 3 > 1 > 0).
fn present_matrix(results: &Results, out: &Path) -> Result<u8> {
    eprintln!();
    print!("{}", matrix::text(results));
    let md = out.join("matrix.md");
    std::fs::write(&md, matrix::markdown(results))
        .with_context(|| format!("writing {}", md.display()))?;
    let mut code = cli::EXIT_OK;
    for run in &results.runs {
        let pictures = report::pictures(run);
        if !pictures.is_empty() {
            print!("{}: {pictures}", run.kernel.spec);
        }
    }
    for run in &results.runs {
        let tally = Tally::of(&run.tests);
        println!("{}: {}", run.kernel.label(), tally.summary_line());
        code = code.max(exit_code(&run.outcome, &tally));
    }
    let all = Tally::of(results.runs.iter().flat_map(|r| &r.tests));
    println!("{}", all.summary_line());
    Ok(code)
}

/// Prints the table, kernel reports and summary of a run; returns the exit status.
fn present(run: &Run) -> u8 {
    eprintln!();
    print!("{}", report::table(run));
    print!("{}", report::pictures(run));
    for r in &run.kernel_reports {
        eprintln!(
            "kernel {:?} during {}:\n{}",
            r.kind,
            r.during_test
                .as_deref()
                .unwrap_or("no test (boot or between tests)"),
            r.text
        );
    }
    match &run.outcome {
        Outcome::Completed => {}
        Outcome::KernelCrashed(first) => eprintln!("bigbar: the kernel crashed: {first}"),
        Outcome::TimedOut(why) | Outcome::Infrastructure(why) => {
            eprintln!("bigbar: the run did not complete: {why}")
        }
    }
    let tally = Tally::of(&run.tests);
    println!("{}", tally.summary_line());
    exit_code(&run.outcome, &tally)
}

/// `--list`: builds the guest binary and lets it list its tests on the host
/// (with `--reproducers`, the reproducers too: they list their own cases; with
/// `--suite vfio-selftests` or `all`, the kernel's VFIO selftests of the first
/// `--kernel`), narrowed to `--suite`.
fn list_tests(args: &RunArgs) -> Result<u8> {
    let Listing { tests, listed } = listing(args)?;
    for (name, rules) in tests {
        match rules.is_empty() {
            true => println!("{name}"),
            false => println!("{name}  {}", rules.join(" ")),
        }
    }
    Ok(if listed {
        cli::EXIT_OK
    } else {
        cli::EXIT_NOT_TESTED
    })
}

/// The tests a run selects.
struct Listing {
    /// Each test's name and rule IDs.
    tests: Vec<(String, Vec<String>)>,
    /// Whether the guest binary's `--list` succeeded.
    listed: bool,
}

/// The tests a run of `args` selects, from the guest binary's own `--list`
/// (run on the host) and the kselftests the suite adds.
fn listing(args: &RunArgs) -> Result<Listing> {
    let cache = vm_images::Cache::new(places::cache(args.cache.as_deref())?);
    let bin = artefacts::guest(&cache)?;
    let fetcher = vm_images::Fetcher::new(&cache);
    let mut kselftests = Vec::new();
    if args.reproducers {
        kselftests.push(kernel_run::build_reproducers(&fetcher)?);
    }
    if args.suite.vfio_selftests() {
        let spec = kernel_run::kernel_spec(args.kernel.first().map_or("debian:sid", |k| k))?;
        kselftests.push(suite::build_vfio_selftests(&fetcher, &spec)?);
    }
    let out = std::process::Command::new(&bin)
        .arg("--list")
        .args(kernel_run::host_kselftest_args(&kselftests))
        .args(args.guest_args())
        .output()
        .with_context(|| format!("running {} --list", bin.display()))?;
    eprint!("{}", String::from_utf8_lossy(&out.stderr));
    let tests = kernel_run::parse_listing(&String::from_utf8_lossy(&out.stdout))
        .into_iter()
        .filter(|(name, _)| args.suite.includes(name))
        .collect();
    Ok(Listing {
        tests,
        listed: out.status.success(),
    })
}

/// Refuses a `--filter` that selects no test: a usage error, found before
/// anything boots, not a run that tests nothing.
fn check_filter(args: &RunArgs) -> Result<()> {
    if args.filter.is_empty() {
        return Ok(());
    }
    let Listing { tests, listed } = listing(args)?;
    if listed && tests.is_empty() {
        let given: Vec<String> = args.filter.iter().map(|f| format!("'{f}'")).collect();
        return Err(UsageError(format!(
            "--filter {} selects no test of the suite `{}` (`bigbar --list` shows them)",
            given.join(" --filter "),
            clap::ValueEnum::to_possible_value(&args.suite)
                .map_or_else(String::new, |v| v.get_name().to_string())
        ))
        .into());
    }
    Ok(())
}

/// `runner parse`.
fn parse_saved(
    path: &Path,
    junit_path: Option<&Path>,
    baseline_path: Option<&Path>,
    fixed_is: baseline::FixedIs,
) -> Result<u8> {
    let base = match baseline_path {
        Some(p) => Some(baseline::Baseline::load(p).map_err(|e| UsageError(e.to_string()))?),
        None => None,
    };
    let run = parse::read(path)?;
    let results = parse::results(run);
    if let Some(p) = junit_path {
        junit::write(&results, p)?;
    }
    if path.is_dir() {
        // Re-read from the stream, the page shows what this parse judged.
        html::write(&results, path)?;
    }
    let code = present(&results.runs[0]);
    Ok(match &base {
        Some(b) => judge_against(&results, b, fixed_is, true),
        None => code,
    })
}

/// `runner export-kselftest`; with `kernel_runner`, the kernel's run script.
fn export_kselftest(dir: &Path, kernel_runner: bool, args: &RunArgs) -> Result<u8> {
    let cache = vm_images::Cache::new(places::cache(args.cache.as_deref())?);
    let bin = artefacts::guest(&cache)?;
    export::export(&bin, dir)?;
    if kernel_runner {
        let fetcher = vm_images::Fetcher::new(&cache);
        let (package, version) = vm_images::kernel::source::resolve_version(&fetcher)?;
        let source = vm_images::kernel::source::obtain(&fetcher, &package, &version)?;
        export::install_kernel_runner(&source.tree.join("tools/testing/selftests"), dir)?;
    }
    eprintln!(
        "bigbar: kselftest layout in {}; run it with {}/run_kselftest.sh",
        dir.display(),
        dir.display()
    );
    Ok(cli::EXIT_OK)
}

/// Maps how the run ended and what the tests said to the exit status.
fn exit_code(outcome: &Outcome, tally: &Tally) -> u8 {
    match outcome {
        Outcome::KernelCrashed(_) => cli::EXIT_KERNEL_CRASHED,
        Outcome::TimedOut(_) => cli::EXIT_TIMEOUT,
        Outcome::Infrastructure(_) => cli::EXIT_NOT_TESTED,
        Outcome::Completed if tally.failed > 0 => cli::EXIT_TEST_FAILED,
        Outcome::Completed if tally.passed + tally.skipped + tally.xfailed == 0 => {
            cli::EXIT_NOT_TESTED
        }
        Outcome::Completed => cli::EXIT_OK,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use cli::*;

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

    const GIB: u64 = 1 << 30;

    #[rstest::rstest]
    #[case::one_per_core(None, 2, 24 * GIB, 6, 2)]
    #[case::memory_bounds(None, 16, 5 * GIB, 6, 2)]
    #[case::little_memory(None, 4, GIB, 6, 1)]
    #[case::never_more_than_kernels(None, 8, 64 * GIB, 3, 3)]
    #[case::requested(Some(4), 2, 24 * GIB, 6, 4)]
    #[case::requested_capped(Some(9), 2, 24 * GIB, 6, 6)]
    #[case::single_kernel(None, 2, 24 * GIB, 1, 1)]
    fn matrix_jobs(
        #[case] requested: Option<u32>,
        #[case] cores: usize,
        #[case] memory: u64,
        #[case] count: usize,
        #[case] jobs: usize,
    ) {
        assert_eq!(jobs_for(requested, cores, memory, count), jobs);
    }
}
