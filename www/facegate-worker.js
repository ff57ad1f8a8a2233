// The widget's Web Worker: owns the wasm pipeline so that inference never
// blocks the camera view. Frames arrive as transferred ImageBitmaps; only
// detections, quality, pose, eye state, scores and the signed result go
// back. The ID photo's embedding never leaves the wasm instance, and
// `clear` drops it with everything else at the end of a flow.

import init, * as fg from './pkg/facegate.js';

const MODEL_CACHE = 'facegate-models-v1';
let gate = null;
let canvas = null;
let ctx = null;

class WidgetError extends Error {
  constructor(code, message) {
    super(message);
    this.code = code;
  }
}

// A fetch with byte-level progress, so the page can show "3.1 of 9.8 MB".
async function download(url, onBytes) {
  let response;
  try {
    response = await fetch(url, { cache: 'no-cache' });
  } catch (e) {
    throw new WidgetError('model_download', `${url}: ${e.message}`);
  }
  if (!response.ok) throw new WidgetError('model_download', `${url}: HTTP ${response.status}`);
  const reader = response.body.getReader();
  const chunks = [];
  let length = 0;
  for (;;) {
    const { done, value } = await reader.read();
    if (done) break;
    chunks.push(value);
    length += value.length;
    onBytes(value.length);
  }
  const bytes = new Uint8Array(length);
  let at = 0;
  for (const c of chunks) {
    bytes.set(c, at);
    at += c.length;
  }
  return bytes;
}

// Models are cached under their sha256, so a new model version is a new
// entry and a cached file is checked again before use like a fresh one.
async function modelBytes(entry, base, onBytes) {
  const url = new URL(entry.file, base).href;
  const cacheKey = new URL(`${entry.sha256}/${entry.file}`, base).href;
  const cache = self.caches ? await self.caches.open(MODEL_CACHE).catch(() => null) : null;
  const cached = cache ? await cache.match(cacheKey) : null;
  if (cached) {
    const bytes = new Uint8Array(await cached.arrayBuffer());
    if (fg.sha256Hex(bytes) === entry.sha256) {
      onBytes(bytes.length, true);
      return bytes;
    }
    await cache.delete(cacheKey);
  }
  const bytes = await download(url, onBytes);
  const actual = fg.sha256Hex(bytes);
  if (actual !== entry.sha256) {
    throw new WidgetError('model_tampered', `model ${entry.name}: sha256 ${actual} does not match the manifest's ${entry.sha256}`);
  }
  if (cache) await cache.put(cacheKey, new Response(bytes)).catch(() => {});
  return bytes;
}

// The deferred models (the embedder, the largest, and the eye model of the
// blink step) are fetched in the background: the user can start with the ID
// photo and the selfie guidance while they arrive; the first call that needs
// one (the ID photo's reference, the challenge) waits for it here.
const deferred = {};

function modelError(e) {
  if (e instanceof WidgetError) return e;
  const code = String(e.message).startsWith('model_integrity') ? 'model_tampered' : 'model_load';
  return new WidgetError(code, e.message);
}

async function load({ base }) {
  const started = performance.now();
  await init({ module_or_path: new URL('./pkg/facegate_bg.wasm', import.meta.url) });
  const manifest = JSON.parse(fg.manifestJson());
  const entry = (name) => manifest.models.find((m) => m.name === name);
  const later = fg.deferredModels();
  const entries = fg.requiredModels().filter((n) => !later.includes(n)).map(entry);
  // sizes come from the server's Content-Length where the manifest has none
  const total = entries.reduce((sum, e) => sum + (e.bytes || 0), 0);
  let loaded = 0;
  const models = {};
  for (const e of entries) {
    models[e.name] = await modelBytes(e, base, (n, fromCache) => {
      loaded += n;
      self.postMessage({ type: 'progress', loaded, total, fromCache: !!fromCache });
    });
  }
  try {
    gate = fg.FaceGate.withoutDeferred(models);
  } catch (e) {
    throw modelError(e);
  }
  // one after the other, the embedder first: the ID photo needs it first
  let previous = Promise.resolve();
  for (const name of later) {
    deferred[name] = previous.then(() => modelBytes(entry(name), base, () => {})).then((bytes) => {
      try {
        gate.addDeferred(name, bytes);
      } catch (e) {
        throw modelError(e);
      }
    });
    // the next download waits for this one either way; a failure is
    // reported to the call that needs the model, not here (this catch also
    // keeps it from counting as unhandled)
    previous = deferred[name].catch(() => {});
  }
  return { models: gate.modelHashes(), bytes: loaded, loadMs: Math.round(performance.now() - started) };
}

async function withDeferred(name) {
  const g = requireGate();
  if (!g.deferredReady(name)) await deferred[name];
  return g;
}

function rgbaOf(bitmap) {
  const { width, height } = bitmap;
  if (!canvas || canvas.width !== width || canvas.height !== height) {
    canvas = new OffscreenCanvas(width, height);
    ctx = canvas.getContext('2d', { willReadFrequently: true });
  }
  ctx.drawImage(bitmap, 0, 0);
  bitmap.close();
  return ctx.getImageData(0, 0, width, height);
}

function requireGate() {
  if (!gate) throw new WidgetError('not_ready', 'models are not loaded');
  return gate;
}

const handlers = {
  load,
  reference: async ({ bytes }) => (await withDeferred(fg.embedderModel())).setReferenceImage(new Uint8Array(bytes)),
  // selfie guidance: faces and their quality (the hints under the oval)
  analyze: ({ bitmap }) => {
    const img = rgbaOf(bitmap);
    return requireGate().guideFrame(img.width, img.height, img.data);
  },
  newSession: () => requireGate().newSession(),
  begin: async ({ config }) => (await withDeferred(fg.eyeModel())).beginChallenge(JSON.stringify(config)),
  challengeFrame: ({ bitmap, tMs }) => {
    const img = rgbaOf(bitmap);
    return requireGate().challengeFrame(img.width, img.height, img.data, tMs);
  },
  finish: ({ widgetVersion }) => requireGate().finishChallenge(widgetVersion, Date.now()),
  qr: ({ text }) => fg.qrSvg(text),
  clear: () => {
    if (gate) gate.clearReference();
    if (ctx) ctx.clearRect(0, 0, canvas.width, canvas.height);
    return true;
  },
};

// One request at a time per id; the answer carries the same id.
self.onmessage = async (event) => {
  const { id, type, ...args } = event.data;
  try {
    const handler = handlers[type];
    if (!handler) throw new WidgetError('invalid_input', `unknown request ${type}`);
    const value = await handler(args);
    self.postMessage({ id, ok: true, value });
  } catch (e) {
    // wasm errors read "code: message"
    const text = String(e && e.message ? e.message : e);
    const code = e.code || (text.match(/^([a-z_]+):/) || [])[1] || 'internal';
    self.postMessage({ id, ok: false, code, message: text });
  }
};
