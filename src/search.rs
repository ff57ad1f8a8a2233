//! The 1:N duplicate search (server side): every stored template of a
//! carrier held in memory as packed bits, searched with a two-stage Hamming
//! cascade. Works on sealed templates: the storage key's permutation and
//! mask keep Hamming distances.
//!
//! # Why a cascade in memory, not an index in the database
//! A duplicate at the 1:N operating point still differs from the probe in
//! roughly a quarter of its 2,048 bits, while unrelated faces differ in half,
//! give or take 300 bits (face embeddings are not uniform on the sphere).
//! Indexes that skip most templates lose such distant neighbours: measured
//! on lfw-dev's genuine pairs against a background drawn like real faces,
//! an IVF over k-majority centroids needs to scan about 13 % of the store
//! for 98.6 % recall, multi-assignment does no better per row scanned, and
//! bit-sampling LSH needs thousands of bands (README, "1:N search"). A
//! plain scan costs PostgreSQL's executor about a microsecond per row.
//! What is cheap is counting bits: stage one compares only the first
//! `PREFIX_BITS` bits of every template (the storage key's permutation made
//! them a random sample of the projections), stage two counts all bits of
//! the few that pass. Stage one's threshold is set from the hypergeometric
//! law of a prefix so that a template at the operating point's distance is
//! lost with probability at most `MISS_PER_PAIR`; closer ones less.
//!
//! The carrier server keeps one index per process, filled from its database
//! and brought up to date before every search (facegate-server's
//! `template_search` module).

use crate::matching::Calibration;
use crate::template::BITS;

const WORDS: usize = BITS / 64;
/// Stage one reads this many bits of each template (4 words: 32 bytes).
pub const PREFIX_BITS: usize = 256;
const PREFIX_WORDS: usize = PREFIX_BITS / 64;
/// Probability that stage one drops a template exactly at the threshold
/// distance (it is smaller for closer ones).
pub const MISS_PER_PAIR: f64 = 1e-4;

pub type Bits = [u64; WORDS];

/// Packed sealed bits from the stored bytes (BITS / 8, little-endian words).
pub fn pack(bytes: &[u8]) -> Option<Bits> {
    if bytes.len() != BITS / 8 {
        return None;
    }
    let mut out = [0u64; WORDS];
    for (w, chunk) in out.iter_mut().zip(bytes.chunks_exact(8)) {
        *w = u64::from_le_bytes(chunk.try_into().expect("8 bytes"));
    }
    Some(out)
}

/// One change of the store, in commit order.
#[derive(Debug, Clone)]
pub enum Change {
    Stored { seq: i64, subscriber_id: String, bits: Box<Bits> },
    /// Every template of the subscriber stored before `seq` is gone.
    Revoked { seq: i64, subscriber_id: String },
}

impl Change {
    pub fn seq(&self) -> i64 {
        match self {
            Change::Stored { seq, .. } | Change::Revoked { seq, .. } => *seq,
        }
    }
}

/// The search thresholds for one operating point.
#[derive(Debug, Clone, Copy)]
pub struct Thresholds {
    /// Largest full distance that is a duplicate (`compare`'s decision).
    pub full: u32,
    /// Largest prefix distance stage one lets through.
    pub prefix: u32,
}

impl Thresholds {
    /// None when the calibration accepts no distance at all.
    pub fn for_calibration(cal: &Calibration) -> Option<Thresholds> {
        let full = crate::template::max_matching_distance(cal)?;
        Some(Thresholds { full, prefix: prefix_threshold(full, MISS_PER_PAIR) })
    }
}

/// ln C(n, k)
fn ln_choose(n: u32, k: u32) -> f64 {
    (1..=k).map(|i| ((n - k + i) as f64 / i as f64).ln()).sum()
}

/// The smallest `t` such that a template `full` bits from the probe has
/// more than `t` differing bits among the first `PREFIX_BITS` with
/// probability at most `miss`: the differing bits are spread over the
/// positions at random (the storage permutation), so the prefix count is
/// hypergeometric (BITS positions, `full` differing, PREFIX_BITS drawn).
pub fn prefix_threshold(full: u32, miss: f64) -> u32 {
    let (n, k, draw) = (BITS as u32, full, PREFIX_BITS as u32);
    let total = ln_choose(n, draw);
    let mut below = 0.0;
    for t in 0..=draw.min(k) {
        if draw - t <= n - k {
            below += (ln_choose(k, t) + ln_choose(n - k, draw - t) - total).exp();
        }
        if 1.0 - below <= miss {
            return t;
        }
    }
    draw
}

/// Differing bits of two packed prefixes / templates.
#[inline(always)]
fn distance<const N: usize>(a: &[u64; N], b: &[u64; N]) -> u32 {
    a.iter().zip(b).map(|(x, y)| (x ^ y).count_ones()).sum()
}

/// Templates per block of stage one's store.
const LANES: usize = 8;

/// The prefixes of `LANES` consecutive templates, word by word: word `w` of
/// the block's templates lies side by side, so stage one compares a whole
/// block with a few vector instructions (one 512-bit XOR and bit count per
/// word where the CPU has them; the compiler vectorises the lane loops).
type PrefixBlock = [[u64; LANES]; PREFIX_WORDS];

/// Stored templates, struct-of-arrays so that stage one streams through 32
/// bytes per template and touches the full bits only of the survivors.
#[derive(Default)]
pub struct TemplateIndex {
    /// Template `i`'s prefix is lane `i % LANES` of block `i / LANES`; the
    /// last block's lanes past `len()` are zero and never reported.
    prefix_blocks: Vec<PrefixBlock>,
    full: Vec<Bits>,
    subscribers: Vec<Box<str>>,
    seqs: Vec<i64>,
    /// The highest change applied.
    pub last_seq: i64,
}

/// One search of a batch.
#[derive(Debug, Clone, Copy)]
pub struct Probe<'a> {
    pub bits: &'a Bits,
    pub thresholds: Thresholds,
    pub except_subscriber: &'a str,
}

/// A stored template within the threshold of the probe.
#[derive(Debug, Clone, PartialEq)]
pub struct Hit {
    pub subscriber_id: String,
    pub distance: u32,
}

impl TemplateIndex {
    pub fn len(&self) -> usize {
        self.seqs.len()
    }

    pub fn is_empty(&self) -> bool {
        self.seqs.is_empty()
    }

    /// Apply changes newer than `last_seq`, in sequence order (older ones,
    /// which a concurrent sync already applied, are skipped); then the
    /// index is up to date to `upto` (numbers without a change included).
    pub fn apply(&mut self, changes: impl IntoIterator<Item = Change>, upto: i64) {
        let mut changes: Vec<Change> = changes.into_iter().filter(|c| c.seq() > self.last_seq).collect();
        changes.sort_by_key(Change::seq);
        for change in changes {
            self.last_seq = change.seq();
            match change {
                Change::Stored { seq, subscriber_id, bits } => {
                    self.set_prefix(self.full.len(), &bits);
                    self.full.push(*bits);
                    self.subscribers.push(subscriber_id.into_boxed_str());
                    self.seqs.push(seq);
                }
                Change::Revoked { seq, subscriber_id } => self.remove(|sub, stored| sub == subscriber_id.as_str() && stored < seq),
            }
        }
        self.last_seq = self.last_seq.max(upto);
    }

    fn remove(&mut self, gone: impl Fn(&str, i64) -> bool) {
        let mut i = 0;
        while i < self.seqs.len() {
            if gone(&self.subscribers[i], self.seqs[i]) {
                let last = self.full.len() - 1;
                let moved = self.full[last];
                self.set_prefix(i, &moved);
                self.clear_prefix(last);
                self.full.swap_remove(i);
                self.subscribers.swap_remove(i);
                self.seqs.swap_remove(i);
            } else {
                i += 1;
            }
        }
    }

    /// Write template `i`'s prefix into its block lane (a new block when `i`
    /// starts one).
    fn set_prefix(&mut self, i: usize, bits: &Bits) {
        if i / LANES == self.prefix_blocks.len() {
            self.prefix_blocks.push([[0; LANES]; PREFIX_WORDS]);
        }
        for (w, word) in self.prefix_blocks[i / LANES].iter_mut().enumerate() {
            word[i % LANES] = bits[w];
        }
    }

    /// Zero the last template's lane (it moved or went); drop its block
    /// when it was the block's only one.
    fn clear_prefix(&mut self, last: usize) {
        if last.is_multiple_of(LANES) {
            self.prefix_blocks.pop();
        } else {
            for word in &mut self.prefix_blocks[last / LANES] {
                word[last % LANES] = 0;
            }
        }
    }

    /// Every stored template of another subscriber within `t.full` bits of
    /// `probe`.
    pub fn search(&self, probe: &Bits, t: Thresholds, except_subscriber: &str) -> Vec<Hit> {
        self.search_counting(probe, t, except_subscriber).0
    }

    /// `search`, and how many templates passed stage one (were read whole).
    pub fn search_counting(&self, probe: &Bits, t: Thresholds, except_subscriber: &str) -> (Vec<Hit>, usize) {
        self.search_batch(&[Probe { bits: probe, thresholds: t, except_subscriber }]).pop().expect("one answer per probe")
    }

    /// `search_counting` for several probes in one pass over the store.
    /// Stage one streams 32 bytes per template from RAM, so probes that
    /// arrive together share one stream: the server batches concurrent
    /// searches.
    pub fn search_batch(&self, probes: &[Probe]) -> Vec<(Vec<Hit>, usize)> {
        #[cfg(target_arch = "x86_64")]
        if std::arch::is_x86_feature_detected!("avx512f") && std::arch::is_x86_feature_detected!("avx512vpopcntdq") && std::arch::is_x86_feature_detected!("popcnt") {
            // SAFETY: the CPU has these features (checked above)
            return unsafe { self.search_batch_avx512(probes) };
        }
        self.search_batch_without_vector_count(probes)
    }

    /// `search_batch` compiled for AVX-512's vector bit count: stage one
    /// compares a block's 8 prefixes at once (`cargo xtask bench-search`
    /// runs it beside the popcnt build: 2.0-2.3x faster per search over a
    /// million templates, 2026-12-06).
    #[cfg(target_arch = "x86_64")]
    #[target_feature(enable = "avx512f,avx512vpopcntdq,popcnt")]
    unsafe fn search_batch_avx512(&self, probes: &[Probe]) -> Vec<(Vec<Hit>, usize)> {
        self.search_batch_portable(probes)
    }

    /// `search_batch` compiled with the popcnt instruction: the default
    /// x86-64 target does not assume it, and the portable bit count costs
    /// several times more per word.
    #[cfg(target_arch = "x86_64")]
    #[target_feature(enable = "popcnt")]
    unsafe fn search_batch_popcnt(&self, probes: &[Probe]) -> Vec<(Vec<Hit>, usize)> {
        self.search_batch_portable(probes)
    }

    /// `search_batch` without AVX-512: the popcnt build where the CPU has
    /// the instruction, else the portable one (also the benchmark's
    /// side-by-side figure).
    #[doc(hidden)]
    pub fn search_batch_without_vector_count(&self, probes: &[Probe]) -> Vec<(Vec<Hit>, usize)> {
        #[cfg(target_arch = "x86_64")]
        if std::arch::is_x86_feature_detected!("popcnt") {
            // SAFETY: the CPU has the popcnt instruction (checked above)
            return unsafe { self.search_batch_popcnt(probes) };
        }
        self.search_batch_portable(probes)
    }

    #[inline(always)]
    fn search_batch_portable(&self, probes: &[Probe]) -> Vec<(Vec<Hit>, usize)> {
        let limits: Vec<([u64; PREFIX_WORDS], u32)> = probes.iter().map(|p| (p.bits[..PREFIX_WORDS].try_into().expect("prefix words"), p.thresholds.prefix)).collect();
        let candidates = self.stage_one(&limits);
        self.stage_two(probes, candidates)
    }

    /// Every (template, probe) whose prefixes are within the probe's limit,
    /// in a tight loop over the blocks that only collects them; written so
    /// that each block's lanes are one vector.
    #[inline(always)]
    fn stage_one(&self, limits: &[([u64; PREFIX_WORDS], u32)]) -> Vec<(u32, u32)> {
        let mut candidates: Vec<(u32, u32)> = Vec::new();
        let len = self.full.len();
        for (b, block) in self.prefix_blocks.iter().enumerate() {
            // lanes past the last template are zero: never candidates
            let valid = (len - b * LANES).min(LANES);
            let valid_lanes = if valid == LANES { u32::MAX } else { (1u32 << valid) - 1 };
            for (k, (prefix, limit)) in limits.iter().enumerate() {
                let mut d = [0u64; LANES];
                for (word, p) in block.iter().zip(prefix) {
                    for (dl, w) in d.iter_mut().zip(word) {
                        *dl += (w ^ p).count_ones() as u64;
                    }
                }
                let mut within = 0u32;
                for (lane, dl) in d.iter().enumerate() {
                    within |= ((*dl <= *limit as u64) as u32) << lane;
                }
                within &= valid_lanes;
                while within != 0 {
                    let lane = within.trailing_zeros() as usize;
                    candidates.push(((b * LANES + lane) as u32, k as u32));
                    within &= within - 1;
                }
            }
        }
        candidates
    }

    /// Stage two: the candidates' full bits, against their probe's
    /// threshold, with the probe's own subscriber left out.
    #[inline(always)]
    fn stage_two(&self, probes: &[Probe], candidates: Vec<(u32, u32)>) -> Vec<(Vec<Hit>, usize)> {
        let mut out: Vec<(Vec<Hit>, usize)> = vec![(Vec::new(), 0); probes.len()];
        for (i, k) in candidates {
            let (i, probe, answer) = (i as usize, &probes[k as usize], &mut out[k as usize]);
            answer.1 += 1;
            let d = distance(&self.full[i], probe.bits);
            if d <= probe.thresholds.full && &*self.subscribers[i] != probe.except_subscriber {
                answer.0.push(Hit { subscriber_id: self.subscribers[i].to_string(), distance: d });
            }
        }
        out
    }

    /// The reference the cascade is measured against: every full template.
    pub fn exhaustive_search(&self, probe: &Bits, t: Thresholds, except_subscriber: &str) -> Vec<Hit> {
        #[cfg(target_arch = "x86_64")]
        if std::arch::is_x86_feature_detected!("popcnt") {
            // SAFETY: the CPU has the popcnt instruction (checked above)
            return unsafe { self.scan_all_popcnt(probe, t, except_subscriber) };
        }
        self.scan_all(probe, t, except_subscriber)
    }

    #[cfg(target_arch = "x86_64")]
    #[target_feature(enable = "popcnt")]
    unsafe fn scan_all_popcnt(&self, probe: &Bits, t: Thresholds, except_subscriber: &str) -> Vec<Hit> {
        self.scan_all(probe, t, except_subscriber)
    }

    #[inline(always)]
    fn scan_all(&self, probe: &Bits, t: Thresholds, except_subscriber: &str) -> Vec<Hit> {
        self.full
            .iter()
            .zip(&self.subscribers)
            .filter_map(|(bits, sub)| {
                let d = distance(bits, probe);
                (d <= t.full && &**sub != except_subscriber).then(|| Hit { subscriber_id: sub.to_string(), distance: d })
            })
            .collect()
    }

    /// Bytes held per template (bits twice over for the prefix, sequence
    /// number, subscriber id).
    pub fn bytes_per_template(&self) -> usize {
        let ids: usize = self.subscribers.iter().map(|s| s.len() + std::mem::size_of::<Box<str>>()).sum();
        std::mem::size_of::<Bits>() + PREFIX_WORDS * 8 + std::mem::size_of::<i64>() + ids / self.len().max(1)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    use rand_chacha::rand_core::{RngCore, SeedableRng};

    /// A repeatable stream for test templates.
    fn stream(seed: u64) -> impl FnMut() -> u64 {
        let mut rng = rand_chacha::ChaCha20Rng::seed_from_u64(seed);
        move || rng.next_u64()
    }

    fn random_bits(next: &mut impl FnMut() -> u64) -> Bits {
        std::array::from_fn(|_| next())
    }

    /// `probe` with `n` of its bits flipped at random positions.
    fn flipped(probe: &Bits, n: u32, next: &mut impl FnMut() -> u64) -> Bits {
        let mut out = *probe;
        let mut flipped = 0;
        while flipped < n {
            let i = (next() % BITS as u64) as usize;
            if (out[i / 64] ^ probe[i / 64]) >> (i % 64) & 1 == 0 {
                out[i / 64] ^= 1 << (i % 64);
                flipped += 1;
            }
        }
        out
    }

    #[test]
    fn prefix_threshold_follows_the_hypergeometric_tail() {
        // identical templates: the prefix is identical too
        assert_eq!(prefix_threshold(0, 1e-4), 0);
        // a template at 25 % distance has 64 of 256 prefix bits differing on
        // average; the threshold sits a few standard deviations above
        let t = prefix_threshold(512, 1e-4);
        assert!((64 + 3 * 6..64 + 5 * 6).contains(&t), "{t}");
        assert!(prefix_threshold(512, 1e-6) > t && prefix_threshold(600, 1e-4) > t);
        assert_eq!(prefix_threshold(BITS as u32, 1e-4), PREFIX_BITS as u32);
    }

    #[test]
    fn the_cascade_finds_what_the_exhaustive_scan_finds() {
        let mut next = stream(7);
        let cal = crate::matching::Calibration { threshold: 0.99, ..crate::matching::DEFAULT_CALIBRATION };
        let t = Thresholds::for_calibration(&cal).unwrap();
        let mut index = TemplateIndex::default();
        let probes: Vec<Bits> = (0..40).map(|_| random_bits(&mut next)).collect();
        let mut changes = Vec::new();
        for i in 0..5000i64 {
            // a few duplicates of each probe at or just inside the threshold,
            // the rest unrelated
            let bits = match i % 100 {
                0..=1 => flipped(&probes[(i / 100) as usize % probes.len()], t.full - (i % 2) as u32 * 40, &mut next),
                2 => flipped(&probes[(i / 100) as usize % probes.len()], t.full + 1, &mut next),
                _ => random_bits(&mut next),
            };
            changes.push(Change::Stored { seq: i + 1, subscriber_id: format!("s{i}"), bits: Box::new(bits) });
        }
        index.apply(changes, 0);
        let (mut found, mut expected) = (0, 0);
        for p in &probes {
            let exhaustive = index.exhaustive_search(p, t, "nobody");
            let cascade = index.search(p, t, "nobody");
            assert!(cascade.iter().all(|h| exhaustive.contains(h)), "the cascade reports only true duplicates");
            assert!(exhaustive.iter().all(|h| h.distance <= t.full));
            expected += exhaustive.len();
            found += cascade.len();
        }
        assert!(expected >= 40 * 2, "every probe has duplicates at the threshold: {expected}");
        // a batch answers each probe as a search of its own would
        let batch: Vec<Probe> = probes.iter().enumerate().map(|(i, bits)| Probe { bits, thresholds: t, except_subscriber: if i % 2 == 0 { "nobody" } else { "s0" } }).collect();
        let answers = index.search_batch(&batch);
        for (probe, answer) in batch.iter().zip(answers) {
            assert_eq!(answer, index.search_counting(probe.bits, t, probe.except_subscriber));
        }
        assert!(found as f64 >= expected as f64 * 0.99, "{found} of {expected}");
    }

    #[test]
    fn blocks_stay_consistent_through_revocations_and_every_build_agrees() {
        // templates within a few bits of one probe, spread over several
        // blocks; revoking some moves others into their lanes
        let mut next = stream(11);
        let probe = random_bits(&mut next);
        let t = Thresholds { full: 40, prefix: 40 };
        let mut index = TemplateIndex::default();
        let changes: Vec<Change> = (0..29i64).map(|i| Change::Stored { seq: i + 1, subscriber_id: format!("s{}", i % 7), bits: Box::new(flipped(&probe, (i % 5) as u32, &mut next)) }).collect();
        index.apply(changes, 0);
        let subscribers = |index: &TemplateIndex| {
            let mut found: Vec<String> = index.search(&probe, t, "nobody").into_iter().map(|h| h.subscriber_id).collect();
            found.sort();
            found
        };
        assert_eq!(subscribers(&index).len(), 29);
        for (seq, gone) in [(30, "s0"), (31, "s3"), (32, "s6")] {
            index.apply([Change::Revoked { seq, subscriber_id: gone.into() }], seq);
            let found = subscribers(&index);
            assert!(!found.iter().any(|s| s == gone));
            assert_eq!(found.len(), index.len(), "every remaining template is found once");
            assert_eq!(index.prefix_blocks.len(), index.len().div_ceil(LANES));
        }
        // the lanes past the last template never report, even though a zero
        // prefix is close to a sparse probe
        let sparse = [0u64; WORDS];
        let mut small = TemplateIndex::default();
        small.apply([Change::Stored { seq: 1, subscriber_id: "a".into(), bits: Box::new(sparse) }], 1);
        assert_eq!(small.search(&sparse, t, "nobody").len(), 1);
        let probe_bits = [probe, sparse];
        let probes: Vec<Probe> = probe_bits.iter().map(|bits| Probe { bits, thresholds: Thresholds { full: 1100, prefix: 140 }, except_subscriber: "s1" }).collect();
        assert_eq!(index.search_batch(&probes), index.search_batch_without_vector_count(&probes));
        assert_eq!(index.search_batch(&probes), index.search_batch_portable(&probes));
    }

    #[test]
    fn changes_apply_in_order_once_and_revocation_removes_only_older_templates() {
        let mut next = stream(9);
        let a = random_bits(&mut next);
        let t = Thresholds { full: 10, prefix: 10 };
        let stored = |seq, sub: &str| Change::Stored { seq, subscriber_id: sub.into(), bits: Box::new(a) };
        let mut index = TemplateIndex::default();
        index.apply([stored(2, "bob"), stored(1, "alice"), Change::Revoked { seq: 3, subscriber_id: "alice".into() }, stored(4, "alice")], 5);
        assert_eq!((index.len(), index.last_seq), (2, 5));
        // a concurrent sync delivering the same changes again changes nothing
        index.apply([stored(2, "bob"), stored(4, "alice")], 4);
        assert_eq!((index.len(), index.last_seq), (2, 5));
        let mut subs: Vec<String> = index.search(&a, t, "carol").into_iter().map(|h| h.subscriber_id).collect();
        subs.sort();
        assert_eq!(subs, ["alice", "bob"]);
        assert_eq!(index.search(&a, t, "bob").len(), 1, "a subscriber is never its own duplicate");
        assert_eq!(pack(&[0u8; 255]), None);
        assert_eq!(pack(&[1u8; 256]).unwrap()[0], 0x0101_0101_0101_0101);
    }
}
