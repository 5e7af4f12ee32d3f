//! A private apt configuration: apt sees only our sources, state and caches, and none
//! of the host's, so it can run as an ordinary user without touching the system.

use std::fs;
use std::path::{Path, PathBuf};

use crate::error::{IoContext, Result};

/// The private apt tree of one suite, below the cache.
#[derive(Debug, Clone)]
pub struct AptTree {
    dir: PathBuf,
}

impl AptTree {
    /// The tree rooted at `dir`.
    pub fn new(dir: PathBuf) -> Self {
        Self { dir }
    }

    /// The root of the tree.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// The configuration file to pass as `APT_CONFIG`.
    pub fn config_file(&self) -> PathBuf {
        self.dir.join("apt.conf")
    }

    /// The directory of downloaded index files.
    pub fn lists_dir(&self) -> PathBuf {
        self.dir.join("state/lists")
    }

    /// Creates the directories and writes the configuration and a sources list naming
    /// `suite` with its `components` (space separated, e.g. `main`).
    pub fn write(
        &self,
        mirror: &str,
        suite: &str,
        components: &str,
        keyring: &Path,
        user: &str,
    ) -> Result<()> {
        for sub in [
            "etc/sources.list.d",
            "etc/preferences.d",
            "etc/trusted.gpg.d",
            "etc/apt.conf.d",
            "state/lists/partial",
            "cache/archives/partial",
            "log",
        ] {
            let path = self.dir.join(sub);
            fs::create_dir_all(&path).at("creating directory", path)?;
        }
        let status = self.dir.join("state/status");
        if !status.exists() {
            fs::write(&status, "").at("writing", status)?;
        }
        let sources = self.dir.join("etc/sources.list");
        fs::write(&sources, sources_line(mirror, suite, components, keyring))
            .at("writing", sources)?;
        let conf = self.config_file();
        fs::write(&conf, config_text(&self.dir, user)).at("writing", conf)
    }
}

/// The one line of the private sources list: only `suite` (its `components`), signed
/// by `keyring`.
pub fn sources_line(mirror: &str, suite: &str, components: &str, keyring: &Path) -> String {
    format!(
        "deb [arch=amd64 signed-by={}] {mirror} {suite} {components}\n",
        keyring.display()
    )
}

/// The apt configuration text for the tree at `dir`.
pub fn config_text(dir: &Path, user: &str) -> String {
    let d = dir.display();
    // Every Dir:: entry apt would otherwise take from the host points into the tree:
    // the status file is empty so apt resolves the whole closure, and the host's
    // apt.conf.d, sources, preferences and trusted keys are not read.
    format!(
        r#"Dir::Etc "{d}/etc";
Dir::Etc::Main "{d}/etc/apt.conf";
Dir::Etc::Parts "{d}/etc/apt.conf.d";
Dir::Etc::SourceList "{d}/etc/sources.list";
Dir::Etc::SourceParts "{d}/etc/sources.list.d";
Dir::Etc::Preferences "{d}/etc/preferences";
Dir::Etc::PreferencesParts "{d}/etc/preferences.d";
Dir::Etc::Trusted "{d}/etc/trusted.gpg";
Dir::Etc::TrustedParts "{d}/etc/trusted.gpg.d";
Dir::State "{d}/state";
Dir::State::Lists "{d}/state/lists";
Dir::State::status "{d}/state/status";
Dir::Cache "{d}/cache";
Dir::Cache::Archives "{d}/cache/archives";
Dir::Log "{d}/log";
APT::Architecture "amd64";
APT::Architectures {{ "amd64"; }};
APT::Install-Recommends "false";
APT::Install-Suggests "false";
APT::Get::AllowUnauthenticated "false";
Acquire::AllowInsecureRepositories "false";
Acquire::Languages "none";
Acquire::Check-Valid-Until "false";
Debug::NoLocking "true";
APT::Sandbox::User "{user}";
"#
    )
}

/// The name of the user running us, for apt's download sandbox.
pub fn current_user() -> String {
    let uid = nix::unistd::getuid();
    match nix::unistd::User::from_uid(uid) {
        Ok(Some(user)) => user.name,
        // No passwd entry (e.g. a container with an arbitrary uid): apt accepts a
        // numeric id here too.
        _ => uid.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn config_points_everything_into_the_tree() {
        let text = config_text(Path::new("/c/apt/sid"), "kdev");
        for line in text.lines().filter(|l| l.starts_with("Dir::")) {
            assert!(line.contains("\"/c/apt/sid/"), "escapes the tree: {line}");
        }
        for required in [
            "Dir::State::status \"/c/apt/sid/state/status\";",
            "Dir::Etc::SourceParts",
            "Dir::Etc::TrustedParts",
            "Dir::Cache::Archives",
            "APT::Install-Recommends \"false\";",
            "Acquire::Check-Valid-Until \"false\";",
            "Debug::NoLocking \"true\";",
            "APT::Sandbox::User \"kdev\";",
        ] {
            assert!(text.contains(required), "missing {required}");
        }
        assert!(!text.contains("AllowUnauthenticated \"true\""));
    }

    #[test]
    fn sources_name_only_the_suite_and_keyring() {
        let line = sources_line(
            "http://deb.debian.org/debian",
            "sid",
            "main",
            Path::new("/k/debian-archive-keyring.gpg"),
        );
        assert_eq!(
            line,
            "deb [arch=amd64 signed-by=/k/debian-archive-keyring.gpg] http://deb.debian.org/debian sid main\n"
        );
    }

    #[test]
    fn tree_is_created() {
        let tmp = tempfile::tempdir().unwrap();
        let tree = AptTree::new(tmp.path().join("sid"));
        tree.write("http://m", "sid", "main", Path::new("/k.gpg"), "u")
            .unwrap();
        assert_eq!(fs::read(tree.dir().join("state/status")).unwrap(), b"");
        assert!(tree.dir().join("cache/archives/partial").is_dir());
        assert!(tree.lists_dir().join("partial").is_dir());
        assert!(fs::read_to_string(tree.config_file())
            .unwrap()
            .contains("APT::Sandbox::User \"u\";"));
    }
}
