//! The veth benchmark harness, run briefly so that it cannot rot (a benchmark is not a test:
//! nothing here is timed), and the generator's frames checked field by field. Needs root.
// The benchmark's own harness; the smoke run uses only part of it.
#[allow(dead_code)]
#[path = "../benches/harness.rs"]
mod harness;
#[allow(dead_code)]
#[path = "../benches/programs.rs"]
mod programs;

use std::{net::IpAddr, time::Duration};

use harness::{Bench, Options, Variant};
use lvs_xdp_common::{FAMILY_V4, PROTO_TCP, PROTO_UDP, bench::PORTS_PER_ADDR};
use lvs_xdp_tests::packet::{self, checksum};
use programs::{BenchPrograms, FRAME_LEN, Traffic};

fn root() {
    assert!(unsafe { libc::geteuid() } == 0, "needs root (BPF, netns)");
}

/// Sum of the L4 segment with its pseudo-header: 0 when the checksum is right.
fn l4_checksum_ok(frame: &[u8], v6: bool, l4_len: usize) -> bool {
    let (src, dst, l4) = if v6 {
        (&frame[22..38], &frame[38..54], 54)
    } else {
        (&frame[26..30], &frame[30..34], 34)
    };
    let mut pseudo = Vec::new();
    pseudo.extend_from_slice(src);
    pseudo.extend_from_slice(dst);
    pseudo.extend_from_slice(&[0, frame[if v6 { 20 } else { 23 }]]);
    pseudo.extend_from_slice(&(l4_len as u16).to_be_bytes());
    pseudo.extend_from_slice(&frame[l4..l4 + l4_len]);
    checksum(&pseudo, 0) == 0
}

#[test]
fn generator_frames_have_the_right_fields_and_checksums() {
    root();
    // The generator counts flows per CPU: a thread that moves between CPUs would see two
    // sequences interleaved.
    harness::pin_to_cpu(0).unwrap();
    let mut programs = BenchPrograms::load().unwrap();
    let cases: [(IpAddr, IpAddr, u8); 4] = [
        (
            "10.1.0.1".parse().unwrap(),
            "10.0.0.10".parse().unwrap(),
            PROTO_TCP,
        ),
        (
            "10.1.0.1".parse().unwrap(),
            "10.0.0.10".parse().unwrap(),
            PROTO_UDP,
        ),
        (
            "fd00::1:0:0:0:1".parse().unwrap(),
            "fd00::10".parse().unwrap(),
            PROTO_TCP,
        ),
        (
            "fd00::1:0:0:0:1".parse().unwrap(),
            "fd00::10".parse().unwrap(),
            PROTO_UDP,
        ),
    ];
    for (saddr, daddr, proto) in cases {
        let v6 = saddr.is_ipv6();
        let flows = PORTS_PER_ADDR + 3;
        programs
            .configure(&Traffic {
                dst_mac: [2, 0, 0, 0, 0, 0xa],
                src_mac: [2, 0, 0, 0, 0, 0xb],
                saddr,
                daddr,
                proto,
                sport: 1024,
                dport: 80,
                flows,
                tcp_flags: programs::TCP_SYN,
            })
            .unwrap();
        // Flows 0, 1, ..., PORTS_PER_ADDR + 2, then 0 again; check the first two, the step to
        // the next address, and the wrap-around.
        let mut frames = Vec::new();
        for _ in 0..flows + 1 {
            frames.push(programs.generate_one().unwrap());
        }
        let l4_len = if proto == PROTO_TCP { 20 } else { 8 };
        for i in [
            0usize,
            1,
            PORTS_PER_ADDR as usize,
            PORTS_PER_ADDR as usize + 2,
            flows as usize,
        ] {
            let f = &frames[i];
            let flow = i as u32 % flows;
            let what = format!("{saddr} {proto} flow {flow}");
            assert_eq!(f.len(), FRAME_LEN, "{what}");
            assert_eq!(
                &f[0..12],
                &[2, 0, 0, 0, 0, 0xa, 2, 0, 0, 0, 0, 0xb],
                "{what}: MACs"
            );
            let (saddr_end, l4) = if v6 { (38, 54) } else { (30, 34) };
            let low = |a: IpAddr| match a {
                IpAddr::V4(a) => u32::from(a),
                IpAddr::V6(a) => u32::from_be_bytes(a.octets()[12..].try_into().unwrap()),
            };
            let host = u32::from_be_bytes(f[saddr_end - 4..saddr_end].try_into().unwrap());
            assert_eq!(
                host,
                low(saddr) + flow / PORTS_PER_ADDR,
                "{what}: source address"
            );
            let sport = u16::from_be_bytes([f[l4], f[l4 + 1]]);
            assert_eq!(
                u32::from(sport),
                1024 + flow % PORTS_PER_ADDR,
                "{what}: source port"
            );
            assert_eq!(
                u16::from_be_bytes([f[l4 + 2], f[l4 + 3]]),
                80,
                "{what}: destination port"
            );
            if !v6 {
                assert_eq!(checksum(&f[14..34], 0), 0, "{what}: IPv4 header checksum");
                let fields = packet::decode(f);
                assert!(
                    fields
                        .iter()
                        .any(|(k, v)| k == "ip.dst" && v == "10.0.0.10"),
                    "{what}: {fields:?}"
                );
            }
            assert!(l4_checksum_ok(f, v6, l4_len), "{what}: L4 checksum");
        }
    }
}

#[test]
fn the_benchmark_runs_end_to_end() {
    root();
    let opts = Options {
        flows: vec![100, 20_000],
        runs: 1,
        duration: Duration::from_millis(150),
        warmup: Duration::from_millis(100),
        family: FAMILY_V4,
        proto: PROTO_TCP,
        // Fixed calls, so that the bench's --fixed-chunk mode is exercised too.
        chunk: 1 << 16,
        fixed_chunk: true,
        flow_table_size: 65_536,
        cost_pass: true,
    };
    let mut bench = Bench::new(opts.clone()).expect("set up the benchmark");
    let samples = harness::run(&mut bench, &opts, |_| {}).expect("run");
    assert_eq!(samples.len(), 10);
    for s in &samples {
        assert!(
            s.received > 0,
            "{:?} at {} flows: nothing came back",
            s.variant,
            s.flows
        );
        // Frames of the warm-up still in flight (at most a few batches) may land in the window.
        assert!(s.received <= s.sent + 256, "{s:?}: more received than sent");
        match s.variant {
            // The bounce returns frames to the LB's own MAC: none reach a real server, except
            // stragglers of the previous measurement still in flight (as above).
            Variant::Bounce => assert!(s.per_real[0] + s.per_real[1] <= 256, "{s:?}"),
            // Both real servers get an even share, and everything goes to one of them.
            Variant::MinimalLb | Variant::LvsXdp | Variant::Nftables => {
                assert_eq!(s.per_real[0] + s.per_real[1], s.received, "{s:?}");
                let diff = s.per_real[0].abs_diff(s.per_real[1]);
                assert!(diff * 10 <= s.received, "{s:?}: uneven split");
            }
            // By the clients' hash: both get a share, everything goes to one of them.
            Variant::LvsXdpMh => {
                assert_eq!(s.per_real[0] + s.per_real[1], s.received, "{s:?}");
                assert!(s.per_real[0] > 0 && s.per_real[1] > 0, "{s:?}");
            }
        }
    }
    let costs = bench.cost(100).expect("cost pass");
    let [bounce_ns, minimal_ns, lvs_ns, mh_ns] = costs;
    // The pass produced a figure for each program. Their order is not asserted: this is no
    // timed test, and per-packet costs of tens of nanoseconds, measured briefly on a shared
    // CPU, can come out in any order (seen: the bounce measured above both load balancers).
    for (what, ns) in [
        ("bounce", bounce_ns),
        ("minimal LB", minimal_ns),
        ("lvs-xdp rr", lvs_ns),
        ("lvs-xdp mh", mh_ns),
    ] {
        assert!(
            ns.is_finite() && ns > 0.0 && ns < 1e6,
            "{what}: {ns} ns a packet (bounce {bounce_ns}, minimal LB {minimal_ns}, rr {lvs_ns}, mh {mh_ns})"
        );
    }
    // After the warm-up every flow is in the table: no flow is scheduled again in the window.
    for s in samples.iter().filter(|s| s.variant.scheduler().is_some()) {
        assert_eq!(
            s.misses, 0,
            "{s:?}: flows rescheduled although the table holds them all"
        );
    }
    // The cost pass ran a fresh lvs-xdp on 100 flows: exactly one connection per flow.
    let snap = bench.balancer().snapshot().unwrap();
    assert_eq!(
        snap.services[0].counters.conns, 100,
        "one connection per flow"
    );
    let rows = harness::rows(&samples, &opts.flows);
    let table = harness::table(&rows, &[(100, costs)]);
    assert!(table.contains("| 20000 |"), "{table}");
    // One run: each ratio says it has no spread to show.
    assert_eq!(table.matches(" (1 run) |").count(), 2 * 5, "{table}");
    // Several runs: the per-round ratios' median, lowest and highest.
    let spread = harness::Spread::of_ratios(&[4.0, 4.5, 3.0], &[5.0, 5.0, 5.0]);
    assert_eq!(spread.show(1.0, ""), "0.80 (0.60-0.90)");
    assert_eq!(spread.show(100.0, "%"), "80% (60-90)");
    let svg = harness::svg(&rows, "smoke");
    assert!(
        svg.starts_with("<svg") && svg.contains("20000 flows"),
        "{svg}"
    );
    // Weights 1:2:3 over 60 000 new connections on the veth harness: wrr within 2% of each
    // share, mh within 5%.
    for (scheduler, tolerance) in [
        (lvs_xdp::model::Scheduler::WeightedRoundRobin, 0.02),
        (lvs_xdp::model::Scheduler::Maglev, 0.05),
    ] {
        let got = bench
            .distribution(scheduler, [1, 2, 3], 60_000)
            .expect("distribution run");
        println!(
            "{}: 1:2:3 over 60 000 new connections: {got:?}",
            scheduler.name()
        );
        let total = got.iter().sum::<u64>();
        assert!(
            (60_000..=60_060).contains(&total),
            "{scheduler:?}: every flow scheduled once, a few made room and scheduled again: {got:?}"
        );
        for (n, want) in got.iter().zip([1.0 / 6.0, 2.0 / 6.0, 3.0 / 6.0]) {
            let share = *n as f64 / total as f64;
            assert!(
                (share - want).abs() <= want * tolerance,
                "{scheduler:?}: {got:?} is not within {tolerance} of 1:2:3"
            );
        }
    }
    let names = (bench.gen_ns.name.clone(), bench.lb_ns.name.clone());
    drop(bench);
    let left = lvs_xdp_tests::netns::list().unwrap();
    assert!(
        !left.contains(&names.0) && !left.contains(&names.1),
        "namespaces left: {left:?}"
    );
}
