//! lvs-xdp: an XDP direct-routing (LVS-DR) load balancer.
//!
//! Per packet: check the frame is addressed to this interface, parse up to the ports, look the
//! flow up, schedule and remember new flows, rewrite the Ethernet addresses and XDP_TX. Every
//! packet ends in exactly one verdict counter.
//!
//! A frame of a known flow in the common format (untagged, IPv4 without options) takes the fast
//! path in `fast`: one flow lookup, issued before the frame's checks. Everything else takes the
//! general path here, which parses the frame from scratch with `parse` (a tagged frame or one
//! with IP options thus pays the fast path's wasted lookup too). Both read the frame at the
//! offsets of `wire`, the one description of the wire format, and end in a `verdict::Verdict`.
#![no_std]
#![no_main]
#![feature(asm_experimental_arch)]

mod conns;
mod direct;
mod fast;
mod flows;
mod icmp;
mod maps;
mod parse;
mod persist;
mod sched;
mod stats;
mod verdict;
mod wire;

use aya_ebpf::{
    macros::{map, xdp},
    maps::ProgramArray,
    programs::XdpContext,
};
use aya_log_ebpf::debug;
use lvs_xdp_common::{
    Clock, FAMILY_V4, FAMILY_V6, Flow, Iface, PROTO_TCP, RealServer, ServiceKey, conn, reason,
    service_flags,
};

use crate::{
    flows::{Inserted, Lookup, Table, V4, V6},
    maps::{CLOCK, IFACES, REAL_STATS, SERVICE_STATS, SERVICES},
    parse::Parsed,
    verdict::{Dropped, Verdict},
    wire::{eth, load, store},
};

/// The IPv6 program, in slot 0.
#[map]
static PROGRAMS: ProgramArray = ProgramArray::with_max_entries(1, 0);

#[xdp]
pub fn lvs_xdp(ctx: XdpContext) -> u32 {
    // An untagged IPv6 frame goes to the IPv6 program at once (a tagged one after parsing).
    if fast::is_untagged_ipv6(&ctx) {
        // SAFETY: a tail call to the IPv6 program, which decides the packet from scratch.
        unsafe { PROGRAMS.tail_call(&ctx, lvs_xdp_common::map::PROGRAM_V6_SLOT) };
    }
    // Nearly every packet: a known flow in the common frame format (see `fast`).
    if let Some(verdict) = fast::forward_known_flow(&ctx) {
        return verdict.action;
    }
    let bytes = (ctx.data_end() - ctx.data()) as u64;
    let verdict = process(&ctx, bytes).unwrap_or_else(Verdict::from);
    // A forwarded packet is counted once, in its real server's counters (see `reason`).
    if verdict.reason != reason::FORWARDED {
        stats::global(verdict.reason, bytes);
    }
    verdict.action
}

/// The IPv6 program: every IPv6 frame addressed to the interface comes here from the main
/// program's tail call. A known flow in the common format takes the IPv6 fast path; every
/// other packet is parsed and decided as the general path does.
#[xdp]
pub fn lvs_xdp_v6(ctx: XdpContext) -> u32 {
    // A known flow in the common frame format (see `fast`).
    if let Some(verdict) = fast::forward_known_flow_v6(&ctx) {
        return verdict.action;
    }
    let bytes = (ctx.data_end() - ctx.data()) as u64;
    let verdict = process_v6(&ctx, bytes).unwrap_or_else(Verdict::from);
    if verdict.reason != reason::FORWARDED {
        stats::global(verdict.reason, bytes);
    }
    verdict.action
}

#[inline(always)]
fn process_v6(ctx: &XdpContext, bytes: u64) -> Result<Verdict, Dropped> {
    let iface = match IFACES.get(ctx.ingress_ifindex() as u32) {
        Some(iface) if iface.enabled != 0 => iface,
        _ => return Ok(Verdict::pass(reason::PASS_UNKNOWN_IFACE)),
    };
    let data = ctx.data();
    match parse::parse_ipv6_frame(data, ctx.data_end(), iface.mac.as_ptr() as usize)? {
        Parsed::V6(key, flags) => decide::<V6>(ctx, iface, &key, flags, bytes),
        Parsed::FragmentV6 { daddr, proto } => fragment(ServiceKey {
            addr: daddr,
            port: 0,
            proto,
            family: FAMILY_V6,
        }),
        Parsed::Pass(why) => Ok(Verdict::pass(why)),
        Parsed::IcmpTooBigV6(key) => icmp::too_big::<V6>(ctx, iface, &key, bytes),
        Parsed::IcmpTooBigUnmatched => {
            stats::global(reason::EVENT_ICMP_TOO_BIG_UNMATCHED, 0);
            Ok(Verdict::pass(reason::PASS_OTHER_PROTO))
        }
        // Not reached: the frame is IPv6.
        _ => Ok(Verdict::pass(reason::PASS_NOT_IP)),
    }
}

/// The general path: parse the frame from scratch and decide it.
#[inline(always)]
fn process(ctx: &XdpContext, bytes: u64) -> Result<Verdict, Dropped> {
    let iface = match IFACES.get(ctx.ingress_ifindex() as u32) {
        Some(iface) if iface.enabled != 0 => iface,
        _ => return Ok(Verdict::pass(reason::PASS_UNKNOWN_IFACE)),
    };
    let data = ctx.data();
    let (key, flags) = match parse::parse(data, ctx.data_end(), iface.mac.as_ptr() as usize)? {
        Parsed::Pass(why) => return Ok(Verdict::pass(why)),
        Parsed::FragmentV4 { daddr, proto } => {
            return fragment(service_key(daddr, 0, proto));
        }
        Parsed::Ipv6(_) => {
            // SAFETY: a tail call to the IPv6 program, which decides the packet from scratch.
            unsafe { PROGRAMS.tail_call(ctx, lvs_xdp_common::map::PROGRAM_V6_SLOT) };
            // Only if the slot is empty (the loader always fills it).
            return Ok(Verdict::pass(reason::PASS_IPV6_EXT));
        }
        Parsed::V6(..) | Parsed::FragmentV6 { .. } | Parsed::IcmpTooBigV6(_) => {
            return Ok(Verdict::pass(reason::PASS_IPV6_EXT));
        }
        Parsed::V4(key, flags) => (key, flags),
        Parsed::IcmpTooBigV4(key) => return icmp::too_big::<V4>(ctx, iface, &key, bytes),
        Parsed::IcmpTooBigUnmatched => {
            stats::global(reason::EVENT_ICMP_TOO_BIG_UNMATCHED, 0);
            return Ok(Verdict::pass(reason::PASS_OTHER_PROTO));
        }
    };
    decide::<V4>(ctx, iface, &key, flags, bytes)
}

/// A flow's packet: forwarded to the real server its flow remembers, or scheduled as a new
/// flow. The same for both families.
#[inline(always)]
fn decide<T: Table>(
    ctx: &XdpContext,
    iface: &Iface,
    key: &T::Key,
    flags: u8,
    bytes: u64,
) -> Result<Verdict, Dropped> {
    let clock = CLOCK.get(0).ok_or(Dropped(reason::DROP_FLOW_BUSY))?;
    let now = clock.now as u16;
    let tcp = T::proto(key) == u32::from(PROTO_TCP);

    let mut again = None;
    match flows::lookup_settled::<T>(key) {
        Lookup::Found(flow, place) => {
            let expired = conn::age(clock.now, flow.stamp) > clock.timeout(flow.state);
            let real = flows::real_of(&flow);
            // A SYN starts a new connection on a closed or expired one, and on a half-open one
            // to a real server that failed its check (`conn::restarts`).
            let reopens = tcp
                && conn::is_syn(flags)
                && (conn::reopens(flow.state, expired)
                    || real.is_some_and(|r| conn::restarts(flow.state, r.flags)));
            match real {
                Some(real) if !reopens => {
                    if tcp && conn::may_change(flow.state, flags) {
                        let state = conn::next_tcp(flow.state, flags);
                        if flows::set_state::<T>(place, key, state, now) {
                            conns::moved(flow.slot(), flow.state, state);
                        }
                    } else {
                        flows::touch::<T>(place, &flow, now);
                    }
                    stats::count(&REAL_STATS, flow.slot(), bytes, false);
                    return Ok(forward(ctx, iface, real));
                }
                // A removed real server, or a new connection on the same 5-tuple.
                _ => again = Some((place, flow, reopens)),
            }
        }
        Lookup::Busy => {
            // Other CPUs kept rewriting this flow's buckets through every retry; rare enough
            // to log each one (shown with --log-level debug; counted as drop_flow_busy).
            debug!(ctx, "flow table busy: a packet was dropped");
            return Err(Dropped(reason::DROP_FLOW_BUSY));
        }
        Lookup::Missing => {}
    }
    new_flow::<T>(ctx, iface, key, flags, again, clock, bytes)
}

/// Slow path: find the service, schedule a real server, remember the flow (in place of the
/// one at `again`, if there is one: its place, the flow, and whether a SYN opened it again).
#[inline(always)]
fn new_flow<T: Table>(
    ctx: &XdpContext,
    iface: &Iface,
    key: &T::Key,
    flags: u8,
    again: Option<(flows::Place<T>, Flow, bool)>,
    clock: &Clock,
    bytes: u64,
) -> Result<Verdict, Dropped> {
    // What the schedulers and persistence see of the flow (IPv6 addresses folded).
    let view = T::view(key);
    let svc = match SERVICES.get_ptr(T::service_key(key, port_of(view.ports))) {
        // SAFETY: a pointer into the map's value, valid for this program run (RCU).
        Some(svc) => unsafe { *svc },
        None => return Ok(Verdict::pass(reason::PASS_NO_SERVICE)),
    };
    if svc.flags & service_flags::ADDRESS_MARKER != 0 {
        // Destination port 0: not a service, only the address marker.
        return Ok(Verdict::pass(reason::PASS_NO_SERVICE));
    }
    let tcp = view.proto == u32::from(PROTO_TCP);
    // A packet without SYN that matched no flow, on a pinned Maglev entry: its connection was
    // served directly by the entry's former real server, so it stays there, remembered.
    let mut pinned = None;
    if tcp && !conn::is_syn(flags) && again.is_none() {
        stats::global(reason::EVENT_FLOW_MISS_NONSYN, 0);
        pinned = sched::pinned(&svc, &view);
        if pinned.is_none() {
            // Not the start of a connection and not remembered: the hash decides, nothing is
            // remembered (a flood of such packets takes no place in the table).
            let chosen = persist::lookup::<T>(&svc, key, clock, false)
                .or_else(|| sched::by_hash(&svc, &view));
            let Some((slot, real)) = chosen else {
                stats::count_drop(&SERVICE_STATS, svc.id, bytes);
                return Err(Dropped(reason::DROP_NO_REAL_SERVER));
            };
            stats::count(&REAL_STATS, slot, bytes, false);
            return Ok(forward(ctx, iface, &real));
        }
        stats::global(reason::EVENT_FLOW_PINNED, 0);
    }
    // A persistent service's template first; a new choice makes the client's template.
    let persistent = svc.persist_timeout != 0;
    let chosen = match pinned {
        Some(found) => Some(found),
        None => match persist::lookup::<T>(&svc, key, clock, true) {
            Some(found) => Some(found),
            None => {
                let picked = sched::pick_for(&svc, &view, clock.now);
                if let Some((slot, real)) = picked {
                    persist::record::<T>(&svc, key, slot, real.generation, clock);
                }
                picked
            }
        },
    };
    let Some((mut slot, mut real)) = chosen else {
        stats::count_drop(&SERVICE_STATS, svc.id, bytes);
        return Err(Dropped(reason::DROP_NO_REAL_SERVER));
    };
    let state = match again {
        _ if !tcp => conn::UDP,
        // An established connection, as far as the director can tell.
        _ if pinned.is_some() => conn::next_tcp(conn::ESTABLISHED, flags),
        _ if conn::is_syn(flags) => conn::SYN_RECV,
        Some((_, old, _)) => conn::next_tcp(old.state, flags),
        None => conn::SYN_RECV,
    };
    let now = clock.now as u16;
    let flow = Flow::new(slot, real.generation, view.proto as u8, state, now);
    let mut new_conn = pinned.is_none();
    let result = match again {
        Some((place, _, _)) => flows::replace::<T>(place, key, flow, clock),
        None => flows::insert::<T>(key, flow, clock),
    };
    match result {
        Inserted::Done => {
            match again {
                Some((_, _, false)) => stats::global(reason::EVENT_FLOW_RESCHEDULED, 0),
                // The connection it replaces leaves its real server's counts.
                Some((_, old, true)) if flows::real_of(&old).is_some() => {
                    conns::add(old.slot(), old.state, -1)
                }
                _ => {}
            }
            conns::add(slot, state, 1);
        }
        Inserted::Raced(other) => {
            // Another CPU scheduled this flow between our lookup and insert: follow its choice.
            stats::global(reason::EVENT_FLOW_RACE, 0);
            if let Some(r) = flows::real_of(&other) {
                slot = other.slot();
                real = *r;
                new_conn = false;
            }
        }
        Inserted::Failed => {
            // Not remembered: its later packets are misses, so this one goes where they will
            // (for a persistent service, where its template says).
            stats::global(reason::EVENT_FLOW_INSERT_FAILED, 0);
            if !persistent && let Some((s, r)) = sched::by_hash(&svc, &view) {
                slot = s;
                real = r;
            }
        }
    }
    stats::count(&REAL_STATS, slot, bytes, new_conn);
    Ok(forward(ctx, iface, &real))
}

/// A fragment carries no ports. Fragments for a VIP are dropped (they could not be sent to the
/// same real server as their first fragment); others are the host's business.
#[inline(always)]
fn fragment(marker: ServiceKey) -> Result<Verdict, Dropped> {
    if SERVICES.get_ptr(marker).is_some() {
        Err(Dropped(reason::DROP_FRAGMENT))
    } else {
        Ok(Verdict::pass(reason::PASS_FRAGMENT))
    }
}

/// The destination port (as on the wire) from the ports word of a flow key.
#[inline(always)]
pub(crate) fn port_of(ports: u32) -> u16 {
    let b = ports.to_ne_bytes();
    u16::from_ne_bytes([b[2], b[3]])
}

#[inline(always)]
fn service_key(daddr: u32, port: u16, proto: u8) -> ServiceKey {
    ServiceKey {
        addr: [daddr, 0, 0, 0],
        port,
        proto,
        family: FAMILY_V4,
    }
}

/// Direct routing: only the Ethernet addresses change (and, for a real server on a VLAN, the
/// tag). Nothing else in the frame is touched.
#[inline(always)]
fn forward(ctx: &XdpContext, iface: &Iface, real: &RealServer) -> Verdict {
    if real.vlan != 0 {
        return forward_to_vlan(ctx, iface, real);
    }
    let data = ctx.data();
    // The verifier wants the check on this very pointer; the parser made it for the same frame.
    if data + eth::TYPE > ctx.data_end() {
        return Dropped(reason::DROP_MALFORMED).into();
    }
    // SAFETY: both MACs' bytes of frame checked above.
    unsafe { set_macs(data, real, iface) };
    Verdict::FORWARDED
}

/// [`forward`] to a real server on VLAN `real.vlan`: a tagged frame gets that VID (its priority
/// kept), an untagged one a tag pushed in front of its ethertype (TPID 802.1Q, priority 0).
#[inline(never)]
fn forward_to_vlan(ctx: &XdpContext, iface: &Iface, real: &RealServer) -> Verdict {
    let vid_wire = (real.vlan & 0x0fff).to_be();
    let data = ctx.data();
    if data + eth::LEN > ctx.data_end() {
        return Dropped(reason::DROP_MALFORMED).into();
    }
    // SAFETY: 14 bytes of frame checked above.
    let tpid = unsafe { load::<u16>(data + eth::TYPE) };
    if tpid == eth::P_8021Q_WIRE || tpid == eth::P_8021AD_WIRE {
        if data + eth::LEN + eth::VLAN_LEN > ctx.data_end() {
            return Dropped(reason::DROP_MALFORMED).into();
        }
        // SAFETY: the tag's bytes checked above.
        unsafe {
            let tci = load::<u16>(data + eth::TCI);
            store(data + eth::TYPE, eth::P_8021Q_WIRE);
            store(data + eth::TCI, (tci & eth::TCI_PCP_DEI_WIRE) | vid_wire);
            set_macs(data, real, iface);
        }
        return Verdict::FORWARDED;
    }
    // Four bytes more in front: the new addresses, the tag, then the ethertype where it was.
    // SAFETY: the helper takes the context the program was given.
    if unsafe { aya_ebpf::helpers::bpf_xdp_adjust_head(ctx.ctx, -(eth::VLAN_LEN as i32)) } != 0 {
        return Dropped(reason::DROP_MALFORMED).into();
    }
    let data = ctx.data();
    if data + eth::LEN + eth::VLAN_LEN > ctx.data_end() {
        return Dropped(reason::DROP_MALFORMED).into();
    }
    // SAFETY: 18 bytes of the grown frame checked above.
    unsafe {
        store(data + eth::TYPE, eth::P_8021Q_WIRE);
        store(data + eth::TCI, vid_wire);
        set_macs(data, real, iface);
    }
    Verdict::FORWARDED
}

/// Writes the real server's MAC as the destination and the interface's as the source.
///
/// # Safety
/// `data` must point at a frame of at least `eth::TYPE` (12) bytes, checked against `data_end`
/// (the verifier wants that check on the same pointer).
#[inline(always)]
unsafe fn set_macs(data: usize, real: &RealServer, iface: &Iface) {
    let dst = real.mac.as_ptr() as usize;
    let src = iface.mac.as_ptr() as usize;
    // SAFETY: 12 bytes of frame per the caller; both MACs are 6-byte fields of map values.
    unsafe {
        store(data + eth::DST, load::<u32>(dst));
        store(data + eth::DST + 4, load::<u16>(dst + 4));
        store(data + eth::SRC, load::<u16>(src));
        store(data + eth::SRC + 2, load::<u32>(src + 2));
    }
}

#[cfg(not(test))]
#[panic_handler]
fn panic(_info: &core::panic::PanicInfo) -> ! {
    loop {}
}

#[unsafe(link_section = "license")]
#[unsafe(no_mangle)]
static LICENSE: [u8; 13] = *b"Dual MIT/GPL\0";
