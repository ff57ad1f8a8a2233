//! Passive liveness (presentation-attack detection) from a single frame with
//! Silent-Face-Anti-Spoofing's MiniFASNet pair (minivision, Apache-2.0).
//!
//! Each model looks at the face with a different amount of context around it
//! (the box scaled by 2.7 and by 4.0): print and screen attacks betray
//! themselves by moiré, paper texture, borders and flat lighting in that
//! context. The two softmax outputs are averaged, as upstream does; the score
//! is the probability of the bona fide class.
//!
//! Trained by its authors on their own print/replay data set (not published);
//! it was not trained on the attack types facegate may meet on phones (high
//! quality OLED replays, 3-D masks, injected video), so it is one signal among
//! several: the active challenge and the server's policy are the others.

use crate::align::{to_nchw, warp_affine, Affine, PixelNorm};
use crate::detect::Detection;
use crate::error::Result;
#[cfg(feature = "inference")]
use crate::runtime::OnnxModel;
use image::RgbImage;

/// MiniFASNet's contract: BGR, raw 0..255.
const FAS_NORM: PixelNorm = PixelNorm { mean: [0.0; 3], std: [1.0; 3], bgr: true };
const FAS_SIZE: u32 = 80;
const BONA_FIDE_CLASS: usize = 1;

#[cfg(feature = "inference")]
pub struct LivenessModel {
    model: OnnxModel,
    /// How much of the surroundings of the face box this model sees.
    context_scale: f32,
}

#[cfg(feature = "inference")]
pub struct PassiveLiveness {
    models: Vec<LivenessModel>,
    /// Score at or above which a frame counts as bona fide (chosen on nuaa-dev, see models/README.md).
    pub threshold: f32,
}

/// Default bona fide threshold. On nuaa-dev (72 bona fide webcam frames, 72
/// printed-photo attacks) every attack scores below 0.005 and every bona fide
/// frame above 0.08; 0.05 leaves an order of magnitude of margin on the attack
/// side, where unseen attack types are expected to score higher.
pub const DEFAULT_LIVENESS_THRESHOLD: f32 = 0.05;

pub const LIVENESS_MODELS: [(&str, f32); 2] = [("minifasnet_v2_2.7", 2.7), ("minifasnet_v1se_4.0", 4.0)];

#[cfg(feature = "inference")]
impl PassiveLiveness {
    /// `models`: (manifest name, verified bytes) pairs, in `LIVENESS_MODELS` order.
    pub fn new(models: &[(&str, Vec<u8>)]) -> Result<Self> {
        let mut loaded = Vec::new();
        for (name, bytes) in models {
            let context_scale = LIVENESS_MODELS.iter().find(|(n, _)| n == name).map(|(_, s)| *s).unwrap_or(2.7);
            let model = OnnxModel::load(name, bytes, [1, 3, FAS_SIZE as usize, FAS_SIZE as usize])?;
            loaded.push(LivenessModel { model, context_scale });
        }
        Ok(PassiveLiveness { models: loaded, threshold: DEFAULT_LIVENESS_THRESHOLD })
    }

    /// Probability in [0,1] that `face` in `img` is a live person, not a print or screen.
    pub fn score(&self, img: &RgbImage, face: &Detection) -> Result<f32> {
        self.score_crops(&self.crops(img, face))
    }

    /// Each model's input for `face`: cutting them is cheap, running the
    /// models is not, so a session may cut them on a frame and score them
    /// later (`session`, the blink step).
    pub fn crops(&self, img: &RgbImage, face: &Detection) -> Vec<RgbImage> {
        self.models.iter().map(|m| context_crop(img, face, m.context_scale)).collect()
    }

    /// `score` on the crops `crops` cut, in the same model order.
    pub fn score_crops(&self, crops: &[RgbImage]) -> Result<f32> {
        let mut sum = 0.0;
        for (m, crop) in self.models.iter().zip(crops) {
            let out = m.model.run("liveness", to_nchw(crop, &FAS_NORM))?;
            sum += out[0][BONA_FIDE_CLASS];
        }
        Ok(sum / self.models.len().max(1) as f32)
    }
}

/// Upstream's crop: the box scaled about its centre (less if the image is too
/// small), shifted to stay inside the image, resized to 80x80.
pub fn context_crop(img: &RgbImage, face: &Detection, scale: f32) -> RgbImage {
    let (sw, sh) = (img.width() as f32, img.height() as f32);
    let [x, y, w, h] = face.bbox;
    let (w, h) = (w.max(1.0), h.max(1.0));
    let scale = scale.min((sh - 1.0) / h).min((sw - 1.0) / w).max(0.1);
    let (nw, nh) = (w * scale, h * scale);
    let (cx, cy) = (x + w / 2.0, y + h / 2.0);
    let (mut left, mut top, mut right, mut bottom) = (cx - nw / 2.0, cy - nh / 2.0, cx + nw / 2.0, cy + nh / 2.0);
    if left < 0.0 {
        right -= left;
        left = 0.0;
    }
    if top < 0.0 {
        bottom -= top;
        top = 0.0;
    }
    if right > sw - 1.0 {
        left -= right - sw + 1.0;
        right = sw - 1.0;
    }
    if bottom > sh - 1.0 {
        top -= bottom - sh + 1.0;
        bottom = sh - 1.0;
    }
    let (cw, ch) = ((right - left + 1.0).max(1.0), (bottom - top + 1.0).max(1.0));
    let (kx, ky) = (FAS_SIZE as f32 / cw, FAS_SIZE as f32 / ch);
    warp_affine(img, &Affine([kx, 0.0, -left * kx, 0.0, ky, -top * ky]), FAS_SIZE, FAS_SIZE)
}
