//! `cargo xtask bench`: lvs-xdp against a bare XDP_TX bounce (the ceiling) and an nftables
//! netdev forwarder, over a veth pair, at 1 000, 10 000 and 1 000 000 flows; medians of
//! interleaved runs; a Markdown table and an SVG chart. Needs root.
//!
//! Options: --quick (short runs), --runs N, --secs S, --flows A,B,C, --udp, --ipv6,
//! --chunk N (frames in the first BPF_PROG_TEST_RUN call; later calls adapt to about half a
//! second), --fixed-chunk (every call exactly --chunk frames), --no-cost, --no-control,
//! --no-new-conns (skip the SYN-flood new-connections runs), --out DIR (writes bench.md and
//! bench.svg there).
#[path = "control.rs"]
mod control;
#[path = "harness.rs"]
mod harness;
// Shared with the tests; each uses part of it.
#[allow(dead_code)]
mod programs;

use std::{
    path::PathBuf,
    time::{Duration, Instant},
};

use anyhow::{Context as _, Result, bail};
use harness::{Bench, Options};
use lvs_xdp_common::{FAMILY_V6, PROTO_UDP};

fn main() {
    if let Err(e) = real_main() {
        eprintln!("bench: error: {e:#}");
        std::process::exit(1);
    }
}

fn real_main() -> Result<()> {
    lvs_xdp_tests::signals::trap();
    let mut opts = Options::full();
    let mut out: Option<PathBuf> = None;
    let mut control_plane = true;
    let mut new_conns = true;
    let mut args = std::env::args().skip(1);
    while let Some(a) = args.next() {
        match a.as_str() {
            "--bench" => {}
            "--quick" => {
                opts.runs = 1;
                opts.duration = Duration::from_millis(500);
                opts.warmup = Duration::from_millis(200);
            }
            "--runs" => opts.runs = args.next().context("--runs N")?.parse()?,
            "--secs" => {
                opts.duration = Duration::from_secs_f64(args.next().context("--secs S")?.parse()?)
            }
            "--flows" => {
                opts.flows = args
                    .next()
                    .context("--flows A,B")?
                    .split(',')
                    .map(|f| f.trim().replace('_', "").parse().context("flow count"))
                    .collect::<Result<_>>()?
            }
            "--chunk" => opts.chunk = args.next().context("--chunk N")?.parse()?,
            "--fixed-chunk" => opts.fixed_chunk = true,
            "--udp" => opts.proto = PROTO_UDP,
            "--ipv6" => opts.family = FAMILY_V6,
            "--no-cost" => opts.cost_pass = false,
            "--no-control" => control_plane = false,
            "--no-new-conns" => new_conns = false,
            "--out" => out = Some(PathBuf::from(args.next().context("--out DIR")?)),
            other => bail!("unknown option {other}"),
        }
    }
    let machine = harness::machine();
    let t0 = Instant::now();
    println!("lvs-xdp veth benchmark on {machine}");
    println!(
        "{} {}, frames of {} bytes, flows {:?}, {} interleaved run(s) of {:.1}s each (after {:.1}s warm-up)",
        if opts.family == FAMILY_V6 {
            "IPv6"
        } else {
            "IPv4"
        },
        if opts.proto == PROTO_UDP {
            "UDP"
        } else {
            "TCP"
        },
        programs::FRAME_LEN,
        opts.flows,
        opts.runs,
        opts.duration.as_secs_f64(),
        opts.warmup.as_secs_f64()
    );
    let mut bench = Bench::new(opts.clone())?;
    let samples = harness::run(&mut bench, &opts, |s| {
        println!(
            "  {:>8} flows  {:<14} {:>6.2} Mpps  (sent {:.2} Mpps, to RS1/RS2 {}/{}{})",
            s.flows,
            s.variant.name(),
            s.mpps(),
            s.sent as f64 / s.secs / 1e6,
            s.per_real[0],
            s.per_real[1],
            if s.variant.scheduler().is_some() {
                format!(
                    ", flow-table misses {:.2}%",
                    100.0 * s.misses as f64 / s.received.max(1) as f64
                )
            } else {
                String::new()
            }
        );
    })?;
    let mut costs = Vec::new();
    if opts.cost_pass {
        println!("BPF run statistics pass (kernel.bpf_stats_enabled):");
        for &flows in &opts.flows {
            let c = bench.cost(flows)?;
            println!(
                "  {flows:>8} flows  bounce {:.1} ns/packet, minimal LB {:.1}, lvs-xdp rr {:.1}, mh {:.1}, generator {:.1}",
                c[0],
                c[1],
                c[2],
                c[3],
                bench.generator_cost()?
            );
            costs.push((flows, c));
        }
    }
    // The known-flow runs' verdicts (the new-connection runs below reload lvs-xdp).
    let snap = bench.balancer().snapshot()?;
    let mut new_conn_table = String::new();
    if new_conns && opts.runs > 0 {
        // More distinct flows than a run can send: every packet opens a connection.
        let flows = 4_000_000;
        println!(
            "New connections (a SYN flood of {flows} distinct flows, flow table {}):",
            opts.flow_table_size
        );
        new_conn_table.push_str(&format!(
            "\nNew connections per second: a SYN flood of {flows} distinct flows (every packet a new connection to schedule and remember; flow table {}), median of {} run(s):\n\n| scheduler | forwarded | scheduled |\n|---|---:|---:|\n",
            opts.flow_table_size, opts.runs
        ));
        for scheduler in [
            lvs_xdp::model::Scheduler::RoundRobin,
            lvs_xdp::model::Scheduler::WeightedLeastConnection,
            lvs_xdp::model::Scheduler::Maglev,
        ] {
            let mut fwd = Vec::new();
            let mut sched = Vec::new();
            for _ in 0..opts.runs {
                let (f, s) = bench.new_connections(scheduler, flows)?;
                fwd.push(f);
                sched.push(s);
            }
            let (f, s) = (harness::median(fwd), harness::median(sched));
            println!(
                "  {:<4} {:.2} M/s forwarded, {:.2} M/s scheduled",
                scheduler.name(),
                f / 1e6,
                s / 1e6
            );
            new_conn_table.push_str(&format!(
                "| `{}` | {:.2} M/s | {:.2} M/s |\n",
                scheduler.name(),
                f / 1e6,
                s / 1e6
            ));
        }
    }
    if new_conns && opts.runs > 0 && opts.family != FAMILY_V6 && opts.proto != PROTO_UDP {
        // Known flows while a SYN flood outruns the flow table, from the other CPU.
        let known = 10_000;
        println!(
            "Known flows under a SYN flood ({known} established flows on CPU 0, a flood of distinct flows on CPU 1):"
        );
        new_conn_table.push_str(&format!(
            "\n{known} established flows from one CPU, alone and while the other CPU sends a SYN flood of 4 000 000 distinct flows (more than the flow table's {}), median of {} run(s):\n\n| scheduler | known flows alone | under the flood | share kept | flood forwarded | flood new connections | known flows scheduled again |\n|---|---:|---:|---:|---:|---:|---:|\n",
            opts.flow_table_size, opts.runs
        ));
        for scheduler in [
            lvs_xdp::model::Scheduler::RoundRobin,
            lvs_xdp::model::Scheduler::Maglev,
        ] {
            let mut runs = Vec::new();
            for _ in 0..opts.runs {
                runs.push(bench.under_flood(scheduler, known)?);
            }
            let alone: Vec<f64> = runs.iter().map(|r| r.alone).collect();
            let under: Vec<f64> = runs.iter().map(|r| r.under).collect();
            let kept = harness::Spread::of_ratios(&under, &alone).show(100.0, "%");
            let fsent = harness::median(runs.iter().map(|r| r.flood_sent).collect());
            let fconns = harness::median(runs.iter().map(|r| r.flood_conns).collect());
            let resched = runs.iter().map(|r| r.rescheduled).max().unwrap_or(0);
            let (a, u) = (harness::median(alone), harness::median(under));
            println!(
                "  {:<4} known {a:.2} Mpps alone, {u:.2} Mpps under the flood ({kept}); flood {:.2} Mpps forwarded, {:.2} M new connections/s; {resched} known flows scheduled again",
                scheduler.name(),
                fsent / 1e6,
                fconns / 1e6
            );
            new_conn_table.push_str(&format!(
                "| `{}` | {a:.2} Mpps | {u:.2} Mpps | {kept} | {:.2} Mpps | {:.2} M/s | {resched} |\n",
                scheduler.name(),
                fsent / 1e6,
                fconns / 1e6
            ));
        }
    }
    if opts.runs > 0 && opts.family != FAMILY_V6 {
        // IPv6 known flows beside IPv4's, interleaved on the same run.
        println!("IPv6 known flows, beside IPv4's (lvs-xdp, interleaved):");
        new_conn_table.push_str(&format!(
            "\nIPv6 known flows beside IPv4's, lvs-xdp, interleaved, median of {} run(s):\n\n| flows | IPv4 | IPv6 | IPv6 / IPv4 |\n|---:|---:|---:|---:|\n",
            opts.runs
        ));
        for flows in [1_000, 10_000] {
            let (mut v4, mut v6) = (Vec::new(), Vec::new());
            for _ in 0..opts.runs {
                bench.set_family(lvs_xdp_common::FAMILY_V4);
                v4.push(bench.measure(harness::Variant::LvsXdp, flows)?.mpps());
                bench.set_family(FAMILY_V6);
                v6.push(bench.measure(harness::Variant::LvsXdp, flows)?.mpps());
            }
            bench.set_family(lvs_xdp_common::FAMILY_V4);
            let ratio = harness::Spread::of_ratios(&v6, &v4).show(100.0, "%");
            let (a, b) = (harness::median(v4), harness::median(v6));
            println!("  {flows:>8} flows  IPv4 {a:.2} Mpps, IPv6 {b:.2} Mpps ({ratio})");
            new_conn_table.push_str(&format!(
                "| {flows} | {a:.2} Mpps | {b:.2} Mpps | {ratio} |\n"
            ));
        }
    }
    if new_conns && opts.runs > 0 && opts.family != FAMILY_V6 && opts.proto != PROTO_UDP {
        // Weights 1:2:3 over 60 000 new connections.
        let flows = 60_000;
        println!("Distribution, weights 1:2:3 over three real servers, {flows} new connections:");
        new_conn_table.push_str(&format!(
            "\nDistribution of {flows} new connections over three real servers of weights 1:2:3 (ideal 16.67%, 33.33%, 50.00%):\n\n| scheduler | weight 1 | weight 2 | weight 3 |\n|---|---:|---:|---:|\n"
        ));
        for scheduler in [
            lvs_xdp::model::Scheduler::WeightedRoundRobin,
            lvs_xdp::model::Scheduler::Maglev,
        ] {
            let got = bench.distribution(scheduler, [1, 2, 3], flows)?;
            let total: u64 = got.iter().sum();
            let pct = got.map(|n| 100.0 * n as f64 / total.max(1) as f64);
            println!(
                "  {:<4} {:.2}% {:.2}% {:.2}% ({total} connections)",
                scheduler.name(),
                pct[0],
                pct[1],
                pct[2]
            );
            new_conn_table.push_str(&format!(
                "| `{}` | {:.2}% | {:.2}% | {:.2}% |\n",
                scheduler.name(),
                pct[0],
                pct[1],
                pct[2]
            ));
        }
    }
    let rows = if opts.runs == 0 {
        Vec::new()
    } else {
        harness::rows(&samples, &opts.flows)
    };
    let table = harness::table(&rows, &costs) + &new_conn_table;
    println!("\nMedians on {machine}:\n\n{table}");
    println!(
        "lvs-xdp verdicts over the whole run: {}",
        lvs_xdp_common::reason::NAMES
            .iter()
            .zip(&snap.global)
            .filter(|(_, c)| c.packets > 0)
            .map(|(n, c)| format!("{n}={}", c.packets))
            .collect::<Vec<_>>()
            .join(" ")
    );
    drop(bench);
    let control_table = if control_plane {
        let t = control::run()?;
        println!("\n{t}");
        t
    } else {
        String::new()
    };
    println!("took {}", harness::elapsed_since(t0));
    if let Some(dir) = out {
        std::fs::create_dir_all(&dir)?;
        let title = format!(
            "lvs-xdp over veth, {} ({})",
            if opts.proto == PROTO_UDP {
                "UDP"
            } else {
                "TCP"
            },
            machine
        );
        std::fs::write(dir.join("bench.svg"), harness::svg(&rows, &title))?;
        std::fs::write(
            dir.join("bench.md"),
            format!("Measured on {machine}.\n\n{table}\n{control_table}"),
        )?;
        println!(
            "wrote {} and {}",
            dir.join("bench.md").display(),
            dir.join("bench.svg").display()
        );
    }
    Ok(())
}
