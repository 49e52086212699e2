/** `mxc completion bash|zsh|fish`: prints a completion script built from the command tree. */
import type { Command } from 'commander';
import { CliError } from '../errors.js';

interface Node {
  name: string;
  subcommands: Node[];
  options: string[];
}

function tree(cmd: Command): Node {
  return {
    name: cmd.name(),
    subcommands: cmd.commands.map(tree),
    options: cmd.options.flatMap((o) => [o.long, o.short].filter((x): x is string => !!x)).concat('--help'),
  };
}

function bash(root: Node): string {
  const cases = root.subcommands
    .map((c) => {
      const words = [...c.subcommands.map((s) => s.name), ...c.options].join(' ');
      const inner = c.subcommands
        .map(
          (s) =>
            `        ${s.name}) COMPREPLY=( $(compgen -W "${s.options.join(' ')}" -- "$cur") ); return ;;`,
        )
        .join('\n');
      return `    ${c.name})
      case "\${COMP_WORDS[2]}" in
${inner}
      esac
      COMPREPLY=( $(compgen -W "${words}" -- "$cur") ); return ;;`;
    })
    .join('\n');
  return `# bash completion for mxc: eval "$(mxc completion bash)"
_mxc() {
  local cur="\${COMP_WORDS[COMP_CWORD]}"
  if [ "$COMP_CWORD" -eq 1 ]; then
    COMPREPLY=( $(compgen -W "${root.subcommands.map((c) => c.name).join(' ')} --help --version" -- "$cur") ); return
  fi
  case "\${COMP_WORDS[1]}" in
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
  const lines = ['# fish completion for mxc: mxc completion fish | source', 'complete -c mxc -f'];
  const top = root.subcommands.map((c) => c.name).join(' ');
  for (const c of root.subcommands) {
    lines.push(`complete -c mxc -n "not __fish_seen_subcommand_from ${top}" -a ${c.name}`);
    for (const s of c.subcommands)
      lines.push(`complete -c mxc -n "__fish_seen_subcommand_from ${c.name}" -a ${s.name}`);
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
