//! Network interfaces: index and Ethernet address, read in the caller's network namespace.
use std::{ffi::CString, io, mem};

use anyhow::{Result, bail};

use crate::config::Mac;

const ARPHRD_ETHER: u16 = 1;

/// An interface the program is attached to.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Interface {
    pub name: String,
    pub index: u32,
    pub mac: Mac,
}

impl Interface {
    /// The index of interface `name` (any kind), or an error naming it.
    pub fn index_of(name: &str) -> Result<u32> {
        if name.is_empty() || name.len() >= libc::IFNAMSIZ || name.contains(['/', '\0', ' ']) {
            bail!("bad interface name {name:?}");
        }
        let c_name = CString::new(name)?;
        // SAFETY: c_name is a valid NUL-terminated string.
        match unsafe { libc::if_nametoindex(c_name.as_ptr()) } {
            0 => bail!("interface {name} not found"),
            index => Ok(index),
        }
    }

    /// Looks the interface up; refuses a missing or non-Ethernet one.
    pub fn lookup(name: &str) -> Result<Interface> {
        if name.is_empty() || name.len() >= libc::IFNAMSIZ || name.contains(['/', '\0', ' ']) {
            bail!("bad interface name {name:?}");
        }
        let c_name = CString::new(name)?;
        // SAFETY: c_name is a valid NUL-terminated string.
        let index = unsafe { libc::if_nametoindex(c_name.as_ptr()) };
        if index == 0 {
            bail!("interface {name} not found");
        }
        let (family, mac) = hardware_address(name)
            .map_err(|e| anyhow::anyhow!("interface {name}: cannot read its MAC: {e}"))?;
        if family != ARPHRD_ETHER {
            bail!(
                "interface {name} is not Ethernet (ARPHRD type {family}): direct routing rewrites MAC addresses"
            );
        }
        Ok(Interface {
            name: name.to_string(),
            index,
            mac: Mac(mac),
        })
    }
}

/// The interface's driver name (ETHTOOL_GDRVINFO), e.g. "veth", "mlx5_core"; `None` when the
/// driver does not answer.
pub fn driver(name: &str) -> Option<String> {
    const ETHTOOL_GDRVINFO: u32 = 0x0000_0003;
    // struct ethtool_drvinfo: cmd, driver[32], version[32], fw_version[32], bus_info[32], ...
    let mut info = [0u8; 196];
    info[..4].copy_from_slice(&ETHTOOL_GDRVINFO.to_ne_bytes());
    ethtool(name, &mut info)?;
    let driver = &info[4..36];
    let end = driver.iter().position(|&b| b == 0).unwrap_or(driver.len());
    Some(String::from_utf8_lossy(&driver[..end]).into_owned())
}

/// Whether the NIC takes 802.1Q tags off received frames before XDP sees them (receive VLAN
/// offload, `ethtool -k`'s `rx-vlan-offload`); `None` when the driver does not answer.
pub fn rx_vlan_offload(name: &str) -> Option<bool> {
    const ETHTOOL_GFLAGS: u32 = 0x0000_0025;
    const ETH_FLAG_RXVLAN: u32 = 1 << 8;
    // struct ethtool_value: cmd, data.
    let mut value = [0u8; 8];
    value[..4].copy_from_slice(&ETHTOOL_GFLAGS.to_ne_bytes());
    ethtool(name, &mut value)?;
    let flags = u32::from_ne_bytes([value[4], value[5], value[6], value[7]]);
    Some(flags & ETH_FLAG_RXVLAN != 0)
}

/// One SIOCETHTOOL request on interface `name`: `buf` starts with the command and is the size
/// the kernel writes for it.
fn ethtool(name: &str, buf: &mut [u8]) -> Option<()> {
    // SAFETY: plain socket(2), closed below.
    let fd = unsafe { libc::socket(libc::AF_INET, libc::SOCK_DGRAM | libc::SOCK_CLOEXEC, 0) };
    if fd < 0 {
        return None;
    }
    // SAFETY: ifreq is plain data; zero is a valid value.
    let mut req: libc::ifreq = unsafe { mem::zeroed() };
    for (dst, src) in req
        .ifr_name
        .iter_mut()
        .take(libc::IFNAMSIZ - 1)
        .zip(name.bytes())
    {
        *dst = src as libc::c_char;
    }
    req.ifr_ifru.ifru_data = buf.as_mut_ptr().cast();
    // SAFETY: SIOCETHTOOL with a buffer of the size the kernel writes for its command.
    let rc = unsafe { libc::ioctl(fd, libc::SIOCETHTOOL, &mut req) };
    // SAFETY: fd is ours.
    unsafe { libc::close(fd) };
    (rc >= 0).then_some(())
}

/// SIOCGIFHWADDR: the link-layer type and the first six bytes of the address.
fn hardware_address(name: &str) -> io::Result<(u16, [u8; 6])> {
    // SAFETY: plain socket(2); the fd is closed below on every path.
    let fd = unsafe { libc::socket(libc::AF_INET, libc::SOCK_DGRAM | libc::SOCK_CLOEXEC, 0) };
    if fd < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: ifreq is plain data; zero is a valid value.
    let mut req: libc::ifreq = unsafe { mem::zeroed() };
    for (dst, src) in req.ifr_name.iter_mut().zip(name.bytes()) {
        *dst = src as libc::c_char;
    }
    // SAFETY: fd is a socket and req a properly sized ifreq with a NUL-terminated name.
    let rc = unsafe { libc::ioctl(fd, libc::SIOCGIFHWADDR, &mut req) };
    let err = io::Error::last_os_error();
    // SAFETY: fd is ours.
    unsafe { libc::close(fd) };
    if rc < 0 {
        return Err(err);
    }
    // SAFETY: SIOCGIFHWADDR filled the hwaddr member of the union.
    let addr = unsafe { req.ifr_ifru.ifru_hwaddr };
    let mut mac = [0u8; 6];
    for (dst, src) in mac.iter_mut().zip(addr.sa_data.iter()) {
        *dst = *src as u8;
    }
    Ok((addr.sa_family, mac))
}
