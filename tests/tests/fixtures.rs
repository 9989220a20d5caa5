//! Packet fixtures: each case is an input frame built field by field, the expected XDP action,
//! the expected output frame (compared header by header) and the verdict counter it must bump.
//! The program runs through BPF_PROG_TEST_RUN, attached nowhere. Needs root.
use std::net::Ipv4Addr;

use lvs_xdp::{
    Director,
    director::ApplyError,
    listing::{ServiceView, Snapshot},
    model::{Mac, Op, Protocol, RealOpts, Refusal, ServiceKey},
};
use lvs_xdp_common::{Counters, reason};
use lvs_xdp_tests::packet::{self, ETH_P_8021AD, ETH_P_8021Q, Frame};

mod support;
use support::{LB, XDP_TX, drop, pass, tx};
const RS1: [u8; 6] = [0x02, 0, 0, 0, 0, 0x03];
const RS2: [u8; 6] = [0x02, 0, 0, 0, 0, 0x04];
const RS3: [u8; 6] = [0x02, 0, 0, 0, 0, 0x05];
const RS4: [u8; 6] = [0x02, 0, 0, 0, 0, 0x06];
/// The real server that replaces RS1 in the replacement tests.
const RS7: [u8; 6] = [0x02, 0, 0, 0, 0, 0x07];
const VIP: &str = "10.0.0.10";
const CLIENT: &str = "10.0.0.100";

const CONFIG: &str = r#"
flow_table_size = 4096
[[service]]
vip = "10.0.0.10"
port = 80
scheduler = "rr"
real_servers = [
  { address = "10.0.0.3", mac = "02:00:00:00:00:03" },
  { address = "10.0.0.4", mac = "02:00:00:00:00:04" },
  { address = "10.0.0.6", mac = "02:00:00:00:00:06", weight = 0 },
]
[[service]]
vip = "10.0.0.10"
port = 53
scheduler = "rr"
protocol = "udp"
real_servers = [ { address = "10.0.0.5", mac = "02:00:00:00:00:05" } ]
[[service]]
vip = "10.0.0.20"
port = 80
scheduler = "rr"
"#;

/// TCP 10.0.0.10:80, the service with three real servers.
fn web() -> ServiceKey {
    ServiceKey::new(Protocol::Tcp, VIP.parse::<std::net::IpAddr>().unwrap(), 80)
}

/// TCP 10.0.0.20:80, the service without real servers.
fn empty_service() -> ServiceKey {
    ServiceKey::new(
        Protocol::Tcp,
        "10.0.0.20".parse::<std::net::IpAddr>().unwrap(),
        80,
    )
}

fn ip(a: &str) -> std::net::IpAddr {
    a.parse().unwrap()
}

fn service(s: &Snapshot, key: ServiceKey) -> &ServiceView {
    s.service(&key).expect("service in the snapshot")
}

fn real(s: &Snapshot, key: ServiceKey, addr: &str) -> Counters {
    let svc = service(s, key);
    let r = svc.reals.iter().find(|r| r.addr == ip(addr));
    r.expect("real server in the snapshot").counters
}

/// RS1 (10.0.0.3) leaves web(), RS7 (10.0.0.7) joins it: one batch.
fn replace_rs1_with_rs7(b: &mut Director) {
    let rs7 = RealOpts {
        weight: 1,
        mac: Some(Mac(RS7)),
        vlan: None,
    };
    b.apply(&[
        Op::DeleteReal(web(), ip("10.0.0.3")),
        Op::AddReal(web(), ip("10.0.0.7"), rs7),
    ])
    .unwrap();
}

fn balancer() -> Director {
    balancer_from(CONFIG)
}

fn balancer_from(config: &str) -> Director {
    support::director_from(config)
}

fn pin_to_cpu0() {
    support::pin_to_cpu0();
}

#[test]
fn tcp_and_udp_to_a_vip_are_forwarded_changing_only_the_macs() {
    pin_to_cpu0();
    let b = balancer();
    let syn = Frame::tcp(LB, CLIENT, 40000, VIP, 80).build();
    tx(&b, "TCP SYN to VIP:80", &syn, RS1);
    let dns = Frame::udp(LB, CLIENT, 40000, VIP, 53)
        .with_payload(&[0xab; 40])
        .build();
    tx(&b, "UDP to VIP:53", &dns, RS3);
    // A minimum-size frame carries Ethernet padding after the IP datagram: still forwarded.
    let mut padded = Frame::tcp(LB, CLIENT, 40001, VIP, 80)
        .with_payload(&[])
        .build();
    padded.resize(60, 0);
    tx(&b, "padded 60-byte frame", &padded, RS2);
    // DF set is not a fragment.
    let df = Frame::tcp(LB, CLIENT, 40002, VIP, 80)
        .with_ip(|ip| ip.frag = 0x4000)
        .build();
    tx(&b, "DF set", &df, RS1);
}

#[test]
fn traffic_not_for_a_service_passes_untouched() {
    let b = balancer();
    pass(
        &b,
        "other port",
        &Frame::tcp(LB, CLIENT, 40000, VIP, 81).build(),
        reason::PASS_NO_SERVICE,
    );
    pass(
        &b,
        "other address",
        &Frame::tcp(LB, CLIENT, 40000, "10.0.0.11", 80).build(),
        reason::PASS_NO_SERVICE,
    );
    pass(
        &b,
        "UDP to a TCP-only port",
        &Frame::udp(LB, CLIENT, 40000, VIP, 80).build(),
        reason::PASS_NO_SERVICE,
    );
    pass(
        &b,
        "TCP to a UDP-only port",
        &Frame::tcp(LB, CLIENT, 40000, VIP, 53).build(),
        reason::PASS_NO_SERVICE,
    );
    pass(
        &b,
        "destination port 0",
        &Frame::tcp(LB, CLIENT, 40000, VIP, 0).build(),
        reason::PASS_NO_SERVICE,
    );
    pass(
        &b,
        "ICMP to the VIP",
        &Frame::icmp(LB, CLIENT, VIP).build(),
        reason::PASS_OTHER_PROTO,
    );
    pass(
        &b,
        "ARP request for the VIP",
        &Frame::arp(CLIENT, VIP).build(),
        reason::PASS_NOT_LOCAL,
    );
    let mut arp_reply = Frame::arp(CLIENT, VIP);
    arp_reply.dst = LB;
    pass(
        &b,
        "ARP to our MAC",
        &arp_reply.build(),
        reason::PASS_NOT_IP,
    );
    pass(
        &b,
        "IPv6 TCP to no service",
        &Frame::tcp6(LB, "2001:db8::100", 40_000, "2001:db8::99", 80, 0x02).build(),
        reason::PASS_NO_SERVICE,
    );
}

#[test]
fn frames_for_other_macs_pass_untouched() {
    let b = balancer();
    for (name, mac) in [
        ("another host's unicast", [0x02, 0, 0, 0, 0, 0x99]),
        ("broadcast", [0xff; 6]),
        ("multicast", [0x01, 0x00, 0x5e, 0, 0, 1]),
        ("differs in the last byte", [0x02, 0, 0, 0, 0, 0x02]),
        ("differs in the first byte", [0x06, 0, 0, 0, 0, 0x01]),
    ] {
        let f = Frame::tcp(mac, CLIENT, 40000, VIP, 80).build();
        pass(&b, name, &f, reason::PASS_NOT_LOCAL);
    }
}

#[test]
fn ipv4_options_of_every_length_are_honoured() {
    let b = balancer();
    for words in 1..=10usize {
        let f = Frame::tcp(LB, CLIENT, 41000 + words as u16, VIP, 80)
            .with_ip(|ip| ip.options = vec![0x01; words * 4]) // NOP options
            .build();
        let real = if words % 2 == 1 { RS1 } else { RS2 };
        tx(&b, &format!("IHL {}", 5 + words), &f, real);
    }
    // With options, the ports are found after them: port 81 is no service even though the
    // bytes where a 20-byte header would end hold port 80.
    let mut opts = vec![0x01; 4];
    opts[2..4].copy_from_slice(&80u16.to_be_bytes());
    let f = Frame::tcp(LB, CLIENT, 80, VIP, 81)
        .with_ip(|ip| ip.options = opts)
        .build();
    pass(&b, "ports after options", &f, reason::PASS_NO_SERVICE);
}

#[test]
fn vlan_tagged_frames_keep_their_tag() {
    pin_to_cpu0();
    let b = balancer();
    let q = Frame::tcp(LB, CLIENT, 42000, VIP, 80)
        .with_vlan(ETH_P_8021Q, 100)
        .build();
    tx(&b, "802.1Q", &q, RS1);
    let ad = Frame::udp(LB, CLIENT, 42000, VIP, 53)
        .with_vlan(ETH_P_8021AD, 7)
        .build();
    tx(&b, "802.1ad", &ad, RS3);
    // A second tag is not parsed: passed as not IP.
    let mut qinq = Frame::tcp(LB, CLIENT, 42001, VIP, 80)
        .with_vlan(ETH_P_8021AD, 7)
        .build();
    qinq.splice(16..16, [0x81, 0x00, 0x00, 0x64]);
    pass(&b, "two tags", &qinq, reason::PASS_NOT_IP);
    pass(
        &b,
        "tagged ARP",
        &Frame::arp(CLIENT, VIP).with_vlan(ETH_P_8021Q, 100).build(),
        reason::PASS_NOT_LOCAL,
    );
}

#[test]
fn truncated_frames_are_dropped_at_every_length() {
    let b = balancer();
    let frames = [
        ("TCP", Frame::tcp(LB, CLIENT, 43000, VIP, 80).build()),
        ("UDP", Frame::udp(LB, CLIENT, 43000, VIP, 53).build()),
        (
            "VLAN TCP",
            Frame::tcp(LB, CLIENT, 43000, VIP, 80)
                .with_vlan(ETH_P_8021Q, 5)
                .build(),
        ),
        (
            "TCP with options",
            Frame::tcp(LB, CLIENT, 43000, VIP, 80)
                .with_ip(|ip| ip.options = vec![1; 40])
                .build(),
        ),
        ("ICMP", Frame::icmp(LB, CLIENT, VIP).build()),
        (
            "TCP to no service",
            Frame::tcp(LB, CLIENT, 43000, VIP, 99).build(),
        ),
    ];
    // BPF_PROG_TEST_RUN refuses frames under 14 bytes, so cuts start after the Ethernet header
    // (ethertype IPv4, nothing after it) and go to one byte short of the whole frame: inside
    // the VLAN tag, the IPv4 header, its options, the ports, the TCP/UDP header, the payload.
    for (name, full) in frames {
        for len in 14..full.len() {
            let cut = &full[..len];
            drop(
                &b,
                &format!("{name} cut at {len} of {}", full.len()),
                cut,
                reason::DROP_MALFORMED,
            );
        }
    }
}

#[test]
fn invalid_ipv4_headers_are_dropped() {
    let b = balancer();
    let base = Frame::tcp(LB, CLIENT, 44000, VIP, 80);
    let cases = [
        (
            "version 6 under ethertype IPv4",
            base.clone().with_ip(|ip| ip.version_ihl = Some(0x65)),
        ),
        (
            "IHL 4",
            base.clone().with_ip(|ip| ip.version_ihl = Some(0x44)),
        ),
        (
            "IHL 0",
            base.clone().with_ip(|ip| ip.version_ihl = Some(0x40)),
        ),
        (
            "IHL past the datagram",
            base.clone().with_ip(|ip| ip.version_ihl = Some(0x4f)),
        ),
        (
            "total length below IHL",
            base.clone().with_ip(|ip| ip.total_len = Some(19)),
        ),
        (
            "total length leaves no TCP header",
            base.clone().with_ip(|ip| ip.total_len = Some(30)),
        ),
        (
            "total length past the frame",
            base.clone().with_ip(|ip| ip.total_len = Some(1000)),
        ),
    ];
    for (name, f) in cases {
        drop(&b, name, &f.build(), reason::DROP_MALFORMED);
    }
}

#[test]
fn fragments_for_a_vip_are_dropped_and_others_passed() {
    let b = balancer();
    let frag = |dst: &str, frag: u16| {
        Frame::tcp(LB, CLIENT, 45000, dst, 80)
            .with_ip(|ip| ip.frag = frag)
            .build()
    };
    drop(
        &b,
        "non-first fragment to the VIP",
        &frag(VIP, 0x00b9),
        reason::DROP_FRAGMENT,
    );
    drop(
        &b,
        "last fragment to the VIP",
        &frag(VIP, 0x0010),
        reason::DROP_FRAGMENT,
    );
    drop(
        &b,
        "first fragment (MF) to the VIP",
        &frag(VIP, 0x2000),
        reason::DROP_FRAGMENT,
    );
    drop(
        &b,
        "fragment to a VIP without real servers",
        &frag("10.0.0.20", 0x0001),
        reason::DROP_FRAGMENT,
    );
    pass(
        &b,
        "fragment to another address",
        &frag("10.0.0.11", 0x2000),
        reason::PASS_FRAGMENT,
    );
    let udp_frag = Frame::udp(LB, CLIENT, 45000, "10.0.0.20", 53)
        .with_ip(|ip| ip.frag = 0x0020)
        .build();
    pass(
        &b,
        "UDP fragment to a TCP-only VIP",
        &udp_frag,
        reason::PASS_FRAGMENT,
    );
}

#[test]
fn a_service_without_real_servers_drops_and_counts() {
    let b = balancer();
    let f = Frame::tcp(LB, CLIENT, 46000, "10.0.0.20", 80).build();
    drop(&b, "no real server", &f, reason::DROP_NO_REAL_SERVER);
    drop(&b, "no real server again", &f, reason::DROP_NO_REAL_SERVER);
    let s = b.snapshot().unwrap();
    let c = service(&s, empty_service()).counters;
    assert_eq!((c.drops, c.packets, c.conns), (2, 2, 0));
    assert!(
        b.balancer().flows_v4().unwrap().is_empty(),
        "a dropped flow is not remembered"
    );
}

#[test]
fn new_flows_are_spread_round_robin_and_weight_zero_gets_none() {
    pin_to_cpu0();
    let b = balancer();
    let mut seen = Vec::new();
    for i in 0..100u16 {
        let f = Frame::tcp(LB, CLIENT, 10000 + i, VIP, 80).build();
        let (action, out) = b.balancer().test_run(&f).unwrap();
        assert_eq!(action, XDP_TX, "flow {i}");
        seen.push(<[u8; 6]>::try_from(&out[0..6]).unwrap());
    }
    for (i, mac) in seen.iter().enumerate() {
        let want = if i % 2 == 0 { RS1 } else { RS2 };
        assert_eq!(*mac, want, "flow {i} of a strict rotation on one CPU");
    }
    assert!(!seen.contains(&RS4), "weight 0 takes no new connection");
    let s = b.snapshot().unwrap();
    let conns: Vec<u64> = service(&s, web())
        .reals
        .iter()
        .map(|r| r.counters.conns)
        .collect();
    assert_eq!(conns, vec![50, 50, 0]);
    assert_eq!(service(&s, web()).counters.conns, 100);
    assert_eq!(b.balancer().flows_v4().unwrap().len(), 100);
}

/// Frames of a flow already in the table take the fast path only when they are the common
/// case (untagged IPv4 without options, addressed to the LB, complete); every other frame of
/// the same 5-tuple must get the general path's verdict, not a forward.
#[test]
fn frames_of_a_known_flow_still_get_every_check() {
    pin_to_cpu0();
    let b = balancer();
    let known = || Frame::tcp(LB, CLIENT, 46000, VIP, 80);
    let (_, first) = b.balancer().test_run(&known().build()).unwrap();
    let rs = <[u8; 6]>::try_from(&first[0..6]).unwrap();
    tx(&b, "the flow's next packet", &known().build(), rs);
    tx(
        &b,
        "don't fragment set",
        &known().with_ip(|ip| ip.frag = 0x4000).build(),
        rs,
    );
    tx(
        &b,
        "IPv4 options",
        &known().with_ip(|ip| ip.options = vec![1; 8]).build(),
        rs,
    );
    tx(
        &b,
        "VLAN tag",
        &known().with_vlan(ETH_P_8021Q, 9).build(),
        rs,
    );
    let other_mac = Frame::tcp([0x02, 0, 0, 0, 0, 0x02], CLIENT, 46000, VIP, 80);
    pass(
        &b,
        "another MAC",
        &other_mac.build(),
        reason::PASS_NOT_LOCAL,
    );
    for (name, frag) in [("first fragment", 0x2000), ("later fragment", 0x0003)] {
        let f = known().with_ip(|ip| ip.frag = frag).build();
        drop(&b, name, &f, reason::DROP_FRAGMENT);
    }
    for (name, f) in [
        (
            "version 6",
            known().with_ip(|ip| ip.version_ihl = Some(0x65)),
        ),
        (
            "total length past the frame",
            known().with_ip(|ip| ip.total_len = Some(1000)),
        ),
        (
            "total length leaves no TCP header",
            known().with_ip(|ip| ip.total_len = Some(39)),
        ),
    ] {
        drop(&b, name, &f.build(), reason::DROP_MALFORMED);
    }
    let full = known().build();
    for len in 14..full.len() {
        let name = format!("cut at {len} of {}", full.len());
        drop(&b, &name, &full[..len], reason::DROP_MALFORMED);
    }
    // UDP with the same addresses and ports is another flow, to a service of its own.
    let udp = Frame::udp(LB, CLIENT, 46000, VIP, 53).build();
    tx(&b, "same ports over UDP", &udp, RS3);
    tx(&b, "and the TCP flow again", &known().build(), rs);
}

#[test]
fn packets_of_one_flow_always_reach_the_same_real_server() {
    pin_to_cpu0();
    let b = balancer();
    let flow = Frame::tcp(LB, CLIENT, 50000, VIP, 80).build();
    let (_, first) = b.balancer().test_run(&flow).unwrap();
    let chosen = <[u8; 6]>::try_from(&first[0..6]).unwrap();
    for i in 0..20u16 {
        // Other new flows move the round-robin position between this flow's packets.
        b.balancer()
            .test_run(&Frame::tcp(LB, CLIENT, 51000 + i, VIP, 80).build())
            .unwrap();
        let mut ack = Frame::tcp(LB, CLIENT, 50000, VIP, 80);
        if let Some(packet::L4::Tcp { flags, seq, .. }) = &mut ack.l4 {
            *flags = 0x10;
            *seq = 2 + u32::from(i);
        }
        tx(&b, &format!("packet {i} of the flow"), &ack.build(), chosen);
    }
    let s = b.snapshot().unwrap();
    assert_eq!(
        service(&s, web()).counters.conns,
        21,
        "one connection per flow, not per packet"
    );
    assert_eq!(service(&s, web()).counters.packets, 41);
}

#[test]
fn counters_add_up() {
    pin_to_cpu0();
    let b = balancer();
    let frames = [
        Frame::tcp(LB, CLIENT, 1, VIP, 80).build(),
        Frame::tcp(LB, CLIENT, 2, VIP, 80)
            .with_payload(&[0; 500])
            .build(),
        Frame::tcp(LB, CLIENT, 1, VIP, 80)
            .with_payload(&[0; 100])
            .build(),
        Frame::udp(LB, CLIENT, 1, VIP, 53).build(),
        Frame::tcp(LB, CLIENT, 1, VIP, 81).build(),
        Frame::arp(CLIENT, VIP).build(),
        Frame::tcp(LB, CLIENT, 1, "10.0.0.20", 80).build(),
    ];
    for f in &frames {
        b.balancer().test_run(f).unwrap();
    }
    let s = b.snapshot().unwrap();
    assert_eq!(s.total_packets(), frames.len() as u64);
    let verdict_bytes: u64 = s.global[..reason::VERDICTS as usize]
        .iter()
        .map(|c| c.bytes)
        .sum();
    assert_eq!(
        verdict_bytes,
        frames.iter().map(|f| f.len() as u64).sum::<u64>()
    );
    // Service and real-server counters cover exactly the forwarded packets.
    let fwd = s.reason(reason::FORWARDED);
    assert_eq!(fwd.packets, 4);
    let svc_packets: u64 = s
        .services
        .iter()
        .map(|v| v.counters.packets - v.counters.drops)
        .sum();
    let reals = || s.services.iter().flat_map(|v| v.reals.iter());
    let real_packets: u64 = reals().map(|r| r.counters.packets).sum();
    let real_bytes: u64 = reals().map(|r| r.counters.bytes).sum();
    assert_eq!(svc_packets, fwd.packets);
    assert_eq!(real_packets, fwd.packets);
    assert_eq!(real_bytes, fwd.bytes);
    let rs1 = real(&s, web(), "10.0.0.3");
    assert_eq!(rs1.bytes, (frames[0].len() + frames[2].len()) as u64);
    assert_eq!((rs1.conns, rs1.packets), (1, 2));
    assert_eq!(service(&s, empty_service()).counters.drops, 1);
}

/// A flow table far smaller than the flows: every bucket fills, the flows that find no room
/// move to the overflow hash, and none is forgotten or sent to another real server.
#[test]
fn a_full_flow_table_moves_established_flows_to_the_overflow_hash_and_forgets_none() {
    pin_to_cpu0();
    let b = balancer_from(&CONFIG.replace("flow_table_size = 4096", "flow_table_size = 16"));
    let (buckets, _) = lvs_xdp_common::flow_table::sizes(16);
    let ways = u64::from(buckets) * lvs_xdp_common::flow_table::WAYS as u64;
    let n = 300u16;
    assert!(u64::from(n) > ways && u64::from(n) < b.balancer().flow_capacity());
    let syn = |i: u16| Frame::tcp(LB, CLIENT, 20000 + i, VIP, 80).build();
    // Established connections' packets: an ACK.
    let frame = |i: u16| {
        Frame::tcp(LB, CLIENT, 20000 + i, VIP, 80)
            .with_tcp_flags(0x10)
            .build()
    };
    let mut chosen = Vec::new();
    for i in 0..n {
        let (action, out) = b.balancer().test_run(&syn(i)).unwrap();
        assert_eq!(action, XDP_TX, "new flow {i}");
        let rs = <[u8; 6]>::try_from(&out[0..6]).unwrap();
        tx(&b, &format!("flow {i} established"), &frame(i), rs);
        chosen.push(rs);
    }
    assert_eq!(b.balancer().flows_v4().unwrap().len(), usize::from(n));
    assert_eq!(
        b.balancer().flow_table_counts().unwrap(),
        (ways, u64::from(n) - ways),
        "(flows in buckets, in the overflow hash)"
    );
    for (i, rs) in chosen.iter().enumerate() {
        tx(&b, &format!("flow {i} again"), &frame(i as u16), *rs);
    }
    let s = b.snapshot().unwrap();
    assert_eq!(
        service(&s, web()).counters.conns,
        u64::from(n),
        "no flow scheduled twice"
    );
    assert_eq!(
        s.reason(reason::EVENT_FLOW_MOVED).packets,
        u64::from(n) - ways
    );
    assert_eq!(s.reason(reason::EVENT_FLOW_INSERT_FAILED).packets, 0);
    assert_eq!(s.reason(reason::EVENT_FLOW_RESCHEDULED).packets, 0);

    // Replacing RS1 reschedules its flows wherever they are kept, and only those.
    let mut b = b;
    replace_rs1_with_rs7(&mut b);
    let mut moved = 0;
    for (i, rs) in chosen.iter().enumerate() {
        let (_, out) = b.balancer().test_run(&frame(i as u16)).unwrap();
        if *rs == RS1 {
            assert_ne!(&out[0..6], &RS1, "flow {i} still sent to the replaced RS1");
            moved += 1;
        } else {
            assert_eq!(&out[0..6], rs, "flow {i} moved");
        }
    }
    assert_eq!(moved, u64::from(n) / 2);
    let s = b.snapshot().unwrap();
    assert_eq!(s.reason(reason::EVENT_FLOW_RESCHEDULED).packets, moved);
    assert_eq!(b.balancer().flows_v4().unwrap().len(), usize::from(n));
}

#[test]
fn replacing_a_real_server_moves_only_its_own_flows() {
    pin_to_cpu0();
    let mut b = balancer();
    let flow_a = Frame::tcp(LB, CLIENT, 60000, VIP, 80).build();
    let flow_b = Frame::tcp(LB, CLIENT, 60001, VIP, 80).build();
    tx(&b, "flow A", &flow_a, RS1);
    tx(&b, "flow B", &flow_b, RS2);
    let before = b.snapshot().unwrap();

    replace_rs1_with_rs7(&mut b);

    // B's real server did not change: B stays where it was.
    tx(&b, "flow B after the change", &flow_b, RS2);
    // A's did: A is scheduled again, onto a real server the service has now.
    let (action, out) = b.balancer().test_run(&flow_a).unwrap();
    assert_eq!(action, XDP_TX);
    let a_now: [u8; 6] = out[0..6].try_into().unwrap();
    assert!(
        a_now == RS7 || a_now == RS2,
        "flow A rescheduled to {a_now:02x?}"
    );
    tx(&b, "flow A stays on its new real server", &flow_a, a_now);
    let after = b.snapshot().unwrap();
    assert_eq!(
        after.reason(reason::EVENT_FLOW_RESCHEDULED).packets
            - before.reason(reason::EVENT_FLOW_RESCHEDULED).packets,
        1
    );
    // New flows rotate over RS7 and RS2; RS1 gets none.
    for i in 0..4u16 {
        let (_, out) = b
            .balancer()
            .test_run(&Frame::tcp(LB, CLIENT, 61000 + i, VIP, 80).build())
            .unwrap();
        assert!(
            out[0..6] == RS7 || out[0..6] == RS2,
            "new flow {i} to {:02x?}",
            &out[0..6]
        );
        assert_ne!(&out[0..6], &RS1);
    }
    // Totals stay monotonic and add up: the old real server's counts stay in the service's.
    let last = b.snapshot().unwrap();
    let (was, now) = (service(&before, web()), service(&last, web()));
    assert!(now.counters.packets >= was.counters.packets + 7);
    assert_eq!(now.counters.conns, was.counters.conns + 5);
    let fwd = last.reason(reason::FORWARDED);
    let real_sum: u64 = last
        .services
        .iter()
        .flat_map(|v| v.reals.iter())
        .map(|r| r.counters.packets)
        .sum();
    assert_eq!(
        fwd.packets,
        real_sum + real(&before, web(), "10.0.0.3").packets,
        "live real servers plus the removed one"
    );
    let reals = &b.state().services[&web()].reals;
    assert!(reals.contains_key(&ip("10.0.0.7")) && !reals.contains_key(&ip("10.0.0.3")));
    // A refusal leaves everything as it was.
    let dup = RealOpts {
        weight: 1,
        mac: Some(Mac(RS2)),
        vlan: None,
    };
    let state = b.state().clone();
    let err = b
        .apply(&[
            Op::DeleteReal(web(), ip("10.0.0.7")),
            Op::AddReal(web(), ip("10.0.0.4"), dup),
        ])
        .unwrap_err();
    assert!(
        matches!(
            err,
            ApplyError::Refused {
                op: 1,
                refusal: Refusal::RealExists(..)
            }
        ),
        "{err:?}"
    );
    assert_eq!(err.to_string(), "Destination already exists");
    assert_eq!(b.state(), &state);
    tx(&b, "flow A unchanged after a refusal", &flow_a, a_now);
}

/// Weight 0 quiesces a real server live: its connections go on, new ones go elsewhere; a
/// weight above 0 brings it back.
#[test]
fn a_weight_set_to_zero_quiesces_a_real_server_live() {
    pin_to_cpu0();
    let mut b = balancer();
    let flow_a = Frame::tcp(LB, CLIENT, 62000, VIP, 80).build();
    tx(&b, "flow A", &flow_a, RS1);
    let quiesced = RealOpts {
        weight: 0,
        mac: Some(Mac(RS1)),
        vlan: None,
    };
    b.apply(&[Op::EditReal(web(), ip("10.0.0.3"), quiesced)])
        .unwrap();
    tx(
        &b,
        "flow A continues on its quiesced real server",
        &flow_a,
        RS1,
    );
    for i in 0..4u16 {
        let f = Frame::tcp(LB, CLIENT, 62100 + i, VIP, 80).build();
        tx(&b, &format!("new flow {i}"), &f, RS2);
    }
    let back = RealOpts {
        weight: 1,
        mac: Some(Mac(RS1)),
        vlan: None,
    };
    b.apply(&[Op::EditReal(web(), ip("10.0.0.3"), back)])
        .unwrap();
    let mut seen = Vec::new();
    for i in 0..4u16 {
        let f = Frame::tcp(LB, CLIENT, 62200 + i, VIP, 80).build();
        let (_, out) = b.balancer().test_run(&f).unwrap();
        seen.push(<[u8; 6]>::try_from(&out[0..6]).unwrap());
    }
    assert!(seen.contains(&RS1) && seen.contains(&RS2), "{seen:02x?}");
}

/// A batch that is valid but cannot be carried out (a MAC that cannot be found, a full table)
/// changes nothing: not the state, not a single map entry a packet could see.
#[test]
fn a_batch_that_cannot_be_carried_out_changes_nothing() {
    let new_svc = ServiceKey::new(
        Protocol::Tcp,
        "10.0.0.30".parse::<std::net::IpAddr>().unwrap(),
        80,
    );
    let frame = Frame::tcp(LB, CLIENT, 40000, "10.0.0.30", 80).build();
    let with_rs1 = RealOpts {
        weight: 1,
        mac: Some(Mac(RS1)),
        vlan: None,
    };
    // No neighbour table to ask (no resolver): 10.0.0.9 has no MAC.
    let mut b = balancer();
    let state = b.state().clone();
    let err = b
        .apply(&[
            Op::AddService(new_svc, Default::default()),
            Op::AddReal(new_svc, ip("10.0.0.3"), with_rs1),
            Op::AddReal(web(), ip("10.0.0.9"), RealOpts::default()),
        ])
        .unwrap_err();
    assert!(matches!(err, ApplyError::Failed(_)), "{err:?}");
    assert_eq!(err.to_string(), "no MAC for real server 10.0.0.9");
    assert_eq!(b.state(), &state);
    pass(
        &b,
        "the service of a refused batch",
        &frame,
        reason::PASS_NO_SERVICE,
    );

    // A full table: three services of three.
    let mut b = balancer_from(&format!("max_services = 3\n{CONFIG}"));
    let err = b
        .apply(&[
            Op::AddService(new_svc, Default::default()),
            Op::AddReal(new_svc, ip("10.0.0.3"), with_rs1),
        ])
        .unwrap_err();
    assert_eq!(
        err.to_string(),
        "no room for 1 more service(s): 3 of 3 in use (raise max_services)"
    );
    pass(
        &b,
        "the service of a refused batch",
        &frame,
        reason::PASS_NO_SERVICE,
    );
    // Room again once a service is gone (after its grace).
    b.apply(&[Op::DeleteService(empty_service())]).unwrap();
    b.apply(&[
        Op::AddService(new_svc, Default::default()),
        Op::AddReal(new_svc, ip("10.0.0.3"), with_rs1),
    ])
    .unwrap();
    tx(&b, "the new service", &frame, RS1);
}

/// Real servers replaced again and again in a director whose tables are exactly full: every
/// change finds its places (a slot given up comes back after its grace, which a change waits
/// for), none leaks, and traffic follows each change.
#[test]
fn full_tables_take_change_after_change() {
    pin_to_cpu0();
    let mut b = balancer_from(&format!("max_real_servers = 4\n{CONFIG}"));
    let mut current = ip("10.0.0.3");
    for i in 0..5u8 {
        let next = std::net::IpAddr::V4(Ipv4Addr::new(10, 0, 1, i + 1));
        let mac = [0x02, 0, 0, 0, 1, i + 1];
        // In one batch the new real server would need a fifth slot: the one given up is not
        // reused before its grace. In two, the second waits for it.
        b.apply(&[Op::DeleteReal(web(), current)]).unwrap();
        b.apply(&[Op::AddReal(
            web(),
            next,
            RealOpts {
                weight: 1,
                mac: Some(Mac(mac)),
                vlan: None,
            },
        )])
        .unwrap_or_else(|e| panic!("change {i}: {e}"));
        current = next;
        let mut seen = Vec::new();
        for port in 0..4u16 {
            let f = Frame::tcp(LB, CLIENT, 30000 + u16::from(i) * 10 + port, VIP, 80).build();
            let (action, out) = b.balancer().test_run(&f).unwrap();
            assert_eq!(action, XDP_TX);
            seen.push(<[u8; 6]>::try_from(&out[0..6]).unwrap());
        }
        assert!(
            seen.contains(&mac) && seen.contains(&RS2),
            "change {i}: {seen:02x?}"
        );
    }
    // A fifth real server does not fit, and says so.
    let err = b
        .apply(&[Op::AddReal(
            web(),
            ip("10.0.2.1"),
            RealOpts {
                weight: 1,
                mac: Some(Mac(RS7)),
                vlan: None,
            },
        )])
        .unwrap_err();
    assert!(err.to_string().contains("raise max_real_servers"), "{err}");
}
