//! Optimal one-to-one assignment of tracks to detections under a cost limit, as ByteTrack's
//! `linear_assignment(cost, thresh)`: among all matchings that use only pairs with
//! `cost <= limit`, the one with the smallest `Σ (cost − limit)`, i.e. each match must pay
//! for itself against leaving both sides unmatched.
//!
//! The pairs under the limit split into independent groups (boxes that overlap no other
//! box's track form their own): each group is solved on its own with the Kuhn–Munkres
//! algorithm (`pathfinding`), so that a road scene of many separate objects costs little
//! more than one object does.

use pathfinding::kuhn_munkres::kuhn_munkres;
use pathfinding::matrix::Matrix;

/// Gains are integers for Kuhn–Munkres: cost differences are kept to 1e-9.
const SCALE: f64 = 1e9;

/// Reused buffers of [`assign`].
#[derive(Debug, Default)]
pub struct Assigner {
    parent: Vec<usize>,
    members_rows: Vec<Vec<usize>>,
    members_cols: Vec<Vec<usize>>,
}

impl Assigner {
    /// Matches rows (tracks) to columns (detections). `cost` is row-major, `rows × cols`.
    /// Writes each row's column into `row_match` and each column's row into `col_match`.
    pub fn assign(
        &mut self,
        cost: &[f32],
        rows: usize,
        cols: usize,
        limit: f32,
        row_match: &mut Vec<Option<usize>>,
        col_match: &mut Vec<Option<usize>>,
    ) {
        debug_assert_eq!(cost.len(), rows * cols);
        row_match.clear();
        row_match.resize(rows, None);
        col_match.clear();
        col_match.resize(cols, None);
        if rows == 0 || cols == 0 {
            return;
        }
        // Union-find over rows (0..rows) and columns (rows..rows+cols) joined by usable pairs.
        self.parent.clear();
        self.parent.extend(0..rows + cols);
        let mut any = false;
        for r in 0..rows {
            for c in 0..cols {
                if cost[r * cols + c] <= limit {
                    any = true;
                    let (a, b) = (find(&mut self.parent, r), find(&mut self.parent, rows + c));
                    if a != b {
                        self.parent[a] = b;
                    }
                }
            }
        }
        if !any {
            return;
        }
        let groups = rows + cols;
        for v in [&mut self.members_rows, &mut self.members_cols] {
            v.iter_mut().for_each(Vec::clear);
            v.resize_with(groups, Vec::new);
        }
        for r in 0..rows {
            let g = find(&mut self.parent, r);
            self.members_rows[g].push(r);
        }
        for c in 0..cols {
            let g = find(&mut self.parent, rows + c);
            self.members_cols[g].push(c);
        }
        for g in 0..groups {
            let (group_rows, group_cols) = (&self.members_rows[g], &self.members_cols[g]);
            if group_rows.is_empty() || group_cols.is_empty() {
                continue;
            }
            if let ([r], [c]) = (group_rows.as_slice(), group_cols.as_slice()) {
                row_match[*r] = Some(*c);
                col_match[*c] = Some(*r);
                continue;
            }
            solve_group(
                cost, cols, limit, group_rows, group_cols, row_match, col_match,
            );
        }
    }
}

fn find(parent: &mut [usize], mut v: usize) -> usize {
    while parent[v] != v {
        parent[v] = parent[parent[v]];
        v = parent[v];
    }
    v
}

/// Kuhn–Munkres on one group; the gain of a pair is `limit − cost` (0 for an unusable pair,
/// which is then dropped from the result).
fn solve_group(
    cost: &[f32],
    cols: usize,
    limit: f32,
    group_rows: &[usize],
    group_cols: &[usize],
    row_match: &mut [Option<usize>],
    col_match: &mut [Option<usize>],
) {
    let gain = |r: usize, c: usize| -> i64 {
        let d = cost[r * cols + c];
        if d <= limit {
            // +1: a usable pair of exactly the limit still beats leaving it unmatched.
            ((limit as f64 - d as f64) * SCALE).round() as i64 + 1
        } else {
            0
        }
    };
    // Kuhn–Munkres wants no more rows than columns: transpose when there are more tracks.
    let transposed = group_rows.len() > group_cols.len();
    let (outer, inner) = if transposed {
        (group_cols, group_rows)
    } else {
        (group_rows, group_cols)
    };
    let weights = Matrix::from_fn(outer.len(), inner.len(), |(i, j)| {
        if transposed {
            gain(inner[j], outer[i])
        } else {
            gain(outer[i], inner[j])
        }
    });
    let (_, assignment) = kuhn_munkres(&weights);
    for (i, j) in assignment.into_iter().enumerate() {
        let (r, c) = if transposed {
            (inner[j], outer[i])
        } else {
            (outer[i], inner[j])
        };
        if cost[r * cols + c] <= limit {
            row_match[r] = Some(c);
            col_match[c] = Some(r);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn run(cost: &[f32], rows: usize, cols: usize, limit: f32) -> Vec<Option<usize>> {
        let (mut r, mut c) = (vec![], vec![]);
        Assigner::default().assign(cost, rows, cols, limit, &mut r, &mut c);
        for (row, col) in r.iter().enumerate() {
            if let Some(col) = col {
                assert_eq!(c[*col], Some(row));
            }
        }
        r
    }

    #[test]
    fn optimal_not_greedy() {
        // Greedy takes (0,0) at 0.1 and leaves row 1 with 0.9; optimal is 0.2 + 0.2.
        let cost = [0.1, 0.2, 0.2, 0.9];
        assert_eq!(run(&cost, 2, 2, 0.8), vec![Some(1), Some(0)]);
    }

    #[test]
    fn pairs_over_the_limit_stay_unmatched() {
        let cost = [0.9, 0.95, 0.3, 1.0];
        assert_eq!(run(&cost, 2, 2, 0.8), vec![None, Some(0)]);
    }

    #[test]
    fn more_rows_than_columns_and_separate_groups() {
        // Rows 0 and 1 compete for column 0; row 2 alone has column 1.
        let cost = [0.5, 1.0, 0.2, 1.0, 1.0, 0.4];
        assert_eq!(run(&cost, 3, 2, 0.8), vec![None, Some(0), Some(1)]);
        assert_eq!(run(&[], 0, 3, 0.8), Vec::<Option<usize>>::new());
    }

    #[test]
    fn matches_brute_force_on_random_matrices() {
        // A small deterministic generator: the test needs variety, not quality.
        let mut state = 0x2545_f491_4f6c_dd1du64;
        let mut next = || {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            (state % 1000) as f32 / 1000.0
        };
        for _ in 0..200 {
            let (rows, cols) = (1 + (next() * 4.0) as usize, 1 + (next() * 4.0) as usize);
            let cost: Vec<f32> = (0..rows * cols).map(|_| next()).collect();
            let limit = 0.6;
            let got = run(&cost, rows, cols, limit);
            let value = |m: &[Option<usize>]| -> f64 {
                m.iter()
                    .enumerate()
                    .filter_map(|(r, c)| c.map(|c| (cost[r * cols + c] - limit) as f64))
                    .sum()
            };
            let best = brute(&cost, rows, cols, limit, 0, &mut vec![false; cols]);
            assert!((value(&got) - best).abs() < 1e-5, "{cost:?}: {got:?}");
        }
    }

    fn brute(
        cost: &[f32],
        rows: usize,
        cols: usize,
        limit: f32,
        r: usize,
        used: &mut [bool],
    ) -> f64 {
        if r == rows {
            return 0.0;
        }
        let mut best = brute(cost, rows, cols, limit, r + 1, used);
        for c in 0..cols {
            if !used[c] && cost[r * cols + c] <= limit {
                used[c] = true;
                let v = (cost[r * cols + c] - limit) as f64
                    + brute(cost, rows, cols, limit, r + 1, used);
                used[c] = false;
                best = best.min(v);
            }
        }
        best
    }
}
