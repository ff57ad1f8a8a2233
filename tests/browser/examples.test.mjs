// The widget as carriers' web teams embed it: the npm package (`npm pack`
// of the built widget) installed from its tarball into the plain HTML,
// React and Vue examples, each built by its own pinned toolchain (`cargo
// xtask test` does that in target/examples/<name>), then each built site
// served by the real carrier server and loaded in headless Chromium until
// <face-verify> reaches id-capture: the package's worker, wasm and models
// all resolve from where the bundler put them.

import { test } from 'node:test';
import assert from 'node:assert/strict';
import { existsSync, readdirSync } from 'node:fs';
import path from 'node:path';
import { startServer, launch, widgetState, root } from './harness.mjs';

for (const name of ['html', 'react', 'vue']) {
  test(`the ${name} example, built from the packed widget, reaches id-capture`, { timeout: 120000 }, async () => {
    const site = path.join(root, 'target/examples', name, 'dist');
    assert.ok(existsSync(path.join(site, 'index.html')), `${site} missing: the examples are built by cargo xtask test`);
    // the build emitted the widget's wasm and worker as files of the site
    const assets = readdirSync(path.join(site, 'assets'));
    assert.ok(assets.some((f) => f.endsWith('.wasm')), `no wasm among ${assets}`);
    const server = await startServer({ site });
    const { browser, page, requests, consoleLines } = await launch({ camera: 'deny' });
    try {
      await page.goto(`${server.origin}/`);
      const end = await widgetState(page, ['id-capture', 'error'], 90000);
      assert.equal(end.state, 'id-capture', `${end.error}: ${end.status}\n${consoleLines.join('\n')}`);
      // the session came from the (demo) back end and the models from the
      // folder the example copied them to
      assert.match(end.session, /^sess_[0-9a-f]{32}$/);
      assert.ok(requests.some((r) => r.url.includes('/facegate-models/') && r.url.endsWith('.onnx')), 'models fetched from /facegate-models/');
    } finally {
      await browser.close();
      await server.stop();
    }
  });
}
