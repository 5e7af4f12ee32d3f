//! `report.html`: one self-contained page (inline CSS and SVG, no script, no
//! network) with the summary, the table of tests with their reasons, the
//! tests × kernels matrix when several kernels ran, and a drawing of every
//! mapping a test measured.
//!
//! A drawing has one row per [`picture::rows`] row; each cell is an SVG
//! `<rect>` carrying `data-row`, `data-size` and `data-count`, so a program
//! can check the page against `results.json` (`runner/tests/html_report.rs`
//! does, in headless Chromium).

use crate::layout::MappingLayout;
use crate::picture::{self, Row, Scale};
use crate::report::{Outcome, Results, Run, Tally};
use std::fmt::Write as _;
use std::path::Path;

/// The drawing area's width in SVG units, beside the row labels.
const DRAW_WIDTH: f64 = 760.0;
/// Width of the row labels.
const LABEL_WIDTH: f64 = 120.0;
/// Height of a row, and the gap below it.
const ROW_HEIGHT: f64 = 26.0;
const ROW_GAP: f64 = 8.0;
/// Blocks are outlined one by one up to this many per cell (more would blur).
const MAX_DIVIDERS: u64 = 64;

const STYLE: &str = "\
body{font:14px/1.4 system-ui,sans-serif;margin:1.5em;color:#222}
h1{font-size:1.4em}h2{font-size:1.15em;margin-top:1.6em}h3{font-size:1em;margin:1.2em 0 .3em}
table{border-collapse:collapse}td,th{border:1px solid #ccc;padding:2px 8px;text-align:left;vertical-align:top}
code,.mono{font-family:ui-monospace,monospace;font-size:12px}
.pass{background:#dff3df}.fail,.xpass{background:#f8d7d7}.skip{background:#eee}.xfail{background:#fdf0c8}
svg text{font:11px ui-monospace,monospace}
rect.pud{fill:#3b6fb6}rect.pmd{fill:#6fa8dc}rect.pte{fill:#cfe2f3}rect.unknown{fill:url(#hatch)}
rect.cell{stroke:#fff;stroke-width:1}rect.differs{stroke:#d00;stroke-width:3}
line.block{stroke:#fff;stroke-width:.6}
.legend span{display:inline-block;padding:0 .6em;margin-right:.4em}
";

/// Writes `report.html` for `results` into `dir`.
pub fn write(results: &Results, dir: &Path) -> anyhow::Result<()> {
    let path = dir.join("report.html");
    std::fs::write(&path, page(results))
        .map_err(|e| anyhow::anyhow!("writing {}: {e}", path.display()))
}

/// The whole page.
pub fn page(results: &Results) -> String {
    let mut out = String::new();
    out.push_str("<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">");
    out.push_str("<title>bigbar report</title><style>");
    out.push_str(STYLE);
    out.push_str("</style></head><body>\n<h1>bigbar report</h1>\n");
    out.push_str(&summary(results));
    if results.runs.len() > 1 {
        out.push_str(&matrix(results));
    }
    for run in &results.runs {
        out.push_str(&run_section(run));
    }
    out.push_str("</body></html>\n");
    out
}

/// Escapes text for HTML content and attribute values.
pub fn escape(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            c => out.push(c),
        }
    }
    out
}

fn summary(results: &Results) -> String {
    let mut out = String::from("<h2>Summary</h2>\n<table id=\"summary\"><tr><th>kernel</th><th>release</th><th>qemu</th><th>accel</th><th>BARs</th><th>outcome</th><th>verdicts</th></tr>\n");
    for run in &results.runs {
        let _ = writeln!(
            out,
            "<tr><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td class=\"mono\">{}</td><td>{}</td><td>{}</td></tr>",
            escape(&run.kernel.spec),
            escape(run.kernel.release.as_deref().unwrap_or("unknown")),
            escape(&run.qemu.version),
            escape(&run.accel),
            escape(&run.bars),
            escape(&outcome(&run.outcome)),
            escape(&Tally::of(&run.tests).summary_line())
        );
    }
    out.push_str("</table>\n");
    out
}

fn outcome(o: &Outcome) -> String {
    match o {
        Outcome::Completed => "completed".into(),
        Outcome::KernelCrashed(why) => format!("kernel crashed: {why}"),
        Outcome::TimedOut(why) => format!("timed out: {why}"),
        Outcome::Infrastructure(why) => format!("not tested: {why}"),
    }
}

fn matrix(results: &Results) -> String {
    let (names, columns) = crate::matrix::grid(results);
    let mut out = String::from("<h2>Kernel matrix</h2>\n<table id=\"matrix\"><tr><th>test</th>");
    for h in crate::matrix::headers(results) {
        let _ = write!(out, "<th>{}</th>", escape(&h));
    }
    out.push_str("</tr>\n");
    for (i, name) in names.iter().enumerate() {
        let _ = write!(out, "<tr><td><code>{}</code></td>", escape(name));
        for c in &columns {
            let _ = write!(out, "<td class=\"{0}\">{0}</td>", escape(&c[i]));
        }
        out.push_str("</tr>\n");
    }
    out.push_str("</table>\n");
    out
}

fn run_section(run: &Run) -> String {
    let mut out = format!(
        "<h2>Tests on {}</h2>\n<table class=\"tests\"><tr><th>test</th><th>rules</th><th>verdict</th><th>reason</th><th>mappings</th></tr>\n",
        escape(&run.kernel.spec)
    );
    for t in &run.tests {
        let verdict = format!("{:?}", t.result).to_lowercase();
        let _ = writeln!(
            out,
            "<tr><td><code>{}</code></td><td>{}</td><td class=\"{verdict}\">{verdict}</td><td>{}</td><td>{}</td></tr>",
            escape(&t.name),
            escape(&t.rules.join(", ")),
            escape(&t.reason),
            match t.layouts.len() {
                0 => "0".to_string(),
                n => format!("<a href=\"#{}\">{n}</a>", escape(&t.name)),
            }
        );
    }
    out.push_str("</table>\n");
    let drawn: Vec<_> = run.tests.iter().filter(|t| !t.layouts.is_empty()).collect();
    if !drawn.is_empty() {
        out.push_str("<h2>Mappings</h2>\n");
        out.push_str(LEGEND);
    }
    for t in drawn {
        let verdict = format!("{:?}", t.result).to_lowercase();
        let _ = writeln!(
            out,
            "<h3 id=\"{0}\"><code>{0}</code> <span class=\"{verdict}\">{verdict}</span></h3>",
            escape(&t.name)
        );
        for (i, l) in t.layouts.iter().enumerate() {
            out.push_str(&figure(&t.name, i, l));
        }
    }
    out
}

const LEGEND: &str = "<p class=\"legend\"><span style=\"background:#3b6fb6;color:#fff\">1 GiB (PUD)</span>\
<span style=\"background:#6fa8dc\">2 MiB (PMD)</span><span style=\"background:#cfe2f3\">4 KiB (PTE)</span>\
<span style=\"outline:3px solid #d00\">differs from the row above</span> hatched: no single size explains the count. \
Widths grow with the logarithm of the bytes covered.</p>\n";

/// One mapping: a caption with its numbers and the drawing.
fn figure(test: &str, index: usize, l: &MappingLayout) -> String {
    let congruence: Vec<String> = l
        .congruence
        .iter()
        .map(|c| {
            format!(
                "mod {}: VA ≡ {:#x}, phys ≡ {:#x} (offset ≡ {:#x}){}",
                if c.block == "pud" { "1 GiB" } else { "2 MiB" },
                c.va_mod,
                c.phys_mod,
                c.offset_mod,
                if c.congruent { " ✓" } else { " ✗" }
            )
        })
        .collect();
    let counted = match &l.counted {
        Some(c) => format!("{} PUD, {} PMD, {} PTE", c.pud, c.pmd, c.pte),
        None => "not one size per run".into(),
    };
    format!(
        "<figure class=\"layout\" data-test=\"{}\" data-index=\"{index}\"><figcaption>{} — BAR {} \
         [{:#x}, +{:#x}) at VA {:#x}; expected {} PUD, {} PMD, {} PTE; counted {counted}; {}</figcaption>\n{}</figure>\n",
        escape(test),
        escape(&l.what),
        l.bar,
        l.offset,
        l.len,
        l.start,
        l.expected.pud,
        l.expected.pmd,
        l.expected.pte,
        escape(&congruence.join("; ")),
        svg(l)
    )
}

/// The drawing of `l`.
pub fn svg(l: &MappingLayout) -> String {
    let rows = picture::rows(l);
    let scale = Scale::new(&rows, DRAW_WIDTH);
    let height = rows.len() as f64 * (ROW_HEIGHT + ROW_GAP);
    let mut out = format!(
        "<svg xmlns=\"http://www.w3.org/2000/svg\" width=\"{w}\" height=\"{height}\" viewBox=\"0 0 {w} {height}\">\
         <defs><pattern id=\"hatch\" width=\"6\" height=\"6\" patternUnits=\"userSpaceOnUse\" patternTransform=\"rotate(45)\">\
         <rect width=\"6\" height=\"6\" fill=\"#fff\"/><line x1=\"0\" y1=\"0\" x2=\"0\" y2=\"6\" stroke=\"#999\" stroke-width=\"3\"/></pattern></defs>\n",
        w = LABEL_WIDTH + DRAW_WIDTH + 4.0
    );
    for (i, row) in rows.iter().enumerate() {
        let y = i as f64 * (ROW_HEIGHT + ROW_GAP);
        let _ = writeln!(
            out,
            "<text x=\"0\" y=\"{:.1}\">{}</text>",
            y + ROW_HEIGHT * 0.65,
            row.label
        );
        out.push_str(&row_cells(row, &scale, y));
    }
    out.push_str("</svg>\n");
    out
}

/// The cells of one row at height `y`.
fn row_cells(row: &Row, scale: &Scale, y: f64) -> String {
    let mut out = String::new();
    for c in &row.cells {
        let x = LABEL_WIDTH + scale.x(c.from);
        let w = (scale.x(c.to) - scale.x(c.from)).max(1.0);
        let differs = if c.differs { " differs" } else { "" };
        let _ = writeln!(
            out,
            "<rect class=\"cell {size}{differs}\" data-row=\"{row}\" data-size=\"{size}\" data-count=\"{count}\" \
             data-differs=\"{d}\" x=\"{x:.1}\" y=\"{y:.1}\" width=\"{w:.1}\" height=\"{ROW_HEIGHT}\">\
             <title>{row}: {count} × {size} at BAR offset [{from:#x}, {to:#x})</title></rect>",
            size = c.size,
            row = row.name,
            count = c.count,
            d = c.differs,
            from = c.from,
            to = c.to,
        );
        if c.size != "unknown" && (2..=MAX_DIVIDERS).contains(&c.count) {
            for k in 1..c.count {
                let bx = x + w * k as f64 / c.count as f64;
                let _ = write!(
                    out,
                    "<line class=\"block\" x1=\"{bx:.1}\" y1=\"{y:.1}\" x2=\"{bx:.1}\" y2=\"{:.1}\"/>",
                    y + ROW_HEIGHT
                );
            }
            out.push('\n');
        }
        if w > 44.0 {
            let _ = writeln!(
                out,
                "<text x=\"{:.1}\" y=\"{:.1}\" fill=\"{}\">{}×{}</text>",
                x + 3.0,
                y + ROW_HEIGHT * 0.65,
                if c.size == "pud" { "#fff" } else { "#000" },
                c.count,
                short_size(&c.size)
            );
        }
    }
    out
}

fn short_size(size: &str) -> &'static str {
    match size {
        "pud" => "1G",
        "pmd" => "2M",
        "pte" => "4K",
        _ => "faults",
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ktap::{TestResult, Verdict};
    use crate::layout::tests::{lost_pmds, pte_instead_of_pmd};
    use crate::report::Run;
    use protocol::ktap::layout::EntrySize;

    fn results(layouts: Vec<MappingLayout>, kernels: &[&str]) -> Results {
        let runs = kernels
            .iter()
            .map(|k| {
                let mut t = TestResult::new("a3.msix_hole", Verdict::Fail, "a3.msix_hole: <lost>");
                t.layouts = layouts.clone();
                t.rules = vec!["A3".into()];
                Run {
                    tests: vec![t, TestResult::new("f1.case_table", Verdict::Pass, "")],
                    ..Run::blank(k, Outcome::Completed)
                }
            })
            .collect();
        Results { runs }
    }

    /// `(data-row, data-size, data-count)` of every rect with a data-row.
    fn cells(html: &str) -> Vec<(String, String, u64)> {
        html.split("<rect ")
            .skip(1)
            .filter_map(|r| {
                let attr = |name: &str| {
                    let key = format!("{name}=\"");
                    let from = r.find(&key)? + key.len();
                    Some(r[from..].split('"').next()?.to_string())
                };
                Some((
                    attr("data-row")?,
                    attr("data-size")?,
                    attr("data-count")?.parse().ok()?,
                ))
            })
            .collect()
    }

    #[rstest::rstest]
    #[case(lost_pmds(), 4, 1)]
    #[case(pte_instead_of_pmd(), 10, 1)]
    fn rects_carry_the_data(
        #[case] l: MappingLayout,
        #[case] rects: usize,
        #[case] differing: usize,
    ) {
        let s = svg(&l);
        let c = cells(&s);
        assert_eq!(c.len(), rects, "{s}");
        assert_eq!(s.matches("data-differs=\"true\"").count(), differing);
        let sum = |row: &str, size: &str| -> u64 {
            c.iter()
                .filter(|(r, s, _)| r == row && s == size)
                .map(|(_, _, n)| n)
                .sum()
        };
        for size in EntrySize::LARGEST_FIRST {
            assert_eq!(sum("expected", size.word()), l.expected.get(size));
            if let Some(counted) = l.counted {
                assert_eq!(sum("measured", size.word()), counted.get(size));
            }
        }
    }

    #[rstest::rstest]
    #[case(&["debian:sid"], false)]
    #[case(&["debian:sid", "stock"], true)]
    fn the_page_has_its_sections(#[case] kernels: &[&str], #[case] has_matrix: bool) {
        let html = page(&results(vec![lost_pmds()], kernels));
        assert!(html.starts_with("<!DOCTYPE html>"));
        assert!(html.contains("id=\"summary\""));
        assert_eq!(html.contains("id=\"matrix\""), has_matrix);
        assert_eq!(html.matches("<figure").count(), kernels.len());
        // Reasons are escaped; nothing is fetched.
        assert!(html.contains("&lt;lost&gt;"));
        assert!(!html.contains("<script"));
        assert!(!html.contains("https://"));
    }

    #[rstest::rstest]
    #[case("a<b", "a&lt;b")]
    #[case("\"x\" & 'y'", "&quot;x&quot; &amp; &#39;y&#39;")]
    fn escaping(#[case] text: &str, #[case] want: &str) {
        assert_eq!(escape(text), want);
    }
}
