//! Name patterns, for test selection with `--filter` (guest) and for the tests
//! and kernels of expectations files (runner): shell-like patterns where `*`
//! matches any run of characters (including none) and every other character
//! matches itself, so a pattern means the same on both sides.
//!
//! A dozen lines do not justify a dependency such as `glob` (which matches paths,
//! treats `/` specially and brings character classes the CLI does not promise).

/// Whether `name` matches `pattern` as a whole.
pub fn matches(pattern: &str, name: &str) -> bool {
    let mut parts = pattern.split('*');
    // `split` always yields at least one part.
    let first = parts.next().unwrap_or_default();
    let Some(mut rest) = name.strip_prefix(first) else {
        return false;
    };
    let middle: Vec<&str> = parts.collect();
    let Some((last, middle)) = middle.split_last() else {
        // No `*` at all: the pattern must equal the name.
        return rest.is_empty();
    };
    for part in middle {
        match rest.find(part) {
            // Taking the leftmost occurrence is optimal for `*`-only patterns.
            Some(at) => rest = &rest[at + part.len()..],
            None => return false,
        }
    }
    rest.ends_with(last)
}

/// Whether `name` is selected: no patterns select everything, otherwise any match.
pub fn selected(patterns: &[String], name: &str) -> bool {
    patterns.is_empty() || patterns.iter().any(|p| matches(p, name))
}

#[cfg(test)]
mod tests {
    use super::*;
    use rstest::rstest;

    #[rstest]
    #[case("fault_order.pud_aligned", "fault_order.pud_aligned", true)]
    #[case("fault_order.pud_aligned", "fault_order.pud_aligned2", false)]
    #[case("fault_order.*", "fault_order.pud_aligned", true)]
    #[case("fault_order.*", "fault_order.", true)]
    #[case("fault_order.*", "content.offset_tags", false)]
    #[case("*aligned", "fault_order.unaligned", true)]
    #[case("*aligned", "fault_order.aligned_not", false)]
    #[case("*", "", true)]
    #[case("", "", true)]
    #[case("", "x", false)]
    #[case("*.*_*", "a.b_c", true)]
    #[case("a*a", "a", false)]
    #[case("a*a", "aa", true)]
    #[case("*pmd*", "fault_order.pmd_aligned", true)]
    #[case("f*o*d", "fault_order.pud_aligned", true)]
    #[case("f*x*d", "fault_order.pud_aligned", false)]
    #[case("**", "anything", true)]
    fn glob_cases(#[case] pattern: &str, #[case] name: &str, #[case] want: bool) {
        assert_eq!(matches(pattern, name), want, "{pattern} vs {name}");
    }

    #[test]
    fn selection_is_any_pattern() {
        let pats = vec!["setup.*".to_string(), "*unaligned".to_string()];
        assert!(selected(&pats, "setup.bind_vfio"));
        assert!(selected(&pats, "fault_order.unaligned"));
        assert!(!selected(&pats, "fault_order.pmd_aligned"));
        assert!(selected(&[], "anything"));
    }
}
