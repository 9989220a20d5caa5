//! The loaded program and its maps: sizing, filling, attaching, detaching, reading counters.
use std::{fmt, str::FromStr};

use anyhow::{Context as _, Result, anyhow, bail};
use std::path::Path;

use aya::{
    Ebpf, EbpfLoader, TestRun as _, TestRunOptions,
    maps::{Array, HashMap, MapData, PerCpuArray, ProgramArray},
    programs::{
        Xdp, XdpMode,
        links::{FdLink, PinnedLink},
        xdp::{XdpLink, XdpLinkId},
    },
};
use lvs_xdp_common::{self as common, Counters, flow_table, maglev, map, reason};

use crate::direct::MaglevEntry;

use crate::{
    config::Capacity,
    flowtable::{self, Buckets, RealConns, V4, V6},
    iface::Interface,
    mapped::Mapping,
};

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
    pub fn xdp_mode(self) -> XdpMode {
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

/// The maps, as typed handles taken from the object once.
struct Maps {
    services: HashMap<MapData, common::ServiceKey, common::Service>,
    reals: Array<MapData, common::RealServer>,
    sched: Array<MapData, u32>,
    flows: HashMap<MapData, common::FlowKeyV4, common::Flow>,
    flows6: HashMap<MapData, common::FlowKeyV6, common::Flow>,
    rr: PerCpuArray<MapData, u32>,
    service_stats: PerCpuArray<MapData, Counters>,
    real_stats: PerCpuArray<MapData, Counters>,
    global_stats: PerCpuArray<MapData, Counters>,
    clock: Array<MapData, common::Clock>,
    persist: HashMap<MapData, common::PersistKey, common::Persist>,
    direct: Array<MapData, common::DirectService>,
    /// The tail-call table (the IPv6 program).
    programs: ProgramArray<MapData>,
}

/// Maglev tables for `capacity`: two per `mh` service (the one in use, and the next).
pub fn maglev_tables(capacity: &Capacity) -> u32 {
    capacity.mh_services * 2
}

/// The IPv6 flow table's mapped buckets, its overflow hash, and the connection counts.
pub type FlowTableV6<'a> = (
    &'a Buckets<V6>,
    &'a mut HashMap<MapData, common::FlowKeyV6, common::Flow>,
    &'a RealConns,
);

/// Every map this program shares with userspace, by name: what `keep` pins.
pub const PINNED_MAPS: [&str; 18] = [
    map::SERVICES,
    map::REALS,
    map::SCHED,
    map::FLOW_CACHE_V4,
    map::FLOWS_V4,
    map::FLOW_CACHE_V6,
    map::FLOWS_V6,
    map::IFACES,
    map::RR,
    map::SERVICE_STATS,
    map::REAL_STATS,
    map::GLOBAL_STATS,
    map::CLOCK,
    map::MAGLEV,
    map::MAGLEV_PREV,
    map::REAL_CONNS,
    map::PERSIST,
    map::DIRECT,
];

/// A second handle on each map of [`PINNED_MAPS`] (the typed handles cannot pin).
fn map_handles(ebpf: &Ebpf) -> Result<Vec<(&'static str, MapData)>> {
    use std::os::fd::AsFd as _;
    PINNED_MAPS
        .iter()
        .map(|name| {
            let map = ebpf
                .map(name)
                .ok_or_else(|| anyhow!("map {name} missing from the object"))?;
            let data = match map {
                aya::maps::Map::Array(d)
                | aya::maps::Map::HashMap(d)
                | aya::maps::Map::LruHashMap(d)
                | aya::maps::Map::PerCpuArray(d) => d,
                _ => bail!("map {name} has an unexpected type"),
            };
            let fd = data.fd().as_fd().try_clone_to_owned()?;
            Ok((*name, MapData::from_fd(fd)?))
        })
        .collect()
}

impl Maps {
    fn take(ebpf: &mut Ebpf, interfaces: &[Interface]) -> Result<Maps> {
        let mut ifaces: Array<MapData, common::Iface> = take(ebpf, map::IFACES)?;
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
        Ok(Maps {
            services: take(ebpf, map::SERVICES)?,
            reals: take(ebpf, map::REALS)?,
            sched: take(ebpf, map::SCHED)?,
            flows: take(ebpf, map::FLOWS_V4)?,
            flows6: take(ebpf, map::FLOWS_V6)?,
            rr: take(ebpf, map::RR)?,
            service_stats: take(ebpf, map::SERVICE_STATS)?,
            real_stats: take(ebpf, map::REAL_STATS)?,
            global_stats: take(ebpf, map::GLOBAL_STATS)?,
            clock: take(ebpf, map::CLOCK)?,
            persist: take(ebpf, map::PERSIST)?,
            direct: take(ebpf, map::DIRECT)?,
            programs: take(ebpf, map::PROGRAMS)?,
        })
    }
}

fn take<T>(ebpf: &mut Ebpf, name: &str) -> Result<T>
where
    T: TryFrom<aya::maps::Map, Error = aya::maps::MapError>,
{
    let m = ebpf
        .take_map(name)
        .ok_or_else(|| anyhow!("map {name} missing from the object"))?;
    T::try_from(m).with_context(|| format!("map {name} has an unexpected type"))
}

/// The program loaded with its maps, sized for a [`Capacity`], attached to zero or more
/// interfaces. It knows places (service ids, real-server slots, scheduling slots), not services:
/// [`crate::director::Director`] decides what goes where. Dropping it detaches everything and
/// frees the maps.
pub struct Balancer {
    // Field order matters on drop: links (inside `ebpf`) go before the logger's ring buffer.
    ebpf: Ebpf,
    logger: aya_log::EbpfLogger<&'static dyn log::Log>,
    maps: Maps,
    /// `FLOW_CACHE_V4` and `FLOW_CACHE_V6`, mapped into this process.
    buckets: Buckets<V4>,
    /// Mapped when the first IPv6 service comes (an IPv4-only director does not map its 16 MiB
    /// and more).
    buckets6: Option<Buckets<V6>>,
    buckets6_len: u32,
    /// `MAGLEV` and `MAGLEV_PREV`, mapped into this process when the first `mh` table is
    /// written.
    maglev: Option<(Mapping, Mapping)>,
    /// `REAL_CONNS`, mapped into this process.
    conns: RealConns,
    handles: Vec<(&'static str, MapData)>,
    seed: u32,
    capacity: Capacity,
    cpus: usize,
    interfaces: Vec<Interface>,
    attached: Vec<(Interface, XdpLinkId)>,
}

/// IPv4 flows: the 5-tuple and the flow's real-server slot and generation.
pub type FlowsV4 = Vec<(common::FlowKeyV4, common::Flow)>;
/// IPv6 flows, likewise.
pub type FlowsV6 = Vec<(common::FlowKeyV6, common::Flow)>;

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

/// Scheduling slots for `real_servers` real servers: every real server once, twice over (a
/// service's new range is written in full before its old one is given up).
pub fn sched_capacity(real_servers: u32) -> u32 {
    real_servers.saturating_mul(2)
}

impl Balancer {
    /// Loads the program with maps sized for `capacity`, serving `interfaces` (their MACs are
    /// the program's own addresses). No service yet, nothing attached.
    pub fn load(capacity: &Capacity, interfaces: &[Interface]) -> Result<Balancer> {
        Balancer::load_with(capacity, interfaces, None, None)
    }

    /// [`Balancer::load`], with the flow-hash `seed` given (a random one when `None`) and, with
    /// `reuse`, the maps a kept director pinned in that directory instead of new ones: the flow
    /// table, counters and services carry over.
    pub fn load_with(
        capacity: &Capacity,
        interfaces: &[Interface],
        seed: Option<u32>,
        reuse: Option<&Path>,
    ) -> Result<Balancer> {
        let max_ifindex = interfaces.iter().map(|i| i.index).max().unwrap_or(0);
        if capacity.real_servers > flow_table::SLOT_MASK + 1 {
            bail!(
                "{} real-server slots; at most {}",
                capacity.real_servers,
                flow_table::SLOT_MASK + 1
            );
        }
        let (buckets, overflow) = flow_table::sizes(capacity.flow_table_size);
        let front = buckets.min(flow_table::MAX_FRONT_BUCKETS);
        let (buckets6, overflow6) = flow_table::sizes_v6(capacity.flow_table_size_v6);
        let front6 = buckets6.min(flow_table::MAX_FRONT_BUCKETS_V6);
        let seed = match seed {
            Some(s) => s,
            None => random_u32()?,
        };
        let pins: Vec<(&str, std::path::PathBuf)> = match reuse {
            Some(dir) => PINNED_MAPS.iter().map(|n| (*n, dir.join(n))).collect(),
            None => Vec::new(),
        };
        let mut loader = EbpfLoader::new();
        for (name, path) in &pins {
            loader.map_pin_path(name, path.as_path());
        }
        let mut ebpf = loader
            .override_global(flow_table::SEED, &seed, true)
            .override_global(flow_table::BUCKET_MASK, &(buckets - 1), true)
            .override_global(flow_table::FRONT_MASK, &(front - 1), true)
            .override_global(flow_table::BUCKET_MASK_V6, &(buckets6 - 1), true)
            .override_global(flow_table::FRONT_MASK_V6, &(front6 - 1), true)
            .override_global(maglev::TABLE_SIZE_GLOBAL, &capacity.maglev_table_size, true)
            // Each service, and one address marker per (VIP, protocol) at most.
            .map_max_entries(map::SERVICES, capacity.services.saturating_mul(2))
            .map_max_entries(map::REALS, capacity.real_servers)
            .map_max_entries(map::SCHED, sched_capacity(capacity.real_servers))
            .map_max_entries(map::FLOW_CACHE_V4, buckets)
            .map_max_entries(map::FLOWS_V4, overflow)
            .map_max_entries(map::FLOW_CACHE_V6, buckets6)
            .map_max_entries(map::FLOWS_V6, overflow6)
            .map_max_entries(
                map::MAGLEV,
                maglev_tables(capacity) * maglev::blocks(capacity.maglev_table_size),
            )
            .map_max_entries(
                map::MAGLEV_PREV,
                maglev_tables(capacity) * maglev::blocks(capacity.maglev_table_size),
            )
            .map_max_entries(map::REAL_CONNS, capacity.real_servers)
            .map_max_entries(map::PERSIST, overflow)
            .map_max_entries(map::IFACES, max_ifindex + 1)
            .map_max_entries(map::RR, capacity.services)
            .map_max_entries(map::SERVICE_STATS, capacity.services)
            .map_max_entries(map::REAL_STATS, capacity.real_servers)
            .load(EBPF_OBJECT)
            .context("cannot create the BPF maps (is this root, on a kernel with BPF?)")?;
        let logger = aya_log::EbpfLogger::init(&mut ebpf).context("cannot open the BPF log")?;
        let program: &mut Xdp = program_mut(&mut ebpf)?;
        program
            .load()
            .map_err(|e| anyhow!("the kernel refused the XDP program: {e:#}"))?;
        // The IPv6 program, which the main one tail-calls for every IPv6 frame.
        let v6: &mut Xdp = ebpf
            .program_mut(common::PROGRAM_V6)
            .ok_or_else(|| anyhow!("program {} missing from the object", common::PROGRAM_V6))?
            .try_into()
            .context("program has an unexpected type")?;
        v6.load()
            .map_err(|e| anyhow!("the kernel refused the IPv6 XDP program: {e:#}"))?;
        let v6_fd = v6.fd()?.try_clone()?;
        let handles = map_handles(&ebpf)?;
        let mut maps = Maps::take(&mut ebpf, interfaces)?;
        maps.programs
            .set(map::PROGRAM_V6_SLOT, &v6_fd, 0)
            .context("writing PROGRAMS")?;
        let mapped = |name: &str| -> Result<std::os::fd::BorrowedFd<'_>> {
            use std::os::fd::AsFd as _;
            let (_, data) = handles
                .iter()
                .find(|(n, _)| *n == name)
                .ok_or_else(|| anyhow!("map {name} missing"))?;
            Ok(data.fd().as_fd())
        };
        let buckets = Buckets::map(mapped(map::FLOW_CACHE_V4)?, buckets)?;
        let conns = {
            use std::os::fd::AsFd as _;
            let (_, counts) = handles
                .iter()
                .find(|(name, _)| *name == map::REAL_CONNS)
                .ok_or_else(|| anyhow!("map {} missing", map::REAL_CONNS))?;
            RealConns::map(counts.fd().as_fd(), capacity.real_servers)?
        };
        // The idle clock, before anything can be attached; the director writes its timeouts.
        let clock = match reuse {
            Some(_) => common::Clock {
                now: flowtable::now(),
                ..maps.clock.get(&0, 0).context("reading CLOCK")?
            },
            None => flowtable::clock(common::conn::DEFAULT_TIMEOUTS),
        };
        maps.clock.set(0, clock, 0).context("writing CLOCK")?;
        Ok(Balancer {
            ebpf,
            logger,
            maps,
            buckets,
            buckets6: None,
            buckets6_len: buckets6,
            maglev: None,
            conns,
            handles,
            seed,
            capacity: *capacity,
            cpus: aya::util::nr_cpus().map_err(|(_, e)| e)?,
            interfaces: interfaces.to_vec(),
            attached: Vec::new(),
        })
    }

    pub fn capacity(&self) -> &Capacity {
        &self.capacity
    }

    /// Where Maglev table `index` starts in the mapped `MAGLEV` and `MAGLEV_PREV` (both mapped
    /// at the first call): one word an entry in each.
    fn maglev_table(&mut self, index: u32) -> Result<(*mut u32, *mut u32)> {
        let words = (maglev::blocks(self.capacity.maglev_table_size) * maglev::BLOCK) as usize;
        if index >= maglev_tables(&self.capacity) {
            bail!("Maglev table {index} out of range");
        }
        if self.maglev.is_none() {
            let bytes = maglev_tables(&self.capacity) as usize * words * 4;
            let slots = Mapping::new(self.map_fd(map::MAGLEV)?, bytes, "the Maglev tables")?;
            let prev = Mapping::new(self.map_fd(map::MAGLEV_PREV)?, bytes, "the Maglev tables")?;
            self.maglev = Some((slots, prev));
        }
        let (slots, prev) = self.maglev.as_ref().expect("mapped above");
        let (at, len) = (index as usize * words * 4, words * 4);
        Ok((slots.at(at, len).cast(), prev.at(at, len).cast()))
    }

    /// Writes Maglev table `index` (a table no service points at).
    pub(crate) fn write_maglev(&mut self, index: u32, table: &[MaglevEntry]) -> Result<()> {
        if table.len() > self.capacity.maglev_table_size as usize {
            bail!("Maglev table of {} entries", table.len());
        }
        let (slots, prev) = self.maglev_table(index)?;
        for (i, e) in table.iter().enumerate() {
            let pinned = if e.prev != 0 { maglev::PINNED } else { 0 };
            // SAFETY: `table.len()` words inside each mapping (checked by `maglev_table`),
            // aligned; no packet reads a table no service points at.
            unsafe {
                std::ptr::write_volatile(slots.add(i), e.slot | pinned);
                std::ptr::write_volatile(prev.add(i), e.prev);
            }
        }
        Ok(())
    }

    /// Reads Maglev table `index` (one in use: the data plane may be writing stamps into it).
    pub(crate) fn read_maglev(&mut self, index: u32) -> Result<Vec<MaglevEntry>> {
        let (slots, prev) = self.maglev_table(index)?;
        let n = self.capacity.maglev_table_size as usize;
        // SAFETY: `n` words inside each mapping (checked by `maglev_table`), aligned; each
        // read whole (the data plane writes whole words).
        Ok((0..n)
            .map(|i| unsafe {
                let word = std::ptr::read_volatile(slots.add(i));
                MaglevEntry {
                    slot: word & !maglev::PINNED,
                    prev: if word & maglev::PINNED != 0 {
                        std::ptr::read_volatile(prev.add(i)).max(1)
                    } else {
                        0
                    },
                }
            })
            .collect())
    }

    /// Unpins entry `entry` of Maglev table `index`, a table in use: an atomic AND on its word
    /// (the data plane writes stamps into the same word). Returns whether it was pinned.
    pub(crate) fn unpin_maglev(&mut self, index: u32, entry: u32) -> Result<bool> {
        if entry >= self.capacity.maglev_table_size {
            bail!("Maglev entry {entry} out of range");
        }
        let (slots, _) = self.maglev_table(index)?;
        // SAFETY: a word inside the mapping (checked above and by `maglev_table`), aligned,
        // shared memory that is only ever accessed whole.
        let word = unsafe { std::sync::atomic::AtomicU32::from_ptr(slots.add(entry as usize)) };
        let was = word.fetch_and(!maglev::PINNED, std::sync::atomic::Ordering::SeqCst);
        Ok(was & maglev::PINNED != 0)
    }

    /// Writes entry `index` of `DIRECT` (an empty value clears it).
    pub(crate) fn write_direct(&mut self, index: u32, value: &common::DirectService) -> Result<()> {
        self.maps
            .direct
            .set(index, value, 0)
            .with_context(|| format!("writing DIRECT[{index}]"))
    }

    /// The idle clock and timeouts the data plane reads.
    pub fn clock(&self) -> Result<common::Clock> {
        self.maps.clock.get(&0, 0).context("reading CLOCK")
    }

    pub fn set_clock(&mut self, clock: &common::Clock) -> Result<()> {
        self.maps.clock.set(0, clock, 0).context("writing CLOCK")
    }

    /// The IPv4 flow table's buckets, mapped, its overflow hash, and the connection counts.
    pub fn flow_table(
        &mut self,
    ) -> (
        &Buckets<V4>,
        &mut HashMap<MapData, common::FlowKeyV4, common::Flow>,
        &RealConns,
    ) {
        (&self.buckets, &mut self.maps.flows, &self.conns)
    }

    /// The same for the IPv6 flow table, once it is mapped (see [`Balancer::map_v6`]).
    pub fn flow_table_v6(&mut self) -> Option<FlowTableV6<'_>> {
        Some((self.buckets6.as_ref()?, &mut self.maps.flows6, &self.conns))
    }

    /// Maps the IPv6 flow table's buckets into this process (for its sweep and listings), once:
    /// when the first IPv6 service comes, or a kept director is taken over.
    pub fn map_v6(&mut self) -> Result<()> {
        if self.buckets6.is_none() {
            let fd = self.map_fd(map::FLOW_CACHE_V6)?;
            self.buckets6 = Some(Buckets::map(fd, self.buckets6_len)?);
        }
        Ok(())
    }

    fn map_fd(&self, name: &str) -> Result<std::os::fd::BorrowedFd<'_>> {
        use std::os::fd::AsFd as _;
        let (_, data) = self
            .handles
            .iter()
            .find(|(n, _)| *n == name)
            .ok_or_else(|| anyhow!("map {name} missing"))?;
        Ok(data.fd().as_fd())
    }

    /// The connection counts the data plane keeps for its schedulers.
    pub fn real_conns(&self) -> &RealConns {
        &self.conns
    }

    /// The persistence templates.
    pub fn templates(&mut self) -> &mut HashMap<MapData, common::PersistKey, common::Persist> {
        &mut self.maps.persist
    }

    /// The persistence templates, read.
    pub fn templates_iter(
        &self,
    ) -> impl Iterator<Item = Result<(common::PersistKey, common::Persist), aya::maps::MapError>> + '_
    {
        self.maps.persist.iter()
    }

    /// The flow table's hash seed (a restart that keeps the flows must use it again).
    pub fn seed(&self) -> u32 {
        self.seed
    }

    /// Like [`Balancer::attach`], but an interface with a link pinned in `dir` (by
    /// [`Balancer::keep`]) is taken over first: its program is replaced by this one in one step
    /// (BPF_LINK_UPDATE), so no packet meets an interface without a program. The others are
    /// then attached as `attach` does.
    pub fn attach_adopting(&mut self, mode: AttachMode, dir: &Path) -> Result<()> {
        let interfaces = self.interfaces.clone();
        for iface in interfaces {
            let pin = link_pin(dir, &iface.name);
            if !pin.exists() {
                continue;
            }
            let pinned = PinnedLink::from_pin(&pin)
                .with_context(|| format!("cannot open the kept link {}", pin.display()))?;
            let fd_link: FdLink = pinned
                .unpin()
                .with_context(|| format!("cannot unpin {}", pin.display()))?;
            let link = XdpLink::try_from(fd_link).context("the kept link is not an XDP link")?;
            let program: &mut Xdp = program_mut(&mut self.ebpf)?;
            let id = program
                .attach_to_link(link)
                .map_err(|e| anyhow!("cannot take over {}'s program: {e:#}", iface.name))?;
            self.attached.push((iface, id));
        }
        self.attach(mode)
    }

    /// Leaves the program attached and its maps alive after this process exits: every map and
    /// every interface's link pinned in `dir` (which must exist on a bpffs). The next
    /// [`Balancer::load_with`] and [`Balancer::attach_adopting`] on `dir` take them over.
    pub fn keep(&mut self, dir: &Path) -> Result<()> {
        for (name, data) in &self.handles {
            let path = dir.join(name);
            data.pin(&path)
                .map_err(|e| anyhow!("cannot pin map {name} at {}: {e}", path.display()))?;
        }
        let program: &mut Xdp = program_mut(&mut self.ebpf)?;
        for (iface, id) in self.attached.drain(..) {
            let link = program.take_link(id)?;
            let fd_link = FdLink::try_from(link).context("the XDP attachment is not a bpf_link")?;
            let path = link_pin(dir, &iface.name);
            fd_link.pin(&path).map_err(|e| {
                anyhow!(
                    "cannot pin {}'s link at {}: {e}",
                    iface.name,
                    path.display()
                )
            })?;
        }
        Ok(())
    }

    /// The interfaces the program serves (attached or not).
    pub fn interfaces(&self) -> &[Interface] {
        &self.interfaces
    }

    /// Attaches to every interface given to `load` that is not attached yet. All or nothing:
    /// if one attach is refused, those already made are undone and the error names the
    /// interface.
    pub fn attach(&mut self, mode: AttachMode) -> Result<()> {
        let pending: Vec<Interface> = self
            .interfaces
            .iter()
            .filter(|i| !self.attached.iter().any(|(a, _)| a.name == i.name))
            .cloned()
            .collect();
        for iface in pending {
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

    /// Forwards the program's log records (rare events only) to the `log` crate.
    pub fn flush_log(&mut self) {
        self.logger.flush();
    }

    /// Writes real-server slot `slot`.
    pub(crate) fn write_real(&mut self, slot: u32, real: &common::RealServer) -> Result<()> {
        self.maps
            .reals
            .set(slot, real, 0)
            .with_context(|| format!("writing REALS[{slot}]"))
    }

    /// Writes `slots` into the scheduling array from `start` on.
    pub(crate) fn write_sched(&mut self, start: u32, slots: &[u32]) -> Result<()> {
        for (i, slot) in slots.iter().enumerate() {
            let at = start + i as u32;
            self.maps
                .sched
                .set(at, slot, 0)
                .with_context(|| format!("writing SCHED[{at}]"))?;
        }
        Ok(())
    }

    fn zeroes<T: Clone + aya::Pod>(&self, v: T) -> Result<aya::maps::PerCpuValues<T>> {
        Ok(aya::maps::PerCpuValues::try_from(vec![v; self.cpus])?)
    }

    /// Zeroes the counters of real-server slot `slot` (before it is used again).
    pub(crate) fn zero_real_counters(&mut self, slot: u32) -> Result<()> {
        let zero = self.zeroes(Counters::default())?;
        self.maps
            .real_stats
            .set(slot, zero, 0)
            .with_context(|| format!("zeroing REAL_STATS[{slot}]"))
    }

    /// Zeroes the counters and round-robin positions of service id `id` (before it is used
    /// again).
    pub(crate) fn zero_service(&mut self, id: u32) -> Result<()> {
        let zero = self.zeroes(Counters::default())?;
        self.maps
            .service_stats
            .set(id, zero, 0)
            .with_context(|| format!("zeroing SERVICE_STATS[{id}]"))?;
        let zero = self.zeroes(0u32)?;
        self.maps
            .rr
            .set(id, zero, 0)
            .with_context(|| format!("zeroing RR[{id}]"))
    }

    /// Inserts or replaces a `SERVICES` entry: one atomic replacement, seen whole or not at all.
    pub(crate) fn put_service(
        &mut self,
        key: &common::ServiceKey,
        value: &common::Service,
    ) -> Result<()> {
        self.maps
            .services
            .insert(key, value, 0)
            .context("writing SERVICES")
    }

    pub(crate) fn remove_service(&mut self, key: &common::ServiceKey) -> Result<()> {
        self.maps
            .services
            .remove(key)
            .context("removing from SERVICES")
    }

    fn sum(m: &PerCpuArray<MapData, Counters>, i: u32) -> Result<Counters> {
        let per_cpu = m.get(&i, 0)?;
        Ok(per_cpu.iter().fold(Counters::default(), |a, c| add(a, *c)))
    }

    /// Counters of real-server slot `slot`, summed over the CPUs.
    pub(crate) fn real_counters(&self, slot: u32) -> Result<Counters> {
        Self::sum(&self.maps.real_stats, slot)
            .with_context(|| format!("reading REAL_STATS[{slot}]"))
    }

    /// Counters of service id `id` (its drops), summed over the CPUs.
    pub(crate) fn service_counters(&self, id: u32) -> Result<Counters> {
        Self::sum(&self.maps.service_stats, id)
            .with_context(|| format!("reading SERVICE_STATS[{id}]"))
    }

    /// `GLOBAL_STATS`, summed over the CPUs, indexed by [`reason`]. `FORWARDED` is not counted
    /// there (see [`reason`]): the caller fills it in.
    pub(crate) fn global_counters(&self) -> Result<Vec<Counters>> {
        (0..reason::COUNT)
            .map(|i| {
                Self::sum(&self.maps.global_stats, i)
                    .with_context(|| format!("reading GLOBAL_STATS[{i}]"))
            })
            .collect()
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

    /// Entries of the IPv6 flow table, buckets then overflow.
    pub fn flows_v6(&self) -> Result<FlowsV6> {
        let mut flows = self
            .buckets6
            .as_ref()
            .map(|b| b.flows())
            .unwrap_or_default();
        for r in self.maps.flows6.iter() {
            flows.push(r.context("reading FLOWS_V6")?);
        }
        Ok(flows)
    }

    /// IPv4 flows remembered now: (in the buckets, in the overflow hash).
    pub fn flow_table_counts(&self) -> Result<(u64, u64)> {
        let (buckets, overflow) = self.flows_v4_by_place()?;
        Ok((buckets.len() as u64, overflow.len() as u64))
    }

    /// The IPv4 flows in the buckets, and those in the overflow hash.
    fn flows_v4_by_place(&self) -> Result<(FlowsV4, FlowsV4)> {
        let in_buckets = self.buckets.flows();
        let in_overflow = self
            .maps
            .flows
            .iter()
            .map(|r| r.context("reading FLOWS_V4"))
            .collect::<Result<_>>()?;
        Ok((in_buckets, in_overflow))
    }

    /// How many flows the IPv4 flow table can hold at most: every way of every bucket, plus the
    /// overflow hash. It holds `flow_table_size` flows at least, whatever their hashes.
    pub fn flow_capacity(&self) -> u64 {
        let (buckets, overflow) = flow_table::sizes(self.capacity.flow_table_size);
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

fn program_mut(ebpf: &mut Ebpf) -> Result<&mut Xdp> {
    ebpf.program_mut(common::PROGRAM)
        .ok_or_else(|| anyhow!("program {} missing from the object", common::PROGRAM))?
        .try_into()
        .context("program has an unexpected type")
}

/// Where interface `iface`'s link is pinned in a kept director's directory.
fn link_pin(dir: &Path, iface: &str) -> std::path::PathBuf {
    dir.join(format!("link-{iface}"))
}

/// The sum of two sets of counters.
pub fn add(a: Counters, b: Counters) -> Counters {
    Counters {
        packets: a.packets + b.packets,
        bytes: a.bytes + b.bytes,
        conns: a.conns + b.conns,
        drops: a.drops + b.drops,
    }
}
