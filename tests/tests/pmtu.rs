//! Path-MTU discovery through the director: the client sits behind a router whose link to it
//! has a smaller MTU (1280) than the real servers' (1500). A real server's full-size reply makes
//! the router send ICMP "fragmentation needed" to the reply's source, the VIP; that reaches the
//! director, which must hand it to the real server of the connection. Only then does the real
//! server send smaller segments, and the download completes. Needs root.
use lvs_xdp_tests::{
    bins,
    ecmp::{CLIENT_IP, DIRECTORS, EcmpLab, VIP},
    lab::REAL_SERVERS,
};

const SIZE: usize = 4 << 20;

#[test]
fn a_download_through_a_smaller_mtu_completes_because_the_director_forwards_icmp() {
    assert!(
        unsafe { libc::geteuid() } == 0,
        "the PMTU test needs root (netns, XDP)"
    );
    let bin = bins::lvs_xdp();
    let mut lab = EcmpLab::new("pmtu").expect("the topology");
    // The router's link to the client is the narrow one; the client itself still says MSS 1460.
    lab.router
        .ip(&["link", "set", "eth1", "mtu", "1280"])
        .unwrap();
    // One director, reached by a static route (no BGP needed here).
    lab.router
        .ip(&["route", "add", &format!("{VIP}/32"), "via", DIRECTORS[0].1])
        .unwrap();
    let big: Vec<u8> = (0..SIZE as u32)
        .map(|i| (i.wrapping_mul(2_654_435_761) >> 11) as u8)
        .collect();
    lab.start_nginx(Some(&big)).expect("nginx");
    let config = format!(
        "[[service]]\nvip = \"{VIP}\"\nport = 80\nscheduler = \"mh\"\nreal_servers = [ {{ address = \"{}\" }}, {{ address = \"{}\" }} ]\n",
        REAL_SERVERS[0].1, REAL_SERVERS[1].1
    );
    lab.start_lvs_xdp(0, &bin, &config).expect("lvs-xdp on d1");

    let dest = lab.dir.0.join("download.bin");
    let curl = lab
        .start_download("/big.bin", &dest, 30)
        .expect("start the download");
    let out = curl.wait_with_output().unwrap();
    assert!(
        out.status.success(),
        "the download through the 1280-byte link failed: {}\n{}",
        String::from_utf8_lossy(&out.stderr),
        std::fs::read_to_string(lab.lvs_xdp_log(0)).unwrap_or_default()
    );
    assert!(
        std::fs::read(&dest).unwrap() == big,
        "downloaded bytes differ"
    );
    // The director forwarded the router's errors (its final table counts them), and the real
    // server that served the client learned the smaller path MTU from them.
    let log = lab.stop_lvs_xdp(0).unwrap();
    let verdicts = log
        .lines()
        .rfind(|l| l.starts_with("packets "))
        .unwrap_or_default()
        .to_string();
    let forwarded: u64 = verdicts
        .split_whitespace()
        .find_map(|w| w.strip_prefix("icmp_too_big_forwarded="))
        .map_or(0, |n| n.parse().unwrap());
    println!("pmtu: the director's verdicts: {verdicts}");
    assert!(forwarded >= 1, "no ICMP error was forwarded: {verdicts}");
    let learned: Vec<String> = lab
        .real_servers
        .iter()
        .map(|ns| ns.stdout("ip", &["route", "get", CLIENT_IP]).unwrap())
        .filter(|route| route.contains("mtu 1280"))
        .collect();
    assert_eq!(
        learned.len(),
        1,
        "one real server (the one that served) has the path MTU 1280 to the client: {learned:?}"
    );
}
