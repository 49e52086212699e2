# Job { mxc = { … }; }: mxc's own settings (isolation, network, env, ports, secrets, extra
# closure roots), kept under one key so the rest of the JSON stays nix-aurora's shape.
let
  types = import ./types.nix;
  t = types;
  util = import ./util.nix;
  field = type: default: { inherit type default; };
  envName = "[A-Za-z_][A-Za-z0-9_]*";
in
rec {
  fields = {
    isolation = field (t.enum [
      "process"
      "sandbox"
      "microvm"
    ]) "process";
    network = field (t.enum [
      "host"
      "none"
    ]) "host";
    env = field (t.attrsOf (t.either t.str t.storePathLike)) { };
    ports = field (t.refine (t.listOf (t.matching "[a-z][a-z0-9_]{0,62}" "must be a port name of 1-63 lower-case [a-z][a-z0-9_]*" t.str)) (
      v: if util.duplicates v != [ ] then "names port ${builtins.toJSON (builtins.head (util.duplicates v))} twice" else null
    )) [ ];
    secrets = field (t.listOf (t.matching "[A-Za-z0-9_.-]+" "must be a secret name of letters, digits, _ . -" t.str)) [ ];
    # Extra closure roots (store paths the processes need but do not mention in their cmdline).
    closure = field (t.listOf t.storePathLike) [ ];
  };

  # Checked mxc attributes, with env values and closure roots turned into strings.
  normalize =
    ctx: v:
    let
      mctx = "${ctx}: mxc";
      args = types.checkArgs mctx fields v;
      badEnv = util.findFirst (n: builtins.match envName n == null) (builtins.attrNames (args.env or { }));
    in
    if badEnv != null then
      types.fail mctx "attribute 'env': variable name ${builtins.toJSON badEnv} must match [A-Za-z_][A-Za-z0-9_]*"
    else
      args
      // util.optionalAttrs (args ? env) { env = builtins.mapAttrs (_: toString) args.env; }
      // util.optionalAttrs (args ? closure) { closure = map (p: "${p}") args.closure; };
}
