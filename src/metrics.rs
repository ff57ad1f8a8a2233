//! Verification metrics from labelled scores: ROC, AUC, EER and TAR at a fixed FAR.

use serde::Serialize;

#[derive(Debug, Clone, Serialize)]
pub struct VerificationMetrics {
    pub genuine: usize,
    pub impostor: usize,
    pub auc: f64,
    pub eer: f64,
    /// Threshold at the EER point.
    pub eer_threshold: f64,
    #[serde(rename = "tar_at_far_1e-2")]
    pub tar_at_far_1e2: f64,
    #[serde(rename = "tar_at_far_1e-3")]
    pub tar_at_far_1e3: f64,
    pub accuracy_at_threshold: f64,
    pub threshold: f64,
}

/// ROC points (far, tar, threshold) for thresholds at every distinct score,
/// decision rule `score >= threshold` means "same".
pub fn roc(scores: &[(f64, bool)]) -> Vec<(f64, f64, f64)> {
    let mut s: Vec<(f64, bool)> = scores.to_vec();
    s.sort_by(|a, b| b.0.total_cmp(&a.0));
    let pos = s.iter().filter(|x| x.1).count().max(1) as f64;
    let neg = s.iter().filter(|x| !x.1).count().max(1) as f64;
    let (mut tp, mut fp) = (0.0, 0.0);
    let mut pts = vec![(0.0, 0.0, f64::INFINITY)];
    let mut i = 0;
    while i < s.len() {
        let t = s[i].0;
        while i < s.len() && s[i].0 == t {
            if s[i].1 {
                tp += 1.0
            } else {
                fp += 1.0
            }
            i += 1;
        }
        pts.push((fp / neg, tp / pos, t));
    }
    pts
}

/// Highest TAR whose FAR does not exceed `far`.
pub fn tar_at_far(roc: &[(f64, f64, f64)], far: f64) -> f64 {
    roc.iter().filter(|p| p.0 <= far + 1e-12).map(|p| p.1).fold(0.0, f64::max)
}

pub fn verification_metrics(scores: &[(f64, bool)], threshold: f64) -> VerificationMetrics {
    let r = roc(scores);
    let auc = r.windows(2).map(|w| (w[1].0 - w[0].0) * (w[1].1 + w[0].1) / 2.0).sum();
    // EER: where FAR meets FRR (1 - TAR); take the closest ROC point, averaged.
    let (mut eer, mut eer_t, mut best) = (1.0, 0.0, f64::INFINITY);
    for &(far, tar, t) in &r {
        let frr = 1.0 - tar;
        if (far - frr).abs() < best {
            best = (far - frr).abs();
            eer = (far + frr) / 2.0;
            eer_t = t;
        }
    }
    let correct = scores.iter().filter(|(s, same)| (*s >= threshold) == *same).count();
    VerificationMetrics {
        genuine: scores.iter().filter(|x| x.1).count(),
        impostor: scores.iter().filter(|x| !x.1).count(),
        auc,
        eer,
        eer_threshold: eer_t,
        tar_at_far_1e2: tar_at_far(&r, 1e-2),
        tar_at_far_1e3: tar_at_far(&r, 1e-3),
        accuracy_at_threshold: correct as f64 / scores.len().max(1) as f64,
        threshold,
    }
}

/// Presentation-attack detection metrics (ISO/IEC 30107-3 names): APCER is the
/// share of attacks accepted as bona fide, BPCER the share of bona fide
/// presentations rejected, at `threshold` (score >= threshold = bona fide).
#[derive(Debug, Clone, Serialize)]
pub struct PadMetrics {
    pub bona_fide: usize,
    pub attacks: usize,
    pub threshold: f64,
    pub apcer: f64,
    pub bpcer: f64,
    pub eer: f64,
    pub eer_threshold: f64,
    pub auc: f64,
}

pub fn pad_metrics(scores: &[(f64, bool)], threshold: f64) -> PadMetrics {
    let v = verification_metrics(scores, threshold);
    let attacks: Vec<f64> = scores.iter().filter(|s| !s.1).map(|s| s.0).collect();
    let bona: Vec<f64> = scores.iter().filter(|s| s.1).map(|s| s.0).collect();
    PadMetrics {
        bona_fide: bona.len(),
        attacks: attacks.len(),
        threshold,
        apcer: attacks.iter().filter(|s| **s >= threshold).count() as f64 / attacks.len().max(1) as f64,
        bpcer: bona.iter().filter(|s| **s < threshold).count() as f64 / bona.len().max(1) as f64,
        eer: v.eer,
        eer_threshold: v.eer_threshold,
        auc: v.auc,
    }
}

/// Detection against labelled boxes: a labelled face counts as found when a
/// detection overlaps it with IoU >= `min_iou` (each detection matches at most
/// one face, best score first); unmatched detections are false positives.
#[derive(Debug, Clone, Default, Serialize)]
pub struct DetectionMetrics {
    pub images: usize,
    pub faces: usize,
    pub found: usize,
    pub recall: f64,
    pub false_positives: usize,
    pub min_iou: f64,
}

/// `images`: per image, the labelled boxes and the detections (box, score).
pub fn detection_metrics(images: &[(Vec<[f32; 4]>, Vec<([f32; 4], f32)>)], min_iou: f64) -> DetectionMetrics {
    let mut m = DetectionMetrics { images: images.len(), min_iou, ..Default::default() };
    for (truth, dets) in images {
        let mut dets = dets.clone();
        dets.sort_by(|a, b| b.1.total_cmp(&a.1));
        let mut taken = vec![false; truth.len()];
        for (d, _) in &dets {
            let best = truth
                .iter()
                .enumerate()
                .filter(|(i, _)| !taken[*i])
                .map(|(i, t)| (i, crate::detect::box_iou(*d, *t)))
                .max_by(|a, b| a.1.total_cmp(&b.1));
            match best {
                Some((i, iou)) if iou as f64 >= min_iou => taken[i] = true,
                _ => m.false_positives += 1,
            }
        }
        m.faces += truth.len();
        m.found += taken.iter().filter(|t| **t).count();
    }
    m.recall = m.found as f64 / m.faces.max(1) as f64;
    m
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn perfect_separation() {
        let s = vec![(0.9, true), (0.8, true), (0.2, false), (0.1, false)];
        let m = verification_metrics(&s, 0.5);
        assert!((m.auc - 1.0).abs() < 1e-9);
        assert!(m.eer < 1e-9);
        assert_eq!(m.accuracy_at_threshold, 1.0);
    }

    #[test]
    fn detection_matching_counts_each_face_once() {
        let truth = vec![[0.0, 0.0, 10.0, 10.0], [50.0, 50.0, 10.0, 10.0]];
        let dets = vec![([1.0, 1.0, 10.0, 10.0], 0.9), ([0.0, 0.0, 10.0, 11.0], 0.8), ([200.0, 0.0, 5.0, 5.0], 0.7)];
        let m = detection_metrics(&[(truth, dets)], 0.5);
        assert_eq!((m.faces, m.found, m.false_positives), (2, 1, 2));
        assert!((m.recall - 0.5).abs() < 1e-9);
    }

    #[test]
    fn chance_level() {
        let s = vec![(0.5, true), (0.5, false), (0.5, true), (0.5, false)];
        let m = verification_metrics(&s, 0.5);
        assert!((m.auc - 0.5).abs() < 1e-9);
        assert!((m.eer - 0.5).abs() < 1e-9);
    }
}
