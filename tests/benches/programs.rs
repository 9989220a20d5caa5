//! Benchmark support, shared by the benchmarks and the tests that use them (through `#[path]`):
//! the benchmark programs (object `lvs-xdp-bench`): a live-frame traffic generator, a sink counting
//! frames per destination MAC, a bare XDP_TX bounce and a pass program. Used by the veth
//! benchmark (`cargo xtask bench`) and the flood test.
//!
//! Interface indexes are those of the calling thread's network namespace: to work in another
//! namespace, call from a thread that has entered it (see `lvs_xdp_tests::netns::in_netns`).
use std::{
    net::IpAddr,
    time::{Duration, Instant},
};

use anyhow::{Context as _, Result, anyhow};
use aya::{
    Ebpf, TestRun as _, TestRunAttrs, TestRunOptions,
    maps::{Array, MapData, PerCpuArray},
    programs::{Xdp, xdp::XdpLinkId},
};
use lvs_xdp_common::{
    PROTO_TCP, PROTO_UDP,
    bench::{self as contract, GenConfig},
};

use lvs_xdp::{AttachMode, BENCH_OBJECT};

/// Bytes of every generated frame: Ethernet + IPv6 + TCP, the largest header set. Shorter
/// header sets (IPv4, UDP) are followed by zero padding, as short frames are on a wire.
pub const FRAME_LEN: usize = 14 + 40 + 20;

/// What to generate: flows `i = 0..flows` from `saddr + i / PORTS_PER_ADDR` (last 32 bits),
/// port `sport + i % PORTS_PER_ADDR`, to `daddr:dport`.
#[derive(Clone, Copy, Debug)]
pub struct Traffic {
    pub dst_mac: [u8; 6],
    pub src_mac: [u8; 6],
    pub saddr: IpAddr,
    pub daddr: IpAddr,
    pub proto: u8,
    pub sport: u16,
    pub dport: u16,
    pub flows: u32,
    /// The TCP flags of every frame (SYN 0x02 opens connections, ACK 0x10 is established
    /// traffic); unused for UDP.
    pub tcp_flags: u8,
}

pub const TCP_SYN: u8 = 0x02;
pub const TCP_ACK: u8 = 0x10;

fn sum16(bytes: &[u8]) -> u32 {
    bytes
        .chunks(2)
        .map(|c| u32::from(u16::from_be_bytes([c[0], *c.get(1).unwrap_or(&0)])))
        .sum()
}

fn fold(mut acc: u32) -> u16 {
    while acc > 0xffff {
        acc = (acc & 0xffff) + (acc >> 16);
    }
    !(acc as u16)
}

/// The template frame (flow 0, `FRAME_LEN` bytes) and the generator's configuration.
pub fn template(t: &Traffic) -> Result<(Vec<u8>, GenConfig)> {
    let tcp = match t.proto {
        PROTO_TCP => true,
        PROTO_UDP => false,
        p => anyhow::bail!("the generator sends TCP or UDP, not protocol {p}"),
    };
    let l4_len = if tcp { 20 } else { 8 };
    let mut f = Vec::with_capacity(FRAME_LEN);
    f.extend_from_slice(&t.dst_mac);
    f.extend_from_slice(&t.src_mac);
    let (pseudo, ip_csum_off, saddr_off) = match (t.saddr, t.daddr) {
        (IpAddr::V4(s), IpAddr::V4(d)) => {
            f.extend_from_slice(&[0x08, 0x00, 0x45, 0]);
            f.extend_from_slice(&((20 + l4_len) as u16).to_be_bytes());
            f.extend_from_slice(&[0, 0, 0x40, 0, 64, t.proto, 0, 0]);
            f.extend_from_slice(&s.octets());
            f.extend_from_slice(&d.octets());
            let csum = fold(sum16(&f[14..34]));
            f[24..26].copy_from_slice(&csum.to_be_bytes());
            (sum16(&f[26..34]), 24, 26)
        }
        (IpAddr::V6(s), IpAddr::V6(d)) => {
            f.extend_from_slice(&[0x86, 0xdd, 0x60, 0, 0, 0]);
            f.extend_from_slice(&(l4_len as u16).to_be_bytes());
            f.extend_from_slice(&[t.proto, 64]);
            f.extend_from_slice(&s.octets());
            f.extend_from_slice(&d.octets());
            (sum16(&f[22..54]), 0, 34)
        }
        _ => anyhow::bail!("source and destination must be of one family"),
    };
    let l4_off = f.len();
    f.extend_from_slice(&t.sport.to_be_bytes());
    f.extend_from_slice(&t.dport.to_be_bytes());
    if tcp {
        f.extend_from_slice(&[
            0,
            0,
            0,
            1,
            0,
            0,
            0,
            0,
            0x50,
            t.tcp_flags,
            0xfa,
            0xf0,
            0,
            0,
            0,
            0,
        ]);
    } else {
        f.extend_from_slice(&[0, 8, 0, 0]);
    }
    let l4_csum_off = l4_off + if tcp { 16 } else { 6 };
    let csum = fold(pseudo + u32::from(t.proto) + l4_len as u32 + sum16(&f[l4_off..]));
    f[l4_csum_off..l4_csum_off + 2].copy_from_slice(&csum.to_be_bytes());
    f.resize(FRAME_LEN, 0);
    let be16 = |at: usize| u16::from_be_bytes([f[at], f[at + 1]]);
    let cfg = GenConfig {
        dst_mac: t.dst_mac,
        src_mac: t.src_mac,
        flows: t.flows,
        saddr_off: saddr_off as u16,
        l4_off: l4_off as u16,
        l4_csum_off: l4_csum_off as u16,
        ip_csum_off: ip_csum_off as u16,
        saddr_low: u32::from_be_bytes(f[saddr_off..saddr_off + 4].try_into().unwrap()),
        sport: t.sport,
        l4_csum: be16(l4_csum_off),
        ip_csum: if ip_csum_off == 0 {
            0
        } else {
            be16(ip_csum_off)
        },
        _pad: [0; 2],
    };
    Ok((f, cfg))
}

/// The loaded benchmark programs.
pub struct BenchPrograms {
    ebpf: Ebpf,
    frame: Vec<u8>,
}

impl BenchPrograms {
    pub fn load() -> Result<BenchPrograms> {
        let mut ebpf = Ebpf::load(BENCH_OBJECT).context("load the benchmark object")?;
        for name in [
            contract::GENERATOR,
            contract::SINK,
            contract::BOUNCE,
            contract::PASS,
            contract::MINIMAL_LB,
        ] {
            xdp(&mut ebpf, name)?
                .load()
                .map_err(|e| anyhow!("load {name}: {e:#}"))?;
        }
        Ok(BenchPrograms {
            ebpf,
            frame: vec![0; FRAME_LEN],
        })
    }

    /// Attaches program `name` (one of `lvs_xdp_common::bench`'s) to `ifindex`.
    pub fn attach(&mut self, name: &str, ifindex: u32, mode: AttachMode) -> Result<XdpLinkId> {
        xdp(&mut self.ebpf, name)?
            .attach_to_if_index(ifindex, mode.xdp_mode())
            .map_err(|e| anyhow!("attach {name} to ifindex {ifindex}: {e:#}"))
    }

    pub fn detach(&mut self, name: &str, link: XdpLinkId) -> Result<()> {
        xdp(&mut self.ebpf, name)?
            .detach(link)
            .map_err(|e| anyhow!("detach {name}: {e:#}"))
    }

    /// Sets what the generator sends and restarts its flow cycle.
    pub fn configure(&mut self, traffic: &Traffic) -> Result<()> {
        if traffic.flows == 0 {
            anyhow::bail!("the generator needs at least one flow");
        }
        let (frame, cfg) = template(traffic)?;
        self.frame = frame;
        let mut m: Array<&mut MapData, GenConfig> = self
            .ebpf
            .map_mut(contract::GEN_CONFIG)
            .context("GEN_CONFIG")?
            .try_into()?;
        m.set(0, cfg, 0)?;
        let mut state: PerCpuArray<&mut MapData, u32> = self
            .ebpf
            .map_mut(contract::GEN_STATE)
            .context("GEN_STATE")?
            .try_into()?;
        let cpus = aya::util::nr_cpus().map_err(|(_, e)| e)?;
        state.set(0, aya::maps::PerCpuValues::try_from(vec![0u32; cpus])?, 0)?;
        Ok(())
    }

    /// Transmits frames out of `ifindex` for about `duration`, as fast as the path allows.
    /// Returns (frames sent, time taken).
    ///
    /// Each BPF_PROG_TEST_RUN call has a fixed cost of tens of milliseconds (setting up and
    /// tearing down its page pool) during which nothing is sent, so calls are made long: the
    /// first sends `first_chunk` frames, the next ones as many as the measured rate sends in
    /// about half a second (never past the end of `duration` by more than one call). With
    /// `adapt` false every call sends `first_chunk` frames, fixed cost and all, as a harness of
    /// short calls would.
    pub fn generate(
        &self,
        ifindex: u32,
        duration: Duration,
        first_chunk: u32,
        adapt: bool,
    ) -> Result<(u64, Duration)> {
        let start = Instant::now();
        let mut sent = 0u64;
        let mut chunk = first_chunk.max(1);
        loop {
            self.generate_frames(ifindex, chunk)?;
            sent += u64::from(chunk);
            let elapsed = start.elapsed();
            if elapsed >= duration {
                return Ok((sent, elapsed));
            }
            if !adapt {
                continue;
            }
            let rate = sent as f64 / elapsed.as_secs_f64();
            let left = (duration - elapsed).as_secs_f64().min(0.5);
            chunk = ((rate * left) as u64).clamp(1024, u64::from(u32::MAX)) as u32;
        }
    }

    /// Transmits exactly `frames` frames out of `ifindex` in one BPF_PROG_TEST_RUN call.
    pub fn generate_frames(&self, ifindex: u32, frames: u32) -> Result<()> {
        let program: &Xdp = self
            .ebpf
            .program(contract::GENERATOR)
            .context("generator")?
            .try_into()?;
        // struct xdp_md: data, data_end, data_meta, ingress_ifindex, rx_queue_index, egress_ifindex
        let mut ctx = [0u8; 24];
        ctx[4..8].copy_from_slice(&(FRAME_LEN as u32).to_ne_bytes());
        ctx[12..16].copy_from_slice(&ifindex.to_ne_bytes());
        program
            .test_run(TestRunOptions {
                data_in: Some(&self.frame),
                ctx_in: Some(&ctx),
                repeat: frames,
                attrs: TestRunAttrs::new().xdp_live_frames(LIVE_BATCH),
                ..TestRunOptions::new()
            })
            .context("BPF_PROG_TEST_RUN (live frames)")?;
        Ok(())
    }

    /// Runs the generator once without live frames and returns the frame it wrote (the next
    /// flow of its cycle), to check what it sends.
    pub fn generate_one(&self) -> Result<Vec<u8>> {
        let program: &Xdp = self
            .ebpf
            .program(contract::GENERATOR)
            .context("generator")?
            .try_into()?;
        let mut out = vec![0u8; FRAME_LEN + 64];
        let r = program.test_run(TestRunOptions {
            data_in: Some(&self.frame),
            data_out: Some(&mut out),
            ..TestRunOptions::new()
        })?;
        if r.return_value != 3 {
            anyhow::bail!("generator returned {} instead of XDP_TX", r.return_value);
        }
        out.truncate(r.data_size_out as usize);
        Ok(out)
    }

    /// Sets the minimal load balancer's two backend MACs.
    pub fn set_minimal_backends(&mut self, macs: [[u8; 6]; 2]) -> Result<()> {
        let mut m: Array<&mut MapData, u64> = self
            .ebpf
            .map_mut(contract::MIN_BACKENDS)
            .context("MIN_BACKENDS")?
            .try_into()?;
        for (i, mac) in macs.iter().enumerate() {
            let mut b = [0u8; 8];
            b[..6].copy_from_slice(mac);
            m.set(i as u32, u64::from_ne_bytes(b), 0)?;
        }
        Ok(())
    }

    /// Frames the sink received, by the last byte of their destination MAC, summed over CPUs.
    pub fn sink_counts(&self) -> Result<Vec<u64>> {
        let m: PerCpuArray<&MapData, u64> = self
            .ebpf
            .map(contract::SINK_COUNTS)
            .context("SINK_COUNTS")?
            .try_into()?;
        (0..256u32)
            .map(|i| Ok(m.get(&i, 0)?.iter().sum()))
            .collect()
    }

    /// (total run time, run count) of program `name` from the kernel's BPF statistics (counted
    /// only while `kernel.bpf_stats_enabled` or an `aya::sys::enable_stats` fd is on).
    pub fn run_stats(&self, name: &str) -> Result<(Duration, u64)> {
        let program: &Xdp = self.ebpf.program(name).context("program")?.try_into()?;
        let info = program.info()?;
        Ok((info.run_time(), info.run_count()))
    }
}

fn xdp<'a>(ebpf: &'a mut Ebpf, name: &str) -> Result<&'a mut Xdp> {
    ebpf.program_mut(name)
        .ok_or_else(|| anyhow!("program {name} missing from the benchmark object"))?
        .try_into()
        .context("not an XDP program")
}

/// Frames per live-frame batch (the kernel's default; 16 to 256 measured the same here).
const LIVE_BATCH: u32 = 64;
