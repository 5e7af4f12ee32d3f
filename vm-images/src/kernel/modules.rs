//! Finding a kernel's module files and the order to load a set of modules in.

use std::collections::{BTreeMap, BTreeSet};
use std::fs;
use std::path::{Path, PathBuf};

use super::modinfo::{self, module_name_of_file};
use crate::error::{Error, IoContext, Result};

/// The module files of one kernel release, by module name.
#[derive(Debug, Default)]
pub struct ModuleIndex {
    files: BTreeMap<String, PathBuf>,
    builtin: BTreeSet<String>,
}

/// What a module name stands for in a kernel.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Found {
    /// Compiled into the kernel image: nothing to load.
    Builtin,
    /// A loadable module file with its dependencies.
    File {
        /// The module file.
        path: PathBuf,
        /// Names of the modules it depends on.
        depends: Vec<String>,
    },
}

impl ModuleIndex {
    /// Indexes `modules_dir` (a `lib/modules/<release>` directory): every module file
    /// below `kernel/` and the names listed in `modules.builtin`.
    pub fn scan(modules_dir: &Path) -> Result<Self> {
        let mut index = Self::default();
        let kernel_dir = modules_dir.join("kernel");
        for entry in walkdir::WalkDir::new(&kernel_dir) {
            let entry = entry
                .map_err(std::io::Error::from)
                .at("walking", &kernel_dir)?;
            if !entry.file_type().is_file() {
                continue;
            }
            if let Some(name) = module_name_of_file(&entry.file_name().to_string_lossy()) {
                index.files.insert(name, entry.into_path());
            }
        }
        let builtin = modules_dir.join("modules.builtin");
        if builtin.is_file() {
            let text = fs::read_to_string(&builtin).at("reading", &builtin)?;
            index.builtin = text
                .lines()
                .filter_map(|l| module_name_of_file(l.rsplit('/').next().unwrap_or(l)))
                .collect();
        }
        Ok(index)
    }

    /// How many module files were found.
    pub fn len(&self) -> usize {
        self.files.len()
    }

    /// Whether no module file was found.
    pub fn is_empty(&self) -> bool {
        self.files.is_empty()
    }

    /// Looks a module up, reading its dependencies from its `.modinfo`.
    pub fn find(&self, name: &str) -> Result<Option<Found>> {
        let name = modinfo::normalise(name);
        if let Some(path) = self.files.get(&name) {
            let info = modinfo::read(path)?;
            return Ok(Some(Found::File {
                path: path.clone(),
                depends: info.depends,
            }));
        }
        Ok(self.builtin.contains(&name).then_some(Found::Builtin))
    }
}

/// The module files to load, dependencies first, so that `roots` end up loaded.
///
/// `find` returns what a module name stands for, or `None` if the kernel has no such
/// module. Each module appears once, after everything it depends on.
pub fn load_order(
    roots: &[&str],
    release: &str,
    mut find: impl FnMut(&str) -> Result<Option<Found>>,
) -> Result<Vec<PathBuf>> {
    let mut state = Walk {
        done: BTreeSet::new(),
        stack: Vec::new(),
        order: Vec::new(),
    };
    for root in roots {
        state.visit(&modinfo::normalise(root), "the guest", release, &mut find)?;
    }
    Ok(state.order)
}

/// Depth-first post-order walk over module dependencies.
struct Walk {
    done: BTreeSet<String>,
    stack: Vec<String>,
    order: Vec<PathBuf>,
}

impl Walk {
    fn visit(
        &mut self,
        name: &str,
        needed_by: &str,
        release: &str,
        find: &mut impl FnMut(&str) -> Result<Option<Found>>,
    ) -> Result<()> {
        if self.done.contains(name) {
            return Ok(());
        }
        if let Some(pos) = self.stack.iter().position(|n| n == name) {
            let mut cycle = self.stack[pos..].to_vec();
            cycle.push(name.to_owned());
            return Err(Error::ModuleCycle {
                cycle: cycle.join(" -> "),
            });
        }
        match find(name)? {
            None => {
                return Err(Error::ModuleNotFound {
                    module: name.to_owned(),
                    needed_by: needed_by.to_owned(),
                    release: release.to_owned(),
                })
            }
            Some(Found::Builtin) => {}
            Some(Found::File { path, depends }) => {
                self.stack.push(name.to_owned());
                for dep in &depends {
                    self.visit(&modinfo::normalise(dep), name, release, find)?;
                }
                self.stack.pop();
                self.order.push(path);
            }
        }
        self.done.insert(name.to_owned());
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn graph(
        edges: &[(&str, &[&str])],
        builtin: &[&str],
    ) -> impl FnMut(&str) -> Result<Option<Found>> {
        let edges: BTreeMap<String, Vec<String>> = edges
            .iter()
            .map(|(n, d)| (n.to_string(), d.iter().map(|s| s.to_string()).collect()))
            .collect();
        let builtin: BTreeSet<String> = builtin.iter().map(|s| s.to_string()).collect();
        move |name| {
            Ok(if builtin.contains(name) {
                Some(Found::Builtin)
            } else {
                edges.get(name).map(|deps| Found::File {
                    path: PathBuf::from(format!("{name}.ko.xz")),
                    depends: deps.clone(),
                })
            })
        }
    }

    fn names(paths: Vec<PathBuf>) -> Vec<String> {
        paths
            .into_iter()
            .map(|p| p.to_string_lossy().trim_end_matches(".ko.xz").to_owned())
            .collect()
    }

    #[test]
    fn vfio_order_is_dependencies_first() {
        let find = graph(
            &[
                ("vfio_pci", &["vfio_pci_core", "vfio", "irqbypass"]),
                ("vfio_pci_core", &["vfio", "irqbypass"]),
                ("vfio", &[]),
                ("irqbypass", &[]),
                ("vfio_iommu_type1", &["vfio"]),
            ],
            &[],
        );
        let order = load_order(&["vfio-pci", "vfio_iommu_type1"], "r", find).unwrap();
        assert_eq!(
            names(order),
            [
                "vfio",
                "irqbypass",
                "vfio_pci_core",
                "vfio_pci",
                "vfio_iommu_type1"
            ]
        );
    }

    #[test]
    fn builtin_modules_are_skipped() {
        let find = graph(&[("vfio_pci", &["vfio"])], &["vfio"]);
        assert_eq!(
            names(load_order(&["vfio_pci"], "r", find).unwrap()),
            ["vfio_pci"]
        );
    }

    #[test]
    fn missing_dependency_names_who_needs_it() {
        let find = graph(&[("vfio_pci", &["vfio_pci_core"])], &[]);
        let err = load_order(&["vfio_pci"], "7.2", find)
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("`vfio_pci_core` (needed by vfio_pci)") && err.contains("7.2"),
            "{err}"
        );
    }

    #[test]
    fn cycles_are_reported() {
        let find = graph(&[("a", &["b"]), ("b", &["c"]), ("c", &["a"])], &[]);
        let err = load_order(&["a"], "r", find).unwrap_err().to_string();
        assert!(err.contains("a -> b -> c -> a"), "{err}");
    }

    #[test]
    fn scan_indexes_files_and_builtins() {
        let tmp = tempfile::tempdir().unwrap();
        let vfio = tmp.path().join("kernel/drivers/vfio");
        fs::create_dir_all(vfio.join("pci")).unwrap();
        let module = modinfo::tests::fake_module(b"depends=vfio\0name=vfio_pci\0");
        fs::write(vfio.join("pci/vfio-pci.ko"), module).unwrap();
        fs::write(
            tmp.path().join("modules.builtin"),
            "kernel/drivers/vfio/vfio.ko\nkernel/virt/lib/irqbypass.ko\n",
        )
        .unwrap();
        let index = ModuleIndex::scan(tmp.path()).unwrap();
        assert_eq!(index.len(), 1);
        let order = load_order(&["vfio_pci"], "r", |n| index.find(n)).unwrap();
        assert_eq!(order, [vfio.join("pci/vfio-pci.ko")]);
        assert_eq!(index.find("irqbypass").unwrap(), Some(Found::Builtin));
        assert_eq!(index.find("nope").unwrap(), None);
    }
}
