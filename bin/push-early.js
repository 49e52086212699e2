// `mxc push PATH…`'s `nix path-info`, started by bin/mxc.js before anything else loads. CommonJS, plain JS.
'use strict';

/** Roots one early `nix path-info` takes (lib/path-info.ts's batch: longer lists run there, in batches). */
const MAX_ROOTS = 500;

/** Options of `mxc push` that take a value (cli/main.ts's client options). */
const VALUE_OPTIONS = new Set(['-c', '--coordinator', '--token', '--token-file', '-f', '--format']);

/**
 * The arguments `mxc push PATH… [options]` runs `nix path-info --json --recursive` with (as
 * lib/path-info.ts makes them), or null for any other command line (paths on stdin, help, other
 * spellings): then nothing starts early and the command runs as it always does.
 */
function pathInfoArgs(argv) {
  if (argv[2] !== 'push') return null;
  const roots = [];
  for (let i = 3; i < argv.length; i++) {
    const a = argv[i];
    if (a === '--json') continue;
    if (VALUE_OPTIONS.has(a)) {
      if (i + 1 >= argv.length) return null;
      i++;
    } else if (a.startsWith('/')) roots.push(a);
    else return null;
  }
  if (roots.length === 0 || roots.length > MAX_ROOTS) return null;
  return [
    '--extra-experimental-features',
    'nix-command',
    '--option',
    'substituters',
    '',
    'path-info',
    '--json',
    '--recursive',
    ...roots,
  ];
}

/**
 * A push first asks nix for its closure (each path's hash, size and references): that starts here,
 * before the CLI loads, and runs on the other core meanwhile. lib/path-info.ts takes it over when its
 * arguments are the ones it would have run, else kills it.
 */
function start(argv) {
  const args = pathInfoArgs(argv);
  return args ? require('./early.js').spawnEarly('nix', args) : undefined;
}

module.exports = { pathInfoArgs, start };
