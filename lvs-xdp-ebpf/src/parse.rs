//! Header parsing. Every read goes through `ptr_at`, which checks the bounds once; anything short
//! or invalid is `Err(DROP_MALFORMED)`. Integers are read as bytes and compared as bytes: nothing
//! is ever read from the packet as an enum.
use core::mem::size_of;

use aya_ebpf::programs::XdpContext;
use lvs_xdp_common::{FlowKeyV4, PROTO_TCP, PROTO_UDP, reason};

pub const ETH_P_IPV4: [u8; 2] = [0x08, 0x00];
pub const ETH_P_IPV6: [u8; 2] = [0x86, 0xdd];
pub const ETH_P_8021Q: [u8; 2] = [0x81, 0x00];
pub const ETH_P_8021AD: [u8; 2] = [0x88, 0xa8];

#[repr(C)]
pub struct EthHdr {
    pub dst: [u8; 6],
    pub src: [u8; 6],
    pub ethertype: [u8; 2],
}

#[repr(C)]
pub struct VlanHdr {
    pub tci: [u8; 2],
    pub ethertype: [u8; 2],
}

#[repr(C)]
pub struct Ipv4Hdr {
    pub version_ihl: u8,
    pub tos: u8,
    pub tot_len: [u8; 2],
    pub id: [u8; 2],
    pub frag_off: [u8; 2],
    pub ttl: u8,
    pub proto: u8,
    pub check: [u8; 2],
    pub saddr: [u8; 4],
    pub daddr: [u8; 4],
}

/// The first four bytes of TCP and UDP alike.
#[repr(C)]
pub struct Ports {
    pub sport: [u8; 2],
    pub dport: [u8; 2],
}

const TCP_MIN_LEN: usize = 20;
const UDP_LEN: usize = 8;
/// More-fragments flag and fragment offset; DF (0x4000) is not part of it.
const IP_FRAGMENT_MASK: u16 = 0x3fff;

/// What the parser found.
pub enum Parsed {
    /// Not for the load balancer: pass to the host with this reason.
    Pass(u32),
    /// An IPv4 fragment: no ports to match on.
    FragmentV4 { daddr: [u8; 4], proto: u8 },
    /// A complete IPv4 TCP/UDP header, as a flow key.
    V4(FlowKeyV4),
}

#[inline(always)]
pub fn ptr_at<T>(ctx: &XdpContext, offset: usize) -> Result<*mut T, u32> {
    let start = ctx.data();
    let end = ctx.data_end();
    // The verifier needs this exact shape: pointer + constant-bounded offset + size <= data_end.
    if start + offset + size_of::<T>() > end {
        return Err(reason::DROP_MALFORMED);
    }
    Ok((start + offset) as *mut T)
}

#[inline(always)]
fn mac_eq(a: &[u8; 6], b: &[u8; 6]) -> bool {
    // Compared as two integers rather than six bytes.
    let a0 = u32::from_ne_bytes([a[0], a[1], a[2], a[3]]);
    let b0 = u32::from_ne_bytes([b[0], b[1], b[2], b[3]]);
    let a1 = u16::from_ne_bytes([a[4], a[5]]);
    let b1 = u16::from_ne_bytes([b[4], b[5]]);
    (a0 ^ b0) | (a1 ^ b1) as u32 == 0
}

/// Parses the frame. `own_mac` is the receiving interface's MAC: frames for any other destination
/// are passed untouched, so a frame flooded to this port is never forwarded twice.
#[inline(always)]
pub fn parse(ctx: &XdpContext, own_mac: &[u8; 6]) -> Result<(*mut EthHdr, Parsed), u32> {
    let eth: *mut EthHdr = ptr_at(ctx, 0)?;
    // SAFETY: ptr_at checked that the whole header is inside the frame.
    let (dst, mut ethertype) = unsafe { ((*eth).dst, (*eth).ethertype) };
    if !mac_eq(&dst, own_mac) {
        return Ok((eth, Parsed::Pass(reason::PASS_NOT_LOCAL)));
    }
    let mut l3 = size_of::<EthHdr>();
    if ethertype == ETH_P_8021Q || ethertype == ETH_P_8021AD {
        let vlan: *const VlanHdr = ptr_at(ctx, l3)?;
        // SAFETY: bounds checked by ptr_at.
        ethertype = unsafe { (*vlan).ethertype };
        l3 += size_of::<VlanHdr>();
    }
    if ethertype == ETH_P_IPV6 {
        return Ok((eth, Parsed::Pass(reason::PASS_IPV6)));
    }
    if ethertype != ETH_P_IPV4 {
        return Ok((eth, Parsed::Pass(reason::PASS_NOT_IP)));
    }
    let ip: *const Ipv4Hdr = ptr_at(ctx, l3)?;
    // SAFETY: bounds checked by ptr_at.
    let (version_ihl, tot_len, frag_off, proto, saddr, daddr) = unsafe {
        (
            (*ip).version_ihl,
            (*ip).tot_len,
            (*ip).frag_off,
            (*ip).proto,
            (*ip).saddr,
            (*ip).daddr,
        )
    };
    if version_ihl >> 4 != 4 {
        return Err(reason::DROP_MALFORMED);
    }
    let ihl = ((version_ihl & 0x0f) as usize) * 4;
    let tot_len = u16::from_be_bytes(tot_len) as usize;
    let frame_len = ctx.data_end() - ctx.data();
    // Options are allowed (IHL up to 15 words); the datagram must fit in the frame (padding after
    // it is fine: short frames are padded to 60 bytes).
    if ihl < size_of::<Ipv4Hdr>() || tot_len < ihl || l3 + tot_len > frame_len {
        return Err(reason::DROP_MALFORMED);
    }
    if proto != PROTO_TCP && proto != PROTO_UDP {
        return Ok((eth, Parsed::Pass(reason::PASS_OTHER_PROTO)));
    }
    if u16::from_be_bytes(frag_off) & IP_FRAGMENT_MASK != 0 {
        return Ok((eth, Parsed::FragmentV4 { daddr, proto }));
    }
    let l4_min = if proto == PROTO_TCP {
        TCP_MIN_LEN
    } else {
        UDP_LEN
    };
    if tot_len < ihl + l4_min {
        return Err(reason::DROP_MALFORMED);
    }
    let ports: *const Ports = ptr_at(ctx, l3 + ihl)?;
    // SAFETY: bounds checked by ptr_at.
    let (sport, dport) = unsafe { ((*ports).sport, (*ports).dport) };
    Ok((
        eth,
        Parsed::V4(FlowKeyV4 {
            saddr,
            daddr,
            sport,
            dport,
            proto,
            _pad: [0; 3],
        }),
    ))
}
