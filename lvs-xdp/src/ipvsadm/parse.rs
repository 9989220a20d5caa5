//! ipvsadm's command line, as ipvsadm 1.31 reads it: the same commands, options, checks and
//! messages, and the same exit codes (2 for a malformed command line). Options that make no
//! sense for a direct-routing XDP director are refused with a message saying why.
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, ToSocketAddrs as _};

use crate::model::{
    MAX_WEIGHT, Mac, Op, Persistence, Protocol, RealOpts, SchedFlags, Scheduler, ServiceKey,
    ServiceOpts, Timeouts,
};

/// A refused command line: the message and the exit code.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Usage {
    pub code: u8,
    pub message: String,
}

fn fail<T>(message: impl Into<String>) -> Result<T, Usage> {
    Err(Usage {
        code: 2,
        message: message.into(),
    })
}

/// How a listing is printed (`-n`, `--stats`, `--rate`, `--exact`, `--json`).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Format {
    pub numeric: bool,
    pub stats: bool,
    pub rate: bool,
    pub thresholds: bool,
    pub persistent_conn: bool,
    pub exact: bool,
    pub json: bool,
}

/// What to list.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ListWhat {
    /// Every service (`-L`), or one (`-L -t VIP:PORT`).
    Services(Option<ServiceKey>),
    /// The connections (`-L -c`).
    Connections,
    /// The timeouts (`-L --timeout`).
    Timeouts,
    /// The connection-sync daemons (`-L --daemon`): lvs-xdp runs none.
    Daemons,
}

/// One ipvsadm command.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Command {
    /// `-A -E -D -a -e -d -C --set`: a change of the running state.
    Apply(Op),
    List(ListWhat, Format),
    /// `-S [-n]`
    Save(Format),
    /// `-R`: rules from standard input.
    Restore,
    /// `-Z [-t|-u VIP:PORT]`: zero the listed counters of one service or all.
    Zero(Option<ServiceKey>),
    Help,
    Version,
}

/// A parsed command line: the command, and which running director it is for.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Invocation {
    pub command: Command,
    /// `--iface IF`: the `lvs-xdp run` instance serving IF (needed when several run).
    pub iface: Option<String>,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Cmd {
    Add,
    Edit,
    Del,
    Flush,
    List,
    AddSrv,
    DelSrv,
    EditSrv,
    Timeout,
    Restore,
    Save,
    Zero,
}

impl Cmd {
    fn name(self) -> &'static str {
        match self {
            Cmd::Add => "add-service",
            Cmd::Edit => "edit-service",
            Cmd::Del => "delete-service",
            Cmd::Flush => "flush",
            Cmd::List => "list",
            Cmd::AddSrv => "add-server",
            Cmd::DelSrv => "delete-server",
            Cmd::EditSrv => "edit-server",
            Cmd::Timeout => "set",
            Cmd::Restore => "restore",
            Cmd::Save => "save",
            Cmd::Zero => "zero",
        }
    }

    /// ipvsadm's table of legal options for this command, over [`OPTS`]: '+' compulsory,
    /// 'x' illegal, '1' exclusive, ' ' optional.
    fn legal(self) -> &'static [u8; OPTS.len()] {
        //                 n    c    svc  s    r    fwd  w    tot  st   rt   thr  pc   srt  ex   dmn  b    p    M
        match self {
            Cmd::Add | Cmd::Edit => b"xx+ xxxxxxxxxxx   ",
            Cmd::Del => b"xx+xxxxxxxxxxxxxxx",
            Cmd::Flush | Cmd::Timeout | Cmd::Restore => b"xxxxxxxxxxxxxxxxxx",
            Cmd::List => b" 11xxxx1      1xxx",
            Cmd::AddSrv | Cmd::EditSrv => b"xx+x+  xxxxxxxxxxx",
            Cmd::DelSrv => b"xx+x+xxxxxxxxxxxxx",
            Cmd::Save => b" xxxxxxxxxxxxxxxxx",
            Cmd::Zero => b"xx xxxxxxxxxxxxxxx",
        }
    }
}

/// ipvsadm's option names, in the order of `Cmd::legal`.
const OPTS: [&str; 18] = [
    "numeric",
    "connection",
    "service-address",
    "scheduler",
    "real-server",
    "forwarding-method",
    "weight",
    "timeout",
    "stats",
    "rate",
    "thresholds",
    "persistent-conn",
    "nosort",
    "exact",
    "daemon",
    "sched-flags",
    "persistent",
    "netmask",
];
const O_NUMERIC: usize = 0;
const O_CONNECTION: usize = 1;
const O_SERVICE: usize = 2;
const O_SCHEDULER: usize = 3;
const O_SERVER: usize = 4;
const O_FORWARD: usize = 5;
const O_WEIGHT: usize = 6;
const O_TIMEOUT: usize = 7;
const O_STATS: usize = 8;
const O_RATE: usize = 9;
const O_THRESHOLDS: usize = 10;
const O_PERSISTENTCONN: usize = 11;
const O_NOSORT: usize = 12;
const O_EXACT: usize = 13;
const O_DAEMON: usize = 14;
const O_SCHED_FLAGS: usize = 15;
const O_PERSISTENT: usize = 16;
const O_NETMASK: usize = 17;

/// Options that take a value.
fn takes_value(name: &str) -> bool {
    matches!(
        name,
        "t" | "tcp-service"
            | "u"
            | "udp-service"
            | "sctp-service"
            | "f"
            | "fwmark-service"
            | "s"
            | "scheduler"
            | "M"
            | "netmask"
            | "r"
            | "real-server"
            | "w"
            | "weight"
            | "x"
            | "u-threshold"
            | "y"
            | "l-threshold"
            | "mcast-interface"
            | "syncid"
            | "pe"
            | "b"
            | "sched-flags"
            | "mcast-group"
            | "mcast-port"
            | "mcast-ttl"
            | "sync-maxlen"
            | "start-daemon"
            | "stop-daemon"
            | "iface"
            | "mac"
    )
}

/// Splits `args` into (name, value) options, popt's way: `-Ln` bundles, `-w 3`, `-w3`,
/// `--weight 3`, `--weight=3`; bare words are positional (`--set`'s three timeouts).
/// Options (name, value) and positional words.
type Tokens = (Vec<(String, Option<String>)>, Vec<String>);

fn tokenize(args: &[String]) -> Result<Tokens, Usage> {
    let mut opts = Vec::new();
    let mut positional = Vec::new();
    let mut i = 0;
    while i < args.len() {
        let arg = &args[i];
        i += 1;
        if let Some(long) = arg.strip_prefix("--") {
            let (name, inline) = match long.split_once('=') {
                Some((n, v)) => (n.to_string(), Some(v.to_string())),
                None => (long.to_string(), None),
            };
            let value = if takes_value(&name) {
                match inline {
                    Some(v) => Some(v),
                    None if i < args.len() => {
                        i += 1;
                        Some(args[i - 1].clone())
                    }
                    None => return fail(format!("--{name}: missing argument")),
                }
            } else if name == "persistent" {
                inline.or_else(|| {
                    let next = args.get(i).filter(|a| !a.starts_with('-'))?.clone();
                    i += 1;
                    Some(next)
                })
            } else {
                if inline.is_some() {
                    return fail(format!("--{name}: option takes no argument"));
                }
                None
            };
            opts.push((name, value));
        } else if let Some(shorts) = arg.strip_prefix('-').filter(|s| !s.is_empty()) {
            let chars: Vec<char> = shorts.chars().collect();
            let mut j = 0;
            while j < chars.len() {
                let name = chars[j].to_string();
                j += 1;
                if takes_value(&name) || name == "p" {
                    let rest: String = chars[j..].iter().collect();
                    j = chars.len();
                    let value = if !rest.is_empty() {
                        Some(rest)
                    } else if name == "p" {
                        let next = args.get(i).filter(|a| !a.starts_with('-')).cloned();
                        if next.is_some() {
                            i += 1;
                        }
                        next
                    } else if i < args.len() {
                        i += 1;
                        Some(args[i - 1].clone())
                    } else {
                        return fail(format!("-{name}: missing argument"));
                    };
                    opts.push((name, value));
                } else {
                    opts.push((name, None));
                }
            }
        } else {
            positional.push(arg.clone());
        }
    }
    Ok((opts, positional))
}

/// Why an ipvsadm option is refused by a direct-routing XDP director.
fn unsupported(name: &str) -> Option<&'static str> {
    Some(match name {
        "m" | "masquerading" => {
            "-m (masquerading, NAT): lvs-xdp is a direct-routing director: it rewrites only MAC addresses and never sees the replies that NAT must rewrite back; use -g"
        }
        "i" | "ipip" => {
            "-i (IP-in-IP tunnelling) is not supported yet: real servers must share the director's L2 segment; use -g"
        }
        "f" | "fwmark-service" => {
            "-f (firewall-mark services): XDP sees frames before netfilter marks them; use -t or -u"
        }
        "sctp-service" => "--sctp-service: only TCP and UDP services are supported",
        "6" | "ipv6" => {
            "-6 applies to firewall-mark services (-f), which lvs-xdp refuses; give an IPv6 service as -t [ADDR]:PORT"
        }
        "pe" => "persistence engines (--pe) are not supported: persistence is by client address",
        "o" | "ops" => "one-packet scheduling (-o) is not supported yet",
        "x" | "u-threshold" | "y" | "l-threshold" => {
            "connection thresholds (-x, -y) are not supported yet"
        }
        "start-daemon" | "stop-daemon" | "mcast-interface" | "syncid" | "mcast-group"
        | "mcast-port" | "mcast-ttl" | "sync-maxlen" => {
            "connection synchronisation daemons are not supported"
        }
        _ => return None,
    })
}

/// Parses ipvsadm's words (without the program name).
pub fn parse(args: &[String]) -> Result<Invocation, Usage> {
    let (opts, positional) = tokenize(args)?;
    let mut cmd: Option<Cmd> = None;
    let mut set = [false; OPTS.len()];
    let mut format = Format::default();
    let mut service: Option<(Protocol, String)> = None;
    let mut scheduler: Option<String> = None;
    let mut sched_flags: Option<String> = None;
    let mut persistent: Option<Option<String>> = None;
    let mut netmask: Option<String> = None;
    let mut real: Option<String> = None;
    let mut weight: Option<String> = None;
    let mut mac: Option<String> = None;
    let mut iface = None;
    let set_cmd = |c: Cmd, cmd: &mut Option<Cmd>| -> Result<(), Usage> {
        if cmd.is_some() {
            return fail("multiple commands specified");
        }
        *cmd = Some(c);
        Ok(())
    };
    let set_opt = |o: usize, set: &mut [bool; OPTS.len()]| -> Result<(), Usage> {
        if set[o] {
            return fail(format!("multiple '{}' options specified", OPTS[o]));
        }
        set[o] = true;
        Ok(())
    };
    for (name, value) in opts {
        if let Some(why) = unsupported(&name) {
            return fail(why);
        }
        match name.as_str() {
            "A" | "add-service" => set_cmd(Cmd::Add, &mut cmd)?,
            "E" | "edit-service" => set_cmd(Cmd::Edit, &mut cmd)?,
            "D" | "delete-service" => set_cmd(Cmd::Del, &mut cmd)?,
            "C" | "clear" => set_cmd(Cmd::Flush, &mut cmd)?,
            "L" | "l" | "list" => set_cmd(Cmd::List, &mut cmd)?,
            "a" | "add-server" => set_cmd(Cmd::AddSrv, &mut cmd)?,
            "e" | "edit-server" => set_cmd(Cmd::EditSrv, &mut cmd)?,
            "d" | "delete-server" => set_cmd(Cmd::DelSrv, &mut cmd)?,
            "set" => set_cmd(Cmd::Timeout, &mut cmd)?,
            "R" | "restore" => set_cmd(Cmd::Restore, &mut cmd)?,
            "S" | "save" => set_cmd(Cmd::Save, &mut cmd)?,
            "Z" | "zero" => set_cmd(Cmd::Zero, &mut cmd)?,
            "daemon" => set_opt(O_DAEMON, &mut set)?,
            "h" | "help" => {
                return Ok(Invocation {
                    command: Command::Help,
                    iface,
                });
            }
            "v" | "version" => {
                return Ok(Invocation {
                    command: Command::Version,
                    iface,
                });
            }
            "t" | "tcp-service" | "u" | "udp-service" => {
                set_opt(O_SERVICE, &mut set)?;
                let proto = if name.starts_with('t') {
                    Protocol::Tcp
                } else {
                    Protocol::Udp
                };
                service = Some((proto, value.unwrap_or_default()));
            }
            "s" | "scheduler" => {
                set_opt(O_SCHEDULER, &mut set)?;
                scheduler = value;
            }
            "b" | "sched-flags" => {
                set_opt(O_SCHED_FLAGS, &mut set)?;
                sched_flags = value;
            }
            "p" | "persistent" => {
                set_opt(O_PERSISTENT, &mut set)?;
                persistent = Some(value);
            }
            "M" | "netmask" => {
                set_opt(O_NETMASK, &mut set)?;
                netmask = value;
            }
            "r" | "real-server" => {
                set_opt(O_SERVER, &mut set)?;
                real = value;
            }
            "g" | "gatewaying" => set_opt(O_FORWARD, &mut set)?,
            "w" | "weight" => {
                set_opt(O_WEIGHT, &mut set)?;
                weight = value;
            }
            "n" | "numeric" => {
                set_opt(O_NUMERIC, &mut set)?;
                format.numeric = true;
            }
            "c" | "connection" => set_opt(O_CONNECTION, &mut set)?,
            "timeout" => set_opt(O_TIMEOUT, &mut set)?,
            "stats" => {
                set_opt(O_STATS, &mut set)?;
                format.stats = true;
            }
            "rate" => {
                set_opt(O_RATE, &mut set)?;
                format.rate = true;
            }
            "thresholds" => {
                set_opt(O_THRESHOLDS, &mut set)?;
                format.thresholds = true;
            }
            "persistent-conn" => {
                set_opt(O_PERSISTENTCONN, &mut set)?;
                format.persistent_conn = true;
            }
            "nosort" => set_opt(O_NOSORT, &mut set)?,
            "sort" => {}
            "X" | "exact" => {
                set_opt(O_EXACT, &mut set)?;
                format.exact = true;
            }
            "json" => format.json = true,
            "iface" => iface = value,
            "mac" => mac = value,
            _ => return fail(format!("invalid option `{}{name}'", dashes(&name))),
        }
    }
    let Some(cmd) = cmd else {
        return Err(Usage {
            code: 255,
            message: "Try `lvs-xdp -h' or 'lvs-xdp --help' for more information.".into(),
        });
    };
    check_options(cmd, &set)?;
    if mac.is_some() && !matches!(cmd, Cmd::AddSrv | Cmd::EditSrv) {
        return fail("--mac goes with -a or -e");
    }
    if format.json && !matches!(cmd, Cmd::List) {
        return fail("--json goes with -L");
    }
    let timeouts = if cmd == Cmd::Timeout {
        if positional.len() < 3 {
            return fail("--set option requires 3 timeout values");
        }
        let t = |s: &str| match number(s, 0, MAX_TIMEOUT) {
            Some(v) => Ok(v),
            None => fail(format!("invalid timeout value `{s}' specified")),
        };
        Some(Timeouts {
            tcp: t(&positional[0])?,
            tcp_fin: t(&positional[1])?,
            udp: t(&positional[2])?,
        })
    } else {
        None
    };
    let extra = if cmd == Cmd::Timeout { 3 } else { 0 };
    if let Some(arg) = positional.get(extra) {
        return fail(format!("unexpected argument {arg}"));
    }
    let key = match &service {
        Some((proto, spec)) => Some(parse_service(*proto, spec)?),
        None => None,
    };
    let opts = || -> Result<ServiceOpts, Usage> {
        let scheduler = match &scheduler {
            Some(s) => parse_scheduler(s)?,
            None => Scheduler::default(),
        };
        let flags = match &sched_flags {
            Some(words) => SchedFlags::parse(words, scheduler).or_else(fail)?,
            None => SchedFlags::default(),
        };
        let persistence = match &persistent {
            None if netmask.is_some() => {
                return fail("netmask (-M) only applies to a persistent service (-p)");
            }
            None => None,
            Some(timeout) => {
                let timeout = match timeout {
                    None => Persistence::DEFAULT_TIMEOUT,
                    Some(t) => match number(t, 1, MAX_TIMEOUT) {
                        Some(n) => n,
                        None => return fail(format!("invalid timeout value `{t}' specified")),
                    },
                };
                // ipvsadm: a dotted mask for IPv4, a prefix length (1 to 128) for IPv6.
                let v6 = key.is_some_and(|k| k.addr.is_ipv6());
                let mask = match (&netmask, v6) {
                    (None, _) => Persistence::full_mask(if v6 {
                        Ipv6Addr::UNSPECIFIED.into()
                    } else {
                        Ipv4Addr::UNSPECIFIED.into()
                    }),
                    (Some(m), false) => match m.parse::<Ipv4Addr>() {
                        Ok(m) => m.into(),
                        Err(_) => {
                            return fail("illegal virtual server persistent mask specified");
                        }
                    },
                    (Some(m), true) => match m.parse().ok().and_then(Persistence::mask_v6) {
                        Some(m) => m,
                        None => return fail("illegal ipv6 netmask specified"),
                    },
                };
                Some(Persistence::new(timeout, mask).or_else(fail)?)
            }
        };
        Ok(ServiceOpts {
            scheduler,
            flags,
            persistence,
        })
    };
    let real_opts = || -> Result<RealOpts, Usage> {
        let weight = match &weight {
            Some(w) => match number(w, 0, MAX_WEIGHT) {
                Some(w) => w,
                None => return fail("illegal weight specified"),
            },
            None => 1,
        };
        let mac = match &mac {
            Some(m) => match m.parse::<Mac>() {
                Ok(m) => Some(m),
                Err(e) => return fail(format!("{e:#}")),
            },
            None => None,
        };
        Ok(RealOpts {
            weight,
            mac,
            vlan: None,
        })
    };
    let real_addr = || -> Result<IpAddr, Usage> {
        let (proto, _) = service.as_ref().expect("checked: -r comes with a service");
        let spec = real.as_deref().unwrap_or_default();
        // A direct-routing real server always takes the service's port, as in ipvsadm.
        match parse_addr_port(*proto, spec) {
            Some((addr, _)) => Ok(addr),
            None => fail("illegal real server address[:port] specified"),
        }
    };
    let key_or_zero = |key: Option<ServiceKey>| -> Result<ServiceKey, Usage> {
        let key = key.expect("checked: the service is compulsory");
        if key.port == 0 {
            return fail("Zero port specified for non-persistent service");
        }
        Ok(key)
    };
    let command = match cmd {
        Cmd::Add => Command::Apply(Op::AddService(key_or_zero(key)?, opts()?)),
        Cmd::Edit => Command::Apply(Op::EditService(key_or_zero(key)?, opts()?)),
        Cmd::Del => Command::Apply(Op::DeleteService(key.expect("compulsory"))),
        Cmd::Flush => Command::Apply(Op::Clear),
        Cmd::AddSrv => Command::Apply(Op::AddReal(
            key.expect("compulsory"),
            real_addr()?,
            real_opts()?,
        )),
        Cmd::EditSrv => Command::Apply(Op::EditReal(
            key.expect("compulsory"),
            real_addr()?,
            real_opts()?,
        )),
        Cmd::DelSrv => Command::Apply(Op::DeleteReal(key.expect("compulsory"), real_addr()?)),
        Cmd::Timeout => Command::Apply(Op::SetTimeouts(timeouts.expect("parsed above"))),
        Cmd::Restore => Command::Restore,
        Cmd::Save => Command::Save(format),
        Cmd::Zero => Command::Zero(key),
        Cmd::List => {
            let conflict = ((set[O_CONNECTION] || set[O_TIMEOUT] || set[O_DAEMON])
                && (set[O_STATS] || set[O_RATE] || set[O_THRESHOLDS]))
                || ((set[O_TIMEOUT] || set[O_DAEMON]) && set[O_PERSISTENTCONN]);
            if conflict {
                return fail("options conflicts in the list command");
            }
            let what = if set[O_CONNECTION] {
                ListWhat::Connections
            } else if set[O_TIMEOUT] {
                ListWhat::Timeouts
            } else if set[O_DAEMON] {
                ListWhat::Daemons
            } else {
                ListWhat::Services(key)
            };
            Command::List(what, format)
        }
    };
    Ok(Invocation { command, iface })
}

fn dashes(name: &str) -> &'static str {
    if name.chars().count() == 1 { "-" } else { "--" }
}

/// ipvsadm's `generic_opt_check`.
fn check_options(cmd: Cmd, set: &[bool; OPTS.len()]) -> Result<(), Usage> {
    let legal = cmd.legal();
    let mut first_exclusive = None;
    for (j, &present) in set.iter().enumerate() {
        match (present, legal[j]) {
            (false, b'+') => {
                return fail(format!(
                    "You need to supply the '{}' option for the '{}' command",
                    OPTS[j],
                    cmd.name()
                ));
            }
            (true, b'x') => {
                return fail(format!(
                    "Illegal '{}' option with the '{}' command",
                    OPTS[j],
                    cmd.name()
                ));
            }
            (true, b'1') => match first_exclusive {
                None => first_exclusive = Some(j),
                Some(last) => {
                    return fail(format!(
                        "The option '{}' conflicts with the '{}' option in the '{}' command",
                        OPTS[j],
                        OPTS[last],
                        cmd.name()
                    ));
                }
            },
            _ => {}
        }
    }
    Ok(())
}

/// The largest timeout ipvsadm accepts (31 days).
pub const MAX_TIMEOUT: u32 = 86400 * 31;

/// A decimal number in `min..=max` (ipvsadm's `string_to_number`).
fn number(s: &str, min: u32, max: u32) -> Option<u32> {
    let n: i64 = s.parse().ok()?;
    (i64::from(min)..=i64::from(max))
        .contains(&n)
        .then_some(n as u32)
}

fn parse_scheduler(s: &str) -> Result<Scheduler, Usage> {
    if let Ok(sched) = s.parse() {
        return Ok(sched);
    }
    match s {
        "lblc" | "lblcr" => fail(format!(
            "scheduler '{s}' does not apply to a direct-routing director: it keeps a real server per \
             destination address, for transparent proxy caches, which lvs-xdp does not serve \
             (supported: {})",
            Scheduler::names()
        )),
        _ => fail(format!(
            "Scheduler or persistence engine not found: '{s}' (supported: {})",
            Scheduler::names()
        )),
    }
}

/// `VIP[:PORT]` of a `-t`/`-u` service (`[V6ADDR][:PORT]` for IPv6).
fn parse_service(proto: Protocol, spec: &str) -> Result<ServiceKey, Usage> {
    let Some((addr, port)) = parse_addr_port(proto, spec) else {
        return fail("illegal virtual server address[:port] specified");
    };
    if crate::model::check_unicast(addr, "vip").is_err() {
        return fail("illegal virtual server address[:port] specified");
    }
    Ok(ServiceKey::new(proto, addr, port))
}

/// ipvsadm's `parse_service`: an address (dotted or a host name, or IPv6 in brackets) and an
/// optional port (a number or a name from /etc/services); a bare number is no address. A bare
/// IPv6 address (no brackets) has no port.
fn parse_addr_port(proto: Protocol, spec: &str) -> Option<(IpAddr, u16)> {
    if spec.is_empty() || spec.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    let (host, port) = if let Some(rest) = spec.strip_prefix('[') {
        let (inside, after) = rest.split_once(']')?;
        let port = match after {
            "" => None,
            p => Some(p.strip_prefix(':')?),
        };
        (inside, port)
    } else if let Ok(v6) = spec.parse::<Ipv6Addr>() {
        return Some((IpAddr::V6(v6), 0));
    } else {
        match spec.rsplit_once(':') {
            Some((h, p)) => (h, Some(p)),
            None => (spec, None),
        }
    };
    let addr = match host.parse::<IpAddr>() {
        Ok(a) if spec.starts_with('[') == a.is_ipv6() => a,
        Ok(_) => return None,
        Err(_) if spec.starts_with('[') => return None,
        Err(_) => IpAddr::V4(resolve_host(host)?),
    };
    let port = match port {
        None => 0,
        Some(p) => match number(p, 0, 65535) {
            Some(n) => n as u16,
            None => crate::ipvsadm::names::port_of_service(p, proto)?,
        },
    };
    Some((addr, port))
}

fn resolve_host(host: &str) -> Option<Ipv4Addr> {
    if host.is_empty() || host.starts_with('-') {
        return None;
    }
    (host, 0)
        .to_socket_addrs()
        .ok()?
        .find_map(|a| match a.ip() {
            IpAddr::V4(v4) => Some(v4),
            IpAddr::V6(_) => None,
        })
}

/// Splits one line of `-R` input into words (blank lines and `#` comments give none).
pub fn words(line: &str) -> Vec<String> {
    let line = line.trim();
    if line.is_empty() || line.starts_with('#') {
        return Vec::new();
    }
    line.split_whitespace().map(str::to_string).collect()
}

/// The changes in `-R` input (what `-S` writes), each with its line number: every line must be
/// -A, -E, -D, -a, -e, -d, -C or --set. A refusal names the line.
pub fn restore_ops(text: &str) -> Result<Vec<(usize, Op)>, Usage> {
    let mut ops = Vec::new();
    for (n, line) in text.lines().enumerate() {
        let words = words(line);
        if words.is_empty() {
            continue;
        }
        let at = |u: Usage| Usage {
            code: u.code,
            message: format!("line {}: {}", n + 1, u.message),
        };
        match parse(&words).map_err(at)?.command {
            Command::Apply(op) => ops.push((n + 1, op)),
            _ => {
                return Err(at(Usage {
                    code: 2,
                    message: "only -A, -E, -D, -a, -e, -d, -C and --set can be restored".into(),
                }));
            }
        }
    }
    Ok(ops)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn p(line: &str) -> Result<Command, Usage> {
        let args: Vec<String> = line.split_whitespace().map(String::from).collect();
        parse(&args).map(|i| i.command)
    }

    fn err(line: &str) -> String {
        let u = p(line).unwrap_err();
        assert_eq!(u.code, 2, "{line}: {u:?}");
        u.message
    }

    const VIP: Ipv4Addr = Ipv4Addr::new(192, 168, 0, 10);
    const RS: IpAddr = IpAddr::V4(Ipv4Addr::new(192, 168, 0, 3));

    #[test]
    fn the_classic_recipe() {
        let key = ServiceKey::new(Protocol::Tcp, VIP, 80);
        let rr = ServiceOpts {
            scheduler: Scheduler::RoundRobin,
            ..ServiceOpts::default()
        };
        assert_eq!(
            p("-A -t 192.168.0.10:80 -s rr").unwrap(),
            Command::Apply(Op::AddService(key, rr))
        );
        // Without -s, ipvsadm's default: wlc.
        assert_eq!(
            p("-A -t 192.168.0.10:80").unwrap(),
            Command::Apply(Op::AddService(key, ServiceOpts::default()))
        );
        assert_eq!(ServiceOpts::default().scheduler.name(), "wlc");
        assert_eq!(
            p("-a -t 192.168.0.10:80 -r 192.168.0.3 -g").unwrap(),
            Command::Apply(Op::AddReal(key, RS, RealOpts::default()))
        );
        // A DR real server takes the service's port, whatever is given.
        assert_eq!(
            p("-a -t 192.168.0.10:http -r 192.168.0.3:8080 -g -w 3").unwrap(),
            Command::Apply(Op::AddReal(
                key,
                RS,
                RealOpts {
                    weight: 3,
                    mac: None,
                    vlan: None
                }
            ))
        );
        assert_eq!(
            p("-Ln").unwrap(),
            Command::List(
                ListWhat::Services(None),
                Format {
                    numeric: true,
                    ..Format::default()
                }
            )
        );
        assert_eq!(
            p("-L -n -c").unwrap(),
            Command::List(
                ListWhat::Connections,
                Format {
                    numeric: true,
                    ..Format::default()
                }
            )
        );
        assert_eq!(
            p("--set 10 0 20").unwrap(),
            Command::Apply(Op::SetTimeouts(Timeouts {
                tcp: 10,
                tcp_fin: 0,
                udp: 20
            }))
        );
        assert_eq!(
            p("-d -u 192.168.0.10:53 -r 192.168.0.3").unwrap(),
            Command::Apply(Op::DeleteReal(ServiceKey::new(Protocol::Udp, VIP, 53), RS))
        );
    }

    #[test]
    fn ipvsadm_refusals_word_for_word() {
        assert_eq!(
            err("-a -t 192.168.0.10:80"),
            "You need to supply the 'real-server' option for the 'add-server' command"
        );
        assert_eq!(
            err("-A -t 192.168.0.10:80 -w 2"),
            "Illegal 'weight' option with the 'add-service' command"
        );
        assert_eq!(
            err("-A -D -t 192.168.0.10:80"),
            "multiple commands specified"
        );
        assert_eq!(
            err("-A -t 192.168.0.10:80 -t 192.168.0.10:81"),
            "multiple 'service-address' options specified"
        );
        assert_eq!(
            err("-A -t 192.168.0.10"),
            "Zero port specified for non-persistent service"
        );
        assert_eq!(
            err("-A -t 80"),
            "illegal virtual server address[:port] specified"
        );
        assert_eq!(
            err("-A -t 192.168.0.10:99999"),
            "illegal virtual server address[:port] specified"
        );
        assert_eq!(
            err("-a -t 192.168.0.10:80 -r 192.168.0.3 -w 65536"),
            "illegal weight specified"
        );
        assert_eq!(
            err("-a -t 192.168.0.10:80 -r 300.1.1.1"),
            "illegal real server address[:port] specified"
        );
        assert_eq!(
            err("-L -c --stats"),
            "options conflicts in the list command"
        );
        assert_eq!(
            err("-L -c -t 192.168.0.10:80"),
            "The option 'service-address' conflicts with the 'connection' option in the 'list' command"
        );
        assert_eq!(err("--set 1 2"), "--set option requires 3 timeout values");
        assert_eq!(err("--set 1 2 x"), "invalid timeout value `x' specified");
        assert_eq!(err("-C extra"), "unexpected argument extra");
        assert_eq!(
            err("-A -t 192.168.0.10:80 --bogus"),
            "invalid option `--bogus'"
        );
        let u = p("-t 192.168.0.10:80").unwrap_err();
        assert_eq!(u.code, 255);
    }

    #[test]
    fn what_a_dr_director_cannot_do_is_refused_with_the_reason() {
        assert!(err("-a -t 192.168.0.10:80 -r 192.168.0.3 -m").contains("direct-routing"));
        assert!(err("-a -t 192.168.0.10:80 -r 192.168.0.3 -i").contains("tunnelling"));
        assert!(err("-A -f 1").contains("firewall-mark"));
        assert!(
            err("-A -t 192.168.0.10:80 -s lblc").contains("does not apply to a direct-routing")
        );
        assert!(err("-A -t 192.168.0.10:80 -s nosuch").contains("not found"));
        assert!(err("-A -6 -t 192.168.0.10:80").contains("firewall-mark"));
    }

    /// IPv6 addresses as ipvsadm takes them: in brackets with a port, or bare without one.
    #[test]
    fn ipv6_addresses_in_ipvsadms_forms() {
        let v6: IpAddr = "2001:db8::10".parse().unwrap();
        assert_eq!(
            p("-A -t [2001:db8::10]:80").unwrap(),
            Command::Apply(Op::AddService(
                ServiceKey::new(Protocol::Tcp, v6, 80),
                ServiceOpts::default()
            ))
        );
        assert_eq!(
            p("-a -t [2001:db8::10]:80 -r [2001:db8::3] -g").unwrap(),
            Command::Apply(Op::AddReal(
                ServiceKey::new(Protocol::Tcp, v6, 80),
                "2001:db8::3".parse().unwrap(),
                RealOpts::default()
            ))
        );
        assert_eq!(
            p("-a -t [2001:db8::10]:80 -r 2001:db8::3 -g").unwrap(),
            p("-a -t [2001:db8::10]:80 -r [2001:db8::3]:80 -g").unwrap()
        );
        for bad in [
            "[2001:db8::10",
            "[10.0.0.1]:80",
            "[2001:db8::10]80",
            "[ff02::1]:80",
            "[::]:80",
        ] {
            assert_eq!(
                err(&format!("-A -t {bad}")),
                "illegal virtual server address[:port] specified",
                "{bad}"
            );
        }
    }

    #[test]
    fn zero_and_daemons() {
        assert_eq!(p("-Z").unwrap(), Command::Zero(None));
        assert_eq!(
            p("-Z -t 192.168.0.10:80").unwrap(),
            Command::Zero(Some(ServiceKey::new(Protocol::Tcp, VIP, 80)))
        );
        assert_eq!(
            err("-Z -n"),
            "Illegal 'numeric' option with the 'zero' command"
        );
        assert_eq!(
            p("-L --daemon").unwrap(),
            Command::List(ListWhat::Daemons, Format::default())
        );
        assert_eq!(
            err("-L --daemon --stats"),
            "options conflicts in the list command"
        );
    }

    #[test]
    fn restore_reads_what_save_writes() {
        let ops = restore_ops(
            "# saved\n-A -t 192.168.0.10:80 -s rr\n\n-a -t 192.168.0.10:80 -r 192.168.0.3:80 -g -w 1\n",
        )
        .unwrap();
        assert_eq!(ops.len(), 2);
        let e = restore_ops("-A -t 192.168.0.10:80 -s rr\n-L -n\n").unwrap_err();
        assert!(e.message.starts_with("line 2: only -A"), "{e:?}");
        let e = restore_ops("-A -t 192.168.0.10:80 -s rr\n-a -t 192.168.0.10:80\n").unwrap_err();
        assert!(e.message.starts_with("line 2: You need"), "{e:?}");
    }

    #[test]
    fn scheduler_flags_for_mh_in_both_spellings() {
        let key = ServiceKey::new(Protocol::Tcp, VIP, 80);
        let mh = |fallback, port| {
            Command::Apply(Op::AddService(
                key,
                ServiceOpts {
                    scheduler: Scheduler::Maglev,
                    flags: SchedFlags { fallback, port },
                    persistence: None,
                },
            ))
        };
        assert_eq!(
            p("-A -t 192.168.0.10:80 -s mh -b mh-port").unwrap(),
            mh(false, true)
        );
        assert_eq!(
            p("-A -t 192.168.0.10:80 -s mh -b flag-1,flag-2").unwrap(),
            mh(true, true)
        );
        assert_eq!(
            p("-A -t 192.168.0.10:80 -s mh --sched-flags mh-fallback").unwrap(),
            mh(true, false)
        );
        assert_eq!(
            err("-A -t 192.168.0.10:80 -s rr -b mh-port"),
            "incompatible scheduler flag `mh-port'"
        );
        assert_eq!(
            err("-A -t 192.168.0.10:80 -s mh -b sh-port"),
            "incompatible scheduler flag `sh-port'"
        );
        let sh = p("-A -t 192.168.0.10:80 -s sh -b sh-fallback,sh-port").unwrap();
        let Command::Apply(Op::AddService(_, opts)) = sh else {
            panic!("{sh:?}")
        };
        assert_eq!(opts.scheduler, Scheduler::SourceHashing);
        assert_eq!(opts.flags.words(opts.scheduler), "sh-fallback,sh-port");
        assert_eq!(
            err("-A -t 192.168.0.10:80 -s mh -b nosuch"),
            "invalid scheduler flag `nosuch'"
        );
        assert_eq!(
            err("-a -t 192.168.0.10:80 -r 192.168.0.3 -b mh-port"),
            "Illegal 'sched-flags' option with the 'add-server' command"
        );
    }

    #[test]
    fn persistence_as_ipvsadm_takes_it() {
        let opts = |line: &str| match p(line).unwrap() {
            Command::Apply(Op::AddService(_, o)) => o.persistence,
            other => panic!("{other:?}"),
        };
        let p360 = Persistence::new(360, Ipv4Addr::BROADCAST).unwrap();
        assert_eq!(opts("-A -t 192.168.0.10:80 -s rr -p"), Some(p360));
        assert_eq!(opts("-A -t 192.168.0.10:80 -p -s rr"), Some(p360));
        assert_eq!(
            opts("-A -t 192.168.0.10:80 -s rr -p 600 -M 255.255.255.0"),
            Some(Persistence::new(600, Ipv4Addr::new(255, 255, 255, 0)).unwrap())
        );
        assert_eq!(
            opts("-A -t 192.168.0.10:80 --persistent=60"),
            Some(Persistence::new(60, Ipv4Addr::BROADCAST).unwrap())
        );
        assert_eq!(opts("-A -t 192.168.0.10:80"), None);
        assert_eq!(
            err("-A -t 192.168.0.10:80 -p 0"),
            "invalid timeout value `0' specified"
        );
        assert_eq!(
            err("-A -t 192.168.0.10:80 -M 255.255.255.0"),
            "netmask (-M) only applies to a persistent service (-p)"
        );
        assert!(err("-A -t 192.168.0.10:80 -p 60 -M 255.0.255.0").contains("persistent mask"));
        assert!(err("-A -t 192.168.0.10:80 -p 100000").contains("out of range"));
        // IPv6: -M is a prefix length, as in ipvsadm.
        let v6 = |bits: u32| Persistence::new(300, Persistence::mask_v6(bits).unwrap()).unwrap();
        assert_eq!(opts("-A -t [2001:db8::10]:80 -p 300 -M 64"), Some(v6(64)));
        assert_eq!(opts("-A -t [2001:db8::10]:80 -p 300"), Some(v6(128)));
        for bad in ["0", "129", "255.255.255.0", "x"] {
            assert_eq!(
                err(&format!("-A -t [2001:db8::10]:80 -p 300 -M {bad}")),
                "illegal ipv6 netmask specified"
            );
        }
    }
}
