//! The abuse limit that lives in memory: requests per client address per
//! minute on the browser-facing routes, a fixed window kept in a
//! mutex-guarded map and pruned by the sweeper (per process: behind a load
//! balancer the proxy should enforce its own). Attempt limits that must hold
//! across restarts and replicas (sessions per order and per subscriber,
//! refused submissions per session) are counted in the database.

use crate::api::{now_ms, Shared};
use axum::extract::{ConnectInfo, Request, State};
use axum::http::{HeaderMap, StatusCode};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use ipnet::IpNet;
use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};
use std::sync::Mutex;

const WINDOW_MS: i64 = 60_000;

/// At most `per_minute` requests per client address in each one-minute
/// window (0: no limit, for deployments whose proxy enforces its own).
pub struct RateLimiter {
    per_minute: u32,
    /// Reverse proxies and load balancers whose `X-Forwarded-For` names the
    /// client: behind one, every request's TCP peer is the proxy, and one
    /// shared window would throttle all customers together.
    trusted_proxies: Vec<IpNet>,
    windows: Mutex<HashMap<IpAddr, (i64, u32)>>,
}

impl RateLimiter {
    pub fn new(per_minute: u32, trusted_proxies: Vec<IpNet>) -> Self {
        RateLimiter { per_minute, trusted_proxies, windows: Mutex::new(HashMap::new()) }
    }

    /// The address a request is counted under: the TCP peer, unless the
    /// peer is a trusted proxy; then the nearest address of its
    /// `X-Forwarded-For` chain (read from the right, the hops this
    /// deployment added) that is not a trusted proxy itself. Anything left
    /// of that is the client's to write, so it is never read, and a client
    /// talking to the server directly cannot choose its address at all. A
    /// chain that does not parse stops at the last trusted hop.
    pub fn client(&self, peer: IpAddr, headers: &HeaderMap) -> IpAddr {
        let trusted = |ip: &IpAddr| self.trusted_proxies.iter().any(|net| net.contains(ip));
        if !trusted(&peer) {
            return peer;
        }
        let mut client = peer;
        for value in headers.get_all("x-forwarded-for").iter().rev() {
            let Ok(text) = value.to_str() else { return client };
            for hop in text.split(',').rev() {
                let Ok(ip) = hop.trim().parse::<IpAddr>() else { return client };
                client = ip;
                if !trusted(&ip) {
                    return ip;
                }
            }
        }
        client
    }

    /// Counts one request; false when the key is over its limit.
    pub fn allow(&self, key: IpAddr, now: i64) -> bool {
        if self.per_minute == 0 {
            return true;
        }
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

/// Middleware for the browser-facing routes, per client address
/// (`RateLimiter::client`).
pub async fn per_address(State(state): State<Shared>, ConnectInfo(peer): ConnectInfo<SocketAddr>, request: Request, next: Next) -> Response {
    let client = state.per_address.client(peer.ip(), request.headers());
    if !state.per_address.allow(client, now_ms()) {
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

/// The `trusted_proxies` setting: addresses (`192.0.2.10`, `2001:db8::1`)
/// or networks (`10.0.0.0/8`).
pub fn parse_trusted_proxies(entries: &[String]) -> Result<Vec<IpNet>, String> {
    entries
        .iter()
        .map(|e| {
            let e = e.trim();
            e.parse::<IpNet>().or_else(|_| e.parse::<IpAddr>().map(IpNet::from)).map_err(|_| format!("trusted_proxies: {e:?} is not an IP address or network (CIDR)"))
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fixed_window_per_address() {
        let limiter = RateLimiter::new(3, Vec::new());
        let a: IpAddr = "10.0.0.1".parse().unwrap();
        let b: IpAddr = "10.0.0.2".parse().unwrap();
        assert!((0..3).all(|i| limiter.allow(a, 1000 + i)));
        assert!(!limiter.allow(a, 1010), "fourth request in the window");
        assert!(limiter.allow(b, 1010), "other addresses are not affected");
        assert!(limiter.allow(a, 1000 + WINDOW_MS), "a new window");
        limiter.prune(1000 + 3 * WINDOW_MS);
        assert!(limiter.windows.lock().unwrap().is_empty());
        assert!((0..1000).all(|i| RateLimiter::new(0, Vec::new()).allow(a, i)), "0: no limit");
    }

    #[test]
    fn client_address_behind_trusted_proxies_only() {
        let limiter = RateLimiter::new(3, parse_trusted_proxies(&["10.0.0.0/8".into(), "192.168.1.5".into()]).unwrap());
        let ip = |s: &str| s.parse::<IpAddr>().unwrap();
        let headers = |values: &[&str]| {
            let mut h = HeaderMap::new();
            for v in values {
                h.append("x-forwarded-for", v.parse().unwrap());
            }
            h
        };
        // a direct client cannot pick its address
        assert_eq!(limiter.client(ip("203.0.113.9"), &headers(&["198.51.100.1"])), ip("203.0.113.9"));
        // through one proxy, through two (the nearest untrusted hop wins,
        // whatever the client wrote to the left of it), in two header lines
        assert_eq!(limiter.client(ip("10.1.2.3"), &headers(&["198.51.100.1"])), ip("198.51.100.1"));
        assert_eq!(limiter.client(ip("10.1.2.3"), &headers(&["6.6.6.6, 198.51.100.1, 192.168.1.5"])), ip("198.51.100.1"));
        assert_eq!(limiter.client(ip("10.1.2.3"), &headers(&["6.6.6.6, 198.51.100.1", "192.168.1.5"])), ip("198.51.100.1"));
        assert_eq!(limiter.client(ip("10.1.2.3"), &headers(&[" 2001:db8::7 "])), ip("2001:db8::7"));
        // no header, or a chain that does not parse: the last trusted hop
        assert_eq!(limiter.client(ip("10.1.2.3"), &HeaderMap::new()), ip("10.1.2.3"));
        assert_eq!(limiter.client(ip("10.1.2.3"), &headers(&["198.51.100.1, junk, 192.168.1.5"])), ip("192.168.1.5"));
        assert!(parse_trusted_proxies(&["10.0.0.0/33".into()]).is_err());
        assert!(parse_trusted_proxies(&["proxy.local".into()]).is_err());
    }
}
