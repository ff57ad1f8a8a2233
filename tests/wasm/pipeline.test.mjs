// The real facegate pipeline compiled to wasm32 (+simd128), run under Node:
// the same checks as the native tests on real photos, plus the integrity check.
// Built by `cargo xtask test` into target/wasm-node (wasm-bindgen --target nodejs).
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { readFileSync, existsSync } from 'node:fs';
import { createRequire } from 'node:module';
import { fileURLToPath } from 'node:url';
import path from 'node:path';

const root = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '../..');
const require = createRequire(import.meta.url);
const fg = require(path.join(root, 'target/wasm-node/facegate.js'));
const faces = path.join(root, '../shared/data/faces');

// Same lookup as the native loader: models/, models/cache/, ../shared/models/<folder>/.
function modelBytes(entry) {
  const candidates = [path.join(root, 'models', entry.file), path.join(root, 'models/cache', entry.file)];
  if (entry.location.startsWith('shared/')) {
    candidates.push(path.join(root, '../shared/models', entry.location.slice(7), entry.file));
  }
  const found = candidates.find((p) => existsSync(p));
  assert.ok(found, `model file ${entry.file} not found`);
  return new Uint8Array(readFileSync(found));
}

const manifest = JSON.parse(fg.manifestJson());
const needed = fg.requiredModels();
const models = {};
for (const name of needed) models[name] = modelBytes(manifest.models.find((m) => m.name === name));
const gate = new fg.FaceGate(models);
const img = (f) => new Uint8Array(readFileSync(path.join(faces, f)));

test('same person matches, different people do not (in wasm)', () => {
  const same = gate.compareImages(img('obama.jpg'), img('obama2.jpg'));
  const diff = gate.compareImages(img('obama.jpg'), img('biden.jpg'));
  assert.equal(same.same_person, true, JSON.stringify(same));
  assert.equal(diff.same_person, false, JSON.stringify(diff));
  assert.ok(same.score > diff.score);
});

test('two_people.jpg gives two faces with quality reports (in wasm)', () => {
  const found = gate.detectImage(img('two_people.jpg'));
  assert.equal(found.length, 2);
  for (const f of found) {
    assert.equal(f.landmarks.length, 5);
    assert.ok(Array.isArray(f.quality.reasons));
  }
});

test('a camera-style RGBA frame yields pose, eyes, liveness and a match score', () => {
  const ref = gate.setReferenceImage(img('obama.jpg'));
  assert.ok(ref.detection === undefined && ref.box.length === 4);
  // decode obama2 in wasm, then hand it over as RGBA like a canvas would
  const frame = fg.decodeToRgba(img('obama2.jpg'));
  assert.equal(frame.data.length, frame.width * frame.height * 4);
  const r = gate.analyzeFrame(frame.width, frame.height, frame.data, true);
  assert.equal(r.faces.length, 1);
  assert.ok(Math.abs(r.pose.yaw) < 40, JSON.stringify(r.pose));
  assert.ok(r.eyes.left_openness > 0.3 && r.eyes.right_openness > 0.3, JSON.stringify(r.eyes));
  assert.ok(r.passive_liveness > 0.05, String(r.passive_liveness));
  assert.ok(r.match_score > 0.8, String(r.match_score));
  // another person's frame scores low against the same reference
  const other = fg.decodeToRgba(img('biden.jpg'));
  const r2 = gate.analyzeFrame(other.width, other.height, other.data, true);
  assert.ok(r2.match_score < 0.8, String(r2.match_score));
  const w = 64, h = 48;
  const blank = new Uint8Array(w * h * 4);
  const empty = gate.analyzeFrame(w, h, blank, true);
  assert.equal(empty.faces.length, 0);
  assert.equal(empty.match_score ?? null, null);
  gate.clearReference();
});

test('bad input gives typed errors (in wasm)', () => {
  assert.throws(() => gate.detectImage(new Uint8Array([1, 2, 3])), /image_decode/);
  assert.throws(() => gate.analyzeFrame(10, 10, new Uint8Array(7), false), /invalid_input/);
  const tampered = { ...models, mobilefacenet: models.mobilefacenet.slice() };
  tampered.mobilefacenet[100] ^= 0xff;
  assert.throws(() => new fg.FaceGate(tampered), /model_integrity/);
});

test('signing test vector: wasm gives the same bytes and signature as native', () => {
  const vector = JSON.parse(readFileSync(path.join(root, 'tests/vectors/signed_result.json'), 'utf8'));
  assert.equal(fg.signedResultTestVector(vector.device_seed), vector.wire);
});

test('a device session in wasm: still frames never pass the challenge; result is signed, has no embedding', () => {
  gate.setReferenceImage(img('obama.jpg'));
  const pk = gate.newSession();
  assert.match(pk, /^[0-9a-f]{64}$/);
  const config = {
    session_id: 'sess_wasm', nonce: 'ab12', challenge_seed: '00112233445566778899aabbccddeeff',
    transform_key: 'cd'.repeat(32), match_threshold: 0.8, liveness_threshold: 0.05,
  };
  const steps = gate.beginChallenge(JSON.stringify(config));
  assert.ok(steps.length >= 2);
  const frame = fg.decodeToRgba(img('obama2.jpg'));
  let last;
  for (let i = 0; i < 12; i++) last = gate.challengeFrame(frame.width, frame.height, frame.data, i * 100);
  assert.equal(last.faces.length, 1);
  assert.equal(last.passed.length, 0, 'a still photo performs no step');
  assert.equal(last.complete, false);
  // the guidance the widget shows: the whole face in view, a turn step not
  // begun (a still photo does not turn), nothing to come back from
  assert.equal(last.face_cut_off, false);
  assert.equal(last.waiting_for_front, false);
  if (steps[0] === 'blink') assert.equal(last.turn_progress, null);
  else assert.ok(Math.abs(last.turn_progress) < 0.25, String(last.turn_progress));
  const wire = gate.finishChallenge('test', Date.now());
  const signed = JSON.parse(wire);
  assert.equal(signed.result.device_public_key, pk);
  assert.equal(signed.result.decision.pass, false);
  assert.equal(signed.result.decision.reason, 'challenge_incomplete');
  assert.ok(signed.result.match_score > 0.85, 'obama2 matches the obama ID photo');
  // 2,048 bits as hex
  assert.equal(signed.result.template.bits.length, 512);
  assert.ok(!/embedding/.test(wire));
  assert.equal(signed.result.evidence, undefined, 'no escrow unless the deployment asks');
  gate.clearReference();
});

test('the embedder in wasm equals its TFLite reference (float32) and stays close with 8-bit weights', () => {
  const expected = readFileSync(path.join(root, 'tests/vectors/mobilefacenet_reference.json'), 'utf8');
  const f32 = modelBytes(manifest.models.find((m) => m.name === 'mobilefacenet_f32'));
  const exact = fg.embedderReferenceDifference('mobilefacenet_f32', f32, expected);
  assert.ok(exact < 1e-4, `float32 model differs by ${exact}`);
  const shipped = fg.embedderReferenceDifference('mobilefacenet', models.mobilefacenet, expected);
  assert.ok(shipped < 0.05, `int8-stored model differs by ${shipped}`);
});
