//! The legacy VFIO group/container interface: opening a device bound to vfio-pci,
//! with type1 IOMMU or (when the kernel offers it) no-IOMMU mode, and reading its
//! regions.

use std::ffi::CString;
use std::fs::{File, OpenOptions};
use std::io;
use std::os::fd::{AsRawFd, FromRawFd};
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};

use nix::errno::Errno;
use vfio_bindings::bindings::vfio as sys;

/// `VFIO_PCI_OFFSET_SHIFT`: vfio-pci places region `i` at file offset `i << 40`.
pub const VFIO_PCI_OFFSET_SHIFT: u32 = 40;
/// Offset of the command register in PCI configuration space.
pub const PCI_COMMAND: u64 = 0x04;
/// Memory space enable bit of the command register.
pub const PCI_COMMAND_MEMORY: u16 = 0x2;

/// The VFIO ioctls. They all use `_IO(VFIO_TYPE, VFIO_BASE + n)` whatever their
/// argument, hence nix's `*_bad` macros with an explicit request code.
mod ioctls {
    use super::sys;
    use nix::{
        ioctl_none_bad, ioctl_readwrite_bad, ioctl_write_int_bad, ioctl_write_ptr_bad,
        request_code_none,
    };

    ioctl_none_bad!(
        get_api_version,
        request_code_none!(sys::VFIO_TYPE, sys::VFIO_BASE)
    );
    ioctl_write_int_bad!(
        check_extension,
        request_code_none!(sys::VFIO_TYPE, sys::VFIO_BASE + 1)
    );
    ioctl_write_int_bad!(
        set_iommu,
        request_code_none!(sys::VFIO_TYPE, sys::VFIO_BASE + 2)
    );
    ioctl_readwrite_bad!(
        group_get_status,
        request_code_none!(sys::VFIO_TYPE, sys::VFIO_BASE + 3),
        sys::vfio_group_status
    );
    ioctl_write_ptr_bad!(
        group_set_container,
        request_code_none!(sys::VFIO_TYPE, sys::VFIO_BASE + 4),
        libc::c_int
    );
    ioctl_write_ptr_bad!(
        group_get_device_fd,
        request_code_none!(sys::VFIO_TYPE, sys::VFIO_BASE + 6),
        libc::c_char
    );
    ioctl_readwrite_bad!(
        device_get_info,
        request_code_none!(sys::VFIO_TYPE, sys::VFIO_BASE + 7),
        sys::vfio_device_info
    );
    ioctl_none_bad!(
        device_reset,
        request_code_none!(sys::VFIO_TYPE, sys::VFIO_BASE + 11)
    );
    ioctl_write_ptr_bad!(
        device_set_irqs,
        request_code_none!(sys::VFIO_TYPE, sys::VFIO_BASE + 10),
        u8
    );
    ioctl_write_ptr_bad!(
        iommu_map_dma,
        request_code_none!(sys::VFIO_TYPE, sys::VFIO_BASE + 13),
        sys::vfio_iommu_type1_dma_map
    );
    ioctl_readwrite_bad!(
        iommu_unmap_dma,
        request_code_none!(sys::VFIO_TYPE, sys::VFIO_BASE + 14),
        sys::vfio_iommu_type1_dma_unmap
    );
    ioctl_readwrite_bad!(
        device_get_region_info,
        request_code_none!(sys::VFIO_TYPE, sys::VFIO_BASE + 8),
        sys::vfio_region_info
    );
}

/// Errors from VFIO.
#[derive(Debug, thiserror::Error)]
pub enum VfioError {
    /// A device node could not be opened.
    #[error("open {path}")]
    Open {
        /// The node.
        path: PathBuf,
        /// The cause.
        #[source]
        source: io::Error,
    },
    /// An ioctl failed.
    #[error("{ioctl} on {what}")]
    Ioctl {
        /// Name of the ioctl.
        ioctl: &'static str,
        /// What it was issued on.
        what: String,
        /// The error.
        #[source]
        source: Errno,
    },
    /// The container speaks another API version.
    #[error("VFIO API version {0}, expected {expected}", expected = sys::VFIO_API_VERSION)]
    ApiVersion(i32),
    /// The container supports none of the IOMMU types the tests can use.
    #[error("the VFIO container supports no usable IOMMU type (tried {0})")]
    NoIommuType(&'static str),
    /// The group has devices not bound to VFIO drivers.
    #[error(
        "IOMMU group {0} is not viable (another device of the group is bound to a host driver)"
    )]
    NotViable(u32),
    /// The device reports a region the tests rely on as absent.
    #[error("device has {have} regions, needs at least {need}")]
    TooFewRegions {
        /// Regions the device has.
        have: u32,
        /// Regions needed.
        need: u32,
    },
    /// A read or write of a region failed or was short.
    #[error("{op} of {len} bytes at {offset:#x} of region {region}")]
    RegionIo {
        /// "read" or "write".
        op: &'static str,
        /// Region index.
        region: u32,
        /// Offset inside the region.
        offset: u64,
        /// Access size.
        len: usize,
        /// The cause.
        #[source]
        source: io::Error,
    },
    /// Memory decode stayed off after setting PCI_COMMAND_MEMORY.
    #[error("PCI_COMMAND reads {0:#06x} after enabling memory decode")]
    MemoryDecode(u16),
}

/// Which IOMMU backend the container uses.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum IommuType {
    /// `VFIO_TYPE1v2_IOMMU`.
    Type1v2,
    /// `VFIO_TYPE1_IOMMU`.
    Type1,
    /// `VFIO_NOIOMMU_IOMMU` (`/dev/vfio/noiommu-N`, unsafe no-IOMMU mode).
    NoIommu,
}

impl IommuType {
    fn raw(self) -> u32 {
        match self {
            IommuType::Type1v2 => sys::VFIO_TYPE1v2_IOMMU,
            IommuType::Type1 => sys::VFIO_TYPE1_IOMMU,
            IommuType::NoIommu => sys::VFIO_NOIOMMU_IOMMU,
        }
    }
}

/// What `VFIO_DEVICE_GET_REGION_INFO` says about one region.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct RegionInfo {
    /// Region index (BARs are 0-5, config space is 7).
    pub index: u32,
    /// `VFIO_REGION_INFO_FLAG_*`.
    pub flags: u32,
    /// Size in bytes (0 for an unused BAR slot).
    pub size: u64,
    /// Offset of the region in the device fd.
    pub offset: u64,
}

impl RegionInfo {
    /// Whether the region may be mmapped.
    pub fn mmappable(&self) -> bool {
        self.flags & sys::VFIO_REGION_INFO_FLAG_MMAP != 0
    }
}

/// An open VFIO device with the container and group that keep it usable.
#[derive(Debug)]
pub struct VfioDevice {
    /// Declared before the group and container so it is closed first.
    device: File,
    _group: File,
    _container: File,
    iommu: IommuType,
    group: u32,
    bdf: String,
    num_regions: u32,
    flags: u32,
}

fn ioctl_err(ioctl: &'static str, what: impl Into<String>) -> impl FnOnce(Errno) -> VfioError {
    let what = what.into();
    move |source| VfioError::Ioctl {
        ioctl,
        what,
        source,
    }
}

fn open_rw(path: &Path) -> Result<File, VfioError> {
    OpenOptions::new()
        .read(true)
        .write(true)
        .open(path)
        .map_err(|source| VfioError::Open {
            path: path.to_owned(),
            source,
        })
}

impl VfioDevice {
    /// Opens device `bdf` of IOMMU group `group` through the nodes under `dev_vfio`
    /// (normally `/dev/vfio`). No-IOMMU mode is used when the kernel created a
    /// `noiommu-N` node for the group, type1 otherwise.
    pub fn open(dev_vfio: &Path, group: u32, bdf: &str) -> Result<Self, VfioError> {
        let noiommu_node = dev_vfio.join(format!("noiommu-{group}"));
        let (group_path, noiommu) = if noiommu_node.exists() {
            (noiommu_node, true)
        } else {
            (dev_vfio.join(group.to_string()), false)
        };
        let container_path = dev_vfio.join("vfio");
        let container = open_rw(&container_path)?;
        let cname = container_path.display().to_string();
        // SAFETY: the ioctl takes no argument; the fd is open.
        let version = unsafe { ioctls::get_api_version(container.as_raw_fd()) }
            .map_err(ioctl_err("VFIO_GET_API_VERSION", &cname))?;
        if version != sys::VFIO_API_VERSION as i32 {
            return Err(VfioError::ApiVersion(version));
        }
        let iommu = choose_iommu(&container, &cname, noiommu)?;

        let group_file = open_rw(&group_path)?;
        let gname = group_path.display().to_string();
        let mut status = sys::vfio_group_status {
            argsz: std::mem::size_of::<sys::vfio_group_status>() as u32,
            flags: 0,
        };
        // SAFETY: `status` is a valid vfio_group_status with argsz set; the kernel
        // writes at most argsz bytes into it.
        unsafe { ioctls::group_get_status(group_file.as_raw_fd(), &mut status) }
            .map_err(ioctl_err("VFIO_GROUP_GET_STATUS", &gname))?;
        if status.flags & sys::VFIO_GROUP_FLAGS_VIABLE == 0 {
            return Err(VfioError::NotViable(group));
        }
        let container_fd: libc::c_int = container.as_raw_fd();
        // SAFETY: the argument points to an int holding an open container fd.
        unsafe { ioctls::group_set_container(group_file.as_raw_fd(), &container_fd) }
            .map_err(ioctl_err("VFIO_GROUP_SET_CONTAINER", &gname))?;
        // SAFETY: the argument is an IOMMU type constant passed by value.
        unsafe { ioctls::set_iommu(container.as_raw_fd(), iommu.raw() as libc::c_int) }
            .map_err(ioctl_err("VFIO_SET_IOMMU", &cname))?;

        let name = CString::new(bdf).map_err(|_| VfioError::Ioctl {
            ioctl: "VFIO_GROUP_GET_DEVICE_FD",
            what: format!("device name {bdf:?}"),
            source: Errno::EINVAL,
        })?;
        // SAFETY: the argument is a NUL-terminated string that outlives the call.
        let fd =
            unsafe { ioctls::group_get_device_fd(group_file.as_raw_fd(), name.as_ptr()) }.map_err(
                ioctl_err("VFIO_GROUP_GET_DEVICE_FD", format!("{gname} for {bdf}")),
            )?;
        // SAFETY: the ioctl returned a new fd that nothing else owns.
        let device = unsafe { File::from_raw_fd(fd) };

        let mut info = sys::vfio_device_info {
            argsz: std::mem::size_of::<sys::vfio_device_info>() as u32,
            ..Default::default()
        };
        // SAFETY: `info` is a valid vfio_device_info with argsz set.
        unsafe { ioctls::device_get_info(device.as_raw_fd(), &mut info) }
            .map_err(ioctl_err("VFIO_DEVICE_GET_INFO", bdf))?;
        let need = sys::VFIO_PCI_CONFIG_REGION_INDEX + 1;
        if info.num_regions < need {
            return Err(VfioError::TooFewRegions {
                have: info.num_regions,
                need,
            });
        }
        Ok(VfioDevice {
            device,
            _group: group_file,
            _container: container,
            iommu,
            group,
            bdf: bdf.to_owned(),
            num_regions: info.num_regions,
            flags: info.flags,
        })
    }

    /// The device fd (for mmap and region access).
    pub fn file(&self) -> &File {
        &self.device
    }

    /// The IOMMU backend in use.
    pub fn iommu(&self) -> IommuType {
        self.iommu
    }

    /// The IOMMU group number.
    pub fn group(&self) -> u32 {
        self.group
    }

    /// The device's PCI address.
    pub fn bdf(&self) -> &str {
        &self.bdf
    }

    /// Number of regions the device reports.
    pub fn num_regions(&self) -> u32 {
        self.num_regions
    }

    /// `VFIO_DEVICE_FLAGS_*` of the device.
    pub fn flags(&self) -> u32 {
        self.flags
    }

    /// Whether the device supports `VFIO_DEVICE_RESET`.
    pub fn can_reset(&self) -> bool {
        self.flags & sys::VFIO_DEVICE_FLAGS_RESET != 0
    }

    /// Resets the device (`VFIO_DEVICE_RESET`); vfio-pci zaps every BAR mapping.
    pub fn reset(&self) -> Result<(), VfioError> {
        // SAFETY: the ioctl takes no argument; the fd is an open device.
        unsafe { ioctls::device_reset(self.device.as_raw_fd()) }
            .map(drop)
            .map_err(ioctl_err("VFIO_DEVICE_RESET", &self.bdf))
    }

    /// `VFIO_DEVICE_SET_IRQS` for vectors `start..start + eventfds.len()` of
    /// `index` with `flags` (`DATA_EVENTFD` with descriptors, `DATA_NONE`
    /// with `count` and no descriptors).
    pub fn set_irqs(
        &self,
        index: u32,
        flags: u32,
        start: u32,
        count: u32,
        eventfds: &[std::os::fd::RawFd],
    ) -> Result<(), VfioError> {
        let head = std::mem::size_of::<sys::vfio_irq_set>();
        let mut buf = vec![0u8; head + 4 * eventfds.len()];
        let fields = [
            (head + 4 * eventfds.len()) as u32,
            flags,
            index,
            start,
            count,
        ];
        for (i, v) in fields.iter().enumerate() {
            buf[4 * i..4 * i + 4].copy_from_slice(&v.to_ne_bytes());
        }
        for (i, fd) in eventfds.iter().enumerate() {
            buf[head + 4 * i..head + 4 * i + 4].copy_from_slice(&fd.to_ne_bytes());
        }
        // SAFETY: `buf` holds a vfio_irq_set header followed by `argsz - head`
        // bytes of data, as argsz says; the kernel reads at most argsz bytes.
        unsafe { ioctls::device_set_irqs(self.device.as_raw_fd(), buf.as_ptr()) }
            .map(drop)
            .map_err(ioctl_err("VFIO_DEVICE_SET_IRQS", &self.bdf))
    }

    /// `VFIO_IOMMU_MAP_DMA`: maps `len` bytes of this process at `vaddr` to
    /// `iova` for the device, readable and writable (type1 only).
    ///
    /// The caller keeps the memory mapped until [`VfioDevice::unmap_dma`]:
    /// the kernel pins the pages, so unmapping them early only leaks them.
    pub fn map_dma(&self, vaddr: u64, iova: u64, len: u64) -> Result<(), VfioError> {
        let map = sys::vfio_iommu_type1_dma_map {
            argsz: std::mem::size_of::<sys::vfio_iommu_type1_dma_map>() as u32,
            flags: sys::VFIO_DMA_MAP_FLAG_READ | sys::VFIO_DMA_MAP_FLAG_WRITE,
            vaddr,
            iova,
            size: len,
        };
        // SAFETY: `map` is a complete vfio_iommu_type1_dma_map; the kernel
        // only reads it and pins the pages it names (an invalid range fails).
        unsafe { ioctls::iommu_map_dma(self._container.as_raw_fd(), &map) }
            .map(drop)
            .map_err(ioctl_err("VFIO_IOMMU_MAP_DMA", format!("IOVA {iova:#x}")))
    }

    /// `VFIO_IOMMU_UNMAP_DMA` of what [`VfioDevice::map_dma`] mapped at `iova`.
    pub fn unmap_dma(&self, iova: u64, len: u64) -> Result<(), VfioError> {
        let mut unmap = sys::vfio_iommu_type1_dma_unmap {
            argsz: std::mem::size_of::<sys::vfio_iommu_type1_dma_unmap>() as u32,
            flags: 0,
            iova,
            size: len,
            ..Default::default()
        };
        // SAFETY: `unmap` is a complete vfio_iommu_type1_dma_unmap with argsz set.
        unsafe { ioctls::iommu_unmap_dma(self._container.as_raw_fd(), &mut unmap) }
            .map(drop)
            .map_err(ioctl_err("VFIO_IOMMU_UNMAP_DMA", format!("IOVA {iova:#x}")))
    }

    /// Reads the command register as vfio-pci virtualises it.
    pub fn command(&self) -> Result<u16, VfioError> {
        let config = self.region_info(sys::VFIO_PCI_CONFIG_REGION_INDEX)?;
        let mut cmd = [0u8; 2];
        self.read(&config, PCI_COMMAND, &mut cmd)?;
        Ok(u16::from_le_bytes(cmd))
    }

    /// Writes the command register (clearing PCI_COMMAND_MEMORY zaps the BAR
    /// mappings; faults then get SIGBUS until it is set again).
    pub fn set_command(&self, value: u16) -> Result<(), VfioError> {
        let config = self.region_info(sys::VFIO_PCI_CONFIG_REGION_INDEX)?;
        self.write(&config, PCI_COMMAND, &value.to_le_bytes())
    }

    /// Information about region `index`.
    pub fn region_info(&self, index: u32) -> Result<RegionInfo, VfioError> {
        let mut info = sys::vfio_region_info {
            argsz: std::mem::size_of::<sys::vfio_region_info>() as u32,
            index,
            ..Default::default()
        };
        // SAFETY: `info` is a valid vfio_region_info with argsz and index set; the
        // kernel fills at most argsz bytes (capabilities beyond it are not copied).
        unsafe { ioctls::device_get_region_info(self.device.as_raw_fd(), &mut info) }.map_err(
            ioctl_err(
                "VFIO_DEVICE_GET_REGION_INFO",
                format!("{} region {index}", self.bdf),
            ),
        )?;
        Ok(RegionInfo {
            index,
            flags: info.flags,
            size: info.size,
            offset: info.offset,
        })
    }

    /// Reads `buf.len()` bytes at `offset` of `region` (one access per call of the
    /// kernel's region handler, so registers see accesses of this size).
    pub fn read(&self, region: &RegionInfo, offset: u64, buf: &mut [u8]) -> Result<(), VfioError> {
        self.device
            .read_exact_at(buf, region.offset + offset)
            .map_err(|source| VfioError::RegionIo {
                op: "read",
                region: region.index,
                offset,
                len: buf.len(),
                source,
            })
    }

    /// Writes `buf` at `offset` of `region`.
    pub fn write(&self, region: &RegionInfo, offset: u64, buf: &[u8]) -> Result<(), VfioError> {
        self.device
            .write_all_at(buf, region.offset + offset)
            .map_err(|source| VfioError::RegionIo {
                op: "write",
                region: region.index,
                offset,
                len: buf.len(),
                source,
            })
    }

    /// Makes sure memory decode is on (PCI_COMMAND_MEMORY in the command register as
    /// vfio-pci virtualises it: mmap faults check that copy). Returns whether it had
    /// to be turned on.
    pub fn enable_memory_decode(&self) -> Result<bool, VfioError> {
        let config = self.region_info(sys::VFIO_PCI_CONFIG_REGION_INDEX)?;
        let mut cmd = [0u8; 2];
        self.read(&config, PCI_COMMAND, &mut cmd)?;
        let before = u16::from_le_bytes(cmd);
        if before & PCI_COMMAND_MEMORY != 0 {
            return Ok(false);
        }
        self.write(
            &config,
            PCI_COMMAND,
            &(before | PCI_COMMAND_MEMORY).to_le_bytes(),
        )?;
        self.read(&config, PCI_COMMAND, &mut cmd)?;
        let after = u16::from_le_bytes(cmd);
        if after & PCI_COMMAND_MEMORY == 0 {
            return Err(VfioError::MemoryDecode(after));
        }
        Ok(true)
    }
}

/// Picks the IOMMU type: no-IOMMU when the group node says so, else type1v2 or type1.
fn choose_iommu(container: &File, cname: &str, noiommu: bool) -> Result<IommuType, VfioError> {
    let candidates: &[IommuType] = if noiommu {
        &[IommuType::NoIommu]
    } else {
        &[IommuType::Type1v2, IommuType::Type1]
    };
    for &t in candidates {
        // SAFETY: the argument is an extension constant passed by value.
        let supported =
            unsafe { ioctls::check_extension(container.as_raw_fd(), t.raw() as libc::c_int) }
                .map_err(ioctl_err("VFIO_CHECK_EXTENSION", cname))?;
        if supported > 0 {
            return Ok(t);
        }
    }
    Err(VfioError::NoIommuType(if noiommu {
        "VFIO_NOIOMMU_IOMMU"
    } else {
        "VFIO_TYPE1v2_IOMMU, VFIO_TYPE1_IOMMU"
    }))
}
