/**
 * Reads a job spec from what a user hands `mxc submit`: the store path `nix-build` printed, a file
 * path, or the JSON itself; validates it against spec/ and reports every problem with its JSON path.
 */
import { readFile, stat } from 'node:fs/promises';
import { describeIssues, JobSpec } from '../spec/job.js';

export class JobInputError extends Error {
  constructor(
    message: string,
    readonly problems: string[] = [],
  ) {
    super(problems.length ? `${message}\n  ${problems.join('\n  ')}` : message);
    this.name = 'JobInputError';
  }
}

/** Parses and validates JSON text as a job spec. */
export function parseJobJson(text: string, source: string): JobSpec {
  let raw: unknown;
  try {
    raw = JSON.parse(text);
  } catch (err) {
    throw new JobInputError(
      `${source} is not valid JSON (${(err as Error).message}); pass the output of nix-build, a file, or the JSON itself`,
    );
  }
  const r = JobSpec.safeParse(raw);
  if (!r.success) throw new JobInputError(`${source} is not a valid job spec:`, describeIssues(r.error));
  return r.data;
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
  if (trimmed.startsWith('{')) return { spec: parseJobJson(trimmed, source), path: null };
  const lines = trimmed.split('\n').filter((l) => l.trim());
  // nix-build can print several outputs; a job derivation has one.
  const path = lines[lines.length - 1]!.trim();
  let info: Awaited<ReturnType<typeof stat>>;
  try {
    info = await stat(path);
  } catch {
    throw new JobInputError(
      `${path}: no such file; pass the store path nix-build printed, a JSON file, or the JSON itself`,
    );
  }
  if (info.isDirectory())
    throw new JobInputError(`${path} is a directory; pass the job JSON file nix-build produced`);
  if (info.size > 16 * 1024 * 1024)
    throw new JobInputError(`${path} is larger than 16 MiB; that is not a job spec`);
  return { spec: parseJobJson(await readFile(path, 'utf8'), path), path };
}
