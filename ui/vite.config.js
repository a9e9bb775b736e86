import { defineConfig } from 'vite';

// Preact's JSX without a plugin: esbuild's automatic runtime is enough.
export default defineConfig({
  esbuild: { jsx: 'automatic', jsxImportSource: 'preact' },
  build: { outDir: 'dist', emptyOutDir: true, assetsInlineLimit: 0, sourcemap: false },
  server: { proxy: { '/api': 'http://127.0.0.1:7878' } },
});
