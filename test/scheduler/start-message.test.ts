/**
 * The start message's text, put together around a spec serialised once, is exactly JSON.stringify of
 * the message object and a valid CoordinatorMessage, for any workload id, job id and instance.
 */
import fc from 'fast-check';
import { describe, expect, it } from 'vitest';
import { startMessage, startMessageText } from '../../scheduler/start-message.js';
import { JobSpec } from '../../spec/job.js';
import { CoordinatorMessage } from '../../spec/messages.js';
import { plainJob } from '../helpers/coordinator.js';

describe('start message text', () => {
  it('equals JSON.stringify of the message and parses as a CoordinatorMessage', () => {
    const specs = [
      JobSpec.parse(plainJob()),
      JobSpec.parse(
        plainJob({
          instances: 3,
          task: {
            name: 'web',
            processes: [{ name: 'web', cmdline: 'echo "quoted" \\ ü 😀 \u2028' }],
            resources: { cpu: 0.5, ram: 64 * 1024 * 1024, disk: 0 },
          },
        }),
      ),
    ];
    fc.assert(
      fc.property(
        fc.string({ unit: 'binary' }),
        fc.string({ unit: 'binary' }),
        fc.nat(),
        fc.constantFrom(...specs),
        (id, jobId, instance, spec) => {
          const w = { id, job_id: jobId, instance };
          expect(startMessageText(w, JSON.stringify(spec))).toBe(JSON.stringify(startMessage(w, spec)));
        },
      ),
    );
    fc.assert(
      fc.property(
        fc.stringMatching(/^[A-Za-z0-9_.-]{1,200}$/).filter((id) => id !== '.' && id !== '..'),
        fc.uuid(),
        fc.nat(),
        fc.constantFrom(...specs),
        (id, jobId, instance, spec) => {
          const w = { id, job_id: jobId, instance };
          const text = startMessageText(w, JSON.stringify(spec));
          expect(CoordinatorMessage.parse(JSON.parse(text))).toEqual(startMessage(w, spec));
        },
      ),
    );
  });
});
