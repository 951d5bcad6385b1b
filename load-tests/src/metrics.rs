//! Latency histograms (HDR), per-second completion counts and classified errors.

use std::collections::BTreeMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use hdrhistogram::Histogram;
use lockerhub::protocol::ErrorCode;
use lockerhub::simulator::SimError;
use serde::Serialize;

/// What went wrong, by kind. `Protocol`, `Timeout` and `Closed` are protocol errors: a call
/// answered with a protocol-level error frame or an answer that does not fit, no answer at
/// all, or a dropped connection.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum ErrorClass {
    /// The WebSocket could not be opened (TCP, handshake or authentication).
    Connect,
    /// An error frame with a protocol code, or an answer that does not fit the call.
    Protocol,
    /// No answer within the simulator's call timeout.
    Timeout,
    /// The connection closed while a call waited.
    Closed,
    /// A domain refusal (NoCompartment, NotFound, InvalidCode, ...).
    Refused,
    /// An HTTP call failed or was answered with an unexpected status.
    Http,
    /// Anything else (e.g. a pickup code that never appeared).
    Other,
    /// While the server was deliberately killed and restarting (`--kill-after`), until every
    /// locker was back: a failed connection, no answer, a dropped connection, a failed HTTP
    /// exchange or `InternalError`. Expected, reported apart, and not a protocol error.
    Outage,
}

impl ErrorClass {
    pub fn is_protocol(self) -> bool {
        matches!(self, Self::Protocol | Self::Timeout | Self::Closed)
    }
}

/// Classifies a simulator error: (class, low-cardinality detail).
pub fn classify(e: &SimError) -> (ErrorClass, String) {
    match e {
        SimError::Connect(_) => (ErrorClass::Connect, "connect".into()),
        SimError::Refused(f) => match f.code {
            ErrorCode::FormatViolation
            | ErrorCode::ProtocolError
            | ErrorCode::NotImplemented
            | ErrorCode::InternalError => (ErrorClass::Protocol, f.code.as_str().into()),
            c => (ErrorClass::Refused, c.as_str().into()),
        },
        SimError::Timeout(_) => (ErrorClass::Timeout, "no answer".into()),
        SimError::Closed => (ErrorClass::Closed, "connection closed".into()),
        SimError::Unexpected(_) => (ErrorClass::Protocol, "unexpected answer".into()),
    }
}

/// What a server that is down or restarting causes: no connection, no answer, a dropped
/// connection, a failed HTTP exchange, `InternalError`. A wrong answer or a refusal is not: it
/// keeps its class during an outage too (a wrong answer replayed after the restart is what the
/// crash test is for).
fn expected_in_outage(class: ErrorClass, detail: &str) -> bool {
    match class {
        ErrorClass::Connect | ErrorClass::Timeout | ErrorClass::Closed | ErrorClass::Http => true,
        ErrorClass::Protocol => detail == "InternalError",
        _ => false,
    }
}

/// Latency summary of one operation, in milliseconds.
#[derive(Debug, Clone, Default, Serialize)]
pub struct Latency {
    pub count: u64,
    pub mean_ms: f64,
    pub p50_ms: f64,
    pub p90_ms: f64,
    pub p99_ms: f64,
    pub p999_ms: f64,
    pub max_ms: f64,
}

impl Latency {
    fn of(h: &Histogram<u64>) -> Latency {
        let ms = |us: u64| us as f64 / 1000.0;
        Latency {
            count: h.len(),
            mean_ms: h.mean() / 1000.0,
            p50_ms: ms(h.value_at_quantile(0.50)),
            p90_ms: ms(h.value_at_quantile(0.90)),
            p99_ms: ms(h.value_at_quantile(0.99)),
            p999_ms: ms(h.value_at_quantile(0.999)),
            max_ms: ms(h.max()),
        }
    }

    pub fn quantiles(&self) -> [f64; 4] {
        [self.p50_ms, self.p90_ms, self.p99_ms, self.p999_ms]
    }
}

#[derive(Debug, Clone, Serialize)]
pub struct ErrorCount {
    pub op: String,
    pub class: ErrorClass,
    pub detail: String,
    pub count: u64,
}

type ErrorKey = (&'static str, ErrorClass, String);

/// Everything one target's run records. Shared by all tasks; each lock is held for a moment.
pub struct Metrics {
    epoch: Instant,
    hists: Mutex<BTreeMap<&'static str, Histogram<u64>>>,
    errors: Mutex<BTreeMap<ErrorKey, u64>>,
    messages: Mutex<Vec<String>>,
    counters: Mutex<BTreeMap<&'static str, u64>>,
    timeline: Mutex<BTreeMap<&'static str, Vec<u64>>>,
    /// Set from the kill until every locker is back (`--kill-after`).
    outage: std::sync::atomic::AtomicBool,
}

/// Latencies are recorded in microseconds, from 1 µs up to an hour.
const HIGHEST_US: u64 = 3_600_000_000;

/// The first error messages kept verbatim, for diagnosis.
const KEEP_MESSAGES: usize = 20;

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

impl Metrics {
    pub fn new(epoch: Instant) -> Metrics {
        Metrics {
            epoch,
            hists: Mutex::default(),
            errors: Mutex::default(),
            messages: Mutex::default(),
            counters: Mutex::default(),
            timeline: Mutex::default(),
            outage: Default::default(),
        }
    }

    /// Records a completed operation's latency and counts it in its second of the run.
    pub fn record(&self, op: &'static str, d: Duration) {
        let us = (d.as_micros() as u64).max(1);
        lock(&self.hists)
            .entry(op)
            .or_insert_with(|| Histogram::new_with_bounds(1, HIGHEST_US, 3).expect("valid histogram bounds"))
            .saturating_record(us);
        let sec = self.epoch.elapsed().as_secs() as usize;
        let mut tl = lock(&self.timeline);
        let v = tl.entry(op).or_default();
        if v.len() <= sec {
            v.resize(sec + 1, 0);
        }
        v[sec] += 1;
    }

    pub fn error(
        &self,
        op: &'static str,
        class: ErrorClass,
        detail: impl Into<String>,
        message: impl std::fmt::Display,
    ) {
        let detail = detail.into();
        let class = if self.in_outage() && expected_in_outage(class, &detail) {
            ErrorClass::Outage
        } else {
            class
        };
        *lock(&self.errors).entry((op, class, detail)).or_default() += 1;
        let mut m = lock(&self.messages);
        if m.len() < KEEP_MESSAGES {
            m.push(format!("{op}: {message}"));
        }
    }

    pub fn sim_error(&self, op: &'static str, e: &SimError) {
        let (class, detail) = classify(e);
        self.error(op, class, detail, e);
    }

    /// Keeps a message for diagnosis without counting an error.
    pub fn note(&self, op: &str, message: impl std::fmt::Display) {
        let mut m = lock(&self.messages);
        if m.len() < KEEP_MESSAGES {
            m.push(format!("{op}: {message}"));
        }
    }

    /// Marks the start (`true`) and end of a deliberate outage: the failures a server that is
    /// down causes, from then until it ends, are `Outage`.
    pub fn set_outage(&self, on: bool) {
        self.outage.store(on, std::sync::atomic::Ordering::SeqCst);
    }

    fn in_outage(&self) -> bool {
        self.outage.load(std::sync::atomic::Ordering::SeqCst)
    }

    pub fn add(&self, name: &'static str, n: u64) {
        *lock(&self.counters).entry(name).or_default() += n;
    }

    pub fn counter(&self, name: &str) -> u64 {
        lock(&self.counters).get(name).copied().unwrap_or(0)
    }

    pub fn count(&self, op: &str) -> u64 {
        lock(&self.hists).get(op).map(|h| h.len()).unwrap_or(0)
    }

    pub fn latencies(&self) -> BTreeMap<String, Latency> {
        lock(&self.hists)
            .iter()
            .map(|(k, h)| (k.to_string(), Latency::of(h)))
            .collect()
    }

    pub fn errors(&self) -> Vec<ErrorCount> {
        lock(&self.errors)
            .iter()
            .map(|((op, class, detail), n)| ErrorCount {
                op: op.to_string(),
                class: *class,
                detail: detail.clone(),
                count: *n,
            })
            .collect()
    }

    pub fn error_total(&self) -> u64 {
        lock(&self.errors).values().sum()
    }

    pub fn protocol_errors(&self) -> u64 {
        lock(&self.errors)
            .iter()
            .filter(|((_, c, _), _)| c.is_protocol())
            .map(|(_, n)| n)
            .sum()
    }

    pub fn messages(&self) -> Vec<String> {
        lock(&self.messages).clone()
    }

    /// Completions per second of the run for one operation.
    pub fn timeline(&self, op: &str) -> Vec<u64> {
        lock(&self.timeline).get(op).cloned().unwrap_or_default()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use lockerhub::protocol::FrameError;

    #[test]
    fn records_and_classifies() {
        let m = Metrics::new(Instant::now());
        for ms in 1..=1000 {
            m.record("op", Duration::from_millis(ms));
        }
        let l = m.latencies()["op"].clone();
        assert_eq!(l.count, 1000);
        assert!((l.p50_ms - 500.0).abs() < 2.0, "{l:?}");
        assert!((l.p99_ms - 990.0).abs() < 2.0, "{l:?}");
        assert!(l.p999_ms >= l.p99_ms && l.max_ms >= l.p999_ms);

        m.sim_error(
            "op",
            &SimError::Refused(FrameError::new(ErrorCode::NoCompartment, "full")),
        );
        m.sim_error("op", &SimError::Refused(FrameError::new(ErrorCode::InternalError, "x")));
        m.sim_error("op", &SimError::Timeout(Duration::from_secs(1)));
        assert_eq!(m.error_total(), 3);
        assert_eq!(m.protocol_errors(), 2);
        assert_eq!(m.errors().iter().filter(|e| e.class == ErrorClass::Refused).count(), 1);
        assert_eq!(m.messages().len(), 3);

        m.set_outage(true);
        m.sim_error("op", &SimError::Closed);
        m.sim_error("op", &SimError::Refused(FrameError::new(ErrorCode::InternalError, "x")));
        m.sim_error("op", &SimError::Unexpected("wrong compartment".into()));
        m.sim_error("op", &SimError::Refused(FrameError::new(ErrorCode::NotFound, "gone")));
        m.set_outage(false);
        let outage: u64 = m
            .errors()
            .iter()
            .filter(|e| e.class == ErrorClass::Outage)
            .map(|e| e.count)
            .sum();
        assert_eq!(outage, 2, "a dropped connection and InternalError are the outage's");
        assert_eq!(
            m.protocol_errors(),
            3,
            "a wrong answer stays a protocol error during an outage"
        );
        assert_eq!(m.errors().iter().filter(|e| e.class == ErrorClass::Refused).count(), 2);
    }
}
