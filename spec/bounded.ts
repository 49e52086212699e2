/**
 * Records (JSON objects used as maps) with a most number of entries: zod bounds arrays with `.max`, not
 * records, and every list a request or agent message carries has a maximum. The bound is also written
 * into the generated JSON Schema (`maxProperties`).
 */
import * as z from 'zod';

/** A record of `keys` → `values` with at most `max` entries (refused as "at most N <noun>"). */
export function boundedRecord<K extends z.core.$ZodRecordKey, V extends z.ZodType>(
  keys: K,
  values: V,
  max: number,
  noun: string,
) {
  return z
    .record(keys, values)
    .refine((r) => Object.keys(r).length <= max, { message: `at most ${max} ${noun}` })
    .meta({ maxProperties: max });
}
