//! What the BPF_PROG_TEST_RUN test files share: a director loaded on the loopback interface
//! (its frames arrive on ifindex 1), the CPU pinning that per-CPU round robin needs, and the
//! check of one packet fixture (action, output header by header, exactly one verdict).
#![allow(dead_code)]

use lvs_xdp::{Config, Director, iface::Interface, listing::Snapshot, model::Mac};
use lvs_xdp_common::reason;
use lvs_xdp_tests::packet;

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

/// `input` with the Ethernet addresses a forward to `real` must produce.
pub fn forwarded(input: &[u8], real: [u8; 6]) -> Vec<u8> {
    let mut out = input.to_vec();
    out[0..6].copy_from_slice(&real);
    out[6..12].copy_from_slice(&LB);
    out
}

/// Runs one case: action, output header by header, and exactly one verdict counted, `why`.
pub fn check(b: &Director, name: &str, input: &[u8], action: u32, output: &[u8], why: u32) {
    let before = b.snapshot().unwrap();
    let (got_action, got) = b.balancer().test_run(input).unwrap();
    let after = b.snapshot().unwrap();
    assert_eq!(
        got_action,
        action,
        "{name}: action (1 drop, 2 pass, 3 tx); verdicts now {:?}",
        verdict_deltas(&before, &after)
    );
    let d = packet::diff(output, &got);
    assert!(
        d.is_empty(),
        "{name}: output differs:\n  {}",
        d.join("\n  ")
    );
    assert_eq!(
        after.total_packets() - before.total_packets(),
        1,
        "{name}: one verdict per packet"
    );
    assert_eq!(
        after.reason(why).packets - before.reason(why).packets,
        1,
        "{name}: expected verdict {}; got {:?}",
        reason::NAMES[why as usize],
        verdict_deltas(&before, &after)
    );
    assert_eq!(
        after.reason(why).bytes - before.reason(why).bytes,
        input.len() as u64,
        "{name}: verdict bytes"
    );
}

pub fn verdict_deltas(a: &Snapshot, b: &Snapshot) -> Vec<String> {
    (0..reason::COUNT as usize)
        .filter(|&i| b.global[i].packets != a.global[i].packets)
        .map(|i| {
            format!(
                "{}+{}",
                reason::NAMES[i],
                b.global[i].packets - a.global[i].packets
            )
        })
        .collect()
}

pub fn tx(b: &Director, name: &str, frame: &[u8], real: [u8; 6]) {
    check(
        b,
        name,
        frame,
        XDP_TX,
        &forwarded(frame, real),
        reason::FORWARDED,
    );
}

pub fn pass(b: &Director, name: &str, frame: &[u8], why: u32) {
    check(b, name, frame, XDP_PASS, frame, why);
}

pub fn drop(b: &Director, name: &str, frame: &[u8], why: u32) {
    check(b, name, frame, XDP_DROP, frame, why);
}

/// Where the program sends `frame`, which it must forward: the destination MAC it wrote.
pub fn forward_of(d: &Director, frame: &[u8]) -> [u8; 6] {
    let (action, out) = d.balancer().test_run(frame).unwrap();
    assert_eq!(action, XDP_TX);
    out[0..6].try_into().unwrap()
}
