//! `--suite`: bigbar's own catalogue, the kernel's VFIO selftests, or both.
//!
//! The VFIO selftests are built from the source of the kernel under test,
//! which bigbar knows for Debian sid's kernel and its own builds (`stock`,
//! `reference`, `fixed` are built from the same Debian sid `linux-source`),
//! and for a local kernel given as its build directory (its own tree).

use anyhow::{bail, Context, Result};
use std::path::Path;
use vm_images::kernel::patches::Series;
use vm_images::kernel::{build, source, KernelSpec};
use vm_images::kselftests::user_tree::{self, UserTree};
use vm_images::kselftests::{self, Collection, TreeSuite, VFIO_COLLECTION};
use vm_images::Fetcher;

/// Which tests a run offers.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, clap::ValueEnum)]
pub enum Suite {
    /// bigbar's catalogue (and `--reproducers`).
    #[default]
    Bigbar,
    /// The kernel's VFIO selftests (tools/testing/selftests/vfio).
    VfioSelftests,
    /// Both.
    All,
}

/// 2 MiB hugetlb pages the guest reserves for the selftests' hugetlb variants
/// (one page per case; a few spare for a case that leaks one).
pub const HUGEPAGES_2M: u32 = 16;
/// 1 GiB hugetlb pages the guest reserves (the `_hugetlb_1gb` variants map one
/// at a time).
pub const HUGEPAGES_1G: u32 = 1;
/// Guest memory the selftests need when the pages are reserved: the pages
/// (1 GiB + 32 MiB) and room for the kernel and the tests' own buffers
/// (vfio_pci_driver_test maps a 1 GiB anonymous region).
pub const SELFTESTS_MEMORY_MIB: u32 = 3584;

impl Suite {
    /// Whether the run builds and offers the kernel's VFIO selftests.
    pub fn vfio_selftests(self) -> bool {
        matches!(self, Self::VfioSelftests | Self::All)
    }

    /// Whether the guest test `name` belongs to this suite.
    pub fn includes(self, name: &str) -> bool {
        let vfio = name
            .strip_prefix(VFIO_COLLECTION)
            .is_some_and(|r| r.starts_with('.'));
        match self {
            Self::Bigbar => !vfio,
            Self::VfioSelftests => vfio,
            Self::All => true,
        }
    }
}

/// Whether the guest reserves hugetlb pages: the selftests run and the
/// kernel's configuration (`config`) has HUGETLBFS.
fn reserves_hugepages(suite: Suite, config: Option<&str>) -> bool {
    let hugetlbfs = config.is_some_and(|c| c.lines().any(|l| l.trim() == "CONFIG_HUGETLBFS=y"));
    suite.vfio_selftests() && hugetlbfs
}

/// The kernel command line the suite adds: reserved 1 GiB and 2 MiB pages
/// (see [`reserves_hugepages`]).
pub fn kernel_args(suite: Suite, config: Option<&str>) -> Option<String> {
    reserves_hugepages(suite, config).then(|| {
        format!("hugepagesz=1G hugepages={HUGEPAGES_1G} hugepagesz=2M hugepages={HUGEPAGES_2M}")
    })
}

/// The guest memory of a run: `requested` (`--memory`), raised to
/// [`SELFTESTS_MEMORY_MIB`] when the guest reserves hugetlb pages.
pub fn memory_mib(suite: Suite, config: Option<&str>, requested: u32) -> u32 {
    if reserves_hugepages(suite, config) {
        requested.max(SELFTESTS_MEMORY_MIB)
    } else {
        requested
    }
}

/// Why bigbar has no source tree for `spec`'s selftests, if it has none. A
/// local kernel has one when it is a build directory (or its bzImage) whose
/// source tree has the selftests.
pub fn unsupported_kernel(spec: &KernelSpec) -> Option<String> {
    match spec {
        KernelSpec::Debian(suite) if *suite == source::source_suite() => None,
        KernelSpec::Stock | KernelSpec::Reference | KernelSpec::Fixed | KernelSpec::Minimal => None,
        KernelSpec::Debian(suite) => Some(format!(
            "--suite vfio-selftests: no kernel source for debian:{} is known \
             (bigbar has Debian sid's linux-source only; selftests from another \
             version's tree would not match the kernel)",
            suite
        )),
        KernelSpec::Path(p) => user_tree(p)
            .err()
            .map(|e| format!("--suite vfio-selftests: {e}")),
    }
}

/// The source tree of the local kernel at `path`, holding the VFIO selftests.
fn user_tree(path: &Path) -> vm_images::Result<UserTree> {
    user_tree::locate(path, TreeSuite::vfio().subdir)
}

/// Builds the kernel's VFIO selftests from the source of `spec` with the
/// project's `kernel/patches/selftests` series applied: Debian sid's
/// linux-source (every patch must apply), or a local kernel's own tree (the
/// patches that apply to it).
pub fn build_vfio_selftests(fetcher: &Fetcher<'_>, spec: &KernelSpec) -> Result<Collection> {
    if let Some(why) = unsupported_kernel(spec) {
        bail!(why);
    }
    let dir = build::selftests_patches();
    let series = Series::read(&dir).with_context(|| format!("reading {}", dir.display()))?;
    let suite = TreeSuite::vfio();
    if let KernelSpec::Path(p) = spec {
        let tree = user_tree(p)?;
        // Which patches a developer's tree took or left out is for them to
        // see: the build's progress goes to stderr. No network is used.
        let say = |m: &str| eprintln!("bigbar:   {m}");
        let fetcher = Fetcher::new(fetcher.cache())
            .refresh(fetcher.refresh_policy())
            .progress(&say);
        return kselftests::build_from_user_tree(&fetcher, &suite, &tree, &series)
            .context("building the kernel's VFIO selftests");
    }
    let (package, version) = source::resolve_version(fetcher)?;
    let tree =
        source::obtain(fetcher, &package, &version).context("obtaining the kernel source")?;
    kselftests::build_from_tree(fetcher, &suite, &tree, &series)
        .context("building the kernel's VFIO selftests")
}

/// The kernel configuration at `path`, if there is one to read.
pub fn read_config(path: Option<&Path>) -> Option<String> {
    std::fs::read_to_string(path?).ok()
}

#[cfg(test)]
mod tests {
    use super::*;
    use rstest::rstest;

    #[rstest]
    #[case(Suite::Bigbar, "setup.bind_vfio", true)]
    #[case(Suite::Bigbar, "repro.x_test.f.t", true)]
    #[case(
        Suite::Bigbar,
        "vfio-selftests.vfio_pci_device_test.vfio_pci_device_test.reset",
        false
    )]
    #[case(Suite::VfioSelftests, "vfio-selftests.vfio_pci_sriov_uapi_test", true)]
    #[case(Suite::VfioSelftests, "vfio-selftests-other.x", false)]
    #[case(Suite::VfioSelftests, "setup.bind_vfio", false)]
    #[case(Suite::All, "setup.bind_vfio", true)]
    #[case(Suite::All, "vfio-selftests.a.b", true)]
    fn membership(#[case] suite: Suite, #[case] name: &str, #[case] want: bool) {
        assert_eq!(suite.includes(name), want);
    }

    #[rstest]
    #[case(
        Suite::VfioSelftests,
        Some("CONFIG_HUGETLBFS=y\n"),
        Some("hugepagesz=1G hugepages=1 hugepagesz=2M hugepages=16")
    )]
    #[case(
        Suite::All,
        Some("X=y\nCONFIG_HUGETLBFS=y\n"),
        Some("hugepagesz=1G hugepages=1 hugepagesz=2M hugepages=16")
    )]
    #[case(Suite::VfioSelftests, Some("# CONFIG_HUGETLBFS is not set\n"), None)]
    #[case(Suite::VfioSelftests, None, None)]
    #[case(Suite::Bigbar, Some("CONFIG_HUGETLBFS=y\n"), None)]
    fn hugepages(#[case] suite: Suite, #[case] config: Option<&str>, #[case] want: Option<&str>) {
        assert_eq!(kernel_args(suite, config).as_deref(), want);
    }

    #[rstest]
    #[case(Suite::VfioSelftests, Some("CONFIG_HUGETLBFS=y\n"), 1024, 3584)]
    #[case(Suite::VfioSelftests, Some("CONFIG_HUGETLBFS=y\n"), 8192, 8192)]
    #[case(Suite::VfioSelftests, None, 1024, 1024)]
    #[case(Suite::Bigbar, Some("CONFIG_HUGETLBFS=y\n"), 1024, 1024)]
    fn memory_for_the_pages(
        #[case] suite: Suite,
        #[case] config: Option<&str>,
        #[case] requested: u32,
        #[case] want: u32,
    ) {
        assert_eq!(memory_mib(suite, config, requested), want);
    }

    #[rstest]
    #[case("debian:sid", true)]
    #[case("stock", true)]
    #[case("reference", true)]
    #[case("fixed", true)]
    #[case("debian:trixie", false)]
    fn kernels_with_a_known_tree(#[case] spec: &str, #[case] known: bool) {
        let spec: KernelSpec = spec.parse().unwrap();
        assert_eq!(unsupported_kernel(&spec).is_none(), known, "{spec:?}");
    }

    /// A local kernel: its `make O=` build directory leads to the tree; a bare
    /// image is refused saying to pass the build directory.
    #[test]
    fn a_local_kernel_needs_its_build_directory() {
        let t = tempfile::tempdir().unwrap();
        let src = t.path().join("linux");
        std::fs::create_dir_all(src.join("tools/testing/selftests/vfio")).unwrap();
        std::fs::write(src.join("Makefile"), "VERSION = 7\nPATCHLEVEL = 3\n").unwrap();
        let build = t.path().join("build");
        std::fs::create_dir_all(&build).unwrap();
        std::os::unix::fs::symlink(&src, build.join("source")).unwrap();
        assert_eq!(unsupported_kernel(&KernelSpec::Path(build)), None);

        let image = t.path().join("vmlinuz");
        std::fs::write(&image, b"image").unwrap();
        let why = unsupported_kernel(&KernelSpec::Path(image)).unwrap();
        assert!(why.starts_with("--suite vfio-selftests: "), "{why}");
        assert!(why.contains("pass the kernel's build directory"), "{why}");
    }
}
