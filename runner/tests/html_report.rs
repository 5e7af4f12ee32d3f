//! `report.html` in a real browser: `runner parse` of a saved KTAP stream
//! writes the page, headless Chromium (Debian's, fetched into the cache by
//! `vm_images::chromium`) loads it from disk with the network unused, and the
//! SVG cells it drew must add up, row by row and size by size, to the layouts
//! of the stream (what `results.json` stores as `expected` and `counted`).
//!
//! A host where Chromium cannot be fetched (not Debian, no archive reachable)
//! fails this test, saying why: a report never checked must not read as a
//! report that renders. Such a host leaves the test out explicitly, by setting
//! `BIGBAR_NO_BROWSER` to its reason; `.ci/run` never does.

mod common;

use std::path::Path;
use std::time::{Duration, Instant};

use protocol::ktap::layout::{EntrySize, Layout};
use vm_images::{chromium, Cache, Fetcher};

/// A saved run: the MSI-X hole placed size-aligned (its tail loses the 30
/// PMDs a rule-keeping placement keeps), a mixed mapping whose PMD faulted
/// at every touch, and a plain pass.
const KTAP: &str = "\
TAP version 13
1..3
# layout: bar=1 start=0x7f0f4a086000 len=0x200000 offset=0x0 phys=0xf8000000 runs=pte*512:512/512=pte rule=pmd*1 what=kernel placement
# layout: bar=1 start=0x7f0f46287000 len=0x3dff000 offset=0x201000 phys=0xf8201000 runs=pte*15871:15871/15871=pte rule=pte*511,pmd*30 what=kernel placement
# a3.msix_hole: 2 of the placements break the rule
not ok 1 a3.msix_hole
# layout: bar=2 start=0x7f01ffdfe000 len=0x40405000 offset=0x3fdfe000 phys=0x803fdfe000 runs=pte*2:2/2=pte,pmd*1:1/2=pte,pud*1:1/1=pud,pmd*1:1/1=pmd,pte*3:3/3=pte what=first touch
# f1.case_table: first touch: expected 8 faults, counted 9
not ok 2 f1.case_table
ok 3 f9.map_private_einval
";

#[test]
fn report_renders_in_chromium_with_a_cell_per_run() {
    if let Some(why) = std::env::var_os("BIGBAR_NO_BROWSER") {
        eprintln!("left out by BIGBAR_NO_BROWSER: {}", why.to_string_lossy());
        return;
    }
    let fetch_started = Instant::now();
    let browser = chromium();
    eprintln!(
        "chromium ready in {:.1} s",
        fetch_started.elapsed().as_secs_f64()
    );
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("results.ktap"), KTAP).unwrap();
    let status = common::runner()
        .arg("parse")
        .arg(dir.path())
        .status()
        .unwrap();
    assert_eq!(status.code(), Some(1), "two tests fail");
    let page = dir.path().join("report.html");
    let size = std::fs::metadata(&page).unwrap().len();
    let started = Instant::now();
    let dom = dump_dom(&browser, &page);
    eprintln!(
        "report.html: {size} bytes, rendered by chromium-headless-shell {} in {:.2} s",
        browser.package_version,
        started.elapsed().as_secs_f64()
    );
    assert!(dom.contains("<h1>bigbar report</h1>"), "not loaded:\n{dom}");
    assert_drawn_as_in_the_stream(&dom);
}

/// Chromium, fetched into the store if it is not there; the test fails,
/// saying why, when it cannot be had.
fn chromium() -> chromium::Chromium {
    let cache = Cache::user().expect("a store");
    let fetcher = Fetcher::new(&cache);
    let got = chromium::host_suite().and_then(|suite| chromium::obtain(&fetcher, &suite));
    got.unwrap_or_else(|e| {
        panic!(
            "headless Chromium cannot be had here: {e}\n(a host that cannot fetch \
             Debian's chromium-headless-shell leaves this test out with \
             BIGBAR_NO_BROWSER=<why>)"
        )
    })
}

/// The DOM Chromium builds from `page`, after checking it loaded cleanly.
fn dump_dom(browser: &chromium::Chromium, page: &Path) -> String {
    let profile = tempfile::tempdir().unwrap();
    let mut cmd = browser.command(profile.path());
    cmd.arg("--enable-logging=stderr")
        .arg("--dump-dom")
        .arg(format!("file://{}", page.display()));
    let child = cmd
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let _guard = common::Watchdog::arm(&child, Duration::from_secs(120));
    let out = child.wait_with_output().unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "chromium failed:\n{stderr}");
    // A page that fetched something, or failed to load, says so in the log.
    for bad in ["net::ERR_", "CONSOLE(", "Failed to load", "Uncaught"] {
        assert!(!stderr.contains(bad), "{bad} in chromium's log:\n{stderr}");
    }
    String::from_utf8(out.stdout).unwrap()
}

/// One drawn cell: `(figure, data-row, data-size, data-count)`.
type Cell = (usize, String, String, u64);

/// The cells of every `<figure>` of the DOM, in order.
fn cells(dom: &str) -> Vec<Cell> {
    let mut out = Vec::new();
    for (figure, part) in dom.split("<figure").skip(1).enumerate() {
        let part = part.split("</figure>").next().unwrap_or("");
        for rect in part.split("<rect ").skip(1) {
            let tag = rect.split('>').next().unwrap_or("");
            let attr = |name: &str| {
                let key = format!("{name}=\"");
                let from = tag.find(&key)? + key.len();
                Some(tag[from..].split('"').next()?.to_string())
            };
            if let (Some(row), Some(size), Some(count)) =
                (attr("data-row"), attr("data-size"), attr("data-count"))
            {
                out.push((figure, row, size, count.parse().unwrap()));
            }
        }
    }
    out
}

/// Every layout of [`KTAP`] is a figure whose rows sum to its counts.
fn assert_drawn_as_in_the_stream(dom: &str) {
    let layouts: Vec<Layout> = KTAP
        .lines()
        .filter_map(|l| Layout::parse(l.strip_prefix("# ")?))
        .map(Result::unwrap)
        .collect();
    let cells = cells(dom);
    let figures = dom.matches("<figure").count();
    assert_eq!(figures, layouts.len(), "one drawing per mapping");
    let sum = |figure: usize, row: &str, size: EntrySize| -> u64 {
        cells
            .iter()
            .filter(|(f, r, s, _)| *f == figure && r == row && s == size.word())
            .map(|c| c.3)
            .sum()
    };
    for (i, l) in layouts.iter().enumerate() {
        for size in EntrySize::LARGEST_FIRST {
            assert_eq!(
                sum(i, "expected", size),
                l.expected(size),
                "figure {i} {size:?}"
            );
            if let Some(counted) = l.counted(size) {
                assert_eq!(sum(i, "measured", size), counted, "figure {i} {size:?}");
            }
            let rule: u64 = l.rule.iter().filter(|r| r.0 == size).map(|r| r.1).sum();
            assert_eq!(sum(i, "rule", size), rule, "figure {i} {size:?}");
        }
        let runs = cells
            .iter()
            .filter(|c| c.0 == i && c.1 == "measured")
            .count();
        assert_eq!(runs, l.runs.len(), "figure {i}: a measured cell per run");
    }
    // The differences are marked: the MSI-X tail's lost PMDs and the PMD
    // that faulted at every touch.
    assert!(dom.matches("data-differs=\"true\"").count() >= 3, "{dom}");
}
