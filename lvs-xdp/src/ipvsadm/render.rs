//! ipvsadm 1.31's output, byte for byte where scripts read it: `-L` and its `--stats`, `--rate`,
//! `--exact`, `-c` and `--timeout` forms, and `-S`.
use std::{fmt::Write as _, net::IpAddr};

use super::{names, parse::Format};
use crate::{
    director::Connection,
    listing::{Listing, ServiceEntry},
    model::{Protocol, Timeouts},
};

/// The header of a full listing. IPVS prints its version and connection-table size; lvs-xdp
/// prints the IPVS version whose words it speaks and IPVS's default size.
pub const HEADER: &str = "IP Virtual Server version 1.2.1 (size=4096)";

/// `ADDR:PORT` as ipvsadm prints it: IPv6 in brackets; names unless numeric.
fn addr_port(addr: IpAddr, port: u16, proto: Protocol, f: Format) -> String {
    if f.numeric {
        return crate::model::AddrPort(addr, port).to_string();
    }
    let host = names::host_of_addr(addr);
    let service = names::service_of_port(port, proto);
    match addr {
        IpAddr::V6(_) => format!("[{host}]:{service}"),
        IpAddr::V4(_) => format!("{host}:{service}"),
    }
}

/// ipvsadm's `print_largenum`.
fn largenum(out: &mut String, n: u64, f: Format) {
    if f.exact {
        let len = n.to_string().len();
        let width = if len <= 8 { 9 } else { len + 1 };
        let _ = write!(out, "{n:>width$}");
    } else if n < 100_000_000 {
        let _ = write!(out, "{n:>9}");
    } else if n < 1_000_000_000 {
        let _ = write!(out, "{:>8}K", n / 1000);
    } else if n < 100_000_000_000 {
        let _ = write!(out, "{:>8}M", n / 1_000_000);
    } else if n < 100_000_000_000_000 {
        let _ = write!(out, "{:>8}G", n / 1_000_000_000);
    } else {
        let _ = write!(out, "{:>8}T", n / 1_000_000_000_000);
    }
}

fn title(out: &mut String, f: Format) {
    let head = |out: &mut String, cols: [&str; 5]| {
        let _ = writeln!(
            out,
            "{:<33} {:>8} {:>8} {:>8} {:>8} {:>8}\n  -> RemoteAddress:Port",
            "Prot LocalAddress:Port", cols[0], cols[1], cols[2], cols[3], cols[4]
        );
    };
    if f.stats {
        head(out, ["Conns", "InPkts", "OutPkts", "InBytes", "OutBytes"]);
    } else if f.rate {
        head(out, ["CPS", "InPPS", "OutPPS", "InBPS", "OutBPS"]);
    } else if f.thresholds {
        let _ = writeln!(
            out,
            "{:<33} {:<10} {:<10} {:<10} {:<10}\n  -> RemoteAddress:Port",
            "Prot LocalAddress:Port", "Uthreshold", "Lthreshold", "ActiveConn", "InActConn"
        );
    } else if f.persistent_conn {
        let _ = writeln!(
            out,
            "{:<33} {:<9} {:<11} {:<10} {:<10}\n  -> RemoteAddress:Port",
            "Prot LocalAddress:Port", "Weight", "PersistConn", "ActiveConn", "InActConn"
        );
    } else {
        out.push_str("Prot LocalAddress:Port Scheduler Flags\n");
        out.push_str("  -> RemoteAddress:Port           Forward Weight ActiveConn InActConn\n");
    }
}

fn truncate(mut s: String, n: usize) -> String {
    s.truncate(n);
    s
}

fn service(out: &mut String, svc: &ServiceEntry, f: Format) {
    let name = addr_port(svc.addr, svc.port, svc.protocol, f);
    let svc_name = truncate(format!("{:<4} {name}", svc.protocol.to_string()), 33);
    let nums = |out: &mut String, v: [u64; 5]| {
        for n in v {
            largenum(out, n, f);
        }
    };
    if f.stats {
        let _ = write!(out, "{svc_name:<33}");
        let s = svc.stats;
        nums(
            out,
            [s.conns, s.in_pkts, s.out_pkts, s.in_bytes, s.out_bytes],
        );
    } else if f.rate {
        let _ = write!(out, "{svc_name:<33}");
        let r = svc.rates;
        nums(out, [r.cps, r.in_pps, r.out_pps, r.in_bps, r.out_bps]);
    } else {
        let _ = write!(out, "{svc_name} {}", svc.scheduler);
        if !svc.sched_flags.is_empty() {
            let _ = write!(out, " ({})", svc.sched_flags.words(svc.scheduler));
        }
        if let Some(p) = svc.persistence {
            let _ = write!(out, " persistent {}", p.timeout);
            match p.netmask {
                _ if p.is_full() => {}
                IpAddr::V4(m) => {
                    let _ = write!(out, " mask {m}");
                }
                IpAddr::V6(_) => {
                    let _ = write!(out, " mask {}", p.prefix_len());
                }
            }
        }
    }
    out.push('\n');
    for real in &svc.reals {
        let dname = truncate(addr_port(real.addr, real.port, svc.protocol, f), 28);
        if f.stats {
            let _ = write!(out, "  -> {dname:<28}");
            let s = real.stats;
            nums(
                out,
                [s.conns, s.in_pkts, s.out_pkts, s.in_bytes, s.out_bytes],
            );
            out.push('\n');
        } else if f.rate {
            let r = real.rates;
            let _ = write!(
                out,
                "  -> {dname:<28} {:>8} {:>8} {:>8}",
                r.cps, r.in_pps, r.out_pps
            );
            largenum(out, r.in_bps, f);
            largenum(out, r.out_bps, f);
            out.push('\n');
        } else if f.thresholds {
            let _ = writeln!(
                out,
                "  -> {dname:<28} {:<10} {:<10} {:<10} {:<10}",
                0, 0, real.active_conns, real.inact_conns
            );
        } else if f.persistent_conn {
            let _ = writeln!(
                out,
                "  -> {dname:<28} {:<9} {:<11} {:<10} {:<10}",
                real.weight, 0, real.active_conns, real.inact_conns
            );
        } else {
            let _ = writeln!(
                out,
                "  -> {dname:<28} {:<7} {:<6} {:<10} {:<10}",
                "Route", real.weight, real.active_conns, real.inact_conns
            );
        }
    }
}

/// `-L`: every service, with the header.
pub fn list_all(listing: &Listing, f: Format) -> String {
    let mut out = format!("{HEADER}\n");
    title(&mut out, f);
    for svc in &listing.services {
        service(&mut out, svc, f);
    }
    out
}

/// `-L -t VIP:PORT`: one service, without the header.
pub fn list_one(svc: &ServiceEntry, f: Format) -> String {
    let mut out = String::new();
    title(&mut out, f);
    service(&mut out, svc, f);
    out
}

/// `-S`: the rules that rebuild the services. Real servers with an explicit MAC (from a
/// configuration) carry lvs-xdp's `--mac`.
pub fn save(listing: &Listing, explicit_macs: &[(IpAddr, crate::model::Mac)], f: Format) -> String {
    let mut out = String::new();
    for svc in &listing.services {
        let stype = match svc.protocol {
            Protocol::Tcp => "-t",
            Protocol::Udp => "-u",
        };
        let name = format!("{stype} {}", addr_port(svc.addr, svc.port, svc.protocol, f));
        let _ = write!(out, "-A {name} -s {}", svc.scheduler);
        if let Some(p) = svc.persistence {
            let _ = write!(out, " -p {}", p.timeout);
            match p.netmask {
                _ if p.is_full() => {}
                IpAddr::V4(m) => {
                    let _ = write!(out, " -M {m}");
                }
                IpAddr::V6(_) => {
                    let _ = write!(out, " -M {}", p.prefix_len());
                }
            }
        }
        if !svc.sched_flags.is_empty() {
            let _ = write!(out, " -b {}", svc.sched_flags.words(svc.scheduler));
        }
        out.push('\n');
        for real in &svc.reals {
            let dname = addr_port(real.addr, real.port, svc.protocol, f);
            let _ = write!(out, "-a {name} -r {dname} -g -w {}", real.weight);
            if let Some((_, mac)) = explicit_macs.iter().find(|(a, _)| *a == real.addr) {
                let _ = write!(out, " --mac {mac}");
            }
            out.push('\n');
        }
    }
    out
}

/// `-L -c`: the flow table, as ipvsadm lists connections: state, and the time left before an
/// idle connection expires (minutes:seconds).
pub fn connections(conns: &[Connection], f: Format) -> String {
    let mut out = String::from("IPVS connection entries\n");
    let _ = writeln!(
        out,
        "pro expire {:<11} {:<18} {:<18} destination",
        "state", "source", "virtual"
    );
    for c in conns {
        let s = &c.service;
        let _ = writeln!(
            out,
            "{:<3} {:<6} {:<11} {:<18} {:<18} {}",
            c.protocol.to_string(),
            format!("{:02}:{:02}", c.expires / 60, c.expires % 60),
            c.state,
            addr_port(c.client, c.client_port, c.protocol, f),
            addr_port(s.addr, s.port, s.protocol, f),
            addr_port(c.real, s.port, s.protocol, f),
        );
    }
    out
}

/// `-L --timeout`.
pub fn timeouts(t: &Timeouts) -> String {
    format!(
        "Timeout (tcp tcpfin udp): {} {} {}\n",
        t.tcp, t.tcp_fin, t.udp
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{
        listing::{Rates, RealEntry, Stats},
        model::{Mac, Scheduler},
    };
    use std::net::Ipv4Addr;

    fn listing() -> Listing {
        let real = |last: u8, weight: u32, in_pkts: u64| RealEntry {
            addr: IpAddr::V4(Ipv4Addr::new(192, 168, 0, last)),
            port: 80,
            weight,
            mac: Mac([2, 0, 0, 0, 0, last]),
            active_conns: 0,
            inact_conns: 0,
            stats: Stats {
                conns: 3,
                in_pkts,
                in_bytes: in_pkts * 100,
                ..Stats::default()
            },
            rates: Rates {
                cps: 1,
                in_pps: 2,
                in_bps: 200,
                ..Rates::default()
            },
        };
        Listing {
            services: vec![ServiceEntry {
                protocol: Protocol::Tcp,
                addr: IpAddr::V4(Ipv4Addr::new(192, 168, 0, 10)),
                port: 80,
                scheduler: Scheduler::RoundRobin,
                sched_flags: Default::default(),
                persistence: None,
                drops: 0,
                stats: Stats {
                    conns: 6,
                    in_pkts: 123_456_789,
                    in_bytes: 12_345_678_900,
                    ..Stats::default()
                },
                rates: Rates::default(),
                reals: vec![real(3, 1, 5), real(4, 2, 123_456_784)],
            }],
            timeouts: Timeouts::default(),
        }
    }

    fn numeric() -> Format {
        Format {
            numeric: true,
            ..Format::default()
        }
    }

    #[test]
    fn list_is_ipvsadms_to_the_byte() {
        assert_eq!(
            list_all(&listing(), numeric()),
            "IP Virtual Server version 1.2.1 (size=4096)\n\
             Prot LocalAddress:Port Scheduler Flags\n\
             \x20 -> RemoteAddress:Port           Forward Weight ActiveConn InActConn\n\
             TCP  192.168.0.10:80 rr\n\
             \x20 -> 192.168.0.3:80               Route   1      0          0         \n\
             \x20 -> 192.168.0.4:80               Route   2      0          0         \n"
        );
    }

    #[test]
    fn stats_and_exact() {
        let f = Format {
            stats: true,
            ..numeric()
        };
        let out = list_all(&listing(), f);
        let lines: Vec<&str> = out.lines().collect();
        assert_eq!(
            lines[1],
            "Prot LocalAddress:Port               Conns   InPkts  OutPkts  InBytes OutBytes"
        );
        assert_eq!(lines[2], "  -> RemoteAddress:Port");
        assert_eq!(
            lines[3],
            "TCP  192.168.0.10:80                     6  123456K        0   12345M        0"
        );
        assert_eq!(
            lines[4],
            "  -> 192.168.0.3:80                      3        5        0      500        0"
        );
        let exact = list_all(&listing(), Format { exact: true, ..f });
        assert!(
            exact.contains(
                "TCP  192.168.0.10:80                     6 123456789        0 12345678900        0"
            ),
            "{exact}"
        );
    }

    #[test]
    fn rate_save_and_timeouts() {
        let f = Format {
            rate: true,
            ..numeric()
        };
        let out = list_all(&listing(), f);
        assert!(out.contains(
            "Prot LocalAddress:Port                 CPS    InPPS   OutPPS    InBPS   OutBPS\n"
        ));
        assert!(
            out.contains(
                "  -> 192.168.0.3:80                      1        2        0      200        0\n"
            ),
            "{out}"
        );
        let mac = Mac([2, 0, 0, 0, 0, 4]);
        assert_eq!(
            save(
                &listing(),
                &[(IpAddr::V4(Ipv4Addr::new(192, 168, 0, 4)), mac)],
                numeric()
            ),
            "-A -t 192.168.0.10:80 -s rr\n\
             -a -t 192.168.0.10:80 -r 192.168.0.3:80 -g -w 1\n\
             -a -t 192.168.0.10:80 -r 192.168.0.4:80 -g -w 2 --mac 02:00:00:00:00:04\n"
        );
        assert_eq!(
            timeouts(&Timeouts::default()),
            "Timeout (tcp tcpfin udp): 900 120 300\n"
        );
    }

    #[test]
    fn without_n_ports_have_names() {
        let out = save(&listing(), &[], Format::default());
        assert!(out.starts_with("-A -t "), "{out}");
        assert!(out.lines().next().unwrap().contains(":http -s rr"), "{out}");
    }

    #[test]
    fn mh_and_its_flags_as_ipvsadm_shows_them() {
        let mut l = listing();
        l.services[0].scheduler = Scheduler::Maglev;
        l.services[0].sched_flags = crate::model::SchedFlags {
            fallback: true,
            port: true,
        };
        let list = list_all(&l, numeric());
        assert!(
            list.contains("TCP  192.168.0.10:80 mh (mh-fallback,mh-port)\n"),
            "{list}"
        );
        let saved = save(&l, &[], numeric());
        assert!(
            saved.starts_with("-A -t 192.168.0.10:80 -s mh -b mh-fallback,mh-port\n"),
            "{saved}"
        );
    }

    #[test]
    fn persistence_as_ipvsadm_shows_it() {
        let mut l = listing();
        l.services[0].persistence =
            Some(crate::model::Persistence::new(600, Ipv4Addr::new(255, 255, 255, 0)).unwrap());
        let list = list_all(&l, numeric());
        assert!(
            list.contains("TCP  192.168.0.10:80 rr persistent 600 mask 255.255.255.0\n"),
            "{list}"
        );
        let saved = save(&l, &[], numeric());
        assert!(
            saved.starts_with("-A -t 192.168.0.10:80 -s rr -p 600 -M 255.255.255.0\n"),
            "{saved}"
        );
        // IPv6: the prefix length, and nothing for the whole address (ipvsadm's 128).
        use crate::model::Persistence;
        l.services[0].addr = "2001:db8::10".parse().unwrap();
        for (bits, list_tail, save_tail) in [
            (64, " persistent 600 mask 64\n", " -p 600 -M 64\n"),
            (128, " persistent 600\n", " -p 600\n"),
        ] {
            l.services[0].persistence =
                Some(Persistence::new(600, Persistence::mask_v6(bits).unwrap()).unwrap());
            let list = list_all(&l, numeric());
            let line = format!("TCP  [2001:db8::10]:80 rr{list_tail}");
            assert!(list.contains(&line), "{list}");
            let saved = save(&l, &[], numeric());
            let line = format!("-A -t [2001:db8::10]:80 -s rr{save_tail}");
            assert!(saved.starts_with(&line), "{saved}");
        }
    }

    #[test]
    fn ipv6_addresses_print_in_brackets() {
        let v6: IpAddr = "2001:db8::10".parse().unwrap();
        let numeric = Format {
            numeric: true,
            ..Format::default()
        };
        assert_eq!(
            addr_port(v6, 80, Protocol::Tcp, numeric),
            "[2001:db8::10]:80"
        );
        assert_eq!(
            addr_port(v6, 80, Protocol::Tcp, Format::default()),
            "[2001:db8::10]:http"
        );
    }
}
