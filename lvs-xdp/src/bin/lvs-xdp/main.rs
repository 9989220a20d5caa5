//! The `lvs-xdp` command: a thin layer of flags over the library.
mod daemon;
mod drain;
mod ipvsadm;

use std::{path::PathBuf, process::ExitCode, time::Duration};

use anyhow::{Context as _, Result};
use clap::{ArgMatches, Args, CommandFactory as _, FromArgMatches as _, Parser, Subcommand};
use lvs_xdp::{Config, director::StartOptions, logger};
use lvs_xdp_common::flow_table;

/// XDP direct-routing (LVS-DR) load balancer.
#[derive(Parser)]
#[command(
    name = "lvs-xdp",
    version,
    after_help = "A running director is driven with ipvsadm's words: lvs-xdp -A -t VIP:PORT -s rr, \
lvs-xdp -a -t VIP:PORT -r RIP -g, lvs-xdp -L -n, lvs-xdp -S, lvs-xdp -R (lvs-xdp -h lists them)."
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Load, attach, fill the maps, print stats; detach on SIGINT/SIGTERM.
    Run {
        /// Interface to attach to (repeatable); real servers are resolved on the first.
        #[arg(long = "iface", value_name = "IFACE", required = true)]
        ifaces: Vec<String>,
        /// Attach mode.
        #[arg(long, default_value = "auto", value_parser = ["auto", "native", "generic"])]
        mode: String,
        /// Seconds between stats tables (0: only at exit).
        #[arg(long, default_value_t = 5, value_name = "SECS")]
        interval: u64,
        /// Seconds to wait for ARP to resolve the real servers.
        #[arg(long, default_value_t = 3.0, value_name = "SECS")]
        resolve_timeout: f64,
        /// On stop, leave the program attached and its maps pinned for the next `run` on these
        /// interfaces to take over: a restart that loses no connection.
        #[arg(long)]
        keep: bool,
        /// Serve Prometheus metrics at http://ADDR/metrics (HOST:PORT, or a port alone for
        /// localhost).
        #[arg(long, value_name = "ADDR")]
        metrics: Option<String>,
        /// Route health injection: keep a blackhole host route per VIP that can serve in
        /// routing table N, for a routing daemon to announce (BIRD: `protocol kernel` with
        /// `kernel table N; learn;`).
        #[arg(long, value_name = "N")]
        announce_table: Option<u32>,
        /// Messages shown on standard error: error, warn, info (default) or debug (adds the
        /// data plane's own log events), trace. Overrides LVS_XDP_LOG.
        #[arg(long, value_name = "LEVEL", value_parser = ["error", "warn", "info", "debug", "trace"])]
        log_level: Option<String>,
        #[command(flatten)]
        services: ServiceArgs,
    },
    /// Validate the configuration and print it as ipvsadm's rules (-S -n); touches no kernel
    /// state.
    Check {
        #[command(flatten)]
        services: ServiceArgs,
    },
    /// Write a configuration (a keepalived.conf's virtual servers, ipvsadm rules, or TOML) as
    /// lvs-xdp's TOML on stdout; what a keepalived.conf holds besides goes to stderr, line by
    /// line. Touches no kernel state.
    Convert {
        /// The file to convert.
        #[arg(value_name = "FILE")]
        file: PathBuf,
    },
    /// Take a real server out of a running director without breaking a connection: weight 0,
    /// wait until it has no active connection (or --timeout passes), then remove it.
    Drain {
        /// The TCP service, as ipvsadm -t writes it.
        #[arg(
            short = 't',
            long = "tcp-service",
            value_name = "VIP:PORT",
            conflicts_with = "udp"
        )]
        tcp: Option<String>,
        /// The UDP service, as ipvsadm -u writes it.
        #[arg(short = 'u', long = "udp-service", value_name = "VIP:PORT")]
        udp: Option<String>,
        /// The real server.
        #[arg(short = 'r', long = "real-server", value_name = "RIP")]
        real: String,
        /// Seconds to wait at most for its active connections to end (default: no limit).
        #[arg(long, value_name = "SECS")]
        timeout: Option<f64>,
        /// The `lvs-xdp run` instance serving IFACE (when several run).
        #[arg(long, value_name = "IFACE")]
        iface: Option<String>,
    },
    /// The real-server half of the LVS-DR recipe (run on each real server).
    Realserver {
        #[command(subcommand)]
        action: RealserverAction,
    },
}

#[derive(Subcommand)]
enum RealserverAction {
    /// Put each VIP on lo as a /32; arp_ignore=1 and arp_announce=2 on all, lo and the
    /// interfaces given. What was there before is recorded for `down`.
    Up {
        /// A VIP this real server serves (repeatable).
        #[arg(long = "vip", value_name = "VIP", required = true)]
        vips: Vec<std::net::Ipv4Addr>,
        /// An interface that receives the VIP's traffic (repeatable).
        #[arg(long = "iface", value_name = "IFACE")]
        ifaces: Vec<String>,
    },
    /// Restore exactly the addresses and values `up` found.
    Down,
}

#[derive(Args)]
struct ServiceArgs {
    /// TOML configuration file.
    #[arg(long, value_name = "FILE")]
    config: Option<PathBuf>,
    /// Virtual service (repeatable), followed by its --real flags.
    #[arg(long = "service", value_name = "VIP:PORT[/tcp|/udp]")]
    service: Vec<String>,
    /// Real server of the preceding --service (repeatable).
    #[arg(long = "real", value_name = "RIP")]
    real: Vec<String>,
    /// Flows the flow table holds at least (connections remembered at once).
    #[arg(long, value_name = "N", allow_negative_numbers = true)]
    flow_table_size: Option<i64>,
    /// IPv6 flows the IPv6 flow table holds at least.
    #[arg(long, value_name = "N", allow_negative_numbers = true)]
    flow_table_size_v6: Option<i64>,
    /// Virtual services the maps have room for.
    #[arg(long, value_name = "N", allow_negative_numbers = true)]
    max_services: Option<i64>,
    /// Real servers (over all services) the maps have room for.
    #[arg(long, value_name = "N", allow_negative_numbers = true)]
    max_real_servers: Option<i64>,
    /// Entries of each `mh` service's Maglev table: a prime (default 65537).
    #[arg(long, value_name = "PRIME", allow_negative_numbers = true)]
    maglev_table_size: Option<i64>,
    /// When known flows of `mh` services skip the flow table: auto (above 65 536
    /// connections), always or never.
    #[arg(long, value_name = "WHEN")]
    direct_path: Option<String>,
}

fn main() -> ExitCode {
    logger::init();
    // ipvsadm's words (`lvs-xdp -A -t VIP:80 -s rr`, `lvs-xdp -L -n`, or nothing at all) drive a
    // running director; subcommands (`run`, `check`) are the daemon and the offline checks.
    let args: Vec<String> = std::env::args().skip(1).collect();
    let ipvsadm_words = match args.first().map(String::as_str) {
        None => true,
        Some("--help" | "-V" | "--version") => false,
        Some(first) => first.starts_with('-'),
    };
    if ipvsadm_words {
        return ipvsadm::main(&args);
    }
    let matches = Cli::command().get_matches();
    match dispatch(&matches) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("lvs-xdp: error: {}", format!("{e:#}").replace('\n', " "));
            ExitCode::FAILURE
        }
    }
}

fn dispatch(matches: &ArgMatches) -> Result<()> {
    let cli = Cli::from_arg_matches(matches)?;
    let (_, sub) = matches.subcommand().expect("a subcommand is required");
    match cli.command {
        Command::Run {
            ifaces,
            mode,
            interval,
            resolve_timeout,
            keep,
            metrics,
            log_level,
            announce_table,
            services,
        } => {
            if let Some(level) = log_level {
                logger::set_level(&level);
            }
            let metrics = metrics
                .as_deref()
                .map(lvs_xdp::metrics::listen_addr)
                .transpose()?;
            let config = build_config(&services, sub)?;
            if !(0.0..=600.0).contains(&resolve_timeout) {
                anyhow::bail!("--resolve-timeout {resolve_timeout} out of range (0..=600)");
            }
            let opts = StartOptions {
                interfaces: ifaces,
                mode: mode.parse()?,
                resolve_timeout: Duration::from_secs_f64(resolve_timeout),
                reconcile_kept: services.config.is_some() || !services.service.is_empty(),
            };
            let mut names = Vec::new();
            let sub = sub.clone();
            let daemon = daemon::Daemon {
                interval: Duration::from_secs(interval),
                keep,
                metrics,
                reload: Box::new(move || build_config(&services, &sub)),
                announce_table,
            };
            daemon::run(&config, &opts, &daemon, |director| {
                names = director
                    .balancer()
                    .attached()
                    .map(|i| i.name.clone())
                    .collect();
                say(format_args!(
                    "lvs-xdp: attached to {} ({} mode): {} service(s), {} real server(s), flow table {}; SIGINT/SIGTERM to stop",
                    names.join(", "),
                    opts.mode,
                    config.state.services.len(),
                    config.state.real_count(),
                    config.capacity.flow_table_size,
                ));
            })?;
            if keep {
                say(format_args!(
                    "lvs-xdp: kept on {}: the program stays attached, its maps pinned in {}",
                    names.join(", "),
                    lvs_xdp::keep::pin_dir(&names[0]).display()
                ));
            } else {
                say(format_args!("lvs-xdp: detached from {}", names.join(", ")));
            }
            Ok(())
        }
        Command::Drain {
            tcp,
            udp,
            real,
            timeout,
            iface,
        } => {
            let service = match (tcp, udp) {
                (Some(t), None) => ("-t".to_string(), t),
                (None, Some(u)) => ("-u".to_string(), u),
                _ => anyhow::bail!("drain needs one service: -t VIP:PORT or -u VIP:PORT"),
            };
            let timeout = match timeout {
                Some(t) if !(0.0..=86_400.0).contains(&t) => {
                    anyhow::bail!("--timeout {t} out of range (0..=86400 seconds)")
                }
                t => t.map(Duration::from_secs_f64),
            };
            drain::run(&drain::Drain {
                service,
                real,
                timeout,
                iface,
            })
        }
        Command::Realserver { action } => {
            match action {
                RealserverAction::Up { vips, ifaces } => {
                    let record = lvs_xdp::realserver::up(&vips, &ifaces)?;
                    say(format_args!(
                        "lvs-xdp: real server up: VIP(s) {} on lo, arp_ignore=1 and arp_announce=2 on all, lo{}; `lvs-xdp realserver down` restores {} setting(s) and removes {} address(es)",
                        vips.iter()
                            .map(|v| v.to_string())
                            .collect::<Vec<_>>()
                            .join(", "),
                        ifaces.iter().map(|i| format!(", {i}")).collect::<String>(),
                        record.sysctls.len(),
                        record.addresses.len(),
                    ));
                }
                RealserverAction::Down => {
                    let record = lvs_xdp::realserver::down()?;
                    say(format_args!(
                        "lvs-xdp: real server down: {} setting(s) restored, {} address(es) removed",
                        record.sysctls.len(),
                        record.addresses.len()
                    ));
                }
            }
            Ok(())
        }
        Command::Convert { file } => {
            let text = std::fs::read_to_string(&file)
                .with_context(|| format!("cannot read {}", file.display()))?;
            let config = if lvs_xdp::keepalived::looks_like(&text) {
                let imported = lvs_xdp::keepalived::import(&file)?;
                for note in &imported.notes {
                    eprintln!("lvs-xdp: {note}");
                }
                imported.config
            } else {
                Config::from_file(&file)?
            };
            let header = format!(
                "# lvs-xdp configuration converted from {} by `lvs-xdp convert`\n",
                file.display()
            );
            let _ = std::io::Write::write_all(
                &mut std::io::stdout().lock(),
                (header + &config.to_toml()).as_bytes(),
            );
            Ok(())
        }
        Command::Check { services } => {
            let config = build_config(&services, sub)?;
            let _ = std::io::Write::write_all(
                &mut std::io::stdout().lock(),
                describe(&config).as_bytes(),
            );
            Ok(())
        }
    }
}

/// A status line on stdout. A closed stdout (`lvs-xdp run | head -1`, say) is no reason to fail:
/// the balancer keeps running, and still detaches and exits cleanly on a signal.
fn say(line: std::fmt::Arguments) {
    use std::io::Write as _;
    let mut out = std::io::stdout().lock();
    let _ = writeln!(out, "{line}").and_then(|()| out.flush());
}

/// The config file's services, then the command line's, each `--real` going to the closest
/// `--service` before it.
fn build_config(args: &ServiceArgs, matches: &ArgMatches) -> Result<Config> {
    let mut config = match &args.config {
        Some(path) => Config::from_file(path)?,
        None => Config::default(),
    };
    let service_at: Vec<usize> = matches
        .indices_of("service")
        .into_iter()
        .flatten()
        .collect();
    let real_at: Vec<usize> = matches.indices_of("real").into_iter().flatten().collect();
    let mut groups: Vec<(String, Vec<String>)> = args
        .service
        .iter()
        .map(|s| (s.clone(), Vec::new()))
        .collect();
    for (real, at) in args.real.iter().zip(real_at) {
        let owner = service_at
            .iter()
            .rposition(|&s| s < at)
            .with_context(|| format!("--real {real} must follow the --service it belongs to"))?;
        groups[owner].1.push(real.clone());
    }
    config.add_cli_services(&groups)?;
    if let Some(size) = args.flow_table_size {
        config.set_flow_table_size(size)?;
    }
    if let Some(size) = args.flow_table_size_v6 {
        config.set_flow_table_size_v6(size)?;
    }
    if let Some(n) = args.max_services {
        config.set_max_services(n)?;
    }
    if let Some(n) = args.max_real_servers {
        config.set_max_real_servers(n)?;
    }
    if let Some(n) = args.maglev_table_size {
        config.set_maglev_table_size(n)?;
    }
    if let Some(d) = &args.direct_path {
        config.set_direct_path(d)?;
    }
    // No service is valid: an empty director, driven later with `lvs-xdp -A ...`.
    Ok(config)
}

/// `check`'s output: the services as the rules `-S -n` would save (ipvsadm's words), then the
/// tables' sizes.
fn describe(config: &Config) -> String {
    use lvs_xdp::{
        ipvsadm::{parse::Format, render},
        listing::Listing,
    };
    let macs: Vec<_> = config
        .state
        .services
        .values()
        .flat_map(|s| s.reals.iter())
        .filter_map(|(a, r)| Some((*a, r.mac?)))
        .collect();
    let numeric = Format {
        numeric: true,
        ..Format::default()
    };
    let mut out = render::save(&Listing::from_state(&config.state), &macs, numeric);
    let size = config.capacity.flow_table_size;
    let (buckets, overflow) = flow_table::sizes(size);
    out += &format!(
        "flow table: {size} flows at least ({buckets} buckets of {}, {overflow} overflow entries; {:.1} MiB of kernel memory)\n",
        flow_table::WAYS,
        flow_table::memory(size) as f64 / f64::from(1 << 20)
    );
    let size6 = config.capacity.flow_table_size_v6;
    let (buckets6, overflow6) = flow_table::sizes_v6(size6);
    out += &format!(
        "IPv6 flow table: {size6} flows at least ({buckets6} buckets of {}, {overflow6} overflow entries; {:.1} MiB of kernel memory)\n",
        flow_table::WAYS_V6,
        flow_table::memory_v6(size6) as f64 / f64::from(1 << 20)
    );
    out += &format!(
        "capacity: {} services, {} real servers\n",
        config.capacity.services, config.capacity.real_servers
    );
    out += &format!(
        "maglev: {} mh services at most, tables of {} entries ({:.1} MiB of kernel memory)\n",
        config.capacity.mh_services,
        config.capacity.maglev_table_size,
        config.capacity.maglev_bytes() as f64 / f64::from(1 << 20)
    );
    out += &format!(
        "direct path for mh services: {}\n",
        config.capacity.direct_path.name()
    );
    for (key, h) in &config.health {
        let reals = config.state.services.get(key).map(|s| s.reals.keys());
        for addr in reals.into_iter().flatten() {
            let Some(check) = h.check_of(*addr) else {
                continue;
            };
            let inhibit = if h.inhibits(*addr) {
                ", inhibit_on_failure"
            } else {
                ""
            };
            out += &format!("health: {key}: {addr}: {check}{inhibit}\n");
        }
        if let Some((addr, _)) = h.sorry_server {
            out += &format!("health: {key}: sorry server {addr}\n");
        }
    }
    out
}
