# Process { name, cmdline, … }: one command line of a task, with Thermos' restart flags.
# The cmdline becomes a store script later (script.nix), once the job's names are known.
let
  types = import ./types.nix;
  t = types;
  field = type: default: { inherit type default; };
in
rec {
  fields = {
    name = {
      # nix_init_<name> must stay within the 128 characters a process name may have.
      type = t.refine t.processName (
        v: if builtins.stringLength v > 119 then "must be at most 119 characters (mxc adds nix_init_<name>)" else null
      );
      required = true;
    };
    cmdline = {
      type = t.nonEmptyStr;
      required = true;
    };
    max_failures = field (t.nonNegative t.int) 1;
    daemon = field t.bool false;
    ephemeral = field t.bool false;
    final = field t.bool false;
    min_duration = field (t.nonNegative t.number) 5;
  };

  Process = types.tag "Process";

  # Label used in messages before the name is known to be valid.
  label =
    v:
    let
      a = types.argsOf v;
    in
    if builtins.isAttrs a && builtins.isString (a.name or null) then
      "Process ${builtins.toJSON a.name}"
    else
      "Process";

  normalize = ctx: v: types.checkArgs "${ctx}: ${label v}" fields (types.argsOf v);
}
