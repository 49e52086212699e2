#!/usr/bin/env node
// Writes spec/job.schema.json from the zod schema (run after `npm run build`).
import { writeFileSync } from 'node:fs';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';

const root = join(dirname(fileURLToPath(import.meta.url)), '..');
const { jobJsonSchemaText } = await import(join(root, 'dist', 'spec', 'json-schema.js'));
writeFileSync(join(root, 'spec', 'job.schema.json'), jobJsonSchemaText());
process.stderr.write('wrote spec/job.schema.json\n');
