//! Debian suite names.

use std::fmt;
use std::str::FromStr;

use crate::error::{Error, Result};

/// A Debian suite (codename or alias), e.g. `sid`, `trixie`, `bookworm-backports`.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Suite(String);

impl Suite {
    /// Suites bigbar boots kernels from.
    pub const KERNEL_SUITES: [&'static str; 4] = ["sid", "forky", "trixie", "bookworm"];

    /// A suite from its name: lower-case ASCII letters, digits and '-'.
    pub fn new(name: &str) -> Result<Self> {
        let valid = !name.is_empty()
            && !name.starts_with('-')
            && name
                .chars()
                .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-');
        if !valid {
            return Err(Error::InvalidInput {
                what: "Debian suite",
                value: name.to_owned(),
                reason: "expected a codename such as sid, trixie or bookworm".into(),
            });
        }
        Ok(Self(name.to_owned()))
    }

    /// Debian unstable.
    pub fn sid() -> Self {
        Self("sid".into())
    }

    /// The name.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for Suite {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl FromStr for Suite {
    type Err = Error;

    fn from_str(s: &str) -> Result<Self> {
        Self::new(s)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[rstest::rstest]
    #[case("sid", true)]
    #[case("bookworm-backports", true)]
    #[case("", false)]
    #[case("Sid", false)]
    #[case("sid main", false)]
    #[case("../x", false)]
    #[case("-o", false)]
    fn suite_names(#[case] name: &str, #[case] ok: bool) {
        assert_eq!(Suite::new(name).is_ok(), ok, "{name:?}");
    }
}
