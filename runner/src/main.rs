//! `runner`: builds bigbar, boots a guest with the emulated large-BAR device,
//! collects the KTAP results of the guest tests and reports them.

mod accel;
mod artefacts;
mod bench;
mod cli;
mod console;
mod device;
mod export;
mod junit;
mod klog;
mod ktap;
mod machine;
mod matrix;
mod parse;
mod process;
mod recovery;
mod report;
mod session;
mod stages;
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
        Some(Command::Parse { path, junit }) => parse_saved(path, junit.as_deref()),
        Some(Command::ExportKselftest { dir }) => export_kselftest(dir),
        Some(Command::Bench(args)) => bench::run(args),
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

/// The workspace root, for building and for the default cache and output dirs.
fn workspace_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("runner lives in a workspace")
        .to_path_buf()
}

/// The cargo target directory the runner writes its defaults under.
fn target_dir() -> PathBuf {
    std::env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| workspace_root().join("target"))
}

/// Picks and creates the output directory.
fn out_dir(args: &RunArgs) -> Result<PathBuf> {
    let dir = match &args.out {
        Some(d) => d.clone(),
        None => {
            let stamp = std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map(|d| d.as_secs())
                .unwrap_or(0);
            target_dir()
                .join("bigbar-runs")
                .join(format!("{stamp}-{}", std::process::id()))
        }
    };
    std::fs::create_dir_all(&dir).with_context(|| format!("creating {}", dir.display()))?;
    Ok(dir)
}

fn run(args: &RunArgs) -> Result<u8> {
    let layout: device_emu::layout::BarLayout = args
        .bars
        .parse()
        .map_err(|e| UsageError(format!("--bars {}: {e}", args.bars)))?;
    if args.list {
        return list_tests(args);
    }
    let kernels = args.kernels();
    for spec in &kernels {
        machine::kernel_spec(spec).map_err(|e| UsageError(format!("{e:#}")))?;
    }
    let out = out_dir(args)?;
    let mut results = Results::default();
    for spec in &kernels {
        if session::interrupted() {
            eprintln!("bigbar: interrupted; {spec} and the kernels after it are not run");
            break;
        }
        // A matrix keeps each kernel's files apart; a single run writes to --out.
        let dir = if kernels.len() == 1 {
            out.clone()
        } else {
            out.join(spec.replace(['/', ':'], "_"))
        };
        std::fs::create_dir_all(&dir).with_context(|| format!("creating {}", dir.display()))?;
        let plan = plan(args, spec, layout.clone());
        if args.shell {
            return machine::shell(&workspace_root(), &plan);
        }
        match machine::boot_and_test(&workspace_root(), &plan, &dir) {
            Ok(Some(run)) => results.runs.push(run),
            Ok(None) => continue, // --dry-run printed what it would do
            Err(e) if kernels.len() > 1 => {
                // One kernel that cannot be tested must not lose the others.
                eprintln!("bigbar: error: {spec}: {e:#}");
                results.runs.push(Run::untested(spec, format!("{e:#}")));
            }
            Err(e) => return Err(e),
        }
    }
    if results.runs.is_empty() {
        return Ok(cli::EXIT_OK);
    }
    results.write(&out)?;
    if let Some(path) = &args.junit {
        junit::write(&results, path)?;
    }
    let code = if results.runs.len() == 1 {
        present(&results.runs[0])
    } else {
        present_matrix(&results, &out)?
    };
    eprintln!("bigbar: results in {}", out.display());
    Ok(code)
}

/// The plan of one kernel's run.
fn plan(args: &RunArgs, spec: &str, layout: device_emu::layout::BarLayout) -> machine::Plan {
    let cache = cache_dir(args);
    machine::Plan {
        kernel_spec: spec.to_string(),
        qemu: args.qemu.clone(),
        cache,
        layout,
        accel: args.accel.clone(),
        memory_mib: args.memory,
        timeout: Duration::from_secs(args.timeout),
        idle_timeout: Duration::from_secs(args.idle_timeout),
        echo_console: args.verbose,
        guest_args: args.guest_args(),
        append: args.append.clone(),
        qemu_args: args.qemu_arg.clone(),
        dry_run: args.dry_run,
        keep: args.keep || args.gdb,
        shell: args.shell,
        gdb: args.gdb,
        reproducers: args.reproducers,
        suite: args.suite,
    }
}

/// `--cache`, else `$BIGBAR_CACHE`, else `target/bigbar-cache`.
fn cache_dir(args: &RunArgs) -> PathBuf {
    args.cache
        .clone()
        .or_else(|| std::env::var_os("BIGBAR_CACHE").map(PathBuf::from))
        .unwrap_or_else(|| target_dir().join("bigbar-cache"))
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
        let tally = Tally::of(&run.tests);
        println!("{}: {}", run.kernel.spec, tally.summary_line());
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
    let bin = artefacts::build_guest(&workspace_root())?;
    let cache = vm_images::Cache::new(cache_dir(args));
    let fetcher = vm_images::Fetcher::new(&cache);
    let mut kselftests = Vec::new();
    if args.reproducers {
        kselftests.push(machine::build_reproducers(&workspace_root(), &fetcher)?);
    }
    if args.suite.vfio_selftests() {
        let spec = machine::kernel_spec(args.kernel.first().map_or("debian:sid", |k| k))?;
        kselftests.push(suite::build_vfio_selftests(&fetcher, &spec)?);
    }
    let out = std::process::Command::new(&bin)
        .arg("--list")
        .args(machine::host_kselftest_args(&kselftests))
        .args(args.guest_args())
        .output()
        .with_context(|| format!("running {} --list", bin.display()))?;
    eprint!("{}", String::from_utf8_lossy(&out.stderr));
    for name in String::from_utf8_lossy(&out.stdout).lines() {
        if args.suite.includes(name.trim()) {
            println!("{name}");
        }
    }
    Ok(if out.status.success() {
        cli::EXIT_OK
    } else {
        cli::EXIT_NOT_TESTED
    })
}

/// `runner parse`.
fn parse_saved(path: &Path, junit_path: Option<&Path>) -> Result<u8> {
    let run = parse::read(path)?;
    let results = parse::results(run);
    if let Some(p) = junit_path {
        junit::write(&results, p)?;
    }
    Ok(present(&results.runs[0]))
}

/// `runner export-kselftest`.
fn export_kselftest(dir: &Path) -> Result<u8> {
    let bin = artefacts::build_guest(&workspace_root())?;
    export::export(&bin, dir)?;
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
}
