//! Active-liveness evidence over a frame sequence: did the eyes blink, did the
//! head turn? Works on the per-frame head pose and eye openness from the
//! `landmarks` stage, so a still photograph (constant pose, constant eyes)
//! can never pass.

use serde::{Deserialize, Serialize};

/// One frame of the challenge track: no pixels, only what the server may see.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct TrackSample {
    /// Milliseconds since the challenge started.
    pub t_ms: u32,
    pub yaw: f32,
    pub pitch: f32,
    pub left_openness: f32,
    pub right_openness: f32,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Step {
    Blink,
    TurnLeft,
    TurnRight,
}

/// Eyes count as closed below this openness and open above the second value;
/// the gap (hysteresis) keeps noise around one value from counting as blinks.
const CLOSED: f32 = 0.35;
const OPEN: f32 = 0.6;
/// A turn must reach this many degrees of yaw away from the starting pose.
const TURN_DEG: f32 = 20.0;

/// A blink: eyes open, then both closed, then open again.
pub fn blinked(track: &[TrackSample]) -> bool {
    let mut state = 0; // 0 waiting for open, 1 open seen, 2 closed seen
    for s in track {
        let eyes = (s.left_openness + s.right_openness) / 2.0;
        state = match state {
            0 if eyes > OPEN => 1,
            1 if eyes < CLOSED => 2,
            2 if eyes > OPEN => return true,
            other => other,
        };
    }
    false
}

/// A head turn towards the image's left (negative yaw) or right, relative to
/// the first frame's yaw.
pub fn turned(track: &[TrackSample], step: Step) -> bool {
    let Some(first) = track.first() else { return false };
    track.iter().any(|s| {
        let d = s.yaw - first.yaw;
        match step {
            Step::TurnLeft => d <= -TURN_DEG,
            Step::TurnRight => d >= TURN_DEG,
            Step::Blink => false,
        }
    })
}

pub fn performed(track: &[TrackSample], step: Step) -> bool {
    match step {
        Step::Blink => blinked(track),
        _ => turned(track, step),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample(t: u32, yaw: f32, eyes: f32) -> TrackSample {
        TrackSample { t_ms: t, yaw, pitch: 0.0, left_openness: eyes, right_openness: eyes }
    }

    #[test]
    fn still_photo_track_performs_nothing() {
        let track: Vec<_> = (0..60).map(|i| sample(i * 33, 2.0, 0.9)).collect();
        for step in [Step::Blink, Step::TurnLeft, Step::TurnRight] {
            assert!(!performed(&track, step), "{step:?}");
        }
    }

    #[test]
    fn blink_and_turns_are_recognised() {
        let blink = [sample(0, 0.0, 0.9), sample(33, 0.0, 0.2), sample(66, 0.0, 0.1), sample(99, 0.0, 0.9)];
        assert!(blinked(&blink));
        let half = [sample(0, 0.0, 0.9), sample(33, 0.0, 0.5), sample(66, 0.0, 0.9)];
        assert!(!blinked(&half), "a half-closed squint is not a blink");
        let right: Vec<_> = (0..10).map(|i| sample(i * 33, i as f32 * 3.0, 0.9)).collect();
        assert!(turned(&right, Step::TurnRight) && !turned(&right, Step::TurnLeft));
    }
}
