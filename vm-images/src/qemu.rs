//! QEMU: the host's if it has the vfio-user client, else Debian sid's, run from the
//! cache through its own dynamic loader (sid's QEMU needs sid's libc).

use std::ffi::OsString;
use std::fmt;
use std::fs;
use std::path::{Path, PathBuf};
use std::process::Command;

use serde::{Deserialize, Serialize};

use crate::cache::key_from_version;
use crate::command::{run, tail};
use crate::debian::{deb, Archive, Suite};
use crate::error::{Error, IoContext, Result};
use crate::fetch::Fetcher;

/// The device bigbar needs.
pub const REQUIRED_DEVICE: &str = "vfio-user-pci";
/// The first QEMU release with [`REQUIRED_DEVICE`].
pub const MIN_VERSION: QemuVersion = QemuVersion {
    major: 10,
    minor: 1,
    micro: 0,
};
/// The binary looked for in PATH.
pub const SYSTEM_BINARY: &str = "qemu-system-x86_64";
/// The Debian package providing it.
pub const DEBIAN_PACKAGE: &str = "qemu-system-x86";

/// A QEMU version as printed by `-version`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
pub struct QemuVersion {
    /// Major.
    pub major: u32,
    /// Minor.
    pub minor: u32,
    /// Micro.
    pub micro: u32,
}

impl fmt::Display for QemuVersion {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}.{}.{}", self.major, self.minor, self.micro)
    }
}

impl QemuVersion {
    /// Parses the output of `qemu-system-x86_64 -version`
    /// ("QEMU emulator version 11.1.3 (Debian 1:11.1.3+ds-1)").
    pub fn parse_version_output(text: &str) -> Result<Self> {
        let err = |detail: &str| Error::Parse {
            what: "QEMU -version output".into(),
            detail: format!("{detail}: {:?}", tail(text, 3)),
        };
        let word = text
            .split_whitespace()
            .skip_while(|w| *w != "version")
            .nth(1)
            .ok_or_else(|| err("no `version` word"))?;
        let mut nums = word
            .split(['.', '-', '+'])
            .map(|n| n.parse::<u32>().map_err(|_| err("version is not numeric")));
        let major = nums.next().ok_or_else(|| err("empty version"))??;
        let minor = nums.next().transpose()?.unwrap_or(0);
        let micro = nums.next().transpose()?.unwrap_or(0);
        Ok(Self {
            major,
            minor,
            micro,
        })
    }
}

/// A dynamic loader to start the binary with, and where it finds libraries.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Loader {
    /// The `ld-linux-x86-64.so.2` to run.
    pub path: PathBuf,
    /// Its `--library-path`.
    pub library_path: Vec<PathBuf>,
}

/// Where a QEMU came from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Origin {
    /// Given explicitly (`--qemu PATH`).
    Explicit,
    /// Found in PATH.
    SystemPath,
    /// Debian's package, unpacked into the cache.
    Debian {
        /// The suite.
        suite: String,
        /// The package version of `qemu-system-x86`.
        package_version: String,
    },
}

/// A usable QEMU.
#[derive(Debug, Clone)]
pub struct Qemu {
    /// Its version.
    pub version: QemuVersion,
    /// The `qemu-system-x86_64` binary.
    pub binary: PathBuf,
    /// The loader to start it through, for a binary unpacked from another Debian suite.
    pub loader: Option<Loader>,
    /// Firmware and data directories passed with `-L`.
    pub data_dirs: Vec<PathBuf>,
    /// Directory of QEMU's loadable modules (`QEMU_MODULE_DIR`).
    pub module_dir: Option<PathBuf>,
    /// Where it came from.
    pub origin: Origin,
}

impl Qemu {
    /// A command starting this QEMU, with the loader and `-L` directories already
    /// given: the caller adds the machine arguments.
    pub fn command(&self) -> Command {
        let mut cmd = match &self.loader {
            Some(loader) => {
                let mut cmd = Command::new(&loader.path);
                cmd.arg("--library-path")
                    .arg(join_paths(&loader.library_path))
                    .arg(&self.binary);
                cmd
            }
            None => Command::new(&self.binary),
        };
        for dir in &self.data_dirs {
            cmd.arg("-L").arg(dir);
        }
        if let Some(dir) = &self.module_dir {
            cmd.env("QEMU_MODULE_DIR", dir);
        }
        cmd
    }

    /// Reads the version of the QEMU described by the other fields.
    fn probe_version(mut self) -> Result<Self> {
        let out = run(self.command().arg("-version"))?;
        self.version = QemuVersion::parse_version_output(&String::from_utf8_lossy(&out.stdout))?;
        Ok(self)
    }

    /// Whether `-device help` lists `device`.
    pub fn has_device(&self, device: &str) -> Result<bool> {
        let out = run(self.command().args(["-device", "help"]))?;
        let needle = format!("name \"{device}\"");
        Ok(String::from_utf8_lossy(&out.stdout).contains(&needle))
    }

    /// Why this QEMU cannot serve bigbar, if it cannot.
    pub fn unusable_reason(&self) -> Result<Option<String>> {
        if self.version < MIN_VERSION {
            return Ok(Some(format!(
                "older than {MIN_VERSION}, the first release with {REQUIRED_DEVICE}"
            )));
        }
        if !self.has_device(REQUIRED_DEVICE)? {
            return Ok(Some(format!(
                "`-device help` does not list {REQUIRED_DEVICE}"
            )));
        }
        Ok(None)
    }

    /// Describes a binary started directly.
    pub fn from_binary(binary: &Path, origin: Origin) -> Result<Self> {
        Self {
            version: MIN_VERSION,
            binary: binary.to_owned(),
            loader: None,
            data_dirs: Vec::new(),
            module_dir: None,
            origin,
        }
        .probe_version()
    }

    /// Describes the QEMU unpacked into `prefix` (a root file system tree).
    pub fn from_prefix(prefix: &Path, origin: Origin) -> Result<Self> {
        let missing = |what, looked_for: &Path| Error::MissingFromPackage {
            what,
            package: format!("the QEMU tree {}", prefix.display()),
            looked_for: looked_for.display().to_string(),
        };
        let binary = prefix.join("usr/bin").join(SYSTEM_BINARY);
        let loader = prefix.join("usr/lib/x86_64-linux-gnu/ld-linux-x86-64.so.2");
        for (what, path) in [("QEMU binary", &binary), ("dynamic loader", &loader)] {
            if !path.is_file() {
                return Err(missing(what, path));
            }
        }
        let existing = |rels: &[&str]| -> Vec<PathBuf> {
            rels.iter()
                .map(|r| prefix.join(r))
                .filter(|p| p.is_dir())
                .collect()
        };
        Self {
            version: MIN_VERSION,
            binary,
            loader: Some(Loader {
                path: loader,
                library_path: existing(&["usr/lib/x86_64-linux-gnu", "lib/x86_64-linux-gnu"]),
            }),
            data_dirs: existing(&["usr/share/qemu", "usr/share/seabios", "usr/lib/ipxe/qemu"]),
            module_dir: existing(&["usr/lib/x86_64-linux-gnu/qemu"]).pop(),
            origin,
        }
        .probe_version()
    }
}

fn join_paths(paths: &[PathBuf]) -> OsString {
    let mut joined = OsString::new();
    for (i, p) in paths.iter().enumerate() {
        if i > 0 {
            joined.push(":");
        }
        joined.push(p);
    }
    joined
}

/// Finds a QEMU with the vfio-user client: `explicit` if given (an error if it lacks
/// the device), else `qemu-system-x86_64` from PATH if suitable, else Debian sid's.
pub fn obtain(fetcher: &Fetcher<'_>, explicit: Option<&Path>) -> Result<Qemu> {
    if let Some(binary) = explicit {
        let qemu = Qemu::from_binary(binary, Origin::Explicit)?;
        return match qemu.unusable_reason()? {
            None => Ok(qemu),
            Some(reason) => Err(Error::QemuUnusable {
                binary: binary.to_owned(),
                version: qemu.version.to_string(),
                reason,
            }),
        };
    }
    if let Ok(binary) = which::which(SYSTEM_BINARY) {
        match Qemu::from_binary(&binary, Origin::SystemPath)
            .and_then(|q| q.unusable_reason().map(|r| (q, r)))
        {
            Ok((qemu, None)) => return Ok(qemu),
            Ok((qemu, Some(reason))) => fetcher.report(&format!(
                "{} (QEMU {}) is not usable: {reason}; using Debian sid's QEMU",
                binary.display(),
                qemu.version
            )),
            Err(e) => fetcher.report(&format!(
                "{} is not usable ({e}); using Debian sid's QEMU",
                binary.display()
            )),
        }
    }
    obtain_debian(fetcher, &Suite::sid())
}

/// What a cache entry of a Debian QEMU records.
#[derive(Debug, Serialize, Deserialize)]
struct EntryInfo {
    suite: String,
    package_version: String,
    qemu_version: QemuVersion,
}

const ENTRY_INFO: &str = "qemu.json";

/// Debian's `qemu-system-x86` from `suite`, cached per package version.
pub fn obtain_debian(fetcher: &Fetcher<'_>, suite: &Suite) -> Result<Qemu> {
    let category = ["qemu".to_owned(), format!("debian-{suite}")];
    let category: Vec<&str> = category.iter().map(String::as_str).collect();
    let cache = fetcher.cache();
    if let Some((_, entry)) = fetcher.warm_entry(&category, str::to_owned)? {
        return load_entry(&entry);
    }
    let archive = Archive::open(fetcher, suite)?;
    let version = archive.candidate(DEBIAN_PACKAGE)?;
    let key = key_from_version(&version);
    let entry = cache.get_or_create(&category, &key, |dir| {
        let debs = archive.download_closure(DEBIAN_PACKAGE, &version, &dir.join("debs"))?;
        fetcher.report(&format!("unpacking {} packages", debs.len()));
        let prefix = dir.join("prefix");
        deb::extract_all(&debs, &prefix)?;
        fs::remove_dir_all(dir.join("debs")).at("removing", dir.join("debs"))?;
        let origin = Origin::Debian {
            suite: suite.to_string(),
            package_version: version.clone(),
        };
        let qemu = Qemu::from_prefix(&prefix, origin)?;
        if let Some(reason) = qemu.unusable_reason()? {
            return Err(Error::QemuUnusable {
                binary: qemu.binary,
                version: qemu.version.to_string(),
                reason,
            });
        }
        let info = EntryInfo {
            suite: suite.to_string(),
            package_version: version.clone(),
            qemu_version: qemu.version,
        };
        let path = dir.join(ENTRY_INFO);
        let json = serde_json::to_string_pretty(&info).map_err(|e| Error::Parse {
            what: "QEMU entry record".into(),
            detail: e.to_string(),
        })?;
        fs::write(&path, json).at("writing", path)
    })?;
    fetcher.set_current(&category, &key)?;
    load_entry(&entry)
}

/// A complete cache entry as a [`Qemu`] (runs `-version` to check it still starts).
fn load_entry(entry: &Path) -> Result<Qemu> {
    let info_path = entry.join(ENTRY_INFO);
    let text = fs::read_to_string(&info_path).at("reading", &info_path)?;
    let info: EntryInfo = serde_json::from_str(&text).map_err(|e| Error::CacheEntry {
        path: info_path.clone(),
        detail: e.to_string(),
    })?;
    let qemu = Qemu::from_prefix(
        &entry.join("prefix"),
        Origin::Debian {
            suite: info.suite,
            package_version: info.package_version,
        },
    )?;
    if qemu.version != info.qemu_version {
        return Err(Error::CacheEntry {
            path: entry.to_owned(),
            detail: format!(
                "QEMU reports {} but was recorded as {}",
                qemu.version, info.qemu_version
            ),
        });
    }
    Ok(qemu)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[rstest::rstest]
    #[case("QEMU emulator version 11.1.3 (Debian 1:11.1.3+ds-1)\nCopyright", (11, 1, 3))]
    #[case("QEMU emulator version 7.2.19 (Debian 1:7.2+dfsg-7+deb12u16)", (7, 2, 19))]
    #[case("QEMU emulator version 10.1.0-rc2\n", (10, 1, 0))]
    #[case("QEMU emulator version 9.2\n", (9, 2, 0))]
    fn parses_versions(#[case] text: &str, #[case] v: (u32, u32, u32)) {
        let parsed = QemuVersion::parse_version_output(text).unwrap();
        assert_eq!((parsed.major, parsed.minor, parsed.micro), v);
    }

    #[test]
    fn rejects_garbage_version() {
        assert!(QemuVersion::parse_version_output("hello").is_err());
        assert!(QemuVersion::parse_version_output("version x.y").is_err());
    }

    #[test]
    fn version_order() {
        let v = |s| QemuVersion::parse_version_output(s).unwrap();
        assert!(v("version 10.0.7") < MIN_VERSION);
        assert!(v("version 10.1.0") >= MIN_VERSION);
        assert!(v("version 9.12.0") < MIN_VERSION);
    }

    #[test]
    fn command_uses_loader_and_data_dirs() {
        let qemu = Qemu {
            version: MIN_VERSION,
            binary: "/p/usr/bin/qemu-system-x86_64".into(),
            loader: Some(Loader {
                path: "/p/ld.so".into(),
                library_path: vec!["/p/a".into(), "/p/b".into()],
            }),
            data_dirs: vec!["/p/share/qemu".into(), "/p/seabios".into()],
            module_dir: Some("/p/mods".into()),
            origin: Origin::Explicit,
        };
        let cmd = qemu.command();
        assert_eq!(cmd.get_program(), "/p/ld.so");
        let args: Vec<_> = cmd.get_args().map(|a| a.to_str().unwrap()).collect();
        assert_eq!(
            args,
            [
                "--library-path",
                "/p/a:/p/b",
                "/p/usr/bin/qemu-system-x86_64",
                "-L",
                "/p/share/qemu",
                "-L",
                "/p/seabios"
            ]
        );
        let envs: Vec<_> = cmd.get_envs().collect();
        assert_eq!(
            envs,
            [("QEMU_MODULE_DIR".as_ref(), Some("/p/mods".as_ref()))]
        );
    }

    /// A fake QEMU: a shell script answering -version and -device help.
    ///
    /// A child process writes it: had this multi-threaded test process held it
    /// open for writing, a fork by a concurrent test could inherit that fd for a
    /// moment, and running the script would then fail with ETXTBSY (seen in CI).
    fn fake_qemu(dir: &Path, version: &str, devices: &str) -> PathBuf {
        use std::io::Write;
        let path = dir.join("qemu-system-x86_64");
        let script = format!(
            "#!/bin/sh\ncase \"$1\" in\n -version) echo 'QEMU emulator version {version}';;\n -device) printf '%s\\n' '{devices}';;\nesac\n"
        );
        let mut writer = std::process::Command::new("sh")
            .args([
                "-c",
                "cat > \"$1.new\" && chmod 755 \"$1.new\" && mv -f \"$1.new\" \"$1\"",
            ])
            .arg("sh")
            .arg(&path)
            .stdin(std::process::Stdio::piped())
            .spawn()
            .unwrap();
        writer
            .stdin
            .take()
            .unwrap()
            .write_all(script.as_bytes())
            .unwrap();
        assert!(writer.wait().unwrap().success());
        path
    }

    #[test]
    fn explicit_qemu_without_device_is_an_error() {
        let tmp = tempfile::tempdir().unwrap();
        let cache = crate::Cache::new(tmp.path().join("cache"));
        let fetcher = Fetcher::new(&cache);
        let bin = fake_qemu(tmp.path(), "11.0.0", "name \"virtio-net-pci\", bus PCI");
        let err = obtain(&fetcher, Some(&bin)).unwrap_err();
        assert!(
            err.to_string().contains("does not list vfio-user-pci"),
            "{err}"
        );
        let old = fake_qemu(tmp.path(), "9.2.0", "name \"vfio-user-pci\", bus PCI");
        let err = obtain(&fetcher, Some(&old)).unwrap_err();
        assert!(err.to_string().contains("older than 10.1.0"), "{err}");
    }

    #[test]
    fn explicit_qemu_with_device_is_used() {
        let tmp = tempfile::tempdir().unwrap();
        let cache = crate::Cache::new(tmp.path().join("cache"));
        let fetcher = Fetcher::new(&cache);
        let bin = fake_qemu(
            tmp.path(),
            "10.1.2",
            "name \"vfio-user-pci\", bus PCI, desc \"x\"",
        );
        let qemu = obtain(&fetcher, Some(&bin)).unwrap();
        assert_eq!(qemu.version.to_string(), "10.1.2");
        assert_eq!(qemu.origin, Origin::Explicit);
        assert!(qemu.loader.is_none());
        assert!(
            !tmp.path().join("cache").exists(),
            "explicit QEMU touched the cache"
        );
    }
}
