//! What every test starts from: the device bound to vfio-pci and opened, its BARs
//! (VFIO region and physical placement), the expected layout, the kernel's
//! capabilities and the run's seed.

use std::fs;
use std::path::{Path, PathBuf};

use protocol::layout::BarLayout;
use protocol::regs;

use crate::device::{Regs, RegsError};
use crate::kernel::{KernelCaps, KernelError};
use crate::pci::{PciDevice, PciError, Resource};
use crate::vfio::{VfioApi, VfioDevice, VfioError};

/// Number of BAR slots in a type 0 header.
const BAR_SLOTS: u32 = 6;

/// Errors while building the fixture.
#[derive(Debug, thiserror::Error)]
pub enum FixtureError {
    /// sysfs work failed.
    #[error(transparent)]
    Pci(#[from] PciError),
    /// VFIO work failed.
    #[error(transparent)]
    Vfio(#[from] VfioError),
    /// Kernel capability detection failed.
    #[error(transparent)]
    Kernel(#[from] KernelError),
    /// sysfs lists fewer resources than BAR slots.
    #[error("{path} lists {have} resources, expected at least {BAR_SLOTS}")]
    Resources {
        /// The resource file.
        path: PathBuf,
        /// How many lines it has.
        have: usize,
    },
}

/// Where to find things and what to expect.
#[derive(Clone, Debug)]
pub struct Options {
    /// Root of the file system whose `/sys`, `/proc` and `/dev/vfio` are used.
    pub root: PathBuf,
    /// The device's address; found by vendor/device ID when `None`.
    pub bdf: Option<String>,
    /// The BAR layout the device must have; `None` only reports what it has.
    pub expected: Option<BarLayout>,
    /// Seed for tags and random choices.
    pub seed: u64,
    /// Make the placement tests (A1–A5) mandatory: fail instead of XFAIL on a
    /// kernel without offset-aware placement.
    pub require_placement: bool,
    /// Also run the tests that may oops the kernel (splits and moves of a
    /// PUD-mapped block that are not 2 MiB aligned).
    pub risky: bool,
    /// The interface the device is opened through.
    pub vfio_api: VfioApi,
}

/// One implemented BAR.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Bar {
    /// BAR index (VFIO region index).
    pub index: u32,
    /// The VFIO region.
    pub region: crate::vfio::RegionInfo,
    /// Its sysfs resource (physical placement and type).
    pub resource: Resource,
}

impl Bar {
    /// Size in bytes.
    pub fn size(&self) -> u64 {
        self.region.size
    }

    /// Physical base address (`Bp`).
    pub fn phys(&self) -> u64 {
        self.resource.start
    }
}

/// The opened device and everything tests need to know about it.
#[derive(Debug)]
pub struct Fixture {
    /// The device in sysfs.
    pub pci: PciDevice,
    /// The driver it had before the run (`None` if unbound).
    pub previous_driver: Option<String>,
    /// Whether it is bigbar's emulated device (vendor/device ID), so the register
    /// interface exists.
    pub is_bigbar: bool,
    /// The opened VFIO device.
    pub dev: VfioDevice,
    /// Whether memory decode had to be switched on.
    pub enabled_memory: bool,
    /// The implemented BARs (non-zero region size), by index.
    pub bars: Vec<Bar>,
    /// The layout asked for, if any.
    pub expected: Option<BarLayout>,
    /// Kernel capabilities, detected after vfio-pci was bound.
    pub caps: KernelCaps,
    /// The run's seed.
    pub seed: u64,
    /// See [`Options::require_placement`].
    pub require_placement: bool,
    /// See [`Options::risky`].
    pub risky: bool,
}

fn read_id(path: &Path) -> Option<u16> {
    let text = fs::read_to_string(path).ok()?;
    u16::from_str_radix(text.trim().trim_start_matches("0x"), 16).ok()
}

/// The device bound to vfio-pci but not opened: what external programs that
/// open it themselves (kselftest programs) start from.
#[derive(Debug)]
pub struct Bound {
    /// The device in sysfs.
    pub pci: PciDevice,
    /// The driver it had before (`None` if unbound).
    pub previous_driver: Option<String>,
}

impl Bound {
    /// Finds the device (by `--bdf`, else by bigbar's IDs) and binds it to vfio-pci.
    pub fn bind(opts: &Options) -> Result<Self, FixtureError> {
        let sys = opts.root.join("sys");
        let pci = match &opts.bdf {
            Some(bdf) => PciDevice::new(&sys, bdf),
            None => PciDevice::find(&sys, regs::VENDOR_ID, regs::DEVICE_ID)?,
        };
        let previous_driver = pci.bind_vfio()?;
        Ok(Bound {
            pci,
            previous_driver,
        })
    }
}

impl Fixture {
    /// Binds and opens the device, reads its BARs and the kernel capabilities.
    pub fn open(opts: &Options) -> Result<Self, FixtureError> {
        let Bound {
            pci,
            previous_driver,
        } = Bound::bind(opts)?;
        let is_bigbar = read_id(&pci.dir().join("vendor")) == Some(regs::VENDOR_ID)
            && read_id(&pci.dir().join("device")) == Some(regs::DEVICE_ID);
        let group = pci.iommu_group()?;
        let dev = VfioDevice::open_with(opts.vfio_api, &opts.root, group, pci.bdf())?;
        let enabled_memory = dev.enable_memory_decode()?;
        let resources = pci.resources()?;
        if resources.len() < BAR_SLOTS as usize {
            return Err(FixtureError::Resources {
                path: pci.dir().join("resource"),
                have: resources.len(),
            });
        }
        let mut bars = Vec::new();
        for index in 0..BAR_SLOTS {
            let region = dev.region_info(index)?;
            if region.size > 0 {
                bars.push(Bar {
                    index,
                    region,
                    resource: resources[index as usize],
                });
            }
        }
        let caps = KernelCaps::detect(&opts.root)?;
        Ok(Fixture {
            pci,
            previous_driver,
            is_bigbar,
            dev,
            enabled_memory,
            bars,
            expected: opts.expected.clone(),
            caps,
            seed: opts.seed,
            require_placement: opts.require_placement,
            risky: opts.risky,
        })
    }

    /// The register interface (bigbar's device only).
    pub fn regs(&self) -> Result<Regs<'_>, RegsError> {
        Regs::new(&self.dev)
    }

    /// The implemented BAR `index`, if any.
    pub fn bar(&self, index: u32) -> Option<&Bar> {
        self.bars.iter().find(|b| b.index == index)
    }

    /// The mmap-able BARs, smallest first (bigbar's register BAR excluded: it is
    /// trapped, not memory).
    pub fn mappable_bars(&self) -> Vec<&Bar> {
        let mut bars: Vec<&Bar> = self
            .bars
            .iter()
            .filter(|b| b.region.mmappable() && !(self.is_bigbar && b.index == regs::REGS_BAR))
            .collect();
        bars.sort_by_key(|b| b.size());
        bars
    }

    /// The smallest mmap-able BAR of at least `size` bytes (cheapest to test).
    pub fn smallest_bar_of(&self, size: u64) -> Option<&Bar> {
        self.mappable_bars().into_iter().find(|b| b.size() >= size)
    }

    /// The largest mmap-able BAR (the first of equals).
    pub fn largest_bar(&self) -> Option<&Bar> {
        self.mappable_bars()
            .into_iter()
            .fold(None, |best: Option<&Bar>, b| match best {
                Some(x) if x.size() >= b.size() => Some(x),
                _ => Some(b),
            })
    }

    /// A one-paragraph description for the KTAP log.
    pub fn describe(&self) -> String {
        let mut s = format!(
            "device {} (IOMMU group {}, {:?} through the {} interface), previous driver {:?}, \
             memory decode {}\n\
             kernel {}: huge pfnmap {}, THP {:?}{}\n",
            self.pci.bdf(),
            self.dev.group(),
            self.dev.iommu(),
            self.dev.api().name(),
            self.previous_driver,
            if self.enabled_memory {
                "enabled by us"
            } else {
                "already on"
            },
            self.caps.release,
            if self.caps.huge_pfnmap() { "yes" } else { "no" },
            self.caps.thp,
            if self.caps.thp_disabled_by_prctl {
                ", THP disabled by prctl"
            } else {
                ""
            },
        );
        for b in &self.bars {
            s.push_str(&format!(
                "BAR {}: size {:#x} at phys {:#x}, region flags {:#x} offset {:#x}{}{}\n",
                b.index,
                b.size(),
                b.phys(),
                b.region.flags,
                b.region.offset,
                if b.resource.is_64bit() {
                    ", 64-bit"
                } else {
                    ""
                },
                if b.resource.prefetchable() {
                    ", prefetchable"
                } else {
                    ""
                },
            ));
        }
        s.push_str(&format!("seed {}", self.seed));
        s
    }
}
