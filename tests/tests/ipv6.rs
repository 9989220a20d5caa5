//! Packet fixtures for IPv6 services: the header and its extension headers, fragments, the
//! flow table and the verdicts, through BPF_PROG_TEST_RUN. Needs root.
use lvs_xdp_common::reason;
use lvs_xdp_tests::packet::{ETH_P_8021Q, Ext, Frame, Ipv6Packet};

mod support;
use support::{LB, director_from, drop, forward_of, pass, pin_to_cpu0, tx};

const RS1: [u8; 6] = [0x02, 0, 0, 0, 0, 0x03];
const RS2: [u8; 6] = [0x02, 0, 0, 0, 0, 0x04];
const RS5: [u8; 6] = [0x02, 0, 0, 0, 0, 0x05];
const VIP: &str = "2001:db8::10";
const CLIENT: &str = "2001:db8:1::100";

const CONFIG: &str = r#"
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
vip = "2001:db8::10"
port = 53
protocol = "udp"
scheduler = "rr"
real_servers = [ { address = "2001:db8::5", mac = "02:00:00:00:00:05" } ]
[[service]]
vip = "10.0.0.10"
port = 80
scheduler = "rr"
real_servers = [ { address = "10.0.0.3", mac = "02:00:00:00:00:03" } ]
"#;

fn syn(port: u16) -> Ipv6Packet {
    Ipv6Packet::tcp(CLIENT, port, VIP, 80, 0x02)
}

fn ack(port: u16) -> Ipv6Packet {
    Ipv6Packet::tcp(CLIENT, port, VIP, 80, 0x10)
}

#[test]
fn ipv6_connections_are_scheduled_remembered_and_forwarded_changing_only_the_macs() {
    pin_to_cpu0();
    let d = director_from(CONFIG);
    let first = forward_of(&d, &Frame::v6(LB, &syn(40_000)).build());
    let second = forward_of(&d, &Frame::v6(LB, &syn(40_001)).build());
    assert_ne!(first, second, "round robin over the two real servers");
    assert!([RS1, RS2].contains(&first) && [RS1, RS2].contains(&second));
    // The connection's other packets follow it, and only the MACs change.
    for _ in 0..3 {
        tx(
            &d,
            "ACK of a known flow",
            &Frame::v6(LB, &ack(40_000)).build(),
            first,
        );
        tx(
            &d,
            "ACK of the other",
            &Frame::v6(LB, &ack(40_001)).build(),
            second,
        );
    }
    tx(
        &d,
        "UDP",
        &Frame::udp6(LB, CLIENT, 5353, VIP, 53).build(),
        RS5,
    );
    tx(
        &d,
        "a VLAN tag is kept",
        &Frame::v6(LB, &ack(40_000))
            .with_vlan(ETH_P_8021Q, 7)
            .build(),
        first,
    );
    // The connections are listed as ipvsadm lists them, with their states.
    let listed: Vec<String> = d
        .connections()
        .unwrap()
        .iter()
        .map(|c| format!("{} {} {} {}", c.client, c.client_port, c.real, c.state))
        .collect();
    assert!(
        listed.contains(&format!("{CLIENT} 40000 {} ESTABLISHED", rs_addr(first))),
        "{listed:?}"
    );
    assert!(
        listed.contains(&format!("{CLIENT} 5353 2001:db8::5 UDP")),
        "{listed:?}"
    );
    // An IPv4 service beside them is unaffected.
    tx(
        &d,
        "IPv4 beside",
        &Frame::tcp(LB, "10.0.9.1", 1234, "10.0.0.10", 80).build(),
        RS1,
    );
}

fn rs_addr(mac: [u8; 6]) -> &'static str {
    if mac == RS1 {
        "2001:db8::3"
    } else {
        "2001:db8::4"
    }
}

#[test]
fn extension_headers_are_walked_up_to_four() {
    pin_to_cpu0();
    let d = director_from(CONFIG);
    let rs = forward_of(&d, &Frame::v6(LB, &syn(41_000)).build());
    let hbh = Ext::Options { kind: 0, units: 1 };
    let routing = Ext::Options { kind: 43, units: 1 };
    let dest = Ext::Options { kind: 60, units: 2 };
    let atomic = Ext::Fragment {
        offset: 0,
        more: false,
    };
    let chains: [(&str, Vec<Ext>); 5] = [
        ("hop-by-hop", vec![hbh.clone()]),
        ("routing", vec![routing.clone()]),
        ("destination options, 16 bytes", vec![dest.clone()]),
        ("an atomic fragment (RFC 6946)", vec![atomic.clone()]),
        (
            "a chain of four",
            vec![hbh.clone(), dest.clone(), routing.clone(), dest.clone()],
        ),
    ];
    for (name, exts) in chains {
        let frame = Frame::v6(LB, &ack(41_000).with_exts(exts)).build();
        tx(&d, name, &frame, rs);
    }
    // What the program does not walk is the host's.
    let five = vec![
        hbh.clone(),
        dest.clone(),
        routing.clone(),
        dest.clone(),
        dest,
    ];
    for (name, exts) in [
        ("a chain of five", five),
        ("AH", vec![Ext::Other { kind: 51 }]),
        ("ESP", vec![Ext::Other { kind: 50 }]),
        ("mobility", vec![Ext::Other { kind: 135 }]),
    ] {
        let frame = Frame::v6(LB, &ack(41_000).with_exts(exts)).build();
        pass(&d, name, &frame, reason::PASS_IPV6_EXT);
    }
    // Not TCP or UDP.
    let mut icmp = ack(41_000);
    icmp.proto = 58;
    pass(
        &d,
        "ICMPv6 echo",
        &Frame::v6(LB, &icmp).build(),
        reason::PASS_OTHER_PROTO,
    );
}

#[test]
fn ipv6_fragments_follow_ipv4s_rule() {
    pin_to_cpu0();
    let d = director_from(CONFIG);
    for (name, offset, more) in [("first fragment", 0, true), ("later fragment", 100, false)] {
        let frag = Ext::Fragment { offset, more };
        let to_vip = Frame::v6(LB, &syn(42_000).with_exts(vec![frag.clone()])).build();
        drop(&d, name, &to_vip, reason::DROP_FRAGMENT);
        let other = Ipv6Packet::tcp(CLIENT, 42_000, "2001:db8::99", 80, 0x02).with_exts(vec![frag]);
        pass(
            &d,
            &format!("{name} to another address"),
            &Frame::v6(LB, &other).build(),
            reason::PASS_FRAGMENT,
        );
    }
}

#[test]
fn invalid_ipv6_is_dropped_and_other_traffic_passes() {
    pin_to_cpu0();
    let d = director_from(CONFIG);
    let good = Frame::v6(LB, &syn(43_000)).build();
    // Cut short at every length before the TCP flags: the program never reads past the frame.
    for cut in 14..(14 + 40 + 14) {
        drop(
            &d,
            &format!("cut to {cut} bytes"),
            &good[..cut],
            reason::DROP_MALFORMED,
        );
    }
    let mut wrong_version = syn(43_000);
    wrong_version.version = 4;
    drop(
        &d,
        "version 4 in an IPv6 frame",
        &Frame::v6(LB, &wrong_version).build(),
        reason::DROP_MALFORMED,
    );
    let mut too_long = syn(43_000);
    too_long.payload_len = Some(2000);
    drop(
        &d,
        "payload length beyond the frame",
        &Frame::v6(LB, &too_long).build(),
        reason::DROP_MALFORMED,
    );
    let mut short_tcp = syn(43_000);
    short_tcp.payload_len = Some(12);
    drop(
        &d,
        "payload length shorter than TCP's header",
        &Frame::v6(LB, &short_tcp).build(),
        reason::DROP_MALFORMED,
    );
    // An extension header longer than the payload.
    let mut long_ext = syn(43_000).with_exts(vec![Ext::Options { kind: 0, units: 1 }]);
    long_ext.payload_len = Some(6);
    drop(
        &d,
        "extension header beyond the payload",
        &Frame::v6(LB, &long_ext).build(),
        reason::DROP_MALFORMED,
    );
    pass(
        &d,
        "to no service",
        &Frame::tcp6(LB, CLIENT, 43_000, VIP, 8080, 0x02).build(),
        reason::PASS_NO_SERVICE,
    );
    let mut other_mac = good.clone();
    other_mac[5] ^= 0xff;
    pass(&d, "another MAC", &other_mac, reason::PASS_NOT_LOCAL);
}

#[test]
fn an_ipv6_packet_without_syn_that_misses_is_hashed_and_not_remembered() {
    pin_to_cpu0();
    let d = director_from(CONFIG);
    let frame = Frame::v6(LB, &ack(44_000)).build();
    let first = forward_of(&d, &frame);
    for _ in 0..5 {
        assert_eq!(
            forward_of(&d, &frame),
            first,
            "the same real server each time"
        );
    }
    let s = d.snapshot().unwrap();
    assert_eq!(s.reason(reason::EVENT_FLOW_MISS_NONSYN).packets, 6);
    assert!(
        d.balancer().flows_v6().unwrap().is_empty(),
        "nothing remembered"
    );
}

/// The IPv6 fast path takes only what it may: frames of a known flow that are not for this
/// MAC, broken, tagged, or carry extension headers get the general path's verdicts.
#[test]
fn frames_of_a_known_ipv6_flow_still_get_every_check() {
    pin_to_cpu0();
    let d = director_from(CONFIG);
    let rs = forward_of(&d, &Frame::v6(LB, &syn(45_000)).build());
    tx(&d, "ACK", &Frame::v6(LB, &ack(45_000)).build(), rs);
    let good = Frame::v6(LB, &ack(45_000)).build();
    let mut other_mac = good.clone();
    other_mac[0] ^= 0x04;
    pass(&d, "another MAC", &other_mac, reason::PASS_NOT_LOCAL);
    let mut v4_nibble = ack(45_000);
    v4_nibble.version = 4;
    drop(
        &d,
        "version 4",
        &Frame::v6(LB, &v4_nibble).build(),
        reason::DROP_MALFORMED,
    );
    let mut long = ack(45_000);
    long.payload_len = Some(1000);
    drop(
        &d,
        "payload length beyond the frame",
        &Frame::v6(LB, &long).build(),
        reason::DROP_MALFORMED,
    );
    drop(
        &d,
        "cut inside TCP",
        &good[..14 + 40 + 10],
        reason::DROP_MALFORMED,
    );
    let with_ext = ack(45_000).with_exts(vec![Ext::Options { kind: 60, units: 1 }]);
    tx(
        &d,
        "with an extension header",
        &Frame::v6(LB, &with_ext).build(),
        rs,
    );
    // A FIN changes the state: the general path tracks it.
    tx(
        &d,
        "FIN",
        &Frame::v6(LB, &Ipv6Packet::tcp(CLIENT, 45_000, VIP, 80, 0x11)).build(),
        rs,
    );
    let state = d
        .connections()
        .unwrap()
        .into_iter()
        .find(|c| c.client_port == 45_000)
        .map(|c| c.state);
    assert_eq!(state.as_deref(), Some("FIN_WAIT"));
}

/// Persistence on an IPv6 service (`-p 300 -M 64`): every new connection from one /64 goes to
/// the real server of its first one, another /64 gets its own template, a miss without SYN
/// follows the template, and `-L -c` lists the templates as ipvsadm does (the network, port 0,
/// state NONE).
#[test]
fn ipv6_persistence_keeps_a_client_prefix_on_one_real_server() {
    pin_to_cpu0();
    let toml = CONFIG.replacen(
        "scheduler = \"rr\"",
        "scheduler = \"rr\"\npersistence_timeout = 300\npersistence_netmask = \"64\"",
        1,
    );
    let d = director_from(&toml);
    let from = |client: &str, port: u16, flags: u8| {
        forward_of(
            &d,
            &Frame::v6(LB, &Ipv6Packet::tcp(client, port, VIP, 80, flags)).build(),
        )
    };
    let first = from("2001:db8:1::1", 1000, 0x02);
    // The same /64, other hosts and ports: round robin alone would alternate.
    for i in 0..20u16 {
        let client = format!("2001:db8:1::{:x}:{:x}", 0x100 + i, i);
        assert_eq!(from(&client, 2000 + i, 0x02), first, "{client}: persistent");
    }
    let other = from("2001:db8:1:1::1", 1000, 0x02);
    assert_ne!(
        other, first,
        "another /64: its own template, round robin's next"
    );
    assert_eq!(
        from("2001:db8:1::9", 9000, 0x10),
        first,
        "a miss follows the template"
    );
    let mut templates: Vec<String> = d
        .connections()
        .unwrap()
        .into_iter()
        .filter(|c| c.state == "NONE")
        .map(|c| format!("{} {} {} {}", c.client, c.client_port, c.real, c.expires))
        .collect();
    templates.sort();
    assert_eq!(
        templates,
        [
            format!("2001:db8:1:1:: 0 {} 300", rs_addr(other)),
            format!("2001:db8:1:: 0 {} 300", rs_addr(first)),
        ]
    );
}
