//! The controller-wide series of leadership: who leads, under which epoch, whether the store
//! answers, and how many rollback steps the fencing check refused. Alerting rules use them to
//! find a cluster without a leader (or with two) and a store that is down.

use std::sync::atomic::{AtomicI64, AtomicU64, AtomicU8, Ordering::Relaxed};

use super::exposition::{header, label_pairs, sample, Kind};

pub struct LeaseSeries {
    /// `sqlite` or `postgres`: bounded, for the dashboard's legend.
    store: &'static str,
    leader: AtomicU8,
    epoch: AtomicI64,
    store_up: AtomicU8,
    fenced: AtomicU64,
}

impl LeaseSeries {
    /// A sole instance (SQLite) leads from the start; a lease holder starts as a follower.
    pub fn new(store: &'static str, leader: bool) -> LeaseSeries {
        LeaseSeries {
            store,
            leader: AtomicU8::new(leader.into()),
            epoch: AtomicI64::new(0),
            store_up: AtomicU8::new(1),
            fenced: AtomicU64::new(0),
        }
    }

    pub fn set(&self, leader: bool, epoch: i64) {
        self.leader.store(leader.into(), Relaxed);
        self.epoch.store(epoch, Relaxed);
    }

    pub fn store_up(&self, up: bool) {
        self.store_up.store(up.into(), Relaxed);
    }

    pub fn fenced(&self) {
        self.fenced.fetch_add(1, Relaxed);
    }

    pub(crate) fn render(&self, out: &mut String) {
        let labels = label_pairs(&[("store", self.store)]);
        let gauges: [(&str, &str, i64); 3] = [
            (
                "rollwatch_leader",
                "1 while this instance holds the lease and acts; 0 while it follows (watching and exporting only).",
                self.leader.load(Relaxed).into(),
            ),
            (
                "rollwatch_lease_epoch",
                "The fencing epoch of the lease this instance holds (0: none).",
                self.epoch.load(Relaxed),
            ),
            (
                "rollwatch_store_up",
                "0 while the store cannot be reached: the instance stops acting (never acts without a record).",
                self.store_up.load(Relaxed).into(),
            ),
        ];
        for (name, help, value) in gauges {
            header(out, name, help, Kind::Gauge);
            sample(out, name, &labels, &[], value);
        }
        // The same fact as a label, for joining it onto any series of this instance
        // (`* on (instance) group_left (leader) rollwatch_role_info`): a label on every series
        // would split them all at each failover.
        let name = "rollwatch_role_info";
        header(
            out,
            name,
            "Always 1; its leader label is true while this instance leads, false while it follows.",
            Kind::Gauge,
        );
        let leader = if self.leader.load(Relaxed) == 1 {
            "true"
        } else {
            "false"
        };
        sample(out, name, &labels, &[("leader", leader)], 1_u64);
        let name = "rollwatch_fenced_steps_total";
        header(
            out,
            name,
            "Rollback steps refused because their epoch was stale (another instance took the lease).",
            Kind::Counter,
        );
        sample(out, name, &labels, &[], self.fenced.load(Relaxed));
    }
}
