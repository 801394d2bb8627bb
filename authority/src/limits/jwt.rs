//! JWT-SVID minting per agent: a workload asking for endless fresh audiences
//! makes its agent ask for a token per audience. Each agent gets a token
//! bucket (`jwt_per_second_per_agent`, `jwt_burst_per_agent`), and at most
//! `jwt_audit_per_agent` audit rows per `jwt_audit_window`: tokens minted past
//! that are counted and written as one summary row when the window ends, so
//! the audit table grows by a bounded number of rows per agent and window.

use super::Limits;
use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};
use tessera_common::SpiffeId;

/// What to do with a token about to be minted.
#[derive(Debug, PartialEq, Eq)]
pub enum Admit {
    /// Mint it and write its own audit row.
    Audit,
    /// Mint it; it is counted in its window's summary row.
    Counted,
}

/// A window's tokens that have no audit row of their own.
#[derive(Debug, PartialEq, Eq)]
pub struct Summary {
    pub agent_id: SpiffeId,
    pub count: u64,
    /// Unix seconds of the first and last such token.
    pub first: i64,
    pub last: i64,
}

struct AgentState {
    tokens: f64,
    refilled: Instant,
    window_start: i64,
    audited: u32,
    counted: u64,
    first: i64,
    last: i64,
}

pub struct JwtLimiter {
    rate: f64,
    burst: f64,
    audit_cap: u32,
    window: i64,
    agents: Mutex<HashMap<SpiffeId, AgentState>>,
}

impl JwtLimiter {
    pub fn new(limits: &Limits) -> Self {
        JwtLimiter {
            rate: limits.jwt_per_second_per_agent as f64,
            burst: limits.jwt_burst_per_agent as f64,
            audit_cap: limits.jwt_audit_per_agent,
            window: limits.jwt_audit_window.as_secs().max(1) as i64,
            agents: Mutex::new(HashMap::new()),
        }
    }

    /// Takes a token from `agent`'s bucket; `Err(wait)` until one refills.
    /// A summary of the agent's previous window, if it ended, comes back
    /// with the verdict to be written now.
    pub fn admit(
        &self,
        agent: &SpiffeId,
        at: Instant,
        unix: i64,
    ) -> Result<(Admit, Option<Summary>), Duration> {
        let mut agents = self.agents.lock().unwrap_or_else(|p| p.into_inner());
        let s = agents.entry(agent.clone()).or_insert_with(|| AgentState {
            tokens: self.burst,
            refilled: at,
            window_start: unix,
            audited: 0,
            counted: 0,
            first: 0,
            last: 0,
        });
        let elapsed = at.saturating_duration_since(s.refilled).as_secs_f64();
        s.tokens = (s.tokens + elapsed * self.rate).min(self.burst);
        s.refilled = at;
        if s.tokens < 1.0 {
            return Err(Duration::from_secs_f64((1.0 - s.tokens) / self.rate));
        }
        s.tokens -= 1.0;
        let summary = if unix >= s.window_start + self.window {
            let ended = take_summary(agent, s);
            s.window_start = unix;
            s.audited = 0;
            ended
        } else {
            None
        };
        let admit = if s.audited < self.audit_cap {
            s.audited += 1;
            Admit::Audit
        } else {
            if s.counted == 0 {
                s.first = unix;
            }
            s.counted += 1;
            s.last = unix;
            Admit::Counted
        };
        Ok((admit, summary))
    }

    /// Summaries of windows ended by `unix` (every open one when `all`, at
    /// shutdown); agents with nothing pending and a full bucket are forgotten,
    /// so the map holds only agents minting now.
    pub fn ended(&self, at: Instant, unix: i64, all: bool) -> Vec<Summary> {
        let mut agents = self.agents.lock().unwrap_or_else(|p| p.into_inner());
        let mut out = Vec::new();
        agents.retain(|agent, s| {
            if all || unix >= s.window_start + self.window {
                out.extend(take_summary(agent, s));
                s.window_start = unix;
                s.audited = 0;
            }
            let refill = at.saturating_duration_since(s.refilled).as_secs_f64() * self.rate;
            s.counted > 0 || s.audited > 0 || s.tokens + refill < self.burst
        });
        out
    }

    /// How often `ended` should run.
    pub fn window(&self) -> Duration {
        Duration::from_secs(self.window as u64)
    }
}

fn take_summary(agent: &SpiffeId, s: &mut AgentState) -> Option<Summary> {
    let count = std::mem::take(&mut s.counted);
    (count > 0).then(|| Summary {
        agent_id: agent.clone(),
        count,
        first: s.first,
        last: s.last,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn id(agent: &str) -> SpiffeId {
        format!("spiffe://td/tessera/agent/{agent}")
            .parse()
            .unwrap()
    }

    fn limiter(rate: u32, burst: u32, cap: u32) -> JwtLimiter {
        let mut l = crate::limits::LimitsRaw::default().validate().unwrap();
        l.jwt_per_second_per_agent = rate;
        l.jwt_burst_per_agent = burst;
        l.jwt_audit_per_agent = cap;
        l.jwt_audit_window = Duration::from_secs(60);
        JwtLimiter::new(&l)
    }

    #[test]
    fn the_bucket_refills_at_the_rate_and_says_how_long_to_wait() {
        let l = limiter(2, 3, 100);
        let t = Instant::now();
        for _ in 0..3 {
            assert!(l.admit(&id("a"), t, 0).is_ok());
        }
        let wait = l.admit(&id("a"), t, 0).unwrap_err();
        assert!(wait > Duration::from_millis(400) && wait <= Duration::from_millis(500));
        // Another agent has its own bucket.
        assert!(l.admit(&id("b"), t, 0).is_ok());
        assert!(l.admit(&id("a"), t + Duration::from_millis(500), 0).is_ok());
    }

    #[test]
    fn audit_rows_are_capped_per_window_and_the_rest_summarised() {
        let l = limiter(1000, 1000, 2);
        let t = Instant::now();
        let verdicts: Vec<Admit> = (0..5)
            .map(|i| l.admit(&id("a"), t, 100 + i).unwrap().0)
            .collect();
        assert_eq!(
            verdicts,
            [
                Admit::Audit,
                Admit::Audit,
                Admit::Counted,
                Admit::Counted,
                Admit::Counted
            ]
        );
        assert!(
            l.ended(t, 120, false).is_empty(),
            "the window is still open"
        );
        // The next token after the window ends brings its summary.
        let (admit, summary) = l.admit(&id("a"), t, 161).unwrap();
        assert_eq!(admit, Admit::Audit);
        assert_eq!(
            summary,
            Some(Summary {
                agent_id: id("a"),
                count: 3,
                first: 102,
                last: 104
            })
        );
        l.admit(&id("a"), t, 162).unwrap();
        l.admit(&id("a"), t, 163).unwrap();
        let all = l.ended(t, 164, true);
        assert_eq!(all.len(), 1);
        assert_eq!(all[0].count, 1);
    }
}
