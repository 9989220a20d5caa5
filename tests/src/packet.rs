//! Frames built field by field, and compared header by header.
//!
//! `Frame` describes a packet (Ethernet, optional VLAN tag, IPv4 with options, TCP or UDP, or a
//! raw payload); `build` produces the bytes with correct lengths and checksums (unless a field is
//! deliberately overridden). `decode` names every header field of a frame so that `diff` can say
//! which one differs.
use std::net::Ipv4Addr;

pub type Mac = [u8; 6];

pub const ETH_P_IP: u16 = 0x0800;
pub const ETH_P_ARP: u16 = 0x0806;
pub const ETH_P_IPV6: u16 = 0x86dd;
pub const ETH_P_8021Q: u16 = 0x8100;
pub const ETH_P_8021AD: u16 = 0x88a8;

#[derive(Clone, Debug)]
pub enum L4 {
    Tcp {
        sport: u16,
        dport: u16,
        seq: u32,
        flags: u8,
    },
    Udp {
        sport: u16,
        dport: u16,
    },
    /// Any other IP protocol (the frame's `proto` field says which), e.g. ICMP.
    Raw(Vec<u8>),
}

#[derive(Clone, Debug)]
pub struct Ipv4 {
    pub src: Ipv4Addr,
    pub dst: Ipv4Addr,
    pub proto: u8,
    pub ttl: u8,
    pub id: u16,
    /// Flags and fragment offset, as in the header (0x2000 = MF, low 13 bits = offset / 8).
    pub frag: u16,
    /// Options; padded to a multiple of 4 bytes by `build`.
    pub options: Vec<u8>,
    /// Overrides the version/IHL byte (to build invalid headers).
    pub version_ihl: Option<u8>,
    /// Overrides the total length.
    pub total_len: Option<u16>,
}

#[derive(Clone, Debug)]
pub struct Frame {
    pub dst: Mac,
    pub src: Mac,
    /// (TPID, TCI) of one VLAN tag.
    pub vlan: Option<(u16, u16)>,
    pub ethertype: u16,
    pub ip: Option<Ipv4>,
    pub l4: Option<L4>,
    pub payload: Vec<u8>,
}

impl Frame {
    fn ipv4(dst_mac: Mac, src: &str, dst: &str, proto: u8, l4: L4) -> Frame {
        Frame {
            dst: dst_mac,
            src: [0x02, 0, 0, 0, 0, 0x64],
            vlan: None,
            ethertype: ETH_P_IP,
            ip: Some(Ipv4 {
                src: src.parse().expect("src address"),
                dst: dst.parse().expect("dst address"),
                proto,
                ttl: 64,
                id: 0x1234,
                frag: 0x4000,
                options: Vec::new(),
                version_ihl: None,
                total_len: None,
            }),
            l4: Some(l4),
            payload: b"hello".to_vec(),
        }
    }

    /// A TCP SYN `src:sport -> dst:dport` sent to `dst_mac`.
    pub fn tcp(dst_mac: Mac, src: &str, sport: u16, dst: &str, dport: u16) -> Frame {
        let l4 = L4::Tcp {
            sport,
            dport,
            seq: 1,
            flags: 0x02,
        };
        Frame::ipv4(dst_mac, src, dst, 6, l4)
    }

    pub fn udp(dst_mac: Mac, src: &str, sport: u16, dst: &str, dport: u16) -> Frame {
        Frame::ipv4(dst_mac, src, dst, 17, L4::Udp { sport, dport })
    }

    /// An ICMP echo request.
    pub fn icmp(dst_mac: Mac, src: &str, dst: &str) -> Frame {
        let mut f = Frame::ipv4(dst_mac, src, dst, 1, L4::Raw(vec![8, 0, 0, 0, 0, 1, 0, 1]));
        f.payload.clear();
        f
    }

    /// An ICMP "fragmentation needed" (type 3, code 4) from `router` to `dst`, announcing
    /// `mtu` and quoting `quoted` (an IP packet, or the part of it a router keeps: its header
    /// and at least 8 bytes).
    pub fn icmp_frag_needed(
        dst_mac: Mac,
        router: &str,
        dst: &str,
        mtu: u16,
        quoted: &[u8],
    ) -> Frame {
        let mut msg = vec![3, 4, 0, 0, 0, 0];
        msg.extend_from_slice(&mtu.to_be_bytes());
        msg.extend_from_slice(quoted);
        let sum = checksum(&msg, 0);
        msg[2..4].copy_from_slice(&sum.to_be_bytes());
        let mut f = Frame::ipv4(dst_mac, router, dst, 1, L4::Raw(msg));
        f.payload.clear();
        f
    }

    /// An ARP request for `target` from `sender`.
    pub fn arp(sender: &str, target: &str) -> Frame {
        let s: Ipv4Addr = sender.parse().unwrap();
        let t: Ipv4Addr = target.parse().unwrap();
        let src = [0x02, 0, 0, 0, 0, 0x64];
        let mut body = vec![0, 1, 8, 0, 6, 4, 0, 1];
        body.extend_from_slice(&src);
        body.extend_from_slice(&s.octets());
        body.extend_from_slice(&[0; 6]);
        body.extend_from_slice(&t.octets());
        Frame {
            dst: [0xff; 6],
            src,
            vlan: None,
            ethertype: ETH_P_ARP,
            ip: None,
            l4: None,
            payload: body,
        }
    }

    /// An IPv6 packet (see [`Ipv6Packet`]) in a frame to `dst_mac`.
    pub fn v6(dst_mac: Mac, packet: &Ipv6Packet) -> Frame {
        Frame {
            dst: dst_mac,
            src: [0x02, 0, 0, 0, 0, 0x64],
            vlan: None,
            ethertype: ETH_P_IPV6,
            ip: None,
            l4: None,
            payload: packet.build(),
        }
    }

    /// A TCP segment `src:sport -> dst:dport` over IPv6 with TCP `flags` (0x02: SYN).
    pub fn tcp6(dst_mac: Mac, src: &str, sport: u16, dst: &str, dport: u16, flags: u8) -> Frame {
        Frame::v6(dst_mac, &Ipv6Packet::tcp(src, sport, dst, dport, flags))
    }

    /// A UDP datagram over IPv6.
    pub fn udp6(dst_mac: Mac, src: &str, sport: u16, dst: &str, dport: u16) -> Frame {
        Frame::v6(dst_mac, &Ipv6Packet::udp(src, sport, dst, dport))
    }

    pub fn with_vlan(mut self, tpid: u16, tci: u16) -> Frame {
        self.vlan = Some((tpid, tci));
        self
    }

    /// The TCP flags (FIN 0x01, SYN 0x02, RST 0x04, ACK 0x10); a TCP frame is a SYN unless set.
    pub fn with_tcp_flags(mut self, tcp_flags: u8) -> Frame {
        if let Some(L4::Tcp { flags, .. }) = &mut self.l4 {
            *flags = tcp_flags;
        }
        self
    }

    pub fn with_ip(mut self, f: impl FnOnce(&mut Ipv4)) -> Frame {
        f(self.ip.as_mut().expect("an IPv4 frame"));
        self
    }

    pub fn with_payload(mut self, payload: &[u8]) -> Frame {
        self.payload = payload.to_vec();
        self
    }

    /// The bytes on the wire (without FCS).
    pub fn build(&self) -> Vec<u8> {
        let mut out = Vec::new();
        out.extend_from_slice(&self.dst);
        out.extend_from_slice(&self.src);
        if let Some((tpid, tci)) = self.vlan {
            out.extend_from_slice(&tpid.to_be_bytes());
            out.extend_from_slice(&tci.to_be_bytes());
        }
        out.extend_from_slice(&self.ethertype.to_be_bytes());
        let Some(ip) = &self.ip else {
            out.extend_from_slice(&self.payload);
            return out;
        };
        let mut options = ip.options.clone();
        options.resize(options.len().next_multiple_of(4), 0);
        let ihl = 5 + options.len() / 4;
        let l4 = self.l4_bytes(ip);
        let total = (ihl * 4 + l4.len()) as u16;
        let mut hdr = vec![ip.version_ihl.unwrap_or(0x40 | ihl as u8), 0];
        hdr.extend_from_slice(&ip.total_len.unwrap_or(total).to_be_bytes());
        hdr.extend_from_slice(&ip.id.to_be_bytes());
        hdr.extend_from_slice(&ip.frag.to_be_bytes());
        hdr.extend_from_slice(&[ip.ttl, ip.proto, 0, 0]);
        hdr.extend_from_slice(&ip.src.octets());
        hdr.extend_from_slice(&ip.dst.octets());
        hdr.extend_from_slice(&options);
        let sum = checksum(&hdr, 0);
        hdr[10..12].copy_from_slice(&sum.to_be_bytes());
        out.extend_from_slice(&hdr);
        out.extend_from_slice(&l4);
        out
    }

    /// L4 header and payload, with the pseudo-header checksum.
    fn l4_bytes(&self, ip: &Ipv4) -> Vec<u8> {
        let mut seg = match &self.l4 {
            Some(L4::Tcp {
                sport,
                dport,
                seq,
                flags,
            }) => {
                let mut h = Vec::new();
                h.extend_from_slice(&sport.to_be_bytes());
                h.extend_from_slice(&dport.to_be_bytes());
                h.extend_from_slice(&seq.to_be_bytes());
                h.extend_from_slice(&0u32.to_be_bytes());
                h.extend_from_slice(&[0x50, *flags]);
                h.extend_from_slice(&64240u16.to_be_bytes());
                h.extend_from_slice(&[0, 0, 0, 0]);
                h
            }
            Some(L4::Udp { sport, dport }) => {
                let mut h = Vec::new();
                h.extend_from_slice(&sport.to_be_bytes());
                h.extend_from_slice(&dport.to_be_bytes());
                h.extend_from_slice(&((8 + self.payload.len()) as u16).to_be_bytes());
                h.extend_from_slice(&[0, 0]);
                h
            }
            Some(L4::Raw(bytes)) => bytes.clone(),
            None => Vec::new(),
        };
        let hdr_len = seg.len();
        seg.extend_from_slice(&self.payload);
        let csum_at = match self.l4 {
            Some(L4::Tcp { .. }) => Some(16),
            Some(L4::Udp { .. }) => Some(6),
            _ => None,
        };
        if let Some(at) = csum_at {
            let mut pseudo = Vec::new();
            pseudo.extend_from_slice(&ip.src.octets());
            pseudo.extend_from_slice(&ip.dst.octets());
            pseudo.extend_from_slice(&[0, ip.proto]);
            pseudo.extend_from_slice(&(seg.len() as u16).to_be_bytes());
            let sum = checksum(&seg, sum_words(&pseudo));
            seg[at..at + 2].copy_from_slice(&sum.to_be_bytes());
        }
        let _ = hdr_len;
        seg
    }
}

fn sum_words(data: &[u8]) -> u32 {
    data.chunks(2)
        .map(|c| u32::from(c[0]) << 8 | u32::from(*c.get(1).unwrap_or(&0)))
        .sum()
}

/// The Internet checksum of `data` plus a partial sum.
pub fn checksum(data: &[u8], initial: u32) -> u16 {
    let mut sum = initial + sum_words(data);
    while sum > 0xffff {
        sum = (sum & 0xffff) + (sum >> 16);
    }
    !(sum as u16)
}

/// Every header field of a frame, by name, in order; what cannot be parsed ends in `rest`.
pub fn decode(b: &[u8]) -> Vec<(String, String)> {
    let mut f: Vec<(String, String)> = Vec::new();
    let mut push = |k: &str, v: String| f.push((k.to_string(), v));
    let hex = |s: &[u8]| {
        s.iter()
            .map(|x| format!("{x:02x}"))
            .collect::<Vec<_>>()
            .join(":")
    };
    if b.len() < 14 {
        push("rest", hex(b));
        return f;
    }
    push("eth.dst", hex(&b[0..6]));
    push("eth.src", hex(&b[6..12]));
    let mut off = 12;
    let mut ethertype = u16::from_be_bytes([b[12], b[13]]);
    if (ethertype == ETH_P_8021Q || ethertype == ETH_P_8021AD) && b.len() >= 18 {
        push("vlan.tpid", format!("{ethertype:#06x}"));
        push(
            "vlan.tci",
            format!("{:#06x}", u16::from_be_bytes([b[14], b[15]])),
        );
        ethertype = u16::from_be_bytes([b[16], b[17]]);
        off = 16;
    }
    push("eth.type", format!("{ethertype:#06x}"));
    off += 2;
    let ip = &b[off..];
    if ethertype != ETH_P_IP || ip.len() < 20 {
        push("rest", hex(ip));
        return f;
    }
    let ihl = usize::from(ip[0] & 0x0f) * 4;
    push("ip.version_ihl", format!("{:#04x}", ip[0]));
    push("ip.tos", format!("{}", ip[1]));
    push(
        "ip.total_len",
        format!("{}", u16::from_be_bytes([ip[2], ip[3]])),
    );
    push(
        "ip.id",
        format!("{:#06x}", u16::from_be_bytes([ip[4], ip[5]])),
    );
    push(
        "ip.frag",
        format!("{:#06x}", u16::from_be_bytes([ip[6], ip[7]])),
    );
    push("ip.ttl", format!("{}", ip[8]));
    push("ip.proto", format!("{}", ip[9]));
    push(
        "ip.checksum",
        format!("{:#06x}", u16::from_be_bytes([ip[10], ip[11]])),
    );
    push(
        "ip.src",
        Ipv4Addr::new(ip[12], ip[13], ip[14], ip[15]).to_string(),
    );
    push(
        "ip.dst",
        Ipv4Addr::new(ip[16], ip[17], ip[18], ip[19]).to_string(),
    );
    if ihl < 20 || ip.len() < ihl {
        push("rest", hex(&ip[20..]));
        return f;
    }
    push("ip.options", hex(&ip[20..ihl]));
    let l4 = &ip[ihl..];
    match ip[9] {
        6 if l4.len() >= 20 => {
            push(
                "tcp.sport",
                format!("{}", u16::from_be_bytes([l4[0], l4[1]])),
            );
            push(
                "tcp.dport",
                format!("{}", u16::from_be_bytes([l4[2], l4[3]])),
            );
            push(
                "tcp.seq",
                format!("{}", u32::from_be_bytes([l4[4], l4[5], l4[6], l4[7]])),
            );
            push("tcp.flags", format!("{:#04x}", l4[13]));
            push(
                "tcp.checksum",
                format!("{:#06x}", u16::from_be_bytes([l4[16], l4[17]])),
            );
            push("payload", hex(&l4[20..]));
        }
        17 if l4.len() >= 8 => {
            push(
                "udp.sport",
                format!("{}", u16::from_be_bytes([l4[0], l4[1]])),
            );
            push(
                "udp.dport",
                format!("{}", u16::from_be_bytes([l4[2], l4[3]])),
            );
            push("udp.len", format!("{}", u16::from_be_bytes([l4[4], l4[5]])));
            push(
                "udp.checksum",
                format!("{:#06x}", u16::from_be_bytes([l4[6], l4[7]])),
            );
            push("payload", hex(&l4[8..]));
        }
        _ => push("rest", hex(l4)),
    }
    f
}

/// The fields that differ between two frames, as `name: expected X, got Y` lines; empty when
/// the frames are identical.
pub fn diff(expected: &[u8], got: &[u8]) -> Vec<String> {
    let (e, g) = (decode(expected), decode(got));
    let mut out = Vec::new();
    for i in 0..e.len().max(g.len()) {
        match (e.get(i), g.get(i)) {
            (Some((ke, ve)), Some((kg, vg))) if ke == kg => {
                if ve != vg {
                    out.push(format!("{ke}: expected {ve}, got {vg}"));
                }
            }
            (a, b) => {
                out.push(format!("field #{i}: expected {a:?}, got {b:?}"));
                break;
            }
        }
    }
    if out.is_empty() && expected != got {
        out.push(format!(
            "bytes differ: expected {expected:02x?}, got {got:02x?}"
        ));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ipv4_checksum_verifies() {
        let f = Frame::tcp([2, 0, 0, 0, 0, 1], "10.0.0.2", 1234, "10.0.0.10", 80).build();
        // Summing a header with its checksum gives zero.
        assert_eq!(checksum(&f[14..34], 0), 0);
        assert_eq!(f.len(), 14 + 20 + 20 + 5);
    }

    #[test]
    fn diff_names_the_field() {
        let a = Frame::tcp([2, 0, 0, 0, 0, 1], "10.0.0.2", 1234, "10.0.0.10", 80);
        let b = a.clone().with_ip(|ip| ip.ttl = 63);
        let d = diff(&a.build(), &b.build());
        assert!(
            d.iter()
                .any(|l| l.starts_with("ip.ttl: expected 64, got 63")),
            "{d:?}"
        );
        assert!(d.iter().any(|l| l.starts_with("ip.checksum")), "{d:?}");
        assert!(diff(&a.build(), &a.build()).is_empty());
    }
}

/// An IPv6 extension header, as [`Ipv6Packet`] chains them.
#[derive(Clone, Debug)]
pub enum Ext {
    /// Hop-by-hop options (0), routing (43) or destination options (60), of `units` x 8 bytes
    /// (at least 1), filled with padding.
    Options { kind: u8, units: u8 },
    /// A fragment header (44): offset in 8-byte units, and whether more fragments follow.
    Fragment { offset: u16, more: bool },
    /// Any other next-header value with 8 bytes of body (AH, ESP and the like, for the
    /// program's refusal).
    Other { kind: u8 },
}

/// An IPv6 packet built field by field: fixed header, extension headers, upper layer.
#[derive(Clone, Debug)]
pub struct Ipv6Packet {
    pub src: std::net::Ipv6Addr,
    pub dst: std::net::Ipv6Addr,
    pub exts: Vec<Ext>,
    /// The upper-layer protocol and its bytes (checksum already in them).
    pub proto: u8,
    pub upper: Vec<u8>,
    /// Overrides the version nibble and the payload length (to build invalid packets).
    pub version: u8,
    pub payload_len: Option<u16>,
}

impl Ipv6Packet {
    fn new(src: &str, dst: &str, proto: u8, upper: Vec<u8>) -> Ipv6Packet {
        Ipv6Packet {
            src: src.parse().expect("IPv6 source"),
            dst: dst.parse().expect("IPv6 destination"),
            exts: Vec::new(),
            proto,
            upper,
            version: 6,
            payload_len: None,
        }
    }

    /// A TCP segment with `flags` and a short payload, its checksum over the IPv6 pseudo-header.
    pub fn tcp(src: &str, sport: u16, dst: &str, dport: u16, flags: u8) -> Ipv6Packet {
        let mut h = Vec::new();
        h.extend_from_slice(&sport.to_be_bytes());
        h.extend_from_slice(&dport.to_be_bytes());
        h.extend_from_slice(&1u32.to_be_bytes());
        h.extend_from_slice(&0u32.to_be_bytes());
        h.extend_from_slice(&[0x50, flags]);
        h.extend_from_slice(&64240u16.to_be_bytes());
        h.extend_from_slice(&[0, 0, 0, 0]);
        h.extend_from_slice(b"hello");
        let mut p = Ipv6Packet::new(src, dst, 6, h);
        p.fill_checksum(16);
        p
    }

    /// A UDP datagram with a short payload.
    pub fn udp(src: &str, sport: u16, dst: &str, dport: u16) -> Ipv6Packet {
        let mut h = Vec::new();
        h.extend_from_slice(&sport.to_be_bytes());
        h.extend_from_slice(&dport.to_be_bytes());
        h.extend_from_slice(&13u16.to_be_bytes());
        h.extend_from_slice(&[0, 0]);
        h.extend_from_slice(b"hello");
        let mut p = Ipv6Packet::new(src, dst, 17, h);
        p.fill_checksum(6);
        p
    }

    /// An ICMPv6 "packet too big" (type 2) from `router` to `dst`, announcing `mtu` and quoting
    /// `quoted` (an IPv6 packet, or its first bytes).
    pub fn packet_too_big(router: &str, dst: &str, mtu: u32, quoted: &[u8]) -> Ipv6Packet {
        let mut msg = vec![2, 0, 0, 0];
        msg.extend_from_slice(&mtu.to_be_bytes());
        msg.extend_from_slice(quoted);
        let mut p = Ipv6Packet::new(router, dst, 58, msg);
        p.fill_checksum(2);
        p
    }

    /// Another ICMPv6 message (`kind`, code 0) with eight bytes of body.
    pub fn icmp6(src: &str, dst: &str, kind: u8) -> Ipv6Packet {
        let mut p = Ipv6Packet::new(src, dst, 58, vec![kind, 0, 0, 0, 0, 1, 0, 1]);
        p.fill_checksum(2);
        p
    }

    pub fn with_exts(mut self, exts: Vec<Ext>) -> Ipv6Packet {
        self.exts = exts;
        self
    }

    fn fill_checksum(&mut self, at: usize) {
        let mut pseudo = Vec::new();
        pseudo.extend_from_slice(&self.src.octets());
        pseudo.extend_from_slice(&self.dst.octets());
        pseudo.extend_from_slice(&(self.upper.len() as u32).to_be_bytes());
        pseudo.extend_from_slice(&[0, 0, 0, self.proto]);
        self.upper[at..at + 2].fill(0);
        let sum = checksum(&self.upper, sum_words(&pseudo));
        self.upper[at..at + 2].copy_from_slice(&sum.to_be_bytes());
    }

    /// The packet's bytes (from the IPv6 header on).
    pub fn build(&self) -> Vec<u8> {
        let mut chain = Vec::new();
        let kinds: Vec<u8> = self
            .exts
            .iter()
            .map(|e| match e {
                Ext::Options { kind, .. } | Ext::Other { kind } => *kind,
                Ext::Fragment { .. } => 44,
            })
            .collect();
        for (i, e) in self.exts.iter().enumerate() {
            let next = kinds.get(i + 1).copied().unwrap_or(self.proto);
            match e {
                Ext::Options { units, .. } => {
                    let len = usize::from(*units.max(&1)) * 8;
                    let mut h = vec![next, units.max(&1) - 1];
                    // PadN filling the rest.
                    h.extend_from_slice(&[1, (len - 4) as u8]);
                    h.resize(len, 0);
                    chain.extend_from_slice(&h);
                }
                Ext::Fragment { offset, more } => {
                    let field = offset << 3 | u16::from(*more);
                    chain.extend_from_slice(&[next, 0]);
                    chain.extend_from_slice(&field.to_be_bytes());
                    chain.extend_from_slice(&0x1234_5678u32.to_be_bytes());
                }
                Ext::Other { .. } => {
                    chain.extend_from_slice(&[next, 0, 0, 0, 0, 0, 0, 0]);
                }
            }
        }
        let payload_len = self
            .payload_len
            .unwrap_or((chain.len() + self.upper.len()) as u16);
        let first = kinds.first().copied().unwrap_or(self.proto);
        let mut out = vec![self.version << 4, 0, 0, 0];
        out.extend_from_slice(&payload_len.to_be_bytes());
        out.extend_from_slice(&[first, 64]);
        out.extend_from_slice(&self.src.octets());
        out.extend_from_slice(&self.dst.octets());
        out.extend_from_slice(&chain);
        out.extend_from_slice(&self.upper);
        out
    }
}
