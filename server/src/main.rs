//! `facegate-server`: the reference carrier service. Issues sessions with a
//! single-use nonce and challenge seed, verifies signed results from the
//! widget, stores decisions and protected templates (SQLite by default,
//! PostgreSQL when given a `postgres://` URL).

mod api;
mod db;

use clap::Parser;
use std::sync::Arc;

#[derive(Parser)]
#[command(name = "facegate-server", version, about)]
struct Args {
    /// Bind address.
    #[arg(long, env = "FACEGATE_ADDR", default_value = "127.0.0.1:8080")]
    addr: String,
    /// SQLite file path or postgres:// URL.
    #[arg(long, env = "DATABASE_URL", default_value = "facegate.db")]
    db: String,
    /// Minimum calibrated match score for a pass.
    #[arg(long, env = "FACEGATE_MATCH_THRESHOLD", default_value_t = facegate::matching::DEFAULT_CALIBRATION.threshold)]
    match_threshold: f32,
    /// Minimum passive-liveness score for a pass.
    #[arg(long, env = "FACEGATE_LIVENESS_THRESHOLD", default_value_t = facegate::liveness::DEFAULT_LIVENESS_THRESHOLD)]
    liveness_threshold: f32,
    /// Session lifetime in seconds.
    #[arg(long, env = "FACEGATE_SESSION_TTL", default_value_t = 600)]
    session_ttl: i64,
    /// Directory of the built widget and demo page to serve at `/`
    /// (`cargo xtask demo` builds it into target/www).
    #[arg(long, env = "FACEGATE_WWW")]
    www: Option<std::path::PathBuf>,
    /// Also serve the demo SIM-order back end (`/demo/orders`): never in production.
    #[arg(long, env = "FACEGATE_DEMO")]
    demo: bool,
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
    let api_key = std::env::var("FACEGATE_API_KEY").map_err(|_| "FACEGATE_API_KEY must be set (the carrier back end's API key)".to_string())?;
    if api_key.len() < 16 {
        return Err("FACEGATE_API_KEY must be at least 16 characters".into());
    }
    let db = db::Db::open(&args.db).await.map_err(|e| format!("database {}: {e}", args.db))?;
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
    let accepted_models = facegate::manifest::manifest().models.into_iter().map(|m| (m.name, m.sha256)).collect();
    let config = api::Config {
        api_key,
        transform_key,
        transform_key_id,
        storage_key,
        match_threshold: args.match_threshold,
        liveness_threshold: args.liveness_threshold,
        session_ttl_ms: args.session_ttl * 1000,
        max_sessions_per_order: 5,
        accepted_models,
        escrow_public_key: std::env::var("FACEGATE_ESCROW_PUBLIC_KEY").ok(),
    };
    let state = Arc::new(api::AppState { db, config });
    let listener = tokio::net::TcpListener::bind(&args.addr).await.map_err(|e| format!("bind {}: {e}", args.addr))?;
    tracing::info!(addr = %args.addr, "listening");
    axum::serve(listener, api::router(state, args.www.as_deref(), args.demo)).await.map_err(|e| e.to_string())
}
