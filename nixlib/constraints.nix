# Constraints. Task-level: `order [ a b ]` (b starts after a succeeded). Job-level placement,
# Aurora style: attribute → "value" | "!value" | "limit:N"; `dedicated` reserves nodes.
let
  types = import ./types.nix;
  inherit (builtins) isString match toJSON;

  nameOf = p: if isString p then p else (types.argsOf p).name or (throw "mxc: order: a process without a name");

  orderFields = {
    order = {
      type = types.refine (types.listOf (types.either types.processName (types.kind "Process"))) (
        v: if builtins.length v < 2 then "must name at least two processes" else null
      );
      required = true;
    };
  };

  placementValue = types.refine types.nonEmptyStr (
    v:
    if match "limit:.*" v != null && match "limit:[1-9][0-9]*" v == null then
      "must be \"limit:N\" with N a positive integer, got ${toJSON v}"
    else if v == "!" then
      "must name a value after \"!\""
    else
      null
  );
in
{
  # `order [ "prepare" "serve" ]` or with Process values: `order [ prepare serve ]`.
  order = procs: {
    _mxcKind = "Constraint";
    args.order = procs;
  };

  # Placement helpers for Job { constraints = { … }; }.
  value = v: v;
  not = v: "!${v}";
  limit = n: "limit:${toString n}";
  dedicated = v: { dedicated = v; };

  # A task's order constraints as JSON ({ order = [ names ]; }), checked under ctx.
  normalizeOrder =
    ctx: c:
    let
      args = types.checkArgs ctx orderFields (types.argsOf c);
    in
    {
      order = map nameOf args.order;
    };

  placementType = types.attrsOf placementValue;

  # Attribute names as spec/job.ts allows them.
  checkPlacement =
    ctx: constraints:
    let
      bad = builtins.filter (n: match "[A-Za-z0-9_.-]+" n == null) (builtins.attrNames constraints);
    in
    if bad != [ ] then
      types.fail ctx "attribute 'constraints': attribute name ${toJSON (builtins.head bad)} must use letters, digits, _ . -"
    else
      constraints;
}
