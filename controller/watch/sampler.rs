//! Sums the rounds of a watch window into the samples the status page charts
//! ([`crate::store::Sample`]): one per `stride` rounds, so a window has about
//! [`POINTS_PER_BAKE`] of them whatever its interval, and only for windows a deploy opened
//! while rollwatch watched (see the store's module for why).

use crate::store::{MAX_SAMPLES_PER_WINDOW, POINTS_PER_BAKE};

#[derive(Debug, Default)]
pub struct Sampler {
    /// A deploy was seen: the next window is sampled.
    armed: bool,
    /// The window being sampled: its `since_ms` and the tag on probation in it (the phase
    /// may name another tag by the time its last span is closed).
    window: Option<(i64, String)>,
    stride: u32,
    written: u32,
    span: Span,
}

/// The rounds since the last sample.
#[derive(Debug, Default, Clone, Copy, PartialEq)]
pub struct Span {
    pub window_ms: i64,
    pub rounds: u32,
    pub probes: u32,
    pub failures: u32,
    /// The slowest passed probe.
    pub latency_ms: Option<i64>,
}

impl Sampler {
    /// A deploy was seen; its window (bake of `bake_rounds` rounds) starts at the next round.
    pub fn deploy_seen(&mut self, bake_rounds: u64) {
        let stride = bake_rounds.div_ceil(POINTS_PER_BAKE).max(1);
        *self = Sampler {
            armed: true,
            stride: u32::try_from(stride).unwrap_or(u32::MAX),
            ..Sampler::default()
        };
    }

    /// One round of the window of `tag` that opened at `window_ms`; `probe` is `None` when the
    /// round did not probe, else the latency and whether it passed. Returns a span (and the
    /// window's tag) when one is due.
    pub fn round(
        &mut self,
        window_ms: i64,
        tag: &str,
        probe: Option<(i64, bool)>,
    ) -> Option<(Span, String)> {
        match &self.window {
            None if self.armed => self.window = Some((window_ms, tag.to_string())),
            Some((w, _)) if *w == window_ms => {}
            // Not a window a deploy opened (or a later one): nothing is sampled.
            _ => return None,
        }
        if self.written >= MAX_SAMPLES_PER_WINDOW {
            return None;
        }
        let s = &mut self.span;
        s.window_ms = window_ms;
        s.rounds += 1;
        if let Some((latency, ok)) = probe {
            s.probes += 1;
            if ok {
                s.latency_ms = Some(s.latency_ms.map_or(latency, |l| l.max(latency)));
            } else {
                s.failures += 1;
            }
        }
        if s.rounds < self.stride {
            return None;
        }
        self.take()
    }

    /// The window ended (a verdict, a rollback): what is left of its last span.
    pub fn close(&mut self) -> Option<(Span, String)> {
        self.armed = false;
        if self.span.rounds == 0 || self.written >= MAX_SAMPLES_PER_WINDOW {
            return None;
        }
        self.take()
    }

    fn take(&mut self) -> Option<(Span, String)> {
        let (_, tag) = self.window.as_ref()?;
        self.written += 1;
        Some((std::mem::take(&mut self.span), tag.clone()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rounds_are_summed_by_stride_and_the_last_span_is_kept_at_the_end() {
        let mut s = Sampler::default();
        assert_eq!(
            s.round(1, "v2", Some((5, true))),
            None,
            "no deploy seen: not sampled"
        );
        s.deploy_seen(300);
        assert_eq!(s.stride, 3);
        assert_eq!(s.round(10, "v2", Some((5, true))), None);
        assert_eq!(s.round(10, "v2", Some((9, false))), None);
        let (span, tag) = s
            .round(10, "v2", Some((7, true)))
            .expect("a sample every 3 rounds");
        assert_eq!(tag, "v2");
        assert_eq!(
            (span.rounds, span.probes, span.failures, span.latency_ms),
            (3, 3, 1, Some(7))
        );
        assert_eq!(s.round(10, "v2", None), None);
        assert_eq!(
            s.round(99, "v3", Some((1, true))),
            None,
            "another window is not this one"
        );
        let (last, tag) = s.close().expect("the partial span");
        assert_eq!(tag, "v2", "the window's tag, whatever runs now");
        assert_eq!((last.rounds, last.probes), (1, 0));
        assert_eq!(s.close(), None);
    }

    #[test]
    fn a_window_that_outlasts_its_bake_stops_at_the_bound() {
        let mut s = Sampler::default();
        s.deploy_seen(1);
        let n = (0..MAX_SAMPLES_PER_WINDOW + 50)
            .filter_map(|_| s.round(7, "v2", Some((1, true))))
            .count();
        assert_eq!(n, MAX_SAMPLES_PER_WINDOW as usize);
        assert_eq!(s.close(), None);
    }
}
