//! A kernel the user built: a bzImage, or a kernel build directory.
//!
//! From a build directory the image is `arch/x86/boot/bzImage`, the
//! configuration `.config`, the release `include/config/kernel.release`, and
//! modular vfio is loaded from the `.ko` files of the tree. A bare bzImage must
//! carry its configuration (`CONFIG_IKCONFIG`) or sit in its build tree, and
//! must have vfio built in. Either way the configuration is checked before boot.

use std::collections::{BTreeMap, BTreeSet};
use std::fs;
use std::path::{Path, PathBuf};

use super::kconfig::{self, Options, Value};
use super::modinfo::{self, module_name_of_file};
use super::modules::{load_order, Found};
use super::requirements::{self, IommuMode};
use super::{ikconfig, Kernel, KernelSpec};
use crate::error::{Error, IoContext, Result};

/// Where a bzImage lies inside its build tree.
pub(crate) const IMAGE_IN_TREE: &str = "arch/x86/boot/bzImage";

/// Describes and checks the kernel at `path` (a bzImage or a build directory).
pub fn obtain(spec: &KernelSpec, path: &Path) -> Result<Kernel> {
    let (image, tree) = locate(path)?;
    let bytes = fs::read(&image).at("reading", &image)?;
    let (config_text, config_path) = read_config(&image, tree.as_deref(), &bytes)?;
    let options = kconfig::parse(&config_text, config_path.as_deref().unwrap_or(&image))?;
    let iommu = requirements::check(&options, path)?;
    let release = match &tree {
        Some(t) => fs::read_to_string(t.join("include/config/kernel.release"))
            .ok()
            .map(|s| s.trim().to_string()),
        None => None,
    }
    .or_else(|| ikconfig::release(&bytes))
    .unwrap_or_else(|| "unknown".into());
    let modules = guest_modules(&options, tree.as_deref(), &release, path)?;
    Ok(Kernel {
        spec: spec.clone(),
        release,
        package_version: "local build".into(),
        image,
        modules,
        config: config_path,
        iommu: Some(iommu),
        pvh_image: None,
    })
}

/// The image and, when known, its build tree.
fn locate(path: &Path) -> Result<(PathBuf, Option<PathBuf>)> {
    if path.is_dir() {
        let image = path.join(IMAGE_IN_TREE);
        if !image.is_file() {
            return Err(Error::InvalidInput {
                what: "kernel build directory",
                value: path.display().to_string(),
                reason: format!("it has no {IMAGE_IN_TREE}; build it with `make bzImage` first"),
            });
        }
        return Ok((image, Some(path.to_path_buf())));
    }
    if !path.is_file() {
        return Err(Error::InvalidInput {
            what: "kernel",
            value: path.display().to_string(),
            reason: "no such file or directory".into(),
        });
    }
    // A bzImage inside a build tree brings the tree along.
    let tree = path
        .ends_with(IMAGE_IN_TREE)
        .then(|| path.ancestors().nth(4).map(Path::to_path_buf))
        .flatten()
        .filter(|t| t.join(".config").is_file());
    Ok((path.to_path_buf(), tree))
}

/// The configuration text and the file it came from (none when embedded).
fn read_config(
    image: &Path,
    tree: Option<&Path>,
    bytes: &[u8],
) -> Result<(String, Option<PathBuf>)> {
    if let Some(t) = tree {
        let p = t.join(".config");
        return Ok((fs::read_to_string(&p).at("reading", &p)?, Some(p)));
    }
    match ikconfig::config(bytes) {
        Some(text) => Ok((text, None)),
        None => Err(Error::InvalidInput {
            what: "kernel",
            value: image.display().to_string(),
            reason: "its configuration cannot be read: no .config beside it and none embedded \
                     (CONFIG_IKCONFIG, or a payload compression other than gzip, xz or zstd); \
                     give the kernel build directory instead"
                .into(),
        }),
    }
}

/// The modules to load, dependencies first; empty when vfio is built in.
fn guest_modules(
    options: &Options,
    tree: Option<&Path>,
    release: &str,
    path: &Path,
) -> Result<Vec<PathBuf>> {
    let modular = |name: &str| options.get(name) == Some(&Value::Set("m".into()));
    let mut roots = Vec::new();
    if modular("VFIO_PCI") || modular("VFIO") {
        roots.push("vfio_pci");
    }
    if modular("VFIO_IOMMU_TYPE1") && requirements::iommu_mode(options) == Some(IommuMode::Intel) {
        roots.push("vfio_iommu_type1");
    }
    if roots.is_empty() {
        return Ok(Vec::new());
    }
    let Some(tree) = tree else {
        return Err(Error::InvalidInput {
            what: "kernel",
            value: path.display().to_string(),
            reason: "vfio is built as modules; give the kernel build directory so bigbar can \
                     load them from its tree"
                .into(),
        });
    };
    let (files, builtin) = index_tree(tree)?;
    load_order(&roots, release, |name| {
        if let Some(p) = files.get(name) {
            let info = modinfo::read(p)?;
            Ok(Some(Found::File {
                path: p.clone(),
                depends: info.depends,
            }))
        } else if builtin.contains(name) {
            Ok(Some(Found::Builtin))
        } else {
            Ok(None)
        }
    })
}

/// Module files of a build tree by name, and the names `modules.builtin` lists.
fn index_tree(tree: &Path) -> Result<(BTreeMap<String, PathBuf>, BTreeSet<String>)> {
    let mut files = BTreeMap::new();
    let walk = walkdir::WalkDir::new(tree)
        .into_iter()
        .filter_entry(|e| e.file_name() != ".git" && e.file_name() != "Documentation");
    for entry in walk {
        let entry = entry.map_err(std::io::Error::from).at("walking", tree)?;
        let name = entry.file_name().to_string_lossy();
        if entry.file_type().is_file() && name.ends_with(".ko") {
            if let Some(m) = module_name_of_file(&name) {
                files.insert(m, entry.into_path());
            }
        }
    }
    let builtin = fs::read_to_string(tree.join("modules.builtin"))
        .unwrap_or_default()
        .lines()
        .filter_map(|l| module_name_of_file(l.rsplit('/').next().unwrap_or(l)))
        .collect();
    Ok((files, builtin))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tree_with(config: &str) -> tempfile::TempDir {
        let t = tempfile::tempdir().unwrap();
        let boot = t.path().join("arch/x86/boot");
        fs::create_dir_all(&boot).unwrap();
        fs::write(boot.join("bzImage"), b"not really a kernel").unwrap();
        fs::write(t.path().join(".config"), config).unwrap();
        fs::create_dir_all(t.path().join("include/config")).unwrap();
        fs::write(
            t.path().join("include/config/kernel.release"),
            "6.19.0-dev\n",
        )
        .unwrap();
        t
    }

    const BUILT_IN_ALL: &str = "CONFIG_64BIT=y\nCONFIG_PCI=y\nCONFIG_SERIAL_8250_CONSOLE=y\n\
        CONFIG_BLK_DEV_INITRD=y\nCONFIG_DEVTMPFS=y\nCONFIG_BINFMT_ELF=y\nCONFIG_BINFMT_SCRIPT=y\n\
        CONFIG_PROC_FS=y\nCONFIG_SYSFS=y\nCONFIG_FUTEX=y\nCONFIG_TRANSPARENT_HUGEPAGE=y\n\
        CONFIG_PRINTK=y\nCONFIG_KALLSYMS=y\n\
        CONFIG_VFIO=y\nCONFIG_VFIO_PCI=y\nCONFIG_VFIO_NOIOMMU=y\n";

    #[test]
    fn build_directory_with_builtin_vfio() {
        let t = tree_with(BUILT_IN_ALL);
        let k = obtain(&KernelSpec::Path(t.path().into()), t.path()).unwrap();
        assert_eq!(k.release, "6.19.0-dev");
        assert!(k.image.ends_with(IMAGE_IN_TREE));
        assert!(k.modules.is_empty());
        assert_eq!(
            k.config.as_deref(),
            Some(t.path().join(".config").as_path())
        );
        // The bzImage path inside the tree finds the same tree.
        let k2 = obtain(&KernelSpec::Path(k.image.clone()), &k.image).unwrap();
        assert_eq!(k2.release, "6.19.0-dev");
    }

    #[test]
    fn missing_vfio_is_refused_with_the_option_named() {
        let t = tree_with(&BUILT_IN_ALL.replace("CONFIG_VFIO_PCI=y\n", ""));
        let e = obtain(&KernelSpec::Path(t.path().into()), t.path()).unwrap_err();
        let text = e.to_string();
        assert!(
            text.contains("CONFIG_VFIO_PCI (binding the device to vfio-pci"),
            "{text}"
        );
    }

    #[test]
    fn modular_vfio_without_its_modules_is_an_error() {
        let t = tree_with(&BUILT_IN_ALL.replace("CONFIG_VFIO_PCI=y", "CONFIG_VFIO_PCI=m"));
        let e = obtain(&KernelSpec::Path(t.path().into()), t.path()).unwrap_err();
        assert!(e.to_string().contains("vfio_pci"), "{e}");
    }

    #[test]
    fn bare_image_reports_the_iommu_mode_of_its_embedded_config() {
        let t = tempfile::tempdir().unwrap();
        let image = t.path().join("bzImage");
        fs::write(&image, ikconfig::tests::fake_image(BUILT_IN_ALL)).unwrap();
        let k = obtain(&KernelSpec::Path(image.clone()), &image).unwrap();
        assert_eq!(k.config, None);
        assert_eq!(k.iommu, Some(IommuMode::NoIommu));

        let with_intel = format!("{BUILT_IN_ALL}CONFIG_INTEL_IOMMU=y\nCONFIG_VFIO_IOMMU_TYPE1=y\n");
        fs::write(&image, ikconfig::tests::fake_image(&with_intel)).unwrap();
        let k = obtain(&KernelSpec::Path(image.clone()), &image).unwrap();
        assert_eq!(k.iommu, Some(IommuMode::Intel));
    }

    #[test]
    fn not_a_kernel() {
        let t = tempfile::tempdir().unwrap();
        let e = obtain(&KernelSpec::Path(t.path().into()), t.path()).unwrap_err();
        assert!(e.to_string().contains("arch/x86/boot/bzImage"), "{e}");
        let f = t.path().join("junk");
        fs::write(&f, b"junk").unwrap();
        let e = obtain(&KernelSpec::Path(f.clone()), &f).unwrap_err();
        assert!(e.to_string().contains("CONFIG_IKCONFIG"), "{e}");
    }
}
