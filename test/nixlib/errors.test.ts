/**
 * nixlib's evaluation errors: every case in errors.nix must fail to evaluate with a message that
 * names the job, the function and the attribute.
 */
import { describe, expect, it } from 'vitest';
import { evalError, evalJson, HERE, nixString } from './nix-eval.js';

const file = nixString(`${HERE}errors.nix`);
const cases = await evalJson<Record<string, { error: string | string[] }>>(
  `builtins.mapAttrs (_: c: { inherit (c) error; }) (import ${file})`,
);

describe('nixlib errors (errors.nix)', () => {
  it('has cases', () => {
    expect(Object.keys(cases).length).toBeGreaterThan(10);
  });
  for (const [name, c] of Object.entries(cases)) {
    it.concurrent(name, async () => {
      const stderr = await evalError(`(import ${file}).${name}.expr`);
      // nix may wrap the message with location lines; the first `error:` line carries it.
      const message = stderr.split('\n').find((l) => l.includes('error:')) ?? stderr;
      for (const expected of Array.isArray(c.error) ? c.error : [c.error]) {
        expect(message).toContain(expected.trim());
      }
    });
  }
});
