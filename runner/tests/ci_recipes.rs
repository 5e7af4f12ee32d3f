//! The CI recipes of `ci/` (README "CI recipes"): the GitHub workflow and the
//! GitLab job parse and pass their official schemas, their shell steps run
//! here for real, and they run bigbar with the README's CI options. No guest:
//! the one expensive command, the runner itself, is replaced by a stub through
//! `BIGBAR_RUNNER`, the hook `ci/steps/run.sh` offers for that.
//!
//! The linter is `check-jsonschema` from PyPI, with the schemas it ships
//! (`vendor.github-workflows`, `vendor.gitlab-ci`: no network when linting).
//! It is installed once into a virtualenv in the user's artefact store and
//! reused by later runs and clones; installing needs python3 with its venv
//! module and PyPI.

use serde_json::Value;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::sync::OnceLock;

/// The repository root.
fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("runner/ has a parent")
        .to_path_buf()
}

fn github() -> PathBuf {
    root().join("ci/github/bigbar.yml")
}

fn gitlab() -> PathBuf {
    root().join("ci/gitlab/bigbar.gitlab-ci.yml")
}

fn step(name: &str) -> PathBuf {
    root().join("ci/steps").join(name)
}

fn text(o: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    )
}

/// Runs `cmd`, panicking with `what` when it cannot start.
fn output(cmd: &mut Command, what: &str) -> Output {
    cmd.output()
        .unwrap_or_else(|e| panic!("{what}: cannot start: {e}"))
}

/// The Python of the linter's virtualenv, installing it on first use.
///
/// The venv is an entry of the user's store (`ci-lint/`, keyed on the host's
/// Python), so every clone and test binary shares one: made in a scratch
/// directory and renamed into place under the entry's lock, so a run
/// interrupted half-way, or a second test binary racing this one, never leaves
/// a broken venv where the next run would reuse it. It is always used as
/// `python -m check_jsonschema`: a renamed venv's `bin/` scripts name the old
/// path in their `#!` line, but its interpreter finds its packages from where
/// it is.
fn lint_python() -> &'static Path {
    static PYTHON: OnceLock<PathBuf> = OnceLock::new();
    PYTHON.get_or_init(|| {
        let version = output(Command::new("python3").arg("--version"), "python3");
        assert!(version.status.success(), "python3: {}", text(&version));
        let key: String = text(&version)
            .trim()
            .chars()
            .map(|c| {
                if c.is_ascii_alphanumeric() || c == '.' {
                    c
                } else {
                    '-'
                }
            })
            .collect();
        let store = vm_images::Cache::user().expect("a store");
        let entry = store
            .get_or_create(&["ci-lint"], &format!("check-jsonschema-{key}"), |dir| {
                install_linter(&dir.join("venv"));
                Ok(())
            })
            .expect("the linter's store entry");
        let python = entry.join("venv/bin/python");
        let works = Command::new(&python)
            .args(["-m", "check_jsonschema", "--version"])
            .output()
            .is_ok_and(|o| o.status.success());
        assert!(
            works,
            "check-jsonschema does not start from {}",
            python.display()
        );
        python
    })
}

/// Makes a virtualenv at `venv` with check-jsonschema from PyPI.
fn install_linter(venv: &Path) {
    let made = output(
        Command::new("python3").arg("-m").arg("venv").arg(venv),
        "python3 -m venv",
    );
    assert!(
        made.status.success(),
        "python3 -m venv failed: this host lacks python3's venv module \
         (Debian/Ubuntu: apt-get install python3-venv), which the CI \
         recipe lint needs to install check-jsonschema:\n{}",
        text(&made)
    );
    let pip = output(
        Command::new(venv.join("bin/python")).args([
            "-m",
            "pip",
            "install",
            "--quiet",
            "--disable-pip-version-check",
            "check-jsonschema",
        ]),
        "pip install check-jsonschema",
    );
    assert!(
        pip.status.success(),
        "pip install check-jsonschema failed (is PyPI reachable?):\n{}",
        text(&pip)
    );
}

/// Lints `file` against check-jsonschema's built-in `schema`.
fn lint(file: &Path, schema: &str) {
    let o = output(
        Command::new(lint_python())
            .args(["-m", "check_jsonschema", "--builtin-schema", schema])
            .arg(file),
        "check-jsonschema",
    );
    eprintln!(
        "check-jsonschema {schema} {}: {}",
        file.display(),
        text(&o).trim()
    );
    assert!(
        o.status.success(),
        "{} fails {schema}:\n{}",
        file.display(),
        text(&o)
    );
}

/// `file` parsed as YAML (1.2, so GitHub's `on:` stays a string key), as JSON.
fn yaml(file: &Path) -> Value {
    let o = output(
        Command::new(lint_python())
            .arg("-c")
            .arg(
                "import json, sys\n\
             from ruamel.yaml import YAML\n\
             print(json.dumps(YAML(typ='safe').load(open(sys.argv[1]))))",
            )
            .arg(file),
        "YAML parse",
    );
    assert!(
        o.status.success(),
        "{} is not YAML:\n{}",
        file.display(),
        text(&o)
    );
    serde_json::from_slice(&o.stdout).expect("the parser printed JSON")
}

#[test]
fn github_workflow_passes_its_schema() {
    lint(&github(), "vendor.github-workflows");
}

#[test]
fn gitlab_job_passes_its_schema() {
    lint(&gitlab(), "vendor.gitlab-ci");
}

/// The lint is not vacuous: a copy of each recipe with one mistake a schema
/// knows about (GitHub's `runs-on` misspelt, a GitLab `when:` that does not
/// exist) fails it.
#[test]
fn the_linter_rejects_broken_recipes() {
    let dir = tempfile::tempdir().expect("tempdir");
    for (file, schema, from, to) in [
        (github(), "vendor.github-workflows", "runs-on:", "runs_on:"),
        (
            gitlab(),
            "vendor.gitlab-ci",
            "when: always",
            "when: sometimes",
        ),
    ] {
        let text_of = std::fs::read_to_string(&file).expect("recipe");
        assert!(text_of.contains(from), "{} has {from}", file.display());
        let broken = dir.path().join(file.file_name().expect("file name"));
        std::fs::write(&broken, text_of.replace(from, to)).expect("write broken copy");
        let o = output(
            Command::new(lint_python())
                .args(["-m", "check_jsonschema", "--builtin-schema", schema])
                .arg(&broken),
            "check-jsonschema",
        );
        assert!(!o.status.success(), "{schema} accepted {to}:\n{}", text(&o));
    }
}

/// The runner arguments of the README's CI command, the line of "CI verdicts"
/// that runs `--kernel debian:sid --baseline ...`.
fn readme_ci_args() -> Vec<String> {
    let readme = std::fs::read_to_string(root().join("README.md")).expect("README.md");
    let line = readme
        .lines()
        .find(|l| l.starts_with("cargo run -p runner -- --kernel debian:sid --baseline"))
        .expect("the README's CI command");
    let args: Vec<String> = line
        .split_once(" -- ")
        .expect("runner arguments after --")
        .1
        .split_whitespace()
        .map(str::to_owned)
        .collect();
    let value = |opt: &str| {
        let i = args
            .iter()
            .position(|a| a == opt)
            .unwrap_or_else(|| panic!("README CI command lacks {opt}"));
        args[i + 1].clone()
    };
    assert!(
        root().join(value("--baseline")).is_file(),
        "the README's baseline {} exists",
        value("--baseline")
    );
    assert_eq!(value("--junit"), "results.xml");
    assert_eq!(value("--out"), "bigbar-out");
    args
}

/// The `run:` lines of a GitHub job's steps.
fn github_runs(job: &Value) -> Vec<&str> {
    job["steps"]
        .as_array()
        .expect("steps")
        .iter()
        .filter_map(|s| s["run"].as_str())
        .collect()
}

/// Each recipe runs every step script, and only scripts that exist, with the
/// run step taking no extra arguments (its options are the README's, checked
/// by `run_step_passes_the_readme_options`); it caches the store (`~/.cache/bigbar`;
/// GitLab's in the project, where its cache can reach)
/// and uploads results.xml and bigbar-out even after a failure.
#[test]
fn recipes_run_the_steps_cache_and_upload_the_readme_paths() {
    let _ = readme_ci_args();
    let mut steps: Vec<String> = std::fs::read_dir(root().join("ci/steps"))
        .expect("ci/steps")
        .map(|e| e.expect("entry").file_name().to_string_lossy().into_owned())
        .filter(|n| n.ends_with(".sh"))
        .collect();
    steps.sort();
    assert!(!steps.is_empty());

    let gh = yaml(&github());
    let job = &gh["jobs"]["bigbar"];
    let runs = github_runs(job);
    let gl = yaml(&gitlab());
    let gl_job = &gl["bigbar"];
    let gl_runs: Vec<&str> = ["script", "after_script"]
        .iter()
        .flat_map(|k| gl_job[k].as_array().expect(k).iter())
        .map(|v| v.as_str().expect("script lines are strings"))
        .collect();
    for (recipe, lines) in [("github", &runs), ("gitlab", &gl_runs)] {
        for s in &steps {
            assert!(
                lines.iter().any(|l| l.contains(&format!("ci/steps/{s}"))),
                "{recipe} recipe does not run ci/steps/{s}: {lines:?}"
            );
        }
        for l in lines.iter() {
            let script = l
                .strip_prefix("bash ci/steps/")
                .unwrap_or_else(|| panic!("{recipe}: a shell step outside ci/steps/: {l}"));
            let name = script.split_whitespace().next().expect("script name");
            assert!(step(name).is_file(), "{recipe} runs missing {name}");
            if name == "run.sh" {
                assert_eq!(script, "run.sh", "{recipe}: the run step adds options");
            }
        }
    }

    // GitHub: the cache keyed on the runner OS; the upload after any outcome.
    let steps = job["steps"].as_array().expect("steps");
    let uses = |action: &str| {
        steps
            .iter()
            .find(|s| s["uses"].as_str().is_some_and(|u| u.starts_with(action)))
            .unwrap_or_else(|| panic!("no {action} step"))
    };
    let cache = uses("actions/cache@");
    assert_eq!(cache["with"]["path"], "~/.cache/bigbar");
    assert!(cache["with"]["key"]
        .as_str()
        .expect("key")
        .contains("${{ runner.os }}"));
    let upload = uses("actions/upload-artifact@");
    assert_eq!(upload["if"], "always()");
    let paths = upload["with"]["path"].as_str().expect("upload paths");
    for p in ["results.xml", "bigbar-out/"] {
        assert!(
            paths.lines().any(|l| l.trim() == p),
            "upload lacks {p}: {paths}"
        );
    }
    let collect = steps
        .iter()
        .find(|s| s["run"].as_str().is_some_and(|r| r.contains("collect.sh")))
        .expect("collect step");
    assert_eq!(collect["if"], "always()");

    // GitLab: the same cache and artifacts, kept when the job fails.
    assert_eq!(
        gl_job["cache"]["paths"],
        serde_json::json!([".bigbar-cache"])
    );
    assert_eq!(
        gl_job["variables"]["BIGBAR_CACHE"],
        "$CI_PROJECT_DIR/.bigbar-cache"
    );
    let artifacts = &gl_job["artifacts"];
    assert_eq!(artifacts["when"], "always");
    assert_eq!(artifacts["reports"]["junit"], "results.xml");
    assert_eq!(
        artifacts["paths"],
        serde_json::json!(["results.xml", "bigbar-out/"])
    );
}

#[test]
fn every_step_is_valid_bash() {
    for entry in std::fs::read_dir(root().join("ci/steps")).expect("ci/steps") {
        let path = entry.expect("entry").path();
        if path.extension().is_some_and(|e| e == "sh") {
            let o = output(Command::new("bash").arg("-n").arg(&path), "bash -n");
            assert!(
                o.status.success(),
                "bash -n {}:\n{}",
                path.display(),
                text(&o)
            );
        }
    }
}

/// Writes an executable shell script.
fn script(path: &Path, body: &str) {
    std::fs::write(path, format!("#!/bin/sh\n{body}")).expect("write script");
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o755)).expect("chmod");
}

/// A runner stub: records its arguments one a line, writes what a run writes
/// (results.xml, the out directory's console log) and exits `$STUB_STATUS`.
fn runner_stub(dir: &Path) -> PathBuf {
    let stub = dir.join("runner-stub");
    script(
        &stub,
        "printf '%s\\n' \"$@\" > args.txt\n\
         echo '<testsuites/>' > results.xml\n\
         mkdir -p bigbar-out && echo boot > bigbar-out/console.log\n\
         exit \"${STUB_STATUS:-0}\"\n",
    );
    stub
}

/// Runs `ci/steps/run.sh` in `dir` with the stub, exiting `status`.
fn run_step(dir: &Path, status: i32) -> Output {
    let stub = runner_stub(dir);
    output(
        Command::new("bash")
            .arg(step("run.sh"))
            .current_dir(dir)
            .env("BIGBAR_RUNNER", &stub)
            .env("STUB_STATUS", status.to_string()),
        "run.sh",
    )
}

#[test]
fn run_step_passes_the_readme_options() {
    let dir = tempfile::tempdir().expect("tempdir");
    let o = run_step(dir.path(), 0);
    assert!(o.status.success(), "{}", text(&o));
    let args = std::fs::read_to_string(dir.path().join("args.txt")).expect("stub ran");
    let args: Vec<&str> = args.lines().collect();
    assert_eq!(
        args,
        readme_ci_args(),
        "run.sh runs the README's CI command"
    );
    let recorded = std::fs::read_to_string(dir.path().join("bigbar-out/exit-status"));
    assert_eq!(recorded.expect("exit-status").trim(), "0");
}

/// The job's verdict is the runner's: its exit status passes through, and is
/// recorded for the collect step.
#[test]
fn run_step_fails_with_the_runner() {
    for status in [1, 3, 125] {
        let dir = tempfile::tempdir().expect("tempdir");
        let o = run_step(dir.path(), status);
        assert_eq!(o.status.code(), Some(status), "{}", text(&o));
        let recorded = std::fs::read_to_string(dir.path().join("bigbar-out/exit-status"));
        assert_eq!(recorded.expect("exit-status").trim(), status.to_string());
    }
}

fn collect(dir: &Path) -> Output {
    output(
        Command::new("bash")
            .arg(step("collect.sh"))
            .args(["bigbar-out", "results.xml"])
            .current_dir(dir),
        "collect.sh",
    )
}

#[test]
fn collect_step_gathers_a_failed_run() {
    let dir = tempfile::tempdir().expect("tempdir");
    let _ = run_step(dir.path(), 1);
    let o = collect(dir.path());
    assert!(o.status.success(), "{}", text(&o));
    let out = dir.path().join("bigbar-out");
    assert_eq!(
        std::fs::read_to_string(out.join("results.xml")).expect("results.xml copied"),
        "<testsuites/>\n"
    );
    for f in ["console.log", "exit-status", "results.xml"] {
        assert!(
            text(&o).contains(&format!("  {f}\n")),
            "{f} listed:\n{}",
            text(&o)
        );
    }
}

/// A run that died before writing anything still leaves an out directory to
/// upload, says what is missing, and does not fail the job a second time.
#[test]
fn collect_step_survives_a_run_that_wrote_nothing() {
    let dir = tempfile::tempdir().expect("tempdir");
    let o = collect(dir.path());
    assert!(o.status.success(), "{}", text(&o));
    assert!(dir.path().join("bigbar-out").is_dir());
    assert!(text(&o).contains("no results.xml"), "{}", text(&o));
    assert!(text(&o).contains("did not finish"), "{}", text(&o));
}

/// Runs `ci/steps/enable-kvm.sh` dry, on `dev` instead of /dev/kvm.
///
/// As root every file is readable and writable, so for the branch that adds
/// the udev rule the step runs in a user namespace of its own (`unshare -U`),
/// where it is an unmapped user to whom a mode 000 file is closed, as
/// /dev/kvm is to a runner's user. `None` when that namespace is refused.
fn enable_kvm(dev: &Path, unprivileged: bool) -> Option<Output> {
    let root = nix::unistd::geteuid().is_root();
    let mut cmd = if unprivileged && root {
        let mut c = Command::new("unshare");
        c.args(["-U", "bash"]);
        c
    } else {
        Command::new("bash")
    };
    let o = output(
        cmd.arg(step("enable-kvm.sh"))
            .env("BIGBAR_KVM_DEV", dev)
            .env("BIGBAR_DRY_RUN", "1"),
        "enable-kvm.sh",
    );
    if unprivileged && root && !text(&o).contains("enable-kvm:") {
        eprintln!(
            "unshare -U refused, not testing the udev branch: {}",
            text(&o)
        );
        return None;
    }
    Some(o)
}

#[test]
fn enable_kvm_step_without_kvm_leaves_it_to_tcg() {
    let dir = tempfile::tempdir().expect("tempdir");
    let o = enable_kvm(&dir.path().join("kvm"), false).expect("runs");
    assert!(o.status.success(), "{}", text(&o));
    assert!(text(&o).contains("bigbar will use TCG"), "{}", text(&o));
    assert!(!text(&o).contains("udevadm"), "{}", text(&o));
}

#[test]
fn enable_kvm_step_leaves_a_usable_device_alone() {
    let dev = tempfile::NamedTempFile::new().expect("fake device");
    let o = enable_kvm(dev.path(), false).expect("runs");
    assert!(o.status.success(), "{}", text(&o));
    assert!(text(&o).contains("already usable"), "{}", text(&o));
    assert!(!text(&o).contains("udevadm"), "{}", text(&o));
}

#[test]
fn enable_kvm_step_adds_the_udev_rule_for_a_closed_device() {
    let dev = tempfile::NamedTempFile::new().expect("fake device");
    std::fs::set_permissions(dev.path(), std::fs::Permissions::from_mode(0o000)).expect("chmod");
    let Some(o) = enable_kvm(dev.path(), true) else {
        return;
    };
    let t = text(&o);
    assert!(o.status.success(), "{t}");
    assert!(t.contains("is not usable"), "{t}");
    assert!(
        t.contains(r#"KERNEL=="kvm", GROUP="kvm", MODE="0666""#),
        "{t}"
    );
    assert!(t.contains("dry run: udevadm control --reload-rules"), "{t}");
    assert!(
        t.contains("dry run: udevadm trigger --name-match=kvm"),
        "{t}"
    );
}

#[test]
fn setup_step_checks_the_toolchain() {
    let o = output(Command::new("bash").arg(step("setup.sh")), "setup.sh");
    assert!(
        o.status.success(),
        "this host has cargo, gcc, make:\n{}",
        text(&o)
    );
    // With none of them on PATH, the step names every missing tool.
    let empty = tempfile::tempdir().expect("tempdir");
    let bash = which_bash();
    let o = output(
        Command::new(bash)
            .arg(step("setup.sh"))
            .env("PATH", empty.path()),
        "setup.sh",
    );
    assert_eq!(o.status.code(), Some(1), "{}", text(&o));
    assert!(
        text(&o).contains("missing on this runner: cargo rustc gcc make"),
        "{}",
        text(&o)
    );
}

/// bash's absolute path, for running it with an empty PATH.
fn which_bash() -> PathBuf {
    let o = output(Command::new("bash").args(["-c", "command -v bash"]), "bash");
    PathBuf::from(String::from_utf8_lossy(&o.stdout).trim())
}
