# Job { … } / Service { … }: checks the whole job, writes each process as a store script, adds
# the nix_init_<p> processes and their order constraints (as nix-aurora), and writes two store
# files: the Aurora job JSON (what nix-build prints; only Aurora's fields, so `aurora job create
# --read-json` takes it) and the sidecar `….mxc.json` with mxc's fields (closure, isolation, ports,
# env, secrets, network, health_port). The nix_init cmdlines name the sidecar: nix_init realises it
# on a Thermos executor, and `mxc submit` finds it there. Only attributes the user passed go in.
{ writers }:
let
  types = import ./types.nix;
  t = types;
  util = import ./util.nix;
  task = import ./task.nix;
  configs = import ./configs.nix;
  constraints = import ./constraints.nix;
  mxcFields = import ./mxc-fields.nix;
  inherit (builtins)
    isAttrs
    isString
    toJSON
    length
    concatMap
    match
    elem
    stringLength
    ;
  field = type: default: { inherit type default; };

  fields = {
    name = field t.name null;
    role = {
      type = t.name;
      required = true;
    };
    cluster = {
      type = t.name;
      required = true;
    };
    environment = {
      type = t.name;
      required = true;
    };
    contact = field (t.nullOr t.str) null;
    instances = field (t.atMost 10000 (t.atLeast 1 t.int)) 1;
    task = {
      type = t.kind "Task";
      required = true;
    };
    announce = field (t.nullOr (t.kind "Announcer")) null;
    cron_schedule = field (t.nullOr (
      t.matching " *[^ ]+ +[^ ]+ +[^ ]+ +[^ ]+ +[^ ]+ *" "must be a cron expression of 5 fields (minute hour day month weekday)" t.str
    )) null;
    cron_collision_policy = field (t.enum [
      "KILL_EXISTING"
      "CANCEL_NEW"
      "RUN_OVERLAP"
    ]) "KILL_EXISTING";
    constraints = field (t.nullOr constraints.placementType) null;
    service = field t.bool false;
    update_config = field (t.kind "UpdateConfig") null;
    max_task_failures = field (t.atLeast (-1) t.int) 1;
    production = field t.bool false;
    priority = field t.int 0;
    health_check_config = field (t.kind "HealthCheckConfig") null;
    enable_hooks = field t.bool false;
    # mxc's own settings: isolation, network, env, ports, secrets, closure (see mxc-fields.nix).
    mxc = field (t.simple "an attribute set" (v: isAttrs v && !(t.isDerivation v))) { };
  };

  # A job's name before checking, for messages: name, else its task's, else its first process's.
  jobLabel =
    args:
    let
      n = if isAttrs args && isString (args.name or null) then args.name else task.defaultName (args.task or { });
    in
    if isString n then "job ${toJSON n}" else "job";

  # Store names allow up to 211 characters; long job keys fall back to the short form.
  storeName = long: short: if stringLength long <= 200 then long else short;

  build =
    fn: rawArgs:
    let
      ctx = "mxc: ${jobLabel rawArgs}";
      fctx = "${ctx}: ${fn}";
      args = types.checkArgs fctx fields rawArgs;
      effective = types.withDefaults fields args;
      tk = task.normalize ctx args.task;
      name = args.name or tk.name;
      jobArgsChecked = types.checkArgs fctx { name = fields.name; } { inherit name; };
      mx = mxcFields.normalize ctx (args.mxc or { });
      ports = mx.ports or [ ];
      health = if args ? health_check_config then configs.normalizeHealth ctx args.health_check_config else null;
      key = "${args.cluster}-${args.role}-${args.environment}-${name}";

      problems =
        if effective.service && effective.cron_schedule != null then
          types.fail fctx "a service cannot have a cron_schedule (use Job { … } for cron jobs, or drop cron_schedule)"
        else if badPort != null then
          types.fail fctx "{{thermos.ports[${badPort}]}}: mxc port names are 1-63 lower-case [a-z][a-z0-9_]*"
        else if health != null && health ? port && !(elem health.port allPorts) then
          types.fail "${ctx}: HealthCheckConfig" "attribute 'port' names port ${toJSON health.port}, which mxc.ports does not declare (${
            if allPorts == [ ] then "add mxc.ports = [ ${toJSON health.port} ];" else "ports: ${util.join ", " allPorts}"
          })"
        else if args ? constraints && args.constraints != null then
          builtins.seq (constraints.checkPlacement fctx args.constraints) null
        else
          null;

      # Ports a cmdline binds Aurora's way ({{thermos.ports[NAME]}}) are ports the agent allocates.
      boundPorts = util.unique (concatMap util.portBindings (map (p: p.cmdline) tk.processes));
      badPort = util.findFirst (n: match "[a-z][a-z0-9_]{0,62}" n == null) boundPorts;
      allPorts = util.unique (ports ++ boundPorts);

      scripts = builtins.listToAttrs (
        map (p: {
          inherit (p) name;
          value = writers.writeScript (storeName "mxc-process-${key}-${p.name}" "mxc-process-${p.name}") ''
            #!${writers.shell}
            ${p.cmdline}
          '';
        }) tk.processes
      );

      # A cmdline with {{…}} bindings stays as written (the executor binds it at launch, as Thermos
      # does); any other runs as its store script, exec'd without a shell.
      processJson = concatMap (p: [
        (
          {
            name = "nix_init_${p.name}";
            cmdline = "${writers.nixInit} ${p.name} ${scripts.${p.name}} ${sidecar}";
          }
          # Thermos only orders final processes after final ones: the init of a final runs at teardown too.
          // util.optionalAttrs (p.final or false) { final = true; }
        )
        (p // { cmdline = if util.hasBindings p.cmdline then p.cmdline else "${scripts.${p.name}}"; })
      ]) tk.processes;

      taskJson =
        util.filterAttrs (n: _: elem n [ "max_failures" "max_concurrency" "finalization_wait" ]) tk.args
        // {
          inherit (tk) name;
          processes = processJson;
          constraints =
            map (p: {
              order = [
                "nix_init_${p.name}"
                p.name
              ];
            }) tk.processes
            ++ map (o: { order = o; }) tk.orders;
        }
        // util.optionalAttrs (tk.resources != null) { inherit (tk) resources; };

      # Store paths handed to processes through env are roots too: the agent must realise them.
      envRoots = concatMap (v: let m = match "(/nix/store/[^/ ]+).*" v; in if m == null then [ ] else m) (
        builtins.attrValues (mx.env or { })
      );
      closure = util.unique (
        map (p: "${scripts.${p.name}}") tk.processes ++ [ "${writers.nixInit}" ] ++ (mx.closure or [ ]) ++ envRoots
      );

      mxcJson =
        mx
        // {
          inherit closure;
        }
        // util.optionalAttrs (allPorts != [ ]) { ports = allPorts; }
        // util.optionalAttrs (health != null && health ? port) { health_port = health.port; };

      aurora =
        builtins.removeAttrs args [
          "task"
          "mxc"
          "update_config"
          "health_check_config"
          "announce"
        ]
        // {
          inherit name;
          task = taskJson;
        }
        // util.optionalAttrs (args ? update_config) { update_config = configs.normalizeUpdate ctx args.update_config; }
        // util.optionalAttrs (health != null) { health_check_config = builtins.removeAttrs health [ "port" ]; }
        // util.optionalAttrs (args ? announce) { announce = configs.normalizeAnnouncer ctx args.announce; };

      checked = x: builtins.seq jobArgsChecked (builtins.seq problems x);
      sidecar = writers.writeText (storeName "mxc-job-${key}.mxc.json" "mxc-job-${name}.mxc.json") (toJSON (checked mxcJson));
      json = toJSON (checked aurora);
      drv = writers.writeText (storeName "mxc-job-${key}.json" "mxc-job-${name}.json") json;
    in
    drv
    // {
      # What mxc's API takes: the Aurora job with the sidecar's fields under `mxc` (spec/job.ts).
      spec = checked (aurora // { mxc = mxcJson; });
      inherit
        aurora
        json
        scripts
        sidecar
        ;
      jobKey = "${args.cluster}/${args.role}/${args.environment}/${name}";
    };
in
{
  Job = build "Job";
  Service = args: build "Service" (if isAttrs args then args // { service = true; } else args);
}
