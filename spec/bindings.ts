/**
 * Thermos bindings in process cmdlines (`{{thermos.ports[http]}}`, `{{thermos.task_id}}`,
 * `{{mesos.instance}}`, `{{mesos.hostname}}`): which ones exist, checked at submit, and expanded by
 * the agent at launch with the values only it knows (the ports it allocated, the workload, itself).
 */

/**
 * `{{ … }}` with anything but braces inside; whitespace around the name is allowed, as in pystachio, and
 * trimmed by `nameOf` (the same whitespace as `\s`). Not `\{\{\s*([^{}]*?)\s*\}\}`: its three ways of
 * taking a run of spaces backtracked cubically, and `{{` and 8,000 spaces held the event loop 160 s
 * (a read token's `POST /api/jobs/plan` checks a spec's bindings).
 */
const BINDING = /\{\{([^{}]*)\}\}/g;
const nameOf = (inner: string) => inner.trim();
const PORT = /^thermos\.ports\[([a-z][a-z0-9_]*)\]$/;
const SCALARS = ['thermos.task_id', 'mesos.instance', 'mesos.hostname'] as const;

/** The names of the bindings the agent expands, for messages. */
export const KNOWN_BINDINGS = ['thermos.ports[<port>]', ...SCALARS];

export interface BindingValues {
  /** Port name → the port the agent allocated. */
  ports: Record<string, number>;
  /** The workload id (Thermos's task id of this instance). */
  taskId: string;
  instance: number;
  hostname: string;
}

/** Problems of one text named one by one; past them, only counted (a cmdline may hold 800,000 bindings). */
const MAX_BINDING_PROBLEMS = 20;

/** Each problem with the bindings of `text` as a sentence; empty when every binding is known. */
export function bindingProblems(text: string, declaredPorts: readonly string[]): string[] {
  const out: string[] = [];
  let more = 0;
  for (const m of text.matchAll(BINDING)) {
    const name = nameOf(m[1]!);
    const port = PORT.exec(name);
    const known = port ? declaredPorts.includes(port[1]!) : (SCALARS as readonly string[]).includes(name);
    if (known) continue;
    if (out.length >= MAX_BINDING_PROBLEMS) {
      more++;
      continue;
    }
    if (port)
      out.push(
        `binding {{${name}}} names port "${port[1]}", which the job does not declare ` +
          `(mxc ports: ${declaredPorts.length ? declaredPorts.join(', ') : 'none'})`,
      );
    else out.push(`unknown binding {{${name}}} (known: ${KNOWN_BINDINGS.map((b) => `{{${b}}}`).join(', ')})`);
  }
  if (more > 0) out.push(`and ${more} more unknown or undeclared bindings`);
  return out;
}

/** `text` with every binding replaced by its value; throws naming the first binding it cannot expand. */
export function expandBindings(text: string, v: BindingValues): string {
  return text.replace(BINDING, (_all, inner: string) => {
    const name = nameOf(inner);
    const port = PORT.exec(name);
    if (port) {
      const n = v.ports[port[1]!];
      if (n === undefined) throw new Error(`binding {{${name}}}: the workload has no port "${port[1]}"`);
      return String(n);
    }
    if (name === 'thermos.task_id') return v.taskId;
    if (name === 'mesos.instance') return String(v.instance);
    if (name === 'mesos.hostname') return v.hostname;
    throw new Error(
      `unknown binding {{${name}}} (known: ${KNOWN_BINDINGS.map((b) => `{{${b}}}`).join(', ')})`,
    );
  });
}
