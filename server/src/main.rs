//! `facegate-server`: the reference carrier service. Issues sessions with a
//! single-use nonce and challenge seed, verifies signed results from the
//! widget, stores decisions and protected templates (SQLite by default,
//! PostgreSQL when given a `postgres://` URL).

mod api;
mod db;
mod limits;
mod template_search;

use clap::Parser;
use serde::Deserialize;
use std::path::PathBuf;
use std::sync::Arc;

/// Settings come from flags or environment variables first, then from the
/// TOML file named by `--config` (same names, snake_case), then defaults.
#[derive(Parser)]
#[command(name = "facegate-server", version, about)]
struct Args {
    /// TOML configuration file.
    #[arg(long, env = "FACEGATE_CONFIG")]
    config: Option<PathBuf>,
    /// Bind address [default: 127.0.0.1:8080].
    #[arg(long, env = "FACEGATE_ADDR")]
    addr: Option<String>,
    /// SQLite file path or postgres:// URL [default: facegate.db].
    #[arg(long, env = "DATABASE_URL")]
    db: Option<String>,
    /// 1:1 match threshold: an operating point of the embedder (far1e-2,
    /// far1e-3, far1e-4) or a calibrated score in (0,1) [default: far1e-3].
    #[arg(long, env = "FACEGATE_MATCH_THRESHOLD")]
    match_threshold: Option<String>,
    /// Threshold of the 1:N duplicate check in the protected domain: an
    /// operating point (far1e-4, far1e-5) or a calibrated score; stricter
    /// than the 1:1 one because it runs against every stored template
    /// [default: far1e-5].
    #[arg(long, env = "FACEGATE_DUPLICATE_THRESHOLD")]
    duplicate_threshold: Option<String>,
    /// How many templates the store will hold: without a duplicate_threshold,
    /// the 1:N point is the loosest whose FAR per comparison times this
    /// stays at or below 0.1 expected false duplicates per verification
    /// (10,000 → far1e-5, 1,000,000 → far1e-7) [default: far1e-5's 10,000].
    #[arg(long, env = "FACEGATE_DUPLICATE_POPULATION")]
    duplicate_population: Option<u64>,
    /// Minimum passive-liveness score for a pass [default: the model's threshold].
    #[arg(long, env = "FACEGATE_LIVENESS_THRESHOLD")]
    liveness_threshold: Option<f32>,
    /// Median screen-grid cue (the screen-replay signal) at or above which a
    /// session fails as a suspected screen replay [default: 2.2]; a large
    /// value turns the check off.
    #[arg(long, env = "FACEGATE_SCREEN_GRID_THRESHOLD")]
    screen_grid_threshold: Option<f32>,
    /// Session lifetime in seconds [default: 600].
    #[arg(long, env = "FACEGATE_SESSION_TTL")]
    session_ttl: Option<i64>,
    /// Directory of the built widget and demo page to serve at `/`
    /// (`cargo xtask demo` builds it into target/www).
    #[arg(long, env = "FACEGATE_WWW")]
    www: Option<PathBuf>,
    /// Also serve the demo SIM-order back end (`/demo/orders`): never in production.
    #[arg(long, env = "FACEGATE_DEMO")]
    demo: bool,
    /// Origins allowed to call the browser-facing routes from another site
    /// (comma-separated) [default: none, same origin only].
    #[arg(long, env = "FACEGATE_CORS_ORIGINS", value_delimiter = ',')]
    cors_origins: Option<Vec<String>>,
    /// Requests per client address per minute on browser-facing routes, 0
    /// for no limit [default: 120].
    #[arg(long, env = "FACEGATE_RATE_LIMIT")]
    rate_limit_per_minute: Option<u32>,
    /// Reverse proxies / load balancers in front of the server (addresses or
    /// CIDR networks, comma-separated): requests from them are counted
    /// under the client address their X-Forwarded-For names [default: none].
    #[arg(long, env = "FACEGATE_TRUSTED_PROXIES", value_delimiter = ',')]
    trusted_proxies: Option<Vec<String>>,
    /// Sessions per order [default: 5].
    #[arg(long, env = "FACEGATE_MAX_SESSIONS_PER_ORDER")]
    max_sessions_per_order: Option<i64>,
    /// Sessions per subscriber per 24 hours [default: 20].
    #[arg(long, env = "FACEGATE_MAX_SESSIONS_PER_SUBSCRIBER")]
    max_sessions_per_subscriber_per_day: Option<i64>,
    /// Refused result submissions before a session locks [default: 5].
    #[arg(long, env = "FACEGATE_MAX_FAILED_SUBMISSIONS")]
    max_failed_submissions: Option<u32>,
    /// Carrier's X25519 public key (hex) for opt-in evidence escrow; unset:
    /// escrow is off and any result carrying evidence is refused.
    #[arg(long, env = "FACEGATE_ESCROW_PUBLIC_KEY")]
    escrow_public_key: Option<String>,
    /// Seconds sealed evidence is kept before it is deleted [default: 2592000, 30 days].
    #[arg(long, env = "FACEGATE_ESCROW_RETENTION")]
    escrow_retention: Option<i64>,
    /// Seconds between sweeps of expired sessions [default: 30].
    #[arg(long, env = "FACEGATE_SWEEP_INTERVAL")]
    sweep_interval: Option<u64>,
}

/// The configuration file: every setting except secrets, which belong in
/// the environment (or a secret store that sets it).
#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct FileConfig {
    addr: Option<String>,
    db: Option<String>,
    /// a name (`"far1e-3"`) or a number
    match_threshold: Option<toml::Value>,
    duplicate_threshold: Option<toml::Value>,
    duplicate_population: Option<u64>,
    liveness_threshold: Option<f32>,
    screen_grid_threshold: Option<f32>,
    session_ttl: Option<i64>,
    www: Option<PathBuf>,
    demo: Option<bool>,
    cors_origins: Option<Vec<String>>,
    rate_limit_per_minute: Option<u32>,
    trusted_proxies: Option<Vec<String>>,
    max_sessions_per_order: Option<i64>,
    max_sessions_per_subscriber_per_day: Option<i64>,
    max_failed_submissions: Option<u32>,
    sweep_interval: Option<u64>,
    escrow_public_key: Option<String>,
    escrow_retention: Option<i64>,
}

#[tokio::main]
async fn main() {
    tracing_subscriber::fmt().json().with_env_filter(tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "info".into())).init();
    if let Err(e) = run(Args::parse()).await {
        eprintln!("facegate-server: error: {e}");
        std::process::exit(2);
    }
}

async fn run(args: Args) -> Result<(), String> {
    let file: FileConfig = match &args.config {
        Some(path) => {
            let text = std::fs::read_to_string(path).map_err(|e| format!("config {}: {e}", path.display()))?;
            toml::from_str(&text).map_err(|e| format!("config {}: {e}", path.display()))?
        }
        None => FileConfig::default(),
    };
    let addr = args.addr.or(file.addr).unwrap_or_else(|| "127.0.0.1:8080".into());
    let db_target = args.db.or(file.db).unwrap_or_else(|| "facegate.db".into());
    let www = args.www.or(file.www);
    let demo = args.demo || file.demo.unwrap_or(false);
    let cors_origins = args.cors_origins.or(file.cors_origins).unwrap_or_default();
    let embedder = facegate::embed::config(facegate::embed::DEFAULT_EMBEDDER).map_err(|e| e.to_string())?;
    let threshold = |what: &str, arg: Option<String>, file: Option<toml::Value>, points: &[facegate::matching::OperatingPoint], default: &str| -> Result<f32, String> {
        let setting = arg.or(file.map(|v| match v {
            toml::Value::String(s) => s,
            other => other.to_string(),
        }));
        let setting = setting.unwrap_or_else(|| default.to_string());
        facegate::matching::resolve_threshold(&setting, points).ok_or_else(|| {
            let names: Vec<&str> = points.iter().map(|p| p.name).collect();
            format!("{what} must be one of {} or a score in (0,1), not {setting}", names.join(", "))
        })
    };
    let match_threshold = threshold("match_threshold", args.match_threshold, file.match_threshold, embedder.operating_points, facegate::matching::DEFAULT_OPERATING_POINT)?;
    let duplicate_population = args.duplicate_population.or(file.duplicate_population);
    let duplicate_default = match duplicate_population {
        None => facegate::matching::DEFAULT_DUPLICATE_POINT,
        Some(n) => facegate::matching::duplicate_point_for(n, facegate::matching::MAX_FALSE_DUPLICATES, embedder.duplicate_points)
            .ok_or_else(|| {
                format!(
                    "duplicate_population {n}: no measured operating point keeps FAR x {n} at or below {} false duplicates per verification (the strictest is {}); set duplicate_threshold yourself",
                    facegate::matching::MAX_FALSE_DUPLICATES,
                    embedder.duplicate_points.last().map(|p| p.name).unwrap_or("none")
                )
            })?
            .name,
    };
    let duplicate_threshold = threshold("duplicate_threshold", args.duplicate_threshold, file.duplicate_threshold, embedder.duplicate_points, duplicate_default)?;
    let liveness_threshold = args.liveness_threshold.or(file.liveness_threshold).unwrap_or(facegate::liveness::DEFAULT_LIVENESS_THRESHOLD);
    for (what, v) in [("liveness_threshold", liveness_threshold)] {
        if !(0.0..=1.0).contains(&v) {
            return Err(format!("{what} must be in [0,1], not {v}"));
        }
    }
    let screen_grid_threshold = args.screen_grid_threshold.or(file.screen_grid_threshold).unwrap_or(facegate::replay::DEFAULT_SCREEN_GRID_THRESHOLD);
    if !(screen_grid_threshold.is_finite() && screen_grid_threshold > 0.0) {
        return Err(format!("screen_grid_threshold must be a positive number, not {screen_grid_threshold}"));
    }
    let session_ttl = args.session_ttl.or(file.session_ttl).unwrap_or(600);
    let rate_limit = args.rate_limit_per_minute.or(file.rate_limit_per_minute).unwrap_or(120);
    let trusted_proxies = limits::parse_trusted_proxies(&args.trusted_proxies.or(file.trusted_proxies).unwrap_or_default())?;

    let api_key = std::env::var("FACEGATE_API_KEY").map_err(|_| "FACEGATE_API_KEY must be set (the carrier back end's API key)".to_string())?;
    if api_key.len() < 16 {
        return Err("FACEGATE_API_KEY must be at least 16 characters".into());
    }
    let db = db::Db::open(&db_target).await.map_err(|e| format!("database {db_target}: {e}"))?;
    // Keys: from the environment (production: a secret store), otherwise
    // made once and kept in the database so restarts keep matching.
    let transform_key = match std::env::var("FACEGATE_TRANSFORM_KEY") {
        Ok(k) => k,
        Err(_) => db.setting("transform_key", || api::random_hex(32)).await.map_err(|e| e.to_string())?,
    };
    let storage_hex = match std::env::var("FACEGATE_STORAGE_KEY") {
        Ok(k) => k,
        Err(_) => db.setting("storage_key", || api::random_hex(32)).await.map_err(|e| e.to_string())?,
    };
    let storage_key = facegate::template::StorageKey::from_hex(&storage_hex).map_err(|e| e.to_string())?;
    // the id only depends on the key, not on the projection's dimension
    let transform_key_id = facegate::template::TransformKey::from_hex(&transform_key, 1).map_err(|e| e.to_string())?.id().to_string();
    let escrow_public_key = args.escrow_public_key.or(file.escrow_public_key);
    let escrow_key_id = match &escrow_public_key {
        Some(k) => Some(facegate::escrow::key_id(k).map_err(|e| format!("escrow public key: {e}"))?),
        None => None,
    };
    let accepted_models = facegate::manifest::manifest().models.into_iter().map(|m| (m.name, m.sha256)).collect();
    let config = api::Config {
        api_key,
        transform_key,
        transform_key_id,
        storage_key,
        match_threshold,
        duplicate_threshold,
        duplicate_points: embedder.duplicate_points,
        liveness_threshold,
        screen_grid_threshold,
        session_ttl_ms: session_ttl * 1000,
        max_sessions_per_order: args.max_sessions_per_order.or(file.max_sessions_per_order).unwrap_or(5),
        max_sessions_per_subscriber_per_day: args.max_sessions_per_subscriber_per_day.or(file.max_sessions_per_subscriber_per_day).unwrap_or(20),
        max_failed_submissions: args.max_failed_submissions.or(file.max_failed_submissions).unwrap_or(5),
        accepted_models,
        escrow_key_id,
        escrow_public_key,
        escrow_retention_ms: args.escrow_retention.or(file.escrow_retention).unwrap_or(30 * 24 * 3600).max(1) * 1000,
    };
    let thresholds = facegate::search::Thresholds::for_calibration(&config.duplicate_calibration());
    let templates = template_search::TemplateSearch::load(&db, (config.transform_key_id.clone(), config.storage_key.id().to_string()), thresholds)
        .await
        .map_err(|e| format!("loading the stored templates from {db_target}: {e}"))?;
    let state = Arc::new(api::AppState { db, templates, config, per_address: limits::RateLimiter::new(rate_limit, trusted_proxies) });
    let sweep = args.sweep_interval.or(file.sweep_interval).unwrap_or(30).max(1);
    limits::spawn_sweeper(state.clone(), std::time::Duration::from_secs(sweep));
    let listener = tokio::net::TcpListener::bind(&addr).await.map_err(|e| format!("bind {addr}: {e}"))?;
    tracing::info!(addr = %addr, demo, "listening");
    let app = api::router(state, www.as_deref(), demo, &cors_origins);
    axum::serve(listener, app.into_make_service_with_connect_info::<std::net::SocketAddr>()).await.map_err(|e| e.to_string())
}

#[cfg(test)]
mod tests {
    /// The documented example is a valid configuration file.
    #[test]
    fn example_config_parses() {
        let c: super::FileConfig = toml::from_str(include_str!("../facegate.example.toml")).expect("example config parses");
        assert_eq!(c.addr.as_deref(), Some("127.0.0.1:8080"));
        assert_eq!(c.max_sessions_per_order, Some(5));
        assert_eq!(c.trusted_proxies, Some(vec![]));
        assert!(toml::from_str::<super::FileConfig>("no_such_key = 1").is_err(), "unknown keys are refused");
    }
}
