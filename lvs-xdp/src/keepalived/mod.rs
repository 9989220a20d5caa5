//! An existing keepalived.conf brought along: its `virtual_server` blocks become lvs-xdp's
//! services, real servers and health checks. What lvs-xdp cannot honour (NAT or TUN, scripts,
//! SMTP checks, thresholds, ...) is refused, every such line named; the blocks that are not
//! LVS's (global_defs, VRRP) are reported as left to keepalived. Nothing is dropped silently.
pub mod syntax;

use std::{net::IpAddr, path::Path, time::Duration};

use anyhow::{Result, bail};

use crate::{
    config::Config,
    health::{Check, OnFailure, Probe, RealHealth, ServiceHealth, probe::parse_digest},
    model::{
        MAX_WEIGHT, Op, Persistence, Protocol, RealOpts, SchedFlags, Scheduler, ServiceKey,
        ServiceOpts,
    },
};
use syntax::{At, Node};

/// A converted keepalived.conf: the configuration, and what was left to keepalived.
#[derive(Debug)]
pub struct Imported {
    pub config: Config,
    /// One line each: a block or keyword not converted because it is not the load balancer's
    /// (VRRP, global settings), with where it is.
    pub notes: Vec<String>,
}

/// Whether `text` reads as a keepalived.conf (its first keyword is one of keepalived's blocks).
pub fn looks_like(text: &str) -> bool {
    let first = text
        .lines()
        .map(|l| l.split(['#', '!']).next().unwrap_or("").trim())
        .find(|l| !l.is_empty())
        .and_then(|l| l.split_whitespace().next());
    matches!(
        first,
        Some(
            "global_defs"
                | "virtual_server"
                | "virtual_server_group"
                | "vrrp_instance"
                | "vrrp_sync_group"
                | "vrrp_script"
                | "static_ipaddress"
                | "static_routes"
                | "include"
        )
    )
}

/// Reads and converts the keepalived.conf at `path` (its includes too).
pub fn import(path: &Path) -> Result<Imported> {
    convert(&syntax::read(path)?)
}

/// Converts keepalived.conf text (named `name` in messages).
pub fn import_text(text: &str, name: &Path) -> Result<Imported> {
    convert(&syntax::parse(text, name)?)
}

/// Top-level blocks that are keepalived's own business, not the load balancer's.
const LEFT_TO_KEEPALIVED: &[&str] = &[
    "global_defs",
    "vrrp_instance",
    "vrrp_sync_group",
    "vrrp_script",
    "vrrp_track_file",
    "track_file",
    "static_ipaddress",
    "static_routes",
    "static_rules",
    "linkbeat_use_polling",
    "net_namespace",
    "instance",
    "use_pid_dir",
    "bfd_instance",
];

struct Problems(Vec<String>);

impl Problems {
    fn add(&mut self, at: &At, what: impl std::fmt::Display) {
        self.0.push(format!("{at}: {what}"));
    }
}

fn convert(nodes: &[Node]) -> Result<Imported> {
    let mut config = Config::default();
    let mut notes = Vec::new();
    let mut problems = Problems(Vec::new());
    for node in nodes {
        match node.keyword.as_str() {
            "virtual_server" => {
                if let Some((ops, health)) = virtual_server(node, &mut problems) {
                    let key = match ops.first() {
                        Some(Op::AddService(k, _)) => *k,
                        _ => continue,
                    };
                    if let Err(e) = config.add_ops(&ops) {
                        problems.add(&node.at, format!("{e:#}"));
                        continue;
                    }
                    if let Some(h) = health {
                        config.health.insert(key, h);
                    }
                }
            }
            "virtual_server_group" => problems.add(
                &node.at,
                "virtual_server_group is not supported: write one virtual_server per address and port",
            ),
            "vrrp_instance" if uses_vmac(node) => problems.add(
                &node.at,
                format!(
                    "vrrp_instance {}: use_vmac is not supported: frames for the VRRP virtual MAC are not load balanced (lvs-xdp takes frames for its interface's own MAC); remove use_vmac, keepalived's gratuitous ARP moves the VIP without it",
                    node.args.join(" ")
                ),
            ),
            k if LEFT_TO_KEEPALIVED.contains(&k) => {
                let name = std::iter::once(k.to_string())
                    .chain(node.args.iter().cloned())
                    .collect::<Vec<_>>()
                    .join(" ");
                notes.push(format!(
                    "{}: {name}: not the load balancer's; left to keepalived (run it for VRRP alone)",
                    node.at
                ))
            }
            other => problems.add(&node.at, format!("unknown keyword `{other}`")),
        }
    }
    if !problems.0.is_empty() {
        bail!("{}", problems.0.join("; "));
    }
    Ok(Imported { config, notes })
}

/// Whether a VRRP instance uses a virtual MAC (`use_vmac`).
fn uses_vmac(node: &Node) -> bool {
    node.block
        .as_deref()
        .unwrap_or(&[])
        .iter()
        .any(|s| s.keyword == "use_vmac")
}

fn one_arg<'a>(node: &'a Node, problems: &mut Problems) -> Option<&'a str> {
    match node.args.as_slice() {
        [v] => Some(v),
        _ => {
            problems.add(&node.at, format!("`{}` takes one value", node.keyword));
            None
        }
    }
}

fn number(node: &Node, min: u64, max: u64, problems: &mut Problems) -> Option<u64> {
    let v = one_arg(node, problems)?;
    match v.parse::<u64>() {
        Ok(n) if (min..=max).contains(&n) => Some(n),
        _ => {
            problems.add(
                &node.at,
                format!(
                    "`{} {v}`: expected a number from {min} to {max}",
                    node.keyword
                ),
            );
            None
        }
    }
}

fn seconds(node: &Node, problems: &mut Problems) -> Option<Duration> {
    let v = one_arg(node, problems)?;
    match v.parse::<f64>() {
        Ok(s) if s > 0.0 && s <= 86_400.0 => Some(Duration::from_secs_f64(s)),
        _ => {
            problems.add(
                &node.at,
                format!(
                    "`{} {v}`: expected seconds, more than 0 and at most 86400",
                    node.keyword
                ),
            );
            None
        }
    }
}

fn address(word: &str, at: &At, what: &str, problems: &mut Problems) -> Option<IpAddr> {
    match word.parse::<IpAddr>() {
        Ok(a) => Some(a),
        Err(_) => {
            problems.add(at, format!("{what} {word:?} is not an IP address"));
            None
        }
    }
}

/// The check settings a virtual server or real server gives its checks by default.
#[derive(Clone, Default)]
struct Defaults {
    delay_loop: Option<Duration>,
    connect_timeout: Option<Duration>,
    retry: Option<u32>,
    delay_before_retry: Option<Duration>,
}

impl Defaults {
    /// Takes `node` if it is one of the defaults' keywords.
    fn take(&mut self, node: &Node, problems: &mut Problems) -> bool {
        match node.keyword.as_str() {
            "delay_loop" => self.delay_loop = seconds(node, problems),
            "connect_timeout" => self.connect_timeout = seconds(node, problems),
            "retry" | "nb_get_retry" => {
                self.retry = number(node, 0, 1000, problems).map(|n| n as u32)
            }
            "delay_before_retry" => self.delay_before_retry = seconds(node, problems),
            _ => return false,
        }
        true
    }

    fn apply(&self, c: &mut Check) {
        if let Some(v) = self.delay_loop {
            c.delay_loop = v;
        }
        if let Some(v) = self.connect_timeout {
            c.connect_timeout = v;
        }
        if let Some(v) = self.retry {
            c.fall = v + 1;
        }
        if let Some(v) = self.delay_before_retry {
            c.delay_before_retry = v;
        }
    }
}

/// Keywords lvs-xdp refuses, with the reason.
fn unsupported(keyword: &str) -> Option<&'static str> {
    Some(match keyword {
        "MISC_CHECK" => {
            "MISC_CHECK runs scripts, which lvs-xdp does not; use a TCP_CHECK or HTTP_GET"
        }
        "SMTP_CHECK" | "DNS_CHECK" | "UDP_CHECK" | "PING_CHECK" | "FILE_CHECK" | "BFD_CHECK" => {
            "this checker is not supported (TCP_CHECK and HTTP_GET are)"
        }
        "SSL_GET" => {
            "SSL_GET is not supported (no TLS in lvs-xdp's checks); use HTTP_GET on a plain port or TCP_CHECK"
        }
        "notify_up" | "notify_down" => {
            "notify scripts are not run by lvs-xdp (its state changes are logged and counted in the metrics)"
        }
        "uthreshold" | "lthreshold" => "connection thresholds are not supported (as ipvsadm -x/-y)",
        "quorum" | "quorum_up" | "quorum_down" | "hysteresis" => {
            "quorum is not supported: the sorry server comes in when no real server is up"
        }
        "alpha" | "omega" => {
            "alpha/omega are not supported: real servers start up, as keepalived's default"
        }
        "ha_suspend" => "ha_suspend is not supported (lvs-xdp does not follow VRRP)",
        "virtualhost" => {
            "virtualhost is not supported: the check's Host header is the real server's address"
        }
        "ops" => "one-packet scheduling is not supported",
        "sorry_server_inhibit" => "sorry_server_inhibit is not supported",
        "bindto" | "bind_port" | "source_ip" => {
            "the check's source address and port are the kernel's choice"
        }
        "warmup" => "warmup is not supported",
        "fwmark" => "firewall marks are set by netfilter, after XDP: give the address and port",
        "smtp_alert" => "no mail is sent: state changes are logged and counted",
        "log_all_failures" => "every failed check is logged at --log-level debug",
        _ => return None,
    })
}

fn virtual_server(
    node: &Node,
    problems: &mut Problems,
) -> Option<(Vec<Op>, Option<ServiceHealth>)> {
    let (vip, port) = match node.args.as_slice() {
        [kw, ..] if kw == "fwmark" => {
            problems.add(&node.at, unsupported("fwmark").unwrap_or_default());
            return None;
        }
        [vip, port] => {
            let vip = address(vip, &node.at, "virtual_server", problems)?;
            let Ok(port) = port.parse::<u16>() else {
                problems.add(&node.at, format!("port {port:?} is not a port"));
                return None;
            };
            if port == 0 {
                problems.add(&node.at, "port 0 is not a service port");
                return None;
            }
            (vip, port)
        }
        _ => {
            problems.add(&node.at, "virtual_server takes an address and a port");
            return None;
        }
    };
    let mut scheduler = Scheduler::WeightedLeastConnection;
    let mut sched_words: Vec<String> = Vec::new();
    let mut protocol = Protocol::Tcp;
    let mut persistence: (Option<u32>, Option<(String, At)>) = (None, None);
    let mut defaults = Defaults::default();
    let mut health = ServiceHealth::default();
    let mut reals = Vec::new();
    let before = problems.0.len();
    for s in node.block.as_deref().unwrap_or(&[]) {
        if defaults.take(s, problems) {
            continue;
        }
        match s.keyword.as_str() {
            "lb_algo" | "lvs_sched" => {
                if let Some(v) = one_arg(s, problems) {
                    match v.parse::<Scheduler>() {
                        Ok(sch) => scheduler = sch,
                        Err(e) => problems.add(&s.at, format!("{e:#}")),
                    }
                }
            }
            "lb_kind" | "lvs_method" => {
                if let Some(v) = one_arg(s, problems) {
                    kind(v, &s.at, problems);
                }
            }
            "protocol" => match one_arg(s, problems) {
                Some(p) if p.eq_ignore_ascii_case("tcp") => protocol = Protocol::Tcp,
                Some(p) if p.eq_ignore_ascii_case("udp") => protocol = Protocol::Udp,
                Some(p) => {
                    problems.add(&s.at, format!("protocol {p} is not supported (TCP or UDP)"))
                }
                None => {}
            },
            "persistence_timeout" => {
                persistence.0 = number(s, 0, u64::from(lvs_xdp_common::conn::MAX_TIMEOUT), problems)
                    .map(|n| n as u32)
            }
            "persistence_granularity" => {
                persistence.1 = one_arg(s, problems).map(|m| (m.to_string(), s.at.clone()))
            }
            "sorry_server" => match s.args.as_slice() {
                [addr, p] => {
                    if let Some(a) = address(addr, &s.at, "sorry_server", problems) {
                        if p.parse::<u16>().ok() != Some(port) {
                            problems.add(&s.at, format!("sorry_server port {p}: direct routing keeps the service's port ({port})"));
                        } else if a.is_ipv6() != vip.is_ipv6() {
                            problems.add(&s.at, "sorry_server is not of the VIP's family");
                        } else {
                            health.sorry_server = Some((a, None));
                        }
                    }
                }
                _ => problems.add(&s.at, "sorry_server takes an address and a port"),
            },
            "inhibit_on_failure" => health.inhibit_on_failure = true,
            "nat_mask" => {}
            "hashed" | "flag-1" | "flag-2" | "flag-3" | "sh-port" | "sh-fallback" | "mh-port"
            | "mh-fallback" => sched_words.push(s.keyword.clone()),
            "real_server" => {
                if let Some(r) = real_server(s, vip, port, &defaults, problems) {
                    reals.push(r);
                }
            }
            k => match unsupported(k) {
                Some(why) => problems.add(&s.at, format!("{k}: {why}")),
                None => problems.add(&s.at, format!("unknown keyword `{k}` in virtual_server")),
            },
        }
    }
    let flags = match sched_words.is_empty() {
        true => SchedFlags::default(),
        false => match SchedFlags::parse(&sched_words.join(","), scheduler) {
            Ok(f) => f,
            Err(e) => {
                problems.add(&node.at, e);
                SchedFlags::default()
            }
        },
    };
    let persistence = match persistence {
        (None | Some(0), None) => None,
        (None | Some(0), Some((_, at))) => {
            problems.add(&at, "persistence_granularity needs persistence_timeout");
            None
        }
        (Some(t), mask) => {
            let mask = match mask {
                None => Some(Persistence::full_mask(vip)),
                Some((m, at)) => {
                    let parsed = if vip.is_ipv6() {
                        m.trim_start_matches('/')
                            .parse()
                            .ok()
                            .and_then(Persistence::mask_v6)
                    } else {
                        m.parse::<std::net::Ipv4Addr>().ok().map(IpAddr::from)
                    };
                    if parsed.is_none() {
                        problems.add(&at, format!("persistence_granularity {m} is not a netmask"));
                    }
                    parsed
                }
            };
            mask.and_then(|m| match Persistence::new(t, m) {
                Ok(p) => Some(p),
                Err(e) => {
                    problems.add(&node.at, e);
                    None
                }
            })
        }
    };
    if problems.0.len() > before {
        return None;
    }
    let key = ServiceKey::new(protocol, vip, port);
    let mut ops = vec![Op::AddService(
        key,
        ServiceOpts {
            scheduler,
            flags,
            persistence,
        },
    )];
    let mut any_check = false;
    for (addr, opts, check, inhibit) in reals {
        ops.push(Op::AddReal(key, addr, opts));
        any_check |= check.is_some();
        health.reals.insert(
            addr,
            RealHealth {
                check,
                inhibit_on_failure: inhibit.then_some(true),
            },
        );
    }
    health.on_failure = OnFailure::Keep;
    let has_health = any_check || health.sorry_server.is_some() || health.inhibit_on_failure;
    Some((ops, has_health.then_some(health)))
}

fn kind(v: &str, at: &At, problems: &mut Problems) {
    match v.to_ascii_uppercase().as_str() {
        "DR" => {}
        "NAT" | "MASQ" => problems.add(at, format!("lb_kind {v}: NAT needs the replies, which a direct-routing director never sees; lvs-xdp does DR only")),
        "TUN" => problems.add(at, format!("lb_kind {v}: tunnelling is not supported; real servers must share the director's L2 segment (DR)")),
        other => problems.add(at, format!("lb_kind {other} unknown")),
    }
}

/// A real server: its address, options, check and whether it is inhibited on failure.
fn real_server(
    node: &Node,
    vip: IpAddr,
    port: u16,
    defaults: &Defaults,
    problems: &mut Problems,
) -> Option<(IpAddr, RealOpts, Option<Check>, bool)> {
    let [addr, rport] = node.args.as_slice() else {
        problems.add(&node.at, "real_server takes an address and a port");
        return None;
    };
    let addr = address(addr, &node.at, "real_server", problems)?;
    if addr.is_ipv6() != vip.is_ipv6() {
        problems.add(&node.at, "real_server is not of the VIP's family");
    }
    if rport.parse::<u16>().ok() != Some(port) {
        problems.add(
            &node.at,
            format!("real_server port {rport}: direct routing keeps the service's port ({port})"),
        );
    }
    let mut weight = 1;
    let mut inhibit = false;
    let mut defaults = defaults.clone();
    let mut checks: Vec<(&Node, Probe)> = Vec::new();
    for s in node.block.as_deref().unwrap_or(&[]) {
        if defaults.take(s, problems) {
            continue;
        }
        match s.keyword.as_str() {
            "weight" => weight = number(s, 0, u64::from(MAX_WEIGHT), problems).unwrap_or(1) as u32,
            "inhibit_on_failure" => inhibit = true,
            "lb_kind" | "lvs_method" => {
                if let Some(v) = one_arg(s, problems) {
                    kind(v, &s.at, problems);
                }
            }
            "TCP_CHECK" => checks.push((s, Probe::Tcp)),
            "HTTP_GET" => {
                if let Some(probe) = http(s, problems) {
                    checks.push((s, probe));
                }
            }
            k => match unsupported(k) {
                Some(why) => problems.add(&s.at, format!("{k}: {why}")),
                None => problems.add(&s.at, format!("unknown keyword `{k}` in real_server")),
            },
        }
    }
    if checks.len() > 1 {
        problems.add(
            &node.at,
            "more than one check on a real server is not supported: keep one",
        );
        return None;
    }
    let check = checks.pop().map(|(s, probe)| {
        let mut c = Check::new(probe);
        defaults.apply(&mut c);
        checker_settings(s, addr, &mut c, problems);
        c
    });
    let opts = RealOpts {
        weight,
        ..RealOpts::default()
    };
    Some((addr, opts, check, inhibit))
}

/// An HTTP_GET's one `url` block.
fn http(node: &Node, problems: &mut Problems) -> Option<Probe> {
    let urls: Vec<&Node> = node
        .block
        .as_deref()
        .unwrap_or(&[])
        .iter()
        .filter(|s| s.keyword == "url")
        .collect();
    let [url] = urls.as_slice() else {
        problems.add(
            &node.at,
            "HTTP_GET needs exactly one url block (several are not supported)",
        );
        return None;
    };
    let (mut path, mut status, mut digest) = (None, None, None);
    for s in url.block.as_deref().unwrap_or(&[]) {
        match s.keyword.as_str() {
            "path" => path = one_arg(s, problems).map(str::to_string),
            "status_code" => status = number(s, 100, 599, problems).map(|n| n as u16),
            "digest" => {
                digest = one_arg(s, problems).and_then(|d| {
                    let parsed = parse_digest(&d.to_ascii_lowercase());
                    if parsed.is_none() {
                        problems.add(&s.at, format!("digest {d} is not an MD5 (32 hex digits)"));
                    }
                    parsed
                })
            }
            k => problems.add(
                &s.at,
                format!("`{k}` in url is not supported (path, status_code, digest)"),
            ),
        }
    }
    let Some(path) = path else {
        problems.add(&url.at, "url without a path");
        return None;
    };
    Some(Probe::Http {
        path,
        status: status.unwrap_or(200),
        digest,
    })
}

/// A checker's own settings (TCP_CHECK's, and HTTP_GET's besides its url).
fn checker_settings(node: &Node, real: IpAddr, c: &mut Check, problems: &mut Problems) {
    let mut own = Defaults::default();
    for s in node.block.as_deref().unwrap_or(&[]) {
        if own.take(s, problems) {
            continue;
        }
        match s.keyword.as_str() {
            "url" => {}
            "connect_port" => c.port = number(s, 1, 65535, problems).map(|p| p as u16),
            "connect_ip" => {
                if let Some(a) = one_arg(s, problems)
                    && a.parse::<IpAddr>().ok() != Some(real)
                {
                    problems.add(
                        &s.at,
                        format!(
                            "connect_ip {a}: checks go to the real server's own address ({real})"
                        ),
                    );
                }
            }
            k => match unsupported(k) {
                Some(why) => problems.add(&s.at, format!("{k}: {why}")),
                None => problems.add(&s.at, format!("unknown keyword `{k}` in {}", node.keyword)),
            },
        }
    }
    own.apply(c);
}

#[cfg(test)]
mod tests;
