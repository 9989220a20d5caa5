//! The classic pair: two directors on one segment, real keepalived (VRRP only) holding the VIP
//! on the master, lvs-xdp on both, each run from its own keepalived.conf (the same file
//! keepalived reads). The master's keepalived is stopped mid-transfer: the backup takes the VIP
//! and announces it (gratuitous ARP), and with `mh` the transfer goes on through the backup to
//! the same real server, and new connections succeed. Needs root.
use std::{
    path::Path,
    time::{Duration, Instant},
};

use lvs_xdp_tests::{
    bins,
    lab::{self, Lab, REAL_SERVERS},
    netns::{self, Netns},
    xdp_pass,
};

const LB2_IP: &str = "192.168.0.2";
const LB2_MAC: &str = "02:00:00:00:00:02";

/// Each director's keepalived.conf: VRRP for the VIP, and the virtual server lvs-xdp runs.
fn keepalived_conf(priority: u32, dir: &Path, name: &str) -> String {
    format!(
        r#"! Configuration File for keepalived
global_defs {{
    router_id {name}
    script_user root
    pid_file {pid}
}}

vrrp_instance VI_1 {{
    state BACKUP
    interface eth0
    virtual_router_id 51
    priority {priority}
    advert_int 1
    virtual_ipaddress {{
        {vip}/32 dev eth0
    }}
}}

virtual_server {vip} 80 {{
    lb_algo mh
    lb_kind DR
    protocol TCP
    real_server {rs1} 80 {{
        weight 1
    }}
    real_server {rs2} 80 {{
        weight 1
    }}
}}
"#,
        pid = dir.join(format!("{name}.pid")).display(),
        vip = lab::VIP,
        rs1 = REAL_SERVERS[0].1,
        rs2 = REAL_SERVERS[1].1,
    )
}

fn has_vip(ns: &Netns) -> bool {
    ns.stdout("ip", &["-4", "-o", "addr", "show", "dev", "eth0"])
        .is_ok_and(|s| s.contains(&format!(" {}/32", lab::VIP)))
}

/// The MAC the client's neighbour table gives the VIP.
fn vip_mac(client: &Netns) -> String {
    client
        .stdout("ip", &["neigh", "show", lab::VIP])
        .unwrap_or_default()
        .split_whitespace()
        .skip_while(|w| *w != "lladdr")
        .nth(1)
        .unwrap_or_default()
        .to_string()
}

fn start_keepalived(ns: &mut Netns, dir: &Path, name: &str, conf: &Path) {
    let mut cmd = ns.command("keepalived").unwrap();
    cmd.args(["-n", "-l", "-D", "--vrrp", "-f"])
        .arg(conf)
        .arg("-p")
        .arg(dir.join(format!("{name}.pid")))
        .arg("-r")
        .arg(dir.join(format!("{name}-vrrp.pid")))
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null());
    ns.spawn("keepalived", cmd).unwrap();
}

/// Bytes the director's lvs-xdp forwarded, from its `-L -n --stats` (the service's InPkts).
fn forwarded_packets(ns: &Netns, bin: &Path) -> u64 {
    let text = lab::lvs_xdp_words(ns, bin, &["-L", "-n", "--stats", "--exact"]);
    text.lines()
        .find(|l| l.starts_with("TCP "))
        .and_then(|l| l.split_whitespace().nth(3)?.parse().ok())
        .unwrap_or(0)
}

#[test]
fn the_backup_takes_the_vip_and_the_transfer_goes_on() {
    assert!(
        unsafe { libc::geteuid() } == 0,
        "VRRP in namespaces needs root"
    );
    let bin = bins::lvs_xdp();
    let mut lab = Lab::new("vrrp").expect("the lab topology");
    // keepalived holds the VIP now, not the lab.
    lab.lb
        .ip(&["addr", "del", &format!("{}/32", lab::VIP), "dev", "eth0"])
        .unwrap();
    let mut lb2 = Netns::new("lb2").unwrap();
    lab.plug(&lb2, "p-lb2", LB2_MAC, &format!("{LB2_IP}/24"))
        .unwrap();
    let _lb2_port = xdp_pass::attach(&lab.switch.name, "p-lb2").unwrap();
    let big: Vec<u8> = (0..16u32 << 20)
        .map(|i| (i % 251) as u8 ^ (i >> 12) as u8)
        .collect();
    lab.start_nginx(Some(&big)).expect("nginx");

    let dir = lab.dir.0.clone();
    let conf1 = dir.join("keepalived-lb1.conf");
    let conf2 = dir.join("keepalived-lb2.conf");
    std::fs::write(&conf1, keepalived_conf(150, &dir, "lb1")).unwrap();
    std::fs::write(&conf2, keepalived_conf(100, &dir, "lb2")).unwrap();
    // lvs-xdp on both, each from its keepalived.conf.
    let args = |conf: &Path| {
        vec![
            "--config".to_string(),
            conf.to_str().unwrap().to_string(),
            "--mode".into(),
            "native".into(),
            "--interval".into(),
            "0".into(),
        ]
    };
    let a1 = args(&conf1);
    lab.start_lb(&bin, &a1.iter().map(String::as_str).collect::<Vec<_>>())
        .expect("lvs-xdp on lb1");
    let log2 = dir.join("lvs-xdp-lb2.log");
    let a2 = args(&conf2);
    let mut lvs2 = lab::start_lvs_xdp(
        &lb2,
        &bin,
        &log2,
        &a2.iter().map(String::as_str).collect::<Vec<_>>(),
    )
    .expect("lvs-xdp on lb2");
    assert!(
        lab.lb_output()
            .contains("vrrp_instance VI_1: not the load balancer's"),
        "{}",
        lab.lb_output()
    );

    // keepalived: the higher priority (lb1) becomes master and holds the VIP.
    start_keepalived(&mut lab.lb, &dir, "lb1", &conf1);
    start_keepalived(&mut lb2, &dir, "lb2", &conf2);
    let t0 = Instant::now();
    lab.lb
        .wait_for("lb1 to hold the VIP", Duration::from_secs(15), || {
            has_vip(&lab.lb)
        })
        .unwrap();
    println!("lb1 master after {:.1}s", t0.elapsed().as_secs_f64());
    assert!(!has_vip(&lb2));

    // A 16 MiB download at 4 MB/s through lb1.
    let dest = dir.join("vrrp.bin");
    let curl = lab.start_download("/slow/big.bin", &dest, 60).unwrap();
    Lab::wait_for_bytes(&dest, 2 << 20, Duration::from_secs(15)).unwrap();
    assert_eq!(
        vip_mac(&lab.client),
        lab::LB_MAC,
        "the client reaches the VIP at lb1"
    );
    let lb2_before = forwarded_packets(&lb2, &bin);

    // The master's keepalived stops: lb2 takes the VIP and announces it.
    let mut ka1 = lab.lb.take_child("keepalived").unwrap();
    let stopped = Instant::now();
    netns::stop(&mut ka1, Duration::from_secs(5));
    lb2.wait_for("lb2 to hold the VIP", Duration::from_secs(15), || {
        has_vip(&lb2)
    })
    .unwrap();
    let took_vip = stopped.elapsed();
    lab.client
        .wait_for(
            "the client to learn lb2's MAC for the VIP",
            Duration::from_secs(10),
            || vip_mac(&lab.client) == LB2_MAC,
        )
        .unwrap();
    let client_moved = stopped.elapsed();
    println!(
        "failover: lb2 held the VIP {:.2}s after lb1's keepalived stopped; the client sent to lb2 after {:.2}s",
        took_vip.as_secs_f64(),
        client_moved.as_secs_f64()
    );
    assert!(!has_vip(&lab.lb), "lb1 gave the VIP up");

    // The transfer finishes intact, through lb2.
    lab.finish_download(curl, &dest, &big).unwrap();
    let carried = forwarded_packets(&lb2, &bin) - lb2_before;
    assert!(
        carried > 100,
        "lb2 carried the rest of the download: {carried} packets"
    );
    // New connections go through lb2 and all succeed.
    let before = forwarded_packets(&lb2, &bin);
    for i in 0..10 {
        let page = lab
            .get("/")
            .unwrap_or_else(|e| panic!("request {i}: {e:#}"));
        assert!(page.starts_with("rs"), "{page}");
    }
    assert!(forwarded_packets(&lb2, &bin) >= before + 10 * 4);

    netns::stop(&mut lvs2, Duration::from_secs(5));
    let status = lab.stop_lb().unwrap();
    assert!(status.success(), "{}", lab.lb_output());
}
