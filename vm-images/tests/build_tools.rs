//! Kernel build tools fetched from the host's distribution work from the cache.
//!
//! The host's bison, flex, m4 and libelf headers are hidden from the lookup (its
//! `PATH` is a directory of symlinks to every host program but those, its include
//! directories are empty), so all four come from the cache; then a kernel is
//! configured (`make allnoconfig`: kconfig's parser and lexer need bison and flex)
//! and objtool built (`make tools/objtool`: libelf) out of tree in Debian's kernel
//! source, with make's `PATH` the reduced directory: had the host's tools been used,
//! make would not find them.
//!
//! Not ignored: it runs in `cargo test --workspace` and needs Debian's archive on
//! every run: the tools are fetched (about 2 MB, with the host release's package
//! lists) into a private empty store each time, so that a warm user store never
//! hides a broken fetch. The kernel source comes from the user's store
//! (`$BIGBAR_CACHE`, else `~/.cache/bigbar`), which the `stock` build fills too.
//! Then about a minute of make on 2 cores.

use std::ffi::OsStr;
use std::fs;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Instant;

use vm_images::kernel::build_tools::{self, BuildTools, Fetchable, HostLookup, Missing};
use vm_images::kernel::source;
use vm_images::{Cache, Fetcher};

/// Programs hidden from the lookup and from make.
const HIDDEN: [&str; 8] = [
    "bison",
    "bison.yacc",
    "yacc",
    "byacc",
    "flex",
    "flex++",
    "lex",
    "m4",
];

fn progress(message: &str) {
    eprintln!("  .. {message}");
}

/// A directory of symlinks to the first of each program name in `PATH`, but the
/// hidden ones.
fn reduced_path(dir: &Path) -> PathBuf {
    use std::os::unix::fs::PermissionsExt;
    let bin = dir.join("bin");
    fs::create_dir_all(&bin).unwrap();
    let path = std::env::var_os("PATH").unwrap();
    for d in std::env::split_paths(&path) {
        let Ok(entries) = fs::read_dir(&d) else {
            continue;
        };
        for e in entries.flatten() {
            let name = e.file_name();
            let link = bin.join(&name);
            let executable = fs::metadata(e.path())
                .is_ok_and(|m| m.is_file() && m.permissions().mode() & 0o111 != 0);
            if !executable
                || HIDDEN.iter().any(|h| OsStr::new(h) == name)
                || link.symlink_metadata().is_ok()
            {
                continue;
            }
            std::os::unix::fs::symlink(e.path(), &link).unwrap();
        }
    }
    bin
}

/// Runs make in `tree` with objects in `obj` and the tools' environment; panics
/// with the end of its output if it fails.
fn make(tools: &BuildTools, tree: &Path, obj: &Path, args: &[&str]) {
    let t = Instant::now();
    let mut cmd = Command::new("make");
    cmd.arg("-C")
        .arg(tree)
        .arg(format!("O={}", obj.display()))
        .env("LC_ALL", "C");
    tools.apply(&mut cmd);
    cmd.args(args);
    let out = cmd.output().unwrap();
    let text =
        String::from_utf8_lossy(&out.stdout).into_owned() + &String::from_utf8_lossy(&out.stderr);
    let lines: Vec<&str> = text.lines().collect();
    let tail = lines[lines.len().saturating_sub(40)..].join("\n");
    assert!(out.status.success(), "make {args:?} failed:\n{tail}");
    eprintln!("make {args:?}: {:.1?}", t.elapsed());
}

#[test]
fn fetched_tools_configure_a_kernel_and_build_objtool() {
    let tmp = tempfile::tempdir().unwrap();
    let cache = Cache::new(tmp.path().join("store"));
    let fetcher = Fetcher::new(&cache).progress(&progress);
    let user = Cache::user().expect("a store");
    let user_fetcher = Fetcher::new(&user).progress(&progress);
    // The include directory holds only an (empty) OpenSSL header, which a kernel
    // build needs but bigbar does not fetch; libelf's headers are hidden.
    let include = tmp.path().join("include");
    fs::create_dir_all(include.join("openssl")).unwrap();
    fs::write(include.join("openssl/opensslv.h"), "").unwrap();
    let lookup = HostLookup {
        path: reduced_path(tmp.path()).into(),
        include_dirs: vec![include],
    };
    let missing = Missing::find(|r| lookup.has(r));
    assert_eq!(missing.fetchable, Fetchable::ALL);
    assert!(
        missing.host_only.is_empty(),
        "the host lacks {:?}",
        missing.host_only
    );

    let t = Instant::now();
    let tools = build_tools::obtain(&fetcher, &lookup).unwrap();
    eprintln!("build tools: {:.1?}", t.elapsed());
    let fetched = tools
        .fetched
        .clone()
        .expect("the tools come from the cache");
    assert_eq!(fetched.info.provides, Fetchable::ALL);
    let names: Vec<&str> = fetched
        .info
        .packages
        .iter()
        .map(|(p, _)| p.as_str())
        .collect();
    assert_eq!(names, ["bison", "flex", "libelf-dev", "libelf1", "m4"]);
    eprintln!(
        "packages {:?}: {} bytes downloaded in {:.1} s",
        fetched.info.packages, fetched.info.download_bytes, fetched.info.download_seconds
    );
    let prefix = fetched.prefix();
    // In make's PATH, bison is the prefix's and nothing else has one.
    let path = tools.var("PATH").unwrap();
    let found: Vec<PathBuf> = std::env::split_paths(path)
        .map(|d| d.join("bison"))
        .filter(|p| p.exists())
        .collect();
    assert_eq!(found, [prefix.join("usr/bin/bison")]);

    // A warm cache answers without the archive.
    let offline = Fetcher::new(&cache).mirror("http://127.0.0.1:9/debian");
    let again = build_tools::obtain(&offline, &lookup).unwrap();
    assert_eq!(again.fetched.unwrap().entry, fetched.entry);

    let t = Instant::now();
    let (package, version) = source::resolve_version(&user_fetcher).unwrap();
    let src = source::obtain(&user_fetcher, &package, &version).unwrap();
    eprintln!("source {}: {:.1?}", src.name(), t.elapsed());

    let obj = tmp.path().join("obj");
    make(&tools, &src.tree, &obj, &["allnoconfig"]);
    for generated in ["parser.tab.c", "lexer.lex.c", "conf"] {
        let p = obj.join("scripts/kconfig").join(generated);
        assert!(p.is_file(), "{} missing", p.display());
    }
    assert!(obj.join(".config").is_file());
    let jobs = std::thread::available_parallelism().map_or(1, |n| n.get());
    make(
        &tools,
        &src.tree,
        &obj,
        &[&format!("-j{jobs}"), "tools/objtool"],
    );

    let objtool = obj.join("tools/objtool/objtool");
    assert!(objtool.is_file(), "{} missing", objtool.display());
    let ldd = Command::new("ldd").arg(&objtool).output().unwrap();
    let ldd = String::from_utf8_lossy(&ldd.stdout);
    let libelf = ldd
        .lines()
        .find(|l| l.contains("libelf"))
        .unwrap_or_else(|| panic!("objtool links no libelf:\n{ldd}"));
    assert!(
        libelf.contains(
            &prefix
                .join("usr/lib/x86_64-linux-gnu")
                .display()
                .to_string()
        ),
        "objtool's libelf is not the prefix's: {libelf}"
    );
    let help = Command::new(&objtool).arg("--help").output().unwrap();
    let help = String::from_utf8_lossy(&help.stdout) + String::from_utf8_lossy(&help.stderr);
    assert!(help.contains("Usage: objtool"), "{help}");

    // pkg-config, where the host has it, names the prefix's libelf.
    if lookup.find_program("pkg-config").is_some() {
        let out = run_plain(OsStr::new("pkg-config"), &tools, &["--cflags", "libelf"]);
        let include = out
            .trim()
            .strip_prefix("-I")
            .unwrap_or_else(|| panic!("{out}"));
        assert_eq!(
            fs::canonicalize(include).unwrap(),
            fs::canonicalize(prefix.join("usr/include")).unwrap()
        );
        let libs = run_plain(OsStr::new("pkg-config"), &tools, &["--libs", "libelf"]);
        assert!(libs.trim().ends_with("-lelf"), "{libs}");
    }
}

/// Runs `program args` with the tools' environment (no make arguments).
fn run_plain(program: &OsStr, tools: &BuildTools, args: &[&str]) -> String {
    let out = Command::new(program)
        .args(args)
        .envs(tools.env.iter().map(|(k, v)| (k, v)))
        .output()
        .unwrap();
    assert!(out.status.success(), "{program:?} {args:?}: {out:?}");
    String::from_utf8_lossy(&out.stdout).into_owned()
}
