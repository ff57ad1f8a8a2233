//! A physical simulation of filming a screen, for the eval's synthetic
//! screen replays and the browser test of the screen cue: the frame is shown on a grid of red, green and blue
//! sub-pixel stripes with a dark gap between rows (the black matrix), and a
//! camera looks at it slightly tilted, each of its pixels covering more than
//! one screen pixel, through a lens that blurs by `blur_px` of its own
//! pixels. Whether the screen's grid reaches the picture as a moiré depends
//! on that blur and on the pitch, exactly as it does with real cameras; the
//! eval reports both a sharp and a soft lens. Not a substitute for footage
//! of real screens: no refresh flicker, no reflections, no screen gamut.

use image::{Rgb, RgbImage};

/// How the screen is filmed.
#[derive(Debug, Clone, Copy)]
pub struct Capture {
    /// Screen pixels per camera pixel.
    pub screen_px_per_camera_px: f32,
    /// Tilt of the screen's grid against the camera's, degrees.
    pub tilt_deg: f32,
    /// Gaussian blur of the lens, in camera pixels (sigma).
    pub blur_px: f32,
}

impl Capture {
    /// A phone held up to the camera as the eval and the browser test film
    /// it: 1.4 screen pixels per camera pixel, tilted by 2 degrees, through a
    /// lens of the given blur (0.15 sharp, 0.35 soft).
    pub fn held_up(blur_px: f32) -> Capture {
        Capture { screen_px_per_camera_px: 1.4, tilt_deg: 2.0, blur_px }
    }
}

/// Sub-pixels per screen pixel along x (R, G, B stripes) and rows per
/// screen pixel along y, the last row dimmed as the black matrix.
const SUB: usize = 3;
const MATRIX_ROW_LEVEL: f32 = 0.35;

/// The picture a camera takes of `frame` shown on a screen.
pub fn film_screen(frame: &RgbImage, c: Capture, noise_seed: u64) -> RgbImage {
    let (w, h) = (frame.width() as usize, frame.height() as usize);
    let (sw, sh) = (w * SUB, h * SUB);
    // each colour plane of the lit screen; the gain keeps the mean
    // brightness of the picture (one stripe of three lit, one row dimmed)
    let gain = (SUB * SUB) as f32 / (SUB as f32 - 1.0 + MATRIX_ROW_LEVEL);
    let mut planes = vec![vec![0f32; sw * sh]; 3];
    for y in 0..sh {
        let row_level = if y % SUB == SUB - 1 { MATRIX_ROW_LEVEL } else { 1.0 };
        for x in 0..sw {
            let channel = x % SUB;
            let p = frame.get_pixel((x / SUB) as u32, (y / SUB) as u32).0;
            planes[channel][y * sw + x] = p[channel] as f32 / 255.0 * row_level * gain;
        }
    }
    let scale = c.screen_px_per_camera_px * SUB as f32;
    for plane in planes.iter_mut() {
        gaussian_blur(plane, sw, sh, c.blur_px * scale);
    }
    let (ow, oh) = ((w as f32 / c.screen_px_per_camera_px) as u32, (h as f32 / c.screen_px_per_camera_px) as u32);
    let (sin, cos) = c.tilt_deg.to_radians().sin_cos();
    let mut rng = noise_seed | 1;
    let mut noise = move || {
        // xorshift64: sensor noise, sigma ~1 % of full scale
        rng ^= rng << 13;
        rng ^= rng >> 7;
        rng ^= rng << 17;
        ((rng >> 40) as f32 / (1u64 << 24) as f32 - 0.5) * 0.035
    };
    RgbImage::from_fn(ow, oh, |u, v| {
        let (du, dv) = (u as f32 - ow as f32 / 2.0, v as f32 - oh as f32 / 2.0);
        let sx = (du * cos - dv * sin) * scale + sw as f32 / 2.0;
        let sy = (du * sin + dv * cos) * scale + sh as f32 / 2.0;
        let mut px = [0u8; 3];
        for (ch, plane) in planes.iter().enumerate() {
            let value = bilinear(plane, sw, sh, sx, sy) + noise();
            px[ch] = (value.clamp(0.0, 1.0) * 255.0).round() as u8;
        }
        Rgb(px)
    })
}

fn bilinear(plane: &[f32], w: usize, h: usize, x: f32, y: f32) -> f32 {
    let (x, y) = (x.clamp(0.0, (w - 1) as f32), y.clamp(0.0, (h - 1) as f32));
    let (x0, y0) = (x.floor() as usize, y.floor() as usize);
    let (x1, y1) = ((x0 + 1).min(w - 1), (y0 + 1).min(h - 1));
    let (fx, fy) = (x - x0 as f32, y - y0 as f32);
    let at = |xx: usize, yy: usize| plane[yy * w + xx];
    (at(x0, y0) * (1.0 - fx) + at(x1, y0) * fx) * (1.0 - fy) + (at(x0, y1) * (1.0 - fx) + at(x1, y1) * fx) * fy
}

/// Separable Gaussian blur in place, edges clamped.
fn gaussian_blur(plane: &mut [f32], w: usize, h: usize, sigma: f32) {
    if sigma < 0.05 {
        return;
    }
    let radius = (3.0 * sigma).ceil() as isize;
    let kernel: Vec<f32> = (-radius..=radius).map(|i| (-(i * i) as f32 / (2.0 * sigma * sigma)).exp()).collect();
    let total: f32 = kernel.iter().sum();
    let kernel: Vec<f32> = kernel.iter().map(|k| k / total).collect();
    let mut tmp = vec![0f32; plane.len()];
    for y in 0..h {
        for x in 0..w {
            tmp[y * w + x] = kernel.iter().enumerate().map(|(k, kv)| kv * plane[y * w + (x as isize + k as isize - radius).clamp(0, w as isize - 1) as usize]).sum();
        }
    }
    for y in 0..h {
        for x in 0..w {
            plane[y * w + x] = kernel.iter().enumerate().map(|(k, kv)| kv * tmp[(y as isize + k as isize - radius).clamp(0, h as isize - 1) as usize * w + x]).sum();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_filmed_screen_keeps_the_picture_and_its_brightness() {
        let frame = RgbImage::from_fn(60, 40, |x, _| if x < 30 { Rgb([200, 120, 80]) } else { Rgb([40, 60, 90]) });
        let shot = film_screen(&frame, Capture { screen_px_per_camera_px: 1.5, tilt_deg: 0.0, blur_px: 1.0 }, 7);
        assert_eq!((shot.width(), shot.height()), (40, 26));
        // a heavy blur averages the stripes back to the picture's colours
        let left = shot.get_pixel(8, 13).0;
        let right = shot.get_pixel(32, 13).0;
        for (got, want) in left.iter().zip([200u8, 120, 80]) {
            assert!((*got as i32 - want as i32).abs() <= 14, "left {left:?}");
        }
        for (got, want) in right.iter().zip([40u8, 60, 90]) {
            assert!((*got as i32 - want as i32).abs() <= 14, "right {right:?}");
        }
    }
}
