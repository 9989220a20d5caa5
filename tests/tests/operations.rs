//! Running lvs-xdp as a service: Prometheus metrics scraped over HTTP and checked by promtool,
//! and SIGHUP reloads (a bad file refused with the running state untouched, a good one applied
//! in place with an established download kept). In the DR lab with real nginx. Needs root.
use std::{path::Path, time::Duration};

use lvs_xdp_tests::{
    bins,
    lab::{self, Lab, REAL_SERVERS},
    netns,
};

const PORT: &str = "9642";

fn scrape(lab: &Lab) -> String {
    let out = lab
        .lb
        .exec(
            "curl",
            &[
                "-sS",
                "--fail",
                "--max-time",
                "5",
                &format!("http://127.0.0.1:{PORT}/metrics"),
            ],
        )
        .expect("scrape");
    String::from_utf8(out.stdout).unwrap()
}

/// The value of the sample `name{labels...}` whose labels include all of `with`.
fn value(text: &str, name: &str, with: &[&str]) -> Option<f64> {
    text.lines()
        .filter(|l| !l.starts_with('#'))
        .filter(|l| l.starts_with(&format!("{name}{{")) || l.starts_with(&format!("{name} ")))
        .find(|l| with.iter().all(|w| l.contains(w)))
        .and_then(|l| l.rsplit(' ').next()?.parse().ok())
}

fn sum(text: &str, name: &str) -> f64 {
    text.lines()
        .filter(|l| l.starts_with(&format!("{name}{{")))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum()
}

fn list(lab: &Lab, bin: &std::path::Path) -> String {
    lab::lvs_xdp_words(&lab.lb, bin, &["-L", "-n"])
}

fn hup(lab: &Lab) {
    let pid = lab.lb_pid().expect("lvs-xdp runs");
    // SAFETY: kill(2) with a pid of our own child; no memory is involved.
    assert_eq!(unsafe { libc::kill(pid as i32, libc::SIGHUP) }, 0);
}

fn wait_for_log(lab: &Lab, what: &str, count: usize) {
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    while lab.lb_output().matches(what).count() < count {
        assert!(
            std::time::Instant::now() < deadline,
            "no {what:?} in {}",
            lab.lb_output()
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

#[test]
fn metrics_are_scraped_and_sighup_reloads_all_or_nothing() {
    assert!(
        unsafe { libc::geteuid() } == 0,
        "the lab needs root (netns, XDP)"
    );
    let bin = bins::lvs_xdp();
    let mut lab = Lab::new("ops").expect("the lab topology");
    let big: Vec<u8> = (0..8u32 << 20).map(|i| (i % 253) as u8).collect();
    lab.start_nginx(Some(&big)).expect("nginx");
    let config = lab.dir.0.join("lvs.toml");
    let checked = format!(
        "{}[service.health_check]\ntype = \"tcp\"\ndelay_loop = 1\n",
        lab::lvs_config()
    );
    std::fs::write(&config, &checked).unwrap();
    lab.start_lb(
        &bin,
        &[
            "--config",
            config.to_str().unwrap(),
            "--mode",
            "native",
            "--interval",
            "0",
            "--metrics",
            PORT,
        ],
    )
    .expect("lvs-xdp run");
    for _ in 0..6 {
        assert!(lab.get("/").unwrap().starts_with("rs"));
    }

    // The scrape: promtool (Prometheus' own parser and linter) has nothing to say.
    let text = scrape(&lab);
    let promtool = netns::run(
        netns::program("promtool")
            .unwrap()
            .args(["check", "metrics"])
            .stdin(std::fs::File::open(write(&lab, "scrape.txt", &text)).unwrap()),
    );
    let out = promtool.unwrap_or_else(|e| panic!("promtool: {e}\n{text}"));
    assert!(
        out.stdout.is_empty() && out.stderr.is_empty(),
        "promtool check metrics: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    // The counters add up: six connections over the two real servers, 3 each (rr), as the
    // service's; both real servers checked and up.
    let rs = |i: usize| format!("real_server=\"{}\"", REAL_SERVERS[i].1);
    for i in 0..2 {
        assert_eq!(
            value(&text, "lvs_xdp_real_server_connections_total", &[&rs(i)]),
            Some(3.0),
            "{text}"
        );
        assert_eq!(value(&text, "lvs_xdp_real_server_up", &[&rs(i)]), Some(1.0));
        assert_eq!(
            value(&text, "lvs_xdp_real_server_weight", &[&rs(i)]),
            Some(1.0)
        );
    }
    assert_eq!(
        value(
            &text,
            "lvs_xdp_service_connections_total",
            &["vip=\"192.168.0.10\""]
        ),
        Some(6.0)
    );
    let forwarded = value(&text, "lvs_xdp_packets_total", &["verdict=\"forwarded\""]).unwrap();
    assert_eq!(forwarded, sum(&text, "lvs_xdp_real_server_packets_total"));
    assert!(forwarded >= 6.0 * 5.0, "{forwarded}");
    // Every metric the shipped Grafana dashboard queries is served.
    let dashboard = std::fs::read_to_string(
        Path::new(env!("CARGO_MANIFEST_DIR")).join("../docs/grafana/lvs-xdp.json"),
    )
    .unwrap();
    let mut queried: Vec<&str> = dashboard
        .match_indices("lvs_xdp_")
        .map(|(i, _)| {
            let rest = &dashboard[i..];
            let end = rest
                .find(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
                .unwrap_or(rest.len());
            &rest[..end]
        })
        .collect();
    queried.sort_unstable();
    queried.dedup();
    assert!(queried.len() >= 10, "{queried:?}");
    for name in queried {
        let family = name.strip_suffix("_total").unwrap_or(name);
        assert!(
            text.contains(&format!("# TYPE {family} ")),
            "the dashboard queries {name}, which is not served:\n{text}"
        );
    }
    // Anything else than /metrics is a 404.
    let other = lab
        .lb
        .exec(
            "curl",
            &[
                "-s",
                "-o",
                "/dev/null",
                "-w",
                "%{http_code}",
                &format!("http://127.0.0.1:{PORT}/x"),
            ],
        )
        .unwrap();
    assert_eq!(String::from_utf8_lossy(&other.stdout), "404");

    // A download at 4 MB/s runs through the reloads.
    let dest = lab.dir.0.join("during-reload.bin");
    let curl = lab.start_download("/slow/big.bin", &dest, 30).unwrap();
    Lab::wait_for_bytes(&dest, 1 << 20, Duration::from_secs(10)).unwrap();
    let before = list(&lab, &bin);

    // A bad file: refused, with its reason; nothing changes.
    std::fs::write(&config, format!("{checked}\nbogus = 1\n")).unwrap();
    hup(&lab);
    wait_for_log(&lab, "reload refused, nothing changed", 1);
    assert!(
        lab.lb_output().contains("unknown field `bogus`"),
        "{}",
        lab.lb_output()
    );
    assert_eq!(list(&lab, &bin), before);

    // A good one: rs2's weight 3, scheduler wrr; applied in place.
    let changed = checked
        .replace("scheduler = \"rr\"", "scheduler = \"wrr\"")
        .replace(
            &format!("{{ address = \"{}\" }}", REAL_SERVERS[1].1),
            &format!("{{ address = \"{}\", weight = 3 }}", REAL_SERVERS[1].1),
        );
    assert_ne!(changed, checked);
    std::fs::write(&config, &changed).unwrap();
    hup(&lab);
    wait_for_log(&lab, "reloaded: 1 service(s), 2 real server(s)", 1);
    let after = list(&lab, &bin);
    assert!(after.contains("TCP  192.168.0.10:80 wrr"), "{after}");
    assert!(
        after
            .lines()
            .any(|l| l.contains(REAL_SERVERS[1].1) && l.split_whitespace().nth(3) == Some("3")),
        "{after}"
    );
    lab.finish_download(curl, &dest, &big).unwrap();
    let text = scrape(&lab);
    assert_eq!(
        value(&text, "lvs_xdp_real_server_weight", &[&rs(1)]),
        Some(3.0)
    );
    let status = lab.stop_lb().unwrap();
    assert!(status.success(), "{}", lab.lb_output());
}

fn write(lab: &Lab, name: &str, text: &str) -> std::path::PathBuf {
    let path = lab.dir.0.join(name);
    std::fs::write(&path, text).unwrap();
    path
}
