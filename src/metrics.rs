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

/// LFW-style identity: the file name's stem up to its last `_`
/// (Abdullah_Gul_0006.jpg → Abdullah_Gul).
pub fn lfw_identity(file: &str) -> String {
    let stem = file.rsplit_once('.').map(|(s, _)| s).unwrap_or(file);
    stem.rsplit_once('_').map(|(s, _)| s).unwrap_or(stem).to_string()
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

/// The lowest threshold whose false-accept rate on `impostor` scores (rule
/// `score >= threshold`) stays at or below `far`, with the FAR it reaches
/// and how many impostors are at or above it. With n impostor scores the
/// finest FAR that can be told from zero is 1/n: a point below ~10/n rests
/// on a handful of pairs and is reported as such by its count.
pub fn threshold_at_far(impostor: &[f64], far: f64) -> (f64, f64, usize) {
    let mut s = impostor.to_vec();
    s.sort_by(|a, b| b.total_cmp(a));
    let n = s.len().max(1);
    let allowed = (far * n as f64).floor() as usize;
    // accepted = every score >= t; with t just above s[allowed] exactly
    // `allowed` impostors pass (ties pushed above as well)
    let t = match s.get(allowed) {
        Some(&v) => next_up(v),
        None => s.last().copied().unwrap_or(0.0),
    };
    let accepted = s.iter().filter(|&&x| x >= t).count();
    (t, accepted as f64 / n as f64, accepted)
}

fn next_up(v: f64) -> f64 {
    // the smallest step that puts `v` itself below the threshold
    v + v.abs().max(1e-12) * 1e-9
}

/// Share of `genuine` scores at or above `threshold`.
pub fn accept_rate(genuine: &[f64], threshold: f64) -> f64 {
    genuine.iter().filter(|&&x| x >= threshold).count() as f64 / genuine.len().max(1) as f64
}

/// Platt scaling: the logistic `1 / (1 + exp(-(a*x + b)))` fitted by Newton's
/// method to labelled scores, with Platt's smoothed targets ((N+ + 1)/(N+ + 2)
/// and 1/(N- + 2)) so that separable data still gives a finite fit.
pub fn platt_fit(scores: &[(f64, bool)]) -> (f64, f64) {
    let pos = scores.iter().filter(|s| s.1).count() as f64;
    let neg = scores.len() as f64 - pos;
    let (hi, lo) = ((pos + 1.0) / (pos + 2.0), 1.0 / (neg + 2.0));
    let (mut a, mut b) = (1.0f64, 0.0f64);
    for _ in 0..100 {
        let (mut ga, mut gb, mut haa, mut hab, mut hbb) = (0.0, 0.0, 1e-12, 0.0, 1e-12);
        for &(x, same) in scores {
            let t = if same { hi } else { lo };
            let p = 1.0 / (1.0 + (-(a * x + b)).exp());
            let d = p - t;
            let w = p * (1.0 - p);
            ga += d * x;
            gb += d;
            haa += w * x * x;
            hab += w * x;
            hbb += w;
        }
        let det = haa * hbb - hab * hab;
        if det.abs() < 1e-300 {
            break;
        }
        let (da, db) = ((hbb * ga - hab * gb) / det, (haa * gb - hab * ga) / det);
        a -= da;
        b -= db;
        if da.abs() < 1e-10 && db.abs() < 1e-10 {
            break;
        }
    }
    (a, b)
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
    fn threshold_at_far_accepts_at_most_the_asked_share() {
        let impostor: Vec<f64> = (0..1000).map(|i| i as f64 / 1000.0).collect();
        let (t, far, n) = threshold_at_far(&impostor, 1e-2);
        assert_eq!(n, 10);
        assert!((far - 0.01).abs() < 1e-12);
        assert!(t > 0.989 && t <= 0.990 + 1e-6, "{t}");
        // ties at the threshold are not let through
        let tied = vec![0.5; 100];
        assert_eq!(threshold_at_far(&tied, 1e-2).2, 0);
    }

    #[test]
    fn platt_fit_orders_and_stays_finite_on_separable_scores() {
        let s: Vec<(f64, bool)> = (0..100).map(|i| (i as f64 / 100.0, i >= 50)).collect();
        let (a, b) = platt_fit(&s);
        assert!(a.is_finite() && b.is_finite() && a > 0.0);
        let p = |x: f64| 1.0 / (1.0 + (-(a * x + b)).exp());
        assert!(p(0.9) > 0.9 && p(0.1) < 0.1 && (p(0.495) - 0.5).abs() < 0.1);
    }

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
