//! External kselftest programs for the guest: bigbar's kernel reproducers
//! (`kernel/selftests/vfio/` of the workspace), compiled statically on the host
//! against the kernel source the project builds from.
//!
//! They are compiled like the kernel's own selftests: `-I` the selftests
//! directory for `kselftest_harness.h`, and `-isystem` the UAPI headers that
//! `make headers` of that source exports (into the cache entry, with `O=`, so
//! the shared source tree stays clean for kernel builds). The guest finds them
//! in the kselftest install layout under [`GUEST_DIR`]: `<collection>/<program>`.
//!
//! Cache entry: `kselftests/<collection>/<package>_<version>-<hash>/`, the hash
//! covering the C sources and the compiler command, so editing a reproducer
//! rebuilds it.
//!
//! The kernel's own selftests are built from a kernel tree by [`tree`].

use std::fs;
use std::path::{Path, PathBuf};
use std::process::Command;

use crate::cache::{key_from_version, KeyHasher};
use crate::command::{require_tool, run};
use crate::error::{Error, IoContext, Result};
use crate::fetch::Fetcher;
use crate::kernel::source::{self, KernelSource};

pub mod tree;
pub mod user_tree;
pub use tree::{build_from_tree, build_from_user_tree, TreeSuite, VFIO_COLLECTION};

/// Where external kselftest programs go in the initramfs.
pub const GUEST_DIR: &str = "/lib/kselftests";
/// The collection (sub-directory) of bigbar's reproducers; it names their results.
pub const REPRO_COLLECTION: &str = "repro";

/// The compiler flags; part of the cache key.
const CFLAGS: [&str; 3] = ["-static", "-O2", "-Wall"];
/// Bumped when the way the programs are built changes.
const RECIPE: &str = "kselftests-1";

/// A built collection of kselftest programs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Collection {
    /// Its name, the directory under [`GUEST_DIR`].
    pub name: String,
    /// The directory holding the programs (and nothing else).
    pub dir: PathBuf,
    /// The programs' file names, sorted.
    pub programs: Vec<String>,
    /// The kernel source whose headers they were compiled against.
    pub source: String,
}

/// Compiles every `*.c` of `sources` (the workspace's `kernel/selftests/vfio`)
/// into the [`REPRO_COLLECTION`], against the current kernel source (fetched
/// and unpacked if it is not cached); cached until the sources change.
pub fn build_reproducers(fetcher: &Fetcher<'_>, sources: &Path) -> Result<Collection> {
    let (package, version) = source::resolve_version(fetcher)?;
    let kernel = source::obtain(fetcher, &package, &version)?;
    build_collection(fetcher, REPRO_COLLECTION, sources, &kernel)
}

/// Compiles the `*.c` of `sources` into collection `name` against `kernel`.
pub fn build_collection(
    fetcher: &Fetcher<'_>,
    name: &str,
    sources: &Path,
    kernel: &KernelSource,
) -> Result<Collection> {
    let programs = c_sources(sources)?;
    if programs.is_empty() {
        return Err(Error::Initramfs(format!(
            "no kselftest sources (*.c) in {}",
            sources.display()
        )));
    }
    let key = cache_key(sources, &programs, kernel)?;
    let category = ["kselftests", name];
    let entry = fetcher.cache().get_or_create(&category, &key, |dir| {
        fetcher.report(&format!(
            "compiling {name} kselftests against {}",
            kernel.name()
        ));
        compile_all(sources, &programs, kernel, dir)
    })?;
    Ok(Collection {
        name: name.to_owned(),
        dir: entry.join(name),
        programs: programs.iter().map(|p| program_name(p)).collect(),
        source: kernel.name(),
    })
}

/// The `*.c` file names of `dir`, sorted.
fn c_sources(dir: &Path) -> Result<Vec<String>> {
    let mut names = Vec::new();
    for e in fs::read_dir(dir).at("reading", dir)? {
        let name = e.at("reading", dir)?.file_name();
        let name = name.to_string_lossy();
        if name.ends_with(".c") {
            names.push(name.into_owned());
        }
    }
    names.sort();
    Ok(names)
}

fn program_name(c_file: &str) -> String {
    c_file.trim_end_matches(".c").to_owned()
}

/// Hashes every file of `sources` (headers included), the flags, the host's
/// toolchain and the source.
fn cache_key(sources: &Path, programs: &[String], kernel: &KernelSource) -> Result<String> {
    let mut h = KeyHasher::default();
    h.part(RECIPE.as_bytes());
    crate::kernel::toolchain::Toolchain::host().hash_into(&mut h);
    for f in CFLAGS {
        h.part(f.as_bytes());
    }
    let mut files: Vec<PathBuf> = fs::read_dir(sources)
        .at("reading", sources)?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.is_file())
        .collect();
    files.sort();
    for f in &files {
        h.part(f.file_name().unwrap_or_default().as_encoded_bytes());
        h.part(&fs::read(f).at("reading", f)?);
    }
    for p in programs {
        h.part(p.as_bytes());
    }
    Ok(h.key(&key_from_version(&format!(
        "{}_{}",
        kernel.package, kernel.version
    ))))
}

/// Exports the UAPI headers, compiles each program into `dir/<collection>`,
/// then drops the header build (only the programs are kept).
fn compile_all(
    sources: &Path,
    programs: &[String],
    kernel: &KernelSource,
    dir: &Path,
) -> Result<()> {
    let cc = require_tool("cc", "gcc")?;
    let make = require_tool("make", "make")?;
    let obj = dir.join("obj");
    // `make headers` with O= writes only below obj/ (the tree may be shared).
    run(Command::new(make)
        .arg("-s")
        .arg("-C")
        .arg(&kernel.tree)
        .arg(format!("O={}", obj.display()))
        .arg("headers"))?;
    let selftests = kernel.tree.join("tools/testing/selftests");
    let out = dir.join(REPRO_COLLECTION);
    fs::create_dir_all(&out).at("creating directory", &out)?;
    for c in programs {
        run(&mut compile_command(
            &cc,
            &sources.join(c),
            &selftests,
            &obj.join("usr/include"),
            &out.join(program_name(c)),
        ))?;
    }
    fs::remove_dir_all(&obj).at("removing", &obj)
}

/// `cc -static -O2 -Wall -I<selftests>/vfio -isystem <headers> -o <out> <file>`.
///
/// The sources include `../kselftest_harness.h` as the kernel's vfio selftests
/// sit next to it, so the include path is a directory below the selftests.
fn compile_command(
    cc: &Path,
    file: &Path,
    selftests: &Path,
    headers: &Path,
    out: &Path,
) -> Command {
    let mut cmd = Command::new(cc);
    cmd.args(CFLAGS)
        .arg("-I")
        .arg(selftests.join("vfio"))
        .arg("-isystem")
        .arg(headers)
        .arg("-o")
        .arg(out)
        .arg(file);
    cmd
}

#[cfg(test)]
mod tests {
    use super::*;

    fn source(tree: &Path) -> KernelSource {
        KernelSource {
            package: "linux-source-7.2".into(),
            version: "7.2.13-1".into(),
            tree: tree.to_owned(),
        }
    }

    #[test]
    fn only_c_files_are_programs_and_every_file_is_in_the_key() {
        let t = tempfile::tempdir().unwrap();
        fs::write(t.path().join("b_test.c"), "int main(void) { return 0; }").unwrap();
        fs::write(t.path().join("a_test.c"), "int main(void) { return 0; }").unwrap();
        fs::write(t.path().join("common.h"), "/* v1 */").unwrap();
        fs::write(t.path().join("README.md"), "x").unwrap();
        let programs = c_sources(t.path()).unwrap();
        assert_eq!(programs, ["a_test.c", "b_test.c"]);
        let src = source(Path::new("/nonexistent"));
        let k1 = cache_key(t.path(), &programs, &src).unwrap();
        assert!(k1.starts_with("linux-source-7.2_7.2.13-1-"), "{k1}");
        assert_eq!(k1, cache_key(t.path(), &programs, &src).unwrap());
        fs::write(t.path().join("common.h"), "/* v2 */").unwrap();
        assert_ne!(k1, cache_key(t.path(), &programs, &src).unwrap());
    }

    #[test]
    fn compiler_gets_the_selftests_and_header_directories() {
        let cmd = compile_command(
            Path::new("cc"),
            Path::new("/w/x_test.c"),
            Path::new("/src/tools/testing/selftests"),
            Path::new("/e/obj/usr/include"),
            Path::new("/e/repro/x_test"),
        );
        assert_eq!(
            crate::command::display(&cmd),
            "cc -static -O2 -Wall -I /src/tools/testing/selftests/vfio \
             -isystem /e/obj/usr/include -o /e/repro/x_test /w/x_test.c"
        );
    }
}
