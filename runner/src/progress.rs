//! When a guest's silence means it is stuck.
//!
//! Two clocks run. Silence on both serial ports for `idle` stops any guest (at
//! least `first_line` before its first line: a compressed kernel decompresses
//! silently, slowly under TCG). While a test runs, the guest binary's parent
//! writes a heartbeat on the KTAP port every few seconds, so there the KTAP
//! port alone must not stay silent for `progress`: a kernel that keeps printing
//! lockup reports on the console is still a dead guest. Between tests (fixture
//! setup, teardown) nothing beats, and only the idle clock applies.

use std::fmt;
use std::time::{Duration, Instant};

/// The limits of a guest's silence.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Limits {
    /// Longest silence on both ports.
    pub idle: Duration,
    /// Longest silence on the KTAP port while a test runs.
    pub progress: Duration,
    /// Least silence allowed before the guest's first line.
    pub first_line: Duration,
}

/// Which limit a silent guest ran into.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Stall {
    /// Nothing on either port for this long.
    Silent(Duration),
    /// No KTAP line (heartbeat or result) for this long while a test ran.
    NoProgress(Duration),
}

impl fmt::Display for Stall {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Stall::Silent(d) => write!(f, "the guest printed nothing for {} s", d.as_secs()),
            Stall::NoProgress(d) => write!(
                f,
                "the guest hung: no heartbeat or result on the KTAP port for {} s \
                 while a test ran (--progress-timeout)",
                d.as_secs()
            ),
        }
    }
}

/// The two clocks of one guest.
#[derive(Clone, Copy, Debug)]
pub struct Clock {
    limits: Limits,
    last_output: Instant,
    last_ktap: Instant,
    heard: bool,
}

impl Clock {
    /// Clocks for a guest started at `start`.
    pub fn new(limits: Limits, start: Instant) -> Self {
        Self {
            limits,
            last_output: start,
            last_ktap: start,
            heard: false,
        }
    }

    /// A console line arrived at `now`.
    pub fn console(&mut self, now: Instant) {
        self.last_output = now;
        self.heard = true;
    }

    /// A KTAP line (a heartbeat included) arrived at `now`.
    pub fn ktap(&mut self, now: Instant) {
        self.last_ktap = now;
        self.console(now);
    }

    /// When the guest is to be stopped if nothing arrives, and why;
    /// `in_test` says whether a test is announced and not finished.
    pub fn expiry(&self, in_test: bool) -> (Instant, Stall) {
        if !self.heard {
            let limit = self.limits.idle.max(self.limits.first_line);
            return (self.last_output + limit, Stall::Silent(limit));
        }
        let idle = (
            self.last_output + self.limits.idle,
            Stall::Silent(self.limits.idle),
        );
        let progress = (
            self.last_ktap + self.limits.progress,
            Stall::NoProgress(self.limits.progress),
        );
        if in_test && progress.0 < idle.0 {
            progress
        } else {
            idle
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rstest::rstest;

    const LIMITS: Limits = Limits {
        idle: Duration::from_secs(180),
        progress: Duration::from_secs(30),
        first_line: Duration::from_secs(120),
    };

    /// What arrived, at a second after the start.
    #[derive(Clone, Copy)]
    enum Line {
        Console(u64),
        Ktap(u64),
    }
    use Line::{Console, Ktap};

    #[rstest]
    #[case::nothing_yet(&[], false, 180, Stall::Silent(Duration::from_secs(180)))]
    #[case::nothing_yet_in_a_test_is_impossible_but_silent(&[], true, 180, Stall::Silent(Duration::from_secs(180)))]
    #[case::booting(&[Console(5)], false, 185, Stall::Silent(Duration::from_secs(180)))]
    #[case::between_tests_console_counts(&[Ktap(10), Console(50)], false, 230, Stall::Silent(Duration::from_secs(180)))]
    #[case::in_a_test_only_ktap_counts(&[Ktap(10), Console(35)], true, 40, Stall::NoProgress(Duration::from_secs(30)))]
    #[case::a_heartbeat_moves_it(&[Ktap(10), Ktap(12), Ktap(14)], true, 44, Stall::NoProgress(Duration::from_secs(30)))]
    fn expiry_follows_the_last_lines(
        #[case] lines: &[Line],
        #[case] in_test: bool,
        #[case] at: u64,
        #[case] why: Stall,
    ) {
        let t0 = Instant::now();
        let mut c = Clock::new(LIMITS, t0);
        for l in lines {
            match *l {
                Console(s) => c.console(t0 + Duration::from_secs(s)),
                Ktap(s) => c.ktap(t0 + Duration::from_secs(s)),
            }
        }
        assert_eq!(c.expiry(in_test), (t0 + Duration::from_secs(at), why));
    }

    #[rstest]
    #[case::short_idle_wins_in_a_test(20, 30, true, 30, Stall::Silent(Duration::from_secs(20)))]
    #[case::short_idle_before_the_first_line(
        20,
        30,
        false,
        120,
        Stall::Silent(Duration::from_secs(120))
    )]
    fn the_nearer_limit_strikes(
        #[case] idle: u64,
        #[case] progress: u64,
        #[case] heard: bool,
        #[case] at: u64,
        #[case] why: Stall,
    ) {
        let limits = Limits {
            idle: Duration::from_secs(idle),
            progress: Duration::from_secs(progress),
            ..LIMITS
        };
        let t0 = Instant::now();
        let mut c = Clock::new(limits, t0);
        if heard {
            c.ktap(t0 + Duration::from_secs(10));
        }
        assert_eq!(c.expiry(heard), (t0 + Duration::from_secs(at), why));
    }

    #[test]
    fn the_reasons_name_the_limit() {
        assert_eq!(
            Stall::Silent(Duration::from_secs(180)).to_string(),
            "the guest printed nothing for 180 s"
        );
        let hung = Stall::NoProgress(Duration::from_secs(30)).to_string();
        assert!(hung.starts_with("the guest hung: no heartbeat"), "{hung}");
        assert!(hung.contains("for 30 s"), "{hung}");
    }
}
