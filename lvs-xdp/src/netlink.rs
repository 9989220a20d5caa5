//! A small rtnetlink client (netlink-sys sockets, netlink-packet-route messages): one request,
//! its replies (a dump, or an acknowledgement), and event subscriptions. Used for the neighbour
//! table ([`crate::neigh`]) and the real servers' addresses ([`crate::realserver`]).
use std::{io, net::IpAddr, time::Duration};

use netlink_packet_core::{
    NLM_F_ACK, NLM_F_DUMP, NLM_F_REQUEST, NetlinkHeader, NetlinkMessage, NetlinkPayload,
};
use netlink_packet_route::{
    AddressFamily, RouteNetlinkMessage,
    address::{AddressAttribute, AddressMessage, AddressScope},
    neighbour::{NeighbourAddress, NeighbourAttribute, NeighbourMessage},
};
use netlink_sys::{Socket, SocketAddr, protocols::NETLINK_ROUTE};

use crate::model::Mac;

/// `RTNLGRP_NEIGH`: neighbour table changes.
pub const GROUP_NEIGH: u32 = 3;

/// A VLAN interface (802.1Q or 802.1ad) on top of another.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct VlanIface {
    pub ifindex: u32,
    pub name: String,
    pub vid: u16,
}

impl VlanIface {
    /// `link`, when it is a VLAN interface whose parent is `parent`.
    pub fn of(link: &netlink_packet_route::link::LinkMessage, parent: u32) -> Option<VlanIface> {
        use netlink_packet_route::link::{InfoData, InfoKind, InfoVlan, LinkAttribute, LinkInfo};
        let (mut on, mut vlan, mut name, mut vid) = (None, false, None, None);
        for a in &link.attributes {
            match a {
                LinkAttribute::Link(p) => on = Some(*p),
                LinkAttribute::IfName(n) => name = Some(n.clone()),
                LinkAttribute::LinkInfo(infos) => {
                    for i in infos {
                        match i {
                            LinkInfo::Kind(InfoKind::Vlan) => vlan = true,
                            LinkInfo::Data(InfoData::Vlan(data)) => {
                                vid = data.iter().find_map(|d| match d {
                                    InfoVlan::Id(v) => Some(*v),
                                    _ => None,
                                })
                            }
                            _ => {}
                        }
                    }
                }
                _ => {}
            }
        }
        (vlan && on == Some(parent)).then_some(())?;
        Some(VlanIface {
            ifindex: link.header.index,
            name: name?,
            vid: vid?,
        })
    }
}

/// One neighbour entry.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Neighbour {
    pub ifindex: u32,
    pub address: IpAddr,
    pub mac: Option<Mac>,
    /// NUD_* bits.
    pub state: u16,
}

/// States whose link-layer address can be used: REACHABLE, STALE, DELAY, PROBE, PERMANENT.
const NUD_USABLE: u16 = 0x02 | 0x04 | 0x08 | 0x10 | 0x80;
/// States whose address was not confirmed lately: STALE, DELAY, PROBE.
pub const NUD_UNCONFIRMED: u16 = 0x04 | 0x08 | 0x10;

impl Neighbour {
    /// The MAC, when the entry's state makes it usable.
    pub fn usable_mac(&self) -> Option<Mac> {
        if self.state & NUD_USABLE != 0 {
            self.mac.filter(Mac::is_unicast)
        } else {
            None
        }
    }

    /// A neighbour entry from a `RTM_NEWNEIGH` message (IPv4 or IPv6).
    pub fn from_message(m: &NeighbourMessage) -> Option<Neighbour> {
        let address = m.attributes.iter().find_map(|a| match a {
            NeighbourAttribute::Destination(NeighbourAddress::Inet(v4)) => Some(IpAddr::V4(*v4)),
            NeighbourAttribute::Destination(NeighbourAddress::Inet6(v6)) => Some(IpAddr::V6(*v6)),
            _ => None,
        })?;
        let mac = m.attributes.iter().find_map(|a| match a {
            NeighbourAttribute::LinkLayerAddress(b) if b.len() == 6 => {
                Some(Mac(b.as_slice().try_into().ok()?))
            }
            _ => None,
        });
        Some(Neighbour {
            ifindex: m.header.ifindex,
            address,
            mac,
            state: m.header.state.into(),
        })
    }
}

/// An rtnetlink socket.
pub struct Rtnl {
    socket: Socket,
    seq: u32,
}

impl Rtnl {
    pub fn open() -> io::Result<Rtnl> {
        let mut socket = Socket::new(NETLINK_ROUTE)?;
        socket.bind_auto()?;
        socket.connect(&SocketAddr::new(0, 0))?;
        set_recv_timeout(&socket, Duration::from_secs(2))?;
        Ok(Rtnl { socket, seq: 0 })
    }

    /// A socket that receives the events of `groups` (non-blocking, for an event loop).
    pub fn subscribe(groups: &[u32]) -> io::Result<Socket> {
        let mut socket = Socket::new(NETLINK_ROUTE)?;
        socket.bind_auto()?;
        for g in groups {
            socket.add_membership(*g)?;
        }
        socket.set_non_blocking(true)?;
        Ok(socket)
    }

    /// Sends `message` with `flags` and collects the replies: every message of a dump, or none
    /// for an acknowledged change. A netlink error becomes the matching `io::Error`.
    pub fn request(
        &mut self,
        message: RouteNetlinkMessage,
        flags: u16,
    ) -> io::Result<Vec<RouteNetlinkMessage>> {
        self.seq = self.seq.wrapping_add(1);
        let mut header = NetlinkHeader::default();
        header.flags = NLM_F_REQUEST | flags;
        header.sequence_number = self.seq;
        let mut req = NetlinkMessage::new(header, NetlinkPayload::from(message));
        req.finalize();
        let mut buf = vec![0; req.header.length as usize];
        req.serialize(&mut buf);
        self.socket.send(&buf, 0)?;
        let dump = flags & NLM_F_DUMP == NLM_F_DUMP;
        let mut out = Vec::new();
        let mut rx = vec![0u8; 64 * 1024];
        loop {
            let n = self.socket.recv(&mut &mut rx[..], 0)?;
            let mut at = 0;
            while at < n {
                let msg = NetlinkMessage::<RouteNetlinkMessage>::deserialize(&rx[at..n])
                    .map_err(|e| io::Error::new(io::ErrorKind::InvalidData, e.to_string()))?;
                let len = msg.header.length as usize;
                at += len.max(1).next_multiple_of(4);
                if msg.header.sequence_number != self.seq {
                    continue;
                }
                match msg.payload {
                    NetlinkPayload::Done(_) => return Ok(out),
                    NetlinkPayload::Error(e) => {
                        return match e.code {
                            None => Ok(out),
                            Some(_) => Err(e.to_io()),
                        };
                    }
                    NetlinkPayload::InnerMessage(m) => {
                        out.push(m);
                        if !dump {
                            return Ok(out);
                        }
                    }
                    _ => {}
                }
            }
        }
    }

    /// The VLAN interfaces whose parent is interface `ifindex`.
    pub fn vlans_on(&mut self, ifindex: u32) -> io::Result<Vec<VlanIface>> {
        use netlink_packet_route::link::LinkMessage;
        let replies = self.request(
            RouteNetlinkMessage::GetLink(LinkMessage::default()),
            NLM_F_DUMP,
        )?;
        Ok(replies
            .iter()
            .filter_map(|m| match m {
                RouteNetlinkMessage::NewLink(link) => VlanIface::of(link, ifindex),
                _ => None,
            })
            .collect())
    }

    /// The interface the kernel's routes send packets to `addr` out of.
    pub fn route_oif(&mut self, addr: IpAddr) -> io::Result<Option<u32>> {
        use netlink_packet_route::route::{RouteAttribute, RouteMessage};
        let mut m = RouteMessage::default();
        m.header.address_family = match addr {
            IpAddr::V4(_) => AddressFamily::Inet,
            IpAddr::V6(_) => AddressFamily::Inet6,
        };
        m.header.destination_prefix_length = if addr.is_ipv4() { 32 } else { 128 };
        m.attributes.push(RouteAttribute::Destination(addr.into()));
        let replies = match self.request(RouteNetlinkMessage::GetRoute(m), 0) {
            Ok(r) => r,
            // No route at all (ENETUNREACH): no interface.
            Err(e) if e.raw_os_error() == Some(libc::ENETUNREACH) => return Ok(None),
            Err(e) => return Err(e),
        };
        Ok(replies.iter().find_map(|r| match r {
            RouteNetlinkMessage::NewRoute(r) => r.attributes.iter().find_map(|a| match a {
                RouteAttribute::Oif(i) => Some(*i),
                _ => None,
            }),
            _ => None,
        }))
    }

    /// The neighbour table (IPv4 and IPv6).
    pub fn neighbours(&mut self) -> io::Result<Vec<Neighbour>> {
        let replies = self.request(
            RouteNetlinkMessage::GetNeighbour(NeighbourMessage::default()),
            NLM_F_DUMP,
        )?;
        Ok(replies
            .iter()
            .filter_map(|m| match m {
                RouteNetlinkMessage::NewNeighbour(n) => Neighbour::from_message(n),
                _ => None,
            })
            .collect())
    }

    /// Asks the kernel to resolve `address` on `ifindex` (creating the entry if needed), as if a
    /// packet were waiting for it (NTF_USE): it sends an ARP request or a neighbour solicitation.
    pub fn resolve(&mut self, ifindex: u32, address: IpAddr) -> io::Result<()> {
        let mut m = neighbour_message(ifindex, address);
        m.header.flags = netlink_packet_route::neighbour::NeighbourFlags::Use;
        self.request(
            RouteNetlinkMessage::NewNeighbour(m),
            NLM_F_ACK | netlink_packet_core::NLM_F_CREATE,
        )
        .map(drop)
    }

    /// Asks the kernel to confirm the entry of `address` on `ifindex` now (NUD_PROBE: a unicast
    /// ARP request or neighbour solicitation to the MAC it has).
    pub fn probe(&mut self, ifindex: u32, address: IpAddr) -> io::Result<()> {
        let mut m = neighbour_message(ifindex, address);
        m.header.state = netlink_packet_route::neighbour::NeighbourState::Probe;
        self.request(
            RouteNetlinkMessage::NewNeighbour(m),
            NLM_F_ACK | netlink_packet_core::NLM_F_REPLACE,
        )
        .map(drop)
    }

    /// Removes the entry of `address` on `ifindex` (the next resolution asks everyone).
    pub fn forget_neighbour(&mut self, ifindex: u32, address: IpAddr) -> io::Result<()> {
        let m = neighbour_message(ifindex, address);
        self.request(RouteNetlinkMessage::DelNeighbour(m), NLM_F_ACK)
            .map(drop)
    }

    /// Every address of interface `ifindex`, with its prefix length.
    pub fn addresses(&mut self, ifindex: u32) -> io::Result<Vec<(IpAddr, u8)>> {
        let replies = self.request(
            RouteNetlinkMessage::GetAddress(AddressMessage::default()),
            NLM_F_DUMP,
        )?;
        Ok(replies
            .iter()
            .filter_map(|m| match m {
                RouteNetlinkMessage::NewAddress(a) if a.header.index == ifindex => {
                    let addr = a.attributes.iter().find_map(|x| match x {
                        AddressAttribute::Local(ip) => Some(*ip),
                        _ => None,
                    });
                    let addr = addr.or_else(|| {
                        a.attributes.iter().find_map(|x| match x {
                            AddressAttribute::Address(ip) => Some(*ip),
                            _ => None,
                        })
                    })?;
                    Some((addr, a.header.prefix_len))
                }
                _ => None,
            })
            .collect())
    }

    /// Adds `addr/prefix` to interface `ifindex` (host scope on `lo`, as `ip addr add` does).
    /// The host routes of routing table `table` that protocol `protocol` put there.
    pub fn host_routes(&mut self, table: u32, protocol: u8) -> io::Result<Vec<IpAddr>> {
        use netlink_packet_route::route::{RouteAddress, RouteAttribute, RouteMessage};
        let mut out = Vec::new();
        for family in [AddressFamily::Inet, AddressFamily::Inet6] {
            let mut m = RouteMessage::default();
            m.header.address_family = family;
            let replies = self.request(RouteNetlinkMessage::GetRoute(m), NLM_F_DUMP)?;
            for r in replies {
                let RouteNetlinkMessage::NewRoute(r) = r else {
                    continue;
                };
                let full = if family == AddressFamily::Inet {
                    32
                } else {
                    128
                };
                let in_table = r
                    .attributes
                    .iter()
                    .any(|a| matches!(a, RouteAttribute::Table(t) if *t == table))
                    || (table < 256 && u32::from(r.header.table) == table);
                if !in_table
                    || u8::from(r.header.protocol) != protocol
                    || r.header.destination_prefix_length != full
                {
                    continue;
                }
                for a in &r.attributes {
                    match a {
                        RouteAttribute::Destination(RouteAddress::Inet(v4)) => {
                            out.push((*v4).into())
                        }
                        RouteAttribute::Destination(RouteAddress::Inet6(v6)) => {
                            out.push((*v6).into())
                        }
                        _ => {}
                    }
                }
            }
        }
        Ok(out)
    }

    /// Adds (`add`) or deletes a blackhole host route to `addr` in table `table`, marked as
    /// protocol `protocol`'s.
    pub fn host_route(
        &mut self,
        add: bool,
        table: u32,
        protocol: u8,
        addr: IpAddr,
    ) -> io::Result<()> {
        use netlink_packet_route::route::{
            RouteAttribute, RouteHeader, RouteMessage, RouteProtocol, RouteScope, RouteType,
        };
        let mut m = RouteMessage::default();
        m.header.address_family = match addr {
            IpAddr::V4(_) => AddressFamily::Inet,
            IpAddr::V6(_) => AddressFamily::Inet6,
        };
        m.header.destination_prefix_length = if addr.is_ipv4() { 32 } else { 128 };
        m.header.table = if table < 256 {
            table as u8
        } else {
            RouteHeader::RT_TABLE_UNSPEC
        };
        m.header.protocol = RouteProtocol::from(protocol);
        m.header.scope = RouteScope::Universe;
        m.header.kind = RouteType::BlackHole;
        m.attributes.push(RouteAttribute::Destination(addr.into()));
        m.attributes.push(RouteAttribute::Table(table));
        if add {
            self.request(
                RouteNetlinkMessage::NewRoute(m),
                NLM_F_ACK | netlink_packet_core::NLM_F_CREATE | netlink_packet_core::NLM_F_REPLACE,
            )
        } else {
            self.request(RouteNetlinkMessage::DelRoute(m), NLM_F_ACK)
        }
        .map(drop)
    }

    pub fn add_address(&mut self, ifindex: u32, addr: IpAddr, prefix: u8) -> io::Result<()> {
        let m = address_message(ifindex, addr, prefix);
        self.request(
            RouteNetlinkMessage::NewAddress(m),
            NLM_F_ACK | netlink_packet_core::NLM_F_CREATE | netlink_packet_core::NLM_F_EXCL,
        )
        .map(drop)
    }

    pub fn delete_address(&mut self, ifindex: u32, addr: IpAddr, prefix: u8) -> io::Result<()> {
        let m = address_message(ifindex, addr, prefix);
        self.request(RouteNetlinkMessage::DelAddress(m), NLM_F_ACK)
            .map(drop)
    }
}

fn neighbour_message(ifindex: u32, address: IpAddr) -> NeighbourMessage {
    let mut m = NeighbourMessage::default();
    m.header.family = family(address);
    m.header.ifindex = ifindex;
    m.attributes
        .push(NeighbourAttribute::Destination(match address {
            IpAddr::V4(a) => NeighbourAddress::Inet(a),
            IpAddr::V6(a) => NeighbourAddress::Inet6(a),
        }));
    m
}

fn family(addr: IpAddr) -> AddressFamily {
    match addr {
        IpAddr::V4(_) => AddressFamily::Inet,
        IpAddr::V6(_) => AddressFamily::Inet6,
    }
}

fn address_message(ifindex: u32, addr: IpAddr, prefix: u8) -> AddressMessage {
    let mut m = AddressMessage::default();
    m.header.family = family(addr);
    m.header.prefix_len = prefix;
    m.header.index = ifindex;
    m.header.scope = AddressScope::Universe;
    m.attributes.push(AddressAttribute::Local(addr));
    m.attributes.push(AddressAttribute::Address(addr));
    m
}

/// Reads the messages waiting on a subscribed, non-blocking socket.
pub fn drain_events(socket: &Socket) -> io::Result<Vec<RouteNetlinkMessage>> {
    let mut out = Vec::new();
    let mut rx = vec![0u8; 64 * 1024];
    loop {
        let n = match socket.recv(&mut &mut rx[..], 0) {
            Ok(n) => n,
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => return Ok(out),
            Err(e) => return Err(e),
        };
        let mut at = 0;
        while at < n {
            let Ok(msg) = NetlinkMessage::<RouteNetlinkMessage>::deserialize(&rx[at..n]) else {
                break;
            };
            at += (msg.header.length as usize).max(1).next_multiple_of(4);
            if let NetlinkPayload::InnerMessage(m) = msg.payload {
                out.push(m);
            }
        }
    }
}

fn set_recv_timeout(socket: &Socket, timeout: Duration) -> io::Result<()> {
    use std::os::fd::AsRawFd as _;
    let tv = libc::timeval {
        tv_sec: timeout.as_secs() as libc::time_t,
        tv_usec: 0,
    };
    // SAFETY: a valid socket and an option value of the right size.
    let rc = unsafe {
        libc::setsockopt(
            socket.as_raw_fd(),
            libc::SOL_SOCKET,
            libc::SO_RCVTIMEO,
            (&tv as *const libc::timeval).cast(),
            std::mem::size_of::<libc::timeval>() as libc::socklen_t,
        )
    };
    if rc != 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}
