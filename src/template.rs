//! Protected biometric templates: what leaves the device instead of an embedding.
//!
//! # Design (ISO/IEC 24745: irreversibility, renewability, unlinkability)
//!
//! A raw embedding must never leave the device, and a cryptographic hash of
//! one cannot be matched (two captures of one face never give equal bits).
//! facegate uses a keyed random-projection binarisation (BioHashing /
//! SimHash family) in two layers:
//!
//! 1. **On the device, with the carrier's transform key** `K_t` (32 bytes,
//!    per carrier, delivered with the widget configuration): the embedding
//!    `x` is projected onto `BITS` directions drawn from a ChaCha20 stream
//!    keyed by HKDF(`K_t`), in orthonormal blocks, and only the signs are
//!    kept. For random directions the fraction of differing bits between two
//!    templates estimates the angle between the embeddings (`h = θ/π`), so
//!    `cos(π·h)` is a cosine estimate and the ordinary calibration applies:
//!    matching works in the protected domain, no embedding needed.
//! 2. **On the server, with the carrier's storage key** `K_s` (never on a
//!    device): before storage the bits are XOR-masked and permuted with a
//!    keystream from HKDF(`K_s`). Both operations preserve Hamming distance,
//!    so stored templates of the same carrier still compare with each other
//!    (duplicate checks, re-verification at SIM swap), while a stolen
//!    database is a set of uniformly random-looking bit strings.
//!
//! Properties, measured by `facegate pairs --protected` and the tests:
//! - *Renewable*: a new `K_s` re-keys every stored template without a new
//!   capture (`StorageKey::rekey`); a new `K_t` gives a new template for the
//!   same face at the next capture. The old one is deleted (revoked).
//! - *Unlinkable*: the same face under two carriers' keys gives bit strings
//!   whose distance is distributed like that of two different people.
//! - *Irreversible, within stated limits*: the template holds `BITS` signs,
//!   not the embedding. Without the keys the bits are independent of the face.
//!   An attacker holding a device template *and* `K_t` (which ships in the
//!   widget, so assume it is public) can back-project the signs into an
//!   approximate embedding (cosine about 0.93 to the true one with 1024
//!   bits, measured in tests/pipeline.rs): enough to be accepted by *this*
//!   embedding model for that person, not a photograph. That is why device templates travel
//!   only inside TLS to the carrier and are masked before storage; a database
//!   leak without `K_s` reveals nothing usable.
use crate::embed::Embedding;
use crate::error::{FacegateError, Result};
use crate::matching::{Calibration, MatchResult};
use hkdf::Hkdf;
use rand_chacha::rand_core::{RngCore, SeedableRng};
use rand_chacha::ChaCha20Rng;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

/// Template length in bits. Chosen for the 192-d mobilefacenet embedding
/// so that the protected domain loses at most one point of TAR at FAR 1e-3
/// against raw embeddings on lfw-dev (every cross-identity pair): 1,024
/// bits lost 0.8 points plain and 1.2 ID-style, 2,048 bits lose 0.35 and
/// 0.7 (docs/template-protection.md). The price: a holder of the transform
/// key back-projects twice as many signs (measured in tests/pipeline.rs),
/// and a template is 256 bytes.
pub const BITS: usize = 2048;
/// v2: 2,048 bits of the 192-d mobilefacenet embedding (v1: 1,024 bits of
/// mobileface's 256-d one; the two never compare).
pub const SCHEME: &str = "facegate-biohash-v2";

/// A 32-byte key from hex (64 characters).
fn key_from_hex(hex_key: &str, what: &str) -> Result<[u8; 32]> {
    let bytes = hex::decode(hex_key.trim()).map_err(|e| FacegateError::InvalidInput(format!("{what}: not hex: {e}")))?;
    bytes.try_into().map_err(|_| FacegateError::InvalidInput(format!("{what}: must be 32 bytes (64 hex characters)")))
}

/// Public identifier of a key: the first 8 bytes of sha256("facegate key id" || key).
fn key_id(key: &[u8; 32]) -> String {
    hex::encode(&Sha256::new().chain_update(b"facegate key id").chain_update(key).finalize()[..8])
}

fn keyed_rng(key: &[u8; 32], purpose: &[u8]) -> ChaCha20Rng {
    let mut seed = [0u8; 32];
    Hkdf::<Sha256>::new(Some(SCHEME.as_bytes()), key).expand(purpose, &mut seed).expect("32 bytes is a valid HKDF length");
    ChaCha20Rng::from_seed(seed)
}

/// Standard normal variate by Box–Muller from two uniform draws.
fn gaussian(rng: &mut ChaCha20Rng) -> f32 {
    let u1 = ((rng.next_u32() as f64 + 1.0) / (u32::MAX as f64 + 2.0)).max(f64::MIN_POSITIVE);
    let u2 = rng.next_u32() as f64 / (u32::MAX as f64 + 1.0);
    ((-2.0 * u1.ln()).sqrt() * (std::f64::consts::TAU * u2).cos()) as f32
}

/// The carrier's transform key and the projection it defines.
pub struct TransformKey {
    id: String,
    /// `BITS` rows of length `dim`, orthonormal within each block of `dim` rows.
    rows: Vec<Vec<f32>>,
}

impl TransformKey {
    pub fn from_hex(hex_key: &str, dim: usize) -> Result<Self> {
        Ok(Self::new(&key_from_hex(hex_key, "transform key")?, dim))
    }

    pub fn new(key: &[u8; 32], dim: usize) -> Self {
        let mut rng = keyed_rng(key, b"projection");
        let mut rows: Vec<Vec<f32>> = Vec::with_capacity(BITS);
        while rows.len() < BITS {
            let block_start = rows.len();
            // Gram–Schmidt inside a block of at most `dim` rows
            while rows.len() < BITS && rows.len() - block_start < dim {
                let mut v: Vec<f32> = (0..dim).map(|_| gaussian(&mut rng)).collect();
                for r in &rows[block_start..] {
                    let d: f32 = v.iter().zip(r).map(|(a, b)| a * b).sum();
                    v.iter_mut().zip(r).for_each(|(a, b)| *a -= d * b);
                }
                let n = v.iter().map(|a| a * a).sum::<f32>().sqrt();
                if n > 1e-3 {
                    v.iter_mut().for_each(|a| *a /= n);
                    rows.push(v);
                }
            }
        }
        TransformKey { id: key_id(key), rows }
    }

    pub fn id(&self) -> &str {
        &self.id
    }

    /// The device side: embedding → protected template.
    pub fn protect(&self, e: &Embedding) -> Result<ProtectedTemplate> {
        if e.0.len() != self.rows[0].len() {
            return Err(FacegateError::InvalidInput(format!("embedding has {} values, key expects {}", e.0.len(), self.rows[0].len())));
        }
        let mut bits = vec![0u8; BITS / 8];
        for (i, r) in self.rows.iter().enumerate() {
            let d: f32 = r.iter().zip(&e.0).map(|(a, b)| a * b).sum();
            if d >= 0.0 {
                bits[i / 8] |= 1 << (i % 8);
            }
        }
        Ok(ProtectedTemplate { scheme: SCHEME.into(), transform_key_id: self.id.clone(), storage_key_id: None, bits: hex::encode(bits) })
    }

    /// What an attacker holding this key can do with a device template:
    /// back-project the signs into an approximate (unit) embedding. Used by
    /// the tests that measure the irreversibility claim.
    pub fn back_project(&self, t: &ProtectedTemplate) -> Result<Embedding> {
        let bits = t.bit_bytes()?;
        let dim = self.rows[0].len();
        let mut x = vec![0f32; dim];
        for (i, r) in self.rows.iter().enumerate() {
            let sign = if bits[i / 8] >> (i % 8) & 1 == 1 { 1.0 } else { -1.0 };
            x.iter_mut().zip(r).for_each(|(a, b)| *a += sign * b);
        }
        let n = x.iter().map(|a| a * a).sum::<f32>().sqrt().max(1e-12);
        Ok(Embedding(x.into_iter().map(|a| a / n).collect()))
    }
}

/// A protected template as it travels and is stored: only bits and key ids.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ProtectedTemplate {
    pub scheme: String,
    /// Which transform key made it (templates of different keys never compare).
    pub transform_key_id: String,
    /// Set once the server has masked it with its storage key.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub storage_key_id: Option<String>,
    /// `BITS` bits, hex.
    pub bits: String,
}

impl ProtectedTemplate {
    pub fn bit_bytes(&self) -> Result<Vec<u8>> {
        if self.scheme != SCHEME {
            return Err(FacegateError::InvalidInput(format!("unknown template scheme {}", self.scheme)));
        }
        let b = hex::decode(&self.bits).map_err(|e| FacegateError::InvalidInput(format!("template bits: {e}")))?;
        if b.len() != BITS / 8 {
            return Err(FacegateError::InvalidInput(format!("template must have {BITS} bits")));
        }
        Ok(b)
    }

    /// The same bits labelled with another transform key id: lets an
    /// evaluation compare templates across carriers, which `compare` refuses.
    pub fn with_key_id(mut self, transform_key_id: &str) -> Self {
        self.transform_key_id = transform_key_id.to_string();
        self
    }

    /// Fraction of differing bits (0 = identical, ~0.5 = unrelated).
    pub fn hamming_fraction(&self, other: &ProtectedTemplate) -> Result<f32> {
        if self.transform_key_id != other.transform_key_id || self.storage_key_id != other.storage_key_id {
            return Err(FacegateError::InvalidInput("templates were made under different keys".into()));
        }
        let (a, b) = (self.bit_bytes()?, other.bit_bytes()?);
        let differing: u32 = a.iter().zip(&b).map(|(x, y)| (x ^ y).count_ones()).sum();
        Ok(differing as f32 / BITS as f32)
    }

    /// Cosine estimate from the bits: `cos(π·h)` (random-hyperplane LSH).
    pub fn cosine_estimate(&self, other: &ProtectedTemplate) -> Result<f32> {
        Ok(cosine_of_fraction(self.hamming_fraction(other)?))
    }

    /// A 1:1 decision in the protected domain, on the same calibrated scale
    /// as raw embeddings.
    pub fn compare(&self, other: &ProtectedTemplate, cal: &Calibration) -> Result<MatchResult> {
        let score = cal.score(self.cosine_estimate(other)?);
        Ok(MatchResult { score, threshold: cal.threshold, same_person: score >= cal.threshold })
    }
}

fn cosine_of_fraction(h: f32) -> f32 {
    (std::f32::consts::PI * h).cos()
}

/// The calibrated score of two templates `differing_bits` apart: what
/// `compare` gives, for code that counts bits itself (the server's 1:N search).
pub fn score_of_distance(differing_bits: u32, cal: &Calibration) -> f32 {
    cal.score(cosine_of_fraction(differing_bits as f32 / BITS as f32))
}

/// The largest number of differing bits that still reaches `cal.threshold`
/// (None if not even identical templates do): exactly `compare`'s decision
/// as a distance, because the score falls as the distance grows.
pub fn max_matching_distance(cal: &Calibration) -> Option<u32> {
    (0..=BITS as u32).take_while(|&d| score_of_distance(d, cal) >= cal.threshold).last()
}

/// The server's storage key: a keyed bit permutation and XOR mask.
pub struct StorageKey {
    id: String,
    permutation: Vec<usize>,
    mask: Vec<u8>,
}

impl StorageKey {
    pub fn from_hex(hex_key: &str) -> Result<Self> {
        Ok(Self::new(&key_from_hex(hex_key, "storage key")?))
    }

    pub fn new(key: &[u8; 32]) -> Self {
        let mut rng = keyed_rng(key, b"storage");
        let mut permutation: Vec<usize> = (0..BITS).collect();
        for i in (1..BITS).rev() {
            let j = (rng.next_u64() % (i as u64 + 1)) as usize;
            permutation.swap(i, j);
        }
        let mut mask = vec![0u8; BITS / 8];
        rng.fill_bytes(&mut mask);
        StorageKey { id: key_id(key), permutation, mask }
    }

    pub fn id(&self) -> &str {
        &self.id
    }

    /// Device template → stored template.
    pub fn seal(&self, t: &ProtectedTemplate) -> Result<ProtectedTemplate> {
        if t.storage_key_id.is_some() {
            return Err(FacegateError::InvalidInput("template is already sealed".into()));
        }
        let bits = t.bit_bytes()?;
        let mut out = vec![0u8; BITS / 8];
        for (i, &p) in self.permutation.iter().enumerate() {
            if bits[p / 8] >> (p % 8) & 1 == 1 {
                out[i / 8] |= 1 << (i % 8);
            }
        }
        out.iter_mut().zip(&self.mask).for_each(|(o, m)| *o ^= m);
        Ok(ProtectedTemplate { storage_key_id: Some(self.id.clone()), bits: hex::encode(out), ..t.clone() })
    }

    /// Stored template → device template (server-side only, for re-keying).
    fn unseal(&self, t: &ProtectedTemplate) -> Result<ProtectedTemplate> {
        if t.storage_key_id.as_deref() != Some(self.id.as_str()) {
            return Err(FacegateError::InvalidInput("template was not sealed with this storage key".into()));
        }
        let mut bits = t.bit_bytes()?;
        bits.iter_mut().zip(&self.mask).for_each(|(o, m)| *o ^= m);
        let mut out = vec![0u8; BITS / 8];
        for (i, &p) in self.permutation.iter().enumerate() {
            if bits[i / 8] >> (i % 8) & 1 == 1 {
                out[p / 8] |= 1 << (p % 8);
            }
        }
        Ok(ProtectedTemplate { storage_key_id: None, bits: hex::encode(out), ..t.clone() })
    }

    /// Renewal without a new capture: re-seal a stored template under a new key.
    pub fn rekey(&self, t: &ProtectedTemplate, new_key: &StorageKey) -> Result<ProtectedTemplate> {
        new_key.seal(&self.unseal(t)?)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn unit(v: Vec<f32>) -> Embedding {
        let n = v.iter().map(|a| a * a).sum::<f32>().sqrt();
        Embedding(v.into_iter().map(|a| a / n).collect())
    }

    fn random_embedding(seed: u64, dim: usize) -> Embedding {
        let mut rng = ChaCha20Rng::seed_from_u64(seed);
        unit((0..dim).map(|_| gaussian(&mut rng)).collect())
    }

    #[test]
    fn projection_rows_are_orthonormal_within_a_block() {
        let k = TransformKey::new(&[7; 32], 16);
        assert_eq!(k.rows.len(), BITS);
        for i in 0..16 {
            for j in 0..16 {
                let d: f32 = k.rows[i].iter().zip(&k.rows[j]).map(|(a, b)| a * b).sum();
                assert!((d - if i == j { 1.0 } else { 0.0 }).abs() < 1e-4, "{i} {j} {d}");
            }
        }
    }

    #[test]
    fn hamming_estimates_the_angle_and_storage_sealing_preserves_it() {
        let k = TransformKey::new(&[1; 32], 256);
        let s = StorageKey::new(&[2; 32]);
        let a = random_embedding(1, 256);
        let noise = random_embedding(2, 256);
        let b = unit(a.0.iter().zip(&noise.0).map(|(x, n)| x + 0.8 * n).collect());
        let (ta, tb) = (k.protect(&a).unwrap(), k.protect(&b).unwrap());
        let est = ta.cosine_estimate(&tb).unwrap();
        assert!((est - a.cosine(&b)).abs() < 0.12, "estimate {est} vs {}", a.cosine(&b));
        let (sa, sb) = (s.seal(&ta).unwrap(), s.seal(&tb).unwrap());
        assert_eq!(sa.hamming_fraction(&sb).unwrap(), ta.hamming_fraction(&tb).unwrap());
        assert_ne!(sa.bits, ta.bits);
        assert!(sa.hamming_fraction(&ta).is_err(), "sealed and unsealed never compare");
        // re-keying keeps distances and changes every stored string
        let s2 = StorageKey::new(&[3; 32]);
        let (ra, rb) = (s.rekey(&sa, &s2).unwrap(), s.rekey(&sb, &s2).unwrap());
        assert_eq!(ra.hamming_fraction(&rb).unwrap(), sa.hamming_fraction(&sb).unwrap());
        assert_eq!(ra, s2.seal(&ta).unwrap());
        assert!(s2.rekey(&sa, &s).is_err(), "wrong old key");
    }

    #[test]
    fn the_distance_threshold_is_compares_decision() {
        let k = TransformKey::new(&[1; 32], 64);
        let cal = crate::matching::DEFAULT_CALIBRATION;
        let d = max_matching_distance(&cal).unwrap();
        assert!(d > 0 && d < BITS as u32 / 2, "{d}");
        // templates exactly d and d + 1 bits apart: compare agrees with the distance rule
        let t = k.protect(&random_embedding(5, 64)).unwrap();
        let flipped = |n: u32| {
            let mut b = t.bit_bytes().unwrap();
            (0..n as usize).for_each(|i| b[i / 8] ^= 1 << (i % 8));
            ProtectedTemplate { bits: hex::encode(b), ..t.clone() }
        };
        assert!(t.compare(&flipped(d), &cal).unwrap().same_person);
        assert!(!t.compare(&flipped(d + 1), &cal).unwrap().same_person);
        assert_eq!(t.compare(&flipped(d), &cal).unwrap().score, score_of_distance(d, &cal));
        assert_eq!(max_matching_distance(&Calibration { threshold: 1.0, ..cal }), None);
    }

    #[test]
    fn malformed_templates_are_typed_errors() {
        let k = TransformKey::new(&[1; 32], 8);
        let t = k.protect(&random_embedding(1, 8)).unwrap();
        let short = ProtectedTemplate { bits: "abcd".into(), ..t.clone() };
        assert!(short.hamming_fraction(&t).is_err());
        let other_scheme = ProtectedTemplate { scheme: "md5".into(), ..t.clone() };
        assert!(other_scheme.bit_bytes().is_err());
        assert!(k.protect(&random_embedding(1, 9)).is_err());
        assert!(TransformKey::from_hex("00ff", 8).is_err());
        assert!(serde_json::from_str::<ProtectedTemplate>(r#"{"scheme":"x","transform_key_id":"a","bits":"00","embedding":[1]}"#).is_err());
    }
}
