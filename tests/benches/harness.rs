//! The veth benchmark: one veth pair between a generator namespace and a load-balancer namespace.
//!
//! ```text
//!   gen ns: g0 [sink XDP] ──veth── l0 [program under test] :lb ns
//!   generator: BPF_PROG_TEST_RUN live frames, XDP_TX out of g0
//! ```
//! The generator's frames reach l0, where the program under test (a bare XDP_TX bounce, lvs-xdp,
//! or an nftables netdev rule behind a pass program) sends them back; the sink on g0 counts
//! them per destination MAC and drops them. Generator, program and sink share one CPU.
use std::{
    fmt::Write as _,
    net::IpAddr,
    time::{Duration, Instant},
};

use anyhow::{Context as _, Result, bail};
use lvs_xdp::{AttachMode, Config, Director, iface::Interface};

use lvs_xdp::model::{Mac, Scheduler};

use crate::programs::{self, BenchPrograms};
use lvs_xdp_common::{FAMILY_V4, FAMILY_V6, PROTO_TCP, PROTO_UDP, bench as contract};
use lvs_xdp_tests::netns::{Netns, in_netns};

pub const GEN_MAC: [u8; 6] = [0x02, 0, 0, 0, 0x01, 0x0b];
pub const LB_MAC: [u8; 6] = [0x02, 0, 0, 0, 0x01, 0x0a];
pub const RS_MACS: [[u8; 6]; 2] = [[0x02, 0, 0, 0, 0x02, 0x01], [0x02, 0, 0, 0, 0x02, 0x02]];
/// A third real server, for the weighted distribution runs.
pub const RS3_MAC: [u8; 6] = [0x02, 0, 0, 0, 0x02, 0x03];
const VIP4: [u8; 4] = [10, 0, 0, 10];
const SRC4: [u8; 4] = [10, 1, 0, 1];
const VIP6: [u8; 16] = [0xfd, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0x10];
const SRC6: [u8; 16] = [0xfd, 0, 0, 0, 0, 0, 0, 1, 0, 0, 0, 0, 0, 0, 0, 1];
const PORT: u16 = 80;
/// The VIP of the flood's own service in [`Bench::under_flood`].
const FLOOD_VIP: std::net::Ipv4Addr = std::net::Ipv4Addr::new(10, 0, 0, 11);

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Variant {
    Bounce,
    MinimalLb,
    /// lvs-xdp with `rr`: every known flow through the flow table.
    LvsXdp,
    /// lvs-xdp with `mh` (`mh-port`): known flows straight from the Maglev table.
    LvsXdpMh,
    Nftables,
}

impl Variant {
    pub const ALL: [Variant; 5] = [
        Variant::Bounce,
        Variant::MinimalLb,
        Variant::LvsXdp,
        Variant::LvsXdpMh,
        Variant::Nftables,
    ];
    pub fn name(self) -> &'static str {
        match self {
            Variant::Bounce => "XDP_TX bounce",
            Variant::MinimalLb => "minimal LB",
            Variant::LvsXdp => "lvs-xdp rr",
            Variant::LvsXdpMh => "lvs-xdp mh",
            Variant::Nftables => "nftables fwd",
        }
    }

    /// lvs-xdp, and with which scheduler.
    pub fn scheduler(self) -> Option<Scheduler> {
        match self {
            Variant::LvsXdp => Some(Scheduler::RoundRobin),
            Variant::LvsXdpMh => Some(Scheduler::Maglev),
            _ => None,
        }
    }
}

#[derive(Clone, Debug)]
pub struct Options {
    pub flows: Vec<u32>,
    pub runs: usize,
    pub duration: Duration,
    pub warmup: Duration,
    /// IPv4 or IPv6 (`FAMILY_V4`/`FAMILY_V6`).
    pub family: u8,
    /// `PROTO_TCP` or `PROTO_UDP`.
    pub proto: u8,
    /// Frames in the first BPF_PROG_TEST_RUN call (later calls adapt to the measured rate).
    pub chunk: u32,
    /// Every call sends exactly `chunk` frames (no adapting): each call's fixed cost then
    /// weighs on the rate, as in a harness of short calls.
    pub fixed_chunk: bool,
    pub flow_table_size: u32,
    /// Also measure each program's own cost per packet (kernel BPF run statistics).
    pub cost_pass: bool,
}

impl Options {
    /// The full benchmark of `cargo xtask bench`.
    pub fn full() -> Options {
        Options {
            flows: vec![1_000, 10_000, 1_000_000],
            runs: 3,
            duration: Duration::from_secs(2),
            warmup: Duration::from_millis(700),
            family: FAMILY_V4,
            proto: PROTO_TCP,
            chunk: 1 << 20,
            fixed_chunk: false,
            flow_table_size: lvs_xdp::config::DEFAULT_FLOW_TABLE_SIZE,
            cost_pass: true,
        }
    }
}

/// One measurement.
#[derive(Clone, Debug)]
pub struct Sample {
    pub variant: Variant,
    pub flows: u32,
    pub sent: u64,
    /// Frames back at the sink, per real server (RS_MACS order).
    pub per_real: [u64; 2],
    /// Frames back at the sink with the destination the variant gives them (the real servers'
    /// MACs; the LB's own for the bounce). Anything else the sink sees (the kernel's own IPv6
    /// neighbour discovery, say) is left out.
    pub received: u64,
    pub secs: f64,
    /// lvs-xdp only: flows scheduled during the window (flow-table misses: a flow seen for
    /// the first time, or again after its entry was evicted).
    pub misses: u64,
}

impl Sample {
    pub fn mpps(&self) -> f64 {
        self.received as f64 / self.secs / 1e6
    }
}

/// The namespaces, the sink on g0 and the loaded programs.
pub struct Bench {
    pub gen_ns: Netns,
    pub lb_ns: Netns,
    gen_if: u32,
    lb_if: u32,
    programs: BenchPrograms,
    /// The minimal load balancer, loaded afresh (empty flow table) for each measurement.
    minimal: Option<BenchPrograms>,
    balancer: Director,
    opts: Options,
}

fn mac(m: [u8; 6]) -> String {
    Mac(m).to_string()
}

impl Bench {
    pub fn new(opts: Options) -> Result<Bench> {
        let gen_ns = Netns::new("bgen")?;
        let lb_ns = Netns::new("blb")?;
        // Two queues each way, as a NIC with RSS has: frames sent from CPU i are received
        // (and go through the program under test) on queue i, on CPU i.
        gen_ns.ip(&[
            "link",
            "add",
            "g0",
            "numtxqueues",
            "2",
            "numrxqueues",
            "2",
            "type",
            "veth",
            "peer",
            "name",
            "l0",
            "numtxqueues",
            "2",
            "numrxqueues",
            "2",
            "netns",
            &lb_ns.name,
        ])?;
        gen_ns.ip(&["link", "set", "g0", "address", &mac(GEN_MAC), "up"])?;
        lb_ns.ip(&["link", "set", "l0", "address", &mac(LB_MAC), "up"])?;
        let gen_if = lvs_xdp_tests::netns::ifindex(&gen_ns.name, "g0")?;
        let lb_if = lvs_xdp_tests::netns::ifindex(&lb_ns.name, "l0")?;
        let mut programs = BenchPrograms::load()?;
        in_netns(&gen_ns.name, || {
            programs.attach(contract::SINK, gen_if, AttachMode::Native)
        })?;

        // The same service on the IPv4 and the IPv6 VIP, with the same two real servers' MACs.
        let proto = if opts.proto == PROTO_UDP {
            "udp"
        } else {
            "tcp"
        };
        let config = Config::from_toml(&format!(
            "flow_table_size = {size}\nflow_table_size_v6 = {size}\n[[service]]\nvip = \"{}\"\nport = {PORT}\nprotocol = \"{proto}\"\nscheduler = \"rr\"\nreal_servers = [ {{ address = \"10.0.0.3\", mac = \"{}\" }}, {{ address = \"10.0.0.4\", mac = \"{}\" }} ]\n[[service]]\nvip = \"{}\"\nport = {PORT}\nprotocol = \"{proto}\"\nscheduler = \"rr\"\nreal_servers = [ {{ address = \"fd00::3\", mac = \"{}\" }}, {{ address = \"fd00::4\", mac = \"{}\" }} ]\n",
            std::net::Ipv4Addr::from(VIP4),
            mac(RS_MACS[0]),
            mac(RS_MACS[1]),
            std::net::Ipv6Addr::from(VIP6),
            mac(RS_MACS[0]),
            mac(RS_MACS[1]),
            size = opts.flow_table_size,
        ))?;
        let balancer = in_netns(&lb_ns.name, || {
            let iface = Interface::lookup("l0")?;
            Director::load(&config, &[iface], None)
        })?;
        Ok(Bench {
            gen_ns,
            lb_ns,
            gen_if,
            lb_if,
            programs,
            minimal: None,
            balancer,
            opts,
        })
    }

    fn traffic(&self, flows: u32, tcp_flags: u8) -> programs::Traffic {
        let (saddr, daddr) = if self.opts.family == FAMILY_V6 {
            (IpAddr::from(SRC6), IpAddr::from(VIP6))
        } else {
            (IpAddr::from(SRC4), IpAddr::from(VIP4))
        };
        programs::Traffic {
            dst_mac: LB_MAC,
            src_mac: GEN_MAC,
            saddr,
            daddr,
            proto: self.opts.proto,
            sport: 1024,
            dport: PORT,
            flows,
            tcp_flags,
        }
    }

    /// Puts `variant` on l0; returns what `remove` needs.
    fn install(&mut self, variant: Variant) -> Result<Option<aya::programs::xdp::XdpLinkId>> {
        let lb = self.lb_ns.name.clone();
        let lb_if = self.lb_if;
        match variant {
            Variant::Bounce => {
                let programs = &mut self.programs;
                Ok(Some(in_netns(&lb, || {
                    programs.attach(contract::BOUNCE, lb_if, AttachMode::Native)
                })?))
            }
            Variant::MinimalLb => {
                // The previous instance (kept until now) goes first, and the kernel frees its
                // table before this measurement starts.
                if self.minimal.take().is_some() {
                    settle_after_free();
                }
                let mut minimal = BenchPrograms::load()?;
                minimal.set_minimal_backends(RS_MACS)?;
                let link = in_netns(&lb, || {
                    minimal.attach(contract::MINIMAL_LB, lb_if, AttachMode::Native)
                })?;
                self.minimal = Some(minimal);
                Ok(Some(link))
            }
            Variant::LvsXdp | Variant::LvsXdpMh => {
                let balancer = &mut self.balancer;
                in_netns(&lb, || balancer.balancer_mut().attach(AttachMode::Native))?;
                Ok(None)
            }
            Variant::Nftables => {
                let programs = &mut self.programs;
                let link = in_netns(&lb, || {
                    programs.attach(contract::PASS, lb_if, AttachMode::Native)
                })?;
                let family = if self.opts.family == FAMILY_V6 {
                    "ip6 daddr fd00::10"
                } else {
                    "ip daddr 10.0.0.10"
                };
                let proto = if self.opts.proto == PROTO_UDP {
                    "udp"
                } else {
                    "tcp"
                };
                let rules = format!(
                    "table netdev lvsbench {{\n  chain ingress {{\n    type filter hook ingress device \"l0\" priority 0;\n    {family} {proto} dport {PORT} ether daddr set numgen inc mod 2 map {{ 0 : {}, 1 : {} }} fwd to \"l0\"\n  }}\n}}\n",
                    mac(RS_MACS[0]),
                    mac(RS_MACS[1])
                );
                let path =
                    std::env::temp_dir().join(format!("lvsx-bench-{}.nft", std::process::id()));
                std::fs::write(&path, rules)?;
                let res = self.lb_ns.exec("nft", &["-f", path.to_str().unwrap()]);
                let _ = std::fs::remove_file(&path);
                res.context("load the nftables rule")?;
                Ok(Some(link))
            }
        }
    }

    fn remove(
        &mut self,
        variant: Variant,
        link: Option<aya::programs::xdp::XdpLinkId>,
    ) -> Result<()> {
        match variant {
            Variant::Bounce => self
                .programs
                .detach(contract::BOUNCE, link.context("link")?),
            Variant::MinimalLb => {
                // Detached but kept: freeing its 88 MB table now would run in the kernel during
                // the next measurement.
                let minimal = self.minimal.as_mut().context("minimal LB not loaded")?;
                minimal.detach(contract::MINIMAL_LB, link.context("link")?)
            }
            Variant::LvsXdp | Variant::LvsXdpMh => self.balancer.balancer_mut().detach(),
            Variant::Nftables => {
                self.lb_ns
                    .exec("nft", &["delete", "table", "netdev", "lvsbench"])?;
                self.programs.detach(contract::PASS, link.context("link")?)
            }
        }
    }

    /// Opens and establishes every flow as clients would (a SYN, then an ACK), a slice of
    /// 16 384 flows at a time so that handshakes complete before the table fills (a million
    /// half-open flows at once would be a SYN flood, and make room among themselves); then
    /// runs the established traffic for the warm-up time (two seconds at least).
    fn warm_up(&mut self, flows: u32) -> Result<()> {
        let per = lvs_xdp_common::bench::PORTS_PER_ADDR;
        for slice in 0..flows.div_ceil(per) {
            let n = per.min(flows - slice * per);
            for flags in [programs::TCP_SYN, programs::TCP_ACK] {
                let mut traffic = self.traffic(n, flags);
                // Flow i of the slice is flow slice * per + i of the whole set.
                traffic.saddr = match traffic.saddr {
                    IpAddr::V4(a) => IpAddr::V4((u32::from(a) + slice).into()),
                    IpAddr::V6(a) => IpAddr::V6((u128::from(a) + u128::from(slice)).into()),
                };
                self.programs.configure(&traffic)?;
                let (programs, gen_if) = (&self.programs, self.gen_if);
                in_netns(&self.gen_ns.name, || {
                    pin_to_cpu(0)?;
                    programs.generate_frames(gen_if, n)
                })?;
            }
        }
        // Established traffic for at least the window after new connections in which `mh`'s
        // direct path leaves their entries to the flow table (the same for every variant).
        let window =
            Duration::from_millis(u64::from(lvs_xdp_common::maglev::SYN_WINDOW + 1) * 1_000 + 200);
        self.generate(flows, self.opts.warmup.max(window), programs::TCP_ACK)?;
        // What the daemon does every second: the idle clock moves on.
        self.balancer.maintain()?;
        Ok(())
    }

    /// Generates for `duration` from one thread pinned to CPU 0 in the generator namespace.
    fn generate(
        &mut self,
        flows: u32,
        duration: Duration,
        tcp_flags: u8,
    ) -> Result<(u64, Duration)> {
        let traffic = self.traffic(flows, tcp_flags);
        self.programs.configure(&traffic)?;
        let (programs, gen_if, chunk) = (&self.programs, self.gen_if, self.opts.chunk);
        let adapt = !self.opts.fixed_chunk;
        in_netns(&self.gen_ns.name, || {
            pin_to_cpu(0)?;
            programs.generate(gen_if, duration, chunk, adapt)
        })
    }

    /// Sends IPv4 or IPv6 from now on (`FAMILY_V4`/`FAMILY_V6`): the director serves the same
    /// service on both VIPs.
    pub fn set_family(&mut self, family: u8) {
        self.opts.family = family;
    }

    /// Replaces lvs-xdp with a freshly loaded one whose services all use `scheduler` (`mh`
    /// with `mh-port`: the generator's flows share source addresses): an empty flow table, so
    /// each measurement sees exactly its own flows, as a load balancer with that many active
    /// connections would.
    fn reload_with(&mut self, scheduler: Scheduler) -> Result<()> {
        let mut config = self.config();
        for svc in config.state.services.values_mut() {
            svc.opts.scheduler = scheduler;
            svc.opts.flags.port = scheduler == Scheduler::Maglev;
        }
        self.load(&config)
    }

    /// The running lvs-xdp's services and table sizes.
    fn config(&self) -> Config {
        Config {
            state: self.balancer.state().clone(),
            capacity: *self.balancer.balancer().capacity(),
            ..Config::default()
        }
    }

    /// Replaces lvs-xdp with a fresh one loaded with `config`.
    fn load(&mut self, config: &Config) -> Result<()> {
        let fresh = in_netns(&self.lb_ns.name, || {
            let iface = Interface::lookup("l0")?;
            Director::load(config, &[iface], None)
        })?;
        drop(std::mem::replace(&mut self.balancer, fresh));
        settle_after_free();
        Ok(())
    }

    /// How `scheduler` shares new connections over three real servers of `weights`: `flows`
    /// distinct flows, each sending SYNs for the run, in a flow table of a million, so each is
    /// scheduled once (but for the rare flow whose two buckets were full of half-open flows: it
    /// took the place of one, which is scheduled again at its next SYN). `mh` hashes the ports too (`mh-port`): the generator's flows share
    /// source addresses. Returns the connections each real server was given.
    pub fn distribution(
        &mut self,
        scheduler: Scheduler,
        weights: [u32; 3],
        flows: u32,
    ) -> Result<[u64; 3]> {
        let saved = self.config();
        let flags = if scheduler == Scheduler::Maglev {
            "scheduler_flags = [\"mh-port\"]\n"
        } else {
            ""
        };
        let reals: Vec<String> = [RS_MACS[0], RS_MACS[1], RS3_MAC]
            .iter()
            .zip(weights)
            .enumerate()
            .map(|(i, (m, w))| {
                format!(
                    "{{ address = \"10.0.0.{}\", mac = \"{}\", weight = {w} }}",
                    3 + i,
                    mac(*m)
                )
            })
            .collect();
        let config = Config::from_toml(&format!(
            "flow_table_size = {}\n[[service]]\nvip = \"{}\"\nport = {PORT}\nprotocol = \"tcp\"\nscheduler = \"{}\"\n{flags}real_servers = [ {} ]\n",
            lvs_xdp::config::DEFAULT_FLOW_TABLE_SIZE,
            std::net::Ipv4Addr::from(VIP4),
            scheduler.name(),
            reals.join(", ")
        ))?;
        self.load(&config)?;
        let link = self.install(Variant::LvsXdp)?;
        let result = (|| {
            self.generate(flows, self.opts.duration, programs::TCP_SYN)?;
            thread_settle();
            let snap = self.balancer.snapshot()?;
            let reals = &snap.services[0].reals;
            anyhow::ensure!(reals.len() == 3, "three real servers");
            Ok([0, 1, 2].map(|i| reals[i].counters.conns))
        })();
        self.remove(Variant::LvsXdp, link)?;
        self.load(&saved)?;
        result
    }

    fn conns(&self) -> Result<u64> {
        let snap = self.balancer.snapshot()?;
        Ok(snap.services.iter().map(|s| s.counters.conns).sum())
    }

    /// New connections per second with `scheduler`: a SYN flood of `flows` distinct flows, more
    /// than the run sends, so that every packet is a new connection to schedule and remember
    /// (the table fills, and half-open flows make room for each other). Returns (forwarded
    /// per second, scheduled per second).
    pub fn new_connections(&mut self, scheduler: Scheduler, flows: u32) -> Result<(f64, f64)> {
        self.reload_with(scheduler)?;
        let link = self.install(Variant::LvsXdp)?;
        let result = (|| {
            let before = self.programs.sink_counts()?;
            let conns0 = self.conns()?;
            let (_, took) = self.generate(flows, self.opts.duration, programs::TCP_SYN)?;
            thread_settle();
            let received = sink_delta(&before, &self.programs.sink_counts()?, &RS_MACS);
            let secs = took.as_secs_f64();
            Ok((
                received as f64 / secs,
                (self.conns()? - conns0) as f64 / secs,
            ))
        })();
        self.remove(Variant::LvsXdp, link)?;
        self.reload_with(Scheduler::RoundRobin)?;
        result
    }

    /// Known flows under a SYN flood, with `scheduler`: `known` established flows sent from
    /// CPU 0 for the run's duration, alone and then while a second generator on CPU 1 sends
    /// a SYN flood of distinct flows (4 million, more than the flow table holds), then alone
    /// again.
    pub fn under_flood(&mut self, scheduler: Scheduler, known: u32) -> Result<Flooded> {
        // The flood goes to a service of its own (same scheduler, same flow table) whose real
        // server has its own MAC, so that the sink tells its frames from the known flows'.
        let saved = self.config();
        let flags = if scheduler == Scheduler::Maglev {
            "scheduler_flags = [\"mh-port\"]\n"
        } else {
            ""
        };
        let config = Config::from_toml(&format!(
            "flow_table_size = {}\n[[service]]\nvip = \"{}\"\nport = {PORT}\nprotocol = \"tcp\"\nscheduler = \"{name}\"\n{flags}real_servers = [ {{ address = \"10.0.0.3\", mac = \"{}\" }}, {{ address = \"10.0.0.4\", mac = \"{}\" }} ]\n[[service]]\nvip = \"{FLOOD_VIP}\"\nport = {PORT}\nprotocol = \"tcp\"\nscheduler = \"{name}\"\n{flags}real_servers = [ {{ address = \"10.0.0.5\", mac = \"{}\" }} ]\n",
            self.opts.flow_table_size,
            std::net::Ipv4Addr::from(VIP4),
            mac(RS_MACS[0]),
            mac(RS_MACS[1]),
            mac(RS3_MAC),
            name = scheduler.name(),
        ))?;
        self.load(&config)?;
        let link = self.install(Variant::LvsXdp)?;
        let result = (|| {
            self.warm_up(known)?;
            let alone = self.known_rate(known)?;
            // The flood: its own generator (programs and maps), from other source addresses,
            // to the flood's VIP.
            let mut flood = BenchPrograms::load()?;
            let mut traffic = self.traffic(4_000_000, programs::TCP_SYN);
            traffic.saddr = IpAddr::V4([10, 200, 0, 1].into());
            traffic.daddr = IpAddr::V4(FLOOD_VIP);
            flood.configure(&traffic)?;
            let known_traffic = self.traffic(known, programs::TCP_ACK);
            self.programs.configure(&known_traffic)?;
            let conns0 = self.conns()?;
            let before = self.programs.sink_counts()?;
            let (gen_ns, gen_if, duration, chunk) = (
                self.gen_ns.name.clone(),
                self.gen_if,
                self.opts.duration,
                self.opts.chunk,
            );
            let programs = &self.programs;
            let (known_run, flood_run) = std::thread::scope(|s| {
                let flooder = s.spawn(|| {
                    in_netns(&gen_ns, || {
                        pin_to_cpu(1)?;
                        // A little longer than the known flows' run, so that it covers it.
                        flood.generate(gen_if, duration + Duration::from_millis(300), 1 << 16, true)
                    })
                });
                std::thread::sleep(Duration::from_millis(150));
                let known_run = in_netns(&gen_ns, || {
                    pin_to_cpu(0)?;
                    programs.generate(gen_if, duration, chunk, true)
                });
                let flood_run = flooder
                    .join()
                    .unwrap_or_else(|p| std::panic::resume_unwind(p));
                (known_run, flood_run)
            });
            let (_, took) = known_run?;
            let (_, ftook) = flood_run?;
            let after = self.programs.sink_counts()?;
            // The flood ran over the whole of the known flows' run: its rate over its own.
            let under = sink_delta(&before, &after, &RS_MACS) as f64 / took.as_secs_f64() / 1e6;
            let flood_fwd = sink_delta(&before, &after, &[RS3_MAC]) as f64 / ftook.as_secs_f64();
            let flood_conns = self.conns()? - conns0;
            // The known flows alone once more (the rate alone is the mean of both runs): any
            // scheduled again was pushed out by the flood.
            thread_settle();
            let before = self.conns()?;
            let again = self.known_rate(known)?;
            Ok(Flooded {
                alone: (alone + again) / 2.0,
                under,
                flood_sent: flood_fwd,
                flood_conns: flood_conns as f64 / ftook.as_secs_f64(),
                rescheduled: self.conns()? - before,
            })
        })();
        self.remove(Variant::LvsXdp, link)?;
        self.load(&saved)?;
        result
    }

    /// Known flows' Mpps as the sink receives them, sent from CPU 0 for the run's duration.
    fn known_rate(&mut self, known: u32) -> Result<f64> {
        thread_settle();
        let before = self.programs.sink_counts()?;
        let (_, took) = self.generate(known, self.opts.duration, programs::TCP_ACK)?;
        thread_settle();
        let got = sink_delta(&before, &self.programs.sink_counts()?, &RS_MACS);
        Ok(got as f64 / took.as_secs_f64() / 1e6)
    }

    /// Measures `variant` at `flows` flows: warm up, then count what comes back to the sink.
    pub fn measure(&mut self, variant: Variant, flows: u32) -> Result<Sample> {
        if let Some(s) = variant.scheduler() {
            self.reload_with(s)?;
        }
        let link = self.install(variant)?;
        let result = (|| {
            self.warm_up(flows)?;
            thread_settle();
            let before = self.programs.sink_counts()?;
            let conns0 = self.conns()?;
            let (sent, took) = self.generate(flows, self.opts.duration, programs::TCP_ACK)?;
            thread_settle();
            let after = self.programs.sink_counts()?;
            let misses = if variant.scheduler().is_some() {
                self.conns()? - conns0
            } else {
                0
            };
            let delta: Vec<u64> = after.iter().zip(&before).map(|(a, b)| a - b).collect();
            let per_real = [delta[RS_MACS[0][5] as usize], delta[RS_MACS[1][5] as usize]];
            let received = match variant {
                Variant::Bounce => delta[LB_MAC[5] as usize],
                Variant::MinimalLb | Variant::LvsXdp | Variant::LvsXdpMh | Variant::Nftables => {
                    per_real[0] + per_real[1]
                }
            };
            Ok(Sample {
                variant,
                flows,
                sent,
                per_real,
                received,
                secs: took.as_secs_f64(),
                misses,
            })
        })();
        self.remove(variant, link)?;
        result
    }

    /// Mean cost per packet (ns) of the bounce, the minimal LB, lvs-xdp `rr` and `mh` at
    /// `flows`, from the kernel's BPF run statistics, in a pass of its own (the statistics slow
    /// every program).
    pub fn cost(&mut self, flows: u32) -> Result<[f64; 4]> {
        let _stats =
            aya::sys::enable_stats(aya::sys::Stats::RunTime).context("enable BPF stats")?;
        let mut out = [0.0; 4];
        let variants = [
            Variant::Bounce,
            Variant::MinimalLb,
            Variant::LvsXdp,
            Variant::LvsXdpMh,
        ];
        for (i, variant) in variants.into_iter().enumerate() {
            if let Some(s) = variant.scheduler() {
                self.reload_with(s)?;
            }
            let link = self.install(variant)?;
            let r = (|| {
                self.warm_up(flows)?;
                let read = |b: &Bench| match variant {
                    Variant::Bounce => b.programs.run_stats(contract::BOUNCE),
                    Variant::MinimalLb => b
                        .minimal
                        .as_ref()
                        .context("minimal LB")?
                        .run_stats(contract::MINIMAL_LB),
                    _ => b.balancer.balancer().run_stats(),
                };
                let (t0, n0) = read(self)?;
                self.generate(flows, self.opts.duration, programs::TCP_ACK)?;
                thread_settle();
                let (t1, n1) = read(self)?;
                if n1 == n0 {
                    bail!("{} never ran", variant.name());
                }
                Ok((t1 - t0).as_nanos() as f64 / (n1 - n0) as f64)
            })();
            self.remove(variant, link)?;
            out[i] = r?;
        }
        Ok(out)
    }

    /// The generator program's own mean cost per frame so far (while statistics are on).
    pub fn generator_cost(&self) -> Result<f64> {
        let (t, n) = self.programs.run_stats(contract::GENERATOR)?;
        Ok(t.as_nanos() as f64 / n.max(1) as f64)
    }

    pub fn balancer(&self) -> &Director {
        &self.balancer
    }
}

/// What [`Bench::under_flood`] measured.
#[derive(Clone, Copy, Debug)]
pub struct Flooded {
    /// Known flows' Mpps, alone and under the flood.
    pub alone: f64,
    pub under: f64,
    /// The flood's frames forwarded a second, and the new connections a second it made.
    pub flood_sent: f64,
    pub flood_conns: f64,
    /// Known flows scheduled again after the flood.
    pub rescheduled: u64,
}

/// Frames the sink counted for destination MACs `macs` between two of its readings.
fn sink_delta(before: &[u64], after: &[u64], macs: &[[u8; 6]]) -> u64 {
    macs.iter()
        .map(|m| after[m[5] as usize] - before[m[5] as usize])
        .sum()
}

/// A dropped map of a million entries is freed by the kernel in deferred work on another
/// thread; give it time to finish before measuring again.
fn settle_after_free() {
    std::thread::sleep(Duration::from_millis(600));
}

fn thread_settle() {
    std::thread::sleep(Duration::from_millis(20));
}

/// Pins the calling thread to `cpu` (per-CPU program state, one generator CPU).
pub fn pin_to_cpu(cpu: usize) -> Result<()> {
    // SAFETY: a zeroed cpu_set_t with one bit set, for the calling thread.
    unsafe {
        let mut set: libc::cpu_set_t = std::mem::zeroed();
        libc::CPU_SET(cpu, &mut set);
        if libc::sched_setaffinity(0, size_of::<libc::cpu_set_t>(), &set) != 0 {
            bail!("sched_setaffinity: {}", std::io::Error::last_os_error());
        }
    }
    Ok(())
}

/// Runs the interleaved measurements: for each run, each flow count, each variant.
pub fn run(
    bench: &mut Bench,
    opts: &Options,
    mut progress: impl FnMut(&Sample),
) -> Result<Vec<Sample>> {
    let mut samples = Vec::new();
    for _ in 0..opts.runs {
        for &flows in &opts.flows {
            for variant in Variant::ALL {
                let s = bench.measure(variant, flows)?;
                progress(&s);
                samples.push(s);
            }
        }
    }
    Ok(samples)
}

pub fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(|a, b| a.partial_cmp(b).unwrap());
    let n = v.len();
    if n == 0 {
        0.0
    } else if n % 2 == 1 {
        v[n / 2]
    } else {
        (v[n / 2 - 1] + v[n / 2]) / 2.0
    }
}

/// A ratio between two candidates measured in the same rounds: the median of the per-round
/// ratios, and their lowest and highest (the noise of the runs).
#[derive(Clone, Copy, Debug)]
pub struct Spread {
    pub median: f64,
    pub low: f64,
    pub high: f64,
    pub runs: usize,
}

impl Spread {
    /// `a[i] / b[i]` over the rounds `i`.
    pub fn of_ratios(a: &[f64], b: &[f64]) -> Spread {
        let ratios: Vec<f64> = a
            .iter()
            .zip(b)
            .map(|(x, y)| if *y > 0.0 { x / y } else { 0.0 })
            .collect();
        let low = ratios.iter().copied().fold(f64::INFINITY, f64::min);
        let high = ratios.iter().copied().fold(f64::NEG_INFINITY, f64::max);
        Spread {
            median: median(ratios.clone()),
            low: if ratios.is_empty() { 0.0 } else { low },
            high: if ratios.is_empty() { 0.0 } else { high },
            runs: ratios.len(),
        }
    }

    /// `0.89 (0.85-0.91)`, or `0.89 (1 run)` when there is no spread to show; `scale` 100
    /// writes percents.
    pub fn show(&self, scale: f64, unit: &str) -> String {
        let (m, l, h) = (self.median * scale, self.low * scale, self.high * scale);
        let digits = if scale == 1.0 { 2 } else { 0 };
        if self.runs < 2 {
            format!("{m:.digits$}{unit} (1 run)")
        } else {
            format!("{m:.digits$}{unit} ({l:.digits$}-{h:.digits$})")
        }
    }
}

/// Median Mpps and real-server split per (flows, variant).
pub struct Row {
    pub flows: u32,
    /// In `Variant::ALL` order.
    pub mpps: [f64; 5],
    /// Round by round: lvs-xdp `rr` and `mh` against the ceiling, then against the minimal
    /// LB, then `rr` against nftables.
    pub ratios: [Spread; 5],
    /// lvs-xdp `rr`'s share to the first real server.
    pub lvs_split: f64,
}

pub fn rows(samples: &[Sample], flows: &[u32]) -> Vec<Row> {
    flows
        .iter()
        .map(|&f| {
            let of = |v: Variant| {
                samples
                    .iter()
                    .filter(move |s| s.flows == f && s.variant == v)
            };
            let mpps = Variant::ALL.map(|v| median(of(v).map(Sample::mpps).collect()));
            // The runs are interleaved: the i-th sample of each candidate is of round i.
            let rounds = |v: Variant| of(v).map(Sample::mpps).collect::<Vec<f64>>();
            let [bounce, minimal, rr, mh, nft] = Variant::ALL.map(rounds);
            let ratios = [
                Spread::of_ratios(&rr, &bounce),
                Spread::of_ratios(&mh, &bounce),
                Spread::of_ratios(&rr, &minimal),
                Spread::of_ratios(&mh, &minimal),
                Spread::of_ratios(&rr, &nft),
            ];
            let (a, b) = of(Variant::LvsXdp)
                .fold((0, 0), |(a, b), s| (a + s.per_real[0], b + s.per_real[1]));
            Row {
                flows: f,
                mpps,
                ratios,
                lvs_split: a as f64 / (a + b).max(1) as f64,
            }
        })
        .collect()
}

pub fn table(rows: &[Row], costs: &[(u32, [f64; 4])]) -> String {
    let mut out = String::new();
    let _ = writeln!(
        out,
        "| flows | XDP_TX bounce (ceiling) | minimal LB | lvs-xdp rr | lvs-xdp mh | nftables fwd | rr / ceiling | mh / ceiling | rr / minimal LB | mh / minimal LB | rr / nftables | rr split RS1:RS2 |"
    );
    let _ = writeln!(
        out,
        "|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|"
    );
    for r in rows {
        let _ = writeln!(
            out,
            "| {} | {:.2} Mpps | {:.2} Mpps | {:.2} Mpps | {:.2} Mpps | {:.2} Mpps | {} | {} | {} | {} | {} | {:.0}:{:.0} |",
            r.flows,
            r.mpps[0],
            r.mpps[1],
            r.mpps[2],
            r.mpps[3],
            r.mpps[4],
            r.ratios[0].show(1.0, ""),
            r.ratios[1].show(1.0, ""),
            r.ratios[2].show(1.0, "x"),
            r.ratios[3].show(1.0, "x"),
            r.ratios[4].show(1.0, "x"),
            r.lvs_split * 100.0,
            (1.0 - r.lvs_split) * 100.0
        );
    }
    if !costs.is_empty() {
        let _ = writeln!(
            out,
            "\nMean cost per packet of each program, from the kernel's BPF run statistics (which read the clock twice around every run: on this VM most of the bare bounce's figure is those reads):\n"
        );
        let _ = writeln!(
            out,
            "| flows | bounce ns/packet | minimal LB ns/packet | lvs-xdp rr ns/packet | lvs-xdp mh ns/packet |"
        );
        let _ = writeln!(out, "|---:|---:|---:|---:|---:|");
        for (f, c) in costs {
            let _ = writeln!(
                out,
                "| {f} | {:.1} | {:.1} | {:.1} | {:.1} |",
                c[0], c[1], c[2], c[3]
            );
        }
    }
    out
}

/// A grouped bar chart of the median rates.
pub fn svg(rows: &[Row], title: &str) -> String {
    let (w, h, left, bottom, top) = (720.0, 380.0, 60.0, 50.0, 40.0);
    let max = rows.iter().flat_map(|r| r.mpps).fold(0.1f64, f64::max) * 1.15;
    let colors = ["#9e9e9e", "#80cbc4", "#1565c0", "#6a1b9a", "#ef6c00"];
    let group_w = (w - left - 20.0) / rows.len().max(1) as f64;
    let bar_w = group_w / 6.0;
    let y = |v: f64| top + (h - top - bottom) * (1.0 - v / max);
    let mut s = format!(
        "<svg xmlns=\"http://www.w3.org/2000/svg\" width=\"{w}\" height=\"{h}\" font-family=\"sans-serif\" font-size=\"12\">\n<rect width=\"100%\" height=\"100%\" fill=\"white\"/>\n<text x=\"{}\" y=\"22\" text-anchor=\"middle\" font-size=\"14\">{title}</text>\n",
        w / 2.0
    );
    let ticks = 5;
    for i in 0..=ticks {
        let v = max * i as f64 / ticks as f64;
        let _ = writeln!(
            s,
            "<line x1=\"{left}\" x2=\"{}\" y1=\"{:.1}\" y2=\"{:.1}\" stroke=\"#e0e0e0\"/><text x=\"{}\" y=\"{:.1}\" text-anchor=\"end\">{v:.1}</text>",
            w - 20.0,
            y(v),
            y(v),
            left - 6.0,
            y(v) + 4.0
        );
    }
    let _ = writeln!(
        s,
        "<text x=\"16\" y=\"{}\" transform=\"rotate(-90 16 {})\" text-anchor=\"middle\">Mpps (median)</text>",
        h / 2.0,
        h / 2.0
    );
    for (g, r) in rows.iter().enumerate() {
        let x0 = left + g as f64 * group_w + bar_w / 2.0;
        for (i, v) in r.mpps.iter().enumerate() {
            let x = x0 + i as f64 * bar_w;
            let _ = writeln!(
                s,
                "<rect x=\"{x:.1}\" y=\"{:.1}\" width=\"{:.1}\" height=\"{:.1}\" fill=\"{}\"/><text x=\"{:.1}\" y=\"{:.1}\" text-anchor=\"middle\" font-size=\"10\">{v:.2}</text>",
                y(*v),
                bar_w - 4.0,
                (h - bottom) - y(*v),
                colors[i],
                x + (bar_w - 4.0) / 2.0,
                y(*v) - 4.0
            );
        }
        let _ = writeln!(
            s,
            "<text x=\"{:.1}\" y=\"{}\" text-anchor=\"middle\">{} flows</text>",
            x0 + 2.5 * bar_w,
            h - bottom + 18.0,
            r.flows
        );
    }
    for (i, v) in Variant::ALL.iter().enumerate() {
        let x = left + 10.0 + i as f64 * 125.0;
        let _ = writeln!(
            s,
            "<rect x=\"{x}\" y=\"{}\" width=\"12\" height=\"12\" fill=\"{}\"/><text x=\"{}\" y=\"{}\">{}</text>",
            h - 22.0,
            colors[i],
            x + 16.0,
            h - 12.0,
            v.name()
        );
    }
    s.push_str("</svg>\n");
    s
}

/// The machine, for the README: CPU model, cores, kernel.
pub fn machine() -> String {
    let cpu = std::fs::read_to_string("/proc/cpuinfo")
        .ok()
        .and_then(|c| {
            c.lines()
                .find(|l| l.starts_with("model name"))
                .map(|l| l.split(':').nth(1).unwrap_or("").trim().to_string())
        })
        .unwrap_or_else(|| "unknown CPU".into());
    let kernel = std::fs::read_to_string("/proc/sys/kernel/osrelease").unwrap_or_default();
    let cores = std::thread::available_parallelism().map_or(0, |n| n.get());
    format!("{cpu}, {cores} cores, Linux {}", kernel.trim())
}

pub fn elapsed_since(t: Instant) -> String {
    format!("{:.0}s", t.elapsed().as_secs_f64())
}
