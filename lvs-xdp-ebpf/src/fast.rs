//! The fast path: a frame of a known flow, in the format nearly every packet has (untagged
//! Ethernet, IPv4 without options or fragmentation, TCP or UDP, addressed to this interface),
//! that does not change its connection's state (no SYN, FIN or RST).
//! It is forwarded here with as few instructions as possible; every other frame, and every
//! frame of a flow not in the table or whose real server changed, goes to the general path in
//! `main`, which decides it from scratch (and gives the same verdicts for the frames this path
//! takes).
//!
//! The flow key is read at fixed offsets and looked up *before* the checks that decide whether
//! the frame is such a frame: they do not depend on the lookup, so the CPU runs them while the
//! lookup's cache misses are outstanding. With a million flows those misses are most of a
//! packet's cost, and the instructions of the whole path decide how much of them overlaps with
//! other work (measured: 40 dependent ALU instructions ahead of the lookup cost 30 ns a packet
//! at 1 000 flows and 120 ns at 1 000 000).
use aya_ebpf::programs::XdpContext;
use lvs_xdp_common::{FlowKeyV4, FlowKeyV6, Iface, PROTO_TCP, conn};

use crate::{
    direct,
    flows::{self, Lookup, Table, V4, V6},
    maps::{CLOCK, IFACES, REAL_STATS},
    set_macs, stats,
    verdict::Verdict,
    wire::{self, eth, ipv4, ipv6, load, opaque, tcp},
};

/// Where the IPv4 header starts in an untagged frame.
const L3: usize = eth::LEN;
/// Where TCP/UDP starts in an untagged frame without IP options.
const L4: usize = L3 + ipv4::MIN_LEN;
/// Ethernet header, the fixed IPv4 header and the four bytes of ports.
const MIN_FRAME: usize = L4 + wire::PORTS + 4;
/// The three bytes at the ethertype of such a frame: IPv4, then version 4 with IHL 5.
const IPV4_NO_OPTIONS_WIRE: u32 = {
    let t = eth::P_IPV4_WIRE.to_ne_bytes();
    u32::from_ne_bytes([t[0], t[1], ipv4::VERSION_IHL_NO_OPTIONS, 0])
};
const THREE_BYTES: u32 = u32::from_ne_bytes([0xff, 0xff, 0xff, 0]);
const _: () = assert!(ipv4::VERSION_IHL == 0 && eth::TYPE + 2 == L3);

/// `Some(Verdict::FORWARDED)` when the frame was forwarded to its flow's real server (and
/// counted there); `None` when the general path must decide.
#[inline(always)]
pub fn forward_known_flow(ctx: &XdpContext) -> Option<Verdict> {
    let data = ctx.data();
    let end = ctx.data_end();
    if data + MIN_FRAME > end {
        return None;
    }
    // SAFETY: MIN_FRAME bytes are inside the frame (checked above).
    let key = unsafe {
        FlowKeyV4 {
            saddr: load::<u32>(data + L3 + ipv4::SADDR),
            daddr: load::<u32>(data + L3 + ipv4::DADDR),
            ports: load::<u32>(data + L4 + wire::PORTS),
            proto: u32::from(load::<u8>(data + L3 + ipv4::PROTO)),
        }
    };
    // A direct service's flow (see `direct`) is looked up only if the direct path cannot
    // take it; any other, before the checks, on purpose (see the module comment). A lookup
    // changes nothing.
    let direct = direct::service(&key);
    let mut found = match direct {
        None => flows::lookup::<V4>(&key),
        Some(_) => Lookup::Missing,
    };

    let iface = IFACES.get(ctx.ingress_ifindex() as u32)?;
    // SAFETY: MIN_FRAME bytes of frame as above; the MAC is a 6-byte field of a map value.
    let (mac_diff, head, tot_len, frag) = unsafe {
        (
            wire::mac_differs(data, iface.mac.as_ptr() as usize),
            load::<u32>(data + eth::TYPE) & THREE_BYTES,
            usize::from(u16::from_be(load::<u16>(data + L3 + ipv4::TOT_LEN))),
            load::<u16>(data + L3 + ipv4::FRAG) & ipv4::FRAG_MASK_WIRE,
        )
    };
    let l4_min = wire::l4_min_len(key.proto as u8)?;
    if iface.enabled == 0
        || mac_diff != 0
        || head != IPV4_NO_OPTIONS_WIRE
        || frag != 0
        || tot_len < ipv4::MIN_LEN + l4_min
        || data + L3 + tot_len > end
    {
        return None;
    }
    let flags = if key.proto as u8 == PROTO_TCP {
        // The checks above imply this one; `opaque` keeps LLVM from dropping it (the verifier
        // needs it).
        let l4 = opaque(data + L4);
        if l4 + tcp::FLAGS + 1 > end {
            return None;
        }
        // SAFETY: checked just above.
        unsafe { load::<u8>(l4 + tcp::FLAGS) }
    } else {
        0
    };
    if let Some(d) = direct {
        if flags & (conn::TCP_SYN | conn::TCP_FIN | conn::TCP_RST) == 0
            && let Some((slot, real)) = direct::real(d, &key)
        {
            // SAFETY: a whole minimal frame on `data` checked against `end` above.
            unsafe { set_macs(data, real, iface) };
            stats::count(&REAL_STATS, slot, (end - data) as u64, false);
            return Some(Verdict::FORWARDED);
        }
        found = flows::lookup::<V4>(&key);
    }
    finish::<V4>(data, end, iface, found, flags)
}

/// Whether the frame is untagged IPv6 (its ethertype).
#[inline(always)]
pub fn is_untagged_ipv6(ctx: &XdpContext) -> bool {
    let data = ctx.data();
    if data + eth::LEN > ctx.data_end() {
        return false;
    }
    // SAFETY: the Ethernet header is inside the frame.
    unsafe { load::<u16>(data + eth::TYPE) == eth::P_IPV6_WIRE }
}

/// Where the IPv6 header starts, and TCP/UDP right after it (no extension header).
const L4_V6: usize = L3 + ipv6::LEN;
const MIN_FRAME_V6: usize = L4_V6 + wire::PORTS + 4;
/// The three bytes at the ethertype of such a frame: IPv6, then version 6 (the high nibble
/// only: the low one starts the traffic class).
const IPV6_HEAD_WIRE: u32 = {
    let t = eth::P_IPV6_WIRE.to_ne_bytes();
    u32::from_ne_bytes([t[0], t[1], 0x60, 0])
};
const IPV6_HEAD_MASK: u32 = u32::from_ne_bytes([0xff, 0xff, 0xf0, 0]);

/// The IPv6 fast path, in the IPv6 program: a known flow in an untagged frame with TCP or UDP
/// right after the fixed header, as `forward_known_flow` for IPv4.
#[inline(always)]
pub fn forward_known_flow_v6(ctx: &XdpContext) -> Option<Verdict> {
    let data = ctx.data();
    let end = ctx.data_end();
    if data + MIN_FRAME_V6 > end {
        return None;
    }
    // SAFETY: MIN_FRAME_V6 bytes are inside the frame (checked above).
    let key = unsafe {
        FlowKeyV6 {
            saddr: load::<[u32; 4]>(data + L3 + ipv6::SADDR),
            daddr: load::<[u32; 4]>(data + L3 + ipv6::DADDR),
            ports: load::<u32>(data + L4_V6 + wire::PORTS),
            proto: u32::from(load::<u8>(data + L3 + ipv6::NEXT_HEADER)),
        }
    };
    // Before the checks, as for IPv4.
    let found = flows::lookup::<V6>(&key);

    let iface = IFACES.get(ctx.ingress_ifindex() as u32)?;
    // SAFETY: MIN_FRAME_V6 bytes of frame as above; the MAC is a 6-byte field of a map value.
    let (mac_diff, head, payload_len) = unsafe {
        (
            wire::mac_differs(data, iface.mac.as_ptr() as usize),
            load::<u32>(data + eth::TYPE) & IPV6_HEAD_MASK,
            usize::from(u16::from_be(load::<u16>(data + L3 + ipv6::PAYLOAD_LEN))),
        )
    };
    let l4_min = wire::l4_min_len(key.proto as u8)?;
    if iface.enabled == 0
        || mac_diff != 0
        || head != IPV6_HEAD_WIRE
        || payload_len < l4_min
        || data + L4_V6 + payload_len > end
    {
        return None;
    }
    let flags = if key.proto as u8 == PROTO_TCP {
        let l4 = opaque(data + L4_V6);
        if l4 + tcp::FLAGS + 1 > end {
            return None;
        }
        // SAFETY: checked just above.
        unsafe { load::<u8>(l4 + tcp::FLAGS) }
    } else {
        0
    };
    finish::<V6>(data, end, iface, found, flags)
}

/// The end of both fast paths: a found flow whose packet cannot change its state, to a live
/// real server, is touched, rewritten and counted.
#[inline(always)]
fn finish<T: Table>(
    data: usize,
    end: usize,
    iface: &Iface,
    found: Lookup<T>,
    flags: u8,
) -> Option<Verdict> {
    let Lookup::Found(flow, place) = found else {
        return None;
    };
    // A packet that may change the connection's state (SYN, FIN, RST, or the ACK that
    // completes a handshake) goes to the general path, which tracks it.
    if conn::may_change(flow.state, flags) {
        return None;
    }
    let real = flows::real_of(&flow)?;
    if real.vlan != 0 {
        // Its frames get a tag: the general path writes it.
        return None;
    }
    let clock = CLOCK.get(0)?;
    flows::touch::<T>(place, &flow, clock.now as u16);
    // SAFETY: both callers checked a whole minimal frame on `data` against `end`.
    unsafe { set_macs(data, real, iface) };
    stats::count(&REAL_STATS, flow.slot(), (end - data) as u64, false);
    Some(Verdict::FORWARDED)
}
