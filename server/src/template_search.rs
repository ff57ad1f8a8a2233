//! Each server process's duplicate search (`facegate::search`) and how it
//! keeps up with the database, which stays the record: the index is filled
//! from it at start and brought up to date before every search from the
//! change log, ordered by a sequence number that commits in order
//! (`db::next_template_seq`). So several server processes on one database
//! all see every template, and a template store that cannot answer makes
//! the verification fail with `template_store_unavailable` instead of
//! answering "no duplicate" from stale memory.

use crate::db::Db;
use facegate::search::{pack, Bits, Change, Hit, Probe, TemplateIndex, Thresholds};
use std::sync::atomic::{AtomicI64, Ordering};
use std::sync::{Arc, RwLock};

/// A server whose index was last brought up to date longer ago than this
/// reloads it whole: revocations are kept in the log for twice as long.
const RELOAD_AFTER_MS: i64 = 12 * 3600 * 1000;
/// How long a revocation stays in the change log.
pub const REVOCATION_LOG_MS: i64 = 2 * RELOAD_AFTER_MS;

/// At most this many concurrent searches share one pass over the store.
const MAX_BATCH: usize = 16;

/// Work for the search thread: changes to apply (fetched from the
/// database by an async task: every change numbered in (after, upto]) and,
/// usually, a search to answer after them.
struct Job {
    after: i64,
    changes: Vec<Change>,
    upto: i64,
    search: Option<Request>,
}

/// A search waiting for the search thread.
struct Request {
    probe: Box<Bits>,
    thresholds: Thresholds,
    except_subscriber: String,
    /// None: the index was replaced by an older whole reload after the
    /// changes were fetched, so they do not follow on from it; fetch again.
    answer: tokio::sync::oneshot::Sender<Option<Vec<Hit>>>,
}

/// The thread that changes and searches the index of this process. A scan
/// of a large store takes milliseconds, mostly streaming the templates'
/// first bits from memory, so it stays off the async workers, and the
/// searches that arrive while one runs go together in the next pass
/// (`TemplateIndex::search_batch`, `cargo xtask bench-search`). It also
/// applies the changes each search brought from the database before that
/// search runs: an async worker that took the index's write lock itself
/// would stall, with every connection it serves, until the running pass
/// let go of the read lock.
fn spawn_search_thread(index: Arc<RwLock<TemplateIndex>>, applied: Arc<AtomicI64>) -> std::sync::mpsc::Sender<Job> {
    let (jobs, incoming) = std::sync::mpsc::channel::<Job>();
    std::thread::Builder::new()
        .name("duplicate-search".into())
        .spawn(move || {
            while let Ok(first) = incoming.recv() {
                let mut batch = vec![first];
                while batch.iter().filter(|j| j.search.is_some()).count() < MAX_BATCH {
                    match incoming.try_recv() {
                        Ok(j) => batch.push(j),
                        Err(_) => break,
                    }
                }
                let mut requests = Vec::new();
                {
                    let mut index = index.write().expect("index lock");
                    for job in batch {
                        // changes that start past the index's last one would
                        // leave a gap (a reload put an older index in place
                        // meanwhile): not applied, and the search is asked
                        // again rather than answered from a store with a hole
                        if job.after > index.last_seq {
                            if let Some(r) = job.search {
                                let _ = r.answer.send(None);
                            }
                            continue;
                        }
                        index.apply(job.changes, job.upto);
                        requests.extend(job.search);
                    }
                    applied.store(index.last_seq, Ordering::Release);
                }
                if requests.is_empty() {
                    continue;
                }
                let probes: Vec<Probe> = requests.iter().map(|r| Probe { bits: &r.probe, thresholds: r.thresholds, except_subscriber: &r.except_subscriber }).collect();
                let answers = index.read().expect("index lock").search_batch(&probes);
                drop(probes);
                for (request, (hits, _)) in requests.into_iter().zip(answers) {
                    // a request whose client went away has nobody to answer
                    let _ = request.answer.send(Some(hits));
                }
            }
        })
        .expect("a thread for the duplicate search");
    jobs
}

/// The index of one server process and how it keeps up with the database.
pub struct TemplateSearch {
    index: Arc<RwLock<TemplateIndex>>,
    jobs: std::sync::mpsc::Sender<Job>,
    /// The index's `last_seq`, readable without its lock: where the next
    /// catch-up starts.
    applied: Arc<AtomicI64>,
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
        let applied: Arc<AtomicI64> = Arc::default();
        let search = TemplateSearch {
            jobs: spawn_search_thread(index.clone(), applied.clone()),
            index,
            applied,
            synced_ms: AtomicI64::new(0),
            keys,
            thresholds,
            reloading: Default::default(),
        };
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
        {
            // rare (start-up, a bulk load, a long outage): waits for a running pass
            let mut index = self.index.write().expect("index lock");
            *index = fresh;
            self.applied.store(upto, Ordering::Release);
        }
        self.synced_ms.store(crate::api::now_ms(), Ordering::Relaxed);
        tracing::info!(templates = n, bytes, ms = started.elapsed().as_millis() as u64, "duplicate search index loaded");
        Ok(())
    }

    /// Whether the index must be read whole rather than caught up: never
    /// loaded, not synced for longer than the revocation log reaches back,
    /// or a bulk load of more changes than one answer should carry.
    fn needs_reload(&self, upto: i64) -> bool {
        let synced = self.synced_ms.load(Ordering::Relaxed);
        synced == 0 || crate::api::now_ms() - synced > RELOAD_AFTER_MS || upto - self.applied.load(Ordering::Acquire) > crate::db::LOAD_BATCH
    }

    /// The changes since the index's last one and the number the index is
    /// up to once they are applied; a whole reload first when the index is
    /// too far behind. The counter is read first, from the coordinator
    /// alone: when nothing changed no shard is asked (a server that is up
    /// to date still searches with a shard down), and every number up to
    /// it has committed everywhere (`db::next_template_seq`).
    async fn catch_up(&self, db: &Db) -> Result<(i64, Vec<Change>, i64), sqlx::Error> {
        let now = crate::api::now_ms();
        let mut upto = db.template_seq().await?;
        if self.needs_reload(upto) {
            self.reload(db).await?;
            upto = db.template_seq().await?;
        }
        // at most one load batch at a time: a store that grew by more
        // meanwhile is caught up by the next search, never skipped over
        let after = self.applied.load(Ordering::Acquire);
        let upto = upto.min(after + crate::db::LOAD_BATCH);
        let changes = if upto > after { db.template_changes(after, upto, (&self.keys.0, &self.keys.1)).await? } else { Vec::new() };
        self.synced_ms.store(now, Ordering::Relaxed);
        Ok((after, changes, upto))
    }

    /// Bring the index up to date: one small query when nothing changed.
    pub async fn sync(&self, db: &Db) -> Result<(), sqlx::Error> {
        let (after, changes, upto) = self.catch_up(db).await?;
        self.jobs.send(Job { after, changes, upto, search: None }).map_err(|_| sqlx::Error::WorkerCrashed)
    }

    /// Stored templates of other subscribers within the duplicate threshold
    /// of `probe`, after catching up with the database, and the sequence
    /// number up to which every stored template was searched.
    pub async fn duplicates(&self, db: &Db, probe: &[u8], except_subscriber: &str) -> Result<(Vec<Hit>, i64), sqlx::Error> {
        let (Some(thresholds), Some(probe)) = (self.thresholds, pack(probe)) else { return Ok((Vec::new(), i64::MAX)) };
        let probe = Box::new(probe);
        for _ in 0..3 {
            let (after, changes, upto) = self.catch_up(db).await?;
            let (answer, hits) = tokio::sync::oneshot::channel();
            let search = Request { probe: probe.clone(), thresholds, except_subscriber: except_subscriber.to_string(), answer };
            self.jobs.send(Job { after, changes, upto, search: Some(search) }).map_err(|_| sqlx::Error::WorkerCrashed)?;
            if let Some(hits) = hits.await.map_err(|_| sqlx::Error::WorkerCrashed)? {
                return Ok((hits, upto));
            }
        }
        Err(sqlx::Error::Protocol("the duplicate search index was reloaded three times during one search".into()))
    }

    /// The templates stored in (after, before) that are duplicates of
    /// `probe`, read from the database itself: those committed between a
    /// verification's search (`duplicates`, which covered up to `after`)
    /// and its own template (number `before`). Two registrations of one
    /// face at the same moment each search before the other is stored; the
    /// later of the two finds the earlier here. Usually a handful of rows;
    /// a bulk load in between is read in ranges.
    pub async fn duplicates_stored_between(&self, db: &Db, probe: &[u8], except_subscriber: &str, after: i64, before: i64) -> Result<Vec<Hit>, sqlx::Error> {
        let (Some(thresholds), Some(probe)) = (self.thresholds, pack(probe)) else { return Ok(Vec::new()) };
        let mut between = TemplateIndex::default();
        let mut from = after;
        while from < before - 1 {
            let upto = (before - 1).min(from + crate::db::LOAD_BATCH);
            between.apply(db.template_changes(from, upto, (&self.keys.0, &self.keys.1)).await?, upto);
            from = upto;
        }
        Ok(between.search(&probe, thresholds, except_subscriber))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn stored(seq: i64, subscriber: &str) -> Change {
        Change::Stored { seq, subscriber_id: subscriber.into(), bits: Box::new([0; facegate::template::BITS / 64]) }
    }

    fn search(jobs: &std::sync::mpsc::Sender<Job>, after: i64, changes: Vec<Change>, upto: i64) -> Option<Vec<Hit>> {
        let (answer, hits) = tokio::sync::oneshot::channel();
        let request = Request { probe: Box::new([0; facegate::template::BITS / 64]), thresholds: Thresholds { full: 10, prefix: 10 }, except_subscriber: "nobody".into(), answer };
        jobs.send(Job { after, changes, upto, search: Some(request) }).unwrap();
        hits.blocking_recv().unwrap()
    }

    #[test]
    fn the_search_thread_applies_changes_in_order_and_never_searches_across_a_gap() {
        let index: Arc<RwLock<TemplateIndex>> = Arc::default();
        let applied: Arc<AtomicI64> = Arc::default();
        let jobs = spawn_search_thread(index.clone(), applied.clone());
        // changes that follow on from the index are applied before the search
        assert_eq!(search(&jobs, 0, vec![stored(1, "a"), stored(2, "b")], 2).map(|h| h.len()), Some(2));
        assert_eq!(applied.load(Ordering::Acquire), 2);
        // the same changes again (a concurrent catch-up) change nothing
        assert_eq!(search(&jobs, 0, vec![stored(1, "a"), stored(2, "b")], 2).map(|h| h.len()), Some(2));
        // changes fetched from 5 onto an index at 2 would skip 3 and 4: the
        // search is asked again, and nothing is applied
        assert_eq!(search(&jobs, 5, vec![stored(6, "c")], 6), None);
        assert_eq!((applied.load(Ordering::Acquire), index.read().unwrap().len()), (2, 2));
        assert_eq!(search(&jobs, 2, vec![stored(3, "c"), stored(4, "d"), stored(6, "e")], 6).map(|h| h.len()), Some(5));
        assert_eq!(applied.load(Ordering::Acquire), 6);
    }
}
