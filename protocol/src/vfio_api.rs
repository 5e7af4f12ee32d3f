//! The interface the guest tests open the device through: the value of the
//! guest's `--vfio-api` that the runner passes, and the name results carry.

use std::fmt;
use std::str::FromStr;

/// How the device is opened.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub enum VfioApi {
    /// `/dev/vfio/<group>` attached to the container `/dev/vfio/vfio`.
    #[default]
    Group,
    /// `/dev/vfio/devices/vfioN` bound to `/dev/iommu` and attached to an IOAS
    /// (CONFIG_IOMMUFD, CONFIG_VFIO_DEVICE_CDEV).
    Cdev,
}

impl VfioApi {
    /// Every interface, in the order a run of both takes them.
    pub const ALL: [VfioApi; 2] = [VfioApi::Group, VfioApi::Cdev];

    /// The flag value and the name in results (`group`, `cdev`).
    pub fn name(self) -> &'static str {
        match self {
            VfioApi::Group => "group",
            VfioApi::Cdev => "cdev",
        }
    }
}

impl fmt::Display for VfioApi {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// A `--vfio-api` value that names no interface.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct UnknownVfioApi(pub String);

impl fmt::Display for UnknownVfioApi {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "unknown VFIO interface {:?} (group or cdev)", self.0)
    }
}

impl std::error::Error for UnknownVfioApi {}

impl FromStr for VfioApi {
    type Err = UnknownVfioApi;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Self::ALL
            .into_iter()
            .find(|a| a.name() == s)
            .ok_or_else(|| UnknownVfioApi(s.to_string()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_round_trip() {
        for api in VfioApi::ALL {
            assert_eq!(api.name().parse::<VfioApi>(), Ok(api));
        }
        assert!("iommufd"
            .parse::<VfioApi>()
            .unwrap_err()
            .to_string()
            .contains("group or cdev"));
    }
}
