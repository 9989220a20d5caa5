//! What the BPF_PROG_TEST_RUN test files share: a director loaded on the loopback interface
//! (its frames arrive on ifindex 1) and the CPU pinning that per-CPU round robin needs.
#![allow(dead_code)]

use lvs_xdp::{Config, Director, iface::Interface, model::Mac};

pub const XDP_DROP: u32 = 1;
pub const XDP_PASS: u32 = 2;
pub const XDP_TX: u32 = 3;

/// The MAC the program believes is its own.
pub const LB: [u8; 6] = [0x02, 0, 0, 0, 0, 0x01];

/// Loads `config` on the loopback interface. Needs root.
pub fn director_from(config: &str) -> Director {
    assert!(
        unsafe { libc::geteuid() } == 0,
        "the packet fixtures need root (BPF); run them with cargo xtask test as root"
    );
    let config = Config::from_toml(config).unwrap();
    let lo = Interface {
        name: "lo".into(),
        index: 1,
        mac: Mac(LB),
    };
    Director::load(&config, &[lo], None).expect("load the XDP program")
}

/// Pins the test thread to CPU 0: round-robin positions are per CPU.
pub fn pin_to_cpu0() {
    // SAFETY: a zeroed cpu_set_t with one bit set, for the calling thread.
    unsafe {
        let mut set: libc::cpu_set_t = std::mem::zeroed();
        libc::CPU_SET(0, &mut set);
        assert_eq!(
            libc::sched_setaffinity(0, size_of::<libc::cpu_set_t>(), &set),
            0
        );
    }
}
