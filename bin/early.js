// A helper command bin/mxc.js starts before the bundle loads (`mxc build`'s nix-build, `mxc push`'s
// nix path-info), so that it runs on the other core while the CLI loads. CommonJS, plain JS.
'use strict';

/** Output kept of an early command, per stream (execa's default maxBuffer): beyond it, it is killed. */
const MAX_OUTPUT = 100_000_000;

/**
 * Spawns `file args…` through node:child_process (execa would load first: see bin/build-early.js) and
 * collects its output; lib/exec.ts's settleStarted takes it over (a StartedCommand) with run()'s
 * timeout and errors. Killed at exit unless it ended: it never outlives the CLI.
 */
function spawnEarly(file, args) {
  const startedAt = performance.now();
  const child = require('node:child_process').spawn(file, args, { stdio: ['ignore', 'pipe', 'pipe'] });
  let overflow = null;
  const stdoutListeners = [];
  const collect = (stream, name, listeners) => {
    const chunks = [];
    let size = 0;
    stream.on('data', (c) => {
      size += c.length;
      if (size <= MAX_OUTPUT) {
        chunks.push(c);
        for (const listener of listeners ?? []) listener(c);
      } else if (!overflow) {
        overflow = new Error(`its ${name} exceeded ${MAX_OUTPUT} bytes`);
        kill();
      }
    });
    return { chunks, text: () => Buffer.concat(chunks).toString() };
  };
  const stdout = collect(child.stdout, 'stdout', stdoutListeners);
  const stderr = collect(child.stderr, 'stderr');
  const done = new Promise((resolve) => {
    child.once('error', (error) => resolve({ error }));
    child.once('close', (exitCode, signal) =>
      resolve(
        overflow ? { error: overflow } : { exitCode, signal, stdout: stdout.text(), stderr: stderr.text() },
      ),
    );
  });
  const kill = () => {
    if (child.exitCode === null && child.signalCode === null) child.kill('SIGKILL');
  };
  // Not taken over (an internal error before the command ran): it does not outlive us.
  process.once('exit', kill);
  /** `listener` gets the stdout read so far, then each further chunk, while the process runs. */
  const onStdout = (listener) => {
    if (stdout.chunks.length) listener(Buffer.concat(stdout.chunks));
    stdoutListeners.push(listener);
  };
  return { file, args, startedAt, done, kill, onStdout };
}

module.exports = { spawnEarly };
