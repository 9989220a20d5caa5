//! Live control: a running `lvs-xdp run` driven with ipvsadm's words, in the DR lab with real
//! nginx real servers. The classic recipe typed live steers real traffic; the listing, `-S`
//! and the refusals are ipvsadm's to the byte, exit codes included; `-S | -R` round-trips;
//! a non-root caller is refused. Needs root.
use std::{
    io::Write as _,
    process::{Output, Stdio},
};

use lvs_xdp_tests::{
    bins,
    lab::{Lab, VIP},
    netns::{self, Netns},
};

struct Run {
    code: i32,
    stdout: String,
    stderr: String,
}

fn finish(out: Output) -> Run {
    Run {
        code: out.status.code().unwrap_or(-1),
        stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
    }
}

/// `lvs-xdp WORDS` in `ns` (words split on spaces), with `stdin` as standard input.
fn ipvsadm_in(ns: &Netns, words: &str, stdin: &str) -> Run {
    let bin = bins::lvs_xdp();
    let mut child = ns
        .command(bin.to_str().unwrap())
        .unwrap()
        .args(words.split_whitespace())
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    child
        .stdin
        .take()
        .unwrap()
        .write_all(stdin.as_bytes())
        .unwrap();
    finish(child.wait_with_output().unwrap())
}

fn ok(ns: &Netns, words: &str) -> String {
    let r = ipvsadm_in(ns, words, "");
    assert_eq!(r.code, 0, "lvs-xdp {words}: {}", r.stderr);
    assert!(r.stderr.is_empty(), "lvs-xdp {words}: {}", r.stderr);
    r.stdout
}

/// A refusal: exit `code`, nothing on stdout, exactly the one line `line` on stderr.
fn refused(ns: &Netns, words: &str, code: i32, line: &str) {
    let r = ipvsadm_in(ns, words, "");
    assert_eq!(
        (r.code, r.stdout.as_str(), r.stderr.as_str()),
        (code, "", format!("{line}\n").as_str()),
        "lvs-xdp {words}"
    );
}

/// `-L -n` output with each real server's InActConn replaced by 0, and those numbers.
fn inactive_masked(listing: &str) -> (String, Vec<u64>) {
    let mut numbers = Vec::new();
    let mut out = String::new();
    for line in listing.lines() {
        if line.starts_with("  -> ") && !line.contains("RemoteAddress") {
            // The column starts at 60 and is 10 wide.
            let (head, tail) = line.split_at(60);
            numbers.push(tail.trim().parse().unwrap());
            out.push_str(&format!("{head}{:<10}\n", 0));
        } else {
            out.push_str(line);
            out.push('\n');
        }
    }
    (out, numbers)
}

/// Which real servers answer ten fresh connections.
fn answers(lab: &Lab) -> Vec<String> {
    (0..10)
        .map(|i| {
            let body = lab
                .get("/index.html")
                .unwrap_or_else(|e| panic!("GET #{i}: {e:#}\n{}", lab.lb_output()));
            body.split_whitespace()
                .next()
                .unwrap_or_default()
                .to_string()
        })
        .collect()
}

fn root() {
    assert!(
        unsafe { libc::geteuid() } == 0,
        "live control needs root (netns, XDP); run with cargo xtask test"
    );
}

const LIST: &str = "IP Virtual Server version 1.2.1 (size=4096)
Prot LocalAddress:Port Scheduler Flags
  -> RemoteAddress:Port           Forward Weight ActiveConn InActConn
TCP  192.168.0.10:80 rr
  -> 192.168.0.3:80               Route   1      0          0         
  -> 192.168.0.4:80               Route   1      0          0         
";

const SAVED: &str = "-A -t 192.168.0.10:80 -s rr
-a -t 192.168.0.10:80 -r 192.168.0.3:80 -g -w 1
-a -t 192.168.0.10:80 -r 192.168.0.4:80 -g -w 1
";

#[test]
fn the_classic_recipe_typed_live_steers_real_traffic() {
    root();
    let bin = bins::lvs_xdp();
    let mut lab = Lab::new("ctl").expect("the lab topology");
    lab.start_nginx(None).expect("nginx");
    // An empty director: no config at all.
    lab.start_lb(&bin, &["--mode", "native", "--interval", "0"])
        .expect("lvs-xdp run without a configuration");
    let lb = &lab.lb;
    assert_eq!(
        ok(lb, "-L -n"),
        "IP Virtual Server version 1.2.1 (size=4096)\nProt LocalAddress:Port Scheduler Flags\n  -> RemoteAddress:Port           Forward Weight ActiveConn InActConn\n"
    );

    // The recipe, word for word with lvs-xdp in place of ipvsadm.
    ok(lb, &format!("-A -t {VIP}:80 -s rr"));
    ok(lb, &format!("-a -t {VIP}:80 -r 192.168.0.3 -g"));
    ok(lb, &format!("-a -t {VIP}:80 -r 192.168.0.4:8080 -g"));
    assert_eq!(ok(lb, "-L -n"), LIST);
    assert_eq!(ok(lb, "-Ln"), LIST);
    let got = answers(&lab);
    assert!(
        got.iter().filter(|a| *a == "rs1").count() == 5
            && got.iter().filter(|a| *a == "rs2").count() == 5,
        "round robin over both real servers: {got:?}"
    );
    // Without -n, ports are named as /etc/services names them.
    let named = ok(lb, "-L");
    assert!(named.contains("TCP  192.168.0.10:http rr\n"), "{named}");

    // The counters follow the traffic: ten connections, in InPkts of both real servers.
    let stats = ok(lb, "-L -n --stats");
    let line = stats
        .lines()
        .find(|l| l.starts_with("TCP  192.168.0.10:80"))
        .unwrap();
    let cols: Vec<&str> = line.split_whitespace().collect();
    assert_eq!(cols[2], "10", "Conns: {stats}");
    assert_eq!(cols[4], "0", "OutPkts is always 0 for DR: {stats}");
    // -Z: the listing counts from zero again; new traffic counts on.
    ok(lb, "-Z");
    let zeroed = ok(lb, "-L -n --stats");
    assert!(
        zeroed.contains(
            "TCP  192.168.0.10:80                     0        0        0        0        0\n"
        ),
        "{zeroed}"
    );
    lab.get("/index.html").unwrap();
    let again = ok(lb, "-L -n --stats");
    let line = again
        .lines()
        .find(|l| l.starts_with("TCP  192.168.0.10:80"))
        .unwrap();
    assert_eq!(line.split_whitespace().nth(2), Some("1"), "{again}");
    refused(lb, &format!("-Z -t {VIP}:81"), 255, "No such service");
    assert_eq!(ok(lb, "-L --daemon"), "");

    // Taken out live: every new connection goes to the remaining real server.
    ok(lb, &format!("-d -t {VIP}:80 -r 192.168.0.3"));
    assert_eq!(answers(&lab), vec!["rs2"; 10]);
    // Quiesced live (weight 0) and brought back.
    ok(lb, &format!("-a -t {VIP}:80 -r 192.168.0.3 -g -w 1"));
    ok(lb, &format!("-e -t {VIP}:80 -r 192.168.0.4 -g -w 0"));
    assert_eq!(answers(&lab), vec!["rs1"; 10]);
    ok(lb, &format!("-e -t {VIP}:80 -r 192.168.0.4 -g -w 1"));
    // The GETs' connections are closed now: no ActiveConn, and InActConn counts those still
    // within their FIN_WAIT/TIME_WAIT timeout (the numbers depend on the CPUs they ran on).
    let (listed, inactive) = inactive_masked(&ok(lb, "-L -n"));
    assert_eq!(listed, LIST);
    assert!(inactive.iter().all(|n| *n > 0), "{inactive:?}");

    // -S | -R round-trips: clear, restore what was saved, the same state and traffic again.
    let saved = ok(lb, "-S -n");
    assert_eq!(saved, SAVED);
    ok(lb, "-C");
    refused(lb, &format!("-L -n -t {VIP}:80"), 1, "No such service");
    let r = ipvsadm_in(lb, "-R", &saved);
    assert_eq!((r.code, r.stderr.as_str()), (0, ""), "-R");
    assert_eq!(ok(lb, "-S -n"), SAVED);
    let got = answers(&lab);
    assert!(
        got.contains(&"rs1".into()) && got.contains(&"rs2".into()),
        "{got:?}"
    );

    // A restore is all or nothing: a bad line refuses the whole input, naming the line.
    let r = ipvsadm_in(
        lb,
        "-R",
        "-A -u 192.168.0.10:53 -s rr\n-a -t 192.168.0.99:80 -r 192.168.0.3 -g\n",
    );
    assert_eq!(
        (r.code, r.stderr.as_str()),
        (255, "line 2: Service not defined\n")
    );
    assert_eq!(
        ok(lb, "-S -n"),
        SAVED,
        "nothing of the refused restore applied"
    );

    // --set and --timeout, as ipvsadm prints them (0 leaves a value as it is).
    ok(lb, "--set 600 0 200");
    assert_eq!(
        ok(lb, "-L --timeout"),
        "Timeout (tcp tcpfin udp): 600 120 200\n"
    );
    // -L -c lists the flow table's connections.
    let conns = ok(lb, "-L -n -c");
    assert!(conns.starts_with("IPVS connection entries\npro expire state       source             virtual            destination\n"), "{conns}");
    assert!(
        conns
            .lines()
            .skip(2)
            .all(|l| l.starts_with("TCP ") && l.contains(" 192.168.0.10:80 ")),
        "{conns}"
    );
    let json = ok(lb, "-L -n --json");
    assert!(json.contains("\"scheduler\": \"rr\""), "{json}");

    let status = lab.stop_lb().unwrap();
    assert!(status.success(), "{}", lab.lb_output());
}

#[test]
fn refusals_are_ipvsadms_with_its_exit_codes() {
    root();
    let bin = bins::lvs_xdp();
    let mut lab = Lab::new("ctlno").expect("the lab topology");
    let lb_ns = lab.lb.name.clone();
    // No director yet: one line, exit 2.
    let r = ipvsadm_in(&lab.lb, "-L -n", "");
    assert_eq!(r.code, 2, "{}", r.stderr);
    assert!(
        r.stderr.starts_with("no lvs-xdp is running here") && r.stderr.lines().count() == 1,
        "{}",
        r.stderr
    );
    lab.start_lb(&bin, &["--mode", "generic", "--interval", "0"])
        .expect("lvs-xdp run");
    let lb = &lab.lb;
    ok(lb, &format!("-A -t {VIP}:80 -s rr"));
    ok(
        lb,
        &format!("-a -t {VIP}:80 -r 192.168.0.3 -g --mac 02:00:00:00:00:03"),
    );
    // The running state refuses: 255.
    refused(
        lb,
        &format!("-A -t {VIP}:80 -s rr"),
        255,
        "Service already exists",
    );
    refused(lb, &format!("-E -t {VIP}:81 -s rr"), 255, "No such service");
    refused(lb, &format!("-D -t {VIP}:81"), 255, "No such service");
    refused(
        lb,
        &format!("-a -t {VIP}:80 -r 192.168.0.3 -g"),
        255,
        "Destination already exists",
    );
    refused(
        lb,
        &format!("-d -t {VIP}:80 -r 192.168.0.9"),
        255,
        "No such destination",
    );
    refused(
        lb,
        &format!("-a -t {VIP}:81 -r 192.168.0.3 -g"),
        255,
        "Service not defined",
    );
    // A malformed command line: 2.
    refused(
        lb,
        "-A -t 192.168.0.300:80",
        2,
        "illegal virtual server address[:port] specified",
    );
    refused(
        lb,
        &format!("-a -t {VIP}:80 -r 192.168.0.5 -w 70000"),
        2,
        "illegal weight specified",
    );
    refused(
        lb,
        &format!("-a -t {VIP}:80 -w 2"),
        2,
        "You need to supply the 'real-server' option for the 'add-server' command",
    );
    let r = ipvsadm_in(lb, &format!("-a -t {VIP}:80 -r 192.168.0.5 -m"), "");
    assert_eq!(r.code, 2);
    assert!(r.stderr.contains("direct-routing"), "{}", r.stderr);
    refused(
        lb,
        &format!("-A -t {VIP}:90 -s nosuch"),
        2,
        "Scheduler or persistence engine not found: 'nosuch' (supported: rr, wrr, lc, wlc, sed, nq, fo, ovf, sh, dh, twos, mh)",
    );
    // Nothing of the refusals was applied.
    assert_eq!(
        ok(lb, "-S -n"),
        format!(
            "-A -t {VIP}:80 -s rr\n-a -t {VIP}:80 -r 192.168.0.3:80 -g -w 1 --mac 02:00:00:00:00:03\n"
        )
    );

    // Root only: another user is refused, by the socket's directory and by the daemon.
    let r = finish(
        netns::program("ip")
            .unwrap()
            .args(["netns", "exec", &lb_ns])
            .arg(netns::program("setpriv").unwrap().get_program())
            .args(["--reuid=65534", "--regid=65534", "--clear-groups"])
            .arg(&bin)
            .args(["-L", "-n"])
            .output()
            .unwrap(),
    );
    assert_eq!(
        (r.code, r.stdout.as_str(), r.stderr.as_str()),
        (2, "", "Permission denied (you must be root)\n")
    );
    let status = lab.stop_lb().unwrap();
    assert!(status.success(), "{}", lab.lb_output());
    // The control socket went with the daemon.
    let r = ipvsadm_in(&lab.lb, "-L -n", "");
    assert_eq!(r.code, 2);
}

/// A real server's address moves to another MAC (a standby host took it over): lvs-xdp follows
/// the neighbour table live, and a download in flight through it completes intact.
#[test]
fn a_real_servers_new_mac_is_followed_with_no_connection_lost() {
    root();
    let bin = bins::lvs_xdp();
    let mut lab = Lab::new("ctlmac").expect("the lab topology");
    let big: Vec<u8> = (0..8 << 20)
        .map(|i: u32| (i % 253) as u8 ^ (i >> 9) as u8)
        .collect();
    lab.start_nginx(Some(&big)).expect("nginx");
    lab.start_lb(&bin, &["--mode", "native", "--interval", "0"])
        .expect("lvs-xdp run");
    let lb = &lab.lb;
    ok(lb, &format!("-A -t {VIP}:80 -s rr"));
    // A STALE entry with a MAC nobody has any more is confirmed before it is used: the real
    // server's true MAC is found instead.
    lb.ip(&[
        "neigh",
        "replace",
        "192.168.0.3",
        "lladdr",
        "02:00:00:00:09:09",
        "dev",
        "eth0",
        "nud",
        "stale",
    ])
    .unwrap();
    // No --mac: both come from the neighbour table.
    ok(lb, &format!("-a -t {VIP}:80 -r 192.168.0.3 -g"));
    ok(lb, &format!("-a -t {VIP}:80 -r 192.168.0.4 -g"));
    let json = ok(lb, "-L -n --json");
    assert!(
        json.contains("\"mac\": \"02:00:00:00:00:03\"") && !json.contains("02:00:00:00:09:09"),
        "{json}"
    );

    // 8 MiB at nginx's 4 MB/s for /slow/: about two seconds in flight.
    let dest = lab.dir.0.join("moving.bin");
    let curl = lab.start_download("/slow/big.bin", &dest, 30).unwrap();
    Lab::wait_for_bytes(&dest, 1 << 20, std::time::Duration::from_secs(10)).unwrap();
    // Both real servers' addresses move to new MACs; the LB learns it from its neighbour table.
    let new_macs = ["02:00:00:00:01:03", "02:00:00:00:01:04"];
    for ((ns, (_, ip, _)), mac) in lab
        .real_servers
        .iter()
        .zip(lvs_xdp_tests::lab::REAL_SERVERS)
        .zip(new_macs)
    {
        ns.ip(&["link", "set", "eth0", "address", mac]).unwrap();
        lb.ip(&[
            "neigh",
            "replace",
            ip,
            "lladdr",
            mac,
            "dev",
            "eth0",
            "nud",
            "reachable",
        ])
        .unwrap();
    }
    lab.finish_download(curl, &dest, &big).unwrap();
    let json = ok(lb, "-L -n --json");
    for mac in new_macs {
        assert!(
            json.contains(&format!("\"mac\": \"{mac}\"")),
            "MAC {mac} not listed: {json}"
        );
    }
    assert!(
        lab.lb_output().contains("is now at 02:00:00:00:01:03"),
        "{}",
        lab.lb_output()
    );
    let status = lab.stop_lb().unwrap();
    assert!(status.success(), "{}", lab.lb_output());
}

/// Two directors in one namespace, on two interfaces: a command must say which (`--iface`), and
/// each then reaches its own.
#[test]
fn iface_picks_the_director_when_several_run() {
    root();
    let ns = Netns::with_veth_pair("ctltwo", "veth0", "veth1").unwrap();
    ns.ip(&[
        "link", "add", "veth2", "type", "veth", "peer", "name", "veth3",
    ])
    .unwrap();
    for dev in ["veth2", "veth3"] {
        ns.ip(&["link", "set", dev, "up"]).unwrap();
    }
    let dir = lvs_xdp_tests::lab::TempDir::new("ctltwo").unwrap();
    let empty = dir.0.join("empty.toml");
    std::fs::write(&empty, "").unwrap();
    // Stopped on every exit path, before the namespace goes.
    struct Stopped(std::process::Child);
    impl Drop for Stopped {
        fn drop(&mut self) {
            netns::stop(&mut self.0, std::time::Duration::from_secs(5));
        }
    }
    let _a = Stopped(
        bins::start_run(&ns, "veth0", 0, &empty, Stdio::null())
            .unwrap()
            .0,
    );
    let _b = Stopped(
        bins::start_run(&ns, "veth2", 0, &empty, Stdio::null())
            .unwrap()
            .0,
    );
    let r = ipvsadm_in(&ns, "-L -n", "");
    assert_eq!(r.code, 2);
    assert_eq!(
        r.stderr,
        "lvs-xdp runs on several interfaces (veth0, veth2): choose one with --iface\n"
    );
    ok(&ns, "-A -t 10.8.0.1:80 -s rr --iface veth0");
    ok(&ns, "-A -u 10.8.0.2:53 -s rr --iface veth2");
    assert_eq!(ok(&ns, "-S -n --iface veth0"), "-A -t 10.8.0.1:80 -s rr\n");
    assert_eq!(ok(&ns, "-S -n --iface veth2"), "-A -u 10.8.0.2:53 -s rr\n");
    let r = ipvsadm_in(&ns, "-L -n --iface veth9", "");
    assert_eq!(r.code, 2);
    assert!(
        r.stderr.starts_with("no lvs-xdp runs on veth9"),
        "{}",
        r.stderr
    );
}
