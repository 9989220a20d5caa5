//! Connection states as IPVS tracks them in DR mode, the rule for packets that miss, timeouts,
//! and the order in which the flow table makes room, through BPF_PROG_TEST_RUN. Needs root.
mod support;

use lvs_xdp::{
    Director,
    model::{Op, Protocol, ServiceKey, Timeouts},
};
use lvs_xdp_common::{Flow, conn, flow_table, reason};
use lvs_xdp_tests::packet::Frame;
use support::{LB, XDP_TX, director_from, pin_to_cpu0};

/// A table of 16 buckets (48 ways) and the smallest overflow hash (1 024 flows).
const CONFIG: &str = r#"
flow_table_size = 16
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
scheduler = "rr"
protocol = "udp"
real_servers = [ { address = "10.0.0.5", mac = "02:00:00:00:00:05" } ]
"#;
const VIP: &str = "10.0.0.10";
const CLIENT: &str = "10.0.0.100";

const SYN: u8 = 0x02;
const ACK: u8 = 0x10;
const PSH_ACK: u8 = 0x18;
const FIN_ACK: u8 = 0x11;
const RST: u8 = 0x04;

const WAYS: u64 = 16 * flow_table::WAYS as u64;
const OVERFLOW: u64 = flow_table::MIN_OVERFLOW as u64;

fn web() -> ServiceKey {
    ServiceKey::new(Protocol::Tcp, VIP.parse::<std::net::IpAddr>().unwrap(), 80)
}

/// Sends a TCP packet of client port `port` with `flags`; it must be forwarded. Returns the
/// real server's MAC.
fn send(d: &Director, port: u16, flags: u8) -> [u8; 6] {
    let frame = Frame::tcp(LB, CLIENT, port, VIP, 80)
        .with_tcp_flags(flags)
        .build();
    let (action, out) = d.balancer().test_run(&frame).unwrap();
    assert_eq!(action, XDP_TX, "port {port} flags {flags:#04x}: action");
    out[0..6].try_into().unwrap()
}

/// Opens and establishes a connection from `port`: SYN, then ACK, to the same real server.
fn establish(d: &Director, port: u16) -> [u8; 6] {
    let rs = send(d, port, SYN);
    assert_eq!(
        send(d, port, ACK),
        rs,
        "port {port}: the ACK follows the SYN"
    );
    rs
}

/// The remembered flow of client port `port` (TCP), if any.
fn flow(d: &Director, port: u16) -> Option<Flow> {
    let [hi, lo] = port.to_be_bytes();
    d.balancer()
        .flows_v4()
        .unwrap()
        .into_iter()
        .find(|(k, _)| k.proto == 6 && k.ports.to_ne_bytes()[..2] == [hi, lo])
        .map(|(_, f)| f)
}

fn state(d: &Director, port: u16) -> &'static str {
    let f = flow(d, port).unwrap_or_else(|| panic!("port {port} is remembered"));
    conn::NAMES[usize::from(f.state)]
}

fn event(d: &Director, why: u32) -> u64 {
    d.snapshot().unwrap().reason(why).packets
}

fn conns(d: &Director) -> u64 {
    d.snapshot()
        .unwrap()
        .service(&web())
        .unwrap()
        .counters
        .conns
}

/// (ActiveConn, InActConn) of a service, over its real servers, from the last sweep.
fn active_inactive(d: &Director, key: &ServiceKey) -> (u64, u64) {
    let s = d.snapshot().unwrap();
    let svc = s.service(key).unwrap();
    svc.reals
        .iter()
        .fold((0, 0), |(a, i), r| (a + r.conns.0, i + r.conns.1))
}

/// Moves the data plane's idle clock `secs` seconds on.
fn advance_clock(d: &mut Director, secs: u32) {
    let mut clock = d.balancer().clock().unwrap();
    clock.now += secs;
    d.balancer_mut().set_clock(&clock).unwrap();
}

#[test]
fn tcp_states_follow_the_client_side_as_ipvs_tracks_them() {
    pin_to_cpu0();
    let mut d = director_from(CONFIG);
    let rs = send(&d, 1000, SYN);
    assert_eq!(state(&d, 1000), "SYN_RECV");
    assert_eq!(send(&d, 1000, ACK), rs);
    assert_eq!(state(&d, 1000), "ESTABLISHED");
    assert_eq!(send(&d, 1000, PSH_ACK), rs);
    assert_eq!(
        send(&d, 1000, SYN),
        rs,
        "a SYN on an established connection"
    );
    assert_eq!(state(&d, 1000), "ESTABLISHED");
    assert_eq!(send(&d, 1000, FIN_ACK), rs);
    assert_eq!(state(&d, 1000), "FIN_WAIT");
    assert_eq!(send(&d, 1000, ACK), rs);
    assert_eq!(state(&d, 1000), "FIN_WAIT");
    assert_eq!(send(&d, 1000, RST), rs);
    assert_eq!(state(&d, 1000), "CLOSE");
    assert_eq!(conns(&d), 1);
    // A SYN on a closed connection opens a new one, scheduled again (round robin: the other
    // real server).
    assert_ne!(send(&d, 1000, SYN), rs);
    assert_eq!(state(&d, 1000), "SYN_RECV");
    assert_eq!(conns(&d), 2);

    // RST during the handshake leaves it half-open (IPVS's input-only table); FIN makes it
    // TIME_WAIT.
    send(&d, 1001, SYN);
    send(&d, 1001, RST);
    assert_eq!(state(&d, 1001), "SYN_RECV");
    send(&d, 1002, SYN);
    send(&d, 1002, FIN_ACK);
    assert_eq!(state(&d, 1002), "TIME_WAIT");
    establish(&d, 1003);
    establish(&d, 1004);
    send(&d, 1004, FIN_ACK);
    assert_eq!(state(&d, 1004), "FIN_WAIT");
    assert_eq!(conns(&d), 6);

    let udp = Frame::udp(LB, CLIENT, 2000, VIP, 53).build();
    assert_eq!(d.balancer().test_run(&udp).unwrap().0, XDP_TX);
    let (_, f) = d
        .balancer()
        .flows_v4()
        .unwrap()
        .into_iter()
        .find(|(k, _)| k.proto == 17)
        .unwrap();
    assert_eq!(conn::NAMES[usize::from(f.state)], "UDP");

    // ActiveConn counts SYN_RECV and ESTABLISHED (1000, 1001, 1003), InActConn the rest
    // (TIME_WAIT 1002, FIN_WAIT 1004), as IPVS counts them; UDP is inactive.
    d.sweep_now().unwrap();
    assert_eq!(active_inactive(&d, &web()), (3, 2));
    let dns = ServiceKey::new(Protocol::Udp, VIP.parse::<std::net::IpAddr>().unwrap(), 53);
    assert_eq!(active_inactive(&d, &dns), (0, 1));
}

#[test]
fn a_packet_without_syn_that_misses_is_hashed_and_not_remembered() {
    pin_to_cpu0();
    let d = director_from(CONFIG);
    let first = send(&d, 3000, ACK);
    for _ in 0..3 {
        assert_eq!(
            send(&d, 3000, PSH_ACK),
            first,
            "every packet to the same real server"
        );
    }
    assert!(flow(&d, 3000).is_none(), "not remembered");
    assert_eq!(event(&d, reason::EVENT_FLOW_MISS_NONSYN), 4);
    assert_eq!(conns(&d), 0, "not a new connection");

    // A flood of spoofed ACKs takes no place in the table, and pushes no connection out.
    let rs = establish(&d, 3001);
    let mut seen = std::collections::HashSet::new();
    for port in 10_000..12_000 {
        seen.insert(send(&d, port, ACK));
    }
    assert_eq!(
        seen.len(),
        2,
        "the hash spreads them over both real servers"
    );
    assert_eq!(d.balancer().flows_v4().unwrap().len(), 1);
    assert_eq!(send(&d, 3001, ACK), rs);
    assert_eq!(event(&d, reason::EVENT_FLOW_MOVED), 0);
}

#[test]
fn half_open_flows_make_room_before_established_ones() {
    pin_to_cpu0();
    let d = director_from(CONFIG);
    let established: Vec<[u8; 6]> = (0..100).map(|i| establish(&d, 20_000 + i)).collect();
    let moved = event(&d, reason::EVENT_FLOW_MOVED);
    assert!(
        moved >= 100 - WAYS,
        "established flows beyond the buckets moved"
    );
    assert_eq!(
        d.balancer().flow_table_counts().unwrap(),
        (100 - moved, moved)
    );

    // A SYN flood twenty times the buckets' size: its half-open flows take each other's
    // places. Where both of a flood flow's buckets hold only established flows, the least
    // recently seen of them moves to the overflow hash (at most one per such pair of
    // buckets: the next flood flow there finds a half-open one to replace). None is dropped,
    // and the overflow hash holds only established flows.
    for port in 40_000..41_000 {
        send(&d, port, SYN);
    }
    let moved_now = event(&d, reason::EVENT_FLOW_MOVED);
    assert!(moved_now - moved <= 16, "{} more moved", moved_now - moved);
    assert!(event(&d, reason::EVENT_FLOW_RECLAIMED) > 900);
    assert_eq!(d.balancer().flow_table_counts().unwrap().1, moved_now);
    for (i, rs) in established.iter().enumerate() {
        let port = 20_000 + i as u16;
        assert_eq!(send(&d, port, ACK), *rs, "port {port} kept its real server");
        assert_eq!(state(&d, port), "ESTABLISHED");
    }
    assert_eq!(event(&d, reason::EVENT_FLOW_RESCHEDULED), 0);
    assert_eq!(event(&d, reason::EVENT_FLOW_INSERT_FAILED), 0);
}

#[test]
fn a_table_full_of_established_connections_keeps_them_all() {
    pin_to_cpu0();
    let d = director_from(CONFIG);
    let full = (WAYS + OVERFLOW) as u16;
    let established: Vec<[u8; 6]> = (0..full).map(|i| establish(&d, 10_000 + i)).collect();
    assert_eq!(event(&d, reason::EVENT_FLOW_INSERT_FAILED), 0);
    assert_eq!(d.balancer().flows_v4().unwrap().len(), usize::from(full));

    // New connections are forwarded but not remembered: each goes where the hash says, so
    // its later packets (misses too) follow it.
    for port in 50_000..50_020 {
        let rs = send(&d, port, SYN);
        assert_eq!(
            send(&d, port, ACK),
            rs,
            "port {port}: the ACK follows the SYN"
        );
        assert_eq!(send(&d, port, PSH_ACK), rs);
    }
    assert_eq!(event(&d, reason::EVENT_FLOW_INSERT_FAILED), 20);
    assert_eq!(d.balancer().flows_v4().unwrap().len(), usize::from(full));
    for (i, rs) in established.iter().enumerate() {
        assert_eq!(send(&d, 10_000 + i as u16, ACK), *rs, "connection {i} kept");
    }
    assert_eq!(event(&d, reason::EVENT_FLOW_RESCHEDULED), 0);
}

#[test]
fn idle_connections_expire_on_their_states_timeout_and_free_their_places() {
    pin_to_cpu0();
    let mut d = director_from(CONFIG);
    d.apply(&[Op::SetTimeouts(Timeouts {
        tcp: 50,
        tcp_fin: 20,
        udp: 0,
    })])
    .unwrap();
    let clock = d.balancer().clock().unwrap();
    assert_eq!(clock.timeout(conn::ESTABLISHED), 50);
    assert_eq!(clock.timeout(conn::FIN_WAIT), 20);
    assert_eq!(clock.timeout(conn::UDP), 300, "0 leaves a timeout as it is");

    for port in 0..30 {
        establish(&d, 30_000 + port);
    }
    for port in 0..10 {
        send(&d, 30_000 + port, FIN_ACK);
    }
    // 30 s on: the FIN_WAIT ones (20 s) expired, the established ones (50 s) did not.
    advance_clock(&mut d, 30);
    d.sweep_now().unwrap();
    assert_eq!(d.sweep_totals(), (10, 0), "(expired, stale) flows freed");
    assert_eq!(d.balancer().flows_v4().unwrap().len(), 20);
    assert_eq!(active_inactive(&d, &web()), (20, 0));
    assert!(flow(&d, 30_000).is_none() && flow(&d, 30_010).is_some());

    // A packet keeps a connection alive: 40 s more, and only the one that spoke remains.
    send(&d, 30_010, ACK);
    advance_clock(&mut d, 40);
    d.sweep_now().unwrap();
    assert_eq!(d.sweep_totals(), (29, 0));
    assert_eq!(d.balancer().flows_v4().unwrap().len(), 1);
    assert_eq!(state(&d, 30_010), "ESTABLISHED");

    // Expired places are taken first: with every bucket full of established flows whose time
    // ran out, each new flow takes one of their places before the sweep gets to it, and
    // nothing moves to the overflow hash.
    for port in 0..300 {
        establish(&d, 31_000 + port);
    }
    assert_eq!(d.balancer().flow_table_counts().unwrap().0, WAYS);
    let moved = event(&d, reason::EVENT_FLOW_MOVED);
    let reclaimed = event(&d, reason::EVENT_FLOW_RECLAIMED);
    advance_clock(&mut d, 60);
    for port in 0..48 {
        send(&d, 32_000 + port, SYN);
    }
    assert_eq!(event(&d, reason::EVENT_FLOW_MOVED), moved);
    assert_eq!(event(&d, reason::EVENT_FLOW_RECLAIMED) - reclaimed, 48);
}

#[test]
fn flows_of_a_removed_real_server_are_forgotten_by_the_sweep() {
    pin_to_cpu0();
    let mut d = director_from(CONFIG);
    let macs: Vec<[u8; 6]> = (0..20).map(|p| establish(&d, 33_000 + p)).collect();
    let on_rs1 = macs.iter().filter(|m| m[5] == 3).count() as u64;
    d.apply(&[Op::DeleteReal(web(), "10.0.0.3".parse().unwrap())])
        .unwrap();
    // The sweep frees a stale flow only once it has been idle a second or more.
    advance_clock(&mut d, 2);
    d.sweep_now().unwrap();
    assert_eq!(d.sweep_totals(), (0, on_rs1));
    assert_eq!(d.balancer().flows_v4().unwrap().len() as u64, 20 - on_rs1);
}
