// What the esbuild bundle leaves to node_modules: PGlite (wasm and data files beside its module) and
// pino (transport workers loaded by path); the optional native add-ons ws and pg try to load and do
// without. scripts/bundle.mjs keeps them external; scripts/release.mjs ships them beside the bundle.
export const BUNDLE_EXTERNAL = [
  '@electric-sql/pglite',
  'pino',
  'pino-pretty',
  'bufferutil',
  'utf-8-validate',
  'pg-native',
];
