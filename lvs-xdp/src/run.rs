//! `lvs-xdp run`: bring the balancer up on interfaces, report, and take it down on a signal.
use std::{collections::HashSet, io::Write as _, net::Ipv4Addr, time::Duration};

use anyhow::{Result, bail};
use tokio::signal::unix::{SignalKind, signal};

use crate::{
    AttachMode, Balancer, Config,
    iface::Interface,
    layout::Layout,
    neigh,
    stats::{self, Snapshot},
};

#[derive(Clone, Debug)]
pub struct RunOptions {
    /// Interfaces to attach to; real servers are resolved on the first.
    pub interfaces: Vec<String>,
    pub mode: AttachMode,
    /// How long to wait for ARP to resolve the real servers' MACs.
    pub resolve_timeout: Duration,
    /// Time between two stats tables; zero prints none until exit.
    pub interval: Duration,
}

/// Checks the interfaces, resolves every real server's MAC, loads and fills the maps, and
/// attaches. Any failure leaves nothing attached.
pub fn start(config: &Config, opts: &RunOptions) -> Result<Balancer> {
    if opts.interfaces.is_empty() {
        bail!("no interface given (--iface)");
    }
    let mut seen = HashSet::new();
    let mut interfaces = Vec::new();
    for name in &opts.interfaces {
        if !seen.insert(name) {
            bail!("interface {name} given twice");
        }
        interfaces.push(Interface::lookup(name)?);
    }
    let primary = &interfaces[0];
    let mut need: Vec<Ipv4Addr> = Vec::new();
    for svc in &config.services {
        for real in &svc.real_servers {
            if real.mac.is_none() && !need.contains(&real.address) {
                need.push(real.address);
            }
        }
    }
    let macs = neigh::resolve(primary.index, &primary.name, &need, opts.resolve_timeout)?;
    let layout = Layout::build(config, &macs)?;
    let mut balancer = Balancer::load(config, layout, &interfaces)?;
    balancer.attach(opts.mode)?;
    for iface in &interfaces {
        if opts.mode != AttachMode::Generic
            && crate::iface::driver(&iface.name).as_deref() == Some("veth")
        {
            log::warn!(
                "{} is a veth: in native mode, frames sent back with XDP_TX reach its peer only if the peer runs an XDP program too (or use --mode generic)",
                iface.name
            );
        }
    }
    // Parsing a large configuration leaves tens of MiB freed but kept by the allocator: give
    // them back, the process runs for a long time.
    // SAFETY: malloc_trim only releases free memory.
    unsafe { libc::malloc_trim(0) };
    Ok(balancer)
}

/// The whole of `lvs-xdp run`: handle SIGINT/SIGTERM from the start (a signal that arrives
/// while loading or attaching still ends in a clean detach and exit 0), [`start`], call
/// `on_attached`, print the stats table every `opts.interval` until a signal, then detach and
/// print the final table.
pub fn run(config: &Config, opts: &RunOptions, on_attached: impl FnOnce(&Balancer)) -> Result<()> {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    runtime.block_on(async {
        let mut sigint = signal(SignalKind::interrupt())?;
        let mut sigterm = signal(SignalKind::terminate())?;
        let mut balancer = start(config, opts)?;
        on_attached(&balancer);
        let interval = opts.interval;
        let mut tick = tokio::time::interval(Duration::from_millis(250));
        let mut prev: Option<Snapshot> = None;
        let mut last_print = tokio::time::Instant::now();
        loop {
            tokio::select! {
                _ = sigint.recv() => break,
                _ = sigterm.recv() => break,
                _ = tick.tick() => {
                    balancer.flush_log();
                    if !interval.is_zero() && last_print.elapsed() >= interval {
                        last_print = tokio::time::Instant::now();
                        let now = balancer.snapshot()?;
                        print_table(&balancer, &now, prev.as_ref());
                        prev = Some(now);
                    }
                }
            }
        }
        let last = balancer.snapshot()?;
        balancer.detach()?;
        balancer.flush_log();
        print_table(&balancer, &last, prev.as_ref());
        Ok(())
    })
}

fn print_table(balancer: &Balancer, now: &Snapshot, prev: Option<&Snapshot>) {
    let table = stats::render(balancer.config(), balancer.layout(), now, prev);
    let mut out = std::io::stdout().lock();
    let _ = writeln!(out, "{table}");
    let _ = out.flush();
}
