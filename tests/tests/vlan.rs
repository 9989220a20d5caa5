//! What lvs-xdp reads to warn about receive VLAN offload: the NIC's flag, through the same
//! ethtool request the daemon makes, on a veth in a namespace. (VLAN interfaces themselves
//! cannot be made on a kernel without 802.1Q support, as here.) Needs root.
use lvs_xdp_tests::netns::{Netns, in_netns};

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
