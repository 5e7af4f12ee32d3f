//! What kernel to boot, as the user writes it.

use std::fmt;
use std::path::PathBuf;
use std::str::FromStr;

use serde::{Deserialize, Serialize};

use crate::debian::Suite;
use crate::error::{Error, Result};

/// A kernel to boot: `debian:<suite>` (e.g. `debian:sid`), `stock`, `reference`,
/// `fixed`, `minimal`, or a path.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub enum KernelSpec {
    /// The current `linux-image-amd64` of a Debian suite.
    Debian(Suite),
    /// Built by bigbar from Debian sid's `linux-source` with the minimal configuration
    /// fragment, unchanged: the control for [`KernelSpec::Reference`].
    Stock,
    /// Like [`KernelSpec::Stock`] plus the patch series in `kernel/patches/reference`,
    /// which implements the proposed mmap placement (`get_mapping_order`).
    Reference,
    /// Like [`KernelSpec::Reference`] plus the fixes of the kernel findings in
    /// `kernel/patches/fixes`: the kernel on which the whole catalogue passes.
    Fixed,
    /// Debian sid's `linux-source` configured like `make tinyconfig` plus only what
    /// the runner's configuration check requires (`vm-images/config/minimal.config`):
    /// the kernel on which every optional facility is missing, so that each test
    /// that needs one must skip with the reason.
    Minimal,
    /// A kernel built locally (a bzImage or build tree).
    Path(PathBuf),
}

impl FromStr for KernelSpec {
    type Err = Error;

    fn from_str(s: &str) -> Result<Self> {
        let invalid = |reason: String| Error::InvalidInput {
            what: "kernel spec",
            value: s.to_owned(),
            reason,
        };
        if let Some(suite) = s.strip_prefix("debian:") {
            if !Suite::KERNEL_SUITES.contains(&suite) {
                return Err(invalid(format!(
                    "unknown Debian suite `{suite}`; expected one of {}",
                    Suite::KERNEL_SUITES.join(", ")
                )));
            }
            return Ok(Self::Debian(Suite::new(suite)?));
        }
        match s {
            "stock" => return Ok(Self::Stock),
            "reference" => return Ok(Self::Reference),
            "fixed" => return Ok(Self::Fixed),
            "minimal" => return Ok(Self::Minimal),
            _ => {}
        }
        if let Some(path) = s.strip_prefix("path:") {
            return Ok(Self::Path(path.into()));
        }
        if s.starts_with('/') || s.starts_with("./") || s.starts_with("../") {
            return Ok(Self::Path(s.into()));
        }
        Err(invalid(
            "expected `debian:<suite>` (e.g. debian:sid), `stock`, `reference`, `fixed`, `minimal` or a path to a kernel"
                .into(),
        ))
    }
}

impl fmt::Display for KernelSpec {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Debian(suite) => write!(f, "debian:{suite}"),
            Self::Stock => f.write_str("stock"),
            Self::Reference => f.write_str("reference"),
            Self::Fixed => f.write_str("fixed"),
            Self::Minimal => f.write_str("minimal"),
            Self::Path(path) => write!(f, "path:{}", path.display()),
        }
    }
}

impl TryFrom<String> for KernelSpec {
    type Error = Error;

    fn try_from(s: String) -> Result<Self> {
        s.parse()
    }
}

impl From<KernelSpec> for String {
    fn from(spec: KernelSpec) -> String {
        spec.to_string()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[rstest::rstest]
    #[case("debian:sid", "debian:sid")]
    #[case("debian:trixie", "debian:trixie")]
    #[case("debian:bookworm", "debian:bookworm")]
    #[case("stock", "stock")]
    #[case("reference", "reference")]
    #[case("fixed", "fixed")]
    #[case("minimal", "minimal")]
    #[case("/boot/vmlinuz", "path:/boot/vmlinuz")]
    #[case("path:build/arch/x86/boot/bzImage", "path:build/arch/x86/boot/bzImage")]
    fn parses_and_displays(#[case] text: &str, #[case] shown: &str) {
        assert_eq!(text.parse::<KernelSpec>().unwrap().to_string(), shown);
    }

    #[rstest::rstest]
    #[case("debian:", "unknown Debian suite")]
    #[case("debian:sdi", "unknown Debian suite `sdi`")]
    #[case("sid", "expected `debian:<suite>`")]
    #[case("", "expected `debian:<suite>`")]
    #[case("Stock", "`stock`, `reference`, `fixed`, `minimal`")]
    #[case("reference:x", "`stock`, `reference`, `fixed`, `minimal`")]
    fn rejects(#[case] text: &str, #[case] message: &str) {
        let err = text.parse::<KernelSpec>().unwrap_err().to_string();
        assert!(err.contains(message), "{err}");
    }
}
