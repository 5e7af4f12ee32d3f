//! Reading a saved `results.json` (of one kernel or a matrix) back, for
//! `--baseline` and `runner compare`.
//!
//! Only what a verdict comparison needs is read, and every field but the test
//! names and verdicts may be missing, so results written by older runners (or
//! written by hand for a test) still load.

use crate::console::TroubleKind;
use crate::ktap::Verdict;
use crate::report::{Outcome, Results, Run};
use serde::{Deserialize, Serialize};
use std::path::{Path, PathBuf};

/// Why saved results could not be read.
#[derive(Debug, thiserror::Error)]
pub enum LoadError {
    /// The file (or the `results.json` of a directory) does not exist or cannot be read.
    #[error("cannot read {path}: {source}")]
    Unreadable {
        /// The file.
        path: PathBuf,
        /// The I/O error.
        source: std::io::Error,
    },
    /// The file is not a results document.
    #[error("{path} is not a bigbar results.json: {source}")]
    Malformed {
        /// The file.
        path: PathBuf,
        /// What serde found wrong, with line and column.
        source: serde_json::Error,
    },
    /// The document has no runs.
    #[error("{path} holds no runs")]
    Empty {
        /// The file.
        path: PathBuf,
    },
}

/// A results document reduced to its verdicts.
#[derive(Clone, Debug, Deserialize, Serialize, PartialEq)]
pub struct SavedResults {
    /// One entry per kernel.
    pub runs: Vec<SavedRun>,
}

/// One kernel's run, reduced to its verdicts.
#[derive(Clone, Debug, Deserialize, Serialize, PartialEq)]
pub struct SavedRun {
    /// The kernel.
    pub kernel: SavedKernel,
    /// How the run ended.
    #[serde(default)]
    pub outcome: SavedOutcome,
    /// The results.
    #[serde(default)]
    pub tests: Vec<SavedTest>,
    /// The kernel's reports; only oopses and panics matter here.
    #[serde(default)]
    pub kernel_reports: Vec<SavedReport>,
}

/// The kernel of a saved run.
#[derive(Clone, Debug, Deserialize, Serialize, PartialEq)]
pub struct SavedKernel {
    /// The `--kernel` spec.
    pub spec: String,
    /// `uname -r`, when known.
    #[serde(default)]
    pub release: Option<String>,
    /// `group` or `cdev`; results from before the option say nothing: `group`.
    #[serde(default = "default_vfio_api")]
    pub vfio_api: String,
}

fn default_vfio_api() -> String {
    crate::cli::VfioApi::Group.name().to_string()
}

impl SavedKernel {
    /// The spec, with the interface when it is not the default.
    pub fn label(&self) -> String {
        crate::cli::run_label(&self.spec, &self.vfio_api)
    }
}

/// How a saved run ended (`completed`, `kernel_crashed`, `timed_out`, `infrastructure`).
#[derive(Clone, Debug, Default, Deserialize, Serialize, PartialEq)]
pub struct SavedOutcome {
    /// The status word.
    pub status: String,
    /// Its reason, if any.
    #[serde(default)]
    pub reason: Option<String>,
}

/// One saved test result.
#[derive(Clone, Debug, Deserialize, Serialize, PartialEq)]
pub struct SavedTest {
    /// Test name.
    pub name: String,
    /// Verdict.
    pub result: Verdict,
    /// The one-line reason (empty for a pass).
    #[serde(default)]
    pub reason: String,
}

/// One saved kernel report.
#[derive(Clone, Debug, Deserialize, Serialize, PartialEq)]
pub struct SavedReport {
    /// `oops`, `panic`, `warning`, `hung_task`.
    pub kind: TroubleKind,
    /// The test in flight, if known.
    #[serde(default)]
    pub during_test: Option<String>,
}

impl SavedRun {
    /// Whether the run ended with an oops or panic.
    pub fn crashed(&self) -> bool {
        self.outcome.status == "kernel_crashed"
    }

    /// The test in flight at each oops or panic (`None`: outside any test).
    pub fn crash_tests(&self) -> Vec<Option<String>> {
        self.kernel_reports
            .iter()
            .filter(|r| matches!(r.kind, TroubleKind::Oops | TroubleKind::Panic))
            .map(|r| r.during_test.clone())
            .collect()
    }
}

impl From<&Run> for SavedRun {
    fn from(run: &Run) -> Self {
        // Serialising the live record gives exactly what a saved one holds.
        let value = serde_json::to_value(run).expect("a run serialises");
        serde_json::from_value(value).expect("a run reads back")
    }
}

impl From<&Results> for SavedResults {
    fn from(results: &Results) -> Self {
        SavedResults {
            runs: results.runs.iter().map(SavedRun::from).collect(),
        }
    }
}

impl From<&Outcome> for SavedOutcome {
    fn from(o: &Outcome) -> Self {
        let v = serde_json::to_value(o).expect("an outcome serialises");
        serde_json::from_value(v).expect("an outcome reads back")
    }
}

/// The `results.json` that `path` names: the file itself, or the one in an
/// `--out` directory.
pub fn results_path(path: &Path) -> PathBuf {
    if path.is_dir() {
        path.join("results.json")
    } else {
        path.to_path_buf()
    }
}

/// Reads the results at `path` (a `results.json` or an `--out` directory).
pub fn load(path: &Path) -> Result<SavedResults, LoadError> {
    let path = results_path(path);
    let text = std::fs::read_to_string(&path).map_err(|source| LoadError::Unreadable {
        path: path.clone(),
        source,
    })?;
    from_str(&text, &path)
}

/// Parses a results document read from `path` (named in errors).
pub fn from_str(text: &str, path: &Path) -> Result<SavedResults, LoadError> {
    let results: SavedResults =
        serde_json::from_str(text).map_err(|source| LoadError::Malformed {
            path: path.to_path_buf(),
            source,
        })?;
    if results.runs.is_empty() {
        return Err(LoadError::Empty {
            path: path.to_path_buf(),
        });
    }
    Ok(results)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::console::KernelReport;
    use crate::ktap::TestResult;

    #[test]
    fn a_live_run_reads_back() {
        let mut run = Run::blank("debian:sid", Outcome::KernelCrashed("Oops".into()));
        run.tests = vec![TestResult::new("f6.x", Verdict::Fail, "f6.x: oops")];
        run.kernel_reports = vec![KernelReport {
            kind: TroubleKind::Oops,
            text: "Oops".into(),
            during_test: Some("f6.x".into()),
        }];
        let saved = SavedRun::from(&run);
        assert!(saved.crashed());
        assert_eq!(saved.crash_tests(), [Some("f6.x".to_string())]);
        assert_eq!(saved.tests[0].reason, "oops");
    }

    #[test]
    fn minimal_documents_load_and_bad_ones_are_named() {
        let p = Path::new("r.json");
        let ok = from_str(
            r#"{"runs":[{"kernel":{"spec":"s"},"tests":[{"name":"a","result":"pass"}]}]}"#,
            p,
        )
        .unwrap();
        assert_eq!(ok.runs[0].tests[0].result, Verdict::Pass);
        let e = from_str(
            r#"{"runs":[{"kernel":{"spec":"s"},"tests":[{"name":"a","result":"maybe"}]}]}"#,
            p,
        )
        .unwrap_err()
        .to_string();
        assert!(e.starts_with("r.json is not a bigbar results.json"), "{e}");
        assert!(e.contains("maybe"), "{e}");
        let e = from_str(r#"{"runs":[]}"#, p).unwrap_err().to_string();
        assert_eq!(e, "r.json holds no runs");
        let e = load(Path::new("/nonexistent/x.json"))
            .unwrap_err()
            .to_string();
        assert!(e.starts_with("cannot read /nonexistent/x.json"), "{e}");
    }
}
