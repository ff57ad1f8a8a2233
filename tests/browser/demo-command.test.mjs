// The README's first command, exactly as a new user runs it: `cargo xtask
// demo` from this checkout (FACEGATE_ADDR on a free port), then the page in
// headless Chromium until the widget reaches its first interactive state.
// Inside `cargo xtask test` everything is already built, so this checks
// that the command's own build steps, set-up and server start work; a
// broken demo (the first thing every new user sees) fails the suite.

import { test } from 'node:test';
import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import { launch, widgetState, freePort, waitFor, root } from './harness.mjs';

// The command rebuilds target/www (wasm-bindgen, brotli of every file);
// cold it would build everything, which a fresh machine's test run has
// already done by now.
const START_MS = 15 * 60 * 1000;

test('`cargo xtask demo` serves the demo page and the widget reaches id-capture', { timeout: START_MS + 120000 }, async () => {
  const port = await freePort();
  const addr = `127.0.0.1:${port}`;
  const output = [];
  // its own process group, so stopping it stops cargo, xtask and the server
  const demo = spawn('cargo', ['xtask', 'demo'], { cwd: root, env: { ...process.env, FACEGATE_ADDR: addr }, stdio: ['ignore', 'pipe', 'pipe'], detached: true });
  demo.stdout.on('data', (d) => output.push(d.toString()));
  demo.stderr.on('data', (d) => output.push(d.toString()));
  const exited = new Promise((r) => demo.once('exit', (code) => r(code)));
  let browser;
  try {
    const up = waitFor(`http://${addr}/index.html`, START_MS).then(() => 'up');
    const first = await Promise.race([up, exited.then((code) => `exited ${code}`)]);
    assert.equal(first, 'up', `cargo xtask demo ${first} before serving:\n${output.join('').slice(-4000)}`);
    assert.match(output.join(''), new RegExp(`open http://${addr.replace(/\./g, '\\.')}/`), 'the command tells the user where to go');
    let page;
    ({ browser, page } = await launch({ camera: 'deny' }));
    await page.goto(`http://${addr}/`);
    // the demo order form: the user starts the check with its button
    await page.locator('button[type=submit]').click();
    const end = await widgetState(page, ['id-capture', 'error'], 90000);
    assert.equal(end.state, 'id-capture', `${end.error}: ${end.status}`);
  } finally {
    await browser?.close();
    try {
      process.kill(-demo.pid, 'SIGTERM');
    } catch {
      // already gone
    }
    await exited;
  }
});
