//! The LVS-DR lab in network namespaces with real nginx and the real `lvs-xdp run`: GETs reach
//! both real servers in turn, a 20 MB download arrives intact with the replies bypassing the
//! load balancer, and stopping leaves no program attached and no namespace behind. Needs root.
use std::time::Duration;

use lvs_xdp_tests::{bins, lab::Lab};

const SIZE: usize = 20 * 1024 * 1024;

fn namespaces() -> Vec<String> {
    lvs_xdp_tests::netns::list().unwrap()
}

/// Deterministic, non-repeating content so that a misplaced or lost segment cannot go unnoticed.
fn content() -> Vec<u8> {
    let mut x: u64 = 0x9e37_79b9_7f4a_7c15;
    (0..SIZE)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            (x >> 24) as u8
        })
        .collect()
}

/// `lvs-xdp run` on the LB with the lab's configuration, in `mode`, stats every `interval` s.
fn start_lb(lab: &mut Lab, bin: &std::path::Path, mode: &str, interval: &str) {
    let config = lab.write_lvs_config().unwrap();
    let config = config.to_str().unwrap();
    lab.start_lb(
        bin,
        &["--config", config, "--mode", mode, "--interval", interval],
    )
    .expect("start lvs-xdp");
}

#[test]
fn dr_lab_with_nginx_end_to_end() {
    assert!(
        unsafe { libc::geteuid() } == 0,
        "the DR lab needs root (netns, XDP)"
    );
    let bin = bins::lvs_xdp();
    let big = content();
    let names;
    {
        let mut lab = Lab::new("test").expect("build the lab topology");
        names = lab.namespace_names();
        lab.start_nginx(Some(&big)).expect("start nginx");
        start_lb(&mut lab, &bin, "native", "1");

        // Round-robin per new connection; the client is pinned to one CPU, so one per-CPU
        // position serves every SYN and the answers strictly alternate.
        let answers: Vec<String> = (0..10)
            .map(|i| {
                lab.get("/index.html")
                    .unwrap_or_else(|e| panic!("GET #{i}: {e:#}\n{}", lab.lb_output()))
            })
            .collect();
        for (i, a) in answers.iter().enumerate() {
            let want = if i % 2 == 0 {
                "rs1 192.168.0.3"
            } else {
                "rs2 192.168.0.4"
            };
            assert_eq!(a.trim(), want, "GET #{i}; all answers: {answers:?}");
        }

        // 20 MB through the VIP, intact; the LB sees only the client's side of it.
        let (lb_rx0, _) = Lab::eth0_bytes(&lab.lb).unwrap();
        let (client_rx0, _) = Lab::eth0_bytes(&lab.client).unwrap();
        let dest = lab.dir.0.join("download.bin");
        lab.download("/big.bin", &dest)
            .expect("download 20 MB through the VIP");
        let got = std::fs::read(&dest).unwrap();
        assert_eq!(got.len(), big.len(), "downloaded size");
        assert!(got == big, "downloaded bytes differ from the served file");
        let (lb_rx1, _) = Lab::eth0_bytes(&lab.lb).unwrap();
        let (client_rx1, _) = Lab::eth0_bytes(&lab.client).unwrap();
        assert!(
            client_rx1 - client_rx0 > SIZE as u64,
            "the client received the file"
        );
        assert!(
            lb_rx1 - lb_rx0 < (SIZE / 10) as u64,
            "the LB received {} bytes during a {SIZE}-byte download: replies did not bypass it",
            lb_rx1 - lb_rx0
        );

        // SIGTERM: exit 0, program detached, final stats printed with the connections counted.
        let status = lab.stop_lb().unwrap();
        let out = lab.lb_output();
        assert!(status.success(), "lvs-xdp exit: {status}\n{out}");
        assert!(
            !lab.xdp_attached().unwrap(),
            "XDP still attached after exit"
        );
        assert!(out.contains("detached from eth0"), "{out}");
        let last_service_line = out
            .lines()
            .rfind(|l| l.starts_with("TCP 192.168.0.10:80 rr"))
            .unwrap_or_else(|| panic!("no stats table in:\n{out}"));
        let conns: u64 = last_service_line
            .split_whitespace()
            .nth(5)
            .unwrap()
            .parse()
            .unwrap();
        assert_eq!(conns, 11, "10 GETs and one download: {last_service_line}");
        assert!(out.contains("forwarded="), "{out}");
    }
    // The lab is dropped: every namespace is gone.
    let left = namespaces();
    for n in names {
        assert!(!left.contains(&n), "namespace {n} left behind");
    }
}

#[test]
fn sigint_also_detaches_and_exits_zero() {
    assert!(unsafe { libc::geteuid() } == 0, "needs root");
    let bin = bins::lvs_xdp();
    let mut lab = Lab::new("sigint").unwrap();
    // No nginx needed: the real servers answer ARP, which is all `run` needs.
    start_lb(&mut lab, &bin, "generic", "0");
    let status = lab
        .stop_lb_with(libc::SIGINT, Duration::from_secs(10))
        .unwrap();
    assert!(status.success(), "{status}: {}", lab.lb_output());
    assert!(!lab.xdp_attached().unwrap());
}
