//! `cargo xtask eval`: accuracy of the whole pipeline on labelled data, in
//! one command. Every figure comes from the release `facegate` CLI (the same
//! code the widget runs) on real files; this module only picks the data,
//! makes the attack clips, draws the ROC and writes the report.
//!
//! ```text
//! cargo xtask eval [--data DIR] [--out DIR] [--key HEX]
//!                  [--pairs CSV --images DIR] [--boxes XML|CSV [--box-images DIR]]
//!                  [--liveness CSV --liveness-images DIR] [--clips CSV]
//!                  [--footage DIR [--footage-events CSV]]
//! ```
//! Without flags it reads `../shared/data` (lfw-dev pairs, dlib-faces boxes,
//! nuaa-dev attacks, faces stills and footage, footage-dev's labelled
//! blinks and turns) and `xtask/eval/clips.csv`, `footage-events.csv`.
//! Output: a table on stdout, `report.json`, `report.md` and `roc.svg` in
//! `target/eval/` (or `--out`).

use serde_json::{json, Value};
use std::path::{Path, PathBuf};
use std::process::Command;

/// Frame rate of the generated attack clips and the decoded footage: the
/// widget samples the camera at about this rate on a mid-range phone.
const CLIP_FPS: u32 = 15;
/// Length of each generated attack clip, seconds.
const ATTACK_SECONDS: u32 = 3;
/// Challenge seeds each clip is verified against (the server's check).
const SEEDS: u32 = 32;

struct Sources {
    pairs: Option<(PathBuf, PathBuf)>,
    boxes: Vec<(PathBuf, PathBuf)>,
    liveness: Option<(PathBuf, PathBuf)>,
    clips: Option<PathBuf>,
    /// Labelled footage: the folder with labels.csv and the clips, and the
    /// per-event annotation (xtask/eval/footage-events.csv).
    footage: Option<(PathBuf, PathBuf)>,
    /// Folder that clip files and attack stills are relative to.
    data: PathBuf,
    out: PathBuf,
    key: String,
}

fn parse(args: &[String], root: &Path) -> Result<Sources, String> {
    let mut flags = std::collections::HashMap::new();
    let mut it = args.iter();
    while let Some(a) = it.next() {
        let name = a.strip_prefix("--").ok_or_else(|| format!("unexpected argument {a}"))?;
        let value = it.next().ok_or_else(|| format!("--{name} needs a value"))?;
        flags.insert(name.to_string(), PathBuf::from(value));
    }
    for k in flags.keys() {
        if !["data", "out", "key", "pairs", "images", "boxes", "box-images", "liveness", "liveness-images", "clips", "footage", "footage-events"].contains(&k.as_str()) {
            return Err(format!("unknown flag --{k}"));
        }
    }
    let data = flags.get("data").cloned().unwrap_or_else(|| root.join("../shared/data"));
    let given = |k: &str| flags.get(k).cloned();
    let default_if = |p: PathBuf| p.exists().then_some(p);
    let pairs = match given("pairs") {
        Some(csv) => Some((csv, given("images").ok_or("--pairs needs --images")?)),
        None => default_if(data.join("lfw-dev/pairs.csv")).map(|c| (c, data.join("lfw-dev/images"))),
    };
    let boxes = match given("boxes") {
        Some(f) => {
            let dir = given("box-images").unwrap_or_else(|| f.parent().unwrap_or(Path::new(".")).to_path_buf());
            vec![(f, dir)]
        }
        None => ["training.xml", "testing.xml"]
            .iter()
            .filter_map(|n| default_if(data.join("dlib-faces").join(n)))
            .map(|f| (f, data.join("dlib-faces")))
            .collect(),
    };
    let liveness = match given("liveness") {
        Some(csv) => Some((csv, given("liveness-images").ok_or("--liveness needs --liveness-images")?)),
        None => default_if(data.join("nuaa-dev/labels.csv")).map(|c| (c, data.join("nuaa-dev"))),
    };
    let clips = given("clips").or_else(|| default_if(root.join("xtask/eval/clips.csv")));
    let footage = given("footage")
        .or_else(|| default_if(data.join("footage-dev")))
        .filter(|d| d.join("labels.csv").exists())
        .map(|d| (d, given("footage-events").unwrap_or_else(|| root.join("xtask/eval/footage-events.csv"))));
    let key = flags
        .get("key")
        .map(|k| k.display().to_string())
        .unwrap_or_else(|| "5eed".repeat(16));
    let out = flags.get("out").cloned().unwrap_or_else(|| root.join("target/eval"));
    Ok(Sources { pairs, boxes, liveness, clips, footage, data, out, key })
}

/// Runs the release CLI with `--json` and parses what it prints.
pub fn facegate(root: &Path, args: &[&str]) -> Result<Value, String> {
    let out = Command::new(root.join("target/release/facegate"))
        .args(args)
        .arg("--json")
        .output()
        .map_err(|e| format!("facegate: {e}"))?;
    if !out.status.success() {
        return Err(format!("facegate {}: {}", args.join(" "), String::from_utf8_lossy(&out.stderr).trim()));
    }
    serde_json::from_slice(&out.stdout).map_err(|e| format!("facegate {}: bad JSON: {e}", args.first().unwrap_or(&"")))
}

pub fn eval(args: &[String], root: &Path) -> Result<(), String> {
    let src = parse(args, root)?;
    std::fs::create_dir_all(&src.out).map_err(|e| e.to_string())?;
    let mut report = json!({
        "date": crate::today(),
        "machine": crate::machine(),
        "key": "the transform key is a fixed evaluation key (not secret); --key changes it",
    });
    let mut table: Vec<(String, String, String)> = Vec::new();

    if let Some((csv, images)) = &src.pairs {
        eprintln!("eval: verification pairs {}", csv.display());
        let pairs_args = |extra: &[&str]| {
            let mut a = vec!["pairs".to_string(), csv.to_string_lossy().into_owned(), "--images".into(), images.to_string_lossy().into_owned(), "--protected".into(), "--key".into(), src.key.clone()];
            a.extend(extra.iter().map(|s| s.to_string()));
            a
        };
        let plain = facegate(root, &pairs_args(&[]).iter().map(String::as_str).collect::<Vec<_>>())?;
        eprintln!("eval: the same pairs, ID-style (first image 112 px, JPEG q30, every third grey)");
        let id_style = facegate(root, &pairs_args(&["--id-style"]).iter().map(String::as_str).collect::<Vec<_>>())?;
        let section = verification_section(&plain, &id_style, csv, &src.out)?;
        let from = csv.display().to_string();
        for (domain, m) in [("raw", &section["raw"]), ("protected", &section["protected"]), ("ID-style raw", &section["id_style"]["raw"]), ("ID-style protected", &section["id_style"]["protected"])] {
            table.push((format!("verification {domain}: AUC"), format!("{:.4}", f(&m["auc"])), from.clone()));
            table.push((format!("verification {domain}: EER"), pct(&m["eer"]), from.clone()));
            table.push((format!("verification {domain}: TAR @ FAR 1e-2"), pct(&m["tar_at_far_1e-2"]), from.clone()));
            table.push((format!("verification {domain}: TAR @ FAR 1e-3"), pct(&m["tar_at_far_1e-3"]), from.clone()));
        }
        let u = &section["unlinkability"];
        table.push((
            "cross-carrier same person accepted".into(),
            pct(&u["cross_key_same_person"]["accepted_at_threshold"]),
            from.clone(),
        ));
        // operating points from every cross-identity pair of the images
        eprintln!("eval: operating points over every cross-identity pair of {}", images.display());
        let points = facegate(root, &["calibrate", "--images", &images.to_string_lossy(), "--pairs", &csv.to_string_lossy(), "--key", &src.key])?;
        for domain in ["raw", "protected"] {
            for pt in points[domain].as_array().into_iter().flatten() {
                for protocol in ["plain", "id_style"] {
                    let m = &pt[protocol];
                    table.push((
                        format!("{domain} {} {protocol}: TAR (FAR measured)", pt["name"].as_str().unwrap_or("")),
                        format!("{} ({}/{})", pct(&m["tar"]), m["impostors_accepted"], m["impostor_pairs"]),
                        format!("all pairs of {}", images.display()),
                    ));
                }
            }
        }
        report["operating_points"] = points;
        report["verification"] = section;
    }

    if !src.boxes.is_empty() {
        let mut sets = Vec::new();
        let (mut faces, mut found, mut fps, mut imgs) = (0u64, 0u64, 0u64, 0u64);
        for (labels, dir) in &src.boxes {
            eprintln!("eval: detection boxes {}", labels.display());
            let v = facegate(root, &["detect-eval", &labels.to_string_lossy(), "--images", &dir.to_string_lossy()])?;
            let m = &v["metrics"];
            faces += m["faces"].as_u64().unwrap_or(0);
            found += m["found"].as_u64().unwrap_or(0);
            fps += m["false_positives"].as_u64().unwrap_or(0);
            imgs += m["images"].as_u64().unwrap_or(0);
            sets.push(json!({"labels": labels.display().to_string(), "metrics": m, "detector": v["detector"]}));
        }
        let recall = found as f64 / faces.max(1) as f64;
        let from = src.boxes.iter().map(|b| b.0.display().to_string()).collect::<Vec<_>>().join(" + ");
        table.push(("detection recall (IoU >= 0.5)".into(), format!("{:.1} % ({found}/{faces})", recall * 100.0), from.clone()));
        table.push(("detection false positives".into(), format!("{fps} in {imgs} images"), from));
        report["detection"] = json!({"sets": sets, "faces": faces, "found": found, "recall": recall, "false_positives": fps, "images": imgs});
    }

    if let Some((csv, dir)) = &src.liveness {
        eprintln!("eval: passive liveness {}", csv.display());
        let v = facegate(root, &["liveness-set", &csv.to_string_lossy(), "--images", &dir.to_string_lossy()])?;
        let m = &v["metrics"];
        let from = csv.display().to_string();
        table.push(("passive liveness APCER".into(), pct(&m["apcer"]), from.clone()));
        table.push(("passive liveness BPCER".into(), pct(&m["bpcer"]), from.clone()));
        table.push(("passive liveness EER".into(), pct(&m["eer"]), from));
        report["passive_liveness"] = json!({"labels": csv.display().to_string(), "metrics": m});
    }

    let active = active_liveness(root, &src)?;
    if let Some(a) = &active {
        let from = src.clips.as_ref().map(|c| c.display().to_string()).unwrap_or_default();
        table.push((
            "active: labelled step recognised (bona fide)".into(),
            format!("{}/{}", a["bona_fide"]["recognised"], a["bona_fide"]["clips"]),
            from.clone(),
        ));
        for kind in ["still", "shaken", "tilted"] {
            let k = &a["attacks"][kind];
            table.push((
                format!("active APCER, {kind} photo: any step / full challenge"),
                format!("{} / {}", pct(&k["any_step_rate"]), pct(&k["challenge_pass_rate"])),
                format!("{} stills from {}", k["clips"], src.data.display()),
            ));
            table.push((
                format!("passive APCER on {kind}-photo clips"),
                pct(&k["passive_apcer"]),
                format!("median passive score per clip, threshold {:.2}", f(&a["passive_threshold"])),
            ));
        }
    }
    if let Some(a) = active {
        report["active_liveness"] = a;
    }
    if let Some(r) = screen_replays(root, &src)? {
        for k in r["kinds"].as_array().into_iter().flatten() {
            let g = &k["screen_grid"]["metrics"];
            table.push((
                format!("APCER, synthetic screen replay: {}: passive / screen cue / both", k["kind"].as_str().unwrap_or("")),
                format!(
                    "{} (AUC {:.2}) / {} (AUC {:.2}) / {}; BPCER of both {}",
                    pct(&k["metrics"]["apcer"]),
                    f(&k["metrics"]["auc"]),
                    pct(&g["apcer"]),
                    f(&g["auc"]),
                    pct(&k["combined"]["apcer"]),
                    pct(&k["combined"]["bpcer"])
                ),
                format!("{} frames of {}, against the same frames as bona fide", k["metrics"]["attacks"], src.footage.as_ref().map(|f| f.0.display().to_string()).unwrap_or_default()),
            ));
        }
        report["screen_replays"] = r;
    }
    if let Some(e) = footage_events(root, &src)? {
        let from = src.footage.as_ref().map(|f| f.0.display().to_string()).unwrap_or_default();
        for r in e["rates"].as_array().into_iter().flatten() {
            let at = format!("session schedule, {} fps", r["fps"].as_str().map(String::from).unwrap_or_else(|| r["fps"].to_string()));
            table.push((format!("blink recall ({at})"), format!("{} ({}/{})", pct(&r["blink_recall"]), r["blinks_recognised"], r["blinks_labelled"]), from.clone()));
            table.push((format!("false blinks per minute ({at})"), format!("{:.1} ({} in {:.2} min)", f(&r["false_blinks_per_minute"]), r["false_blinks"], f(&r["minutes"])), from.clone()));
            let mut depths: Vec<f64> = r["blink_closure_scores"].as_array().into_iter().flatten().map(|b| b["score"].as_f64().unwrap_or(0.0)).collect();
            depths.sort_by(f64::total_cmp);
            if let (Some(low), Some(e)) = (depths.first(), r["deepest_closure_elsewhere"].as_object()) {
                table.push((
                    format!("blink closure score, labelled blinks vs elsewhere ({at}; 1 = the rule's closed)"),
                    format!("shallowest blink {low:.2}, median {:.2}; deepest frame elsewhere {:.2} ({} at {:.2} s)", depths[depths.len() / 2], f(&e["score"]), e["clip"].as_str().unwrap_or(""), f(&e["t_s"])),
                    from.clone(),
                ));
            }
            for side in ["turn_left", "turn_right"] {
                let t = &r["turns"][side];
                table.push((format!("{side} recall, user's side ({at})"), format!("{}/{}", t["recognised"], t["labelled"]), from.clone()));
            }
            table.push((format!("turns with no labelled turn ({at})"), r["false_turns"].to_string(), from.clone()));
        }
        let c = &e["assembled_challenges"];
        let reasons: Vec<String> = c["failures"].as_object().into_iter().flatten().map(|(k, n)| format!("{n} {k}")).collect();
        table.push((
            format!("whole challenge, bona fide pass rate (assembled from labelled segments, {} seeds, {} fps)", c["seeds"], c["fps"]),
            format!("{} ({}/{}){}", pct(&c["pass_rate"]), c["passed"], c["seeds"], if reasons.is_empty() { String::new() } else { format!("; failed: {}", reasons.join(", ")) }),
            e["segments"].as_str().unwrap_or("").to_string(),
        ));
        table.push(("whole challenge, same segments in the wrong order: pass rate".into(), format!("{} ({}/{})", pct(&c["wrong_order_pass_rate"]), c["wrong_order_passed"], c["seeds"]), e["segments"].as_str().unwrap_or("").to_string()));
        report["footage_events"] = e;
    }

    // paths in the report relative to the repository, as a reader would type them
    let prefix = format!("{}/", root.display());
    for row in table.iter_mut() {
        row.2 = row.2.replace(&prefix, "");
    }
    let w = table.iter().map(|r| r.0.len()).max().unwrap_or(10);
    let wv = table.iter().map(|r| r.1.len()).max().unwrap_or(10);
    println!("{:<w$}  {:>wv$}  from", "figure", "value");
    let mut md = format!(
        "# facegate eval, {}\n\nMachine: {}. Reproduce with `cargo xtask eval`.\n\n| figure | value | from |\n|---|---|---|\n",
        report["date"].as_str().unwrap_or(""),
        report["machine"].as_str().unwrap_or("")
    );
    for (name, value, from) in &table {
        println!("{name:<w$}  {value:>wv$}  {from}");
        md.push_str(&format!("| {name} | {value} | {from} |\n"));
    }
    if report.get("active_liveness").is_some() {
        md.push_str(&format!(
            "\nActive-liveness attack clips: every still (the photos in faces/ and every sixth NUAA print) rendered by ffmpeg \
             held still, shaken (in-plane rotation and sway) and tilted (swung about its vertical axis), {ATTACK_SECONDS} s at {CLIP_FPS} fps, \
             tracked under the widget's session schedule (frames with several faces do not count); \
             'any step' counts clips in which one challenge step (blink, turn) is recognised anywhere, 'full challenge' the share of \
             {SEEDS} random challenges the clip's track passes as the server checks it. The clips are digital re-renderings: a digital \
             photo carries no print or screen artefacts, so the passive APCER on them is what an injected video stream would get, \
             and the active challenge is the defence there.\n"
        ));
    }
    if let Some(v) = report.get("verification") {
        md.push_str("\n![ROC](roc.svg)\n\nWorst pairs (raw domain):\n\n");
        for k in ["worst_genuine", "worst_impostor"] {
            for p in v[k].as_array().into_iter().flatten() {
                md.push_str(&format!("- {k}: {} vs {}, score {:.4}\n", p["file_x"].as_str().unwrap_or(""), p["file_y"].as_str().unwrap_or(""), f(&p["score"])));
            }
        }
    }
    let report_text = serde_json::to_string_pretty(&report).unwrap().replace(&prefix, "");
    std::fs::write(src.out.join("report.json"), report_text).map_err(|e| e.to_string())?;
    std::fs::write(src.out.join("report.md"), md).map_err(|e| e.to_string())?;
    println!("wrote {}/report.json, report.md, roc.svg", src.out.display());
    Ok(())
}

fn f(v: &Value) -> f64 {
    v.as_f64().unwrap_or(f64::NAN)
}

fn pct(v: &Value) -> String {
    format!("{:.1} %", f(v) * 100.0)
}

/// Metrics in both domains, the worst pairs, and the ROC plot.
fn verification_section(v: &Value, id_style: &Value, csv: &Path, out: &Path) -> Result<Value, String> {
    let rows = v["pairs"].as_array().ok_or("pairs output without rows")?;
    // ranked on the cosine: the calibrated score of a strong model
    // saturates at 1.0 in f32, which would turn the ROC into ties
    let scored = |v: &Value, key: &str| -> Vec<(f64, bool)> {
        v["pairs"].as_array().into_iter().flatten().filter_map(|r| Some((r[key].as_f64()?, r["same"].as_bool()?))).collect()
    };
    let (raw, protected) = (scored(v, "cosine"), scored(v, "protected_cosine"));
    let (id_raw, id_protected) = (scored(id_style, "cosine"), scored(id_style, "protected_cosine"));
    let raw_metrics = &v["raw_metrics"];
    let protected_metrics = &v["metrics"];
    let threshold = f(&v["cosine_threshold"]);
    let mut sorted: Vec<&Value> = rows.iter().filter(|r| r["score"].is_number()).collect();
    sorted.sort_by(|a, b| f(&a["score"]).total_cmp(&f(&b["score"])));
    // sorted by score: the lowest genuine and the highest impostor scores
    let worst = |same: bool, rows: &mut dyn Iterator<Item = &&Value>| -> Vec<Value> {
        rows.filter(|r| r["same"].as_bool() == Some(same)).take(3).map(|r| (*r).clone()).collect()
    };
    let svg = roc_svg(
        &[
            ("raw embeddings", &raw, "#1b5e9f", f(&raw_metrics["auc"])),
            ("protected templates", &protected, "#c2410c", f(&protected_metrics["auc"])),
            ("ID-style, raw", &id_raw, "#15803d", f(&id_style["raw_metrics"]["auc"])),
            ("ID-style, protected", &id_protected, "#7e22ce", f(&id_style["metrics"]["auc"])),
        ],
        threshold,
        &format!("ROC, {} ({} pairs)", csv.file_name().map(|n| n.to_string_lossy()).unwrap_or_default(), raw.len()),
    );
    std::fs::write(out.join("roc.svg"), svg).map_err(|e| e.to_string())?;
    Ok(json!({
        "pairs": csv.display().to_string(),
        "embedder": v["embedder"],
        "failed_pairs": v["failed_pairs"],
        "cosine_threshold": threshold,
        "raw": raw_metrics,
        "protected": protected_metrics,
        "template": v["template"],
        "unlinkability": v["unlinkability"],
        "id_style": {"protocol": id_style["protocol"], "failed_pairs": id_style["failed_pairs"], "raw": id_style["raw_metrics"], "protected": id_style["metrics"]},
        "worst_genuine": worst(true, &mut sorted.iter()),
        "worst_impostor": worst(false, &mut sorted.iter().rev()),
        "roc": out.join("roc.svg").display().to_string(),
    }))
}

/// TAR against FAR on a log FAR axis (1e-3 .. 1), one curve per domain, the
/// operating threshold marked on each.
fn roc_svg(curves: &[(&str, &[(f64, bool)], &str, f64)], threshold: f64, title: &str) -> String {
    let (w, h, left, top, pw, ph) = (640.0, 460.0, 70.0, 40.0, 540.0, 360.0);
    let min_log = -3.0f64;
    let x = |far: f64| left + (far.max(1e-3).log10() - min_log) / -min_log * pw;
    let y = |tar: f64| top + (1.0 - tar) * ph;
    let mut s = format!(
        "<svg xmlns='http://www.w3.org/2000/svg' width='{w}' height='{h}' viewBox='0 0 {w} {h}' font-family='sans-serif' font-size='12'>\n\
         <rect width='100%' height='100%' fill='white'/>\n<text x='{}' y='22' text-anchor='middle' font-size='14'>{title}</text>\n",
        left + pw / 2.0
    );
    for d in 0..=3 {
        let far = 10f64.powi(-d);
        let xx = x(far);
        let label = if d == 0 { "1".to_string() } else { format!("1e-{d}") };
        s += &format!("<line x1='{xx:.1}' y1='{top}' x2='{xx:.1}' y2='{}' stroke='#ddd'/><text x='{xx:.1}' y='{}' text-anchor='middle'>{label}</text>\n", top + ph, top + ph + 16.0);
    }
    for t in 0..=10 {
        let tar = t as f64 / 10.0;
        let yy = y(tar);
        s += &format!("<line x1='{left}' y1='{yy:.1}' x2='{}' y2='{yy:.1}' stroke='#eee'/><text x='{}' y='{:.1}' text-anchor='end'>{tar:.1}</text>\n", left + pw, left - 6.0, yy + 4.0);
    }
    s += &format!(
        "<rect x='{left}' y='{top}' width='{pw}' height='{ph}' fill='none' stroke='#333'/>\n\
         <text x='{}' y='{}' text-anchor='middle'>false accept rate (log)</text>\n\
         <text x='16' y='{}' text-anchor='middle' transform='rotate(-90 16 {})'>true accept rate</text>\n",
        left + pw / 2.0,
        h - 14.0,
        top + ph / 2.0,
        top + ph / 2.0
    );
    for (i, (name, scores, colour, auc)) in curves.iter().enumerate() {
        let pts = facegate::metrics::roc(scores);
        let path: Vec<String> = pts.iter().filter(|p| p.0 > 0.0).map(|p| format!("{:.1},{:.1}", x(p.0), y(p.1))).collect();
        s += &format!("<polyline fill='none' stroke='{colour}' stroke-width='2' points='{}'/>\n", path.join(" "));
        // operating point: the last ROC point whose threshold is still >= the policy threshold
        if let Some(op) = pts.iter().filter(|p| p.2 >= threshold).last() {
            s += &format!("<circle cx='{:.1}' cy='{:.1}' r='5' fill='none' stroke='{colour}' stroke-width='2'/>\n", x(op.0), y(op.1));
        }
        let ly = top + ph - 40.0 + i as f64 * 18.0;
        s += &format!(
            "<line x1='{}' y1='{ly:.1}' x2='{}' y2='{ly:.1}' stroke='{colour}' stroke-width='2'/><text x='{}' y='{:.1}'>{name} (AUC {auc:.4})</text>\n",
            left + pw - 230.0,
            left + pw - 205.0,
            left + pw - 200.0,
            ly + 4.0
        );
    }
    s += &format!("<text x='{}' y='{}' fill='#555'>circles: the policy threshold {threshold:.2}</text>\n", left + 8.0, top + 16.0);
    s + "</svg>\n"
}

/// One clip for the active-liveness figures: frames decoded or generated
/// into a folder.
struct Clip {
    name: String,
    bona_fide: bool,
    kind: String,
    /// For bona fide clips: the steps the person performs (labelled by eye).
    performs: Vec<String>,
    frames: Vec<PathBuf>,
}

fn frames_in(dir: &Path) -> Vec<PathBuf> {
    let mut v: Vec<PathBuf> = std::fs::read_dir(dir).into_iter().flatten().flatten().map(|e| e.path()).collect();
    v.sort();
    v
}

/// Runs ffmpeg; frames are written as high-quality JPEG (`-q:v 2`), several
/// times faster to write and read than PNG at these sizes.
fn ffmpeg(args: &[&str]) -> Result<(), String> {
    let (inputs, output) = args.split_at(args.len() - 1);
    let st = Command::new("ffmpeg").args(["-loglevel", "error", "-y"]).args(inputs).args(["-q:v", "2"]).args(output).status().map_err(|e| format!("ffmpeg: {e} (cargo xtask setup installs it)"))?;
    st.success().then_some(()).ok_or_else(|| format!("ffmpeg failed: {}", args.join(" ")))
}

/// A photograph presented to the camera, three ways: held still; shaken
/// (in-plane rotation and sway, as a hand holding a print); tilted (swung
/// about its vertical axis, the classic try at faking a head turn with a
/// print — the perspective squeezes one side of the face as a real turn
/// would).
fn attack_filter(kind: &str) -> String {
    let n = CLIP_FPS * ATTACK_SECONDS;
    match kind {
        "still" => "pad=iw*1.4:ih*1.4:(ow-iw)/2:(oh-ih)/2:color=gray".to_string(),
        "shaken" => format!(
            "pad=iw*1.4:ih*1.4:(ow-iw)/2:(oh-ih)/2:color=gray,rotate='0.12*sin(2*PI*t*1.3)':fillcolor=gray,\
             crop=iw*0.9:ih*0.9:'iw*0.05+iw*0.04*sin(2*PI*t*0.9)':'ih*0.05+ih*0.03*cos(2*PI*t*1.1)'"
        ),
        _ => {
            // corners move so the right or the left edge recedes, one cycle per clip
            let a = format!("max(0,sin(2*PI*on/{n}))");
            let b = format!("max(0,-sin(2*PI*on/{n}))");
            format!(
                "pad=iw*1.4:ih*1.4:(ow-iw)/2:(oh-ih)/2:color=gray,perspective=\
                 x0='W*0.18*{a}':y0='H*0.1*{a}':x1='W-W*0.18*{b}':y1='H*0.1*{b}':\
                 x2='W*0.18*{a}':y2='H-H*0.1*{a}':x3='W-W*0.18*{b}':y3='H-H*0.1*{b}':sense=destination:eval=frame"
            )
        }
    }
}

fn attack_stills(src: &Sources) -> Vec<PathBuf> {
    let mut v: Vec<PathBuf> = frames_in(&src.data.join("faces"))
        .into_iter()
        .filter(|p| p.extension().is_some_and(|e| ["jpg", "jpeg", "png"].contains(&e.to_string_lossy().to_lowercase().as_str())))
        .collect();
    // every sixth NUAA print photo: 12 more subjects' prints, already
    // re-captured through a webcam
    v.extend(frames_in(&src.data.join("nuaa-dev/attack_print")).into_iter().step_by(6));
    v
}

fn clips(src: &Sources, work: &Path) -> Result<Vec<Clip>, String> {
    let mut out = Vec::new();
    if let Some(csv) = &src.clips {
        let text = std::fs::read_to_string(csv).map_err(|e| format!("{}: {e}", csv.display()))?;
        for (i, line) in text.lines().skip(1).filter(|l| !l.trim().is_empty() && !l.starts_with('#')).enumerate() {
            // file,start_s,duration_s,label,performs (steps separated by '+')
            let f: Vec<&str> = line.split(',').map(str::trim).collect();
            if f.len() < 5 {
                return Err(format!("{}: short line {line}", csv.display()));
            }
            let dir = work.join(format!("clip{i}"));
            std::fs::create_dir_all(&dir).map_err(|e| e.to_string())?;
            let file = src.data.join(f[0]);
            ffmpeg(&["-ss", f[1], "-t", f[2], "-i", &file.to_string_lossy(), "-vf", &format!("fps={CLIP_FPS}"), &dir.join("f_%04d.jpg").to_string_lossy()])?;
            out.push(Clip {
                name: format!("{} {}+{}s", f[0], f[1], f[2]),
                bona_fide: f[3] == "bona_fide",
                kind: f[3].to_string(),
                performs: f[4].split('+').filter(|s| !s.is_empty()).map(String::from).collect(),
                frames: frames_in(&dir),
            });
        }
    }
    for (i, still) in attack_stills(src).iter().enumerate() {
        for kind in ["still", "shaken", "tilted"] {
            let dir = work.join(format!("attack{i}_{kind}"));
            std::fs::create_dir_all(&dir).map_err(|e| e.to_string())?;
            ffmpeg(&[
                "-loop", "1", "-framerate", &CLIP_FPS.to_string(), "-t", &ATTACK_SECONDS.to_string(),
                "-i", &still.to_string_lossy(), "-vf", &attack_filter(kind), &dir.join("f_%04d.jpg").to_string_lossy(),
            ])?;
            let name = still.strip_prefix(&src.data).unwrap_or(still).display().to_string();
            out.push(Clip { name, bona_fide: false, kind: kind.into(), performs: Vec::new(), frames: frames_in(&dir) });
        }
    }
    Ok(out)
}

/// Frame rates footage is evaluated at besides each clip's own: a
/// mid-range phone's analysis loop and a slow one.
const FOOTAGE_FPS: [u32; 2] = [15, 10];
/// A recognised event counts for a labelled one within this many seconds of
/// its window (the labelled times are approximate, read off the frames).
const EVENT_TOLERANCE_S: f64 = 0.5;

/// A labelled event's window widened by EVENT_TOLERANCE_S: where a
/// recognised event counts for it, and where its closure scores are read.
fn event_window(start: f64, end: f64) -> (f64, f64) {
    (start - EVENT_TOLERANCE_S, end + EVENT_TOLERANCE_S)
}

/// Labelled events (clip, event, start s, end s) of the per-event annotation.
fn labelled_events(path: &Path) -> Result<Vec<(String, String, f64, f64)>, String> {
    let bad = |e: &dyn std::fmt::Display| format!("{}: {e}", path.display());
    let mut reader = csv::ReaderBuilder::new().comment(Some(b'#')).trim(csv::Trim::All).from_path(path).map_err(|e| bad(&e))?;
    reader.deserialize().map(|row| row.map_err(|e| bad(&e))).collect()
}

/// Every blink and turn the session schedule recognises in each labelled
/// clip, matched against the labelled events: blink recall, false blinks per
/// minute, turn recall per side (the user's), at each clip's own frame rate
/// and at FOOTAGE_FPS.
fn footage_events(root: &Path, src: &Sources) -> Result<Option<Value>, String> {
    let Some((dir, events_csv)) = &src.footage else { return Ok(None) };
    let labels = dir.join("labels.csv");
    let mut reader = csv::Reader::from_path(&labels).map_err(|e| format!("{}: {e}", labels.display()))?;
    let header = reader.headers().map_err(|e| e.to_string())?.clone();
    let col = |name: &str| header.iter().position(|h| h == name).ok_or_else(|| format!("{}: no column {name}", labels.display()));
    let (c_file, c_fps, c_seconds, c_kind) = (col("file")?, col("fps")?, col("seconds")?, col("kind")?);
    let mut clips = Vec::new();
    for row in reader.records() {
        let row = row.map_err(|e| e.to_string())?;
        if &row[c_kind] == "bona_fide" {
            clips.push((row[c_file].to_string(), row[c_fps].parse::<f64>().unwrap_or(30.0), row[c_seconds].parse::<f64>().unwrap_or(0.0)));
        }
    }
    let events = labelled_events(events_csv)?;
    let work = src.out.join("footage");
    let mut rates = Vec::new();
    // each clip's track at CHALLENGE_FPS, for the assembled challenges
    let mut tracks: Vec<(String, Vec<facegate::challenge::TrackSample>)> = Vec::new();
    for rate in std::iter::once(None).chain(FOOTAGE_FPS.into_iter().map(Some)) {
        let (mut blinks_labelled, mut blinks_found, mut false_blinks, mut false_turns, mut seconds) = (0, 0, 0, 0, 0.0);
        let mut turns = json!({"turn_left": {"labelled": 0, "recognised": 0}, "turn_right": {"labelled": 0, "recognised": 0}});
        let mut per_clip = Vec::new();
        // closure scores (>= 1: the blink rule's "closed"): the deepest frame
        // of each labelled blink, and the deepest frame away from them
        let (mut blink_depths, mut deepest_elsewhere): (Vec<Value>, Option<Value>) = (Vec::new(), None);
        for (file, own_fps, clip_seconds) in &clips {
            let fps = rate.map(f64::from).unwrap_or(*own_fps);
            eprintln!("eval: footage events {file} at {fps} fps");
            let frames_dir = work.join(format!("{file}-{fps}"));
            let _ = std::fs::remove_dir_all(&frames_dir);
            std::fs::create_dir_all(&frames_dir).map_err(|e| e.to_string())?;
            ffmpeg(&["-i", &dir.join(file).to_string_lossy(), "-vf", &format!("fps={fps}"), &frames_dir.join("f_%04d.jpg").to_string_lossy()])?;
            let mut args: Vec<String> = vec!["track".into(), "--fps".into(), fps.to_string(), "--schedule".into(), "session".into()];
            args.extend(frames_in(&frames_dir).iter().map(|f| f.display().to_string()));
            let v = facegate(root, &args.iter().map(String::as_str).collect::<Vec<_>>())?;
            let _ = std::fs::remove_dir_all(&frames_dir);
            if rate == Some(CHALLENGE_FPS) {
                tracks.push((file.clone(), track_samples(&v)));
            }
            // greedy matching in time order: each labelled event takes the
            // first recognised event of its kind inside its widened window
            let found: Vec<(String, f64)> = v["blinks"]
                .as_array()
                .into_iter()
                .flatten()
                .map(|t| ("blink".to_string(), f(t) / 1000.0))
                .chain(v["turns"].as_array().into_iter().flatten().map(|t| (t["step"].as_str().unwrap_or("").to_string(), f(&t["t_ms"]) / 1000.0)))
                .collect();
            let mut used = vec![false; found.len()];
            let mut missed = Vec::new();
            for (_, event, start, end) in events.iter().filter(|e| e.0 == *file) {
                let (from, to) = event_window(*start, *end);
                let hit = found.iter().enumerate().position(|(i, (kind, t))| !used[i] && kind == event && *t >= from && *t <= to);
                if let Some(i) = hit {
                    used[i] = true;
                }
                if event == "blink" {
                    blinks_labelled += 1;
                    blinks_found += hit.is_some() as u32;
                } else {
                    turns[event]["labelled"] = json!(turns[event]["labelled"].as_u64().unwrap_or(0) + 1);
                    turns[event]["recognised"] = json!(turns[event]["recognised"].as_u64().unwrap_or(0) + hit.is_some() as u64);
                }
                if hit.is_none() {
                    missed.push(json!({"event": event, "start_s": start, "end_s": end}));
                }
            }
            let scores: Vec<(f64, f64)> = v["closure_scores"]
                .as_array()
                .into_iter()
                .flatten()
                .filter_map(|p| Some((p[0].as_f64()? / 1000.0, p[1].as_f64()?)))
                .collect();
            let blink_windows: Vec<(f64, f64)> = events.iter().filter(|e| e.0 == *file && e.1 == "blink").map(|e| event_window(e.2, e.3)).collect();
            let deepest = |frames: &mut dyn Iterator<Item = &(f64, f64)>| frames.max_by(|a, b| a.1.total_cmp(&b.1)).copied();
            for (start, end) in &blink_windows {
                let d = deepest(&mut scores.iter().filter(|(t, _)| t >= start && t <= end));
                blink_depths.push(json!({"clip": file, "window_s": [start, end], "score": d.map(|d| d.1), "t_s": d.map(|d| d.0)}));
            }
            if let Some(d) = deepest(&mut scores.iter().filter(|(t, _)| !blink_windows.iter().any(|(a, b)| t >= a && t <= b))) {
                if deepest_elsewhere.as_ref().is_none_or(|e| f(&e["score"]) < d.1) {
                    deepest_elsewhere = Some(json!({"clip": file, "score": d.1, "t_s": d.0}));
                }
            }
            let unmatched: Vec<Value> = found.iter().zip(&used).filter(|(_, u)| !**u).map(|((kind, t), _)| json!({"event": kind, "t_s": t})).collect();
            false_blinks += unmatched.iter().filter(|e| e["event"] == "blink").count();
            false_turns += unmatched.iter().filter(|e| e["event"] != "blink").count();
            seconds += clip_seconds;
            per_clip.push(json!({"clip": file, "fps": fps, "frames": v["frames"].as_array().map(Vec::len), "faces_found": v["faces_found"], "blinks": v["blinks"], "turns": v["turns"], "missed": missed, "unlabelled": unmatched}));
        }
        let minutes = seconds / 60.0;
        rates.push(json!({
            "fps": rate.map(|r| json!(r)).unwrap_or_else(|| json!("own")),
            "blinks_labelled": blinks_labelled,
            "blinks_recognised": blinks_found,
            "blink_recall": blinks_found as f64 / blinks_labelled.max(1) as f64,
            "false_blinks": false_blinks,
            "minutes": minutes,
            "false_blinks_per_minute": false_blinks as f64 / minutes.max(1e-9),
            "turns": turns,
            "false_turns": false_turns,
            "blink_closure_scores": blink_depths,
            "deepest_closure_elsewhere": deepest_elsewhere,
            "per_clip": per_clip,
        }));
    }
    let _ = std::fs::remove_dir_all(&work);
    let segments_csv = root.join("xtask/eval/challenge-segments.csv");
    let challenges = assembled_challenges(&tracks, &labelled_events(&segments_csv)?)?;
    Ok(Some(json!({
        "labels": labels.display().to_string(), "events": events_csv.display().to_string(), "tolerance_s": EVENT_TOLERANCE_S, "schedule": "session", "rates": rates,
        "assembled_challenges": challenges, "segments": segments_csv.display().to_string(),
    })))
}

/// Synthetic screen replays, the only kind that can be made honestly here:
/// one frame a second of every footage-dev clip, re-rendered as if shown on
/// a screen held up to the camera. Two families:
/// - ffmpeg filters: screen colour (more saturation, gamma), then either the
///   phone in view (the picture at 60 % size inside a black bezel, on a wall,
///   tilted 3 degrees) or the screen filling the camera's view; each with or
///   without a painted sinusoidal moiré and a glare spot;
/// - a physical simulation (`facegate::screen_sim`, also `facegate film-screen`): the picture on a grid of RGB
///   sub-pixel stripes, filmed tilted by 2 degrees with 1.4 screen pixels per
///   camera pixel, through a sharp (blur 0.15 px) or a soft (0.35 px) lens,
///   so that the screen's grid reaches the camera as a moiré, or not, as it
///   does with real cameras.
///
/// Real replays add refresh flicker, reflections and a screen's gamut that
/// these do not have. Scored by the passive models and the screen-grid cue
/// against the same frames as bona fide.
fn screen_replays(root: &Path, src: &Sources) -> Result<Option<Value>, String> {
    use facegate::screen_sim::{film_screen, Capture};
    let Some((dir, _)) = &src.footage else { return Ok(None) };
    let work = src.out.join("replays");
    let _ = std::fs::remove_dir_all(&work);
    std::fs::create_dir_all(&work).map_err(|e| e.to_string())?;
    let clips: Vec<PathBuf> = frames_in(dir).into_iter().filter(|p| p.extension().is_some_and(|e| e == "mp4")).collect();
    for (i, clip) in clips.iter().enumerate() {
        ffmpeg(&["-i", &clip.to_string_lossy(), "-vf", "fps=1", &work.join(format!("c{i:02}_bona_fide_%02d.jpg")).to_string_lossy()])?;
    }
    let bona_fide: Vec<PathBuf> = frames_in(&work);
    eprintln!("eval: synthetic screen replays of {} frames", bona_fide.len());
    enum Render {
        Filter(String),
        Filmed(Capture),
    }
    let screen = "eq=saturation=1.25:gamma=1.08";
    let moire = "geq=lum='clip(lum(X,Y)*(1+0.09*sin(2.3*X)*sin(2.3*Y))+70*exp(-(pow(X-0.7*W,2)+pow(Y-0.28*H,2))/(2*pow(0.13*W,2))),0,255)':cb='cb(X,Y)':cr='cr(X,Y)'";
    let in_hand = "pad=iw+24:ih+44:12:22:color=0x0c0c0c,pad=trunc(iw/0.6/2)*2:trunc(ih/0.6/2)*2:(ow-iw)/2:(oh-ih)/2:color=0x6a6258,rotate=0.06:fillcolor=0x6a6258";
    let filmed = |blur_px| Render::Filmed(Capture::held_up(blur_px));
    let kinds = [
        ("phone in view, moiré and glare", Render::Filter(format!("{screen},scale=trunc(iw*0.6/2)*2:-2,{moire},{in_hand}"))),
        ("phone in view", Render::Filter(format!("{screen},scale=trunc(iw*0.6/2)*2:-2,{in_hand}"))),
        ("screen fills the view, moiré and glare", Render::Filter(format!("{screen},{moire}"))),
        ("screen fills the view", Render::Filter(format!("{screen},gblur=sigma=0.8"))),
        ("screen's sub-pixel grid filmed, sharp lens (blur 0.15 px)", filmed(0.15)),
        ("screen's sub-pixel grid filmed, soft lens (blur 0.35 px)", filmed(0.35)),
    ];
    let mut out = Vec::new();
    for (k, (kind, render)) in kinds.iter().enumerate() {
        let mut labels = String::from("file,label\n");
        for (n, f) in bona_fide.iter().enumerate() {
            let name = f.file_name().unwrap().to_string_lossy().to_string();
            let attack = name.replace("bona_fide", &format!("replay{k}"));
            match render {
                Render::Filter(filter) => ffmpeg(&["-i", &f.to_string_lossy(), "-vf", filter, &work.join(&attack).to_string_lossy()])?,
                Render::Filmed(capture) => {
                    let frame = image::open(f).map_err(|e| format!("{}: {e}", f.display()))?.to_rgb8();
                    let shot = film_screen(&frame, *capture, n as u64 + 1);
                    let file = std::fs::File::create(work.join(&attack)).map_err(|e| e.to_string())?;
                    image::codecs::jpeg::JpegEncoder::new_with_quality(std::io::BufWriter::new(file), 90).encode_image(&shot).map_err(|e| e.to_string())?;
                }
            }
            labels.push_str(&format!("{name},bona_fide\n{attack},attack\n"));
        }
        let csv = work.join(format!("labels{k}.csv"));
        std::fs::write(&csv, labels).map_err(|e| e.to_string())?;
        let v = facegate(root, &["liveness-set", &csv.to_string_lossy(), "--images", &work.to_string_lossy()])?;
        let filter = match render {
            Render::Filter(f) => f.clone(),
            Render::Filmed(c) => format!("{c:?}"),
        };
        out.push(json!({"kind": kind, "render": filter, "metrics": v["metrics"], "screen_grid": v["screen_grid"], "combined": v["combined"]}));
    }
    let _ = std::fs::remove_dir_all(&work);
    Ok(Some(json!({"source": dir.display().to_string(), "frames_per_second": 1, "synthetic": true, "kinds": out})))
}

/// The per-frame samples of a `facegate track --json` answer.
fn track_samples(v: &Value) -> Vec<facegate::challenge::TrackSample> {
    v["frames"].as_array().into_iter().flatten().filter_map(|s| serde_json::from_value(s.clone()).ok()).collect()
}

/// Frame rate of the tracks the assembled challenges are cut from.
const CHALLENGE_FPS: u32 = 15;
/// How many random challenge seeds are assembled and checked.
const ASSEMBLED_SEEDS: u32 = 100;
/// The steady start of an assembled challenge: the widget starts a
/// challenge after 4 good frames in a row and takes the starting pose from
/// the challenge's first 3, so 6 frames (0.4 s at CHALLENGE_FPS) ...
const START_FRAMES: usize = 6;
/// ... all within this many degrees of the clip's median pose.
const START_MAX_DEG: f32 = 4.0;

/// The whole challenge as real people perform it: for each of
/// ASSEMBLED_SEEDS random seeds, the seed's steps in order, each cut from a
/// segment of the labelled clips in which that step is performed (a segment
/// picked by the seed; clips differ between steps), with the clips' own
/// frame timing, verified exactly as the server verifies a result. The
/// per-clip tracks come from the session schedule (detector every 4th
/// frame, mesh following) on each clip. Two things a real session has and a
/// cut between clips does not are restored: the widget starts a challenge
/// only on a steady, centred face, so the track opens with START_FRAMES of
/// the first clip where its head is steadiest near its median pose; and one
/// person sits in front of one camera, so every segment's yaw is taken
/// relative to its own clip's median yaw (people and cameras sit at
/// different yaws: clip 07 at -7 degrees, clip 05 at +1). The same segments
/// in another order (the first moved to the end) must fail.
fn assembled_challenges(tracks: &[(String, Vec<facegate::challenge::TrackSample>)], segments: &[(String, String, f64, f64)]) -> Result<Value, String> {
    use facegate::challenge::{steps_for_seed, verify_track, Step, TrackSample};
    use sha2::{Digest, Sha256};
    let step_name = |s: Step| serde_json::to_value(s).ok().and_then(|v| v.as_str().map(String::from)).unwrap_or_default();
    let clip_track = |clip: &str| -> &[TrackSample] { tracks.iter().find(|t| t.0 == clip).map(|t| t.1.as_slice()).unwrap_or(&[]) };
    let median_yaw = |samples: &[TrackSample]| facegate::session::median(&mut samples.iter().map(|s| s.yaw).collect::<Vec<_>>()).unwrap_or(0.0);
    // the clip's samples within [start, end] seconds, yaw from its median
    let cut = |clip: &str, start: f64, end: f64| -> Vec<TrackSample> {
        let all = clip_track(clip);
        let frontal = median_yaw(all);
        let range = (start * 1000.0) as u32..=(end * 1000.0) as u32;
        all.iter().filter(|s| range.contains(&s.t_ms)).map(|s| TrackSample { yaw: s.yaw - frontal, ..*s }).collect()
    };
    // the START_FRAMES consecutive frames of a clip with the least yaw
    // spread, all within START_MAX_DEG of its median pose
    let steady_start = |clip: &str| -> Vec<TrackSample> {
        let all = cut(clip, 0.0, f64::from(u32::MAX) / 1000.0);
        let spread = |w: &[TrackSample]| w.iter().map(|s| s.yaw).fold(f32::MIN, f32::max) - w.iter().map(|s| s.yaw).fold(f32::MAX, f32::min);
        all.windows(START_FRAMES)
            .filter(|w| w.iter().all(|s| s.yaw.abs() <= START_MAX_DEG))
            .min_by(|a, b| spread(a).total_cmp(&spread(b)))
            .map(<[TrackSample]>::to_vec)
            .unwrap_or_default()
    };
    let frame_ms = 1000 / CHALLENGE_FPS;
    let assemble = |parts: &[&(String, String, f64, f64)]| -> Vec<TrackSample> {
        let mut track: Vec<TrackSample> = Vec::new();
        let pieces = parts.first().map(|p| steady_start(&p.0)).into_iter().chain(parts.iter().map(|(clip, _, start, end)| cut(clip, *start, *end)));
        for samples in pieces {
            let Some(first) = samples.first().map(|s| s.t_ms) else { continue };
            // the next frame after the previous piece, at the clips' rate
            let next = track.last().map_or(0, |s| s.t_ms + frame_ms);
            track.extend(samples.iter().map(|s| TrackSample { t_ms: next + (s.t_ms - first), ..*s }));
        }
        track
    };
    let (mut passed, mut wrong_order_passed) = (0u32, 0u32);
    let mut failures: std::collections::BTreeMap<String, u32> = Default::default();
    let (mut failed_examples, mut wrong_order_examples) = (Vec::new(), Vec::new());
    for i in 0..ASSEMBLED_SEEDS {
        let digest = Sha256::new().chain_update(b"facegate-eval-assembled").chain_update(i.to_le_bytes()).finalize();
        let seed = &digest[..16];
        let steps = steps_for_seed(seed);
        let parts: Vec<&(String, String, f64, f64)> = steps
            .iter()
            .enumerate()
            .map(|(k, &step)| {
                let of_step: Vec<_> = segments.iter().filter(|s| s.1 == step_name(step)).collect();
                if of_step.is_empty() {
                    return Err(format!("no segment performs {}", step_name(step)));
                }
                Ok(of_step[digest[16 + k] as usize % of_step.len()])
            })
            .collect::<Result<_, String>>()?;
        match verify_track(seed, &assemble(&parts)) {
            Ok(_) => passed += 1,
            Err(f) => {
                let key = match &f {
                    facegate::challenge::ChallengeFailure::StepTimedOut { step, .. } | facegate::challenge::ChallengeFailure::Incomplete { step, .. } => format!("{} ({})", f.code(), step_name(*step)),
                    _ => f.code().to_string(),
                };
                *failures.entry(key).or_default() += 1;
                if failed_examples.len() < 10 {
                    failed_examples.push(json!({"steps": steps, "segments": parts.iter().map(|p| format!("{} {}-{} s", p.0, p.2, p.3)).collect::<Vec<_>>(), "failure": f}));
                }
            }
        }
        // the first step's segment moved to the end: a different order for
        // every sequence (reversing would leave blink-turn-blink as it is)
        let mut rotated = parts.clone();
        rotated.rotate_left(1);
        if verify_track(seed, &assemble(&rotated)).is_ok() {
            wrong_order_passed += 1;
            if wrong_order_examples.len() < 10 {
                wrong_order_examples.push(json!({"steps": steps, "segments": rotated.iter().map(|p| format!("{} {} {}-{} s", p.0, p.1, p.2, p.3)).collect::<Vec<_>>()}));
            }
        }
    }
    Ok(json!({
        "seeds": ASSEMBLED_SEEDS, "fps": CHALLENGE_FPS, "passed": passed, "pass_rate": passed as f64 / ASSEMBLED_SEEDS as f64,
        "failures": failures, "failed_examples": failed_examples,
        "wrong_order_passed": wrong_order_passed, "wrong_order_pass_rate": wrong_order_passed as f64 / ASSEMBLED_SEEDS as f64, "wrong_order_passed_examples": wrong_order_examples,
    }))
}

/// For every clip: the CLI's track (head pose and eye openness per frame,
/// under the widget's session schedule) and median passive score; then which steps the track performs and how
/// many of SEEDS random challenges it would pass at the server.
fn active_liveness(root: &Path, src: &Sources) -> Result<Option<Value>, String> {
    use facegate::challenge::verify_track;
    let work = src.out.join("clips");
    let _ = std::fs::remove_dir_all(&work);
    let clips = clips(src, &work)?;
    if clips.is_empty() {
        return Ok(None);
    }
    let threshold = facegate::liveness::DEFAULT_LIVENESS_THRESHOLD as f64;
    let mut per_clip = Vec::new();
    for (i, c) in clips.iter().enumerate() {
        eprintln!("eval: clip {}/{} {} ({})", i + 1, clips.len(), c.name, c.kind);
        // the widget's own schedule: detector every 4th frame, the mesh
        // following in between, frames with several faces not counted
        let mut args: Vec<String> = vec!["track".into(), "--fps".into(), CLIP_FPS.to_string(), "--passive".into(), "--schedule".into(), "session".into()];
        args.extend(c.frames.iter().map(|f| f.display().to_string()));
        let refs: Vec<&str> = args.iter().map(String::as_str).collect();
        let v = facegate(root, &refs)?;
        let track = track_samples(&v);
        let passes = (0..SEEDS)
            .filter(|s| {
                let seed = format!("eval-seed-{s}").into_bytes();
                verify_track(&seed, &track).is_ok()
            })
            .count();
        let performed: Vec<&str> = ["blink", "turn_left", "turn_right"].into_iter().filter(|k| v["performed"][k] == true).collect();
        per_clip.push(json!({
            "clip": c.name,
            "kind": c.kind,
            "bona_fide": c.bona_fide,
            "frames": c.frames.len(),
            "faces_found": v["faces_found"],
            "performed": performed,
            "labelled": c.performs,
            "recognised": c.performs.iter().all(|p| performed.contains(&p.as_str())),
            "challenge_passes": passes,
            "challenges_tried": SEEDS,
            "passive_median": v["passive_liveness"]["median"],
        }));
    }
    // the clips' frames are only needed for this run
    let _ = std::fs::remove_dir_all(&work);
    let bona: Vec<&Value> = per_clip.iter().filter(|c| c["bona_fide"] == true).collect();
    let mut attacks = json!({});
    for kind in ["still", "shaken", "tilted"] {
        let k: Vec<&Value> = per_clip.iter().filter(|c| c["kind"] == kind).collect();
        let n = k.len().max(1) as f64;
        let with_passive: Vec<f64> = k.iter().filter_map(|c| c["passive_median"].as_f64()).collect();
        attacks[kind] = json!({
            "clips": k.len(),
            "any_step_rate": k.iter().filter(|c| c["performed"].as_array().is_some_and(|a| !a.is_empty())).count() as f64 / n,
            "challenge_pass_rate": k.iter().map(|c| c["challenge_passes"].as_u64().unwrap_or(0)).sum::<u64>() as f64 / (n * SEEDS as f64),
            "passive_apcer": with_passive.iter().filter(|s| **s >= threshold).count() as f64 / with_passive.len().max(1) as f64,
            "passive_scored": with_passive.len(),
        });
    }
    Ok(Some(json!({
        "clips_from": src.clips.as_ref().map(|c| c.display().to_string()),
        "fps": CLIP_FPS,
        "passive_threshold": threshold,
        "bona_fide": {
            "clips": bona.len(),
            "recognised": bona.iter().filter(|c| c["recognised"] == true).count(),
            "passive_bpcer": bona.iter().filter(|c| c["passive_median"].as_f64().is_some_and(|s| s < threshold)).count() as f64 / bona.len().max(1) as f64,
        },
        "attacks": attacks,
        "per_clip": per_clip,
    })))
}
