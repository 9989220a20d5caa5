//! `lvs-xdp realserver up|down` in a namespace: the VIPs on lo, ARP quiet, and exactly what was
//! there before restored. Needs root.
use lvs_xdp_tests::{bins, netns::Netns};

fn root() {
    assert!(
        unsafe { libc::geteuid() } == 0,
        "the real-server helper needs root (netns)"
    );
}

/// (conf, arp_ignore, arp_announce) for all, lo and eth0.
fn settings(ns: &Netns) -> Vec<(String, String, String)> {
    ["all", "lo", "eth0"]
        .iter()
        .map(|c| {
            let get = |k: &str| {
                ns.stdout("sysctl", &["-n", &format!("net.ipv4.conf.{c}.{k}")])
                    .unwrap()
                    .trim()
                    .to_string()
            };
            (c.to_string(), get("arp_ignore"), get("arp_announce"))
        })
        .collect()
}

fn lo_addresses(ns: &Netns) -> Vec<String> {
    let out = ns.ip(&["-4", "-o", "addr", "show", "dev", "lo"]).unwrap();
    let mut v: Vec<String> = String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter_map(|l| l.split_whitespace().nth(3).map(String::from))
        .collect();
    v.sort();
    v
}

fn helper(ns: &Netns, args: &[&str]) -> std::process::Output {
    let bin = bins::lvs_xdp();
    ns.command(bin.to_str().unwrap())
        .unwrap()
        .arg("realserver")
        .args(args)
        .output()
        .unwrap()
}

#[test]
fn up_quiets_arp_for_the_vips_and_down_restores_exactly_what_was_there() {
    root();
    let ns = Netns::with_veth_pair("rshelper", "eth0", "eth1").unwrap();
    // Values an operator may have set already, and a VIP already on lo.
    ns.sysctl("net.ipv4.conf.lo.arp_announce", "1").unwrap();
    ns.sysctl("net.ipv4.conf.eth0.arp_ignore", "2").unwrap();
    ns.ip(&["addr", "add", "10.7.0.10/32", "dev", "lo"])
        .unwrap();
    let before = (settings(&ns), lo_addresses(&ns));

    let out = helper(
        &ns,
        &[
            "up",
            "--vip",
            "10.7.0.10",
            "--vip",
            "10.7.0.11",
            "--iface",
            "eth0",
        ],
    );
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    for (conf, ignore, announce) in settings(&ns) {
        assert_eq!((ignore.as_str(), announce.as_str()), ("1", "2"), "{conf}");
    }
    assert_eq!(
        lo_addresses(&ns),
        ["10.7.0.10/32", "10.7.0.11/32", "127.0.0.1/8"]
    );
    // Up again: idempotent, and the first record of what was there stays.
    let out = helper(&ns, &["up", "--vip", "10.7.0.11"]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );

    let out = helper(&ns, &["down"]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!((settings(&ns), lo_addresses(&ns)), before);

    // Nothing left to undo: one line, exit 1.
    let out = helper(&ns, &["down"]);
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("nothing to undo") && err.lines().count() == 1,
        "{err}"
    );
    // A bad VIP or interface changes nothing.
    let out = helper(&ns, &["up", "--vip", "10.7.0.12", "--iface", "nosuch0"]);
    assert_eq!(out.status.code(), Some(1));
    assert_eq!((settings(&ns), lo_addresses(&ns)), before);
    let dir = std::path::Path::new("/run/lvs-xdp/netns").join(&ns.name);
    assert!(!dir.exists(), "{} left behind", dir.display());
}
