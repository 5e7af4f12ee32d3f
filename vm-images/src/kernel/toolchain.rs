//! The toolchain a kernel build runs with, as a part of its cache key.
//!
//! A kernel's bytes change with the compiler and binutils that made it, and
//! (through the generated parsers and objtool) with bison, flex and libelf. Each
//! tool is named by the first line of its `--version` (which carries the
//! distribution's package revision, e.g. `gcc (Debian 12.2.0-14) 12.2.0`), run
//! with the environment the build gives make, so a fetched bison is the one named.
//! The fetched packages are named with their Debian versions as well, since a
//! library such as libelf has no program to ask.

use std::process::{Command, Stdio};

use super::build_tools::BuildTools;

/// The programs asked for their version, in key order.
const PROGRAMS: [&str; 5] = ["gcc", "ld", "make", "bison", "flex"];

/// What identifies the toolchain; equal toolchains build equal kernels.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Toolchain {
    /// One line per tool or fetched package, e.g. `gcc: gcc (Debian 12.2.0-14) 12.2.0`.
    pub parts: Vec<String>,
}

impl Toolchain {
    /// Asks each tool of `tools`' environment for its version. A program that
    /// cannot be run is named as absent: the build itself then fails and says so.
    pub fn probe(tools: &BuildTools) -> Self {
        let mut parts: Vec<String> = PROGRAMS
            .iter()
            .map(|program| format!("{program}: {}", first_version_line(program, tools)))
            .collect();
        if let Some(fetched) = &tools.fetched {
            for (package, version) in &fetched.info.packages {
                parts.push(format!("fetched {package}: {version}"));
            }
        }
        Self { parts }
    }
}

impl Toolchain {
    /// The host's own toolchain (what `cc -static` and `make` use for the
    /// selftests and reproducers), probed once per process.
    pub fn host() -> &'static Self {
        static HOST: std::sync::OnceLock<Toolchain> = std::sync::OnceLock::new();
        HOST.get_or_init(|| Self::probe(&BuildTools::default()))
    }

    /// Adds every part to a key.
    pub fn hash_into(&self, h: &mut crate::cache::KeyHasher) {
        h.part(&(self.parts.len() as u64).to_le_bytes());
        for p in &self.parts {
            h.part(p.as_bytes());
        }
    }
}

/// The first line of `program --version` in `tools`' environment, or `absent`.
fn first_version_line(program: &str, tools: &BuildTools) -> String {
    let mut cmd = Command::new(program);
    cmd.arg("--version")
        .env("LC_ALL", "C")
        .stdin(Stdio::null())
        .stderr(Stdio::null());
    cmd.envs(tools.env.iter().map(|(k, v)| (k, v)));
    match cmd.output() {
        Ok(out) if out.status.success() => String::from_utf8_lossy(&out.stdout)
            .lines()
            .next()
            .unwrap_or("")
            .trim()
            .to_owned(),
        _ => "absent".into(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_host_compiler_is_named_and_a_missing_tool_is_absent() {
        let t = Toolchain::probe(&BuildTools::default());
        let gcc = t.parts.iter().find(|p| p.starts_with("gcc: ")).unwrap();
        assert!(gcc.contains("gcc") && gcc.len() > "gcc: gcc".len(), "{gcc}");
        let mut empty_path = BuildTools::default();
        empty_path.env.push(("PATH".into(), "/nonexistent".into()));
        let none = Toolchain::probe(&empty_path);
        assert!(
            none.parts.iter().all(|p| p.ends_with(": absent")),
            "{none:?}"
        );
    }
}
