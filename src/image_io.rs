//! Turning bytes (files, uploads, camera frames) into RGB images.

use crate::error::{FacegateError, Result};
use image::RgbImage;

/// Decode an encoded image (JPEG or PNG). The format is sniffed from the
/// bytes, never trusted from a file name, so a renamed or truncated file
/// gives `ImageDecode` instead of a panic.
pub fn decode_image(bytes: &[u8]) -> Result<RgbImage> {
    if bytes.is_empty() {
        return Err(FacegateError::ImageDecode("empty input".into()));
    }
    // The JPEG decoder pads a truncated file with grey instead of failing; a
    // half-uploaded ID photo must be refused, not matched, so insist on the
    // end-of-image marker.
    if bytes.starts_with(&[0xFF, 0xD8]) && !jpeg_has_end_marker(bytes) {
        return Err(FacegateError::ImageDecode("truncated JPEG (no end-of-image marker)".into()));
    }
    let img = image::load_from_memory(bytes).map_err(|e| FacegateError::ImageDecode(e.to_string()))?;
    Ok(img.to_rgb8())
}

fn jpeg_has_end_marker(bytes: &[u8]) -> bool {
    // some encoders and cameras append padding after EOI; look near the end
    let tail = &bytes[bytes.len().saturating_sub(4096)..];
    tail.windows(2).any(|w| w == [0xFF, 0xD9])
}

/// Build an RGB image from an RGBA buffer as delivered by a canvas'
/// `ImageData` (the browser's camera path), dropping alpha.
pub fn rgb_from_rgba(width: u32, height: u32, rgba: &[u8]) -> Result<RgbImage> {
    let expected = width as usize * height as usize * 4;
    if width == 0 || height == 0 || rgba.len() != expected {
        return Err(FacegateError::InvalidInput(format!(
            "RGBA buffer of {} bytes does not match {width}x{height}",
            rgba.len()
        )));
    }
    let mut rgb = Vec::with_capacity(width as usize * height as usize * 3);
    for px in rgba.chunks_exact(4) {
        rgb.extend_from_slice(&px[..3]);
    }
    Ok(RgbImage::from_raw(width, height, rgb).expect("length checked above"))
}

#[cfg(not(target_arch = "wasm32"))]
pub fn read_image_file(path: &std::path::Path) -> Result<RgbImage> {
    let bytes = std::fs::read(path)
        .map_err(|e| FacegateError::Io { path: path.display().to_string(), reason: e.to_string() })?;
    decode_image(&bytes)
}

/// How an ID document's face photo typically reaches a SIM check: small,
/// heavily compressed, sometimes grey. The chip photo of a Chinese resident
/// ID card is 102x126 pixels, a photographed card or a photocopy is soft and
/// small. Used by the evaluation's ID-style protocol (`facegate pairs
/// --id-style`) to measure matching against such pictures.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct IdPhotoStyle {
    /// The whole picture is scaled so that its longer side has this many pixels.
    pub long_side: u32,
    /// JPEG quality of the re-encoding (1-100).
    pub jpeg_quality: u8,
    /// Converted to grey (as a photocopy or a grey-printed card).
    pub grey: bool,
}

impl IdPhotoStyle {
    /// The evaluation protocol: about 112 px, JPEG quality 30, every third
    /// picture (by its position in the list) grey.
    pub fn protocol(index: usize) -> Self {
        IdPhotoStyle { long_side: 112, jpeg_quality: 30, grey: index % 3 == 2 }
    }

    /// Renders `img` like that: downscale (Catmull-Rom, as a phone's or a
    /// card reader's resampling would soften it), grey if asked, JPEG round trip.
    pub fn render(&self, img: &RgbImage) -> Result<RgbImage> {
        use image::{codecs::jpeg::JpegEncoder, imageops::FilterType, DynamicImage};
        let (w, h) = img.dimensions();
        let scale = self.long_side as f32 / w.max(h) as f32;
        let (nw, nh) = (((w as f32 * scale).round() as u32).max(1), ((h as f32 * scale).round() as u32).max(1));
        let mut small = DynamicImage::ImageRgb8(image::imageops::resize(img, nw, nh, FilterType::CatmullRom));
        if self.grey {
            small = DynamicImage::ImageLuma8(small.to_luma8());
        }
        let mut bytes = Vec::new();
        JpegEncoder::new_with_quality(&mut bytes, self.jpeg_quality)
            .encode_image(&small)
            .map_err(|e| FacegateError::ImageDecode(format!("JPEG encode: {e}")))?;
        decode_image(&bytes)
    }
}
