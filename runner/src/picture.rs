//! The picture of a measured mapping, independent of how it is drawn: its rows
//! (a rule-keeping placement, the model's expectation, the measurement) cut into
//! cells of one entry size over BAR offsets, and a scale placing them side by
//! side. The HTML report draws it as SVG, the terminal as a line of letters.
//!
//! A mapping spans 4 KiB pages up to 1 GiB blocks, so a linear scale would hide
//! the pages the MSI-X hole is about: each stretch between cell edges gets a
//! width growing with the logarithm of its length instead.

use crate::layout::{bytes_of, letter_of, MappingLayout};

/// One cell: `[from, to)` of the BAR mapped by `count` entries of `size`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Cell {
    /// First BAR offset.
    pub from: u64,
    /// BAR offset just past it.
    pub to: u64,
    /// `pud`, `pmd`, `pte`, or `unknown` (a count no single size explains).
    pub size: String,
    /// Entries (for `unknown`, the faults counted).
    pub count: u64,
    /// Whether it differs from the row above it that it is compared with.
    pub differs: bool,
}

/// One row of cells.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Row {
    /// `rule`, `expected` or `measured` (the SVG's `data-row`).
    pub name: &'static str,
    /// What the row shows, for people.
    pub label: &'static str,
    /// Its cells, in offset order, covering the mapping.
    pub cells: Vec<Cell>,
}

/// The rows of `l`, top to bottom: the rule-keeping placement (when the kernel
/// placed the mapping), the model's expectation for the address it got (its
/// cells marked where they differ from the rule's), the measurement (marked
/// where it differs from the expectation).
pub fn rows(l: &MappingLayout) -> Vec<Row> {
    let mut rule = Vec::new();
    let mut at = l.offset;
    for r in &l.rule {
        let to = at + r.count * bytes_of(&r.size);
        rule.push(cell(at, to, &r.size, r.count, false));
        at = to;
    }
    let mut expected = Vec::new();
    let mut measured = Vec::new();
    let mut at = l.offset;
    for r in &l.runs {
        let to = at + r.count * bytes_of(&r.size);
        let agrees = rule.is_empty()
            || rule
                .iter()
                .any(|c| c.from == at && c.to == to && c.size == r.size);
        expected.push(cell(at, to, &r.size, r.count, !agrees));
        let (size, count) = match (&r.measured, r.measured_count) {
            (Some(m), Some(n)) => (m.as_str(), n),
            _ => ("unknown", r.faults),
        };
        measured.push(cell(at, to, size, count, r.faults != r.expected_faults));
        at = to;
    }
    let mut out = Vec::new();
    if !rule.is_empty() {
        out.push(Row {
            name: "rule",
            label: "rule placement",
            cells: rule,
        });
    }
    out.push(Row {
        name: "expected",
        label: "expected",
        cells: expected,
    });
    out.push(Row {
        name: "measured",
        label: "measured",
        cells: measured,
    });
    out
}

fn cell(from: u64, to: u64, size: &str, count: u64, differs: bool) -> Cell {
    Cell {
        from,
        to,
        size: size.to_string(),
        count,
        differs,
    }
}

/// Positions of BAR offsets along a width: every cell edge of the rows is a
/// stop, and the stretch between two stops gets a share growing with the
/// logarithm of its length.
#[derive(Clone, Debug, PartialEq)]
pub struct Scale {
    stops: Vec<u64>,
    xs: Vec<f64>,
}

impl Scale {
    /// The scale of `rows` over `width` units.
    pub fn new(rows: &[Row], width: f64) -> Self {
        let mut stops: Vec<u64> = rows
            .iter()
            .flat_map(|r| &r.cells)
            .flat_map(|c| [c.from, c.to])
            .collect();
        stops.sort_unstable();
        stops.dedup();
        let weights: Vec<f64> = stops
            .windows(2)
            .map(|w| 1.0 + ((w[1] - w[0]) as f64 / 4096.0).log2().max(0.0))
            .collect();
        let total: f64 = weights.iter().sum();
        let mut xs = vec![0.0];
        for w in &weights {
            let last = xs.last().copied().unwrap_or(0.0);
            xs.push(last + w / total.max(f64::MIN_POSITIVE) * width);
        }
        Scale { stops, xs }
    }

    /// Where BAR offset `at` (a cell edge of the rows) lies.
    pub fn x(&self, at: u64) -> f64 {
        match self.stops.binary_search(&at) {
            Ok(i) => self.xs[i],
            Err(i) => self.xs.get(i).copied().unwrap_or(0.0),
        }
    }
}

/// The terminal version: per row a label, a line of `width` letters (G 1 GiB,
/// M 2 MiB, k 4 KiB, ? unknown) placed by the scale, and the counts; a line of
/// `^` under the measured cells that differ.
pub fn text(l: &MappingLayout, width: usize) -> String {
    let rows = rows(l);
    let scale = Scale::new(&rows, width as f64);
    let mut out = String::new();
    for row in &rows {
        let mut line = vec![' '; width];
        let mut marks = vec![' '; width];
        for c in &row.cells {
            let (a, b) = columns(&scale, c, width);
            let letter = if c.size == "unknown" {
                '?'
            } else {
                letter_of(&c.size)
            };
            for i in a..b {
                line[i] = letter;
                if c.differs {
                    marks[i] = '^';
                }
            }
        }
        let counts: Vec<String> = row
            .cells
            .iter()
            .map(|c| format!("{}{}", c.count, short(&c.size)))
            .collect();
        out.push_str(&format!(
            "      {:<15} {}  {}\n",
            row.label,
            line.iter().collect::<String>(),
            counts.join(" ")
        ));
        if marks.contains(&'^') {
            out.push_str(&format!(
                "      {:<15} {}\n",
                "",
                marks.iter().collect::<String>().trim_end()
            ));
        }
    }
    out
}

/// The columns `[a, b)` cell `c` takes: at least one.
fn columns(scale: &Scale, c: &Cell, width: usize) -> (usize, usize) {
    let a = (scale.x(c.from).round() as usize).min(width.saturating_sub(1));
    let b = (scale.x(c.to).round() as usize).clamp(a + 1, width);
    (a, b)
}

/// `k`, `M`, `G` after a count, or ` faults?` for an unknown cell.
fn short(size: &str) -> String {
    match size {
        "unknown" => " faults (no single size)".into(),
        s => letter_of(s).to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::layout::tests::{lost_pmds, pte_instead_of_pmd};

    /// A row's cells as (size, count, differs).
    type Cells<'a> = Vec<(&'a str, u64, bool)>;

    #[rstest::rstest]
    #[case(lost_pmds(), vec![("rule", vec![("pte", 511, false), ("pmd", 30, false)]),
        ("expected", vec![("pte", 15871, true)]), ("measured", vec![("pte", 15871, false)])])]
    #[case(pte_instead_of_pmd(), vec![
        ("expected", vec![("pte", 2, false), ("pmd", 1, false), ("pud", 1, false), ("pmd", 1, false), ("pte", 3, false)]),
        ("measured", vec![("pte", 2, false), ("pte", 512, true), ("pud", 1, false), ("pmd", 1, false), ("pte", 3, false)])])]
    fn rows_and_differences(#[case] l: MappingLayout, #[case] want: Vec<(&str, Cells)>) {
        let rows = rows(&l);
        let got: Vec<(&str, Cells)> = rows
            .iter()
            .map(|r| {
                let cells = r
                    .cells
                    .iter()
                    .map(|c| (c.size.as_str(), c.count, c.differs))
                    .collect();
                (r.name, cells)
            })
            .collect();
        assert_eq!(got, want);
    }

    #[test]
    fn cells_cover_the_mapping_and_edges_line_up() {
        let l = lost_pmds();
        let rows = rows(&l);
        let scale = Scale::new(&rows, 100.0);
        for r in &rows {
            assert_eq!(r.cells.first().map(|c| c.from), Some(l.offset));
            assert_eq!(r.cells.last().map(|c| c.to), Some(l.offset + l.len));
        }
        assert_eq!(scale.x(l.offset), 0.0);
        assert!((scale.x(l.offset + l.len) - 100.0).abs() < 1e-9);
        // The 511 pages get a visible share despite being 1/30 of the bytes.
        assert!(scale.x(0x400000) > 20.0);
    }

    #[rstest::rstest]
    #[case(lost_pmds(), "kkkkk", "^^^^^")]
    #[case(pte_instead_of_pmd(), "G", "^")]
    fn text_shows_letters_and_marks(
        #[case] l: MappingLayout,
        #[case] letters: &str,
        #[case] marks: &str,
    ) {
        let t = text(&l, 40);
        assert!(t.contains(letters), "{t}");
        assert!(t.contains(marks), "{t}");
        assert_eq!(t.lines().filter(|l| l.contains("measured")).count(), 1);
    }
}
