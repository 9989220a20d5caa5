use super::*;

fn check(fall: u32, rise: u32) -> Check {
    Check {
        fall,
        rise,
        ..Check::new(Probe::Tcp)
    }
}

#[test]
fn fall_failures_in_a_row_take_it_out_and_rise_successes_bring_it_back() {
    let c = check(3, 2);
    let mut t = Tracker::default();
    assert!(t.up);
    // Two failures, then a success: the count starts again.
    assert_eq!(t.record(false, &c), None);
    assert_eq!(t.record(false, &c), None);
    assert_eq!(t.record(true, &c), None);
    assert_eq!(t.record(false, &c), None);
    assert_eq!(t.record(false, &c), None);
    assert_eq!(t.record(false, &c), Some(false));
    assert!(!t.up);
    assert_eq!(t.record(false, &c), None);
    assert_eq!(t.record(true, &c), None);
    assert_eq!(t.record(false, &c), None);
    assert_eq!(t.record(true, &c), None);
    assert_eq!(t.record(true, &c), Some(true));
    assert_eq!(t.transitions, 2);
    // fall 0 and rise 0 act as 1.
    let mut t = Tracker::default();
    assert_eq!(t.record(false, &check(0, 0)), Some(false));
    assert_eq!(t.record(true, &check(0, 0)), Some(true));
}

#[test]
fn a_failed_check_is_retried_sooner_while_the_server_is_in() {
    let c = Check {
        delay_loop: Duration::from_secs(6),
        delay_before_retry: Duration::from_secs(1),
        ..check(2, 1)
    };
    assert_eq!(c.next_after(true, true), Duration::from_secs(6));
    assert_eq!(c.next_after(false, true), Duration::from_secs(1));
    assert_eq!(c.next_after(false, false), Duration::from_secs(6));
}

fn service(weights: &[(u8, u32)]) -> Service {
    Service {
        opts: Default::default(),
        reals: weights
            .iter()
            .map(|(last, w)| {
                (
                    IpAddr::from([10, 0, 0, *last]),
                    RealOpts {
                        weight: *w,
                        mac: None,
                        vlan: None,
                    },
                )
            })
            .collect(),
    }
}

fn addr(last: u8) -> IpAddr {
    IpAddr::from([10, 0, 0, last])
}

#[test]
fn failed_real_servers_are_inhibited_hidden_or_removed_as_configured() {
    let configured = service(&[(3, 2), (4, 5)]);
    let down: BTreeSet<IpAddr> = [addr(3)].into();
    let mut health = ServiceHealth::default();
    // Keep (the default): weight 0 in the tables, not listed.
    let (eff, shown) = overlay(&configured, &health, &down);
    assert_eq!(eff.reals[&addr(3)].weight, 0);
    assert_eq!(eff.reals[&addr(4)].weight, 5);
    assert_eq!(shown[&addr(3)], Shown::Hidden);
    assert_eq!(shown[&addr(4)], Shown::Up);
    // inhibit_on_failure: weight 0, listed; per real server too.
    health.inhibit_on_failure = true;
    let (eff, shown) = overlay(&configured, &health, &down);
    assert_eq!(
        (eff.reals[&addr(3)].weight, shown[&addr(3)]),
        (0, Shown::Inhibited)
    );
    health.inhibit_on_failure = false;
    health.reals.insert(
        addr(3),
        RealHealth {
            check: Some(check(1, 1)),
            inhibit_on_failure: Some(true),
        },
    );
    assert_eq!(
        overlay(&configured, &health, &down).1[&addr(3)],
        Shown::Inhibited
    );
    // Reschedule: out of the tables.
    health.reals.clear();
    health.on_failure = OnFailure::Reschedule;
    let (eff, shown) = overlay(&configured, &health, &down);
    assert!(!eff.reals.contains_key(&addr(3)));
    assert_eq!(shown[&addr(3)], Shown::Removed);
    // Nothing down: the service as configured.
    assert_eq!(
        overlay(&configured, &health, &BTreeSet::new()).0,
        configured
    );
}

#[test]
fn the_sorry_server_is_in_only_while_no_real_server_serves() {
    let configured = service(&[(3, 1), (4, 0)]);
    let health = ServiceHealth {
        sorry_server: Some((addr(9), None)),
        ..Default::default()
    };
    let (eff, _) = overlay(&configured, &health, &BTreeSet::new());
    assert!(!eff.reals.contains_key(&addr(9)), "10.0.0.3 serves");
    // 10.0.0.3 down, 10.0.0.4 up but of weight 0: nobody serves.
    let (eff, shown) = overlay(&configured, &health, &[addr(3)].into());
    assert_eq!(eff.reals[&addr(9)].weight, 1);
    assert_eq!(shown[&addr(9)], Shown::Sorry);
    // A service with no real server at all gets it too.
    let (eff, _) = overlay(&service(&[]), &health, &BTreeSet::new());
    assert_eq!(eff.reals.len(), 1);
}

#[test]
fn a_real_servers_own_check_overrides_the_services() {
    let mut health = ServiceHealth {
        check: Some(check(1, 1)),
        ..Default::default()
    };
    health.reals.insert(
        addr(4),
        RealHealth {
            check: None,
            inhibit_on_failure: None,
        },
    );
    health.reals.insert(
        addr(5),
        RealHealth {
            check: Some(check(4, 4)),
            inhibit_on_failure: None,
        },
    );
    assert_eq!(health.check_of(addr(3)).map(|c| c.fall), Some(1));
    assert_eq!(health.check_of(addr(4)), None);
    assert_eq!(health.check_of(addr(5)).map(|c| c.fall), Some(4));
}
