// A helper command bin/mxc.js starts before the bundle loads (`mxc build`'s nix-build, `mxc push`'s
// nix path-info), so that it runs on the other core while the CLI loads. CommonJS, plain JS.
'use strict';

/** Output kept of an early command, per stream (execa's default maxBuffer): beyond it, it is killed. */
const MAX_OUTPUT = 100_000_000;

/**
 * Milliseconds on a monotonic clock: lib/exec.ts's settleStarted counts the timeout from `startedAt`
 * with the same one. Not performance.now(): the first use of `performance` loads perf_hooks (~0.9 ms),
 * before the spawn.
 */
const now = () => Number(process.hrtime.bigint()) / 1e6;

/**
 * Node's own handles for a process and its pipes, which node:child_process wraps (the same libuv
 * spawn, the same PATH lookup and environment), or null where this Node has them not. Loading
 * node:child_process (with net and the streams) and its spawn took 6.2 ms before nix-build started,
 * these 1.2 ms (medians of 6 at real-time priority on the 2-core VM), all of it on `mxc build`'s
 * critical path. process.binding is deprecated (DEP0111, a documentation-only deprecation): it warns
 * only under --pending-deprecation, which must not change mxc's output, so that warning is held back.
 */
function handles() {
  if (typeof process.binding !== 'function') return null;
  const quiet = process.noDeprecation;
  process.noDeprecation = true;
  try {
    const { Process } = process.binding('process_wrap');
    const { Pipe, constants } = process.binding('pipe_wrap');
    const { streamBaseState, kReadBytesOrError, kArrayBufferOffset } = process.binding('stream_wrap');
    if (typeof Process !== 'function' || typeof Pipe !== 'function' || !streamBaseState) return null;
    return {
      Process,
      Pipe,
      pipeType: constants.SOCKET,
      streamBaseState,
      kReadBytesOrError,
      kArrayBufferOffset,
    };
  } catch {
    return null;
  } finally {
    process.noDeprecation = quiet;
  }
}

/**
 * Spawns `file args…` (no shell; stdin ignored) and collects its output; lib/exec.ts's settleStarted
 * takes it over (a StartedCommand) with run()'s timeout and errors. Killed at exit unless it ended: it
 * never outlives the CLI. Through Node's process handles (handles() says why; execa would load first:
 * see bin/build-early.js), else through node:child_process: the same result either way.
 */
function spawnEarly(file, args, opts = {}) {
  const h = opts.childProcess ? null : handles();
  return h ? spawnWithHandles(h, file, args) : spawnWithChildProcess(file, args);
}

/** Keeps a stream's chunks up to MAX_OUTPUT, passing each on to `listeners`; `tooMuch` past it. */
function collector(name, listeners, tooMuch) {
  const chunks = [];
  let size = 0;
  return {
    chunks,
    add(c) {
      size += c.length;
      if (size <= MAX_OUTPUT) {
        chunks.push(c);
        for (const listener of listeners) listener(c);
      } else tooMuch(new Error(`its ${name} exceeded ${MAX_OUTPUT} bytes`));
    },
    text: () => Buffer.concat(chunks).toString(),
  };
}

/**
 * A started process's two outputs, each kept up to MAX_OUTPUT: past it the process is killed and its
 * result is that error. `result(exit)` is what `done` resolves to once it exited and both ended.
 */
function outputs(kill) {
  let overflow = null;
  const tooMuch = (error) => {
    if (overflow) return;
    overflow = error;
    kill();
  };
  const stdoutListeners = [];
  const stdout = collector('stdout', stdoutListeners, tooMuch);
  const stderr = collector('stderr', [], tooMuch);
  const result = (exit) =>
    overflow ? { error: overflow } : { ...exit, stdout: stdout.text(), stderr: stderr.text() };
  return { stdout, stderr, stdoutListeners, result };
}

/** The parts of a StartedCommand both ways share, around a started process and its `outputs`. */
function started(file, args, startedAt, { stdout, stdoutListeners }, done, kill) {
  // Not taken over (an internal error before the command ran): it does not outlive us.
  process.once('exit', kill);
  done.then(() => process.removeListener('exit', kill));
  /** `listener` gets the stdout read so far, then each further chunk, while the process runs. */
  const onStdout = (listener) => {
    if (stdout.chunks.length) listener(Buffer.concat(stdout.chunks));
    stdoutListeners.push(listener);
  };
  return { file, args, startedAt, done, kill, onStdout };
}

/** As node:child_process's spawn does it, on its handles: ends once the process exited and both pipes closed. */
function spawnWithHandles(h, file, args) {
  const startedAt = now();
  const proc = new h.Process();
  const pipes = [new h.Pipe(h.pipeType), new h.Pipe(h.pipeType)];
  const envPairs = [];
  for (const [k, v] of Object.entries(process.env)) if (v !== undefined) envPairs.push(`${k}=${v}`);
  let resolveDone;
  const done = new Promise((resolve) => {
    resolveDone = resolve;
  });
  let exit = null;
  let open = 2;
  const kill = () => {
    if (!exit) proc.kill(9); // SIGKILL
  };
  const out = outputs(kill);
  const settle = () => {
    if (exit && open === 0) resolveDone(out.result(exit));
  };
  proc.onexit = (exitCode, signalCode) => {
    exit = { exitCode: signalCode ? null : exitCode, signal: signalCode || null };
    proc.close();
    settle();
  };
  const err = proc.spawn({
    file,
    args: [file, ...args],
    envPairs,
    stdio: [{ type: 'ignore' }, { type: 'pipe', handle: pipes[0] }, { type: 'pipe', handle: pipes[1] }],
  });
  if (err) {
    for (const p of pipes) p.close();
    proc.close();
    // node:child_process's error: "spawn nix-build ENOENT".
    const code = require('node:util').getSystemErrorName(err);
    const error = Object.assign(new Error(`spawn ${file} ${code}`), {
      errno: err,
      code,
      syscall: `spawn ${file}`,
      path: file,
      spawnargs: args,
    });
    return started(file, args, startedAt, out, Promise.resolve({ error }), () => {});
  }
  pipes.forEach((pipe, i) => {
    const into = i === 0 ? out.stdout : out.stderr;
    // Node's stream handles report each read through onread, its byte count (or an error, EOF
    // included) in streamBaseState: as net.Socket reads them.
    pipe.onread = (buffer) => {
      const n = h.streamBaseState[h.kReadBytesOrError];
      if (n > 0) into.add(Buffer.from(buffer, h.streamBaseState[h.kArrayBufferOffset], n));
      else if (n < 0) {
        pipe.readStop();
        pipe.close();
        open--;
        settle();
      }
    };
    pipe.readStart();
  });
  return started(file, args, startedAt, out, done, kill);
}

/** Through node:child_process, where Node's handles are not to be had. */
function spawnWithChildProcess(file, args) {
  const startedAt = now();
  const child = require('node:child_process').spawn(file, args, { stdio: ['ignore', 'pipe', 'pipe'] });
  const kill = () => {
    if (child.exitCode === null && child.signalCode === null) child.kill('SIGKILL');
  };
  const out = outputs(kill);
  child.stdout.on('data', out.stdout.add);
  child.stderr.on('data', out.stderr.add);
  const done = new Promise((resolve) => {
    child.once('error', (error) => resolve({ error }));
    child.once('close', (exitCode, signal) => resolve(out.result({ exitCode, signal })));
  });
  return started(file, args, startedAt, out, done, kill);
}

module.exports = { spawnEarly, now };
