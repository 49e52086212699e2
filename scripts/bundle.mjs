#!/usr/bin/env node
// Bundles the CLI and daemons with esbuild, straight from the TypeScript sources, into dist/bundle as
// CommonJS, which Node 20 can load with a V8 code cache (bin/mxc.js does; ES modules cannot have one
// before Node 22): mxc.cjs (the command table), one self-contained file per command module
// cli/main.ts imports lazily (build.cjs, submit.cjs, daemons.cjs, …), errors.cjs, the one CliError
// class they share, stdio.cjs, their standard output (cli/stdio.ts), and commander.cjs, which main.ts
// loads when the command line needs it. `mxc --version` loads 60 kB and `mxc build` never loads
// fastify, the agent or commander. Dynamic import()s inside a command file become lazy in-file
// initialisers, so a command evaluates a module (execa, zod schemas) only when it first needs it. The
// files read at run time stay in the package's own layout (migrations, dashboard assets,
// job.schema.json, nixlib, examples), found from the package root as in development. PGlite (wasm and
// data files beside its module) and pino (transport workers loaded by path) load from node_modules;
// optional native add-ons are skipped.
import { readFileSync, rmSync } from 'node:fs';
import { createRequire } from 'node:module';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { build } from 'esbuild';
import ts from 'typescript';
import { BUNDLE_EXTERNAL } from './bundle-external.mjs';

const root = join(dirname(fileURLToPath(import.meta.url)), '..');
const cli = join(root, 'cli');
const out = join(root, 'dist', 'bundle');

// The command modules main.ts loads lazily: each becomes its own file.
const commands = [
  ...new Set(
    [...readFileSync(join(cli, 'main.ts'), 'utf8').matchAll(/import\('\.\/commands\/([\w-]+)\.js'\)/g)].map(
      (m) => m[1],
    ),
  ),
];

/**
 * main.ts's lazy command imports and every import of cli/errors.ts and cli/stdio.ts stay outside, as
 * sibling files (one CliError class, one record of which standard streams were made).
 */
const siblings = {
  name: 'mxc-siblings',
  setup(b) {
    b.onResolve(
      { filter: /^\.\.?\/(commands\/[\w-]+|errors|\.\.\/errors|stdio|\.\.\/stdio)\.js$/ },
      (args) => {
        const file = join(args.resolveDir, args.path.replace(/\.js$/, '.ts'));
        for (const shared of ['errors', 'stdio'])
          if (file === join(cli, `${shared}.ts`) && args.importer !== file)
            return { path: `./${shared}.cjs`, external: true };
        const name = file.startsWith(join(cli, 'commands'))
          ? file.slice(join(cli, 'commands').length + 1, -3)
          : null;
        if (name && args.importer === join(cli, 'main.ts')) return { path: `./${name}.cjs`, external: true };
        return undefined;
      },
    );
  },
};

/**
 * commander is a sibling file too (commander.cjs), which main.ts loads only for the command lines that
 * need it (not a plain `mxc build`, not `mxc version`). A code cache holds the functions that ran in
 * the run that wrote it: inside mxc.cjs, commander would be missing from it for good whenever that
 * first run was one of those, and every later command would compile it again.
 */
const commanderSibling = {
  name: 'mxc-commander-sibling',
  setup(b) {
    b.onResolve({ filter: /^commander$/ }, (args) =>
      args.importer === join(cli, 'main.ts') ? { path: './commander.cjs', external: true } : undefined,
    );
  },
};

/**
 * commander requires node:child_process when it loads, for executable subcommands, which mxc has none
 * of: it gets a stand-in that loads the module on first use. Loading it costs every command ~2.5 ms
 * (a sixth of `mxc --version`'s time over `node -e 0`).
 */
const lazyChildProcess = {
  name: 'mxc-lazy-child-process',
  setup(b) {
    b.onResolve({ filter: /^(node:)?child_process$/ }, (args) =>
      /[\\/]node_modules[\\/]commander[\\/]/.test(args.importer)
        ? { path: 'child_process', namespace: 'mxc-lazy' }
        : undefined,
    );
    b.onLoad({ filter: /.*/, namespace: 'mxc-lazy' }, () => ({
      contents:
        "let cp; module.exports = new Proxy({}, { get: (_, k) => (cp ??= require('node:child_process'))[k] });",
      loader: 'js',
    }));
  },
};

/**
 * zod's namespace (`import { z } from 'zod'`, used as an object) carries every locale's messages,
 * ~300 kB of the ~450 kB zod puts in each command file, which every command reads and compiles (or
 * deserializes from its code cache) and keeps in memory. mxc's messages are zod's English ones, the
 * default (registered by its schemas module, not through this index): the index keeps only `en`, so
 * `z.locales.en` stays and the other locales are not bundled.
 */
const zodEnglishOnly = {
  name: 'mxc-zod-english-only',
  setup(b) {
    b.onResolve({ filter: /^\.\.\/locales\/index\.js$/ }, (args) =>
      /[\\/]node_modules[\\/]zod[\\/]/.test(args.importer)
        ? { path: join(args.resolveDir, '..', 'locales', 'index.js'), namespace: 'mxc-zod-locales' }
        : undefined,
    );
    b.onLoad({ filter: /.*/, namespace: 'mxc-zod-locales' }, (args) => ({
      contents: "export { default as en } from './en.js';",
      resolveDir: dirname(args.path),
      loader: 'js',
    }));
  },
};

/**
 * The shared schema modules (spec/*.ts) build every zod schema when they load, so a client command
 * built the job spec, the agent messages and every API shape to parse one answer. Each top-level
 * `const` of theirs whose value is computed becomes a pure immediately-called function, and esbuild
 * drops the ones a bundle file never reaches: `cluster.cjs` builds ClusterStatus and what it is made
 * of. The kept ones run in the same order, and each shape is still defined once, in its module.
 * (These modules have no other top-level statements, and their initialisers do nothing but build
 * their value.) With zod imported as a namespace (`import * as z`), esbuild drops zod's unused parts
 * too. cluster.cjs's load: 24 -> 12 ms; its size 280 -> 125 kB. The same modules are marked free of side
 * effects where another imports them, so an import whose bindings a file never uses goes too: else
 * messages.ts's import of job.ts kept the job spec's schemas in every command that reads an agent
 * message shape, built at start even where only a dynamic import reaches them (spec/api-jobs.ts).
 */
const pureSpecConstants = {
  name: 'mxc-pure-spec-constants',
  setup(b) {
    b.onResolve({ filter: /^\.\.?\/.*\.js$/ }, (args) => {
      const file = join(args.resolveDir, args.path.replace(/\.js$/, '.ts'));
      return dirname(file) === join(root, 'spec') && args.kind === 'import-statement'
        ? { path: file, sideEffects: false }
        : undefined;
    });
    b.onLoad({ filter: /[\\/]spec[\\/][\w-]+\.ts$/ }, (args) => {
      if (dirname(args.path) !== join(root, 'spec')) return undefined;
      const source = readFileSync(args.path, 'utf8');
      const file = ts.createSourceFile(args.path, source, ts.ScriptTarget.Latest, true);
      const plain = new Set([
        ts.SyntaxKind.ArrowFunction,
        ts.SyntaxKind.FunctionExpression,
        ts.SyntaxKind.StringLiteral,
        ts.SyntaxKind.NumericLiteral,
        ts.SyntaxKind.NoSubstitutionTemplateLiteral,
        ts.SyntaxKind.RegularExpressionLiteral,
        ts.SyntaxKind.Identifier,
      ]);
      const spans = [];
      for (const statement of file.statements) {
        if (!ts.isVariableStatement(statement)) continue;
        if (!(statement.declarationList.flags & ts.NodeFlags.Const)) continue;
        for (const declaration of statement.declarationList.declarations) {
          const init = declaration.initializer;
          if (init && !plain.has(init.kind)) spans.push([init.getStart(file), init.getEnd()]);
        }
      }
      let contents = source;
      for (const [start, end] of spans.reverse())
        contents = `${contents.slice(0, start)}/* @__PURE__ */ (() => (${contents.slice(start, end)}))()${contents.slice(end)}`;
      return { contents, loader: 'ts' };
    });
  },
};

rmSync(out, { recursive: true, force: true });
const result = await build({
  entryPoints: [
    { in: join(cli, 'main.ts'), out: 'mxc' },
    { in: join(cli, 'errors.ts'), out: 'errors' },
    { in: join(cli, 'stdio.ts'), out: 'stdio' },
    { in: createRequire(import.meta.url).resolve('commander'), out: 'commander' },
    ...commands.map((name) => ({ in: join(cli, 'commands', `${name}.ts`), out: name })),
  ],
  outdir: out,
  outExtension: { '.js': '.cjs' },
  bundle: true,
  platform: 'node',
  target: 'node20',
  format: 'cjs',
  // import() becomes a lazy require: inside a file a lazy in-file module, across files a sibling.
  supported: { 'dynamic-import': false },
  // paths.ts finds the package root from its own location: here, the bundle file.
  define: { 'import.meta.url': '__mxcImportMetaUrl' },
  banner: { js: "var __mxcImportMetaUrl = require('node:url').pathToFileURL(__filename).href;" },
  external: BUNDLE_EXTERNAL,
  plugins: [siblings, commanderSibling, lazyChildProcess, zodEnglishOnly, pureSpecConstants],
  // Less to parse at every start; names kept for error messages and stack traces.
  minify: true,
  keepNames: true,
  legalComments: 'none',
  metafile: true,
  logLevel: 'warning',
});
const bytes = Object.values(result.metafile.outputs).reduce((n, o) => n + o.bytes, 0);
process.stderr.write(
  `[bundle] dist/bundle ${(bytes / 1048576).toFixed(2)} MiB in ${commands.length + 4} files\n`,
);
