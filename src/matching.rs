//! 1:1 matching: cosine similarity of two embeddings, mapped to a score in
//! [0,1] by a logistic (Platt) calibration fitted on the LFW dev pairs
//! (`cargo xtask calibrate`), so that the score reads as the estimated
//! probability that both faces are the same person.

use crate::embed::Embedding;
use serde::Serialize;

/// Logistic calibration `1 / (1 + exp(-(A * cosine + B)))`.
#[derive(Debug, Clone, Copy, Serialize)]
pub struct Calibration {
    pub a: f32,
    pub b: f32,
    /// Default decision threshold on the calibrated score.
    pub threshold: f32,
}

/// Platt fit on the 1,200 lfw-dev pairs with the default embedder (mobileface);
/// the threshold 0.80 (cosine 0.257) is where the dev FAR is 1%. See models/README.md.
pub const DEFAULT_CALIBRATION: Calibration = Calibration { a: 21.99, b: -4.247, threshold: 0.80 };

impl Calibration {
    pub fn score(&self, cosine: f32) -> f32 {
        1.0 / (1.0 + (-(self.a * cosine + self.b)).exp())
    }

    /// The cosine similarity at which the calibrated score equals `threshold`.
    pub fn cosine_threshold(&self) -> f32 {
        let t = self.threshold.clamp(1e-6, 1.0 - 1e-6);
        ((t / (1.0 - t)).ln() - self.b) / self.a
    }
}

#[derive(Debug, Clone, Copy, Serialize)]
pub struct MatchResult {
    pub score: f32,
    pub threshold: f32,
    pub same_person: bool,
}

pub fn compare(a: &Embedding, b: &Embedding, cal: &Calibration) -> MatchResult {
    let score = cal.score(a.cosine(b));
    MatchResult { score, threshold: cal.threshold, same_person: score >= cal.threshold }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn calibration_is_monotonic_and_inverts() {
        let c = DEFAULT_CALIBRATION;
        assert!(c.score(0.9) > c.score(0.2));
        assert!((c.score(c.cosine_threshold()) - c.threshold).abs() < 1e-4);
    }
}
