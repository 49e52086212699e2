/**
 * `mxc completion bash|zsh|fish`: prints a completion script built from the command tree; where a
 * command takes a workload, job or node id the script asks `mxc __complete KIND` for the live ones.
 */
import type { Command } from 'commander';
import { ApiClient, type ClientOptions } from '../client.js';
import { CliError } from '../errors.js';
import { completionWords, type Kind } from '../resolve.js';

interface Node {
  name: string;
  subcommands: Node[];
  options: string[];
  aliases: string[];
  /** What the first argument names, when it is a workload, job or node id: the `__complete` kind. */
  ids?: string;
}

/** The command groups whose `<id>` argument names one of theirs. */
const GROUPS: Record<string, string> = { workloads: 'workloads', jobs: 'jobs', nodes: 'nodes' };

function tree(cmd: Command, parent?: string): Node {
  const group = parent && GROUPS[parent];
  return {
    name: cmd.name(),
    // `__complete` and the like are for the scripts, not for people.
    subcommands: cmd.commands.filter((c) => !c.name().startsWith('__')).map((c) => tree(c, cmd.name())),
    options: cmd.options.flatMap((o) => [o.long, o.short].filter((x): x is string => !!x)).concat('--help'),
    aliases: cmd.aliases(),
    ...(group && cmd.registeredArguments[0]?.name() === 'id' ? { ids: group } : {}),
  };
}

/**
 * Asks the mxc being completed (`COMP_WORDS[0]`, so `./bin/mxc.js` works too) for live ids, with the
 * `-c URL` given on the line; nothing when the coordinator is not there.
 */
const BASH_IDS = `_mxc_ids() {
  local i c=()
  for ((i = 1; i < COMP_CWORD; i++)); do
    case "\${COMP_WORDS[i]}" in
      -c|--coordinator) c=(--coordinator "\${COMP_WORDS[i+1]}") ;;
      --coordinator=*) c=("\${COMP_WORDS[i]}") ;;
    esac
  done
  "\${COMP_WORDS[0]}" __complete "$1" "\${c[@]}" 2>/dev/null
}
# The arguments (not options, not option values) before the word being completed, in _mxc_w, so
# \`mxc -c URL jobs show <TAB>\` completes as \`mxc jobs show <TAB>\`; _mxc_value is set when that word is
# an option's value.
_mxc_args() {
  local i
  _mxc_w=() _mxc_value=
  for ((i = 1; i < COMP_CWORD; i++)); do
    case "\${COMP_WORDS[i]}" in
      -c|--coordinator|--token|--token-file|--format|-p|--process|-n|--tail|--timeout) ((i++)) ;;
      -*) ;;
      *) _mxc_w+=("\${COMP_WORDS[i]}") ;;
    esac
  done
  ((i > COMP_CWORD)) && _mxc_value=1
  return 0
}`;

function bash(root: Node): string {
  const cases = root.subcommands
    .map((c) => {
      const words = [...c.subcommands.map((s) => s.name), ...c.options].join(' ');
      const inner = c.subcommands
        .map((s) => {
          const ids = s.ids
            ? `[[ -z "$_mxc_value" && "$cur" != -* && \${#_mxc_w[@]} -eq 2 ]] && { COMPREPLY=( $(compgen -W "$(_mxc_ids ${s.ids})" -- "$cur") ); return; }; `
            : '';
          return `        ${s.name}) ${ids}COMPREPLY=( $(compgen -W "${s.options.join(' ')}" -- "$cur") ); return ;;`;
        })
        .join('\n');
      return `    ${[c.name, ...c.aliases].join('|')})
      case "\${_mxc_w[1]}" in
${inner}
      esac
      COMPREPLY=( $(compgen -W "${words}" -- "$cur") ); return ;;`;
    })
    .join('\n');
  return `# bash completion for mxc: eval "$(mxc completion bash)"
${BASH_IDS}
_mxc() {
  local cur="\${COMP_WORDS[COMP_CWORD]}" _mxc_w _mxc_value
  _mxc_args
  case "\${COMP_WORDS[COMP_CWORD-1]}" in
    --job) COMPREPLY=( $(compgen -W "$(_mxc_ids jobs)" -- "$cur") ); return ;;
    --node) COMPREPLY=( $(compgen -W "$(_mxc_ids nodes)" -- "$cur") ); return ;;
  esac
  [ -n "$_mxc_value" ] && return
  if [ "\${#_mxc_w[@]}" -eq 0 ]; then
    COMPREPLY=( $(compgen -W "${root.subcommands.map((c) => c.name).join(' ')} --help --version" -- "$cur") ); return
  fi
  case "\${_mxc_w[0]}" in
${cases}
  esac
}
complete -o default -F _mxc mxc
`;
}

function zsh(root: Node): string {
  return `#compdef mxc
# zsh completion for mxc: eval "$(mxc completion zsh)"
autoload -U bashcompinit && bashcompinit
${bash(root)}`;
}

function fish(root: Node): string {
  const lines = [
    '# fish completion for mxc: mxc completion fish | source',
    'complete -c mxc -f',
    'function __mxc_ids; set -l cmd (commandline -opc); $cmd[1] __complete $argv 2>/dev/null; end',
    'complete -c mxc -l job -x -a "(__mxc_ids jobs)"',
    'complete -c mxc -l node -x -a "(__mxc_ids nodes)"',
  ];
  const top = root.subcommands.map((c) => c.name).join(' ');
  for (const c of root.subcommands) {
    lines.push(`complete -c mxc -n "not __fish_seen_subcommand_from ${top}" -a ${c.name}`);
    for (const s of c.subcommands) {
      lines.push(`complete -c mxc -n "__fish_seen_subcommand_from ${c.name}" -a ${s.name}`);
      if (s.ids)
        lines.push(
          `complete -c mxc -n "__fish_seen_subcommand_from ${c.name}; and __fish_seen_subcommand_from ${s.name}; and test (count (commandline -opc)) -eq 3" -a "(__mxc_ids ${s.ids})"`,
        );
    }
    for (const o of c.options.filter((o) => o.startsWith('--'))) {
      lines.push(`complete -c mxc -n "__fish_seen_subcommand_from ${c.name}" -l ${o.slice(2)}`);
    }
  }
  return `${lines.join('\n')}\n`;
}

export function completion(shell: string, program: Command): void {
  const root = tree(program);
  const scripts: Record<string, (n: Node) => string> = { bash, zsh, fish };
  const make = scripts[shell];
  if (!make) throw new CliError(`unknown shell "${shell}"; choose bash, zsh or fish`, 2);
  process.stdout.write(make(root));
}

const KINDS: Record<string, Kind> = {
  workloads: 'workload',
  workload: 'workload',
  jobs: 'job',
  job: 'job',
  nodes: 'node',
  node: 'node',
};

/**
 * `mxc __complete workloads|jobs|nodes` (hidden; the completion scripts call it): live workload ids,
 * job keys or node names, one a line. Prints nothing, and exits 0, when the coordinator is unreachable,
 * slow (1.5 s) or refuses: a completion never shows an error.
 */
export async function complete(kind: string, opts: ClientOptions): Promise<void> {
  const k = KINDS[kind];
  if (!k) throw new CliError(`unknown kind "${kind}"; choose workloads, jobs or nodes`, 2);
  let words: string[] = [];
  try {
    words = await completionWords(new ApiClient({ ...opts, timeoutMs: 1500 }), k);
  } catch {
    return;
  }
  if (words.length) process.stdout.write(`${words.join('\n')}\n`);
}
