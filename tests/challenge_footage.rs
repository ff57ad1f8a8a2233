//! Active-liveness recognition on real footage: frames of
//! ../shared/data/faces/short_hamilton_clip.mp4 (decoded with ffmpeg) go
//! through the same detect → mesh → track → challenge code as the widget.

use facegate::challenge::{performed, verify_track, Step, TrackSample};
use facegate::image_io::read_image_file;
use facegate::pipeline::{Pipeline, PipelineOptions};
use std::path::{Path, PathBuf};
use std::process::Command;

const FPS: f32 = 30.0;

fn clip() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../shared/data/faces/short_hamilton_clip.mp4")
}

/// Decode `duration` seconds from `start` into PNG frames at 30 fps.
fn frames(start: f32, duration: f32, tag: &str) -> Vec<PathBuf> {
    let dir = std::env::temp_dir().join(format!("facegate-footage-{}-{tag}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let status = Command::new("ffmpeg")
        .args(["-loglevel", "error", "-y", "-ss", &start.to_string(), "-t", &duration.to_string(), "-i"])
        .arg(clip())
        .args(["-vf", &format!("fps={FPS}")])
        .arg(dir.join("f_%04d.png"))
        .status()
        .expect("ffmpeg is installed by `cargo xtask test`");
    assert!(status.success(), "ffmpeg failed");
    let mut files: Vec<_> = std::fs::read_dir(&dir).unwrap().map(|e| e.unwrap().path()).collect();
    files.sort();
    files
}

fn track(p: &Pipeline, files: &[impl AsRef<Path>]) -> Vec<TrackSample> {
    files
        .iter()
        .enumerate()
        .filter_map(|(i, f)| {
            let img = read_image_file(f.as_ref()).unwrap();
            let t_ms = (i as f32 * 1000.0 / FPS).round() as u32;
            p.track_sample(&img, t_ms).unwrap().map(|(_, _, s)| s)
        })
        .collect()
}

#[test]
fn real_head_turn_is_recognised_and_a_still_frame_performs_nothing() {
    let p = Pipeline::load_native(&PipelineOptions { liveness: false, ..Default::default() }).unwrap();
    // 4.0 s to 7.2 s: one performer facing the camera turns his head to the
    // image's left by about 30 degrees and back.
    let files = frames(4.0, 3.2, "turn");
    assert!(files.len() >= 90, "{} frames", files.len());
    let live = track(&p, &files);
    assert!(live.len() as f32 >= files.len() as f32 * 0.95, "face tracked in {} of {} frames", live.len(), files.len());
    assert!(performed(&live, Step::TurnLeft), "the real head turn is recognised");
    assert!(!performed(&live, Step::TurnRight), "no turn to the right happens in this segment");
    let yaw_range = live.iter().map(|s| s.yaw).fold(f32::MIN, f32::max) - live.iter().map(|s| s.yaw).fold(f32::MAX, f32::min);
    assert!(yaw_range > 25.0, "yaw range {yaw_range}");

    // The first frame fed as a camera for three seconds: a still photograph.
    let still: Vec<_> = std::iter::repeat_n(&files[0], 90).collect();
    let still_track = track(&p, &still);
    assert_eq!(still_track.len(), 90);
    for step in [Step::Blink, Step::TurnLeft, Step::TurnRight] {
        assert!(!performed(&still_track, step), "a still frame performed {step:?}");
    }
    for seed in 0u8..16 {
        assert!(verify_track(&[seed; 16], &still_track).is_err(), "a still frame passed seed {seed}");
    }
    let _ = std::fs::remove_dir_all(files[0].parent().unwrap());
}
