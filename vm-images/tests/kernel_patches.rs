//! The project's kernel patches are in `git format-patch` form and apply with
//! `git am` to the Debian source they are based on, each fix on its own (so each
//! can be sent upstream alone) and the reference series as a whole.
//!
//! Needs Debian's archive the first time (the 164 MB `linux-source` package, which
//! the runner's kernel builds fetch anyway); it shares the runner's cache
//! (`$BIGBAR_CACHE`, else `target/bigbar-cache`).

use std::path::{Path, PathBuf};
use std::process::Command;

use vm_images::kernel::build;
use vm_images::kernel::patches::Series;
use vm_images::kernel::source::{self, KernelSource};
use vm_images::{Cache, Fetcher};

fn cache() -> Cache {
    let target = Path::new(env!("CARGO_MANIFEST_DIR")).join("../target");
    Cache::from_env_or(target.join("bigbar-cache"))
}

fn progress(message: &str) {
    eprintln!("  .. {message}");
}

fn git(dir: &Path, args: &[&str]) -> String {
    let out = Command::new("git")
        .arg("-C")
        .arg(dir)
        .args([
            "-c",
            "user.name=bigbar test",
            "-c",
            "user.email=test@invalid",
        ])
        .args(args)
        .output()
        .expect("git runs");
    assert!(
        out.status.success(),
        "git {args:?} failed: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// A git repository of the pristine source (hard-linked copy; git replaces files
/// it writes rather than writing through the links).
fn repository(src: &KernelSource, into: &Path) -> PathBuf {
    let tree = into.join("linux");
    let st = Command::new("cp")
        .arg("-al")
        .arg(&src.tree)
        .arg(&tree)
        .status()
        .unwrap();
    assert!(st.success());
    git(&tree, &["init", "-q"]);
    // Debian's top-level .gitignore ignores everything but debian/.
    git(&tree, &["add", "-f", "-A", "."]);
    git(&tree, &["commit", "-q", "-m", &src.name()]);
    git(&tree, &["tag", "pristine"]);
    tree
}

fn am(tree: &Path, patches: &[PathBuf]) {
    let mut args = vec!["am", "-q", "--no-3way"];
    let names: Vec<String> = patches.iter().map(|p| p.display().to_string()).collect();
    args.extend(names.iter().map(String::as_str));
    git(tree, &args);
}

#[test]
fn fixes_and_reference_apply_with_git_am() {
    let cache = cache();
    let fetcher = Fetcher::new(&cache).progress(&progress);
    let (package, version) = source::resolve_version(&fetcher).unwrap();
    let src = source::obtain(&fetcher, &package, &version).unwrap();
    let tmp = tempfile::tempdir().unwrap();
    let tree = repository(&src, tmp.path());

    let fixes = Series::read(&build::fix_patches()).unwrap();
    assert_eq!(fixes.patches.len(), 2, "one patch per finding");
    for patch in &fixes.patches {
        git(&tree, &["checkout", "-q", "--detach", "pristine"]);
        am(&tree, std::slice::from_ref(patch));
        let subject = git(&tree, &["log", "-1", "--format=%s%n%b"]);
        assert!(
            subject.contains("Signed-off-by:"),
            "{}: no sign-off",
            patch.display()
        );
    }

    git(&tree, &["checkout", "-q", "--detach", "pristine"]);
    let reference = Series::read(&build::reference_patches()).unwrap();
    am(&tree, &reference.patches);
    am(&tree, &fixes.patches);
    let count = git(&tree, &["rev-list", "--count", "pristine..HEAD"]);
    assert_eq!(
        count.trim(),
        (reference.patches.len() + fixes.patches.len()).to_string()
    );
    // The cached source is untouched.
    let pristine = std::fs::read_to_string(src.tree.join("mm/mremap.c")).unwrap();
    assert!(pristine.contains("pud_none_or_clear_bad(pud)"));
}
