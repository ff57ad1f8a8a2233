// Shared set-up for the widget's end-to-end tests: the real facegate-server
// binary serving target/www (built by `cargo xtask build-www`) on a free
// loopback port with a fresh SQLite file, Debian's Chromium driven by
// playwright-core, and a fake camera fed from real footage converted to y4m
// with ffmpeg.

import { chromium } from 'playwright-core';
export { chromium };
import { spawn, execFileSync } from 'node:child_process';
import { mkdtempSync, existsSync, rmSync } from 'node:fs';
import { createServer } from 'node:net';
import { readFile } from 'node:fs/promises';
import http from 'node:http';
import os from 'node:os';
import path from 'node:path';
import { fileURLToPath } from 'node:url';

export const root = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '../..');
export const faces = path.join(root, '../shared/data/faces');
export const footage = path.join(root, '../shared/data/footage-dev');
export const www = path.join(root, 'target/www');
const serverBin = path.join(root, 'target/release/facegate-server');
export const chromiumPath = process.env.CHROMIUM || '/usr/bin/chromium';

export function tempDir(tag) {
  return mkdtempSync(path.join(os.tmpdir(), `facegate-${tag}-`));
}

export async function freePort() {
  return new Promise((resolve, reject) => {
    const s = createServer();
    s.once('error', reject);
    s.listen(0, '127.0.0.1', () => {
      const { port } = s.address();
      s.close(() => resolve(port));
    });
  });
}

export async function waitFor(url, ms = 30000) {
  const end = Date.now() + ms;
  while (Date.now() < end) {
    try {
      const r = await fetch(url);
      if (r.ok) return;
    } catch {
      // not up yet
    }
    await new Promise((r) => setTimeout(r, 200));
  }
  throw new Error(`${url} did not come up`);
}

// The real server with the demo back end, serving `site` (target/www or a
// modified copy). Its stdout/stderr (structured logs) are kept for checks.
export async function startServer({ site = www } = {}) {
  if (!existsSync(serverBin)) throw new Error(`${serverBin} missing: cargo build --release -p facegate-server`);
  if (!existsSync(path.join(site, 'index.html'))) throw new Error(`${site} missing: cargo xtask build-www`);
  const dir = tempDir('server');
  const port = await freePort();
  const logs = [];
  const child = spawn(serverBin, ['--addr', `127.0.0.1:${port}`, '--db', path.join(dir, 'facegate.db'), '--www', site, '--demo'], {
    env: { ...process.env, FACEGATE_API_KEY: 'browser-test-api-key-0123456789', RUST_LOG: 'info' },
    stdio: ['ignore', 'pipe', 'pipe'],
  });
  child.stdout.on('data', (d) => logs.push(d.toString()));
  child.stderr.on('data', (d) => logs.push(d.toString()));
  const origin = `http://127.0.0.1:${port}`;
  await waitFor(`${origin}/index.html`);
  return {
    origin,
    logs,
    apiKey: 'browser-test-api-key-0123456789',
    async stop() {
      child.kill('SIGTERM');
      await new Promise((r) => child.once('exit', r));
      rmSync(dir, { recursive: true, force: true });
    },
  };
}

// Serves ../shared/data/faces on another origin with CORS, as a carrier's
// asset host would serve an ID picture for ?id=URL.
// Serves the photos of ../shared/data/faces, and files of `extraDir` (made
// by a test) under the same names, to play the carrier's ID image host.
export async function startFixtureHost(extraDir = null) {
  const port = await freePort();
  const server = http.createServer(async (req, res) => {
    const name = path.basename(decodeURIComponent(new URL(req.url, 'http://x').pathname));
    try {
      const body = await readFile(path.join(faces, name)).catch((e) => (extraDir ? readFile(path.join(extraDir, name)) : Promise.reject(e)));
      res.writeHead(200, { 'access-control-allow-origin': '*', 'content-type': name.endsWith('.png') ? 'image/png' : 'image/jpeg' });
      res.end(body);
    } catch {
      res.writeHead(404).end();
    }
  });
  await new Promise((r) => server.listen(port, '127.0.0.1', r));
  return { url: (name) => `http://127.0.0.1:${port}/${name}`, stop: () => new Promise((r) => server.close(r)) };
}

// A y4m file for Chromium's fake camera: a segment of a video, or a still
// picture (one frame, which Chromium repeats for ever).
export function y4m(dir, name, { input, start, duration, still = false, width = 640, height = 480, fps = 15 }) {
  const out = path.join(dir, `${name}.y4m`);
  const fit = `scale=${width}:${height}:force_original_aspect_ratio=decrease,pad=${width}:${height}:(ow-iw)/2:(oh-ih)/2`;
  const args = ['-loglevel', 'error', '-y'];
  if (!still) args.push('-ss', String(start), '-t', String(duration));
  args.push('-i', input, '-vf', `${fit},fps=${fps}`, '-pix_fmt', 'yuv420p');
  if (still) args.push('-frames:v', '1');
  args.push(out);
  execFileSync('ffmpeg', args);
  return out;
}

export const BASE_FLAGS = ['--no-sandbox', '--disable-gpu', '--disable-background-networking', '--disable-component-update', '--no-first-run', '--disable-quic', '--disable-sync'];

// Chromium with a fake camera playing `video` (y4m); `camera: 'deny'` makes
// every camera request fail as a user's "Block" would; `camera: 'none'`
// starts it with no camera at all.
export async function launch({ video, camera = 'allow' } = {}) {
  const args = [...BASE_FLAGS];
  if (camera !== 'none') {
    args.push('--use-fake-device-for-media-stream');
    if (video) args.push(`--use-file-for-fake-video-capture=${video}`);
  }
  if (camera === 'allow') args.push('--use-fake-ui-for-media-stream');
  const browser = await chromium.launch({ executablePath: chromiumPath, headless: true, args });
  const context = await browser.newContext({ permissions: camera === 'allow' ? ['camera'] : [] });
  const page = await context.newPage();
  const consoleLines = [];
  page.on('console', (m) => consoleLines.push(`${m.type()}: ${m.text()}`));
  page.on('pageerror', (e) => consoleLines.push(`pageerror: ${e.message}`));
  // every request leaving the page or its worker, with its body
  const requests = [];
  context.on('request', (r) => requests.push({ url: r.url(), method: r.method(), body: r.postDataBuffer() }));
  return { browser, context, page, requests, consoleLines };
}

// Waits until the widget reaches one of `states`; returns its attributes.
export async function widgetState(page, states, timeout) {
  await page.waitForFunction(
    (wanted) => {
      const w = document.querySelector('face-verify');
      return w && wanted.includes(w.getAttribute('state'));
    },
    states,
    { timeout, polling: 250 },
  );
  return page.evaluate(() => {
    const w = document.querySelector('face-verify');
    const attrs = Object.fromEntries([...w.attributes].map((a) => [a.name, a.value]));
    return { ...attrs, status: w.shadowRoot.querySelector('#status').textContent, frames: Number(w.dataset.frames || 0), body: w.shadowRoot.querySelector('#body').innerHTML };
  });
}

// Records every state the widget goes through and the facegate-result event.
export async function recordWidget(page) {
  await page.addInitScript(() => {
    window.__facegate = { states: [], result: null, guidance: [] };
    document.addEventListener('facegate-state', (e) => window.__facegate.states.push(e.detail.state));
    // the challenge's guidance hints, in the order they first appeared
    new MutationObserver((changes) => {
      for (const c of changes) {
        const key = c.target.dataset.guidance;
        if (key && !window.__facegate.guidance.includes(key)) window.__facegate.guidance.push(key);
      }
    }).observe(document, { subtree: true, attributes: true, attributeFilter: ['data-guidance'] });
    document.addEventListener('facegate-result', (e) => {
      window.__facegate.result = e.detail;
    });
  });
}

const IMAGE_SIGNATURES = [
  [Buffer.from([0xff, 0xd8, 0xff]), 'JPEG'],
  [Buffer.from('\x89PNG', 'latin1'), 'PNG'],
  [Buffer.from('GIF8'), 'GIF'],
  [Buffer.from('RIFF'), 'RIFF/WebP'],
  [Buffer.from('data:image'), 'data URL'],
  [Buffer.from('/9j/'), 'base64 JPEG'],
  [Buffer.from('iVBORw0KGgo'), 'base64 PNG'],
];

// The privacy check on one request body: no picture in any encoding, no
// long run of numbers that could be an embedding (facegate's is 192
// floats), nothing big enough to hide a frame.
export function privacyViolations(request) {
  const problems = [];
  const body = request.body;
  if (!body || body.length === 0) return problems;
  for (const [sig, what] of IMAGE_SIGNATURES) {
    if (body.includes(sig)) problems.push(`${what} signature in body of ${request.method} ${request.url}`);
  }
  if (body.length > 64 * 1024) problems.push(`${body.length}-byte body to ${request.url}`);
  let json;
  try {
    json = JSON.parse(body.toString('utf8'));
  } catch {
    problems.push(`non-JSON body to ${request.url}`);
    return problems;
  }
  const walk = (v, where) => {
    if (Array.isArray(v)) {
      if (v.length >= 64 && v.every((x) => typeof x === 'number')) problems.push(`numeric array of ${v.length} at ${where} (embedding-like)`);
      v.forEach((x, i) => walk(x, `${where}[${i}]`));
    } else if (v && typeof v === 'object') {
      for (const [k, x] of Object.entries(v)) walk(x, `${where}.${k}`);
    } else if (typeof v === 'string' && v.length > 4096) {
      problems.push(`${v.length}-character string at ${where}`);
    }
  };
  walk(json, '$');
  return problems;
}
