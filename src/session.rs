//! One verification session on the device: the challenge, the evidence it
//! collects frame by frame, and the signed result at the end. The widget's
//! worker drives it through `wasm`; native tests drive the same code with
//! real footage.
//!
//! Nothing here leaves the device except what `finish` puts in the signed
//! result: scores, the pose/eye track, model hashes, the protected template
//! and (only when the deployment turned escrow on) sealed evidence crops.

use crate::challenge::{steps_for_seed, ChallengeFailure, ChallengeProgress, Step, StepPassed, TrackSample};
use crate::embed::Embedding;
use crate::error::{FacegateError, Result};
use crate::escrow::EvidencePackage;
use crate::matching::compare;
use crate::landmarks::FaceTrack;
use crate::pipeline::{largest_report, FaceReport};
#[cfg(feature = "inference")]
use crate::pipeline::Pipeline;
use crate::signed::{ActiveLiveness, ClientDecision, DeviceKey, SignedResult, VerificationResult, PROTOCOL_VERSION};
use crate::template::TransformKey;
use image::RgbImage;
use serde::{Deserialize, Serialize};

/// What the server hands the widget when the session starts.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SessionConfig {
    pub session_id: String,
    pub nonce: String,
    /// Hex seed of the active-liveness sequence.
    pub challenge_seed: String,
    /// The carrier's template transform key (hex, 32 bytes).
    pub transform_key: String,
    pub match_threshold: f32,
    pub liveness_threshold: f32,
    /// Median screen-grid cue (`replay`) at or above which the session is
    /// a suspected screen replay; servers older than the cue do not send it.
    #[serde(default = "default_screen_grid_threshold")]
    pub screen_grid_threshold: f32,
    /// Carrier's X25519 escrow key: present only when the deployment has
    /// evidence escrow on (and the user consented in the widget).
    #[serde(default)]
    pub escrow_public_key: Option<String>,
}

fn default_screen_grid_threshold() -> f32 {
    crate::replay::DEFAULT_SCREEN_GRID_THRESHOLD
}

/// Frames whose head is within this yaw of frontal are used for matching
/// (mesh yaw reads about 15 degrees on photos people call frontal). Every
/// such detection frame is embedded, not just the first few: a face swapped
/// in front of the camera mid-challenge must move the median match score.
const MATCH_MAX_YAW: f32 = 22.0;
/// Run the detector on every n-th frame while exactly one face is in view;
/// in between, the mesh follows the face from the previous frame's mesh
/// (`FaceTrack`), so the challenge still gets a pose/eye sample on every
/// frame. Passive liveness and the embedding need the detector's own box and
/// landmarks, so they run on detection frames only (their crops are cut
/// then; during the blink step they are measured later, `MAX_DEFERRED`): the session's verdicts
/// are medians over its frames, and a challenge of a few seconds still gives
/// each of them a dozen samples or more. A second face entering the view is
/// seen at the next detection, at most n-1 frames later; frames with several
/// faces never count towards the challenge.
pub const DETECT_EVERY: usize = 4;
/// A followed mesh more than this many degrees of yaw from the challenge's
/// starting pose runs the detector on its frame, so that the frames that can
/// decide a turn (12 degrees) are read on detector-anchored meshes; frames
/// near the front, where blinks are read, keep the cheaper following.
const DETECT_BEYOND_DEG: f32 = 8.0;
/// A mesh whose face-presence score falls below this has lost the face: the
/// next frame runs the detector.
const MESH_PRESENCE_MIN: f32 = 0.5;
/// While the blink step is current, a detection frame's passive liveness
/// and embedding wait (their `EvidenceCrops` are kept): a blink closes the eyes for
/// 100-400 ms, and a frame that runs the two liveness models and the
/// embedder as well takes about three following frames' time in the
/// browser, a gap a short blink falls into unseen. The waiting evidence is
/// measured one item per following frame once another step is current,
/// and the rest in `finish`, so the verdicts are the same medians over the
/// same frames. Beyond this many waiting frames the oldest is measured at
/// once (memory: about 75 kB each).
const MAX_DEFERRED: usize = 32;

/// Per-frame feedback for the widget.
#[derive(Debug, Clone, Serialize)]
pub struct FrameUpdate {
    pub faces: Vec<FaceReport>,
    /// The frame's pose/eye sample when it counted towards the challenge:
    /// exactly one face in view, not cut off at the frame's side.
    pub sample: Option<TrackSample>,
    /// The followed face reaches past the frame's left or right edge, so the
    /// frame did not count (the widget asks the user to move into view).
    pub face_cut_off: bool,
    /// Guidance for the current turn step (`ChallengeProgress::turn_progress`):
    /// the fraction of the needed turn reached, negative the other way.
    pub turn_progress: Option<f32>,
    /// A turn passed and the head is not back at the front yet, so the next
    /// step does not count yet (the widget asks the user to face the camera).
    pub waiting_for_front: bool,
    pub current_step: Option<Step>,
    pub passed: Vec<StepPassed>,
    pub failure: Option<String>,
    pub complete: bool,
    pub passive_liveness: Option<f32>,
    /// The screen-replay cue of this frame (detection frames, faces of 64
    /// pixels or more).
    pub screen_grid: Option<f32>,
}

/// What a session measured, for the policy.
#[derive(Debug, Clone, Copy)]
pub struct Evidence {
    pub passive_liveness: f32,
    /// Median screen-replay cue; None when no frame could be measured.
    pub screen_grid: Option<f32>,
    pub match_score: f32,
}

/// The policy's thresholds (the server's configuration).
#[derive(Debug, Clone, Copy)]
pub struct Thresholds {
    pub liveness: f32,
    pub screen_grid: f32,
    pub matching: f32,
}

/// The policy, one place for the device and the server: the challenge must
/// be performed, then passive liveness must reach its threshold, the screen
/// cue stay below its own, and the match reach its threshold. Returns the
/// reason code; "ok" means pass.
pub fn decision_reason(challenge: &std::result::Result<Vec<StepPassed>, ChallengeFailure>, e: Evidence, t: Thresholds) -> &'static str {
    match challenge {
        Err(f) => f.code(),
        Ok(_) if e.passive_liveness < t.liveness => "liveness_failed",
        Ok(_) if e.screen_grid.is_some_and(|g| g >= t.screen_grid) => "screen_replay_suspected",
        Ok(_) if e.match_score < t.matching => "no_match",
        Ok(_) => "ok",
    }
}

pub struct DeviceSession {
    key: DeviceKey,
    config: Option<SessionConfig>,
    seed: Vec<u8>,
    progress: Option<ChallengeProgress>,
    track: Vec<TrackSample>,
    passive: Vec<f32>,
    screen_grid: Vec<f32>,
    matches: Vec<(f32, Embedding)>,
    /// The face followed between detections, and frames since the detector ran.
    following: Option<(FaceTrack, usize)>,
    live_crop: Option<RgbImage>,
    /// Detection frames' evidence not measured yet (the blink step).
    deferred: std::collections::VecDeque<EvidenceCrops>,
}

/// A detection frame's inputs to the evidence models, cut from the frame
/// when it arrived: measured at once, or later during the blink step
/// (`MAX_DEFERRED`).
struct EvidenceCrops {
    /// One crop per passive-liveness model (`PassiveLiveness::crops`).
    liveness_crops: Option<Vec<RgbImage>>,
    /// The aligned face, when the frame is to be matched (a reference is
    /// set and the head is frontal enough).
    face_crop: Option<RgbImage>,
}

/// Measure one frame's evidence: its passive-liveness score (returned) and
/// its match against `reference`, added to the session's lists.
#[cfg(feature = "inference")]
fn measure_evidence(p: &Pipeline, reference: Option<&Embedding>, e: EvidenceCrops, passive: &mut Vec<f32>, matches: &mut Vec<(f32, Embedding)>) -> Result<Option<f32>> {
    let score = match (p.liveness.as_ref(), e.liveness_crops) {
        (Some(l), Some(crops)) => Some(l.score_crops(&crops)?),
        _ => None,
    };
    passive.extend(score);
    if let (Some(reference), Some(crop)) = (reference, e.face_crop) {
        let embedding = p.embedder()?.embed_aligned(&crop)?;
        matches.push((compare(reference, &embedding, &p.calibration).score, embedding));
    }
    Ok(score)
}

/// The median (upper one for an even count) of `v`, which it sorts.
pub fn median(v: &mut [f32]) -> Option<f32> {
    if v.is_empty() {
        return None;
    }
    v.sort_by(f32::total_cmp);
    Some(v[v.len() / 2])
}

impl DeviceSession {
    /// A fresh device key; its public half is registered with the server
    /// before the server reveals the nonce and seed.
    pub fn new() -> Result<Self> {
        Ok(Self::with_key(DeviceKey::generate()?))
    }

    pub fn with_key(key: DeviceKey) -> Self {
        DeviceSession { key, config: None, seed: Vec::new(), progress: None, track: Vec::new(), passive: Vec::new(), screen_grid: Vec::new(), matches: Vec::new(), following: None, live_crop: None, deferred: Default::default() }
    }

    pub fn public_key_hex(&self) -> String {
        self.key.public_key_hex()
    }

    /// Start the challenge; returns its steps.
    pub fn begin(&mut self, config: SessionConfig) -> Result<Vec<Step>> {
        let seed = hex::decode(&config.challenge_seed).map_err(|e| FacegateError::InvalidInput(format!("challenge seed: {e}")))?;
        let steps = steps_for_seed(&seed);
        self.progress = Some(ChallengeProgress::new(steps.clone()));
        self.seed = seed;
        self.config = Some(config);
        self.track.clear();
        self.passive.clear();
        self.screen_grid.clear();
        self.matches.clear();
        self.following = None;
        self.live_crop = None;
        self.deferred.clear();
        Ok(steps)
    }

    /// One camera frame of the challenge, `t_ms` since the challenge began.
    #[cfg(feature = "inference")]
    pub fn push_frame(&mut self, p: &Pipeline, reference: Option<&Embedding>, img: &RgbImage, t_ms: u32) -> Result<FrameUpdate> {
        let progress = self.progress.as_mut().ok_or_else(|| FacegateError::InvalidInput("challenge not started".into()))?;
        // the blink step is judged on the eye model's lids: no frame counts
        // before it has arrived (the widget waits for it before starting)
        p.eye_model()?;
        // the step this frame is read for: while it is the blink, the
        // evidence models wait (MAX_DEFERRED)
        let blink_step = progress.current_step() == Some(Step::Blink);
        let mut followed = self.following.take().filter(|(_, since)| *since < DETECT_EVERY);
        let mut faces = match &followed {
            Some((track, _)) => vec![p.report(img, track.detection().clone())],
            None => p.analyze(img)?,
        };
        // the mesh of the largest face, which the challenge follows
        let mesh_of = |faces: &[FaceReport]| largest_report(faces).map(|f| p.mesh(img, &f.detection)).transpose();
        let mut mesh = mesh_of(&faces)?;
        // Every turn is decided on a detector-anchored mesh: a followed mesh
        // whose yaw is away from the challenge's starting pose is checked
        // against the detector on the same frame. Followed meshes drift when
        // the face changes fast (a photo swung back to flat read 13 degrees
        // of yaw under the followed mesh, 2 under the detector's).
        let away = mesh.as_ref().zip(progress.baseline_yaw()).is_some_and(|(m, start)| (m.pose.yaw - start).abs() > DETECT_BEYOND_DEG);
        if followed.is_some() && away {
            followed = None;
            faces = p.analyze(img)?;
            mesh = mesh_of(&faces)?;
        }
        let detected = followed.is_none();
        let mut update = FrameUpdate { faces, sample: None, face_cut_off: false, turn_progress: None, waiting_for_front: false, current_step: None, passed: Vec::new(), failure: None, complete: false, passive_liveness: None, screen_grid: None };
        if let (Some(face), Some(mesh)) = (largest_report(&update.faces), mesh) {
            let det = face.detection.clone();
            let one_face = update.faces.len() == 1;
            // follow a single face with the mesh until the next detection
            self.following = match followed {
                _ if !one_face || mesh.presence < MESH_PRESENCE_MIN => None,
                Some((mut track, since)) => {
                    track.follow(&mesh);
                    Some((track, since + 1))
                }
                None => Some((FaceTrack::anchor(&det, &mesh), 1)),
            };
            let sample = TrackSample { t_ms, yaw: mesh.pose.yaw, pitch: mesh.pose.pitch, left_openness: mesh.eyes.left_openness, right_openness: mesh.eyes.right_openness };
            update.face_cut_off = mesh.cut_off_at_side(img.width() as f32);
            // several faces in view: nothing counts until only one is left;
            // a face cut off at the side has a guessed yaw
            if one_face && !update.face_cut_off {
                if !progress.is_complete() {
                    progress.push(&sample);
                    self.track.push(sample);
                }
                update.sample = Some(sample);
            }
            if detected {
                // the screen cue is cheap and needs the frame itself: now
                update.screen_grid = crate::replay::screen_grid_score(img, det.bbox);
                self.screen_grid.extend(update.screen_grid);
                let to_match = reference.is_some() && sample.yaw.abs() <= MATCH_MAX_YAW && one_face && !update.face_cut_off;
                let evidence = EvidenceCrops {
                    liveness_crops: p.liveness.as_ref().map(|l| l.crops(img, &det)),
                    face_crop: to_match.then(|| p.embedder().map(|e| e.align(img, &det.landmarks))).transpose()?,
                };
                if self.live_crop.is_none() {
                    self.live_crop = evidence.face_crop.clone();
                }
                if blink_step {
                    self.deferred.push_back(evidence);
                    if self.deferred.len() > MAX_DEFERRED {
                        let oldest = self.deferred.pop_front().expect("over the limit, so not empty");
                        measure_evidence(p, reference, oldest, &mut self.passive, &mut self.matches)?;
                    }
                } else {
                    update.passive_liveness = measure_evidence(p, reference, evidence, &mut self.passive, &mut self.matches)?;
                }
            }
        }
        // waiting evidence, one frame's on each following frame (which
        // costs less than a detection frame) once the blink step is over
        if !blink_step && !detected {
            if let Some(waiting) = self.deferred.pop_front() {
                measure_evidence(p, reference, waiting, &mut self.passive, &mut self.matches)?;
            }
        }
        update.current_step = progress.current_step();
        update.turn_progress = progress.turn_progress();
        update.waiting_for_front = progress.waiting_for_front();
        update.passed = progress.passed.clone();
        update.failure = progress.failure.as_ref().map(|f| f.code().to_string());
        update.complete = progress.is_complete();
        Ok(update)
    }

    /// Measure every detection frame's evidence still waiting
    /// (`MAX_DEFERRED`); `finish` does, and so may a caller that reads
    /// `passive_scores` without finishing.
    #[cfg(feature = "inference")]
    pub fn measure_deferred(&mut self, p: &Pipeline, reference: Option<&Embedding>) -> Result<()> {
        while let Some(waiting) = self.deferred.pop_front() {
            measure_evidence(p, reference, waiting, &mut self.passive, &mut self.matches)?;
        }
        Ok(())
    }

    /// The passive-liveness scores measured so far, one per detection frame.
    pub fn passive_scores(&self) -> &[f32] {
        &self.passive
    }

    /// Build and sign the result. `reference` is the ID photo's embedding
    /// (the same as for `push_frame`), `id_crop` the aligned ID face, used
    /// only when escrow is on.
    #[cfg(feature = "inference")]
    pub fn finish(&mut self, p: &Pipeline, reference: Option<&Embedding>, widget_version: &str, now_ms: u64, id_crop: Option<&RgbImage>) -> Result<SignedResult> {
        let config = self.config.clone().ok_or_else(|| FacegateError::InvalidInput("challenge not started".into()))?;
        // (nothing waits once a session is finished: it cleared them)
        self.measure_deferred(p, reference)?;
        let progress = self.progress.take().ok_or_else(|| FacegateError::InvalidInput("challenge already finished".into()))?;
        let steps = progress.steps.clone();
        // steps passed so far are evidence even when the challenge is incomplete
        let transcript = progress.passed.clone();
        let challenge: std::result::Result<Vec<StepPassed>, ChallengeFailure> = progress.finish();
        // the median over frames: one lucky frame neither passes nor fails a session
        let passive = median(&mut self.passive.clone()).unwrap_or(0.0);
        let screen_grid = median(&mut self.screen_grid.clone());
        let mut scores: Vec<f32> = self.matches.iter().map(|m| m.0).collect();
        let match_score = median(&mut scores).unwrap_or(0.0);
        let template_embedding = self
            .matches
            .iter()
            .min_by(|a, b| (a.0 - match_score).abs().total_cmp(&(b.0 - match_score).abs()))
            .map(|m| m.1.clone())
            .ok_or_else(|| FacegateError::InvalidInput("no frontal face was matched during the challenge".into()))?;
        let template = TransformKey::from_hex(&config.transform_key, template_embedding.0.len())?.protect(&template_embedding)?;
        let reason = decision_reason(
            &challenge,
            Evidence { passive_liveness: passive, screen_grid, match_score },
            Thresholds { liveness: config.liveness_threshold, screen_grid: config.screen_grid_threshold, matching: config.match_threshold },
        );
        let evidence = match (&config.escrow_public_key, &self.live_crop) {
            (Some(pk), Some(live)) => {
                let mut crops: Vec<(&str, &RgbImage)> = vec![("selfie", live)];
                if let Some(id) = id_crop {
                    crops.push(("id_document", id));
                }
                Some(EvidencePackage::new(&config.session_id, &crops, &self.track)?.seal(pk)?)
            }
            _ => None,
        };
        let result = VerificationResult {
            version: PROTOCOL_VERSION,
            session_id: config.session_id.clone(),
            nonce: config.nonce.clone(),
            issued_at_ms: now_ms,
            match_score,
            passive_liveness: passive,
            screen_grid,
            active_liveness: ActiveLiveness { steps, transcript, track: self.track.clone() },
            models: p.model_hashes.iter().cloned().collect(),
            widget_version: widget_version.into(),
            template,
            decision: ClientDecision { pass: reason == "ok", reason: reason.into() },
            device_public_key: self.key.public_key_hex(),
            evidence,
        };
        // the live embeddings and crops are dropped here: the session is over
        self.matches.clear();
        self.live_crop = None;
        self.deferred.clear();
        self.key.sign(result)
    }

    /// Challenge seed in use (for tests and diagnostics).
    pub fn seed(&self) -> &[u8] {
        &self.seed
    }
}
