use std::path::Path;

use super::*;

/// Written as keepalived's documentation and its users write an LVS-DR director: global_defs,
/// a VRRP instance, and a virtual_server with two checked real servers and a sorry server.
const CLASSIC: &str = r#"! Configuration File for keepalived

global_defs {
   notification_email {
     acassen@firewall.loc
   }
   router_id LVS_DEVEL
}

vrrp_instance VI_1 {
    state MASTER
    interface eth0
    virtual_router_id 51
    priority 100
    advert_int 1
    authentication {
        auth_type PASS
        auth_pass 1111
    }
    virtual_ipaddress {
        192.168.200.16
    }
}

virtual_server 192.168.200.16 80 {
    delay_loop 6
    lb_algo wrr
    lb_kind DR
    persistence_timeout 50
    persistence_granularity 255.255.255.0
    protocol TCP
    sorry_server 192.168.200.200 80

    real_server 192.168.200.2 80 {
        weight 3
        inhibit_on_failure
        HTTP_GET {
            url {
              path /testurl/test.jsp
              digest 640205b7b0fc66c1ea91c463fac6334d
            }
            connect_timeout 3
            nb_get_retry 3
            delay_before_retry 3
        }
    }
    real_server 192.168.200.3 80 {
        weight 1
        TCP_CHECK {
            connect_port 8080
            connect_timeout 5
            retry 2
        }
    }
}

virtual_server 192.168.200.16 53 {
    lb_algo mh
    mh-port
    lb_kind DR
    protocol UDP
    real_server 192.168.200.2 53 {
        weight 1
    }
}
"#;

#[test]
fn the_classic_director_converts_whole() {
    let imported = import_text(CLASSIC, Path::new("keepalived.conf")).unwrap();
    let state = &imported.config.state;
    let web = ServiceKey::new(Protocol::Tcp, [192, 168, 200, 16], 80);
    let svc = &state.services[&web];
    assert_eq!(svc.opts.scheduler, Scheduler::WeightedRoundRobin);
    let p = svc.opts.persistence.unwrap();
    assert_eq!(
        (p.timeout, p.netmask),
        (50, "255.255.255.0".parse::<IpAddr>().unwrap())
    );
    let r2: IpAddr = "192.168.200.2".parse().unwrap();
    let r3: IpAddr = "192.168.200.3".parse().unwrap();
    assert_eq!(svc.reals[&r2].weight, 3);
    assert_eq!(svc.reals[&r3].weight, 1);
    let h = &imported.config.health[&web];
    let c2 = h.check_of(r2).unwrap();
    assert_eq!(
        c2.probe,
        Probe::Http {
            path: "/testurl/test.jsp".into(),
            status: 200,
            digest: parse_digest("640205b7b0fc66c1ea91c463fac6334d"),
        }
    );
    // delay_loop from the virtual server; nb_get_retry 3: out after 4 failures, as keepalived.
    assert_eq!(
        (
            c2.delay_loop,
            c2.connect_timeout,
            c2.fall,
            c2.delay_before_retry
        ),
        (
            Duration::from_secs(6),
            Duration::from_secs(3),
            4,
            Duration::from_secs(3)
        )
    );
    assert!(h.inhibits(r2) && !h.inhibits(r3));
    let c3 = h.check_of(r3).unwrap();
    assert_eq!(
        (c3.probe.clone(), c3.port, c3.fall),
        (Probe::Tcp, Some(8080), 3)
    );
    assert_eq!(
        h.sorry_server,
        Some(("192.168.200.200".parse().unwrap(), None))
    );
    // The UDP service: mh with mh-port, no checks.
    let dns = ServiceKey::new(Protocol::Udp, [192, 168, 200, 16], 53);
    let svc = &state.services[&dns];
    assert_eq!(svc.opts.scheduler, Scheduler::Maglev);
    assert!(svc.opts.flags.port);
    assert!(!imported.config.health.contains_key(&dns));
    // VRRP and global_defs are reported, by line.
    assert_eq!(imported.notes.len(), 2, "{:?}", imported.notes);
    assert!(imported.notes[0].starts_with("keepalived.conf:3: global_defs"));
    assert!(imported.notes[1].starts_with("keepalived.conf:10: vrrp_instance VI_1"));
}

#[test]
fn what_cannot_be_honoured_is_refused_line_by_line() {
    let text = r#"virtual_server 10.0.0.1 80 {
    lb_algo rr
    lb_kind NAT
    protocol TCP
    real_server 10.0.0.3 80 {
        weight 1
        MISC_CHECK {
            misc_path "/usr/local/bin/check.sh"
        }
    }
    real_server 10.0.0.4 8080 {
        notify_down /etc/keepalived/down.sh
        SMTP_CHECK {
            host {
                connect_ip 10.0.0.4
            }
        }
    }
    quorum 2
}
virtual_server fwmark 1 {
    lb_kind DR
}
virtual_server 10.0.0.2 443 {
    lb_kind TUN
    real_server 10.0.0.3 443 {
        SSL_GET {
            url {
                path /
            }
        }
    }
}
"#;
    let err = format!("{:#}", import_text(text, Path::new("k.conf")).unwrap_err());
    for want in [
        "k.conf:3: lb_kind NAT: NAT needs the replies",
        "k.conf:7: MISC_CHECK: MISC_CHECK runs scripts",
        "k.conf:11: real_server port 8080: direct routing keeps the service's port (80)",
        "k.conf:12: notify_down: notify scripts are not run",
        "k.conf:13: SMTP_CHECK: this checker is not supported",
        "k.conf:19: quorum: quorum is not supported",
        "k.conf:21: firewall marks are set by netfilter",
        "k.conf:25: lb_kind TUN: tunnelling is not supported",
        "k.conf:27: SSL_GET: SSL_GET is not supported",
    ] {
        assert!(err.contains(want), "{want:?} not in {err}");
    }
    assert!(!err.contains('\n'), "one line: {err}");
}

#[test]
fn includes_and_detection() {
    assert!(looks_like("! keepalived\n\nglobal_defs {\n}\n"));
    assert!(looks_like("# comment\nvirtual_server 10.0.0.1 80 {\n}\n"));
    assert!(!looks_like("[[service]]\nvip = \"10.0.0.1\"\n"));
    assert!(!looks_like("-A -t 10.0.0.1:80 -s rr\n"));
    let dir = std::env::temp_dir().join(format!("lvs-xdp-ka-{}", std::process::id()));
    std::fs::create_dir_all(dir.join("conf.d")).unwrap();
    std::fs::write(
        dir.join("keepalived.conf"),
        "global_defs {\n router_id A\n}\ninclude conf.d/*.conf\n",
    )
    .unwrap();
    std::fs::write(
        dir.join("conf.d/web.conf"),
        "virtual_server 10.0.0.1 80 {\n lb_algo rr\n lb_kind DR\n real_server 10.0.0.3 80 {\n  TCP_CHECK {\n   connect_timeout 2\n  }\n }\n}\n",
    )
    .unwrap();
    let imported = import(&dir.join("keepalived.conf")).unwrap();
    assert_eq!(imported.config.state.services.len(), 1);
    assert_eq!(imported.config.health.len(), 1);
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn bad_values_are_named() {
    let err = |body: &str| {
        let text = format!("virtual_server 10.0.0.1 80 {{\n{body}\n}}\n");
        format!("{:#}", import_text(&text, Path::new("k")).unwrap_err())
    };
    assert!(err("lb_algo nosuch").contains("k:2:"));
    assert!(err("delay_loop x").contains("`delay_loop x`: expected seconds"));
    assert!(err("real_server 10.0.0.3 80 {\n weight 70000\n}").contains("`weight 70000`"));
    assert!(
        err("real_server 10.0.0.3 80 {\n HTTP_GET {\n connect_timeout 3\n }\n}")
            .contains("exactly one url")
    );
    assert!(err("frobnicate 1").contains("unknown keyword `frobnicate` in virtual_server"));
    assert!(err("persistence_granularity 255.255.255.0").contains("needs persistence_timeout"));
}

#[test]
fn a_converted_configuration_reads_back_the_same() {
    let imported = import_text(CLASSIC, Path::new("keepalived.conf")).unwrap();
    let text = imported.config.to_toml();
    let back = Config::from_toml(&text).unwrap_or_else(|e| panic!("{e:#}\n{text}"));
    assert_eq!(back, imported.config, "{text}");
}

#[test]
fn a_vrrp_virtual_mac_is_refused_with_the_reason() {
    let text = "vrrp_instance VI_1 {\n    interface eth0\n    virtual_router_id 51\n    use_vmac\n    virtual_ipaddress {\n        10.0.0.1\n    }\n}\n";
    let err = format!("{:#}", import_text(text, Path::new("k.conf")).unwrap_err());
    assert!(
        err.contains("k.conf:1: vrrp_instance VI_1: use_vmac is not supported"),
        "{err}"
    );
}
