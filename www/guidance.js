// What the challenge tells the user beyond the current step: a pure
// function of the core's per-frame update, so it is tested in Node
// (tests/browser/guidance.test.mjs) as well as in the browser.
//
// The core counts a turn at its full size only and the next step only once
// the head is back at the front; without these hints a user who turned too
// little, the wrong way (the mirrored preview confuses some) or blinked
// while still turned waits for a step that never counts. "The other way"
// needs three quarters of the turn (9 degrees): talking heads sway up to 8
// (footage-dev); "a little further" from half of it only encourages.

// A quick blink can fall between two frames, or read shallow behind glasses
// with glare (footage-dev clip 05 at 3.7 s, README "Accuracy"), and then
// does not count. People blink every few seconds anyway; when this long
// has passed in the blink step without one counting, the widget asks for a
// full blink. Not for holding the eyes shut: a closure longer than 500 ms
// is not a blink to the core (challenge::blink_rule::MAX_CLOSED_MS, which
// keeps downcast looks and smiles out).
export const BLINK_HINT_MS = 3000;

/** The hint key for a challenge update (`u`: `challengeFrame`'s answer),
 * the current step, and how long it has been current; null for none. */
export function challengeHint(u, current, stepMs) {
  if (!current) return null;
  if (u.waiting_for_front) return 'hint_face_front';
  if (u.turn_progress != null && u.turn_progress <= -0.75) return 'hint_wrong_way';
  if (u.turn_progress != null && u.turn_progress >= 0.5) return 'hint_turn_further';
  if (current === 'blink' && stepMs >= BLINK_HINT_MS) return 'hint_blink_fully';
  return null;
}

/** Whether a hint replaces the step's own instruction (it says all there is
 * to do) rather than preceding it. */
export const HINT_REPLACES_STEP = new Set(['hint_face_front', 'hint_blink_fully']);
