//! The direct path's userspace side (see [`lvs_xdp_common::maglev`]): the Maglev entries an
//! `mh` table pins when its real servers change, since when, and when they are unpinned; and
//! which services the data plane's `DIRECT` map lists.
use std::collections::{BTreeMap, HashMap};

use lvs_xdp_common::{
    self as common, DirectService, FlowKeyV4, Service, flow_table, maglev, scheduler, service_flags,
};

/// An entry of a Maglev table as userspace writes and reads it (in `MAGLEV` and
/// `MAGLEV_PREV`).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct MaglevEntry {
    /// The real-server slot, with the stamp of the entry's last new connection above it.
    pub slot: u32,
    /// 0, or the entry is pinned: the target of its former real server (or [`PINNED_ONLY`]).
    pub prev: u32,
}

/// `MaglevEntry::prev` of an entry pinned with no former real server to name (the flows of
/// the table are kept, but a flow found nowhere is scheduled as usual): generation 0, which
/// no live real server has.
pub const PINNED_ONLY: u32 = flow_table::SLOT_MASK;

/// What a service's table replaces.
pub enum Before<'a> {
    /// Nothing: a new service, with no flow yet.
    Nothing,
    /// A table in use, as read from the map.
    Table(&'a [MaglevEntry]),
    /// Flows scheduled some other way (another scheduler, or no real server to take): every
    /// entry is pinned, and stays so until no flow of the table is elsewhere.
    Unknown,
}

/// The entries of a new table whose real-server slots are `slots` (as `maglev::populate`
/// gives them), after `before`: an entry whose real server changes is pinned, naming the one
/// it had (`target_of` a slot: its target, slot and generation, before the change); a pinned
/// entry stays pinned, naming the same one. `since` (entry: clock second pinned) is kept up to
/// date. Stamps of new connections carry over.
pub fn build(
    slots: &[u32],
    before: Before<'_>,
    target_of: impl Fn(u32) -> Option<u32>,
    since: &mut BTreeMap<u32, u32>,
    now: u32,
) -> Vec<MaglevEntry> {
    match before {
        Before::Nothing => {
            since.clear();
            slots
                .iter()
                .map(|s| MaglevEntry { slot: *s, prev: 0 })
                .collect()
        }
        Before::Unknown => slots
            .iter()
            .enumerate()
            .map(|(i, s)| {
                since.entry(i as u32).or_insert(now);
                MaglevEntry {
                    slot: *s,
                    prev: PINNED_ONLY,
                }
            })
            .collect(),
        Before::Table(old) => slots
            .iter()
            .enumerate()
            .map(|(i, s)| {
                let o = old.get(i).copied().unwrap_or_default();
                let old_slot = o.slot & flow_table::SLOT_MASK;
                let stamp = o.slot & !flow_table::SLOT_MASK;
                let prev = if o.prev != 0 {
                    since.entry(i as u32).or_insert(now);
                    o.prev
                } else if old_slot != *s {
                    since.insert(i as u32, now);
                    target_of(old_slot).unwrap_or(PINNED_ONLY)
                } else {
                    0
                };
                MaglevEntry {
                    slot: s | stamp,
                    prev,
                }
            })
            .collect(),
    }
}

/// The entries pinned in `table` (a table taken over from a kept director): since `now`.
pub fn pinned_in(table: &[MaglevEntry], now: u32) -> BTreeMap<u32, u32> {
    table
        .iter()
        .enumerate()
        .filter(|(_, e)| e.prev != 0)
        .map(|(i, _)| (i as u32, now))
        .collect()
}

/// The `DIRECT` entry of a service (its kernel key and value) and where it goes, if it takes
/// the direct path: an IPv4 TCP `mh` service without persistence, with real servers to
/// schedule. `base` is its table's first value in `MAGLEV`.
pub fn entry(key: &common::ServiceKey, svc: &Service, base: u32) -> Option<(u32, DirectService)> {
    let eligible = svc.scheduler == scheduler::MH
        && svc.persist_timeout == 0
        && svc.sched_len > 0
        && svc.flags & service_flags::ADDRESS_MARKER == 0
        && key.family == common::FAMILY_V4
        && key.proto == common::PROTO_TCP;
    eligible.then(|| {
        let index = maglev::direct_index(key.addr[0], key.port) & (maglev::DIRECT_SLOTS - 1);
        (
            index,
            DirectService {
                daddr: key.addr[0],
                port: key.port,
                proto: common::PROTO_TCP,
                flags: u8::from(svc.flags & service_flags::MH_PORT != 0),
                base,
                _pad: 0,
            },
        )
    })
}

/// The client's entry of a flow in a table of `size` entries (IPv6 addresses folded as the
/// data plane folds them), as the data plane computes it.
pub fn entry_of(mh_port: bool, saddr: [u32; 4], ports: u32, size: u32) -> u32 {
    let key = FlowKeyV4 {
        saddr: saddr[0] ^ saddr[1] ^ saddr[2] ^ saddr[3],
        daddr: 0,
        ports,
        proto: 0,
    };
    maglev::entry(mh_port, &key, size)
}

/// Entries that may be unpinned now: pinned for `grace` seconds at least, and no live flow of
/// the table on them with another real server than theirs. `flows` are the service's live
/// flows: (entry, target); `owner_target(entry)` is the target the entry names now.
pub fn unpinnable(
    since: &BTreeMap<u32, u32>,
    now: u32,
    grace: u32,
    flows: impl IntoIterator<Item = (u32, u32)>,
    owner_target: impl Fn(u32) -> Option<u32>,
) -> Vec<u32> {
    let due: HashMap<u32, bool> = since
        .iter()
        .filter(|(_, t)| now.saturating_sub(**t) >= grace)
        .map(|(e, _)| (*e, true))
        .collect();
    if due.is_empty() {
        return Vec::new();
    }
    let mut due = due;
    for (entry, target) in flows {
        if let Some(free) = due.get_mut(&entry)
            && owner_target(entry) != Some(target)
        {
            *free = false;
        }
    }
    let mut out: Vec<u32> = due
        .into_iter()
        .filter(|(_, f)| *f)
        .map(|(e, _)| e)
        .collect();
    out.sort_unstable();
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn target(slot: u32) -> Option<u32> {
        Some(slot | 1 << flow_table::SLOT_BITS)
    }

    #[test]
    fn a_changed_entry_is_pinned_to_its_former_real_server_and_stays_so() {
        let mut since = BTreeMap::new();
        let first = build(&[1, 1, 2], Before::Nothing, target, &mut since, 10);
        assert!(first.iter().all(|e| e.prev == 0) && since.is_empty());
        // Entry 1 goes from slot 1 to slot 3; a stamp of entry 0 carries over.
        let mut old = first.clone();
        old[0].slot |= 5 << maglev::SYN_SHIFT;
        let second = build(&[1, 3, 2], Before::Table(&old), target, &mut since, 20);
        assert_eq!(
            second[0],
            MaglevEntry {
                slot: 1 | 5 << maglev::SYN_SHIFT,
                prev: 0
            }
        );
        assert_eq!(
            second[1],
            MaglevEntry {
                slot: 3,
                prev: target(1).unwrap()
            }
        );
        assert_eq!(second[2].prev, 0);
        assert_eq!(since, BTreeMap::from([(1, 20)]));
        // Changed again: still pinned to the first one, since the first change.
        let third = build(&[1, 2, 2], Before::Table(&second), target, &mut since, 30);
        assert_eq!(
            third[1],
            MaglevEntry {
                slot: 2,
                prev: target(1).unwrap()
            }
        );
        assert_eq!(since, BTreeMap::from([(1, 20)]));
        // Flows scheduled another way: every entry pinned.
        let mut since = BTreeMap::new();
        let all = build(&[1, 2], Before::Unknown, target, &mut since, 40);
        assert!(all.iter().all(|e| e.prev == PINNED_ONLY));
        assert_eq!(since.len(), 2);
    }

    #[test]
    fn an_entry_is_unpinned_after_its_grace_once_no_flow_there_is_elsewhere() {
        let since = BTreeMap::from([(1, 100), (2, 100), (3, 150)]);
        let owner = |e: u32| target(e + 10);
        // Entry 1 holds a flow of its former real server; entry 2 only flows of its own.
        let flows = [(1, target(99).unwrap()), (2, target(12).unwrap())];
        assert_eq!(unpinnable(&since, 159, 60, flows, owner), Vec::<u32>::new());
        assert_eq!(unpinnable(&since, 160, 60, flows, owner), vec![2]);
        assert_eq!(unpinnable(&since, 210, 60, flows, owner), vec![2, 3]);
        assert_eq!(unpinnable(&since, 210, 60, [], owner), vec![1, 2, 3]);
    }

    #[test]
    fn only_ipv4_tcp_mh_services_without_persistence_go_direct() {
        let key = common::ServiceKey {
            addr: [u32::from_ne_bytes([10, 0, 0, 10]), 0, 0, 0],
            port: u16::from_ne_bytes(80u16.to_be_bytes()),
            proto: common::PROTO_TCP,
            family: common::FAMILY_V4,
        };
        let svc = Service {
            scheduler: scheduler::MH,
            sched_len: 2,
            flags: service_flags::MH_PORT,
            id: 1,
            sched_start: 0,
            table: 1,
            persist_timeout: 0,
            persist_mask: [0; 4],
        };
        let (i, d) = entry(&key, &svc, 65_537).expect("direct");
        assert!(i < maglev::DIRECT_SLOTS);
        assert_eq!(
            (d.daddr, d.port, d.flags, d.base),
            (key.addr[0], key.port, 1, 65_537)
        );
        let persistent = Service {
            persist_timeout: 300,
            ..svc
        };
        assert!(entry(&key, &persistent, 0).is_none());
        let udp = common::ServiceKey {
            proto: common::PROTO_UDP,
            ..key
        };
        assert!(entry(&udp, &svc, 0).is_none());
        let rr = Service {
            scheduler: scheduler::RR,
            ..svc
        };
        assert!(entry(&key, &rr, 0).is_none());
    }
}
