//! The loaded program and its maps: sizing, filling, attaching, detaching, reading counters.
use std::{fmt, str::FromStr};

use anyhow::{Context as _, Result, anyhow, bail};
use aya::{
    Ebpf, EbpfLoader, TestRun as _, TestRunOptions,
    maps::{Array, HashMap, MapData, PerCpuArray},
    programs::{Xdp, XdpMode, xdp::XdpLinkId},
};
use lvs_xdp_common::{self as common, Counters, flow_table, map, reason};

use crate::{config::Config, iface::Interface, layout::Layout, stats::Snapshot};

/// The XDP object built from lvs-xdp-ebpf, embedded at build time.
pub static EBPF_OBJECT: &[u8] =
    aya::include_bytes_aligned!(concat!(env!("OUT_DIR"), "/lvs-xdp-ebpf"));

/// How to attach to an interface.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub enum AttachMode {
    /// Native if the driver supports it, generic otherwise (the kernel chooses).
    #[default]
    Auto,
    /// In the driver (fastest); refused by drivers without XDP support.
    Native,
    /// In the kernel's generic receive path; works on any interface.
    Generic,
}

impl AttachMode {
    /// The aya attach mode.
    pub(crate) fn xdp_mode(self) -> XdpMode {
        match self {
            AttachMode::Auto => XdpMode::Default,
            AttachMode::Native => XdpMode::Driver,
            AttachMode::Generic => XdpMode::Skb,
        }
    }
}

impl FromStr for AttachMode {
    type Err = anyhow::Error;
    fn from_str(s: &str) -> Result<Self> {
        match s {
            "auto" => Ok(AttachMode::Auto),
            "native" => Ok(AttachMode::Native),
            "generic" => Ok(AttachMode::Generic),
            _ => bail!("unknown mode {s:?} (expected auto, native or generic)"),
        }
    }
}

impl fmt::Display for AttachMode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            AttachMode::Auto => "auto",
            AttachMode::Native => "native",
            AttachMode::Generic => "generic",
        })
    }
}

/// The program loaded with its maps filled for one configuration, attached to zero or more
/// interfaces. Dropping it detaches everything and frees the maps.
pub struct Balancer {
    // Field order matters on drop: links (inside `ebpf`) go before the logger's ring buffer.
    ebpf: Ebpf,
    logger: aya_log::EbpfLogger<&'static dyn log::Log>,
    config: Config,
    layout: Layout,
    interfaces: Vec<Interface>,
    attached: Vec<(Interface, XdpLinkId)>,
    /// Real-server slots not in use (for replacements).
    free_slots: Vec<u32>,
    /// The next generation to give a slot (every use of a slot gets a new one).
    next_generation: u32,
    /// Counters of real servers that were replaced, per service: a service's totals stay
    /// monotonic when its real servers change.
    retired: Vec<Counters>,
}

/// IPv4 flows: the 5-tuple and the flow's real-server slot and generation.
pub type FlowsV4 = Vec<(common::FlowKeyV4, common::Flow)>;

/// A random u32 from the kernel (the flow table's hash seed).
fn random_u32() -> Result<u32> {
    let mut b = [0u8; 4];
    // SAFETY: writes at most 4 bytes into `b`.
    let n = unsafe { libc::getrandom(b.as_mut_ptr().cast(), b.len(), 0) };
    if n != 4 {
        bail!("getrandom: {}", std::io::Error::last_os_error());
    }
    Ok(u32::from_ne_bytes(b))
}

/// Spare real-server slots beyond the configuration's, for live replacements.
fn spare_slots(n: usize) -> usize {
    (n / 8).max(16)
}

impl Balancer {
    /// Loads the program with maps sized for `config` and fills them with `layout`, serving
    /// `interfaces` (their MACs are the program's own addresses). Nothing is attached yet.
    pub fn load(config: &Config, layout: Layout, interfaces: &[Interface]) -> Result<Balancer> {
        let max_ifindex = interfaces.iter().map(|i| i.index).max().unwrap_or(0);
        let n_services = config.services.len().max(1) as u32;
        let n_reals = (layout.reals.len() + spare_slots(layout.reals.len())) as u32;
        if n_reals > flow_table::SLOT_MASK {
            bail!(
                "{n_reals} real-server slots; at most {}",
                flow_table::SLOT_MASK
            );
        }
        let (buckets, overflow) = flow_table::sizes(config.flow_table_size);
        let front = buckets.min(flow_table::MAX_FRONT_BUCKETS);
        let seed = random_u32()?;
        let mut ebpf = EbpfLoader::new()
            .override_global(flow_table::SEED, &seed, true)
            .override_global(flow_table::BUCKET_MASK, &(buckets - 1), true)
            .override_global(flow_table::FRONT_MASK, &(front - 1), true)
            .map_max_entries(map::SERVICES, layout.services.len().max(1) as u32)
            .map_max_entries(map::REALS, n_reals)
            .map_max_entries(map::SCHED, layout.sched.len().max(1) as u32)
            .map_max_entries(map::FLOW_CACHE_V4, buckets)
            .map_max_entries(map::FLOWS_V4, overflow)
            .map_max_entries(map::IFACES, max_ifindex + 1)
            .map_max_entries(map::RR, n_services)
            .map_max_entries(map::SERVICE_STATS, n_services)
            .map_max_entries(map::REAL_STATS, n_reals)
            .load(EBPF_OBJECT)
            .context("cannot create the BPF maps (is this root, on a kernel with BPF?)")?;
        let logger = aya_log::EbpfLogger::init(&mut ebpf).context("cannot open the BPF log")?;
        let program: &mut Xdp = program_mut(&mut ebpf)?;
        program
            .load()
            .map_err(|e| anyhow!("the kernel refused the XDP program: {e:#}"))?;
        fill(&mut ebpf, &layout, interfaces)?;
        let free_slots = (layout.reals.len() as u32..n_reals).rev().collect();
        Ok(Balancer {
            ebpf,
            logger,
            retired: vec![Counters::default(); config.services.len()],
            config: config.clone(),
            layout,
            interfaces: interfaces.to_vec(),
            attached: Vec::new(),
            free_slots,
            next_generation: crate::layout::FIRST_GENERATION + 1,
        })
    }

    fn map<'a, T>(&'a self, name: &str) -> Result<T>
    where
        T: TryFrom<&'a aya::maps::Map, Error = aya::maps::MapError>,
    {
        let m = self
            .ebpf
            .map(name)
            .ok_or_else(|| anyhow!("map {name} missing from the object"))?;
        T::try_from(m).with_context(|| format!("map {name} has an unexpected type"))
    }

    /// Attaches to every interface given to `load`. All or nothing: if one attach is refused,
    /// those already made are undone and the error names the interface.
    pub fn attach(&mut self, mode: AttachMode) -> Result<()> {
        let interfaces = self.interfaces.clone();
        for iface in interfaces {
            let program: &mut Xdp = program_mut(&mut self.ebpf)?;
            match program.attach_to_if_index(iface.index, mode.xdp_mode()) {
                Ok(link) => self.attached.push((iface, link)),
                Err(e) => {
                    let err = anyhow!("attach to {} ({mode} mode) refused: {e:#}", iface.name);
                    if let Err(undo) = self.detach() {
                        return Err(err.context(format!("and undoing failed: {undo:#}")));
                    }
                    return Err(err);
                }
            }
        }
        Ok(())
    }

    /// Detaches from every interface. Idempotent.
    pub fn detach(&mut self) -> Result<()> {
        let program: &mut Xdp = program_mut(&mut self.ebpf)?;
        let mut first_err = None;
        for (iface, link) in self.attached.drain(..) {
            if let Err(e) = program.detach(link) {
                first_err.get_or_insert(anyhow!("detach from {}: {e:#}", iface.name));
            }
        }
        first_err.map_or(Ok(()), Err)
    }

    pub fn attached(&self) -> impl Iterator<Item = &Interface> {
        self.attached.iter().map(|(i, _)| i)
    }

    pub fn config(&self) -> &Config {
        &self.config
    }

    pub fn layout(&self) -> &Layout {
        &self.layout
    }

    /// Forwards the program's log records (rare events only) to the `log` crate.
    pub fn flush_log(&mut self) {
        self.logger.flush();
    }

    /// Every counter, summed over the CPUs. Forwarded traffic is counted in the kernel per real
    /// server only: the service totals and the `forwarded` verdict are sums of those.
    pub fn snapshot(&self) -> Result<Snapshot> {
        let sum = |name: &str, len: usize| -> Result<Vec<Counters>> {
            let m: PerCpuArray<&MapData, Counters> = self.map(name)?;
            (0..len as u32)
                .map(|i| {
                    let per_cpu = m
                        .get(&i, 0)
                        .with_context(|| format!("reading {name}[{i}]"))?;
                    Ok(per_cpu.iter().fold(Counters::default(), |a, c| add(a, *c)))
                })
                .collect()
        };
        let mut global = sum(map::GLOBAL_STATS, reason::COUNT as usize)?;
        let reals = sum(map::REAL_STATS, self.layout.reals.len())?;
        let mut services = sum(map::SERVICE_STATS, self.config.services.len())?;
        // Live slots plus the totals of retired ones (whose map entries are not counted again).
        let mut forwarded = Counters::default();
        for ((svc, slots), retired) in services
            .iter_mut()
            .zip(&self.layout.real_slots)
            .zip(&self.retired)
        {
            *svc = add(*svc, *retired);
            forwarded = add(forwarded, *retired);
            for slot in slots {
                *svc = add(*svc, reals[*slot as usize]);
                forwarded = add(forwarded, reals[*slot as usize]);
            }
        }
        global[reason::FORWARDED as usize] = Counters {
            conns: 0,
            ..forwarded
        };
        Ok(Snapshot {
            at: std::time::Instant::now(),
            global,
            services,
            reals,
        })
    }

    /// Replaces real server `index` of service `service` (positions in the configuration) with
    /// `new`, whose MAC must be known, while traffic flows. The new server gets a fresh slot, written
    /// in full before anything points at it; then each scheduling slot of the old one is repointed
    /// (one 4-byte write each, so a packet sees the old or the new, never half); then the old slot
    /// is retired, so its flows are scheduled again (`flow_rescheduled`). Other real servers'
    /// flows are untouched. A weight moving to or from 0 is not supported yet.
    pub fn replace_real(
        &mut self,
        service: usize,
        index: usize,
        new: crate::config::RealServer,
    ) -> Result<()> {
        let svc = self
            .config
            .services
            .get(service)
            .ok_or_else(|| anyhow!("no service #{service}"))?;
        let old = svc
            .real_servers
            .get(index)
            .ok_or_else(|| anyhow!("service {} has no real server #{index}", svc.name()))?;
        let mac = new
            .mac
            .ok_or_else(|| anyhow!("real server {}: MAC unknown", new.address))?;
        if (old.weight == 0) != (new.weight == 0) {
            bail!("changing a weight to or from 0 is not supported yet");
        }
        if new.address != old.address && svc.real_servers.iter().any(|r| r.address == new.address) {
            bail!(
                "duplicate real server {} in service {}",
                new.address,
                svc.name()
            );
        }
        let old_slot = self.layout.real_slots[service][index];
        let new_slot = self.free_slots.pop().ok_or_else(|| {
            anyhow!(
                "no free real-server slot (capacity {})",
                self.layout.reals.len()
            )
        })?;
        let generation = self.next_generation;
        self.next_generation = self.next_generation.wrapping_add(1).max(1);
        let entry = common::RealServer {
            mac: mac.0,
            _pad: [0; 2],
            service: service as u32,
            generation,
        };
        let cpus = aya::util::nr_cpus().map_err(|(_, e)| e)?;
        // 1. The new slot, complete, with zeroed counters, referenced by nothing yet.
        let mut stats: PerCpuArray<&mut MapData, Counters> =
            map_mut(&mut self.ebpf, map::REAL_STATS)?;
        stats.set(
            new_slot,
            aya::maps::PerCpuValues::try_from(vec![Counters::default(); cpus])?,
            0,
        )?;
        let mut reals: Array<&mut MapData, common::RealServer> =
            map_mut(&mut self.ebpf, map::REALS)?;
        reals.set(new_slot, entry, 0).context("writing REALS")?;
        // 2. Repoint the scheduling slots.
        let mut sched: Array<&mut MapData, u32> = map_mut(&mut self.ebpf, map::SCHED)?;
        for (i, slot) in self.layout.sched.iter_mut().enumerate() {
            if *slot == old_slot {
                sched.set(i as u32, new_slot, 0).context("writing SCHED")?;
                *slot = new_slot;
            }
        }
        // 3. Retire the old slot; keep its counters in the service's totals.
        let stats: PerCpuArray<&MapData, Counters> = self.map(map::REAL_STATS)?;
        let retired_counters = stats
            .get(&old_slot, 0)?
            .iter()
            .fold(Counters::default(), |a, c| add(a, *c));
        let mut reals: Array<&mut MapData, common::RealServer> =
            map_mut(&mut self.ebpf, map::REALS)?;
        let dead = common::RealServer {
            generation: 0,
            ..self.layout.reals[old_slot as usize]
        };
        reals.set(old_slot, dead, 0).context("writing REALS")?;
        self.retired[service] = add(self.retired[service], retired_counters);
        let needed = new_slot as usize + 1;
        if self.layout.reals.len() < needed {
            self.layout.reals.resize(needed, dead);
        }
        self.layout.reals[new_slot as usize] = entry;
        self.layout.reals[old_slot as usize] = dead;
        self.layout.real_slots[service][index] = new_slot;
        self.free_slots.insert(0, old_slot);
        self.config.services[service].real_servers[index] = new;
        Ok(())
    }

    /// (total run time, run count) of the XDP program from the kernel's BPF statistics (they
    /// count only while `kernel.bpf_stats_enabled` or an `aya::sys::enable_stats` fd is on).
    pub fn run_stats(&self) -> Result<(std::time::Duration, u64)> {
        let program: &Xdp = self
            .ebpf
            .program(common::PROGRAM)
            .ok_or_else(|| anyhow!("program {} missing", common::PROGRAM))?
            .try_into()?;
        let info = program.info()?;
        Ok((info.run_time(), info.run_count()))
    }

    /// Entries of the IPv4 flow table, buckets then overflow (diagnostics and tests).
    pub fn flows_v4(&self) -> Result<FlowsV4> {
        let (mut flows, overflow) = self.flows_v4_by_place()?;
        flows.extend(overflow);
        Ok(flows)
    }

    /// IPv4 flows remembered now: (in the buckets, in the overflow hash).
    pub fn flow_table_counts(&self) -> Result<(u64, u64)> {
        let (buckets, overflow) = self.flows_v4_by_place()?;
        Ok((buckets.len() as u64, overflow.len() as u64))
    }

    /// The IPv4 flows in the buckets, and those in the overflow hash.
    fn flows_v4_by_place(&self) -> Result<(FlowsV4, FlowsV4)> {
        let cache: Array<&MapData, common::FlowBucketV4> = self.map(map::FLOW_CACHE_V4)?;
        let mut in_buckets = Vec::new();
        for i in 0..cache.len() {
            let bucket = cache.get(&i, 0).context("reading FLOW_CACHE_V4")?;
            let used = bucket.ways.iter().filter(|w| !w.is_free());
            in_buckets.extend(used.map(|w| (w.key(), w.flow())));
        }
        let overflow: HashMap<&MapData, common::FlowKeyV4, common::Flow> =
            self.map(map::FLOWS_V4)?;
        let in_overflow = overflow
            .iter()
            .map(|r| r.context("reading FLOWS_V4"))
            .collect::<Result<_>>()?;
        Ok((in_buckets, in_overflow))
    }

    /// How many flows the IPv4 flow table can hold at most: every way of every bucket, plus the
    /// overflow hash. It holds `flow_table_size` flows at least, whatever their hashes.
    pub fn flow_capacity(&self) -> u64 {
        let (buckets, overflow) = flow_table::sizes(self.config.flow_table_size);
        u64::from(buckets) * flow_table::WAYS as u64 + u64::from(overflow)
    }

    /// Runs the program once on `frame` with BPF_PROG_TEST_RUN, as received on the loopback
    /// interface (ifindex 1) of the caller's network namespace. Returns the XDP action and the
    /// frame as the program left it.
    pub fn test_run(&self, frame: &[u8]) -> Result<(u32, Vec<u8>)> {
        let program: &Xdp = self
            .ebpf
            .program(common::PROGRAM)
            .ok_or_else(|| anyhow!("program {} missing", common::PROGRAM))?
            .try_into()?;
        let mut out = vec![0u8; frame.len() + 256];
        let result = program
            .test_run(TestRunOptions {
                data_in: Some(frame),
                data_out: Some(&mut out),
                ..TestRunOptions::new()
            })
            .context("BPF_PROG_TEST_RUN")?;
        out.truncate(result.data_size_out as usize);
        Ok((result.return_value, out))
    }
}

/// Writes every map. Real servers and scheduling slots come first, services last: a service is
/// visible only once everything it points to is in place.
fn fill(ebpf: &mut Ebpf, layout: &Layout, interfaces: &[Interface]) -> Result<()> {
    let mut reals: Array<&mut MapData, common::RealServer> = map_mut(ebpf, map::REALS)?;
    for (slot, real) in layout.reals.iter().enumerate() {
        reals.set(slot as u32, real, 0).context("writing REALS")?;
    }
    let mut sched: Array<&mut MapData, u32> = map_mut(ebpf, map::SCHED)?;
    for (i, slot) in layout.sched.iter().enumerate() {
        sched.set(i as u32, slot, 0).context("writing SCHED")?;
    }
    let mut ifaces: Array<&mut MapData, common::Iface> = map_mut(ebpf, map::IFACES)?;
    for iface in interfaces {
        let value = common::Iface {
            mac: iface.mac.0,
            enabled: 1,
            _pad: 0,
        };
        ifaces
            .set(iface.index, value, 0)
            .context("writing IFACES")?;
    }
    let mut services: HashMap<&mut MapData, common::ServiceKey, common::Service> =
        map_mut(ebpf, map::SERVICES)?;
    for (key, value) in &layout.services {
        services.insert(key, value, 0).context("writing SERVICES")?;
    }
    Ok(())
}

fn map_mut<'a, T>(ebpf: &'a mut Ebpf, name: &str) -> Result<T>
where
    T: TryFrom<&'a mut aya::maps::Map, Error = aya::maps::MapError>,
{
    let m = ebpf
        .map_mut(name)
        .ok_or_else(|| anyhow!("map {name} missing from the object"))?;
    T::try_from(m).with_context(|| format!("map {name} has an unexpected type"))
}

fn program_mut(ebpf: &mut Ebpf) -> Result<&mut Xdp> {
    ebpf.program_mut(common::PROGRAM)
        .ok_or_else(|| anyhow!("program {} missing from the object", common::PROGRAM))?
        .try_into()
        .context("program has an unexpected type")
}

fn add(a: Counters, b: Counters) -> Counters {
    Counters {
        packets: a.packets + b.packets,
        bytes: a.bytes + b.bytes,
        conns: a.conns + b.conns,
        drops: a.drops + b.drops,
    }
}
