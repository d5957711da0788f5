//! Minimum-cost assignment between two sets (the Hungarian method with potentials).
//!
//! For an `n × m` cost matrix with `n ≤ m`, rows are matched to distinct columns so that the
//! summed cost is least; Kuhn's method with Jonker–Volgenant style potentials runs in
//! O(n²·m). Ties resolve the same way on every run, since the method is deterministic.

/// `cost[i][j]`, row-major, `n` rows of `m`. Returns for each row its column, or `None` for
/// rows left unmatched when there are more rows than columns.
pub fn min_cost_assignment(cost: &[f64], n: usize, m: usize) -> Vec<Option<usize>> {
    assert_eq!(cost.len(), n * m, "cost matrix shape");
    if n == 0 || m == 0 {
        return vec![None; n];
    }
    if n > m {
        // Solve the transpose and invert it.
        let t: Vec<f64> = (0..m * n).map(|x| cost[(x % n) * m + x / n]).collect();
        let cols = min_cost_assignment(&t, m, n);
        let mut rows = vec![None; n];
        for (j, i) in cols.into_iter().enumerate() {
            if let Some(i) = i {
                rows[i] = Some(j);
            }
        }
        return rows;
    }
    // 1-based arrays as in the classic formulation; column 0 is the virtual start.
    let inf = f64::INFINITY;
    let (mut u, mut v) = (vec![0.0f64; n + 1], vec![0.0f64; m + 1]);
    let mut p = vec![0usize; m + 1];
    let mut way = vec![0usize; m + 1];
    for i in 1..=n {
        p[0] = i;
        let mut j0 = 0usize;
        let mut minv = vec![inf; m + 1];
        let mut used = vec![false; m + 1];
        loop {
            used[j0] = true;
            let i0 = p[j0];
            let mut delta = inf;
            let mut j1 = 0usize;
            for j in 1..=m {
                if !used[j] {
                    let cur = cost[(i0 - 1) * m + (j - 1)] - u[i0] - v[j];
                    if cur < minv[j] {
                        minv[j] = cur;
                        way[j] = j0;
                    }
                    if minv[j] < delta {
                        delta = minv[j];
                        j1 = j;
                    }
                }
            }
            for j in 0..=m {
                if used[j] {
                    u[p[j]] += delta;
                    v[j] -= delta;
                } else {
                    minv[j] -= delta;
                }
            }
            j0 = j1;
            if p[j0] == 0 {
                break;
            }
        }
        loop {
            let j1 = way[j0];
            p[j0] = p[j1];
            j0 = j1;
            if j0 == 0 {
                break;
            }
        }
    }
    let mut rows = vec![None; n];
    for j in 1..=m {
        if p[j] != 0 {
            rows[p[j] - 1] = Some(j - 1);
        }
    }
    rows
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::rng::Rng;

    /// Least total cost over every injective map of the smaller side, by enumeration.
    fn brute(cost: &[f64], n: usize, m: usize) -> f64 {
        fn go(cost: &[f64], n: usize, m: usize, i: usize, used: &mut Vec<bool>) -> f64 {
            if i == n {
                return 0.0;
            }
            let mut best = f64::INFINITY;
            for j in 0..m {
                if !used[j] {
                    used[j] = true;
                    best = best.min(cost[i * m + j] + go(cost, n, m, i + 1, used));
                    used[j] = false;
                }
            }
            best
        }
        if n <= m {
            go(cost, n, m, 0, &mut vec![false; m])
        } else {
            let t: Vec<f64> = (0..m * n).map(|x| cost[(x % n) * m + x / n]).collect();
            go(&t, m, n, 0, &mut vec![false; n])
        }
    }

    #[test]
    fn matches_brute_force() {
        let mut rng = Rng::new(7);
        for (n, m) in [(1, 1), (3, 3), (5, 5), (4, 6), (6, 4), (2, 7), (7, 7)] {
            for _ in 0..20 {
                let cost: Vec<f64> = (0..n * m).map(|_| rng.uniform() * 10.0).collect();
                let a = min_cost_assignment(&cost, n, m);
                let total: f64 = a
                    .iter()
                    .enumerate()
                    .filter_map(|(i, j)| j.map(|j| cost[i * m + j]))
                    .sum();
                let matched = a.iter().flatten().count();
                assert_eq!(matched, n.min(m));
                let mut cols: Vec<usize> = a.iter().flatten().copied().collect();
                cols.sort_unstable();
                cols.dedup();
                assert_eq!(cols.len(), matched, "a column used twice");
                assert!((total - brute(&cost, n, m)).abs() < 1e-9, "{n}x{m}");
            }
        }
    }

    #[test]
    fn identity_when_diagonal_is_cheapest() {
        let cost = [0.0, 5.0, 9.0, 5.0, 0.1, 4.0, 9.0, 4.0, 0.0];
        assert_eq!(
            min_cost_assignment(&cost, 3, 3),
            vec![Some(0), Some(1), Some(2)]
        );
    }
}
