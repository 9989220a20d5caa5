//! Header parsing for the general path. Every read is bounds-checked against `data_end` first;
//! anything short or invalid is `Dropped(DROP_MALFORMED)`. Fields are read as integers at the
//! offsets of `wire` and compared as integers: nothing is ever read from the packet as an enum.
//! Values stay in network byte order except where a field is compared with a number.
use lvs_xdp_common::{FlowKeyV4, FlowKeyV6, PROTO_TCP, reason};

use crate::{
    verdict::Dropped,
    wire::{self, eth, icmp, icmp6, ipv4, ipv6, load, opaque, tcp},
};

const MALFORMED: Dropped = Dropped(reason::DROP_MALFORMED);

/// What the parser found.
pub enum Parsed {
    /// Not for the load balancer: pass to the host with this reason.
    Pass(u32),
    /// An IPv6 packet addressed to the interface, starting at this offset of the frame: for
    /// the IPv6 program.
    Ipv6(usize),
    /// An IPv4 fragment: no ports to match on.
    FragmentV4 { daddr: u32, proto: u8 },
    /// An IPv6 fragment (a fragment header with an offset or more to come).
    FragmentV6 { daddr: [u32; 4], proto: u8 },
    /// A complete IPv6 TCP/UDP header (after its extension headers), and the TCP flags.
    V6(FlowKeyV6, u8),
    /// A complete IPv4 TCP/UDP header, as a flow key, and the TCP flags (0 for UDP).
    V4(FlowKeyV4, u8),
    /// An ICMP "fragmentation needed" quoting a TCP/UDP packet: the flow key of the
    /// connection it belongs to, seen from the client (the quoted packet is a reply, turned
    /// around).
    IcmpTooBigV4(FlowKeyV4),
    /// An ICMPv6 "packet too big" quoting a TCP/UDP packet: as `IcmpTooBigV4`.
    IcmpTooBigV6(FlowKeyV6),
    /// An ICMP "fragmentation needed" or ICMPv6 "packet too big" whose quoted packet is
    /// truncated, invalid or not TCP/UDP.
    IcmpTooBigUnmatched,
}

/// Parses the frame at `data..end`. `own_mac` points at the receiving interface's MAC (six
/// bytes in a map value): frames for any other destination are passed untouched, so a frame
/// flooded to this port is never forwarded twice.
#[inline(always)]
pub fn parse(data: usize, end: usize, own_mac: usize) -> Result<Parsed, Dropped> {
    if data + eth::LEN > end {
        return Err(MALFORMED);
    }
    // SAFETY: the Ethernet header is inside the frame; own_mac is a 6-byte map value field.
    let (foreign, mut ethertype) = unsafe {
        (
            wire::mac_differs(data, own_mac),
            load::<u16>(data + eth::TYPE),
        )
    };
    if foreign != 0 {
        return Ok(Parsed::Pass(reason::PASS_NOT_LOCAL));
    }
    let mut l3 = data + eth::LEN;
    if ethertype == eth::P_8021Q_WIRE || ethertype == eth::P_8021AD_WIRE {
        if l3 + eth::VLAN_LEN > end {
            return Err(MALFORMED);
        }
        // SAFETY: bounds checked just above.
        ethertype = unsafe { load::<u16>(data + eth::TYPE + eth::VLAN_LEN) };
        l3 += eth::VLAN_LEN;
    }
    if ethertype == eth::P_IPV6_WIRE {
        return Ok(Parsed::Ipv6(l3 - data));
    }
    if ethertype != eth::P_IPV4_WIRE {
        return Ok(Parsed::Pass(reason::PASS_NOT_IP));
    }
    if l3 + ipv4::MIN_LEN > end {
        return Err(MALFORMED);
    }
    // SAFETY: the fixed IPv4 header is inside the frame.
    let (version_ihl, tot_len, frag, proto, saddr, daddr) = unsafe {
        (
            load::<u8>(l3 + ipv4::VERSION_IHL),
            u16::from_be(load::<u16>(l3 + ipv4::TOT_LEN)) as usize,
            load::<u16>(l3 + ipv4::FRAG),
            load::<u8>(l3 + ipv4::PROTO),
            load::<u32>(l3 + ipv4::SADDR),
            load::<u32>(l3 + ipv4::DADDR),
        )
    };
    if version_ihl >> 4 != 4 {
        return Err(MALFORMED);
    }
    let ihl = ((version_ihl & 0x0f) as usize) * 4;
    // Options are allowed (IHL up to 15 words); the datagram must fit in the frame (padding after
    // it is fine: short frames are padded to 60 bytes).
    if ihl < ipv4::MIN_LEN || tot_len < ihl || l3 + tot_len > end {
        return Err(MALFORMED);
    }
    if proto == icmp::PROTO && frag & ipv4::FRAG_MASK_WIRE == 0 {
        return Ok(icmp_v4(l3 + ihl, l3 + tot_len, end));
    }
    let Some(l4_min) = wire::l4_min_len(proto) else {
        return Ok(Parsed::Pass(reason::PASS_OTHER_PROTO));
    };
    if frag & ipv4::FRAG_MASK_WIRE != 0 {
        return Ok(Parsed::FragmentV4 { daddr, proto });
    }
    if tot_len < ihl + l4_min {
        return Err(MALFORMED);
    }
    // The verifier needs the checks below on the variable-offset pointer itself. The checks
    // above already imply them, and LLVM would drop them: `opaque` hides that.
    let (ports, flags) = ports_and_flags(opaque(l3 + ihl), end, proto)?;
    Ok(Parsed::V4(
        FlowKeyV4 {
            saddr,
            daddr,
            ports,
            proto: proto as u32,
        },
        flags,
    ))
}

/// The ports word and the TCP flags (0 for UDP) of the TCP or UDP header at `l4`. The caller
/// hides `l4`'s history from LLVM with `opaque`: the verifier needs these checks on it.
#[inline(always)]
fn ports_and_flags(l4: usize, end: usize, proto: u8) -> Result<(u32, u8), Dropped> {
    if proto == PROTO_TCP {
        if l4 + tcp::FLAGS + 1 > end {
            return Err(MALFORMED);
        }
        // SAFETY: bounds checked just above.
        Ok(unsafe { (load::<u32>(l4 + wire::PORTS), load::<u8>(l4 + tcp::FLAGS)) })
    } else {
        if l4 + wire::PORTS + 4 > end {
            return Err(MALFORMED);
        }
        // SAFETY: bounds checked just above.
        Ok((unsafe { load::<u32>(l4 + wire::PORTS) }, 0))
    }
}

/// An ICMP message at `at`, its datagram ending at `limit` (the IP total length; `end` is the
/// frame's end, for the verifier). A "fragmentation needed" quoting a TCP/UDP packet gives the
/// flow key of the connection it is about; any other message is the host's.
#[inline(always)]
fn icmp_v4(at: usize, limit: usize, end: usize) -> Parsed {
    let at = opaque(at);
    if at + icmp::LEN > limit || at + icmp::LEN > end {
        return Parsed::Pass(reason::PASS_OTHER_PROTO);
    }
    // SAFETY: the ICMP header is inside the frame (checked above).
    if unsafe { load::<u16>(at + icmp::TYPE_CODE) } != icmp::FRAG_NEEDED_WIRE {
        return Parsed::Pass(reason::PASS_OTHER_PROTO);
    }
    let quote = opaque(at + icmp::LEN);
    if quote + ipv4::MIN_LEN > limit || quote + ipv4::MIN_LEN > end {
        return Parsed::IcmpTooBigUnmatched;
    }
    // SAFETY: the quoted packet's fixed IPv4 header is inside the frame (checked above).
    let (version_ihl, proto, saddr, daddr) = unsafe {
        (
            load::<u8>(quote + ipv4::VERSION_IHL),
            load::<u8>(quote + ipv4::PROTO),
            load::<u32>(quote + ipv4::SADDR),
            load::<u32>(quote + ipv4::DADDR),
        )
    };
    let ihl = ((version_ihl & 0x0f) as usize) * 4;
    if version_ihl >> 4 != 4 || ihl < ipv4::MIN_LEN || wire::l4_min_len(proto).is_none() {
        return Parsed::IcmpTooBigUnmatched;
    }
    // The quoted ports: the first four bytes after the quoted header (an error quotes at least
    // eight).
    let ports_at = opaque(quote + ihl);
    if ports_at + wire::PORTS + 4 > limit || ports_at + wire::PORTS + 4 > end {
        return Parsed::IcmpTooBigUnmatched;
    }
    // SAFETY: checked just above.
    let ports = unsafe { load::<u32>(ports_at + wire::PORTS) };
    // The quoted packet went from the VIP to the client: the connection's key is the other
    // way round (the source and destination ports are the two halves of the word).
    Parsed::IcmpTooBigV4(FlowKeyV4 {
        saddr: daddr,
        daddr: saddr,
        ports: ports.rotate_left(16),
        proto: u32::from(proto),
    })
}

/// The IPv6 frame at `data..end` (the main program checked its MAC and found IPv6 at `l3`
/// bytes in; the check is made again: this is another program).
#[inline(always)]
pub fn parse_ipv6_frame(data: usize, end: usize, own_mac: usize) -> Result<Parsed, Dropped> {
    match parse(data, end, own_mac)? {
        Parsed::Ipv6(offset) => parse_v6(data + offset, end),
        other => Ok(other),
    }
}

/// The IPv6 packet at `l3`: its fixed header, then up to `ipv6::MAX_EXT` extension headers
/// (hop-by-hop, routing, destination options, fragment), then TCP or UDP.
#[inline(always)]
fn parse_v6(l3: usize, end: usize) -> Result<Parsed, Dropped> {
    if l3 + ipv6::LEN > end {
        return Err(MALFORMED);
    }
    // SAFETY: the fixed IPv6 header is inside the frame.
    let (version, payload_len, mut next, saddr, daddr) = unsafe {
        (
            load::<u8>(l3 + ipv6::VERSION) >> 4,
            u16::from_be(load::<u16>(l3 + ipv6::PAYLOAD_LEN)) as usize,
            load::<u8>(l3 + ipv6::NEXT_HEADER),
            load::<[u32; 4]>(l3 + ipv6::SADDR),
            load::<[u32; 4]>(l3 + ipv6::DADDR),
        )
    };
    if version != 6 {
        return Err(MALFORMED);
    }
    // The packet must fit in the frame (padding after it is fine).
    let limit = l3 + ipv6::LEN + payload_len;
    if limit > end {
        return Err(MALFORMED);
    }
    let mut at = l3 + ipv6::LEN;
    let mut fragment = false;
    for _ in 0..ipv6::MAX_EXT {
        let len = match next {
            ipv6::HOP_BY_HOP | ipv6::ROUTING | ipv6::DEST_OPTIONS => {
                let h = opaque(at);
                if h + 2 > end || h + 2 > limit {
                    return Err(MALFORMED);
                }
                // SAFETY: bounds checked just above.
                (usize::from(unsafe { load::<u8>(h + ipv6::EXT_LEN) }) + 1) * 8
            }
            ipv6::FRAGMENT => {
                let h = opaque(at);
                if h + ipv6::FRAG_LEN > end || h + ipv6::FRAG_LEN > limit {
                    return Err(MALFORMED);
                }
                // SAFETY: bounds checked just above.
                let offset_m = unsafe { load::<u16>(h + ipv6::FRAG_OFFSET_M) };
                // An atomic fragment (offset 0, no more) is a whole packet (RFC 6946).
                fragment |= offset_m & ipv6::FRAG_MASK_WIRE != 0;
                ipv6::FRAG_LEN
            }
            _ => break,
        };
        let h = opaque(at);
        if h + 1 > end {
            return Err(MALFORMED);
        }
        // SAFETY: bounds checked just above (the header's first byte).
        next = unsafe { load::<u8>(h + ipv6::EXT_NEXT) };
        at += len;
        if at > limit {
            return Err(MALFORMED);
        }
    }
    if next == icmp6::PROTO && !fragment {
        return Ok(icmp_v6(at, limit, end));
    }
    let Some(l4_min) = wire::l4_min_len(next) else {
        // An upper-layer protocol other than TCP/UDP, or a header not walked (AH, ESP, a
        // chain longer than MAX_EXT): the host's.
        let why = if ipv6::is_extension(next) {
            reason::PASS_IPV6_EXT
        } else {
            reason::PASS_OTHER_PROTO
        };
        return Ok(Parsed::Pass(why));
    };
    if fragment {
        return Ok(Parsed::FragmentV6 { daddr, proto: next });
    }
    let l4 = opaque(at);
    if l4 + l4_min > limit {
        return Err(MALFORMED);
    }
    let (ports, flags) = ports_and_flags(l4, end, next)?;
    Ok(Parsed::V6(
        FlowKeyV6 {
            saddr,
            daddr,
            ports,
            proto: u32::from(next),
        },
        flags,
    ))
}

/// An ICMPv6 message at `at` (the packet ending at `limit`): a "packet too big" quoting a
/// TCP/UDP packet (its fixed header directly followed by TCP or UDP) gives the flow key of the
/// connection it is about; any other message is the host's.
#[inline(always)]
fn icmp_v6(at: usize, limit: usize, end: usize) -> Parsed {
    let at = opaque(at);
    if at + icmp6::LEN > limit || at + icmp6::LEN > end {
        return Parsed::Pass(reason::PASS_OTHER_PROTO);
    }
    // SAFETY: the ICMPv6 header is inside the frame (checked above).
    if unsafe { load::<u16>(at + icmp6::TYPE_CODE) } != icmp6::PACKET_TOO_BIG_WIRE {
        return Parsed::Pass(reason::PASS_OTHER_PROTO);
    }
    let quote = opaque(at + icmp6::LEN);
    let ports_at = quote + ipv6::LEN;
    if ports_at + wire::PORTS + 4 > limit || ports_at + wire::PORTS + 4 > end {
        return Parsed::IcmpTooBigUnmatched;
    }
    // SAFETY: the quoted header and the four bytes after it are inside the frame.
    let (version, next, saddr, daddr, ports) = unsafe {
        (
            load::<u8>(quote + ipv6::VERSION) >> 4,
            load::<u8>(quote + ipv6::NEXT_HEADER),
            load::<[u32; 4]>(quote + ipv6::SADDR),
            load::<[u32; 4]>(quote + ipv6::DADDR),
            load::<u32>(ports_at + wire::PORTS),
        )
    };
    if version != 6 || wire::l4_min_len(next).is_none() {
        return Parsed::IcmpTooBigUnmatched;
    }
    // The quoted packet went from the VIP to the client: the connection's key is the other
    // way round.
    Parsed::IcmpTooBigV6(FlowKeyV6 {
        saddr: daddr,
        daddr: saddr,
        ports: ports.rotate_left(16),
        proto: u32::from(next),
    })
}
