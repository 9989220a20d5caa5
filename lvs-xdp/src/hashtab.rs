//! The bucket tables of the `sh` and `dh` schedulers, as IPVS's `ip_vs_sh.c` and `ip_vs_dh.c`
//! fill them: 256 buckets, the real servers taken in turn, each holding as many consecutive
//! buckets as its weight (one at least, as IPVS gives a real server of weight 0: it is skipped
//! when looked up). The table is written as the service's scheduling range; the data plane
//! looks a client up by IPVS's bucket function (`lvs_xdp_common::scheduler::bucket`).
//!
//! One difference: IPVS takes the real servers in the order they were added, lvs-xdp in
//! address order, so that every director builds the same table from the same configuration.
use lvs_xdp_common::scheduler::HASH_BUCKETS;

/// The table for `members` (slot, weight), in their order: empty if there are none.
pub fn table(members: &[(u32, u32)]) -> Vec<u32> {
    if members.is_empty() {
        return Vec::new();
    }
    let mut out = Vec::with_capacity(HASH_BUCKETS as usize);
    let (mut i, mut held) = (0, 0);
    while out.len() < HASH_BUCKETS as usize {
        let (slot, weight) = members[i];
        out.push(slot);
        held += 1;
        if held >= weight {
            i = (i + 1) % members.len();
            held = 0;
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn buckets_follow_the_weights_in_turn() {
        let t = table(&[(7, 1), (8, 2), (9, 0)]);
        assert_eq!(t.len(), 256);
        assert_eq!(&t[..8], &[7, 8, 8, 9, 7, 8, 8, 9]);
        assert!(table(&[]).is_empty());
    }
}
