//! Face detection with YuNet (libfacedetection.train): boxes, scores and five
//! landmarks in source-image coordinates, for any input size.
//!
//! The network has a fixed 320x320 input. A frame of any aspect ratio is
//! letterboxed: scaled to fit, placed top-left, the rest left black, so faces
//! keep their proportions; outputs are divided by the same scale.

use crate::align::{to_nchw, PixelNorm};
use crate::error::Result;
#[cfg(feature = "inference")]
use crate::runtime::OnnxModel;
use image::{imageops, RgbImage};
use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Detection {
    /// `[x, y, width, height]` in source pixels.
    #[serde(rename = "box")]
    pub bbox: [f32; 4],
    pub score: f32,
    /// Eye, eye, nose tip, mouth corner, mouth corner, left to right in the image.
    pub landmarks: [[f32; 2]; 5],
}

impl Detection {
    pub fn area(&self) -> f32 {
        self.bbox[2].max(0.0) * self.bbox[3].max(0.0)
    }

    pub fn center(&self) -> [f32; 2] {
        [self.bbox[0] + self.bbox[2] / 2.0, self.bbox[1] + self.bbox[3] / 2.0]
    }

    fn iou(&self, o: &Detection) -> f32 {
        box_iou(self.bbox, o.bbox)
    }
}

/// Intersection over union of two `[x, y, w, h]` boxes.
pub fn box_iou(a: [f32; 4], b: [f32; 4]) -> f32 {
    let iw = ((a[0] + a[2]).min(b[0] + b[2]) - a[0].max(b[0])).max(0.0);
    let ih = ((a[1] + a[3]).min(b[1] + b[3]) - a[1].max(b[1])).max(0.0);
    let inter = iw * ih;
    inter / (a[2].max(0.0) * a[3].max(0.0) + b[2].max(0.0) * b[3].max(0.0) - inter).max(1e-6)
}

/// YuNet's contract: BGR, raw 0..255 values, no normalisation.
const YUNET_NORM: PixelNorm = PixelNorm { mean: [0.0; 3], std: [1.0; 3], bgr: true };
const STRIDES: [usize; 3] = [8, 16, 32];

#[cfg(feature = "inference")]
pub struct FaceDetector {
    model: OnnxModel,
    size: usize,
    /// Minimum score to keep a face. 0.6 trades a few false positives for recall
    /// on small and turned faces; the widget's quality gate rejects weak faces anyway.
    pub score_threshold: f32,
    pub nms_iou: f32,
}

#[cfg(feature = "inference")]
impl FaceDetector {
    pub fn new(model_bytes: &[u8], name: &str) -> Result<Self> {
        let size = 320;
        let model = OnnxModel::load(name, model_bytes, [1, 3, size, size])?;
        Ok(FaceDetector { model, size, score_threshold: 0.6, nms_iou: 0.3 })
    }

    /// All faces, best score first.
    pub fn detect(&self, img: &RgbImage) -> Result<Vec<Detection>> {
        let (w, h) = (img.width() as f32, img.height() as f32);
        if w < 1.0 || h < 1.0 {
            return Ok(vec![]);
        }
        let scale = (self.size as f32 / w).min(self.size as f32 / h);
        let (rw, rh) = (((w * scale).round() as u32).clamp(1, self.size as u32), ((h * scale).round() as u32).clamp(1, self.size as u32));
        // Through DynamicImage on purpose: its resize is compiled inside the
        // `image` crate, which the size-optimised browser build optimises
        // for speed (Cargo.toml, profile.wasm); a generic `imageops::resize`
        // call would be compiled here for size and took 10 ms a frame in wasm.
        let resized = image::DynamicImage::ImageRgb8(img.clone()).resize_exact(rw, rh, imageops::FilterType::Triangle).into_rgb8();
        let mut canvas = RgbImage::new(self.size as u32, self.size as u32);
        imageops::replace(&mut canvas, &resized, 0, 0);
        let outputs = self.model.run("detect", to_nchw(&canvas, &YUNET_NORM))?;
        let mut faces = self.decode(&outputs, scale);
        faces.retain(|f| f.bbox[2] > 1.0 && f.bbox[3] > 1.0);
        for f in faces.iter_mut() {
            clip_to_image(f, w, h);
        }
        Ok(faces)
    }

    /// Outputs come as cls_8,16,32, obj_8,16,32, bbox_8,16,32, kps_8,16,32.
    fn decode(&self, out: &[Vec<f32>], scale: f32) -> Vec<Detection> {
        let mut faces = Vec::new();
        for (si, &stride) in STRIDES.iter().enumerate() {
            let cols = self.size / stride;
            let (cls, obj, bbox, kps) = (&out[si], &out[3 + si], &out[6 + si], &out[9 + si]);
            for idx in 0..cls.len() {
                let score = (cls[idx].clamp(0.0, 1.0) * obj[idx].clamp(0.0, 1.0)).sqrt();
                if score < self.score_threshold {
                    continue;
                }
                let (c, r) = ((idx % cols) as f32, (idx / cols) as f32);
                let s = stride as f32;
                let b = &bbox[idx * 4..idx * 4 + 4];
                let (cx, cy) = ((c + b[0]) * s, (r + b[1]) * s);
                let (bw, bh) = (b[2].exp() * s, b[3].exp() * s);
                let k = &kps[idx * 10..idx * 10 + 10];
                let mut landmarks = [[0.0f32; 2]; 5];
                for (j, lm) in landmarks.iter_mut().enumerate() {
                    *lm = [(k[2 * j] + c) * s / scale, (k[2 * j + 1] + r) * s / scale];
                }
                faces.push(Detection {
                    bbox: [(cx - bw / 2.0) / scale, (cy - bh / 2.0) / scale, bw / scale, bh / scale],
                    score,
                    landmarks,
                });
            }
        }
        non_max_suppression(faces, self.nms_iou)
    }
}

fn clip_to_image(f: &mut Detection, w: f32, h: f32) {
    let x1 = f.bbox[0].clamp(0.0, w);
    let y1 = f.bbox[1].clamp(0.0, h);
    let x2 = (f.bbox[0] + f.bbox[2]).clamp(0.0, w);
    let y2 = (f.bbox[1] + f.bbox[3]).clamp(0.0, h);
    f.bbox = [x1, y1, x2 - x1, y2 - y1];
}

pub fn non_max_suppression(mut faces: Vec<Detection>, iou: f32) -> Vec<Detection> {
    faces.sort_by(|a, b| b.score.total_cmp(&a.score));
    let mut kept: Vec<Detection> = Vec::new();
    for f in faces {
        if kept.iter().all(|k| k.iou(&f) <= iou) {
            kept.push(f);
        }
    }
    kept
}

/// The face a 1:1 check is about: the largest one.
pub fn largest(faces: &[Detection]) -> Option<&Detection> {
    faces.iter().max_by(|a, b| a.area().total_cmp(&b.area()))
}
