// The widget's Web Worker: owns the wasm pipeline so that inference never
// blocks the camera view. Frames arrive as transferred ImageBitmaps; only
// detections, quality, pose, eye state, scores and the signed result go
// back. The ID photo's embedding never leaves the wasm instance, and
// `clear` drops it with everything else at the end of a flow.

import init, * as fg from './pkg/facegate.js';

let gate = null;
let canvas = null;
let ctx = null;

class WidgetError extends Error {
  constructor(code, message) {
    super(message);
    this.code = code;
  }
}

// The deferred models (the embedder, the largest, and the eye model of the
// blink step) are fetched in the background: the user can start with the ID
// photo and the selfie guidance while they arrive; the first call that needs
// one (the ID photo's reference, the challenge) waits for it here.
const deferred = {};

// Download, sha256 check against the manifest and Cache API storage are the
// wasm's (fg.fetchModels, src/wasm/model_fetch.rs); this only sequences them.
async function load({ base }) {
  const started = performance.now();
  await init({ module_or_path: new URL('./pkg/facegate_bg.wasm', import.meta.url) });
  const later = fg.deferredModels();
  const first = fg.requiredModels().filter((n) => !later.includes(n));
  let bytes = 0;
  const models = await fg.fetchModels(base, first, (loaded, total, fromCache) => {
    bytes = loaded;
    self.postMessage({ type: 'progress', loaded, total, fromCache });
  });
  gate = fg.FaceGate.withoutDeferred(models);
  // one after the other, the embedder first: the ID photo needs it first
  let previous = Promise.resolve();
  for (const name of later) {
    deferred[name] = previous.then(() => fg.fetchModels(base, [name])).then((m) => gate.addDeferred(name, m[name]));
    // the next download waits for this one either way; a failure is
    // reported to the call that needs the model, not here (this catch also
    // keeps it from counting as unhandled)
    previous = deferred[name].catch(() => {});
  }
  return { models: gate.modelHashes(), bytes, loadMs: Math.round(performance.now() - started) };
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
    // wasm errors read "code: message"; a model that fails its integrity
    // check is shown as tampered
    const text = String(e && e.message ? e.message : e);
    const wasmCode = (text.match(/^([a-z_]+):/) || [])[1];
    const code = e.code || (wasmCode === 'model_integrity' ? 'model_tampered' : wasmCode) || 'internal';
    self.postMessage({ id, ok: false, code, message: text });
  }
};
