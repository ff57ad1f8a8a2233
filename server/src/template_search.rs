//! Each server process's duplicate search (`facegate::search`) and how it
//! keeps up with the database, which stays the record: the index is filled
//! from it at start and brought up to date before every search from the
//! change log, ordered by a sequence number that commits in order
//! (`db::next_template_seq`). So several server processes on one database
//! all see every template, and a template store that cannot answer makes
//! the verification fail with `template_store_unavailable` instead of
//! answering "no duplicate" from stale memory.

use crate::db::Db;
use facegate::search::{pack, Bits, Hit, Probe, TemplateIndex, Thresholds};
use std::sync::atomic::{AtomicI64, Ordering};
use std::sync::{Arc, RwLock};

/// A server whose index was last brought up to date longer ago than this
/// reloads it whole: revocations are kept in the log for twice as long.
const RELOAD_AFTER_MS: i64 = 12 * 3600 * 1000;
/// How long a revocation stays in the change log.
pub const REVOCATION_LOG_MS: i64 = 2 * RELOAD_AFTER_MS;

/// At most this many concurrent searches share one pass over the store.
const MAX_BATCH: usize = 16;

/// A search waiting for the search thread.
struct Request {
    probe: Box<Bits>,
    thresholds: Thresholds,
    except_subscriber: String,
    answer: tokio::sync::oneshot::Sender<Vec<Hit>>,
}

/// The thread that runs every search of this process. A scan of a large
/// store takes milliseconds, mostly streaming the templates' first bits
/// from memory, so it stays off the async workers, and the searches that
/// arrive while one runs go together in the next pass
/// (`TemplateIndex::search_batch`: measured 2.6 → 1.9 ms per search over
/// a million templates in batches of 8, `cargo xtask bench-search`).
fn spawn_search_thread(index: Arc<RwLock<TemplateIndex>>) -> std::sync::mpsc::Sender<Request> {
    let (requests, incoming) = std::sync::mpsc::channel::<Request>();
    std::thread::Builder::new()
        .name("duplicate-search".into())
        .spawn(move || {
            while let Ok(first) = incoming.recv() {
                let mut batch = vec![first];
                while batch.len() < MAX_BATCH {
                    match incoming.try_recv() {
                        Ok(r) => batch.push(r),
                        Err(_) => break,
                    }
                }
                let probes: Vec<Probe> = batch.iter().map(|r| Probe { bits: &r.probe, thresholds: r.thresholds, except_subscriber: &r.except_subscriber }).collect();
                let answers = index.read().expect("index lock").search_batch(&probes);
                drop(probes);
                for (request, (hits, _)) in batch.into_iter().zip(answers) {
                    // a request whose client went away has nobody to answer
                    let _ = request.answer.send(hits);
                }
            }
        })
        .expect("a thread for the duplicate search");
    requests
}

/// The index of one server process and how it keeps up with the database.
pub struct TemplateSearch {
    index: Arc<RwLock<TemplateIndex>>,
    requests: std::sync::mpsc::Sender<Request>,
    synced_ms: AtomicI64,
    /// (transform key id, storage key id): only templates made and sealed
    /// under these compare.
    keys: (String, String),
    thresholds: Option<Thresholds>,
    /// One whole reload at a time: the requests that find the index stale
    /// together wait for one reload instead of each reading the store.
    reloading: tokio::sync::Mutex<()>,
}

impl TemplateSearch {
    /// Read every stored template; `thresholds` None: nothing is ever a duplicate.
    pub async fn load(db: &Db, keys: (String, String), thresholds: Option<Thresholds>) -> Result<TemplateSearch, sqlx::Error> {
        let index: Arc<RwLock<TemplateIndex>> = Arc::default();
        let search = TemplateSearch { requests: spawn_search_thread(index.clone()), index, synced_ms: AtomicI64::new(0), keys, thresholds, reloading: Default::default() };
        search.reload(db).await?;
        let other_keys = db.templates_under_other_keys((&search.keys.0, &search.keys.1)).await?;
        if other_keys > 0 {
            tracing::warn!(templates = other_keys, "stored templates under other keys take no part in the duplicate check");
        }
        Ok(search)
    }

    async fn reload(&self, db: &Db) -> Result<(), sqlx::Error> {
        let started = std::time::Instant::now();
        let _one_at_a_time = self.reloading.lock().await;
        let upto = db.template_seq().await?;
        if !self.needs_reload(upto) {
            // another request reloaded while this one waited
            return Ok(());
        }
        let mut fresh = TemplateIndex::default();
        db.load_templates(upto, (&self.keys.0, &self.keys.1), |batch| fresh.apply(batch, i64::MIN)).await?;
        fresh.last_seq = upto;
        let (n, bytes) = (fresh.len(), fresh.len() * fresh.bytes_per_template());
        *self.index.write().expect("index lock") = fresh;
        self.synced_ms.store(crate::api::now_ms(), Ordering::Relaxed);
        tracing::info!(templates = n, bytes, ms = started.elapsed().as_millis() as u64, "duplicate search index loaded");
        Ok(())
    }

    /// Whether the index must be read whole rather than caught up: never
    /// loaded, not synced for longer than the revocation log reaches back,
    /// or a bulk load of more changes than one answer should carry.
    fn needs_reload(&self, upto: i64) -> bool {
        let synced = self.synced_ms.load(Ordering::Relaxed);
        synced == 0 || crate::api::now_ms() - synced > RELOAD_AFTER_MS || upto - self.index.read().expect("index lock").last_seq > crate::db::LOAD_BATCH
    }

    /// Bring the index up to date: one small query when nothing changed.
    pub async fn sync(&self, db: &Db) -> Result<(), sqlx::Error> {
        let now = crate::api::now_ms();
        let mut upto = db.template_seq().await?;
        if self.needs_reload(upto) {
            self.reload(db).await?;
            upto = db.template_seq().await?;
        }
        let after = self.index.read().expect("index lock").last_seq;
        if upto > after {
            let changes = db.template_changes(after, upto, (&self.keys.0, &self.keys.1)).await?;
            self.index.write().expect("index lock").apply(changes, upto);
        }
        self.synced_ms.store(now, Ordering::Relaxed);
        Ok(())
    }

    /// Stored templates of other subscribers within the duplicate threshold
    /// of `probe`, after catching up with the database.
    pub async fn duplicates(&self, db: &Db, probe: &[u8], except_subscriber: &str) -> Result<Vec<Hit>, sqlx::Error> {
        let (Some(thresholds), Some(probe)) = (self.thresholds, pack(probe)) else { return Ok(Vec::new()) };
        self.sync(db).await?;
        let (answer, hits) = tokio::sync::oneshot::channel();
        let request = Request { probe: Box::new(probe), thresholds, except_subscriber: except_subscriber.to_string(), answer };
        self.requests.send(request).map_err(|_| sqlx::Error::WorkerCrashed)?;
        hits.await.map_err(|_| sqlx::Error::WorkerCrashed)
    }
}

