//! Route health injection's routing table, through the real kernel: the announcer keeps exactly
//! the VIPs it is given as blackhole host routes of its own protocol in its table, leaves other
//! routes alone, and withdraws everything at the end. Needs root.
use std::{collections::BTreeSet, net::IpAddr};

use lvs_xdp::announce::{Announcer, PROTOCOL};
use lvs_xdp_tests::netns::{Netns, in_netns};

fn table(ns: &Netns, family: &str) -> String {
    ns.stdout("ip", &[family, "route", "show", "table", "100"])
        .unwrap()
}

#[test]
fn the_announce_table_holds_exactly_the_serving_vips() {
    let ns = Netns::new("announce").unwrap();
    // Someone else's route in the same table stays.
    ns.ip(&[
        "route",
        "add",
        "blackhole",
        "10.9.9.9/32",
        "table",
        "100",
        "proto",
        "static",
    ])
    .unwrap();
    let v4: IpAddr = "10.0.0.10".parse().unwrap();
    let v4b: IpAddr = "10.0.0.11".parse().unwrap();
    let v6: IpAddr = "2001:db8::10".parse().unwrap();
    let steps = in_netns(&ns.name, || {
        let mut a = Announcer::new(100)?;
        let first = a.sync(&BTreeSet::from([v4, v4b, v6]))?;
        let again = a.sync(&BTreeSet::from([v4, v4b, v6]))?;
        let second = a.sync(&BTreeSet::from([v4]))?;
        Ok((first, again, second, a))
    })
    .unwrap();
    let (first, again, second, a) = steps;
    assert_eq!(first, (vec![v4, v4b, v6], vec![]));
    assert_eq!(again, (vec![], vec![]), "nothing to do the second time");
    assert_eq!(second, (vec![], vec![v4b, v6]));
    let t4 = table(&ns, "-4");
    assert!(
        t4.contains(&format!("blackhole 10.0.0.10 proto {PROTOCOL}")),
        "{t4}"
    );
    assert!(!t4.contains("10.0.0.11"), "{t4}");
    assert!(t4.contains("blackhole 10.9.9.9 proto static"), "{t4}");
    assert!(!table(&ns, "-6").contains("2001:db8::10"));
    let mut a = a;
    let gone = in_netns(&ns.name, || a.withdraw_all()).unwrap();
    assert_eq!(gone, [v4]);
    let t4 = table(&ns, "-4");
    assert!(!t4.contains("10.0.0.10") && t4.contains("10.9.9.9"), "{t4}");
    // The main and local tables are refused.
    assert!(Announcer::new(254).is_err() && Announcer::new(0).is_err());
}
