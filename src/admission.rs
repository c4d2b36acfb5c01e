//! Admission control for new calls: the call limit, the calls-per-second
//! limit, per-trunk limits and, for agent calls, the inference pools'
//! verdict ([`crate::inference::Admission`]). The signalling task asks
//! before it routes an INVITE and answers a refusal at once with 503 and
//! Retry-After, so a refused caller hears within a few milliseconds and the
//! calls already up keep their resources.
//!
//! Time is passed in, so the rate limits are tested on virtual time.

use std::collections::HashMap;
use std::net::IpAddr;
use std::time::Instant;

use voxtrunk_sip::endpoint::LegId;

use crate::config::{Config, TrunkConfig};

/// A token bucket: `rate` tokens a second, at most `rate` saved (one
/// second of burst).
#[derive(Debug, Clone)]
pub struct Rate {
    rate: f64,
    tokens: f64,
    at: Option<Instant>,
}

impl Rate {
    /// `per_second` calls a second; 0: unlimited.
    pub fn new(per_second: u32) -> Self {
        Rate {
            rate: f64::from(per_second),
            tokens: f64::from(per_second),
            at: None,
        }
    }

    fn refill(&mut self, now: Instant) {
        if let Some(at) = self.at {
            let dt = now.saturating_duration_since(at).as_secs_f64();
            self.tokens = (self.tokens + dt * self.rate).min(self.rate);
        }
        self.at = Some(now);
    }

    /// Whether one more call fits now.
    pub fn allows(&mut self, now: Instant) -> bool {
        if self.rate <= 0.0 {
            return true;
        }
        self.refill(now);
        self.tokens >= 1.0
    }

    /// Counts one admitted call.
    pub fn take(&mut self, now: Instant) {
        if self.rate > 0.0 {
            self.refill(now);
            self.tokens -= 1.0;
        }
    }
}

/// Why a call was refused; each is answered 503 with Retry-After.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Refusal {
    /// `limits.max_calls` calls are up.
    Calls(usize),
    /// `limits.max_cps` calls were admitted in the last second.
    Rate(u32),
    /// The trunk's `max_calls`.
    TrunkCalls(String, usize),
    /// The trunk's `max_cps`.
    TrunkRate(String, u32),
    /// The inference pools would pass their target.
    Inference(String),
}

impl Refusal {
    /// The `why` label of `voxtrunk_calls_refused_total`.
    pub fn label(&self) -> &'static str {
        match self {
            Refusal::Calls(_) => "limit",
            Refusal::Rate(_) => "cps",
            Refusal::TrunkCalls(..) => "trunk_limit",
            Refusal::TrunkRate(..) => "trunk_cps",
            Refusal::Inference(_) => "inference",
        }
    }

    /// The Warning text of the 503.
    pub fn text(&self) -> String {
        match self {
            Refusal::Calls(n) => format!("call limit reached: {n} calls up"),
            Refusal::Rate(n) => format!("call rate limit reached: {n} new calls a second"),
            Refusal::TrunkCalls(t, n) => format!("trunk {t}: call limit reached: {n} calls up"),
            Refusal::TrunkRate(t, n) => {
                format!("trunk {t}: call rate limit reached: {n} new calls a second")
            }
            Refusal::Inference(why) => format!("agents at capacity: {why}"),
        }
    }
}

struct Trunk {
    config: TrunkConfig,
    rate: Rate,
    calls: usize,
}

/// What an admitted call holds.
#[derive(Debug, Clone, Copy)]
struct Held {
    trunk: Option<usize>,
    agent: bool,
}

/// The limits and who holds them.
pub struct Gate {
    max_calls: usize,
    max_cps: u32,
    rate: Rate,
    trunks: Vec<Trunk>,
    held: HashMap<LegId, Held>,
    agent_calls: usize,
}

/// A call that passed the limits that do not depend on its route.
#[derive(Debug, Clone, Copy)]
pub struct Ticket {
    trunk: Option<usize>,
}

impl Gate {
    /// The limits of a configuration.
    pub fn new(config: &Config) -> Self {
        Gate {
            max_calls: config.limits.max_calls,
            max_cps: config.limits.max_cps,
            rate: Rate::new(config.limits.max_cps),
            trunks: config
                .trunk
                .iter()
                .map(|t| Trunk {
                    config: t.clone(),
                    rate: Rate::new(t.max_cps.unwrap_or(0)),
                    calls: 0,
                })
                .collect(),
            held: HashMap::new(),
            agent_calls: 0,
        }
    }

    /// Calls up.
    #[cfg(test)]
    pub fn calls(&self) -> usize {
        self.held.len()
    }

    /// Agent calls up.
    pub fn agent_calls(&self) -> usize {
        self.agent_calls
    }

    /// The server-wide and trunk limits for a call from `source`.
    pub fn check(&mut self, now: Instant, source: IpAddr) -> Result<Ticket, Refusal> {
        if self.held.len() >= self.max_calls {
            return Err(Refusal::Calls(self.max_calls));
        }
        if !self.rate.allows(now) {
            return Err(Refusal::Rate(self.max_cps));
        }
        let trunk = self
            .trunks
            .iter()
            .position(|t| t.config.sources.iter().any(|n| n.contains(&source)));
        if let Some(i) = trunk {
            let t = &mut self.trunks[i];
            if let Some(max) = t.config.max_calls
                && t.calls >= max
            {
                return Err(Refusal::TrunkCalls(t.config.name.clone(), max));
            }
            if !t.rate.allows(now) {
                return Err(Refusal::TrunkRate(
                    t.config.name.clone(),
                    t.config.max_cps.unwrap_or(0),
                ));
            }
        }
        Ok(Ticket { trunk })
    }

    /// Counts an admitted call until [`Gate::ended`].
    pub fn admit(&mut self, now: Instant, leg: LegId, ticket: Ticket, agent: bool) {
        self.rate.take(now);
        if let Some(t) = ticket.trunk.and_then(|i| self.trunks.get_mut(i)) {
            t.rate.take(now);
            t.calls += 1;
        }
        if agent {
            self.agent_calls += 1;
        }
        self.held.insert(
            leg,
            Held {
                trunk: ticket.trunk,
                agent,
            },
        );
    }

    /// Frees what a call held.
    pub fn ended(&mut self, leg: LegId) {
        if let Some(h) = self.held.remove(&leg) {
            if let Some(t) = h.trunk.and_then(|i| self.trunks.get_mut(i)) {
                t.calls -= 1;
            }
            if h.agent {
                self.agent_calls -= 1;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    fn config(text: &str) -> Config {
        toml::from_str(text).expect("config")
    }

    fn leg(n: u64) -> LegId {
        LegId(n)
    }

    const CARRIER: &str =
        "[[trunk]]\nname = \"carrier\"\nsources = [\"10.0.0.0/8\"]\nmax_calls = 2\nmax_cps = 3\n";

    #[test]
    fn the_call_limit_counts_calls_until_they_end() {
        let mut g = Gate::new(&config("[limits]\nmax_calls = 2\n"));
        let t0 = Instant::now();
        let src: IpAddr = "192.0.2.1".parse().unwrap();
        for n in 0..2 {
            let ticket = g.check(t0, src).unwrap();
            g.admit(t0, leg(n), ticket, false);
        }
        assert_eq!(g.check(t0, src).unwrap_err(), Refusal::Calls(2));
        g.ended(leg(0));
        assert!(g.check(t0, src).is_ok());
        // Ending a call twice frees it once.
        g.ended(leg(0));
        assert_eq!(g.calls(), 1);
    }

    #[test]
    fn the_rate_limit_allows_a_second_of_burst_then_refills() {
        let mut g = Gate::new(&config("[limits]\nmax_cps = 10\n"));
        let t0 = Instant::now();
        let src: IpAddr = "192.0.2.1".parse().unwrap();
        for n in 0..10 {
            let ticket = g.check(t0, src).unwrap();
            g.admit(t0, leg(n), ticket, false);
        }
        assert_eq!(g.check(t0, src).unwrap_err(), Refusal::Rate(10));
        // 100 ms later one more call fits, not two.
        let t1 = t0 + Duration::from_millis(100);
        let ticket = g.check(t1, src).unwrap();
        g.admit(t1, leg(10), ticket, false);
        assert!(g.check(t1, src).is_err());
        // A refused call does not use up the rate.
        let t2 = t0 + Duration::from_secs(5);
        for n in 11..21 {
            let ticket = g.check(t2, src).unwrap();
            g.admit(t2, leg(n), ticket, false);
        }
        assert!(g.check(t2, src).is_err());
    }

    #[test]
    fn a_trunk_has_its_own_limits_and_other_sources_are_not_counted() {
        let mut g = Gate::new(&config(CARRIER));
        let t0 = Instant::now();
        let carrier: IpAddr = "10.1.2.3".parse().unwrap();
        let other: IpAddr = "192.0.2.1".parse().unwrap();
        for n in 0..2 {
            let ticket = g.check(t0, carrier).unwrap();
            g.admit(t0, leg(n), ticket, false);
        }
        assert_eq!(
            g.check(t0, carrier).unwrap_err(),
            Refusal::TrunkCalls("carrier".into(), 2)
        );
        assert!(g.check(t0, other).is_ok());
        g.ended(leg(1));
        let ticket = g.check(t0, carrier).unwrap();
        g.admit(t0, leg(2), ticket, false);
        g.ended(leg(0));
        g.ended(leg(2));
        // Three calls admitted in this second: the trunk's rate is used up.
        assert_eq!(
            g.check(t0, carrier).unwrap_err(),
            Refusal::TrunkRate("carrier".into(), 3)
        );
        assert!(g.check(t0 + Duration::from_millis(400), carrier).is_ok());
    }

    #[test]
    fn agent_calls_are_counted_apart() {
        let mut g = Gate::new(&config(""));
        let t0 = Instant::now();
        let src: IpAddr = "::1".parse().unwrap();
        let a = g.check(t0, src).unwrap();
        g.admit(t0, leg(1), a, true);
        let b = g.check(t0, src).unwrap();
        g.admit(t0, leg(2), b, false);
        assert_eq!((g.calls(), g.agent_calls()), (2, 1));
        g.ended(leg(1));
        assert_eq!((g.calls(), g.agent_calls()), (1, 0));
    }

    #[test]
    fn refusals_say_which_limit() {
        assert_eq!(
            Refusal::TrunkRate("carrier".into(), 3).text(),
            "trunk carrier: call rate limit reached: 3 new calls a second"
        );
        assert_eq!(Refusal::Inference("x".into()).label(), "inference");
    }
}
