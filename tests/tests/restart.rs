//! Restarts that lose no connection: `lvs-xdp run --keep` leaves its program attached and its
//! maps pinned; the next `run` takes them over. A rate-limited 20 MB download through the VIP
//! goes on across two restarts and arrives byte for byte; its connection stays on its real
//! server; the last run, without --keep, leaves nothing behind. Needs root.
use std::{path::Path, time::Duration};

use lvs_xdp_tests::{bins, lab::Lab, netns::Netns};

const SIZE: usize = 20 << 20;

fn ok(ns: &Netns, args: &[&str]) -> String {
    bins::output_in(ns, args)
}

/// The connection lines of `-L -n -c` from `client`, each "source destination".
fn connections_from(ns: &Netns, client: &str) -> Vec<String> {
    ok(ns, &["-L", "-n", "-c"])
        .lines()
        .skip(2)
        .filter(|l| l.contains(&format!(" {client}:")))
        .map(|l| {
            let f: Vec<&str> = l.split_whitespace().collect();
            format!("{} {}", f[3], f[5])
        })
        .collect()
}

fn is_bpffs(path: &str) -> bool {
    std::fs::read_to_string("/proc/mounts")
        .unwrap()
        .lines()
        .any(|l| {
            let f: Vec<&str> = l.split_whitespace().collect();
            f.len() > 2 && f[1] == path && f[2] == "bpf"
        })
}

/// Unmounts /sys/fs/bpf on drop if this test found it unmounted (lvs-xdp mounts it to keep).
struct BpffsGuard(bool);

impl Drop for BpffsGuard {
    fn drop(&mut self) {
        if self.0 && is_bpffs("/sys/fs/bpf") {
            let target = c"/sys/fs/bpf";
            // SAFETY: a valid C string.
            unsafe { libc::umount2(target.as_ptr(), libc::MNT_DETACH) };
        }
    }
}

#[test]
fn a_download_survives_two_restarts_byte_for_byte() {
    assert!(
        unsafe { libc::geteuid() } == 0,
        "restarts need root (netns, XDP, bpffs)"
    );
    let _bpffs = BpffsGuard(!is_bpffs("/sys/fs/bpf"));
    let bin = bins::lvs_xdp();
    let mut lab = Lab::new("keep").expect("the lab topology");
    let big: Vec<u8> = (0..SIZE as u32)
        .map(|i| (i % 251) as u8 ^ (i >> 11) as u8)
        .collect();
    lab.start_nginx(Some(&big)).expect("nginx");
    let config = lab.write_lvs_config().unwrap();
    let config = config.to_str().unwrap().to_string();
    let run = |lab: &mut Lab, keep: bool| {
        let mut args = vec![
            "--config",
            config.as_str(),
            "--mode",
            "native",
            "--interval",
            "0",
        ];
        if keep {
            args.push("--keep");
        }
        lab.start_lb(&bin, &args).expect("lvs-xdp run");
    };
    run(&mut lab, true);

    // 20 MB at nginx's 4 MB/s for /slow/: about five seconds.
    let dest = lab.dir.0.join("kept.bin");
    let curl = lab.start_download("/slow/big.bin", &dest, 60).unwrap();
    let grown = |bytes: u64| Lab::wait_for_bytes(&dest, bytes, Duration::from_secs(20)).unwrap();
    grown(2 << 20);
    let before = connections_from(&lab.lb, lvs_xdp_tests::lab::CLIENT_IP);
    assert_eq!(before.len(), 1, "the download's connection: {before:?}");
    let pins = Path::new("/sys/fs/bpf/lvs-xdp/netns")
        .join(&lab.lb.name)
        .join("eth0");

    // Restart 1: stop with --keep (the program stays), start again with --keep.
    let status = lab.stop_lb().unwrap();
    assert!(status.success(), "{}", lab.lb_output());
    assert!(
        lab.xdp_attached().unwrap(),
        "kept: the program stays attached"
    );
    assert!(pins.join("link-eth0").exists() && pins.join("FLOW_CACHE_V4").exists());
    // A program whose maps are laid out otherwise (another version) refuses to take over,
    // saying what to do, and changes nothing.
    let state = Path::new("/run/lvs-xdp/netns")
        .join(&lab.lb.name)
        .join("eth0.kept.json");
    let saved = std::fs::read_to_string(&state).unwrap();
    let layout = format!("\"layout\":{}", lvs_xdp_common::LAYOUT);
    assert!(saved.contains(&layout), "{saved}");
    std::fs::write(&state, saved.replace(&layout, "\"layout\":1")).unwrap();
    let out = lab
        .lb
        .nsenter_command(bin.to_str().unwrap())
        .unwrap()
        .args([
            "run", "--iface", "eth0", "--config", &config, "--mode", "native",
        ])
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        !out.status.success() && err.contains("laid out differently"),
        "{err}"
    );
    assert!(lab.xdp_attached().unwrap() && pins.join("link-eth0").exists());
    std::fs::write(&state, &saved).unwrap();
    run(&mut lab, true);
    assert!(!pins.exists(), "taken over: the pins are removed");
    assert_eq!(
        connections_from(&lab.lb, lvs_xdp_tests::lab::CLIENT_IP),
        before,
        "the connection keeps its real server"
    );
    grown(8 << 20);

    // Restart 2: stop with --keep, start without: this run detaches when it stops.
    let status = lab.stop_lb().unwrap();
    assert!(status.success(), "{}", lab.lb_output());
    run(&mut lab, false);
    assert_eq!(
        connections_from(&lab.lb, lvs_xdp_tests::lab::CLIENT_IP),
        before
    );
    lab.finish_download(curl, &dest, &big).unwrap();
    assert_eq!(
        lab.lb_output()
            .matches("took over the director kept on eth0")
            .count(),
        2,
        "{}",
        lab.lb_output()
    );

    // Without --keep: detached, and nothing left in bpffs or /run.
    let status = lab.stop_lb().unwrap();
    assert!(status.success(), "{}", lab.lb_output());
    assert!(!lab.xdp_attached().unwrap(), "detached at the end");
    assert!(!pins.exists());
    let state = Path::new("/run/lvs-xdp/netns").join(&lab.lb.name);
    assert!(!state.exists(), "{} left behind", state.display());
}
