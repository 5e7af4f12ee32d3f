//! A headless Chromium for rendering bigbar's `report.html` in tests: Debian's
//! `chromium-headless-shell` with its whole dependency closure (as on an empty
//! system, like QEMU's), unpacked into the cache. Nothing is installed on the host.
//!
//! The closure comes from the host's own Debian release, not sid: Chromium
//! re-executes itself (`/proc/self/exe`) for its renderer and GPU processes, so
//! it cannot be started through an unpacked dynamic loader as QEMU is; it runs
//! on the host's loader with the unpacked libraries in `LD_LIBRARY_PATH`, which
//! its children inherit, and that needs the release's libc. So only Debian hosts
//! get one (Ubuntu ships Chromium as a snap).

use std::fs;
use std::path::{Path, PathBuf};
use std::process::Command;

use crate::cache::key_from_version;
use crate::debian::{deb, Archive, Suite};
use crate::error::{Error, IoContext, Result};
use crate::fetch::Fetcher;
use crate::kernel::build_tools::{Distribution, OsRelease};

/// The Debian package.
pub const DEBIAN_PACKAGE: &str = "chromium-headless-shell";

/// The binary inside the unpacked tree (`/usr/bin`'s is a shell wrapper).
const BINARY: &str = "usr/lib/chromium/chromium-headless-shell";

/// Directories of the tree holding shared libraries, searched in this order.
const LIBRARY_DIRS: [&str; 4] = [
    "usr/lib/chromium",
    "usr/lib/x86_64-linux-gnu",
    "lib/x86_64-linux-gnu",
    "usr/lib/x86_64-linux-gnu/pulseaudio",
];

/// Flags that make Chromium run headless as root in a container without a
/// GPU and without talking to any server.
pub const FLAGS: [&str; 9] = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--disable-extensions",
];

/// An unpacked headless Chromium.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Chromium {
    /// The binary.
    pub binary: PathBuf,
    /// Where its libraries are (`LD_LIBRARY_PATH`).
    pub library_path: Vec<PathBuf>,
    /// The Debian package version.
    pub package_version: String,
}

impl Chromium {
    /// A command running it with [`FLAGS`] and the profile directory
    /// `user_data_dir` (an empty temporary directory, so no state is shared);
    /// the caller adds the action (`--dump-dom URL`, ...).
    pub fn command(&self, user_data_dir: &Path) -> Command {
        let mut cmd = Command::new(&self.binary);
        let paths: Vec<&Path> = self.library_path.iter().map(PathBuf::as_path).collect();
        let joined = std::env::join_paths(paths).unwrap_or_default();
        cmd.env("LD_LIBRARY_PATH", joined)
            .args(FLAGS)
            .arg(format!("--user-data-dir={}", user_data_dir.display()));
        cmd
    }
}

/// The host's Debian release, or why Chromium cannot be fetched for it.
pub fn host_suite() -> Result<Suite> {
    let unavailable = |reason: String| Error::ChromiumUnavailable { reason };
    let release = OsRelease::read_host().map_err(|e| unavailable(e.to_string()))?;
    match release.distribution().map_err(unavailable)? {
        Distribution::Debian(suite) => Ok(suite),
        Distribution::Ubuntu(suite) => Err(unavailable(format!(
            "the host runs Ubuntu {suite}, whose Chromium is a snap, not a package"
        ))),
    }
}

/// `chromium-headless-shell` of Debian `suite` (the host's, see [`host_suite`])
/// with its dependency closure, cached per package version.
pub fn obtain(fetcher: &Fetcher<'_>, suite: &Suite) -> Result<Chromium> {
    let category_name = format!("debian-{suite}");
    let category = ["chromium", category_name.as_str()];
    if let Some((version, entry)) = fetcher.warm_entry(&category, key_from_version)? {
        return load_entry(&entry, version);
    }
    let archive = Archive::open(fetcher, suite)?;
    let version = archive.candidate(DEBIAN_PACKAGE)?;
    let entry = fetcher
        .cache()
        .get_or_create(&category, &key_from_version(&version), |dir| {
            let debs = archive.download_closure(DEBIAN_PACKAGE, &version, &dir.join("debs"))?;
            fetcher.report(&format!("unpacking {} packages", debs.len()));
            deb::extract_all(&debs, &dir.join("prefix"))?;
            fs::remove_dir_all(dir.join("debs")).at("removing", dir.join("debs"))?;
            load_entry(dir, version.clone()).map(drop)
        })?;
    fetcher.set_current(&category, &version)?;
    load_entry(&entry, version)
}

fn load_entry(entry: &Path, package_version: String) -> Result<Chromium> {
    let prefix = entry.join("prefix");
    let binary = prefix.join(BINARY);
    if !binary.is_file() {
        return Err(Error::MissingFromPackage {
            what: "chromium-headless-shell binary",
            package: format!("{DEBIAN_PACKAGE} {package_version}"),
            looked_for: BINARY.into(),
        });
    }
    Ok(Chromium {
        binary,
        library_path: LIBRARY_DIRS
            .iter()
            .map(|d| prefix.join(d))
            .filter(|p| p.is_dir())
            .collect(),
        package_version,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_command_has_the_flags_profile_and_libraries() {
        let c = Chromium {
            binary: "/c/chromium-headless-shell".into(),
            library_path: vec!["/c/a".into(), "/c/b".into()],
            package_version: "1".into(),
        };
        let cmd = c.command(Path::new("/tmp/profile"));
        let args: Vec<String> = cmd
            .get_args()
            .map(|a| a.to_string_lossy().into_owned())
            .collect();
        assert!(FLAGS.iter().all(|f| args.iter().any(|a| a == f)));
        assert!(args.contains(&"--user-data-dir=/tmp/profile".to_string()));
        let env: Vec<_> = cmd.get_envs().collect();
        assert_eq!(
            env,
            vec![(
                std::ffi::OsStr::new("LD_LIBRARY_PATH"),
                Some(std::ffi::OsStr::new("/c/a:/c/b"))
            )]
        );
    }
}
