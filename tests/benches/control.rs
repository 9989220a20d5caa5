//! Control-plane figures: time to apply 10 000 services of 10 real servers each, time to add
//! one real server to a service of 1 000 and to replace one there, and the peak RSS of
//! `lvs-xdp run` with the 10 000 services.
use std::{
    fmt::Write as _,
    process::Stdio,
    time::{Duration, Instant},
};

use anyhow::{Context as _, Result};
use lvs_xdp::{
    Config, Director,
    iface::Interface,
    model::{Mac, Op, RealOpts},
};
use lvs_xdp_tests::netns::Netns;

fn config_text(services: usize, reals: usize) -> String {
    let mut t = format!(
        "flow_table_size = 65536\nmax_services = {}\nmax_real_servers = {}\n",
        services.max(1),
        (services * reals).max(16) * 2 + 64
    );
    for i in 0..services {
        let _ = write!(
            t,
            "[[service]]\nvip = \"10.{}.{}.{}\"\nport = 80\nreal_servers = [",
            100 + i / 65536,
            (i / 256) % 256,
            i % 256
        );
        for r in 1..=reals {
            let (a, b, c) = (r / 65536, (r / 256) % 256, r % 256);
            let _ = write!(
                t,
                "{{ address = \"172.{}.{b}.{c}\", mac = \"02:00:00:{a:02x}:{b:02x}:{c:02x}\" }},",
                16 + a
            );
        }
        t.push_str(" ]\n");
    }
    t
}

fn lo() -> Interface {
    Interface {
        name: "lo".into(),
        index: 1,
        mac: Mac([2, 0, 0, 0, 0, 1]),
    }
}

/// Runs the control-plane measurements; returns a Markdown table.
pub fn run() -> Result<String> {
    let mut out = String::from("| control plane | measured |\n|---|---:|\n");
    // 10 000 x 10: parse and validate, lay out, create and fill the maps.
    let text = config_text(10_000, 10);
    let t = Instant::now();
    let config = Config::from_toml(&text)?;
    let parse = t.elapsed();
    let t = Instant::now();
    let director = Director::load(&config, &[lo()], None)?;
    let load = t.elapsed();
    drop(director);
    let _ = writeln!(
        out,
        "| apply 10 000 services x 10 real servers (parse {:.0} ms + load the programs and fill the maps {:.0} ms) | {:.2} s |",
        parse.as_secs_f64() * 1e3,
        load.as_secs_f64() * 1e3,
        (parse + load).as_secs_f64()
    );

    // One real server changed in a service of 1 000, while loaded.
    let config = Config::from_toml(&config_text(1, 1000))?;
    let mut director = Director::load(&config, &[lo()], None)?;
    let key = *director
        .state()
        .services
        .keys()
        .next()
        .context("a service")?;
    let (mut adds, mut replaces) = (Vec::new(), Vec::new());
    for i in 0..50u8 {
        let opts = |n: u8| RealOpts {
            weight: 1,
            mac: Some(Mac([2, 0, 0, 0x31, 0, n])),
            vlan: None,
        };
        let added = format!("172.31.0.{}", i + 1).parse()?;
        let t = Instant::now();
        director.apply(&[Op::AddReal(key, added, opts(i + 1))])?;
        adds.push(t.elapsed().as_secs_f64());
        let replacement = format!("172.31.1.{}", i + 1).parse()?;
        let t = Instant::now();
        director.apply(&[
            Op::DeleteReal(key, added),
            Op::AddReal(key, replacement, opts(i + 101)),
        ])?;
        replaces.push(t.elapsed().as_secs_f64());
    }
    for (what, times) in [
        ("add one real server to a service of 1 000", &mut adds),
        (
            "replace one real server in a service of 1 000",
            &mut replaces,
        ),
    ] {
        times.sort_by(|a, b| a.partial_cmp(b).unwrap());
        let _ = writeln!(
            out,
            "| {what} (median of 50) | {:.0} µs |",
            times[times.len() / 2] * 1e6
        );
    }
    drop(director);

    // Peak RSS of the real command with the 10 000-service configuration.
    let ns = Netns::with_veth_pair("rss", "veth0", "veth1")?;
    let path = std::env::temp_dir().join(format!("lvsx-{}-10k.toml", std::process::id()));
    std::fs::write(&path, &text)?;
    let started = lvs_xdp_tests::bins::start_run(&ns, "veth0", 0, &path, Stdio::inherit());
    let _ = std::fs::remove_file(&path);
    let (mut child, _) = started?;
    let status = std::fs::read_to_string(format!("/proc/{}/status", child.id()))?;
    let kib = |key: &str| {
        status
            .lines()
            .find(|l| l.starts_with(key))
            .and_then(|l| l.split_whitespace().nth(1))
            .and_then(|v| v.parse::<u64>().ok())
            .with_context(|| key.to_string())
    };
    let (hwm, rss) = (kib("VmHWM:")?, kib("VmRSS:")?);
    lvs_xdp_tests::netns::stop(&mut child, Duration::from_secs(10));
    let _ = writeln!(
        out,
        "| peak RSS of `lvs-xdp run` with 10 000 services x 10 real servers (6 MB of TOML) | {:.1} MiB |",
        hwm as f64 / 1024.0
    );
    let _ = writeln!(
        out,
        "| its RSS once running | {:.1} MiB |",
        rss as f64 / 1024.0
    );
    live(&mut out)?;
    Ok(out)
}

/// `-R` rules for `services` services of `reals` real servers each, with explicit MACs.
fn rules(services: usize, reals: usize) -> String {
    let mut t = String::new();
    for i in 0..services {
        let vip = format!("10.{}.{}.{}", 100 + i / 65536, (i / 256) % 256, i % 256);
        let _ = writeln!(t, "-A -t {vip}:80 -s rr");
        for r in 1..=reals {
            let (a, b, c) = (r / 65536, (r / 256) % 256, r % 256);
            let _ = writeln!(
                t,
                "-a -t {vip}:80 -r 172.{}.{b}.{c} -g -w 1 --mac 02:00:00:{a:02x}:{b:02x}:{c:02x}",
                16 + a
            );
        }
    }
    t
}

/// Runs `lvs-xdp WORDS` in `ns` with `stdin`; returns how long the whole command took.
fn timed(ns: &Netns, words: &[&str], stdin: &str) -> Result<Duration> {
    use std::io::Write as _;
    let bin = lvs_xdp_tests::bins::lvs_xdp();
    let t = Instant::now();
    let mut child = ns
        .command(bin.to_str().context("binary path")?)?
        .args(words)
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()?;
    child
        .stdin
        .take()
        .context("stdin")?
        .write_all(stdin.as_bytes())?;
    let out = child.wait_with_output()?;
    let took = t.elapsed();
    anyhow::ensure!(
        out.status.success(),
        "lvs-xdp {words:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    Ok(took)
}

/// Live changes through the control socket, the whole command each time (process start,
/// socket, apply, reply): 10 000 services of 10 real servers restored with `-R` into a running,
/// empty director, and one real server added to a service of 1 000 with `-a`.
fn live(out: &mut String) -> Result<()> {
    let ns = Netns::with_veth_pair("live", "veth0", "veth1")?;
    let path = std::env::temp_dir().join(format!("lvsx-{}-live.toml", std::process::id()));
    std::fs::write(
        &path,
        "flow_table_size = 65536\nmax_services = 10001\nmax_real_servers = 102000\n",
    )?;
    let started = lvs_xdp_tests::bins::start_run(&ns, "veth0", 0, &path, Stdio::inherit());
    let _ = std::fs::remove_file(&path);
    let (mut child, _) = started?;
    let result = (|| -> Result<()> {
        let restore = timed(&ns, &["-R"], &rules(10_000, 10))?;
        let _ = writeln!(
            out,
            "| `lvs-xdp -R` of 10 000 services x 10 real servers into a running director | {:.2} s |",
            restore.as_secs_f64()
        );
        let big = rules(1, 1000).replace("10.100.0.0", "10.200.0.1");
        timed(&ns, &["-R"], &big)?;
        let mut adds = Vec::new();
        for i in 0..20u8 {
            let rip = format!("172.31.2.{}", i + 1);
            let mac = format!("02:00:00:31:02:{:02x}", i + 1);
            adds.push(timed(
                &ns,
                &["-a", "-t", "10.200.0.1:80", "-r", &rip, "-g", "--mac", &mac],
                "",
            )?);
        }
        adds.sort();
        let _ = writeln!(
            out,
            "| `lvs-xdp -a` of one real server to a service of 1 000, the whole command (median of 20) | {:.1} ms |",
            adds[adds.len() / 2].as_secs_f64() * 1e3
        );
        Ok(())
    })();
    lvs_xdp_tests::netns::stop(&mut child, Duration::from_secs(10));
    result
}
