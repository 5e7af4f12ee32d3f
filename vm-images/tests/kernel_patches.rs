//! The project's kernel patches are in `git format-patch` form and apply with
//! `git am` to the Debian source they are based on, each fix on its own (so each
//! can be sent upstream alone) and the reference series as a whole.
//!
//! Needs Debian's archive the first time (the 164 MB `linux-source` package, which
//! the runner's kernel builds fetch anyway); it shares the user's store with the
//! runner (`$BIGBAR_CACHE`, else `~/.cache/bigbar`).

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::process::Command;

use vm_images::kernel::build;
use vm_images::kernel::patches::Series;
use vm_images::kernel::source::{self, KernelSource};
use vm_images::{Cache, Fetcher};

fn cache() -> Cache {
    Cache::user().expect("a store")
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

/// The files the patches touch, from their `diff --git a/X b/X` lines.
fn touched(patches: &[PathBuf]) -> BTreeSet<String> {
    patches
        .iter()
        .flat_map(|p| {
            let text = std::fs::read_to_string(p).unwrap();
            text.lines()
                .filter_map(|l| l.strip_prefix("diff --git a/"))
                .filter_map(|l| l.split(" b/").next().map(str::to_owned))
                .collect::<Vec<_>>()
        })
        .collect()
}

/// A git repository of the pristine source's files that `patches` touch: `git am`
/// needs nothing else, and committing the whole tree would take minutes.
fn repository(src: &KernelSource, patches: &[PathBuf], into: &Path) -> PathBuf {
    let tree = into.join("linux");
    for file in touched(patches) {
        let to = tree.join(&file);
        std::fs::create_dir_all(to.parent().unwrap()).unwrap();
        std::fs::copy(src.tree.join(&file), &to)
            .unwrap_or_else(|e| panic!("{file} is not in {}: {e}", src.name()));
    }
    git(&tree, &["init", "-q"]);
    git(&tree, &["add", "-A", "."]);
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
    let fixes = Series::read(&build::fix_patches()).unwrap();
    let reference = Series::read(&build::reference_patches()).unwrap();
    let all: Vec<PathBuf> = reference
        .patches
        .iter()
        .chain(&fixes.patches)
        .cloned()
        .collect();
    let tmp = tempfile::tempdir().unwrap();
    let tree = repository(&src, &all, tmp.path());

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
    am(&tree, &reference.patches);
    am(&tree, &fixes.patches);
    let count = git(&tree, &["rev-list", "--count", "pristine..HEAD"]);
    assert_eq!(
        count.trim(),
        (reference.patches.len() + fixes.patches.len()).to_string()
    );
    let mremap = std::fs::read_to_string(tree.join("mm/mremap.c")).unwrap();
    assert!(!mremap.contains("pud_none_or_clear_bad(pud)"));
}

/// The reproducers in `kernel/selftests/vfio` build as a selftests directory of the
/// kernel tree (`make -C tools/testing/selftests/<dir>`, the kernel's `lib.mk`),
/// and without a device every case skips, as the kernel's vfio selftests do.
#[test]
fn reproducers_build_with_the_kernel_selftests_makefile() {
    let cache = cache();
    let fetcher = Fetcher::new(&cache).progress(&progress);
    let (package, version) = source::resolve_version(&fetcher).unwrap();
    let src = source::obtain(&fetcher, &package, &version).unwrap();
    let tmp = tempfile::tempdir().unwrap();
    let selftests = tmp.path().join("tools/testing/selftests");
    let dir = selftests.join("vfio_pud");
    std::fs::create_dir_all(&dir).unwrap();
    let upstream = src.tree.join("tools/testing/selftests");
    for file in ["lib.mk", "kselftest.h", "kselftest_harness.h"] {
        std::fs::copy(upstream.join(file), selftests.join(file)).unwrap();
    }
    let ours = Path::new(env!("CARGO_MANIFEST_DIR")).join("../kernel/selftests/vfio");
    for entry in std::fs::read_dir(&ours).unwrap() {
        let path = entry.unwrap().path();
        std::fs::copy(&path, dir.join(path.file_name().unwrap())).unwrap();
    }
    let out = Command::new("make").arg("-C").arg(&dir).output().unwrap();
    assert!(
        out.status.success(),
        "make failed: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    for program in ["vfio_pci_pud_split_test", "vfio_pci_pud_mremap_test"] {
        let out = Command::new(dir.join(program))
            .env_remove("VFIO_SELFTESTS_BDF")
            .output()
            .unwrap();
        let text = String::from_utf8_lossy(&out.stdout);
        assert!(out.status.success(), "{program}: {text}");
        assert!(text.contains("# SKIP no device"), "{program}: {text}");
        assert!(!text.contains("not ok"), "{program}: {text}");
    }
}
