/** The task schema, re-exported with its input type so tests can write tasks with defaults omitted. */
import type { z } from 'zod';
import { Task } from '../../spec/job.js';

export { Task };
export type TaskInput = z.input<typeof Task>;
