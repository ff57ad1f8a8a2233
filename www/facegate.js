// <face-verify session="…" server="…">: the facegate verification widget.
//
// Stages (reflected in the `state` attribute and the `facegate-state`
// event): loading → id-capture → selfie → challenge → submitting → done, or
// error from any stage. When done, `result` is the server's decision
// (pass|fail) and `reason` its reason code; `facegate-result` carries the
// signed result the server received and the server's answer.
//
// All inference runs in facegate-worker.js (wasm). The page keeps camera
// frames and the ID picture in memory only; the network carries the device
// key registration, the signed result (scores, pose/eye track, protected
// template) and nothing else.

import { translate, pickLanguage, STRINGS } from './i18n.js';
import { challengeHint, HINT_REPLACES_STEP } from './guidance.js';

export const WIDGET_VERSION = 'facegate-widget/0.1.0';

// Frames of a good, centred face in a row before the challenge starts, and
// how far their head pose may differ: the challenge takes its first frames
// as the frontal pose every turn is measured from, so it starts on a face
// held still, not on one passing the front in mid-turn.
const GOOD_FRAMES_TO_START = 4;
const STEADY_YAW_DEG = 5;
// Give up looking for a usable face after this long (selfie stage).
const SELFIE_TIMEOUT_MS = 45000;
// The core enforces 10 s per step on the frames it sees; this outer limit
// also ends a challenge during which no face (hence no frame) counted.
const STEP_LIMIT_MS = 10000;
const CHALLENGE_SLACK_MS = 4000;
// Frames sent to the worker are scaled to this width: the detector works at
// 320 px and the face crops need no more.
const FRAME_WIDTH = 640;

// wasm module using one SIMD instruction (i8x16 / v128): validates only where
// the browser supports wasm SIMD, which the pipeline is compiled with.
const SIMD_PROBE = new Uint8Array([0, 97, 115, 109, 1, 0, 0, 0, 1, 5, 1, 96, 0, 1, 123, 3, 2, 1, 0, 10, 10, 1, 8, 0, 65, 0, 253, 15, 253, 98, 11]);

// Camera labels that are not the user's face camera: infrared (Windows
// Hello) and virtual cameras (an attacker's easiest replay path).
const NOT_A_FACE_CAMERA = /\b(ir|infrared)\b|virtual|obs|snap ?camera|manycam|droidcam/i;

const STYLE = `
:host { display: block; font: 16px/1.45 system-ui, sans-serif; color: #1b1b1b; max-width: 520px; }
.card { border: 1px solid #767676; border-radius: 12px; padding: 16px; background: #fff; }
h2 { font-size: 1.2em; margin: 0 0 4px; }
.sub { color: #4a4a4a; font-size: .9em; margin: 0 0 12px; }
.status { min-height: 3em; margin: 8px 0; font-weight: 600; }
.status[data-kind=error] { color: #a4000f; }
.status[data-kind=ok] { color: #0b6b1d; }
progress { width: 100%; height: 12px; }
button { font: inherit; padding: 10px 16px; margin: 4px 8px 4px 0; border-radius: 8px; border: 2px solid #0b57d0; cursor: pointer; }
button.primary { background: #0b57d0; color: #fff; }
button.secondary { background: #fff; color: #0b57d0; }
button:focus-visible, label.button:focus-within { outline: 3px solid #1b1b1b; outline-offset: 2px; }
label.button { display: inline-block; padding: 10px 16px; margin: 4px 8px 4px 0; border-radius: 8px; border: 2px solid #0b57d0; color: #0b57d0; cursor: pointer; }
label.button input { position: absolute; opacity: 0; width: 1px; height: 1px; }
.stage { position: relative; width: 100%; aspect-ratio: 3 / 4; background: #111; border-radius: 12px; overflow: hidden; }
@media (orientation: landscape) and (min-width: 600px) { .stage { aspect-ratio: 4 / 3; } }
video { width: 100%; height: 100%; object-fit: cover; transform: scaleX(-1); }
video.document { transform: none; }
svg.overlay { position: absolute; inset: 0; width: 100%; height: 100%; pointer-events: none; }
svg.overlay ellipse { fill: none; stroke: #fff; stroke-width: 4; stroke-dasharray: 10 6; }
svg.overlay[data-good=true] ellipse { stroke: #2fd15a; stroke-dasharray: none; }
.timer { height: 6px; background: #ddd; border-radius: 3px; overflow: hidden; margin-top: 6px; }
.timer > div { height: 100%; background: #0b57d0; width: 100%; }
.steps { list-style: none; padding: 0; display: flex; gap: 8px; margin: 8px 0; }
.steps li { padding: 2px 8px; border-radius: 10px; border: 1px solid #767676; font-size: .85em; }
.steps li[data-done=true]::before { content: "✓ "; }
.steps li[data-current=true] { border-width: 2px; border-color: #0b57d0; font-weight: 600; }
canvas.idface { width: 160px; height: 160px; border-radius: 8px; border: 1px solid #767676; object-fit: contain; display: block; margin: 8px 0; }
.result { font-size: 1.15em; font-weight: 700; }
.result::before { margin-right: .4em; }
.result[data-result=pass]::before { content: "✓"; color: #0b6b1d; }
.result[data-result=fail]::before { content: "✗"; color: #a4000f; }
.qr svg { width: 200px; height: 200px; }
.handoff { word-break: break-all; font-size: .85em; }
[hidden] { display: none !important; }
`;

export class FaceVerifyElement extends HTMLElement {
  static observedAttributes = ['lang'];

  constructor() {
    super();
    this.root = this.attachShadow({ mode: 'open' });
    this.lang_ = 'en';
    this.requests = new Map();
    this.nextId = 1;
    this.stream = null;
    this.timers = new Set();
    this.framesProcessed = 0;
  }

  connectedCallback() {
    this.lang_ = pickLanguage(this.getAttribute('lang'), this.closest('[lang]')?.getAttribute('lang'), navigator.languages || [navigator.language]);
    this.root.innerHTML = `<style>${STYLE}</style><div class="card" part="card">
      <h2 id="title"></h2><p class="sub" id="privacy"></p>
      <div class="status" id="status" role="status" aria-live="polite"></div>
      <div id="body"></div></div>`;
    this.$('#title').textContent = this.t('title');
    this.$('#privacy').textContent = this.t('privacy_note');
    this.onVisibility = () => {
      if (document.hidden && this.state === 'challenge') this.fail('tab_hidden');
    };
    document.addEventListener('visibilitychange', this.onVisibility);
    this.run().catch((e) => this.fail(e.code || 'internal', e.message));
  }

  disconnectedCallback() {
    document.removeEventListener('visibilitychange', this.onVisibility);
    this.teardown();
  }

  attributeChangedCallback(name, _old, value) {
    if (name === 'lang' && value) this.lang_ = pickLanguage(value);
  }

  // ---- small helpers ------------------------------------------------------

  $(sel) {
    return this.root.querySelector(sel);
  }

  t(key, params) {
    return translate(this.lang_, key, params);
  }

  // Properties mirror the attributes, so frameworks that set properties on
  // custom elements (React 19, Vue) and those that set attributes behave
  // the same. `state`, `result`, `reason` and `error` are the widget's own
  // outputs: read-only.
  get session() {
    return this.getAttribute('session');
  }

  set session(value) {
    this.reflect('session', value);
  }

  get server() {
    return (this.getAttribute('server') || location.origin).replace(/\/$/, '');
  }

  set server(value) {
    this.reflect('server', value);
  }

  get models() {
    return this.getAttribute('models');
  }

  set models(value) {
    this.reflect('models', value);
  }

  get idSrc() {
    return this.getAttribute('id-src');
  }

  set idSrc(value) {
    this.reflect('id-src', value);
  }

  get autostart() {
    return this.hasAttribute('autostart');
  }

  set autostart(on) {
    this.toggleAttribute('autostart', !!on);
  }

  reflect(name, value) {
    if (value === null || value === undefined) this.removeAttribute(name);
    else this.setAttribute(name, String(value));
  }

  get state() {
    return this.getAttribute('state');
  }

  get result() {
    return this.getAttribute('result');
  }

  get reason() {
    return this.getAttribute('reason');
  }

  get error() {
    return this.getAttribute('error');
  }

  setState(state) {
    this.setAttribute('state', state);
    this.dispatchEvent(new CustomEvent('facegate-state', { detail: { state }, bubbles: true, composed: true }));
  }

  say(text, kind = '') {
    const status = this.$('#status');
    if (status.textContent !== text) status.textContent = text;
    status.dataset.kind = kind;
  }

  body(html) {
    const b = this.$('#body');
    b.innerHTML = html;
    return b;
  }

  button(text, kind, onClick) {
    const b = document.createElement('button');
    b.type = 'button';
    b.className = kind;
    b.textContent = text;
    b.addEventListener('click', onClick);
    return b;
  }

  after(ms, fn) {
    const id = setTimeout(() => {
      this.timers.delete(id);
      fn();
    }, ms);
    this.timers.add(id);
    return id;
  }

  // Request/response with the worker.
  call(type, args = {}, transfer = []) {
    const id = this.nextId++;
    return new Promise((resolve, reject) => {
      this.requests.set(id, { resolve, reject });
      this.worker.postMessage({ id, type, ...args }, transfer);
    });
  }

  onWorkerMessage(event) {
    const m = event.data;
    if (m.type === 'progress') return this.onProgress(m);
    const pending = this.requests.get(m.id);
    if (!pending) return;
    this.requests.delete(m.id);
    if (m.ok) pending.resolve(m.value);
    else pending.reject(Object.assign(new Error(m.message), { code: m.code }));
  }

  async api(path, body) {
    let response;
    try {
      response = await fetch(`${this.server}${path}`, { method: 'POST', headers: { 'content-type': 'application/json' }, body });
    } catch (e) {
      throw Object.assign(new Error(e.message), { code: 'server' });
    }
    const answer = await response.json().catch(() => ({}));
    if (!response.ok) {
      const code = ['unknown_session', 'session_expired', 'replayed_nonce', 'device_key_already_registered'].includes(answer.error) ? 'session' : answer.error || 'server';
      throw Object.assign(new Error(answer.message || `HTTP ${response.status}`), { code, answer });
    }
    return answer;
  }

  // ---- the flow -----------------------------------------------------------

  async run() {
    this.setState('loading');
    this.say(this.t('loading'));
    if (typeof Worker === 'undefined' || typeof OffscreenCanvas === 'undefined') throw Object.assign(new Error('no worker'), { code: 'no_worker' });
    if (!WebAssembly.validate(SIMD_PROBE)) throw Object.assign(new Error('no wasm simd'), { code: 'no_wasm_simd' });
    const progress = this.body(`<progress id="progress" max="1" value="0"></progress>`);
    progress.querySelector('progress').setAttribute('aria-label', this.t('loading'));
    this.worker = new Worker(new URL('./facegate-worker.js', import.meta.url), { type: 'module' });
    this.worker.onmessage = (e) => this.onWorkerMessage(e);
    this.worker.onerror = (e) => this.fail('internal', e.message);
    // `models` may be relative ("/facegate-models/"): to the page, as any
    // URL in an attribute, not to the worker that fetches the files. The
    // default is the models/ folder beside this file, as the carrier server
    // serves it (left for run time: a bundler has nothing to resolve there;
    // a bundled site copies the models elsewhere and sets `models`).
    const base = this.models ? new URL(this.models, document.baseURI).href : new URL(/* @vite-ignore */ './models/', import.meta.url).href;
    this.loadInfo = await this.call('load', { base });
    await this.captureId();
  }

  onProgress({ loaded, total, fromCache }) {
    const bar = this.$('#progress');
    if (!bar) return;
    bar.max = total || 1;
    bar.value = Math.min(loaded, total);
    const mb = (n) => (n / 1e6).toFixed(1);
    this.say(fromCache ? this.t('loading_cached') : this.t('loading_progress', { loaded: mb(loaded), total: mb(total) }));
  }

  // Stage 1: the ID document, uploaded or photographed, or given by URL.
  async captureId() {
    this.setState('id-capture');
    const given = this.idSrc;
    if (given) return this.useIdBytes(await this.fetchIdImage(given), true);
    this.say(this.t('id_instructions'));
    const b = this.body(`<h3>${this.t('id_title')}</h3>
      <label class="button"><input type="file" accept="image/*" capture="environment" id="file"><span></span></label>
      <div id="camera-zone"></div>`);
    b.querySelector('label span').textContent = this.t('id_upload');
    b.querySelector('#file').addEventListener('change', async (e) => {
      const file = e.target.files && e.target.files[0];
      if (file) await this.useIdBytes(await file.arrayBuffer(), false);
    });
    b.querySelector('#camera-zone').append(this.button(this.t('id_camera'), 'secondary', () => this.photographId()));
  }

  async fetchIdImage(url) {
    const response = await fetch(url).catch(() => null);
    if (!response || !response.ok) throw Object.assign(new Error(`cannot fetch ID image ${url}`), { code: 'image_decode' });
    return response.arrayBuffer();
  }

  async photographId() {
    const stream = await this.openCamera('environment');
    if (!stream) return;
    const b = this.body(`<div class="stage"><video class="document" playsinline muted autoplay></video></div>`);
    const video = b.querySelector('video');
    video.srcObject = stream;
    b.append(this.button(this.t('id_capture'), 'primary', async () => {
      const blob = await this.snapshot(video);
      this.stopCamera();
      await this.useIdBytes(await blob.arrayBuffer(), false);
    }));
  }

  snapshot(video) {
    const c = document.createElement('canvas');
    c.width = video.videoWidth;
    c.height = video.videoHeight;
    c.getContext('2d').drawImage(video, 0, 0);
    return new Promise((resolve) => c.toBlob(resolve, 'image/jpeg', 0.92));
  }

  async useIdBytes(buffer, automatic) {
    this.say(this.t('id_checking'));
    const preview = buffer.slice(0);
    let face;
    try {
      face = await this.call('reference', { bytes: buffer }, [buffer]);
    } catch (e) {
      if (automatic) throw e;
      // a model that failed to arrive or its integrity check ends the flow
      if (['model_tampered', 'model_load', 'model_download'].includes(e.code)) return this.fail(e.code, e.message);
      this.say(this.t(e.code === 'image_decode' ? 'id_bad_image' : 'id_no_face'), 'error');
      return;
    }
    // show the user the face that was found, so they can retake a bad photo
    const b = this.body(`<canvas class="idface" width="160" height="160" role="img"></canvas><div id="actions"></div>`);
    const canvas = b.querySelector('canvas');
    canvas.setAttribute('aria-label', this.t('id_found'));
    const bitmap = await createImageBitmap(new Blob([preview])).catch(() => null);
    if (bitmap) {
      const [x, y, w, h] = face.box;
      const side = Math.max(w, h) * 1.3;
      canvas.getContext('2d').drawImage(bitmap, x + w / 2 - side / 2, y + h / 2 - side / 2, side, side, 0, 0, 160, 160);
      bitmap.close();
    }
    this.say(this.t('id_found'));
    const proceed = () => {
      canvas.getContext('2d').clearRect(0, 0, 160, 160);
      this.selfie();
    };
    if (automatic || this.autostart) return proceed();
    const actions = b.querySelector('#actions');
    actions.append(this.button(this.t('id_use'), 'primary', proceed), this.button(this.t('id_retake'), 'secondary', () => this.captureId()));
  }

  // ---- camera -------------------------------------------------------------

  async openCamera(facing, deviceId) {
    if (!navigator.mediaDevices || !navigator.mediaDevices.getUserMedia) {
      await this.noCamera();
      return null;
    }
    const video = deviceId ? { deviceId: { exact: deviceId } } : { facingMode: { ideal: facing } };
    Object.assign(video, { width: { ideal: 1280 }, height: { ideal: 720 } });
    try {
      this.stream = await navigator.mediaDevices.getUserMedia({ video, audio: false });
    } catch (e) {
      if (e.name === 'NotFoundError' || e.name === 'OverconstrainedError') await this.noCamera();
      else if (e.name === 'NotAllowedError' || e.name === 'SecurityError') this.fail('camera_denied', e.message);
      else if (e.name === 'NotReadableError' || e.name === 'AbortError') this.fail('camera_in_use', e.message);
      else this.fail('camera_denied', e.message);
      return null;
    }
    // never an infrared or virtual camera by default, when a real one exists
    const label = this.stream.getVideoTracks()[0]?.label || '';
    if (!deviceId && NOT_A_FACE_CAMERA.test(label)) {
      const other = (await this.cameras()).find((d) => !NOT_A_FACE_CAMERA.test(d.label));
      if (other) {
        this.stopCamera();
        return this.openCamera(facing, other.deviceId);
      }
    }
    return this.stream;
  }

  async cameras() {
    const devices = await navigator.mediaDevices.enumerateDevices().catch(() => []);
    return devices.filter((d) => d.kind === 'videoinput');
  }

  stopCamera() {
    if (this.stream) this.stream.getTracks().forEach((t) => t.stop());
    this.stream = null;
  }

  // No camera here: hand off to a phone with a QR code of this page. The
  // session accepts one device key, so the link works on one device only.
  async noCamera() {
    const url = new URL(location.href);
    url.searchParams.set('session', this.session || '');
    url.searchParams.delete('autostart');
    const svg = await this.call('qr', { text: url.href }).catch(() => '');
    this.fail('no_camera');
    const b = this.$('#body');
    const qr = document.createElement('div');
    qr.className = 'qr';
    qr.setAttribute('role', 'img');
    qr.setAttribute('aria-label', this.t('error_no_camera'));
    qr.innerHTML = svg;
    const link = document.createElement('p');
    link.className = 'handoff';
    link.textContent = `${this.t('handoff_link')} ${url.href}`;
    b.prepend(qr, link);
  }

  // ---- stage 2: selfie with guidance --------------------------------------

  async selfie(deviceId) {
    this.setState('selfie');
    this.say(this.t('selfie_instructions'));
    const stream = await this.openCamera('user', deviceId);
    if (!stream) return;
    const b = this.body(`<h3>${this.t('selfie_title')}</h3><div class="stage">
      <video playsinline muted autoplay></video>
      <svg class="overlay" viewBox="0 0 300 400" preserveAspectRatio="xMidYMid slice" aria-hidden="true"><ellipse cx="150" cy="190" rx="95" ry="130"/></svg>
      </div><div id="controls"></div>`);
    this.video = b.querySelector('video');
    this.video.srcObject = stream;
    await this.video.play().catch(() => {});
    if ((await this.cameras()).length > 1) {
      b.querySelector('#controls').append(this.button(this.t('selfie_switch_camera'), 'secondary', () => this.switchCamera()));
    }
    // yaw of the good frames in a row so far
    let good = [];
    const deadline = performance.now() + SELFIE_TIMEOUT_MS;
    this.frameLoop('selfie', async (bitmap) => {
      const report = await this.call('analyze', { bitmap }, [bitmap]);
      const hint = this.hintFor(report.faces);
      this.$('svg.overlay').dataset.good = String(!hint);
      good = hint ? [] : [...good, report.faces[0].quality.yaw].slice(-GOOD_FRAMES_TO_START);
      const steady = good.length >= GOOD_FRAMES_TO_START && Math.max(...good) - Math.min(...good) <= STEADY_YAW_DEG;
      this.say(hint ? this.t(hint) : this.t('hint_hold_still'));
      // challenge() stops this loop first, so the loop's own error handling
      // no longer applies: its failures (device key refused, eye model
      // tampered) are reported here
      if (steady) return this.challenge().catch((e) => this.fail(e.code || 'internal', e.message));
      if (performance.now() > deadline) this.fail('no_face_found');
    });
  }

  async switchCamera() {
    const all = await this.cameras();
    const current = this.stream?.getVideoTracks()[0]?.getSettings().deviceId;
    const i = all.findIndex((d) => d.deviceId === current);
    const next = all[(i + 1) % all.length];
    this.stopLoop();
    this.stopCamera();
    await this.selfie(next?.deviceId);
  }

  // The plain-language hint for a frame, or null when the face is usable.
  hintFor(faces) {
    if (!faces.length) return 'hint_no_face';
    if (faces.length > 1) return 'hint_several_faces';
    const reasons = faces[0].quality.reasons;
    if (!reasons.length) return null;
    // the most actionable problem first
    const order = ['face_cut_off', 'face_too_small', 'face_too_close', 'too_dark', 'too_bright', 'face_occluded', 'not_frontal', 'head_tilted', 'blurry', 'low_contrast'];
    const first = order.find((r) => reasons.includes(r)) || reasons[0];
    return `hint_${first}`;
  }

  // Sends frames to the worker one at a time: while the worker is busy,
  // camera frames are skipped, so the view never stutters and the frame
  // rate adapts to the device.
  frameLoop(name, onFrame) {
    this.stopLoop();
    const loop = { name, stopped: false };
    this.loop = loop;
    const tick = async () => {
      if (loop.stopped) return;
      const v = this.video;
      if (v && v.readyState >= 2 && v.videoWidth) {
        const scale = Math.min(1, FRAME_WIDTH / v.videoWidth);
        try {
          const bitmap = await createImageBitmap(v, { resizeWidth: Math.round(v.videoWidth * scale), resizeHeight: Math.round(v.videoHeight * scale) });
          if (loop.stopped) return bitmap.close();
          this.framesProcessed++;
          this.dataset.frames = String(this.framesProcessed);
          await onFrame(bitmap);
        } catch (e) {
          if (!loop.stopped) return this.fail(e.code || 'internal', e.message);
        }
      }
      if (!loop.stopped) this.rafId = requestAnimationFrame(tick);
    };
    this.rafId = requestAnimationFrame(tick);
  }

  stopLoop() {
    if (this.loop) this.loop.stopped = true;
    if (this.rafId) cancelAnimationFrame(this.rafId);
  }

  // ---- stage 3: active liveness -------------------------------------------

  async challenge() {
    this.stopLoop();
    const session = this.session;
    if (!session) throw Object.assign(new Error('no session attribute'), { code: 'session' });
    // the device key is made now and registered once: the server reveals the
    // nonce and the challenge seed only to that key
    const publicKey = await this.call('newSession');
    const { session_config: config } = await this.api(`/v1/sessions/${encodeURIComponent(session)}/device-key`, JSON.stringify({ public_key: publicKey }));
    if (config.escrow_public_key && !(await this.askEscrowConsent())) config.escrow_public_key = null;
    const steps = await this.call('begin', { config });
    this.setState('challenge');
    const list = this.$('#controls');
    list.innerHTML = `<ol class="steps" aria-label="${this.t('challenge_title')}"></ol><div class="timer" aria-hidden="true"><div></div></div><p id="time-left" class="sub"></p>`;
    const ol = list.querySelector('ol');
    steps.forEach((s, i) => {
      const li = document.createElement('li');
      li.textContent = this.t('challenge_step_of', { n: i + 1, total: steps.length });
      ol.append(li);
    });
    const started = performance.now();
    let stepStarted = started;
    let current = null;
    let finished = false;
    const finish = async () => {
      if (finished) return;
      finished = true;
      this.stopLoop();
      await this.submit();
    };
    // the outer time limit: even if no frame with a face ever arrives
    this.after(steps.length * STEP_LIMIT_MS + CHALLENGE_SLACK_MS, () => finish().catch((e) => this.fail(e.code || 'internal', e.message)));
    this.frameLoop('challenge', async (bitmap) => {
      const tMs = Math.round(performance.now() - started);
      const u = await this.call('challengeFrame', { bitmap, tMs }, [bitmap]);
      if (u.current_step !== current) {
        current = u.current_step;
        stepStarted = performance.now();
      }
      [...ol.children].forEach((li, i) => {
        li.dataset.done = String(i < u.passed.length);
        li.dataset.current = String(i === u.passed.length && !u.complete);
      });
      const left = Math.max(0, STEP_LIMIT_MS - (performance.now() - stepStarted));
      list.querySelector('.timer > div').style.width = `${(100 * left) / STEP_LIMIT_MS}%`;
      this.$('#time-left').textContent = this.t('challenge_time_left', { seconds: Math.ceil(left / 1000) });
      // frames that do not count towards the challenge say why
      const hint = u.faces.length === 0 ? 'hint_no_face' : u.faces.length > 1 ? 'hint_several_faces' : u.face_cut_off ? 'hint_face_cut_off' : null;
      this.say(hint ? this.t(hint) : this.guidance(u, current, performance.now() - stepStarted));
      if (u.complete || u.failure) await finish();
    });
  }

  // What to do now: the current step, with a hint when the turn is going
  // wrong or a blink has not counted for a while (www/guidance.js).
  guidance(u, current, stepMs) {
    if (!current) return this.t('step_done');
    const key = challengeHint(u, current, stepMs);
    this.dataset.guidance = key || '';
    const step = this.t(`step_${current}`);
    return key && HINT_REPLACES_STEP.has(key) ? this.t(key) : key ? `${this.t(key)} ${step}` : step;
  }

  askEscrowConsent() {
    if (this.autostart) return Promise.resolve(false);
    return new Promise((resolve) => {
      const box = document.createElement('div');
      box.setAttribute('role', 'group');
      box.innerHTML = `<h3></h3><p></p>`;
      box.querySelector('h3').textContent = this.t('consent_title');
      box.querySelector('p').textContent = this.t('consent_text');
      const done = (yes) => () => {
        box.remove();
        resolve(yes);
      };
      box.append(this.button(this.t('consent_yes'), 'secondary', done(true)), this.button(this.t('consent_no'), 'primary', done(false)));
      this.$('#controls').append(box);
      box.querySelector('button.primary').focus();
    });
  }

  // ---- stage 4: signed result to the server -------------------------------

  async submit() {
    this.setState('submitting');
    this.say(this.t('submitting'));
    let wire;
    try {
      wire = await this.call('finish', { widgetVersion: WIDGET_VERSION });
    } catch (e) {
      // no frontal face was ever matched: nothing to sign
      return this.fail('face_lost', e.message);
    }
    this.stopCamera();
    const session = this.session;
    const answer = await this.api(`/v1/sessions/${encodeURIComponent(session)}/result`, wire);
    await this.call('clear');
    this.teardownMedia();
    const result = answer.decision === 'pass' ? 'pass' : 'fail';
    this.setAttribute('result', result);
    this.setAttribute('reason', answer.reason);
    this.setState('done');
    const b = this.body(`<p class="result" data-result="${result}"></p><p id="reason"></p>`);
    b.querySelector('.result').textContent = this.t(result === 'pass' ? 'result_pass' : 'result_fail');
    b.querySelector('#reason').textContent = this.reasonText(answer.reason);
    this.say(`${this.t(result === 'pass' ? 'result_pass' : 'result_fail')} ${this.reasonText(answer.reason)}`, result === 'pass' ? 'ok' : 'error');
    if (result === 'fail') b.append(this.retryButton());
    this.dispatchEvent(new CustomEvent('facegate-result', { detail: { result: JSON.parse(wire), answer }, bubbles: true, composed: true }));
  }

  reasonText(code) {
    const key = `reason_${code}`;
    return STRINGS.en[key] ? this.t(key) : this.t('reason_other', { code });
  }

  // A retry needs a fresh session (the nonce is single-use): the host page
  // listens for facegate-retry and sets a new `session`.
  retryButton() {
    return this.button(this.t('retry'), 'primary', () => this.dispatchEvent(new CustomEvent('facegate-retry', { bubbles: true, composed: true })));
  }

  fail(code, detail) {
    if (this.state === 'error' || this.state === 'done') return;
    this.stopLoop();
    this.teardownMedia();
    if (this.worker) this.call('clear').catch(() => {});
    this.setAttribute('error', code);
    this.setState('error');
    const key = STRINGS.en[`error_${code}`] ? `error_${code}` : 'error_other';
    this.say(`${this.t('error_title')}: ${this.t(key, { code })}`, 'error');
    const b = this.body('');
    b.append(this.retryButton());
    if (detail) console.warn(`facegate: ${code}: ${detail}`);
  }

  teardownMedia() {
    this.stopLoop();
    this.stopCamera();
    for (const id of this.timers) clearTimeout(id);
    this.timers.clear();
    if (this.video) this.video.srcObject = null;
  }

  teardown() {
    this.teardownMedia();
    if (this.worker) this.worker.terminate();
    this.worker = null;
  }
}

if (!customElements.get('face-verify')) customElements.define('face-verify', FaceVerifyElement);
