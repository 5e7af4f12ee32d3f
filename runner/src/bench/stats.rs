//! Median and spread of repeated measurements.

use serde::{Deserialize, Serialize};

/// Summary of one figure measured several times.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct Summary {
    /// Number of measurements.
    pub n: usize,
    /// The median (mean of the two middle values for an even count).
    pub median: f64,
    /// The smallest measurement.
    pub min: f64,
    /// The largest measurement.
    pub max: f64,
}

impl Summary {
    /// Summarises `values`; `None` when there is none (or one is NaN, which no
    /// measurement here can produce and which has no place in an order).
    pub fn of(values: &[f64]) -> Option<Summary> {
        if values.is_empty() || values.iter().any(|v| v.is_nan()) {
            return None;
        }
        let mut v = values.to_vec();
        v.sort_by(f64::total_cmp);
        let mid = v.len() / 2;
        let median = if v.len() % 2 == 1 {
            v[mid]
        } else {
            (v[mid - 1] + v[mid]) / 2.0
        };
        Some(Summary {
            n: v.len(),
            median,
            min: v[0],
            max: v[v.len() - 1],
        })
    }

    /// Summarises the values `f` gives for `items`, skipping the `None`s.
    pub fn over<T>(items: &[T], f: impl Fn(&T) -> Option<f64>) -> Option<Summary> {
        let values: Vec<f64> = items.iter().filter_map(f).collect();
        Summary::of(&values)
    }

    /// The spread: largest minus smallest measurement.
    pub fn spread(&self) -> f64 {
        self.max - self.min
    }

    /// The same summary with every value multiplied by `k` (unit changes,
    /// extrapolation to another size).
    pub fn scaled(&self, k: f64) -> Summary {
        let (a, b) = (self.min * k, self.max * k);
        Summary {
            n: self.n,
            median: self.median * k,
            min: a.min(b),
            max: a.max(b),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rstest::rstest;

    #[rstest]
    #[case(&[3.0], 3.0, 3.0, 3.0)]
    #[case(&[5.0, 1.0, 3.0], 3.0, 1.0, 5.0)]
    #[case(&[4.0, 1.0, 2.0, 10.0], 3.0, 1.0, 10.0)]
    #[case(&[2.0, 2.0], 2.0, 2.0, 2.0)]
    #[case(&[-1.0, 7.5, 0.5, 0.5, 100.0], 0.5, -1.0, 100.0)]
    fn median_and_extremes(
        #[case] values: &[f64],
        #[case] median: f64,
        #[case] min: f64,
        #[case] max: f64,
    ) {
        let s = Summary::of(values).unwrap();
        assert_eq!(
            (s.n, s.median, s.min, s.max),
            (values.len(), median, min, max)
        );
        assert_eq!(s.spread(), max - min);
    }

    #[test]
    fn nothing_to_summarise() {
        assert_eq!(Summary::of(&[]), None);
        assert_eq!(Summary::of(&[1.0, f64::NAN]), None);
        assert_eq!(Summary::over(&[None::<f64>, None], |v| *v), None);
    }

    #[test]
    fn over_skips_missing_values() {
        let s = Summary::over(&[Some(1.0), None, Some(3.0)], |v| *v).unwrap();
        assert_eq!((s.n, s.median), (2, 2.0));
    }

    #[test]
    fn scaling_keeps_min_below_max() {
        let s = Summary::of(&[9.0, 10.0, 12.0]).unwrap();
        assert_eq!(s.scaled(2.0).spread(), 6.0);
        let k = s.scaled(-2.0);
        assert_eq!((k.median, k.min, k.max), (-20.0, -24.0, -18.0));
    }
}
