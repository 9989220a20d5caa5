//! `lvs-xdp run`: bring the director up on interfaces, report, and take it down on a signal.
use std::{io::Write as _, time::Duration};

use anyhow::Result;
use lvs_xdp::{
    Config, Director,
    director::StartOptions,
    listing::{self, Snapshot},
};
use tokio::signal::unix::{SignalKind, signal};

/// The whole of `lvs-xdp run`: handle SIGINT/SIGTERM from the start (a signal that arrives
/// while loading or attaching still ends in a clean detach and exit 0), start the director, call
/// `on_attached`, print the stats table every `interval` until a signal, then detach and print
/// the final table.
pub fn run(
    config: &Config,
    opts: &StartOptions,
    interval: Duration,
    on_attached: impl FnOnce(&Director),
) -> Result<()> {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    runtime.block_on(async {
        let mut sigint = signal(SignalKind::interrupt())?;
        let mut sigterm = signal(SignalKind::terminate())?;
        let mut director = Director::start(config, opts)?;
        // Parsing a large configuration leaves tens of MiB freed but kept by the allocator:
        // give them back, the process runs for a long time.
        // SAFETY: malloc_trim only releases free memory.
        unsafe { libc::malloc_trim(0) };
        on_attached(&director);
        let mut tick = tokio::time::interval(Duration::from_millis(250));
        let mut prev: Option<Snapshot> = None;
        let mut last_print = tokio::time::Instant::now();
        loop {
            tokio::select! {
                _ = sigint.recv() => break,
                _ = sigterm.recv() => break,
                _ = tick.tick() => {
                    director.balancer_mut().flush_log();
                    if !interval.is_zero() && last_print.elapsed() >= interval {
                        last_print = tokio::time::Instant::now();
                        let now = director.snapshot()?;
                        print_table(&now, prev.as_ref());
                        prev = Some(now);
                    }
                }
            }
        }
        let last = director.snapshot()?;
        director.balancer_mut().detach()?;
        director.balancer_mut().flush_log();
        print_table(&last, prev.as_ref());
        Ok(())
    })
}

fn print_table(now: &Snapshot, prev: Option<&Snapshot>) {
    let table = listing::render_table(now, prev);
    let mut out = std::io::stdout().lock();
    let _ = writeln!(out, "{table}");
    let _ = out.flush();
}
