//! Signed, nonce-bound verification results.
//!
//! The widget builds a [`VerificationResult`] on the device and signs it with
//! a per-session Ed25519 key generated there (the public half is registered
//! with the server when the session starts). The signature covers the RFC 8785
//! (JCS) canonical JSON of the result, prefixed by a domain-separation tag,
//! so the same result always gives the same bytes on every platform. On the
//! wire the result travels *in* its canonical form (`{"result":<canonical
//! JSON>,"signature":"<hex>"}`); the server rejects any other encoding, so
//! every single changed byte is either malformed or a bad signature, and
//! verifies with [`SignedResult::verify`].
//!
//! What a valid signature proves: this result was produced by the holder of
//! the session's device key, for this session and nonce, with these models;
//! it was not altered or replayed in transit. What it does not prove: that
//! the client software was honest (see the README's threat model).

use crate::challenge::{Step, StepPassed, TrackSample};
use crate::error::{FacegateError, Result};
use crate::escrow::SealedEvidence;
use crate::template::ProtectedTemplate;
use ed25519_dalek::{Signature, Signer, SigningKey, VerifyingKey};
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;

/// 2: templates of the v2 scheme (2,048 bits of the mobilefacenet embedding).
pub const PROTOCOL_VERSION: u32 = 2;
/// Signed bytes are `DOMAIN || canonical JSON`, so a facegate signature can
/// never be replayed as a signature over some other protocol's message.
const DOMAIN: &[u8] = b"facegate/verification-result/v1\n";

/// Active-liveness evidence: the seed's steps, when each was passed, and the
/// per-frame head-pose / eye-openness track (no pixels) the server re-checks.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ActiveLiveness {
    pub steps: Vec<Step>,
    pub transcript: Vec<StepPassed>,
    pub track: Vec<TrackSample>,
}

/// The decision the client reached (the server applies its own policy).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ClientDecision {
    pub pass: bool,
    pub reason: String,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct VerificationResult {
    pub version: u32,
    pub session_id: String,
    /// The server's single-use nonce for this session.
    pub nonce: String,
    /// Milliseconds since the Unix epoch, device clock.
    pub issued_at_ms: u64,
    /// Calibrated 1:1 score, live face against the ID photo, in [0,1].
    pub match_score: f32,
    /// Passive liveness aggregated over the challenge frames, in [0,1].
    pub passive_liveness: f32,
    /// The screen-replay cue (`replay`), median over the challenge's
    /// detection frames; absent when no frame had a face large enough.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub screen_grid: Option<f32>,
    pub active_liveness: ActiveLiveness,
    /// Model name → sha256 of the model bytes actually used.
    pub models: BTreeMap<String, String>,
    pub widget_version: String,
    pub template: ProtectedTemplate,
    pub decision: ClientDecision,
    /// Hex Ed25519 public key of the device key that signs this result.
    pub device_public_key: String,
    /// Opt-in evidence escrow, sealed to the carrier's key.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub evidence: Option<SealedEvidence>,
}

impl VerificationResult {
    /// RFC 8785 canonical JSON: sorted keys, no whitespace, ECMAScript numbers.
    pub fn canonical_bytes(&self) -> Result<Vec<u8>> {
        serde_json_canonicalizer::to_vec(self).map_err(|e| FacegateError::InvalidInput(format!("cannot canonicalise result: {e}")))
    }

    fn signed_message(&self) -> Result<Vec<u8>> {
        let mut m = DOMAIN.to_vec();
        m.extend(self.canonical_bytes()?);
        Ok(m)
    }
}

#[derive(Debug, Clone, PartialEq)]
pub struct SignedResult {
    pub result: VerificationResult,
    /// Lower-case hex Ed25519 signature over `DOMAIN || canonical_bytes(result)`.
    pub signature: String,
}

/// The wire form, read without re-encoding the result.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Wire<'a> {
    #[serde(borrow)]
    result: &'a serde_json::value::RawValue,
    signature: String,
}

/// Why a signed result is refused: stable reason codes for the server.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SignatureError {
    #[error("malformed signed result: {0}")]
    Malformed(String),
    #[error("result is signed by a different key than the session registered")]
    WrongKey,
    #[error("signature does not verify")]
    BadSignature,
}

impl SignatureError {
    pub fn code(&self) -> &'static str {
        match self {
            SignatureError::Malformed(_) => "malformed_result",
            SignatureError::WrongKey => "wrong_device_key",
            SignatureError::BadSignature => "bad_signature",
        }
    }
}

impl SignedResult {
    /// The wire form: the result in canonical JSON, then the signature.
    pub fn to_json(&self) -> Result<String> {
        let canonical = String::from_utf8(self.result.canonical_bytes()?).expect("JSON is UTF-8");
        Ok(format!(r#"{{"result":{canonical},"signature":"{}"}}"#, self.signature))
    }

    /// Strict parse of the wire form: unknown fields anywhere, a result not
    /// in canonical form, or a signature not in lower-case hex are rejected.
    pub fn from_json(bytes: &[u8]) -> std::result::Result<Self, SignatureError> {
        let malformed = |m: String| SignatureError::Malformed(m);
        let wire: Wire = serde_json::from_slice(bytes).map_err(|e| malformed(e.to_string()))?;
        let result: VerificationResult = serde_json::from_str(wire.result.get()).map_err(|e| malformed(e.to_string()))?;
        if result.canonical_bytes().map_err(|e| malformed(e.to_string()))? != wire.result.get().as_bytes() {
            return Err(malformed("result is not in canonical (RFC 8785) form".into()));
        }
        if !wire.signature.bytes().all(|c| c.is_ascii_digit() || (b'a'..=b'f').contains(&c)) {
            return Err(malformed("signature must be lower-case hex".into()));
        }
        Ok(SignedResult { result, signature: wire.signature })
    }

    /// Check the signature against the key the session registered.
    pub fn verify(&self, expected_public_key_hex: &str) -> std::result::Result<&VerificationResult, SignatureError> {
        if !constant_time_eq(self.result.device_public_key.as_bytes(), expected_public_key_hex.as_bytes()) {
            return Err(SignatureError::WrongKey);
        }
        let key = parse_public_key(expected_public_key_hex).map_err(|e| SignatureError::Malformed(e.to_string()))?;
        let sig_bytes: [u8; 64] = hex::decode(&self.signature)
            .ok()
            .and_then(|b| b.try_into().ok())
            .ok_or_else(|| SignatureError::Malformed("signature must be 64 bytes of hex".into()))?;
        let message = self.result.signed_message().map_err(|e| SignatureError::Malformed(e.to_string()))?;
        key.verify_strict(&message, &Signature::from_bytes(&sig_bytes)).map_err(|_| SignatureError::BadSignature)?;
        Ok(&self.result)
    }
}

/// Byte comparison whose time does not depend on where the inputs differ.
pub fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    use subtle::ConstantTimeEq;
    a.len() == b.len() && bool::from(a.ct_eq(b))
}

pub fn parse_public_key(hex_key: &str) -> Result<VerifyingKey> {
    let bytes: [u8; 32] = hex::decode(hex_key)
        .ok()
        .and_then(|b| b.try_into().ok())
        .ok_or_else(|| FacegateError::InvalidInput("public key must be 32 bytes of hex".into()))?;
    VerifyingKey::from_bytes(&bytes).map_err(|e| FacegateError::InvalidInput(format!("not an Ed25519 public key: {e}")))
}

/// The per-session key pair, made on the device and never sent anywhere.
pub struct DeviceKey(SigningKey);

impl DeviceKey {
    /// A fresh key from the platform's cryptographic RNG (`crypto.getRandomValues` in browsers).
    pub fn generate() -> Result<Self> {
        let mut seed = [0u8; 32];
        getrandom::getrandom(&mut seed).map_err(|e| FacegateError::InvalidInput(format!("no secure random source: {e}")))?;
        Ok(DeviceKey(SigningKey::from_bytes(&seed)))
    }

    /// Deterministic key, for test vectors only.
    pub fn from_seed(seed: [u8; 32]) -> Self {
        DeviceKey(SigningKey::from_bytes(&seed))
    }

    pub fn public_key_hex(&self) -> String {
        hex::encode(self.0.verifying_key().as_bytes())
    }

    /// Sign a result; its `device_public_key` must be this key's.
    pub fn sign(&self, result: VerificationResult) -> Result<SignedResult> {
        if result.device_public_key != self.public_key_hex() {
            return Err(FacegateError::InvalidInput("result names another device key".into()));
        }
        let sig = self.0.sign(&result.signed_message()?);
        Ok(SignedResult { result, signature: hex::encode(sig.to_bytes()) })
    }
}

/// A fixed result for the cross-platform test vector (native and wasm must
/// produce identical canonical bytes and signature).
pub fn test_vector_result(device_public_key: String) -> VerificationResult {
    let t = |t_ms, yaw, eyes| TrackSample { t_ms, yaw, pitch: -3.25, left_openness: eyes, right_openness: eyes };
    VerificationResult {
        version: PROTOCOL_VERSION,
        session_id: "sess_0123456789abcdef".into(),
        nonce: "6e6f6e63652d746573742d766563746f72".into(),
        issued_at_ms: 1_795_000_000_000,
        match_score: 0.9312,
        passive_liveness: 0.4375,
        screen_grid: None,
        active_liveness: ActiveLiveness {
            steps: vec![Step::TurnLeft, Step::Blink],
            transcript: vec![StepPassed { step: Step::TurnLeft, passed_ms: 66 }, StepPassed { step: Step::Blink, passed_ms: 198 }],
            track: vec![t(0, 0.5, 0.9), t(33, -12.1, 0.9), t(66, -24.7, 0.88), t(99, -3.0, 0.91), t(132, 0.1, 0.9), t(165, 0.2, 0.05), t(198, 0.0, 0.93)],
        },
        models: [("yunet_s_320", "a".repeat(64)), ("mobilefacenet", "b".repeat(64))].into_iter().map(|(k, v)| (k.to_string(), v)).collect(),
        widget_version: "facegate-widget/0.1.0".into(),
        template: ProtectedTemplate {
            scheme: crate::template::SCHEME.into(),
            transform_key_id: "0011223344556677".into(),
            storage_key_id: None,
            bits: "5a".repeat(crate::template::BITS / 8),
        },
        decision: ClientDecision { pass: true, reason: "ok".into() },
        device_public_key,
        evidence: None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn signed() -> (DeviceKey, SignedResult) {
        let key = DeviceKey::from_seed([7; 32]);
        let r = test_vector_result(key.public_key_hex());
        let s = key.sign(r).unwrap();
        (key, s)
    }

    #[test]
    fn round_trip_through_json_verifies() {
        let (key, s) = signed();
        let wire = s.to_json().unwrap();
        let back = SignedResult::from_json(wire.as_bytes()).unwrap();
        assert_eq!(back.verify(&key.public_key_hex()).unwrap(), &s.result);
    }

    #[test]
    fn canonical_bytes_are_sorted_and_stable() {
        let (_, s) = signed();
        let c = s.result.canonical_bytes().unwrap();
        let text = String::from_utf8(c.clone()).unwrap();
        assert!(text.starts_with(r#"{"active_liveness":{"steps":["turn_left","blink"]"#), "{text}");
        assert!(!text.contains(' '));
        // the same values in another encoding (pretty, keys reordered) are refused on the wire
        let pretty = format!(r#"{{"signature":"{}","result":{}}}"#, s.signature, serde_json::to_string_pretty(&s.result).unwrap());
        assert!(matches!(SignedResult::from_json(pretty.as_bytes()), Err(SignatureError::Malformed(_))));
    }

    #[test]
    fn every_changed_byte_fails() {
        let (key, s) = signed();
        let pk = key.public_key_hex();
        let wire = s.to_json().unwrap().into_bytes();
        for i in 0..wire.len() {
            for flip in [0x01u8, 0x20, 0x80] {
                let mut m = wire.clone();
                m[i] ^= flip;
                let verdict = SignedResult::from_json(&m).and_then(|r| r.verify(&pk).map(|_| ()));
                assert!(verdict.is_err(), "byte {i} ^ {flip:#x} still verifies");
            }
        }
    }

    #[test]
    fn wrong_key_fails() {
        let (_, s) = signed();
        let other = DeviceKey::from_seed([8; 32]);
        assert_eq!(s.verify(&other.public_key_hex()).unwrap_err(), SignatureError::WrongKey);
        // an attacker re-signs with their own key but claims the session's key
        let mut r = s.result.clone();
        r.match_score = 0.99;
        let forged_sig = other.0.sign(&r.signed_message().unwrap());
        let forged = SignedResult { result: r, signature: hex::encode(forged_sig.to_bytes()) };
        assert_eq!(forged.verify(&s.result.device_public_key).unwrap_err(), SignatureError::BadSignature);
        assert!(DeviceKey::generate().unwrap().public_key_hex() != DeviceKey::generate().unwrap().public_key_hex());
    }

    #[test]
    fn unknown_fields_are_rejected() {
        let (_, s) = signed();
        let mut v: serde_json::Value = serde_json::from_str(&s.to_json().unwrap()).unwrap();
        v["result"]["raw_embedding"] = serde_json::json!([0.1, 0.2]);
        assert!(matches!(SignedResult::from_json(v.to_string().as_bytes()), Err(SignatureError::Malformed(_))));
        let mut v: serde_json::Value = serde_json::from_str(&s.to_json().unwrap()).unwrap();
        v["image"] = serde_json::json!("data:image/jpeg;base64,/9j/");
        assert!(matches!(SignedResult::from_json(v.to_string().as_bytes()), Err(SignatureError::Malformed(_))));
    }

    /// The cross-platform vector: tests/vectors/signed_result.json holds the
    /// expected signed result; tests/wasm checks the wasm build against it.
    #[test]
    fn test_vector_matches_the_committed_file() {
        let (_, s) = signed();
        let path = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/vectors/signed_result.json");
        if std::env::var_os("FACEGATE_WRITE_VECTORS").is_some() {
            // regenerate after a deliberate protocol change (then bump PROTOCOL_VERSION)
            let v = serde_json::json!({"device_seed": hex::encode([7u8; 32]), "wire": s.to_json().unwrap()});
            std::fs::write(path, serde_json::to_string_pretty(&v).unwrap() + "\n").unwrap();
        }
        let expected: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap();
        assert_eq!(expected["device_seed"].as_str().unwrap(), hex::encode([7u8; 32]));
        assert_eq!(expected["wire"].as_str().unwrap(), s.to_json().unwrap());
    }
}
