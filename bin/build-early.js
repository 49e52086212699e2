// `mxc build`'s nix-build, started by bin/mxc.js before anything else loads. CommonJS, plain JS: it runs
// before the bundle does.
'use strict';

/**
 * `mxc build FILE [-A ATTR] [--arg N V]… [--argstr N V]… [--json]` read as commander and cli/main.ts
 * read it ({ file, attr, json, arg, argstr }; a name given twice keeps its last value), or null for
 * any other command line (help, other spellings, usage errors): then nothing starts early and the
 * command runs as it always does.
 */
function buildCommandLine(argv) {
  if (argv[2] !== 'build') return null;
  let file = null;
  let attr;
  let json = false;
  const arg = {};
  const argstr = {};
  for (let i = 3; i < argv.length; i++) {
    const a = argv[i];
    if (a === '--json') json = true;
    else if (a === '-A' || a === '--attr') {
      if (i + 1 >= argv.length || argv[i + 1].startsWith('-')) return null;
      attr = argv[++i];
    } else if (a === '--arg' || a === '--argstr') {
      if (i + 2 >= argv.length) return null;
      (a === '--arg' ? arg : argstr)[argv[i + 1]] = argv[i + 2];
      i += 2;
    } else if (a.startsWith('-') || file !== null) return null;
    else file = a;
  }
  return file === null ? null : { file, attr, json, arg, argstr };
}

/**
 * The arguments such a command line runs nix-build with (as compiler/build.ts and lib/nix.ts make
 * them), or null.
 */
function nixBuildArgs(argv) {
  const line = buildCommandLine(argv);
  return line && argsOf(line);
}

function argsOf({ file, attr, arg, argstr }) {
  const args = ['--option', 'substituters', '', '--no-out-link', file];
  if (attr) args.push('-A', attr);
  for (const [k, v] of Object.entries(arg)) args.push('--arg', k, v);
  for (const [k, v] of Object.entries(argstr)) args.push('--argstr', k, v);
  return args;
}

/**
 * `mxc build` is nix-build plus a check: nix-build starts here, before anything else loads, and runs on
 * the other core while the CLI loads (lib/nix.ts's nixBuild takes it over when its arguments are the
 * ones it would have run, else kills it; lib/exec.ts's settleStarted gives it run()'s timeout and
 * errors). Not through lib/exec.ts's execa, for this one hot path: measured with the processes at
 * real-time priority on the busy 2-core machine (medians of 15), this file's start to nix-build's
 * spawn took 5.2 ms through node:child_process and 13.4 ms through execa loaded from a code-cached
 * bundle (its load and first call), and every millisecond before the spawn adds to the command's
 * time; bin/early.js now spawns on Node's process handles, which node:child_process wraps (~1.2 ms).
 */
function start(argv) {
  const line = buildCommandLine(argv);
  return line ? { line, nixBuild: require('./early.js').spawnEarly('nix-build', argsOf(line)) } : undefined;
}

module.exports = { buildCommandLine, nixBuildArgs, start };
