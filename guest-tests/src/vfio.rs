//! Opening a device bound to vfio-pci and reading its regions, through either
//! of the kernel's two interfaces ([`VfioApi`]): the legacy group/container
//! one, with type1 IOMMU or (when the kernel offers it) no-IOMMU mode, or the
//! device's cdev bound to an iommufd IOAS. Everything after opening (regions,
//! interrupts, reset, mmap of the device fd) is the same ioctl on either.

use std::ffi::CString;
use std::fs::{File, OpenOptions};
use std::io;
use std::os::fd::{AsRawFd, FromRawFd};
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};

use iommufd_bindings::iommufd as iofd;
use iommufd_ioctls::{IommuFd, IommufdError, IommufdIoas};
use nix::errno::Errno;
use vfio_bindings::bindings::vfio as sys;

pub use protocol::vfio_api::VfioApi;

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
    ioctl_readwrite_bad!(
        device_bind_iommufd,
        request_code_none!(sys::VFIO_TYPE, sys::VFIO_BASE + 18),
        sys::vfio_device_bind_iommufd
    );
    ioctl_readwrite_bad!(
        device_attach_iommufd_pt,
        request_code_none!(sys::VFIO_TYPE, sys::VFIO_BASE + 19),
        sys::vfio_device_attach_iommufd_pt
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
    /// The cdev interface was asked for where the kernel does not offer it.
    #[error("--vfio-api cdev: no {missing} in this kernel ({option})")]
    NoCdev {
        /// The node or sysfs entry that is missing.
        missing: String,
        /// The kernel option that provides it.
        option: &'static str,
    },
    /// An iommufd ioctl failed.
    #[error("{what}")]
    Iommufd {
        /// What was done.
        what: String,
        /// The error.
        #[source]
        source: IommufdError,
    },
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
    /// An IOAS of `/dev/iommu` (the cdev interface).
    Iommufd,
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

/// What keeps an opened device usable and maps memory for its DMA.
enum Backend {
    /// The group attached to a container with a type1 or no-IOMMU backend.
    Container {
        _group: File,
        container: File,
        iommu: IommuType,
    },
    /// The cdev bound to an iommufd and attached to one of its IOASes. The
    /// IOAS is declared first so it is destroyed before the iommufd closes.
    Iommufd {
        ioas: IommufdIoas,
        iommufd: std::sync::Arc<IommuFd>,
    },
}

impl std::fmt::Debug for Backend {
    // iommufd-ioctls' types do not implement Debug.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Backend::Container { iommu, .. } => write!(f, "Container({iommu:?})"),
            Backend::Iommufd { ioas, .. } => write!(f, "Iommufd(ioas {})", ioas.id()),
        }
    }
}

/// An open VFIO device with what keeps it usable (group and container, or
/// iommufd and IOAS).
#[derive(Debug)]
pub struct VfioDevice {
    /// Declared before the backend so it is closed first.
    device: File,
    backend: Backend,
    api: VfioApi,
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
        let (iommu, raw_iommu) = choose_iommu(&container, &cname, noiommu)?;

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
        unsafe { ioctls::set_iommu(container.as_raw_fd(), raw_iommu as libc::c_int) }
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
        let backend = Backend::Container {
            _group: group_file,
            container,
            iommu,
        };
        Self::finish(device, backend, VfioApi::Group, group, bdf)
    }

    /// Opens device `bdf` (IOMMU group `group`) through its cdev: the node
    /// `dev/vfio/devices/vfioN` under `root` that sysfs names for it, bound to
    /// a new iommufd (`dev/iommu`) and attached to a new IOAS of it.
    pub fn open_cdev(root: &Path, group: u32, bdf: &str) -> Result<Self, VfioError> {
        let iommu_node = root.join("dev/iommu");
        if !iommu_node.exists() {
            return Err(VfioError::NoCdev {
                missing: iommu_node.display().to_string(),
                option: "CONFIG_IOMMUFD",
            });
        }
        let cdev = cdev_node(root, bdf)?;
        let device = open_rw(&cdev)?;
        let iommufd = std::sync::Arc::new(IommuFd::new_from_fd(open_rw(&iommu_node)?));
        let dname = cdev.display().to_string();
        let mut bind = sys::vfio_device_bind_iommufd {
            argsz: std::mem::size_of::<sys::vfio_device_bind_iommufd>() as u32,
            flags: 0,
            iommufd: iommufd.as_raw_fd(),
            out_devid: 0,
            token_uuid_ptr: 0,
        };
        // SAFETY: `bind` is a complete vfio_device_bind_iommufd with argsz set
        // and an open iommufd; the kernel writes only out_devid.
        unsafe { ioctls::device_bind_iommufd(device.as_raw_fd(), &mut bind) }
            .map_err(ioctl_err("VFIO_DEVICE_BIND_IOMMUFD", &dname))?;
        let ioas = IommufdIoas::new(iommufd.clone()).map_err(|source| VfioError::Iommufd {
            what: format!("IOMMU_IOAS_ALLOC on {}", iommu_node.display()),
            source,
        })?;
        let mut attach = sys::vfio_device_attach_iommufd_pt {
            argsz: std::mem::size_of::<sys::vfio_device_attach_iommufd_pt>() as u32,
            flags: 0,
            pt_id: ioas.id(),
            pasid: 0,
        };
        // SAFETY: `attach` is a complete vfio_device_attach_iommufd_pt with
        // argsz set; the kernel may rewrite pt_id (to the hwpt it chose).
        unsafe { ioctls::device_attach_iommufd_pt(device.as_raw_fd(), &mut attach) }
            .map_err(ioctl_err("VFIO_DEVICE_ATTACH_IOMMUFD_PT", &dname))?;
        let backend = Backend::Iommufd { ioas, iommufd };
        Self::finish(device, backend, VfioApi::Cdev, group, bdf)
    }

    /// Opens the device through `api`: [`VfioDevice::open`] with the nodes
    /// under `root/dev/vfio`, or [`VfioDevice::open_cdev`].
    pub fn open_with(api: VfioApi, root: &Path, group: u32, bdf: &str) -> Result<Self, VfioError> {
        match api {
            VfioApi::Group => Self::open(&root.join("dev/vfio"), group, bdf),
            VfioApi::Cdev => Self::open_cdev(root, group, bdf),
        }
    }

    /// Reads the device's info and checks it has the regions the tests use.
    fn finish(
        device: File,
        backend: Backend,
        api: VfioApi,
        group: u32,
        bdf: &str,
    ) -> Result<Self, VfioError> {
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
            backend,
            api,
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
        match &self.backend {
            Backend::Container { iommu, .. } => *iommu,
            Backend::Iommufd { .. } => IommuType::Iommufd,
        }
    }

    /// The interface the device was opened through.
    pub fn api(&self) -> VfioApi {
        self.api
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

    /// Maps `len` bytes of this process at `vaddr` to `iova` for the device,
    /// readable and writable: `VFIO_IOMMU_MAP_DMA` on the container, or
    /// `IOMMU_IOAS_MAP` at a fixed IOVA of the IOAS.
    ///
    /// The caller keeps the memory mapped until [`VfioDevice::unmap_dma`]:
    /// the kernel pins the pages, so unmapping them early only leaks them.
    pub fn map_dma(&self, vaddr: u64, iova: u64, len: u64) -> Result<(), VfioError> {
        match &self.backend {
            Backend::Container { container, .. } => {
                let map = sys::vfio_iommu_type1_dma_map {
                    argsz: std::mem::size_of::<sys::vfio_iommu_type1_dma_map>() as u32,
                    flags: sys::VFIO_DMA_MAP_FLAG_READ | sys::VFIO_DMA_MAP_FLAG_WRITE,
                    vaddr,
                    iova,
                    size: len,
                };
                // SAFETY: `map` is a complete vfio_iommu_type1_dma_map; the kernel
                // only reads it and pins the pages it names (an invalid range fails).
                unsafe { ioctls::iommu_map_dma(container.as_raw_fd(), &map) }
                    .map(drop)
                    .map_err(ioctl_err("VFIO_IOMMU_MAP_DMA", format!("IOVA {iova:#x}")))
            }
            Backend::Iommufd { ioas, iommufd } => {
                let map = iofd::iommu_ioas_map {
                    size: std::mem::size_of::<iofd::iommu_ioas_map>() as u32,
                    flags: iofd::iommufd_ioas_map_flags_IOMMU_IOAS_MAP_FIXED_IOVA
                        | iofd::iommufd_ioas_map_flags_IOMMU_IOAS_MAP_READABLE
                        | iofd::iommufd_ioas_map_flags_IOMMU_IOAS_MAP_WRITEABLE,
                    ioas_id: ioas.id(),
                    __reserved: 0,
                    user_va: vaddr,
                    length: len,
                    iova,
                };
                iommufd
                    .map_iommu_ioas(&map)
                    .map_err(|source| VfioError::Iommufd {
                        what: format!("IOMMU_IOAS_MAP at IOVA {iova:#x}"),
                        source,
                    })
            }
        }
    }

    /// Unmaps what [`VfioDevice::map_dma`] mapped at `iova`.
    pub fn unmap_dma(&self, iova: u64, len: u64) -> Result<(), VfioError> {
        match &self.backend {
            Backend::Container { container, .. } => {
                let mut unmap = sys::vfio_iommu_type1_dma_unmap {
                    argsz: std::mem::size_of::<sys::vfio_iommu_type1_dma_unmap>() as u32,
                    flags: 0,
                    iova,
                    size: len,
                    ..Default::default()
                };
                // SAFETY: `unmap` is a complete vfio_iommu_type1_dma_unmap with argsz set.
                unsafe { ioctls::iommu_unmap_dma(container.as_raw_fd(), &mut unmap) }
                    .map(drop)
                    .map_err(ioctl_err("VFIO_IOMMU_UNMAP_DMA", format!("IOVA {iova:#x}")))
            }
            Backend::Iommufd { ioas, .. } => {
                ioas.unmap(iova, len).map_err(|source| VfioError::Iommufd {
                    what: format!("IOMMU_IOAS_UNMAP at IOVA {iova:#x}"),
                    source,
                })
            }
        }
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

/// Picks the IOMMU type (and its VFIO constant): no-IOMMU when the group node
/// says so, else type1v2 or type1.
fn choose_iommu(
    container: &File,
    cname: &str,
    noiommu: bool,
) -> Result<(IommuType, u32), VfioError> {
    let candidates: &[(IommuType, u32)] = if noiommu {
        &[(IommuType::NoIommu, sys::VFIO_NOIOMMU_IOMMU)]
    } else {
        &[
            (IommuType::Type1v2, sys::VFIO_TYPE1v2_IOMMU),
            (IommuType::Type1, sys::VFIO_TYPE1_IOMMU),
        ]
    };
    for &(t, raw) in candidates {
        // SAFETY: the argument is an extension constant passed by value.
        let supported =
            unsafe { ioctls::check_extension(container.as_raw_fd(), raw as libc::c_int) }
                .map_err(ioctl_err("VFIO_CHECK_EXTENSION", cname))?;
        if supported > 0 {
            return Ok((t, raw));
        }
    }
    Err(VfioError::NoIommuType(if noiommu {
        "VFIO_NOIOMMU_IOMMU"
    } else {
        "VFIO_TYPE1v2_IOMMU, VFIO_TYPE1_IOMMU"
    }))
}

/// The device's cdev under `root`: `dev/vfio/devices/<name>` for the one entry
/// of its sysfs `vfio-dev/` directory.
fn cdev_node(root: &Path, bdf: &str) -> Result<PathBuf, VfioError> {
    let dir = root.join(format!("sys/bus/pci/devices/{bdf}/vfio-dev"));
    let name = std::fs::read_dir(&dir)
        .ok()
        .and_then(|entries| entries.flatten().next())
        .map(|e| e.file_name())
        .ok_or_else(|| VfioError::NoCdev {
            missing: dir.display().to_string(),
            option: "CONFIG_VFIO_DEVICE_CDEV",
        })?;
    let node = root.join("dev/vfio/devices").join(name);
    if !node.exists() {
        return Err(VfioError::NoCdev {
            missing: node.display().to_string(),
            option: "CONFIG_VFIO_DEVICE_CDEV",
        });
    }
    Ok(node)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_cdev_is_found_through_sysfs() {
        let t = tempfile::tempdir().unwrap();
        let r = t.path();
        let bdf = "0000:00:03.0";
        std::fs::create_dir_all(r.join(format!("sys/bus/pci/devices/{bdf}/vfio-dev/vfio0")))
            .unwrap();
        std::fs::create_dir_all(r.join("dev/vfio/devices")).unwrap();
        std::fs::write(r.join("dev/vfio/devices/vfio0"), "").unwrap();
        assert_eq!(cdev_node(r, bdf).unwrap(), r.join("dev/vfio/devices/vfio0"));
    }

    #[test]
    fn no_cdev_names_the_option() {
        let t = tempfile::tempdir().unwrap();
        let err = cdev_node(t.path(), "0000:00:03.0").unwrap_err().to_string();
        assert!(
            err.contains("vfio-dev") && err.contains("CONFIG_VFIO_DEVICE_CDEV"),
            "{err}"
        );
        let err = VfioDevice::open_cdev(t.path(), 0, "0000:00:03.0")
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("dev/iommu") && err.contains("CONFIG_IOMMUFD"),
            "{err}"
        );
    }
}
