//! The direct path (see `lvs_xdp_common::maglev`): a packet of a known flow of an IPv4 `mh`
//! service goes to the real server of its client's Maglev entry, without the flow table,
//! unless the entry is pinned (its real server changed), saw a new connection in the last
//! second or two, or the packet is one of the few sampled for the flow table. The fast path calls it
//! for frames it has checked, without SYN, FIN or RST.
use aya_ebpf::helpers::bpf_get_prandom_u32;
use lvs_xdp_common::{DirectService, FlowKeyV4, RealServer, flow_table, maglev};

use crate::{
    maps::{CLOCK, DIRECT, MAGLEV, REALS, SAMPLE},
    port_of, sched,
};

/// The direct service of the flow's VIP and port, if it has one.
#[inline(always)]
pub fn service(key: &FlowKeyV4) -> Option<&'static DirectService> {
    let port = port_of(key.ports);
    let d = DIRECT.get(maglev::direct_index(key.daddr, port) & (maglev::DIRECT_SLOTS - 1))?;
    (d.daddr == key.daddr && d.port == port && u32::from(d.proto) == key.proto).then_some(d)
}

/// The real server (slot and entry) the flow's packet goes to straight from the table of
/// direct service `d`, or `None` when it must go through the flow table.
#[inline(always)]
pub fn real(d: &DirectService, key: &FlowKeyV4) -> Option<(u32, &'static RealServer)> {
    let size = sched::maglev_table_size();
    if size == 0 {
        return None;
    }
    let (block, w) = sched::block_of(d.base, maglev::entry(d.flags != 0, key, size));
    let word = *MAGLEV.get(block)?.words.get(w)?;
    if word & maglev::PINNED != 0 {
        return None;
    }
    let clock = CLOCK.get(0)?;
    if maglev::syn_recent(word, clock.now) || sampled() {
        return None;
    }
    let slot = word & flow_table::SLOT_MASK;
    let real = REALS.get(slot)?;
    if real.generation == 0 || real.generation & RealServer::RETIRED != 0 || real.vlan != 0 {
        return None;
    }
    Some((slot, real))
}

/// Whether this packet is one the direct path sends through the flow table: a per-CPU count
/// down from a random gap below `SAMPLE_GAP`.
#[inline(always)]
fn sampled() -> bool {
    let Some(left) = SAMPLE.get_ptr_mut(0) else {
        return true;
    };
    // SAFETY: this CPU's entry of a per-CPU array; nothing else runs on this CPU meanwhile.
    unsafe {
        if *left > 0 {
            *left -= 1;
            return false;
        }
        *left = bpf_get_prandom_u32() % maglev::SAMPLE_GAP;
    }
    true
}
