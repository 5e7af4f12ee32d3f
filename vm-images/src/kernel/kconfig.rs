//! Kernel configuration files: the fragment bigbar applies and the `.config` a build
//! produced, and the check that the second honours the first.

use std::collections::BTreeMap;
use std::fmt;
use std::path::Path;

use crate::error::{Error, Result};

/// The value of one option: what `.config` says, or that it is not set.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Value {
    /// `CONFIG_X=...` (the text after `=`, e.g. `y`, `m`, `"str"`, `42`).
    Set(String),
    /// `# CONFIG_X is not set`.
    NotSet,
}

impl fmt::Display for Value {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Set(v) => f.write_str(v),
            Self::NotSet => f.write_str("not set"),
        }
    }
}

/// Options and their values, by name without the `CONFIG_` prefix.
pub type Options = BTreeMap<String, Value>;

/// Parses a Kconfig file (a fragment or a `.config`): `CONFIG_X=v` and
/// `# CONFIG_X is not set` lines; other comments and blank lines are skipped.
/// `origin` names the file in errors.
pub fn parse(text: &str, origin: &Path) -> Result<Options> {
    let mut options = Options::new();
    for (n, raw) in text.lines().enumerate() {
        let line = raw.trim();
        let bad = |why: &str| Error::Parse {
            what: format!("kernel configuration {} line {}", origin.display(), n + 1),
            detail: format!("{why}: `{raw}`"),
        };
        if line.is_empty() {
            continue;
        }
        if let Some(comment) = line.strip_prefix('#') {
            if let Some(name) = comment
                .trim()
                .strip_suffix(" is not set")
                .and_then(|n| n.strip_prefix("CONFIG_"))
            {
                options.insert(checked_name(name).map_err(bad)?, Value::NotSet);
            }
            continue;
        }
        let (name, value) = line
            .strip_prefix("CONFIG_")
            .and_then(|l| l.split_once('='))
            .ok_or_else(|| bad("expected `CONFIG_NAME=value` or `# CONFIG_NAME is not set`"))?;
        if value.is_empty() {
            return Err(bad("empty value"));
        }
        options.insert(
            checked_name(name).map_err(bad)?,
            Value::Set(value.to_owned()),
        );
    }
    Ok(options)
}

fn checked_name(name: &str) -> std::result::Result<String, &'static str> {
    let ok = !name.is_empty() && name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_');
    // Mostly upper case, but real names have lower case too (SCSI_DC395x).
    ok.then(|| name.to_owned())
        .ok_or("option names use letters, digits and _")
}

/// One option whose value in `.config` differs from what the fragment asks.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Mismatch {
    /// The option, without `CONFIG_`.
    pub name: String,
    /// What the fragment asks.
    pub wanted: Value,
    /// What `.config` holds (`NotSet` also when the option is absent).
    pub got: Value,
}

impl fmt::Display for Mismatch {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "CONFIG_{} wanted {} got {}",
            self.name, self.wanted, self.got
        )
    }
}

/// The options of `fragment` that `config` does not hold with the same value (an
/// option absent from `config` counts as not set).
pub fn mismatches(fragment: &Options, config: &Options) -> Vec<Mismatch> {
    fragment
        .iter()
        .filter_map(|(name, wanted)| {
            let got = config.get(name).cloned().unwrap_or(Value::NotSet);
            (got != *wanted).then(|| Mismatch {
                name: name.clone(),
                wanted: wanted.clone(),
                got,
            })
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parsed(text: &str) -> Options {
        parse(text, Path::new("t.config")).unwrap()
    }

    #[test]
    fn parses_values_and_not_set() {
        let o = parsed(
            "# comment\n\nCONFIG_A=y\n  CONFIG_B=\"x y\"\n# CONFIG_C is not set\nCONFIG_D=0x10\n",
        );
        assert_eq!(o["A"], Value::Set("y".into()));
        assert_eq!(o["B"], Value::Set("\"x y\"".into()));
        assert_eq!(o["C"], Value::NotSet);
        assert_eq!(o["D"], Value::Set("0x10".into()));
        assert_eq!(o.len(), 4);
    }

    #[rstest::rstest]
    #[case("VFIO=y", "line 1", "expected `CONFIG_NAME=value`")]
    #[case("CONFIG_A=y\nCONFIG_vf-io=y", "line 2", "letters, digits")]
    #[case("CONFIG_A=", "line 1", "empty value")]
    fn rejects(#[case] text: &str, #[case] line: &str, #[case] why: &str) {
        let err = parse(text, Path::new("frag.config"))
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("frag.config") && err.contains(line) && err.contains(why),
            "{err}"
        );
    }

    #[test]
    fn mismatches_name_each_option() {
        let fragment = parsed("CONFIG_A=y\nCONFIG_B=y\n# CONFIG_C is not set\nCONFIG_D=y\n");
        let config = parsed("CONFIG_A=y\nCONFIG_B=m\nCONFIG_C=y\nCONFIG_E=y\n");
        let m: Vec<String> = mismatches(&fragment, &config)
            .iter()
            .map(ToString::to_string)
            .collect();
        assert_eq!(
            m,
            [
                "CONFIG_B wanted y got m",
                "CONFIG_C wanted not set got y",
                "CONFIG_D wanted y got not set",
            ]
        );
    }

    #[test]
    fn shipped_fragment_parses_and_asks_for_the_essentials() {
        let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("config/bigbar.config");
        let o = parse(&std::fs::read_to_string(&path).unwrap(), &path).unwrap();
        for name in [
            "64BIT",
            "VFIO_PCI",
            "VFIO_NOIOMMU",
            "INTEL_IOMMU",
            "PTDUMP_DEBUGFS",
            "KPROBE_EVENTS",
            "TRANSPARENT_HUGEPAGE",
            "SERIAL_8250_CONSOLE",
            "BLK_DEV_INITRD",
        ] {
            assert_eq!(o.get(name), Some(&Value::Set("y".into())), "{name}");
        }
    }
}
