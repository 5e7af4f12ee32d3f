//! The source tree of a kernel the user built (`--kernel <dir>`), for building
//! that kernel's own selftests.
//!
//! `<dir>` is a source tree built in place, or a `make O=` build directory,
//! whose `source` link (made by the kernel's Makefile) leads to the source
//! tree; a bzImage at `arch/x86/boot/bzImage` of either counts as its
//! directory. A bare image elsewhere has no tree to build from.
//!
//! Unlike a Debian source, such a tree changes under the same version: the
//! cache key hashes what the selftests build reads from it (see
//! [`content_key`]), so that editing the selftests rebuilds them.

use std::fs;
use std::path::{Path, PathBuf};

use crate::cache::KeyHasher;
use crate::error::{Error, IoContext, Result};
use crate::kernel::local::IMAGE_IN_TREE;

/// The link `make O=<dir>` leaves in `<dir>`, to the source tree.
const SOURCE_LINK: &str = "source";
/// What the build reads from a tree besides the selftests directory itself
/// (the top-level files of `tools/testing/selftests` are hashed too): the
/// headers `make headers` exports and what generates them, the tools headers
/// the selftests include, and the version.
const READ_BY_THE_BUILD: [&str; 6] = [
    "include/uapi",
    "arch/x86/include/uapi",
    "arch/x86/entry/syscalls",
    "tools/include",
    "scripts/subarch.include",
    "Makefile",
];

/// A kernel source tree found from what `--kernel` named.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UserTree {
    /// What `--kernel` named (a directory or a bzImage).
    pub kernel: PathBuf,
    /// The top of the source tree (holds the kernel's `Makefile`).
    pub source: PathBuf,
    /// The kernel's release (`include/config/kernel.release` of the build),
    /// else the version the source's `Makefile` gives.
    pub release: String,
}

impl UserTree {
    /// How messages name it: `the 7.2.13 tree at /src/linux`.
    pub fn name(&self) -> String {
        format!("the {} tree at {}", self.release, self.source.display())
    }
}

/// Finds the source tree holding `subdir` (e.g. `tools/testing/selftests/vfio`)
/// of the kernel at `kernel` (a build directory or a bzImage).
pub fn locate(kernel: &Path, subdir: &str) -> Result<UserTree> {
    let refuse = |reason: String| Error::NoSelftestsTree {
        kernel: kernel.to_owned(),
        subdir: subdir.to_owned(),
        reason,
    };
    let build = build_dir_of(kernel).ok_or_else(|| {
        refuse(
            "it is a kernel image with no build tree around it; pass the kernel's build \
             directory instead (the source tree it was built in, or the `make O=` directory)"
                .into(),
        )
    })?;
    let source = source_of(&build).map_err(&refuse)?;
    if !source.join(subdir).is_dir() {
        return Err(refuse(format!(
            "the source tree {} has no {subdir} (a kernel older than these selftests?)",
            source.display()
        )));
    }
    let release = release_of(&build, &source).map_err(refuse)?;
    Ok(UserTree {
        kernel: kernel.to_owned(),
        source,
        release,
    })
}

/// The build directory `kernel` names: itself, or the tree around a bzImage
/// at its place in the tree.
fn build_dir_of(kernel: &Path) -> Option<PathBuf> {
    if kernel.is_dir() {
        return Some(kernel.to_owned());
    }
    if kernel.ends_with(IMAGE_IN_TREE) {
        return kernel.ancestors().nth(4).map(Path::to_path_buf);
    }
    None
}

/// The source tree of the build directory `build`: where its `source` link
/// leads (`make O=`), else `build` itself when it is a source tree.
fn source_of(build: &Path) -> std::result::Result<PathBuf, String> {
    let link = build.join(SOURCE_LINK);
    let tree = if link.exists() {
        link.canonicalize()
            .map_err(|e| format!("its `source` link cannot be followed: {e}"))?
    } else {
        build.to_owned()
    };
    if tree.join("Makefile").is_file() && tree.join("tools/testing/selftests").is_dir() {
        Ok(tree)
    } else {
        Err(format!(
            "{} is neither a kernel source tree nor a `make O=` build directory \
             (no tools/testing/selftests, no `{SOURCE_LINK}` link to the source)",
            build.display()
        ))
    }
}

/// The release the build wrote, else `VERSION.PATCHLEVEL.SUBLEVEL` and
/// `EXTRAVERSION` of the source's `Makefile` (what `make kernelversion` says).
fn release_of(build: &Path, source: &Path) -> std::result::Result<String, String> {
    let written = fs::read_to_string(build.join("include/config/kernel.release"));
    if let Some(release) = written.ok().map(|r| r.trim().to_owned()) {
        if !release.is_empty() {
            return Ok(release);
        }
    }
    let makefile = source.join("Makefile");
    let text = fs::read_to_string(&makefile)
        .map_err(|e| format!("reading {}: {e}", makefile.display()))?;
    makefile_version(&text).ok_or_else(|| format!("{} gives no VERSION", makefile.display()))
}

/// `6.19.0-rc3` from the `VERSION = 6`, `PATCHLEVEL = 19`, `SUBLEVEL = 0`,
/// `EXTRAVERSION = -rc3` lines of a kernel's top `Makefile`.
fn makefile_version(text: &str) -> Option<String> {
    let var = |name: &str| {
        text.lines().find_map(|l| {
            let (k, v) = l.split_once('=')?;
            (k.trim() == name).then(|| v.trim().to_owned())
        })
    };
    let version = var("VERSION").filter(|v| !v.is_empty())?;
    let patchlevel = var("PATCHLEVEL").unwrap_or_else(|| "0".into());
    let sublevel = var("SUBLEVEL").unwrap_or_else(|| "0".into());
    let extra = var("EXTRAVERSION").unwrap_or_default();
    Some(format!("{version}.{patchlevel}.{sublevel}{extra}"))
}

/// Adds to `h` everything of `tree` the build of `subdir` reads: every file
/// of `subdir` (links followed, as the copy follows them), the top-level files
/// of `tools/testing/selftests`, and [`READ_BY_THE_BUILD`]; each as its path
/// and content, in a stable order.
pub fn content_key(h: &mut KeyHasher, tree: &Path, subdir: &str) -> Result<()> {
    hash_dir(h, tree, Path::new(subdir), true)?;
    hash_dir(h, tree, Path::new("tools/testing/selftests"), false)?;
    for part in READ_BY_THE_BUILD {
        let rel = Path::new(part);
        if tree.join(rel).is_dir() {
            hash_dir(h, tree, rel, true)?;
        } else {
            hash_file(h, tree, rel)?;
        }
    }
    Ok(())
}

/// Hashes the files of `tree/rel`, sorted by name; into sub-directories when
/// `deep`.
fn hash_dir(h: &mut KeyHasher, tree: &Path, rel: &Path, deep: bool) -> Result<()> {
    let dir = tree.join(rel);
    let mut names: Vec<_> = fs::read_dir(&dir)
        .at("reading", &dir)?
        .map(|e| e.map(|e| e.file_name()))
        .collect::<std::io::Result<_>>()
        .at("reading", &dir)?;
    names.sort();
    for name in names {
        let child = rel.join(name);
        let path = tree.join(&child);
        if path.is_dir() {
            if deep {
                hash_dir(h, tree, &child, deep)?;
            }
        } else if path.is_file() {
            hash_file(h, tree, &child)?;
        }
    }
    Ok(())
}

/// Hashes `rel` and the content of `tree/rel`; a missing file as its name only.
fn hash_file(h: &mut KeyHasher, tree: &Path, rel: &Path) -> Result<()> {
    let path = tree.join(rel);
    h.part(rel.as_os_str().as_encoded_bytes());
    if path.exists() {
        h.part(&fs::read(&path).at("reading", &path)?);
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use rstest::rstest;

    const VFIO: &str = "tools/testing/selftests/vfio";

    /// A small source tree: version 7.3.1-rc2, the vfio selftests, a UAPI
    /// header; built in place when `built` (release `7.3.1-rc2-dev`).
    fn source_tree(dir: &Path, built: bool) {
        fs::create_dir_all(dir.join(VFIO).join("lib")).unwrap();
        fs::create_dir_all(dir.join("include/uapi/linux")).unwrap();
        fs::write(
            dir.join("Makefile"),
            "# SPDX\nVERSION = 7\nPATCHLEVEL = 3\nSUBLEVEL = 1\nEXTRAVERSION = -rc2\nNAME = x\n",
        )
        .unwrap();
        fs::write(dir.join(VFIO).join("Makefile"), "all:\n").unwrap();
        fs::write(dir.join(VFIO).join("lib/libvfio.c"), "int x;\n").unwrap();
        fs::write(dir.join("tools/testing/selftests/lib.mk"), "mk\n").unwrap();
        fs::write(dir.join("include/uapi/linux/vfio.h"), "#define A 1\n").unwrap();
        if built {
            make_built(dir, "7.3.1-rc2-dev");
        }
    }

    /// What a build leaves that bigbar reads: the image and the release.
    fn make_built(dir: &Path, release: &str) {
        fs::create_dir_all(dir.join("arch/x86/boot")).unwrap();
        fs::write(dir.join(IMAGE_IN_TREE), b"image").unwrap();
        fs::create_dir_all(dir.join("include/config")).unwrap();
        fs::write(
            dir.join("include/config/kernel.release"),
            format!("{release}\n"),
        )
        .unwrap();
    }

    /// Lays out `layout` under `t`; returns what `--kernel` names and the
    /// source tree expected.
    fn lay_out(t: &Path, layout: &str) -> (PathBuf, PathBuf) {
        let src = t.join("linux");
        match layout {
            "source dir" => {
                source_tree(&src, true);
                (src.clone(), src)
            }
            "unbuilt source dir" => {
                source_tree(&src, false);
                (src.clone(), src)
            }
            "image in source dir" => {
                source_tree(&src, true);
                (src.join(IMAGE_IN_TREE), src)
            }
            "O= build dir" | "image in O= build dir" => {
                source_tree(&src, false);
                let build = t.join("build");
                make_built(&build, "7.3.1-rc2-dev");
                std::os::unix::fs::symlink(&src, build.join(SOURCE_LINK)).unwrap();
                let named = match layout {
                    "O= build dir" => build,
                    _ => build.join(IMAGE_IN_TREE),
                };
                (named, src)
            }
            _ => unreachable!("{layout}"),
        }
    }

    #[rstest]
    #[case("source dir", "7.3.1-rc2-dev")]
    #[case("unbuilt source dir", "7.3.1-rc2")]
    #[case("image in source dir", "7.3.1-rc2-dev")]
    #[case("O= build dir", "7.3.1-rc2-dev")]
    #[case("image in O= build dir", "7.3.1-rc2-dev")]
    fn the_tree_is_found_from_what_kernel_names(#[case] layout: &str, #[case] release: &str) {
        let t = tempfile::tempdir().unwrap();
        let (named, src) = lay_out(t.path(), layout);
        let tree = locate(&named, VFIO).unwrap();
        assert_eq!(tree.source, src.canonicalize().unwrap());
        assert_eq!(tree.release, release);
        assert!(tree.name().contains(release), "{}", tree.name());
    }

    #[rstest]
    #[case::bare_image("vmlinuz-7.3", "pass the kernel's build directory")]
    #[case::image_elsewhere("boot/bzImage", "no build tree around it")]
    #[case::not_a_tree("empty", "neither a kernel source tree nor a `make O=` build")]
    #[case::old_tree("old", "has no tools/testing/selftests/vfio")]
    #[case::dangling_link("dangling", "`source` link")]
    fn no_tree_is_refused_saying_what_is_missing(#[case] what: &str, #[case] message: &str) {
        let t = tempfile::tempdir().unwrap();
        let named = t.path().join(what);
        match what {
            "empty" => fs::create_dir_all(&named).unwrap(),
            "old" => {
                source_tree(&named, true);
                fs::remove_dir_all(named.join(VFIO)).unwrap();
            }
            "dangling" => {
                fs::create_dir_all(&named).unwrap();
                std::os::unix::fs::symlink("/nonexistent/linux", named.join(SOURCE_LINK)).unwrap();
            }
            _ => {
                fs::create_dir_all(named.parent().unwrap()).unwrap();
                fs::write(&named, b"image").unwrap();
            }
        }
        let text = locate(&named, VFIO).unwrap_err().to_string();
        assert!(text.contains(message), "{text}");
        assert!(text.contains(&named.display().to_string()), "{text}");
    }

    fn key_of(tree: &Path) -> String {
        let mut h = KeyHasher::default();
        content_key(&mut h, tree, VFIO).unwrap();
        h.key("k")
    }

    #[rstest]
    #[case::selftest_source("tools/testing/selftests/vfio/lib/libvfio.c")]
    #[case::new_selftest_file("tools/testing/selftests/vfio/new_test.c")]
    #[case::harness("tools/testing/selftests/lib.mk")]
    #[case::uapi_header("include/uapi/linux/vfio.h")]
    #[case::version("Makefile")]
    fn the_key_follows_the_content(#[case] edited: &str) {
        let t = tempfile::tempdir().unwrap();
        source_tree(t.path(), true);
        let before = key_of(t.path());
        assert_eq!(before, key_of(t.path()), "stable");
        let path = t.path().join(edited);
        let mut text = fs::read(&path).unwrap_or_default();
        text.extend_from_slice(b"/* edited */\n");
        fs::write(&path, text).unwrap();
        assert_ne!(before, key_of(t.path()), "{edited}");
    }

    #[test]
    fn the_key_ignores_what_the_build_does_not_read() {
        let t = tempfile::tempdir().unwrap();
        source_tree(t.path(), true);
        let before = key_of(t.path());
        fs::create_dir_all(t.path().join("mm")).unwrap();
        fs::write(t.path().join("mm/mmap.c"), "edited").unwrap();
        fs::create_dir_all(t.path().join("tools/testing/selftests/mm")).unwrap();
        fs::write(t.path().join("tools/testing/selftests/mm/x.c"), "x").unwrap();
        assert_eq!(before, key_of(t.path()));
    }

    #[rstest]
    #[case(
        "VERSION = 7\nPATCHLEVEL = 2\nSUBLEVEL = 13\nEXTRAVERSION =\n",
        Some("7.2.13")
    )]
    #[case("VERSION = 6\nPATCHLEVEL = 19\n", Some("6.19.0"))]
    #[case("# no version\n", None)]
    fn version_from_the_makefile(#[case] text: &str, #[case] want: Option<&str>) {
        assert_eq!(makefile_version(text).as_deref(), want);
    }
}
