//! Per-caller limits: a token bucket of calls and a number of calls in flight, as
//! `gateway/limits.py`, decided on a call's headers.
//!
//! Each caller (a SPIFFE ID) has its own bucket and in-flight count, so one ministry's burst
//! or slow calls never take capacity from another. A refused call costs a token too (the
//! `refusals` bucket of its caller, or of its connection for a certificate without an
//! identity): a caller refused over and over is soon answered at no cost to the audit log.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Instant;

/// The limits of one caller.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct LimitSettings {
    /// Calls per second, on average.
    pub rate_per_second: f64,
    /// Calls at once above the average, at most.
    pub burst: u32,
    /// Calls in flight at once, at most.
    pub max_concurrent: u32,
}

/// Why a call was refused.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Rejection {
    /// No token left: retry after so many seconds (infinite at rate 0).
    RateLimited {
        /// Seconds until a token is back.
        retry_after: f64,
    },
    /// As many calls in flight as allowed: retry when one ends.
    ConcurrencyLimited,
}

impl Rejection {
    /// The reason, as Python's `ErrorInfo` carries it.
    #[must_use]
    pub const fn reason(self) -> &'static str {
        match self {
            Rejection::RateLimited { .. } => "RATE_LIMITED",
            Rejection::ConcurrencyLimited => "CONCURRENCY_LIMITED",
        }
    }

    /// Seconds to wait before a retry, as `retry_after_seconds` says it (at most an hour).
    #[must_use]
    pub fn retry_after(self) -> f64 {
        match self {
            Rejection::RateLimited { retry_after } => retry_after.min(3600.0),
            Rejection::ConcurrencyLimited => 0.0,
        }
    }
}

/// A token bucket: `burst` tokens at most, refilled at `rate` per second, full at first.
#[derive(Debug)]
struct Bucket {
    rate: f64,
    burst: f64,
    tokens: f64,
    updated: Instant,
}

impl Bucket {
    fn new(rate: f64, burst: u32, now: Instant) -> Self {
        Self {
            rate,
            burst: f64::from(burst),
            tokens: f64::from(burst),
            updated: now,
        }
    }

    /// Take a token, or say how many seconds until there is one.
    fn take(&mut self, now: Instant) -> Result<(), f64> {
        let elapsed = now.saturating_duration_since(self.updated).as_secs_f64();
        self.updated = now;
        self.tokens = (self.tokens + elapsed * self.rate).min(self.burst);
        if self.tokens >= 1.0 {
            self.tokens -= 1.0;
            return Ok(());
        }
        if self.rate <= 0.0 {
            return Err(f64::INFINITY);
        }
        Err((1.0 - self.tokens) / self.rate)
    }
}

#[derive(Debug)]
struct Caller {
    calls: Mutex<Bucket>,
    in_flight: AtomicU32,
}

/// One admitted call's place among its caller's calls in flight, given back when dropped.
#[derive(Debug)]
pub struct Slot(Arc<Caller>);

impl Drop for Slot {
    fn drop(&mut self) {
        self.0.in_flight.fetch_sub(1, Ordering::AcqRel);
    }
}

/// The limits of every caller, each caller's state made at its first call.
///
/// Callers are identities of certificates of the lienthong CA, so there are few of them;
/// never key this by text a client chooses freely.
#[derive(Debug)]
pub struct CallerLimits {
    settings: LimitSettings,
    callers: Mutex<HashMap<String, Arc<Caller>>>,
    refusals: Mutex<HashMap<String, Bucket>>,
}

impl CallerLimits {
    /// Every caller limited by `settings`.
    #[must_use]
    pub fn new(settings: LimitSettings) -> Self {
        Self {
            settings,
            callers: Mutex::default(),
            refusals: Mutex::default(),
        }
    }

    /// Admit one call of `caller`, or say why not: the concurrency limit first, so that a
    /// caller at its limit spends no token on a call refused anyway.
    ///
    /// # Errors
    ///
    /// The [`Rejection`], having taken neither a token nor a slot.
    pub fn admit(&self, caller: &str) -> Result<Slot, Rejection> {
        self.admit_at(caller, Instant::now())
    }

    fn admit_at(&self, caller: &str, now: Instant) -> Result<Slot, Rejection> {
        let state = {
            let mut callers = self.callers.lock().unwrap_or_else(PoisonError::into_inner);
            Arc::clone(callers.entry(caller.to_owned()).or_insert_with(|| {
                Arc::new(Caller {
                    calls: Mutex::new(Bucket::new(
                        self.settings.rate_per_second,
                        self.settings.burst,
                        now,
                    )),
                    in_flight: AtomicU32::new(0),
                })
            }))
        };
        let mut calls = state.calls.lock().unwrap_or_else(PoisonError::into_inner);
        if state.in_flight.load(Ordering::Acquire) >= self.settings.max_concurrent {
            return Err(Rejection::ConcurrencyLimited);
        }
        calls
            .take(now)
            .map_err(|retry_after| Rejection::RateLimited { retry_after })?;
        state.in_flight.fetch_add(1, Ordering::AcqRel);
        drop(calls);
        Ok(Slot(state))
    }

    /// Charge a refused call to `key` (a caller, or a connection for a certificate without
    /// an identity): whether it is within the rate, and so is recorded in the audit log.
    pub fn charge_refusal(&self, key: &str) -> bool {
        self.charge_refusal_at(key, Instant::now())
    }

    fn charge_refusal_at(&self, key: &str, now: Instant) -> bool {
        let mut refusals = self.refusals.lock().unwrap_or_else(PoisonError::into_inner);
        refusals
            .entry(key.to_owned())
            .or_insert_with(|| Bucket::new(self.settings.rate_per_second, self.settings.burst, now))
            .take(now)
            .is_ok()
    }

    /// Forget the refusal bucket of `key` (a connection that closed).
    pub fn forget_refusals(&self, key: &str) {
        self.refusals
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .remove(key);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    const SETTINGS: LimitSettings = LimitSettings {
        rate_per_second: 10.0,
        burst: 3,
        max_concurrent: 2,
    };

    #[test]
    fn a_burst_is_admitted_then_the_rate_holds() {
        let limits = CallerLimits::new(LimitSettings {
            max_concurrent: 100,
            ..SETTINGS
        });
        let start = Instant::now();
        let slots: Vec<Slot> = (0..3)
            .map(|_| limits.admit_at("a", start).expect("within the burst"))
            .collect();
        match limits.admit_at("a", start) {
            Err(Rejection::RateLimited { retry_after }) => {
                assert!((retry_after - 0.1).abs() < 1e-9, "{retry_after}");
            }
            other => panic!("{other:?}"),
        }
        assert!(
            limits.admit_at("b", start).is_ok(),
            "another caller's own bucket"
        );
        let later = start + Duration::from_millis(100);
        assert!(
            limits.admit_at("a", later).is_ok(),
            "one token back after 0.1 s"
        );
        drop(slots);
    }

    #[test]
    fn calls_in_flight_are_bounded_and_a_slot_is_given_back_when_dropped() {
        let limits = CallerLimits::new(SETTINGS);
        let now = Instant::now();
        let first = limits.admit_at("a", now).expect("a slot");
        let _second = limits.admit_at("a", now).expect("a slot");
        assert_eq!(
            limits.admit_at("a", now).unwrap_err(),
            Rejection::ConcurrencyLimited
        );
        drop(first);
        assert!(limits.admit_at("a", now).is_ok(), "the slot came back");
    }

    #[test]
    fn a_concurrency_refusal_spends_no_token() {
        let limits = CallerLimits::new(LimitSettings {
            burst: 2,
            max_concurrent: 1,
            rate_per_second: 0.0,
        });
        let now = Instant::now();
        let slot = limits.admit_at("a", now).expect("a slot");
        for _ in 0..5 {
            assert_eq!(
                limits.admit_at("a", now).unwrap_err(),
                Rejection::ConcurrencyLimited
            );
        }
        drop(slot);
        assert!(
            limits.admit_at("a", now).is_ok(),
            "the second token is still there"
        );
        let error = limits.admit_at("a", now).unwrap_err();
        assert_eq!(error.reason(), "RATE_LIMITED");
        assert!(
            (error.retry_after() - 3600.0).abs() < 1e-9,
            "never, said as an hour"
        );
    }

    #[test]
    fn refusals_are_charged_to_their_own_bucket() {
        let limits = CallerLimits::new(SETTINGS);
        let now = Instant::now();
        assert!((0..3).all(|_| limits.charge_refusal_at("connection 1", now)));
        assert!(
            !limits.charge_refusal_at("connection 1", now),
            "over the burst"
        );
        assert!(limits.charge_refusal_at("connection 2", now));
        assert!(
            limits.admit_at("connection 1", now).is_ok(),
            "calls are counted apart"
        );
        limits.forget_refusals("connection 1");
        assert!(
            limits.charge_refusal_at("connection 1", now),
            "a new connection"
        );
    }
}
