//! Names for numbers, as ipvsadm prints them without `-n`: ports from /etc/services, addresses
//! from the host's resolver (both through the C library, as ipvsadm does).
use std::{
    ffi::{CStr, CString},
    net::IpAddr,
};

use crate::model::Protocol;

fn proto_name(proto: Protocol) -> &'static CStr {
    match proto {
        Protocol::Tcp => c"tcp",
        Protocol::Udp => c"udp",
    }
}

/// The port of service `name` (`http` → 80), from /etc/services.
pub fn port_of_service(name: &str, proto: Protocol) -> Option<u16> {
    let name = CString::new(name).ok()?;
    // SAFETY: both are valid C strings; the result points at libc's static storage and is
    // read at once (the command is single-threaded when it parses its arguments).
    let entry = unsafe { libc::getservbyname(name.as_ptr(), proto_name(proto).as_ptr()) };
    if entry.is_null() {
        return None;
    }
    // SAFETY: non-null servent from libc.
    let port = unsafe { (*entry).s_port };
    Some(u16::from_be(port as u16))
}

/// The service name of `port` (80 → `http`), or the number.
pub fn service_of_port(port: u16, proto: Protocol) -> String {
    // SAFETY: valid C string; the result is read at once.
    let entry = unsafe { libc::getservbyport(i32::from(port.to_be()), proto_name(proto).as_ptr()) };
    if entry.is_null() {
        return port.to_string();
    }
    // SAFETY: non-null servent with a NUL-terminated name.
    unsafe { CStr::from_ptr((*entry).s_name) }
        .to_string_lossy()
        .into_owned()
}

/// The host name of `addr` from the resolver, or the address.
pub fn host_of_addr(addr: IpAddr) -> String {
    let mut host = [0 as libc::c_char; 1025];
    let lookup = |sa: *const libc::sockaddr, len: usize, host: &mut [libc::c_char]| {
        // SAFETY: sa points at a valid socket address of `len` bytes; host is a writable buffer
        // of the given length.
        unsafe {
            libc::getnameinfo(
                sa,
                len as libc::socklen_t,
                host.as_mut_ptr(),
                host.len() as libc::socklen_t,
                std::ptr::null_mut(),
                0,
                libc::NI_NAMEREQD,
            )
        }
    };
    let rc = match addr {
        IpAddr::V4(a) => {
            let sin = libc::sockaddr_in {
                sin_family: libc::AF_INET as libc::sa_family_t,
                sin_port: 0,
                sin_addr: libc::in_addr {
                    s_addr: u32::from_ne_bytes(a.octets()),
                },
                sin_zero: [0; 8],
            };
            lookup(
                (&sin as *const libc::sockaddr_in).cast(),
                std::mem::size_of::<libc::sockaddr_in>(),
                &mut host,
            )
        }
        IpAddr::V6(a) => {
            let sin6 = libc::sockaddr_in6 {
                sin6_family: libc::AF_INET6 as libc::sa_family_t,
                sin6_port: 0,
                sin6_flowinfo: 0,
                sin6_addr: libc::in6_addr {
                    s6_addr: a.octets(),
                },
                sin6_scope_id: 0,
            };
            lookup(
                (&sin6 as *const libc::sockaddr_in6).cast(),
                std::mem::size_of::<libc::sockaddr_in6>(),
                &mut host,
            )
        }
    };
    if rc != 0 {
        return addr.to_string();
    }
    // SAFETY: getnameinfo wrote a NUL-terminated string into host.
    unsafe { CStr::from_ptr(host.as_ptr()) }
        .to_string_lossy()
        .into_owned()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ports_and_services_from_etc_services() {
        // /etc/services is part of every Debian system (netbase).
        if !std::path::Path::new("/etc/services").exists() {
            panic!("/etc/services is missing");
        }
        assert_eq!(port_of_service("http", Protocol::Tcp), Some(80));
        assert_eq!(service_of_port(80, Protocol::Tcp), "http");
        assert_eq!(service_of_port(65000, Protocol::Tcp), "65000");
        assert_eq!(port_of_service("no-such-service", Protocol::Udp), None);
    }
}
