//! Progress output: one line per stage with its duration; a spinner while a
//! stage runs when stderr is a terminal, plain lines otherwise (CI logs).

use indicatif::{ProgressBar, ProgressStyle};
use std::io::IsTerminal;
use std::time::{Duration, Instant};

/// A stage in progress; finish it with [`Stage::done`] or [`Stage::failed`].
pub struct Stage {
    name: String,
    start: Instant,
    spinner: Option<ProgressBar>,
}

impl Stage {
    /// Starts a stage called `name`.
    pub fn start(name: &str) -> Self {
        let spinner = std::io::stderr().is_terminal().then(|| {
            let pb = ProgressBar::new_spinner();
            pb.set_style(
                ProgressStyle::with_template("{spinner} {msg} ({elapsed})")
                    .unwrap_or_else(|_| ProgressStyle::default_spinner()),
            );
            pb.set_message(name.to_string());
            pb.enable_steady_tick(Duration::from_millis(120));
            pb
        });
        if spinner.is_none() {
            eprintln!("bigbar: {name} ...");
        }
        Self {
            name: name.to_string(),
            start: Instant::now(),
            spinner,
        }
    }

    /// Ends the stage successfully, with a short result text.
    pub fn done(self, what: &str) -> Duration {
        self.end("done", what)
    }

    /// Ends the stage as failed.
    pub fn failed(self) -> Duration {
        self.end("FAILED", "")
    }

    fn end(self, status: &str, what: &str) -> Duration {
        let took = self.start.elapsed();
        if let Some(pb) = &self.spinner {
            pb.finish_and_clear();
        }
        let sep = if what.is_empty() { "" } else { ": " };
        eprintln!(
            "bigbar: {} {status} in {:.1} s{sep}{what}",
            self.name,
            took.as_secs_f64()
        );
        took
    }
}

/// Runs `f` as a stage named `name`.
pub fn run<T, E>(
    name: &str,
    f: impl FnOnce(&Stage) -> Result<T, E>,
    describe: impl FnOnce(&T) -> String,
) -> Result<T, E> {
    let stage = Stage::start(name);
    match f(&stage) {
        Ok(v) => {
            let d = describe(&v);
            stage.done(&d);
            Ok(v)
        }
        Err(e) => {
            stage.failed();
            Err(e)
        }
    }
}
