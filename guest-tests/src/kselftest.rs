//! External kselftest programs (kselftest_harness binaries such as bigbar's
//! kernel reproducers or the kernel's VFIO selftests), run as guest tests.
//!
//! Programs sit in the kselftest install layout, `<dir>/<collection>/<program>`.
//! Each test case of a program becomes one guest test named
//! `<collection>.<program>.<case>`, where `<case>` is the harness's own name
//! (`fixture[.variant].test`). Cases are found with the harness's `-l` listing
//! and each one runs alone (`-r <case>`), so that a case that hangs or oopses
//! costs only its own result, and the guest test's deadline bounds it.
//!
//! A program built from a kernel tree carries its listing, taken on the host,
//! in `<program>.list` (its `main()` may need the device before the harness
//! answers `-l`); one that could not be listed there has `<program>.unlisted`
//! instead and runs whole, as the single result `<collection>.<program>`.

use std::fs;
use std::io;
use std::path::{Path, PathBuf};
use std::process::{Command, ExitStatus, Stdio};
use std::time::Duration;

use crate::stop::{Stop, TestResult};

/// The deadline of a case when its collection has no `settings` file (the
/// default of the kernel's kselftest runner).
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(45);
/// The environment variable the kernel's VFIO selftests read the device from.
pub const BDF_ENV: &str = "VFIO_SELFTESTS_BDF";
/// Suffix of a program's stored `-l` listing.
pub const LIST_SUFFIX: &str = ".list";
/// Suffix of the file marking a program that runs whole (no listing).
pub const UNLISTED_SUFFIX: &str = ".unlisted";

/// Errors while finding the cases of the installed programs.
#[derive(Debug, thiserror::Error)]
pub enum KselftestError {
    /// A directory could not be read or a program could not be started.
    #[error("{what} {path}")]
    Io {
        /// What was being done.
        what: &'static str,
        /// The file or directory.
        path: PathBuf,
        /// The cause.
        #[source]
        source: io::Error,
    },
    /// A program's `-l` listing names no test.
    #[error("{0} -l lists no test (not a kselftest_harness program?)")]
    NoCases(PathBuf),
}

/// One test case of one installed program.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Case {
    /// Result name, `<collection>.<program>.<case>` (`<collection>.<program>`
    /// for a whole program).
    pub name: String,
    /// The collection's name.
    pub collection: String,
    /// The program.
    pub program: PathBuf,
    /// The harness's name of the case, given to `-r`; empty for a whole program.
    pub case: String,
    /// How long the case may run.
    pub timeout: Duration,
}

/// How one line of a program's KTAP output ends a test.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum CaseResult {
    /// `ok N name`.
    Pass,
    /// `ok N name # SKIP reason`.
    Skip(String),
    /// `ok N name # XFAIL reason`.
    Xfail(String),
    /// `not ok N name [# directive]`.
    Fail(String),
}

/// Every case of every program under `dir`, collections and programs sorted by name.
pub fn discover(dir: &Path) -> Result<Vec<Case>, KselftestError> {
    let mut cases = Vec::new();
    for collection in sorted_entries(dir)? {
        if !collection.is_dir() {
            continue;
        }
        let timeout = collection_timeout(&collection);
        let cname = file_name(&collection);
        for program in sorted_entries(&collection)? {
            if !is_program(&program) {
                continue;
            }
            let pname = file_name(&program);
            let names = program_cases(&program)?;
            cases.extend(names.into_iter().map(|case| Case {
                name: case_name(&cname, &pname, &case),
                collection: cname.clone(),
                program: program.clone(),
                case,
                timeout,
            }));
        }
    }
    Ok(cases)
}

fn sorted_entries(dir: &Path) -> Result<Vec<PathBuf>, KselftestError> {
    let io_err = |source| KselftestError::Io {
        what: "reading",
        path: dir.to_owned(),
        source,
    };
    let mut paths = fs::read_dir(dir)
        .map_err(io_err)?
        .map(|e| e.map(|e| e.path()))
        .collect::<Result<Vec<_>, _>>()
        .map_err(io_err)?;
    paths.sort();
    Ok(paths)
}

fn file_name(p: &Path) -> String {
    p.file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default()
}

/// An executable regular file (`settings` and other data files are not).
fn is_program(p: &Path) -> bool {
    use std::os::unix::fs::PermissionsExt;
    fs::metadata(p).is_ok_and(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
}

/// `timeout=N` of the collection's kselftest `settings` file, else the default.
fn collection_timeout(collection: &Path) -> Duration {
    fs::read_to_string(collection.join("settings"))
        .ok()
        .and_then(|s| parse_settings_timeout(&s))
        .unwrap_or(DEFAULT_TIMEOUT)
}

/// The `timeout=N` line of a kselftest `settings` file.
pub fn parse_settings_timeout(settings: &str) -> Option<Duration> {
    settings
        .lines()
        .find_map(|l| l.trim().strip_prefix("timeout="))
        .and_then(|v| v.trim().parse().ok())
        .map(Duration::from_secs)
}

/// `<collection>.<program>.<case>`, or `<collection>.<program>` for a whole program.
fn case_name(collection: &str, program: &str, case: &str) -> String {
    if case.is_empty() {
        format!("{collection}.{program}")
    } else {
        format!("{collection}.{program}.{case}")
    }
}

/// The program's cases: its stored listing, one empty name (the whole program)
/// when it is marked unlisted, else what its `-l` prints.
fn program_cases(program: &Path) -> Result<Vec<String>, KselftestError> {
    let with = |suffix: &str| {
        let mut p = program.as_os_str().to_owned();
        p.push(suffix);
        PathBuf::from(p)
    };
    if with(UNLISTED_SUFFIX).is_file() {
        return Ok(vec![String::new()]);
    }
    let stored = with(LIST_SUFFIX);
    if stored.is_file() {
        let text = fs::read_to_string(&stored).map_err(|source| KselftestError::Io {
            what: "reading",
            path: stored.clone(),
            source,
        })?;
        let names = parse_listing(&text);
        if names.is_empty() {
            return Err(KselftestError::NoCases(program.to_owned()));
        }
        return Ok(names);
    }
    list_cases(program)
}

/// Runs `program -l` (it touches no device) and parses its listing.
fn list_cases(program: &Path) -> Result<Vec<String>, KselftestError> {
    let out = Command::new(program)
        .arg("-l")
        .stdin(Stdio::null())
        .output()
        .map_err(|source| KselftestError::Io {
            what: "running",
            path: program.to_owned(),
            source,
        })?;
    // The harness prints the listing on stderr.
    let names = parse_listing(&String::from_utf8_lossy(&out.stderr));
    if names.is_empty() {
        return Err(KselftestError::NoCases(program.to_owned()));
    }
    Ok(names)
}

/// Width of the FIXTURE and VARIANT columns of the harness's `-l` table
/// (`"%-20s %-25s %s"`).
const FIXTURE_WIDTH: usize = 20;
const VARIANT_WIDTH: usize = 25;

/// The case names (`fixture[.variant].test`) of a kselftest_harness `-l` listing.
///
/// The listing prints, per fixture, its variants and its tests side by side in
/// two columns (not their product), the fixture name on the first row only, and
/// a dashed line between fixtures; every test runs once per variant.
pub fn parse_listing(text: &str) -> Vec<String> {
    let mut names = Vec::new();
    let mut fixture: Option<(String, Vec<String>, Vec<String>)> = None;
    let mut flush = |f: Option<(String, Vec<String>, Vec<String>)>| {
        if let Some((name, variants, tests)) = f {
            names.extend(case_names(&name, &variants, &tests));
        }
    };
    for line in text.lines() {
        if line.starts_with("# FIXTURE") || line.trim().is_empty() {
            continue;
        }
        if line.starts_with("----") {
            flush(fixture.take());
            continue;
        }
        let (f, v, t) = columns(line);
        if !f.is_empty() {
            flush(fixture.take());
            fixture = Some((f, Vec::new(), Vec::new()));
        }
        if let Some((_, variants, tests)) = fixture.as_mut() {
            if !v.is_empty() {
                variants.push(v);
            }
            if !t.is_empty() {
                tests.push(t);
            }
        }
    }
    flush(fixture.take());
    names
}

/// Splits a listing row into its three columns. A name wider than its column
/// pushes the rest right by its overflow, which the split follows.
fn columns(line: &str) -> (String, String, String) {
    let fixture_end = column_end(line, 0, FIXTURE_WIDTH);
    let fixture = line[..fixture_end].trim().to_string();
    let rest = line.get(fixture_end + 1..).unwrap_or("");
    let variant_end = column_end(rest, 0, VARIANT_WIDTH);
    let variant = rest[..variant_end].trim().to_string();
    let test = rest.get(variant_end + 1..).unwrap_or("").trim().to_string();
    (fixture, variant, test)
}

/// End of a left-aligned `width` column starting at `start`: `start + width`,
/// or the end of a longer word.
fn column_end(line: &str, start: usize, width: usize) -> usize {
    let end = (start + width).min(line.len());
    match line[end..].find(' ') {
        Some(0) | None if end == line.len() => end,
        Some(0) => end,
        Some(n) => end + n,
        None => line.len(),
    }
}

/// `fixture.test` per test, or `fixture.variant.test` per variant and test.
fn case_names(fixture: &str, variants: &[String], tests: &[String]) -> Vec<String> {
    if variants.is_empty() {
        return tests.iter().map(|t| format!("{fixture}.{t}")).collect();
    }
    variants
        .iter()
        .flat_map(|v| tests.iter().map(move |t| format!("{fixture}.{v}.{t}")))
        .collect()
}

/// The result the program's KTAP output gives test `case`, if it has one.
///
/// Only top-level result lines count (nested KTAP is indented);
/// `# SKIP`/`# XFAIL` directives are case-insensitive, as in TAP.
pub fn result_of(ktap: &str, case: &str) -> Option<CaseResult> {
    ktap.lines().find_map(|line| {
        let (ok, rest) = if let Some(r) = line.strip_prefix("ok ") {
            (true, r)
        } else {
            (false, line.strip_prefix("not ok ")?)
        };
        let rest = rest.trim_start_matches(|c: char| c.is_ascii_digit());
        let rest = rest.strip_prefix(' ')?;
        let (name, directive) = match rest.split_once(" # ") {
            Some((n, d)) => (n.trim(), d.trim()),
            None => (rest.trim(), ""),
        };
        if name != case {
            return None;
        }
        Some(classify(ok, directive))
    })
}

fn classify(ok: bool, directive: &str) -> CaseResult {
    let (word, reason) = directive.split_once(' ').unwrap_or((directive, ""));
    let reason = reason.trim().to_string();
    match (ok, word.to_ascii_uppercase().as_str()) {
        (true, "SKIP") => CaseResult::Skip(reason),
        (true, "XFAIL") => CaseResult::Xfail(reason),
        (true, _) => CaseResult::Pass,
        (false, _) => CaseResult::Fail(directive.to_string()),
    }
}

/// The guest test's result for `case`, from the program's KTAP output and
/// exit status (failures name what the program said).
pub fn outcome(case: &str, ktap: &str, status: ExitStatus) -> TestResult {
    match result_of(ktap, case) {
        Some(CaseResult::Pass) => Ok(()),
        Some(CaseResult::Skip(why)) => Err(Stop::Skip(why)),
        Some(CaseResult::Xfail(why)) => Err(Stop::Xfail(why)),
        Some(CaseResult::Fail(d)) if d.is_empty() => crate::bail!("{case}: not ok ({status})"),
        Some(CaseResult::Fail(d)) => crate::bail!("{case}: not ok # {d} ({status})"),
        None => crate::bail!("{case}: no result line in the program's output ({status})"),
    }
}

/// The result of a program run whole: its own skip (`1..0 # SKIP why`, or exit
/// status 4 with its last line as the reason), a pass (exit 0), else a failure.
pub fn program_outcome(program: &str, output: &str, status: ExitStatus) -> TestResult {
    let plan_skip = output.lines().find_map(|l| {
        let d = l
            .strip_prefix("1..0")?
            .trim_start()
            .strip_prefix('#')?
            .trim();
        let (word, why) = d.split_once(' ').unwrap_or((d, ""));
        word.eq_ignore_ascii_case("SKIP")
            .then(|| why.trim().to_string())
    });
    let last = output
        .lines()
        .rev()
        .find(|l| !l.trim().is_empty())
        .unwrap_or("");
    match (plan_skip, status.code()) {
        (Some(why), _) => Err(Stop::Skip(why)),
        (None, Some(0)) => Ok(()),
        (None, Some(4)) => Err(Stop::Skip(last.trim().to_string())),
        (None, _) => crate::bail!("{program}: {status}: {}", last.trim()),
    }
}

/// Runs one case with the device's address in [`BDF_ENV`], forwards what the
/// program printed (stdout, then stderr) as diagnostics, and judges it (a whole
/// program by [`program_outcome`]).
///
/// The program writes into memory files, not pipes: a test child it leaves
/// stuck in the kernel (after an oops) keeps its descriptors open forever, so a
/// pipe would never reach end of file; the program itself still exits once its
/// harness gives up on that child. It inherits the caller's process group, so
/// the guest test's deadline (which kills that group) also ends a program
/// that hangs.
pub fn run_case(case: &Case, bdf: &str) -> TestResult {
    use anyhow::Context;
    let (stdout, stderr) = capture_files()?;
    let mut cmd = Command::new(&case.program);
    if !case.case.is_empty() {
        cmd.arg("-r").arg(&case.case);
    }
    let status = cmd
        .env(BDF_ENV, bdf)
        .stdin(Stdio::null())
        .stdout(stdout.try_clone().context("duplicating a memfd")?)
        .stderr(stderr.try_clone().context("duplicating a memfd")?)
        .status()
        .with_context(|| format!("running {}", case.program.display()))?;
    let stdout = read_back(stdout)?;
    let stderr = read_back(stderr)?;
    for line in stdout.lines().chain(stderr.lines()) {
        crate::isolate::diag(line);
    }
    if case.case.is_empty() {
        return program_outcome(
            &file_name(&case.program),
            &format!("{stdout}{stderr}"),
            status,
        );
    }
    outcome(&case.case, &stdout, status)
}

/// An anonymous in-memory file to capture output in.
fn capture_file(name: &str) -> nix::Result<fs::File> {
    nix::sys::memfd::memfd_create(name, nix::sys::memfd::MFdFlags::MFD_CLOEXEC).map(fs::File::from)
}

/// The two capture files, or the skip of a kernel without memfd_create.
fn capture_files() -> TestResult<(fs::File, fs::File)> {
    use anyhow::Context;
    match (
        capture_file("kselftest-stdout"),
        capture_file("kselftest-stderr"),
    ) {
        (Ok(out), Ok(err)) => Ok((out, err)),
        (Err(e), _) | (_, Err(e)) if crate::kernel::OptionalSyscall::compiled_out(e) => {
            Err(Stop::Skip(crate::kernel::MEMFD_CREATE.unavailable()))
        }
        (Err(e), _) | (_, Err(e)) => Err(e).context("memfd_create")?,
    }
}

/// Everything written into `file`, from its start.
fn read_back(mut file: fs::File) -> anyhow::Result<String> {
    use anyhow::Context;
    use std::io::{Read, Seek};
    file.rewind().context("rewinding a memfd")?;
    let mut bytes = Vec::new();
    file.read_to_end(&mut bytes).context("reading a memfd")?;
    Ok(String::from_utf8_lossy(&bytes).into_owned())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ktap::{KSFT_FAIL, KSFT_SKIP, KSFT_XFAIL};
    use rstest::rstest;
    use std::os::unix::process::ExitStatusExt;

    const SPLIT_LISTING: &str = "\
# FIXTURE            VARIANT                   TEST
global                                         \n\
--------------------------------------------------------------------------------
vfio_pci_pud_split                             munmap_pmd_tail
                                               munmap_unaligned_tail
";

    const VARIANT_LISTING: &str = "\
# FIXTURE            VARIANT                   TEST
global                                         plain_test
--------------------------------------------------------------------------------
layout               small                     maps
                     large                     unmaps
                     huge                      
--------------------------------------------------------------------------------
a_fixture_name_wider_than_twenty                           alone
";

    #[rstest]
    #[case::reproducer(SPLIT_LISTING, &[
        "vfio_pci_pud_split.munmap_pmd_tail",
        "vfio_pci_pud_split.munmap_unaligned_tail",
    ])]
    #[case::variants_times_tests(VARIANT_LISTING, &[
        "global.plain_test",
        "layout.small.maps", "layout.small.unmaps",
        "layout.large.maps", "layout.large.unmaps",
        "layout.huge.maps", "layout.huge.unmaps",
        "a_fixture_name_wider_than_twenty.alone",
    ])]
    #[case::empty("", &[])]
    #[case::only_global("# FIXTURE            VARIANT                   TEST\nglobal\n", &[])]
    fn listing(#[case] text: &str, #[case] want: &[&str]) {
        assert_eq!(parse_listing(text), want);
    }

    const SPLIT_OOPS: &str = "\
TAP version 13
1..1
# Starting 1 tests from 1 test cases.
#  RUN           vfio_pci_pud_split.munmap_unaligned_tail ...
# vfio_pci_pud_split.munmap_unaligned_tail: Test terminated by timeout
#          FAIL  vfio_pci_pud_split.munmap_unaligned_tail
not ok 1 vfio_pci_pud_split.munmap_unaligned_tail
# FAILED: 0 / 1 tests passed.
";

    #[rstest]
    #[case::pass("ok 1 f.t\n", "f.t", Some(CaseResult::Pass))]
    #[case::skip("ok 1 f.t # SKIP no device: pass a BDF\n", "f.t",
                 Some(CaseResult::Skip("no device: pass a BDF".into())))]
    #[case::skip_lower_case("ok 3 f.t # skip why\n", "f.t", Some(CaseResult::Skip("why".into())))]
    #[case::xfail("ok 2 f.t # XFAIL known\n", "f.t", Some(CaseResult::Xfail("known".into())))]
    #[case::fail("not ok 1 f.t\n", "f.t", Some(CaseResult::Fail(String::new())))]
    #[case::timeout("not ok 1 f.t # TIMEOUT\n", "f.t", Some(CaseResult::Fail("TIMEOUT".into())))]
    #[case::oopsed_case(
        SPLIT_OOPS,
        "vfio_pci_pud_split.munmap_unaligned_tail",
        Some(CaseResult::Fail(String::new()))
    )]
    #[case::other_case("ok 1 f.other\n", "f.t", None)]
    #[case::prefix_is_not_the_name("ok 1 f.t_longer\n", "f.t", None)]
    #[case::nested_line_ignored("    ok 1 f.t\n", "f.t", None)]
    #[case::diagnostic_ignored("# ok 1 f.t\n", "f.t", None)]
    #[case::nothing("", "f.t", None)]
    fn results(#[case] ktap: &str, #[case] case: &str, #[case] want: Option<CaseResult>) {
        assert_eq!(result_of(ktap, case), want);
    }

    /// A result as the harness reports it: the exit status and the message.
    fn seen(r: TestResult) -> Result<(), (i32, String)> {
        r.map_err(|stop| (stop.exit_code(), stop.to_string()))
    }

    fn want(r: Result<(), (i32, &str)>) -> Result<(), (i32, String)> {
        r.map_err(|(code, message)| (code, message.to_string()))
    }

    #[rstest]
    #[case::pass("ok 1 f.t\n", 0, Ok(()))]
    #[case::skip("ok 1 f.t # SKIP no huge pfnmap\n", 0, Err((KSFT_SKIP, "no huge pfnmap")))]
    #[case::xfail("ok 1 f.t # XFAIL at 4 KiB\n", 0, Err((KSFT_XFAIL, "at 4 KiB")))]
    #[case::fail("not ok 1 f.t\n", 1, Err((KSFT_FAIL, "f.t: not ok (exit status: 1)")))]
    #[case::timeout(
        "not ok 1 f.t # TIMEOUT\n",
        1,
        Err((KSFT_FAIL, "f.t: not ok # TIMEOUT (exit status: 1)"))
    )]
    #[case::silent(
        "",
        1,
        Err((KSFT_FAIL, "f.t: no result line in the program's output (exit status: 1)"))
    )]
    fn outcomes(#[case] ktap: &str, #[case] code: i32, #[case] expected: Result<(), (i32, &str)>) {
        let got = outcome("f.t", ktap, ExitStatus::from_raw(code << 8));
        assert_eq!(seen(got), want(expected));
    }

    #[rstest]
    #[case("timeout=120\n", Some(120))]
    #[case("# comment\ntimeout = 7\n", None)]
    #[case("other=1\ntimeout=7\n", Some(7))]
    #[case("", None)]
    fn settings(#[case] text: &str, #[case] secs: Option<u64>) {
        assert_eq!(parse_settings_timeout(text), secs.map(Duration::from_secs));
    }

    /// A fake kselftest program: a shell script answering `-l` and `-r`.
    fn fake_program(dir: &Path, name: &str, body: &str) -> PathBuf {
        let p = dir.join(name);
        // Written by a child process, so this multi-threaded test process never
        // holds the executable open for writing (ETXTBSY when another test forks).
        let status = Command::new("sh")
            .arg("-c")
            .arg(format!(
                "cat > '{}' && chmod 755 '{}'",
                p.display(),
                p.display()
            ))
            .stdin(Stdio::piped())
            .spawn()
            .and_then(|mut c| {
                use std::io::Write;
                c.stdin.take().unwrap().write_all(body.as_bytes())?;
                c.wait()
            })
            .unwrap();
        assert!(status.success());
        p
    }

    #[test]
    fn discovers_and_runs_cases_of_a_program() {
        let t = tempfile::tempdir().unwrap();
        let coll = t.path().join("repro");
        fs::create_dir(&coll).unwrap();
        fs::write(coll.join("settings"), "timeout=9\n").unwrap();
        let script = "#!/bin/sh\n\
            if [ \"$1\" = -l ]; then\n\
            printf '# FIXTURE            VARIANT                   TEST\\n' >&2\n\
            printf '%-20s %-25s %s\\n' fx '' one >&2\n\
            printf '%-20s %-25s %s\\n' '' '' two >&2\n\
            exit 4; fi\n\
            echo 'TAP version 13'; echo '1..1'\n\
            echo \"# bdf $VFIO_SELFTESTS_BDF\"\n\
            if [ \"$2\" = fx.one ]; then echo 'ok 1 fx.one'; exit 0; fi\n\
            echo 'not ok 1 fx.two'; echo 'oops' >&2; exit 1\n";
        fake_program(&coll, "prog_test", script);
        let cases = discover(t.path()).unwrap();
        let names: Vec<&str> = cases.iter().map(|c| c.name.as_str()).collect();
        assert_eq!(names, ["repro.prog_test.fx.one", "repro.prog_test.fx.two"]);
        assert_eq!(cases[0].timeout, Duration::from_secs(9));
        assert_eq!(cases[1].case, "fx.two");

        run_case(&cases[0], "0000:00:03.0").unwrap();
        let err = run_case(&cases[1], "0000:00:03.0").unwrap_err().to_string();
        assert_eq!(err, "fx.two: not ok (exit status: 1)");
    }

    #[rstest]
    #[case::plan_skip("1..0 # SKIP SR-IOV may not be supported by the PF: x\n", 4,
                      Err((KSFT_SKIP, "SR-IOV may not be supported by the PF: x")))]
    #[case::exit_skip("No driver found for device x\n", 4,
                      Err((KSFT_SKIP, "No driver found for device x")))]
    #[case::pass("# PASSED: 3 / 3 tests passed.\n", 0, Ok(()))]
    #[case::fail(
        "  Failed to open directory\n\n",
        1,
        Err((KSFT_FAIL, "p: exit status: 1: Failed to open directory"))
    )]
    fn whole_programs(
        #[case] out: &str,
        #[case] code: i32,
        #[case] expected: Result<(), (i32, &str)>,
    ) {
        let got = program_outcome("p", out, ExitStatus::from_raw(code << 8));
        assert_eq!(seen(got), want(expected));
    }

    #[test]
    fn stored_listings_name_the_cases_and_unlisted_programs_run_whole() {
        let t = tempfile::tempdir().unwrap();
        let coll = t.path().join("vfio-selftests");
        fs::create_dir(&coll).unwrap();
        // Neither answers -l: the stored files decide.
        fake_program(&coll, "listed_test", "#!/bin/sh\nexit 1\n");
        fs::write(coll.join("listed_test.list"), VARIANT_LISTING).unwrap();
        let whole = "#!/bin/sh\necho '1..0 # SKIP no VFs'; exit 4\n";
        fake_program(&coll, "whole_test", whole);
        fs::write(
            coll.join("whole_test.unlisted"),
            "`whole_test -l` (exit status: 1)",
        )
        .unwrap();
        let cases = discover(t.path()).unwrap();
        let names: Vec<&str> = cases.iter().map(|c| c.name.as_str()).collect();
        assert_eq!(names.len(), 9, "{names:?}");
        assert_eq!(names[1], "vfio-selftests.listed_test.layout.small.maps");
        assert_eq!(names[8], "vfio-selftests.whole_test");
        assert_eq!(cases[8].collection, "vfio-selftests");
        assert_eq!(
            seen(run_case(&cases[8], "0000:00:03.0")),
            Err((KSFT_SKIP, "no VFs".to_string()))
        );
    }

    #[test]
    fn a_program_without_cases_is_an_error() {
        let t = tempfile::tempdir().unwrap();
        let coll = t.path().join("c");
        fs::create_dir(&coll).unwrap();
        fake_program(&coll, "silent", "#!/bin/sh\nexit 0\n");
        let err = discover(t.path()).unwrap_err().to_string();
        assert!(
            err.ends_with("silent -l lists no test (not a kselftest_harness program?)"),
            "{err}"
        );
    }
}
