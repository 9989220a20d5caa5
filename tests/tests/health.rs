//! Health checks: in the DR lab with real nginx, a real server whose nginx is killed gets no new
//! connection within `delay_loop x retry + 1 s`, and gets traffic again once nginx is back;
//! through BPF_PROG_TEST_RUN, the kernel follows what the checks decide (inhibited, hidden,
//! removed, sorry server). Needs root.
use std::{
    net::IpAddr,
    time::{Duration, Instant},
};

use lvs_xdp::{
    health::{Check, Health, OnFailure, Probe, ServiceHealth},
    model::{Protocol, ServiceKey},
};
use lvs_xdp_tests::{
    bins,
    lab::{self, Lab, REAL_SERVERS},
    netns::{Netns, in_netns},
    packet::Frame,
};

mod support;
use support::{LB, director_from, forward_of, pin_to_cpu0};

const DELAY_LOOP: f64 = 1.0;
const RETRY: u32 = 2;

/// Which real server answered `GET /` through the VIP (its index.html names it), or why none.
fn who(lab: &Lab) -> Result<String, String> {
    let out = lab
        .client
        .exec_on_cpu(
            0,
            "curl",
            &[
                "-sS",
                "--fail",
                "--max-time",
                "2",
                &format!("http://{}/", lab::VIP),
            ],
        )
        .map_err(|e| e.to_string())?;
    if out.status.success() {
        let body = String::from_utf8_lossy(&out.stdout);
        Ok(body
            .split_whitespace()
            .next()
            .unwrap_or_default()
            .to_string())
    } else {
        Err(String::from_utf8_lossy(&out.stderr).trim().to_string())
    }
}

fn list(lab: &Lab, bin: &std::path::Path) -> String {
    lab::lvs_xdp_words(&lab.lb, bin, &["-L", "-n"])
}

#[test]
fn a_real_server_whose_nginx_dies_gets_no_new_connection_and_comes_back() {
    assert!(
        unsafe { libc::geteuid() } == 0,
        "health checks in the lab need root (netns, XDP)"
    );
    let bin = bins::lvs_xdp();
    let mut lab = Lab::new("health").expect("the lab topology");
    lab.start_nginx(None).expect("nginx");
    let config = format!(
        "{}inhibit_on_failure = true\n[service.health_check]\ntype = \"http\"\npath = \"/\"\nstatus_code = 200\ndelay_loop = {DELAY_LOOP}\nconnect_timeout = 1\nretry = {RETRY}\ndelay_before_retry = 0.5\n",
        lab::lvs_config()
    );
    let path = lab.dir.0.join("health.toml");
    std::fs::write(&path, &config).unwrap();
    lab.start_lb(
        &bin,
        &[
            "--config",
            path.to_str().unwrap(),
            "--mode",
            "native",
            "--interval",
            "0",
        ],
    )
    .expect("lvs-xdp run");

    // Both answer.
    let mut seen: Vec<String> = (0..6).filter_map(|_| who(&lab).ok()).collect();
    seen.sort();
    seen.dedup();
    assert_eq!(seen, ["rs1", "rs2"], "both real servers serve at first");

    // nginx on rs1 dies. Within delay_loop x retry + 1 s every new connection goes to rs2, and
    // none is refused; until then, those given to rs1 fail.
    lab::kill_nginx(&mut lab.real_servers, 0).unwrap();
    let killed = Instant::now();
    let bound = Duration::from_secs_f64(DELAY_LOOP * f64::from(RETRY) + 1.0);
    let mut before_bound = Vec::new();
    let mut after_bound = Vec::new();
    while killed.elapsed() < bound + Duration::from_secs(4) {
        let at = killed.elapsed();
        let answer = who(&lab);
        if at < bound {
            before_bound.push((at, answer));
        } else {
            after_bound.push((at, answer));
        }
    }
    let last_failure = before_bound
        .iter()
        .filter(|(_, a)| a.is_err())
        .map(|(t, _)| t.as_secs_f64())
        .fold(0.0, f64::max);
    println!(
        "{} of {} connections failed in the first {bound:?}, the last {last_failure:.2}s after nginx died; {} after, all to rs2",
        before_bound.iter().filter(|(_, a)| a.is_err()).count(),
        before_bound.len(),
        after_bound.len()
    );
    assert!(after_bound.len() >= 10, "{after_bound:?}");
    for (at, answer) in &after_bound {
        assert_eq!(
            answer.as_deref(),
            Ok("rs2"),
            "{:.2}s after nginx died on rs1",
            at.as_secs_f64()
        );
    }
    // Inhibited: listed with weight 0, as keepalived leaves it in IPVS.
    let listing = list(&lab, &bin);
    let rs1 = listing
        .lines()
        .find(|l| l.contains(REAL_SERVERS[0].1))
        .unwrap_or_else(|| panic!("rs1 listed while inhibited: {listing}"));
    assert_eq!(
        rs1.split_whitespace().nth(3),
        Some("0"),
        "weight 0 while inhibited: {listing}"
    );

    // nginx is back: rs1 gets new connections again.
    lab::restart_nginx(&lab.dir.0.clone(), &mut lab.real_servers, 0).unwrap();
    let back = Instant::now();
    let mut returned = None;
    while back.elapsed() < Duration::from_secs(10) {
        if who(&lab).as_deref() == Ok("rs1") {
            returned = Some(back.elapsed());
            break;
        }
    }
    let returned = returned.expect("rs1 gets traffic again within 10 s of nginx's restart");
    println!(
        "rs1 served again {:.2}s after nginx restarted",
        returned.as_secs_f64()
    );
    let listing = list(&lab, &bin);
    assert!(
        listing
            .lines()
            .any(|l| l.contains(REAL_SERVERS[0].1) && l.split_whitespace().nth(3) == Some("1")),
        "{listing}"
    );
    let status = lab.stop_lb().unwrap();
    let log = lab.lb_output();
    assert!(status.success(), "{log}");
    assert!(
        log.contains(&format!("real server {} is down", REAL_SERVERS[0].1))
            && log.contains(&format!("real server {} is up", REAL_SERVERS[0].1)),
        "{log}"
    );
    assert!(
        log.contains("health checks: 2 real servers checked, 0 down, 2 state changes"),
        "{log}"
    );
}

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
"#;

fn web() -> ServiceKey {
    ServiceKey::new(Protocol::Tcp, [10, 0, 0, 10], 80)
}

fn rs(last: u8) -> IpAddr {
    IpAddr::from([10, 0, 0, last])
}

fn syn(port: u16) -> Vec<u8> {
    Frame::tcp(LB, "10.1.0.1", port, "10.0.0.10", 80)
        .with_tcp_flags(0x02)
        .build()
}

fn ack(port: u16) -> Vec<u8> {
    Frame::tcp(LB, "10.1.0.1", port, "10.0.0.10", 80)
        .with_tcp_flags(0x10)
        .build()
}

fn health(on_failure: OnFailure, sorry: bool) -> Health {
    let check = Check {
        fall: 1,
        ..Check::new(Probe::Tcp)
    };
    [(
        web(),
        ServiceHealth {
            check: Some(check),
            on_failure,
            sorry_server: sorry.then(|| (rs(9), Some(lvs_xdp::model::Mac([2, 0, 0, 0, 0, 9])))),
            ..Default::default()
        },
    )]
    .into()
}

/// The kernel follows the checks' verdicts: a failed real server gets no new connection; with
/// `keep` its established ones go on to it (and it is not listed), with `reschedule` they move;
/// with every real server down the sorry server takes the new ones; a passing check brings a
/// real server back.
#[test]
fn the_data_plane_follows_the_checks_verdicts() {
    pin_to_cpu0();
    let mac = |last: u8| [2, 0, 0, 0, 0, last];
    for on_failure in [OnFailure::Keep, OnFailure::Reschedule] {
        let mut d = director_from(CONFIG);
        d.set_health(health(on_failure, true)).unwrap();
        // Connections on both.
        let a = forward_of(&d, &syn(1000));
        let b = forward_of(&d, &syn(1001));
        assert_ne!(a, b);
        let (on3, on4) = if a == mac(3) {
            (1000, 1001)
        } else {
            (1001, 1000)
        };
        assert_eq!(d.health_result(&web(), rs(3), false).unwrap(), Some(false));
        // New connections all go to 10.0.0.4.
        for p in 2000..2010 {
            assert_eq!(
                forward_of(&d, &syn(p)),
                mac(4),
                "{on_failure:?}: new connection"
            );
        }
        let established = forward_of(&d, &ack(on3));
        let listed: Vec<IpAddr> = d.snapshot().unwrap().services[0]
            .reals
            .iter()
            .map(|r| r.addr)
            .collect();
        match on_failure {
            OnFailure::Keep => {
                assert_eq!(established, mac(3), "keep: its connection goes on");
                // In the kernel (weight 0) for that, but not listed: keepalived took it out.
                let listing = lvs_xdp::listing::Listing::new(
                    &d.snapshot().unwrap(),
                    None,
                    Default::default(),
                    d.zeroed(),
                );
                let reals: Vec<IpAddr> = listing.services[0].reals.iter().map(|r| r.addr).collect();
                assert_eq!(reals, [rs(4)]);
            }
            OnFailure::Reschedule => {
                assert_eq!(established, mac(4), "reschedule: its connection moves");
                assert_eq!(listed, [rs(4)]);
            }
        }
        assert_eq!(forward_of(&d, &ack(on4)), mac(4));
        // Both down: the sorry server takes new connections.
        assert_eq!(d.health_result(&web(), rs(4), false).unwrap(), Some(false));
        assert_eq!(
            forward_of(&d, &syn(3000)),
            mac(9),
            "{on_failure:?}: sorry server"
        );
        // 10.0.0.3 passes again: back, and the sorry server out.
        assert_eq!(d.health_result(&web(), rs(3), true).unwrap(), Some(true));
        for p in 4000..4004 {
            assert_eq!(forward_of(&d, &syn(p)), mac(3), "{on_failure:?}: back");
        }
        assert!(!d.state().services[&web()].reals.contains_key(&rs(9)));
        // The same result again changes nothing.
        assert_eq!(d.health_result(&web(), rs(3), true).unwrap(), None);
    }
}

/// A SYN on a half-open connection to a real server that failed its check is scheduled
/// again: in DR the director never sees that real server refuse the handshake, and the half-open
/// flow would otherwise send a retry, or a new connection from the same source port, back to it.
/// Established connections stay (`keep`), and an operator's weight 0 keeps such SYNs (as in
/// IPVS, see fixtures.rs).
#[test]
fn a_half_open_connection_to_a_failed_real_server_is_scheduled_again_at_its_next_syn() {
    pin_to_cpu0();
    let mac = |last: u8| [2, 0, 0, 0, 0, last];
    let mut d = director_from(CONFIG);
    d.set_health(health(OnFailure::Keep, false)).unwrap();
    let conns = |d: &lvs_xdp::Director| {
        let s = d.snapshot().unwrap();
        let svc = s.service(&web()).unwrap();
        (
            svc.counters.conns,
            svc.reals
                .iter()
                .map(|r| (r.addr, r.conns))
                .collect::<Vec<_>>(),
        )
    };
    // Round robin from rs3: half-open 5000, 5002, 5004 and established 5006 on rs3; 5001,
    // 5003, 5005, 5007 on rs4.
    for p in 5000..5008 {
        let want = if p % 2 == 0 { mac(3) } else { mac(4) };
        assert_eq!(forward_of(&d, &syn(p)), want, "port {p}");
    }
    assert_eq!(forward_of(&d, &ack(5006)), mac(3));
    assert_eq!(
        forward_of(&d, &syn(5000)),
        mac(3),
        "a retried SYN while rs3 is up"
    );
    assert_eq!(d.health_result(&web(), rs(3), false).unwrap(), Some(false));
    for p in [5000, 5002, 5004] {
        assert_eq!(
            forward_of(&d, &syn(p)),
            mac(4),
            "port {p}: the retry goes to rs4"
        );
        assert_eq!(forward_of(&d, &ack(p)), mac(4), "port {p}: and stays there");
    }
    assert_eq!(
        forward_of(&d, &syn(5006)),
        mac(3),
        "established: stays on rs3"
    );
    assert_eq!(forward_of(&d, &ack(5006)), mac(3));
    assert_eq!(forward_of(&d, &syn(5001)), mac(4));
    // Three new connections, and the half-open ones left rs3's counts.
    d.sweep_now().unwrap();
    let (total, per_real) = conns(&d);
    assert_eq!(total, 8 + 3);
    assert!(per_real.contains(&(rs(3), (1, 0))), "{per_real:?}");
    assert!(per_real.contains(&(rs(4), (7, 0))), "{per_real:?}");
    // Back up: a half-open connection to it is followed again.
    assert_eq!(d.health_result(&web(), rs(3), true).unwrap(), Some(true));
    let back = (6000..6002)
        .find(|&p| forward_of(&d, &syn(p)) == mac(3))
        .unwrap();
    assert_eq!(
        forward_of(&d, &syn(back)),
        mac(3),
        "a retried SYN while rs3 is up"
    );
    let held = (8000..8002)
        .find(|&p| forward_of(&d, &syn(p)) == mac(3))
        .unwrap();

    // Quiesced by the operator, its weight stays 0 whatever its check says; the verdicts still
    // decide whether its half-open connections are scheduled again.
    let quiesced = lvs_xdp::model::RealOpts {
        weight: 0,
        mac: Some(lvs_xdp::model::Mac(mac(3))),
        vlan: None,
    };
    d.apply(&[lvs_xdp::model::Op::EditReal(web(), rs(3), quiesced)])
        .unwrap();
    assert_eq!(
        forward_of(&d, &syn(back)),
        mac(3),
        "quiesced: a retried SYN stays"
    );
    assert_eq!(d.health_result(&web(), rs(3), false).unwrap(), Some(false));
    assert_eq!(forward_of(&d, &syn(back)), mac(4), "quiesced and failed");
    // Passing again while quiesced: no new connection, but not failed either.
    assert_eq!(d.health_result(&web(), rs(3), true).unwrap(), Some(true));
    assert_eq!(forward_of(&d, &syn(held)), mac(3), "quiesced and passing");
}

/// Live changes keep the checks' verdicts: a weight set with `-e` on a failed, inhibited real
/// server is remembered and applied when it comes back, not while it is down.
#[test]
fn a_live_weight_change_waits_for_the_real_server_to_come_back() {
    pin_to_cpu0();
    let mut d = director_from(CONFIG);
    let mut h = health(OnFailure::Keep, false);
    h.get_mut(&web()).unwrap().inhibit_on_failure = true;
    d.set_health(h).unwrap();
    d.health_result(&web(), rs(3), false).unwrap();
    let weight = |d: &lvs_xdp::Director| d.state().services[&web()].reals[&rs(3)].weight;
    assert_eq!(weight(&d), 0);
    let opts = lvs_xdp::model::RealOpts {
        weight: 5,
        mac: Some(lvs_xdp::model::Mac([2, 0, 0, 0, 0, 3])),
        vlan: None,
    };
    d.apply(&[lvs_xdp::model::Op::EditReal(web(), rs(3), opts)])
        .unwrap();
    assert_eq!(weight(&d), 0, "still down");
    assert_eq!(d.configured().services[&web()].reals[&rs(3)].weight, 5);
    d.health_result(&web(), rs(3), true).unwrap();
    assert_eq!(weight(&d), 5, "back, with the weight set meanwhile");
}

/// The probes against a real nginx: TCP connect, HTTP status, the body's MD5; a closed port,
/// a wrong status or digest, and an address that never answers fail (the last within
/// `connect_timeout`).
#[test]
fn probes_pass_and_fail_as_keepalived_checks_do() {
    // 10.77.0.1 is on a link where nobody answers ARP: a connection there never starts.
    let mut ns = [Netns::with_veth_pair("probe", "va", "vb").unwrap()];
    ns[0]
        .ip(&["addr", "add", "10.77.0.2/24", "dev", "va"])
        .unwrap();
    let dir = lvs_xdp_tests::lab::TempDir::new("probe").unwrap();
    lab::start_nginx(&dir.0, &mut ns, None).unwrap();
    let body = format!("{} {}\n", REAL_SERVERS[0].0, REAL_SERVERS[0].1);
    let digest = md5::compute(body.as_bytes()).0;
    let local: IpAddr = [127, 0, 0, 1].into();
    let http = |path: &str, status: u16, digest: Option<[u8; 16]>| Check {
        connect_timeout: Duration::from_millis(500),
        ..Check::new(Probe::Http {
            path: path.into(),
            status,
            digest,
        })
    };
    let tcp = Check {
        connect_timeout: Duration::from_millis(500),
        ..Check::new(Probe::Tcp)
    };
    let results = in_netns(&ns[0].name, || {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()?;
        let probe = |c: &Check, addr: IpAddr, port: u16| {
            rt.block_on(lvs_xdp::health::probe::run(c, addr, port))
                .map_err(|e| format!("{e:#}"))
        };
        let started = Instant::now();
        let silent = probe(&tcp, [10, 77, 0, 1].into(), 80);
        let waited = started.elapsed();
        Ok(vec![
            ("tcp", probe(&tcp, local, 80)),
            ("tcp closed port", probe(&tcp, local, 81)),
            ("http 200", probe(&http("/", 200, None), local, 80)),
            (
                "http digest",
                probe(&http("/", 200, Some(digest)), local, 80),
            ),
            ("http 404", probe(&http("/nothing", 200, None), local, 80)),
            (
                "http bad digest",
                probe(&http("/", 200, Some([0; 16])), local, 80),
            ),
            (
                "http expects 404",
                probe(&http("/nothing", 404, None), local, 80),
            ),
            (
                "unreachable",
                silent.map(|()| format!("{waited:?}")).map(|_| ()),
            ),
            (
                "unreachable within the timeout",
                if waited < Duration::from_millis(900) {
                    Ok(())
                } else {
                    Err(format!("{waited:?}"))
                },
            ),
        ])
    })
    .unwrap();
    let passed: Vec<(&str, bool)> = results.iter().map(|(n, r)| (*n, r.is_ok())).collect();
    println!("{results:?}");
    assert_eq!(
        passed,
        [
            ("tcp", true),
            ("tcp closed port", false),
            ("http 200", true),
            ("http digest", true),
            ("http 404", false),
            ("http bad digest", false),
            ("http expects 404", true),
            ("unreachable", false),
            ("unreachable within the timeout", true),
        ]
    );
    let why = |name: &str| {
        results
            .iter()
            .find(|(n, _)| *n == name)
            .unwrap()
            .1
            .clone()
            .unwrap_err()
    };
    assert!(
        why("http 404").contains("status 404, expected 200"),
        "{}",
        why("http 404")
    );
    assert!(
        why("http bad digest").contains("body digest"),
        "{}",
        why("http bad digest")
    );
}
