/**
 * Reads a job from what a user hands `mxc submit`: the store path `nix-build` printed, a file path,
 * or the JSON itself. nix-build prints an Aurora job; its `nix_init_*` processes name the sidecar
 * with mxc's fields, which is read from the store and joined under `mxc` (spec/job.ts). A JSON that
 * already has `mxc` is taken as is. Validates against spec/ and reports every problem with its path.
 * CLI commands only: files are read synchronously (the command waits for them anyway, and each async
 * read is several thread-pool round trips on `mxc build`'s path after nix-build).
 */
import { existsSync, readFileSync, type Stats, statSync } from 'node:fs';
import { join } from 'node:path';
import {
  AuroraJob,
  describeIssues,
  JobSpec,
  MxcFields,
  mxcFieldsFromAurora,
  sidecarPathOf,
} from '../spec/job.js';

export class JobInputError extends Error {
  constructor(
    message: string,
    readonly problems: string[] = [],
    options?: { cause?: unknown },
  ) {
    super(problems.length ? `${message}\n  ${problems.join('\n  ')}` : message, options);
    this.name = 'JobInputError';
  }
}

function parseJson(text: string, source: string): unknown {
  try {
    return JSON.parse(text);
  } catch (err) {
    throw new JobInputError(
      `${source} is not valid JSON (${(err as Error).message}); pass the output of nix-build, a file, or the JSON itself`,
      [],
      { cause: err },
    );
  }
}

/**
 * Parse options for the documents read here, each parsed once by a command that then exits: zod's
 * compiled fast path (a `new Function` per object schema, made on its first parse) costs more than it
 * saves for a single parse (a nixlib job: 6.2 ms CPU through it, 3 ms without, median of 12 runs).
 */
const ONCE = { jitless: true } as const;

function validate(raw: unknown, source: string): JobSpec {
  const r = JobSpec.safeParse(raw, ONCE);
  if (!r.success) throw new JobInputError(`${source} is not a valid job spec:`, describeIssues(r.error));
  return r.data;
}

/** The sidecar's fields, read from the store path the nix_init processes name. */
async function readSidecar(path: string, source: string): Promise<unknown> {
  let text: string;
  try {
    text = readFileSync(path, 'utf8');
  } catch (err) {
    throw new JobInputError(
      `${source}: its nix_init processes name the sidecar ${path} (mxc's fields), which is not in this store; ` +
        'submit from the machine that built the job, or copy the sidecar along (nix copy)',
      [],
      { cause: err },
    );
  }
  const raw = parseJson(text, path);
  const r = MxcFields.safeParse(raw, ONCE);
  if (!r.success) throw new JobInputError(`${path} is not a valid mxc sidecar:`, describeIssues(r.error));
  return raw;
}

/**
 * Parses JSON text as a job: an Aurora job (joined with its sidecar, or with what its cmdlines say
 * when it has none), or a spec that carries `mxc` already.
 */
export async function parseJobJson(text: string, source: string): Promise<JobSpec> {
  const raw = parseJson(text, source);
  if (raw === null || typeof raw !== 'object' || Array.isArray(raw))
    throw new JobInputError(`${source} is not a job: expected a JSON object`);
  if ('mxc' in raw) return validate(raw, source);
  const aurora = AuroraJob.safeParse(raw, ONCE);
  if (!aurora.success)
    throw new JobInputError(`${source} is not a valid Aurora job:`, describeIssues(aurora.error));
  let sidecar: string | null;
  try {
    sidecar = sidecarPathOf(raw as Parameters<typeof sidecarPathOf>[0]);
  } catch (err) {
    throw new JobInputError(`${source}: ${(err as Error).message}`, [], { cause: err });
  }
  const mxc = sidecar
    ? await readSidecar(sidecar, source)
    : mxcFieldsFromAurora(raw as Parameters<typeof sidecarPathOf>[0]);
  return validate({ ...raw, mxc }, source);
}

/** Resolves `text` (stdin content or an argument) to a job spec: a path to a JSON file, or JSON. */
export async function readJobInput(
  input: string,
  source = 'input',
): Promise<{ spec: JobSpec; path: string | null }> {
  const trimmed = input.trim();
  if (trimmed === '') {
    throw new JobInputError(
      'no job given: pipe `nix-build examples/x --no-out-link` into `mxc submit`, or pass a file path',
    );
  }
  if (trimmed.startsWith('{')) return { spec: await parseJobJson(trimmed, source), path: null };
  const lines = trimmed.split('\n').filter((l) => l.trim());
  // nix-build can print several outputs; a job derivation has one.
  const path = lines[lines.length - 1]!.trim();
  let info: Stats;
  try {
    info = statSync(path);
  } catch (err) {
    throw new JobInputError(
      `${path}: no such file; pass the store path nix-build printed, a JSON file, or the JSON itself`,
      [],
      { cause: err },
    );
  }
  // A job's Nix expression (a file, or a folder with default.nix as the examples are) is built first.
  if (path.endsWith('.nix') || (info.isDirectory() && existsSync(join(path, 'default.nix'))))
    throw new JobInputError(
      `${path} is a Nix expression, not a job spec: build it first and pass the store path \`mxc build ${path}\` (or nix-build) prints, or pipe it in: \`mxc build ${path} | mxc submit\``,
    );
  if (info.isDirectory())
    throw new JobInputError(`${path} is a directory; pass the job JSON file nix-build produced`);
  if (info.size > 16 * 1024 * 1024)
    throw new JobInputError(`${path} is larger than 16 MiB; that is not a job spec`);
  return { spec: await parseJobJson(readFileSync(path, 'utf8'), path), path };
}
