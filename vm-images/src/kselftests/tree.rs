//! The kernel's own kselftests (e.g. `tools/testing/selftests/vfio`), built with
//! the kernel's own Makefile from the source tree of the kernel under test.
//!
//! The shared source tree is never written to: the selftests directory is
//! copied (symbolic links resolved, as some headers link into `drivers/`) with
//! the few files its Makefile reaches above it (`lib.mk`, the harness headers,
//! `scripts/subarch.include`, a link to `tools/include`) into the cache entry, a
//! project patch series is applied to that copy, and `make -C <copy> OUTPUT=...
//! CC="cc -static"` builds the programs against the UAPI headers `make headers`
//! exported with `O=`.
//!
//! Some programs touch the device in `main()` before their harness could
//! answer `-l` (the VFIO cdev, iommufd, SR-IOV VFs), so their cases cannot be
//! listed in a guest that lacks those. The build lists every program on the
//! host instead (with an address no device has) and stores the listing next to
//! it as `<program>.list`; a program that cannot list its cases gets
//! `<program>.unlisted` (its output) and runs as one result. The guest and the
//! runner thus see the same case names whatever the kernel offers.

use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::process::Command;

use super::Collection;
use crate::cache::{key_from_version, KeyHasher};
use crate::command::{display, require_tool, run, run_unchecked, tail};
use crate::error::{Error, IoContext, Result};
use crate::fetch::Fetcher;
use crate::kernel::patches::Series;
use crate::kernel::source::KernelSource;
use crate::kselftests::user_tree::{self, UserTree};

/// The collection of the kernel's VFIO selftests; it names their results.
pub const VFIO_COLLECTION: &str = "vfio-selftests";
/// Suffix of the file holding a program's `-l` listing, taken on the host.
pub const LIST_SUFFIX: &str = ".list";
/// Suffix of the file saying why a program could not list its cases.
pub const UNLISTED_SUFFIX: &str = ".unlisted";
/// A PCI address no host has: `-l` must not reach a real device.
const LISTING_BDF: &str = "ffff:ff:1f.7";
/// Bumped when the way the programs are built changes.
const RECIPE: &str = "tree-kselftests-2";
/// How many lines of a failed build an error keeps.
const BUILD_TAIL_LINES: usize = 25;

/// Which selftests directory of a tree to build, and how.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TreeSuite {
    /// The collection name, the directory under [`super::GUEST_DIR`].
    pub collection: &'static str,
    /// The selftests directory, relative to the top of the tree.
    pub subdir: &'static str,
    /// The harness's per-test timeout in seconds (`TEST_TIMEOUT_DEFAULT`).
    pub harness_timeout: u32,
    /// The guest's deadline per case in seconds (`settings` `timeout=`): above
    /// the harness's, so that the harness reports its own timeout first.
    pub case_timeout: u32,
}

impl TreeSuite {
    /// The kernel's VFIO selftests. Under TCG, unmapping a 512 GiB BAR alone
    /// takes 25-30 s, the harness's whole default of 30 s.
    pub fn vfio() -> Self {
        Self {
            collection: VFIO_COLLECTION,
            subdir: "tools/testing/selftests/vfio",
            harness_timeout: 120,
            case_timeout: 150,
        }
    }

    /// The `make` variables beside `OUTPUT` and `KHDR_INCLUDES`; part of the key.
    fn make_vars(&self) -> Vec<String> {
        vec![
            "CC=cc -static".to_owned(),
            format!(
                "EXTRA_CFLAGS=-DTEST_TIMEOUT_DEFAULT={}",
                self.harness_timeout
            ),
        ]
    }
}

/// Builds `suite` from `kernel`'s tree with `series` applied to a copy of it
/// (every patch must apply); cached until the source, the series or the
/// recipe change.
pub fn build_from_tree(
    fetcher: &Fetcher<'_>,
    suite: &TreeSuite,
    kernel: &KernelSource,
    series: &Series,
) -> Result<Collection> {
    let origin = Origin {
        name: kernel.name(),
        tree: &kernel.tree,
        patches: Patches::Strict,
    };
    build(
        fetcher,
        suite,
        &origin,
        series,
        cache_key(suite, kernel, series)?,
    )
}

/// Builds `suite` from the tree of a kernel the user built, with the patches
/// of `series` that apply to it (the series was written for another version:
/// each patch that is already in the tree or does not apply is said and left
/// out); cached until what the build reads from the tree, the series or the
/// recipe change.
pub fn build_from_user_tree(
    fetcher: &Fetcher<'_>,
    suite: &TreeSuite,
    user: &UserTree,
    series: &Series,
) -> Result<Collection> {
    let origin = Origin {
        name: user.name(),
        tree: &user.source,
        patches: Patches::WherePossible,
    };
    build(
        fetcher,
        suite,
        &origin,
        series,
        user_cache_key(suite, user, series)?,
    )
}

/// How a series is applied to the copy of a tree.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Patches {
    /// Every patch must apply: the tree is the one the series was written for.
    Strict,
    /// The patches that apply do; the others are reported and skipped.
    WherePossible,
}

/// The tree a build reads, and how messages name it.
struct Origin<'a> {
    name: String,
    tree: &'a Path,
    patches: Patches,
}

/// The cache entry `key` of `suite` from `origin`, built if missing.
fn build(
    fetcher: &Fetcher<'_>,
    suite: &TreeSuite,
    origin: &Origin<'_>,
    series: &Series,
    key: String,
) -> Result<Collection> {
    let category = ["kselftests", suite.collection];
    let entry = fetcher.cache().get_or_create(&category, &key, |dir| {
        fetcher.report(&format!(
            "building {} from {} ({} with {} patches)",
            suite.collection,
            origin.name,
            suite.subdir,
            series.patches.len()
        ));
        fill(fetcher, suite, origin, series, dir)
    })?;
    let dir = entry.join(suite.collection);
    Ok(Collection {
        name: suite.collection.to_owned(),
        programs: programs_in(&dir)?,
        dir,
        source: origin.name.clone(),
    })
}

/// What every key holds: the recipe, the suite, the series and the host's
/// toolchain.
fn recipe_parts(h: &mut KeyHasher, suite: &TreeSuite, series: &Series) -> Result<()> {
    h.part(RECIPE.as_bytes());
    crate::kernel::toolchain::Toolchain::host().hash_into(h);
    h.part(suite.subdir.as_bytes());
    h.part(suite.case_timeout.to_string().as_bytes());
    for v in suite.make_vars() {
        h.part(v.as_bytes());
    }
    for (name, bytes) in series.fingerprint_parts()? {
        h.part(name.as_bytes());
        h.part(&bytes);
    }
    Ok(())
}

/// A Debian source never changes under its version: the version is the key.
fn cache_key(suite: &TreeSuite, kernel: &KernelSource, series: &Series) -> Result<String> {
    let mut h = KeyHasher::default();
    recipe_parts(&mut h, suite, series)?;
    Ok(h.key(&key_from_version(&format!(
        "{}_{}",
        kernel.package, kernel.version
    ))))
}

/// A user's tree changes under one version: its content is the key
/// ([`user_tree::content_key`]), the release only names the entry.
fn user_cache_key(suite: &TreeSuite, user: &UserTree, series: &Series) -> Result<String> {
    let mut h = KeyHasher::default();
    recipe_parts(&mut h, suite, series)?;
    h.part(b"user tree");
    user_tree::content_key(&mut h, &user.source, suite.subdir)?;
    let release: String = user
        .release
        .chars()
        .map(|c| match c {
            'a'..='z' | 'A'..='Z' | '0'..='9' | '.' | '-' | '+' | '_' => c,
            _ => '_',
        })
        .collect();
    Ok(h.key(&format!("local_{release}")))
}

/// Headers, copy, patches, build, install, listings; then only the programs stay.
fn fill(
    fetcher: &Fetcher<'_>,
    suite: &TreeSuite,
    origin: &Origin<'_>,
    series: &Series,
    dir: &Path,
) -> Result<()> {
    let make = require_tool("make", "make")?;
    require_tool("cc", "gcc")?;
    let obj = dir.join("obj");
    // `make headers` with O= writes only below obj/ (the tree may be shared,
    // or the user's own): `headers` is not one of the targets that refuse a
    // source tree built in place.
    run(Command::new(&make)
        .arg("-s")
        .arg("-C")
        .arg(origin.tree)
        .arg(format!("O={}", obj.display()))
        .arg("headers"))?;
    let src = dir.join("src");
    mirror(origin.tree, &src, suite.subdir)?;
    let progress = |m: &str| fetcher.report(m);
    match origin.patches {
        Patches::Strict => series.apply(&src, &origin.name, &progress)?,
        Patches::WherePossible => {
            series.apply_where_possible(&src, &progress)?;
        }
    }
    let out = dir.join("out");
    fs::create_dir_all(&out).at("creating directory", &out)?;
    let mut cmd = make_command(&make, &src.join(suite.subdir), &out, &obj, suite);
    let output = run_unchecked(&mut cmd)?;
    if !output.status.success() {
        let text = String::from_utf8_lossy(&output.stderr);
        return Err(Error::KselftestBuild {
            collection: suite.collection.to_owned(),
            source_version: origin.name.clone(),
            command: display(&cmd),
            status: output.status,
            tail: tail(&text, BUILD_TAIL_LINES),
        });
    }
    let install = dir.join(suite.collection);
    install_programs(&out, &install)?;
    list_programs(&install)?;
    let settings = install.join("settings");
    fs::write(&settings, format!("timeout={}\n", suite.case_timeout)).at("writing", &settings)?;
    for d in [&obj, &src, &out] {
        fs::remove_dir_all(d).at("removing", d)?;
    }
    Ok(())
}

/// `make -s -C <copy> OUTPUT=<out> KHDR_INCLUDES=-isystem <headers> CC=... EXTRA_CFLAGS=...`.
fn make_command(make: &Path, dir: &Path, out: &Path, obj: &Path, suite: &TreeSuite) -> Command {
    let mut cmd = Command::new(make);
    cmd.arg("-s")
        .arg("-C")
        .arg(dir)
        .arg(format!("OUTPUT={}", out.display()))
        .arg(format!(
            "KHDR_INCLUDES=-isystem {}",
            obj.join("usr/include").display()
        ))
        .args(suite.make_vars())
        .env("LC_ALL", "C");
    cmd
}

/// Copies what the selftests Makefile of `subdir` reads into `dst`, laid out
/// as in `tree`: the selftests' top-level files (`lib.mk`, harness headers),
/// `subdir` itself with links resolved, `scripts/subarch.include`, and a link
/// to the tree's `tools/include` (read only, never patched).
fn mirror(tree: &Path, dst: &Path, subdir: &str) -> Result<()> {
    let selftests = Path::new("tools/testing/selftests");
    let to = dst.join(selftests);
    fs::create_dir_all(&to).at("creating directory", &to)?;
    for e in fs::read_dir(tree.join(selftests)).at("reading", tree.join(selftests))? {
        let p = e.at("reading", tree.join(selftests))?.path();
        if p.is_file() {
            let name = p.file_name().unwrap_or_default();
            fs::copy(&p, to.join(name)).at("copying", &p)?;
        }
    }
    copy_resolved(&tree.join(subdir), &dst.join(subdir))?;
    let scripts = dst.join("scripts");
    fs::create_dir_all(&scripts).at("creating directory", &scripts)?;
    let subarch = tree.join("scripts/subarch.include");
    fs::copy(&subarch, scripts.join("subarch.include")).at("copying", &subarch)?;
    let include = dst.join("tools/include");
    std::os::unix::fs::symlink(tree.join("tools/include"), &include).at("linking", &include)
}

/// Copies the directory `from` to `to`, following symbolic links.
fn copy_resolved(from: &Path, to: &Path) -> Result<()> {
    fs::create_dir_all(to).at("creating directory", to)?;
    for e in fs::read_dir(from).at("reading", from)? {
        let p = e.at("reading", from)?.path();
        let target = to.join(p.file_name().unwrap_or_default());
        if p.is_dir() {
            copy_resolved(&p, &target)?;
        } else {
            fs::copy(&p, &target).at("copying", &p)?;
        }
    }
    Ok(())
}

/// Copies the executables `make` left directly in `out` (the programs; objects,
/// dependency files and the library directory are not) into `install`.
fn install_programs(out: &Path, install: &Path) -> Result<()> {
    fs::create_dir_all(install).at("creating directory", install)?;
    for name in programs_in(out)? {
        let from = out.join(&name);
        fs::copy(&from, install.join(&name)).at("copying", &from)?;
    }
    Ok(())
}

/// The executable regular files of `dir`, sorted.
fn programs_in(dir: &Path) -> Result<Vec<String>> {
    let mut names = Vec::new();
    for e in fs::read_dir(dir).at("reading", dir)? {
        let p = e.at("reading", dir)?.path();
        let exec =
            fs::metadata(&p).is_ok_and(|m| m.is_file() && m.permissions().mode() & 0o111 != 0);
        if exec {
            names.push(
                p.file_name()
                    .unwrap_or_default()
                    .to_string_lossy()
                    .into_owned(),
            );
        }
    }
    names.sort();
    Ok(names)
}

/// Writes each program's `-l` listing into `<program>.list`, or what it said
/// instead into `<program>.unlisted`.
fn list_programs(install: &Path) -> Result<()> {
    for name in programs_in(install)? {
        let program = install.join(&name);
        let output = run_unchecked(
            Command::new(&program)
                .arg("-l")
                .env("VFIO_SELFTESTS_BDF", LISTING_BDF),
        )?;
        // The harness prints the listing on stderr, and exits 4 (KSFT_SKIP)
        // after it: the listing's header is what counts.
        let stderr = String::from_utf8_lossy(&output.stderr);
        let listed = stderr.starts_with("# FIXTURE");
        let (suffix, text) = if listed {
            (LIST_SUFFIX, stderr.into_owned())
        } else {
            let stdout = String::from_utf8_lossy(&output.stdout);
            (
                UNLISTED_SUFFIX,
                format!("`{name} -l` ({}): {stdout}{stderr}", output.status),
            )
        };
        let file = install.join(format!("{name}{suffix}"));
        fs::write(&file, text).at("writing", &file)?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn make_gets_the_copy_the_headers_and_the_timeout() {
        let cmd = make_command(
            Path::new("make"),
            Path::new("/e/src/tools/testing/selftests/vfio"),
            Path::new("/e/out"),
            Path::new("/e/obj"),
            &TreeSuite::vfio(),
        );
        assert_eq!(
            display(&cmd),
            "make -s -C /e/src/tools/testing/selftests/vfio OUTPUT=/e/out \
             KHDR_INCLUDES=-isystem /e/obj/usr/include CC=cc -static \
             EXTRA_CFLAGS=-DTEST_TIMEOUT_DEFAULT=120"
        );
    }

    #[test]
    fn the_key_follows_the_series_and_the_timeout() {
        let t = tempfile::tempdir().unwrap();
        fs::write(t.path().join("0001-a.patch"), "v1").unwrap();
        let series = Series::parse(t.path(), "0001-a.patch\n");
        let src = KernelSource {
            package: "linux-source-7.2".into(),
            version: "7.2.13-1".into(),
            tree: "/nonexistent".into(),
        };
        let suite = TreeSuite::vfio();
        let k1 = cache_key(&suite, &src, &series).unwrap();
        assert!(k1.starts_with("linux-source-7.2_7.2.13-1-"), "{k1}");
        let slower = TreeSuite {
            harness_timeout: 300,
            ..suite.clone()
        };
        assert_ne!(k1, cache_key(&slower, &src, &series).unwrap());
        fs::write(t.path().join("0001-a.patch"), "v2").unwrap();
        assert_ne!(k1, cache_key(&suite, &src, &series).unwrap());
    }

    #[test]
    fn the_copy_resolves_links_and_keeps_the_tree_untouched() {
        let t = tempfile::tempdir().unwrap();
        let tree = t.path().join("tree");
        let st = tree.join("tools/testing/selftests");
        fs::create_dir_all(st.join("vfio/lib")).unwrap();
        fs::create_dir_all(st.join("other")).unwrap();
        fs::create_dir_all(tree.join("drivers")).unwrap();
        fs::create_dir_all(tree.join("scripts")).unwrap();
        fs::create_dir_all(tree.join("tools/include")).unwrap();
        fs::write(st.join("lib.mk"), "mk").unwrap();
        fs::write(tree.join("drivers/hw.h"), "hw").unwrap();
        fs::write(tree.join("scripts/subarch.include"), "arch").unwrap();
        std::os::unix::fs::symlink("../../../../../drivers/hw.h", st.join("vfio/lib/hw.h"))
            .unwrap();
        let dst = t.path().join("copy");
        mirror(&tree, &dst, "tools/testing/selftests/vfio").unwrap();
        let copied = dst.join("tools/testing/selftests/vfio/lib/hw.h");
        assert!(!fs::symlink_metadata(&copied).unwrap().is_symlink());
        assert_eq!(fs::read_to_string(copied).unwrap(), "hw");
        assert!(dst.join("tools/testing/selftests/lib.mk").is_file());
        assert!(!dst.join("tools/testing/selftests/other").exists());
        assert!(dst.join("scripts/subarch.include").is_file());
        assert!(dst.join("tools/include").is_dir());
    }
}
