//! `cargo install --path runner` gives a `bigbar` command that works outside
//! the workspace: it lists the tests with its cache in the user's XDG cache
//! directory, writes nothing where it is run, and boots a kernel build tree
//! with `--kernel .` from inside it.
//!
//! The install builds into `target/install-test` (kept, so later runs take
//! seconds; the first one builds the runner's dependencies again, a few
//! minutes) in the debug profile, which compiles faster than release and
//! embeds the same release-built programs.

mod common;

use common::{built_kernel, results};
use std::path::{Path, PathBuf};
use std::process::Command;

/// The workspace root.
fn workspace() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .unwrap()
        .to_path_buf()
}

/// Installs the runner into a new root and returns the root and the command.
fn install() -> (tempfile::TempDir, PathBuf) {
    let root = tempfile::tempdir().unwrap();
    let cargo = std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
    let out = Command::new(cargo)
        .args(["install", "--offline", "--debug", "--path"])
        .arg(workspace().join("runner"))
        .arg("--root")
        .arg(root.path())
        .env("CARGO_TARGET_DIR", workspace().join("target/install-test"))
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "cargo install failed:\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let bin = root.path().join("bin/bigbar");
    assert!(bin.is_file(), "no {}", bin.display());
    (root, bin)
}

/// The installed command, run in `cwd` with a home of its own and none of the
/// workspace's settings.
fn bigbar(bin: &Path, cwd: &Path, home: &Path) -> Command {
    let mut cmd = Command::new(bin);
    cmd.current_dir(cwd)
        .env("HOME", home)
        .env_remove("BIGBAR_CACHE")
        .env_remove("CARGO_TARGET_DIR")
        .env_remove("XDG_CACHE_HOME")
        .env_remove("XDG_STATE_HOME");
    cmd
}

/// The entries of directory `dir`.
fn entries(dir: &Path) -> Vec<String> {
    let mut names: Vec<String> = std::fs::read_dir(dir)
        .map(|d| {
            d.map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
                .collect()
        })
        .unwrap_or_default();
    names.sort();
    names
}

#[test]
fn installed_bigbar_works_outside_the_workspace() {
    let (_root, bin) = install();
    let elsewhere = tempfile::tempdir().unwrap();
    let home = tempfile::tempdir().unwrap();

    // The cache defaults to ~/.cache/bigbar ...
    let out = bigbar(&bin, elsewhere.path(), home.path())
        .args(["--list", "--filter", "fault_order.*"])
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{stderr}");
    let listed = String::from_utf8_lossy(&out.stdout);
    assert!(listed.contains("fault_order.pud_aligned"), "{listed}");
    let programs = home.path().join(".cache/bigbar/programs");
    assert!(
        entries(&programs)
            .iter()
            .any(|n| n.starts_with("guest-tests-") && !n.ends_with(".lock")),
        "no guest-tests in {}: {:?}",
        programs.display(),
        entries(&programs)
    );
    // ... or to $XDG_CACHE_HOME/bigbar, and nothing is written where it runs.
    let xdg = tempfile::tempdir().unwrap();
    let out = bigbar(&bin, elsewhere.path(), home.path())
        .env("XDG_CACHE_HOME", xdg.path())
        .arg("--list")
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(entries(xdg.path()), ["bigbar"]);
    assert!(entries(elsewhere.path()).is_empty());

    let out = bigbar(&bin, elsewhere.path(), home.path())
        .arg("--version")
        .output()
        .unwrap();
    assert!(String::from_utf8_lossy(&out.stdout).starts_with("bigbar "));

    // `--kernel .` from inside a build tree boots that tree. The cache of the
    // built kernel gives QEMU and busybox, so nothing is downloaded.
    let (image, release) = built_kernel("stock");
    let cache = image.ancestors().nth(4).unwrap().to_path_buf();
    // The installed command, from another directory, finds the kernel the
    // workspace's runner built in the user's store: the same entry, so the
    // same key, and nothing is built.
    let out = bigbar(&bin, elsewhere.path(), home.path())
        .env("BIGBAR_CACHE", vm_images::cache::default_root().unwrap())
        .args(["--kernel", "stock", "--dry-run"])
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{stderr}");
    assert!(
        stderr.contains(&format!("{release} ({})", image.display())),
        "not the workspace's stock entry {}:\n{stderr}",
        image.display()
    );
    let tree = tempfile::tempdir().unwrap();
    let boot = tree.path().join("arch/x86/boot");
    std::fs::create_dir_all(&boot).unwrap();
    std::fs::copy(&image, boot.join("bzImage")).unwrap();
    std::fs::copy(image.with_file_name("config"), tree.path().join(".config")).unwrap();
    std::fs::create_dir_all(tree.path().join("include/config")).unwrap();
    std::fs::write(tree.path().join("include/config/kernel.release"), &release).unwrap();
    let runs = tempfile::tempdir().unwrap();
    let st = bigbar(&bin, tree.path(), home.path())
        .args(["--kernel", ".", "--filter", "fault_order.*", "--cache"])
        .arg(&cache)
        .arg("--out")
        .arg(runs.path())
        .status()
        .unwrap();
    assert_eq!(st.code(), Some(0));
    let v = results(runs.path());
    assert_eq!(v["runs"][0]["kernel"]["release"], release.as_str());
    assert_eq!(v["runs"][0]["tests"].as_array().unwrap().len(), 3, "{v}");
}
