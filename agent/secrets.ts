/**
 * Secrets by name: values live on the agent (`--secrets-dir`, one file per secret), never in the store,
 * the job spec or the coordinator. At start each secret the job names is copied into the workload's
 * work directory (mode 0400, removed with the workload) and its path exported as MXC_SECRET_<NAME>_FILE.
 */
import { constants } from 'node:fs';
import { chmod, copyFile, mkdir, rm, stat } from 'node:fs/promises';
import { join } from 'node:path';

/** Secret names the spec allows; checked again here so a name can never leave the secrets dir. */
const NAME = /^[A-Za-z0-9_.-]+$/;
export const SECRETS_SUBDIR = '.mxc-secrets';

export class SecretError extends Error {}

/** `MXC_SECRET_DB_PASSWORD_FILE` for `db.password`. */
export function secretEnvName(name: string): string {
  return `MXC_SECRET_${name.toUpperCase().replace(/[^A-Z0-9]/g, '_')}_FILE`;
}

/**
 * Copies the named secrets into `<workDir>/.mxc-secrets/` and returns the environment variables that
 * point at them, as the processes see the work directory (`seenAs`: the same path, or `/work` in a VM).
 */
export async function provideSecrets(
  names: readonly string[],
  secretsDir: string | undefined,
  workDir: string,
  seenAs = workDir,
): Promise<Record<string, string>> {
  if (names.length === 0) return {};
  if (!secretsDir) {
    throw new SecretError(
      `the job needs secret(s) ${names.join(', ')} but this agent has no secrets directory: start it with --secrets-dir DIR (MXC_AGENT_SECRETS_DIR) holding one file per secret`,
    );
  }
  const dir = join(workDir, SECRETS_SUBDIR);
  // Made afresh, never taken as found: the work directory is the job's to write, and a start of a
  // workload whose directory is still here (re-sent after the agent restarted) found what its processes
  // left, a symlink in the folder's place or a secret's (to /etc, say): the agent removed and wrote the
  // file it pointed at. rm removes a symlink, not what it points at; the copy creates its file or fails.
  await rm(dir, { recursive: true, force: true });
  await mkdir(dir, { mode: 0o700 });
  const env: Record<string, string> = {};
  for (const name of new Set(names)) {
    if (!NAME.test(name) || name === '.' || name === '..')
      throw new SecretError(`"${name}" is not a valid secret name`);
    const source = join(secretsDir, name);
    const info = await stat(source).catch(() => null);
    if (!info?.isFile()) {
      throw new SecretError(`secret "${name}" is not available on this agent: put its value in ${source}`);
    }
    const target = join(dir, name);
    await copyFile(source, target, constants.COPYFILE_EXCL);
    await chmod(target, 0o400);
    env[secretEnvName(name)] = join(seenAs, SECRETS_SUBDIR, name);
  }
  return env;
}

/** Removes a workload's copies of its secrets. */
export async function removeSecrets(workDir: string): Promise<void> {
  await rm(join(workDir, SECRETS_SUBDIR), { recursive: true, force: true });
}
