//! The `facegate` command-line tool: the same pipeline as the browser widget,
//! on image files. Every error is one line on stderr and a non-zero exit.

use clap::{Parser, Subcommand};
use facegate::error::{FacegateError, Result};
use facegate::image_io::{read_image_file, IdPhotoStyle};
use facegate::metrics::verification_metrics;
use facegate::pipeline::{Pipeline, PipelineOptions};
use facegate::template::TransformKey;
use serde_json::json;
use std::collections::HashMap;
use std::path::{Path, PathBuf};

#[path = "facegate/calibrate.rs"]
mod calibrate;

#[derive(Parser)]
#[command(name = "facegate", version, about = "On-device face detection, liveness and 1:1 matching")]
struct Cli {
    /// Embedding model (see models/manifest.json, role "embedder").
    #[arg(long, global = true, default_value = facegate::embed::DEFAULT_EMBEDDER)]
    embedder: String,
    /// Override the embedder's flip averaging (true/false), for measuring it.
    #[arg(long, global = true)]
    flip: Option<bool>,
    #[command(subcommand)]
    cmd: Cmd,
}

#[derive(Subcommand)]
enum Cmd {
    /// Find faces: boxes, scores, five landmarks.
    Detect {
        image: PathBuf,
        #[arg(long)]
        json: bool,
    },
    /// 1:1 match of the largest face in each image.
    Compare {
        image_a: PathBuf,
        image_b: PathBuf,
        #[arg(long)]
        json: bool,
    },
    /// Passive liveness (print / screen attack) score of the largest face.
    Liveness {
        image: PathBuf,
        #[arg(long)]
        json: bool,
    },
    /// Passive liveness over a labelled set: CSV with file,label (bona_fide|attack).
    LivenessSet {
        csv: PathBuf,
        #[arg(long)]
        images: PathBuf,
        #[arg(long)]
        json: bool,
    },
    /// Dense landmarks, head pose and eye openness of the largest face.
    Landmarks {
        image: PathBuf,
        #[arg(long)]
        json: bool,
        /// Include all 468 points (otherwise only pose and eyes).
        #[arg(long)]
        points: bool,
    },
    /// Simulated screen replay: each image shown on a screen's RGB sub-pixel
    /// grid and filmed by a camera (facegate::screen_sim), written as PNG
    /// under the same name into --out. For the eval and the browser tests of
    /// the screen cue; no model is loaded.
    FilmScreen {
        frames: Vec<PathBuf>,
        #[arg(long)]
        out: PathBuf,
        /// Lens blur in camera pixels (sigma): 0.15 sharp, 0.35 soft. The
        /// screen is held up as in the eval (Capture::held_up: 1.4 screen
        /// pixels per camera pixel, tilted 2 degrees).
        #[arg(long, default_value_t = 0.15)]
        blur_px: f32,
    },
    /// Write the aligned crop of the largest face (what the embedding model sees).
    Align {
        image: PathBuf,
        #[arg(long)]
        out: PathBuf,
    },
    /// Head pose / eye track over video frames (image files in time order):
    /// which challenge steps they perform, and with --seed whether they pass
    /// that session's challenge as the server would check it.
    Track {
        frames: Vec<PathBuf>,
        /// Frame rate of the sequence, for the timestamps.
        #[arg(long, default_value_t = 30.0)]
        fps: f32,
        /// Challenge seed (hex) to verify the track against.
        #[arg(long)]
        seed: Option<String>,
        /// Also score passive liveness and report the median, as the widget
        /// aggregates it over a challenge (every third frame with a face
        /// under `--schedule every-frame`, the detection frames under
        /// `--schedule session`).
        #[arg(long)]
        passive: bool,
        /// How the track is computed: `every-frame` runs the detector on
        /// every frame; `session` runs the widget's own session (detector
        /// every 4th frame, the mesh following the face in between).
        #[arg(long, value_enum, default_value_t = Schedule::EveryFrame)]
        schedule: Schedule,
        #[arg(long)]
        json: bool,
    },
    /// Detection recall and false positives against labelled face boxes:
    /// dlib imglab XML (<image file><box top left width height/>) or a CSV
    /// with header file,x,y,w,h (one row per face; a row with empty box
    /// fields lists an image without faces).
    DetectEval {
        labels: PathBuf,
        /// Folder the image paths are relative to (default: the labels' folder).
        #[arg(long)]
        images: Option<PathBuf>,
        /// Minimum IoU for a detection to count as finding a labelled face.
        #[arg(long, default_value_t = 0.5)]
        iou: f64,
        #[arg(long)]
        json: bool,
    },
    /// Score a CSV of pairs (file_x,file_y,Decision) and report verification metrics.
    Pairs {
        csv: PathBuf,
        #[arg(long)]
        images: PathBuf,
        /// Score in the protected-template domain (needs --key); the raw
        /// figures and the cross-key (unlinkability) figures are reported too.
        #[arg(long, requires = "key")]
        protected: bool,
        /// Carrier transform key, 64 hex characters.
        #[arg(long)]
        key: Option<String>,
        /// ID-style protocol: the first image of every pair is rendered as an
        /// ID document's photo (112 px, JPEG quality 30, every third grey).
        #[arg(long)]
        id_style: bool,
        #[arg(long)]
        json: bool,
    },
    /// Operating points of the embedder: thresholds at FAR 1e-2 ... 1e-5 from
    /// every cross-identity pair of a folder of images named Identity_NNNN.ext
    /// (LFW style), TAR at each on every same-identity pair, plain and
    /// ID-style (one side rendered as an ID photo), raw and protected; the
    /// Platt calibration fitted on the pairs CSV.
    Calibrate {
        /// Folder of images; the identity is the file name up to its last `_`.
        #[arg(long)]
        images: PathBuf,
        /// Pairs (file_x,file_y,Decision) the Platt calibration is fitted on.
        #[arg(long)]
        pairs: PathBuf,
        /// Carrier transform key for the protected-domain figures, 64 hex.
        #[arg(long)]
        key: String,
        #[arg(long)]
        json: bool,
    },
    /// Time every stage (detection and quality, mesh, passive liveness,
    /// alignment and embedding) and every model run on each frame: the
    /// median milliseconds over `--reps` passes after one warm-up pass.
    Bench {
        frames: Vec<PathBuf>,
        #[arg(long, default_value_t = 3)]
        reps: usize,
        #[arg(long)]
        json: bool,
    },
    /// The protected template of the largest face (what leaves the device
    /// instead of an embedding), under a carrier transform key. Several
    /// images give `{"templates": [{image, template, face} | {image, error}]}`
    /// (the models load once).
    Protect {
        #[arg(required = true)]
        image: Vec<PathBuf>,
        /// Carrier transform key, 64 hex characters.
        #[arg(long)]
        key: String,
        #[arg(long)]
        json: bool,
    },
}

#[derive(Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
enum Schedule {
    EveryFrame,
    Session,
}

fn main() {
    let cli = Cli::parse();
    if let Err(e) = run(cli) {
        eprintln!("facegate: error[{}]: {e}", e.code());
        std::process::exit(match e {
            FacegateError::NoFace | FacegateError::MultipleFaces(_) => 3,
            FacegateError::ModelIntegrity { .. } => 4,
            _ => 2,
        });
    }
}

fn options(cli: &Cli) -> PipelineOptions {
    PipelineOptions { embedder: cli.embedder.clone(), ..Default::default() }
}

/// The pipeline for the matching commands (no liveness or mesh models), with
/// `--flip` applied.
fn load(cli: &Cli, opts: &PipelineOptions) -> Result<Pipeline> {
    let mut p = Pipeline::load_native(&PipelineOptions { liveness: false, landmarks: false, ..opts.clone() })?;
    if let Some(flip) = cli.flip {
        p.embedder_mut()?.config.flip = flip;
    }
    Ok(p)
}

fn print(value: serde_json::Value, json_out: bool) {
    if json_out {
        println!("{}", serde_json::to_string(&value).expect("serialisable"));
    } else {
        println!("{}", serde_json::to_string_pretty(&value).expect("serialisable"));
    }
}

fn run(cli: Cli) -> Result<()> {
    let opts = options(&cli);
    match &cli.cmd {
        Cmd::Detect { image, json } => {
            let img = read_image_file(image)?;
            let p = Pipeline::load_native(&opts)?;
            let faces = p.analyze(&img)?;
            print(json!({ "faces": faces }), *json);
        }
        Cmd::Compare { image_a, image_b, json } => {
            let a = read_image_file(image_a)?;
            let b = read_image_file(image_b)?;
            let p = Pipeline::load_native(&opts)?;
            let r = p.compare_images(&a, &b)?;
            print(json!({ "score": r.score, "threshold": r.threshold, "same_person": r.same_person }), *json);
        }
        Cmd::Liveness { image, json } => {
            let img = read_image_file(image)?;
            let p = Pipeline::load_native(&opts)?;
            let (face, score) = p.passive_liveness(&img)?;
            let threshold = p.liveness.as_ref().map(|l| l.threshold).unwrap_or(0.5);
            print(
                json!({
                    "liveness": { "score": score, "threshold": threshold, "live": score >= threshold },
                    "face": face.detection,
                    "quality": face.quality,
                }),
                *json,
            );
        }
        Cmd::LivenessSet { csv, images, json } => {
            let p = Pipeline::load_native(&opts)?;
            print(liveness_set(&p, csv, images)?, *json);
        }
        Cmd::Landmarks { image, json, points } => {
            let img = read_image_file(image)?;
            let p = Pipeline::load_native(&opts)?;
            let faces = p.detect(&img)?;
            let face = facegate::detect::largest(&faces).ok_or(FacegateError::NoFace)?;
            let mesh = p.mesh(&img, face)?;
            let mut v = json!({"face": face, "pose": mesh.pose, "eyes": mesh.eyes, "presence": mesh.presence});
            if *points {
                v["points"] = json!(mesh.points);
            }
            print(v, *json);
        }
        Cmd::FilmScreen { frames, out, blur_px } => {
            use facegate::screen_sim::{film_screen, Capture};
            let capture = Capture::held_up(*blur_px);
            std::fs::create_dir_all(out).map_err(|e| FacegateError::Io { path: out.display().to_string(), reason: e.to_string() })?;
            for (i, f) in frames.iter().enumerate() {
                let name = f.file_stem().map(|n| n.to_string_lossy().to_string()).unwrap_or_else(|| format!("frame{i}"));
                let target = out.join(format!("{name}.png"));
                film_screen(&read_image_file(f)?, capture, i as u64 + 1)
                    .save(&target)
                    .map_err(|e| FacegateError::Io { path: target.display().to_string(), reason: e.to_string() })?;
            }
        }
        Cmd::Align { image, out } => {
            let img = read_image_file(image)?;
            let p = Pipeline::load_native(&opts)?;
            let faces = p.detect(&img)?;
            let face = facegate::detect::largest(&faces).ok_or(FacegateError::NoFace)?;
            p.embedder()?
                .align(&img, &face.landmarks)
                .save(out)
                .map_err(|e| FacegateError::Io { path: out.display().to_string(), reason: e.to_string() })?;
        }
        Cmd::Track { frames, fps, seed, passive, schedule, json } => {
            let p = Pipeline::load_native(&PipelineOptions { liveness: *passive, ..opts.clone() })?;
            print(track(&p, frames, *fps, seed.as_deref(), *passive, *schedule)?, *json);
        }
        Cmd::DetectEval { labels, images, iou, json } => {
            let p = Pipeline::load_native(&opts)?;
            let dir = images.clone().unwrap_or_else(|| labels.parent().map(Path::to_path_buf).unwrap_or_default());
            print(detect_eval(&p, labels, &dir, *iou)?, *json);
        }
        Cmd::Pairs { csv, images, protected, key, id_style, json } => {
            let p = load(&cli, &opts)?;
            let key = if *protected { key.as_deref() } else { None };
            print(pairs(&p, csv, images, key, *id_style)?, *json);
        }
        Cmd::Calibrate { images, pairs, key, json } => {
            let p = load(&cli, &opts)?;
            print(calibrate::operating_points(&p, images, pairs, key)?, *json);
        }
        Cmd::Bench { frames, reps, json } => {
            let p = Pipeline::load_native(&opts)?;
            print(bench(&p, frames, *reps)?, *json);
        }
        Cmd::Protect { image, key, json } => {
            let p = Pipeline::load_native(&opts)?;
            let protect = |path: &PathBuf| -> Result<serde_json::Value> {
                let (face, e) = p.embed_largest(&read_image_file(path)?)?;
                let t = TransformKey::from_hex(key, e.0.len())?.protect(&e)?;
                Ok(json!({"template": t, "face": face}))
            };
            if let [one] = image.as_slice() {
                print(protect(one)?, *json);
            } else {
                // a batch goes on past a bad image, which gets its error
                let rows: Vec<serde_json::Value> = image
                    .iter()
                    .map(|path| {
                        let mut row = protect(path).unwrap_or_else(|e| json!({"error": format!("{}: {e}", e.code())}));
                        row["image"] = json!(path.display().to_string());
                        row
                    })
                    .collect();
                print(json!({"templates": rows}), *json);
            }
        }
    }
    Ok(())
}

/// Milliseconds since the first call, the clock the stage timings read.
fn clock_ms() -> f64 {
    static START: std::sync::OnceLock<std::time::Instant> = std::sync::OnceLock::new();
    START.get_or_init(std::time::Instant::now).elapsed().as_secs_f64() * 1e3
}

fn bench(p: &Pipeline, files: &[PathBuf], reps: usize) -> Result<serde_json::Value> {
    let frames = files.iter().map(|f| read_image_file(f)).collect::<Result<Vec<_>>>()?;
    for f in &frames {
        p.time_stages(f, clock_ms)?; // warm-up: first-run allocations and caches
    }
    let mut stages: std::collections::BTreeMap<&str, Vec<f64>> = Default::default();
    let mut models: std::collections::BTreeMap<String, Vec<f64>> = Default::default();
    for _ in 0..reps.max(1) {
        for f in &frames {
            let (t, runs) = p.time_stages(f, clock_ms)?;
            for (k, v) in [("detect + quality", t.detect), ("landmarks", t.landmarks), ("liveness (2 models)", t.liveness), ("align + embed", t.embed), ("end to end per frame", t.total)] {
                stages.entry(k).or_default().push(v);
            }
            for r in runs {
                models.entry(r.model).or_default().push(r.ms);
            }
        }
    }
    let median = |mut v: Vec<f64>| {
        v.sort_by(f64::total_cmp);
        v[v.len() / 2]
    };
    let stages: serde_json::Map<String, serde_json::Value> = stages.into_iter().map(|(k, v)| (k.to_string(), json!(median(v)))).collect();
    let models: serde_json::Map<String, serde_json::Value> = models.into_iter().map(|(k, v)| (k, json!(median(v)))).collect();
    Ok(json!({"frames": frames.len(), "reps": reps, "embedder": p.embedder_name(), "stages": stages, "models": models}))
}

fn read_csv(csv: &Path) -> Result<(Vec<String>, Vec<Vec<String>>)> {
    let text = std::fs::read_to_string(csv)
        .map_err(|e| FacegateError::Io { path: csv.display().to_string(), reason: e.to_string() })?;
    let mut lines = text.lines().filter(|l| !l.trim().is_empty());
    let header = lines.next().unwrap_or("").split(',').map(|h| h.trim().to_string()).collect();
    let rows = lines.map(|l| l.split(',').map(|f| f.trim().to_string()).collect()).collect();
    Ok((header, rows))
}

fn column(header: &[String], name: &str) -> Result<usize> {
    header
        .iter()
        .position(|h| h.eq_ignore_ascii_case(name))
        .ok_or_else(|| FacegateError::InvalidInput(format!("CSV header lacks column {name}")))
}

fn liveness_set(p: &Pipeline, csv: &Path, dir: &Path) -> Result<serde_json::Value> {
    use facegate::replay::{screen_grid_score, DEFAULT_SCREEN_GRID_THRESHOLD};
    let (header, rows) = read_csv(csv)?;
    let (cf, cl) = (column(&header, "file")?, column(&header, "label")?);
    let threshold = p.liveness.as_ref().map(|l| l.threshold).unwrap_or(0.5) as f64;
    let grid_threshold = DEFAULT_SCREEN_GRID_THRESHOLD as f64;
    let mut out = Vec::new();
    let (mut scored, mut grid_scored, mut both) = (Vec::new(), Vec::new(), Vec::new());
    for r in rows {
        let (file, label) = (r.get(cf).cloned().unwrap_or_default(), r.get(cl).cloned().unwrap_or_default());
        let bona_fide = label == "bona_fide";
        let scores = read_image_file(&dir.join(&file)).and_then(|img| p.passive_liveness(&img).map(|(face, s)| (s, screen_grid_score(&img, face.detection.bbox))));
        match scores {
            Ok((s, grid)) => {
                scored.push((s as f64, bona_fide));
                // the cue is high for screens: its metrics are on the negated cue
        // (accepted when -cue >= -threshold), as pad_metrics counts accepts
                if let Some(g) = grid {
                    grid_scored.push((-(g as f64), bona_fide));
                }
                both.push((s as f64 >= threshold && grid.is_none_or(|g| (g as f64) < grid_threshold), bona_fide));
                out.push(json!({"file": file, "label": label, "score": s, "screen_grid": grid}));
            }
            Err(e) => out.push(json!({"file": file, "label": label, "score": null, "error": e.to_string()})),
        }
    }
    let rate = |bona: bool, accepted: bool| {
        let of: Vec<bool> = both.iter().filter(|b| b.1 == bona).map(|b| b.0).collect();
        of.iter().filter(|&&a| a == accepted).count() as f64 / of.len().max(1) as f64
    };
    Ok(json!({
        "samples": out,
        "metrics": facegate::metrics::pad_metrics(&scored, threshold),
        "screen_grid": {"threshold": grid_threshold, "measured": grid_scored.len(), "metrics": facegate::metrics::pad_metrics(&grid_scored, -grid_threshold)},
        "combined": {"apcer": rate(false, true), "bpcer": rate(true, false)},
    }))
}

/// A second carrier's key, derived from the first, for the unlinkability figures.
fn other_carrier_key(key_hex: &str) -> String {
    use sha2::Digest;
    hex::encode(sha2::Sha256::new().chain_update(b"another carrier").chain_update(key_hex.as_bytes()).finalize())
}

fn pairs(p: &Pipeline, csv: &Path, dir: &Path, protect_key: Option<&str>, id_style: bool) -> Result<serde_json::Value> {
    let (header, lines) = read_csv(csv)?;
    let (cx, cy, cd) = (column(&header, "file_x")?, column(&header, "file_y")?, column(&header, "Decision")?);
    // Each image (and each ID-style rendering of it) is embedded once,
    // however many pairs it is in.
    let mut cache: HashMap<(String, Option<IdPhotoStyle>), std::result::Result<facegate::embed::Embedding, String>> = HashMap::new();
    let mut embed = |file: &str, style: Option<IdPhotoStyle>| -> std::result::Result<facegate::embed::Embedding, String> {
        cache
            .entry((file.to_string(), style))
            .or_insert_with(|| calibrate::embed_file(p, &dir.join(file), style).map_err(|e| e.to_string()))
            .clone()
    };
    let mut rows = Vec::new();
    let mut scored = Vec::new();
    // protected domain: (this carrier's key, another carrier's key), made on first use
    let mut keys: Option<(TransformKey, TransformKey)> = None;
    let mut protected_scored = Vec::new();
    let mut cross_key_genuine = Vec::new();
    for (row, f) in lines.into_iter().enumerate() {
        if f.len() <= cx.max(cy).max(cd) {
            return Err(FacegateError::InvalidInput(format!("short CSV line: {}", f.join(","))));
        }
        let same = match f[cd].to_ascii_lowercase().as_str() {
            "yes" | "1" | "true" | "same" => true,
            "no" | "0" | "false" | "different" => false,
            other => return Err(FacegateError::InvalidInput(format!("Decision must be Yes or No, got {other}"))),
        };
        let style = id_style.then(|| IdPhotoStyle::protocol(row));
        match (embed(&f[cx], style), embed(&f[cy], None)) {
            (Ok(a), Ok(b)) => {
                let cosine = a.cosine(&b);
                let score = p.calibration.score(cosine);
                // rank metrics on the cosine: the calibrated score saturates at 1.0 in f32
                // for other embedders, which would turn their ROC into ties
                scored.push((cosine as f64, same));
                let mut row = json!({"file_x": f[cx], "file_y": f[cy], "same": same, "score": score, "cosine": cosine});
                if let Some(key) = protect_key {
                    if keys.is_none() {
                        let dim = a.0.len();
                        keys = Some((TransformKey::from_hex(key, dim)?, TransformKey::from_hex(&other_carrier_key(key), dim)?));
                    }
                    let (k1, k2) = keys.as_ref().expect("made above");
                    let (ta, tb) = (k1.protect(&a)?, k1.protect(&b)?);
                    let est = ta.cosine_estimate(&tb)?;
                    protected_scored.push((est as f64, same));
                    row["protected_score"] = json!(p.calibration.score(est));
                    row["protected_cosine"] = json!(est);
                    if same {
                        // the same person enrolled at two carriers
                        cross_key_genuine.push(ta.cosine_estimate(&k2.protect(&b)?.with_key_id(k1.id()))? as f64);
                    }
                }
                rows.push(row);
            }
            (ea, eb) => {
                let err = ea.err().or(eb.err()).unwrap_or_default();
                rows.push(json!({"file_x": f[cx], "file_y": f[cy], "same": same, "score": null, "error": err}));
            }
        }
    }
    let mut m = verification_metrics(&scored, p.calibration.cosine_threshold() as f64);
    m.threshold = p.calibration.threshold as f64;
    m.eer_threshold = p.calibration.score(m.eer_threshold as f32) as f64;
    let mut out = json!({
        "pairs": rows,
        "metrics": m,
        "failed_pairs": rows.len() - scored.len(),
        "cosine_threshold": p.calibration.cosine_threshold(),
        "embedder": p.embedder()?.config.name,
        "flip": p.embedder()?.config.flip,
        "protocol": if id_style { "id-style: first image 112 px, JPEG q30, every third grey" } else { "plain" },
    });
    if protect_key.is_some() {
        let threshold = p.calibration.cosine_threshold() as f64;
        let mut pm = verification_metrics(&protected_scored, threshold);
        pm.threshold = p.calibration.threshold as f64;
        pm.eer_threshold = p.calibration.score(pm.eer_threshold as f32) as f64;
        let impostor: Vec<f64> = protected_scored.iter().filter(|s| !s.1).map(|s| s.0).collect();
        let stats = |v: &[f64]| {
            let n = v.len().max(1) as f64;
            let mean = v.iter().sum::<f64>() / n;
            let std = (v.iter().map(|x| (x - mean).powi(2)).sum::<f64>() / n).sqrt();
            json!({"count": v.len(), "mean_cosine_estimate": mean, "std": std,
                   "accepted_at_threshold": v.iter().filter(|x| **x >= threshold).count() as f64 / n})
        };
        out["raw_metrics"] = out["metrics"].take();
        out["metrics"] = json!(pm);
        out["template"] = json!({"scheme": facegate::template::SCHEME, "bits": facegate::template::BITS});
        out["unlinkability"] = json!({
            "cross_key_same_person": stats(&cross_key_genuine),
            "same_key_impostor": stats(&impostor),
        });
    }
    Ok(out)
}

fn track(p: &Pipeline, frames: &[PathBuf], fps: f32, seed: Option<&str>, passive: bool, schedule: Schedule) -> Result<serde_json::Value> {
    use facegate::challenge::{events_and_closure_scores, performed, steps_for_seed, verify_track, Step};
    use facegate::session::{DeviceSession, SessionConfig};
    if !(fps > 0.0) {
        return Err(FacegateError::InvalidInput("--fps must be positive".into()));
    }
    let seed = seed.map(|s| hex::decode(s).map_err(|e| FacegateError::InvalidInput(format!("--seed is not hex: {e}")))).transpose()?;
    // the widget's session, fed the frames as its camera; the seed only
    // decides which steps its progress waits for, the track is the same
    let mut session = (schedule == Schedule::Session)
        .then(|| -> Result<DeviceSession> {
            let mut s = DeviceSession::new()?;
            let challenge_seed = hex::encode(seed.as_deref().unwrap_or(b"track"));
            s.begin(SessionConfig { session_id: "track".into(), nonce: "track".into(), challenge_seed, transform_key: "00".repeat(32), match_threshold: 0.0, liveness_threshold: 0.0, screen_grid_threshold: facegate::replay::DEFAULT_SCREEN_GRID_THRESHOLD, escrow_public_key: None })?;
            Ok(s)
        })
        .transpose()?;
    let mut samples = Vec::new();
    let mut per_frame = Vec::new();
    let mut passive_scores = Vec::new();
    let mut screen_grid = Vec::new();
    for (i, f) in frames.iter().enumerate() {
        let img = read_image_file(f)?;
        let t_ms = (i as f32 * 1000.0 / fps).round() as u32;
        let sample = match session.as_mut() {
            Some(session) => {
                let update = session.push_frame(p, None, &img, t_ms)?;
                screen_grid.extend(update.screen_grid);
                // only frames that count towards a challenge (one face, in view)
                update.sample
            }
            None => match p.track_sample(&img, t_ms)? {
                Some((det, _, s)) => {
                    if passive && samples.len() % 3 == 0 {
                        let model = p.liveness.as_ref().ok_or_else(|| FacegateError::InvalidInput("liveness models not loaded".into()))?;
                        passive_scores.push(model.score(&img, &det)?);
                    }
                    Some(s)
                }
                None => None,
            },
        };
        per_frame.push(json!(sample));
        samples.extend(sample);
    }
    if let Some(session) = session.as_mut() {
        // the session's own scores: during a blink step it measures
        // passive liveness after the step, not on the frame
        session.measure_deferred(p, None)?;
        passive_scores = session.passive_scores().to_vec();
    }
    let (recognised, closure_scores) = events_and_closure_scores(&samples);
    let mut v = json!({
        "frames": per_frame,
        "faces_found": samples.len(),
        "performed": {
            "blink": performed(&samples, Step::Blink),
            "turn_left": performed(&samples, Step::TurnLeft),
            "turn_right": performed(&samples, Step::TurnRight),
        },
        "blinks": recognised.blinks,
        "turns": recognised.turns,
        // how close every frame came to the blink rule's "closed" (>= 1)
        "closure_scores": closure_scores,
    });
    if session.is_some() {
        // the screen-replay cue as the session aggregates it (detection frames)
        v["screen_grid"] = json!({"median": facegate::session::median(&mut screen_grid), "measured_frames": screen_grid.len()});
    }
    if passive {
        v["passive_liveness"] = json!({
            "median": facegate::session::median(&mut passive_scores),
            "scored_frames": passive_scores.len(),
        });
    }
    if let Some(seed) = seed {
        v["challenge"] = match verify_track(&seed, &samples) {
            Ok(passed) => json!({"steps": steps_for_seed(&seed), "passed": true, "transcript": passed}),
            Err(f) => json!({"steps": steps_for_seed(&seed), "passed": false, "reason": f.code(), "failure": f}),
        };
    }
    Ok(v)
}

/// Labelled boxes per image file, in file order, from imglab XML or CSV.
fn read_box_labels(path: &Path) -> Result<Vec<(String, Vec<[f32; 4]>)>> {
    let bad = |m: String| FacegateError::InvalidInput(format!("{}: {m}", path.display()));
    let mut images: Vec<(String, Vec<[f32; 4]>)> = Vec::new();
    let mut add = |file: &str, b: Option<[f32; 4]>| {
        if images.last().is_none_or(|(f, _)| f != file) {
            images.push((file.to_string(), Vec::new()));
        }
        if let Some(b) = b {
            images.last_mut().unwrap().1.push(b);
        }
    };
    if path.extension().is_some_and(|e| e.eq_ignore_ascii_case("xml")) {
        let text = std::fs::read_to_string(path)
            .map_err(|e| FacegateError::Io { path: path.display().to_string(), reason: e.to_string() })?;
        let doc = roxmltree::Document::parse(&text).map_err(|e| bad(e.to_string()))?;
        for image in doc.descendants().filter(|n| n.has_tag_name("image")) {
            let file = image.attribute("file").ok_or_else(|| bad("<image> without file".into()))?;
            add(file, None);
            for b in image.children().filter(|n| n.has_tag_name("box")) {
                if b.attribute("ignore") == Some("1") {
                    continue;
                }
                let num = |a: &str| -> Result<f32> {
                    b.attribute(a).and_then(|v| v.parse().ok()).ok_or_else(|| bad(format!("<box> lacks numeric {a}")))
                };
                add(file, Some([num("left")?, num("top")?, num("width")?, num("height")?]));
            }
        }
    } else {
        let (header, rows) = read_csv(path)?;
        let (cf, cx, cy) = (column(&header, "file")?, column(&header, "x")?, column(&header, "y")?);
        let (cw, ch) = (column(&header, "w")?, column(&header, "h")?);
        for r in rows {
            let get = |i: usize| r.get(i).map(String::as_str).unwrap_or("");
            if get(cx).is_empty() {
                add(get(cf), None);
                continue;
            }
            let num = |i: usize| get(i).parse::<f32>().map_err(|_| bad(format!("not a number: {}", get(i))));
            add(get(cf), Some([num(cx)?, num(cy)?, num(cw)?, num(ch)?]));
        }
    }
    Ok(images)
}

fn detect_eval(p: &Pipeline, labels: &Path, dir: &Path, min_iou: f64) -> Result<serde_json::Value> {
    let labelled = read_box_labels(labels)?;
    let mut per_image = Vec::new();
    let mut scored = Vec::new();
    for (file, truth) in labelled {
        let img = read_image_file(&dir.join(&file))?;
        let dets: Vec<([f32; 4], f32)> = p.detect(&img)?.into_iter().map(|d| (d.bbox, d.score)).collect();
        let m = facegate::metrics::detection_metrics(&[(truth.clone(), dets.clone())], min_iou);
        per_image.push(json!({"file": file, "faces": m.faces, "found": m.found, "false_positives": m.false_positives}));
        scored.push((truth, dets));
    }
    Ok(json!({
        "images": per_image,
        "metrics": facegate::metrics::detection_metrics(&scored, min_iou),
        "detector": p.model_hashes.first().map(|(name, _)| name.clone()),
        "labels": labels.display().to_string(),
    }))
}
