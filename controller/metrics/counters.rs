//! Counter resets handled per series, before anything is summed. A source reads many series
//! (one per process, status code, instance...) and the judge wants one cumulative number per
//! endpoint; summing first and detecting resets on the sum is wrong: when one of three instances
//! restarts, the sum drops, looks like a reset, and the others' lifetime counts are booked as one
//! interval. So each [`Counter`] remembers every series by its full label set and turns one read
//! into the sum of per-series increases, accumulated into a total that only ever grows — the
//! judge downstream sees a well-behaved counter. Pure: no I/O, no clock.
//!
//! Series that appear or vanish must not invent traffic:
//! - a series that vanished (its target went stale) is remembered; when it comes back, a lower
//!   value is a reset (its whole value is new), a higher one continues where it left;
//! - a series never seen before counts in full only when its origin (the scraped endpoint, or
//!   Prometheus' `job`/`instance`) was present in the previous read: the process was being
//!   watched, so the series was created since (a client library creates the 5xx series at the
//!   first 5xx). Otherwise (a new instance, a target back from an outage rollwatch never saw) its
//!   value may be a lifetime, and it only becomes the starting point. That may miss a few counts
//!   of a brand-new process; it never books a lifetime as one interval.

use std::collections::{BTreeSet, HashMap};

/// One series of one read: its identity, where it comes from, and its cumulative value.
#[derive(Debug, Clone, PartialEq)]
pub struct Series {
    /// The full label set, name included, in a canonical order.
    pub key: String,
    /// What restarts together: the scraped endpoint, or Prometheus' `job` and `instance`.
    pub origin: String,
    pub value: f64,
}

/// Origins present in one read, over all the counters of a source.
pub type Origins = BTreeSet<String>;

/// Reads a vanished series is remembered for before it is forgotten (then it is new again, and
/// counts only from its next value on): ten minutes at a 1 s interval.
const FORGET_AFTER: u32 = 600;

/// One logical counter (requests, errors, latency sum or count) as a reset-free total.
#[derive(Debug, Clone, Default)]
pub struct Counter {
    /// Last value of every series seen, and reads since it was last present.
    seen: HashMap<String, (f64, u32)>,
    total: Option<f64>,
}

impl Counter {
    /// Takes one read's series; `before` holds the origins of the previous read (`None` on the
    /// first). Returns the running total: the first read's sum, plus every increase since.
    pub fn advance(&mut self, series: &[Series], before: Option<&Origins>) -> f64 {
        let mut increase = 0.0;
        for s in series {
            increase += match self.seen.get(&s.key) {
                Some(&(last, _)) => counter_delta(last, s.value),
                None if before.is_some_and(|o| o.contains(&s.origin)) => s.value,
                None => 0.0,
            };
        }
        for (_, age) in self.seen.values_mut() {
            *age += 1;
        }
        for s in series {
            self.seen.insert(s.key.clone(), (s.value, 0));
        }
        self.seen.retain(|_, (_, age)| *age <= FORGET_AFTER);
        let total = match self.total {
            Some(t) => t + increase,
            None => series.iter().map(|s| s.value).sum(),
        };
        self.total = Some(total);
        total
    }
}

/// Increase of one series' counter; a smaller value means its process restarted and counts from
/// zero (Prometheus' own rule in `increase()`).
pub fn counter_delta(prev: f64, cur: f64) -> f64 {
    if cur >= prev {
        cur - prev
    } else {
        cur
    }
}

/// The one check every value passes before it is used: counters are finite and never negative.
/// NaN or ±Inf (a broken exporter, a division in a query) is garbage, never evidence.
pub fn valid_counter(value: f64) -> bool {
    value.is_finite() && value >= 0.0
}

#[cfg(test)]
mod tests {
    use super::*;

    fn s(key: &str, origin: &str, value: f64) -> Series {
        Series {
            key: key.into(),
            origin: origin.into(),
            value,
        }
    }

    fn origins(list: &[&str]) -> Origins {
        list.iter().map(|o| o.to_string()).collect()
    }

    #[test]
    fn one_instance_restarting_books_only_the_real_increase() {
        let both = origins(&["a", "b"]);
        let mut c = Counter::default();
        assert_eq!(
            c.advance(&[s("a", "a", 10_000.0), s("b", "b", 8_000.0)], None),
            18_000.0
        );
        // b restarted and has served 30 requests since; a served 50 more.
        let t = c.advance(&[s("a", "a", 10_050.0), s("b", "b", 30.0)], Some(&both));
        assert_eq!(t - 18_000.0, 80.0, "not a's lifetime of 10,050");
    }

    #[test]
    fn a_vanished_series_counts_nothing_and_its_return_is_judged_against_its_last_value() {
        let both = origins(&["a", "b"]);
        let only_a = origins(&["a"]);
        let mut c = Counter::default();
        let t0 = c.advance(&[s("a", "a", 1_000.0), s("b", "b", 500.0)], None);
        // b is down: its series is stale, the sum drops by 500 — no reset, no negative interval.
        let t1 = c.advance(&[s("a", "a", 1_040.0)], Some(&both));
        assert_eq!(t1 - t0, 40.0);
        // b is back after a restart (lower value): all 12 are new.
        let t2 = c.advance(&[s("a", "a", 1_080.0), s("b", "b", 12.0)], Some(&only_a));
        assert_eq!(t2 - t1, 52.0);
        // A scrape gap without restart: b continues from where it was.
        let t3 = c.advance(&[s("a", "a", 1_100.0)], Some(&both));
        let t4 = c.advance(&[s("a", "a", 1_120.0), s("b", "b", 20.0)], Some(&only_a));
        assert_eq!((t3 - t2, t4 - t3), (20.0, 28.0));
    }

    #[test]
    fn a_new_series_of_a_watched_process_counts_in_full() {
        // The 5xx series is created at the first 5xx: 3 errors since the last read.
        let mut c = Counter::default();
        let before = origins(&["a"]);
        assert_eq!(c.advance(&[], None), 0.0, "no errors yet is 0, not missing");
        assert_eq!(c.advance(&[], Some(&before)), 0.0);
        assert_eq!(c.advance(&[s("a/500", "a", 3.0)], Some(&before)), 3.0);
    }

    #[test]
    fn a_new_series_of_an_unseen_process_is_only_a_starting_point() {
        // A third instance joins with a lifetime of 90,000: none of it is this interval's.
        let mut c = Counter::default();
        let t0 = c.advance(&[s("a", "a", 100.0)], None);
        let t1 = c.advance(
            &[s("a", "a", 110.0), s("c", "c", 90_000.0)],
            Some(&origins(&["a"])),
        );
        assert_eq!(t1 - t0, 10.0);
        let t2 = c.advance(
            &[s("a", "a", 120.0), s("c", "c", 90_005.0)],
            Some(&origins(&["a", "c"])),
        );
        assert_eq!(t2 - t1, 15.0);
    }

    #[test]
    fn the_total_never_decreases() {
        let mut c = Counter::default();
        let mut last = c.advance(&[s("a", "a", 5.0), s("b", "b", 7.0)], None);
        let all = origins(&["a", "b"]);
        for (a, b) in [(6.0, 1.0), (0.0, 2.0), (3.0, 0.0), (1.0, 9.0)] {
            let t = c.advance(&[s("a", "a", a), s("b", "b", b)], Some(&all));
            assert!(t >= last, "{t} < {last}");
            last = t;
        }
    }

    #[test]
    fn nan_and_infinities_are_not_counters() {
        for bad in [f64::NAN, f64::INFINITY, f64::NEG_INFINITY, -1.0] {
            assert!(!valid_counter(bad), "{bad}");
        }
        assert!(valid_counter(0.0) && valid_counter(1e12));
    }
}
