//! `lvs-xdp run`: bring the director up on interfaces, answer the control commands, report, and
//! take it down on a signal.
use std::{collections::VecDeque, io::Write as _, net::SocketAddr, time::Duration};

use anyhow::{Context as _, Result};
use lvs_xdp::{
    Config, Director,
    announce::Announcer,
    control::{self, Listeners, NOT_ROOT, RATE_INTERVAL, Reply, Request},
    director::StartOptions,
    health::runner::Runner,
    listing::{self, Snapshot},
    metrics::Scrape,
    netlink::{self, GROUP_NEIGH, Rtnl},
};
use netlink_packet_route::RouteNetlinkMessage;
use tokio::{
    io::{AsyncBufReadExt as _, AsyncWriteExt as _, BufReader},
    net::UnixStream,
    signal::unix::{SignalKind, signal},
    sync::mpsc,
};

/// What `run` does besides serving: its stats table, `--keep`, `--metrics`, and how SIGHUP
/// reads the configuration again.
pub struct Daemon {
    /// Between stats tables (0: only at exit).
    pub interval: Duration,
    pub keep: bool,
    /// Where to serve Prometheus metrics.
    pub metrics: Option<SocketAddr>,
    /// Reads the configuration again (the file and the command line's services).
    pub reload: Box<dyn Fn() -> Result<Config>>,
    /// The routing table where each VIP that can serve gets a host route (route health
    /// injection).
    pub announce_table: Option<u32>,
}

/// The whole of `lvs-xdp run`: handle SIGINT/SIGTERM from the start (a signal that arrives
/// while loading or attaching still ends in a clean detach and exit 0), open the control
/// sockets (and the metrics port), start the director, call `on_attached`, then serve control
/// commands, health checks, scrapes and SIGHUP, and print the stats table every `interval`
/// until a signal; then detach and print the final table.
pub fn run(
    config: &Config,
    opts: &StartOptions,
    daemon: &Daemon,
    on_attached: impl FnOnce(&Director),
) -> Result<()> {
    let (interval, keep) = (daemon.interval, daemon.keep);
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    runtime.block_on(async {
        let mut sigint = signal(SignalKind::interrupt())?;
        let mut sigterm = signal(SignalKind::terminate())?;
        let mut sighup = signal(SignalKind::hangup())?;
        opts.lookup_interfaces()?;
        let listeners = Listeners::bind(&opts.interfaces)?;
        // Bound before anything is loaded: a port in use changes nothing on the host.
        let (scrape_tx, mut scrapes) = mpsc::channel::<Scrape>(16);
        if let Some(addr) = daemon.metrics {
            let listener = tokio::net::TcpListener::bind(addr)
                .await
                .with_context(|| format!("--metrics {addr}: cannot listen"))?;
            log::info!("metrics on http://{addr}/metrics");
            tokio::spawn(lvs_xdp::metrics::serve(listener, scrape_tx));
        }
        let (tx, mut requests) = mpsc::channel::<UnixStream>(16);
        for (_, listener) in &listeners.sockets {
            listener.set_nonblocking(true)?;
            let listener = tokio::net::UnixListener::from_std(listener.try_clone()?)?;
            let tx = tx.clone();
            tokio::spawn(async move {
                while let Ok((stream, _)) = listener.accept().await {
                    if tx.send(stream).await.is_err() {
                        break;
                    }
                }
            });
        }
        let mut announcer = daemon.announce_table.map(Announcer::new).transpose()?;
        let mut director = Director::start(config, opts)?;
        // Real servers' MACs follow the neighbour table (an address moved to a standby host).
        let socket = Rtnl::subscribe(&[GROUP_NEIGH])?;
        // SAFETY: the netlink socket owns its descriptor, which stays open and the same for as
        // long as the AsyncFd that owns the socket lives.
        let neighbours = unsafe { tokio::io::unix::AsyncFd::register(socket) }
            .map_err(|e| anyhow::anyhow!("cannot watch the neighbour table: {e}"))?;
        // Parsing a large configuration leaves tens of MiB freed but kept by the allocator:
        // give them back, the process runs for a long time.
        // SAFETY: malloc_trim only releases free memory.
        unsafe { libc::malloc_trim(0) };
        let (mut checks, mut outcomes) = Runner::new();
        follow_services(&director, &mut checks, announcer.as_mut());
        on_attached(&director);
        let mut tick = tokio::time::interval(Duration::from_millis(250));
        let mut prev: Option<Snapshot> = None;
        let mut last_print = tokio::time::Instant::now();
        // The last two rate samples (oldest first). Sampling reads every counter, so it runs
        // only while listings are asked for (and RATES_KEPT after the last one).
        let mut samples: VecDeque<Snapshot> = VecDeque::new();
        let mut last_sample = tokio::time::Instant::now() - RATE_INTERVAL;
        let mut rates_until = tokio::time::Instant::now();
        loop {
            tokio::select! {
                _ = sigint.recv() => break,
                _ = sigterm.recv() => break,
                ready = neighbours.readable() => {
                    let mut guard = ready?;
                    let events = netlink::drain_events(guard.get_inner())?;
                    guard.clear_ready();
                    follow(&mut director, &events);
                }
                Some(stream) = requests.recv() => {
                    rates_until = tokio::time::Instant::now() + RATES_KEPT;
                    // Rates from the last two samples, when the newer one is recent.
                    let fresh = last_sample.elapsed() < RATE_INTERVAL * 2;
                    let rates =
                        (fresh && samples.len() == 2).then(|| (&samples[0], &samples[1]));
                    if let Err(e) = serve(&mut director, stream, rates).await {
                        log::warn!("control connection: {e:#}");
                    }
                    // Real servers added or removed live are checked, or no longer.
                    follow_services(&director, &mut checks, announcer.as_mut());
                }
                Some((key, addr, outcome)) = outcomes.recv() => {
                    if health_result(&mut director, key, addr, outcome) {
                        announce(announcer.as_mut(), &director);
                    }
                }
                Some(reply) = scrapes.recv() => {
                    let text = director
                        .snapshot()
                        .and_then(|now| lvs_xdp::metrics::render(&now));
                    match text {
                        Ok(text) => {
                            let _ = reply.send(text);
                        }
                        Err(e) => log::warn!("metrics: {e:#}"),
                    }
                }
                _ = sighup.recv() => {
                    reload(&mut director, daemon);
                    follow_services(&director, &mut checks, announcer.as_mut());
                }
                _ = tick.tick() => {
                    director.balancer_mut().flush_log();
                    if let Err(e) = director.maintain() {
                        log::warn!("flow table sweep: {e:#}");
                    }
                    let wanted = tokio::time::Instant::now() < rates_until;
                    if wanted && last_sample.elapsed() >= RATE_INTERVAL {
                        last_sample = tokio::time::Instant::now();
                        samples.push_back(director.snapshot()?);
                        if samples.len() > 2 {
                            samples.pop_front();
                        }
                    }
                    if !interval.is_zero() && last_print.elapsed() >= interval {
                        last_print = tokio::time::Instant::now();
                        director.refresh_connections()?;
                        let now = director.snapshot()?;
                        print_table(&now, prev.as_ref());
                        prev = Some(now);
                    }
                }
            }
        }
        director.refresh_connections()?;
        let last = director.snapshot()?;
        if keep {
            // The kept program goes on serving: its VIPs stay announced.
            lvs_xdp::keep::keep(&mut director, &opts.interfaces)?;
        } else {
            if let Some(a) = announcer.as_mut() {
                match a.withdraw_all() {
                    Ok(vips) if !vips.is_empty() => log::info!("withdrew {}", list(&vips)),
                    Ok(_) => {}
                    Err(e) => log::warn!("{e:#}"),
                }
            }
            director.balancer_mut().detach()?;
        }
        director.balancer_mut().flush_log();
        drop(listeners);
        print_table(&last, prev.as_ref());
        Ok(())
    })
}

/// SIGHUP: reads the configuration again and applies the difference, all or nothing; a
/// configuration that is invalid, or that cannot be applied, leaves everything as it was.
fn reload(director: &mut Director, daemon: &Daemon) {
    let config = match (daemon.reload)() {
        Ok(c) => c,
        Err(e) => {
            log::error!("reload refused, nothing changed: {e:#}");
            return;
        }
    };
    match director.reload(&config) {
        Ok(()) => log::info!(
            "reloaded: {} service(s), {} real server(s)",
            config.state.services.len(),
            config.state.real_count()
        ),
        Err(e) => log::error!("reload refused, nothing changed: {e:#}"),
    }
}

/// Applies one check's result, and logs a change of state; true when the state changed.
fn health_result(
    director: &mut Director,
    key: lvs_xdp::model::ServiceKey,
    addr: std::net::IpAddr,
    outcome: Result<(), String>,
) -> bool {
    match (
        director.health_result(&key, addr, outcome.is_ok()),
        &outcome,
    ) {
        (Ok(Some(true)), _) => {
            log::info!("{key}: real server {addr} is up: its check passes");
            true
        }
        (Ok(Some(false)), Err(why)) => {
            log::warn!("{key}: real server {addr} is down, it gets no new connection: {why}");
            true
        }
        (Ok(_), Err(why)) => {
            log::debug!("{key}: check of {addr} failed: {why}");
            false
        }
        (Ok(_), Ok(())) => false,
        (Err(e), _) => {
            log::warn!("{key}: real server {addr}: its new health state not applied: {e:#}");
            false
        }
    }
}

/// After the services changed (start, a control command, a reload): the checks run are those
/// the director wants, and the announce table follows.
fn follow_services(director: &Director, checks: &mut Runner, announcer: Option<&mut Announcer>) {
    checks.sync(director.health().checks());
    announce(announcer, director);
}

/// Route health injection: the announce table follows the VIPs that can serve.
fn announce(announcer: Option<&mut Announcer>, director: &Director) {
    let Some(a) = announcer else {
        return;
    };
    match a.sync(&director.serving_vips()) {
        Ok((added, removed)) => {
            if !added.is_empty() {
                log::info!("announcing {}", list(&added));
            }
            if !removed.is_empty() {
                log::warn!(
                    "withdrew {}: no real server of its services can take a connection",
                    list(&removed)
                );
            }
        }
        Err(e) => log::warn!("route health injection: {e:#}"),
    }
}

fn list(vips: &[std::net::IpAddr]) -> String {
    let words: Vec<String> = vips.iter().map(|v| format!("VIP {v}")).collect();
    words.join(", ")
}

/// How long rate sampling goes on after the last control request.
const RATES_KEPT: Duration = Duration::from_secs(600);

/// Applies neighbour-table events to the real servers' MACs.
fn follow(director: &mut Director, events: &[RouteNetlinkMessage]) {
    let Some(ifindex) = director.resolver().map(|r| r.ifindex) else {
        return;
    };
    let mut vlans: Option<Vec<netlink::VlanIface>> = None;
    for event in events {
        let RouteNetlinkMessage::NewNeighbour(m) = event else {
            continue;
        };
        let Some(n) = netlink::Neighbour::from_message(m) else {
            continue;
        };
        let (addr, Some(mac)) = (n.address, n.usable_mac()) else {
            continue;
        };
        // The interface's own segment, or one of its VLANs (real servers resolved there).
        if n.ifindex != ifindex {
            let vlans = vlans.get_or_insert_with(|| {
                Rtnl::open()
                    .and_then(|mut nl| nl.vlans_on(ifindex))
                    .unwrap_or_default()
            });
            if !vlans.iter().any(|v| v.ifindex == n.ifindex) {
                continue;
            }
        }
        match director.follow_neighbour(addr, mac) {
            Ok(0) => {}
            Ok(n) => log::info!("real server {addr} is now at {mac} ({n} service(s))"),
            Err(e) => log::warn!("real server {addr} moved to {mac}, but: {e:#}"),
        }
    }
}

/// Answers one control connection: one request line, one reply line. Only root may drive the
/// director; a client that says nothing for 5 s is dropped.
async fn serve(
    director: &mut Director,
    mut stream: UnixStream,
    rates: Option<(&Snapshot, &Snapshot)>,
) -> Result<()> {
    let reply = if control::peer_uid(&stream)? != 0 {
        Reply::Failed(NOT_ROOT.into())
    } else {
        let mut line = String::new();
        let (read, _) = stream.split();
        let mut reader = BufReader::new(read);
        tokio::time::timeout(Duration::from_secs(5), reader.read_line(&mut line))
            .await
            .context("no request within 5 s")??;
        match serde_json::from_str::<Request>(&line) {
            Ok(request) => control::answer(director, request, rates),
            Err(e) => Reply::Failed(format!("malformed request: {e}")),
        }
    };
    let mut out = serde_json::to_string(&reply)?;
    out.push('\n');
    stream.write_all(out.as_bytes()).await?;
    Ok(())
}

fn print_table(now: &Snapshot, prev: Option<&Snapshot>) {
    let table = listing::render_table(now, prev);
    let mut out = std::io::stdout().lock();
    let _ = writeln!(out, "{table}");
    let _ = out.flush();
}
