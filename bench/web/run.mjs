// Runs bench.mjs in Debian's headless Chromium: serves target/www's wasm and
// models, onnxruntime-web's dist folder and the real frames `cargo xtask
// bench` decoded for its native run, from one cross-origin-isolated
// loopback origin, once with onnxruntime-web single-threaded and once with
// two threads. Prints a table
// and writes target/bench/web.json. `cargo xtask bench` runs it.
//
//   node bench/web/run.mjs --frames target/bench/frames [--reps N]

import { chromium, BASE_FLAGS, chromiumPath, root, www } from '../../tests/browser/harness.mjs';
import { readFile, writeFile, mkdir } from 'node:fs/promises';
import { existsSync } from 'node:fs';
import http from 'node:http';
import path from 'node:path';
import { fileURLToPath } from 'node:url';

const here = path.dirname(fileURLToPath(import.meta.url));
// FACEGATE_BENCH_WWW: bench another build of the site (say, a wasm built
// with other target features) instead of target/www
const site = process.env.FACEGATE_BENCH_WWW || www;
// the frames `cargo xtask bench` made for its native run (list.json names
// them), so both sides time the very same pictures
const argValue = (name) => (process.argv.includes(name) ? process.argv[process.argv.indexOf(name) + 1] : undefined);
const frameDir = argValue('--frames') && path.resolve(argValue('--frames'));
const reps = Number(argValue('--reps')) || 3;

const TYPES = { '.html': 'text/html', '.mjs': 'text/javascript', '.js': 'text/javascript', '.wasm': 'application/wasm', '.json': 'application/json', '.png': 'image/png', '.jpg': 'image/jpeg', '.onnx': 'application/octet-stream' };

function serve(routes) {
  const server = http.createServer(async (req, res) => {
    const url = new URL(req.url, 'http://x');
    const route = routes.find(([prefix]) => url.pathname.startsWith(prefix));
    const file = route && path.join(route[1], decodeURIComponent(url.pathname.slice(route[0].length)));
    if (!file || !file.startsWith(route[1])) return res.writeHead(404).end();
    try {
      const body = await readFile(file);
      res.writeHead(200, {
        'content-type': TYPES[path.extname(file)] || 'application/octet-stream',
        // cross-origin isolation: lets onnxruntime-web use SharedArrayBuffer threads
        'cross-origin-opener-policy': 'same-origin',
        'cross-origin-embedder-policy': 'require-corp',
        'cache-control': 'no-store',
      });
      res.end(body);
    } catch {
      res.writeHead(404).end();
    }
  });
  return new Promise((resolve) => server.listen(0, '127.0.0.1', () => resolve(server)));
}

async function main() {
  const ortDist = path.join(here, 'node_modules/onnxruntime-web/dist');
  if (!existsSync(ortDist)) throw new Error('onnxruntime-web missing: npm ci in bench/web (cargo xtask bench does it)');
  if (!existsSync(path.join(site, 'pkg/facegate_bg.wasm'))) throw new Error(`${site} missing: cargo xtask build-www`);
  if (!frameDir || !existsSync(path.join(frameDir, 'list.json'))) throw new Error('--frames DIR with list.json missing: run through cargo xtask bench');
  const server = await serve([
    ['/pkg/', path.join(site, 'pkg') + '/'],
    ['/models/', path.join(site, 'models') + '/'],
    ['/ort/', ortDist + '/'],
    ['/frames/', frameDir + '/'],
    ['/', here + '/'],
  ]);
  const origin = `http://127.0.0.1:${server.address().port}`;
  const browser = await chromium.launch({ executablePath: chromiumPath, headless: true, args: [...BASE_FLAGS, '--enable-precise-memory-info'] });
  const runs = [];
  try {
    for (const threads of [1, 2]) {
      const page = await browser.newPage();
      const log = [];
      page.on('console', (m) => log.push(m.text()));
      page.on('pageerror', (e) => log.push(e.message));
      await page.goto(`${origin}/bench.html?reps=${reps}&threads=${threads}`);
      await page.waitForFunction(() => window.benchResult, null, { timeout: 20 * 60 * 1000, polling: 1000 });
      const r = await page.evaluate(() => window.benchResult);
      if (r.error) throw new Error(`bench page failed: ${r.error}\n${log.join('\n')}`);
      runs.push(r);
      await page.close();
    }
  } finally {
    await browser.close();
    server.close();
  }
  const sizes = JSON.parse(await readFile(path.join(site, 'sizes.json'), 'utf8'));
  const result = { date: new Date().toISOString().slice(0, 10), runs, sizes };
  await mkdir(path.join(root, 'target/bench'), { recursive: true });
  await writeFile(path.join(root, 'target/bench/web.json'), JSON.stringify(result, null, 2));

  const [one, two] = runs;
  const f = (x, d = 1) => (x == null ? '-' : x.toFixed(d));
  console.log(`browser: ${one.user_agent}`);
  console.log(`frames: ${one.frames} real frames ${one.frame_size.join('x')} x ${reps} reps, medians; onnxruntime-web ${one.ort_version}, cross-origin isolated: ${one.cross_origin_isolated}`);
  console.log('');
  console.log(`${'model'.padEnd(22)}${'runs/frame'.padStart(11)}${'facegate ms'.padStart(13)}${'ort 1T ms'.padStart(11)}${'ratio'.padStart(8)}${'ort 2T ms'.padStart(11)}${'ratio'.padStart(8)}${'max |diff|'.padStart(12)}`);
  for (const [name, m] of Object.entries(one.per_model)) {
    const m2 = two.per_model[name] || {};
    console.log(`${name.padEnd(22)}${String(m.runs_per_frame).padStart(11)}${f(m.facegate_ms, 2).padStart(13)}${f(m.ort_ms, 2).padStart(11)}${f(m.ratio, 2).padStart(8)}${f(m2.ort_ms, 2).padStart(11)}${f(m2.ratio, 2).padStart(8)}${(m.max_abs_output_diff == null ? "-" : m.max_abs_output_diff.toExponential(1)).padStart(12)}`);
  }
  console.log('max |diff|: largest difference between the two runtimes\' first outputs on the same input (- for the embedder: its raw output never leaves facegate\'s wasm)');
  console.log('');
  console.log(`facegate stages (ms, with pre/post-processing): ${Object.entries(one.facegate_stage_ms).map(([k, v]) => `${k} ${f(v, 2)}`).join(', ')}`);
  console.log(`every stage on every frame (median): facegate analyzeFrame ${f(one.facegate_frame_ms, 1)} ms; onnxruntime-web models only ${f(one.ort_frame_models_only_ms, 1)} ms (1 thread), ${f(two.ort_frame_models_only_ms, 1)} ms (2 threads); ratio_every_stage=${f(one.ratio_every_stage, 3)}`);
  console.log(`end to end per frame (mean): facegate challengeFrame as scheduled ${f(one.facegate_challenge_frame_mean_ms, 1)} ms; onnxruntime-web every model on every frame ${f(one.ort_frame_models_only_mean_ms, 1)} ms (1 thread), ${f(two.ort_frame_models_only_mean_ms, 1)} ms (2 threads)`);
  console.log(`models ready: facegate ${f(one.facegate_models_ready_ms, 0)} ms (wasm + ${Object.keys(one.per_model).length} models), onnxruntime-web sessions ${f(one.ort_sessions_ready_ms, 0)} ms`);
  console.log(`challenge: ${f(one.challenge_fps, 1)} frames/s sustained; challenge end to signed result ${f(one.challenge_end_to_result_ms, 1)} ms`);
  console.log(`challenges run: ${one.challenge_steps.turn_first.join(', ')} and ${one.challenge_steps.blink_first.join(', ')}; end to signed result ${f(one.challenge_end_to_result_ms, 1)} and ${f(one.blink_first_end_to_result_ms, 1)} ms`);
  for (const [name, c] of [['read in the blink step (evidence waits)', one.frames_in_blink_step], ['read in a turn step (the same frames)', one.same_frames_in_turn_step]]) {
    console.log(`challenge frames ${name}: ${c.frames} frames, mean ${f(c.mean_ms, 1)} ms, p90 ${f(c.p90_ms, 1)} ms, max ${f(c.max_ms, 1)} ms`);
  }
  console.log(`ratio_blink_step_p90=${f(one.ratio_blink_step_p90, 3)}`);
  console.log(`memory: facegate wasm linear memory ${(one.facegate_wasm_memory_bytes / 1048576).toFixed(1)} MiB (peak: it only grows); JS heap ${one.js_heap_used_bytes ? (one.js_heap_used_bytes / 1048576).toFixed(1) + ' MiB' : '-'}`);
  console.log(`first visit download (brotli): ${(sizes.before_first_interaction.brotli / 1e6).toFixed(2)} MB before the first interaction, ${(sizes.total.brotli / 1e6).toFixed(2)} MB with the embedder and the eye model (in the background)`);
  console.log(`ratio_end_to_end_2threads=${f(one.facegate_challenge_frame_mean_ms / two.ort_frame_models_only_mean_ms, 3)}`);
  console.log(`ratio_end_to_end=${f(one.ratio_end_to_end, 3)}`);
}

main().catch((e) => {
  console.error(e);
  process.exit(1);
});
