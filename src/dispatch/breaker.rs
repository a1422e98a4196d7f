//! A circuit breaker per target: after a run of transient failures it
//! opens and lets nothing through for a cool-down; then it lets one probe
//! through at a time until a probe succeeds. Cool-downs double, up to a cap,
//! while probes keep failing.

use std::time::{Duration, Instant};

/// Settings.
#[derive(Clone, Debug)]
pub struct BreakerConfig {
    /// Consecutive transient failures that open the breaker.
    pub threshold: u32,
    /// First cool-down.
    pub cooldown: Duration,
    /// Longest cool-down.
    pub max_cooldown: Duration,
}

impl Default for BreakerConfig {
    fn default() -> Self {
        BreakerConfig {
            threshold: 5,
            cooldown: Duration::from_secs(5),
            max_cooldown: Duration::from_secs(300),
        }
    }
}

/// The breaker's state, for operators.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum State {
    /// Requests flow.
    Closed,
    /// Nothing goes until the cool-down ends.
    Open,
    /// One probe at a time.
    HalfOpen,
}

/// What the dispatcher may do now.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Permit {
    /// Send as much as the limits allow.
    Flow,
    /// Send one message, as a probe.
    Probe,
    /// Send nothing before this instant.
    Wait(Instant),
}

/// A circuit breaker.
#[derive(Debug)]
pub struct Breaker {
    cfg: BreakerConfig,
    failures: u32,
    open_until: Option<Instant>,
    cooldown: Duration,
    /// A probe is out (half-open): other callers wait for its outcome.
    probing: bool,
}

impl Breaker {
    /// A closed breaker.
    pub fn new(cfg: BreakerConfig) -> Self {
        let cooldown = cfg.cooldown;
        Breaker {
            cfg,
            failures: 0,
            open_until: None,
            cooldown,
            probing: false,
        }
    }

    /// The current state.
    pub fn state(&self, now: Instant) -> State {
        match self.open_until {
            None => State::Closed,
            Some(t) if now < t => State::Open,
            Some(_) => State::HalfOpen,
        }
    }

    /// What may be sent now.
    pub fn permit(&self, now: Instant) -> Permit {
        match (self.state(now), self.open_until) {
            (State::Closed, _) => Permit::Flow,
            (State::Open, Some(t)) => Permit::Wait(t),
            _ => Permit::Probe,
        }
    }

    /// Records a success: the breaker closes.
    /// Like [`Breaker::permit`], for callers sharing one breaker: while
    /// half-open, only the first gets [`Permit::Probe`]; the others wait a
    /// little and ask again.
    pub fn acquire(&mut self, now: Instant) -> Permit {
        match self.permit(now) {
            Permit::Probe if self.probing => Permit::Wait(now + Duration::from_millis(50)),
            Permit::Probe => {
                self.probing = true;
                Permit::Probe
            }
            p => p,
        }
    }

    /// The probe that [`Breaker::acquire`] gave out was not sent.
    pub fn unprobe(&mut self) {
        self.probing = false;
    }

    pub fn success(&mut self) {
        self.probing = false;
        self.failures = 0;
        self.open_until = None;
        self.cooldown = self.cfg.cooldown;
    }

    /// Records a transient failure (permanent ones say nothing about the
    /// target's health and are not recorded).
    pub fn failure(&mut self, now: Instant) {
        self.probing = false;
        match self.state(now) {
            State::HalfOpen => {
                // The probe failed: open again, for longer.
                self.cooldown = (self.cooldown * 2).min(self.cfg.max_cooldown);
                self.open_until = Some(now + self.cooldown);
            }
            State::Open => {}
            State::Closed => {
                self.failures += 1;
                if self.failures >= self.cfg.threshold {
                    self.open_until = Some(now + self.cooldown);
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn opens_probes_and_closes() {
        let cfg = BreakerConfig {
            threshold: 3,
            cooldown: Duration::from_secs(1),
            max_cooldown: Duration::from_secs(3),
        };
        let mut b = Breaker::new(cfg);
        let t0 = Instant::now();
        b.failure(t0);
        b.failure(t0);
        assert_eq!(b.permit(t0), Permit::Flow);
        b.failure(t0);
        assert_eq!(b.permit(t0), Permit::Wait(t0 + Duration::from_secs(1)));
        let t1 = t0 + Duration::from_secs(1);
        assert_eq!(b.permit(t1), Permit::Probe);
        b.failure(t1);
        assert_eq!(
            b.permit(t1),
            Permit::Wait(t1 + Duration::from_secs(2)),
            "cool-down doubles"
        );
        let t2 = t1 + Duration::from_secs(2);
        b.failure(t2);
        assert_eq!(
            b.permit(t2),
            Permit::Wait(t2 + Duration::from_secs(3)),
            "up to the cap"
        );
        let t3 = t2 + Duration::from_secs(3);
        assert_eq!(b.state(t3), State::HalfOpen);
        b.success();
        assert_eq!(b.permit(t3), Permit::Flow);
        assert_eq!(b.state(t3), State::Closed);
    }

    #[test]
    fn shared_breaker_gives_out_one_probe_at_a_time() {
        let cfg = BreakerConfig {
            threshold: 1,
            cooldown: Duration::from_secs(1),
            max_cooldown: Duration::from_secs(8),
        };
        let mut b = Breaker::new(cfg);
        let t0 = Instant::now();
        b.failure(t0);
        let t1 = t0 + Duration::from_secs(1);
        assert_eq!(b.acquire(t1), Permit::Probe);
        assert!(
            matches!(b.acquire(t1), Permit::Wait(_)),
            "a second lane waits"
        );
        // The probe was not sent: the next caller may probe.
        b.unprobe();
        assert_eq!(b.acquire(t1), Permit::Probe);
        b.success();
        assert_eq!(b.acquire(t1), Permit::Flow);
    }
}
