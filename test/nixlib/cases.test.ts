/**
 * nixlib's expected-value tests: every `{ expr; expected; }` pair in cases.nix, evaluated by
 * Nix itself in one `nix-instantiate --eval --strict --json` call and compared here.
 */
import { describe, expect, it } from 'vitest';
import { evalJson, HERE, nixString } from './nix-eval.js';

interface CaseResult {
  ok: boolean;
  got: unknown;
  expected: unknown;
}

// tryEval + deepSeq so one throwing case is reported as that case failing, not the whole file.
const results = await evalJson<Record<string, CaseResult>>(`
  builtins.mapAttrs (name: c:
    let r = builtins.tryEval (builtins.deepSeq c.expr c.expr);
    in { ok = r.success; got = if r.success then r.value else null; inherit (c) expected; })
  (import ${nixString(`${HERE}cases.nix`)})
`);

describe('nixlib expected values (cases.nix)', () => {
  it('has cases', () => {
    expect(Object.keys(results).length).toBeGreaterThan(10);
  });
  for (const [name, r] of Object.entries(results)) {
    it(name, () => {
      expect(r.ok, `${name}: expr threw during evaluation`).toBe(true);
      expect(r.got).toEqual(r.expected);
    });
  }
});
