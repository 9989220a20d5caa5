//! Packet fixtures for ICMP "fragmentation needed" about connections of virtual services: the
//! error goes to the real server that owns the quoted connection; anything else stays the
//! host's. Through BPF_PROG_TEST_RUN. Needs root.
use lvs_xdp::Director;
use lvs_xdp_common::reason;
use lvs_xdp_tests::packet::{Ext, Frame, Ipv6Packet};

mod support;
use support::{LB, XDP_TX, director_from, forward_of, pass, pin_to_cpu0, tx};

const RS1: [u8; 6] = [0x02, 0, 0, 0, 0, 0x03];
const RS2: [u8; 6] = [0x02, 0, 0, 0, 0, 0x04];
const RS5: [u8; 6] = [0x02, 0, 0, 0, 0, 0x05];
const VIP: &str = "10.0.0.10";
const MH_VIP: &str = "10.0.0.30";
const CLIENT: &str = "10.9.0.100";
/// The router between the client and the director that sends the errors.
const ROUTER: &str = "10.9.0.1";

const CONFIG: &str = r#"
flow_table_size = 4096
[[service]]
vip = "10.0.0.10"
port = 80
scheduler = "rr"
real_servers = [
  { address = "10.0.0.3", mac = "02:00:00:00:00:03" },
  { address = "10.0.0.4", mac = "02:00:00:00:00:04" },
]
[[service]]
vip = "10.0.0.10"
port = 53
protocol = "udp"
scheduler = "rr"
real_servers = [ { address = "10.0.0.5", mac = "02:00:00:00:00:05" } ]
[[service]]
vip = "10.0.0.30"
port = 80
scheduler = "mh"
scheduler_flags = ["mh-port"]
real_servers = [
  { address = "10.0.0.3", mac = "02:00:00:00:00:03" },
  { address = "10.0.0.4", mac = "02:00:00:00:00:04" },
]
"#;

/// The IP packet of a reply `vip:vport -> CLIENT:cport` (what the real server sent and the
/// router could not pass on), `quote` bytes of it (all when `None`).
fn reply(vip: &str, vport: u16, cport: u16, udp: bool, quote: Option<usize>) -> Vec<u8> {
    let frame = if udp {
        Frame::udp(RS1, vip, vport, CLIENT, cport)
    } else {
        Frame::tcp(RS1, vip, vport, CLIENT, cport).with_tcp_flags(0x10)
    }
    .with_payload(&[0xab; 1400])
    .build();
    let ip = &frame[14..];
    ip[..quote.unwrap_or(ip.len()).min(ip.len())].to_vec()
}

/// The error a router sends to the VIP about `quoted`.
fn frag_needed(vip: &str, quoted: &[u8]) -> Vec<u8> {
    Frame::icmp_frag_needed(LB, ROUTER, vip, 1280, quoted).build()
}

fn event(d: &Director, why: u32) -> u64 {
    d.snapshot().unwrap().reason(why).packets
}

#[test]
fn frag_needed_goes_to_the_real_server_of_the_quoted_connection() {
    pin_to_cpu0();
    let d = director_from(CONFIG);
    // Two connections, one on each real server (round robin).
    let a = forward_of(&d, &Frame::tcp(LB, CLIENT, 40_000, VIP, 80).build());
    let b = forward_of(&d, &Frame::tcp(LB, CLIENT, 40_001, VIP, 80).build());
    assert_ne!(a, b);
    // The usual quote: the IP header and 8 bytes of TCP; and the whole packet.
    for (port, rs) in [(40_000, a), (40_001, b)] {
        for quote in [Some(28), None] {
            let name = format!("frag needed about {CLIENT}:{port}, quote {quote:?}");
            tx(
                &d,
                &name,
                &frag_needed(VIP, &reply(VIP, 80, port, false, quote)),
                rs,
            );
        }
    }
    assert_eq!(event(&d, reason::EVENT_ICMP_TOO_BIG_FORWARDED), 4);
    // UDP: to the DNS service's real server.
    forward_of(&d, &Frame::udp(LB, CLIENT, 5353, VIP, 53).build());
    tx(
        &d,
        "frag needed about a UDP flow",
        &frag_needed(VIP, &reply(VIP, 53, 5353, true, Some(28))),
        RS5,
    );
    // A quoted header with options (IHL 6): the ports are found after them.
    let mut with_options = Frame::tcp(RS1, VIP, 80, CLIENT, 40_001)
        .with_tcp_flags(0x10)
        .with_ip(|ip| ip.options = vec![1, 1, 1, 1])
        .build()[14..]
        .to_vec();
    with_options.truncate(24 + 8);
    tx(
        &d,
        "frag needed quoting IP options",
        &frag_needed(VIP, &with_options),
        b,
    );
    assert_eq!(event(&d, reason::EVENT_ICMP_TOO_BIG_UNMATCHED), 0);
}

#[test]
fn frag_needed_for_a_connection_this_director_does_not_hold_follows_the_hash() {
    pin_to_cpu0();
    let d = director_from(CONFIG);
    // mh: the error for a connection never seen here goes where the table says, which is where
    // its SYN goes (and where another director sent it).
    for port in 41_000..41_040u16 {
        let error = frag_needed(MH_VIP, &reply(MH_VIP, 80, port, false, Some(28)));
        let (action, out) = d.balancer().test_run(&error).unwrap();
        assert_eq!(action, XDP_TX, "port {port}");
        let syn_goes = forward_of(&d, &Frame::tcp(LB, CLIENT, port, MH_VIP, 80).build());
        assert_eq!(
            out[0..6],
            syn_goes,
            "port {port}: the error and the SYN agree"
        );
        assert!(syn_goes == RS1 || syn_goes == RS2);
    }
    assert_eq!(event(&d, reason::EVENT_ICMP_TOO_BIG_FORWARDED), 40);
}

#[test]
fn other_icmp_and_errors_naming_no_connection_stay_the_hosts() {
    pin_to_cpu0();
    let d = director_from(CONFIG);
    let other = reason::PASS_OTHER_PROTO;
    // Not a "fragmentation needed": the host's, no event.
    pass(
        &d,
        "echo request",
        &Frame::icmp(LB, CLIENT, VIP).build(),
        other,
    );
    let port_unreachable = {
        let mut f = frag_needed(VIP, &reply(VIP, 80, 40_000, false, Some(28)));
        f[14 + 20 + 1] = 3; // code 3: port unreachable
        f
    };
    pass(&d, "port unreachable", &port_unreachable, other);
    let short_icmp = Frame::icmp_frag_needed(LB, ROUTER, VIP, 1280, &[])
        .build()
        .into_iter()
        .take(14 + 20 + 4)
        .collect::<Vec<_>>();
    let mut short_icmp = short_icmp;
    // The IP total length says 24 bytes: an ICMP header cut short.
    short_icmp[16..18].copy_from_slice(&24u16.to_be_bytes());
    pass(&d, "ICMP header cut short", &short_icmp, other);
    assert_eq!(event(&d, reason::EVENT_ICMP_TOO_BIG_UNMATCHED), 0);

    // "Fragmentation needed" naming no connection of a service: passed, and counted.
    let mut unmatched = 0;
    let mut expect_unmatched = |name: &str, frame: &[u8]| {
        pass(&d, name, frame, other);
        unmatched += 1;
        assert_eq!(
            event(&d, reason::EVENT_ICMP_TOO_BIG_UNMATCHED),
            unmatched,
            "{name}"
        );
    };
    let full = reply(VIP, 80, 40_000, false, Some(28));
    for cut in [0, 10, 20, 23] {
        expect_unmatched(
            &format!("quote truncated to {cut} bytes"),
            &frag_needed(VIP, &full[..cut]),
        );
    }
    let mut v6 = full.clone();
    v6[0] = 0x65;
    expect_unmatched("quoted version 6", &frag_needed(VIP, &v6));
    let mut short_ihl = full.clone();
    short_ihl[0] = 0x44;
    expect_unmatched("quoted IHL 4", &frag_needed(VIP, &short_ihl));
    let quoted_icmp = Frame::icmp(RS1, VIP, CLIENT).build()[14..].to_vec();
    expect_unmatched("quoting an ICMP packet", &frag_needed(VIP, &quoted_icmp));
    expect_unmatched(
        "quoting a reply from no service",
        &frag_needed(
            "10.0.0.99",
            &reply("10.0.0.99", 80, 40_000, false, Some(28)),
        ),
    );
    expect_unmatched(
        "quoting a reply from another port of the VIP",
        &frag_needed(VIP, &reply(VIP, 8080, 40_000, false, Some(28))),
    );
    // The ports lie in the frame's padding, beyond the IP total length: not part of the quote.
    let mut padded = frag_needed(VIP, &full);
    let total = (20 + 8 + 22) as u16;
    padded[16..18].copy_from_slice(&total.to_be_bytes());
    expect_unmatched("quote beyond the IP total length", &padded);
    assert_eq!(event(&d, reason::EVENT_ICMP_TOO_BIG_FORWARDED), 0);
}

const CONFIG_V6: &str = r#"
flow_table_size = 4096
flow_table_size_v6 = 4096
[[service]]
vip = "2001:db8::10"
port = 80
scheduler = "rr"
real_servers = [
  { address = "2001:db8::3", mac = "02:00:00:00:00:03" },
  { address = "2001:db8::4", mac = "02:00:00:00:00:04" },
]
[[service]]
vip = "2001:db8::30"
port = 80
scheduler = "mh"
scheduler_flags = ["mh-port"]
real_servers = [
  { address = "2001:db8::3", mac = "02:00:00:00:00:03" },
  { address = "2001:db8::4", mac = "02:00:00:00:00:04" },
]
"#;
const VIP6: &str = "2001:db8::10";
const MH_VIP6: &str = "2001:db8::30";
const CLIENT6: &str = "2001:db8:9::100";
const ROUTER6: &str = "2001:db8:9::1";

/// The IPv6 reply `vip:80 -> CLIENT6:cport` the router could not pass on, `quote` bytes of it.
fn reply6(vip: &str, cport: u16, quote: usize) -> Vec<u8> {
    let mut p = Ipv6Packet::tcp(vip, 80, CLIENT6, cport, 0x10);
    p.upper.extend_from_slice(&[0xab; 1400]);
    let bytes = p.build();
    bytes[..quote.min(bytes.len())].to_vec()
}

fn too_big(vip: &str, quoted: &[u8]) -> Vec<u8> {
    Frame::v6(LB, &Ipv6Packet::packet_too_big(ROUTER6, vip, 1280, quoted)).build()
}

#[test]
fn packet_too_big_goes_to_the_real_server_of_the_quoted_connection() {
    pin_to_cpu0();
    let d = director_from(CONFIG_V6);
    let syn = |port| Frame::tcp6(LB, CLIENT6, port, VIP6, 80, 0x02).build();
    let a = forward_of(&d, &syn(40_000));
    let b = forward_of(&d, &syn(40_001));
    assert_ne!(a, b);
    for (port, rs) in [(40_000, a), (40_001, b)] {
        for quote in [48, 1280 - 48] {
            tx(
                &d,
                &format!("packet too big about port {port}, {quote} bytes quoted"),
                &too_big(VIP6, &reply6(VIP6, port, quote)),
                rs,
            );
        }
    }
    // mh: an error for a connection this director does not hold goes where its SYN goes.
    for port in 41_000..41_020u16 {
        let (action, out) = d
            .balancer()
            .test_run(&too_big(MH_VIP6, &reply6(MH_VIP6, port, 48)))
            .unwrap();
        assert_eq!(action, XDP_TX);
        let syn_goes = forward_of(
            &d,
            &Frame::tcp6(LB, CLIENT6, port, MH_VIP6, 80, 0x02).build(),
        );
        assert_eq!(out[0..6], syn_goes, "port {port}");
    }
    assert_eq!(event(&d, reason::EVENT_ICMP_TOO_BIG_FORWARDED), 24);

    let other = reason::PASS_OTHER_PROTO;
    pass(
        &d,
        "echo request",
        &Frame::v6(LB, &Ipv6Packet::icmp6(ROUTER6, VIP6, 128)).build(),
        other,
    );
    assert_eq!(event(&d, reason::EVENT_ICMP_TOO_BIG_UNMATCHED), 0);
    let full = reply6(VIP6, 40_000, 48);
    for cut in [0, 20, 40, 43] {
        pass(
            &d,
            &format!("quote cut to {cut} bytes"),
            &too_big(VIP6, &full[..cut]),
            other,
        );
    }
    let with_ext = Ipv6Packet::tcp(VIP6, 80, CLIENT6, 40_000, 0x10)
        .with_exts(vec![Ext::Options { kind: 60, units: 1 }])
        .build();
    pass(
        &d,
        "quoting a packet with an extension header",
        &too_big(VIP6, &with_ext[..56]),
        other,
    );
    assert_eq!(event(&d, reason::EVENT_ICMP_TOO_BIG_UNMATCHED), 5);
}
