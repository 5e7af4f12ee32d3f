//! How a test body ends when it does not pass: a [`Stop`], the error of its
//! [`TestResult`], so that a skip travels with `?` exactly as a failure does and
//! every precondition is one line (kselftest_harness's `SKIP()`):
//!
//! ```
//! use guest_tests::stop::{skip_if, OrSkip, TestResult};
//! use guest_tests::{ensure, skip};
//!
//! fn body(bar: Option<u64>, missing: Option<String>) -> TestResult {
//!     skip_if(missing)?;
//!     let size = bar.or_skip("the device has no such BAR")?;
//!     if size < 4096 {
//!         skip!("BAR of {size:#x} bytes is too small");
//!     }
//!     let parsed: u64 = "4096".parse()?; // any error fails the test
//!     ensure!(parsed <= size, "{parsed} > {size}");
//!     Ok(())
//! }
//! assert!(body(Some(8192), None).is_ok());
//! assert_eq!(body(None, None).unwrap_err().to_string(), "the device has no such BAR");
//! ```
//!
//! [`bail!`](crate::bail) and [`ensure!`](crate::ensure) are anyhow's, made to
//! convert into the function's error type: anyhow's own return an
//! `anyhow::Error` as it is, which a [`TestResult`] body cannot.

use std::fmt;

use crate::ktap::{KSFT_FAIL, KSFT_SKIP, KSFT_XFAIL, KSFT_XPASS};

/// Why a test body stopped without passing. Every error converts into a
/// [`Stop::Fail`], so `?` fails the test on any error with its context chain.
///
/// It is no `std::error::Error` on purpose (like `anyhow::Error`): that is
/// what lets every error type convert into it.
#[derive(Debug)]
pub enum Stop {
    /// The test does not apply here; the reason says why.
    Skip(String),
    /// A check failed that this kernel is known not to satisfy (for example
    /// placement rules of a series it lacks); the reason says what was measured.
    Xfail(String),
    /// Every check held although this kernel was expected to fail them (a rule
    /// kept by accident); the reason says why a failure was expected.
    Xpass(String),
    /// A check failed or a step broke.
    Fail(anyhow::Error),
}

/// What a test body, or a step of one that may skip, returns; `Ok` is a pass.
pub type TestResult<T = ()> = Result<T, Stop>;

impl<E: Into<anyhow::Error>> From<E> for Stop {
    fn from(e: E) -> Self {
        Stop::Fail(e.into())
    }
}

/// The message the harness reports: the reason, or a failure's context chain.
impl fmt::Display for Stop {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Stop::Skip(reason) | Stop::Xfail(reason) | Stop::Xpass(reason) => f.write_str(reason),
            Stop::Fail(e) => write!(f, "{e:#}"),
        }
    }
}

impl Stop {
    /// The kselftest exit status of a test child that ends this way.
    pub fn exit_code(&self) -> i32 {
        match self {
            Stop::Skip(_) => KSFT_SKIP,
            Stop::Xfail(_) => KSFT_XFAIL,
            Stop::Xpass(_) => KSFT_XPASS,
            Stop::Fail(_) => KSFT_FAIL,
        }
    }

    /// This ending as a failure with the same message, for a step whose test
    /// has already passed the preconditions that could make it skip: a skip
    /// there would hide that they changed their mind.
    pub fn into_failure(self) -> anyhow::Error {
        match self {
            Stop::Fail(e) => e,
            other => anyhow::Error::msg(other.to_string()),
        }
    }
}

/// Skips with `reason` if there is one: `skip_if(fx.caps.need(&MADVISE))?`.
pub fn skip_if(reason: Option<String>) -> TestResult {
    match reason {
        Some(reason) => Err(Stop::Skip(reason)),
        None => Ok(()),
    }
}

/// A value a test needs, or the skip that replaces the test without it.
pub trait OrSkip<T> {
    /// The value, or a skip with `reason`.
    fn or_skip(self, reason: &str) -> TestResult<T>;
    /// The value, or a skip with the reason `reason` builds.
    fn or_skip_with(self, reason: impl FnOnce() -> String) -> TestResult<T>;
}

impl<T> OrSkip<T> for Option<T> {
    fn or_skip(self, reason: &str) -> TestResult<T> {
        self.ok_or_else(|| Stop::Skip(reason.to_owned()))
    }

    fn or_skip_with(self, reason: impl FnOnce() -> String) -> TestResult<T> {
        self.ok_or_else(|| Stop::Skip(reason()))
    }
}

#[doc(hidden)]
pub use anyhow as __anyhow;

/// Ends the test body as a skip with a `format!` reason: `skip!("no {what}")`
/// is `return Err(Stop::Skip(format!("no {what}")))`.
#[macro_export]
macro_rules! skip {
    ($($arg:tt)+) => {
        return ::core::result::Result::Err($crate::stop::Stop::Skip(::std::format!($($arg)+)))
    };
}

/// `anyhow::bail!` that converts into the function's error type, so that it
/// fails a [`TestResult`](crate::stop::TestResult) body as well as it returns
/// from an `anyhow::Result` function.
#[macro_export]
macro_rules! bail {
    ($($arg:tt)+) => {
        return ::core::result::Result::Err(
            $crate::stop::__anyhow::anyhow!($($arg)+).into()
        )
    };
}

/// `anyhow::ensure!` that converts into the function's error type, as
/// [`bail!`](crate::bail) does.
#[macro_export]
macro_rules! ensure {
    ($cond:expr, $($arg:tt)+) => {
        if !$cond {
            $crate::bail!($($arg)+);
        }
    };
}

#[cfg(test)]
mod tests {
    use super::*;
    use anyhow::Context;
    use rstest::rstest;

    /// A result as the harness sees it: exit status and message.
    fn seen(r: TestResult) -> (i32, String) {
        match r {
            Ok(()) => (crate::ktap::KSFT_PASS, String::new()),
            Err(stop) => (stop.exit_code(), stop.to_string()),
        }
    }

    fn io_error() -> TestResult {
        std::fs::read("/nonexistent/bigbar").context("reading the fixture")?;
        Ok(())
    }

    fn errno() -> TestResult {
        Err(nix::errno::Errno::ENOSPC)?
    }

    fn bailing(n: u32) -> TestResult {
        ensure!(n > 1, "expected 1 fault, got {n}");
        bail!("got {}", n)
    }

    fn skipping(n: u32) -> TestResult {
        skip!("needs {n} vectors")
    }

    fn needs(size: Option<u64>) -> TestResult<u64> {
        let size = size.or_skip("no BAR")?;
        skip_if((size < 2).then(|| format!("BAR of {size} bytes")))?;
        Ok(size)
    }

    /// A step that skips inside one that does not: the skip reaches the body.
    fn outer(size: Option<u64>) -> TestResult {
        needs(size)?;
        Ok(())
    }

    #[rstest]
    #[case::io(
        io_error(),
        KSFT_FAIL,
        "reading the fixture: No such file or directory (os error 2)"
    )]
    #[case::errno(errno(), KSFT_FAIL, "ENOSPC: No space left on device")]
    #[case::ensure(bailing(1), KSFT_FAIL, "expected 1 fault, got 1")]
    #[case::bail(bailing(2), KSFT_FAIL, "got 2")]
    #[case::skip(skipping(4), KSFT_SKIP, "needs 4 vectors")]
    #[case::or_skip(outer(None), KSFT_SKIP, "no BAR")]
    #[case::skip_if(outer(Some(1)), KSFT_SKIP, "BAR of 1 bytes")]
    #[case::pass(outer(Some(2)), crate::ktap::KSFT_PASS, "")]
    #[case::xfail(Err(Stop::Xfail("at 4 KiB".into())), KSFT_XFAIL, "at 4 KiB")]
    #[case::xpass(Err(Stop::Xpass("kept".into())), KSFT_XPASS, "kept")]
    fn endings(#[case] r: TestResult, #[case] code: i32, #[case] message: &str) {
        assert_eq!(seen(r), (code, message.to_string()));
    }

    #[rstest]
    #[case(Some(5), Ok(5))]
    #[case(None, Err("none here"))]
    fn or_skip_with_builds_the_reason_only_for_a_skip(
        #[case] value: Option<u64>,
        #[case] want: Result<u64, &str>,
    ) {
        let got = value.or_skip_with(|| {
            assert!(value.is_none(), "reason built for a value");
            "none here".into()
        });
        match (got, want) {
            (Ok(v), Ok(w)) => assert_eq!(v, w),
            (Err(Stop::Skip(r)), Err(w)) => assert_eq!(r, w),
            (got, want) => panic!("{got:?}, expected {want:?}"),
        }
    }

    #[rstest]
    #[case::skip(Stop::Skip("no THP".into()), "cannot predict: no THP")]
    #[case::fail(
        Stop::Fail(anyhow::anyhow!("ENOSPC").context("model")),
        "cannot predict: model: ENOSPC"
    )]
    fn a_skip_made_a_failure_keeps_its_message(#[case] stop: Stop, #[case] want: &str) {
        let e = stop.into_failure().context("cannot predict");
        assert_eq!(format!("{e:#}"), want);
    }
}
