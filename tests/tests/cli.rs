//! The `lvs-xdp` command's refusals: bad input is refused whole, before anything is attached,
//! with one line naming the problem and a non-zero exit. Needs root for the namespaces.
use lvs_xdp_tests::{
    bins,
    lab::TempDir,
    netns::{self, Netns},
};

struct Outcome {
    code: i32,
    stdout: String,
    stderr: String,
}

fn lvs_xdp(ns: Option<&Netns>, args: &[&str]) -> Outcome {
    let bin = bins::lvs_xdp();
    let mut cmd = match ns {
        Some(ns) => ns.command(bin.to_str().unwrap()).unwrap(),
        None => netns::program(bin.to_str().unwrap()).unwrap(),
    };
    let out = cmd.args(args).output().expect("run lvs-xdp");
    Outcome {
        code: out.status.code().unwrap_or(-1),
        stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
    }
}

/// Asserts a refusal: exit 1, nothing on stdout, exactly one stderr line containing `want`.
fn refused(o: &Outcome, want: &str) {
    assert_eq!(o.code, 1, "exit code; stderr: {}", o.stderr);
    let lines: Vec<&str> = o.stderr.lines().collect();
    assert_eq!(lines.len(), 1, "one line of error, got: {:?}", o.stderr);
    assert!(lines[0].starts_with("lvs-xdp: error: "), "{}", lines[0]);
    assert!(
        lines[0].contains(want),
        "expected {want:?} in {:?}",
        lines[0]
    );
    assert!(o.stdout.is_empty(), "stdout: {}", o.stdout);
}

fn root() {
    assert!(
        unsafe { libc::geteuid() } == 0,
        "these tests need root (netns, XDP)"
    );
}

const GOOD: &str = "[[service]]\nvip = \"10.9.0.10\"\nport = 80\nreal_servers = [ { address = \"10.9.0.3\", mac = \"02:00:00:00:00:03\" } ]\n";

#[test]
fn config_refusals_name_the_problem() {
    let dir = TempDir::new("cli-config").unwrap();
    let cases = [
        ("malformed TOML", "[[service]\nvip = 1\n", "1:"),
        (
            "unknown field",
            "[[service]]\nvip = \"10.9.0.10\"\nport = 80\nweigth = 2\n",
            "unknown field `weigth`",
        ),
        (
            "bad address",
            "[[service]]\nvip = \"10.9.0.1O\"\nport = 80\n",
            "bad vip \"10.9.0.1O\"",
        ),
        (
            "port out of range",
            "[[service]]\nvip = \"10.9.0.10\"\nport = 70000\n",
            "port 70000 out of range",
        ),
        (
            "unknown protocol",
            "[[service]]\nvip = \"10.9.0.10\"\nport = 80\nprotocol = \"sctp\"\n",
            "unknown protocol \"sctp\"",
        ),
        (
            "unknown scheduler",
            "[[service]]\nvip = \"10.9.0.10\"\nport = 80\nscheduler = \"nosuch\"\n",
            "unknown scheduler \"nosuch\"",
        ),
        (
            "bad MAC",
            "[[service]]\nvip = \"10.9.0.10\"\nport = 80\nreal_servers = [ { address = \"10.9.0.3\", mac = \"02:00:00:00:00\" } ]\n",
            "bad MAC \"02:00:00:00:00\"",
        ),
        (
            "duplicate service",
            &format!("{GOOD}{GOOD}"),
            "duplicate service TCP 10.9.0.10:80",
        ),
        (
            "duplicate real server",
            "[[service]]\nvip = \"10.9.0.10\"\nport = 80\nreal_servers = [ { address = \"10.9.0.3\" }, { address = \"10.9.0.3\" } ]\n",
            "duplicate real server 10.9.0.3",
        ),
        (
            "rules",
            "-A -t 10.9.0.10:80 -s rr\n-a -t 10.9.0.10:80 -w 1\n",
            "line 2: You need to supply the 'real-server' option for the 'add-server' command",
        ),
    ];
    for (name, text, want) in cases {
        let path = dir.0.join(format!("{}.toml", name.replace(' ', "-")));
        std::fs::write(&path, text).unwrap();
        let path = path.to_str().unwrap();
        // `run` refuses before looking at the interface (which does not exist here either).
        let o = lvs_xdp(None, &["run", "--iface", "lvsx-none0", "--config", path]);
        refused(&o, want);
        assert!(
            o.stderr.contains(path),
            "{name}: the message names the file: {}",
            o.stderr
        );
        refused(&lvs_xdp(None, &["check", "--config", path]), want);
    }
    let o = lvs_xdp(None, &["check", "--config", "/nonexistent/lvs.toml"]);
    refused(&o, "cannot read config /nonexistent/lvs.toml");
}

#[test]
fn command_line_refusals() {
    let cases: [(&[&str], &str); 7] = [
        (
            &["--service", "10.9.0.10:80/icmp"],
            "unknown protocol \"icmp\"",
        ),
        (&["--service", "10.9.0.10"], "expected VIP:PORT"),
        (
            &["--real", "10.9.0.3", "--service", "10.9.0.10:80"],
            "--real 10.9.0.3 must follow the --service",
        ),
        (
            &[
                "--service",
                "10.9.0.10:80",
                "--real",
                "10.9.0.3",
                "--real",
                "10.9.0.3",
            ],
            "duplicate real server 10.9.0.3",
        ),
        (
            &["--service", "10.9.0.10:80", "--flow-table-size", "-5"],
            "--flow-table-size -5 out of range",
        ),
        (
            &["--service", "10.9.0.10:80", "--flow-table-size-v6", "8"],
            "--flow-table-size-v6 8 out of range (16..=16777216)",
        ),
        (
            &["--service", "[2001:db8::10]:80", "--real", "10.9.0.3"],
            "real server 10.9.0.3 is not of the family of service TCP [2001:db8::10]:80",
        ),
    ];
    for (args, want) in cases {
        let mut all = vec!["check"];
        all.extend_from_slice(args);
        refused(&lvs_xdp(None, &all), want);
    }
    // clap's own usage errors exit 2.
    let o = lvs_xdp(
        None,
        &[
            "run",
            "--iface",
            "x",
            "--service",
            "10.9.0.10:80",
            "--mode",
            "turbo",
        ],
    );
    assert_eq!(o.code, 2, "{}", o.stderr);
    let o = lvs_xdp(None, &["run", "--service", "10.9.0.10:80"]);
    assert_eq!(o.code, 2, "--iface is required: {}", o.stderr);
}

#[test]
fn check_prints_the_services() {
    let o = lvs_xdp(
        None,
        &[
            "check",
            "--service",
            "10.9.0.10:80",
            "--real",
            "10.9.0.3",
            "--real",
            "10.9.0.4",
            "--service",
            "10.9.0.10:53/udp",
        ],
    );
    assert_eq!(o.code, 0, "{}", o.stderr);
    assert!(
        o.stdout.starts_with(
            "-A -t 10.9.0.10:80 -s wlc\n-a -t 10.9.0.10:80 -r 10.9.0.3:80 -g -w 1\n-a -t 10.9.0.10:80 -r 10.9.0.4:80 -g -w 1\n-A -u 10.9.0.10:53 -s wlc\n"
        ),
        "{}",
        o.stdout
    );
    // The default flow table, with what it costs (measured: 67 112 960 + 23 069 568 bytes of
    // memlock for the two maps on Linux 6.18).
    assert!(
        o.stdout.contains(
            "flow table: 1048576 flows at least (1048576 buckets of 3, 262144 overflow entries; 86.0 MiB of kernel memory)"
        ),
        "{}",
        o.stdout
    );
}

#[test]
fn the_maglev_table_size_is_checked_and_shown() {
    let o = lvs_xdp(None, &["check", "--maglev-table-size", "131071"]);
    assert_eq!(o.code, 0, "{}", o.stderr);
    assert!(
        o.stdout.contains(
            "maglev: 8 mh services at most, tables of 131071 entries (16.0 MiB of kernel memory)"
        ),
        "{}",
        o.stdout
    );
    refused(
        &lvs_xdp(None, &["check", "--maglev-table-size", "131072"]),
        "--maglev-table-size 131072 is not a prime",
    );
}

#[test]
fn missing_and_non_ethernet_interfaces_are_refused() {
    root();
    let ns = Netns::new("cli-iface").unwrap();
    let svc = ["--service", "10.9.0.10:80", "--real", "10.9.0.3"];
    let mut args = vec!["run", "--iface", "nope0"];
    args.extend_from_slice(&svc);
    refused(&lvs_xdp(Some(&ns), &args), "interface nope0 not found");
    let mut args = vec!["run", "--iface", "lo"];
    args.extend_from_slice(&svc);
    refused(&lvs_xdp(Some(&ns), &args), "interface lo is not Ethernet");
}

#[test]
fn an_unresolvable_real_server_is_named() {
    root();
    let ns = Netns::with_veth_pair("cli-neigh", "veth0", "veth1").unwrap();
    ns.ip(&["addr", "add", "10.9.0.1/24", "dev", "veth0"])
        .unwrap();
    let o = lvs_xdp(
        Some(&ns),
        &[
            "run",
            "--iface",
            "veth0",
            "--service",
            "10.9.0.10:80",
            "--real",
            "10.9.0.77",
            "--resolve-timeout",
            "0.5",
        ],
    );
    refused(
        &o,
        "real server 10.9.0.77 did not resolve to a MAC on veth0 within 0.5s",
    );
    let link = ns.stdout("ip", &["link", "show", "veth0"]).unwrap();
    assert!(!link.contains("xdp"), "nothing attached: {link}");
}

#[test]
fn attach_refused_is_all_or_nothing() {
    root();
    let ns = Netns::with_veth_pair("cli-attach", "veth0", "veth1").unwrap();
    ns.ip(&["link", "add", "br0", "type", "bridge"]).unwrap();
    ns.ip(&["link", "set", "br0", "up"]).unwrap();
    let config = TempDir::new("cli-attach").unwrap();
    let path = config.0.join("lb.toml");
    std::fs::write(&path, GOOD).unwrap();
    let path = path.to_str().unwrap();
    // A bridge has no native XDP: refused. veth0 had been attached first and must be undone.
    let o = lvs_xdp(
        Some(&ns),
        &[
            "run", "--iface", "veth0", "--iface", "br0", "--mode", "native", "--config", path,
        ],
    );
    refused(&o, "attach to br0 (native mode) refused");
    for dev in ["veth0", "br0"] {
        let link = ns.stdout("ip", &["link", "show", dev]).unwrap();
        assert!(!link.contains("xdp"), "{dev} left with a program: {link}");
    }
    let o = lvs_xdp(
        Some(&ns),
        &[
            "run", "--iface", "veth0", "--iface", "veth0", "--config", path,
        ],
    );
    refused(&o, "interface veth0 given twice");
}

/// `lvs-xdp run | head -1`: once the reader of stdout is gone, a signal still detaches the
/// program and exits 0 (a write to the closed pipe must not panic).
#[test]
fn a_closed_stdout_does_not_stop_a_clean_exit() {
    root();
    let ns = Netns::with_veth_pair("cli-pipe", "veth0", "veth1").unwrap();
    let config = TempDir::new("cli-pipe").unwrap();
    let path = config.0.join("lb.toml");
    std::fs::write(&path, GOOD).unwrap();
    let (child, line) =
        bins::start_run(&ns, "veth0", 1, &path, std::process::Stdio::piped()).unwrap();
    assert!(line.contains("attached to veth0"), "{line}");
    // The reader is gone; let a stats table hit the closed pipe, then stop it.
    std::thread::sleep(std::time::Duration::from_millis(1500));
    unsafe { libc::kill(child.id() as i32, libc::SIGTERM) };
    let out = child.wait_with_output().unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(0), "stderr: {stderr}");
    assert!(!stderr.contains("panicked"), "{stderr}");
    let link = ns.stdout("ip", &["link", "show", "veth0"]).unwrap();
    assert!(!link.contains("xdp"), "veth0 left with a program: {link}");
}

/// A keepalived.conf as its documentation writes one: `check --config` reads its virtual
/// servers, `convert` writes them as TOML (which `check` then reads into the same rules) and
/// reports the VRRP part by line; a block lvs-xdp cannot honour is refused, naming its line.
#[test]
fn a_keepalived_conf_is_read_and_converted() {
    let dir = TempDir::new("keepalived-conf").unwrap();
    let conf = dir.0.join("keepalived.conf");
    std::fs::write(
        &conf,
        "! Configuration File for keepalived\n\nglobal_defs {\n   router_id LVS_DEVEL\n}\n\nvrrp_instance VI_1 {\n    state MASTER\n    interface eth0\n    virtual_router_id 51\n    priority 100\n    virtual_ipaddress {\n        10.9.0.10\n    }\n}\n\nvirtual_server 10.9.0.10 80 {\n    delay_loop 6\n    lb_algo rr\n    lb_kind DR\n    protocol TCP\n\n    real_server 10.9.0.3 80 {\n        weight 1\n        TCP_CHECK {\n            connect_timeout 3\n            retry 3\n            delay_before_retry 3\n        }\n    }\n    real_server 10.9.0.4 80 {\n        weight 2\n        HTTP_GET {\n            url {\n              path /health\n              status_code 200\n            }\n            connect_timeout 3\n        }\n    }\n}\n",
    )
    .unwrap();
    let rules = "-A -t 10.9.0.10:80 -s rr\n-a -t 10.9.0.10:80 -r 10.9.0.3:80 -g -w 1\n-a -t 10.9.0.10:80 -r 10.9.0.4:80 -g -w 2\n";
    let o = lvs_xdp(None, &["check", "--config", conf.to_str().unwrap()]);
    assert_eq!(o.code, 0, "{}", o.stderr);
    assert!(o.stdout.starts_with(rules), "{}", o.stdout);
    // keepalived's retry 3: out after 4 failures in a row.
    assert!(
        o.stdout.contains("health: TCP 10.9.0.10:80: 10.9.0.3: tcp connect every 6s (timeout 3s, out after 4 failures 3s apart, back after 1)\n"),
        "{}",
        o.stdout
    );
    assert!(
        o.stdout
            .contains("health: TCP 10.9.0.10:80: 10.9.0.4: http GET /health expects 200 every 6s"),
        "{}",
        o.stdout
    );
    let o = lvs_xdp(None, &["convert", conf.to_str().unwrap()]);
    assert_eq!(o.code, 0, "{}", o.stderr);
    let notes: Vec<&str> = o.stderr.lines().collect();
    assert_eq!(notes.len(), 2, "{}", o.stderr);
    assert!(notes[0].ends_with("keepalived.conf:3: global_defs: not the load balancer's; left to keepalived (run it for VRRP alone)"), "{}", notes[0]);
    assert!(
        notes[1].contains("keepalived.conf:7: vrrp_instance VI_1:"),
        "{}",
        notes[1]
    );
    assert!(o.stdout.contains("type = \"http\""), "{}", o.stdout);
    let toml = dir.0.join("converted.toml");
    std::fs::write(&toml, &o.stdout).unwrap();
    let again = lvs_xdp(None, &["check", "--config", toml.to_str().unwrap()]);
    assert_eq!(again.code, 0, "{}", again.stderr);
    assert!(again.stdout.starts_with(rules), "{}", again.stdout);
    // What cannot be honoured is refused by line, before anything is loaded.
    let nat = dir.0.join("nat.conf");
    std::fs::write(
        &nat,
        "virtual_server 10.9.0.10 80 {\n    lb_kind NAT\n    real_server 10.9.0.3 80 {\n        MISC_CHECK {\n            misc_path /bin/true\n        }\n    }\n}\n",
    )
    .unwrap();
    let o = lvs_xdp(None, &["convert", nat.to_str().unwrap()]);
    refused(&o, "nat.conf:2: lb_kind NAT");
    assert!(o.stderr.contains("nat.conf:4: MISC_CHECK"), "{}", o.stderr);
}
