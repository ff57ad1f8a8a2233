//! HTTP API (axum). Every refusal is a status plus a stable reason code;
//! the browser only ever learns the decision and a reason, never a score.

use crate::db::{Db, Decided, Decision, Opened, SessionLimits, SessionRow};
use axum::extract::{DefaultBodyLimit, Path, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use facegate::challenge::verify_track;
use facegate::signed::{constant_time_eq, parse_public_key, SignedResult};
use facegate::template::StorageKey;
use serde::Deserialize;
use serde_json::{json, Value};
use std::collections::BTreeMap;
use std::sync::Arc;

/// Signed results are a few tens of kB (track + template); escrow adds a
/// little. Anything bigger is not a facegate request.
pub const MAX_BODY: usize = 256 * 1024;

pub struct Config {
    pub api_key: String,
    pub transform_key: String,
    /// Public id of `transform_key`, which device templates must carry.
    pub transform_key_id: String,
    pub storage_key: StorageKey,
    pub match_threshold: f32,
    /// Calibrated-score threshold of the 1:N duplicate check (protected domain).
    pub duplicate_threshold: f32,
    /// The embedder's named operating points in the protected domain: a
    /// duplicate candidate's score band is the strictest one it passes.
    pub duplicate_points: &'static [facegate::matching::OperatingPoint],
    pub liveness_threshold: f32,
    /// The screen-replay cue's threshold (`facegate::replay`).
    pub screen_grid_threshold: f32,
    pub session_ttl_ms: i64,
    pub max_sessions_per_order: i64,
    /// Sessions a subscriber may open per 24 hours (all orders together).
    pub max_sessions_per_subscriber_per_day: i64,
    /// Refused result submissions a session tolerates before it is locked.
    pub max_failed_submissions: u32,
    /// Model name → sha256 the server accepts (the manifest's by default).
    pub accepted_models: BTreeMap<String, String>,
    pub escrow_public_key: Option<String>,
    /// Key id of `escrow_public_key`, checked against each envelope.
    pub escrow_key_id: Option<String>,
    /// How long sealed evidence is kept before the sweeper deletes it.
    pub escrow_retention_ms: i64,
}

impl Config {
    /// The 1:N check's calibration: the embedder's, at its own threshold.
    pub fn duplicate_calibration(&self) -> facegate::matching::Calibration {
        facegate::matching::Calibration { threshold: self.duplicate_threshold, ..facegate::matching::DEFAULT_CALIBRATION }
    }
}

pub struct AppState {
    pub db: Db,
    /// The 1:N duplicate search over every stored template.
    pub templates: crate::template_search::TemplateSearch,
    pub config: Config,
    /// Requests per client address per minute on the browser-facing routes.
    pub per_address: crate::limits::RateLimiter,
}

pub type Shared = Arc<AppState>;

pub struct ApiError(StatusCode, &'static str, String);

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        (self.0, Json(json!({"error": self.1, "message": self.2}))).into_response()
    }
}

fn refuse(status: StatusCode, code: &'static str, message: impl Into<String>) -> ApiError {
    ApiError(status, code, message.into())
}

impl From<sqlx::Error> for ApiError {
    fn from(e: sqlx::Error) -> Self {
        // the message may hold SQL; log it, answer without it
        tracing::error!(error = %e, "database error");
        if storage_unreachable(&e) {
            return refuse(StatusCode::SERVICE_UNAVAILABLE, "storage_unavailable", "the database did not answer; nothing was stored, try again");
        }
        refuse(StatusCode::INTERNAL_SERVER_ERROR, "database_error", "storage failed")
    }
}

/// A database (or, through postgres_fdw, one of its shards) that cannot be
/// reached, as opposed to one that refused the statement: the request may
/// succeed later. SQLSTATE class 08 is "connection exception"; postgres_fdw
/// reports a shard it cannot connect to as 08001.
fn storage_unreachable(e: &sqlx::Error) -> bool {
    match e {
        sqlx::Error::Io(_) | sqlx::Error::PoolTimedOut | sqlx::Error::PoolClosed => true,
        sqlx::Error::Database(d) => d.code().is_some_and(|c| c.starts_with("08")),
        _ => false,
    }
}

/// JSON bodies are parsed strictly here rather than by axum's extractor,
/// so that malformed JSON, unknown fields and wrong types all get our
/// reason codes.
fn parse<T: for<'de> Deserialize<'de>>(body: &[u8]) -> Result<T, ApiError> {
    serde_json::from_slice(body).map_err(|e| refuse(StatusCode::BAD_REQUEST, "malformed_request", e.to_string()))
}

pub fn now_ms() -> i64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.as_millis() as i64).unwrap_or(0)
}

pub fn random_hex(bytes: usize) -> String {
    let mut b = vec![0u8; bytes];
    getrandom::getrandom(&mut b).expect("OS random source");
    hex::encode(b)
}

fn check_api_key(state: &AppState, headers: &HeaderMap) -> Result<(), ApiError> {
    let given = headers.get("x-api-key").ok_or_else(|| refuse(StatusCode::UNAUTHORIZED, "missing_api_key", "X-Api-Key header required"))?;
    if !constant_time_eq(given.as_bytes(), state.config.api_key.as_bytes()) {
        return Err(refuse(StatusCode::UNAUTHORIZED, "wrong_api_key", "API key not accepted"));
    }
    Ok(())
}

/// Identifiers chosen by the carrier: short, printable, no control characters.
fn check_identifier(what: &'static str, v: &str) -> Result<(), ApiError> {
    if v.is_empty() || v.len() > 128 || v.chars().any(|c| c.is_control()) {
        return Err(refuse(StatusCode::BAD_REQUEST, "invalid_field", format!("{what} must be 1-128 printable characters")));
    }
    Ok(())
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct CreateSession {
    order_id: String,
    subscriber_id: String,
}

fn session_config(state: &AppState, s: &SessionRow) -> Value {
    json!({
        "session_id": s.id,
        "nonce": s.nonce,
        "challenge_seed": s.challenge_seed,
        "transform_key": state.config.transform_key,
        "match_threshold": state.config.match_threshold,
        "liveness_threshold": state.config.liveness_threshold,
        "screen_grid_threshold": state.config.screen_grid_threshold,
        "escrow_public_key": state.config.escrow_public_key,
    })
}

async fn create_session(State(state): State<Shared>, headers: HeaderMap, body: axum::body::Bytes) -> Result<Response, ApiError> {
    check_api_key(&state, &headers)?;
    let req: CreateSession = parse(&body)?;
    let s = open_session(&state, req.order_id, req.subscriber_id).await?;
    let body = json!({
        "session_id": s.id,
        "nonce": s.nonce,
        "challenge_seed": s.challenge_seed,
        "expires_at_ms": s.expires_ms,
        "policy": {"match_threshold": state.config.match_threshold, "duplicate_threshold": state.config.duplicate_threshold, "liveness_threshold": state.config.liveness_threshold, "screen_grid_threshold": state.config.screen_grid_threshold},
        "accepted_models": state.config.accepted_models,
    });
    Ok((StatusCode::CREATED, Json(body)).into_response())
}

/// A new session for an order, within the per-order attempt limit.
async fn open_session(state: &AppState, order_id: String, subscriber_id: String) -> Result<SessionRow, ApiError> {
    check_identifier("order_id", &order_id)?;
    check_identifier("subscriber_id", &subscriber_id)?;
    let now = now_ms();
    const DAY_MS: i64 = 24 * 3600 * 1000;
    let s = SessionRow {
        id: format!("sess_{}", random_hex(16)),
        order_id,
        subscriber_id,
        nonce: random_hex(32),
        challenge_seed: random_hex(16),
        device_key: None,
        created_ms: now,
        expires_ms: now + state.config.session_ttl_ms,
        state: "open".into(),
        decision: None,
        reason: None,
        duplicates: None,
        decided_ms: None,
    };
    let limits = SessionLimits { per_order: state.config.max_sessions_per_order, per_subscriber: state.config.max_sessions_per_subscriber_per_day, subscriber_since_ms: now - DAY_MS };
    match state.db.insert_session_within_limits(&s, limits).await? {
        Opened::Created => {}
        Opened::OrderLimitReached => return Err(refuse(StatusCode::TOO_MANY_REQUESTS, "too_many_attempts", "attempt limit for this order reached")),
        Opened::SubscriberLimitReached => return Err(refuse(StatusCode::TOO_MANY_REQUESTS, "too_many_attempts", "attempt limit for this subscriber reached")),
    }
    tracing::info!(session = %s.id, "session created");
    Ok(s)
}

async fn load_open(state: &AppState, id: &str) -> Result<SessionRow, ApiError> {
    let s = state.db.session(id).await?.ok_or_else(|| refuse(StatusCode::NOT_FOUND, "unknown_session", "no such session"))?;
    if s.expires_ms < now_ms() || s.state == "expired" {
        return Err(refuse(StatusCode::GONE, "session_expired", "session expired"));
    }
    if s.state != "open" {
        return Err(refuse(StatusCode::CONFLICT, "replayed_nonce", "this session's nonce was already used"));
    }
    Ok(s)
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RegisterKey {
    public_key: String,
}

/// Called by the widget: registers its per-session device key, and gets the
/// session configuration (nonce, challenge seed, thresholds, transform key).
async fn register_key(State(state): State<Shared>, Path(id): Path<String>, body: axum::body::Bytes) -> Result<Response, ApiError> {
    let req: RegisterKey = parse(&body)?;
    parse_public_key(&req.public_key).map_err(|e| refuse(StatusCode::BAD_REQUEST, "invalid_field", e.to_string()))?;
    let s = load_open(&state, &id).await?;
    if !state.db.register_device_key(&id, &req.public_key).await? {
        return Err(refuse(StatusCode::CONFLICT, "device_key_already_registered", "this session already has a device key"));
    }
    Ok(Json(json!({"session_config": session_config(&state, &s)})).into_response())
}

/// A session accepts a few refused submissions (a flaky network, a bug) and
/// then locks, so that a forger cannot try signature after signature.
async fn submit_result(State(state): State<Shared>, Path(id): Path<String>, body: axum::body::Bytes) -> Result<Response, ApiError> {
    if state.db.refused_submissions(&id).await? >= i64::from(state.config.max_failed_submissions) {
        return Err(refuse(StatusCode::TOO_MANY_REQUESTS, "too_many_attempts", "too many refused submissions for this session"));
    }
    let answer = decide_result(&state, &id, &body).await;
    if let Err(ApiError(status, ..)) = &answer {
        if status.is_client_error() && *status != StatusCode::NOT_FOUND {
            state.db.count_refused_submission(&id, now_ms()).await?;
        }
    }
    answer
}

async fn decide_result(state: &AppState, id: &str, body: &[u8]) -> Result<Response, ApiError> {
    let bad = |code, m: String| refuse(StatusCode::BAD_REQUEST, code, m);
    let signed = SignedResult::from_json(body).map_err(|e| bad(e.code(), e.to_string()))?;
    let s = load_open(state, id).await?;
    let device_key = s.device_key.clone().ok_or_else(|| refuse(StatusCode::CONFLICT, "no_device_key", "register a device key first"))?;
    let r = signed.verify(&device_key).map_err(|e| refuse(StatusCode::UNAUTHORIZED, e.code(), e.to_string()))?;
    if r.session_id != s.id {
        return Err(bad("session_mismatch", "result is for another session".into()));
    }
    if !constant_time_eq(r.nonce.as_bytes(), s.nonce.as_bytes()) {
        return Err(bad("wrong_nonce", "result is not bound to this session's nonce".into()));
    }
    if r.version != facegate::signed::PROTOCOL_VERSION || r.template.scheme != facegate::template::SCHEME {
        // an older widget's template (another embedder, another length) would never match the stored ones
        return Err(bad("unsupported_version", format!("result protocol {} / template scheme {} is not this server's {} / {}", r.version, r.template.scheme, facegate::signed::PROTOCOL_VERSION, facegate::template::SCHEME)));
    }
    for (name, sha) in &r.models {
        if state.config.accepted_models.get(name) != Some(sha) {
            return Err(bad("unknown_model", format!("model {name} with this sha256 is not accepted")));
        }
    }
    let required = [facegate::pipeline::DEFAULT_DETECTOR, facegate::embed::DEFAULT_EMBEDDER, facegate::pipeline::DEFAULT_LANDMARKER];
    if !required.iter().all(|m| r.models.contains_key(*m)) {
        return Err(bad("unknown_model", "result does not name the detector, landmark and embedding models".into()));
    }
    for (what, v) in [("match_score", r.match_score), ("passive_liveness", r.passive_liveness)] {
        if !(v.is_finite() && (0.0..=1.0).contains(&v)) {
            return Err(bad("score_out_of_range", format!("{what} must be in [0,1]")));
        }
    }
    // the cue is a log-magnitude ratio: real faces score about 1-2, screens up to ~5
    if r.screen_grid.is_some_and(|g| !(g.is_finite() && (0.0..=50.0).contains(&g))) {
        return Err(bad("score_out_of_range", "screen_grid must be in [0,50]".into()));
    }
    if r.template.transform_key_id != state.config.transform_key_id {
        return Err(bad("invalid_template", "template was not made with this carrier's transform key".into()));
    }
    let template = state.config.storage_key.seal(&r.template).map_err(|e| bad("invalid_template", e.to_string()))?;
    // evidence escrow: accepted only when this deployment turned it on, only
    // sealed to its key; without it no pixel is ever accepted
    let evidence = match (&r.evidence, &state.config.escrow_key_id) {
        (None, _) => None,
        (Some(_), None) => return Err(bad("escrow_not_enabled", "this deployment does not accept evidence".into())),
        (Some(e), Some(key_id)) => {
            if e.scheme != facegate::escrow::SCHEME || !constant_time_eq(e.recipient_key_id.as_bytes(), key_id.as_bytes()) {
                return Err(bad("invalid_evidence", "evidence is not sealed to this deployment's escrow key".into()));
            }
            if e.ciphertext.len() > facegate::escrow::MAX_CIPHERTEXT_B64 {
                return Err(bad("invalid_evidence", "evidence is larger than an envelope can be".into()));
            }
            Some((key_id.as_str(), serde_json::to_string(e).expect("serialisable")))
        }
    };
    // the challenge evidence: the server replays the track against its own seed
    let seed = hex::decode(&s.challenge_seed).unwrap_or_default();
    let challenge = verify_track(&seed, &r.active_liveness.track);
    let expected_steps = facegate::challenge::steps_for_seed(&seed);
    if r.active_liveness.steps != expected_steps {
        return Err(refuse(StatusCode::UNPROCESSABLE_ENTITY, "challenge_mismatch", "steps do not match this session's seed"));
    }
    if let Ok(passed) = &challenge {
        if passed != &r.active_liveness.transcript {
            return Err(refuse(StatusCode::UNPROCESSABLE_ENTITY, "challenge_mismatch", "transcript does not match the track"));
        }
    }
    if r.decision.pass && challenge.is_err() {
        return Err(refuse(StatusCode::UNPROCESSABLE_ENTITY, "challenge_mismatch", "the track does not perform the challenge"));
    }
    let cfg = &state.config;
    let reason = facegate::session::decision_reason(
        &challenge,
        facegate::session::Evidence { passive_liveness: r.passive_liveness, screen_grid: r.screen_grid, match_score: r.match_score },
        facegate::session::Thresholds { liveness: cfg.liveness_threshold, screen_grid: cfg.screen_grid_threshold, matching: cfg.match_threshold },
    );
    let pass = reason == "ok";
    // duplicate check in the protected domain: one face, several subscribers
    // (the 1:N check has its own, stricter operating point: its false
    // accepts add up over every stored template)
    let cal = cfg.duplicate_calibration();
    let mut candidates: Vec<(String, f32)> = Vec::new();
    // what the search covered: the probe's bits and the last template number searched
    let mut searched: Option<(Vec<u8>, i64)> = None;
    if pass {
        let bits = template.bit_bytes().map_err(|e| bad("invalid_template", e.to_string()))?;
        let (hits, upto) = state.templates.duplicates(&state.db, &bits, &s.subscriber_id).await.map_err(|e| {
            // the session stays open: the client may submit again
            tracing::error!(error = %e, "duplicate search failed");
            refuse(StatusCode::SERVICE_UNAVAILABLE, "template_store_unavailable", "the template store did not answer; no decision was made")
        })?;
        add_candidates(&mut candidates, hits, &cal);
        searched = Some((bits, upto));
    }
    let duplicates = ranked_candidates(candidates.clone(), cfg.duplicate_points);
    let decision = if pass { "pass" } else { "fail" };
    let dup_json = serde_json::to_string(&duplicates).expect("serialisable");
    let decided = state
        .db
        .decide(&Decision {
            session_id: &s.id,
            decision,
            reason,
            duplicates: &dup_json,
            decided_ms: now_ms(),
            template: pass.then_some((s.subscriber_id.as_str(), &template)),
            evidence: evidence.as_ref().map(|(key_id, sealed)| (*key_id, sealed.as_str())),
        })
        .await?;
    let template_seq = match decided {
        Decided::Replayed => return Err(refuse(StatusCode::CONFLICT, "replayed_nonce", "this session's nonce was already used")),
        Decided::Recorded { template_seq } => template_seq,
    };
    // Templates stored between the search and this one (numbers commit in
    // order): a registration of the same face at the same moment searched
    // before this template was stored, and this one before it was, so
    // neither search saw the other. The later registration looks again at
    // exactly those and records what it finds, before it answers; the
    // earlier one has nothing to find. No lock: verifications on every
    // server process keep going in parallel.
    if let (Some((bits, upto)), Some(own)) = (searched, template_seq) {
        if own > upto.saturating_add(1) {
            match state.templates.duplicates_stored_between(&state.db, &bits, &s.subscriber_id, upto, own).await {
                Ok(hits) if !hits.is_empty() => {
                    add_candidates(&mut candidates, hits, &cal);
                    let dup_json = serde_json::to_string(&ranked_candidates(candidates, cfg.duplicate_points)).expect("serialisable");
                    if let Err(e) = state.db.set_duplicates(&s.id, &dup_json).await {
                        tracing::error!(session = %s.id, error = %e, "a duplicate stored at the same moment was found but not recorded");
                    }
                }
                Ok(_) => {}
                Err(e) => tracing::error!(session = %s.id, error = %e, "templates stored during this verification were not checked for duplicates"),
            }
        }
    }
    tracing::info!(session = %s.id, decision, reason, "result decided");
    Ok(Json(json!({"decision": decision, "reason": reason})).into_response())
}

async fn get_session(State(state): State<Shared>, headers: HeaderMap, Path(id): Path<String>) -> Result<Response, ApiError> {
    check_api_key(&state, &headers)?;
    Ok(Json(decision_record(&state, &id).await?).into_response())
}

/// Duplicate search hits as candidates: a subscriber with several stored
/// templates is one candidate, at its best score.
fn add_candidates(candidates: &mut Vec<(String, f32)>, hits: Vec<facegate::search::Hit>, cal: &facegate::matching::Calibration) {
    for hit in hits {
        let score = facegate::template::score_of_distance(hit.distance, cal);
        match candidates.iter_mut().find(|c| c.0 == hit.subscriber_id) {
            Some(c) => c.1 = c.1.max(score),
            None => candidates.push((hit.subscriber_id, score)),
        }
    }
}

/// At most this many duplicate candidates are recorded per verification,
/// the strongest first.
pub const MAX_DUPLICATE_CANDIDATES: usize = 10;

/// Duplicate candidates for the decision record: ranked by score, the
/// strongest first, each with a score band (the strictest named operating
/// point at which the comparison is still a match, e.g. `far1e-5`) instead
/// of the score itself, and never anything of the template.
fn ranked_candidates(mut candidates: Vec<(String, f32)>, points: &[facegate::matching::OperatingPoint]) -> Vec<Value> {
    candidates.sort_by(|a, b| b.1.total_cmp(&a.1));
    candidates.truncate(MAX_DUPLICATE_CANDIDATES);
    candidates
        .into_iter()
        .enumerate()
        .map(|(i, (subscriber, score))| {
            let band = points.iter().rev().find(|p| score >= p.score).map_or("below_named_points", |p| p.name);
            json!({"subscriber_id": subscriber, "rank": i + 1, "score_band": band})
        })
        .collect()
}

/// Records decided before candidates were ranked hold bare subscriber ids.
fn candidates_from_record(stored: Option<&str>) -> Value {
    let list: Vec<Value> = stored.and_then(|d| serde_json::from_str(d).ok()).unwrap_or_default();
    Value::Array(list.into_iter().enumerate().map(|(i, c)| if let Value::String(subscriber) = c { json!({"subscriber_id": subscriber, "rank": i + 1}) } else { c }).collect())
}

async fn decision_record(state: &AppState, id: &str) -> Result<Value, ApiError> {
    let s = state.db.session(id).await?.ok_or_else(|| refuse(StatusCode::NOT_FOUND, "unknown_session", "no such session"))?;
    let duplicates = candidates_from_record(s.duplicates.as_deref());
    Ok(json!({
        "session_id": s.id,
        "order_id": s.order_id,
        "subscriber_id": s.subscriber_id,
        "state": s.state,
        "decision": s.decision,
        "reason": s.reason,
        "possible_duplicates": duplicates,
        "evidence_sealed": state.db.has_evidence(id).await?,
        "created_ms": s.created_ms,
        "expires_ms": s.expires_ms,
        "decided_ms": s.decided_ms,
    }))
}

/// The sealed evidence of a session (carrier back end): the envelope as the
/// device sealed it; only the carrier's offline escrow secret key opens it.
async fn get_evidence(State(state): State<Shared>, headers: HeaderMap, Path(id): Path<String>) -> Result<Response, ApiError> {
    check_api_key(&state, &headers)?;
    let (sealed, created_ms) = state.db.evidence(&id).await?.ok_or_else(|| refuse(StatusCode::NOT_FOUND, "no_evidence", "no sealed evidence for this session"))?;
    let sealed: Value = serde_json::from_str(&sealed).unwrap_or(Value::Null);
    tracing::info!(session = %id, "sealed evidence read");
    Ok(Json(json!({"session_id": id, "sealed": sealed, "stored_ms": created_ms})).into_response())
}

async fn delete_evidence(State(state): State<Shared>, headers: HeaderMap, Path(id): Path<String>) -> Result<Response, ApiError> {
    check_api_key(&state, &headers)?;
    let n = state.db.delete_evidence(&id).await?;
    tracing::info!(session = %id, deleted = n, "sealed evidence deleted");
    Ok(Json(json!({"deleted_evidence": n})).into_response())
}

/// Revocation: delete every protected template of a subscriber.
async fn revoke(State(state): State<Shared>, headers: HeaderMap, Path(subscriber): Path<String>) -> Result<Response, ApiError> {
    check_api_key(&state, &headers)?;
    let n = state.db.delete_templates(&subscriber, now_ms()).await?;
    Ok(Json(json!({"deleted_templates": n})).into_response())
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct DemoOrder {
    plan: String,
}

/// Demo only (`--demo`): plays the carrier's back end for the demo SIM-order
/// page, which must not hold the API key. A real carrier calls
/// `POST /v1/sessions` from its own server instead.
async fn demo_order(State(state): State<Shared>, body: axum::body::Bytes) -> Result<Response, ApiError> {
    let req: DemoOrder = parse(&body)?;
    check_identifier("plan", &req.plan)?;
    let order_id = format!("demo-order-{}", random_hex(8));
    let s = open_session(&state, order_id.clone(), format!("demo-subscriber-{}", random_hex(8))).await?;
    Ok((StatusCode::CREATED, Json(json!({"order_id": order_id, "session_id": s.id, "plan": req.plan}))).into_response())
}

/// Demo only: the order system's view of a session's decision.
async fn demo_order_status(State(state): State<Shared>, Path(id): Path<String>) -> Result<Response, ApiError> {
    let record = decision_record(&state, &id).await?;
    Ok(Json(json!({"decision": record["decision"], "reason": record["reason"], "possible_duplicates": record["possible_duplicates"]})).into_response())
}

/// The API, plus (when configured) the demo back-end routes and the static
/// widget files. `.br` siblings written by the build are served to browsers
/// that accept brotli.
/// The OpenAPI description of every route (checked against the running
/// server by server/tests/api.rs).
pub const OPENAPI_JSON: &str = include_str!("../openapi.json");

async fn openapi() -> Response {
    ([(axum::http::header::CONTENT_TYPE, "application/json")], OPENAPI_JSON).into_response()
}

pub fn router(state: Shared, www: Option<&std::path::Path>, demo: bool, cors_origins: &[String]) -> Router {
    // routes a browser calls without an API key: limited per client address
    let mut browser = Router::new()
        .route("/v1/sessions/{id}/device-key", post(register_key))
        .route("/v1/sessions/{id}/result", post(submit_result));
    if demo {
        browser = browser.route("/demo/orders", post(demo_order)).route("/demo/orders/{id}", get(demo_order_status));
    }
    let browser = browser.route_layer(axum::middleware::from_fn_with_state(state.clone(), crate::limits::per_address));
    let mut app = Router::new()
        .route("/openapi.json", get(openapi))
        .route("/v1/sessions", post(create_session))
        .route("/v1/sessions/{id}", get(get_session))
        .route("/v1/sessions/{id}/evidence", get(get_evidence).delete(delete_evidence))
        .route("/v1/subscribers/{id}/templates", axum::routing::delete(revoke))
        .merge(browser);
    if let Some(dir) = www {
        app = app.fallback_service(tower_http::services::ServeDir::new(dir).precompressed_br());
    }
    if !cors_origins.is_empty() {
        // the widget on a carrier's own site calling this server on another origin
        let origins: Vec<axum::http::HeaderValue> = cors_origins.iter().filter_map(|o| o.parse().ok()).collect();
        app = app.layer(
            tower_http::cors::CorsLayer::new()
                .allow_origin(origins)
                .allow_methods([axum::http::Method::GET, axum::http::Method::POST])
                .allow_headers([axum::http::header::CONTENT_TYPE]),
        );
    }
    app.layer(DefaultBodyLimit::max(MAX_BODY)).with_state(state)
}

#[cfg(test)]
mod tests {
    use super::*;
    use facegate::matching::MOBILEFACENET_DUPLICATE_POINTS as POINTS;

    #[test]
    fn candidates_are_ranked_strongest_first_with_the_strictest_point_they_pass() {
        let ranked = ranked_candidates(vec![("low".into(), 0.98), ("top".into(), 0.9999), ("mid".into(), 0.996), ("custom".into(), 0.2)], POINTS);
        assert_eq!(
            ranked,
            vec![
                json!({"subscriber_id": "top", "rank": 1, "score_band": "far1e-7"}),
                json!({"subscriber_id": "mid", "rank": 2, "score_band": "far1e-5"}),
                json!({"subscriber_id": "low", "rank": 3, "score_band": "far1e-4"}),
                json!({"subscriber_id": "custom", "rank": 4, "score_band": "below_named_points"}),
            ]
        );
        let many: Vec<(String, f32)> = (0..25).map(|i| (format!("s{i}"), 0.99 + i as f32 * 1e-4)).collect();
        let ranked = ranked_candidates(many, POINTS);
        assert_eq!(ranked.len(), MAX_DUPLICATE_CANDIDATES);
        assert_eq!(ranked[0]["subscriber_id"], "s24");
    }

    #[test]
    fn records_from_before_the_ranking_still_read() {
        assert_eq!(candidates_from_record(Some(r#"["alice","bob"]"#)), json!([{"subscriber_id": "alice", "rank": 1}, {"subscriber_id": "bob", "rank": 2}]));
        assert_eq!(candidates_from_record(None), json!([]));
    }
}
