//! VLANs. What lvs-xdp reads to warn about receive VLAN offload: the NIC's flag, through the
//! same ethtool request the daemon makes, on a veth in a namespace. Real servers on a VLAN:
//! their frames leave tagged with it, through BPF_PROG_TEST_RUN. How a real server's VLAN is
//! found: the decision over the director's VLAN sub-interfaces, and the link messages it reads.
//! (VLAN interfaces themselves cannot be made on a kernel without 802.1Q support, as here.)
//! Needs root.
use lvs_xdp_common::reason;
use lvs_xdp_tests::{
    netns::{Netns, in_netns},
    packet::{ETH_P_8021AD, ETH_P_8021Q, Frame, Ipv6Packet},
};

mod support;
use support::{LB, XDP_TX, check, director_from, forwarded, pin_to_cpu0};

#[test]
fn receive_vlan_offload_is_read_from_the_nic() {
    assert!(unsafe { libc::geteuid() } == 0, "needs root (netns)");
    let ns = Netns::with_veth_pair("vlan", "a0", "b0").unwrap();
    let read = || in_netns(&ns.name, || Ok(lvs_xdp::iface::rx_vlan_offload("a0"))).unwrap();
    // veth offers it, on by default, as most NIC drivers do.
    assert_eq!(read(), Some(true));
    ns.exec("ethtool", &["-K", "a0", "rxvlan", "off"]).unwrap();
    assert_eq!(read(), Some(false));
    let missing = in_netns(&ns.name, || Ok(lvs_xdp::iface::rx_vlan_offload("nope0"))).unwrap();
    assert_eq!(missing, None);
    // No VLAN interface on the veth.
    let index = lvs_xdp_tests::netns::ifindex(&ns.name, "a0").unwrap();
    let vlans = in_netns(&ns.name, || {
        Ok(lvs_xdp::netlink::Rtnl::open()?.vlans_on(index)?)
    })
    .unwrap();
    assert!(vlans.is_empty(), "{vlans:?}");
}

const CONFIG: &str = r#"
flow_table_size = 4096
flow_table_size_v6 = 4096
[[service]]
vip = "10.0.0.10"
port = 80
scheduler = "rr"
real_servers = [ { address = "10.0.0.3", mac = "02:00:00:00:00:03", vlan = 100 } ]
[[service]]
vip = "2001:db8::10"
port = 80
real_servers = [ { address = "2001:db8::3", mac = "02:00:00:00:00:03", vlan = 200 } ]
[[service]]
vip = "10.0.0.11"
port = 80
real_servers = [ { address = "10.0.0.4", mac = "02:00:00:00:00:04" } ]
"#;

const RS3: [u8; 6] = [2, 0, 0, 0, 0, 3];
const RS4: [u8; 6] = [2, 0, 0, 0, 0, 4];

fn to(d: &lvs_xdp::Director, name: &str, input: &Frame, expected: &Frame, real: [u8; 6]) {
    check(
        d,
        name,
        &input.build(),
        XDP_TX,
        &forwarded(&expected.build(), real),
        reason::FORWARDED,
    );
}

/// A real server on VLAN 100: an untagged frame gets the tag pushed (priority 0), a tagged one
/// its VID replaced (its priority kept; an 802.1ad tag becomes 802.1Q), on the general path and
/// for a known flow alike; the rest of the frame is unchanged. A real server on no VLAN gets
/// frames as they came.
#[test]
fn frames_to_a_real_server_on_a_vlan_leave_tagged_with_it() {
    pin_to_cpu0();
    let d = director_from(CONFIG);
    let syn = |port: u16| Frame::tcp(LB, "10.1.0.1", port, "10.0.0.10", 80);
    to(
        &d,
        "untagged SYN",
        &syn(1000),
        &syn(1000).with_vlan(ETH_P_8021Q, 100),
        RS3,
    );
    let ack = syn(1000).with_tcp_flags(0x10);
    to(
        &d,
        "untagged ACK of the known flow",
        &ack,
        &ack.clone().with_vlan(ETH_P_8021Q, 100),
        RS3,
    );
    // Priority 5, VLAN 7 in; priority 5, VLAN 100 out.
    let pcp5 = 5 << 13;
    to(
        &d,
        "tagged ACK",
        &ack.clone().with_vlan(ETH_P_8021Q, pcp5 | 7),
        &ack.clone().with_vlan(ETH_P_8021Q, pcp5 | 100),
        RS3,
    );
    to(
        &d,
        "802.1ad-tagged SYN",
        &syn(1001).with_vlan(ETH_P_8021AD, 7),
        &syn(1001).with_vlan(ETH_P_8021Q, 100),
        RS3,
    );
    // IPv6, to its real server on VLAN 200.
    let v6 = Frame::v6(
        LB,
        &Ipv6Packet::tcp("2001:db8:1::1", 1000, "2001:db8::10", 80, 0x02),
    );
    let v6_tagged = Frame::v6(
        LB,
        &Ipv6Packet::tcp("2001:db8:1::1", 1000, "2001:db8::10", 80, 0x02),
    )
    .with_vlan(ETH_P_8021Q, 200);
    to(&d, "IPv6 SYN", &v6, &v6_tagged, RS3);
    // No VLAN: as it came.
    let other = Frame::tcp(LB, "10.1.0.1", 2000, "10.0.0.11", 80);
    to(&d, "untagged, no VLAN", &other, &other, RS4);
    let tagged = other.clone().with_vlan(ETH_P_8021Q, 7);
    to(&d, "tagged, no VLAN", &tagged, &tagged, RS4);
}

/// Where a real server's MAC is resolved, and the VLAN its frames get: a VLAN given picks that
/// VLAN's interface; otherwise the interface its route goes out of, if it is a VLAN on the
/// director's; otherwise the director's interface itself.
#[test]
fn a_real_servers_vlan_is_the_one_its_route_or_its_setting_names() {
    use lvs_xdp::{
        neigh::{Segment, segment},
        netlink::VlanIface,
    };
    let attach = Segment {
        ifindex: 2,
        ifname: "eth0".into(),
        vlan: 0,
    };
    let vlans = [
        VlanIface {
            ifindex: 10,
            name: "eth0.100".into(),
            vid: 100,
        },
        VlanIface {
            ifindex: 11,
            name: "eth0.200".into(),
            vid: 200,
        },
    ];
    let addr = "10.0.0.3".parse().unwrap();
    let on = |i: u32, n: &str, v: u16| Segment {
        ifindex: i,
        ifname: n.into(),
        vlan: v,
    };
    assert_eq!(
        segment(addr, None, Some(2), &attach, &vlans).unwrap(),
        attach
    );
    assert_eq!(segment(addr, None, None, &attach, &vlans).unwrap(), attach);
    assert_eq!(
        segment(addr, None, Some(11), &attach, &vlans).unwrap(),
        on(11, "eth0.200", 200)
    );
    // A route out of an interface that is no VLAN of the director's: its own segment.
    assert_eq!(
        segment(addr, None, Some(7), &attach, &vlans).unwrap(),
        attach
    );
    assert_eq!(
        segment(addr, Some(100), Some(2), &attach, &vlans).unwrap(),
        on(10, "eth0.100", 100)
    );
    let err = segment(addr, Some(300), None, &attach, &vlans).unwrap_err();
    assert!(
        format!("{err:#}")
            .contains("real server 10.0.0.3 is on VLAN 300, but eth0 has no VLAN 300 interface"),
        "{err:#}"
    );
}

/// The link messages a VLAN interface comes as: its parent, name and VID are read; other
/// kinds, and VLANs on other parents, are not VLANs of this interface.
#[test]
fn vlan_interfaces_are_read_from_their_link_messages() {
    use lvs_xdp::netlink::VlanIface;
    use netlink_packet_route::link::{
        InfoData, InfoKind, InfoVlan, LinkAttribute, LinkInfo, LinkMessage,
    };
    let link = |index: u32, name: &str, parent: u32, kind: InfoKind, vid: Option<u16>| {
        let mut m = LinkMessage::default();
        m.header.index = index;
        m.attributes.push(LinkAttribute::IfName(name.into()));
        m.attributes.push(LinkAttribute::Link(parent));
        let mut info = vec![LinkInfo::Kind(kind)];
        if let Some(v) = vid {
            info.push(LinkInfo::Data(InfoData::Vlan(vec![InfoVlan::Id(v)])));
        }
        m.attributes.push(LinkAttribute::LinkInfo(info));
        m
    };
    assert_eq!(
        VlanIface::of(&link(10, "eth0.100", 2, InfoKind::Vlan, Some(100)), 2),
        Some(VlanIface {
            ifindex: 10,
            name: "eth0.100".into(),
            vid: 100
        })
    );
    assert_eq!(
        VlanIface::of(&link(10, "eth0.100", 3, InfoKind::Vlan, Some(100)), 2),
        None
    );
    assert_eq!(
        VlanIface::of(&link(12, "mv0", 2, InfoKind::MacVlan, None), 2),
        None
    );
}
