//! The director: the services of [`crate::model`] kept in the kernel's maps ([`Balancer`]).
//!
//! Every change goes through [`Director::apply`] (ipvsadm's operations) or
//! [`Director::reconcile`] (a whole new state, as a configuration gives it): the change is
//! checked whole against the current state, everything it needs (MACs, places in the maps) is
//! found before anything is written, new entries are written where no packet looks yet, and then
//! each service is switched over with one replacement of its `SERVICES` entry. A packet sees a
//! service as it was or as it is, never half of each.
use std::{
    collections::{BTreeMap, BTreeSet, HashMap, HashSet},
    fmt,
    net::IpAddr,
    thread,
    time::{Duration, Instant},
};

use anyhow::{Result, anyhow, bail};
use lvs_xdp_common::{self as common, Counters, flow_table, reason, service_flags};

use crate::{
    alloc::{Pool, Ranges},
    balancer::{AttachMode, Balancer, add, maglev_tables, sched_capacity},
    config::Config,
    direct, flowtable,
    health::{Health, HealthState},
    iface::Interface,
    listing::{RealView, ServiceView, Snapshot, Zeroed},
    maglev,
    model::{Mac, Op, Protocol, RealOpts, Refusal, Scheduler, ServiceKey, State},
    neigh,
};

/// Seconds between two passes that unpin Maglev entries (each reads the whole flow table,
/// and only runs when some entry's grace has passed).
const UNPIN_EVERY: u32 = 5;

/// A connection in the flow table.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Connection {
    pub protocol: Protocol,
    pub client: IpAddr,
    pub client_port: u16,
    pub service: ServiceKey,
    /// The real server (its port is the service's).
    pub real: IpAddr,
    /// Its state, as ipvsadm names them (`ESTABLISHED`, `FIN_WAIT`, `UDP`, ...).
    pub state: String,
    /// Seconds until it expires if it stays idle.
    pub expires: u32,
}

/// Where real servers without an explicit MAC are looked up.
#[derive(Clone, Debug)]
pub struct Resolver {
    pub ifindex: u32,
    pub ifname: String,
    /// How long to wait for ARP to answer.
    pub timeout: Duration,
}

/// How [`Director::start`] brings a director up.
#[derive(Clone, Debug)]
pub struct StartOptions {
    /// Interfaces to attach to; real servers are resolved on the first.
    pub interfaces: Vec<String>,
    pub mode: AttachMode,
    /// How long to wait for ARP to resolve the real servers' MACs.
    pub resolve_timeout: Duration,
    /// When a director kept on these interfaces is taken over: make it hold the
    /// configuration's services (true), or keep its own (false: no configuration was given).
    pub reconcile_kept: bool,
}

impl StartOptions {
    /// The interfaces, each once, each an Ethernet interface of this network namespace.
    pub fn lookup_interfaces(&self) -> Result<Vec<Interface>> {
        if self.interfaces.is_empty() {
            bail!("no interface given (--iface)");
        }
        let mut seen = HashSet::new();
        let mut interfaces = Vec::new();
        for name in &self.interfaces {
            if !seen.insert(name) {
                bail!("interface {name} given twice");
            }
            interfaces.push(Interface::lookup(name)?);
        }
        Ok(interfaces)
    }
}

/// Why an operation did not happen.
#[derive(Debug)]
pub enum ApplyError {
    /// The state refused op number `op` of the batch (ipvsadm's "No such service", ...).
    Refused { op: usize, refusal: Refusal },
    /// The operation was valid, but could not be carried out (a MAC that did not resolve, no
    /// room left in the maps, a map write the kernel refused). Nothing was applied, except
    /// where the message says otherwise.
    Failed(anyhow::Error),
}

impl fmt::Display for ApplyError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ApplyError::Refused { refusal, .. } => write!(f, "{refusal}"),
            ApplyError::Failed(e) => write!(f, "{e:#}"),
        }
    }
}

impl std::error::Error for ApplyError {}

/// A real server as placed in the maps.
#[derive(Clone, Copy, Debug, serde::Serialize, serde::Deserialize)]
struct PlacedReal {
    slot: u32,
    mac: Mac,
    generation: u32,
    /// As the data plane's connection-based schedulers read it.
    #[serde(default)]
    weight: u16,
    /// The VLAN frames to it are tagged with (0: none).
    #[serde(default)]
    vlan: u16,
    /// It failed its health check (`RealServer::DOWN`).
    #[serde(default)]
    down: bool,
}

/// A service as placed in the maps.
#[derive(Clone, Debug)]
struct Placed {
    id: u32,
    /// Its range of scheduling slots and what they hold.
    sched_start: u32,
    scheduled: Vec<u32>,
    value: common::Service,
    reals: BTreeMap<IpAddr, PlacedReal>,
    /// Counters of real servers it no longer has.
    retired: Counters,
}

/// Counters as plain numbers (packets, bytes, conns, drops), for an [`Image`].
fn to_array(c: Counters) -> [u64; 4] {
    [c.packets, c.bytes, c.conns, c.drops]
}

fn from_array(a: [u64; 4]) -> Counters {
    Counters {
        packets: a[0],
        bytes: a[1],
        conns: a[2],
        drops: a[3],
    }
}

/// A service's placement, as an [`Image`] keeps it.
#[derive(Clone, Debug, serde::Serialize, serde::Deserialize)]
struct PlacedImage {
    key: ServiceKey,
    id: u32,
    sched_start: u32,
    scheduled: Vec<u32>,
    scheduler: u16,
    /// Its Maglev table (`mh`).
    #[serde(default)]
    table: u32,
    reals: Vec<(IpAddr, PlacedReal)>,
    retired: [u64; 4],
}

/// Everything a director knows that its maps do not say: its state, where each service and
/// real server is placed, and the counters of what is gone. Saved by a restart that keeps the
/// program and maps, and taken up by the next `run` ([`Director::adopt`]).
#[derive(Clone, Debug, serde::Serialize, serde::Deserialize)]
pub struct Image {
    ops: Vec<Op>,
    placed: Vec<PlacedImage>,
    /// The last generation each slot was given (slots never used are left out).
    generations: Vec<(u32, u16)>,
    retiring: Vec<(u32, Option<(ServiceKey, u32)>)>,
    retired_forwarded: [u64; 4],
    zeroed: Zeroed,
}

/// What one service becomes in a reconcile, before anything is written.
struct Plan {
    key: ServiceKey,
    id: u32,
    new_id: bool,
    reals: BTreeMap<IpAddr, PlacedReal>,
    /// Fresh slots, to write before the service points at them.
    new_slots: Vec<u32>,
    /// Kept slots whose MAC or weight changes (written in place: their flows stay).
    new_macs: Vec<u32>,
    /// The scheduled real servers' slots, in range order, after the change.
    scheduled: Vec<u32>,
    /// The service's range before the change (start, length).
    old_range: (u32, u32),
    /// Scheduling positions to write (position, slot). Those inside the old range are written
    /// when the service is switched (each one a valid slot of the service at every moment);
    /// the others (a fresh range, or the grown end of the old one) before.
    sched_writes: Vec<(u32, u32)>,
    /// Places taken from the allocator for this plan (start, length): given back if the plan
    /// is dropped.
    sched_taken: Option<(u32, u32)>,
    /// Places given up once the service is switched (start, length): the old range, or the
    /// tail it shrank by.
    sched_freed: Option<(u32, u32)>,
    value: common::Service,
    /// Slots of real servers the service no longer has.
    gone: Vec<u32>,
    /// `mh`: the table written for this plan (given back if the plan is dropped), and the one
    /// given up once the service is switched.
    table_taken: Option<u32>,
    table_freed: Option<u32>,
    /// `mh`: the new table's pinned entries (see [`crate::direct`]).
    pins: BTreeMap<u32, u32>,
}

/// The director: its state, and that state in the kernel's maps.
pub struct Director {
    balancer: Balancer,
    state: State,
    placed: BTreeMap<ServiceKey, Placed>,
    ids: Pool,
    slots: Pool,
    sched: Ranges,
    /// Maglev tables (`mh` services).
    tables: Pool,
    /// The last generation each slot was given (0: never used); see [`next_generation`].
    generations: Vec<u16>,
    markers: BTreeSet<(IpAddr, Protocol)>,
    /// Slots given up and not yet reused, with the service (key, id) they belonged to: their
    /// counters still count in that service's totals until they are folded into `retired`.
    retiring: HashMap<u32, Option<(ServiceKey, u32)>>,
    /// Forwarded traffic of slots given up (the `forwarded` verdict stays monotonic).
    retired_forwarded: Counters,
    resolver: Option<Resolver>,
    /// What `-Z` zeroed.
    zeroed: Zeroed,
    /// The flow tables' sweeps (IPv4, IPv6), and the clock second they last ran.
    sweep: flowtable::Sweep<flowtable::V4>,
    sweep6: flowtable::Sweep<flowtable::V6>,
    last_maintained: u32,
    /// Health checking; `state` holds its overlay of the checked services.
    health: HealthState,
    /// The pinned entries of each `mh` service's table, and the clock second each was pinned
    /// (see [`crate::direct`]); the clock second of the last unpinning pass.
    pins: HashMap<ServiceKey, BTreeMap<u32, u32>>,
    last_unpinned: u32,
    /// Which service holds each entry of `DIRECT` in use.
    direct: BTreeMap<u32, ServiceKey>,
    /// When the direct path is on (see [`crate::config::DirectPath`]), and whether it is now.
    direct_mode: crate::config::DirectPath,
    direct_on: bool,
}

/// The service an op names (none for `-C` and `--set`).
fn op_service(op: &Op) -> Option<ServiceKey> {
    match op {
        Op::AddService(k, _)
        | Op::EditService(k, _)
        | Op::DeleteService(k)
        | Op::AddReal(k, ..)
        | Op::EditReal(k, ..)
        | Op::DeleteReal(k, _) => Some(*k),
        Op::Clear | Op::SetTimeouts(_) => None,
    }
}

/// An address as the data plane holds it: four words of its bytes as on the wire (IPv4: the
/// first word, the rest zero).
fn addr_words(addr: IpAddr) -> [u32; 4] {
    let mut words = [0u32; 4];
    let (v4, v6);
    let octets: &[u8] = match addr {
        IpAddr::V4(a) => {
            v4 = a.octets();
            &v4
        }
        IpAddr::V6(a) => {
            v6 = a.octets();
            &v6
        }
    };
    for (word, chunk) in words.iter_mut().zip(octets.chunks_exact(4)) {
        *word = u32::from_ne_bytes(chunk.try_into().expect("chunks of four"));
    }
    words
}

/// The address of [`addr_words`]' words, of the family given.
fn words_addr(words: [u32; 4], v6: bool) -> IpAddr {
    let mut octets = [0u8; 16];
    for (chunk, word) in octets.chunks_exact_mut(4).zip(words) {
        chunk.copy_from_slice(&word.to_ne_bytes());
    }
    if v6 {
        IpAddr::from(octets)
    } else {
        IpAddr::from([octets[0], octets[1], octets[2], octets[3]])
    }
}

fn kernel_key(key: &ServiceKey) -> common::ServiceKey {
    common::ServiceKey {
        addr: addr_words(key.addr),
        family: if key.addr.is_ipv6() {
            common::FAMILY_V6
        } else {
            common::FAMILY_V4
        },
        port: u16::from_ne_bytes(key.port.to_be_bytes()),
        proto: key.protocol.number(),
    }
}

/// The marker of (address, protocol): port 0, never a service's (see `ADDRESS_MARKER`).
fn marker_key(addr: IpAddr, protocol: Protocol) -> common::ServiceKey {
    kernel_key(&ServiceKey {
        protocol,
        addr,
        port: 0,
    })
}

/// Persistence as the data plane reads it: (timeout, the netmask as on the wire); (0, 0) none.
fn persist_fields(opts: &crate::model::ServiceOpts) -> (u32, [u32; 4]) {
    opts.persistence
        .map_or((0, [0; 4]), |p| (p.timeout, addr_words(p.netmask)))
}

/// The data plane's flags for a service's options.
fn kernel_flags(opts: &crate::model::ServiceOpts) -> u16 {
    let mut flags = 0;
    if opts.flags.port {
        flags |= service_flags::MH_PORT;
    }
    if opts.flags.fallback && opts.scheduler == Scheduler::SourceHashing {
        flags |= service_flags::SH_FALLBACK;
    }
    flags
}

fn scheduler_id(s: Scheduler) -> u16 {
    match s {
        Scheduler::RoundRobin => common::scheduler::RR,
        Scheduler::Maglev => common::scheduler::MH,
        // Round robin over the cycle of turns that the scheduling range holds.
        Scheduler::WeightedRoundRobin => common::scheduler::RR,
        Scheduler::LeastConnection => common::scheduler::LC,
        Scheduler::WeightedLeastConnection => common::scheduler::WLC,
        Scheduler::ShortestExpectedDelay => common::scheduler::SED,
        Scheduler::NeverQueue => common::scheduler::NQ,
        Scheduler::WeightedFailover => common::scheduler::FO,
        Scheduler::WeightedOverflow => common::scheduler::OVF,
        Scheduler::SourceHashing => common::scheduler::SH,
        Scheduler::DestinationHashing => common::scheduler::DH,
        Scheduler::TwoChoices => common::scheduler::TWOS,
    }
}

impl Director {
    /// Loads the program sized for `config`, serving `interfaces`, and places `config`'s
    /// services. Real servers without a MAC are resolved with `resolver`.
    pub fn load(
        config: &Config,
        interfaces: &[Interface],
        resolver: Option<Resolver>,
    ) -> Result<Director> {
        let balancer = Balancer::load(&config.capacity, interfaces)?;
        let mut director = Director::new(balancer, resolver);
        director.reconcile(config.state.clone())?;
        Ok(director)
    }

    /// Checks the interfaces, resolves every real server's MAC, loads and fills the maps, and
    /// attaches. Any failure leaves nothing attached.
    ///
    /// A director that `run --keep` left on these interfaces is taken over instead: its maps
    /// (flow table included) and seed are reused, its program replaced in one step, and then
    /// it is reconciled with `config` (when `opts.reconcile_kept`).
    pub fn start(config: &Config, opts: &StartOptions) -> Result<Director> {
        let interfaces = opts.lookup_interfaces()?;
        let primary = &interfaces[0];
        let resolver = Resolver {
            ifindex: primary.index,
            ifname: primary.name.clone(),
            timeout: opts.resolve_timeout,
        };
        let mut director = match crate::keep::kept(&primary.name)? {
            Some(kept) => Director::take_over(kept, config, opts, &interfaces, resolver)?,
            None => {
                let mut d = Director::load(config, &interfaces, Some(resolver))?;
                d.balancer.attach(opts.mode)?;
                d
            }
        };
        if !config.health.is_empty() {
            director.set_health(config.health.clone())?;
        }
        for iface in &interfaces {
            if opts.mode != AttachMode::Generic
                && crate::iface::driver(&iface.name).as_deref() == Some("veth")
            {
                log::warn!(
                    "{} is a veth: in native mode, frames sent back with XDP_TX reach its peer only if the peer runs an XDP program too (or use --mode generic)",
                    iface.name
                );
            }
            let vlans = crate::netlink::Rtnl::open()
                .and_then(|mut nl| nl.vlans_on(iface.index))
                .unwrap_or_default();
            if !vlans.is_empty() && crate::iface::rx_vlan_offload(&iface.name) == Some(true) {
                log::warn!(
                    "{} strips 802.1Q tags before XDP sees them (rx-vlan-offload on) and has VLAN interfaces ({}): tagged traffic for a VIP would be forwarded untagged; turn the offload off with `ethtool -K {} rxvlan off`",
                    iface.name,
                    vlans
                        .iter()
                        .map(|v| v.name.as_str())
                        .collect::<Vec<_>>()
                        .join(", "),
                    iface.name
                );
            }
        }
        Ok(director)
    }

    fn take_over(
        kept: crate::keep::Kept,
        config: &Config,
        opts: &StartOptions,
        interfaces: &[Interface],
        resolver: Resolver,
    ) -> Result<Director> {
        if kept.interfaces != opts.interfaces {
            bail!(
                "a director was kept on {}: run on the same interfaces (or remove {})",
                kept.interfaces.join(", "),
                crate::keep::state_path(&kept.interfaces[0]).display()
            );
        }
        if kept.capacity != config.capacity {
            log::warn!(
                "the kept director's tables stay as they were made ({} services, {} real servers, {} flows, {} mh services of {} entries); restart without --keep to resize them",
                kept.capacity.services,
                kept.capacity.real_servers,
                kept.capacity.flow_table_size,
                kept.capacity.mh_services,
                kept.capacity.maglev_table_size
            );
        }
        let first = &opts.interfaces[0];
        let dir = crate::keep::pin_dir(first);
        let balancer =
            Balancer::load_with(&kept.capacity, interfaces, Some(kept.seed), Some(&dir))?;
        let mut director = Director::adopt(balancer, kept.director, Some(resolver))?;
        // The kept table may hold IPv6 flows, whatever the services are now.
        director.balancer.map_v6()?;
        director.balancer.attach_adopting(opts.mode, &dir)?;
        // Taken over: from here on this process holds everything; a crash leaves nothing.
        crate::keep::forget(first)?;
        log::info!(
            "took over the director kept on {}: {} service(s), flow table kept",
            opts.interfaces.join(", "),
            director.state.services.len()
        );
        if opts.reconcile_kept {
            director.reconcile(config.state.clone())?;
        }
        Ok(director)
    }

    /// What must be saved to take this director over after a restart.
    pub fn image(&self) -> Image {
        let mut ops = self.state.to_ops();
        ops.push(Op::SetTimeouts(self.state.timeouts));
        Image {
            ops,
            placed: self
                .placed
                .iter()
                .map(|(key, p)| PlacedImage {
                    key: *key,
                    id: p.id,
                    sched_start: p.sched_start,
                    scheduled: p.scheduled.clone(),
                    scheduler: p.value.scheduler,
                    table: p.value.table,
                    reals: p.reals.iter().map(|(a, r)| (*a, *r)).collect(),
                    retired: to_array(p.retired),
                })
                .collect(),
            generations: (0u32..)
                .zip(&self.generations)
                .filter(|(_, g)| **g != 0)
                .map(|(s, g)| (s, *g))
                .collect(),
            retiring: self.retiring.iter().map(|(s, o)| (*s, *o)).collect(),
            retired_forwarded: to_array(self.retired_forwarded),
            zeroed: self.zeroed.clone(),
        }
    }

    /// Takes over the services that `image` describes, over a program loaded with the maps
    /// they are in. Refuses an image that does not match its own state, or the maps' capacity.
    pub fn adopt(balancer: Balancer, image: Image, resolver: Option<Resolver>) -> Result<Director> {
        let state = State::default().after(&image.ops).map_err(|(i, r)| {
            anyhow!(
                "the kept state is inconsistent (op {}): {}",
                i + 1,
                r.detail()
            )
        })?;
        let capacity = *balancer.capacity();
        let mut placed = BTreeMap::new();
        let (mut ids, mut slots, mut ranges) = (BTreeSet::new(), BTreeSet::new(), Vec::new());
        let mut tables = BTreeSet::new();
        for p in image.placed {
            let svc = state.services.get(&p.key).ok_or_else(|| {
                anyhow!("the kept placement names {} but the state does not", p.key)
            })?;
            let reals: BTreeMap<IpAddr, PlacedReal> = p.reals.into_iter().collect();
            if reals.len() != svc.reals.len() || reals.keys().any(|a| !svc.reals.contains_key(a)) {
                bail!(
                    "the kept placement of {} does not match its real servers",
                    p.key
                );
            }
            let too_big = p.id >= capacity.services
                || reals.values().any(|r| r.slot >= capacity.real_servers)
                || p.sched_start as usize + p.scheduled.len()
                    > sched_capacity(capacity.real_servers) as usize;
            if too_big {
                bail!("the kept placement of {} does not fit the maps", p.key);
            }
            ids.insert(p.id);
            slots.extend(reals.values().map(|r| r.slot));
            ranges.push((p.sched_start, p.scheduled.len() as u32));
            if p.scheduler == common::scheduler::MH {
                if p.table >= maglev_tables(&capacity) {
                    bail!("the kept placement of {} does not fit the maps", p.key);
                }
                tables.insert(p.table);
            }
            placed.insert(
                p.key,
                Placed {
                    id: p.id,
                    sched_start: p.sched_start,
                    value: common::Service {
                        id: p.id,
                        sched_start: p.sched_start,
                        sched_len: p.scheduled.len() as u32,
                        table: p.table,
                        scheduler: p.scheduler,
                        flags: kernel_flags(&svc.opts),
                        persist_timeout: persist_fields(&svc.opts).0,
                        persist_mask: persist_fields(&svc.opts).1,
                    },
                    scheduled: p.scheduled,
                    reals,
                    retired: from_array(p.retired),
                },
            );
        }
        slots.extend(image.retiring.iter().map(|(s, _)| *s));
        let mut director = Director {
            ids: Pool::with_used(capacity.services, &ids),
            slots: Pool::with_used(capacity.real_servers, &slots),
            sched: Ranges::with_used(sched_capacity(capacity.real_servers), &ranges),
            tables: Pool::with_used(maglev_tables(&capacity), &tables),
            balancer,
            markers: placed.keys().map(|k| (k.addr, k.protocol)).collect(),
            placed,
            state,
            generations: generations_from(&image.generations, capacity.real_servers),
            retiring: image.retiring.iter().copied().collect(),
            retired_forwarded: from_array(image.retired_forwarded),
            resolver,
            zeroed: image.zeroed,
            sweep: flowtable::Sweep::default(),
            sweep6: flowtable::Sweep::default(),
            last_maintained: 0,
            health: HealthState::default(),
            pins: HashMap::new(),
            last_unpinned: 0,
            direct: BTreeMap::new(),
            direct_mode: capacity.direct_path,
            direct_on: capacity.direct_path == crate::config::DirectPath::Always,
        };
        director.write_clock()?;
        director.adopt_direct()?;
        // Slots that were waiting out their grace wait once more, from now.
        let now = Instant::now();
        for (slot, _) in &image.retiring {
            director.slots.release(*slot, now);
        }
        Ok(director)
    }

    /// A director with no service over a loaded program.
    pub fn new(balancer: Balancer, resolver: Option<Resolver>) -> Director {
        let capacity = *balancer.capacity();
        Director {
            balancer,
            state: State::default(),
            placed: BTreeMap::new(),
            ids: Pool::new(capacity.services),
            slots: Pool::new(capacity.real_servers),
            sched: Ranges::new(sched_capacity(capacity.real_servers)),
            tables: Pool::new(maglev_tables(&capacity)),
            generations: vec![0; capacity.real_servers as usize],
            markers: BTreeSet::new(),
            retiring: HashMap::new(),
            retired_forwarded: Counters::default(),
            resolver,
            zeroed: Zeroed::default(),
            sweep: flowtable::Sweep::default(),
            sweep6: flowtable::Sweep::default(),
            last_maintained: 0,
            health: HealthState::default(),
            pins: HashMap::new(),
            last_unpinned: 0,
            direct: BTreeMap::new(),
            direct_mode: capacity.direct_path,
            direct_on: capacity.direct_path == crate::config::DirectPath::Always,
        }
    }

    pub fn state(&self) -> &State {
        &self.state
    }

    pub fn balancer(&self) -> &Balancer {
        &self.balancer
    }

    pub fn balancer_mut(&mut self) -> &mut Balancer {
        &mut self.balancer
    }

    /// The interface whose neighbour table real servers without an explicit MAC come from.
    pub fn resolver(&self) -> Option<&Resolver> {
        self.resolver.as_ref()
    }

    /// Follows a neighbour-table change: every real server at `addr` without an explicit MAC
    /// is sent to `mac` from now on, its connections kept (its slot and generation stay; the
    /// MAC is rewritten in place). Returns how many real servers moved.
    pub fn follow_neighbour(&mut self, addr: IpAddr, mac: Mac) -> Result<usize> {
        if !mac.is_unicast() {
            return Ok(0);
        }
        let mut moved = 0;
        for (key, placed) in self.placed.iter_mut() {
            let explicit = self.state.services[key]
                .reals
                .get(&addr)
                .is_some_and(|r| r.mac.is_some());
            let Some(real) = placed.reals.get_mut(&addr) else {
                continue;
            };
            if explicit || real.mac == mac {
                continue;
            }
            real.mac = mac;
            self.balancer
                .write_real(real.slot, &real_entry(real, placed.id))?;
            moved += 1;
        }
        Ok(moved)
    }

    /// `-Z`: from now on the listings count service `key`'s traffic (every service's, with
    /// `None`) from zero.
    pub fn zero(&mut self, key: Option<ServiceKey>) -> Result<(), ApplyError> {
        if let Some(k) = key
            && !self.placed.contains_key(&k)
        {
            return Err(ApplyError::Refused {
                op: 0,
                refusal: Refusal::NoService(k),
            });
        }
        let snap = self.snapshot().map_err(ApplyError::Failed)?;
        for svc in snap
            .services
            .iter()
            .filter(|s| key.is_none_or(|k| s.key == k))
        {
            self.zeroed.zero(svc);
        }
        Ok(())
    }

    /// What `-Z` zeroed.
    pub fn zeroed(&self) -> &Zeroed {
        &self.zeroed
    }

    /// The real-server slot that real server `addr` of service `key` uses (flows in the flow
    /// table name real servers by slot).
    pub fn slot_of(&self, key: &ServiceKey, addr: impl Into<IpAddr>) -> Option<u32> {
        let addr = addr.into();
        Some(self.placed.get(key)?.reals.get(&addr)?.slot)
    }

    /// Applies ipvsadm's operations `ops`, all or none. They change the services as configured;
    /// a service with health checks is then given to the kernel with its failed real servers
    /// out (see [`crate::health::overlay`]).
    pub fn apply(&mut self, ops: &[Op]) -> Result<(), ApplyError> {
        let refused = |(op, refusal)| ApplyError::Refused { op, refusal };
        if ops.iter().any(|o| matches!(o, Op::Clear)) {
            let next = self.configured().after(ops).map_err(refused)?;
            return self.reconcile(next).map_err(ApplyError::Failed);
        }
        // Only the services the ops name are copied and changed: a change to one service of a
        // director of 10 000 costs one service's work.
        let touched: BTreeSet<ServiceKey> = ops.iter().filter_map(op_service).collect();
        let part = State {
            services: touched
                .iter()
                .filter_map(|k| Some((*k, self.configured_service(k)?.clone())))
                .collect(),
            timeouts: self.state.timeouts,
        };
        let next = part.after(ops).map_err(refused)?;
        let gone: Vec<ServiceKey> = touched
            .iter()
            .filter(|k| !next.services.contains_key(k) && self.placed.contains_key(k))
            .copied()
            .collect();
        self.change_configured(next, &gone)
            .map_err(ApplyError::Failed)
    }

    /// Makes the kernel hold `next` (as configured: health checks apply), changing only what
    /// differs from the current state. Fails before writing anything visible when a MAC does
    /// not resolve or the maps have no room.
    pub fn reconcile(&mut self, next: State) -> Result<()> {
        let gone: Vec<ServiceKey> = self
            .placed
            .keys()
            .filter(|k| !next.services.contains_key(k))
            .copied()
            .collect();
        self.change_configured(next, &gone)
    }

    /// A configured service: as the operator set it (for a checked service, its real servers'
    /// weights before the health checks).
    fn configured_service(&self, key: &ServiceKey) -> Option<&crate::model::Service> {
        self.health
            .configured
            .get(key)
            .or_else(|| self.state.services.get(key))
    }

    /// Every service as configured.
    pub fn configured(&self) -> State {
        let mut state = self.state.clone();
        for (k, svc) in &self.health.configured {
            state.services.insert(*k, svc.clone());
        }
        state
    }

    /// [`Director::change`] for services as configured: the checked ones are overlaid first,
    /// and the health bookkeeping follows only once the kernel holds the change.
    fn change_configured(&mut self, mut next: State, gone: &[ServiceKey]) -> Result<()> {
        let mut configured = Vec::new();
        let mut shown = Vec::new();
        for (key, svc) in next.services.iter_mut() {
            if let Some((effective, how)) = self.health.effective(key, svc) {
                configured.push((*key, std::mem::replace(svc, effective)));
                shown.push((*key, how));
            }
        }
        self.change(&next, gone)?;
        for key in gone {
            self.health.configured.remove(key);
            self.health.shown.remove(key);
        }
        self.health.configured.extend(configured);
        self.health.shown.extend(shown);
        self.health.prune();
        Ok(())
    }

    /// The VIPs that can take a new connection: those with a service that has a real server
    /// (or its sorry server) of weight above 0 in the kernel. Route health injection announces
    /// these.
    pub fn serving_vips(&self) -> BTreeSet<IpAddr> {
        self.state
            .services
            .iter()
            .filter(|(_, s)| s.reals.values().any(|r| r.weight > 0))
            .map(|(k, _)| k.addr)
            .collect()
    }

    /// The health checking: its settings, trackers, and how real servers appear.
    pub fn health(&self) -> &HealthState {
        &self.health
    }

    /// Takes new health settings (at start, or a reload): every service is given to the kernel
    /// again as its new settings say; trackers of real servers still checked keep their state.
    /// All or nothing.
    pub fn set_health(&mut self, config: Health) -> Result<()> {
        let configured = self.configured();
        self.reconcile_with_health(config, configured)
    }

    /// Takes health settings `health` and the configured services `state` together, all or
    /// nothing: trackers of real servers still checked keep their state.
    fn reconcile_with_health(&mut self, health: Health, state: State) -> Result<()> {
        let saved = self.health.clone();
        self.health.config = health;
        self.health.configured.clear();
        self.health.shown.clear();
        let result = self.reconcile(state);
        if result.is_err() {
            self.health = saved;
        }
        result
    }

    /// Makes the director what `config` says (a reload): its services, timeouts and health
    /// settings, changing only what differs, so established connections of services and real
    /// servers that stay are kept. All or nothing; the tables' sizes cannot change (a restart
    /// without `--keep` resizes them).
    pub fn reload(&mut self, config: &Config) -> Result<()> {
        let now = crate::config::Capacity {
            // Not a size: it follows the file.
            direct_path: config.capacity.direct_path,
            ..*self.balancer.capacity()
        };
        if config.capacity != now {
            bail!(
                "the tables' sizes differ from the running ones ({:?} against {:?}): they are fixed while the program runs; restart to change them",
                config.capacity,
                now
            );
        }
        self.reconcile_with_health(config.health.clone(), config.state.clone())?;
        if self.direct_mode != config.capacity.direct_path {
            self.direct_mode = config.capacity.direct_path;
            self.follow_direct_path()?;
        }
        Ok(())
    }

    /// Takes one check's result for real server `addr` of service `key`. When it changes the
    /// real server's state, the kernel is given the service's new overlay; returns the new
    /// state then (true: up). A result for a real server no longer checked is ignored.
    pub fn health_result(
        &mut self,
        key: &ServiceKey,
        addr: IpAddr,
        ok: bool,
    ) -> Result<Option<bool>> {
        let Some(check) = self
            .health
            .config
            .get(key)
            .and_then(|h| h.check_of(addr))
            .cloned()
        else {
            return Ok(None);
        };
        if !self
            .health
            .configured
            .get(key)
            .is_some_and(|s| s.reals.contains_key(&addr))
        {
            return Ok(None);
        }
        let saved = self.health.trackers.get(&(*key, addr)).copied();
        let tracker = self.health.trackers.entry((*key, addr)).or_default();
        let Some(up) = tracker.record(ok, &check) else {
            return Ok(None);
        };
        let configured = self.health.configured[key].clone();
        let next = State {
            services: [(*key, configured)].into(),
            timeouts: self.state.timeouts,
        };
        if let Err(e) = self.change_configured(next, &[]) {
            // Not applied: the tracker stays as it was, so the next result tries again.
            match saved {
                Some(t) => self.health.trackers.insert((*key, addr), t),
                None => self.health.trackers.remove(&(*key, addr)),
            };
            return Err(e);
        }
        Ok(Some(up))
    }

    /// Whether the checks' verdicts on service `key`'s real servers differ from the DOWN flags
    /// placed in the kernel (as when a real server of weight 0 fails or passes its check: its
    /// weight stays as it was).
    fn down_differs(&self, key: &ServiceKey) -> bool {
        let failed = self.health.down(key);
        self.placed.get(key).is_some_and(|p| {
            p.reals
                .iter()
                .any(|(addr, r)| r.down != failed.contains(addr))
        })
    }

    /// Makes the services of `next` (some or all of the director's) what they are there,
    /// removes those of `gone`, and takes `next`'s timeouts.
    fn change(&mut self, next: &State, gone: &[ServiceKey]) -> Result<()> {
        self.reclaim(Instant::now())?;
        if next.services.keys().any(|k| k.addr.is_ipv6()) {
            self.balancer.map_v6()?;
        }
        // Only the services that differ are planned.
        let changed: Vec<(&ServiceKey, &crate::model::Service)> = next
            .services
            .iter()
            .filter(|(k, s)| {
                !self.placed.contains_key(k)
                    || self.state.services.get(k) != Some(*s)
                    || self.down_differs(k)
            })
            .collect();
        self.make_room(&changed)?;
        let macs = self.macs_for(&changed)?;
        let mut plans = Vec::new();
        for (key, svc) in changed {
            match self.plan(key, svc, &macs) {
                Ok(plan) => plans.push(plan),
                Err(e) => {
                    self.unplan(&plans);
                    return Err(e);
                }
            }
        }
        // Hidden: nothing points at these entries yet.
        if let Err(e) = self.write_hidden(&plans) {
            self.unplan(&plans);
            return Err(e);
        }
        // Visible: one service at a time; the bookkeeping follows each switch.
        let now = Instant::now();
        for plan in plans {
            self.switch(plan, next, now)?;
        }
        for key in gone {
            self.remove(key, now)?;
        }
        if self.state.timeouts != next.timeouts {
            self.state.timeouts = next.timeouts;
            self.write_clock()?;
        }
        self.sync_markers()
    }

    /// Writes the idle clock, now, with the state's timeouts.
    fn write_clock(&mut self) -> Result<()> {
        let clock = flowtable::clock(self.state.timeouts.per_state());
        self.balancer.set_clock(&clock)
    }

    /// The live generation of each real-server slot (0: not in use), for the sweep.
    fn live_generations(&self) -> Vec<u32> {
        let mut live = vec![0; self.generations.len()];
        for placed in self.placed.values() {
            for p in placed.reals.values() {
                if let Some(g) = live.get_mut(p.slot as usize) {
                    *g = p.generation;
                }
            }
        }
        live
    }

    /// The daemon's periodic work, done at most once a second: advances the idle clock and
    /// sweeps the next part of the flow table (see [`flowtable::Sweep`]).
    pub fn maintain(&mut self) -> Result<()> {
        let now = flowtable::now();
        if now == self.last_maintained {
            return Ok(());
        }
        self.last_maintained = now;
        let clock = flowtable::clock(self.state.timeouts.per_state());
        self.balancer.set_clock(&clock)?;
        let live = self.live_generations();
        let passes = self.sweep.passes;
        self.sweep_step(&clock, &live)?;
        if self.sweep.passes != passes {
            self.sweep_templates(&clock, &live)?;
        }
        if now.saturating_sub(self.last_unpinned) >= UNPIN_EVERY {
            self.last_unpinned = now;
            self.unpin(&clock, &live)?;
        }
        self.follow_direct_path()
    }

    /// Turns the direct path on or off as the configuration says (`auto`: by the connections
    /// the flow table holds, as the data plane counts them), and lists or unlists every `mh`
    /// service accordingly. Either way is safe at any moment: an entry whose real server
    /// changed is pinned whether the direct path is on or not.
    fn follow_direct_path(&mut self) -> Result<()> {
        let mode = self.direct_mode;
        let connections: u64 = self
            .placed
            .values()
            .flat_map(|p| p.reals.values())
            .map(|r| {
                let (a, i) = self.balancer.real_conns().get(r.slot);
                (a.max(0) + i.max(0)) as u64
            })
            .sum();
        let on = mode.on(self.direct_on, connections);
        if on == self.direct_on {
            return Ok(());
        }
        self.direct_on = on;
        log::info!(
            "direct path for mh services {} ({connections} connections in the flow table, direct_path = {})",
            if on { "on" } else { "off" },
            mode.name()
        );
        let services: Vec<(ServiceKey, common::Service)> =
            self.placed.iter().map(|(k, p)| (*k, p.value)).collect();
        for (key, value) in services {
            self.sync_direct(&key, Some(&value))?;
        }
        Ok(())
    }

    /// Whether the direct path is on now.
    pub fn direct_path_on(&self) -> bool {
        self.direct_on
    }

    /// Writes (or clears, with `None` or a service that does not qualify) the `DIRECT` entry
    /// of service `key`, before its new value is published: packets that see the new entry
    /// and the old service meanwhile are still right, since an entry whose real server
    /// changed is pinned in the new table (they go through the flow table).
    fn sync_direct(&mut self, key: &ServiceKey, value: Option<&common::Service>) -> Result<()> {
        let size = self.balancer.capacity().maglev_table_size;
        let blocks = common::maglev::blocks(size);
        let want = value
            .filter(|_| self.direct_on)
            .and_then(|v| direct::entry(&kernel_key(key), v, v.table.wrapping_mul(blocks)));
        let had = self.direct.iter().find(|(_, k)| *k == key).map(|(i, _)| *i);
        match want {
            Some((i, d)) if self.direct.get(&i).is_none_or(|k| k == key) => {
                self.balancer.write_direct(i, &d)?;
                self.direct.insert(i, *key);
            }
            _ => {
                if let Some((i, _)) = want {
                    log::info!(
                        "{key}: its place on the direct path is {}'s; its flows go through the flow table",
                        self.direct[&i]
                    );
                }
                if let Some(h) = had {
                    self.balancer
                        .write_direct(h, &common::DirectService::default())?;
                    self.direct.remove(&h);
                }
            }
        }
        Ok(())
    }

    /// After a takeover: the direct path's entries and the pinned entries of each table, as
    /// the kept maps hold them (pinned since now).
    fn adopt_direct(&mut self) -> Result<()> {
        let now = self.balancer.clock()?.now;
        let mh: Vec<(ServiceKey, common::Service)> = self
            .placed
            .iter()
            .filter(|(_, p)| p.value.scheduler == common::scheduler::MH)
            .map(|(k, p)| (*k, p.value))
            .collect();
        for (key, value) in mh {
            if value.sched_len > 0 {
                let table = self.balancer.read_maglev(value.table)?;
                self.pins.insert(key, direct::pinned_in(&table, now));
            }
            self.sync_direct(&key, Some(&value))?;
        }
        Ok(())
    }

    /// [`Director::unpin`] now, at the clock the data plane reads (tests set it by hand).
    pub fn unpin_now(&mut self) -> Result<()> {
        let clock = self.balancer.clock()?;
        let live = self.live_generations();
        self.unpin(&clock, &live)
    }

    /// Unpins the entries of `mh` tables whose grace has passed (the longest TCP timeout
    /// since they were pinned) and on which no live flow has another real server.
    fn unpin(&mut self, clock: &common::Clock, live: &[u32]) -> Result<()> {
        let grace = (common::conn::SYN_RECV..=common::conn::CLOSE)
            .map(|s| clock.timeout(s))
            .max()
            .unwrap_or(0);
        let due = |since: &BTreeMap<u32, u32>| {
            since
                .values()
                .any(|t| clock.now.saturating_sub(*t) >= grace)
        };
        let services: Vec<ServiceKey> = self
            .pins
            .iter()
            .filter(|(_, s)| due(s))
            .map(|(k, _)| *k)
            .collect();
        if services.is_empty() {
            return Ok(());
        }
        let size = self.balancer.capacity().maglev_table_size;
        // The live flows of those services, by service: (entry, target).
        let mut by_slot = HashMap::new();
        for key in &services {
            for r in self.placed[key].reals.values() {
                by_slot.insert(r.slot, *key);
            }
        }
        let mut flows: HashMap<ServiceKey, Vec<(u32, u32)>> = HashMap::new();
        let mut add = |saddr: [u32; 4], ports: u32, flow: common::Flow| {
            let Some(key) = by_slot.get(&flow.slot()) else {
                return;
            };
            if !matches!(
                flowtable::judge(&flow, clock, live),
                flowtable::Judged::Live { .. }
            ) {
                return;
            }
            let mh_port = self.placed[key].value.flags & service_flags::MH_PORT != 0;
            let entry = direct::entry_of(mh_port, saddr, ports, size);
            flows.entry(*key).or_default().push((entry, flow.target));
        };
        for (k, flow) in self.balancer.flows_v4()? {
            add([k.saddr, 0, 0, 0], k.ports, flow);
        }
        for (k, flow) in self.balancer.flows_v6()? {
            add(k.saddr, k.ports, flow);
        }
        for key in services {
            let placed = &self.placed[&key];
            let index = placed.value.table;
            let table = self.balancer.read_maglev(index)?;
            let owner_target = |e: u32| {
                let slot = table.get(e as usize)?.slot & flow_table::SLOT_MASK;
                let generation = live.get(slot as usize).copied().filter(|g| *g != 0)?;
                Some(slot | generation << flow_table::SLOT_BITS)
            };
            let since = &self.pins[&key];
            let free = direct::unpinnable(
                since,
                clock.now,
                grace,
                flows.remove(&key).unwrap_or_default(),
                owner_target,
            );
            // An entry is forgotten once a pass finds it unpinned: a new connection's stamp,
            // written by the data plane into the same word, may set the bit again just after
            // it is cleared.
            let mut done = Vec::new();
            for e in free {
                if !self.balancer.unpin_maglev(index, e)? {
                    done.push(e);
                }
            }
            let since = self.pins.get_mut(&key).expect("listed above");
            for e in done {
                since.remove(&e);
            }
        }
        Ok(())
    }

    /// The pinned entries of service `key`'s Maglev table, as the table in use says (tests and
    /// diagnostics).
    pub fn pinned_entries(&mut self, key: &ServiceKey) -> Result<Vec<u32>> {
        let Some(p) = self
            .placed
            .get(key)
            .filter(|p| p.value.scheduler == common::scheduler::MH && p.value.sched_len > 0)
        else {
            return Ok(Vec::new());
        };
        let table = self.balancer.read_maglev(p.value.table)?;
        Ok((0..table.len() as u32)
            .filter(|i| table[*i as usize].prev != 0)
            .collect())
    }

    /// One step of each flow table's sweep (see [`flowtable::Sweep::step`]).
    fn sweep_step(&mut self, clock: &common::Clock, live: &[u32]) -> Result<()> {
        let budget = flowtable::SWEEP_BUCKETS;
        let (buckets, overflow, conns) = self.balancer.flow_table();
        self.sweep
            .step(buckets, overflow, conns, clock, live, budget)?;
        // The IPv6 table is swept once it is mapped (the first IPv6 service mapped it).
        match self.balancer.flow_table_v6() {
            Some((buckets, overflow, conns)) => self
                .sweep6
                .step(buckets, overflow, conns, clock, live, budget),
            None => Ok(()),
        }
    }

    /// Deletes the persistence templates that expired (their service's timeout after the
    /// client network's last new connection) or whose real server is gone; returns how many.
    pub fn sweep_templates(&mut self, clock: &common::Clock, live: &[u32]) -> Result<u64> {
        let timeouts: HashMap<u32, u32> = self
            .placed
            .values()
            .map(|p| (p.id, p.value.persist_timeout))
            .collect();
        let templates = self.balancer.templates();
        let all: Vec<(common::PersistKey, common::Persist)> =
            templates.iter().filter_map(|r| r.ok()).collect();
        let mut deleted = 0;
        for (key, t) in all {
            let timeout = timeouts.get(&key.service).copied().unwrap_or(0);
            let slot = (t.target & flow_table::SLOT_MASK) as usize;
            let stale = live.get(slot).copied().unwrap_or(0) != t.target >> flow_table::SLOT_BITS;
            let expired = common::conn::age(clock.now, t.stamp) > timeout;
            if (stale || expired) && templates.get(&key, 0).ok() == Some(t) {
                deleted += u64::from(templates.remove(&key).is_ok());
            }
        }
        Ok(deleted)
    }

    /// A whole sweep now, at the clock the data plane reads (tests set it by hand), persistence
    /// templates included.
    pub fn sweep_now(&mut self) -> Result<()> {
        let clock = self.balancer.clock()?;
        let live = self.live_generations();
        let passes = (self.sweep.passes, self.sweep6.passes);
        let v6 = self.balancer.flow_table_v6().is_some();
        while self.sweep.passes == passes.0 || (v6 && self.sweep6.passes == passes.1) {
            self.sweep_step(&clock, &live)?;
        }
        self.sweep_templates(&clock, &live)?;
        Ok(())
    }

    /// Sets real server `addr` of service `key` to weight 0, its MAC as it is: it gets no new
    /// connection, and its connections go on (the first step of a drain).
    pub fn quiesce(&mut self, key: &ServiceKey, addr: IpAddr) -> Result<(), ApplyError> {
        let opts = self
            .state
            .services
            .get(key)
            .and_then(|s| s.reals.get(&addr))
            .copied();
        let opts = match opts {
            Some(o) => o,
            None => {
                // Let the state say why, in ipvsadm's words.
                let op = Op::EditReal(*key, addr, RealOpts::default());
                return self.apply(&[op]);
            }
        };
        self.apply(&[Op::EditReal(*key, addr, RealOpts { weight: 0, ..opts })])
    }

    /// The sweep's totals: flows freed as expired, and as stale (their real server gone).
    pub fn sweep_totals(&self) -> (u64, u64) {
        (
            self.sweep.expired + self.sweep6.expired,
            self.sweep.stale + self.sweep6.stale,
        )
    }

    /// A real-server slot's connections (active, inactive) as the sweeps last counted them (a
    /// slot's flows are all of its service's family: one of the two tables has none).
    fn conn_counts(&self, slot: u32) -> (u64, u64) {
        let a = self.sweep.counts().get(&slot).copied().unwrap_or_default();
        let b = self.sweep6.counts().get(&slot).copied().unwrap_or_default();
        (a.0 + b.0, a.1 + b.1)
    }

    /// Counts every real server's connections over the whole flow table now (a scan of the
    /// mapped buckets), for the next snapshots.
    pub fn refresh_connections(&mut self) -> Result<()> {
        let clock = self.balancer.clock()?;
        let live = self.live_generations();
        let (buckets, overflow, _) = self.balancer.flow_table();
        let counts = flowtable::count_now(buckets, overflow, &clock, &live);
        self.sweep.set_counts(counts);
        if let Some((buckets, overflow, _)) = self.balancer.flow_table_v6() {
            let counts = flowtable::count_now(buckets, overflow, &clock, &live);
            self.sweep6.set_counts(counts);
        }
        Ok(())
    }

    /// Connections of real server `addr` of service `key` counted over the whole table now
    /// (active, inactive); `None` if there is no such real server.
    pub fn count_connections(
        &mut self,
        key: &ServiceKey,
        addr: IpAddr,
    ) -> Result<Option<(u64, u64)>> {
        let Some(slot) = self.slot_of(key, addr) else {
            return Ok(None);
        };
        self.refresh_connections()?;
        Ok(Some(self.conn_counts(slot)))
    }

    /// Every real server's MAC in `services`: explicit, already placed, or resolved now.
    fn macs_for(
        &self,
        services: &[(&ServiceKey, &crate::model::Service)],
    ) -> Result<HashMap<IpAddr, (Mac, u16)>> {
        let mut macs = HashMap::new();
        let mut missing: Vec<(IpAddr, Option<u16>)> = Vec::new();
        for (key, svc) in services {
            for (addr, real) in &svc.reals {
                if real.mac.is_some() || macs.contains_key(addr) {
                    continue;
                }
                let placed = self.placed.get(*key).and_then(|p| p.reals.get(addr));
                let before = self
                    .state
                    .services
                    .get(*key)
                    .and_then(|s| s.reals.get(addr));
                let was_resolved = before.is_some_and(|r| r.mac.is_none() && r.vlan == real.vlan);
                match placed {
                    Some(p) if was_resolved => {
                        macs.insert(*addr, (p.mac, p.vlan));
                    }
                    _ => missing.push((*addr, real.vlan)),
                }
            }
        }
        missing.sort_unstable();
        missing.dedup();
        missing.retain(|(a, _)| !macs.contains_key(a));
        if !missing.is_empty() {
            let Some(r) = &self.resolver else {
                bail!("no MAC for real server {}", missing[0].0);
            };
            macs.extend(neigh::resolve_all(r, &missing)?);
        }
        Ok(macs)
    }

    /// Waits (at most the grace of freed places) until the maps have room for `changed`, or fails
    /// saying which capacity is short.
    fn make_room(&mut self, changed: &[(&ServiceKey, &crate::model::Service)]) -> Result<()> {
        let new_ids = changed
            .iter()
            .filter(|(k, _)| !self.placed.contains_key(k))
            .count();
        let new_slots: usize = changed
            .iter()
            .map(|(k, s)| match self.placed.get(k) {
                Some(p) => s.reals.keys().filter(|a| !p.reals.contains_key(a)).count(),
                None => s.reals.len(),
            })
            .sum();
        let short = |d: &Director| d.ids.available() < new_ids || d.slots.available() < new_slots;
        let deadline = Instant::now() + crate::alloc::GRACE * 2;
        while short(self) && (self.ids.waiting() > 0 || self.slots.waiting() > 0) {
            let now = Instant::now();
            if now >= deadline {
                break;
            }
            thread::sleep(Duration::from_millis(10));
            self.reclaim(Instant::now())?;
        }
        if self.ids.available() < new_ids {
            bail!(
                "no room for {new_ids} more service(s): {} of {} in use (raise max_services)",
                self.placed.len(),
                self.ids.capacity()
            );
        }
        if self.slots.available() < new_slots {
            bail!(
                "no room for {new_slots} more real server(s): {} of {} in use (raise max_real_servers)",
                self.state.real_count(),
                self.slots.capacity()
            );
        }
        Ok(())
    }

    /// The generation fresh `slot` gets: the one after the slot's last, 1 to 4095 (a flow
    /// keeps 12 bits of it). A slot is reused no sooner than its grace (200 ms), so its
    /// generations come round again after 819 s at the soonest, while the sweep forgets every
    /// flow of a retired generation within one pass (256 s at most).
    fn next_generation(&mut self, slot: u32) -> u32 {
        let Some(last) = self.generations.get_mut(slot as usize) else {
            return 1;
        };
        *last = (*last % flow_table::GENERATION_MASK as u16) + 1;
        u32::from(*last)
    }

    /// What `key` becomes, with its new places allocated (not written).
    fn plan(
        &mut self,
        key: &ServiceKey,
        svc: &crate::model::Service,
        macs: &HashMap<IpAddr, (Mac, u16)>,
    ) -> Result<Plan> {
        let placed = self.placed.get(key).cloned();
        let (id, new_id) = match &placed {
            Some(p) => (p.id, false),
            None => (
                self.ids.alloc().ok_or_else(|| anyhow!("no service id"))?,
                true,
            ),
        };
        let mut plan = Plan {
            key: *key,
            id,
            new_id,
            reals: BTreeMap::new(),
            new_slots: Vec::new(),
            new_macs: Vec::new(),
            scheduled: Vec::new(),
            old_range: (0, 0),
            sched_writes: Vec::new(),
            sched_taken: None,
            sched_freed: None,
            value: common::Service {
                id,
                sched_start: 0,
                sched_len: 0,
                table: 0,
                scheduler: scheduler_id(svc.opts.scheduler),
                flags: kernel_flags(&svc.opts),
                persist_timeout: persist_fields(&svc.opts).0,
                persist_mask: persist_fields(&svc.opts).1,
            },
            gone: Vec::new(),
            table_taken: None,
            table_freed: None,
            pins: BTreeMap::new(),
        };
        let old_reals = placed.as_ref().map(|p| p.reals.clone()).unwrap_or_default();
        let failed = self.health.down(key);
        for (addr, real) in &svc.reals {
            let down = failed.contains(addr);
            let l2 = match real.mac {
                Some(mac) => Some((mac, real.vlan.unwrap_or(0))),
                None => macs.get(addr).copied(),
            };
            let (mac, vlan) = l2.ok_or_else(|| anyhow!("no MAC for real server {addr}"))?;
            let weight = real.weight.min(u32::from(u16::MAX)) as u16;
            let placed_real = match old_reals.get(addr) {
                Some(p) => {
                    if p.mac != mac || p.weight != weight || p.vlan != vlan || p.down != down {
                        plan.new_macs.push(p.slot);
                    }
                    PlacedReal {
                        mac,
                        weight,
                        vlan,
                        down,
                        ..*p
                    }
                }
                None => {
                    let slot = match self.slots.alloc() {
                        Some(s) => s,
                        None => {
                            self.unplan(std::slice::from_ref(&plan));
                            bail!("no free real-server slot");
                        }
                    };
                    plan.new_slots.push(slot);
                    PlacedReal {
                        slot,
                        mac,
                        generation: self.next_generation(slot),
                        weight,
                        vlan,
                        down,
                    }
                }
            };
            plan.reals.insert(*addr, placed_real);
        }
        plan.gone = old_reals
            .iter()
            .filter(|(a, _)| !svc.reals.contains_key(a))
            .map(|(_, p)| p.slot)
            .collect();
        // Weight 0: kept (its connections go on) but given no new ones, as in IPVS.
        let wanted: Vec<u32> = svc
            .reals
            .iter()
            .filter(|(_, r)| r.weight > 0)
            .map(|(a, _)| plan.reals[a].slot)
            .collect();
        let old: Vec<u32> = placed
            .as_ref()
            .map(|p| p.scheduled.clone())
            .unwrap_or_default();
        let old_start = placed.as_ref().map_or(0, |p| p.sched_start);
        let (old_len, wanted_set) = (
            old.len() as u32,
            wanted.iter().copied().collect::<BTreeSet<u32>>(),
        );
        // In place where possible: a real server that leaves gives its position to the last
        // one (swap remove); new ones come after.
        let mut scheduled = old.clone();
        let mut i = 0;
        while i < scheduled.len() {
            if wanted_set.contains(&scheduled[i]) {
                i += 1;
            } else {
                scheduled.swap_remove(i);
            }
        }
        scheduled.extend(wanted.iter().filter(|s| !old.contains(s)));
        if svc.opts.scheduler == Scheduler::WeightedRoundRobin {
            // The whole cycle of turns, as IPVS orders it (each position written when it
            // differs from what the range held).
            let members: Vec<(u32, u32)> = svc
                .reals
                .iter()
                .map(|(a, r)| (plan.reals[a].slot, r.weight))
                .collect();
            scheduled = crate::wrr::sequence(&members);
        }
        if matches!(
            svc.opts.scheduler,
            Scheduler::SourceHashing | Scheduler::DestinationHashing
        ) {
            // IPVS's bucket table; real servers of weight 0 hold buckets too (skipped when
            // looked up).
            let members: Vec<(u32, u32)> = svc
                .reals
                .iter()
                .map(|(a, r)| (plan.reals[a].slot, r.weight))
                .collect();
            scheduled = crate::hashtab::table(&members);
        }
        let len = scheduled.len() as u32;
        plan.old_range = (old_start, old_len);
        let start = if placed.is_some() && scheduled == old {
            old_start
        } else if placed.is_some()
            && (len <= old_len || self.sched.grow(old_start, old_len, len - old_len))
        {
            if len > old_len {
                plan.sched_taken = Some((old_start + old_len, len - old_len));
            } else if len < old_len {
                plan.sched_freed = Some((old_start + len, old_len - len));
            }
            old_start
        } else {
            let mut start = self.sched.alloc(len);
            // Ranges given up a moment ago wait out their grace: wait for them.
            let deadline = Instant::now() + crate::alloc::GRACE * 2;
            while start.is_none() && self.sched.waiting() > 0 && Instant::now() < deadline {
                thread::sleep(Duration::from_millis(5));
                self.sched.reclaim(Instant::now());
                start = self.sched.alloc(len);
            }
            let Some(start) = start else {
                self.unplan(std::slice::from_ref(&plan));
                bail!(
                    "no room in the scheduling table for {len} more slots (raise max_real_servers)"
                );
            };
            plan.sched_taken = Some((start, len));
            plan.sched_freed = placed.is_some().then_some((old_start, old_len));
            start
        };
        let fresh = plan.sched_taken.is_some_and(|(s, _)| s == start);
        plan.sched_writes = scheduled
            .iter()
            .enumerate()
            .filter(|(j, slot)| fresh || old.get(*j) != Some(slot))
            .map(|(j, slot)| (start + j as u32, *slot))
            .collect();
        plan.value.sched_start = start;
        plan.scheduled = scheduled;
        plan.value.sched_len = len;
        if svc.opts.scheduler == Scheduler::TwoChoices {
            // The sum of the weights of the real servers the data plane scans (the first
            // MAX_SCAN of the range), that its draws take from.
            let weight_of: HashMap<u32, u32> = svc
                .reals
                .iter()
                .map(|(a, r)| (plan.reals[a].slot, r.weight))
                .collect();
            plan.value.table = plan
                .scheduled
                .iter()
                .take(common::scheduler::MAX_SCAN as usize)
                .map(|s| weight_of.get(s).copied().unwrap_or(0))
                .sum();
        }
        if svc.opts.scheduler == Scheduler::Maglev
            && let Err(e) = self.plan_table(&mut plan, svc, placed.as_ref())
        {
            self.unplan(std::slice::from_ref(&plan));
            return Err(e);
        }
        Ok(plan)
    }

    /// Builds an `mh` service's Maglev table and writes it into a table no service points at.
    fn plan_table(
        &mut self,
        plan: &mut Plan,
        svc: &crate::model::Service,
        placed: Option<&Placed>,
    ) -> Result<()> {
        let members: Vec<maglev::Member> = svc
            .reals
            .iter()
            .map(|(addr, r)| maglev::Member {
                addr: *addr,
                weight: r.weight,
                slot: plan.reals[addr].slot,
            })
            .collect();
        let slots = maglev::populate(self.balancer.capacity().maglev_table_size, &members);
        let now = self.balancer.clock()?.now;
        let old_table = match placed {
            Some(p) if p.value.scheduler == common::scheduler::MH && p.value.sched_len > 0 => {
                Some(self.balancer.read_maglev(p.value.table)?)
            }
            _ => None,
        };
        let before = match (placed, &old_table) {
            (None, _) => direct::Before::Nothing,
            (Some(_), Some(t)) => direct::Before::Table(t),
            (Some(_), None) => direct::Before::Unknown,
        };
        let mut pins = self.pins.get(&plan.key).cloned().unwrap_or_default();
        let target_of = |slot: u32| {
            placed?
                .reals
                .values()
                .find(|r| r.slot == slot)
                .map(|r| slot | r.generation << flow_table::SLOT_BITS)
        };
        let table = direct::build(&slots, before, target_of, &mut pins, now);
        plan.pins = pins;
        let mut index = self.tables.alloc();
        // Tables given up a moment ago wait out their grace: wait for them.
        let deadline = Instant::now() + crate::alloc::GRACE * 2;
        while index.is_none() && self.tables.waiting() > 0 && Instant::now() < deadline {
            thread::sleep(Duration::from_millis(5));
            self.tables.reclaim(Instant::now());
            index = self.tables.alloc();
        }
        let Some(index) = index else {
            bail!(
                "no room for the Maglev table of {}: {} mh service(s) at most (raise max_mh_services)",
                plan.key,
                self.tables.capacity() / 2
            );
        };
        plan.table_taken = Some(index);
        self.balancer.write_maglev(index, &table)?;
        plan.value.table = index;
        plan.table_freed = placed
            .filter(|p| p.value.scheduler == common::scheduler::MH)
            .map(|p| p.value.table);
        Ok(())
    }

    /// Gives back what `plans` allocated (nothing of it was published).
    fn unplan(&mut self, plans: &[Plan]) {
        for plan in plans {
            if plan.new_id {
                self.ids.unalloc(plan.id);
            }
            for slot in &plan.new_slots {
                self.slots.unalloc(*slot);
            }
            if let Some((start, len)) = plan.sched_taken {
                self.sched.unalloc(start, len);
            }
            if let Some(index) = plan.table_taken {
                self.tables.unalloc(index);
            }
        }
    }

    fn write_hidden(&mut self, plans: &[Plan]) -> Result<()> {
        for plan in plans {
            if plan.new_id {
                self.balancer.zero_service(plan.id)?;
            }
            for p in plan.reals.values() {
                if plan.new_slots.contains(&p.slot) {
                    self.balancer.zero_real_counters(p.slot)?;
                    self.balancer.real_conns().zero(p.slot);
                    self.balancer.write_real(p.slot, &real_entry(p, plan.id))?;
                }
            }
            let (old_start, old_len) = plan.old_range;
            for (pos, slot) in &plan.sched_writes {
                if !(old_start..old_start + old_len).contains(pos) {
                    self.balancer.write_sched(*pos, &[*slot])?;
                }
            }
        }
        Ok(())
    }

    /// Switches one service over to its plan, then gives up what it no longer uses.
    fn switch(&mut self, plan: Plan, next: &State, now: Instant) -> Result<()> {
        let old = self.placed.get(&plan.key).cloned();
        for p in plan.reals.values() {
            if plan.new_macs.contains(&p.slot) {
                self.balancer.write_real(p.slot, &real_entry(p, plan.id))?;
            }
        }
        let (old_start, old_len) = plan.old_range;
        for (pos, slot) in &plan.sched_writes {
            if (old_start..old_start + old_len).contains(pos) {
                self.balancer.write_sched(*pos, &[*slot])?;
            }
        }
        if old.as_ref().is_none_or(|o| o.value != plan.value) {
            // The direct path's entry first: see `sync_direct`.
            self.sync_direct(&plan.key, Some(&plan.value))?;
            self.balancer
                .put_service(&kernel_key(&plan.key), &plan.value)?;
        }
        if plan.value.scheduler == common::scheduler::MH {
            self.pins.insert(plan.key, plan.pins.clone());
        } else {
            self.pins.remove(&plan.key);
        }
        let owner = Some((plan.key, plan.id));
        if let Some(old) = &old {
            for slot in &plan.gone {
                self.retire(*slot, &old.reals, owner, now)?;
            }
            for addr in old.reals.keys().filter(|a| !plan.reals.contains_key(a)) {
                self.zeroed.forget_real(&plan.key, *addr);
            }
            if let Some((start, len)) = plan.sched_freed {
                self.sched.release(start, len, now);
            }
        }
        if let Some(index) = plan.table_freed {
            self.tables.release(index, now);
        }
        let scheduled = plan.scheduled;
        self.placed.insert(
            plan.key,
            Placed {
                id: plan.id,
                sched_start: plan.value.sched_start,
                scheduled,
                value: plan.value,
                reals: plan.reals,
                retired: old.map(|o| o.retired).unwrap_or_default(),
            },
        );
        self.state
            .services
            .insert(plan.key, next.services[&plan.key].clone());
        Ok(())
    }

    /// Marks `slot` unused (its flows are scheduled again) and gives it up.
    fn retire(
        &mut self,
        slot: u32,
        reals: &BTreeMap<IpAddr, PlacedReal>,
        owner: Option<(ServiceKey, u32)>,
        now: Instant,
    ) -> Result<()> {
        let Some(p) = reals.values().find(|p| p.slot == slot) else {
            return Ok(());
        };
        let dead = common::RealServer {
            generation: p.generation | common::RealServer::RETIRED,
            ..real_entry(p, owner.map_or(0, |(_, id)| id))
        };
        self.balancer.write_real(slot, &dead)?;
        self.slots.release(slot, now);
        self.retiring.insert(slot, owner);
        Ok(())
    }

    /// Takes service `key` out of the maps and gives up its places.
    fn remove(&mut self, key: &ServiceKey, now: Instant) -> Result<()> {
        let Some(placed) = self.placed.get(key).cloned() else {
            return Ok(());
        };
        self.sync_direct(key, None)?;
        self.pins.remove(key);
        self.balancer.remove_service(&kernel_key(key))?;
        self.zeroed.forget(key);
        for p in placed.reals.values() {
            self.retire(p.slot, &placed.reals, Some((*key, placed.id)), now)?;
        }
        self.sched
            .release(placed.sched_start, placed.scheduled.len() as u32, now);
        if placed.value.scheduler == common::scheduler::MH {
            self.tables.release(placed.value.table, now);
        }
        self.ids.release(placed.id, now);
        self.placed.remove(key);
        self.state.services.remove(key);
        Ok(())
    }

    /// One marker per (VIP, protocol) in use, none other.
    fn sync_markers(&mut self) -> Result<()> {
        let want: BTreeSet<(IpAddr, Protocol)> =
            self.placed.keys().map(|k| (k.addr, k.protocol)).collect();
        let marker = common::Service {
            persist_timeout: 0,
            persist_mask: [0; 4],
            id: u32::MAX,
            sched_start: 0,
            sched_len: 0,
            table: 0,
            scheduler: common::scheduler::RR,
            flags: service_flags::ADDRESS_MARKER,
        };
        for (addr, proto) in want.difference(&self.markers) {
            self.balancer
                .put_service(&marker_key(*addr, *proto), &marker)?;
        }
        for (addr, proto) in self.markers.difference(&want) {
            self.balancer.remove_service(&marker_key(*addr, *proto))?;
        }
        self.markers = want;
        Ok(())
    }

    /// Reuses places whose grace has passed; a real-server slot's counters are folded into its
    /// former service's totals first.
    fn reclaim(&mut self, now: Instant) -> Result<()> {
        for slot in self.slots.reclaim(now) {
            let c = self.balancer.real_counters(slot)?;
            self.retired_forwarded = add(self.retired_forwarded, c);
            if let Some(Some((key, id))) = self.retiring.remove(&slot)
                && let Some(p) = self.placed.get_mut(&key)
                && p.id == id
            {
                p.retired = add(p.retired, c);
            }
            self.balancer.zero_real_counters(slot)?;
        }
        self.ids.reclaim(now);
        self.sched.reclaim(now);
        self.tables.reclaim(now);
        Ok(())
    }

    /// The flow table's IPv4 connections, named by service and real server, with their state
    /// and the seconds until they expire (as `ipvsadm -L -c` lists them). A flow whose real
    /// server was removed since is left out: its next packet is scheduled again.
    pub fn connections(&self) -> Result<Vec<Connection>> {
        let mut by_slot = HashMap::new();
        for (key, placed) in &self.placed {
            for (addr, p) in &placed.reals {
                by_slot.insert(p.slot, (*key, *addr, p.generation));
            }
        }
        let clock = self.balancer.clock()?;
        let v4 = self
            .balancer
            .flows_v4()?
            .into_iter()
            .map(|(k, flow)| (IpAddr::from(k.saddr.to_ne_bytes()), k.ports, flow));
        let v6 = self
            .balancer
            .flows_v6()?
            .into_iter()
            .map(|(k, flow)| (words_addr(k.saddr, true), k.ports, flow));
        let mut out = Vec::new();
        for (client, ports, flow) in v4.chain(v6) {
            let Some((service, real, generation)) = by_slot.get(&flow.slot()) else {
                continue;
            };
            if *generation != flow.generation() {
                continue;
            }
            let ports = ports.to_ne_bytes();
            out.push(Connection {
                protocol: service.protocol,
                client,
                client_port: u16::from_be_bytes([ports[0], ports[1]]),
                service: *service,
                real: *real,
                state: common::conn::NAMES
                    .get(usize::from(flow.state))
                    .unwrap_or(&"NONE")
                    .to_string(),
                expires: flowtable::expires_in(&flow, &clock),
            });
        }
        out.extend(self.templates(&by_slot, &clock));
        out.sort_by_key(|c| (c.service, c.client, c.client_port));
        Ok(out)
    }

    /// The persistence templates in force, as ipvsadm lists them among the connections: state
    /// `NONE`, the client network with port 0, and the seconds left of the service's
    /// persistence timeout (counted from the network's last new connection).
    fn templates(
        &self,
        by_slot: &HashMap<u32, (ServiceKey, IpAddr, u32)>,
        clock: &common::Clock,
    ) -> Vec<Connection> {
        let timeouts: HashMap<u32, u32> = self
            .placed
            .values()
            .map(|p| (p.id, p.value.persist_timeout))
            .collect();
        let mut out = Vec::new();
        for (key, t) in self.balancer.templates_iter().filter_map(|r| r.ok()) {
            let flow = common::Flow {
                target: t.target,
                ..Default::default()
            };
            let Some((service, real, generation)) = by_slot.get(&flow.slot()) else {
                continue;
            };
            let timeout = timeouts.get(&key.service).copied().unwrap_or(0);
            let age = common::conn::age(clock.now, t.stamp);
            if *generation != flow.generation() || age > timeout {
                continue;
            }
            out.push(Connection {
                protocol: service.protocol,
                client: words_addr(key.client, service.addr.is_ipv6()),
                client_port: 0,
                service: *service,
                real: *real,
                state: "NONE".to_string(),
                expires: timeout - age,
            });
        }
        out
    }

    /// Every counter, summed over the CPUs, by service and real server. Forwarded traffic is
    /// counted in the kernel per real server only: the service totals and the `forwarded`
    /// verdict are sums of those (and of real servers given up).
    pub fn snapshot(&self) -> Result<Snapshot> {
        let mut global = self.balancer.global_counters()?;
        let mut forwarded = self.retired_forwarded;
        let mut retiring_by_service: HashMap<(ServiceKey, u32), Counters> = HashMap::new();
        for (slot, owner) in &self.retiring {
            let c = self.balancer.real_counters(*slot)?;
            forwarded = add(forwarded, c);
            if let Some(owner) = owner {
                let e = retiring_by_service.entry(*owner).or_default();
                *e = add(*e, c);
            }
        }
        let mut services = Vec::with_capacity(self.placed.len());
        for (key, placed) in &self.placed {
            let svc = &self.state.services[key];
            let dropped = self.balancer.service_counters(placed.id)?;
            let mut total = add(dropped, placed.retired);
            if let Some(c) = retiring_by_service.get(&(*key, placed.id)) {
                total = add(total, *c);
            }
            let mut reals = Vec::with_capacity(placed.reals.len());
            for (addr, p) in &placed.reals {
                let c = self.balancer.real_counters(p.slot)?;
                total = add(total, c);
                forwarded = add(forwarded, c);
                reals.push(RealView {
                    addr: *addr,
                    opts: svc.reals[addr],
                    mac: p.mac,
                    counters: c,
                    conns: self.conn_counts(p.slot),
                    shown: self.health.shown(key, *addr),
                    check: self
                        .health
                        .trackers
                        .get(&(*key, *addr))
                        .map(|t| (t.up, t.transitions))
                        .or_else(|| {
                            let checked = self.health.config.get(key)?.check_of(*addr).is_some();
                            checked.then_some((true, 0))
                        }),
                });
            }
            services.push(ServiceView {
                key: *key,
                opts: svc.opts,
                counters: total,
                dropped,
                reals,
            });
        }
        global[reason::FORWARDED as usize] = Counters {
            conns: 0,
            ..forwarded
        };
        Ok(Snapshot {
            at: Instant::now(),
            global,
            services,
            swept: self.sweep_totals(),
        })
    }
}

/// Last generations per slot from an [`Image`]'s sparse list.
fn generations_from(list: &[(u32, u16)], slots: u32) -> Vec<u16> {
    let mut out = vec![0; slots as usize];
    for (slot, g) in list {
        if let Some(x) = out.get_mut(*slot as usize) {
            *x = *g;
        }
    }
    out
}

fn real_entry(p: &PlacedReal, service: u32) -> common::RealServer {
    common::RealServer {
        mac: p.mac.0,
        weight: p.weight,
        service,
        generation: p.generation,
        vlan: p.vlan,
        flags: if p.down { common::RealServer::DOWN } else { 0 },
    }
}
