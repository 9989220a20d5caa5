//! Schedulers through BPF_PROG_TEST_RUN: `mh` (Maglev) spreads new connections by weight,
//! two directors with the same real servers pick the same one for every client whatever their
//! configuration's order, a packet missing from the flow table goes where the hash says, and
//! one real server in N changes about 1/N of the choices. Needs root.
mod support;

use std::{collections::HashMap, net::Ipv4Addr};

use lvs_xdp::{
    Director,
    model::{Op, Protocol, RealOpts, ServiceKey},
};
use lvs_xdp_tests::packet::Frame;
use support::{LB, XDP_TX, director_from, pin_to_cpu0};

const VIP: &str = "10.0.0.10";
const SYN: u8 = 0x02;
const ACK: u8 = 0x10;

fn web() -> ServiceKey {
    ServiceKey::new(Protocol::Tcp, VIP.parse::<Ipv4Addr>().unwrap(), 80)
}

/// An `mh` service with real servers 10.0.0.(3 + i) of these weights, listed in `order`.
fn config(weights: &[u32], order: &[usize], extra: &str) -> String {
    let reals: Vec<String> = order
        .iter()
        .map(|&i| {
            format!(
                "{{ address = \"10.0.0.{}\", mac = \"02:00:00:00:00:{:02x}\", weight = {} }}",
                3 + i,
                3 + i,
                weights[i]
            )
        })
        .collect();
    format!(
        "flow_table_size = 65536\n[[service]]\nvip = \"{VIP}\"\nport = 80\nscheduler = \"mh\"\nreal_servers = [ {} ]\n{extra}",
        reals.join(", ")
    )
}

/// Checks that `counts` (connections by the last byte of the real server's MAC: 3, 4, 5) split
/// `n` as weights 1:2:3 do, within `tolerance` of each share; prints the shares.
fn assert_one_two_three(label: &str, counts: &HashMap<u8, u32>, n: u32, tolerance: f64) {
    for (mac, weight) in [(3u8, 1.0), (4, 2.0), (5, 3.0)] {
        let share = f64::from(counts.get(&mac).copied().unwrap_or(0)) / f64::from(n);
        let want = weight / 6.0;
        println!(
            "{label} 1:2:3 over {n} new connections: 10.0.0.{mac} {:.2}% (weight share {:.2}%)",
            share * 100.0,
            want * 100.0
        );
        assert!(
            (share - want).abs() < want * tolerance,
            "{label} 10.0.0.{mac}: {share}, want {want}"
        );
    }
}

/// Client `i`'s address: one client a connection, all different.
fn client(i: u32) -> String {
    Ipv4Addr::from(u32::from(Ipv4Addr::new(10, 100, 0, 0)) + i).to_string()
}

/// Where a TCP packet from client `i` (port `port`, `flags`) goes: the last byte of the MAC.
fn send(d: &Director, i: u32, port: u16, flags: u8) -> u8 {
    let frame = Frame::tcp(LB, &client(i), port, VIP, 80)
        .with_tcp_flags(flags)
        .build();
    let (action, out) = d.balancer().test_run(&frame).unwrap();
    assert_eq!(action, XDP_TX, "client {i}");
    out[5]
}

#[test]
fn mh_spreads_new_connections_by_weight() {
    pin_to_cpu0();
    let d = director_from(&config(&[1, 2, 3], &[0, 1, 2], ""));
    let n = 60_000;
    let mut counts: HashMap<u8, u32> = HashMap::new();
    for i in 0..n {
        *counts.entry(send(&d, i, 40_000, SYN)).or_default() += 1;
    }
    assert_one_two_three("mh", &counts, n, 0.05);
}

#[test]
fn two_directors_with_the_same_real_servers_agree_and_misses_follow_the_hash() {
    pin_to_cpu0();
    let a = director_from(&config(&[1, 2, 1, 3], &[0, 1, 2, 3], ""));
    // Another order, and another service besides.
    let other = "[[service]]\nvip = \"10.0.0.20\"\nport = 443\nreal_servers = [ { address = \"10.0.0.9\", mac = \"02:00:00:00:00:09\" } ]\n";
    let b = director_from(&config(&[1, 2, 1, 3], &[3, 1, 0, 2], other));
    for i in 0..2_000 {
        let on_a = send(&a, i, 50_000, SYN);
        assert_eq!(send(&b, i, 50_000, SYN), on_a, "client {i}: SYN on both");
        // A connection that B never saw (failover, a restart): its next packet, a miss without
        // SYN, goes where A sent it.
        assert_eq!(
            send(&b, i, 50_001, ACK),
            send(&a, i, 50_001, SYN),
            "client {i}: miss"
        );
    }
}

#[test]
fn one_real_server_in_ten_changes_about_a_tenth_of_the_choices() {
    pin_to_cpu0();
    let mut d = director_from(&config(&[1; 10], &(0..10).collect::<Vec<_>>(), ""));
    let n = 20_000u32;
    let before: Vec<u8> = (0..n).map(|i| send(&d, i, 1000, SYN)).collect();
    d.apply(&[Op::DeleteReal(web(), "10.0.0.3".parse().unwrap())])
        .unwrap();
    // New connections (fresh ports) from the same clients.
    let after: Vec<u8> = (0..n).map(|i| send(&d, i, 2000, SYN)).collect();
    let moved = before.iter().zip(&after).filter(|(a, b)| a != b).count();
    let own = before.iter().filter(|m| **m == 3).count();
    println!(
        "mh: removing 1 of 10 real servers moved {:.2}% of new connections' choices ({:.2}% were its own)",
        moved as f64 * 100.0 / f64::from(n),
        own as f64 * 100.0 / f64::from(n)
    );
    assert!(
        moved >= own && (moved as f64) < f64::from(n) * 0.13,
        "{moved} of {n} moved"
    );
    // The established connections of the others stay where they are; weight 0 takes one out
    // of the table while its connections go on.
    let rs = send(&d, 7, 1000, ACK);
    assert_eq!(
        rs, before[7],
        "a remembered connection keeps its real server"
    );
    let quiet = RealOpts {
        weight: 0,
        mac: Some(lvs_xdp::model::Mac([2, 0, 0, 0, 0, 4])),
        vlan: None,
    };
    d.apply(&[Op::EditReal(web(), "10.0.0.4".parse().unwrap(), quiet)])
        .unwrap();
    for i in 0..2_000 {
        assert_ne!(
            send(&d, i, 3000, SYN),
            4,
            "weight 0 takes no new connection"
        );
    }
}

/// The data plane looks a client up where the library's table says: the unseeded client hash
/// is the same in both, and the table lies in the map as written; with the default table size
/// and with configured ones (`maglev_table_size`, the size the loader gives the program).
#[test]
fn the_data_plane_follows_the_table_the_library_builds() {
    pin_to_cpu0();
    let default = lvs_xdp_common::maglev::DEFAULT_TABLE_SIZE;
    for size in [default, 251, 1_048_573] {
        let head = if size == default {
            String::new()
        } else {
            format!("maglev_table_size = {size}\nmax_mh_services = 1\n")
        };
        follows_the_table(
            &format!("{head}{}", config(&[1, 2, 3], &[0, 1, 2], "")),
            size,
        );
    }
}

fn follows_the_table(toml: &str, size: u32) {
    let d = director_from(toml);
    let members: Vec<lvs_xdp::maglev::Member> = (0..3)
        .map(|i| {
            let addr: Ipv4Addr = format!("10.0.0.{}", 3 + i).parse().unwrap();
            let slot = d.slot_of(&web(), addr).unwrap();
            lvs_xdp::maglev::Member {
                addr: addr.into(),
                weight: [1, 2, 3][i],
                slot,
            }
        })
        .collect();
    let table = lvs_xdp::maglev::populate(size, &members);
    for i in 0..1000u32 {
        let c: Ipv4Addr = client(i).parse().unwrap();
        let key = lvs_xdp_common::FlowKeyV4 {
            saddr: u32::from_ne_bytes(c.octets()),
            daddr: 0,
            ports: 0,
            proto: 0,
        };
        let slot = table[lvs_xdp_common::maglev::entry(false, &key, size) as usize];
        let want = members
            .iter()
            .find(|m| m.slot == slot)
            .unwrap()
            .addr
            .to_string();
        let want: u8 = want.rsplit('.').next().unwrap().parse().unwrap();
        assert_eq!(
            send(&d, i, 1000, SYN),
            want,
            "table size {size}, client {i}"
        );
    }
}

/// Without `mh-port` every connection of a client goes to one real server, as IPVS's `mh`
/// hashes the address alone; with it, one client's connections spread by port.
#[test]
fn mh_port_spreads_one_clients_connections() {
    pin_to_cpu0();
    let plain = director_from(&config(&[1, 1, 1], &[0, 1, 2], ""));
    let with_port = config(&[1, 1, 1], &[0, 1, 2], "").replace(
        "scheduler = \"mh\"",
        "scheduler = \"mh\"\nscheduler_flags = [\"mh-port\"]",
    );
    let by_port = director_from(&with_port);
    let mut seen_plain = HashMap::new();
    let mut seen_port: HashMap<u8, u32> = HashMap::new();
    for port in 10_000..13_000u16 {
        *seen_plain.entry(send(&plain, 7, port, SYN)).or_insert(0) += 1;
        *seen_port.entry(send(&by_port, 7, port, SYN)).or_default() += 1;
    }
    assert_eq!(seen_plain.len(), 1, "{seen_plain:?}");
    assert_eq!(seen_port.len(), 3, "{seen_port:?}");
    assert!(seen_port.values().all(|n| *n > 800), "{seen_port:?}");
}

/// `wrr` turns as IPVS orders them (weights 1:2:3 give C, B, C, A, B, C), and its shares over
/// 60 000 new connections.
#[test]
fn wrr_follows_the_weights_in_ipvss_order() {
    pin_to_cpu0();
    let d = director_from(&config(&[1, 2, 3], &[0, 1, 2], "").replace("\"mh\"", "\"wrr\""));
    let first: Vec<u8> = (0..6).map(|i| send(&d, i, 30_000, SYN)).collect();
    assert_eq!(first, vec![5, 4, 5, 3, 4, 5]);
    let n = 60_000u32;
    let mut counts: HashMap<u8, u32> = HashMap::new();
    for i in 6..6 + n {
        *counts.entry(send(&d, i, 30_000, SYN)).or_default() += 1;
    }
    assert_one_two_three("wrr", &counts, n, 0.02);
    // A weight changed live changes the turns at once.
    let mut d = d;
    let w = |weight| RealOpts {
        weight,
        mac: Some(lvs_xdp::model::Mac([2, 0, 0, 0, 0, 3])),
        vlan: None,
    };
    d.apply(&[Op::EditReal(web(), "10.0.0.3".parse().unwrap(), w(6))])
        .unwrap();
    let mut to_a = 0;
    for i in 0..1_100u32 {
        to_a += u32::from(send(&d, 100_000 + i, 30_000, SYN) == 3);
    }
    assert!(
        (500..=600).contains(&to_a),
        "weight 6 of 11: {to_a} of 1100"
    );
}

/// A service of `scheduler` over real servers 10.0.0.(3 + i) of these weights.
fn with_scheduler(scheduler: &str, weights: &[u32]) -> Director {
    let order: Vec<usize> = (0..weights.len()).collect();
    director_from(&config(weights, &order, "").replace("\"mh\"", &format!("\"{scheduler}\"")))
}

/// Opens a connection from client `i` that stays established.
fn long(d: &Director, i: u32) -> u8 {
    let rs = send(d, i, 20_000, SYN);
    assert_eq!(send(d, i, 20_000, ACK), rs);
    rs
}

/// A connection from client `i` that opens and closes (FIN, then RST: CLOSE, inactive).
fn short(d: &Director, i: u32) -> u8 {
    let rs = send(d, i, 21_000, SYN);
    send(d, i, 21_000, ACK);
    send(d, i, 21_000, 0x11);
    send(d, i, 21_000, 0x04);
    rs
}

/// Real server 10.0.0.(3 + i)'s connections as the data plane counts them for scheduling.
fn counted(d: &Director, i: u8) -> (i64, i64) {
    let slot = d.slot_of(&web(), Ipv4Addr::new(10, 0, 0, 3 + i)).unwrap();
    d.balancer().real_conns().get(slot)
}

/// `lc` keeps the established connections balanced when connection lengths differ; round
/// robin, on the same pattern, piles every long one on one real server.
#[test]
fn lc_keeps_connections_balanced_when_their_lengths_differ() {
    pin_to_cpu0();
    let run = |scheduler| {
        let d = with_scheduler(scheduler, &[1, 1]);
        let mut longs: HashMap<u8, u32> = HashMap::new();
        for i in 0..20 {
            *longs.entry(long(&d, 2 * i)).or_default() += 1;
            short(&d, 2 * i + 1);
        }
        (d, longs)
    };
    let (_, rr) = run("rr");
    assert_eq!(
        rr.len(),
        1,
        "rr: every long connection on one real server: {rr:?}"
    );
    let (d, lc) = run("lc");
    assert_eq!((lc[&3], lc[&4]), (10, 10), "lc: {lc:?}");
    // The counts the scheduler read are IPVS's: 10 active and 10 inactive on each (one CPU:
    // exact; the sweep's scan of the table agrees).
    assert_eq!((counted(&d, 0), counted(&d, 1)), ((10, 10), (10, 10)));
}

/// The data plane's counts follow every change of state, and agree with a scan of the table.
#[test]
fn connection_counts_follow_every_change_of_state() {
    pin_to_cpu0();
    let mut d = with_scheduler("wlc", &[1, 1]);
    for i in 0..30 {
        long(&d, i);
    }
    for i in 0..10 {
        send(&d, i, 20_000, 0x11); // FIN: established -> FIN_WAIT (inactive)
    }
    for i in 10..15 {
        send(&d, i, 20_000, 0x04); // RST: established -> CLOSE (inactive)
    }
    for i in 100..105 {
        send(&d, i, 22_000, SYN); // half-open: active
    }
    let total = |d: &Director| {
        let (a, b) = (counted(d, 0), counted(d, 1));
        (a.0 + b.0, a.1 + b.1)
    };
    assert_eq!(total(&d), (15 + 5, 15));
    d.refresh_connections().unwrap();
    let s = d.snapshot().unwrap();
    let scanned = s
        .service(&web())
        .unwrap()
        .reals
        .iter()
        .fold((0, 0), |(a, i), r| {
            (a + r.conns.0 as i64, i + r.conns.1 as i64)
        });
    assert_eq!(
        scanned,
        total(&d),
        "the table scan and the data plane agree"
    );
    // Expired flows freed by the sweep leave the counts: after 200 s idle, the FIN_WAIT (120 s),
    // CLOSE (10 s) and half-open (60 s) ones; the established ones (900 s) stay.
    let mut clock = d.balancer().clock().unwrap();
    clock.now += 200;
    d.balancer_mut().set_clock(&clock).unwrap();
    d.sweep_now().unwrap();
    assert_eq!(total(&d), (15, 0));
}

/// The approximation the README states: two CPUs scheduling at the same instant read the same
/// counts and may both pick the same real server. Bounded here: 6 000 new connections from two
/// CPUs at once over four real servers with `lc`; the counts stay exact (each change is an
/// atomic add: they equal a scan of the flow table), and the real servers' counts differ by at
/// most two, the number of CPUs (a decision misses at most the one in flight on the other CPU).
#[test]
fn two_cpus_scheduling_at_once_keep_exact_counts_and_lc_within_two() {
    const PER_CPU: u32 = 3_000;
    let d = director_from(&config(&[1, 1, 1, 1], &[0, 1, 2, 3], "").replace("\"mh\"", "\"lc\""));
    let cpus = std::thread::available_parallelism().map_or(1, |n| n.get());
    assert!(cpus >= 2, "this test needs two CPUs");
    std::thread::scope(|scope| {
        for cpu in 0..2u32 {
            let d = &d;
            scope.spawn(move || {
                // SAFETY: a zeroed cpu_set_t with one bit set, for the calling thread.
                unsafe {
                    let mut set: libc::cpu_set_t = std::mem::zeroed();
                    libc::CPU_SET(cpu as usize, &mut set);
                    assert_eq!(
                        libc::sched_setaffinity(0, size_of::<libc::cpu_set_t>(), &set),
                        0
                    );
                }
                for i in 0..PER_CPU {
                    send(d, cpu * PER_CPU + i, 20_000, SYN);
                }
            });
        }
    });
    let counts: Vec<i64> = (0..4).map(|i| counted(&d, i).0).collect();
    println!("lc from two CPUs at once, 4 real servers: active {counts:?}");
    assert_eq!(counts.iter().sum::<i64>(), i64::from(2 * PER_CPU));
    let (max, min) = (counts.iter().max().unwrap(), counts.iter().min().unwrap());
    assert!(max - min <= 2, "lc from two CPUs: {counts:?}");
    let mut d = d;
    d.refresh_connections().unwrap();
    let s = d.snapshot().unwrap();
    let scanned: Vec<i64> = s
        .service(&web())
        .unwrap()
        .reals
        .iter()
        .map(|r| r.conns.0 as i64)
        .collect();
    assert_eq!(scanned, counts, "the table scan and the data plane agree");
}

#[test]
fn wlc_sed_nq_fo_and_ovf_choose_as_ipvs() {
    pin_to_cpu0();
    // wlc, weights 1:3: established connections split 1:3.
    let d = with_scheduler("wlc", &[1, 3]);
    let mut n: HashMap<u8, u32> = HashMap::new();
    for i in 0..40 {
        *n.entry(long(&d, i)).or_default() += 1;
    }
    assert_eq!((n[&3], n[&4]), (10, 30), "wlc: {n:?}");
    // sed: (active + 1) / weight; weights 1:3 give the first three to the heavier one.
    let d = with_scheduler("sed", &[1, 3]);
    let first: Vec<u8> = (0..4).map(|i| long(&d, i)).collect();
    assert_eq!(first, vec![4, 4, 3, 4], "sed");
    // nq: an idle real server first (the first idle one in order), whatever the weights; then
    // as sed.
    let d = with_scheduler("nq", &[1, 3]);
    let first: Vec<u8> = (0..4).map(|i| long(&d, i)).collect();
    assert_eq!(first, vec![3, 4, 4, 4], "nq");
    // fo: the highest weight takes everything.
    let d = with_scheduler("fo", &[1, 3, 2]);
    assert!((0..20).all(|i| long(&d, i) == 4), "fo");
    // ovf: the highest weight until its active connections exceed its weight, then the next.
    let d = with_scheduler("ovf", &[1, 3, 2]);
    let first: Vec<u8> = (0..9).map(|i| long(&d, i)).collect();
    assert_eq!(first, vec![4, 4, 4, 4, 5, 5, 5, 3, 3], "ovf");
}

/// `sh`: a client's connections all go to one real server, the one IPVS's bucket function and
/// table give; weights set the buckets. A real server of weight 0 holds buckets, but its clients
/// get nothing unless `sh-fallback`, which moves them to the next bucket's real server.
#[test]
fn sh_and_dh_look_clients_up_as_ipvs() {
    pin_to_cpu0();
    let d = with_scheduler("sh", &[1, 2]);
    let members: Vec<(u32, u32)> = (0..2)
        .map(|i| {
            (
                d.slot_of(&web(), Ipv4Addr::new(10, 0, 0, 3 + i)).unwrap(),
                [1, 2][i as usize],
            )
        })
        .collect();
    let table = lvs_xdp::hashtab::table(&members);
    let mut counts: HashMap<u8, u32> = HashMap::new();
    for i in 0..3_000u32 {
        let c: Ipv4Addr = client(i).parse().unwrap();
        let b = lvs_xdp_common::scheduler::bucket(u32::from(c), 0);
        let slot = table[b as usize];
        let want = if slot == members[0].0 { 3 } else { 4 };
        let got = send(&d, i, 5000, SYN);
        assert_eq!(got, want, "client {i}");
        assert_eq!(
            send(&d, i, 5001, SYN),
            got,
            "client {i}: another connection"
        );
        *counts.entry(got).or_default() += 1;
    }
    let share = f64::from(counts[&3]) / 3000.0;
    assert!((share - 1.0 / 3.0).abs() < 0.03, "weight 1 of 3: {share}");

    // Weight 0 on 10.0.0.3: its clients are refused, or with sh-fallback moved on.
    let quiet = |d: &mut Director| {
        let opts = RealOpts {
            weight: 0,
            mac: Some(lvs_xdp::model::Mac([2, 0, 0, 0, 0, 3])),
            vlan: None,
        };
        d.apply(&[Op::EditReal(web(), "10.0.0.3".parse().unwrap(), opts)])
            .unwrap();
    };
    let mut d = d;
    quiet(&mut d);
    let on_3: Vec<u32> = (0..3_000u32)
        .filter(|i| before(&table, &members, *i) == 3)
        .collect();
    let frame = |i: u32| Frame::tcp(LB, &client(i), 6000, VIP, 80).build();
    for &i in on_3.iter().take(20) {
        assert_eq!(
            d.balancer().test_run(&frame(i)).unwrap().0,
            1,
            "client {i}: XDP_DROP"
        );
    }
    let mut fb = with_scheduler("sh", &[1, 2]);
    let key = web();
    let flags = lvs_xdp::model::ServiceOpts {
        scheduler: lvs_xdp::model::Scheduler::SourceHashing,
        flags: lvs_xdp::model::SchedFlags {
            fallback: true,
            port: false,
        },
        persistence: None,
    };
    fb.apply(&[Op::EditService(key, flags)]).unwrap();
    quiet(&mut fb);
    for &i in on_3.iter().take(20) {
        assert_eq!(send(&fb, i, 6000, SYN), 4, "client {i}: sh-fallback");
    }

    // dh: by the destination, so every client of a VIP goes to one real server.
    let dh = with_scheduler("dh", &[1, 1]);
    let first = send(&dh, 0, 7000, SYN);
    assert!((1..500).all(|i| send(&dh, i, 7000, SYN) == first));
}

/// Which real server (last MAC byte) `sh` gives client `i` with the table of `members`.
fn before(table: &[u32], members: &[(u32, u32)], i: u32) -> u8 {
    let c: Ipv4Addr = client(i).parse().unwrap();
    let slot = table[lvs_xdp_common::scheduler::bucket(u32::from(c), 0) as usize];
    if slot == members[0].0 { 3 } else { 4 }
}

/// Persistence (`-p 300 -M 255.255.255.0`): every new connection of a client network goes to
/// the real server of its first one, whatever the scheduler would say, until 300 s after its
/// last new connection; misses follow the template too; then the sweep deletes it.
#[test]
fn persistence_keeps_a_client_network_on_one_real_server() {
    pin_to_cpu0();
    let toml = config(&[1, 1], &[0, 1], "").replace(
        "scheduler = \"mh\"",
        "scheduler = \"rr\"\npersistence_timeout = 300\npersistence_netmask = \"255.255.255.0\"",
    );
    let mut d = director_from(&toml);
    // Clients 10.100.0.0 .. 10.100.0.255 are one /24 network; round robin alone alternates.
    let first = send(&d, 0, 1000, SYN);
    for i in 0..40u32 {
        assert_eq!(
            send(&d, i, 2000 + i as u16, SYN),
            first,
            "client {i}: persistent"
        );
    }
    // Another network: its own template (round robin's next choice).
    let other = 256;
    let theirs = send(&d, other, 1000, SYN);
    assert_ne!(theirs, first);
    // A packet without SYN that misses goes where the template says.
    assert_eq!(send(&d, 5, 9000, ACK), first);
    // 299 s later the template still holds (the last new connection renewed it) ...
    let mut clock = d.balancer().clock().unwrap();
    clock.now += 299;
    d.balancer_mut().set_clock(&clock).unwrap();
    assert_eq!(send(&d, 1, 3000, SYN), first);
    // `-L -c` lists the templates as ipvsadm does: state NONE, the network with port 0, the
    // seconds left (the first network's renewed just now, the other's 1 s from its end).
    let listed: Vec<(String, u16, String, u32)> = d
        .connections()
        .unwrap()
        .into_iter()
        .filter(|c| c.state == "NONE")
        .map(|c| {
            (
                c.client.to_string(),
                c.client_port,
                c.real.to_string(),
                c.expires,
            )
        })
        .collect();
    let real = |mac: u8| format!("10.0.0.{mac}");
    assert_eq!(
        listed,
        [
            ("10.100.0.0".to_string(), 0, real(first), 300),
            ("10.100.1.0".to_string(), 0, real(theirs), 1),
        ]
    );
    // ... and 301 s after that it has expired: the sweep deletes both networks' templates, and
    // the next new connection is scheduled again and makes a new one.
    let templates = |d: &mut Director| d.balancer_mut().templates().iter().count();
    assert_eq!(templates(&mut d), 2);
    clock.now += 301;
    d.balancer_mut().set_clock(&clock).unwrap();
    d.sweep_now().unwrap();
    assert_eq!(templates(&mut d), 0, "expired templates deleted");
    let next = send(&d, 2, 4000, SYN);
    assert_eq!(templates(&mut d), 1);
    for i in 3..10 {
        assert_eq!(send(&d, i, 4001, SYN), next, "client {i}: the new template");
    }
}

/// `twos`: two draws by weight, the lower overhead / weight kept. Long connections settle near
/// the weights (1:3), as with `wlc`, though each choice is random.
#[test]
fn twos_settles_near_the_weights() {
    pin_to_cpu0();
    let d = with_scheduler("twos", &[1, 3]);
    let mut n: HashMap<u8, u32> = HashMap::new();
    for i in 0..400 {
        *n.entry(long(&d, i)).or_default() += 1;
    }
    println!("twos 1:3 over 400 long connections: {n:?}");
    let light = f64::from(n.get(&3).copied().unwrap_or(0)) / 400.0;
    assert!((light - 0.25).abs() < 0.05, "weight 1 of 4: {light}");
}
