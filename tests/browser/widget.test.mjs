// The widget end to end in Debian's headless Chromium: the real server,
// the real wasm pipeline in the Web Worker, a fake camera playing real
// footage. Run by `cargo xtask test` after `cargo xtask build-www`.

import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { cpSync, readFileSync, writeFileSync, rmSync, readdirSync } from 'node:fs';
import { execFileSync } from 'node:child_process';
import path from 'node:path';
import { startServer, startFixtureHost, y4m, launch, widgetState, recordWidget, privacyViolations, tempDir, faces, www, footage, root } from './harness.mjs';

// Long enough for a slow CI machine: model load + selfie + up to three
// 10-second challenge steps + submission.
const FLOW_MS = 150000;

let server;
let fixtures;
let dir;
let clip;
let still;
let performer;
let filmedPerformer;

before(() => {
  dir = tempDir('browser');
  // 4.0-7.2 s of the clip: one performer facing the camera turns his head
  // and back (looped by Chromium's fake camera).
  clip = y4m(dir, 'clip', { input: path.join(faces, 'short_hamilton_clip.mp4'), start: 4.0, duration: 3.2, width: 640, height: 360 });
  // the ID photo itself held up to the camera: a perfect match, no life
  still = y4m(dir, 'still', { input: path.join(faces, 'lin-manuel-miranda.png'), still: true, width: 640, height: 480 });
  performer = performerClip(dir);
  filmedPerformer = filmedOffAScreen(dir, performer);
});

// The same performer replayed on a screen that fills the camera's view,
// filmed sharply: every frame goes through `facegate film-screen` (the RGB
// sub-pixel grid of a screen, filmed tilted by 2 degrees at 1.4 screen
// pixels per camera pixel, lens blur 0.15 px; src/screen_sim.rs), then back
// to 640x480. Synthetic, as the eval's replays are.
function filmedOffAScreen(dir, video) {
  const frames = path.join(dir, 'performer-frames');
  const filmed = path.join(dir, 'performer-filmed');
  execFileSync('mkdir', ['-p', frames]);
  execFileSync('ffmpeg', ['-loglevel', 'error', '-y', '-i', video, path.join(frames, 'f_%04d.png')]);
  const pngs = readdirSync(frames).filter((f) => f.endsWith('.png')).sort().map((f) => path.join(frames, f));
  execFileSync(path.join(root, 'target/release/facegate'), ['film-screen', '--out', filmed, ...pngs]);
  const out = path.join(dir, 'performer-filmed.y4m');
  execFileSync('ffmpeg', ['-loglevel', 'error', '-y', '-framerate', '15', '-i', path.join(filmed, 'f_%04d.png'), '-vf', 'scale=640:480:flags=bicubic', '-pix_fmt', 'yuv420p', out]);
  return out;
}

// One real person performing every challenge step, cut from the labelled
// segments of footage-dev clip 05 (xtask/eval/challenge-segments.csv):
// blink, turn left, turn right, blink, turn left, turn right, blink (the
// user's own sides). Every 2-3 step challenge (no step twice in a row) is a
// subsequence of that, so the flow must pass whatever seed the server draws,
// with no test-only setting in the server. Before each turn the person
// faces the camera for 0.6 s (frames of the same clip with no blink or
// turn), as a user does while reading the next instruction (the challenge
// once required such a rest; it no longer does, but the pause keeps each
// turn from starting mid-swing of the previous one). Both turns to the
// left are the clip's turn at 0.8-1.9 s (15-18 degrees on the session's
// detector-anchored meshes): its other one, at 6.0-7.32 s, reads 13-15,
// at the 12-degree threshold, and failed the flow once when the challenge's
// starting pose was taken a little to the left. The ID photo is a frontal
// frame of the same clip.
function performerClip(dir) {
  const input = path.join(footage, '05_bf_liveportrait_d12.mp4');
  const blink = [4.75, 5.95];
  const rest = [4.1, 4.7];
  const left = [0.8, 1.9];
  const right = [2.5, 3.65];
  const parts = [blink, rest, left, rest, right, blink, rest, left, rest, right, blink];
  const trims = parts.map(([a, b], i) => `[0:v]trim=${a}:${b},setpts=PTS-STARTPTS[p${i}]`).join(';');
  const out = path.join(dir, 'performer.y4m');
  const filter = `${trims};${parts.map((_, i) => `[p${i}]`).join('')}concat=n=${parts.length}:v=1:a=0,scale=640:480:force_original_aspect_ratio=decrease,pad=640:480:(ow-iw)/2:(oh-ih)/2,fps=15[v]`;
  execFileSync('ffmpeg', ['-loglevel', 'error', '-y', '-i', input, '-filter_complex', filter, '-map', '[v]', '-pix_fmt', 'yuv420p', out]);
  execFileSync('ffmpeg', ['-loglevel', 'error', '-y', '-ss', '0.3', '-i', input, '-frames:v', '1', path.join(dir, 'performer-id.png')]);
  return out;
}

before(async () => {
  server = await startServer();
  fixtures = await startFixtureHost(dir);
});

after(async () => {
  await server?.stop();
  await fixtures?.stop();
  rmSync(dir, { recursive: true, force: true });
});

const demoUrl = (origin, idImage) => `${origin}/?autostart=1&id=${encodeURIComponent(fixtures.url(idImage))}`;

async function sessionRecord(sessionId) {
  const r = await fetch(`${server.origin}/v1/sessions/${sessionId}`, { headers: { 'x-api-key': server.apiKey } });
  assert.equal(r.status, 200);
  return r.json();
}

test('real face footage: detected and tracked through the worker, the server decides, and no pixel or embedding leaves the page', { timeout: FLOW_MS + 30000 }, async () => {
  const { browser, page, requests, consoleLines } = await launch({ video: clip });
  try {
    await recordWidget(page);
    await page.goto(demoUrl(server.origin, 'lin-manuel-miranda.png'));
    const end = await widgetState(page, ['done', 'error'], FLOW_MS);
    const seen = await page.evaluate(() => window.__facegate);
    assert.equal(end.state, 'done', `ended in ${end.state} (${end.error}): ${end.status}\n${consoleLines.join('\n')}`);
    assert.deepEqual(seen.states.slice(0, 4), ['loading', 'id-capture', 'selfie', 'challenge']);
    assert.ok(['pass', 'fail'].includes(end.result), JSON.stringify(end));
    assert.ok(end.frames >= 20, `only ${end.frames} frames went through the worker`);

    // what the server received: the signed result with the live track
    const { result: wire, answer } = seen.result;
    const r = wire.result;
    assert.equal(answer.decision, end.result);
    assert.equal(answer.reason, end.reason);
    assert.ok(r.active_liveness.track.length >= 15, `face tracked in ${r.active_liveness.track.length} frames`);
    const yaws = r.active_liveness.track.map((s) => s.yaw);
    assert.ok(Math.max(...yaws) - Math.min(...yaws) > 20, `the real head turn shows in the track: yaw ${Math.min(...yaws)}..${Math.max(...yaws)}`);
    // the footage shows the person on the ID photo
    assert.ok(r.match_score >= 0.8, `match ${r.match_score}`);
    // the order system's record agrees with what the widget shows
    const record = await sessionRecord(r.session_id);
    assert.equal(record.decision, end.result);
    assert.equal(record.reason, end.reason);
    assert.equal(await page.locator('#outcome').getAttribute('data-decision'), end.result);

    // privacy: every request body of the whole flow
    const posts = requests.filter((q) => q.body && q.body.length);
    assert.ok(posts.some((q) => q.url.endsWith('/result')), 'the result was posted');
    const problems = posts.flatMap(privacyViolations);
    assert.deepEqual(problems, []);
    // the ID picture was fetched (by URL), never uploaded
    assert.ok(!requests.some((q) => q.method !== 'GET' && q.url.includes('lin-manuel-miranda')));
    // nor logged by the server
    const logs = server.logs.join('');
    assert.ok(!logs.includes(r.template.bits), 'the template is not in the server log');
    assert.ok(!/"match_score"|"track"/.test(logs), 'scores and tracks are not in the server log');
  } finally {
    await browser.close();
  }
});

// The whole flow with `video` as the camera and the performer's ID photo:
// the widget's end state, what it recorded, and the signed result.
async function performerFlow(video) {
  const { browser, page } = await launch({ video });
  try {
    await recordWidget(page);
    await page.goto(demoUrl(server.origin, 'performer-id.png'));
    const end = await widgetState(page, ['done', 'error'], FLOW_MS);
    const seen = await page.evaluate(() => window.__facegate);
    assert.equal(end.state, 'done', JSON.stringify(end));
    return { end, seen, r: seen.result?.result?.result };
  } finally {
    await browser.close();
  }
}

test('a real person performing the steps passes the challenge, whatever the seed', { timeout: FLOW_MS + 30000 }, async () => {
  const { end, seen, r } = await performerFlow(performer);
  assert.equal(end.result, 'pass', JSON.stringify({ decision: seen.result?.answer, transcript: r?.active_liveness?.transcript, steps: r?.active_liveness?.steps }));
  // the transcript performs the seed's steps in order
  assert.deepEqual(r.active_liveness.transcript.map((s) => s.step), r.active_liveness.steps);
  // after a turn that is not the last step, the widget asked the user to
  // face the camera again before the next step could count
  const steps = r.active_liveness.steps;
  if (steps.slice(0, -1).some((s) => s !== 'blink')) assert.ok(seen.guidance.includes('hint_face_front'), JSON.stringify({ steps, guidance: seen.guidance }));
  // a real camera's frames of a real face: no screen's pixel grid
  assert.ok(r.screen_grid < 2.2, `screen cue ${r.screen_grid}`);
  assert.equal((await sessionRecord(r.session_id)).decision, 'pass');
});

test('the same person replayed on a screen filmed sharply is refused by the screen cue', { timeout: FLOW_MS + 30000 }, async () => {
  const { end, r } = await performerFlow(filmedPerformer);
  const summary = JSON.stringify({ end, steps: r?.active_liveness?.steps, transcript: r?.active_liveness?.transcript, screen_grid: r?.screen_grid, passive: r?.passive_liveness });
  // the cue, computed in the worker's wasm on the filmed frames, is signed
  // into the result above its threshold
  assert.ok(r.screen_grid >= 2.2, summary);
  assert.equal(end.result, 'fail', summary);
  // The replay performs the steps (in 4 of 5 runs here; in the fifth a
  // step timed out on the filmed frames): then only the liveness signals
  // stop it. MiniFASNet passes most such frames (README
  // "Accuracy"); if it does not here, it is the reason given first.
  if (r.active_liveness.transcript.length === r.active_liveness.steps.length) {
    assert.match(end.reason, /^(screen_replay_suspected|liveness_failed)$/, summary);
  }
  const record = await sessionRecord(r.session_id);
  assert.equal(record.decision, 'fail');
  assert.equal(record.reason, end.reason);
});

test('a still photograph as the camera never passes the active challenge', { timeout: FLOW_MS + 30000 }, async () => {
  const { browser, page, consoleLines } = await launch({ video: still });
  try {
    await recordWidget(page);
    await page.goto(demoUrl(server.origin, 'lin-manuel-miranda.png'));
    const end = await widgetState(page, ['done', 'error'], FLOW_MS);
    assert.equal(end.state, 'done', `ended in ${end.state} (${end.error}): ${end.status}\n${consoleLines.join('\n')}`);
    assert.equal(end.result, 'fail');
    assert.match(end.reason, /^challenge_(timeout|incomplete)$|^implausible_track$/);
    const seen = await page.evaluate(() => window.__facegate);
    const r = seen.result.result.result;
    // the photo is of the ID's owner: only liveness can stop it
    assert.ok(r.match_score >= 0.8, `match ${r.match_score}`);
    assert.ok(r.active_liveness.transcript.length < r.active_liveness.steps.length);
    // a photo never blinks: when the blink comes first, the widget asked for
    // a deliberate one after a while (www/guidance.js)
    if (r.active_liveness.steps[0] === 'blink') assert.ok(seen.guidance.includes('hint_blink_fully'), JSON.stringify(seen.guidance));
    assert.match(end.status, /Not verified/);
    assert.equal((await sessionRecord(r.session_id)).decision, 'fail');
  } finally {
    await browser.close();
  }
});

test('camera permission denied: the widget says so and offers a retry', { timeout: 90000 }, async () => {
  const { browser, page } = await launch({ video: clip, camera: 'deny' });
  try {
    await page.goto(demoUrl(server.origin, 'lin-manuel-miranda.png'));
    const end = await widgetState(page, ['error', 'done'], 60000);
    assert.equal(end.state, 'error');
    assert.equal(end.error, 'camera_denied');
    assert.match(end.status, /Camera access was blocked/);
    assert.match(end.body, /Try again/);
  } finally {
    await browser.close();
  }
});

test('a second visit loads the models from the Cache API, and a corrupted cached model is downloaded again', { timeout: 240000 }, async () => {
  const modelFiles = readdirSync(path.join(www, 'models')).filter((f) => f.endsWith('.onnx'));
  const { browser, page, requests } = await launch({ camera: 'deny' });
  const modelRequests = () => requests.filter((r) => /\/models\/[^/]+\.onnx$/.test(r.url)).map((r) => path.basename(r.url));
  const visit = async () => {
    requests.length = 0;
    await page.goto(`${server.origin}/`);
    await page.locator('button[type=submit]').click();
    const end = await widgetState(page, ['id-capture', 'error'], 90000);
    assert.equal(end.state, 'id-capture', `${end.error}: ${end.status}`);
  };
  const cached = () => page.evaluate(async () => (await (await caches.open('facegate-models-v1')).keys()).map((r) => r.url));
  try {
    await visit();
    // the deferred models (embedder, eye model) finish in the background
    for (let tries = 0; (await cached()).length < modelFiles.length; tries++) {
      assert.ok(tries < 240, `only ${(await cached()).length} of ${modelFiles.length} models cached after 2 minutes`);
      await page.waitForTimeout(500);
    }
    assert.deepEqual(modelRequests().sort(), [...modelFiles].sort());
    // cached under their sha256, so a new model version is a new entry
    for (const url of await cached()) assert.match(url, /\/models\/[0-9a-f]{64}\/[^/]+\.onnx$/);

    await visit();
    await page.waitForTimeout(3000); // time for any background download to start
    assert.deepEqual(modelRequests(), [], 'nothing downloaded again');

    // a cached copy that no longer matches its sha256 is dropped and fetched afresh
    await page.evaluate(async () => {
      const cache = await caches.open('facegate-models-v1');
      const key = (await cache.keys()).find((r) => r.url.endsWith('/facemesh.onnx'));
      await cache.put(key, new Response(new Uint8Array([1, 2, 3])));
    });
    await visit();
    assert.deepEqual(modelRequests(), ['facemesh.onnx']);
  } finally {
    await browser.close();
  }
});

test('no camera at all: hand-off to a phone with a QR code of a link to the same session', { timeout: 90000 }, async () => {
  const { browser, page } = await launch({ camera: 'none' });
  try {
    await page.goto(demoUrl(server.origin, 'lin-manuel-miranda.png'));
    const end = await widgetState(page, ['error', 'done'], 60000);
    assert.equal(end.error, 'no_camera', end.status);
    assert.match(end.status, /no camera/i);
    assert.match(end.body, /<svg/);
    const session = await page.locator('face-verify').getAttribute('session');
    assert.match(end.body, new RegExp(`session=${session}`));
  } finally {
    await browser.close();
  }
});

// A copy of the site with one byte of the model whose file starts with
// `prefix` flipped (and no precompressed sibling, so the tampered bytes are
// what is served).
function tamperedSite(prefix) {
  const site = path.join(dir, `tampered-${prefix}-site`);
  cpSync(www, site, { recursive: true });
  const model = path.join(site, 'models', readdirSync(path.join(site, 'models')).find((f) => f.startsWith(prefix) && f.endsWith('.onnx')));
  const bytes = readFileSync(model);
  bytes[bytes.length >> 1] ^= 0x40;
  writeFileSync(model, bytes);
  rmSync(`${model}.br`, { force: true });
  return site;
}

// The demo flow on a site whose model file `prefix`* has one flipped byte:
// the widget must stop with the integrity message. Returns the states the
// widget went through.
async function refusedTamperedModel(prefix, until, timeout) {
  const tampered = await startServer({ site: tamperedSite(prefix) });
  const { browser, page } = await launch({ video: clip });
  try {
    await recordWidget(page);
    await page.goto(demoUrl(tampered.origin, 'lin-manuel-miranda.png'));
    const end = await widgetState(page, until, timeout);
    assert.equal(end.state, 'error');
    assert.equal(end.error, 'model_tampered');
    assert.match(end.status, /failed its integrity check/);
    return (await page.evaluate(() => window.__facegate)).states;
  } finally {
    await browser.close();
    await tampered.stop();
  }
}

test('a tampered model file is refused with its message', { timeout: 90000 }, async () => {
  await refusedTamperedModel('facemesh', ['error', 'done', 'selfie'], 60000);
});

test('the eye model arrives in the background too: a tampered one stops the flow at the challenge with the integrity message', { timeout: FLOW_MS + 30000 }, async () => {
  const states = await refusedTamperedModel('iris', ['error', 'done'], FLOW_MS);
  // the ID photo was matched (the embedder was fine) and the selfie step
  // reached; the challenge needs the eye model and refuses the bad one
  assert.ok(states.includes('selfie') && !states.includes('challenge'), JSON.stringify(states));
});

test('the embedder arrives in the background: the user starts first, and a tampered embedder is refused before any match', { timeout: 90000 }, async () => {
  const states = await refusedTamperedModel('mobilefacenet', ['error', 'done', 'selfie'], 60000);
  // the ID step was reached on the other models; the match needs the embedder
  assert.deepEqual(states.slice(0, 2), ['loading', 'id-capture']);
});

test('the demo page and widget speak Chinese when asked', { timeout: 90000 }, async () => {
  const { browser, page } = await launch({ camera: 'deny' });
  try {
    await page.goto(`${server.origin}/?lang=zh-CN`);
    assert.equal(await page.locator('button[type=submit]').textContent(), '继续进行身份核验');
    await page.locator('button[type=submit]').click();
    const end = await widgetState(page, ['id-capture', 'error'], 60000);
    assert.equal(end.state, 'id-capture', end.status);
    assert.match(end.status, /证件/);
  } finally {
    await browser.close();
  }
});
