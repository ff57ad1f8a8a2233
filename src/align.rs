//! Geometry shared by every stage: 2x3 affine transforms, the similarity
//! transform from five landmarks to a model's canonical template, bilinear
//! warping into a crop, and packing a crop into a normalised NCHW tensor.
//!
//! Why not an image-processing crate for the warp: the only operation needed
//! is a bilinear affine sample into a small crop; `imageproc` would bring
//! nalgebra, rand and more into the wasm bundle for those 30 lines.

use image::RgbImage;

/// Row-major 2x3 affine transform: `[a b c; d e f]` maps (x,y) to (ax+by+c, dx+ey+f).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Affine(pub [f32; 6]);

impl Affine {
    pub fn apply(&self, p: [f32; 2]) -> [f32; 2] {
        let m = &self.0;
        [m[0] * p[0] + m[1] * p[1] + m[2], m[3] * p[0] + m[4] * p[1] + m[5]]
    }

    pub fn invert(&self) -> Affine {
        let [a, b, c, d, e, f] = self.0;
        let det = a * e - b * d;
        let (ia, ib, id, ie) = (e / det, -b / det, -d / det, a / det);
        Affine([ia, ib, -(ia * c + ib * f), id, ie, -(id * c + ie * f)])
    }

    /// Scale about the origin, then rotate by `angle` (radians), then translate so that
    /// `src_center` lands on `dst_center`.
    pub fn rotate_scale(src_center: [f32; 2], dst_center: [f32; 2], scale: f32, angle: f32) -> Affine {
        let (s, c) = angle.sin_cos();
        let (a, b, d, e) = (scale * c, -scale * s, scale * s, scale * c);
        Affine([
            a,
            b,
            dst_center[0] - (a * src_center[0] + b * src_center[1]),
            d,
            e,
            dst_center[1] - (d * src_center[0] + e * src_center[1]),
        ])
    }
}

/// The ArcFace / InsightFace 112x112 five-point template (eye, eye, nose tip,
/// mouth corner, mouth corner; left to right in the image).
pub const ARCFACE_112: [[f32; 2]; 5] =
    [[38.2946, 51.6963], [73.5318, 51.5014], [56.0252, 71.7366], [41.5493, 92.3655], [70.7299, 92.2041]];

/// Least-squares similarity transform (rotation, uniform scale, translation)
/// mapping `src` points onto `dst` (Umeyama without reflection). A similarity
/// keeps the face's proportions, which the embedding model relies on.
pub fn similarity_transform(src: &[[f32; 2]], dst: &[[f32; 2]]) -> Affine {
    let n = src.len().min(dst.len()) as f32;
    let mean = |pts: &[[f32; 2]]| {
        let (sx, sy) = pts.iter().fold((0.0, 0.0), |(x, y), p| (x + p[0], y + p[1]));
        [sx / n, sy / n]
    };
    let (ms, md) = (mean(src), mean(dst));
    // For 2-D similarity the closed form is: [a -b; b a] minimising ||A s + t - d||.
    let (mut num_a, mut num_b, mut den) = (0.0f32, 0.0f32, 0.0f32);
    for (s, d) in src.iter().zip(dst) {
        let (sx, sy) = (s[0] - ms[0], s[1] - ms[1]);
        let (dx, dy) = (d[0] - md[0], d[1] - md[1]);
        num_a += sx * dx + sy * dy;
        num_b += sx * dy - sy * dx;
        den += sx * sx + sy * sy;
    }
    let den = den.max(1e-6);
    let (a, b) = (num_a / den, num_b / den);
    Affine([a, -b, md[0] - (a * ms[0] - b * ms[1]), b, a, md[1] - (b * ms[0] + a * ms[1])])
}

/// Sample `src` into a `width`x`height` crop where crop pixel (x,y) comes from
/// `to_crop.invert()` applied to (x,y). Outside the source, pixels are black.
pub fn warp_affine(src: &RgbImage, to_crop: &Affine, width: u32, height: u32) -> RgbImage {
    let inv = to_crop.invert();
    let (sw, sh) = (src.width() as i64, src.height() as i64);
    let data = src.as_raw();
    let mut out = RgbImage::new(width, height);
    let buf: &mut [u8] = &mut out;
    for y in 0..height {
        for x in 0..width {
            // sample at pixel centres
            let p = inv.apply([x as f32 + 0.5, y as f32 + 0.5]);
            let (fx, fy) = (p[0] - 0.5, p[1] - 0.5);
            let (x0, y0) = (fx.floor() as i64, fy.floor() as i64);
            let (wx, wy) = (fx - x0 as f32, fy - y0 as f32);
            let o = ((y * width + x) * 3) as usize;
            for c in 0..3 {
                let px = |xx: i64, yy: i64| -> f32 {
                    if xx < 0 || yy < 0 || xx >= sw || yy >= sh {
                        0.0
                    } else {
                        data[((yy * sw + xx) * 3) as usize + c] as f32
                    }
                };
                let v = (1.0 - wy) * ((1.0 - wx) * px(x0, y0) + wx * px(x0 + 1, y0))
                    + wy * ((1.0 - wx) * px(x0, y0 + 1) + wx * px(x0 + 1, y0 + 1));
                buf[o + c] = v.round().clamp(0.0, 255.0) as u8;
            }
        }
    }
    out
}

/// How a model wants its pixels: `(value - mean) / std` per channel, in RGB or BGR order.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct PixelNorm {
    pub mean: [f32; 3],
    pub std: [f32; 3],
    pub bgr: bool,
}

/// Pack an RGB crop into a planar NCHW float buffer.
pub fn to_nchw(img: &RgbImage, norm: &PixelNorm) -> Vec<f32> {
    let plane = (img.width() * img.height()) as usize;
    let mut out = vec![0.0f32; plane * 3];
    for (i, px) in img.as_raw().chunks_exact(3).enumerate() {
        for c in 0..3 {
            let src_c = if norm.bgr { 2 - c } else { c };
            out[c * plane + i] = (px[src_c] as f32 - norm.mean[c]) / norm.std[c];
        }
    }
    out
}

pub fn distance(a: [f32; 2], b: [f32; 2]) -> f32 {
    ((a[0] - b[0]).powi(2) + (a[1] - b[1]).powi(2)).sqrt()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn similarity_recovers_a_known_transform() {
        let t = Affine::rotate_scale([10.0, 20.0], [50.0, 60.0], 1.7, 0.3);
        let src = [[0.0, 0.0], [30.0, 5.0], [12.0, 40.0], [3.0, 9.0], [25.0, 33.0]];
        let dst: Vec<[f32; 2]> = src.iter().map(|p| t.apply(*p)).collect();
        let est = similarity_transform(&src, &dst);
        for (a, b) in est.0.iter().zip(t.0.iter()) {
            assert!((a - b).abs() < 1e-3, "{:?} vs {:?}", est, t);
        }
        let back = est.invert().apply(est.apply([7.0, -3.0]));
        assert!((back[0] - 7.0).abs() < 1e-3 && (back[1] + 3.0).abs() < 1e-3);
    }

    #[test]
    fn warp_identity_keeps_pixels() {
        let mut img = RgbImage::new(8, 8);
        img.put_pixel(3, 4, image::Rgb([200, 100, 50]));
        let out = warp_affine(&img, &Affine([1.0, 0.0, 0.0, 0.0, 1.0, 0.0]), 8, 8);
        assert_eq!(out.get_pixel(3, 4).0, [200, 100, 50]);
        assert_eq!(out.get_pixel(0, 0).0, [0, 0, 0]);
    }
}
