//! Capture-quality checks for one face, each failing check with a reason code
//! a UI can turn into a plain-language hint ("move closer", "more light").
//!
//! The thresholds are capture guidance, not security decisions: they are set
//! so that a face that passes gives the embedding and liveness models what
//! they were trained on (a sharp, evenly lit, roughly frontal face of at
//! least ~80 px), and they can be overridden per deployment.

use crate::align::{distance, Affine};
use crate::align::warp_affine;
use crate::detect::Detection;
use image::RgbImage;
use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum QualityReason {
    FaceTooSmall,
    FaceTooClose,
    FaceCutOff,
    Blurry,
    TooDark,
    TooBright,
    LowContrast,
    NotFrontal,
    HeadTilted,
    FaceOccluded,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct QualityThresholds {
    pub min_face_px: f32,
    pub max_face_fraction: f32,
    pub min_sharpness: f32,
    pub min_brightness: f32,
    pub max_brightness: f32,
    pub min_contrast: f32,
    pub max_yaw_deg: f32,
    pub max_pitch_deg: f32,
    pub max_roll_deg: f32,
    pub min_detector_score: f32,
}

impl Default for QualityThresholds {
    fn default() -> Self {
        QualityThresholds {
            min_face_px: 80.0,
            max_face_fraction: 0.9,
            min_sharpness: 40.0,
            min_brightness: 60.0,
            max_brightness: 205.0,
            min_contrast: 20.0,
            max_yaw_deg: 25.0,
            max_pitch_deg: 25.0,
            max_roll_deg: 20.0,
            min_detector_score: 0.75,
        }
    }
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Quality {
    pub ok: bool,
    pub reasons: Vec<QualityReason>,
    /// Shorter side of the face box, pixels.
    pub face_px: f32,
    /// Variance of the Laplacian of the normalised grey face crop.
    pub sharpness: f32,
    /// Mean luma of the face crop, 0..255.
    pub brightness: f32,
    /// Standard deviation of luma in the face crop.
    pub contrast: f32,
    /// Coarse head pose from the five landmarks, degrees.
    pub yaw: f32,
    pub pitch: f32,
    pub roll: f32,
}

/// Coarse (yaw, pitch, roll) in degrees from five landmarks: the nose tip's
/// offset from the eye midpoint relative to the eye distance, and the eye
/// line's angle. Positive yaw: nose towards the image's right.
const NEUTRAL_NOSE_RATIO: f32 = 0.58;

pub fn pose_from_five(lm: &[[f32; 2]; 5]) -> (f32, f32, f32) {
    let (le, re, nose) = (lm[0], lm[1], lm[2]);
    let mouth = [(lm[3][0] + lm[4][0]) / 2.0, (lm[3][1] + lm[4][1]) / 2.0];
    let eyes = [(le[0] + re[0]) / 2.0, (le[1] + re[1]) / 2.0];
    let roll = (re[1] - le[1]).atan2(re[0] - le[0]);
    // express nose in the eye-aligned frame so roll does not leak into yaw
    let (s, c) = (-roll).sin_cos();
    let rot = |p: [f32; 2]| [c * (p[0] - eyes[0]) - s * (p[1] - eyes[1]), s * (p[0] - eyes[0]) + c * (p[1] - eyes[1])];
    let (n, m) = (rot(nose), rot(mouth));
    let eye_dist = distance(le, re).max(1e-3);
    // frontal faces put the nose tip on the eye midline; ~0.6 eye-distances is a
    // quarter turn in the ArcFace template geometry
    let yaw = (n[0] / eye_dist / 0.6).clamp(-1.0, 1.0).asin().to_degrees();
    // YuNet puts the nose tip at ~0.58 of the eye-to-mouth distance in a frontal face
    let ratio = if m[1].abs() > 1e-3 { n[1] / m[1] } else { NEUTRAL_NOSE_RATIO };
    let pitch = ((ratio - NEUTRAL_NOSE_RATIO) / 0.35).clamp(-1.0, 1.0).asin().to_degrees();
    (yaw, pitch, roll.to_degrees())
}

/// Grey 64x64 crop of the face box (scale-normalised so that sharpness is
/// comparable across face sizes).
fn face_luma(img: &RgbImage, face: &Detection) -> Vec<f32> {
    const N: u32 = 64;
    let [x, y, w, h] = face.bbox;
    let (kx, ky) = (N as f32 / w.max(1.0), N as f32 / h.max(1.0));
    let crop = warp_affine(img, &Affine([kx, 0.0, -x * kx, 0.0, ky, -y * ky]), N, N);
    crop.pixels().map(|p| 0.299 * p[0] as f32 + 0.587 * p[1] as f32 + 0.114 * p[2] as f32).collect()
}

pub fn assess(img: &RgbImage, face: &Detection, t: &QualityThresholds) -> Quality {
    let mut reasons = Vec::new();
    let face_px = face.bbox[2].min(face.bbox[3]);
    let (iw, ih) = (img.width() as f32, img.height() as f32);
    if face_px < t.min_face_px {
        reasons.push(QualityReason::FaceTooSmall);
    }
    if face.bbox[2] > t.max_face_fraction * iw || face.bbox[3] > t.max_face_fraction * ih {
        reasons.push(QualityReason::FaceTooClose);
    }
    let margin = 2.0;
    if face.landmarks.iter().any(|p| p[0] < margin || p[1] < margin || p[0] > iw - margin || p[1] > ih - margin) {
        reasons.push(QualityReason::FaceCutOff);
    }
    let luma = face_luma(img, face);
    let n = luma.len() as f32;
    let brightness = luma.iter().sum::<f32>() / n;
    let contrast = (luma.iter().map(|v| (v - brightness).powi(2)).sum::<f32>() / n).sqrt();
    let sharpness = laplacian_variance(&luma, 64);
    if brightness < t.min_brightness {
        reasons.push(QualityReason::TooDark);
    } else if brightness > t.max_brightness {
        reasons.push(QualityReason::TooBright);
    }
    if contrast < t.min_contrast {
        reasons.push(QualityReason::LowContrast);
    }
    if sharpness < t.min_sharpness {
        reasons.push(QualityReason::Blurry);
    }
    let (yaw, pitch, roll) = pose_from_five(&face.landmarks);
    if yaw.abs() > t.max_yaw_deg || pitch.abs() > t.max_pitch_deg {
        reasons.push(QualityReason::NotFrontal);
    }
    if roll.abs() > t.max_roll_deg {
        reasons.push(QualityReason::HeadTilted);
    }
    // A hand, mask or phone over the face lowers the detector's confidence and
    // pushes landmarks out of place; either is treated as occlusion.
    let [bx, by, bw, bh] = face.bbox;
    let landmarks_outside = face.landmarks.iter().any(|p| {
        p[0] < bx - 0.1 * bw || p[0] > bx + 1.1 * bw || p[1] < by - 0.1 * bh || p[1] > by + 1.1 * bh
    });
    if face.score < t.min_detector_score || landmarks_outside {
        reasons.push(QualityReason::FaceOccluded);
    }
    Quality { ok: reasons.is_empty(), reasons, face_px, sharpness, brightness, contrast, yaw, pitch, roll }
}

fn laplacian_variance(luma: &[f32], n: usize) -> f32 {
    let mut vals = Vec::with_capacity((n - 2) * (n - 2));
    for y in 1..n - 1 {
        for x in 1..n - 1 {
            let c = luma[y * n + x];
            let l = luma[y * n + x - 1] + luma[y * n + x + 1] + luma[(y - 1) * n + x] + luma[(y + 1) * n + x] - 4.0 * c;
            vals.push(l);
        }
    }
    let m = vals.iter().sum::<f32>() / vals.len() as f32;
    vals.iter().map(|v| (v - m).powi(2)).sum::<f32>() / vals.len() as f32
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::align::ARCFACE_112;

    #[test]
    fn template_face_is_frontal() {
        let (yaw, _pitch, roll) = pose_from_five(&ARCFACE_112);
        assert!(yaw.abs() < 3.0 && roll.abs() < 1.0, "{yaw} {roll}");
    }

    #[test]
    fn shifted_nose_reads_as_yaw() {
        let mut lm = ARCFACE_112;
        lm[2][0] += 12.0;
        let (yaw, _, _) = pose_from_five(&lm);
        assert!(yaw > 15.0, "{yaw}");
    }

    #[test]
    fn dark_flat_image_fails_brightness_and_blur() {
        let img = RgbImage::from_pixel(200, 200, image::Rgb([20, 20, 20]));
        let face = Detection {
            bbox: [50.0, 50.0, 100.0, 100.0],
            score: 0.95,
            landmarks: [[80.0, 90.0], [120.0, 90.0], [100.0, 110.0], [85.0, 130.0], [115.0, 130.0]],
        };
        let q = assess(&img, &face, &QualityThresholds::default());
        assert!(!q.ok);
        assert!(q.reasons.contains(&QualityReason::TooDark));
        assert!(q.reasons.contains(&QualityReason::Blurry));
        assert!(q.reasons.contains(&QualityReason::LowContrast));
    }
}
