//! Parsing what apt-cache prints: control stanzas, dependency fields, policy.

use std::collections::BTreeMap;

/// The fields of one control stanza (`apt-cache show`), continuation lines joined.
pub type Stanza = BTreeMap<String, String>;

/// Parses the first stanza of `text`.
pub fn first_stanza(text: &str) -> Stanza {
    let mut stanza = Stanza::new();
    let mut last: Option<String> = None;
    for line in text.lines() {
        if line.trim().is_empty() {
            if stanza.is_empty() {
                continue;
            }
            break;
        }
        if line.starts_with([' ', '\t']) {
            if let Some(value) = last.as_ref().and_then(|k| stanza.get_mut(k)) {
                value.push('\n');
                value.push_str(line.trim());
            }
            continue;
        }
        if let Some((key, value)) = line.split_once(':') {
            stanza.insert(key.to_owned(), value.trim().to_owned());
            last = Some(key.to_owned());
        }
    }
    stanza
}

/// One alternative of a dependency: a package name, without version or architecture.
/// Each inner list holds the alternatives of one `a | b` group.
pub fn depends(field: &str) -> Vec<Vec<String>> {
    field
        .split(',')
        .map(|group| {
            group
                .split('|')
                .filter_map(|alt| {
                    let name = alt.split_whitespace().next()?.split('(').next()?;
                    let name = name.split(':').next()?;
                    (!name.is_empty()).then(|| name.to_owned())
                })
                .collect::<Vec<_>>()
        })
        .filter(|g| !g.is_empty())
        .collect()
}

/// The `Candidate:` version of `apt-cache policy PKG`, if there is one.
pub fn policy_candidate(text: &str) -> Option<String> {
    text.lines()
        .find_map(|l| l.trim().strip_prefix("Candidate:"))
        .map(str::trim)
        .filter(|v| !v.is_empty() && *v != "(none)")
        .map(str::to_owned)
}

#[cfg(test)]
mod tests {
    use super::*;

    const SHOW: &str = "\
Package: linux-image-7.2.13+deb14-amd64
Source: linux-signed-amd64 (7.2.13+1)
Version: 7.2.13-1
Depends: dracut | initramfs-tools (>= 0.120+deb8u2) | linux-initramfs-tool, linux-base-7.2.13+deb14-amd64 (= 7.2.13-1), libc6:any (>= 2.3)
Description: Linux 7.2.13
 second line

Package: other
Version: 1
";

    #[test]
    fn stanza_and_depends() {
        let s = first_stanza(SHOW);
        assert_eq!(s["Version"], "7.2.13-1");
        assert_eq!(s["Description"], "Linux 7.2.13\nsecond line");
        assert_eq!(s["Package"], "linux-image-7.2.13+deb14-amd64");
        assert_eq!(
            depends(&s["Depends"]),
            vec![
                vec!["dracut", "initramfs-tools", "linux-initramfs-tool"],
                vec!["linux-base-7.2.13+deb14-amd64"],
                vec!["libc6"],
            ]
        );
    }

    #[test]
    fn policy() {
        let found =
            "qemu-system-x86:\n  Installed: (none)\n  Candidate: 1:11.1.3+ds-1\n  Version table:\n";
        assert_eq!(policy_candidate(found).as_deref(), Some("1:11.1.3+ds-1"));
        assert_eq!(
            policy_candidate("x:\n  Installed: (none)\n  Candidate: (none)\n"),
            None
        );
        assert_eq!(policy_candidate(""), None);
    }
}
