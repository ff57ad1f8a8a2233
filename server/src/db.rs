//! The one data-access module: SQLite (a file path, the default) or
//! PostgreSQL (a `postgres://` URL) through sqlx's Any driver, with the same
//! migrations and queries for both (`$n` placeholders, portable types).

use sqlx::any::{AnyPoolOptions, AnyRow};
use sqlx::{AnyPool, Row};

use facegate::search::{self, Change};

pub struct Db {
    pool: AnyPool,
    postgres: bool,
}

/// The advisory lock (PostgreSQL) that server processes starting on one
/// database take in turn to migrate it: any fixed number.
const MIGRATION_LOCK: i64 = 0x6661_6365_6761_7465; // "facegate"

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
    // sealed template bits as bytes (BITS / 8), with the key ids they were
    // made and sealed under; `seq` orders every change of the store (see
    // `next_template_seq`). A deployment may create this table itself
    // beforehand, e.g. partitioned across database nodes (README).
    "CREATE TABLE IF NOT EXISTS face_templates (
        seq BIGINT NOT NULL PRIMARY KEY,
        session_id TEXT NOT NULL,
        subscriber_id TEXT NOT NULL,
        scheme TEXT NOT NULL,
        transform_key_id TEXT NOT NULL,
        storage_key_id TEXT NOT NULL,
        bits BYTEA NOT NULL,
        created_ms BIGINT NOT NULL
    )",
    "CREATE INDEX IF NOT EXISTS face_templates_subscriber ON face_templates (subscriber_id)",
    "CREATE TABLE IF NOT EXISTS template_revocations (
        seq BIGINT NOT NULL PRIMARY KEY,
        subscriber_id TEXT NOT NULL,
        created_ms BIGINT NOT NULL
    )",
    "CREATE INDEX IF NOT EXISTS template_revocations_created ON template_revocations (created_ms)",
    "CREATE TABLE IF NOT EXISTS template_seq (id INTEGER NOT NULL PRIMARY KEY, last BIGINT NOT NULL)",
    "INSERT INTO template_seq (id, last) SELECT 1, 0 WHERE NOT EXISTS (SELECT 1 FROM template_seq)",
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
    // refused submissions per session, shared by every server process on
    // the database: a forger spreading tries over the replicas behind a
    // load balancer meets the same lock as one talking to a single process
    "CREATE TABLE IF NOT EXISTS submission_refusals (
        session_id TEXT PRIMARY KEY,
        refused BIGINT NOT NULL,
        first_ms BIGINT NOT NULL
    )",
    "CREATE INDEX IF NOT EXISTS submission_refusals_first ON submission_refusals (first_ms)",
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

/// The attempt limits a new session must stay within.
#[derive(Debug, Clone, Copy)]
pub struct SessionLimits {
    pub per_order: i64,
    pub per_subscriber: i64,
    pub subscriber_since_ms: i64,
}

/// What `Db::insert_session_within_limits` did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Opened {
    Created,
    OrderLimitReached,
    SubscriberLimitReached,
}

/// What `Db::decide` did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Decided {
    /// The session was no longer open: nothing was written.
    Replayed,
    /// The decision is recorded, with the sequence number of the template
    /// it stored (a pass).
    Recorded { template_seq: Option<i64> },
}

/// What a decided session writes, all in one transaction.
pub struct Decision<'a> {
    pub session_id: &'a str,
    pub decision: &'a str,
    pub reason: &'a str,
    pub duplicates: &'a str,
    pub decided_ms: i64,
    /// (subscriber, sealed template) stored on a pass.
    pub template: Option<(&'a str, &'a facegate::template::ProtectedTemplate)>,
    /// (recipient key id, sealed evidence JSON) when escrow is on and the
    /// user consented.
    pub evidence: Option<(&'a str, &'a str)>,
}

/// Sequence numbers read per query when loading the whole template store;
/// a catch-up with more changes than this reads the store whole instead
/// (`TemplateSearch::sync`).
pub const LOAD_BATCH: i64 = 20_000;

/// The next number of the template store's change sequence, taken inside
/// the transaction that makes the change. The counter is one row, so the
/// row lock makes concurrent writers wait for each other's commit: numbers
/// commit in order, and a reader that saw `last = L` has every change up to
/// L visible (what lets each server's in-memory search catch up with one
/// small query). Rolled-back transactions give their number back.
async fn next_template_seq(tx: &mut sqlx::Transaction<'_, sqlx::Any>) -> Result<i64, sqlx::Error> {
    sqlx::query("UPDATE template_seq SET last = last + 1 WHERE id = 1 RETURNING last").fetch_one(&mut **tx).await?.try_get("last")
}

/// Store a sealed template under the next sequence number, which it returns.
async fn insert_template(
    tx: &mut sqlx::Transaction<'_, sqlx::Any>,
    session_id: &str,
    subscriber_id: &str,
    template: &facegate::template::ProtectedTemplate,
    created_ms: i64,
) -> Result<i64, sqlx::Error> {
    let bits = template.bit_bytes().map_err(|e| sqlx::Error::Encode(e.to_string().into()))?;
    let seq = next_template_seq(tx).await?;
    sqlx::query(
        "INSERT INTO face_templates (seq, session_id, subscriber_id, scheme, transform_key_id, storage_key_id, bits, created_ms)
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8)",
    )
    .bind(seq)
    .bind(session_id)
    .bind(subscriber_id)
    .bind(&template.scheme)
    .bind(&template.transform_key_id)
    .bind(template.storage_key_id.as_deref().unwrap_or_default())
    .bind(bits)
    .bind(created_ms)
    .execute(&mut **tx)
    .await?;
    Ok(seq)
}

fn stored_change(row: &AnyRow) -> Result<Option<Change>, sqlx::Error> {
    let bits: Vec<u8> = row.try_get("bits")?;
    let Some(bits) = search::pack(&bits) else { return Ok(None) };
    Ok(Some(Change::Stored { seq: row.try_get("seq")?, subscriber_id: row.try_get("subscriber_id")?, bits: Box::new(bits) }))
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
        let db = Db { postgres: !url.starts_with("sqlite:"), pool };
        if db.postgres {
            // one transaction, after every other server process starting
            // on the same database: PostgreSQL's CREATE ... IF NOT EXISTS is
            // not safe against a concurrent one (2 of 3 replicas started at
            // once on a fresh database failed on pg_type's unique index)
            let mut tx = db.begin_migration().await?;
            for m in MIGRATIONS {
                sqlx::query(m).execute(&mut *tx).await?;
            }
            tx.commit().await?;
        } else {
            // one statement at a time: each takes SQLite's write lock on its
            // own, while a transaction that read first and then wrote would
            // be refused (SQLITE_BUSY) beside another process's commit
            for m in MIGRATIONS {
                sqlx::query(m).execute(&db.pool).await?;
            }
        }
        db.migrate_json_templates().await?;
        Ok(db)
    }

    /// A transaction that holds the migration lock on PostgreSQL until it
    /// ends (SQLite's write lock serialises its migrations already).
    async fn begin_migration(&self) -> Result<sqlx::Transaction<'_, sqlx::Any>, sqlx::Error> {
        let mut tx = self.pool.begin().await?;
        if self.postgres {
            sqlx::query("SELECT pg_advisory_xact_lock($1)").bind(MIGRATION_LOCK).execute(&mut *tx).await?;
        }
        Ok(tx)
    }

    /// Databases made before templates were stored as bytes kept them as
    /// JSON text in `templates`: move them into `face_templates`, in one
    /// transaction, and drop the old table. A row that does not parse stops
    /// the migration (and the server) rather than being lost.
    async fn migrate_json_templates(&self) -> Result<(), sqlx::Error> {
        let exists = if self.postgres {
            "SELECT COUNT(*) AS n FROM information_schema.tables WHERE table_name = 'templates' AND table_schema = current_schema()"
        } else {
            "SELECT COUNT(*) AS n FROM sqlite_master WHERE type = 'table' AND name = 'templates'"
        };
        let mut tx = self.begin_migration().await?;
        // (read under the lock: another server may have moved them meanwhile)
        if sqlx::query(exists).fetch_one(&mut *tx).await?.try_get::<i64, _>("n")? == 0 {
            return Ok(());
        }
        let rows = sqlx::query("SELECT session_id, subscriber_id, template, created_ms FROM templates ORDER BY created_ms, session_id").fetch_all(&mut *tx).await?;
        for row in &rows {
            let session_id: String = row.try_get("session_id")?;
            let text: String = row.try_get("template")?;
            let template: facegate::template::ProtectedTemplate =
                serde_json::from_str(&text).map_err(|e| sqlx::Error::Decode(format!("stored template of session {session_id}: {e}").into()))?;
            insert_template(&mut tx, &session_id, &row.try_get::<String, _>("subscriber_id")?, &template, row.try_get("created_ms")?).await?;
        }
        sqlx::query("DROP TABLE templates").execute(&mut *tx).await?;
        tx.commit().await?;
        tracing::info!(templates = rows.len(), "moved stored templates from JSON text to bytes");
        Ok(())
    }

    /// A persistent setting, created with `make` on first use. Servers
    /// starting at once on a new database may each make one: the first
    /// stored wins and every one of them reads that.
    pub async fn setting(&self, name: &str, make: impl FnOnce() -> String) -> Result<String, sqlx::Error> {
        let read = || sqlx::query("SELECT value FROM settings WHERE name = $1").bind(name);
        if let Some(row) = read().fetch_optional(&self.pool).await? {
            return row.try_get("value");
        }
        sqlx::query("INSERT INTO settings (name, value) VALUES ($1, $2) ON CONFLICT (name) DO NOTHING").bind(name).bind(make()).execute(&self.pool).await?;
        read().fetch_one(&self.pool).await?.try_get("value")
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

    /// Insert a new session unless the order already has `limits.per_order`
    /// sessions or the subscriber `limits.per_subscriber` since
    /// `limits.subscriber_since_ms`: the counts and the insert are one step,
    /// so requests at the same moment (through any server process) cannot
    /// each count without the others and all get in. One statement does it
    /// on SQLite (a writing statement holds the database's write lock from
    /// its start); PostgreSQL reads committed rows only, so there the
    /// transaction first takes advisory locks on the order and the
    /// subscriber, which requests for the same order or subscriber wait on.
    pub async fn insert_session_within_limits(&self, s: &SessionRow, limits: SessionLimits) -> Result<Opened, sqlx::Error> {
        let mut tx = self.pool.begin().await?;
        if self.postgres {
            // always the order's lock before the subscriber's: no two
            // requests wait on each other in a circle
            sqlx::query("SELECT pg_advisory_xact_lock(1, hashtext($1))").bind(&s.order_id).execute(&mut *tx).await?;
            sqlx::query("SELECT pg_advisory_xact_lock(2, hashtext($1))").bind(&s.subscriber_id).execute(&mut *tx).await?;
        }
        let inserted = sqlx::query(
            "INSERT INTO sessions (id, order_id, subscriber_id, nonce, challenge_seed, created_ms, expires_ms, state)
             SELECT $1, $2, $3, $4, $5, $6, $7, $8
              WHERE (SELECT COUNT(*) FROM sessions WHERE order_id = $2) < $9
                AND (SELECT COUNT(*) FROM sessions WHERE subscriber_id = $3 AND created_ms >= $10) < $11",
        )
        .bind(&s.id)
        .bind(&s.order_id)
        .bind(&s.subscriber_id)
        .bind(&s.nonce)
        .bind(&s.challenge_seed)
        .bind(s.created_ms)
        .bind(s.expires_ms)
        .bind(&s.state)
        .bind(limits.per_order)
        .bind(limits.subscriber_since_ms)
        .bind(limits.per_subscriber)
        .execute(&mut *tx)
        .await?
        .rows_affected()
            == 1;
        if inserted {
            tx.commit().await?;
            return Ok(Opened::Created);
        }
        let for_order: i64 = sqlx::query("SELECT COUNT(*) AS n FROM sessions WHERE order_id = $1").bind(&s.order_id).fetch_one(&mut *tx).await?.try_get("n")?;
        tx.rollback().await?;
        Ok(if for_order >= limits.per_order { Opened::OrderLimitReached } else { Opened::SubscriberLimitReached })
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

    /// How many submissions for the session were refused so far.
    pub async fn refused_submissions(&self, session_id: &str) -> Result<i64, sqlx::Error> {
        let row = sqlx::query("SELECT refused FROM submission_refusals WHERE session_id = $1").bind(session_id).fetch_optional(&self.pool).await?;
        row.map_or(Ok(0), |r| r.try_get("refused"))
    }

    /// Count one refused submission for the session (one statement, so
    /// refusals at the same moment through different processes all count).
    pub async fn count_refused_submission(&self, session_id: &str, now_ms: i64) -> Result<(), sqlx::Error> {
        sqlx::query(
            "INSERT INTO submission_refusals (session_id, refused, first_ms) VALUES ($1, 1, $2) \
             ON CONFLICT (session_id) DO UPDATE SET refused = submission_refusals.refused + 1",
        )
        .bind(session_id)
        .bind(now_ms)
        .execute(&self.pool)
        .await?;
        Ok(())
    }

    /// Forget the refusals of sessions first refused before `cutoff_ms`
    /// (expired since: their nonces can never be used).
    pub async fn delete_refusals_before(&self, cutoff_ms: i64) -> Result<u64, sqlx::Error> {
        Ok(sqlx::query("DELETE FROM submission_refusals WHERE first_ms < $1").bind(cutoff_ms).execute(&self.pool).await?.rows_affected())
    }

    /// The last committed number of the template store's change sequence.
    pub async fn template_seq(&self) -> Result<i64, sqlx::Error> {
        sqlx::query("SELECT last FROM template_seq WHERE id = 1").fetch_one(&self.pool).await?.try_get("last")
    }

    /// Changes of the template store numbered in (after, upto], templates
    /// only those made and sealed under the given keys (others never
    /// compare), in sequence order: one query for both tables.
    pub async fn template_changes(&self, after: i64, upto: i64, keys: (&str, &str)) -> Result<Vec<Change>, sqlx::Error> {
        let no_bits = if self.postgres { "CAST(NULL AS bytea)" } else { "CAST(NULL AS BLOB)" };
        // no ORDER BY (the caller orders): across shards that would merge
        // the partitions' answers instead of reading them in parallel
        let sql = format!(
            "SELECT 'stored' AS kind, seq, subscriber_id, bits FROM face_templates
              WHERE seq > $1 AND seq <= $2 AND transform_key_id = $3 AND storage_key_id = $4
             UNION ALL
             SELECT 'revoked', seq, subscriber_id, {no_bits} FROM template_revocations WHERE seq > $1 AND seq <= $2"
        );
        let rows = sqlx::query(&sql).bind(after).bind(upto).bind(keys.0).bind(keys.1).fetch_all(&self.pool).await?;
        let mut changes = Vec::new();
        for row in &rows {
            match row.try_get::<String, _>("kind")?.as_str() {
                "stored" => changes.extend(stored_change(row)?),
                _ => changes.push(Change::Revoked { seq: row.try_get("seq")?, subscriber_id: row.try_get("subscriber_id")? }),
            }
        }
        changes.sort_by_key(Change::seq);
        Ok(changes)
    }

    /// Every stored template numbered up to `upto` under the given keys, in
    /// ranges of sequence numbers (a million templates are ~300 MB of rows),
    /// each range's changes (revocations too: they match nothing left)
    /// handed to `take` in order.
    pub async fn load_templates(&self, upto: i64, keys: (&str, &str), mut take: impl FnMut(Vec<Change>)) -> Result<(), sqlx::Error> {
        let mut after = 0;
        while after < upto {
            let until = (after + LOAD_BATCH).min(upto);
            take(self.template_changes(after, until, keys).await?);
            after = until;
        }
        Ok(())
    }

    /// Stored templates made or sealed under other keys than these: they
    /// take no part in the duplicate check (a re-keying left them behind).
    pub async fn templates_under_other_keys(&self, keys: (&str, &str)) -> Result<i64, sqlx::Error> {
        let row = sqlx::query("SELECT COUNT(*) AS n FROM face_templates WHERE transform_key_id <> $1 OR storage_key_id <> $2")
            .bind(keys.0)
            .bind(keys.1)
            .fetch_one(&self.pool)
            .await?;
        row.try_get("n")
    }

    /// Revocations older than `cutoff_ms` are kept no longer: a server whose
    /// index is older than that reloads it whole (`TemplateSearch::sync`).
    pub async fn delete_revocations_before(&self, cutoff_ms: i64) -> Result<u64, sqlx::Error> {
        Ok(sqlx::query("DELETE FROM template_revocations WHERE created_ms < $1").bind(cutoff_ms).execute(&self.pool).await?.rows_affected())
    }

    /// Use the nonce and record the decision atomically: `Replayed` when the
    /// session was no longer open (a replay or a concurrent submission).
    pub async fn decide(&self, d: &Decision<'_>) -> Result<Decided, sqlx::Error> {
        if self.postgres && d.evidence.is_none() {
            return self.decide_in_one_statement(d).await;
        }
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
            return Ok(Decided::Replayed);
        }
        let mut template_seq = None;
        if let Some((subscriber, template)) = d.template {
            template_seq = Some(insert_template(&mut tx, d.session_id, subscriber, template, d.decided_ms).await?);
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
        Ok(Decided::Recorded { template_seq })
    }

    /// `decide` on PostgreSQL as one statement (data-modifying CTEs, one
    /// implicit transaction): one round trip instead of five, and the
    /// sequence counter's row lock is held for the statement and its commit
    /// only, not across three more round trips, which bounded how many
    /// passing verifications could commit per second. The session update,
    /// the number and the template row commit together or not at all, as in
    /// the transaction (a pass that stored no template fails as a whole).
    async fn decide_in_one_statement(&self, d: &Decision<'_>) -> Result<Decided, sqlx::Error> {
        let base = sqlx::query(
            "WITH decided AS (
                UPDATE sessions SET state = 'decided', decision = $1, reason = $2, duplicates = $3, decided_ms = $4
                 WHERE id = $5 AND state = 'open' RETURNING id
             ), numbered AS (
                UPDATE template_seq SET last = last + 1
                 WHERE id = 1 AND $6 AND EXISTS (SELECT 1 FROM decided) RETURNING last
             ), stored AS (
                INSERT INTO face_templates (seq, session_id, subscriber_id, scheme, transform_key_id, storage_key_id, bits, created_ms)
                SELECT last, $5, $7, $8, $9, $10, $11, $4 FROM numbered RETURNING seq
             )
             SELECT (SELECT COUNT(*) FROM decided) AS decided, (SELECT seq FROM stored) AS template_seq,
                    -- a pass whose template was not stored (no counter row)
                    -- divides by zero: the error rolls the whole statement back
                    1 / ((SELECT COUNT(*) FROM stored) + CASE WHEN $6 AND EXISTS (SELECT 1 FROM decided) THEN 0 ELSE 1 END) AS stored_as_asked",
        )
        .bind(d.decision)
        .bind(d.reason)
        .bind(d.duplicates)
        .bind(d.decided_ms)
        .bind(d.session_id);
        let row = match d.template {
            Some((subscriber, template)) => {
                let bits = template.bit_bytes().map_err(|e| sqlx::Error::Encode(e.to_string().into()))?;
                base.bind(true)
                    .bind(subscriber)
                    .bind(&template.scheme)
                    .bind(&template.transform_key_id)
                    .bind(template.storage_key_id.as_deref().unwrap_or_default())
                    .bind(bits)
                    .fetch_one(&self.pool)
                    .await?
            }
            None => base.bind(false).bind("").bind("").bind("").bind("").bind(Vec::<u8>::new()).fetch_one(&self.pool).await?,
        };
        Ok(match row.try_get::<i64, _>("decided")? {
            1 => Decided::Recorded { template_seq: row.try_get("template_seq")? },
            _ => Decided::Replayed,
        })
    }

    /// The duplicate candidates of a decided session, replaced: the check
    /// after storing found more (`api::decide_result`).
    pub async fn set_duplicates(&self, session_id: &str, duplicates: &str) -> Result<(), sqlx::Error> {
        sqlx::query("UPDATE sessions SET duplicates = $1 WHERE id = $2 AND state = 'decided'").bind(duplicates).bind(session_id).execute(&self.pool).await?;
        Ok(())
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

    /// Revocation: delete every template of a subscriber, logged as one
    /// change so that every server drops them from its search too. The
    /// sequence number is taken first: a template of the same subscriber
    /// committing meanwhile is either deleted here or numbered after.
    pub async fn delete_templates(&self, subscriber_id: &str, now_ms: i64) -> Result<u64, sqlx::Error> {
        let mut tx = self.pool.begin().await?;
        let seq = next_template_seq(&mut tx).await?;
        let n = sqlx::query("DELETE FROM face_templates WHERE subscriber_id = $1").bind(subscriber_id).execute(&mut *tx).await?.rows_affected();
        if n == 0 {
            tx.rollback().await?;
            return Ok(0);
        }
        sqlx::query("INSERT INTO template_revocations (seq, subscriber_id, created_ms) VALUES ($1, $2, $3)")
            .bind(seq)
            .bind(subscriber_id)
            .bind(now_ms)
            .execute(&mut *tx)
            .await?;
        tx.commit().await?;
        Ok(n)
    }
}
