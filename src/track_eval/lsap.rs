//! Minimum-cost rectangular assignment, resolving ties exactly as the references do.
//!
//! py-motmetrics (with SciPy as its solver) and TrackEval both call SciPy's
//! `linear_sum_assignment`: the shortest augmenting path method of Crouse (2016), rows taken
//! in order, a tall matrix transposed first, columns scanned from the last to the first, and
//! among columns of equal reduced cost an unassigned one preferred. When several assignments
//! cost the same, which one is chosen decides matches and ID switches, so lookout runs the
//! same method with the same rules rather than a generic Kuhn–Munkres.

/// Reused buffers for [`Lsap::solve`].
#[derive(Debug, Default)]
pub(crate) struct Lsap {
    transposed: Vec<f64>,
    u: Vec<f64>,
    v: Vec<f64>,
    shortest: Vec<f64>,
    path: Vec<usize>,
    col_of_row: Vec<usize>,
    row_of_col: Vec<usize>,
    row_seen: Vec<bool>,
    col_seen: Vec<bool>,
    remaining: Vec<usize>,
}

const NONE: usize = usize::MAX;

impl Lsap {
    /// Assigns `min(rows, cols)` pairs of the row-major `cost` (every entry finite) with the
    /// least total cost; `pairs` gets (row, col) sorted by row.
    pub(crate) fn solve(
        &mut self,
        cost: &[f64],
        rows: usize,
        cols: usize,
        pairs: &mut Vec<(usize, usize)>,
    ) {
        debug_assert_eq!(cost.len(), rows * cols);
        debug_assert!(cost.iter().all(|c| c.is_finite()));
        pairs.clear();
        if rows == 0 || cols == 0 {
            return;
        }
        let transpose = cols < rows;
        let (nr, nc) = if transpose {
            (cols, rows)
        } else {
            (rows, cols)
        };
        let cost: &[f64] = if transpose {
            self.transposed.clear();
            self.transposed.resize(rows * cols, 0.0);
            for i in 0..rows {
                for j in 0..cols {
                    self.transposed[j * rows + i] = cost[i * cols + j];
                }
            }
            &self.transposed
        } else {
            cost
        };

        reset(&mut self.u, nr, 0.0);
        reset(&mut self.v, nc, 0.0);
        reset(&mut self.shortest, nc, f64::INFINITY);
        reset(&mut self.path, nc, NONE);
        reset(&mut self.col_of_row, nr, NONE);
        reset(&mut self.row_of_col, nc, NONE);
        reset(&mut self.row_seen, nr, false);
        reset(&mut self.col_seen, nc, false);

        for current in 0..nr {
            // Shortest augmenting path from `current` to an unassigned column.
            self.remaining.clear();
            self.remaining.extend((0..nc).rev());
            self.row_seen.fill(false);
            self.col_seen.fill(false);
            self.shortest.fill(f64::INFINITY);
            let mut min_value = 0.0;
            let mut i = current;
            let sink = loop {
                let mut index = NONE;
                let mut lowest = f64::INFINITY;
                self.row_seen[i] = true;
                for (it, &j) in self.remaining.iter().enumerate() {
                    let reduced = min_value + cost[i * nc + j] - self.u[i] - self.v[j];
                    if reduced < self.shortest[j] {
                        self.path[j] = i;
                        self.shortest[j] = reduced;
                    }
                    if self.shortest[j] < lowest
                        || (self.shortest[j] == lowest && self.row_of_col[j] == NONE)
                    {
                        lowest = self.shortest[j];
                        index = it;
                    }
                }
                min_value = lowest;
                assert!(
                    min_value.is_finite() && index != NONE,
                    "assignment costs must be finite"
                );
                let j = self.remaining[index];
                self.col_seen[j] = true;
                self.remaining.swap_remove(index);
                if self.row_of_col[j] == NONE {
                    break j;
                }
                i = self.row_of_col[j];
            };

            // Dual update.
            self.u[current] += min_value;
            for i in 0..nr {
                if self.row_seen[i] && i != current {
                    self.u[i] += min_value - self.shortest[self.col_of_row[i]];
                }
            }
            for j in 0..nc {
                if self.col_seen[j] {
                    self.v[j] -= min_value - self.shortest[j];
                }
            }

            // Augment along the path.
            let mut j = sink;
            loop {
                let i = self.path[j];
                self.row_of_col[j] = i;
                std::mem::swap(&mut self.col_of_row[i], &mut j);
                if i == current {
                    break;
                }
            }
        }

        if transpose {
            pairs.extend(
                self.col_of_row
                    .iter()
                    .enumerate()
                    .map(|(col, &row)| (row, col)),
            );
            pairs.sort_unstable();
        } else {
            pairs.extend(self.col_of_row.iter().copied().enumerate());
        }
    }
}

fn reset<T: Copy>(buffer: &mut Vec<T>, len: usize, value: T) {
    buffer.clear();
    buffer.resize(len, value);
}

#[cfg(test)]
mod tests {
    use super::*;

    fn solve(cost: &[f64], rows: usize, cols: usize) -> Vec<(usize, usize)> {
        let mut pairs = Vec::new();
        Lsap::default().solve(cost, rows, cols, &mut pairs);
        pairs
    }

    fn total(cost: &[f64], cols: usize, pairs: &[(usize, usize)]) -> f64 {
        pairs.iter().map(|&(r, c)| cost[r * cols + c]).sum()
    }

    #[test]
    fn finds_the_optimum() {
        let cost = [4.0, 1.0, 3.0, 2.0, 0.0, 5.0, 3.0, 2.0, 2.0];
        assert_eq!(solve(&cost, 3, 3), vec![(0, 1), (1, 0), (2, 2)]);
        // Wide and tall.
        let wide = [10.0, 1.0, 7.0, 2.0, 9.0, 8.0];
        assert_eq!(solve(&wide, 2, 3), vec![(0, 1), (1, 0)]);
        let tall = [10.0, 2.0, 1.0, 9.0, 7.0, 8.0];
        assert_eq!(solve(&tall, 3, 2), vec![(0, 1), (1, 0)]);
        assert!(solve(&[], 0, 3).is_empty());
    }

    #[test]
    fn ties_resolve_as_scipy() {
        // scipy.optimize.linear_sum_assignment(np.zeros((3, 3))) is the identity (scipy #11602).
        assert_eq!(solve(&[0.0; 9], 3, 3), vec![(0, 0), (1, 1), (2, 2)]);
        // np.zeros((2, 4)) → cols [0, 1]; np.zeros((4, 2)) → rows [0, 1].
        assert_eq!(solve(&[0.0; 8], 2, 4), vec![(0, 0), (1, 1)]);
        assert_eq!(solve(&[0.0; 8], 4, 2), vec![(0, 0), (1, 1)]);
        // [[1, 1], [1, 1]] → identity as well.
        assert_eq!(solve(&[1.0; 4], 2, 2), vec![(0, 0), (1, 1)]);
    }

    #[test]
    fn agrees_with_brute_force_on_random_matrices() {
        let mut state = 0x2545_f491_4f6c_dd1d_u64;
        let mut next = move || {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            (state % 7) as f64
        };
        for _ in 0..300 {
            let rows = 1 + (next() as usize % 4);
            let cols = 1 + (next() as usize % 4);
            let cost: Vec<f64> = (0..rows * cols).map(|_| next()).collect();
            let pairs = solve(&cost, rows, cols);
            assert_eq!(pairs.len(), rows.min(cols));
            let best = brute_force(&cost, rows, cols);
            assert_eq!(total(&cost, cols, &pairs), best, "{cost:?} {rows}x{cols}");
        }
    }

    /// Regression: equal-cost assignments resolve as SciPy 1.13 resolves them
    /// (`tests/data/track_eval/lsap_scipy.json`, from scripts/track-eval-reference).
    #[test]
    fn tie_heavy_matrices_match_scipy() {
        let path = concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/tests/data/track_eval/lsap_scipy.json"
        );
        let cases: serde_json::Value =
            serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap();
        let cases = cases["scipy"].as_array().unwrap();
        assert!(cases.len() >= 100);
        for case in cases {
            let rows = case["rows"].as_u64().unwrap() as usize;
            let cols = case["cols"].as_u64().unwrap() as usize;
            let cost: Vec<f64> = case["cost"]
                .as_array()
                .unwrap()
                .iter()
                .map(|v| v.as_f64().unwrap())
                .collect();
            let expected: Vec<(usize, usize)> = case["pairs"]
                .as_array()
                .unwrap()
                .iter()
                .map(|p| {
                    (
                        p[0].as_u64().unwrap() as usize,
                        p[1].as_u64().unwrap() as usize,
                    )
                })
                .collect();
            assert_eq!(solve(&cost, rows, cols), expected, "{cost:?} {rows}x{cols}");
        }
    }

    fn brute_force(cost: &[f64], rows: usize, cols: usize) -> f64 {
        fn go(cost: &[f64], rows: usize, cols: usize, row: usize, used: &mut Vec<bool>) -> f64 {
            if row == rows {
                return 0.0;
            }
            let free = used.iter().filter(|u| !**u).count();
            let mut best = f64::INFINITY;
            for c in 0..cols {
                if !used[c] {
                    used[c] = true;
                    best = best.min(cost[row * cols + c] + go(cost, rows, cols, row + 1, used));
                    used[c] = false;
                }
            }
            // A row may stay unassigned only when there are more rows than columns.
            if rows - row > free {
                best = best.min(go(cost, rows, cols, row + 1, used));
            }
            best
        }
        go(cost, rows, cols, 0, &mut vec![false; cols])
    }
}
