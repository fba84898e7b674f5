//! The clock decisions are timed by. Watch windows, start-up grace, cooldown and refusal
//! back-off are durations, but the verdict keeps them as instants in milliseconds since the
//! epoch (so they can be stored and shown). Read off the wall clock, a step of that clock (an
//! NTP correction, a person's `date -s`, a VM restored from a snapshot) would move every one of
//! them: two hours forward ends every watch window at once and records versions as known-good
//! that were watched for seconds; two hours back keeps a bad deploy inside its grace for two
//! hours. So decisions read the wall clock once, when the process starts, and from then on
//! advance it by the monotonic clock, which no step moves. Records and events keep the wall
//! clock (`store::now_ms`): they are read by people, next to other systems' logs.

use std::sync::OnceLock;
use std::time::Instant;

use crate::store::now_ms;

/// Milliseconds since the epoch as of the process's start, advanced by the monotonic clock
/// since. Equal to the wall clock until the wall clock is stepped; after a step the two differ
/// by the step until the next start.
pub fn steady_ms() -> i64 {
    static ANCHOR: OnceLock<(Instant, i64)> = OnceLock::new();
    let (at, wall) = *ANCHOR.get_or_init(|| (Instant::now(), now_ms()));
    wall + i64::try_from(at.elapsed().as_millis()).unwrap_or(i64::MAX / 2)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn starts_at_the_wall_clock_and_never_goes_back() {
        let first = steady_ms();
        assert!((first - now_ms()).abs() < 5_000, "{first} vs {}", now_ms());
        let mut last = first;
        for _ in 0..1_000 {
            let t = steady_ms();
            assert!(t >= last);
            last = t;
        }
    }
}
