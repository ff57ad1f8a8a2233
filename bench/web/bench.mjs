// facegate's wasm pipeline and onnxruntime-web on the same frames and the
// same model files, in one page of one browser. run.mjs serves this page
// (cross-origin isolated, so onnxruntime-web may use threads) and reads
// window.benchResult.
//
// What is compared:
// - per model: facegate's tract run vs onnxruntime-web's session.run on the
//   identical input tensor (facegate records each model input it builds
//   from a real frame; ORT gets exactly those floats) — also checks that
//   both runtimes compute the same outputs;
// - end to end per frame (ratio_end_to_end): the widget's challenge frame
//   (challengeFrame: RGBA in, the mesh on every frame, the detector,
//   passive liveness and align + embed (frontal) on every fourth, the mesh
//   following the face in between; mean over the frames in order, in a
//   turn step) vs
//   onnxruntime-web running every model on every frame, as a pipeline
//   without that schedule would; ORT's
//   side is model time only (its pre/post-processing would be JS on top);
// - every stage on every frame (ratio_every_stage): facegate's analyzeFrame
//   with match (decode RGBA, detect, quality, mesh, two liveness models,
//   align, embed with flip, match) vs ORT replaying that frame's model runs;
// - the same challenge frames in a blink step, where passive liveness and
//   the embedding wait until the step is over (ratio_blink_step_p90: the
//   slowest tenth of frames, which a short blink can fall between, against
//   the turn step's).

import init, { FaceGate, manifestJson, requiredModels } from './pkg/facegate.js';
import * as ort from './ort/ort.wasm.min.mjs';

const params = new URLSearchParams(location.search);
const REPS = Number(params.get('reps') || 3);
const THREADS = Number(params.get('threads') || 1);
const status = (t) => { document.getElementById('status').textContent = t; };

const median = (a) => {
  if (!a.length) return null;
  const s = [...a].sort((x, y) => x - y);
  return s[Math.floor(s.length / 2)];
};

async function fetchBytes(url) {
  const r = await fetch(url);
  if (!r.ok) throw new Error(`${url}: HTTP ${r.status}`);
  return new Uint8Array(await r.arrayBuffer());
}

async function imageData(url) {
  const bmp = await createImageBitmap(await (await fetch(url)).blob());
  const c = new OffscreenCanvas(bmp.width, bmp.height);
  const ctx = c.getContext('2d');
  ctx.drawImage(bmp, 0, 0);
  return ctx.getImageData(0, 0, bmp.width, bmp.height);
}

async function bench() {
  const list = await (await fetch('./frames/list.json')).json();
  const pageStart = performance.timeOrigin;

  // facegate: wasm + models → ready
  const fgStart = performance.now();
  const wasm = await init({ module_or_path: './pkg/facegate_bg.wasm' });
  const manifest = JSON.parse(manifestJson());
  const files = {};
  const models = {};
  for (const name of requiredModels()) {
    const entry = manifest.models.find((m) => m.name === name);
    files[name] = entry.file;
    models[name] = await fetchBytes(`./models/${entry.file}`);
  }
  const fg = new FaceGate(models);
  const fgReadyMs = performance.now() - fgStart;
  const fgReadySincePageLoad = performance.now();

  // onnxruntime-web: same files
  ort.env.wasm.wasmPaths = new URL('./ort/', location.href).href;
  ort.env.wasm.numThreads = THREADS;
  ort.env.wasm.simd = true;
  const ortStart = performance.now();
  const sessions = {};
  for (const name of Object.keys(models)) {
    sessions[name] = await ort.InferenceSession.create(models[name], { executionProviders: ['wasm'], graphOptimizationLevel: 'all' });
  }
  const ortReadyMs = performance.now() - ortStart;

  status('frames');
  fg.setReferenceImage(await fetchBytes(`./frames/${list.reference}`));
  const frames = [];
  for (const f of list.frames) frames.push(await imageData(`./frames/${f}`));

  // warm-up both
  for (const im of frames.slice(0, 2)) fg.analyzeFrame(im.width, im.height, im.data, true);

  // facegate per stage and per model: benchFrame runs the frame stage by
  // stage and records every model input it builds
  status('facegate stages');
  const stageTimes = {};
  const modelTimes = {};
  const recorded = [];
  for (let r = 0; r < REPS; r++) {
    for (const im of frames) {
      const b = fg.benchFrame(im.width, im.height, im.data);
      for (const [k, v] of Object.entries(b.stages)) (stageTimes[k] ||= []).push(v);
      for (const run of b.runs) (modelTimes[run.model] ||= []).push(run.ms);
      if (r === 0) recorded.push(b.runs);
    }
  }
  status('facegate end to end');
  const fgFrame = [];
  for (let r = 0; r < REPS; r++) {
    for (const im of frames) {
      const s = performance.now();
      fg.analyzeFrame(im.width, im.height, im.data, true);
      fgFrame.push(performance.now() - s);
    }
  }

  status('onnxruntime-web');
  const feeds = (name, run) => ({ [sessions[name].inputNames[0]]: new ort.Tensor('float32', run.input, run.dims) });
  // warm-up every session on its first recorded input
  const firstRun = {};
  for (const runs of recorded) for (const run of runs) firstRun[run.model] ||= run;
  for (const [name, run] of Object.entries(firstRun)) await sessions[name].run(feeds(name, run));
  const ortModelTimes = {};
  const agreement = {};
  const ortFrame = [];
  for (let r = 0; r < REPS; r++) {
    for (const runs of recorded) {
      const frameStart = performance.now();
      for (const run of runs) {
        const s = performance.now();
        const out = await sessions[run.model].run(feeds(run.model, run));
        (ortModelTimes[run.model] ||= []).push(performance.now() - s);
        if (r === 0) {
          if (!run.output) continue; // the embedder: facegate never returns a raw embedding
          const o = out[sessions[run.model].outputNames[0]].data;
          let diff = 0;
          for (let i = 0; i < Math.min(o.length, run.output.length); i++) diff = Math.max(diff, Math.abs(o[i] - run.output[i]));
          agreement[run.model] = Math.max(agreement[run.model] || 0, diff);
        }
      }
      ortFrame.push(performance.now() - frameStart);
    }
  }

  // a whole challenge, twice over the same frames: once waiting for a
  // turn (each detection frame runs passive liveness and the embedder at
  // once) and once waiting for a blink (those wait until the step is over,
  // MAX_DEFERRED in src/session.rs, so that a short blink does not fall
  // into a slow frame); frames per second sustained, each frame's time,
  // then the time from the last frame to the signed result
  const pct = (a, q) => [...a].sort((x, y) => x - y)[Math.min(a.length - 1, Math.floor(q * a.length))];
  const challenge = (firstStep) => {
    let steps = null;
    for (let i = 0; ; i++) {
      fg.newSession();
      steps = fg.beginChallenge(JSON.stringify({
        session_id: 'bench', nonce: '00'.repeat(16), challenge_seed: i.toString(16).padStart(2, '0').repeat(16), transform_key: 'ab'.repeat(32),
        match_threshold: 0.8, liveness_threshold: 0.05,
      }));
      if (steps[0] === firstStep) break;
    }
    // each frame's time and the step it was read in (the step current
    // when it arrived: the real frames perform steps, so the step moves on)
    const times = [];
    const readIn = [];
    let step = steps[0];
    const start = performance.now();
    let t = 0;
    for (let r = 0; r < REPS; r++) {
      for (const im of frames) {
        const s = performance.now();
        const u = fg.challengeFrame(im.width, im.height, im.data, t);
        times.push(performance.now() - s);
        readIn.push(step);
        step = u.current_step;
        t += 66;
      }
    }
    const fps = times.length / ((performance.now() - start) / 1000);
    const finishStart = performance.now();
    const signed = fg.finishChallenge('bench', Date.now());
    return { steps, times, readIn, fps, endToResultMs: performance.now() - finishStart, signed };
  };
  status('challenge');
  const turnFirst = challenge('turn_left');
  const blinkFirst = challenge('blink');
  const challengeFrame = turnFirst.times;
  const challengeFps = turnFirst.fps;
  const challengeEndToResultMs = turnFirst.endToResultMs;
  const signed = turnFirst.signed;
  // the same frames side by side: those read in the blink step in one run
  // and in another step in the other
  const inBlink = [];
  const elsewhere = [];
  for (let i = 0; i < turnFirst.times.length; i++) {
    for (const [a, b] of [[turnFirst, blinkFirst], [blinkFirst, turnFirst]]) {
      if (a.readIn[i] === 'blink' && b.readIn[i] && b.readIn[i] !== 'blink') {
        inBlink.push(a.times[i]);
        elsewhere.push(b.times[i]);
      }
    }
  }
  const frameStats = (times) => ({ frames: times.length, mean_ms: times.reduce((x, y) => x + y, 0) / Math.max(1, times.length), p90_ms: pct(times, 0.9), max_ms: Math.max(...times) });

  const perModel = {};
  for (const name of Object.keys(modelTimes)) {
    const a = median(modelTimes[name]);
    const b = median(ortModelTimes[name] || []);
    perModel[name] = { file: files[name], facegate_ms: a, ort_ms: b, ratio: b ? a / b : null, max_abs_output_diff: agreement[name] ?? null, runs_per_frame: recorded[0].filter((x) => x.model === name).length };
  }
  const stages = Object.fromEntries(Object.entries(stageTimes).map(([k, v]) => [k, median(v)]));
  const fgMs = median(fgFrame);
  const ortMs = median(ortFrame);
  // a scheduled frame's cost varies with what it runs: the mean is what a
  // sustained challenge pays per frame
  const mean = (a) => a.reduce((x, y) => x + y, 0) / a.length;
  const challengeMs = mean(challengeFrame);
  const ortMeanMs = mean(ortFrame);
  return {
    user_agent: navigator.userAgent,
    cross_origin_isolated: self.crossOriginIsolated,
    ort_version: ort.env.versions?.web ?? null,
    ort_threads: THREADS,
    frames: list.frames.length,
    frame_size: [frames[0].width, frames[0].height],
    reps: REPS,
    facegate_models_ready_ms: fgReadyMs,
    facegate_models_ready_since_page_load_ms: fgReadySincePageLoad,
    ort_sessions_ready_ms: ortReadyMs,
    facegate_stage_ms: stages,
    per_model: perModel,
    facegate_frame_ms: fgMs,
    ort_frame_models_only_ms: ortMs,
    ratio_every_stage: fgMs / ortMs,
    facegate_challenge_frame_mean_ms: challengeMs,
    ort_frame_models_only_mean_ms: ortMeanMs,
    ratio_end_to_end: challengeMs / ortMeanMs,
    challenge_fps: challengeFps,
    // the same frames read in a blink step (evidence waiting) and in a turn step
    challenge_steps: { turn_first: turnFirst.steps, blink_first: blinkFirst.steps },
    frames_in_blink_step: frameStats(inBlink),
    same_frames_in_turn_step: frameStats(elsewhere),
    ratio_blink_step_p90: pct(inBlink, 0.9) / pct(elsewhere, 0.9),
    blink_first_end_to_result_ms: blinkFirst.endToResultMs,
    challenge_end_to_result_ms: challengeEndToResultMs,
    signed_result_bytes: signed.length,
    facegate_wasm_memory_bytes: wasm.memory.buffer.byteLength,
    js_heap_used_bytes: performance.memory?.usedJSHeapSize ?? null,
    page_time_origin: pageStart,
  };
}

bench().then(
  (r) => { window.benchResult = r; status('done'); },
  (e) => { window.benchResult = { error: String(e && e.stack || e) }; status(`error: ${e}`); },
);
