//! The abuse limit that lives in memory: requests per client address per
//! minute on the browser-facing routes, a fixed window kept in a
//! mutex-guarded map and pruned by the sweeper (per process: behind a load
//! balancer the proxy should enforce its own). Attempt limits that must hold
//! across restarts and replicas (sessions per order and per subscriber,
//! refused submissions per session) are counted in the database.

use crate::api::{now_ms, Shared};
use axum::extract::{ConnectInfo, Request, State};
use axum::http::StatusCode;
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};
use std::sync::Mutex;

const WINDOW_MS: i64 = 60_000;

/// At most `per_minute` requests per key in each one-minute window.
pub struct RateLimiter {
    per_minute: u32,
    windows: Mutex<HashMap<IpAddr, (i64, u32)>>,
}

impl RateLimiter {
    pub fn new(per_minute: u32) -> Self {
        RateLimiter { per_minute, windows: Mutex::new(HashMap::new()) }
    }

    /// Counts one request; false when the key is over its limit.
    pub fn allow(&self, key: IpAddr, now: i64) -> bool {
        let mut windows = self.windows.lock().unwrap_or_else(|e| e.into_inner());
        let entry = windows.entry(key).or_insert((now, 0));
        if now - entry.0 >= WINDOW_MS {
            *entry = (now, 0);
        }
        entry.1 += 1;
        entry.1 <= self.per_minute
    }

    /// Drop windows that ended (called by the sweeper).
    pub fn prune(&self, now: i64) {
        self.windows.lock().unwrap_or_else(|e| e.into_inner()).retain(|_, w| now - w.0 < WINDOW_MS);
    }
}

/// Middleware for the browser-facing routes. The address is the TCP peer:
/// behind a reverse proxy, the proxy should enforce its own per-client limit.
pub async fn per_address(State(state): State<Shared>, ConnectInfo(peer): ConnectInfo<SocketAddr>, request: Request, next: Next) -> Response {
    if !state.per_address.allow(peer.ip(), now_ms()) {
        let body = serde_json::json!({"error": "rate_limited", "message": "too many requests from this address; try again in a minute"});
        return (StatusCode::TOO_MANY_REQUESTS, axum::Json(body)).into_response();
    }
    next.run(request).await
}

/// Every `period`: expire open sessions past their expiry (their nonces can
/// never be used) and prune the in-memory limit tables.
pub fn spawn_sweeper(state: Shared, period: std::time::Duration) {
    tokio::spawn(async move {
        let mut tick = tokio::time::interval(period);
        loop {
            tick.tick().await;
            let now = now_ms();
            match state.db.expire_sessions(now).await {
                Ok(0) => {}
                Ok(n) => tracing::info!(expired = n, "expired sessions swept"),
                Err(e) => tracing::error!(error = %e, "session sweep failed"),
            }
            if state.config.escrow_key_id.is_some() {
                match state.db.delete_evidence_before(now - state.config.escrow_retention_ms).await {
                    Ok(0) => {}
                    Ok(n) => tracing::info!(deleted = n, "sealed evidence past retention deleted"),
                    Err(e) => tracing::error!(error = %e, "evidence sweep failed"),
                }
            }
            // an idle server keeps its duplicate search current too, and
            // revocations older than any live index are forgotten
            if let Err(e) = state.templates.sync(&state.db).await {
                tracing::error!(error = %e, "template index sync failed");
            }
            match state.db.delete_revocations_before(now - crate::template_search::REVOCATION_LOG_MS).await {
                Ok(0) => {}
                Ok(n) => tracing::info!(deleted = n, "old template revocations pruned"),
                Err(e) => tracing::error!(error = %e, "revocation sweep failed"),
            }
            match state.db.delete_refusals_before(now - state.config.session_ttl_ms).await {
                Ok(0) => {}
                Ok(n) => tracing::info!(deleted = n, "refusal counts of expired sessions pruned"),
                Err(e) => tracing::error!(error = %e, "refusal sweep failed"),
            }
            state.per_address.prune(now);
        }
    });
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fixed_window_per_address() {
        let limiter = RateLimiter::new(3);
        let a: IpAddr = "10.0.0.1".parse().unwrap();
        let b: IpAddr = "10.0.0.2".parse().unwrap();
        assert!((0..3).all(|i| limiter.allow(a, 1000 + i)));
        assert!(!limiter.allow(a, 1010), "fourth request in the window");
        assert!(limiter.allow(b, 1010), "other addresses are not affected");
        assert!(limiter.allow(a, 1000 + WINDOW_MS), "a new window");
        limiter.prune(1000 + 3 * WINDOW_MS);
        assert!(limiter.windows.lock().unwrap().is_empty());
    }
}
