//! Weighted round robin (`wrr`), as IPVS's `ip_vs_wrr.c` orders it: the current weight steps
//! down from the largest weight by the weights' greatest common divisor, and at each step every
//! real server whose weight reaches it takes a turn, in order. One full cycle of those turns is
//! written as the service's scheduling range, which the data plane walks in round robin (a
//! position per CPU), so the data plane needs nothing of its own for it.

/// The longest cycle written. Weights whose cycle (their sum over their greatest common
/// divisor) is longer are scaled down to fit first, each keeping at least one turn: the share
/// of a real server then differs from its weight's by less than one turn in 4 096.
pub const MAX_CYCLE: u64 = 4096;

fn gcd(a: u64, b: u64) -> u64 {
    if b == 0 { a } else { gcd(b, a % b) }
}

/// The cycle of turns for `members` (slot, weight), in their order; weight 0 takes none.
pub fn sequence(members: &[(u32, u32)]) -> Vec<u32> {
    let mut members: Vec<(u32, u64)> = members
        .iter()
        .filter(|(_, w)| *w > 0)
        .map(|(s, w)| (*s, u64::from(*w)))
        .collect();
    if members.is_empty() {
        return Vec::new();
    }
    let cycle = |m: &[(u32, u64)]| {
        let g = m.iter().fold(0, |g, (_, w)| gcd(g, *w));
        (m.iter().map(|(_, w)| w).sum::<u64>() / g, g)
    };
    if cycle(&members).0 > MAX_CYCLE {
        let sum: u64 = members.iter().map(|(_, w)| w).sum();
        for (_, w) in &mut members {
            *w = (*w * MAX_CYCLE / sum).max(1);
        }
    }
    let (_, g) = cycle(&members);
    let max = members.iter().map(|(_, w)| *w).max().unwrap_or(1);
    let mut out = Vec::new();
    let mut current = max;
    while current > 0 {
        out.extend(
            members
                .iter()
                .filter(|(_, w)| *w >= current)
                .map(|(s, _)| *s),
        );
        current = current.saturating_sub(g);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_order_is_ipvss() {
        // Weights 1, 2, 3 for A, B, C: IPVS picks C, B, C, A, B, C.
        assert_eq!(sequence(&[(0, 1), (1, 2), (2, 3)]), vec![2, 1, 2, 0, 1, 2]);
        // The greatest common divisor steps: 2 and 4 are 1 and 2.
        assert_eq!(sequence(&[(0, 2), (1, 4)]), vec![1, 0, 1]);
        assert_eq!(sequence(&[(0, 0), (1, 5)]), vec![1]);
        assert!(sequence(&[(0, 0)]).is_empty());
    }

    #[test]
    fn long_cycles_are_scaled_keeping_the_shares() {
        let s = sequence(&[(0, 10_000), (1, 9_999), (2, 1)]);
        assert!(s.len() as u64 <= MAX_CYCLE + 3, "{}", s.len());
        let share = |slot| s.iter().filter(|x| **x == slot).count() as f64 / s.len() as f64;
        assert!((share(0) - 0.5).abs() < 0.001 && (share(1) - 0.5).abs() < 0.001);
        assert_eq!(
            s.iter().filter(|x| **x == 2).count(),
            1,
            "at least one turn"
        );
    }
}
