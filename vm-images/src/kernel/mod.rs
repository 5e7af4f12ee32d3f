//! Guest kernels: the image, its configuration and the modules the guest loads.

pub mod build;
pub mod build_tools;
pub mod ikconfig;
pub mod kconfig;
pub mod local;
pub mod modinfo;
pub mod modules;
pub mod patches;
pub mod pvh;
pub mod requirements;
pub mod source;
mod spec;
pub mod toolchain;

use std::fs;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

pub use spec::KernelSpec;

use crate::cache::key_from_version;
use crate::debian::{deb, Archive, Suite};
use crate::error::{Error, IoContext, Result};
use crate::fetch::Fetcher;
use modules::{load_order, ModuleIndex};

/// The modules the guest needs loaded (their dependencies are added).
pub const GUEST_MODULES: [&str; 2] = ["vfio_pci", "vfio_iommu_type1"];

/// Debian's metapackage that names the current kernel of a suite.
pub const DEBIAN_METAPACKAGE: &str = "linux-image-amd64";

/// A kernel ready to boot.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Kernel {
    /// What was asked for.
    pub spec: KernelSpec,
    /// The kernel release (`uname -r`).
    pub release: String,
    /// The Debian package version it came from.
    pub package_version: String,
    /// The bootable image (bzImage).
    pub image: PathBuf,
    /// The module files to load, in load order (dependencies first).
    pub modules: Vec<PathBuf>,
    /// The kernel configuration, if known.
    pub config: Option<PathBuf>,
    /// The IOMMU mode its configuration offers, when that configuration was
    /// already checked while obtaining the kernel (local kernels, including a bare
    /// bzImage whose configuration is only embedded); `None` leaves the check of
    /// `config` to whoever boots it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub iommu: Option<requirements::IommuMode>,
    /// An uncompressed copy of `image` that QEMU boots through its PVH entry,
    /// sparing the guest the decompression of the bzImage under emulation (see
    /// [`pvh`]); `None` boots `image`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pvh_image: Option<PathBuf>,
}

impl Kernel {
    /// The file to give QEMU's `-kernel`: the PVH copy when there is one.
    pub fn boot_image(&self) -> &Path {
        self.pvh_image.as_deref().unwrap_or(&self.image)
    }
}

/// Obtains the kernel `spec` names, from the cache if it holds it.
///
/// `debian:<suite>` downloads the suite's kernel packages; `stock`, `reference`,
/// `fixed` and `minimal` build Debian sid's `linux-source` (see [`build`]), which takes minutes the first
/// time and is then cached until the source, the fragment or the patches change.
pub fn obtain(fetcher: &Fetcher<'_>, spec: &KernelSpec) -> Result<Kernel> {
    match spec {
        KernelSpec::Debian(suite) => obtain_debian(fetcher, suite),
        KernelSpec::Stock | KernelSpec::Reference | KernelSpec::Fixed | KernelSpec::Minimal => {
            let recipe = build::Recipe::for_spec(spec)?.expect("built kernels have recipes");
            build::obtain(fetcher, spec, &recipe)
        }
        KernelSpec::Path(path) => local::obtain(spec, path),
    }
}

const ENTRY_INFO: &str = "kernel.json";

/// What a cache entry records; paths are relative to the entry.
#[derive(Debug, Serialize, Deserialize)]
struct EntryInfo {
    spec: KernelSpec,
    release: String,
    package_version: String,
    image: PathBuf,
    modules: Vec<PathBuf>,
    config: Option<PathBuf>,
}

/// The current `linux-image-amd64` of `suite`, cached per release and package version.
pub fn obtain_debian(fetcher: &Fetcher<'_>, suite: &Suite) -> Result<Kernel> {
    let category_name = format!("debian-{suite}");
    let category = ["kernel", category_name.as_str()];
    let cache = fetcher.cache();
    if let Some((_, entry)) = fetcher.warm_entry(&category, str::to_owned)? {
        return with_pvh_image(fetcher, &category_name, &entry);
    }
    let archive = Archive::open(fetcher, suite)?;
    let resolved = resolve(&archive)?;
    fetcher.report(&format!(
        "kernel {} ({} {})",
        resolved.release, resolved.image_package, resolved.version
    ));
    let key = key_from_version(&format!("{}_{}", resolved.release, resolved.version));
    let spec = KernelSpec::Debian(suite.clone());
    let entry = cache.get_or_create(&category, &key, |dir| {
        fill_entry(fetcher, &archive, &resolved, &spec, dir)
    })?;
    fetcher.set_current(&category, &key)?;
    with_pvh_image(fetcher, &category_name, &entry)
}

/// The Debian kernel of cache entry `entry`, with its PVH copy (made on first use;
/// Debian builds with `CONFIG_PVH`).
fn with_pvh_image(fetcher: &Fetcher<'_>, category: &str, entry: &Path) -> Result<Kernel> {
    let mut kernel = load_entry(entry)?;
    let key = entry.file_name().unwrap_or_default().to_string_lossy();
    kernel.pvh_image = pvh::cached(
        fetcher.cache(),
        &["kernel-pvh", category],
        &key,
        &kernel.image,
    )?;
    Ok(kernel)
}

/// The packages of the current kernel of a suite.
#[derive(Debug)]
struct Resolved {
    release: String,
    image_package: String,
    version: String,
    /// Every package holding the kernel's files, with its version.
    packages: Vec<(String, String)>,
}

/// Follows `linux-image-amd64` to the versioned image package and, where the suite
/// splits the kernel (sid: `linux-binary-*`, `linux-modules-*`, `linux-base-*`), to
/// the packages that hold the files.
fn resolve(archive: &Archive<'_>) -> Result<Resolved> {
    let meta_version = archive.candidate(DEBIAN_METAPACKAGE)?;
    let image_package = archive
        .depends(DEBIAN_METAPACKAGE, &meta_version)?
        .into_iter()
        .find(|d| d.starts_with("linux-image-"))
        .ok_or_else(|| Error::Parse {
            what: format!("Depends of {DEBIAN_METAPACKAGE} {meta_version}"),
            detail: "no linux-image-<release> package".into(),
        })?;
    let release = image_package["linux-image-".len()..].to_owned();
    let version = archive.candidate(&image_package)?;
    let split_parts: Vec<String> = ["linux-binary-", "linux-modules-", "linux-base-"]
        .iter()
        .map(|prefix| format!("{prefix}{release}"))
        .collect();
    let mut packages = vec![(image_package.clone(), version.clone())];
    for dep in archive.depends(&image_package, &version)? {
        if split_parts.contains(&dep) {
            let v = archive.candidate(&dep)?;
            packages.push((dep, v));
        }
    }
    Ok(Resolved {
        release,
        image_package,
        version,
        packages,
    })
}

/// Downloads and unpacks the kernel packages, then keeps only what the guest needs.
fn fill_entry(
    fetcher: &Fetcher<'_>,
    archive: &Archive<'_>,
    resolved: &Resolved,
    spec: &KernelSpec,
    dir: &Path,
) -> Result<()> {
    let debs = archive.download(&resolved.packages, &dir.join("debs"))?;
    fetcher.report(&format!("unpacking {} kernel packages", debs.len()));
    let root = dir.join("root");
    deb::extract_all(&debs, &root)?;
    let layout = KernelLayout::find(
        &root,
        &resolved.release,
        &resolved.image_package,
        &resolved.version,
    )?;

    let index = ModuleIndex::scan(&layout.modules_dir)?;
    let order = load_order(&GUEST_MODULES, &resolved.release, |name| index.find(name))?;
    let modules_dir = dir.join("modules");
    fs::create_dir_all(&modules_dir).at("creating directory", &modules_dir)?;
    let mut modules = Vec::new();
    for path in &order {
        let rel = Path::new("modules").join(path.file_name().unwrap_or_default());
        fs::copy(path, dir.join(&rel)).at("copying module to", dir.join(&rel))?;
        modules.push(rel);
    }
    fs::copy(&layout.image, dir.join("vmlinuz"))
        .at("copying kernel image to", dir.join("vmlinuz"))?;
    let config = match &layout.config {
        Some(c) => {
            fs::copy(c, dir.join("config")).at("copying kernel config to", dir.join("config"))?;
            Some(PathBuf::from("config"))
        }
        None => None,
    };
    let info = EntryInfo {
        spec: spec.clone(),
        release: resolved.release.clone(),
        package_version: resolved.version.clone(),
        image: "vmlinuz".into(),
        modules,
        config,
    };
    let json = serde_json::to_string_pretty(&info).map_err(|e| Error::Parse {
        what: "kernel entry record".into(),
        detail: e.to_string(),
    })?;
    fs::write(dir.join(ENTRY_INFO), json).at("writing", dir.join(ENTRY_INFO))?;
    for sub in [root, dir.join("debs")] {
        fs::remove_dir_all(&sub).at("removing", sub)?;
    }
    Ok(())
}

/// Where an unpacked Debian kernel keeps its files (the layout changed over releases:
/// bookworm and trixie use /boot, sid keeps everything below /usr/lib/modules).
#[derive(Debug, PartialEq, Eq)]
struct KernelLayout {
    image: PathBuf,
    config: Option<PathBuf>,
    modules_dir: PathBuf,
}

impl KernelLayout {
    fn find(root: &Path, release: &str, package: &str, version: &str) -> Result<Self> {
        let first = |what: &'static str, candidates: Vec<PathBuf>, want_dir: bool| {
            candidates
                .iter()
                .find(|p| if want_dir { p.is_dir() } else { p.is_file() })
                .cloned()
                .ok_or_else(|| Error::MissingFromPackage {
                    what,
                    package: format!("{package} {version}"),
                    looked_for: candidates
                        .iter()
                        .map(|p| p.display().to_string())
                        .collect::<Vec<_>>()
                        .join(", "),
                })
        };
        let in_modules = |file: &str| {
            vec![
                root.join(format!("usr/lib/modules/{release}/{file}")),
                root.join(format!("lib/modules/{release}/{file}")),
            ]
        };
        let mut image = vec![root.join(format!("boot/vmlinuz-{release}"))];
        image.extend(in_modules("vmlinuz"));
        let mut config = vec![root.join(format!("boot/config-{release}"))];
        config.extend(in_modules("config"));
        Ok(Self {
            image: first("kernel image", image, false)?,
            config: first("kernel config", config, false).ok(),
            modules_dir: first("modules directory", in_modules(""), true)?,
        })
    }
}

/// A complete cache entry as a [`Kernel`], checking its files are there.
fn load_entry(entry: &Path) -> Result<Kernel> {
    let info_path = entry.join(ENTRY_INFO);
    let text = fs::read_to_string(&info_path).at("reading", &info_path)?;
    let info: EntryInfo = serde_json::from_str(&text).map_err(|e| Error::CacheEntry {
        path: info_path.clone(),
        detail: e.to_string(),
    })?;
    let kernel = Kernel {
        spec: info.spec,
        release: info.release,
        package_version: info.package_version,
        image: entry.join(info.image),
        modules: info.modules.iter().map(|m| entry.join(m)).collect(),
        config: info.config.map(|c| entry.join(c)),
        iommu: None,
        pvh_image: None,
    };
    let files = std::iter::once(&kernel.image)
        .chain(&kernel.modules)
        .chain(&kernel.config);
    if let Some(missing) = files.into_iter().find(|p| !p.is_file()) {
        return Err(Error::CacheEntry {
            path: entry.to_owned(),
            detail: format!("{} is missing", missing.display()),
        });
    }
    Ok(kernel)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn touch(path: &Path) {
        fs::create_dir_all(path.parent().unwrap()).unwrap();
        fs::write(path, b"x").unwrap();
    }

    #[test]
    fn sid_layout() {
        let tmp = tempfile::tempdir().unwrap();
        let r = tmp.path();
        let m = r.join("usr/lib/modules/7.2.13+deb14-amd64");
        touch(&m.join("vmlinuz"));
        touch(&m.join("config"));
        touch(&m.join("kernel/drivers/vfio/vfio.ko.xz"));
        let layout = KernelLayout::find(r, "7.2.13+deb14-amd64", "p", "1").unwrap();
        assert_eq!(layout.image, m.join("vmlinuz"));
        assert_eq!(layout.config, Some(m.join("config")));
        assert_eq!(layout.modules_dir, m.join(""));
    }

    #[test]
    fn bookworm_layout_and_missing_image() {
        let tmp = tempfile::tempdir().unwrap();
        let r = tmp.path();
        let rel = "6.1.0-40-amd64";
        fs::create_dir_all(r.join(format!("lib/modules/{rel}/kernel"))).unwrap();
        let err = KernelLayout::find(r, rel, "linux-image-6.1.0-40-amd64", "6.1.153-1")
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("kernel image not found in linux-image-6.1.0-40-amd64 6.1.153-1"),
            "{err}"
        );
        touch(&r.join(format!("boot/vmlinuz-{rel}")));
        let layout = KernelLayout::find(r, rel, "p", "1").unwrap();
        assert_eq!(layout.image, r.join(format!("boot/vmlinuz-{rel}")));
        assert_eq!(layout.config, None);
    }

    #[test]
    fn path_specs_are_local_kernels() {
        let tmp = tempfile::tempdir().unwrap();
        let cache = crate::Cache::new(tmp.path());
        let fetcher = Fetcher::new(&cache);
        let spec: KernelSpec = "/nonexistent/bzImage".parse().unwrap();
        let err = obtain(&fetcher, &spec).unwrap_err().to_string();
        assert!(err.contains("no such file or directory"), "{err}");
    }

    #[test]
    fn entry_round_trip_and_damage() {
        let tmp = tempfile::tempdir().unwrap();
        let entry = tmp.path();
        touch(&entry.join("vmlinuz"));
        touch(&entry.join("modules/vfio.ko.xz"));
        let info = EntryInfo {
            spec: "debian:sid".parse().unwrap(),
            release: "7.2.13+deb14-amd64".into(),
            package_version: "7.2.13-1".into(),
            image: "vmlinuz".into(),
            modules: vec!["modules/vfio.ko.xz".into()],
            config: None,
        };
        fs::write(
            entry.join(ENTRY_INFO),
            serde_json::to_string(&info).unwrap(),
        )
        .unwrap();
        let kernel = load_entry(entry).unwrap();
        assert_eq!(kernel.modules, [entry.join("modules/vfio.ko.xz")]);
        assert_eq!(kernel.spec.to_string(), "debian:sid");
        fs::remove_file(entry.join("modules/vfio.ko.xz")).unwrap();
        assert!(load_entry(entry)
            .unwrap_err()
            .to_string()
            .contains("vfio.ko.xz is missing"));
    }
}
