# Task { processes, constraints, resources, … }: the processes that run together as one instance.
let
  types = import ./types.nix;
  t = types;
  process = import ./process.nix;
  resources = import ./resources.nix;
  constraints = import ./constraints.nix;
  checks = import ./checks.nix;
  util = import ./util.nix;
  field = type: default: { inherit type default; };
in
rec {
  fields = {
    name = field t.processName null;
    processes = {
      type = t.nonEmptyList (t.kind "Process");
      required = true;
    };
    constraints = field (t.listOf (t.kind "Constraint")) [ ];
    resources = field (t.nullOr (t.kind "Resources")) null;
    max_failures = field (t.nonNegative t.int) 1;
    max_concurrency = field (t.nonNegative t.int) 0;
    finalization_wait = field (t.nonNegative t.number) 30;
  };

  Task = types.tag "Task";

  # The name a task gets when none is given: its first process's (as nix-aurora).
  defaultName =
    v:
    let
      a = types.argsOf v;
      ps = a.processes or [ ];
    in
    if builtins.isString (a.name or null) then
      a.name
    else if builtins.isList ps && ps != [ ] && builtins.isAttrs (builtins.head ps) then
      (types.argsOf (builtins.head ps)).name or null
    else
      null;

  label = v: let n = defaultName v; in if builtins.isString n then "Task ${builtins.toJSON n}" else "Task";

  # Checks a task under ctx and returns
  #   { name; processes = [ checked process args ]; orders = [ [names] ]; args = what the user passed; }
  normalize =
    ctx: v:
    let
      tctx = "${ctx}: ${label v}";
      args = types.checkArgs tctx fields (types.argsOf v);
      procs = map (process.normalize tctx) args.processes;
      names = map (p: p.name) procs;
      initNames = map (n: "nix_init_${n}") names;
      clash = util.findFirst (n: builtins.elem n names) initNames;
      orders = map (c: (constraints.normalizeOrder "${tctx}: order" c).order) (args.constraints or [ ]);
      res = if args.resources or null == null then null else resources.normalize "${tctx}: Resources" args.resources;
      checked = checks.checkTask tctx {
        names = names ++ (if clash == null then initNames else [ ]);
        inherit orders;
        finals = map (p: p.name) (builtins.filter (p: p.final or false) procs);
      } true;
    in
    if clash != null then
      types.fail tctx "process name ${builtins.toJSON clash} clashes with the init process mxc adds for ${
        builtins.toJSON (builtins.substring 9 (-1) clash)
      }"
    else
      builtins.seq checked {
        name = args.name or (builtins.head names);
        processes = procs;
        inherit orders args;
        resources = res;
      };
}
