//! Drain to empty, live in the DR lab with real nginx: `lvs-xdp drain` sets the real server's
//! weight to 0, new connections go elsewhere, the download it serves finishes intact, and the
//! command returns once the real server has no active connection, then removes it. Also the
//! connection listing (`-L -n -c`) with states and expiry. Needs root.
use std::{
    process::Stdio,
    time::{Duration, Instant},
};

use lvs_xdp_tests::{
    bins,
    lab::{Lab, VIP},
    netns::Netns,
};

fn lvs(ns: &Netns, args: &[&str]) -> String {
    bins::output_in(ns, args)
}

/// The lab with nginx (serving `big` as big.bin) and `lvs-xdp run` on the LB with the lab's
/// configuration and `extra` flags.
fn lab_with_lb(tag: &str, big: Option<&[u8]>, extra: &[&str]) -> Lab {
    assert!(unsafe { libc::geteuid() } == 0, "needs root (netns, XDP)");
    let mut lab = Lab::new(tag).expect("the lab topology");
    lab.start_nginx(big).expect("nginx");
    let config = lab.write_lvs_config().unwrap();
    let mut args = vec!["--config", config.to_str().unwrap(), "--mode", "native"];
    args.extend_from_slice(extra);
    lab.start_lb(&bins::lvs_xdp(), &args).expect("lvs-xdp run");
    lab
}

#[test]
fn drain_waits_for_the_connections_to_end_then_removes_the_real_server() {
    let bin = bins::lvs_xdp();
    // 12 MiB at nginx's 4 MiB/s on /slow/: a transfer of about 3 s.
    let big: Vec<u8> = (0..12u32 << 20)
        .map(|i| (i.wrapping_mul(2_654_435_761) >> 24) as u8)
        .collect();
    let lab = lab_with_lb("drain", Some(&big), &["--interval", "0"]);
    let dest = lab.dir.0.join("big.out");
    let mut curl = lab.start_download("/slow/big.bin", &dest, 60).unwrap();
    Lab::wait_for_bytes(&dest, 1 << 20, Duration::from_secs(20)).unwrap();

    // -L -n -c names the transfer's connection, its state and real server.
    let lb = &lab.lb;
    let listing = lvs(lb, &["-L", "-n", "-c"]);
    let line = listing
        .lines()
        .find(|l| l.contains("ESTABLISHED") && l.contains(&format!("{VIP}:80")))
        .unwrap_or_else(|| panic!("no established connection in:\n{listing}"));
    let fields: Vec<&str> = line.split_whitespace().collect();
    assert_eq!(fields[0], "TCP", "{line}");
    let expire = fields[1];
    assert!(
        expire.starts_with("14:") || expire == "15:00",
        "an established connection expires in 15 minutes when idle: {line}"
    );
    let rip = fields[5].trim_end_matches(":80").to_string();
    let other = if rip == "192.168.0.3" {
        "192.168.0.4"
    } else {
        "192.168.0.3"
    };
    let listed = lvs(lb, &["-L", "-n"]);
    assert!(
        listed.contains(&format!(
            "  -> {rip}:80               Route   1      1          "
        )),
        "ActiveConn 1 on {rip}:\n{listed}"
    );

    let t0 = Instant::now();
    let drain = lb
        .command(bin.to_str().unwrap())
        .unwrap()
        .args([
            "drain",
            "-t",
            &format!("{VIP}:80"),
            "-r",
            &rip,
            "--timeout",
            "60",
        ])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    // While it drains: weight 0, and every new connection goes to the other real server.
    std::thread::sleep(Duration::from_millis(500));
    let listed = lvs(lb, &["-L", "-n"]);
    assert!(
        listed.contains(&format!(
            "  -> {rip}:80               Route   0      1          "
        )),
        "weight 0, the transfer still active:\n{listed}"
    );
    for i in 0..4 {
        let body = lab.get("/index.html").unwrap();
        assert!(body.contains(other), "GET #{i} during the drain: {body}");
    }
    let out = drain.wait_with_output().unwrap();
    let took = t0.elapsed();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "drain: {stdout}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(stdout.contains("1 active"), "progress printed: {stdout}");
    assert!(stdout.contains("removed"), "{stdout}");
    assert!(took < Duration::from_secs(30), "drain took {took:?}");
    // It returned only once the transfer had ended (intact, on the drained server): curl is
    // done, or about to be (the client's FIN ends the connection just before curl exits).
    let ended = Instant::now();
    while curl.try_wait().unwrap().is_none() {
        assert!(
            ended.elapsed() < Duration::from_secs(2),
            "drain returned while the transfer was still running: {stdout}"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    lab.finish_download(curl, &dest, &big)
        .expect("the transfer survives the drain");
    let listed = lvs(lb, &["-L", "-n"]);
    assert!(!listed.contains(&rip), "{rip} removed:\n{listed}");
    assert!(listed.contains(other), "{listed}");
}

/// `--set` live: with short timeouts, the daemon's sweep frees an idle connection after the TCP
/// timeout and a closed one after the FIN timeout, and its table counts them.
#[test]
fn short_timeouts_expire_idle_and_closed_connections_in_a_running_director() {
    let mut lab = lab_with_lb(
        "expire",
        None,
        &["--interval", "1", "--flow-table-size", "65536"],
    );
    let lb = &lab.lb;
    lvs(lb, &["--set", "4", "2", "0"]);
    assert_eq!(
        lvs(lb, &["-L", "--timeout"]),
        "Timeout (tcp tcpfin udp): 4 2 300\n"
    );
    // An idle connection (handshake only) and a finished GET (closed by the client: FIN_WAIT).
    let idle = lvs_xdp_tests::netns::in_netns(&lab.client.name, || {
        Ok(std::net::TcpStream::connect((VIP, 80))?)
    })
    .unwrap();
    lab.get("/index.html").unwrap();
    let listed = lvs(lb, &["-L", "-n", "-c"]);
    assert!(
        listed.contains("ESTABLISHED") && listed.contains("FIN_WAIT"),
        "{listed}"
    );
    // The FIN_WAIT one goes after 2 s, the idle one after 4 s (the sweep runs every second).
    let t0 = Instant::now();
    let mut fin_gone = None;
    loop {
        let listed = lvs(lb, &["-L", "-n", "-c"]);
        if fin_gone.is_none() && !listed.contains("FIN_WAIT") {
            fin_gone = Some(t0.elapsed());
        }
        if !listed.contains("ESTABLISHED") && fin_gone.is_some() {
            break;
        }
        assert!(
            t0.elapsed() < Duration::from_secs(15),
            "still listed after 15 s:\n{listed}"
        );
        std::thread::sleep(Duration::from_millis(250));
    }
    let idle_gone = t0.elapsed();
    assert!(
        fin_gone.unwrap() < idle_gone,
        "FIN_WAIT expired at {fin_gone:?}, ESTABLISHED at {idle_gone:?}"
    );
    assert!(idle_gone >= Duration::from_secs(2), "{idle_gone:?}");
    drop(idle);
    std::thread::sleep(Duration::from_millis(1200));
    let status = lab.stop_lb().unwrap();
    assert!(status.success());
    let out = lab.lb_output();
    let line = out
        .lines()
        .rfind(|l| l.starts_with("flows freed by the sweep: "))
        .unwrap_or_else(|| panic!("no sweep line in:\n{out}"));
    let expired: u64 = line
        .split_whitespace()
        .find_map(|w| w.strip_prefix("expired="))
        .unwrap()
        .parse()
        .unwrap();
    assert!(expired >= 2, "{line}");
}
