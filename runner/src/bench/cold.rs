//! A new user's first run: `cargo run -p runner` in a fresh clone of the
//! workspace, with an empty target directory and an empty store, so that the
//! benchmark times the compile, the downloads and the KVM probe exactly as they
//! happen on a new machine. Only cargo's registry of downloaded crates is
//! shared with this machine's builds. The same clone, compiled, on the user's
//! store instead is a developer's second clone, which must build no kernel.

use anyhow::{bail, Context, Result};
use std::path::{Path, PathBuf};
use std::process::Command;
use tempfile::TempDir;

/// Variables that would let the clone's build or run share this one's target
/// directory, flags or cache.
const ISOLATING: [&str; 9] = [
    "CARGO_TARGET_DIR",
    "CARGO_BUILD_TARGET_DIR",
    "RUSTFLAGS",
    "CARGO_ENCODED_RUSTFLAGS",
    "CARGO_BUILD_RUSTFLAGS",
    "RUSTC_WRAPPER",
    "CARGO_BUILD_RUSTC_WRAPPER",
    "RUSTC_WORKSPACE_WRAPPER",
    vm_images::cache::CACHE_ENV,
];

/// The bigbar workspace this runner was built from, when it is a git checkout.
pub fn workspace() -> Result<PathBuf> {
    let runner = Path::new(env!("CARGO_MANIFEST_DIR"));
    let ws = runner
        .parent()
        .context("the runner's manifest directory has no parent")?;
    if !ws.join(".git").exists() {
        bail!(
            "{} is not a git checkout of bigbar (the cold run clones the workspace \
             this runner was built from)",
            ws.display()
        );
    }
    Ok(ws.to_path_buf())
}

/// A fresh clone of a workspace's HEAD in a private temporary directory, with
/// an empty store beside it, removed when dropped.
pub struct FreshClone {
    dir: TempDir,
    /// The commit the clone holds.
    pub commit: String,
}

impl FreshClone {
    /// Clones `workspace` (its committed HEAD: uncommitted changes are not in
    /// the clone, and are named on stderr).
    pub fn new(workspace: &Path) -> Result<Self> {
        let dir = tempfile::Builder::new()
            .prefix("bigbar-cold-clone-")
            .tempdir()
            .context("creating a directory for the fresh clone")?;
        git(Command::new("git")
            .args(["clone", "-q", "--no-hardlinks"])
            .arg(workspace)
            .arg(dir.path().join("bigbar")))?;
        let clone = Self {
            commit: git(Command::new("git")
                .arg("-C")
                .arg(dir.path().join("bigbar"))
                .args(["rev-parse", "--short", "HEAD"]))?,
            dir,
        };
        let dirty = git(Command::new("git").arg("-C").arg(workspace).args([
            "status",
            "--porcelain",
            "--untracked-files=no",
        ]))?;
        if !dirty.is_empty() {
            eprintln!(
                "bigbar bench: {} has uncommitted changes; the cold run measures commit {}",
                workspace.display(),
                clone.commit
            );
        }
        Ok(clone)
    }

    /// The clone's root.
    pub fn path(&self) -> PathBuf {
        self.dir.path().join("bigbar")
    }

    /// `cargo run -q -p runner --` in the clone, isolated from this build, on
    /// the clone's own empty store.
    pub fn cargo_run(&self) -> Command {
        self.cargo_run_on(&self.dir.path().join("store"))
    }

    /// `cargo run -q -p runner --` in the clone, isolated from this build but
    /// for the store `store` (a second clone on the user's store).
    pub fn cargo_run_on(&self, store: &Path) -> Command {
        let mut cmd = cargo_run_in(&self.path());
        cmd.env(vm_images::cache::CACHE_ENV, store);
        cmd
    }
}

/// `cargo run -q -p runner --` in `root`, without the variables that would
/// share this build's target directory, flags or cache.
fn cargo_run_in(root: &Path) -> Command {
    let cargo = std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
    let mut cmd = Command::new(cargo);
    cmd.current_dir(root)
        .args(["run", "-q", "-p", "runner", "--"]);
    for var in ISOLATING {
        cmd.env_remove(var);
    }
    cmd
}

/// Runs a git command and returns its trimmed stdout.
fn git(cmd: &mut Command) -> Result<String> {
    let out = cmd
        .output()
        .with_context(|| format!("running {cmd:?} (the cold run needs git)"))?;
    if !out.status.success() {
        bail!(
            "{cmd:?} failed ({}): {}",
            out.status,
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }
    Ok(String::from_utf8_lossy(&out.stdout).trim().to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_cargo_run_shares_no_target_flags_or_cache() {
        let ws = tempfile::tempdir().unwrap();
        init_repo(ws.path());
        let clone = FreshClone::new(ws.path()).unwrap();
        let store = |cmd: &Command| {
            cmd.get_envs()
                .find(|(k, _)| *k == vm_images::cache::CACHE_ENV)
                .and_then(|(_, v)| v.map(PathBuf::from))
        };
        let own = store(&clone.cargo_run()).expect("the cold run names its store");
        assert!(own.starts_with(clone.dir.path()), "{}", own.display());
        assert!(!own.exists(), "the cold store is empty");
        let shared = store(&clone.cargo_run_on(Path::new("/s")));
        assert_eq!(shared.as_deref(), Some(Path::new("/s")));
        let cmd = cargo_run_in(Path::new("/c"));
        assert_eq!(cmd.get_current_dir(), Some(Path::new("/c")));
        let args: Vec<_> = cmd.get_args().map(|a| a.to_str().unwrap()).collect();
        assert_eq!(args, ["run", "-q", "-p", "runner", "--"]);
        let removed: Vec<_> = cmd
            .get_envs()
            .filter(|(_, v)| v.is_none())
            .map(|(k, _)| k.to_str().unwrap().to_string())
            .collect();
        for var in ISOLATING {
            assert!(removed.iter().any(|r| r == var), "{var} is inherited");
        }
    }

    /// A git repository at `dir` with one commit of the file `f`.
    fn init_repo(dir: &Path) {
        let run = |args: &[&str]| git(Command::new("git").arg("-C").arg(dir).args(args)).unwrap();
        run(&["init", "-q"]);
        std::fs::write(dir.join("f"), "committed").unwrap();
        run(&["add", "f"]);
        run(&[
            "-c",
            "user.name=t",
            "-c",
            "user.email=t@t",
            "commit",
            "-q",
            "-m",
            "one",
        ]);
    }

    #[test]
    fn a_clone_holds_the_committed_head() {
        let ws = tempfile::tempdir().unwrap();
        let run =
            |args: &[&str]| git(Command::new("git").arg("-C").arg(ws.path()).args(args)).unwrap();
        init_repo(ws.path());
        std::fs::write(ws.path().join("f"), "changed").unwrap();
        let clone = FreshClone::new(ws.path()).unwrap();
        let text = std::fs::read_to_string(clone.path().join("f")).unwrap();
        assert_eq!(text, "committed");
        assert_eq!(clone.commit, run(&["rev-parse", "--short", "HEAD"]));
        let path = clone.path();
        drop(clone);
        assert!(!path.exists(), "the clone outlived its owner");
    }

    #[test]
    fn a_directory_that_is_no_clone_is_refused_by_name() {
        let dir = tempfile::tempdir().unwrap();
        let err = FreshClone::new(dir.path()).err().unwrap();
        assert!(
            format!("{err:#}").contains(&dir.path().display().to_string()),
            "{err:#}"
        );
    }
}
