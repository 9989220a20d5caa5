//! Maglev lookup tables for the `mh` scheduler (Eisenbud et al., "Maglev: A Fast and Reliable
//! Software Network Load Balancer", NSDI 2016), with weights.
//!
//! A table has `size` entries (a prime: 65 537 unless configured), each a real server. Every real server has its
//! own permutation of the entries, from two hashes of its address: it starts at `offset` and
//! steps by `skip`. The real servers take turns claiming the next entry of their permutation
//! that is still free, a server of weight `w` taking `w / max weight` turns a round, until every
//! entry is claimed. The data plane looks a new flow up by an unseeded hash of the client's
//! address, scaled to the table ([`lvs_xdp_common::maglev::entry`]).
//!
//! What makes two directors agree: the table depends only on the real servers' addresses and
//! weights. They are taken in address order, whatever the order of the configuration; the
//! hashes are fixed functions of the address (no seed, no CPU, no node); the turns are integer
//! arithmetic. The same input gives the same table byte for byte.
use std::net::IpAddr;

/// A real server of a table.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Member {
    pub addr: IpAddr,
    /// Real servers of weight 0 take no entry (no new connections, as in IPVS).
    pub weight: u32,
    /// What the table holds for it: its real-server slot.
    pub slot: u32,
}

/// A 64-bit hash of an address, for one of the two permutation parameters (`salt`): FNV-1a
/// over its bytes (four or sixteen) and the salt, then a 64-bit finalizer (splitmix64's).
fn address_hash(addr: IpAddr, salt: u8) -> u64 {
    let bytes: Vec<u8> = match addr {
        IpAddr::V4(a) => a.octets().to_vec(),
        IpAddr::V6(a) => a.octets().to_vec(),
    };
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in bytes.into_iter().chain([salt]) {
        h ^= u64::from(b);
        h = h.wrapping_mul(0x0000_0100_0000_01b3);
    }
    h ^= h >> 30;
    h = h.wrapping_mul(0xbf58_476d_1ce4_e5b9);
    h ^= h >> 27;
    h = h.wrapping_mul(0x94d0_49bb_1331_11eb);
    h ^ (h >> 31)
}

/// The lookup table of `size` entries (a prime) for `members` (empty if none has a weight
/// above 0): entry `i` holds the slot of the real server that clients hashed to `i` go to.
pub fn populate(size: u32, members: &[Member]) -> Vec<u32> {
    let mut members: Vec<Member> = members.iter().copied().filter(|m| m.weight > 0).collect();
    if members.is_empty() || size < 2 {
        return Vec::new();
    }
    members.sort_by_key(|m| m.addr);
    let size = u64::from(size);
    let perm: Vec<(u64, u64)> = members
        .iter()
        .map(|m| {
            (
                address_hash(m.addr, 1) % size,
                address_hash(m.addr, 2) % (size - 1) + 1,
            )
        })
        .collect();
    let max_weight = u64::from(members.iter().map(|m| m.weight).max().unwrap_or(1));
    const FREE: u32 = u32::MAX;
    let mut table = vec![FREE; size as usize];
    let mut next = vec![0u64; members.len()];
    let mut taken = vec![0u64; members.len()];
    let mut filled = 0u64;
    let mut round = 0u64;
    while filled < size {
        round += 1;
        for (i, m) in members.iter().enumerate() {
            // After `round` rounds, a server of weight w has had round * w / max turns.
            let turns = round * u64::from(m.weight) / max_weight;
            while taken[i] < turns && filled < size {
                let (offset, skip) = perm[i];
                loop {
                    let c = ((offset + next[i] * skip) % size) as usize;
                    next[i] += 1;
                    if table[c] == FREE {
                        table[c] = m.slot;
                        taken[i] += 1;
                        filled += 1;
                        break;
                    }
                }
            }
        }
    }
    table
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::{collections::HashMap, net::Ipv4Addr};

    const SIZE: u32 = lvs_xdp_common::maglev::DEFAULT_TABLE_SIZE;

    fn members(weights: &[u32]) -> Vec<Member> {
        weights
            .iter()
            .enumerate()
            .map(|(i, w)| Member {
                addr: IpAddr::V4(Ipv4Addr::new(10, 0, 1, i as u8 + 1)),
                weight: *w,
                slot: i as u32,
            })
            .collect()
    }

    fn shares(table: &[u32]) -> HashMap<u32, f64> {
        let mut n = HashMap::new();
        for s in table {
            *n.entry(*s).or_insert(0.0) += 1.0 / table.len() as f64;
        }
        n
    }

    #[test]
    fn the_table_depends_on_the_members_only_not_their_order() {
        let a = members(&[1, 2, 3, 1]);
        let mut b = a.clone();
        b.reverse();
        b.swap(0, 2);
        assert_eq!(populate(SIZE, &a), populate(SIZE, &b));
        assert_eq!(populate(SIZE, &a).len(), SIZE as usize);
        assert!(populate(SIZE, &members(&[0, 0])).is_empty());
    }

    #[test]
    fn weights_set_the_shares() {
        let s = shares(&populate(SIZE, &members(&[1, 2, 3])));
        for (slot, want) in [(0, 1.0 / 6.0), (1, 2.0 / 6.0), (2, 3.0 / 6.0)] {
            let got = s[&slot];
            assert!(
                (got - want).abs() < want * 0.02,
                "slot {slot}: {got} of the table, want {want}"
            );
        }
        let s = shares(&populate(SIZE, &members(&[1, 0, 1])));
        assert!(!s.contains_key(&1), "weight 0 takes no entry");
    }

    /// Removing one real server of N moves its own entries and few others: the share of entries
    /// that change is close to 1/N (Maglev's disruption).
    #[test]
    fn removing_one_of_n_moves_about_one_nth() {
        for n in [5usize, 10, 20] {
            let all = members(&vec![1; n]);
            let before = populate(SIZE, &all);
            let after = populate(SIZE, &all[1..]);
            let changed = before.iter().zip(&after).filter(|(a, b)| a != b).count();
            let share = changed as f64 / f64::from(SIZE);
            let own = before.iter().filter(|s| **s == 0).count() as f64 / f64::from(SIZE);
            println!(
                "mh: removing 1 of {n} changes {:.2}% of the entries (its own: {:.2}%)",
                share * 100.0,
                own * 100.0
            );
            assert!(share < 1.5 / n as f64, "1 of {n}: {share}");
            assert!(share >= own);
        }
    }

    /// Other prime sizes: every entry claimed, the same table for the same members, shares
    /// within two entries of the weights.
    #[test]
    fn any_prime_size_works() {
        use lvs_xdp_common::maglev::MIN_TABLE_SIZE;
        for size in [MIN_TABLE_SIZE, 1_021, 131_071] {
            let m = members(&[1, 2, 3]);
            let table = populate(size, &m);
            assert_eq!(table.len(), size as usize);
            assert!(
                table.iter().all(|s| *s < 3),
                "size {size}: every entry claimed"
            );
            assert_eq!(table, populate(size, &m));
            let counts = shares(&table);
            for (slot, want) in [(0u32, 1.0 / 6.0), (1, 2.0 / 6.0), (2, 3.0 / 6.0)] {
                let off = (counts[&slot] - want).abs() * f64::from(size);
                assert!(off <= 2.0, "size {size}, slot {slot}: {off} entries off");
            }
        }
    }
}
