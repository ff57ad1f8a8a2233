// fetchModels (src/wasm/model_fetch.rs) under Node: the wasm downloads model
// files over real HTTP with the scope's own fetch, follows the bytes with
// progress, and refuses a file whose sha256 is not the manifest's. (Node has
// no Cache API; the browser suite checks the cached second visit.)
import { test, after } from 'node:test';
import assert from 'node:assert/strict';
import { readFileSync, existsSync } from 'node:fs';
import { createRequire } from 'node:module';
import { fileURLToPath } from 'node:url';
import http from 'node:http';
import path from 'node:path';

const root = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '../..');
const fg = createRequire(import.meta.url)(path.join(root, 'target/wasm-node/facegate.js'));
const manifest = JSON.parse(fg.manifestJson());

// the same lookup as the native loader: models/, models/cache/, ../shared/models/<folder>/
function modelFile(entry) {
  const candidates = [path.join(root, 'models', entry.file), path.join(root, 'models/cache', entry.file)];
  if (entry.location.startsWith('shared/')) candidates.push(path.join(root, '../shared/models', entry.location.slice(7), entry.file));
  return candidates.find((p) => existsSync(p));
}

// Serves /good/<file> as shipped and /tampered/<file> with one byte flipped.
const requests = [];
const server = http.createServer((req, res) => {
  requests.push(req.url);
  const [, kind, file] = req.url.split('/');
  const entry = manifest.models.find((m) => m.file === file);
  const found = entry && modelFile(entry);
  if (!found || !['good', 'tampered'].includes(kind)) return res.writeHead(404).end();
  const bytes = readFileSync(found);
  if (kind === 'tampered') bytes[bytes.length >> 1] ^= 0x5a;
  res.writeHead(200, { 'content-type': 'application/octet-stream' });
  res.end(bytes);
});
await new Promise((r) => server.listen(0, '127.0.0.1', r));
const base = (kind) => `http://127.0.0.1:${server.address().port}/${kind}/`;
after(() => server.close());

const first = fg.requiredModels().filter((n) => !fg.deferredModels().includes(n));

test('fetchModels downloads the models the widget starts with, byte for byte, with progress up to the manifest total', async () => {
  const progress = [];
  const models = await fg.fetchModels(base('good'), first, (loaded, total, fromCache) => progress.push({ loaded, total, fromCache }));
  let total = 0;
  for (const name of first) {
    const entry = manifest.models.find((m) => m.name === name);
    assert.deepEqual(Buffer.from(models[name]), readFileSync(modelFile(entry)), name);
    total += entry.bytes;
  }
  assert.ok(progress.length >= first.length, `${progress.length} progress calls`);
  assert.ok(progress.every((p, i) => p.total === total && p.fromCache === false && (i === 0 || p.loaded >= progress[i - 1].loaded)));
  assert.equal(progress.at(-1).loaded, total);
  // and the models load: the pipeline checks the hashes again
  assert.ok(fg.FaceGate.withoutDeferred(models).modelHashes());
});

test('a model file whose sha256 is not the manifest\'s is refused with model_integrity', async () => {
  const name = fg.embedderModel();
  await assert.rejects(fg.fetchModels(base('tampered'), [name]), (e) => {
    assert.match(e.message, /^model_integrity: /);
    assert.ok(e.message.includes(name), e.message);
    return true;
  });
});

test('missing files, unreachable servers and unknown names are typed errors', async () => {
  await assert.rejects(fg.fetchModels(`${base('nowhere')}`, [first[0]]), /^Error: model_download: .*HTTP 404|model_download: .*HTTP 404/);
  await assert.rejects(fg.fetchModels('http://127.0.0.1:9/models/', [first[0]]), /model_download: /);
  await assert.rejects(fg.fetchModels(base('good'), ['no-such-model']), /unknown_model: /);
  await assert.rejects(fg.fetchModels('not a url', [first[0]]), /model_download: .*model base URL/);
});
