//! The direct path of `mh` services through BPF_PROG_TEST_RUN (see `lvs_xdp_common::maglev`):
//! known flows go straight from the Maglev table (their idle time refreshed only by the few
//! packets sampled through the flow table), and no connection moves when the real servers
//! change, not even one the flow table had forgotten meanwhile; pinned entries are unpinned
//! once their grace has passed and no live flow on them has another real server. Needs root.
mod support;

use std::{collections::HashMap, net::Ipv4Addr};

use lvs_xdp::{
    Director,
    model::{Mac, Op, Protocol, RealOpts, ServiceKey},
};
use lvs_xdp_common::reason;
use lvs_xdp_tests::packet::Frame;
use support::{LB, XDP_TX, director_from, pin_to_cpu0};

const VIP: &str = "10.0.0.10";
const SYN: u8 = 0x02;
const ACK: u8 = 0x10;
const RST: u8 = 0x04;
/// Connections of the test: client i, port 40 000.
const N: u32 = 3_000;
const PORT: u16 = 40_000;

const CONFIG: &str = "flow_table_size = 65536\ndirect_path = \"always\"\n[[service]]\nvip = \"10.0.0.10\"\nport = 80\nscheduler = \"mh\"\nreal_servers = [ { address = \"10.0.0.3\", mac = \"02:00:00:00:00:03\" }, { address = \"10.0.0.4\", mac = \"02:00:00:00:00:04\" }, { address = \"10.0.0.5\", mac = \"02:00:00:00:00:05\" } ]\n";

fn web() -> ServiceKey {
    ServiceKey::new(Protocol::Tcp, VIP.parse::<Ipv4Addr>().unwrap(), 80)
}

fn client(i: u32) -> Ipv4Addr {
    Ipv4Addr::from(u32::from(Ipv4Addr::new(10, 100, 0, 0)) + i)
}

/// Where client `i`'s packet with `flags` goes: the last byte of the MAC.
fn send(d: &Director, i: u32, flags: u8) -> u8 {
    let frame = Frame::tcp(LB, &client(i).to_string(), PORT, VIP, 80)
        .with_tcp_flags(flags)
        .build();
    let (action, out) = d.balancer().test_run(&frame).unwrap();
    assert_eq!(action, XDP_TX, "client {i}");
    out[5]
}

fn advance_clock(d: &mut Director, secs: u32) {
    let mut clock = d.balancer().clock().unwrap();
    clock.now += secs;
    d.balancer_mut().set_clock(&clock).unwrap();
}

/// The seconds each remembered connection of the test has left, by client.
fn expires(d: &Director) -> HashMap<Ipv4Addr, u32> {
    d.connections()
        .unwrap()
        .into_iter()
        .filter(|c| c.client_port == PORT)
        .filter_map(|c| match c.client {
            std::net::IpAddr::V4(a) => Some((a, c.expires)),
            _ => None,
        })
        .collect()
}

/// Opens and establishes the test's N connections; returns each one's real server.
fn open_all(d: &Director) -> Vec<u8> {
    (0..N)
        .map(|i| {
            let rs = send(d, i, SYN);
            assert_eq!(send(d, i, ACK), rs, "client {i}: the handshake's ACK");
            rs
        })
        .collect()
}

fn event(d: &Director, r: u32) -> u64 {
    d.snapshot().unwrap().global[r as usize].packets
}

#[test]
fn known_flows_go_straight_from_the_table_and_no_connection_moves_when_it_changes() {
    pin_to_cpu0();
    let mut d = director_from(CONFIG);
    assert!(d.direct_path_on());
    // N connections, handshakes completed: each remembered as ESTABLISHED.
    let real = open_all(&d);
    let states = d.connections().unwrap();
    assert_eq!(states.len(), N as usize);
    assert!(states.iter().all(|c| c.state == "ESTABLISHED"));
    assert!(
        d.pinned_entries(&web()).unwrap().is_empty(),
        "a new table pins nothing"
    );

    // Ten seconds on, past the new connections' window: the packets of known flows go straight
    // from the table, to the same real servers, and refresh no idle time but the sampled few.
    advance_clock(&mut d, 10);
    let misses = event(&d, reason::EVENT_FLOW_MISS_NONSYN);
    for i in 0..N {
        assert_eq!(send(&d, i, ACK), real[i as usize], "client {i}");
    }
    let left = expires(&d);
    let refreshed = left.values().filter(|s| **s == 900).count();
    println!(
        "direct path: {refreshed} of {N} connections' idle times refreshed by one packet each (sampled through the flow table)"
    );
    assert!(
        refreshed > 0 && refreshed < N as usize / 8,
        "{refreshed} of {N} refreshed: the direct path should take most packets, and sample a few"
    );
    assert_eq!(event(&d, reason::EVENT_FLOW_MISS_NONSYN), misses);

    // The flow table forgets every connection the sampled packets did not refresh (idle for
    // its timeout, as far as it can tell), while their clients go on.
    advance_clock(&mut d, 895);
    d.sweep_now().unwrap();
    let kept = expires(&d).len();
    assert_eq!(kept, refreshed, "the flows not refreshed expired");

    // A fourth real server: about a quarter of the entries change, and are pinned.
    let opts = RealOpts {
        weight: 1,
        mac: Some(Mac([2, 0, 0, 0, 0, 6])),
        vlan: None,
    };
    d.apply(&[Op::AddReal(web(), "10.0.0.6".parse().unwrap(), opts)])
        .unwrap();
    let pinned = d.pinned_entries(&web()).unwrap().len();
    let size = lvs_xdp_common::maglev::DEFAULT_TABLE_SIZE as usize;
    println!("adding 1 real server to 3 pinned {pinned} of {size} Maglev entries");
    assert!(
        pinned > size / 5 && pinned < size / 3,
        "{pinned} entries pinned"
    );

    // No connection moves: remembered ones by the flow table, forgotten ones on pinned entries
    // by the entry's former real server (then remembered), the others straight from the table.
    let pins = event(&d, reason::EVENT_FLOW_PINNED);
    for i in 0..N {
        assert_eq!(send(&d, i, ACK), real[i as usize], "client {i} moved");
    }
    let pinned_flows = event(&d, reason::EVENT_FLOW_PINNED) - pins;
    println!("{pinned_flows} forgotten connections on pinned entries kept their real server");
    assert!(
        pinned_flows as f64 > f64::from(N) * 0.15,
        "{pinned_flows} connections pinned"
    );
    // New connections go by the new table: the new real server gets its share.
    let new: Vec<u8> = (N..N + 2_000).map(|i| send(&d, i, SYN)).collect();
    let to_new = new.iter().filter(|m| **m == 6).count();
    assert!(
        (300..700).contains(&to_new),
        "{to_new} of 2000 to the new one"
    );
    for (k, i) in (N..N + 2_000).enumerate() {
        assert_eq!(send(&d, i, ACK), new[k], "new client {i}");
    }

    // The grace passes. Entries whose connections went on with their former real server stay
    // pinned; the others are unpinned.
    advance_clock(&mut d, 1_000);
    for i in 0..N {
        assert_eq!(
            send(&d, i, ACK),
            real[i as usize],
            "client {i} after the grace"
        );
    }
    d.unpin_now().unwrap();
    let still = d.pinned_entries(&web()).unwrap().len();
    println!("after the grace: {still} entries still pinned by live connections");
    assert!(
        still > 0 && still < pinned / 10,
        "{still} entries still pinned"
    );
    for i in 0..N {
        assert_eq!(
            send(&d, i, ACK),
            real[i as usize],
            "client {i} after unpinning"
        );
    }

    // Those connections end (RST: CLOSE, 10 s): then every entry is unpinned.
    for i in 0..N {
        send(&d, i, RST);
    }
    advance_clock(&mut d, 11);
    d.unpin_now().unwrap();
    assert_eq!(d.pinned_entries(&web()).unwrap(), Vec::<u32>::new());
}

/// `direct_path = "auto"` (the default) leaves a table of a few thousand connections exact:
/// every packet goes through the flow table and refreshes its connection.
#[test]
fn by_default_a_small_table_keeps_every_packet_on_the_flow_table() {
    pin_to_cpu0();
    let mut d = director_from(&CONFIG.replace("direct_path = \"always\"\n", ""));
    let real = open_all(&d);
    d.maintain().unwrap();
    assert!(
        !d.direct_path_on(),
        "{N} connections: the direct path stays off"
    );
    advance_clock(&mut d, 10);
    for i in 0..N {
        assert_eq!(send(&d, i, ACK), real[i as usize], "client {i}");
    }
    let left = expires(&d);
    assert_eq!(left.len(), N as usize);
    let mut seen: Vec<u32> = left.values().copied().collect();
    seen.sort_unstable();
    seen.dedup();
    assert!(
        left.values().all(|s| *s == 900),
        "every connection's idle time refreshed: {seen:?}"
    );
}
