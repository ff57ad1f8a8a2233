#!/usr/bin/env node
// facegate-widget-models <dir>: copies the model files this package ships
// into <dir> (a bundler's public folder, or wherever the site serves static
// files from), so that <face-verify models="/that/path/"> finds them. The
// widget checks every file's sha256 against the manifest compiled into its
// wasm before use, so a stale or altered copy is refused, not used.
import { cpSync, mkdirSync, readdirSync } from 'node:fs';
import path from 'node:path';
import { fileURLToPath } from 'node:url';

const dest = process.argv[2];
if (!dest) {
  console.error('usage: facegate-widget-models <directory to copy the model files into>');
  process.exit(2);
}
const from = path.join(path.dirname(fileURLToPath(import.meta.url)), 'models');
mkdirSync(dest, { recursive: true });
const files = readdirSync(from).filter((f) => f.endsWith('.onnx'));
for (const f of files) cpSync(path.join(from, f), path.join(dest, f));
console.log(`facegate-widget-models: ${files.length} model files copied to ${dest}`);
