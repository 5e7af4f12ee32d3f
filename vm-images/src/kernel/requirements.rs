//! What a guest kernel's configuration must offer for bigbar, and why.
//!
//! Checked before booting, so a developer's kernel that cannot run the suite is
//! refused with one message naming every missing option, instead of a guest that
//! hangs or a test that fails obscurely.
//!
//! An option is required only when nothing can run, or no verdict can be trusted,
//! without it. Everything else the guest tests use (madvise, debugfs, tracefs,
//! kprobe events, ptdump, memfd, the THP sysfs knobs, ...) is detected in the guest
//! and the tests that need it are skipped with the reason; the `minimal` kernel
//! (`vm-images/config/minimal.config`) has nothing but these options, so that
//! claim is tested.

use std::fmt;
use std::path::Path;

use super::kconfig::{self, Options, Value};
use crate::error::{Error, IoContext, Result};

/// How the guest gets a VFIO container.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum IommuMode {
    /// An emulated Intel IOMMU (`intel_iommu=on`) and the type1 backend.
    Intel,
    /// `vfio.enable_unsafe_noiommu_mode=1`, no IOMMU at all.
    NoIommu,
}

/// One requirement the configuration does not meet.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Missing {
    /// The option(s), e.g. `VFIO_PCI` or `INTEL_IOMMU or VFIO_NOIOMMU`.
    pub option: String,
    /// What the guest needs it for.
    pub needed_for: &'static str,
    /// What the configuration says.
    pub found: String,
}

impl fmt::Display for Missing {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "CONFIG_{} ({}; found: {})",
            self.option, self.needed_for, self.found
        )
    }
}

/// Options that must be built in (`y`).
pub const BUILT_IN: [(&str, &str); 13] = [
    ("64BIT", "the static x86_64 test binary"),
    ("PCI", "the emulated device is a PCI device"),
    (
        "SERIAL_8250_CONSOLE",
        "the kernel console on the first serial port",
    ),
    (
        "PRINTK",
        "the kernel log on the console: the runner finds oopses there and judges each test by it",
    ),
    ("BLK_DEV_INITRD", "booting the initramfs"),
    ("DEVTMPFS", "/dev in the initramfs"),
    ("BINFMT_ELF", "running the test binary"),
    ("BINFMT_SCRIPT", "running the init script"),
    ("PROC_FS", "/proc for the tests"),
    ("SYSFS", "binding the device through sysfs"),
    ("FUTEX", "threads in the test binary"),
    (
        "KALLSYMS",
        "/proc/kallsyms tells whether vfio-pci has huge faults, which every count depends on",
    ),
    (
        "TRANSPARENT_HUGEPAGE",
        "huge faults are gated by the THP policy",
    ),
];

/// Options that may be built in or modules (`y` or `m`).
pub const BUILT_IN_OR_MODULE: [(&str, &str); 2] = [
    ("VFIO", "the VFIO framework the tests use"),
    ("VFIO_PCI", "binding the device to vfio-pci"),
];

/// Options that must be built in where the kernel has them: older kernels (6.1)
/// lack the option because the interface was unconditional, so an option absent
/// from the configuration is fine, but one that is not set is not.
pub const BUILT_IN_WHERE_PRESENT: [(&str, &str); 2] = [
    ("VFIO_GROUP", "the tests open /dev/vfio/<group>"),
    (
        "VFIO_CONTAINER",
        "the tests set the IOMMU through /dev/vfio/vfio",
    ),
];

fn value(config: &Options, name: &str) -> Option<String> {
    match config.get(name) {
        Some(Value::Set(v)) => Some(v.clone()),
        _ => None,
    }
}

fn found(config: &Options, name: &str) -> String {
    value(config, name).unwrap_or_else(|| "not set".into())
}

/// Everything `config` lacks, each with the reason (empty when all is there).
pub fn missing(config: &Options) -> Vec<Missing> {
    let mut out = Vec::new();
    for (name, why) in BUILT_IN {
        if value(config, name).as_deref() != Some("y") {
            out.push(Missing {
                option: name.into(),
                needed_for: why,
                found: found(config, name),
            });
        }
    }
    for (name, why) in BUILT_IN_WHERE_PRESENT {
        if config.contains_key(name) && value(config, name).as_deref() != Some("y") {
            out.push(Missing {
                option: name.into(),
                needed_for: why,
                found: found(config, name),
            });
        }
    }
    for (name, why) in BUILT_IN_OR_MODULE {
        if !matches!(value(config, name).as_deref(), Some("y" | "m")) {
            out.push(Missing {
                option: name.into(),
                needed_for: why,
                found: found(config, name),
            });
        }
    }
    if iommu_mode(config).is_none() {
        out.push(Missing {
            option: "INTEL_IOMMU (with VFIO_IOMMU_TYPE1) or VFIO_NOIOMMU".into(),
            needed_for: "a VFIO container needs an IOMMU or no-IOMMU mode",
            found: format!(
                "INTEL_IOMMU {}, VFIO_IOMMU_TYPE1 {}, VFIO_NOIOMMU {}",
                found(config, "INTEL_IOMMU"),
                found(config, "VFIO_IOMMU_TYPE1"),
                found(config, "VFIO_NOIOMMU")
            ),
        });
    }
    out
}

/// Checks `config` of `kernel` (named in the error): the IOMMU mode to boot it
/// with, or [`Error::KernelUnsuitable`] listing every missing option and why.
pub fn check(config: &Options, kernel: &Path) -> Result<IommuMode> {
    let missing = missing(config);
    if !missing.is_empty() {
        return Err(Error::KernelUnsuitable {
            kernel: kernel.to_path_buf(),
            missing: missing
                .iter()
                .map(|m| format!("  {m}"))
                .collect::<Vec<_>>()
                .join("\n"),
        });
    }
    // `missing` is empty, so one of the two modes is there.
    Ok(iommu_mode(config).unwrap_or(IommuMode::Intel))
}

/// [`check`] for a configuration file.
pub fn check_file(config: &Path) -> Result<IommuMode> {
    let text = std::fs::read_to_string(config).at("reading", config)?;
    check(&kconfig::parse(&text, config)?, config)
}

/// The IOMMU mode the configuration offers: the Intel IOMMU where it can (as on
/// Debian's kernels), else no-IOMMU mode, else none.
pub fn iommu_mode(config: &Options) -> Option<IommuMode> {
    let intel = value(config, "INTEL_IOMMU").as_deref() == Some("y")
        && matches!(
            value(config, "VFIO_IOMMU_TYPE1").as_deref(),
            Some("y" | "m")
        );
    if intel {
        Some(IommuMode::Intel)
    } else if value(config, "VFIO_NOIOMMU").as_deref() == Some("y") {
        Some(IommuMode::NoIommu)
    } else {
        None
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::kernel::kconfig::parse;
    use std::path::Path;

    fn complete() -> String {
        let mut s: String = BUILT_IN
            .iter()
            .map(|(n, _)| format!("CONFIG_{n}=y\n"))
            .collect();
        s.push_str(
            "CONFIG_VFIO=y\nCONFIG_VFIO_PCI=m\nCONFIG_INTEL_IOMMU=y\nCONFIG_VFIO_IOMMU_TYPE1=m\n\
             CONFIG_VFIO_GROUP=y\nCONFIG_VFIO_CONTAINER=y\n",
        );
        s
    }

    fn options(text: &str) -> Options {
        parse(text, Path::new("test.config")).unwrap()
    }

    #[test]
    fn a_complete_config_needs_nothing() {
        let c = options(&complete());
        assert!(missing(&c).is_empty());
        assert_eq!(iommu_mode(&c), Some(IommuMode::Intel));
    }

    #[test]
    fn each_missing_option_is_named_with_its_reason() {
        let text = complete()
            .replace("CONFIG_VFIO_PCI=m\n", "# CONFIG_VFIO_PCI is not set\n")
            .replace("CONFIG_TRANSPARENT_HUGEPAGE=y\n", "");
        let m = missing(&options(&text));
        let names: Vec<&str> = m.iter().map(|m| m.option.as_str()).collect();
        assert_eq!(names, ["TRANSPARENT_HUGEPAGE", "VFIO_PCI"]);
        assert_eq!(
            m[1].to_string(),
            "CONFIG_VFIO_PCI (binding the device to vfio-pci; found: not set)"
        );
    }

    /// Every required option, removed alone, is named in the refusal with what it
    /// is needed for, and nothing else is.
    #[rstest::rstest]
    #[case::printk("CONFIG_PRINTK=y\n", "PRINTK", "the kernel log on the console")]
    #[case::kallsyms("CONFIG_KALLSYMS=y\n", "KALLSYMS", "/proc/kallsyms")]
    #[case::futex("CONFIG_FUTEX=y\n", "FUTEX", "threads")]
    #[case::thp(
        "CONFIG_TRANSPARENT_HUGEPAGE=y\n",
        "TRANSPARENT_HUGEPAGE",
        "THP policy"
    )]
    #[case::vfio_pci("CONFIG_VFIO_PCI=m\n", "VFIO_PCI", "binding the device")]
    #[case::group_unset("CONFIG_VFIO_GROUP=y\n", "VFIO_GROUP", "/dev/vfio/<group>")]
    fn check_names_the_missing_option(#[case] line: &str, #[case] option: &str, #[case] why: &str) {
        let name = line.split('=').next().unwrap();
        let text = complete().replace(line, &format!("# {name} is not set\n"));
        let err = check(&options(&text), Path::new("/k/bzImage"))
            .unwrap_err()
            .to_string();
        assert!(err.contains("/k/bzImage"), "{err}");
        assert!(
            err.contains(&format!("CONFIG_{option} (")) && err.contains(why),
            "{err}"
        );
        assert_eq!(err.matches("CONFIG_").count(), 1, "{err}");
    }

    #[test]
    fn options_older_kernels_lack_may_be_absent() {
        let text = complete()
            .replace("CONFIG_VFIO_GROUP=y\n", "")
            .replace("CONFIG_VFIO_CONTAINER=y\n", "");
        assert!(missing(&options(&text)).is_empty());
    }

    /// The `minimal` kernel's fragment asks for every required option; beyond
    /// tinyconfig it asks only for them and the options they depend on, so a
    /// test that passes there needs nothing the check does not require.
    #[test]
    fn the_minimal_fragment_is_tinyconfig_plus_the_requirements() {
        let path = crate::kernel::build::minimal_fragment();
        let text = std::fs::read_to_string(&path).unwrap();
        let fragment = options(&text);
        assert!(missing(&fragment).is_empty(), "{:?}", missing(&fragment));
        let tinyconfig = [
            "EXPERT",
            "CC_OPTIMIZE_FOR_SIZE",
            "KERNEL_XZ",
            "SLUB_TINY",
            "UNWINDER_GUESS",
        ];
        // SERIAL_8250_CONSOLE needs both; allnoconfig does not turn them on.
        let dependencies = ["TTY", "SERIAL_8250"];
        let required: Vec<&str> = BUILT_IN
            .iter()
            .chain(&BUILT_IN_OR_MODULE)
            .chain(&BUILT_IN_WHERE_PRESENT)
            .map(|(n, _)| *n)
            .chain(["VFIO_NOIOMMU"])
            .collect();
        for name in fragment.keys() {
            let n = name.as_str();
            assert!(
                tinyconfig.contains(&n) || dependencies.contains(&n) || required.contains(&n),
                "minimal.config asks for CONFIG_{n}, which the check does not require"
            );
        }
    }

    #[test]
    fn noiommu_mode_when_there_is_no_intel_iommu() {
        let text = complete().replace("CONFIG_INTEL_IOMMU=y\n", "") + "CONFIG_VFIO_NOIOMMU=y\n";
        let c = options(&text);
        assert!(missing(&c).is_empty());
        assert_eq!(iommu_mode(&c), Some(IommuMode::NoIommu));
        let none = options(&complete().replace("CONFIG_INTEL_IOMMU=y\n", ""));
        assert!(missing(&none)[0].option.contains("VFIO_NOIOMMU"));
    }
}
