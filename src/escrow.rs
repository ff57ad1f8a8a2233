//! Opt-in evidence escrow: a few small face crops and the challenge track,
//! encrypted on the device to the carrier's X25519 public key (libsodium
//! sealed box: X25519 + XSalsa20-Poly1305, from the `crypto_box` crate).
//!
//! Off by default. A deployment switches it on only where a regulator
//! requires the carrier to keep evidence, and the widget then asks the user's
//! consent before any capture. The server stores the ciphertext as it came,
//! never opens it, and deletes it on its retention schedule; only the
//! carrier's offline key holder can open it. Without escrow no pixel leaves
//! the device.

use crate::challenge::TrackSample;
use crate::error::{FacegateError, Result};
use base64::engine::general_purpose::STANDARD as B64;
use base64::Engine;
use crypto_box::{PublicKey, SecretKey};
use image::RgbImage;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

pub const SCHEME: &str = "x25519-xsalsa20poly1305-sealedbox";
/// Crops are downscaled to at most this many pixels on a side: evidence for
/// a human reviewer, not material for a new biometric enrolment.
pub const MAX_CROP_SIDE: u32 = 160;
/// Hard cap on the sealed package (bytes), so escrow can never become a
/// video upload.
pub const MAX_PLAINTEXT: usize = 96 * 1024;

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SealedEvidence {
    pub scheme: String,
    /// sha256 prefix of the recipient public key (which carrier key opens it).
    pub recipient_key_id: String,
    /// Base64 sealed box.
    pub ciphertext: String,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct EvidenceCrop {
    /// e.g. "id_document", "selfie", "challenge_step_1".
    pub label: String,
    /// Base64 JPEG.
    pub jpeg: String,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct EvidencePackage {
    pub session_id: String,
    pub crops: Vec<EvidenceCrop>,
    pub track: Vec<TrackSample>,
}

fn recipient_key_id(pk: &PublicKey) -> String {
    hex::encode(&Sha256::digest(pk.as_bytes())[..8])
}

fn parse_key(hex_key: &str, what: &str) -> Result<[u8; 32]> {
    hex::decode(hex_key.trim())
        .ok()
        .and_then(|b| b.try_into().ok())
        .ok_or_else(|| FacegateError::InvalidInput(format!("{what} must be 32 bytes of hex")))
}

/// JPEG of a crop, downscaled to `MAX_CROP_SIDE`.
pub fn crop_jpeg(img: &RgbImage) -> Result<Vec<u8>> {
    let scale = (MAX_CROP_SIDE as f32 / img.width().max(img.height()) as f32).min(1.0);
    let (w, h) = (((img.width() as f32 * scale) as u32).max(1), ((img.height() as f32 * scale) as u32).max(1));
    let small = image::imageops::resize(img, w, h, image::imageops::FilterType::Triangle);
    let mut out = Vec::new();
    image::codecs::jpeg::JpegEncoder::new_with_quality(&mut out, 80)
        .encode_image(&small)
        .map_err(|e| FacegateError::InvalidInput(format!("cannot encode crop: {e}")))?;
    Ok(out)
}

impl EvidencePackage {
    pub fn new(session_id: &str, crops: &[(&str, &RgbImage)], track: &[TrackSample]) -> Result<Self> {
        let crops = crops
            .iter()
            .map(|(label, img)| Ok(EvidenceCrop { label: label.to_string(), jpeg: B64.encode(crop_jpeg(img)?) }))
            .collect::<Result<Vec<_>>>()?;
        Ok(EvidencePackage { session_id: session_id.into(), crops, track: track.to_vec() })
    }

    /// Encrypt to the carrier's public key (hex X25519).
    pub fn seal(&self, carrier_public_key_hex: &str) -> Result<SealedEvidence> {
        let pk = PublicKey::from(parse_key(carrier_public_key_hex, "carrier escrow key")?);
        let plain = serde_json::to_vec(self).map_err(|e| FacegateError::InvalidInput(e.to_string()))?;
        if plain.len() > MAX_PLAINTEXT {
            return Err(FacegateError::InvalidInput(format!("evidence is {} bytes, more than {MAX_PLAINTEXT}", plain.len())));
        }
        let sealed = pk
            .seal(&mut crypto_box::aead::OsRng, &plain)
            .map_err(|_| FacegateError::InvalidInput("sealing failed".into()))?;
        Ok(SealedEvidence { scheme: SCHEME.into(), recipient_key_id: recipient_key_id(&pk), ciphertext: B64.encode(sealed) })
    }
}

/// The id that envelopes sealed to this carrier public key (hex) carry, so a
/// server can check an envelope is for the deployment's key without opening it.
pub fn key_id(carrier_public_key_hex: &str) -> Result<String> {
    Ok(recipient_key_id(&PublicKey::from(parse_key(carrier_public_key_hex, "carrier escrow key")?)))
}

/// Largest base64 ciphertext a well-formed envelope can have: the capped
/// plaintext plus the sealed box's 48 bytes of overhead.
pub const MAX_CIPHERTEXT_B64: usize = (MAX_PLAINTEXT + 48).div_ceil(3) * 4;

/// The carrier's escrow key pair (kept offline by the carrier).
pub struct EscrowKeyPair(SecretKey);

impl EscrowKeyPair {
    pub fn generate() -> Self {
        EscrowKeyPair(SecretKey::generate(&mut crypto_box::aead::OsRng))
    }

    pub fn from_secret_hex(hex_key: &str) -> Result<Self> {
        Ok(EscrowKeyPair(SecretKey::from(parse_key(hex_key, "escrow secret key")?)))
    }

    pub fn secret_hex(&self) -> String {
        hex::encode(self.0.to_bytes())
    }

    pub fn public_hex(&self) -> String {
        hex::encode(self.0.public_key().as_bytes())
    }

    pub fn open(&self, sealed: &SealedEvidence) -> Result<EvidencePackage> {
        if sealed.scheme != SCHEME || sealed.recipient_key_id != recipient_key_id(&self.0.public_key()) {
            return Err(FacegateError::InvalidInput("evidence was sealed for another key or scheme".into()));
        }
        let ct = B64.decode(&sealed.ciphertext).map_err(|e| FacegateError::InvalidInput(format!("ciphertext: {e}")))?;
        let plain = self.0.unseal(&ct).map_err(|_| FacegateError::InvalidInput("evidence does not decrypt".into()))?;
        serde_json::from_slice(&plain).map_err(|e| FacegateError::InvalidInput(format!("evidence: {e}")))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn package() -> EvidencePackage {
        let img = RgbImage::from_fn(400, 300, |x, y| image::Rgb([(x % 256) as u8, (y % 256) as u8, 128]));
        let track = [TrackSample { t_ms: 0, yaw: 1.0, pitch: 0.0, left_openness: 0.9, right_openness: 0.9 }];
        EvidencePackage::new("sess_1", &[("selfie", &img)], &track).unwrap()
    }

    #[test]
    fn sealed_evidence_opens_only_with_the_carrier_key() {
        let carrier = EscrowKeyPair::generate();
        let p = package();
        let sealed = p.seal(&carrier.public_hex()).unwrap();
        assert_eq!(carrier.open(&sealed).unwrap(), p);
        let crop = image::load_from_memory(&B64.decode(&p.crops[0].jpeg).unwrap()).unwrap();
        assert!(crop.width() <= MAX_CROP_SIDE && crop.height() <= MAX_CROP_SIDE);
        assert!(EscrowKeyPair::generate().open(&sealed).is_err(), "another key");
        let mut ct = B64.decode(&sealed.ciphertext).unwrap();
        ct[40] ^= 1;
        let tampered = SealedEvidence { ciphertext: B64.encode(ct), ..sealed.clone() };
        assert!(carrier.open(&tampered).is_err(), "tampered ciphertext");
        let again = EscrowKeyPair::from_secret_hex(&carrier.secret_hex()).unwrap();
        assert_eq!(again.open(&sealed).unwrap(), p);
    }
}
