// The challenge's hints (www/guidance.js) as a pure function of the core's
// per-frame update; the browser tests see the same keys in data-guidance.

import { test } from 'node:test';
import assert from 'node:assert/strict';
import { challengeHint, BLINK_HINT_MS, HINT_REPLACES_STEP } from '../../www/guidance.js';
import { STRINGS } from '../../www/i18n.js';

const frontal = { waiting_for_front: false, turn_progress: null };

test('a blink step asks for a deliberate blink only after a while without one', () => {
  assert.equal(challengeHint(frontal, 'blink', 0), null);
  assert.equal(challengeHint(frontal, 'blink', BLINK_HINT_MS - 1), null);
  assert.equal(challengeHint(frontal, 'blink', BLINK_HINT_MS), 'hint_blink_fully');
  // facing the front again comes first: a blink while turned away is not asked for
  assert.equal(challengeHint({ ...frontal, waiting_for_front: true }, 'blink', 2 * BLINK_HINT_MS), 'hint_face_front');
  // a turn step never gets the blink hint, however long it takes
  assert.equal(challengeHint({ ...frontal, turn_progress: 0.1 }, 'turn_left', 2 * BLINK_HINT_MS), null);
  assert.equal(challengeHint(frontal, null, 2 * BLINK_HINT_MS), null, 'no step, no hint');
});

test('turn hints: the other way from three quarters of the turn the wrong way, further from half of it', () => {
  assert.equal(challengeHint({ ...frontal, turn_progress: -0.75 }, 'turn_right', 0), 'hint_wrong_way');
  assert.equal(challengeHint({ ...frontal, turn_progress: -0.5 }, 'turn_right', 0), null);
  assert.equal(challengeHint({ ...frontal, turn_progress: 0.5 }, 'turn_right', 0), 'hint_turn_further');
  assert.equal(challengeHint({ ...frontal, turn_progress: 0.49 }, 'turn_right', 0), null);
});

test('every hint the challenge can give is translated in every language', () => {
  const updates = [frontal, { ...frontal, waiting_for_front: true }, { ...frontal, turn_progress: -1 }, { ...frontal, turn_progress: 0.9 }];
  const keys = new Set();
  for (const u of updates) for (const step of ['blink', 'turn_left', 'turn_right']) for (const ms of [0, 10 * BLINK_HINT_MS]) keys.add(challengeHint(u, step, ms));
  keys.delete(null);
  assert.deepEqual([...keys].sort(), ['hint_blink_fully', 'hint_face_front', 'hint_turn_further', 'hint_wrong_way']);
  for (const k of [...keys, ...HINT_REPLACES_STEP]) for (const [lang, strings] of Object.entries(STRINGS)) assert.ok(strings[k]?.trim(), `${lang}.${k}`);
});
