use super::*;
use crate::model::Service;

fn tcp(a: [u8; 4], port: u16) -> ServiceKey {
    ServiceKey::new(Protocol::Tcp, Ipv4Addr::from(a), port)
}

fn udp(a: [u8; 4], port: u16) -> ServiceKey {
    ServiceKey::new(Protocol::Udp, Ipv4Addr::from(a), port)
}

const ISSUE_EXAMPLE: &str = r#"
[[service]]
vip = "10.99.0.10"
port = 80
protocol = "tcp"
scheduler = "rr"
real_servers = [ { address = "10.99.0.3" }, { address = "10.99.0.4" } ]
"#;

/// The error of `from_toml`, as the one line the user sees.
fn refused(text: &str) -> String {
    let err = Config::from_toml(text).expect_err("config should be refused");
    let line = format!("{err:#}");
    assert!(!line.contains('\n'), "error spans lines: {line:?}");
    line
}

fn service(extra: &str) -> String {
    format!("[[service]]\nvip = \"10.0.0.1\"\nport = 80\n{extra}\n")
}

#[test]
fn issue_example_parses_exactly() {
    let config = Config::from_toml(ISSUE_EXAMPLE).unwrap();
    assert_eq!(config.capacity, Capacity::default());
    let reals = [[10, 99, 0, 3], [10, 99, 0, 4]]
        .map(|a| (IpAddr::from(a), RealOpts::default()))
        .into();
    let service = Service {
        opts: ServiceOpts {
            scheduler: Scheduler::RoundRobin,
            flags: Default::default(),
            persistence: None,
        },
        reals,
    };
    assert_eq!(
        config.state.services,
        [(tcp([10, 99, 0, 10], 80), service)].into()
    );
}

#[test]
fn optional_fields_and_defaults() {
    let text = r#"
flow_table_size = 4096
[[service]]
vip = "192.168.0.10"
port = 53
protocol = "UDP"
[[service.real_servers]]
address = "192.168.0.3"
mac = "02:00:00:00:00:0A"
weight = 0
[[service]]
vip = "192.168.0.10"
port = 53
"#;
    let config = Config::from_toml(text).unwrap();
    assert_eq!(config.capacity.flow_table_size, 4096);
    let services = &config.state.services;
    assert_eq!(services.len(), 2);
    let dns = &services[&udp([192, 168, 0, 10], 53)];
    let web = &services[&tcp([192, 168, 0, 10], 53)];
    assert_eq!(
        web.opts.scheduler,
        Scheduler::WeightedLeastConnection,
        "ipvsadm's default"
    );
    assert!(web.reals.is_empty());
    let real = &dns.reals[&IpAddr::V4(Ipv4Addr::new(192, 168, 0, 3))];
    assert_eq!(real.mac, Some(Mac([2, 0, 0, 0, 0, 0x0a])));
    assert_eq!(real.weight, 0);
}

#[test]
fn empty_file_is_an_empty_config() {
    assert_eq!(Config::from_toml("").unwrap(), Config::default());
}

#[test]
fn refuses_malformed_toml_with_position() {
    let err = refused("[[service]]\nvip = \"10.0.0.1\nport = 80\n");
    assert!(err.starts_with("2:"), "{err}");
}

#[test]
fn refuses_unknown_fields() {
    let err = refused(&service("colour = \"red\""));
    assert!(err.contains("unknown field `colour`"), "{err}");
    let err = refused("[global]\nx = 1\n");
    assert!(err.contains("unknown field `global`"), "{err}");
    let err = refused(&service(
        "real_servers = [ { address = \"10.0.0.3\", prio = 1 } ]",
    ));
    assert!(err.contains("unknown field `prio`"), "{err}");
}

#[test]
fn refuses_missing_fields() {
    let err = refused("[[service]]\nport = 80\n");
    assert!(err.contains("missing field `vip`"), "{err}");
    let err = refused("[[service]]\nvip = \"10.0.0.1\"\n");
    assert!(err.contains("missing field `port`"), "{err}");
}

#[test]
fn refuses_bad_addresses() {
    for bad in [
        "10.0.0",
        "10.0.0.256",
        "",
        "eth0",
        "0.0.0.0",
        "255.255.255.255",
        "224.0.0.1",
    ] {
        let text = format!("[[service]]\nvip = \"{bad}\"\nport = 80\n");
        let err = refused(&text);
        assert!(err.contains("bad vip"), "{bad}: {err}");
    }
    let v6 = |extra: &str| format!("[[service]]\nvip = \"2001:db8::1\"\nport = 80\n{extra}\n");
    for bad in ["\"0\"", "\"129\"", "\"255.255.255.0\"", "\"ffff::\""] {
        let err = refused(&v6(&format!(
            "persistence_timeout = 60\npersistence_netmask = {bad}"
        )));
        assert!(err.contains("prefix length, 1 to 128"), "{bad}: {err}");
    }
    let err = refused(&service("real_servers = [ { address = \"10.0.0.300\" } ]"));
    assert_eq!(
        err,
        "service 1: real server 1: bad address \"10.0.0.300\": not an IP address"
    );
    let err = refused(&service("real_servers = [ { address = \"2001:db8::3\" } ]"));
    assert!(
        err.contains("real server 2001:db8::3 is not of the family of service TCP 10.0.0.1:80"),
        "{err}"
    );
    let err = refused("[[service]]\nvip = 10\nport = 80\n");
    assert!(err.contains("invalid type"), "{err}");
}

#[test]
fn refuses_ports_out_of_range() {
    for bad in ["0", "-1", "65536", "100000"] {
        let err = refused(&format!("[[service]]\nvip = \"10.0.0.1\"\nport = {bad}\n"));
        assert_eq!(
            err,
            format!("service 1: port {bad} out of range (1..=65535)")
        );
    }
    let err = refused("[[service]]\nvip = \"10.0.0.1\"\nport = \"80\"\n");
    assert!(err.contains("invalid type"), "{err}");
    assert!(Config::from_toml("[[service]]\nvip = \"10.0.0.1\"\nport = 65535\n").is_ok());
}

#[test]
fn refuses_unknown_protocol_and_scheduler() {
    let err = refused(&service("protocol = \"sctp\""));
    assert!(err.contains("unknown protocol \"sctp\""), "{err}");
    let err = refused(&service("scheduler = \"nosuch\""));
    assert!(err.contains("unknown scheduler \"nosuch\""), "{err}");
}

#[test]
fn refuses_bad_macs() {
    for bad in [
        "02:00:00:00:00",
        "02:00:00:00:00:00:00",
        "02:00:00:00:00:zz",
        "0200.0000.0001",
        "02:00:00:00:00:001",
        "00:00:00:00:00:00",
        "ff:ff:ff:ff:ff:ff",
        "01:00:5e:00:00:01",
    ] {
        let text = service(&format!(
            "real_servers = [ {{ address = \"10.0.0.3\", mac = \"{bad}\" }} ]"
        ));
        let err = refused(&text);
        assert!(err.contains(&format!("bad MAC \"{bad}\"")), "{bad}: {err}");
    }
}

#[test]
fn refuses_bad_weights() {
    for bad in ["-1", "65536"] {
        let text = service(&format!(
            "real_servers = [ {{ address = \"10.0.0.3\", weight = {bad} }} ]"
        ));
        let err = refused(&text);
        assert!(err.contains(&format!("weight {bad} out of range")), "{err}");
    }
}

#[test]
fn refuses_duplicates() {
    let text = format!("{}{}", service(""), service("protocol = \"tcp\""));
    assert_eq!(refused(&text), "duplicate service TCP 10.0.0.1:80");
    // Same address and port but another protocol is another service.
    let text = format!("{}{}", service(""), service("protocol = \"udp\""));
    assert_eq!(Config::from_toml(&text).unwrap().state.services.len(), 2);
    let err = refused(&service(
        "real_servers = [ { address = \"10.0.0.3\" }, { address = \"10.0.0.3\" } ]",
    ));
    assert_eq!(
        err,
        "service 1: duplicate real server 10.0.0.3 in service TCP 10.0.0.1:80"
    );
}

#[test]
fn rules_as_save_writes_them() {
    let text = "-A -t 10.0.0.1:80 -s rr\n-a -t 10.0.0.1:80 -r 10.0.0.3:80 -g -w 2\n-a -t 10.0.0.1:80 -r 10.0.0.4:80 -g -w 1 --mac 02:00:00:00:00:04\n";
    let config = Config::from_rules(text).unwrap();
    let svc = &config.state.services[&tcp([10, 0, 0, 1], 80)];
    assert_eq!(svc.reals[&IpAddr::V4(Ipv4Addr::new(10, 0, 0, 3))].weight, 2);
    assert_eq!(
        svc.reals[&IpAddr::V4(Ipv4Addr::new(10, 0, 0, 4))].mac,
        Some(Mac([2, 0, 0, 0, 0, 4]))
    );
    let err = Config::from_rules("-A -t 10.0.0.1:80 -s rr\n-A -t 10.0.0.1:80 -s rr\n").unwrap_err();
    assert_eq!(
        format!("{err:#}"),
        "line 2: duplicate service TCP 10.0.0.1:80"
    );
    let err = Config::from_rules("-A -t 10.0.0.1:80 -s rr\n-a -t 10.0.0.1:80 -w 1\n").unwrap_err();
    assert!(
        format!("{err:#}").starts_with("line 2: You need"),
        "{err:#}"
    );
}

#[test]
fn capacities() {
    let config = Config::from_toml("max_services = 10000\nmax_real_servers = 20\n").unwrap();
    assert_eq!(config.capacity.services, 10000);
    assert_eq!(config.capacity.real_servers, 20);
    let err = refused("max_services = 0\n");
    assert_eq!(
        err,
        format!("max_services 0 out of range (1..={MAX_CAPACITY})")
    );
    let err = refused("max_real_servers = -1\n");
    assert!(err.contains("max_real_servers -1 out of range"), "{err}");
}

#[test]
fn refuses_flow_table_size_out_of_range() {
    let err = refused("flow_table_size = 0\n");
    assert!(err.contains("flow_table_size 0 out of range"), "{err}");
    let err = refused("flow_table_size = 99999999999\n");
    assert!(err.contains("out of range"), "{err}");
}

#[test]
fn cli_services() {
    let mut config = Config::default();
    config
        .add_cli_services(&[
            (
                "10.0.0.1:80".into(),
                vec!["10.0.0.3".into(), "10.0.0.4".into()],
            ),
            ("10.0.0.1:53/udp".into(), vec![]),
        ])
        .unwrap();
    let services = &config.state.services;
    assert_eq!(services.len(), 2);
    assert_eq!(services[&tcp([10, 0, 0, 1], 80)].reals.len(), 2);
    assert!(services[&udp([10, 0, 0, 1], 53)].reals.is_empty());
}

#[test]
fn cli_refusals() {
    let cases = [
        ("10.0.0.1", vec![], "expected VIP:PORT"),
        ("10.0.0.1:http", vec![], "bad port \"http\""),
        ("10.0.0.1:0", vec![], "port 0 out of range"),
        ("10.0.0.1:80/icmp", vec![], "unknown protocol \"icmp\""),
        ("10.0.0:80", vec![], "bad vip"),
        ("10.0.0.1:80", vec!["10.0.0.x"], "bad --real \"10.0.0.x\""),
        (
            "10.0.0.1:80",
            vec!["10.0.0.3", "10.0.0.3"],
            "duplicate real server",
        ),
    ];
    for (spec, reals, want) in cases {
        let reals: Vec<String> = reals.into_iter().map(String::from).collect();
        let err = Config::default()
            .add_cli_services(&[(spec.to_string(), reals)])
            .expect_err(spec);
        let line = format!("{err:#}");
        assert!(line.starts_with(&format!("--service {spec}: ")), "{line}");
        assert!(line.contains(want), "{spec}: {line}");
    }
    let mut config = Config::from_toml(&service("")).unwrap();
    let err = config
        .add_cli_services(&[("10.0.0.1:80/tcp".into(), vec![])])
        .unwrap_err();
    assert_eq!(format!("{err:#}"), "duplicate service TCP 10.0.0.1:80");
}

#[test]
fn timeouts_are_read_and_checked() {
    let c = Config::from_toml("[timeouts]\ntcp = 60\nudp = 30\n").unwrap();
    assert_eq!(
        c.state.timeouts,
        crate::model::Timeouts {
            tcp: 60,
            tcp_fin: 120,
            udp: 30
        }
    );
    assert_eq!(
        c.state.timeouts.per_state()[usize::from(lvs_xdp_common::conn::ESTABLISHED)],
        60
    );
    assert!(refused("[timeouts]\ntcp = 0\n").contains("timeouts.tcp 0 out of range"));
    assert!(refused("[timeouts]\nudp = 64801\n").contains("timeouts.udp 64801 out of range"));
    assert!(refused("[timeouts]\nfin = 3\n").contains("unknown field"));
}

#[test]
fn mh_and_its_flags() {
    let c = Config::from_toml(&service(
        "scheduler = \"mh\"\nscheduler_flags = [\"mh-port\"]",
    ))
    .unwrap();
    let opts = c.state.services.values().next().unwrap().opts;
    assert_eq!(opts.scheduler, Scheduler::Maglev);
    assert!(opts.flags.port && !opts.flags.fallback);
    assert!(
        refused(&service("scheduler_flags = [\"mh-port\"]"))
            .contains("incompatible scheduler flag")
    );
    assert!(refused("max_mh_services = 0\n").contains("max_mh_services 0 out of range"));
}

#[test]
fn maglev_table_size_is_a_prime_in_range_within_the_memory_bound() {
    let size = |text: &str| Config::from_toml(text).unwrap().capacity.maglev_table_size;
    assert_eq!(size(""), 65_537);
    assert_eq!(size("maglev_table_size = 251\n"), 251);
    assert_eq!(size("maglev_table_size = 1048573\n"), 1_048_573);
    assert!(refused("maglev_table_size = 65536\n").contains("65536 is not a prime"));
    assert!(refused("maglev_table_size = 250\n").contains("out of range (251..=4194301)"));
    assert!(refused("maglev_table_size = 4194319\n").contains("out of range"));
    // 256 services x 2 x 4194301 x 8 bytes: 16 GiB.
    let err = refused("max_mh_services = 256\nmaglev_table_size = 4194301\n");
    assert!(
        err.contains("16383 MiB of kernel memory; at most 1024 MiB"),
        "{err}"
    );
    assert_eq!(
        size("max_mh_services = 16\nmaglev_table_size = 4194301\n"),
        4_194_301
    );
}

#[test]
fn persistence_in_the_config() {
    let c = Config::from_toml(&service(
        "persistence_timeout = 600\npersistence_netmask = \"255.255.255.0\"",
    ))
    .unwrap();
    let p = c
        .state
        .services
        .values()
        .next()
        .unwrap()
        .opts
        .persistence
        .unwrap();
    assert_eq!(
        (p.timeout, p.netmask),
        (600, IpAddr::from(Ipv4Addr::new(255, 255, 255, 0)))
    );
    assert!(
        refused(&service("persistence_netmask = \"255.255.255.0\""))
            .contains("needs persistence_timeout")
    );
    // An IPv6 VIP's netmask is a prefix length (ipvsadm's -M for IPv6); none: the whole address.
    let v6 = |extra: &str| {
        let text = format!("[[service]]\nvip = \"2001:db8::1\"\nport = 80\n{extra}\n");
        let config = Config::from_toml(&text).unwrap();
        config
            .state
            .services
            .values()
            .next()
            .unwrap()
            .opts
            .persistence
            .unwrap()
    };
    let p = v6("persistence_timeout = 300\npersistence_netmask = \"64\"");
    assert_eq!(
        (p.timeout, p.netmask, p.prefix_len()),
        (300, "ffff:ffff:ffff:ffff::".parse::<IpAddr>().unwrap(), 64)
    );
    let p = v6("persistence_timeout = 300");
    assert_eq!((p.prefix_len(), p.is_full()), (128, true));
    assert!(refused(&service("persistence_timeout = 0")).contains("out of range"));
}

#[test]
fn health_checks_in_keepaliveds_words() {
    let text = service(
        "inhibit_on_failure = true\nsorry_server = \"10.0.0.9\"\nreal_servers = [ { address = \"10.0.0.3\" }, { address = \"10.0.0.4\", health_check = false }, { address = \"10.0.0.5\", health_check = { type = \"tcp\", connect_port = 8080, fall = 4 } } ]\n[service.health_check]\ntype = \"http\"\npath = \"/health\"\nstatus_code = 204\ndigest = \"9E107D9D372BB6826BD81D3542A419D6\"\ndelay_loop = 2.5\nconnect_timeout = 1\nretry = 3\ndelay_before_retry = 0.5\nrise = 2",
    );
    let config = Config::from_toml(&text).unwrap();
    let (key, h) = config.health.iter().next().unwrap();
    assert_eq!(key.port, 80);
    let c = h.check_of("10.0.0.3".parse().unwrap()).unwrap();
    assert_eq!(
        c.probe,
        crate::health::Probe::Http {
            path: "/health".into(),
            status: 204,
            digest: crate::health::probe::parse_digest("9e107d9d372bb6826bd81d3542a419d6"),
        }
    );
    assert_eq!(
        (
            c.delay_loop.as_secs_f64(),
            c.connect_timeout.as_secs_f64(),
            c.fall,
            c.rise
        ),
        (2.5, 1.0, 4, 2)
    );
    assert_eq!(c.delay_before_retry.as_secs_f64(), 0.5);
    assert!(h.check_of("10.0.0.4".parse().unwrap()).is_none());
    let own = h.check_of("10.0.0.5".parse().unwrap()).unwrap();
    assert_eq!((own.port, own.fall), (Some(8080), 4));
    assert!(h.inhibit_on_failure);
    assert_eq!(h.sorry_server, Some(("10.0.0.9".parse().unwrap(), None)));
    // A service without health settings has none.
    assert!(Config::from_toml(&service("")).unwrap().health.is_empty());
}

#[test]
fn bad_health_checks_are_refused_in_one_line() {
    for (extra, want) in [
        (
            "[service.health_check]\ntype = \"smtp\"",
            "type \"smtp\" unknown",
        ),
        (
            "[service.health_check]\ntype = \"http\"\nstatus_code = 42",
            "status_code 42 out of range",
        ),
        (
            "[service.health_check]\ntype = \"http\"\ndigest = \"abc\"",
            "is not an MD5",
        ),
        (
            "[service.health_check]\ntype = \"http\"\npath = \"health\"",
            "must start with /",
        ),
        (
            "[service.health_check]\ntype = \"tcp\"\npath = \"/\"",
            "takes no path",
        ),
        (
            "[service.health_check]\ntype = \"tcp\"\ndelay_loop = 0",
            "delay_loop 0 out of range",
        ),
        (
            "[service.health_check]\ntype = \"tcp\"\nretry = 2\nfall = 2",
            "give one",
        ),
        (
            "[service.health_check]\ntype = \"tcp\"\nconnect_port = 70000",
            "connect_port 70000",
        ),
        (
            "[service.health_check]\ntype = \"tcp\"\nfrequency = 2",
            "unknown field",
        ),
        ("on_failure = \"drop\"", "on_failure \"drop\" unknown"),
        (
            "inhibit_on_failure = true\non_failure = \"reschedule\"",
            "choose one",
        ),
        ("sorry_server = \"2001:db8::9\"", "not of the VIP's family"),
        (
            "sorry_server = \"10.0.0.3\"\nreal_servers = [ { address = \"10.0.0.3\" } ]",
            "also a real server",
        ),
        (
            "real_servers = [ { address = \"10.0.0.3\", health_check = true } ]",
            "the service has no health_check",
        ),
    ] {
        let err = refused(&service(extra));
        assert!(err.contains(want), "{extra:?}: {err}");
    }
}

/// Each service is parsed on its own; an error still names its line in the whole file, in a
/// service or in a table after the services.
#[test]
fn errors_name_their_line_in_the_whole_file() {
    let one = "[[service]]\nvip = \"10.0.0.1\"\nport = 80\n";
    let two = one.replace("10.0.0.1", "10.0.0.3");
    let text =
        format!("flow_table_size = 64\n{one}{two}[[service]]\nvip = \"10.0.0.2\"\nport = \"x\"\n");
    let err = refused(&text);
    assert!(err.starts_with("10:8: "), "{err}");
    let text = format!("{one}[timeouts]\ntcp = 10\nbogus = 1\n");
    let err = refused(&text);
    assert!(err.starts_with("6:1: "), "{err}");
    // The services still count in file order, and a duplicate across parts is refused.
    let err = refused(&format!("{one}{one}"));
    assert!(err.contains("duplicate service TCP 10.0.0.1:80"), "{err}");
}

#[test]
fn direct_path_is_auto_always_or_never_and_written_back() {
    use crate::config::DirectPath;
    let mode = |text: &str| Config::from_toml(text).unwrap().capacity.direct_path;
    assert_eq!(mode(""), DirectPath::Auto);
    assert_eq!(mode("direct_path = \"never\"\n"), DirectPath::Never);
    assert_eq!(mode("direct_path = \"always\"\n"), DirectPath::Always);
    assert!(
        refused("direct_path = \"sometimes\"\n")
            .contains("direct_path \"sometimes\": expected auto, always or never")
    );
    let c = Config::from_toml("direct_path = \"never\"\n").unwrap();
    assert_eq!(Config::from_toml(&c.to_toml()).unwrap(), c);
    // auto: on above 65 536 connections, off again below 32 768.
    assert!(!DirectPath::Auto.on(false, 65_536));
    assert!(DirectPath::Auto.on(false, 65_537));
    assert!(DirectPath::Auto.on(true, 40_000));
    assert!(!DirectPath::Auto.on(true, 32_767));
    assert!(DirectPath::Always.on(false, 0) && !DirectPath::Never.on(true, 1 << 20));
}
