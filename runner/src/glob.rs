//! Shell-like name patterns for expectations and kernel specs: `*` matches any
//! run of characters (including none), every other character matches itself.
//!
//! The same rule as the guest binary's `--filter` (guest-tests/src/glob.rs), so a
//! pattern means the same on both sides; the runner does not depend on the guest
//! crate for a dozen lines.

/// Whether `name` matches `pattern` as a whole.
pub fn matches(pattern: &str, name: &str) -> bool {
    let mut parts = pattern.split('*');
    let first = parts.next().unwrap_or_default();
    let Some(mut rest) = name.strip_prefix(first) else {
        return false;
    };
    let middle: Vec<&str> = parts.collect();
    let Some((last, middle)) = middle.split_last() else {
        return rest.is_empty();
    };
    for part in middle {
        match rest.find(part) {
            // The leftmost occurrence is optimal for `*`-only patterns.
            Some(at) => rest = &rest[at + part.len()..],
            None => return false,
        }
    }
    rest.len() >= last.len() && rest.ends_with(last)
}

#[cfg(test)]
mod tests {
    use super::*;
    use rstest::rstest;

    #[rstest]
    #[case("f8.mremap_move_pud_congruent", "f8.mremap_move_pud_congruent", true)]
    #[case("f8.mremap_move_pud_congruent", "f8.mremap_move_pud_congruentx", false)]
    #[case("f6.*", "f6.munmap_pud_unaligned", true)]
    #[case("f6.*", "f8.x", false)]
    #[case("a*", "a1.whole_bar", true)]
    #[case("*", "", true)]
    #[case("debian:*", "debian:sid", true)]
    #[case("debian:*", "stock", false)]
    #[case("*_pud_*", "f6.munmap_pud_unaligned", true)]
    #[case("f*.*pud", "f8.mremap_move_pud", true)]
    #[case("a*a", "a", false)]
    #[case("", "x", false)]
    fn glob_cases(#[case] pattern: &str, #[case] name: &str, #[case] want: bool) {
        assert_eq!(matches(pattern, name), want, "{pattern} vs {name}");
    }
}
