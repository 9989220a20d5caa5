//! `cargo xtask lab`: the classic LVS-DR experiment, end to end, in network namespaces.
use std::{path::Path, thread, time::Duration};

use anyhow::{Context as _, Result, bail};
use lvs_xdp_tests::{
    lab::{self, Lab},
    signals,
};

const GETS: usize = 10;
/// The file fetched to show where reply bytes go.
const BIG: usize = 1 << 20;

pub fn lab(bin: &Path) -> Result<()> {
    crate::require_root("cargo xtask lab")?;
    signals::trap();
    let names;
    let result = {
        let mut lab = Lab::new("lab")?;
        names = lab.namespace_names();
        let result = experiment(&mut lab, bin);
        if result.is_err() && !lab.lb_output().is_empty() {
            eprintln!("lvs-xdp output:\n{}", lab.lb_output());
        }
        result
        // `lab` drops here: lvs-xdp and nginx stopped, namespaces and files removed.
    };
    let listed = lvs_xdp_tests::netns::list()?;
    let left: Vec<&String> = names.iter().filter(|n| listed.contains(n)).collect();
    if left.is_empty() {
        println!("\nCleaned up: namespaces {} removed.", names.join(", "));
    } else {
        eprintln!("warning: namespaces left behind: {left:?}");
    }
    result
}

fn experiment(lab: &mut Lab, bin: &Path) -> Result<()> {
    println!(
        "LVS-DR lab: client {}, LB {} (VIP {} on eth0), real servers {} and {} (VIP on lo, arp_ignore=1, arp_announce=2), one bridge.",
        lab::CLIENT_IP,
        lab::LB_IP,
        lab::VIP,
        lab::REAL_SERVERS[0].1,
        lab::REAL_SERVERS[1].1
    );
    println!(
        "Namespaces (client, lb, rs1, rs2, switch): {}",
        lab.namespace_names().join(", ")
    );
    let big: Vec<u8> = (0..BIG).map(|i| (i * 7 + i / 4096) as u8).collect();
    lab.start_nginx(Some(&big))?;
    println!("nginx listening on port 80 in both real servers.");

    lab.start_lb(bin, &["--mode", "native", "--interval", "0"])?;
    println!(
        "\nOn the LB ({}), lvs-xdp in place of the IPVS module, then ipvsadm's words:\n$ lvs-xdp run --iface eth0 --mode native &",
        lab.lb.name
    );
    println!("{}", lab.lb_output().trim());
    let vip = lab::VIP;
    for words in [
        format!("-A -t {vip}:80 -s rr"),
        format!("-a -t {vip}:80 -r {} -g", lab::REAL_SERVERS[0].1),
        format!("-a -t {vip}:80 -r {} -g", lab::REAL_SERVERS[1].1),
        "-L -n".to_string(),
    ] {
        print!("{}", ipvsadm(lab, bin, &words)?);
    }

    println!(
        "\nFetching http://{}/ {GETS} times from the client:",
        lab::VIP
    );
    let mut answers = Vec::new();
    for i in 1..=GETS {
        signals::check()?;
        let body = lab.get("/index.html")?;
        println!("  GET #{i:<2} -> {}", body.trim());
        answers.push(body.trim().to_string());
        thread::sleep(Duration::from_millis(100));
    }
    let rs1 = answers.iter().filter(|a| a.starts_with("rs1")).count();
    let rs2 = answers.iter().filter(|a| a.starts_with("rs2")).count();
    println!("  rs1 answered {rs1}, rs2 answered {rs2}.");

    let neigh = lab.client.stdout("ip", &["neigh", "show", lab::VIP])?;
    println!(
        "\nThe client's ARP entry for the VIP: {} (the LB's MAC is {}).",
        neigh.trim(),
        lab::LB_MAC
    );
    let (lb_rx0, lb_tx0) = Lab::eth0_bytes(&lab.lb)?;
    let (cl_rx0, _) = Lab::eth0_bytes(&lab.client)?;
    let dest = lab.dir.0.join("download.bin");
    lab.download("/big.bin", &dest)?;
    let got = std::fs::read(&dest)?;
    if got != big {
        bail!("the 1 MiB download through the VIP differs from the served file");
    }
    let (lb_rx1, lb_tx1) = Lab::eth0_bytes(&lab.lb)?;
    let (cl_rx1, _) = Lab::eth0_bytes(&lab.client)?;
    println!(
        "Downloading 1 MiB through the VIP: the client received {} bytes; the LB's eth0 received {} and sent {} bytes.",
        cl_rx1 - cl_rx0,
        lb_rx1 - lb_rx0,
        lb_tx1 - lb_tx0
    );
    println!("The replies went from the real server straight to the client: they bypassed the LB.");

    // The same over IPv6: the lab's namespaces have addresses in 2001:db8::/64 too, the VIP
    // 2001:db8::10 on the LB's eth0 and on the real servers' lo.
    let vip6 = lab::VIP6;
    println!(
        "\nThe same service over IPv6 (VIP {vip6} on the LB's eth0 and the real servers' lo):"
    );
    for words in [
        format!("-A -t [{vip6}]:80 -s rr"),
        format!("-a -t [{vip6}]:80 -r [{}] -g", lab::REAL_SERVERS_V6[0]),
        format!("-a -t [{vip6}]:80 -r [{}] -g", lab::REAL_SERVERS_V6[1]),
    ] {
        print!("{}", ipvsadm(lab, bin, &words)?);
    }
    println!("Fetching http://[{vip6}]/ {} times (curl -6):", GETS / 2);
    let mut answers6 = Vec::new();
    for i in 1..=GETS / 2 {
        signals::check()?;
        let body = lab.get6("/index.html")?;
        println!("  GET #{i:<2} -> {}", body.trim());
        answers6.push(body.trim().to_string());
    }
    if !answers6.iter().any(|a| a.starts_with("rs1"))
        || !answers6.iter().any(|a| a.starts_with("rs2"))
    {
        bail!("the IPv6 answers did not alternate between the real servers");
    }

    print!("\n{}", ipvsadm(lab, bin, "-L -n --stats")?);
    print!("{}", ipvsadm(lab, bin, "-S -n")?);

    let status = lab.stop_lb()?;
    println!("\nlvs-xdp stopped with SIGTERM ({status}); its final stats:\n");
    let out = lab.lb_output();
    let table: Vec<&str> = out.lines().skip_while(|l| !l.starts_with("Prot")).collect();
    println!("{}", table.join("\n"));
    if !status.success() {
        bail!("lvs-xdp exited with {status}");
    }
    println!(
        "XDP program still attached to the LB's eth0: {}",
        if lab.xdp_attached()? {
            "yes (unexpected)"
        } else {
            "no"
        }
    );
    if rs1 == 0 || rs2 == 0 {
        bail!("the answers did not alternate between the real servers");
    }
    Ok(())
}

/// `lvs-xdp WORDS` on the LB, echoed as typed and followed by what it printed.
fn ipvsadm(lab: &Lab, bin: &Path, words: &str) -> Result<String> {
    let out = lvs_xdp_tests::netns::run(
        lab.lb
            .command(bin.to_str().context("binary path")?)?
            .args(words.split_whitespace()),
    )?;
    Ok(format!(
        "$ lvs-xdp {words}\n{}",
        String::from_utf8_lossy(&out.stdout)
    ))
}
