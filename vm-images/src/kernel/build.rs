//! Kernels bigbar builds itself from Debian's source: `stock` (the source as Debian
//! ships it), `reference` (plus the placement series in `kernel/patches/reference`)
//! and `fixed` (reference plus the fixes of the kernel findings in
//! `kernel/patches/fixes`), all configured with `make allnoconfig` and the fragment
//! `vm-images/config/bigbar.config`, everything built in; and `minimal`, the
//! unpatched source with `vm-images/config/minimal.config` instead (tinyconfig plus
//! the runner's requirements), which proves that every optional facility is
//! detected.
//!
//! A build is a cache entry `kernel/built/<name>-<source version>-<hash>`, where the
//! hash covers everything that changes the kernel's bytes: the source package and
//! version, the fragment, every patch of the series by content, the build recipe,
//! the architecture and page size, and the toolchain ([`Toolchain`]: compiler,
//! binutils, make, bison, flex and the fetched build tools' versions). Changing
//! any of them builds anew and nothing else does. The build runs out of tree
//! (`O=`) inside the entry being filled and keeps only the image, `.config`,
//! `System.map` and the build log.

use std::fs::{self, OpenOptions};
use std::io::{BufRead, BufReader, Write};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};

use super::build_tools::{self, BuildTools, HostLookup};
use super::kconfig;
use super::patches::Series;
use super::source::{self, KernelSource};
use super::toolchain::Toolchain;
use super::{load_entry, EntryInfo, Kernel, KernelSpec, ENTRY_INFO};
use crate::cache::{key_from_version, CacheLock, KeyHasher};
use crate::command::{display, require_tool, run, tail};
use crate::error::{Error, IoContext, Result};
use crate::fetch::Fetcher;

/// Changes whenever the build steps change in a way that changes the result.
const RECIPE: &str = "bigbar kernel build 1: allnoconfig + fragment, bzImage, LOCALVERSION";

/// The architecture the kernels are built for (`ARCH=`); part of the key.
const ARCH: &str = "x86_64";

/// The base page size of the kernels built; part of the key.
const PAGE_SIZE: &str = "4K";

/// The configuration fragment shipped with vm-images.
pub fn default_fragment() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("config/bigbar.config")
}

/// The fragment of the `minimal` kernel: tinyconfig plus only what the runner's
/// configuration check requires.
pub fn minimal_fragment() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("config/minimal.config")
}

/// The directory of the project's kernel patch series (`kernel/patches`).
pub fn patches_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../kernel/patches")
}

/// The reference patch series: offset-aware placement (`kernel/patches/reference`).
pub fn reference_patches() -> PathBuf {
    patches_dir().join("reference")
}

/// The fixes of the kernel findings (`kernel/patches/fixes`), applied after the
/// reference series in the `fixed` kernel.
pub fn fix_patches() -> PathBuf {
    patches_dir().join("fixes")
}

/// The project's fixes for building and running the kernel's selftests as
/// shipped (`kernel/patches/selftests`), applied to a copy of them.
pub fn selftests_patches() -> PathBuf {
    patches_dir().join("selftests")
}

/// What a built kernel is made of, besides the Debian source.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Recipe {
    /// `stock`, `reference`, `fixed` or `minimal`: names the cache entry and the
    /// kernel's LOCALVERSION.
    pub name: String,
    /// The configuration fragment applied on top of `allnoconfig`.
    pub fragment: PathBuf,
    /// The patch series applied to the source, in order.
    pub series: Vec<Series>,
}

impl Recipe {
    /// The recipe of a `stock`, `reference`, `fixed` or `minimal` spec, from the
    /// files shipped with the project; `None` for other specs.
    pub fn for_spec(spec: &KernelSpec) -> Result<Option<Self>> {
        Self::for_spec_in(spec, &patches_dir())
    }

    /// [`Recipe::for_spec`] with the series read from `patches` (a copy of
    /// `kernel/patches`) instead of the project's own.
    pub fn for_spec_in(spec: &KernelSpec, patches: &Path) -> Result<Option<Self>> {
        let (reference, fixes) = (patches.join("reference"), patches.join("fixes"));
        if *spec == KernelSpec::Minimal {
            return Ok(Some(Self {
                name: "minimal".into(),
                fragment: minimal_fragment(),
                series: Vec::new(),
            }));
        }
        let (name, series) = match spec {
            KernelSpec::Stock => ("stock", Vec::new()),
            KernelSpec::Reference => ("reference", vec![Series::read(&reference)?]),
            KernelSpec::Fixed => (
                "fixed",
                vec![Series::read(&reference)?, Series::read(&fixes)?],
            ),
            _ => return Ok(None),
        };
        Ok(Some(Self {
            name: name.into(),
            fragment: default_fragment(),
            series,
        }))
    }

    /// The cache key of this recipe applied to the source `version` with
    /// `toolchain`: `<name>-<version>-<16 hex digits of a SHA-256 over everything
    /// that matters>`.
    pub fn key(&self, package: &str, version: &str, toolchain: &Toolchain) -> Result<String> {
        let fragment = fs::read(&self.fragment).at("reading", &self.fragment)?;
        let mut patches = Vec::new();
        for series in &self.series {
            patches.extend(series.fingerprint_parts()?);
        }
        Ok(build_key(&KeyInputs {
            name: &self.name,
            package,
            version,
            fragment: &fragment,
            patches: &patches,
            toolchain: &toolchain.parts,
        }))
    }
}

/// Everything a build's key hashes.
struct KeyInputs<'a> {
    name: &'a str,
    package: &'a str,
    version: &'a str,
    fragment: &'a [u8],
    patches: &'a [(String, Vec<u8>)],
    toolchain: &'a [String],
}

/// Hashes each part with its length, so that moving bytes between parts changes
/// it; lists are preceded by their length for the same reason.
fn build_key(k: &KeyInputs<'_>) -> String {
    let mut h = KeyHasher::default();
    for p in [RECIPE, ARCH, PAGE_SIZE, k.name, k.package, k.version] {
        h.part(p.as_bytes());
    }
    h.part(k.fragment);
    h.part(&(k.patches.len() as u64).to_le_bytes());
    for (patch_name, content) in k.patches {
        h.part(patch_name.as_bytes());
        h.part(content);
    }
    Toolchain {
        parts: k.toolchain.to_vec(),
    }
    .hash_into(&mut h);
    h.key(&format!("{}-{}", k.name, key_from_version(k.version)))
}

/// The key `recipe` has in this store with this host's toolchain: what
/// [`obtain`] looks up. Obtains the build tools (cheap once cached), since
/// their versions are part of it.
pub fn current_key(fetcher: &Fetcher<'_>, recipe: &Recipe) -> Result<(String, BuildTools)> {
    let (package, version) = source::resolve_version(fetcher)?;
    let tools = build_tools::obtain(fetcher, &HostLookup::from_env())?;
    let key = recipe.key(&package, &version, &Toolchain::probe(&tools))?;
    Ok((key, tools))
}

const CATEGORY: [&str; 2] = ["kernel", "built"];
const BUILD_INFO: &str = "build.json";

/// What a build entry records besides [`EntryInfo`]: its inputs and how long it took.
#[derive(Debug, Serialize, Deserialize)]
struct BuildInfo {
    source: String,
    fragment: PathBuf,
    patches: Vec<String>,
    patches_based_on: Option<String>,
    key: String,
    build_seconds: f64,
}

/// Obtains the kernel `recipe` describes, building it if the cache lacks it.
pub fn obtain(fetcher: &Fetcher<'_>, spec: &KernelSpec, recipe: &Recipe) -> Result<Kernel> {
    let (key, tools) = current_key(fetcher, recipe)?;
    let cache = fetcher.cache();
    if let Some(entry) = cache.existing(&CATEGORY, &key)? {
        return load_entry(&entry);
    }
    let (package, version) = source::resolve_version(fetcher)?;
    let source = source::obtain(fetcher, &package, &version)?;
    let entry = cache.get_or_create(&CATEGORY, &key, |dir| {
        // One build at a time: a kernel build uses every core.
        let _build =
            CacheLock::acquire_saying(&cache.category_dir(&CATEGORY).join("build.lock"), || {
                format!(
                    "kernel {} waits for another kernel build (one at a time) to finish",
                    recipe.name
                )
            })?;
        build_into(fetcher, spec, recipe, &source, &tools, &key, dir)
    })?;
    load_entry(&entry)
}

/// Builds into the (empty) entry directory `dir`.
fn build_into(
    fetcher: &Fetcher<'_>,
    spec: &KernelSpec,
    recipe: &Recipe,
    source: &KernelSource,
    tools: &BuildTools,
    key: &str,
    dir: &Path,
) -> Result<()> {
    let started = Instant::now();
    let report = |m: &str| fetcher.report(&format!("kernel {}: {m}", recipe.name));
    let patched = !recipe.series.is_empty();
    let tree = if patched {
        report(&format!("linking a copy of {}", source.name()));
        let tree = dir.join("src");
        run(Command::new(require_tool("cp", "coreutils")?)
            .arg("-al")
            .arg(&source.tree)
            .arg(&tree))?;
        for series in &recipe.series {
            series.apply(&tree, &source.name(), &report)?;
        }
        tree
    } else {
        source.tree.clone()
    };
    let make = Make {
        tree: tree.clone(),
        obj: dir.join("obj"),
        localversion: format!("-bigbar-{}", recipe.name),
        log: dir.join("build.log"),
        tools: tools.clone(),
    };
    let fragment = fs::canonicalize(&recipe.fragment).at("resolving", &recipe.fragment)?;
    report(&format!(
        "configuring: allnoconfig + {}",
        recipe.fragment.display()
    ));
    make.run(
        &[
            format!("KCONFIG_ALLCONFIG={}", fragment.display()),
            "allnoconfig".into(),
        ],
        None,
    )?;
    verify_config(&fragment, &make.obj.join(".config"))?;
    let jobs = std::thread::available_parallelism().map_or(1, |n| n.get());
    report(&format!(
        "building bzImage of {} with make -j{jobs} (minutes; log {})",
        source.name(),
        make.log.display()
    ));
    make.run(&[format!("-j{jobs}"), "bzImage".into()], Some(&report))?;
    let release = make.kernelrelease()?;

    let obj = &make.obj;
    for (from, to) in [
        ("arch/x86/boot/bzImage", "bzImage"),
        (".config", "config"),
        ("System.map", "System.map"),
    ] {
        fs::copy(obj.join(from), dir.join(to)).at("copying build output to", dir.join(to))?;
    }
    fs::remove_dir_all(obj).at("removing build directory", obj)?;
    if patched {
        fs::remove_dir_all(&tree).at("removing patched source copy", &tree)?;
    }
    let seconds = started.elapsed().as_secs_f64();
    report(&format!("built {release} in {seconds:.0} s"));
    write_json(
        &dir.join(ENTRY_INFO),
        &EntryInfo {
            spec: spec.clone(),
            release,
            package_version: source.version.clone(),
            image: "bzImage".into(),
            modules: Vec::new(),
            config: Some("config".into()),
        },
    )?;
    write_json(
        &dir.join(BUILD_INFO),
        &BuildInfo {
            source: source.name(),
            fragment: recipe.fragment.clone(),
            patches: recipe.series.iter().flat_map(Series::names).collect(),
            patches_based_on: recipe.series.first().and_then(|s| s.based_on.clone()),
            key: key.to_owned(),
            build_seconds: seconds,
        },
    )
}

/// Checks that `.config` holds every option of the fragment with its value.
fn verify_config(fragment: &Path, config: &Path) -> Result<()> {
    let read = |p: &Path| -> Result<kconfig::Options> {
        kconfig::parse(&fs::read_to_string(p).at("reading", p)?, p)
    };
    let mismatches = kconfig::mismatches(&read(fragment)?, &read(config)?);
    if mismatches.is_empty() {
        return Ok(());
    }
    Err(Error::KernelConfig {
        config: config.to_owned(),
        fragment: fragment.to_owned(),
        mismatches,
    })
}

fn write_json<T: Serialize>(path: &Path, value: &T) -> Result<()> {
    let json = serde_json::to_string_pretty(value).map_err(|e| Error::Parse {
        what: format!("record {}", path.display()),
        detail: e.to_string(),
    })?;
    fs::write(path, json).at("writing", path)
}

/// `make` in a source tree with an out-of-tree object directory, logging to a file.
struct Make {
    tree: PathBuf,
    obj: PathBuf,
    localversion: String,
    log: PathBuf,
    /// The environment and variables that make the build tools reachable.
    tools: BuildTools,
}

/// How often a long build reports how far it got.
const PROGRESS_EVERY: Duration = Duration::from_secs(30);

impl Make {
    fn command(&self) -> Command {
        let mut cmd = Command::new("make");
        cmd.arg("-C")
            .arg(&self.tree)
            .arg(format!("O={}", self.obj.display()))
            .arg(format!("LOCALVERSION={}", self.localversion))
            .env("LC_ALL", "C")
            .stdin(Stdio::null());
        self.tools.apply(&mut cmd);
        cmd
    }

    /// Runs make with `args`, appending its output to the log. With `progress`, says
    /// every [`PROGRESS_EVERY`] how many objects were built so far.
    fn run(&self, args: &[String], progress: Option<&dyn Fn(&str)>) -> Result<()> {
        let mut cmd = self.command();
        cmd.args(args);
        let log = OpenOptions::new()
            .create(true)
            .append(true)
            .open(&self.log)
            .at("opening build log", &self.log)?;
        let mut out = log.try_clone().at("opening build log", &self.log)?;
        for (name, value) in &self.tools.env {
            writeln!(out, "# {name}={}", value.to_string_lossy()).at("writing", &self.log)?;
        }
        writeln!(out, "$ {}", display(&cmd)).at("writing", &self.log)?;
        cmd.stdout(Stdio::piped()).stderr(log);
        let mut child = cmd.spawn().map_err(|source| Error::Spawn {
            command: display(&cmd),
            source,
        })?;
        let stdout = child.stdout.take().expect("stdout is piped");
        let mut built = 0usize;
        let mut last = Instant::now();
        for line in BufReader::new(stdout).lines() {
            let line = line.at("reading make output for", &self.log)?;
            writeln!(out, "{line}").at("writing", &self.log)?;
            if let Some(target) = compiled_object(&line) {
                built += 1;
                if let Some(report) = progress.filter(|_| last.elapsed() >= PROGRESS_EVERY) {
                    report(&format!("{built} objects built ({target})"));
                    last = Instant::now();
                }
            }
        }
        let status = child.wait().map_err(|source| Error::Spawn {
            command: display(&cmd),
            source,
        })?;
        if status.success() {
            return Ok(());
        }
        let text = fs::read_to_string(&self.log).at("reading", &self.log)?;
        Err(Error::KernelBuild {
            command: display(&cmd),
            status,
            log: self.log.clone(),
            tail: tail(&text, 25),
        })
    }

    /// `make -s kernelrelease`: the release `uname -r` will print.
    fn kernelrelease(&self) -> Result<String> {
        let mut cmd = self.command();
        cmd.args(["-s", "kernelrelease"]);
        let out = run(&mut cmd)?;
        let release = String::from_utf8_lossy(&out.stdout).trim().to_owned();
        if release.is_empty() || release.contains(char::is_whitespace) {
            return Err(Error::Parse {
                what: format!("output of `{}`", display(&cmd)),
                detail: format!("not a kernel release: {release:?}"),
            });
        }
        Ok(release)
    }
}

/// The object a kbuild progress line (`  CC      mm/mmap.o`) names, if it is one.
fn compiled_object(line: &str) -> Option<&str> {
    let mut words = line.split_whitespace();
    let tool = words.next()?;
    let target = words.next()?;
    let is_tool = matches!(tool, "CC" | "AS" | "LD" | "AR");
    (line.starts_with("  ") && is_tool && words.next().is_none()).then_some(target)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key(name: &str, version: &str, fragment: &[u8], patches: &[(&str, &[u8])]) -> String {
        key_with(name, version, fragment, patches, &["gcc: gcc 12"])
    }

    fn key_with(
        name: &str,
        version: &str,
        fragment: &[u8],
        patches: &[(&str, &[u8])],
        toolchain: &[&str],
    ) -> String {
        let patches: Vec<(String, Vec<u8>)> = patches
            .iter()
            .map(|(n, c)| (n.to_string(), c.to_vec()))
            .collect();
        let toolchain: Vec<String> = toolchain.iter().map(|t| t.to_string()).collect();
        build_key(&KeyInputs {
            name,
            package: "linux-source-7.2",
            version,
            fragment,
            patches: &patches,
            toolchain: &toolchain,
        })
    }

    #[test]
    fn key_names_the_build_and_changes_with_each_input() {
        let base = key(
            "reference",
            "7.2.13-1",
            b"CONFIG_A=y\n",
            &[("1.patch", b"x")],
        );
        assert!(base.starts_with("reference-7.2.13-1-"), "{base}");
        assert_eq!(base.len(), "reference-7.2.13-1-".len() + 16);
        assert_eq!(
            base,
            key(
                "reference",
                "7.2.13-1",
                b"CONFIG_A=y\n",
                &[("1.patch", b"x")]
            )
        );
        let variants = [
            key("stock", "7.2.13-1", b"CONFIG_A=y\n", &[("1.patch", b"x")]),
            key(
                "reference",
                "7.2.14-1",
                b"CONFIG_A=y\n",
                &[("1.patch", b"x")],
            ),
            key(
                "reference",
                "7.2.13-1",
                b"CONFIG_A=n\n",
                &[("1.patch", b"x")],
            ),
            key(
                "reference",
                "7.2.13-1",
                b"CONFIG_A=y\n",
                &[("1.patch", b"y")],
            ),
            key(
                "reference",
                "7.2.13-1",
                b"CONFIG_A=y\n",
                &[("2.patch", b"x")],
            ),
            key("reference", "7.2.13-1", b"CONFIG_A=y\n", &[]),
            // Bytes moved from one part to the next must not collide.
            key(
                "reference",
                "7.2.13-1",
                b"CONFIG_A=y\n1",
                &[(".patch", b"x")],
            ),
            key_with(
                "reference",
                "7.2.13-1",
                b"CONFIG_A=y\n",
                &[("1.patch", b"x")],
                &["gcc: gcc 13"],
            ),
            key_with(
                "reference",
                "7.2.13-1",
                b"CONFIG_A=y\n",
                &[("1.patch", b"x")],
                &["gcc: gcc 12", "fetched bison: 2:3.8.2+dfsg-1"],
            ),
        ];
        for v in &variants {
            assert_ne!(*v, base);
            assert!(crate::cache::Cache::new("/").existing(&["k"], v).is_ok());
        }
    }

    /// The key of given inputs never changes by accident (a reordered part, a new
    /// input left out of the hash): stores would silently rebuild, or worse,
    /// reuse. Change it only with [`RECIPE`], on purpose.
    #[test]
    fn key_is_pinned() {
        assert_eq!(
            key("stock", "7.2.13-1", b"CONFIG_A=y\n", &[]),
            "stock-7.2.13-1-1611baffe69d319f"
        );
    }

    #[rstest::rstest]
    #[case("  CC      mm/mmap.o", Some("mm/mmap.o"))]
    #[case("  LD      vmlinux.o", Some("vmlinux.o"))]
    #[case("  GEN     Makefile", None)]
    #[case("CC mm/mmap.o", None)]
    #[case("mm/mmap.c:12: warning: CC x", None)]
    fn progress_lines(#[case] line: &str, #[case] object: Option<&str>) {
        assert_eq!(compiled_object(line), object);
    }

    #[test]
    fn failed_make_reports_command_and_log_tail() {
        let tmp = tempfile::tempdir().unwrap();
        let tree = tmp.path().join("src");
        fs::create_dir_all(&tree).unwrap();
        fs::write(
            tree.join("Makefile"),
            "all:\n\t@echo '  CC      a.o'\n\t@echo 'a.c:1: error: boom' >&2\n\t@false\n",
        )
        .unwrap();
        let make = Make {
            tree,
            obj: tmp.path().join("obj"),
            localversion: "-t".into(),
            log: tmp.path().join("build.log"),
            tools: BuildTools::default(),
        };
        let err = make.run(&["all".into()], None).unwrap_err();
        let text = err.to_string();
        assert!(text.contains("a.c:1: error: boom"), "{text}");
        assert!(text.contains("LOCALVERSION=-t all"), "{text}");
        let log = fs::read_to_string(&make.log).unwrap();
        assert!(
            log.contains("  CC      a.o") && log.contains("boom"),
            "{log}"
        );
    }

    #[test]
    fn config_check_names_missing_options() {
        let tmp = tempfile::tempdir().unwrap();
        let frag = tmp.path().join("f.config");
        let conf = tmp.path().join(".config");
        fs::write(&frag, "CONFIG_VFIO=y\nCONFIG_PTDUMP_DEBUGFS=y\n").unwrap();
        fs::write(&conf, "CONFIG_VFIO=y\n# CONFIG_PTDUMP_DEBUGFS is not set\n").unwrap();
        let text = verify_config(&frag, &conf).unwrap_err().to_string();
        assert!(
            text.contains("CONFIG_PTDUMP_DEBUGFS wanted y got not set")
                && !text.contains("CONFIG_VFIO "),
            "{text}"
        );
        fs::write(&conf, "CONFIG_VFIO=y\nCONFIG_PTDUMP_DEBUGFS=y\n").unwrap();
        verify_config(&frag, &conf).unwrap();
    }
}
