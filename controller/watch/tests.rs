use std::time::Duration;

use super::phase_offset;
use crate::target::{Env, TargetId};

#[test]
fn targets_probe_spread_over_their_interval_in_slots() {
    let interval = Duration::from_secs(1);
    let slot = Duration::from_millis(20);
    let mut slots = [0usize; 50];
    for i in 0..1000 {
        let id = TargetId {
            env: Env::Staging,
            role: format!("r{i:04}"),
        };
        let offset = phase_offset(&id, interval);
        assert!(offset < interval);
        assert_eq!(
            offset.as_nanos() % slot.as_nanos(),
            0,
            "{offset:?} starts a slot"
        );
        slots[(offset.as_millis() / 20) as usize] += 1;
    }
    // 1,000 targets over fifty 20 ms slots: about 20 each, none empty or crowded.
    assert!(slots.iter().all(|&n| (5..=40).contains(&n)), "{slots:?}");
}
