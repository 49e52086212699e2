/**
 * The start message's text, put together around a spec serialised once, is exactly JSON.stringify of
 * the message object and a valid CoordinatorMessage, for any workload id, job id and instance; the
 * schedule bench's simulated agents read its ids and job name without parsing it, right or not at all.
 */
import fc from 'fast-check';
import { describe, expect, it } from 'vitest';
import { startOf } from '../../bench/lib/sim-agent.js';
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

  it('is read by the bench’s simulated agent without a parse: the same fields, or none for a layout it does not know', () => {
    const spec = JobSpec.parse(plainJob({ name: 'web.v2_x-1' }));
    const specJson = JSON.stringify(spec);
    const fields = (id: string, jobId: string) => ({ workloadId: id, jobId, jobName: spec.name });
    fc.assert(
      fc.property(
        fc.string({ unit: 'binary' }),
        fc.string({ unit: 'binary' }),
        fc.nat(),
        (id, jobId, instance) => {
          const got = startOf(Buffer.from(startMessageText({ id, job_id: jobId, instance }, specJson)));
          if (got !== null) expect(got).toEqual(fields(id, jobId));
        },
      ),
    );
    fc.assert(
      fc.property(
        fc.stringMatching(/^[A-Za-z0-9_.-]{1,200}$/),
        fc.uuid(),
        fc.nat(),
        (id, jobId, instance) => {
          const text = startMessageText({ id, job_id: jobId, instance }, specJson);
          expect(startOf(Buffer.from(text))).toEqual(fields(id, jobId));
        },
      ),
    );
    expect(startOf(Buffer.from('{"type":"stop","workload_id":"w"}'))).toBeNull();
    expect(
      startOf(Buffer.from(JSON.stringify({ type: 'start', workload: { job_id: 'j', id: 'w', spec } }))),
    ).toBeNull();
  });
});
