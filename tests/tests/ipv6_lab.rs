//! The DR lab over IPv6: an IPv6 VIP beside the IPv4 one, real nginx on both real servers,
//! `lvs-xdp run` with both services. GETs over IPv6 reach both real servers in turn, a 20 MB
//! download over IPv6 arrives intact, and a real server holding the VIP on `lo` is shown not
//! to answer neighbour solicitations for it. Needs root.
use std::time::Duration;

use lvs_xdp_tests::{
    bins,
    lab::{self, LB_MAC, Lab, VIP6},
};

const SIZE: usize = 20 * 1024 * 1024;

#[test]
fn ipv6_services_work_end_to_end_in_the_dr_lab() {
    assert!(
        unsafe { libc::geteuid() } == 0,
        "the DR lab needs root (netns, XDP)"
    );
    let bin = bins::lvs_xdp();
    let big: Vec<u8> = (0..SIZE as u32)
        .map(|i| (i.wrapping_mul(2_654_435_761) >> 17) as u8)
        .collect();
    let mut lab = Lab::new("v6").expect("build the lab topology");
    lab.start_nginx(Some(&big)).expect("start nginx");
    let config = lab.write_lvs_config_dual().unwrap();
    lab.start_lb(
        &bin,
        &["--config", config.to_str().unwrap(), "--mode", "native"],
    )
    .expect("start lvs-xdp");

    // ipvsadm's listing, IPv6 in brackets.
    let listing = bins::output_in(&lab.lb, &["-L", "-n"]);
    assert!(
        listing.contains(&format!("TCP  [{VIP6}]:80 rr")),
        "{listing}"
    );
    assert!(listing.contains("  -> [2001:db8::3]:80"), "{listing}");

    // Round robin per new connection over IPv6 (the client pinned to one CPU).
    let answers: Vec<String> = (0..10)
        .map(|i| {
            lab.get6("/index.html")
                .unwrap_or_else(|e| panic!("GET over IPv6 #{i}: {e:#}\n{}", lab.lb_output()))
        })
        .collect();
    println!("ipv6 lab: {answers:?}");
    for pair in answers.windows(2) {
        assert_ne!(pair[0], pair[1], "answers alternate: {answers:?}");
    }
    assert!(answers.iter().any(|a| a.starts_with("rs1")));
    assert!(answers.iter().any(|a| a.starts_with("rs2")));
    // IPv4 beside it still works.
    assert!(lab.get("/index.html").unwrap().starts_with("rs"));

    // 20 MB over IPv6, intact.
    let dest = lab.dir.0.join("big6.bin");
    let curl =
        lab::start_download(&lab.client, &format!("http://[{VIP6}]/big.bin"), &dest, 60).unwrap();
    lab.finish_download(curl, &dest, &big)
        .expect("the IPv6 download");

    // The client reached the VIP through the LB's MAC: the LB answered its neighbour
    // solicitation, no real server did.
    let neigh = lab
        .client
        .stdout("ip", &["-6", "neigh", "show", VIP6])
        .unwrap();
    assert!(
        neigh.contains(LB_MAC),
        "the client's entry for the VIP: {neigh}"
    );
    // Take the VIP off the LB: nobody answers for it now (the real servers hold it on lo and
    // do not answer solicitations on eth0 for it), so a new connection fails.
    lab.lb
        .ip(&["-6", "addr", "del", &format!("{VIP6}/128"), "dev", "eth0"])
        .unwrap();
    lab.client
        .ip(&["-6", "neigh", "flush", "dev", "eth0"])
        .unwrap();
    assert!(
        lab.get6("/index.html").is_err(),
        "without the LB's VIP, a real server answered for it"
    );
    let neigh = lab
        .client
        .stdout("ip", &["-6", "neigh", "show", VIP6])
        .unwrap();
    for (_, _, mac) in lab::REAL_SERVERS {
        assert!(
            !neigh.contains(mac),
            "a real server answered a solicitation for the VIP: {neigh}"
        );
    }
    println!("ipv6 lab: without the VIP on the LB, the client's entry: {neigh:?}");
    lab.lb
        .ip(&[
            "-6",
            "addr",
            "add",
            &format!("{VIP6}/128"),
            "dev",
            "eth0",
            "nodad",
        ])
        .unwrap();
    lab.lb
        .wait_for("the VIP again", Duration::from_secs(5), || {
            lab.get6("/index.html").is_ok()
        })
        .unwrap();
}
