//! Debian packages through a private apt configuration per suite.
//!
//! Nothing is installed on the host: apt runs with its own sources, state and caches
//! below the bigbar cache, downloads .deb files, and `dpkg-deb -x` unpacks them into
//! a prefix. Signatures are always checked; see [`keyring`] for the trust root.

mod apt_config;
pub mod control;
pub mod deb;
pub mod keyring;
mod suite;

use std::fs;
use std::path::{Path, PathBuf};
use std::process::Command;

pub use apt_config::AptTree;
pub use suite::Suite;

use crate::cache::CacheLock;
use crate::command::{failure, require_tool, run, run_unchecked, tail};
use crate::error::{Error, IoContext, Result};
use crate::fetch::Fetcher;

/// An apt archive view of one suite, locked for exclusive use while it lives.
pub struct Archive<'f> {
    fetcher: &'f Fetcher<'f>,
    suite: Suite,
    /// Names the private tree below `apt/`, its lock and its once-per-run update.
    tree_name: String,
    mirror: String,
    tree: AptTree,
    keyring: PathBuf,
    _lock: CacheLock,
}

/// An apt repository other than the Debian mirror's suites (e.g. Ubuntu's archive):
/// where it is, what of it to read and which keyring verifies it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Repository {
    /// The private tree's name below `apt/`, e.g. `ubuntu-noble`; distinct from
    /// every Debian suite name.
    pub tree_name: String,
    /// The archive's base URL, e.g. `http://archive.ubuntu.com/ubuntu`.
    pub mirror: String,
    /// The suite (codename) to read.
    pub suite: Suite,
    /// The components, e.g. `["main"]`.
    pub components: Vec<String>,
    /// The keyring apt verifies the Release file with.
    pub keyring: PathBuf,
}

impl<'f> Archive<'f> {
    /// Opens the suite's private apt tree and makes sure its package lists are current
    /// for this run (`apt-get update` at most once per [`Fetcher`]). If the host's
    /// keyring cannot verify the suite, fetches a newer Debian keyring through a suite
    /// it can verify (see [`keyring::bootstrap`]).
    pub fn open(fetcher: &'f Fetcher<'f>, suite: &Suite) -> Result<Self> {
        let mut archive = Self::open_with_keyring(fetcher, suite, None)?;
        match archive.update() {
            Err(Error::Signature { .. }) if archive.keyring == keyring::host_keyring() => {
                fetcher.report(&format!(
                    "host keyring cannot verify {suite}; fetching a newer debian-archive-keyring"
                ));
                drop(archive);
                let fetched = keyring::bootstrap(fetcher)?;
                keyring::remember(fetcher, suite, &fetched)?;
                archive = Self::open_with_keyring(fetcher, suite, Some(fetched))?;
                archive.update()?;
                Ok(archive)
            }
            Err(e) => Err(e),
            Ok(()) => Ok(archive),
        }
    }

    /// Opens the tree with `keyring` (default: the one remembered for the suite, else
    /// the host's), without updating; call [`Archive::update`] before querying.
    pub fn open_with_keyring(
        fetcher: &'f Fetcher<'f>,
        suite: &Suite,
        keyring: Option<PathBuf>,
    ) -> Result<Self> {
        let keyring = match keyring {
            Some(k) => k,
            None => keyring::for_suite(fetcher, suite)?,
        };
        Self::open_tree(
            fetcher,
            &Repository {
                tree_name: suite.to_string(),
                mirror: fetcher.mirror_url().to_owned(),
                suite: suite.clone(),
                components: vec!["main".into()],
                keyring,
            },
        )
    }

    /// Opens the private tree of `repository` and makes sure its package lists are
    /// current for this run. Unlike [`Archive::open`], a keyring that cannot verify
    /// it is an error: no other keyring is fetched.
    pub fn open_repository(fetcher: &'f Fetcher<'f>, repository: &Repository) -> Result<Self> {
        if !repository.keyring.is_file() {
            return Err(Error::NoKeyring {
                path: repository.keyring.clone(),
            });
        }
        let archive = Self::open_tree(fetcher, repository)?;
        archive.update()?;
        Ok(archive)
    }

    /// Writes and locks the private tree of `repository`, without updating.
    fn open_tree(fetcher: &'f Fetcher<'f>, repository: &Repository) -> Result<Self> {
        require_tool("apt-get", "apt")?;
        require_tool("apt-cache", "apt")?;
        let name = repository.tree_name.as_str();
        let lock = fetcher.cache().lock(&["apt"], name)?;
        let tree = AptTree::new(fetcher.cache().category_dir(&["apt", name]));
        tree.write(
            &repository.mirror,
            repository.suite.as_str(),
            &repository.components.join(" "),
            &repository.keyring,
            &apt_config::current_user(),
        )?;
        Ok(Self {
            fetcher,
            suite: repository.suite.clone(),
            tree_name: name.to_owned(),
            mirror: repository.mirror.clone(),
            tree,
            keyring: repository.keyring.clone(),
            _lock: lock,
        })
    }

    /// The suite.
    pub fn suite(&self) -> &Suite {
        &self.suite
    }

    /// The keyring apt verifies this suite with.
    pub fn keyring(&self) -> &Path {
        &self.keyring
    }

    /// Runs `apt-get update` unless this fetcher already did for this suite.
    pub fn update(&self) -> Result<()> {
        if self.fetcher.was_updated(&self.tree_name) {
            return Ok(());
        }
        self.fetcher.report(&format!(
            "apt-get update ({} from {})",
            self.suite, self.mirror
        ));
        let mut cmd = self.apt("apt-get");
        cmd.args(["-q", "update"]);
        let output = run_unchecked(&mut cmd)?;
        let stderr = String::from_utf8_lossy(&output.stderr);
        match update_problem(&stderr) {
            Some(UpdateProblem::Signature) => {
                return Err(Error::Signature {
                    suite: self.suite.to_string(),
                    keyring: self.keyring.clone(),
                    detail: tail(&stderr, 10),
                })
            }
            Some(UpdateProblem::Failed) => return Err(failure(&cmd, &output)),
            None if !output.status.success() => return Err(failure(&cmd, &output)),
            None => {}
        }
        self.fetcher.mark_updated(&self.tree_name);
        Ok(())
    }

    /// A command running `program` (apt-get, apt-cache) in the private configuration.
    fn apt(&self, program: &str) -> Command {
        let mut cmd = Command::new(program);
        cmd.env("APT_CONFIG", self.tree.config_file())
            .env("LC_ALL", "C.UTF-8")
            .env("DEBIAN_FRONTEND", "noninteractive");
        cmd
    }

    /// The version apt would install of `package`.
    pub fn candidate(&self, package: &str) -> Result<String> {
        let mut cmd = self.apt("apt-cache");
        cmd.args(["policy", package]);
        let out = run(&mut cmd)?;
        control::policy_candidate(&String::from_utf8_lossy(&out.stdout)).ok_or_else(|| {
            Error::PackageNotFound {
                suite: self.suite.to_string(),
                package: package.to_owned(),
            }
        })
    }

    /// The control fields of `package` at `version`.
    pub fn show(&self, package: &str, version: &str) -> Result<control::Stanza> {
        let mut cmd = self.apt("apt-cache");
        cmd.args(["show", &format!("{package}={version}")]);
        let out = run(&mut cmd)?;
        let stanza = control::first_stanza(&String::from_utf8_lossy(&out.stdout));
        if stanza.get("Package").map(String::as_str) != Some(package) {
            return Err(Error::PackageNotFound {
                suite: self.suite.to_string(),
                package: format!("{package}={version}"),
            });
        }
        Ok(stanza)
    }

    /// The first alternative of each `Depends` group of `package` at `version`.
    pub fn depends(&self, package: &str, version: &str) -> Result<Vec<String>> {
        let stanza = self.show(package, version)?;
        let field = stanza.get("Depends").map(String::as_str).unwrap_or("");
        Ok(control::depends(field)
            .into_iter()
            .filter_map(|group| group.into_iter().next())
            .collect())
    }

    /// Downloads exactly the given `(package, version)`s into `dest` (no dependencies).
    pub fn download(&self, packages: &[(String, String)], dest: &Path) -> Result<Vec<PathBuf>> {
        fs::create_dir_all(dest).at("creating directory", dest)?;
        let names: Vec<String> = packages.iter().map(|(p, v)| format!("{p}={v}")).collect();
        self.fetcher
            .report(&format!("downloading {}", names.join(" ")));
        let mut cmd = self.apt("apt-get");
        cmd.current_dir(dest).args(["-q", "download"]).args(&names);
        run(&mut cmd)?;
        let debs = deb::list_debs(dest)?;
        if debs.len() != packages.len() {
            return Err(Error::Parse {
                what: format!("apt-get download into {}", dest.display()),
                detail: format!(
                    "asked for {} packages, found {} .deb files",
                    packages.len(),
                    debs.len()
                ),
            });
        }
        Ok(debs)
    }

    /// Downloads `package` at `version` and everything it depends on (as if installing
    /// on an empty system, without recommends) into `dest`.
    pub fn download_closure(
        &self,
        package: &str,
        version: &str,
        dest: &Path,
    ) -> Result<Vec<PathBuf>> {
        let partial = dest.join("partial");
        fs::create_dir_all(&partial).at("creating directory", &partial)?;
        self.fetcher.report(&format!(
            "downloading {package}={version} and its dependencies ({})",
            self.suite
        ));
        let mut cmd = self.apt("apt-get");
        cmd.arg("-q")
            .arg("-y")
            .arg("-o")
            .arg(format!("Dir::Cache::Archives={}", dest.display()))
            .args(["--download-only", "install"])
            .arg(format!("{package}={version}"));
        run(&mut cmd)?;
        fs::remove_dir_all(&partial).at("removing", &partial)?;
        deb::list_debs(dest)
    }
}

/// What went wrong in an `apt-get update`, judged from its messages.
#[derive(Debug, PartialEq, Eq)]
enum UpdateProblem {
    /// The Release file could not be verified.
    Signature,
    /// Something else failed (network, missing suite...).
    Failed,
}

/// apt-get update may exit 0 after failing to fetch an index (it keeps the old one),
/// so its messages decide whether the lists are trustworthy and current.
fn update_problem(stderr: &str) -> Option<UpdateProblem> {
    const SIGNATURE: [&str; 6] = [
        "NO_PUBKEY",
        "EXPKEYSIG",
        "KEYEXPIRED",
        "is not signed",
        "signatures couldn't be verified",
        "Signature by key",
    ];
    if SIGNATURE.iter().any(|s| stderr.contains(s)) {
        return Some(UpdateProblem::Signature);
    }
    let failed = stderr.lines().any(|l| {
        l.starts_with("E:")
            || l.starts_with("Err:")
            || (l.starts_with("W:")
                && (l.contains("Failed to fetch") || l.contains("Some index files failed")))
    });
    failed.then_some(UpdateProblem::Failed)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[rstest::rstest]
    #[case("", None)]
    #[case("W: Download is performed unsandboxed as root", None)]
    #[case(
        "W: GPG error: http://deb.debian.org/debian sid InRelease: The following signatures couldn't be verified because the public key is not available: NO_PUBKEY 12345\nE: The repository 'http://deb.debian.org/debian sid InRelease' is not signed.",
        Some(UpdateProblem::Signature)
    )]
    #[case(
        "W: Failed to fetch http://deb.debian.org/debian/dists/sid/InRelease  Could not resolve 'deb.debian.org'\nW: Some index files failed to download.",
        Some(UpdateProblem::Failed)
    )]
    #[case(
        "E: The repository 'http://deb.debian.org/debian nosuch Release' does not have a Release file.",
        Some(UpdateProblem::Failed)
    )]
    fn update_problems(#[case] stderr: &str, #[case] expected: Option<UpdateProblem>) {
        assert_eq!(update_problem(stderr), expected);
    }
}
