//! Runs the checks: one task per checked real server on the caller's tokio runtime, each
//! sending its results to one channel. [`Runner::sync`] starts and stops tasks to match the
//! checks a director wants now (after a change of services or a reload).
use std::{collections::BTreeMap, net::IpAddr};

use tokio::{sync::mpsc, task::JoinHandle};

use super::{Check, probe};
use crate::model::ServiceKey;

/// One check's result: the service, the real server, and `Err(why)` when it failed.
pub type Outcome = (ServiceKey, IpAddr, Result<(), String>);

/// The running checks.
pub struct Runner {
    tasks: BTreeMap<(ServiceKey, IpAddr), (Check, JoinHandle<()>)>,
    results: mpsc::Sender<Outcome>,
}

impl Runner {
    /// A runner whose checks report to the receiver returned with it.
    pub fn new() -> (Runner, mpsc::Receiver<Outcome>) {
        let (tx, rx) = mpsc::channel(256);
        (
            Runner {
                tasks: BTreeMap::new(),
                results: tx,
            },
            rx,
        )
    }

    /// Runs exactly `wanted`: stops the tasks of checks no longer wanted (or changed), starts
    /// the missing ones. Returns how many were started.
    pub fn sync(&mut self, wanted: Vec<(ServiceKey, IpAddr, Check)>) -> usize {
        let wanted: BTreeMap<(ServiceKey, IpAddr), Check> =
            wanted.into_iter().map(|(k, a, c)| ((k, a), c)).collect();
        self.tasks.retain(|id, (check, task)| {
            let keep = wanted.get(id) == Some(check);
            if !keep {
                task.abort();
            }
            keep
        });
        let mut started = 0;
        for (id, check) in wanted {
            if self.tasks.contains_key(&id) {
                continue;
            }
            let task = tokio::spawn(run(id.0, id.1, check.clone(), self.results.clone()));
            self.tasks.insert(id, (check, task));
            started += 1;
        }
        started
    }

    pub fn len(&self) -> usize {
        self.tasks.len()
    }

    pub fn is_empty(&self) -> bool {
        self.tasks.is_empty()
    }
}

impl Drop for Runner {
    fn drop(&mut self) {
        for (_, task) in self.tasks.values() {
            task.abort();
        }
    }
}

/// Checks one real server for ever: at once, then every `delay_loop`, or `delay_before_retry`
/// after a failure until `fall` failures in a row.
async fn run(key: ServiceKey, addr: IpAddr, check: Check, results: mpsc::Sender<Outcome>) {
    let mut failures = 0u32;
    loop {
        let outcome = probe::run(&check, addr, key.port)
            .await
            .map_err(|e| format!("{e:#}"));
        let ok = outcome.is_ok();
        if results.send((key, addr, outcome)).await.is_err() {
            return;
        }
        failures = if ok { 0 } else { failures + 1 };
        let retrying = !ok && failures < check.fall;
        tokio::time::sleep(check.next_after(ok, retrying)).await;
    }
}
