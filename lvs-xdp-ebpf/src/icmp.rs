//! ICMP errors about connections of virtual services. A "fragmentation needed" (IPv4 type 3
//! code 4) or "packet too big" (ICMPv6 type 2) sent to a VIP by a router between the client
//! and the director is about a reply the real server sent: it goes to the real server that owns the quoted connection, so that its
//! path-MTU discovery works through the director (as IPVS and Katran do). Without it, large
//! replies black-hole behind a link of a smaller MTU.
use lvs_xdp_common::{Iface, reason};

use crate::{
    flows::{self, Lookup, Table},
    maps::{CLOCK, REAL_STATS, SERVICES},
    persist, sched, stats,
    verdict::{Dropped, Verdict},
};

/// Sends the error to the connection's real server: the one its flow remembers, or for a flow
/// this director does not hold, where the flow's packets without SYN would go (the service's
/// persistence template, or the flow hash: with `mh`, `sh` and `dh`, its real server). An error
/// naming no connection of a service is the host's.
#[inline(always)]
pub fn too_big<T: Table>(
    ctx: &aya_ebpf::programs::XdpContext,
    iface: &Iface,
    key: &T::Key,
    bytes: u64,
) -> Result<Verdict, Dropped> {
    let known = match flows::lookup_settled::<T>(key) {
        Lookup::Found(flow, _) => flows::real_of(&flow).map(|real| (flow.slot(), *real)),
        _ => None,
    };
    let view = T::view(key);
    let chosen = known.or_else(|| {
        let svc = SERVICES.get_ptr(T::service_key(key, crate::port_of(view.ports)))?;
        // SAFETY: a pointer into the map's value, valid for this program run (RCU).
        let svc = unsafe { *svc };
        if svc.flags & lvs_xdp_common::service_flags::ADDRESS_MARKER != 0 {
            return None;
        }
        let clock = CLOCK.get(0)?;
        persist::lookup::<T>(&svc, key, clock, false)
            .or_else(|| sched::pinned(&svc, &view))
            .or_else(|| sched::by_hash(&svc, &view))
    });
    let Some((slot, real)) = chosen else {
        stats::global(reason::EVENT_ICMP_TOO_BIG_UNMATCHED, 0);
        return Ok(Verdict::pass(reason::PASS_OTHER_PROTO));
    };
    stats::global(reason::EVENT_ICMP_TOO_BIG_FORWARDED, 0);
    stats::count(&REAL_STATS, slot, bytes, false);
    Ok(crate::forward(ctx, iface, &real))
}
