//! Where the runner keeps things: the cache and the default output directories.
//! Resolved here and nowhere else (`--cache` takes `$BIGBAR_CACHE` through
//! clap's `env`, so the flag and the variable are one setting).
//!
//! The cache is the user's one store (`$XDG_CACHE_HOME/bigbar`, else
//! `~/.cache/bigbar`), wherever the runner runs: every clone, the installed
//! `bigbar` and the tests share it, so nothing is fetched or built twice.
//! Results are not cache: run from inside the workspace the runner was built
//! from, they stay under its target directory, as cargo users expect; anywhere
//! else (an installed `bigbar` run from a kernel tree) they go to the XDG state
//! directory, so that nothing is written into the directory run from.

use anyhow::{bail, Result};
use std::ffi::OsString;
use std::path::{Path, PathBuf};

/// The defaults for one invocation.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Places {
    /// The store of fetched and built things (`--cache` overrides it).
    pub cache: PathBuf,
    /// Where each run's default output directory is made (`--out` overrides it).
    pub runs: PathBuf,
    /// Where each `bench`'s default output directory is made.
    pub bench: PathBuf,
}

/// The process state the defaults are chosen from.
#[derive(Debug, Clone, Default)]
struct Inputs {
    /// The current directory.
    cwd: Option<PathBuf>,
    /// The workspace the runner was built from, if it still exists.
    workspace: Option<PathBuf>,
    /// `$CARGO_TARGET_DIR`.
    cargo_target_dir: Option<OsString>,
    /// `$XDG_CACHE_HOME`.
    xdg_cache_home: Option<OsString>,
    /// `$XDG_STATE_HOME`.
    xdg_state_home: Option<OsString>,
    /// `$HOME`.
    home: Option<OsString>,
}

/// The workspace the runner was built from (where `kernel/selftests` and the
/// sources live); it may no longer exist for an installed `bigbar`.
pub fn source_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("runner lives in a workspace")
        .to_path_buf()
}

/// The defaults of this process.
pub fn defaults() -> Result<Places> {
    let env = |name: &str| std::env::var_os(name);
    resolve(&Inputs {
        cwd: std::env::current_dir().ok(),
        workspace: source_root().canonicalize().ok(),
        cargo_target_dir: env("CARGO_TARGET_DIR"),
        xdg_cache_home: env("XDG_CACHE_HOME"),
        xdg_state_home: env("XDG_STATE_HOME"),
        home: env("HOME"),
    })
}

/// The cache root: `--cache` (or `$BIGBAR_CACHE`, which clap puts there), else
/// the default.
pub fn cache(flag: Option<&Path>) -> Result<PathBuf> {
    match flag {
        Some(dir) => Ok(dir.to_path_buf()),
        None => Ok(defaults()?.cache),
    }
}

/// The defaults for `inputs`.
fn resolve(inputs: &Inputs) -> Result<Places> {
    if let Some(ws) = &inputs.workspace {
        let inside = inputs
            .cwd
            .as_ref()
            .and_then(|c| c.canonicalize().ok().or_else(|| Some(c.clone())))
            .is_some_and(|c| c.starts_with(ws));
        if inside {
            let target = match non_empty(&inputs.cargo_target_dir) {
                Some(dir) => PathBuf::from(dir),
                None => ws.join("target"),
            };
            return Ok(Places {
                cache: user_cache(inputs)?,
                runs: target.join("bigbar-runs"),
                bench: target.join("bigbar-bench"),
            });
        }
    }
    let cache = user_cache(inputs)?;
    let state = xdg_dir(&inputs.xdg_state_home, &inputs.home, ".local/state")?.join("bigbar");
    Ok(Places {
        cache,
        runs: state.join("runs"),
        bench: state.join("bench"),
    })
}

/// The user's store (as `vm_images::cache::default_root` without `$BIGBAR_CACHE`,
/// which clap has already put into `--cache`).
fn user_cache(inputs: &Inputs) -> Result<PathBuf> {
    Ok(xdg_dir(&inputs.xdg_cache_home, &inputs.home, ".cache")?.join("bigbar"))
}

/// An XDG base directory: the variable when it holds an absolute path (the
/// specification says to ignore a relative one), else `$HOME/<fallback>`.
fn xdg_dir(var: &Option<OsString>, home: &Option<OsString>, fallback: &str) -> Result<PathBuf> {
    if let Some(dir) = non_empty(var).map(PathBuf::from) {
        if dir.is_absolute() {
            return Ok(dir);
        }
    }
    match non_empty(home) {
        Some(home) => Ok(PathBuf::from(home).join(fallback)),
        None => bail!(
            "neither $HOME nor an absolute XDG base directory is set, so there is no \
             default cache; give --cache DIR (or $BIGBAR_CACHE)"
        ),
    }
}

fn non_empty(v: &Option<OsString>) -> Option<&OsString> {
    v.as_ref().filter(|v| !v.is_empty())
}

#[cfg(test)]
mod tests {
    use super::*;
    use rstest::rstest;

    fn os(s: &str) -> Option<OsString> {
        (!s.is_empty()).then(|| s.into())
    }

    #[rstest]
    #[case::in_the_workspace(
        "/ws/runner",
        "",
        "",
        "/h",
        "/h/.cache/bigbar",
        "/ws/target/bigbar-runs"
    )]
    #[case::at_its_root("/ws", "", "", "/h", "/h/.cache/bigbar", "/ws/target/bigbar-runs")]
    #[case::cargo_target_dir("/ws", "/t", "", "/h", "/h/.cache/bigbar", "/t/bigbar-runs")]
    #[case::xdg_in_the_workspace("/ws", "", "/x", "/h", "/x/bigbar", "/ws/target/bigbar-runs")]
    #[case::a_kernel_tree(
        "/src/linux",
        "",
        "",
        "/h",
        "/h/.cache/bigbar",
        "/h/.local/state/bigbar/runs"
    )]
    #[case::a_sibling_of_the_workspace(
        "/wsx",
        "",
        "",
        "/h",
        "/h/.cache/bigbar",
        "/h/.local/state/bigbar/runs"
    )]
    #[case::xdg(
        "/src/linux",
        "/t",
        "/x",
        "/h",
        "/x/bigbar",
        "/h/.local/state/bigbar/runs"
    )]
    #[case::relative_xdg_ignored(
        "/src/linux",
        "",
        "rel",
        "/h",
        "/h/.cache/bigbar",
        "/h/.local/state/bigbar/runs"
    )]
    fn defaults(
        #[case] cwd: &str,
        #[case] target: &str,
        #[case] xdg_cache: &str,
        #[case] home: &str,
        #[case] cache: &str,
        #[case] runs: &str,
    ) {
        let p = resolve(&Inputs {
            cwd: Some(cwd.into()),
            workspace: Some("/ws".into()),
            cargo_target_dir: os(target),
            xdg_cache_home: os(xdg_cache),
            xdg_state_home: None,
            home: os(home),
        })
        .unwrap();
        assert_eq!(p.cache, PathBuf::from(cache));
        assert_eq!(p.runs, PathBuf::from(runs));
    }

    #[test]
    fn no_workspace_and_no_home_asks_for_cache() {
        let e = resolve(&Inputs::default()).unwrap_err();
        assert!(e.to_string().contains("--cache"), "{e}");
        let p = resolve(&Inputs {
            xdg_cache_home: os("/c"),
            xdg_state_home: os("/s"),
            ..Inputs::default()
        })
        .unwrap();
        assert_eq!(p.cache, PathBuf::from("/c/bigbar"));
        assert_eq!(p.runs, PathBuf::from("/s/bigbar/runs"));
    }

    #[test]
    fn the_flag_wins() {
        assert_eq!(
            cache(Some(Path::new("/given"))).unwrap(),
            PathBuf::from("/given")
        );
    }
}
