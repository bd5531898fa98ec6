//! A circuit breaker on atomics: stop calling a failing store, probe it again about once a
//! second (jittered, so a fleet does not probe in lockstep), close on the first success.

use std::sync::atomic::{AtomicU8, AtomicU32, AtomicU64, Ordering};
use std::time::Duration;

use crate::clock::system_now_us;

/// The breaker's state.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BreakerState {
    /// Calls go to the store.
    Closed,
    /// Calls are decided without the store until the next probe.
    Open,
    /// One probe call is in flight; everything else is decided without the store.
    HalfOpen,
}

impl BreakerState {
    /// `closed`, `open` or `half_open`.
    pub fn name(self) -> &'static str {
        match self {
            BreakerState::Closed => "closed",
            BreakerState::Open => "open",
            BreakerState::HalfOpen => "half_open",
        }
    }

    fn from_u8(v: u8) -> BreakerState {
        match v {
            1 => BreakerState::Open,
            2 => BreakerState::HalfOpen,
            _ => BreakerState::Closed,
        }
    }
}

/// When the breaker opens and how often it probes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BreakerConfig {
    /// Consecutive failures that open the breaker.
    pub failure_threshold: u32,
    /// Time between probes while open; each wait is jittered down by up to 20 %, so the probe
    /// interval never exceeds this.
    pub probe_interval: Duration,
}

impl Default for BreakerConfig {
    fn default() -> Self {
        BreakerConfig {
            failure_threshold: 5,
            probe_interval: Duration::from_secs(1),
        }
    }
}

/// Whether a call may go to the store.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Admission {
    /// Normal call.
    Call,
    /// The single probe of a half-open breaker: report its outcome.
    Probe,
    /// Do not call the store.
    Skip,
}

/// Lock-free circuit breaker. Transitions are logged once each (not per request).
#[derive(Debug)]
pub struct CircuitBreaker {
    config: BreakerConfig,
    state: AtomicU8,
    failures: AtomicU32,
    /// While open: when the next probe may start (µs).
    probe_at: AtomicU64,
    /// Times it has opened, for metrics.
    opened: AtomicU64,
}

impl CircuitBreaker {
    /// A closed breaker.
    pub fn new(config: BreakerConfig) -> CircuitBreaker {
        CircuitBreaker {
            config,
            state: AtomicU8::new(0),
            failures: AtomicU32::new(0),
            probe_at: AtomicU64::new(0),
            opened: AtomicU64::new(0),
        }
    }

    /// The current state.
    pub fn state(&self) -> BreakerState {
        BreakerState::from_u8(self.state.load(Ordering::Acquire))
    }

    /// How many times the breaker has opened.
    pub fn times_opened(&self) -> u64 {
        self.opened.load(Ordering::Relaxed)
    }

    /// Ask before calling the store.
    pub fn admit(&self) -> Admission {
        match self.state() {
            BreakerState::Closed => Admission::Call,
            BreakerState::HalfOpen => Admission::Skip,
            BreakerState::Open => {
                if system_now_us() < self.probe_at.load(Ordering::Acquire) {
                    return Admission::Skip;
                }
                // Exactly one caller wins the probe.
                match self
                    .state
                    .compare_exchange(1, 2, Ordering::AcqRel, Ordering::Acquire)
                {
                    Ok(_) => {
                        tracing::info!(state = "half_open", "store circuit breaker probing");
                        Admission::Probe
                    }
                    Err(_) => Admission::Skip,
                }
            }
        }
    }

    /// Report a successful store call.
    pub fn on_success(&self, admission: Admission) {
        self.failures.store(0, Ordering::Relaxed);
        if admission == Admission::Probe {
            self.state.store(0, Ordering::Release);
            tracing::info!(
                state = "closed",
                "store circuit breaker closed: store answers again"
            );
        }
    }

    /// Report a failed store call (error or timeout).
    pub fn on_failure(&self, admission: Admission) {
        match admission {
            Admission::Probe => self.open("probe failed"),
            Admission::Call => {
                let failures = self.failures.fetch_add(1, Ordering::AcqRel) + 1;
                if failures < self.config.failure_threshold || self.state() != BreakerState::Closed
                {
                    return;
                }
                // The probe time is set before the state says open, so no caller can see an open
                // breaker with a stale probe time and probe at once.
                self.schedule_probe();
                if self
                    .state
                    .compare_exchange(0, 1, Ordering::AcqRel, Ordering::Acquire)
                    .is_ok()
                {
                    self.opened.fetch_add(1, Ordering::Relaxed);
                    tracing::warn!(
                        state = "open",
                        failures,
                        "store circuit breaker opened: deciding without the store"
                    );
                }
            }
            Admission::Skip => {}
        }
    }

    /// Report a call whose caller went away before it finished (its future was dropped, e.g.
    /// an HTTP client disconnected). Nothing is learnt about the store; a probe gives its turn
    /// back so the next caller probes at once, instead of leaving the breaker half-open for good.
    pub fn on_abandoned(&self, admission: Admission) {
        if admission == Admission::Probe {
            self.probe_at.store(system_now_us(), Ordering::Release);
            self.state.store(1, Ordering::Release);
            tracing::debug!(
                state = "open",
                "store circuit breaker probe abandoned by its caller"
            );
        }
    }

    fn open(&self, why: &str) {
        self.schedule_probe();
        self.state.store(1, Ordering::Release);
        tracing::warn!(state = "open", why, "store circuit breaker reopened");
    }

    fn schedule_probe(&self) {
        let interval = self.config.probe_interval.as_micros() as u64;
        let now = system_now_us();
        // Jitter from the clock's low bits: cheap and different on every instance.
        let jitter = (now.wrapping_mul(0x9E37_79B9_7F4A_7C15) >> 32) % (interval / 5 + 1);
        self.probe_at
            .store(now + interval - jitter, Ordering::Release);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn opens_after_threshold_probes_once_and_closes() {
        let b = CircuitBreaker::new(BreakerConfig {
            failure_threshold: 3,
            probe_interval: Duration::from_millis(20),
        });
        for _ in 0..2 {
            b.on_failure(b.admit());
        }
        assert_eq!(b.state(), BreakerState::Closed);
        b.on_failure(b.admit());
        assert_eq!(b.state(), BreakerState::Open);
        assert_eq!(b.admit(), Admission::Skip);
        std::thread::sleep(Duration::from_millis(25));
        assert_eq!(b.admit(), Admission::Probe);
        assert_eq!(b.admit(), Admission::Skip, "only one probe at a time");
        b.on_failure(Admission::Probe);
        assert_eq!(b.state(), BreakerState::Open);
        std::thread::sleep(Duration::from_millis(25));
        let probe = b.admit();
        assert_eq!(probe, Admission::Probe);
        b.on_success(probe);
        assert_eq!(b.state(), BreakerState::Closed);
        assert_eq!(b.admit(), Admission::Call);
        assert_eq!(b.times_opened(), 1);
    }

    #[test]
    fn an_abandoned_probe_lets_the_next_caller_probe() {
        let b = CircuitBreaker::new(BreakerConfig {
            failure_threshold: 1,
            probe_interval: Duration::from_millis(20),
        });
        b.on_failure(b.admit());
        std::thread::sleep(Duration::from_millis(25));
        let probe = b.admit();
        assert_eq!(probe, Admission::Probe);
        assert_eq!(b.state(), BreakerState::HalfOpen);
        b.on_abandoned(probe);
        assert_eq!(b.state(), BreakerState::Open);
        assert_eq!(b.admit(), Admission::Probe, "no wait for another interval");
        b.on_abandoned(Admission::Call);
        assert_eq!(
            b.state(),
            BreakerState::HalfOpen,
            "a plain call changes nothing"
        );
    }
}
