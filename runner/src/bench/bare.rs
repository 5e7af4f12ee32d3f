//! A run's time outside its tests against a bare boot of the same kernel.
//!
//! A run's wall time minus what its tests took by their own clocks in the guest
//! is what the runner, QEMU and the kernel cost around the tests; a bare boot
//! (the same machine and device, an init that powers off at once, see
//! `runner --bare-boot`) is the least of that any run can pay. Both are measured
//! in the same bench run, one right after the other, so that the load of the
//! machine weighs on both alike.

use super::report::{BareComparison, Figure, RunFigures, Target};
use super::stats::Summary;

/// The kernels compared: one Debian kernel and one of the project's own.
pub const KERNELS: [&str; 2] = ["debian:sid", "stock"];
/// The bench mode of the bare boots.
pub const MODE: &str = "bare boot";
/// What the bare boots run.
pub const SELECTION: &str = "init powers off";
/// The target: outside the tests at most this many bare boots.
pub const GOAL: f64 = 1.5;

/// Seconds the tests of a KTAP stream took by the guest harness's clock: the
/// `# NAME: 1.234 s` line it writes right before the result line of NAME.
/// `None` when no test reported its time.
pub fn tests_seconds(ktap: &str) -> Option<f64> {
    let mut last: Option<(&str, f64)> = None;
    let mut total: Option<f64> = None;
    for line in ktap.lines() {
        if let Some(timed) = timing_line(line) {
            last = Some(timed);
        } else if let Some(name) = result_name(line) {
            if let Some((timed, secs)) = last.take() {
                if timed == name {
                    *total.get_or_insert(0.0) += secs;
                }
            }
        }
    }
    total
}

/// `# NAME: 1.234 s` → (NAME, 1.234).
fn timing_line(line: &str) -> Option<(&str, f64)> {
    let rest = line.strip_prefix("# ")?.strip_suffix(" s")?;
    let (name, secs) = rest.rsplit_once(": ")?;
    if name.is_empty() || name.contains(char::is_whitespace) {
        return None;
    }
    Some((name, secs.parse().ok()?))
}

/// The test a top-level KTAP result line names (`ok 3 NAME # SKIP ...`).
fn result_name(line: &str) -> Option<&str> {
    let rest = line
        .strip_prefix("ok ")
        .or_else(|| line.strip_prefix("not ok "))?;
    let (_, rest) = rest.split_once(' ')?;
    rest.split(" #").next().map(str::trim)
}

/// Adds the figures `tests_in_guest` and `outside_tests` to a kernel's warm
/// runs from each repetition's (wall seconds, tests' seconds).
pub fn add_outside(figs: &mut RunFigures, reps: &[(f64, Option<f64>)]) {
    let in_guest = Summary::over(reps, |(_, t)| *t);
    let outside = Summary::over(reps, |(total, t)| t.map(|t| total - t));
    for (name, summary) in [("tests_in_guest", in_guest), ("outside_tests", outside)] {
        if let Some(summary) = summary {
            figs.figures.push(Figure {
                name: name.into(),
                unit: "s".into(),
                summary,
            });
        }
    }
}

/// One comparison per kernel that has both warm runs and bare boots.
pub fn compare(runs: &[RunFigures]) -> Vec<BareComparison> {
    let find =
        |kernel: &str, mode: &str| runs.iter().find(|r| r.kernel == kernel && r.mode == mode);
    let mut out = Vec::new();
    for bare in runs.iter().filter(|r| r.mode == MODE) {
        let Some(warm) = find(&bare.kernel, super::WARM) else {
            continue;
        };
        let outside = warm.figure("outside_tests").copied();
        let boot = bare.figure("bare_boot").copied();
        out.push(BareComparison {
            kernel: bare.kernel.clone(),
            selection: warm.selection.clone(),
            run_total: warm.figure("total").copied(),
            tests_in_guest: warm.figure("tests_in_guest").copied(),
            outside_tests: outside,
            bare_boot: boot,
            ratio: outside
                .zip(boot)
                .filter(|(_, b)| b.median > 0.0)
                .map(|(o, b)| o.median / b.median),
        });
    }
    out
}

/// The target for each comparison.
pub fn targets(comparisons: &[BareComparison]) -> Vec<Target> {
    comparisons
        .iter()
        .map(|c| Target {
            what: format!(
                "run outside its tests over a bare boot ({}, {})",
                c.kernel, c.selection
            ),
            goal: format!("≤ {GOAL}×"),
            measured: c.ratio.map(|r| {
                format!(
                    "{:.1} s over {:.1} s = {r:.2}×",
                    c.outside_tests.map_or(0.0, |s| s.median),
                    c.bare_boot.map_or(0.0, |s| s.median)
                )
            }),
            met: c.ratio.map(|r| r <= GOAL),
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    const KTAP: &str = "TAP version 13\n1..3\n\
        # seed 1\n\
        #  RUN           setup.bind_vfio ...\n\
        # setup.bind_vfio: 0.056 s\n\
        ok 1 setup.bind_vfio\n\
        #  RUN           content.offset_tags ...\n\
        # BAR 2 range [0x1fe000000, +0x4000000)\n\
        # content.offset_tags: 0.322 s\n\
        not ok 2 content.offset_tags\n\
        # ptdump.x: not timed: 9.000 s\n\
        # other.test: 5.000 s\n\
        ok 3 ptdump.x # SKIP no ptdump\n";

    #[test]
    fn test_times_are_summed_from_the_lines_before_their_results() {
        let t = tests_seconds(KTAP).unwrap();
        // The 5 s line names another test than the result after it.
        assert!((t - 0.378).abs() < 1e-9, "{t}");
        assert_eq!(tests_seconds("TAP version 13\n1..0\n"), None);
    }

    #[test]
    fn result_lines_name_their_test() {
        assert_eq!(result_name("ok 3 ptdump.x # SKIP no"), Some("ptdump.x"));
        assert_eq!(result_name("not ok 12 a.b"), Some("a.b"));
        assert_eq!(result_name("# ok 1 a"), None);
    }

    fn run(kernel: &str, mode: &str, figures: &[(&str, &[f64])]) -> RunFigures {
        RunFigures {
            kernel: kernel.into(),
            mode: mode.into(),
            selection: "catalogue".into(),
            figures: figures
                .iter()
                .map(|(n, v)| Figure {
                    name: n.to_string(),
                    unit: "s".into(),
                    summary: Summary::of(v).unwrap(),
                })
                .collect(),
            ..RunFigures::default()
        }
    }

    #[test]
    fn outside_is_the_wall_time_less_the_tests() {
        let mut warm = run("stock", "warm", &[("total", &[10.0, 12.0])]);
        add_outside(
            &mut warm,
            &[(10.0, Some(6.0)), (12.0, Some(7.0)), (9.0, None)],
        );
        assert_eq!(warm.figure("tests_in_guest").unwrap().median, 6.5);
        assert_eq!(warm.figure("outside_tests").unwrap().median, 4.5);
    }

    #[test]
    fn kernels_with_both_runs_are_compared_against_the_goal() {
        let runs = [
            run(
                "stock",
                "warm",
                &[("total", &[10.0]), ("outside_tests", &[3.0])],
            ),
            run("stock", MODE, &[("bare_boot", &[1.5])]),
            run("debian:sid", MODE, &[("bare_boot", &[5.0])]),
            run("debian:trixie", "warm", &[("outside_tests", &[9.0])]),
        ];
        let c = compare(&runs);
        assert_eq!(c.len(), 1, "{c:?}");
        assert_eq!(c[0].ratio, Some(2.0));
        let t = targets(&c);
        assert_eq!(t[0].measured.as_deref(), Some("3.0 s over 1.5 s = 2.00×"));
        assert_eq!(t[0].met, Some(false));
        assert_eq!(t[0].goal, "≤ 1.5×");
    }
}
