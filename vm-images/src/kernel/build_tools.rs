//! The programs and headers a kernel build needs, with those the host lacks fetched
//! into the cache from the host's own distribution and release.
//!
//! A fresh Debian or Ubuntu machine has make, gcc, bc, perl, patch and often the
//! OpenSSL headers, but not bison and flex (kconfig's parser and lexer) or libelf's
//! headers (objtool). Those four ([`Fetchable`]) are downloaded the way QEMU is (a
//! private apt configuration below the cache, `apt-get download`, `dpkg-deb -x` into
//! a prefix), but from the host's distribution and release as `/etc/os-release`
//! names it, so the binaries link against the host's libc. Only the packages of the
//! missing tools are downloaded, never a dependency closure; tools the host has are
//! used as they are. The rest ([`HOST_PROGRAMS`], [`HOST_HEADERS`]) must be installed.
//!
//! A fetched prefix works through what [`BuildTools`] gives make: its `usr/bin` in
//! front of `PATH`, `M4` (bison and flex run m4, `/usr/bin/m4` compiled in),
//! `BISON_PKGDATADIR` (bison's skeletons, `/usr/share/bison` compiled in), and for
//! libelf `HOSTCFLAGS=-I<prefix>/usr/include` and
//! `HOSTLDFLAGS=-L<lib> -Wl,-rpath,<lib>` on make's command line: kbuild adds them to
//! every host program (`KBUILD_HOSTCFLAGS`/`KBUILD_HOSTLDFLAGS`), objtool's Makefile
//! to its own flags, and command-line variables reach every sub-make. A `libelf.pc`
//! pointing into the prefix comes first in `PKG_CONFIG_PATH`, so objtool's
//! `$(HOSTPKG_CONFIG) libelf` answers with the prefix too.
//!
//! Cache layout: `build-tools/<distribution>-<codename>/<packages>-<hash>/` holds
//! `prefix/`, `pkgconfig/libelf.pc` (when libelf is in it) and `tools.json`;
//! `<packages>.current` names the entry used while the cache is not refreshed. Where
//! the tools came from never enters a kernel build's cache key: the same source,
//! fragment and patches give the same kernel either way.

use std::ffi::{OsStr, OsString};
use std::fmt;
use std::fs;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Instant;

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use crate::command::run;
use crate::debian::{deb, Archive, Repository, Suite};
use crate::error::{Error, IoContext, Result};
use crate::fetch::{Fetcher, Refresh};

/// Programs a kernel build needs that bigbar does not fetch, with the package of each.
pub const HOST_PROGRAMS: [(&str, &str); 5] = [
    ("make", "make"),
    ("gcc", "gcc"),
    ("bc", "bc"),
    ("perl", "perl"),
    ("patch", "patch"),
];
/// Headers a kernel build needs that bigbar does not fetch, with the package of each.
pub const HOST_HEADERS: [(&str, &str); 1] = [("openssl/opensslv.h", "libssl-dev")];
/// Where the host's headers are looked for by default.
pub const INCLUDE_DIRS: [&str; 2] = ["/usr/include", "/usr/include/x86_64-linux-gnu"];
/// The file naming the host's distribution, and its fallback.
pub const OS_RELEASE: [&str; 2] = ["/etc/os-release", "/usr/lib/os-release"];
/// Environment variable naming the Ubuntu mirror.
pub const UBUNTU_MIRROR_ENV: &str = "BIGBAR_UBUNTU_MIRROR";
/// The Ubuntu mirror used when [`UBUNTU_MIRROR_ENV`] is unset.
pub const DEFAULT_UBUNTU_MIRROR: &str = "http://archive.ubuntu.com/ubuntu";
/// The host keyring installed by Ubuntu's `ubuntu-keyring` package.
pub const UBUNTU_KEYRING: &str = "/usr/share/keyrings/ubuntu-archive-keyring.gpg";
/// Multiarch directory of the libraries in a fetched prefix (bigbar runs on amd64).
const LIB_DIR: &str = "usr/lib/x86_64-linux-gnu";
const ENTRY_INFO: &str = "tools.json";
const CATEGORY_ROOT: &str = "build-tools";

/// Something a kernel build needs from the host.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Requirement {
    /// A program found in `PATH`.
    Program(&'static str),
    /// A header found below one of the include directories.
    Header(&'static str),
}

impl fmt::Display for Requirement {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Program(p) => write!(f, "program `{p}`"),
            Self::Header(h) => write!(f, "header <{h}>"),
        }
    }
}

/// A build tool bigbar fetches when the host lacks it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Fetchable {
    /// The parser generator (kconfig's parser).
    Bison,
    /// The lexer generator (kconfig's lexer).
    Flex,
    /// The macro processor bison and flex run.
    M4,
    /// libelf's headers and library (objtool, resolve_btfids).
    Libelf,
}

impl Fetchable {
    /// Every fetchable tool, in the order they are reported.
    pub const ALL: [Self; 4] = [Self::Bison, Self::Flex, Self::M4, Self::Libelf];

    /// What the host is checked for.
    pub fn requirement(self) -> Requirement {
        match self {
            Self::Bison => Requirement::Program("bison"),
            Self::Flex => Requirement::Program("flex"),
            Self::M4 => Requirement::Program("m4"),
            Self::Libelf => Requirement::Header("libelf.h"),
        }
    }

    /// The package a user would install to have it.
    pub fn install_package(self) -> &'static str {
        self.packages()[0]
    }

    /// The packages downloaded to provide it: exactly these, no closure. libelf-dev's
    /// `libelf.so` is a link into libelf1 (of the same version, resolved from the same
    /// archive); its headers include only libc's, and linking against the shared
    /// library needs no zlib or zstd development files, so zlib1g-dev (which
    /// libelf-dev depends on, for static linking) is left out.
    pub fn packages(self) -> &'static [&'static str] {
        match self {
            Self::Bison => &["bison"],
            Self::Flex => &["flex"],
            Self::M4 => &["m4"],
            Self::Libelf => &["libelf-dev", "libelf1"],
        }
    }

    /// The program it provides, relative to the prefix (libelf provides none).
    fn program(self) -> Option<&'static str> {
        match self {
            Self::Bison => Some("usr/bin/bison"),
            Self::Flex => Some("usr/bin/flex"),
            Self::M4 => Some("usr/bin/m4"),
            Self::Libelf => None,
        }
    }
}

/// Where the host's programs and headers are looked for: injectable, so a test can
/// hide what the host has.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HostLookup {
    /// The search path for programs (`PATH` syntax); make runs with it as `PATH`,
    /// behind the fetched tools.
    pub path: OsString,
    /// The directories headers are looked for in.
    pub include_dirs: Vec<PathBuf>,
}

impl HostLookup {
    /// The process's `PATH` and [`INCLUDE_DIRS`].
    pub fn from_env() -> Self {
        Self {
            path: std::env::var_os("PATH").unwrap_or_else(|| "/usr/bin:/bin".into()),
            include_dirs: INCLUDE_DIRS.iter().map(PathBuf::from).collect(),
        }
    }

    /// The executable `program` in [`HostLookup::path`], if any.
    pub fn find_program(&self, program: &str) -> Option<PathBuf> {
        let cwd = std::env::current_dir().unwrap_or_else(|_| "/".into());
        which::which_in(program, Some(&self.path), cwd).ok()
    }

    /// Whether `header` is a file below one of the include directories.
    pub fn has_header(&self, header: &str) -> bool {
        self.include_dirs.iter().any(|d| d.join(header).is_file())
    }

    /// Whether the host meets `requirement`.
    pub fn has(&self, requirement: Requirement) -> bool {
        match requirement {
            Requirement::Program(p) => self.find_program(p).is_some(),
            Requirement::Header(h) => self.has_header(h),
        }
    }
}

/// What a kernel build lacks on the host.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Missing {
    /// Missing and not fetched by bigbar, each with its package: the user installs them.
    pub host_only: Vec<(Requirement, &'static str)>,
    /// Missing and fetched into the cache, in [`Fetchable::ALL`] order.
    pub fetchable: Vec<Fetchable>,
}

impl Missing {
    /// Finds what is missing, asking `has` about each requirement.
    pub fn find(has: impl Fn(Requirement) -> bool) -> Self {
        let host_only = HOST_PROGRAMS
            .iter()
            .map(|(p, pkg)| (Requirement::Program(p), *pkg))
            .chain(
                HOST_HEADERS
                    .iter()
                    .map(|(h, pkg)| (Requirement::Header(h), *pkg)),
            )
            .filter(|(r, _)| !has(*r))
            .collect();
        let fetchable = Fetchable::ALL
            .into_iter()
            .filter(|f| !has(f.requirement()))
            .collect();
        Self {
            host_only,
            fetchable,
        }
    }

    /// Whether nothing is missing.
    pub fn is_empty(&self) -> bool {
        self.host_only.is_empty() && self.fetchable.is_empty()
    }
}

/// `(what, packages)` for an error message: the requirements comma separated, the
/// packages to install space separated, without repeats.
fn describe(items: &[(Requirement, &str)]) -> (String, String) {
    let what: Vec<String> = items.iter().map(|(r, _)| r.to_string()).collect();
    let mut packages: Vec<&str> = Vec::new();
    for (_, p) in items {
        if !packages.contains(p) {
            packages.push(p);
        }
    }
    (what.join(", "), packages.join(" "))
}

/// The fields of `os-release` bigbar reads.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct OsRelease {
    /// `ID`, e.g. `debian`, `ubuntu`.
    pub id: String,
    /// `VERSION_CODENAME`, e.g. `bookworm`, `noble`.
    pub version_codename: Option<String>,
    /// `PRETTY_NAME`, for messages.
    pub pretty_name: Option<String>,
}

/// A distribution release whose archive bigbar can fetch build tools from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Distribution {
    /// Debian, from the Debian mirror (`$BIGBAR_DEBIAN_MIRROR`).
    Debian(Suite),
    /// Ubuntu, from `$BIGBAR_UBUNTU_MIRROR` (default [`DEFAULT_UBUNTU_MIRROR`]).
    Ubuntu(Suite),
}

impl Distribution {
    /// The cache category name, e.g. `debian-bookworm`.
    pub fn name(&self) -> String {
        match self {
            Self::Debian(s) => format!("debian-{s}"),
            Self::Ubuntu(s) => format!("ubuntu-{s}"),
        }
    }
}

impl fmt::Display for Distribution {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Debian(s) => write!(f, "Debian {s}"),
            Self::Ubuntu(s) => write!(f, "Ubuntu {s}"),
        }
    }
}

impl OsRelease {
    /// Parses `os-release` text (`KEY=value` lines, values optionally quoted).
    pub fn parse(text: &str) -> Self {
        let mut release = Self::default();
        for line in text.lines().map(str::trim) {
            if line.starts_with('#') {
                continue;
            }
            let Some((key, value)) = line.split_once('=') else {
                continue;
            };
            let value = unquote(value.trim());
            match key.trim() {
                "ID" => release.id = value,
                "VERSION_CODENAME" if !value.is_empty() => release.version_codename = Some(value),
                "PRETTY_NAME" if !value.is_empty() => release.pretty_name = Some(value),
                _ => {}
            }
        }
        release
    }

    /// Reads the host's `os-release` (the first of [`OS_RELEASE`] that exists).
    pub fn read_host() -> Result<Self> {
        let mut last = None;
        for path in OS_RELEASE {
            match fs::read_to_string(path) {
                Ok(text) => return Ok(Self::parse(&text)),
                Err(e) => last = Some((path, e)),
            }
        }
        let (path, e) = last.expect("OS_RELEASE is not empty");
        Err(e).at("reading", path)
    }

    /// The distribution to fetch from, or why there is none.
    pub fn distribution(&self) -> Result<Distribution, String> {
        let name = self.pretty_name.clone().unwrap_or_else(|| self.id.clone());
        let codename = || {
            let codename = self
                .version_codename
                .as_deref()
                .ok_or_else(|| format!("{name} names no VERSION_CODENAME in os-release"))?;
            Suite::new(codename).map_err(|e| e.to_string())
        };
        match self.id.as_str() {
            "debian" => Ok(Distribution::Debian(codename()?)),
            "ubuntu" => Ok(Distribution::Ubuntu(codename()?)),
            _ => Err(format!(
                "the host runs {name}, and bigbar fetches build tools only from Debian's and Ubuntu's archives"
            )),
        }
    }
}

/// An os-release value without its quotes and shell escapes.
fn unquote(value: &str) -> String {
    let quoted = value.len() >= 2
        && (value.starts_with('"') && value.ends_with('"')
            || value.starts_with('\'') && value.ends_with('\''));
    if !quoted {
        return value.to_owned();
    }
    let inner = &value[1..value.len() - 1];
    if value.starts_with('\'') {
        return inner.to_owned();
    }
    let mut out = String::new();
    let mut chars = inner.chars();
    while let Some(c) = chars.next() {
        match (c, chars.clone().next()) {
            ('\\', Some(next @ ('"' | '\\' | '$' | '`'))) => {
                out.push(next);
                chars.next();
            }
            _ => out.push(c),
        }
    }
    out
}

/// Tools unpacked into a cache entry.
#[derive(Debug, Clone, PartialEq)]
pub struct FetchedTools {
    /// The cache entry (holds `prefix/` and `pkgconfig/`).
    pub entry: PathBuf,
    /// What it records.
    pub info: ToolsInfo,
}

impl FetchedTools {
    /// The root of the unpacked packages.
    pub fn prefix(&self) -> PathBuf {
        self.entry.join("prefix")
    }
}

/// What a build-tools entry records.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ToolsInfo {
    /// The distribution release, e.g. `debian-bookworm`.
    pub distribution: String,
    /// The packages unpacked, with their versions.
    pub packages: Vec<(String, String)>,
    /// The tools they provide.
    pub provides: Vec<Fetchable>,
    /// Bytes downloaded (the .deb files).
    pub download_bytes: u64,
    /// Seconds the download took.
    pub download_seconds: f64,
}

/// Variables of the environment that the build environment extends rather than
/// replaces.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Inherited {
    /// `PKG_CONFIG_PATH`.
    pub pkg_config_path: Option<OsString>,
    /// `HOSTCFLAGS` (make would let the command line's replace it).
    pub hostcflags: Option<String>,
    /// `HOSTLDFLAGS`.
    pub hostldflags: Option<String>,
}

impl Inherited {
    /// From the process's environment.
    pub fn from_env() -> Self {
        let text = |k| {
            std::env::var(k)
                .ok()
                .filter(|v: &String| !v.trim().is_empty())
        };
        Self {
            pkg_config_path: std::env::var_os("PKG_CONFIG_PATH").filter(|v| !v.is_empty()),
            hostcflags: text("HOSTCFLAGS"),
            hostldflags: text("HOSTLDFLAGS"),
        }
    }
}

/// How make reaches the build tools: its environment and command-line variables.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct BuildTools {
    /// Environment variables set for make (empty: make inherits everything).
    pub env: Vec<(String, OsString)>,
    /// Variable assignments added to make's command line.
    pub make_args: Vec<String>,
    /// The tools that came from the cache, if any did.
    pub fetched: Option<FetchedTools>,
}

impl BuildTools {
    /// The environment for the host's own tools in `host_path` plus those of
    /// `fetched`; `host_m4` is the host's m4, run by fetched bison and flex when m4
    /// itself was not fetched.
    pub fn new(
        host_path: &OsStr,
        host_m4: Option<&Path>,
        fetched: Option<FetchedTools>,
        inherited: &Inherited,
    ) -> Self {
        let mut env: Vec<(String, OsString)> = Vec::new();
        let mut make_args = Vec::new();
        let mut path = OsString::new();
        if let Some(tools) = &fetched {
            let prefix = tools.prefix();
            let has = |f| tools.info.provides.contains(&f);
            if has(Fetchable::Bison) || has(Fetchable::Flex) || has(Fetchable::M4) {
                path.push(prefix.join("usr/bin"));
                path.push(":");
                let m4 = if has(Fetchable::M4) {
                    Some(prefix.join("usr/bin/m4"))
                } else {
                    host_m4.map(Path::to_owned)
                };
                if let Some(m4) = m4 {
                    env.push(("M4".into(), m4.into()));
                }
            }
            if has(Fetchable::Bison) {
                env.push((
                    "BISON_PKGDATADIR".into(),
                    prefix.join("usr/share/bison").into(),
                ));
            }
            if has(Fetchable::Libelf) {
                let lib = prefix.join(LIB_DIR);
                let include = prefix.join("usr/include");
                let join = |inherited: &Option<String>, ours: String| match inherited {
                    Some(i) => format!("{} {ours}", i.trim()),
                    None => ours,
                };
                make_args.push(format!(
                    "HOSTCFLAGS={}",
                    join(&inherited.hostcflags, format!("-I{}", include.display()))
                ));
                make_args.push(format!(
                    "HOSTLDFLAGS={}",
                    join(
                        &inherited.hostldflags,
                        format!("-L{0} -Wl,-rpath,{0}", lib.display())
                    )
                ));
                let mut pkg = OsString::from(tools.entry.join("pkgconfig"));
                if let Some(p) = &inherited.pkg_config_path {
                    pkg.push(":");
                    pkg.push(p);
                }
                env.push(("PKG_CONFIG_PATH".into(), pkg));
            }
        }
        path.push(host_path);
        env.insert(0, ("PATH".into(), path));
        Self {
            env,
            make_args,
            fetched,
        }
    }

    /// Adds the environment and the command-line variables to a make command.
    pub fn apply(&self, cmd: &mut Command) {
        cmd.envs(self.env.iter().map(|(k, v)| (k, v)));
        cmd.args(&self.make_args);
    }

    /// The value this environment gives `name`, if it sets it.
    pub fn var(&self, name: &str) -> Option<&OsStr> {
        self.env
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.as_os_str())
    }
}

/// The tools a kernel build needs: the host's where it has them, the rest fetched
/// from the host's distribution into the cache (or taken from there).
///
/// Fails naming every missing tool and the packages to install when the host lacks
/// one bigbar does not fetch, or when the missing ones cannot be fetched (another
/// distribution, an unreachable archive).
pub fn obtain(fetcher: &Fetcher<'_>, lookup: &HostLookup) -> Result<BuildTools> {
    obtain_for(fetcher, lookup, OsRelease::read_host)
}

/// [`obtain`] on a host whose `os-release` `release` gives, read only when a tool
/// is to be fetched.
pub fn obtain_for(
    fetcher: &Fetcher<'_>,
    lookup: &HostLookup,
    release: impl FnOnce() -> Result<OsRelease>,
) -> Result<BuildTools> {
    let missing = Missing::find(|r| lookup.has(r));
    if !missing.host_only.is_empty() {
        let (what, packages) = describe(&missing.host_only);
        return Err(Error::BuildToolsMissing {
            missing: what,
            packages,
        });
    }
    let host_m4 = lookup.find_program("m4");
    if missing.fetchable.is_empty() {
        return Ok(BuildTools::new(
            &lookup.path,
            host_m4.as_deref(),
            None,
            &Inherited::from_env(),
        ));
    }
    let items: Vec<(Requirement, &str)> = missing
        .fetchable
        .iter()
        .map(|f| (f.requirement(), f.install_package()))
        .collect();
    let unavailable = |reason: String| {
        let (what, packages) = describe(&items);
        Error::BuildToolsUnavailable {
            missing: what,
            packages,
            reason,
        }
    };
    let release = release().map_err(|e| unavailable(e.to_string()))?;
    let distribution = release.distribution().map_err(unavailable)?;
    let fetched = fetch(fetcher, &distribution, &missing.fetchable).map_err(|e| match e {
        e @ Error::BuildToolBroken { .. } => e,
        e => unavailable(format!("fetching them from {distribution} failed: {e}")),
    })?;
    let names: Vec<String> = fetched
        .info
        .provides
        .iter()
        .map(|f| f.requirement().to_string())
        .collect();
    fetcher.report(&format!(
        "build tools: {} from {distribution} (cache entry {})",
        names.join(", "),
        fetched.entry.display()
    ));
    Ok(BuildTools::new(
        &lookup.path,
        host_m4.as_deref(),
        Some(fetched),
        &Inherited::from_env(),
    ))
}

/// The packages of `tools`, sorted, without repeats.
fn packages_of(tools: &[Fetchable]) -> Vec<&'static str> {
    let mut packages: Vec<&str> = tools.iter().flat_map(|t| t.packages()).copied().collect();
    packages.sort_unstable();
    packages.dedup();
    packages
}

/// The entry key of `packages` at their versions: the names (readable) and a hash of
/// names and versions.
fn entry_key(packages: &[(String, String)]) -> String {
    let mut h = Sha256::new();
    for (name, version) in packages {
        h.update(format!("{name}={version}\n"));
    }
    let digest = h.finalize();
    let hex: String = digest[..8].iter().map(|b| format!("{b:02x}")).collect();
    let names: Vec<&str> = packages.iter().map(|(n, _)| n.as_str()).collect();
    format!("{}-{hex}", names.join("+"))
}

/// Fetches the packages of `tools` from `distribution` (or finds them cached).
pub fn fetch(
    fetcher: &Fetcher<'_>,
    distribution: &Distribution,
    tools: &[Fetchable],
) -> Result<FetchedTools> {
    let category_name = distribution.name();
    let category = [CATEGORY_ROOT, category_name.as_str()];
    let cache = fetcher.cache();
    let names = packages_of(tools);
    let record = format!("{}.current", names.join("+"));
    if fetcher.refresh_policy() == Refresh::IfMissing {
        if let Some(key) = cache.read_record(&category, &record)? {
            if let Some(entry) = cache.existing(&category, &key)? {
                return load_entry(&entry);
            }
        }
    }
    let archive = open_archive(fetcher, distribution)?;
    let mut packages = Vec::new();
    for name in &names {
        packages.push(((*name).to_owned(), archive.candidate(name)?));
    }
    check_libelf_versions(&packages, distribution)?;
    let key = entry_key(&packages);
    let entry = cache.get_or_create(&category, &key, |dir| {
        fill_entry(fetcher, &archive, distribution, &packages, tools, dir)
    })?;
    cache.write_record(&category, &record, &key)?;
    load_entry(&entry)
}

/// libelf-dev's `libelf.so` links into libelf1 of exactly its version.
fn check_libelf_versions(packages: &[(String, String)], distribution: &Distribution) -> Result<()> {
    let version = |n: &str| packages.iter().find(|(p, _)| p == n).map(|(_, v)| v);
    match (version("libelf-dev"), version("libelf1")) {
        (Some(dev), Some(lib)) if dev != lib => Err(Error::Parse {
            what: format!("candidates of libelf-dev and libelf1 in {distribution}"),
            detail: format!("libelf-dev {dev} needs libelf1 {dev}, the archive offers {lib}"),
        }),
        _ => Ok(()),
    }
}

/// The private apt view of the distribution's release.
fn open_archive<'f>(fetcher: &'f Fetcher<'f>, distribution: &Distribution) -> Result<Archive<'f>> {
    match distribution {
        Distribution::Debian(suite) => Archive::open(fetcher, suite),
        Distribution::Ubuntu(suite) => {
            let mirror = std::env::var(UBUNTU_MIRROR_ENV)
                .ok()
                .filter(|m| !m.is_empty())
                .unwrap_or_else(|| DEFAULT_UBUNTU_MIRROR.to_owned());
            Archive::open_repository(
                fetcher,
                &Repository {
                    tree_name: distribution.name(),
                    mirror: mirror.trim_end_matches('/').to_owned(),
                    suite: suite.clone(),
                    components: vec!["main".into()],
                    keyring: UBUNTU_KEYRING.into(),
                },
            )
        }
    }
}

/// Downloads and unpacks `packages` into the (empty) entry `dir`, writes the
/// `libelf.pc` and the record, and checks that every program runs.
fn fill_entry(
    fetcher: &Fetcher<'_>,
    archive: &Archive<'_>,
    distribution: &Distribution,
    packages: &[(String, String)],
    tools: &[Fetchable],
    dir: &Path,
) -> Result<()> {
    let started = Instant::now();
    let debs = archive.download(packages, &dir.join("debs"))?;
    let download_seconds = started.elapsed().as_secs_f64();
    let mut download_bytes = 0;
    for deb in &debs {
        download_bytes += fs::metadata(deb).at("reading metadata of", deb)?.len();
    }
    fetcher.report(&format!(
        "build tools: {} packages from {distribution}, {:.1} MB in {download_seconds:.1} s",
        debs.len(),
        download_bytes as f64 / 1e6
    ));
    let prefix = dir.join("prefix");
    deb::extract_all(&debs, &prefix)?;
    fs::remove_dir_all(dir.join("debs")).at("removing", dir.join("debs"))?;
    let mut provides = tools.to_vec();
    provides.sort_unstable();
    provides.dedup();
    let describe_package = |tool: Fetchable| {
        let name = tool.packages()[0];
        let version = packages
            .iter()
            .find(|(p, _)| p == name)
            .map_or("", |(_, v)| v.as_str());
        format!("{name} {version}")
    };
    for &tool in &provides {
        match tool.program() {
            Some(program) => check_runs(&prefix.join(program), &describe_package(tool))?,
            None => write_libelf_pc(&prefix, &dir.join("pkgconfig"), &describe_package(tool))?,
        }
    }
    let info = ToolsInfo {
        distribution: distribution.name(),
        packages: packages.to_vec(),
        provides,
        download_bytes,
        download_seconds,
    };
    let json = serde_json::to_string_pretty(&info).map_err(|e| Error::Parse {
        what: "build tools record".into(),
        detail: e.to_string(),
    })?;
    fs::write(dir.join(ENTRY_INFO), json).at("writing", dir.join(ENTRY_INFO))
}

/// Runs `program --version`: a missing library or a libc too old shows here.
fn check_runs(program: &Path, package: &str) -> Result<()> {
    let broken = |detail: String| Error::BuildToolBroken {
        tool: program.to_owned(),
        package: package.to_owned(),
        detail,
    };
    if !program.is_file() {
        return Err(broken("not in the package".into()));
    }
    run(Command::new(program).arg("--version").env("LC_ALL", "C"))
        .map(drop)
        .map_err(|e| broken(e.to_string()))
}

/// Checks the unpacked libelf and writes a `libelf.pc` into `pc_dir` that points
/// into `prefix` relative to its own location (the entry is renamed into place
/// after it is filled).
fn write_libelf_pc(prefix: &Path, pc_dir: &Path, package: &str) -> Result<()> {
    for rel in ["usr/include/libelf.h", "usr/include/gelf.h"]
        .into_iter()
        .map(String::from)
        .chain([format!("{LIB_DIR}/libelf.so")])
    {
        // `libelf.so` is a symlink into libelf1: `is_file` follows it.
        if !prefix.join(&rel).is_file() {
            return Err(Error::MissingFromPackage {
                what: "libelf",
                package: package.to_owned(),
                looked_for: prefix.join(rel).display().to_string(),
            });
        }
    }
    let original = prefix.join(LIB_DIR).join("pkgconfig/libelf.pc");
    let version = fs::read_to_string(&original)
        .ok()
        .and_then(|t| pc_field(&t, "Version"));
    fs::create_dir_all(pc_dir).at("creating directory", pc_dir)?;
    let path = pc_dir.join("libelf.pc");
    fs::write(&path, libelf_pc(version.as_deref().unwrap_or("0"), package)).at("writing", &path)
}

/// The value of `field:` in pkg-config text.
fn pc_field(text: &str, field: &str) -> Option<String> {
    text.lines().find_map(|l| {
        let (k, v) = l.split_once(':')?;
        (k.trim() == field).then(|| v.trim().to_owned())
    })
}

/// A `libelf.pc` for `<entry>/pkgconfig/`, its prefix `<entry>/prefix/usr`. Debian's
/// names `Requires.private: zlib` (for static linking only); it is left out so that
/// `pkg-config --cflags libelf` does not fail on a host without zlib's `.pc`.
fn libelf_pc(version: &str, package: &str) -> String {
    format!(
        "prefix=${{pcfiledir}}/../prefix/usr\n\
         libdir=${{prefix}}/lib/x86_64-linux-gnu\n\
         includedir=${{prefix}}/include\n\
         \n\
         Name: libelf\n\
         Description: libelf of {package}, unpacked by bigbar\n\
         Version: {version}\n\
         Libs: -L${{libdir}} -lelf\n\
         Cflags: -I${{includedir}}\n"
    )
}

/// A complete entry as [`FetchedTools`].
fn load_entry(entry: &Path) -> Result<FetchedTools> {
    let path = entry.join(ENTRY_INFO);
    let text = fs::read_to_string(&path).at("reading", &path)?;
    let info: ToolsInfo = serde_json::from_str(&text).map_err(|e| Error::CacheEntry {
        path: path.clone(),
        detail: e.to_string(),
    })?;
    for tool in &info.provides {
        if let Some(program) = tool.program() {
            if !entry.join("prefix").join(program).is_file() {
                return Err(Error::CacheEntry {
                    path: entry.to_owned(),
                    detail: format!("prefix/{program} is missing"),
                });
            }
        }
    }
    Ok(FetchedTools {
        entry: entry.to_owned(),
        info,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use rstest::rstest;

    const BOOKWORM: &str = r#"PRETTY_NAME="Debian GNU/Linux 12 (bookworm)"
NAME="Debian GNU/Linux"
VERSION_ID="12"
VERSION="12 (bookworm)"
VERSION_CODENAME=bookworm
ID=debian
HOME_URL="https://www.debian.org/"
"#;
    const NOBLE: &str = r#"PRETTY_NAME="Ubuntu 24.04.1 LTS"
NAME="Ubuntu"
VERSION_ID="24.04"
VERSION_CODENAME=noble
ID=ubuntu
ID_LIKE=debian
UBUNTU_CODENAME=noble
"#;
    const MINT: &str = "NAME=\"Linux Mint\"\nID=linuxmint\nID_LIKE=\"ubuntu debian\"\nVERSION_CODENAME=wilma\nPRETTY_NAME=\"Linux Mint 22\"\n";
    const FEDORA: &str = "NAME=\"Fedora Linux\"\nVERSION=\"40 (Workstation Edition)\"\nID=fedora\nPRETTY_NAME=\"Fedora Linux 40 (Workstation Edition)\"\n";
    const SID: &str =
        "PRETTY_NAME=\"Debian GNU/Linux trixie/sid\"\nNAME=\"Debian GNU/Linux\"\nID=debian\n";

    #[rstest]
    #[case(
        BOOKWORM,
        "debian",
        Some("bookworm"),
        Some("Debian GNU/Linux 12 (bookworm)")
    )]
    #[case(NOBLE, "ubuntu", Some("noble"), Some("Ubuntu 24.04.1 LTS"))]
    #[case(FEDORA, "fedora", None, Some("Fedora Linux 40 (Workstation Edition)"))]
    #[case(
        "# comment\n\nID='debian'\nVERSION_CODENAME=\"\"\n",
        "debian",
        None,
        None
    )]
    #[case(
        "ID=x\nPRETTY_NAME=\"say \\\"hi\\\" \\\\ \\$HOME\"\n",
        "x",
        None,
        Some("say \"hi\" \\ $HOME")
    )]
    #[case("garbage\nID =debian\n", "debian", None, None)]
    fn parses_os_release(
        #[case] text: &str,
        #[case] id: &str,
        #[case] codename: Option<&str>,
        #[case] pretty: Option<&str>,
    ) {
        let r = OsRelease::parse(text);
        assert_eq!(r.id, id);
        assert_eq!(r.version_codename.as_deref(), codename);
        assert_eq!(r.pretty_name.as_deref(), pretty);
    }

    #[rstest]
    #[case(BOOKWORM, Ok("debian-bookworm"))]
    #[case(NOBLE, Ok("ubuntu-noble"))]
    #[case(
        MINT,
        Err("Linux Mint 22, and bigbar fetches build tools only from Debian's and Ubuntu's")
    )]
    #[case(FEDORA, Err("Fedora Linux 40"))]
    #[case(SID, Err("trixie/sid names no VERSION_CODENAME"))]
    #[case("ID=debian\nVERSION_CODENAME=Bad Name\n", Err("invalid Debian suite"))]
    fn chooses_distribution(#[case] text: &str, #[case] expected: Result<&str, &str>) {
        match (OsRelease::parse(text).distribution(), expected) {
            (Ok(d), Ok(name)) => assert_eq!(d.name(), name),
            (Err(reason), Err(part)) => assert!(reason.contains(part), "{reason}"),
            (got, want) => panic!("got {got:?}, want {want:?}"),
        }
    }

    #[rstest]
    #[case(&[], &[], &[])]
    #[case(&["bison", "flex"], &[], &[Fetchable::Bison, Fetchable::Flex])]
    #[case(&["m4", "libelf.h"], &[], &[Fetchable::M4, Fetchable::Libelf])]
    #[case(&["flex", "bison", "m4", "libelf.h"], &[], &Fetchable::ALL)]
    #[case(&["gcc", "openssl/opensslv.h", "flex"], &["gcc", "openssl/opensslv.h"], &[Fetchable::Flex])]
    fn finds_missing(
        #[case] absent: &[&str],
        #[case] host_only: &[&str],
        #[case] fetchable: &[Fetchable],
    ) {
        let missing = Missing::find(|r| match r {
            Requirement::Program(n) | Requirement::Header(n) => !absent.contains(&n),
        });
        let names: Vec<&str> = missing
            .host_only
            .iter()
            .map(|(r, _)| match r {
                Requirement::Program(n) | Requirement::Header(n) => *n,
            })
            .collect();
        assert_eq!(names, host_only);
        assert_eq!(missing.fetchable, fetchable);
        assert_eq!(missing.is_empty(), absent.is_empty());
    }

    #[test]
    fn describes_missing_with_packages_once() {
        let (what, packages) = describe(&[
            (Requirement::Program("bison"), "bison"),
            (Requirement::Header("libelf.h"), "libelf-dev"),
            (Requirement::Header("gelf.h"), "libelf-dev"),
        ]);
        assert_eq!(what, "program `bison`, header <libelf.h>, header <gelf.h>");
        assert_eq!(packages, "bison libelf-dev");
    }

    #[rstest]
    #[case(&[Fetchable::Libelf, Fetchable::Bison], &["bison", "libelf-dev", "libelf1"])]
    #[case(&Fetchable::ALL, &["bison", "flex", "libelf-dev", "libelf1", "m4"])]
    #[case(&[Fetchable::M4, Fetchable::M4], &["m4"])]
    fn downloads_exactly_the_packages_of_missing_tools(
        #[case] tools: &[Fetchable],
        #[case] packages: &[&str],
    ) {
        assert_eq!(packages_of(tools), packages);
    }

    #[test]
    fn entry_key_names_packages_and_changes_with_versions() {
        let p = |v: &str| {
            vec![
                ("bison".to_owned(), v.to_owned()),
                ("m4".into(), "1.4".into()),
            ]
        };
        let key = entry_key(&p("2:3.8.2+dfsg-1+b1"));
        assert!(key.starts_with("bison+m4-") && key.len() == "bison+m4-".len() + 16);
        assert_ne!(key, entry_key(&p("2:3.8.2+dfsg-1+b2")));
        assert!(crate::cache::Cache::new("/").existing(&["k"], &key).is_ok());
    }

    fn fetched(provides: &[Fetchable]) -> FetchedTools {
        FetchedTools {
            entry: "/c/e".into(),
            info: ToolsInfo {
                distribution: "debian-bookworm".into(),
                packages: Vec::new(),
                provides: provides.to_vec(),
                download_bytes: 0,
                download_seconds: 0.0,
            },
        }
    }

    const LIBELF_ARGS: [&str; 2] = [
        "HOSTCFLAGS=-I/c/e/prefix/usr/include",
        "HOSTLDFLAGS=-L/c/e/prefix/usr/lib/x86_64-linux-gnu -Wl,-rpath,/c/e/prefix/usr/lib/x86_64-linux-gnu",
    ];

    #[rstest]
    #[case::host_only(None, &[("PATH", "/h/bin")], &[])]
    #[case::nothing_fetched(Some(vec![]), &[("PATH", "/h/bin")], &[])]
    #[case::bison_with_host_m4(
        Some(vec![Fetchable::Bison]),
        &[
            ("PATH", "/c/e/prefix/usr/bin:/h/bin"),
            ("M4", "/h/bin/m4"),
            ("BISON_PKGDATADIR", "/c/e/prefix/usr/share/bison"),
        ],
        &[]
    )]
    #[case::flex_and_m4(
        Some(vec![Fetchable::Flex, Fetchable::M4]),
        &[("PATH", "/c/e/prefix/usr/bin:/h/bin"), ("M4", "/c/e/prefix/usr/bin/m4")],
        &[]
    )]
    #[case::libelf_only(
        Some(vec![Fetchable::Libelf]),
        &[("PATH", "/h/bin"), ("PKG_CONFIG_PATH", "/c/e/pkgconfig")],
        &LIBELF_ARGS
    )]
    #[case::everything(
        Some(Fetchable::ALL.to_vec()),
        &[
            ("PATH", "/c/e/prefix/usr/bin:/h/bin"),
            ("M4", "/c/e/prefix/usr/bin/m4"),
            ("BISON_PKGDATADIR", "/c/e/prefix/usr/share/bison"),
            ("PKG_CONFIG_PATH", "/c/e/pkgconfig"),
        ],
        &LIBELF_ARGS
    )]
    fn environment_for_make(
        #[case] provides: Option<Vec<Fetchable>>,
        #[case] env: &[(&str, &str)],
        #[case] args: &[&str],
    ) {
        let tools = BuildTools::new(
            OsStr::new("/h/bin"),
            Some(Path::new("/h/bin/m4")),
            provides.map(|p| fetched(&p)),
            &Inherited::default(),
        );
        let got: Vec<(&str, &str)> = tools
            .env
            .iter()
            .map(|(k, v)| (k.as_str(), v.to_str().unwrap()))
            .collect();
        assert_eq!(got, env);
        assert_eq!(tools.make_args, args);
    }

    #[test]
    fn inherited_flags_and_pkg_config_path_are_kept() {
        let tools = BuildTools::new(
            OsStr::new("/h/bin"),
            None,
            Some(fetched(&[Fetchable::Libelf])),
            &Inherited {
                pkg_config_path: Some("/opt/pc".into()),
                hostcflags: Some("-O1 ".into()),
                hostldflags: Some("-s".into()),
            },
        );
        assert_eq!(
            tools.var("PKG_CONFIG_PATH").unwrap(),
            "/c/e/pkgconfig:/opt/pc"
        );
        assert_eq!(
            tools.make_args,
            [
                "HOSTCFLAGS=-O1 -I/c/e/prefix/usr/include",
                "HOSTLDFLAGS=-s -L/c/e/prefix/usr/lib/x86_64-linux-gnu -Wl,-rpath,/c/e/prefix/usr/lib/x86_64-linux-gnu",
            ]
        );
        let mut cmd = Command::new("make");
        tools.apply(&mut cmd);
        assert_eq!(cmd.get_args().count(), 2);
        assert!(cmd.get_envs().any(|(k, _)| k == "PKG_CONFIG_PATH"));
    }

    #[test]
    fn lookup_searches_only_its_path_and_include_dirs() {
        use std::os::unix::fs::PermissionsExt;
        let tmp = tempfile::tempdir().unwrap();
        let bin = tmp.path().join("bin");
        let inc = tmp.path().join("include");
        fs::create_dir_all(&bin).unwrap();
        fs::create_dir_all(inc.join("openssl")).unwrap();
        fs::write(bin.join("bison"), "").unwrap();
        fs::set_permissions(bin.join("bison"), fs::Permissions::from_mode(0o755)).unwrap();
        fs::write(bin.join("flex"), "").unwrap(); // not executable
        fs::write(inc.join("openssl/opensslv.h"), "").unwrap();
        let lookup = HostLookup {
            path: bin.clone().into(),
            include_dirs: vec![inc],
        };
        assert_eq!(lookup.find_program("bison"), Some(bin.join("bison")));
        assert_eq!(lookup.find_program("flex"), None);
        assert_eq!(lookup.find_program("sh"), None);
        assert!(lookup.has(Requirement::Header("openssl/opensslv.h")));
        assert!(!lookup.has(Requirement::Header("libelf.h")));
        let missing = Missing::find(|r| lookup.has(r));
        assert_eq!(
            missing.fetchable,
            [Fetchable::Flex, Fetchable::M4, Fetchable::Libelf]
        );
        assert_eq!(missing.host_only.len(), HOST_PROGRAMS.len());
    }

    /// A lookup whose PATH holds (empty, never run) programs named `programs` and
    /// whose include directory holds empty `headers`.
    fn fake_host(dir: &Path, programs: &[&str], headers: &[&str]) -> HostLookup {
        use std::os::unix::fs::PermissionsExt;
        let bin = dir.join("bin");
        fs::create_dir_all(&bin).unwrap();
        for p in programs {
            fs::write(bin.join(p), "").unwrap();
            fs::set_permissions(bin.join(p), fs::Permissions::from_mode(0o755)).unwrap();
        }
        for h in headers {
            let path = dir.join("include").join(h);
            fs::create_dir_all(path.parent().unwrap()).unwrap();
            fs::write(path, "").unwrap();
        }
        HostLookup {
            path: bin.into(),
            include_dirs: vec![dir.join("include")],
        }
    }

    const BASE: [&str; 5] = ["make", "gcc", "bc", "perl", "patch"];

    #[rstest]
    #[case::fedora(
        FEDORA,
        "Fedora Linux 40 (Workstation Edition), and bigbar fetches build tools only"
    )]
    #[case::mint(MINT, "Linux Mint 22")]
    #[case::no_codename(SID, "names no VERSION_CODENAME")]
    fn unfetchable_tools_are_named_with_packages(#[case] release: &str, #[case] reason: &str) {
        let tmp = tempfile::tempdir().unwrap();
        let lookup = fake_host(tmp.path(), &BASE, &["openssl/opensslv.h"]);
        let cache = crate::Cache::new(tmp.path().join("cache"));
        let fetcher = Fetcher::new(&cache);
        let err = obtain_for(&fetcher, &lookup, || Ok(OsRelease::parse(release))).unwrap_err();
        assert!(
            matches!(err, Error::BuildToolsUnavailable { .. }),
            "{err:?}"
        );
        let text = err.to_string();
        for part in [
            "missing program `bison`, program `flex`, program `m4`, header <libelf.h>",
            "`apt-get install bison flex m4 libelf-dev`",
            reason,
        ] {
            assert!(text.contains(part), "{part:?} not in {text}");
        }
        assert!(!cache.root().exists(), "nothing is fetched or cached");
    }

    #[test]
    fn tools_bigbar_does_not_fetch_are_named_first() {
        let tmp = tempfile::tempdir().unwrap();
        let lookup = fake_host(tmp.path(), &["make", "perl", "patch"], &[]);
        let cache = crate::Cache::new(tmp.path().join("cache"));
        let err = obtain_for(&Fetcher::new(&cache), &lookup, || panic!("not read")).unwrap_err();
        assert_eq!(
            err.to_string(),
            "cannot build a kernel: missing program `gcc`, program `bc`, header <openssl/opensslv.h>; install them with `apt-get install gcc bc libssl-dev`"
        );
    }

    #[test]
    fn a_complete_host_uses_its_own_tools() {
        let tmp = tempfile::tempdir().unwrap();
        let programs: Vec<&str> = BASE
            .iter()
            .copied()
            .chain(["bison", "flex", "m4"])
            .collect();
        let lookup = fake_host(tmp.path(), &programs, &["openssl/opensslv.h", "libelf.h"]);
        let cache = crate::Cache::new(tmp.path().join("cache"));
        let tools = obtain_for(&Fetcher::new(&cache), &lookup, || panic!("not read")).unwrap();
        assert_eq!(tools.fetched, None);
        assert_eq!(tools.env, [("PATH".to_owned(), lookup.path.clone())]);
        assert!(tools.make_args.is_empty());
    }

    #[test]
    fn libelf_pc_points_into_the_entry() {
        let pc = libelf_pc("0.188", "libelf-dev 0.188-2.1");
        assert!(
            pc.starts_with("prefix=${pcfiledir}/../prefix/usr\n"),
            "{pc}"
        );
        assert_eq!(pc_field(&pc, "Version").as_deref(), Some("0.188"));
        assert_eq!(pc_field(&pc, "Cflags").as_deref(), Some("-I${includedir}"));
        assert!(!pc.contains("Requires"));
    }

    #[rstest]
    #[case(&[("libelf-dev", "1"), ("libelf1", "1")], true)]
    #[case(&[("libelf-dev", "1"), ("libelf1", "2")], false)]
    #[case(&[("bison", "1")], true)]
    fn libelf_versions_must_match(#[case] packages: &[(&str, &str)], #[case] ok: bool) {
        let packages: Vec<(String, String)> = packages
            .iter()
            .map(|(p, v)| (p.to_string(), v.to_string()))
            .collect();
        let d = Distribution::Debian(Suite::new("bookworm").unwrap());
        assert_eq!(check_libelf_versions(&packages, &d).is_ok(), ok);
    }

    #[test]
    fn broken_tool_is_named() {
        let tmp = tempfile::tempdir().unwrap();
        let err = check_runs(&tmp.path().join("bison"), "bison 1").unwrap_err();
        assert!(matches!(err, Error::BuildToolBroken { .. }), "{err}");
        check_runs(&which::which("true").unwrap(), "coreutils").unwrap();
    }
}
