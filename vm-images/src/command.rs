//! Running host programs with captured output and errors that say what ran.

use std::path::PathBuf;
use std::process::{Command, Output};

use crate::error::{Error, Result};

/// How much of a failing command's output an error keeps.
const ERROR_TAIL_LINES: usize = 30;

/// Finds a host program in PATH, or names the Debian package that provides it.
pub(crate) fn require_tool(program: &'static str, package: &'static str) -> Result<PathBuf> {
    which::which(program).map_err(|_| Error::ToolMissing { program, package })
}

/// A shell-like rendering of a command line, for messages.
pub(crate) fn display(cmd: &Command) -> String {
    let mut parts = vec![cmd.get_program().to_string_lossy().into_owned()];
    parts.extend(cmd.get_args().map(|a| a.to_string_lossy().into_owned()));
    parts.join(" ")
}

/// Runs `cmd` to completion, capturing its output; a non-zero exit is an error.
pub(crate) fn run(cmd: &mut Command) -> Result<Output> {
    let output = run_unchecked(cmd)?;
    if !output.status.success() {
        return Err(failure(cmd, &output));
    }
    Ok(output)
}

/// Runs `cmd` to completion, capturing its output, whatever its exit status.
pub(crate) fn run_unchecked(cmd: &mut Command) -> Result<Output> {
    cmd.stdin(std::process::Stdio::null())
        .output()
        .map_err(|source| Error::Spawn {
            command: display(cmd),
            source,
        })
}

/// The error describing a command that exited unsuccessfully.
pub(crate) fn failure(cmd: &Command, output: &Output) -> Error {
    let text = if output.stderr.is_empty() {
        &output.stdout
    } else {
        &output.stderr
    };
    Error::CommandFailed {
        command: display(cmd),
        status: output.status,
        stderr: tail(&String::from_utf8_lossy(text), ERROR_TAIL_LINES),
    }
}

/// The last `n` lines of `text`.
pub(crate) fn tail(text: &str, n: usize) -> String {
    let lines: Vec<&str> = text.lines().collect();
    lines[lines.len().saturating_sub(n)..].join("\n")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn failure_keeps_stderr_tail_and_command() {
        let mut cmd = Command::new("sh");
        cmd.args([
            "-c",
            "echo out; for i in 1 2 3; do echo err$i >&2; done; exit 3",
        ]);
        let err = run(&mut cmd).unwrap_err();
        let Error::CommandFailed {
            command, stderr, ..
        } = &err
        else {
            panic!("unexpected {err:?}")
        };
        assert!(command.starts_with("sh -c echo out"));
        assert_eq!(stderr, "err1\nerr2\nerr3");
        assert_eq!(tail("a\nb\nc", 2), "b\nc");
    }

    #[test]
    fn missing_tool_names_package() {
        let err = require_tool("bigbar-no-such-tool", "bigbar-pkg").unwrap_err();
        assert!(err.to_string().contains("`bigbar-pkg`"), "{err}");
    }
}
