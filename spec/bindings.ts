/**
 * Thermos bindings in process cmdlines (`{{thermos.ports[http]}}`, `{{thermos.task_id}}`,
 * `{{mesos.instance}}`, `{{mesos.hostname}}`): which ones exist, checked at submit, and expanded by
 * the agent at launch with the values only it knows (the ports it allocated, the workload, itself).
 */

/** `{{ … }}` with anything but braces inside; whitespace around the name is allowed, as in pystachio. */
const BINDING = /\{\{\s*([^{}]*?)\s*\}\}/g;
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

/** Each problem with the bindings of `text` as a sentence; empty when every binding is known. */
export function bindingProblems(text: string, declaredPorts: readonly string[]): string[] {
  const out: string[] = [];
  for (const m of text.matchAll(BINDING)) {
    const name = m[1]!;
    const port = PORT.exec(name);
    if (port) {
      if (!declaredPorts.includes(port[1]!)) {
        out.push(
          `binding {{${name}}} names port "${port[1]}", which the job does not declare ` +
            `(mxc ports: ${declaredPorts.length ? declaredPorts.join(', ') : 'none'})`,
        );
      }
    } else if (!(SCALARS as readonly string[]).includes(name)) {
      out.push(`unknown binding {{${name}}} (known: ${KNOWN_BINDINGS.map((b) => `{{${b}}}`).join(', ')})`);
    }
  }
  return out;
}

/** `text` with every binding replaced by its value; throws naming the first binding it cannot expand. */
export function expandBindings(text: string, v: BindingValues): string {
  return text.replace(BINDING, (_all, name: string) => {
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
