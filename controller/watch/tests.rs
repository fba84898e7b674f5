use std::time::Duration;

use super::phase_offset;
use crate::target::{Env, TargetId};

#[test]
fn targets_probe_spread_over_their_interval() {
    let interval = Duration::from_secs(1);
    let mut buckets = [0usize; 10];
    for i in 0..1000 {
        let id = TargetId {
            env: Env::Staging,
            role: format!("r{i:04}"),
        };
        let offset = phase_offset(&id, interval);
        assert!(offset < interval);
        buckets[(offset.as_millis() / 100) as usize] += 1;
    }
    // 1,000 targets over ten 100 ms slices: each slice holds about 100, none is crowded.
    assert!(
        buckets.iter().all(|&n| (50..=150).contains(&n)),
        "{buckets:?}"
    );
}
