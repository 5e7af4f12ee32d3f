//! The patch series a built kernel applies, and why a patch did not apply.
//!
//! A series is a directory holding `.patch` files (`patch -p1` / `git apply` format)
//! and a `series` file naming them in order, one per line. Comment lines start with
//! `#`; the header line `# based-on: <package> <version>` records the Debian source
//! the series was written against, so a failure can say that a newer upload moved
//! the code.

use std::fmt;
use std::fs;
use std::path::{Path, PathBuf};
use std::process::Command;

use crate::command::{display, require_tool, run_unchecked};
use crate::error::{Error, IoContext, Result};

/// The name of the file listing the patches in order.
pub const SERIES_FILE: &str = "series";

/// A patch series read from its directory.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Series {
    /// The directory holding `series` and the patches.
    pub dir: PathBuf,
    /// The Debian source the series was written against (`package version`).
    pub based_on: Option<String>,
    /// The patch files, in order.
    pub patches: Vec<PathBuf>,
}

impl Series {
    /// Reads `dir/series`; every patch it names must exist.
    pub fn read(dir: &Path) -> Result<Self> {
        let path = dir.join(SERIES_FILE);
        let text = fs::read_to_string(&path).at("reading patch series", &path)?;
        let series = Self::parse(dir, &text);
        if let Some(missing) = series.patches.iter().find(|p| !p.is_file()) {
            return Err(Error::Parse {
                what: format!("patch series {}", path.display()),
                detail: format!("{} is listed but missing", missing.display()),
            });
        }
        Ok(series)
    }

    /// Parses the text of a `series` file of the directory `dir`.
    pub fn parse(dir: &Path, text: &str) -> Self {
        let mut based_on = None;
        let mut patches = Vec::new();
        for line in text.lines().map(str::trim) {
            if let Some(comment) = line.strip_prefix('#') {
                if let Some(base) = comment.trim().strip_prefix("based-on:") {
                    based_on = Some(base.trim().to_owned());
                }
            } else if !line.is_empty() {
                // quilt allows options after the name (e.g. -p1); we only take -p1.
                let name = line.split_whitespace().next().unwrap_or(line);
                patches.push(dir.join(name));
            }
        }
        Self {
            dir: dir.to_owned(),
            based_on,
            patches,
        }
    }

    /// The series' name: its directory's (`reference`, `fixes`).
    pub fn name(&self) -> String {
        self.dir
            .file_name()
            .unwrap_or_default()
            .to_string_lossy()
            .into_owned()
    }

    /// Each patch as `<series>/<file name>`, in order.
    pub fn names(&self) -> Vec<String> {
        let series = self.name();
        self.patches
            .iter()
            .map(|p| {
                format!(
                    "{series}/{}",
                    p.file_name().unwrap_or_default().to_string_lossy()
                )
            })
            .collect()
    }

    /// The bytes that identify the series for cache keys: each patch's name (with
    /// the series' name, so two series never collide) and content, in order.
    pub fn fingerprint_parts(&self) -> Result<Vec<(String, Vec<u8>)>> {
        self.names()
            .into_iter()
            .zip(&self.patches)
            .map(|(name, p)| Ok((name, fs::read(p).at("reading patch", p)?)))
            .collect()
    }

    /// Applies the series to the source tree `tree`, in order, with `patch -p1`
    /// and no fuzz (a hunk applies only where its context matches exactly, possibly
    /// at an offset). `source` names the tree's Debian source for errors.
    pub fn apply(&self, tree: &Path, source: &str, progress: &dyn Fn(&str)) -> Result<()> {
        let program = require_tool("patch", "patch")?;
        for (i, patch) in self.patches.iter().enumerate() {
            progress(&format!(
                "applying patch {}/{}: {}",
                i + 1,
                self.patches.len(),
                file_name(patch)
            ));
            let mut cmd = patch_command(&program, tree, patch, Mode::Apply);
            let output = run_unchecked(&mut cmd)?;
            if output.status.success() {
                continue;
            }
            return Err(Error::PatchFailed {
                patch: patch.clone(),
                position: i + 1,
                count: self.patches.len(),
                source_version: source.to_owned(),
                based_on: self.based_on.clone().unwrap_or_else(|| "unknown".into()),
                problems: problems_of(&cmd, &output),
            });
        }
        Ok(())
    }

    /// Applies each patch of the series that applies to `tree` (a tree the
    /// series was not written for, e.g. a developer's newer or older kernel),
    /// and goes on past the others: a patch whose reverse applies is already in
    /// the tree; one that applies neither way is left out. Each patch is checked
    /// with `--dry-run` first, so a patch that does not apply changes nothing.
    /// `progress` gets one line per patch saying which it was.
    pub fn apply_where_possible(
        &self,
        tree: &Path,
        progress: &dyn Fn(&str),
    ) -> Result<Vec<PatchOutcome>> {
        let program = require_tool("patch", "patch")?;
        let mut outcomes = Vec::new();
        for (i, patch) in self.patches.iter().enumerate() {
            let outcome = apply_one_if_possible(&program, tree, patch)?;
            progress(&format!(
                "patch {}/{} {}: {outcome}",
                i + 1,
                self.patches.len(),
                file_name(patch)
            ));
            outcomes.push(outcome);
        }
        Ok(outcomes)
    }
}

/// What [`Series::apply_where_possible`] did with one patch.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PatchOutcome {
    /// The patch applied.
    Applied,
    /// The tree already has the change: the patch applies in reverse.
    AlreadyApplied,
    /// The patch applies neither way; left out.
    DoesNotApply(Vec<PatchProblem>),
}

impl fmt::Display for PatchOutcome {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Applied => f.write_str("applied"),
            Self::AlreadyApplied => {
                f.write_str("already in the tree (it applies in reverse); skipped")
            }
            Self::DoesNotApply(problems) => {
                let list: Vec<String> = problems.iter().map(ToString::to_string).collect();
                write!(
                    f,
                    "does not apply to this tree, building without it ({})",
                    list.join("; ")
                )
            }
        }
    }
}

/// Applies `patch` when a dry run says it applies; else tells why not.
fn apply_one_if_possible(program: &Path, tree: &Path, patch: &Path) -> Result<PatchOutcome> {
    let mut check = patch_command(program, tree, patch, Mode::Check);
    let forward = run_unchecked(&mut check)?;
    if forward.status.success() {
        let mut cmd = patch_command(program, tree, patch, Mode::Apply);
        let output = run_unchecked(&mut cmd)?;
        if !output.status.success() {
            // The dry run said it applies: a failure now is not the tree's.
            return Err(crate::command::failure(&cmd, &output));
        }
        return Ok(PatchOutcome::Applied);
    }
    let mut reverse = patch_command(program, tree, patch, Mode::CheckReverse);
    if run_unchecked(&mut reverse)?.status.success() {
        return Ok(PatchOutcome::AlreadyApplied);
    }
    Ok(PatchOutcome::DoesNotApply(problems_of(&check, &forward)))
}

/// How [`patch_command`] runs `patch`.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Mode {
    /// Apply for real.
    Apply,
    /// Check that it would apply (`--dry-run`).
    Check,
    /// Check that it would apply in reverse, i.e. that the tree has it.
    CheckReverse,
}

/// `patch -p1 --fuzz=0 -d <tree> -i <patch>` with no backup or reject files
/// left in the tree. Forward, `--forward --batch` refuses a patch that looks
/// applied already; in reverse, `--force` keeps patch from second-guessing the
/// direction (`--batch` would flip a patch that "looks unreversed").
fn patch_command(program: &Path, tree: &Path, patch: &Path, mode: Mode) -> Command {
    let mut cmd = Command::new(program);
    cmd.args([
        "-p1",
        "--fuzz=0",
        "--no-backup-if-mismatch",
        "--reject-file=-",
    ]);
    match mode {
        Mode::Apply => cmd.args(["--forward", "--batch"]),
        Mode::Check => cmd.args(["--forward", "--batch", "--dry-run"]),
        Mode::CheckReverse => cmd.args(["--reverse", "--force", "--dry-run"]),
    };
    cmd.arg("-d")
        .arg(tree)
        .arg("-i")
        .arg(patch)
        .env("LC_ALL", "C");
    cmd
}

/// The problems a failed `patch` run reported, or its whole output when none
/// is recognised.
fn problems_of(cmd: &Command, output: &std::process::Output) -> Vec<PatchProblem> {
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    let mut found = problems(&text);
    if found.is_empty() {
        found.push(PatchProblem::Other {
            detail: format!("`{}` failed: {}", display(cmd), text.trim()),
        });
    }
    found
}

/// A patch's file name, for progress lines.
fn file_name(patch: &Path) -> String {
    patch
        .file_name()
        .unwrap_or_default()
        .to_string_lossy()
        .into_owned()
}

/// One reason a patch did not apply, from GNU patch's messages.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PatchProblem {
    /// A hunk's context was not found.
    HunkFailed {
        /// The file patched.
        file: String,
        /// The hunk's number in that file's part of the patch (from 1).
        hunk: u32,
        /// Where patch looked for it (the hunk header's line, shifted by what the
        /// earlier hunks of the same patch added or removed).
        line: u32,
    },
    /// The file the patch changes does not exist in the tree.
    FileMissing {
        /// The file, as the patch names it.
        file: String,
    },
    /// The change is already in the tree (or the patch is reversed).
    AlreadyApplied {
        /// The file patched.
        file: String,
    },
    /// Anything else patch complained about (malformed patch...).
    Other {
        /// patch's message.
        detail: String,
    },
}

impl fmt::Display for PatchProblem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::HunkFailed { file, hunk, line } => {
                write!(
                    f,
                    "{file}: hunk #{hunk} does not apply (expected at line {line})"
                )
            }
            Self::FileMissing { file } => write!(f, "{file}: no such file in the source"),
            Self::AlreadyApplied { file } => {
                write!(f, "{file}: already applied (or reversed)")
            }
            Self::Other { detail } => f.write_str(detail),
        }
    }
}

/// The problems GNU patch reports in `output` (its stdout and stderr).
pub fn problems(output: &str) -> Vec<PatchProblem> {
    let mut found = Vec::new();
    let mut file = String::new();
    // The file named by the diff header patch echoes before "can't find file".
    let mut header_file = String::new();
    for line in output.lines() {
        // A dry run says "checking file" where a real one says "patching file".
        let named = line
            .strip_prefix("patching file ")
            .or_else(|| line.strip_prefix("checking file "));
        if let Some(f) = named {
            file = unquote(f);
        } else if let Some(f) = line
            .strip_prefix("|+++ ")
            .or_else(|| line.strip_prefix("|--- "))
        {
            let name = f.split('\t').next().unwrap_or(f).trim();
            if name != "/dev/null" {
                header_file = strip_one_component(name);
            }
        } else if let Some(rest) = line.strip_prefix("Hunk #") {
            if let Some((hunk, line_no)) = parse_failed_hunk(rest) {
                found.push(PatchProblem::HunkFailed {
                    file: file.clone(),
                    hunk,
                    line: line_no,
                });
            }
        } else if line.starts_with("can't find file to patch") {
            header_file.clear();
        } else if line.starts_with("No file to patch.") {
            found.push(PatchProblem::FileMissing {
                file: header_file.clone(),
            });
        } else if line.starts_with("Reversed (or previously applied) patch detected") {
            found.push(PatchProblem::AlreadyApplied { file: file.clone() });
        } else if let Some(detail) = line.strip_prefix("patch: **** ") {
            found.push(PatchProblem::Other {
                detail: detail.to_owned(),
            });
        }
    }
    found
}

/// `N FAILED at L.` (after "Hunk #") into `(N, L)`.
fn parse_failed_hunk(rest: &str) -> Option<(u32, u32)> {
    let (number, rest) = rest.split_once(' ')?;
    let at = rest.strip_prefix("FAILED at ")?;
    let line = at.trim_end_matches('.').split_whitespace().next()?;
    Some((number.parse().ok()?, line.parse().ok()?))
}

/// patch quotes names with unusual characters: `patching file 'a b'`.
fn unquote(name: &str) -> String {
    name.trim()
        .trim_matches(|c| c == '\'' || c == '"')
        .to_owned()
}

/// `a/mm/mmap.c` → `mm/mmap.c` (what `-p1` strips).
fn strip_one_component(name: &str) -> String {
    name.split_once('/')
        .map_or(name, |(_, rest)| rest)
        .to_owned()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn series_reads_base_and_order() {
        let s = Series::parse(
            Path::new("/p"),
            "# title\n# based-on: linux-source-7.2 7.2.13-1\n\n0002-b.patch\n0001-a.patch -p1\n",
        );
        assert_eq!(s.based_on.as_deref(), Some("linux-source-7.2 7.2.13-1"));
        assert_eq!(
            s.patches,
            [PathBuf::from("/p/0002-b.patch"), "/p/0001-a.patch".into()]
        );
    }

    #[rstest::rstest]
    #[case::reference(crate::kernel::build::reference_patches(), "reference", 4)]
    #[case::fixes(crate::kernel::build::fix_patches(), "fixes", 2)]
    fn shipped_series_are_complete(
        #[case] dir: PathBuf,
        #[case] name: &str,
        #[case] at_least: usize,
    ) {
        let s = Series::read(&dir).unwrap();
        assert_eq!(s.name(), name);
        assert!(s.based_on.clone().unwrap().starts_with("linux-source-"));
        assert!(s.patches.len() >= at_least);
        assert!(s.names().iter().all(|n| n.starts_with(&format!("{name}/"))));
    }

    const FAILED_HUNK: &str = "\
patching file include/linux/fs.h
patching file mm/mmap.c
Hunk #1 succeeded at 701 (offset 11 lines).
Hunk #2 FAILED at 813.
Hunk #3 FAILED at 852.
2 out of 3 hunks FAILED
";

    const MISSING_FILE: &str = "\
can't find file to patch at input line 5
Perhaps you used the wrong -p or --strip option?
The text leading up to this was:
--------------------------
|diff --git a/drivers/vfio/vfio_main.c b/drivers/vfio/vfio_main.c
|index ed538ae..58d1060 100644
|--- a/drivers/vfio/vfio_main.c
|+++ b/drivers/vfio/vfio_main.c
--------------------------
No file to patch.  Skipping patch.
1 out of 1 hunk ignored
";

    #[rstest::rstest]
    #[case(FAILED_HUNK, vec![
        PatchProblem::HunkFailed { file: "mm/mmap.c".into(), hunk: 2, line: 813 },
        PatchProblem::HunkFailed { file: "mm/mmap.c".into(), hunk: 3, line: 852 },
    ])]
    #[case(MISSING_FILE, vec![
        PatchProblem::FileMissing { file: "drivers/vfio/vfio_main.c".into() },
    ])]
    #[case(
        "patching file mm/mmap.c\nReversed (or previously applied) patch detected!  Skipping patch.\n1 out of 1 hunk ignored\n",
        vec![PatchProblem::AlreadyApplied { file: "mm/mmap.c".into() }]
    )]
    #[case(
        "patch: **** malformed patch at line 12: @@ -1 +1 @@ x\n",
        vec![PatchProblem::Other { detail: "malformed patch at line 12: @@ -1 +1 @@ x".into() }]
    )]
    #[case("patching file mm/mmap.c\nHunk #1 succeeded at 3 (offset 1 line).\n", vec![])]
    fn patch_output_is_understood(#[case] output: &str, #[case] expected: Vec<PatchProblem>) {
        assert_eq!(problems(output), expected);
    }

    /// Applies real patches with GNU patch to a small tree: one that applies, one
    /// whose second hunk no longer matches, and checks the error names both.
    #[test]
    fn failing_patch_is_named_with_its_hunk() {
        let tmp = tempfile::tempdir().unwrap();
        let tree = tmp.path().join("src");
        fs::create_dir_all(tree.join("mm")).unwrap();
        let lines: String = (1..=40).map(|i| format!("line {i}\n")).collect();
        fs::write(tree.join("mm/a.c"), &lines).unwrap();
        let dir = tmp.path().join("patches");
        fs::create_dir_all(&dir).unwrap();
        fs::write(
            dir.join("series"),
            "# based-on: linux-source-9.9 9.9.1-1\n1.patch\n2.patch\n",
        )
        .unwrap();
        fs::write(
            dir.join("1.patch"),
            "--- a/mm/a.c\n+++ b/mm/a.c\n@@ -1,3 +1,4 @@\n line 1\n+added\n line 2\n line 3\n",
        )
        .unwrap();
        fs::write(
            dir.join("2.patch"),
            "--- a/mm/a.c\n+++ b/mm/a.c\n@@ -5,3 +5,3 @@\n line 4\n-line 5\n+LINE 5\n line 6\n\
             @@ -30,3 +30,3 @@\n line 29\n-line XX\n+line 30\n line 31\n",
        )
        .unwrap();
        let series = Series::read(&dir).unwrap();
        let err = series
            .apply(&tree, "linux-source-9.9 9.9.2-1", &|_| {})
            .unwrap_err();
        let Error::PatchFailed {
            position, problems, ..
        } = &err
        else {
            panic!("{err:?}")
        };
        assert_eq!(*position, 2);
        assert_eq!(
            problems,
            &[PatchProblem::HunkFailed {
                file: "mm/a.c".into(),
                hunk: 2,
                line: 30
            }]
        );
        let text = err.to_string();
        for part in ["2.patch", "2/2", "mm/a.c: hunk #2", "9.9.2-1", "9.9.1-1"] {
            assert!(text.contains(part), "{part} not in: {text}");
        }
        assert!(!tree.join("mm/a.c.orig").exists() && !tree.join("mm/a.c.rej").exists());
    }

    /// A tree of one 40-line file, and a series of the patches `patches`
    /// (name, text) in order.
    fn tree_and_series(patches: &[(&str, &str)]) -> (tempfile::TempDir, PathBuf, Series) {
        let tmp = tempfile::tempdir().unwrap();
        let tree = tmp.path().join("src");
        fs::create_dir_all(tree.join("mm")).unwrap();
        let lines: String = (1..=40).map(|i| format!("line {i}\n")).collect();
        fs::write(tree.join("mm/a.c"), &lines).unwrap();
        let dir = tmp.path().join("patches");
        fs::create_dir_all(&dir).unwrap();
        let mut series = String::new();
        for (name, text) in patches {
            fs::write(dir.join(name), text).unwrap();
            series.push_str(&format!("{name}\n"));
        }
        fs::write(dir.join("series"), series).unwrap();
        (tmp, tree, Series::read(&dir).unwrap())
    }

    const ADDS_AFTER_LINE_1: &str =
        "--- a/mm/a.c\n+++ b/mm/a.c\n@@ -1,3 +1,4 @@\n line 1\n+added\n line 2\n line 3\n";
    const CONFLICTS: &str =
        "--- a/mm/a.c\n+++ b/mm/a.c\n@@ -29,3 +29,3 @@\n line 29\n-line XX\n+line YY\n line 31\n";
    const RENAMES_LINE_20: &str =
        "--- a/mm/a.c\n+++ b/mm/a.c\n@@ -19,3 +19,3 @@\n line 19\n-line 20\n+LINE 20\n line 21\n";

    /// A developer's tree: one patch applies, one is already in it (applied
    /// twice in the series), one conflicts; each is said, none stops the rest,
    /// and the conflicting one leaves the tree untouched.
    #[rstest::rstest]
    #[case::applies(&[("1.patch", ADDS_AFTER_LINE_1)], vec![PatchOutcome::Applied])]
    #[case::already_applied(
        &[("1.patch", ADDS_AFTER_LINE_1), ("2.patch", ADDS_AFTER_LINE_1)],
        vec![PatchOutcome::Applied, PatchOutcome::AlreadyApplied]
    )]
    #[case::conflicts_then_goes_on(
        &[("1.patch", CONFLICTS), ("2.patch", RENAMES_LINE_20)],
        vec![
            PatchOutcome::DoesNotApply(vec![PatchProblem::HunkFailed {
                file: "mm/a.c".into(), hunk: 1, line: 29
            }]),
            PatchOutcome::Applied,
        ]
    )]
    fn a_developer_tree_gets_the_patches_that_apply(
        #[case] patches: &[(&str, &str)],
        #[case] want: Vec<PatchOutcome>,
    ) {
        let (_tmp, tree, series) = tree_and_series(patches);
        let lines = std::cell::RefCell::new(Vec::new());
        let got = series
            .apply_where_possible(&tree, &|l| lines.borrow_mut().push(l.to_owned()))
            .unwrap();
        assert_eq!(got, want);
        let lines = lines.into_inner();
        assert_eq!(lines.len(), patches.len());
        for (line, (name, _)) in lines.iter().zip(patches) {
            assert!(line.contains(name), "{line}");
        }
        let text = fs::read_to_string(tree.join("mm/a.c")).unwrap();
        assert!(text.contains("line 29\nline 30\n"), "{text}");
        assert!(text.matches("added").count() <= 1, "applied twice: {text}");
        let leftovers: Vec<_> = fs::read_dir(tree.join("mm")).unwrap().collect();
        assert_eq!(leftovers.len(), 1, "no .orig or .rej files");
    }

    #[test]
    fn outcomes_say_what_happened() {
        assert_eq!(PatchOutcome::Applied.to_string(), "applied");
        assert!(PatchOutcome::AlreadyApplied
            .to_string()
            .contains("already in the tree"));
        let no = PatchOutcome::DoesNotApply(vec![PatchProblem::FileMissing { file: "x.c".into() }]);
        assert!(no.to_string().contains("x.c: no such file"), "{no}");
    }
}
