import { defineConfig } from 'vite';

export default defineConfig({
  // the widget starts a module worker and loads its wasm by URLs relative to
  // its own files: left un-pre-bundled, Vite emits both beside the bundle
  optimizeDeps: { exclude: ['facegate-widget'] },
  worker: { format: 'es' },
});
