//! Screen-replay cue: the pixel grid of a screen held up to the camera.
//!
//! A phone or monitor replaying a video of the customer shows the face on a
//! grid of red, green and blue sub-pixels. When the camera resolves that grid
//! even partly, resampling it at the camera's own pixel pitch aliases it into
//! a moiré: a few sharp, isolated peaks in the spatial spectrum of the face
//! region. Skin and hair have no such peaks; the periodic traces of a real
//! camera's processing (codec blocks, resampling along an image axis) lie
//! on the axes and on the lattice of multiples of 1/8 cycle per pixel,
//! which are left out. The cue is the height of the strongest
//! isolated peak above its spectral neighbourhood, in natural-log units of
//! magnitude (1.0 = 2.7 times its surroundings).
//!
//! The carrier server needs only the threshold, so the cue itself is built
//! with the `inference` feature (as the models are).
//!
//! What it cannot see (README "Accuracy"): a screen far enough away or a lens
//! soft enough that the grid is blurred out before it reaches the sensor
//! (measured on the eval's simulated captures: gone at a lens blur of 0.35
//! camera pixels when each camera pixel covers 1.4 screen pixels), a screen
//! held level to within about half a degree, and injected video streams,
//! which never pass through a screen.

#[cfg(feature = "inference")]
use image::RgbImage;
#[cfg(feature = "inference")]
use rustfft::{num_complex::Complex, FftPlanner};

/// Median screen-grid cue over a session's detection frames at or above
/// which the session is refused as a suspected screen replay. Real faces on
/// real cameras score at most 1.57 (471 images: lfw-dev 1.57 over 316,
/// footage-dev frames 1.51 over 62, nuaa-dev's webcam frames 1.45 over 72,
/// the faces stills 1.46 over 21); the eval's simulated replays whose grid
/// reaches the camera score above it in every frame (README "Accuracy").
pub const DEFAULT_SCREEN_GRID_THRESHOLD: f32 = 2.2;

/// Peaks are searched at every spatial frequency up to the sampling limit
/// in each direction (a camera aliases a screen's grid anywhere in that
/// square) except below this radius (cycles per pixel), where the face's
/// own shape dominates the spectrum.
#[cfg(feature = "inference")]
const MIN_FREQ: f32 = 0.08;
/// Side of the square neighbourhood a peak is compared with (its median).
#[cfg(feature = "inference")]
const NEIGHBOURHOOD: usize = 9;
/// Bins tested exactly (against their neighbourhood's median), the ones
/// standing out most over their neighbourhood's mean.
#[cfg(feature = "inference")]
const EXACT_CANDIDATES: usize = 64;

/// The cue for the face whose box (`[x, y, w, h]`, pixels) is given: the
/// square of the face's centre at the camera's own resolution (128 pixels,
/// or 64 for faces narrower than 128; never resampled, which would change
/// the moiré). None for faces under 64 pixels or too close to the border.
#[cfg(feature = "inference")]
pub fn screen_grid_score(img: &RgbImage, bbox: [f32; 4]) -> Option<f32> {
    let [x, y, w, h] = bbox;
    let side = if w.min(h) >= 128.0 {
        128
    } else if w.min(h) >= 64.0 {
        64
    } else {
        return None;
    };
    let (cx, cy) = ((x + w / 2.0).round() as i64, (y + h / 2.0).round() as i64);
    let (left, top) = (cx - side as i64 / 2, cy - side as i64 / 2);
    if left < 0 || top < 0 || left + side as i64 > img.width() as i64 || top + side as i64 > img.height() as i64 {
        return None;
    }
    let luma: Vec<f32> = (0..side * side)
        .map(|i| {
            let p = img.get_pixel(left as u32 + (i % side) as u32, top as u32 + (i / side) as u32).0;
            0.299 * p[0] as f32 + 0.587 * p[1] as f32 + 0.114 * p[2] as f32
        })
        .collect();
    Some(peak_height(&luma, side))
}

/// Log-magnitude spectrum of a square grey patch (mean removed, Hann
/// window), then the largest excess of a bin over the median of its
/// neighbourhood among the searched frequencies.
#[cfg(feature = "inference")]
fn peak_height(patch: &[f32], n: usize) -> f32 {
    let mean = patch.iter().sum::<f32>() / patch.len() as f32;
    let hann: Vec<f32> = (0..n).map(|i| 0.5 - 0.5 * (2.0 * std::f32::consts::PI * i as f32 / (n - 1) as f32).cos()).collect();
    let mut buf: Vec<Complex<f32>> = patch.iter().enumerate().map(|(i, &v)| Complex::new((v - mean) * hann[i % n] * hann[i / n], 0.0)).collect();
    let fft = FftPlanner::new().plan_fft_forward(n);
    // rows, then columns (through a transpose)
    fft.process(&mut buf);
    let mut cols = vec![Complex::new(0.0, 0.0); n * n];
    for r in 0..n {
        for c in 0..n {
            cols[c * n + r] = buf[r * n + c];
        }
    }
    fft.process(&mut cols);
    // cols[c * n + r] holds the bin (row frequency r, column frequency c)
    let log_mag: Vec<f32> = cols.iter().map(|z| (z.norm() + 1e-3).ln()).collect();
    let freq = |k: usize| if k < n / 2 { k as f32 / n as f32 } else { (k as f32 - n as f32) / n as f32 };
    // Digital processing is periodic along the image axes (resampling in one
    // direction, interlacing, a sensor's column noise: footage-dev clip 04
    // has a peak at 0.48 cycle per pixel along x), and the 8-pixel block
    // grid of JPEG/H.264 puts its energy on the lattice of multiples of 1/8
    // cycle per pixel. A screen held by hand is never exactly level, and
    // aliasing magnifies its tilt: a grid turned by 2 degrees beats 6 bins
    // off the axis. Both are left out; a screen aligned to within about half
    // a degree is missed.
    let on_block_lattice = |f: f32| {
        let eighths = f.abs() * 8.0;
        (eighths - eighths.round()).abs() * n as f32 / 8.0 < 1.5
    };
    let half = NEIGHBOURHOOD / 2;
    let at = |c: usize, r: usize| log_mag[(c % n) * n + (r % n)];
    // The exact test of a bin is its excess over the median of its
    // neighbourhood (the spectrum is periodic: neighbourhoods wrap around).
    // Medians of every bin cost ~10 ms, so only the bins that stand out most
    // over their neighbourhood's mean (cheap: box sums) are tested exactly;
    // a peak tall over the median is tall over the mean too.
    let mut rows = vec![0f32; n * n];
    for c in 0..n {
        for r in 0..n {
            rows[c * n + r] = (0..NEIGHBOURHOOD).map(|d| at(c, r + n - half + d)).sum();
        }
    }
    let mut candidates: Vec<(f32, usize, usize)> = Vec::new();
    for c in 0..n {
        for r in 0..n {
            let (fy, fx) = (freq(r), freq(c));
            let on_axis = fx.abs().min(fy.abs()) < 1.5 / n as f32;
            if fx.hypot(fy) <= MIN_FREQ || on_axis || (on_block_lattice(fx) && on_block_lattice(fy)) {
                continue;
            }
            let box_sum: f32 = (0..NEIGHBOURHOOD).map(|d| rows[((c + n - half + d) % n) * n + r]).sum();
            candidates.push((at(c, r) - box_sum / (NEIGHBOURHOOD * NEIGHBOURHOOD) as f32, c, r));
        }
    }
    let keep = EXACT_CANDIDATES.min(candidates.len());
    if keep == 0 {
        return 0.0;
    }
    candidates.select_nth_unstable_by(keep - 1, |a, b| b.0.total_cmp(&a.0));
    let mut window = Vec::with_capacity(NEIGHBOURHOOD * NEIGHBOURHOOD);
    let mut best = f32::MIN;
    for &(_, c, r) in &candidates[..keep] {
        window.clear();
        for dc in 0..NEIGHBOURHOOD {
            for dr in 0..NEIGHBOURHOOD {
                window.push(at(c + n - half + dc, r + n - half + dr));
            }
        }
        let mid = window.len() / 2;
        let (_, median, _) = window.select_nth_unstable_by(mid, f32::total_cmp);
        best = best.max(at(c, r) - *median);
    }
    best
}

#[cfg(all(test, feature = "inference"))]
mod tests {
    use super::*;

    /// A smooth synthetic "face": a radial gradient with mild noise.
    fn smooth(w: u32, h: u32) -> RgbImage {
        let mut state = 12345u32;
        RgbImage::from_fn(w, h, |x, y| {
            state = state.wrapping_mul(1664525).wrapping_add(1013904223);
            let noise = (state >> 24) as f32 / 255.0 * 6.0;
            let d = ((x as f32 - w as f32 / 2.0).hypot(y as f32 - h as f32 / 2.0)) / w as f32;
            let v = (200.0 - 150.0 * d + noise).clamp(0.0, 255.0) as u8;
            image::Rgb([v, (v as f32 * 0.8) as u8, (v as f32 * 0.7) as u8])
        })
    }

    #[test]
    fn an_aliased_pixel_grid_scores_far_above_a_smooth_face() {
        let face = smooth(256, 256);
        let bbox = [40.0, 40.0, 176.0, 176.0];
        let plain = screen_grid_score(&face, bbox).unwrap();
        // the same picture seen through a slanted grid of period 3.3 px: a
        // moiré the camera would record from a screen
        let mut screen = face.clone();
        for (x, y, p) in screen.enumerate_pixels_mut() {
            let phase = (x as f32 * 0.99 + y as f32 * 0.14) * 2.0 * std::f32::consts::PI / 3.3;
            let k = 0.85 + 0.15 * phase.sin();
            p.0 = p.0.map(|c| (c as f32 * k) as u8);
        }
        let replay = screen_grid_score(&screen, bbox).unwrap();
        assert!(plain < DEFAULT_SCREEN_GRID_THRESHOLD - 0.5, "smooth face {plain}");
        assert!(replay > DEFAULT_SCREEN_GRID_THRESHOLD + 0.5, "grid {replay}");
    }

    #[test]
    fn an_8_pixel_block_grid_is_not_a_screen() {
        // codec blocking: a faint step every 8 pixels in both directions
        let mut img = smooth(256, 256);
        for (x, y, p) in img.enumerate_pixels_mut() {
            if x % 8 == 0 || y % 8 == 0 {
                p.0 = p.0.map(|c| c.saturating_sub(6));
            }
        }
        let s = screen_grid_score(&img, [40.0, 40.0, 176.0, 176.0]).unwrap();
        assert!(s < DEFAULT_SCREEN_GRID_THRESHOLD, "{s}");
    }

    #[test]
    fn small_or_clipped_faces_have_no_score() {
        let img = smooth(200, 200);
        assert_eq!(screen_grid_score(&img, [10.0, 10.0, 40.0, 40.0]), None);
        assert_eq!(screen_grid_score(&img, [-30.0, 50.0, 130.0, 130.0]), None);
        assert!(screen_grid_score(&img, [60.0, 60.0, 70.0, 70.0]).is_some());
    }
}
