//! The one data-access module: SQLite (a file path, the default) or
//! PostgreSQL (a `postgres://` URL) through sqlx's Any driver, with the same
//! migrations and queries for both (`$n` placeholders, portable types).

use sqlx::any::{AnyPoolOptions, AnyRow};
use sqlx::{AnyPool, Row};

pub struct Db {
    pool: AnyPool,
}

const MIGRATIONS: &[&str] = &[
    "CREATE TABLE IF NOT EXISTS settings (name TEXT PRIMARY KEY, value TEXT NOT NULL)",
    "CREATE TABLE IF NOT EXISTS sessions (
        id TEXT PRIMARY KEY,
        order_id TEXT NOT NULL,
        subscriber_id TEXT NOT NULL,
        nonce TEXT NOT NULL,
        challenge_seed TEXT NOT NULL,
        device_key TEXT,
        created_ms BIGINT NOT NULL,
        expires_ms BIGINT NOT NULL,
        state TEXT NOT NULL,
        decision TEXT,
        reason TEXT,
        duplicates TEXT,
        decided_ms BIGINT
    )",
    "CREATE INDEX IF NOT EXISTS sessions_order ON sessions (order_id)",
    "CREATE TABLE IF NOT EXISTS templates (
        session_id TEXT PRIMARY KEY,
        subscriber_id TEXT NOT NULL,
        template TEXT NOT NULL,
        created_ms BIGINT NOT NULL
    )",
    "CREATE INDEX IF NOT EXISTS templates_subscriber ON templates (subscriber_id)",
    // opt-in evidence escrow: the sealed envelope as the device made it (the
    // server cannot open it; the carrier's escrow secret key stays offline)
    "CREATE TABLE IF NOT EXISTS evidence (
        session_id TEXT PRIMARY KEY,
        recipient_key_id TEXT NOT NULL,
        sealed TEXT NOT NULL,
        created_ms BIGINT NOT NULL
    )",
    "CREATE INDEX IF NOT EXISTS evidence_created ON evidence (created_ms)",
    "CREATE INDEX IF NOT EXISTS sessions_subscriber ON sessions (subscriber_id, created_ms)",
    "CREATE INDEX IF NOT EXISTS sessions_open_expiry ON sessions (state, expires_ms)",
];

#[derive(Debug, Clone)]
pub struct SessionRow {
    pub id: String,
    pub order_id: String,
    pub subscriber_id: String,
    pub nonce: String,
    pub challenge_seed: String,
    pub device_key: Option<String>,
    pub created_ms: i64,
    pub expires_ms: i64,
    pub state: String,
    pub decision: Option<String>,
    pub reason: Option<String>,
    pub duplicates: Option<String>,
    pub decided_ms: Option<i64>,
}

fn session_from(row: &AnyRow) -> Result<SessionRow, sqlx::Error> {
    Ok(SessionRow {
        id: row.try_get("id")?,
        order_id: row.try_get("order_id")?,
        subscriber_id: row.try_get("subscriber_id")?,
        nonce: row.try_get("nonce")?,
        challenge_seed: row.try_get("challenge_seed")?,
        device_key: row.try_get("device_key")?,
        created_ms: row.try_get("created_ms")?,
        expires_ms: row.try_get("expires_ms")?,
        state: row.try_get("state")?,
        decision: row.try_get("decision")?,
        reason: row.try_get("reason")?,
        duplicates: row.try_get("duplicates")?,
        decided_ms: row.try_get("decided_ms")?,
    })
}

/// What a decided session writes, all in one transaction.
pub struct Decision<'a> {
    pub session_id: &'a str,
    pub decision: &'a str,
    pub reason: &'a str,
    pub duplicates: &'a str,
    pub decided_ms: i64,
    /// (subscriber, sealed template JSON) stored on a pass.
    pub template: Option<(&'a str, &'a str)>,
    /// (recipient key id, sealed evidence JSON) when escrow is on and the
    /// user consented.
    pub evidence: Option<(&'a str, &'a str)>,
}

impl Db {
    /// `target`: a `postgres://` URL, a `sqlite:` URL, or a file path (SQLite,
    /// created if missing). Runs the migrations.
    pub async fn open(target: &str) -> Result<Db, sqlx::Error> {
        sqlx::any::install_default_drivers();
        let url = if target.starts_with("postgres://") || target.starts_with("postgresql://") || target.starts_with("sqlite:") {
            target.to_string()
        } else {
            format!("sqlite://{target}?mode=rwc")
        };
        let pool = AnyPoolOptions::new().max_connections(if url.starts_with("sqlite:") { 1 } else { 8 }).connect(&url).await?;
        for m in MIGRATIONS {
            sqlx::query(m).execute(&pool).await?;
        }
        Ok(Db { pool })
    }

    /// A persistent setting, created with `make` on first use.
    pub async fn setting(&self, name: &str, make: impl FnOnce() -> String) -> Result<String, sqlx::Error> {
        if let Some(row) = sqlx::query("SELECT value FROM settings WHERE name = $1").bind(name).fetch_optional(&self.pool).await? {
            return row.try_get("value");
        }
        let value = make();
        sqlx::query("INSERT INTO settings (name, value) VALUES ($1, $2)").bind(name).bind(&value).execute(&self.pool).await?;
        Ok(value)
    }

    pub async fn sessions_for_order(&self, order_id: &str) -> Result<i64, sqlx::Error> {
        let row = sqlx::query("SELECT COUNT(*) AS n FROM sessions WHERE order_id = $1").bind(order_id).fetch_one(&self.pool).await?;
        row.try_get("n")
    }

    /// Sessions opened for a subscriber since `since_ms` (attempt limit).
    pub async fn sessions_for_subscriber_since(&self, subscriber_id: &str, since_ms: i64) -> Result<i64, sqlx::Error> {
        let row = sqlx::query("SELECT COUNT(*) AS n FROM sessions WHERE subscriber_id = $1 AND created_ms >= $2")
            .bind(subscriber_id)
            .bind(since_ms)
            .fetch_one(&self.pool)
            .await?;
        row.try_get("n")
    }

    /// Nonce-expiry sweep: open sessions past their expiry can never be
    /// used; mark them so and forget their device key.
    pub async fn expire_sessions(&self, now_ms: i64) -> Result<u64, sqlx::Error> {
        let r = sqlx::query("UPDATE sessions SET state = 'expired', device_key = NULL WHERE state = 'open' AND expires_ms < $1")
            .bind(now_ms)
            .execute(&self.pool)
            .await?;
        Ok(r.rows_affected())
    }

    pub async fn insert_session(&self, s: &SessionRow) -> Result<(), sqlx::Error> {
        sqlx::query(
            "INSERT INTO sessions (id, order_id, subscriber_id, nonce, challenge_seed, created_ms, expires_ms, state)
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8)",
        )
        .bind(&s.id)
        .bind(&s.order_id)
        .bind(&s.subscriber_id)
        .bind(&s.nonce)
        .bind(&s.challenge_seed)
        .bind(s.created_ms)
        .bind(s.expires_ms)
        .bind(&s.state)
        .execute(&self.pool)
        .await?;
        Ok(())
    }

    pub async fn session(&self, id: &str) -> Result<Option<SessionRow>, sqlx::Error> {
        let row = sqlx::query("SELECT * FROM sessions WHERE id = $1").bind(id).fetch_optional(&self.pool).await?;
        row.as_ref().map(session_from).transpose()
    }

    /// Register the device key once; false if one was already registered.
    pub async fn register_device_key(&self, id: &str, key: &str) -> Result<bool, sqlx::Error> {
        let r = sqlx::query("UPDATE sessions SET device_key = $1 WHERE id = $2 AND device_key IS NULL AND state = 'open'")
            .bind(key)
            .bind(id)
            .execute(&self.pool)
            .await?;
        Ok(r.rows_affected() == 1)
    }

    /// Stored templates of this carrier, except one subscriber's own.
    pub async fn templates_except(&self, subscriber_id: &str) -> Result<Vec<(String, String)>, sqlx::Error> {
        let rows = sqlx::query("SELECT subscriber_id, template FROM templates WHERE subscriber_id <> $1")
            .bind(subscriber_id)
            .fetch_all(&self.pool)
            .await?;
        rows.iter().map(|r| Ok((r.try_get("subscriber_id")?, r.try_get("template")?))).collect()
    }

    /// Use the nonce and record the decision atomically; false when the
    /// session was no longer open (a replay or a concurrent submission).
    pub async fn decide(&self, d: &Decision<'_>) -> Result<bool, sqlx::Error> {
        let mut tx = self.pool.begin().await?;
        let r = sqlx::query(
            "UPDATE sessions SET state = 'decided', decision = $1, reason = $2, duplicates = $3, decided_ms = $4
             WHERE id = $5 AND state = 'open'",
        )
        .bind(d.decision)
        .bind(d.reason)
        .bind(d.duplicates)
        .bind(d.decided_ms)
        .bind(d.session_id)
        .execute(&mut *tx)
        .await?;
        if r.rows_affected() != 1 {
            tx.rollback().await?;
            return Ok(false);
        }
        if let Some((subscriber, template)) = d.template {
            sqlx::query("INSERT INTO templates (session_id, subscriber_id, template, created_ms) VALUES ($1, $2, $3, $4)")
                .bind(d.session_id)
                .bind(subscriber)
                .bind(template)
                .bind(d.decided_ms)
                .execute(&mut *tx)
                .await?;
        }
        if let Some((recipient, sealed)) = d.evidence {
            sqlx::query("INSERT INTO evidence (session_id, recipient_key_id, sealed, created_ms) VALUES ($1, $2, $3, $4)")
                .bind(d.session_id)
                .bind(recipient)
                .bind(sealed)
                .bind(d.decided_ms)
                .execute(&mut *tx)
                .await?;
        }
        tx.commit().await?;
        Ok(true)
    }

    /// The sealed evidence of a session and when it was stored.
    pub async fn evidence(&self, session_id: &str) -> Result<Option<(String, i64)>, sqlx::Error> {
        let row = sqlx::query("SELECT sealed, created_ms FROM evidence WHERE session_id = $1").bind(session_id).fetch_optional(&self.pool).await?;
        Ok(row.map(|r| (r.get::<String, _>(0), r.get::<i64, _>(1))))
    }

    /// Whether sealed evidence is stored for a session (without reading it).
    pub async fn has_evidence(&self, session_id: &str) -> Result<bool, sqlx::Error> {
        Ok(sqlx::query("SELECT 1 FROM evidence WHERE session_id = $1").bind(session_id).fetch_optional(&self.pool).await?.is_some())
    }

    pub async fn delete_evidence(&self, session_id: &str) -> Result<u64, sqlx::Error> {
        Ok(sqlx::query("DELETE FROM evidence WHERE session_id = $1").bind(session_id).execute(&self.pool).await?.rows_affected())
    }

    /// Retention: delete evidence stored before `cutoff_ms`.
    pub async fn delete_evidence_before(&self, cutoff_ms: i64) -> Result<u64, sqlx::Error> {
        Ok(sqlx::query("DELETE FROM evidence WHERE created_ms < $1").bind(cutoff_ms).execute(&self.pool).await?.rows_affected())
    }

    /// Revocation: delete every template of a subscriber.
    pub async fn delete_templates(&self, subscriber_id: &str) -> Result<u64, sqlx::Error> {
        Ok(sqlx::query("DELETE FROM templates WHERE subscriber_id = $1").bind(subscriber_id).execute(&self.pool).await?.rows_affected())
    }
}
