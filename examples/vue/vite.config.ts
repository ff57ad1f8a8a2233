import { defineConfig } from 'vite';
import vue from '@vitejs/plugin-vue';

export default defineConfig({
  // <face-verify> is a web component, not a Vue component
  plugins: [vue({ template: { compilerOptions: { isCustomElement: (tag) => tag === 'face-verify' } } })],
  // the widget starts a module worker and loads its wasm by URLs relative to
  // its own files: left un-pre-bundled, Vite emits both beside the bundle
  optimizeDeps: { exclude: ['facegate-widget'] },
  worker: { format: 'es' },
});
