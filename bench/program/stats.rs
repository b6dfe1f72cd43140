//! Figures as the bench reports them: the median of repeated runs with the
//! minimum and maximum beside it.

use serde::Serialize;

/// The median, min and max of a figure's runs, and the runs themselves.
#[derive(Clone, Debug, Serialize)]
pub struct Summary {
    pub median: f64,
    pub min: f64,
    pub max: f64,
    pub runs: Vec<f64>,
}

impl Summary {
    /// Summarises `runs` (at least one).
    pub fn of(runs: &[f64]) -> Summary {
        assert!(!runs.is_empty(), "a figure needs at least one run");
        let mut sorted = runs.to_vec();
        sorted.sort_by(f64::total_cmp);
        let n = sorted.len();
        let median = if n % 2 == 1 {
            sorted[n / 2]
        } else {
            (sorted[n / 2 - 1] + sorted[n / 2]) / 2.0
        };
        Summary {
            median,
            min: sorted[0],
            max: sorted[n - 1],
            runs: runs.to_vec(),
        }
    }

    /// Run-by-run difference `self - other` (same number of runs).
    pub fn minus(&self, other: &Summary) -> Summary {
        let runs: Vec<f64> = self
            .runs
            .iter()
            .zip(&other.runs)
            .map(|(a, b)| a - b)
            .collect();
        Summary::of(&runs)
    }
}
