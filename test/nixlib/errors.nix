# Evaluation errors nixlib must raise: { name = { expr; error; }; }. test/nixlib/errors.test.ts
# evaluates each expr with `nix-instantiate --eval --strict` and expects `error` (a string, or a
# list of strings) in stderr.
let
  inherit (import ./common.nix) mxc job proc task1;
  inherit (mxc) Task Process Resources;
  web = task: mxc.Job { name = "web"; cluster = "c"; role = "r"; environment = "e"; inherit task; };
in
{
  unknownProcessAttribute = {
    expr = (web (Task { processes = [ (Process { name = "web"; cmd = "x"; }) ]; })).spec;
    error = ''mxc: job "web": Task "web": Process "web": unknown attribute 'cmd' (known: cmdline, daemon, ephemeral, final, max_failures, min_duration, name)'';
  };
  unknownJobAttribute = {
    expr = (mxc.Job { name = "web"; cluster = "c"; role = "r"; environment = "e"; task = task1; servce = true; }).spec;
    error = [
      ''mxc: job "web": Job: unknown attribute 'servce' (known: announce, cluster,''
      "; did you mean 'service'?"
    ];
  };
  unknownTaskAttribute = {
    expr = (web (Task { processes = [ (proc "a") ]; resource = null; })).spec;
    error = ''mxc: job "web": Task "a": unknown attribute 'resource' '';
  };
  unknownMxcAttribute = {
    expr = (job { name = "web"; mxc.port = [ "http" ]; } task1).spec;
    error = ''mxc: job "web": mxc: unknown attribute 'port' (known: closure, env, isolation, network, ports, secrets)'';
  };
  unknownServiceAttribute = {
    expr = (mxc.Service { cluster = "c"; role = "r"; environment = "e"; task = task1; instance = 2; }).spec;
    error = ''mxc: job "a": Service: unknown attribute 'instance' '';
  };
  missingAttribute = {
    expr = (mxc.Job { name = "web"; cluster = "c"; environment = "e"; task = task1; }).spec;
    error = ''mxc: job "web": Job: missing attribute 'role' (required: cluster, environment, role, task)'';
  };
  missingCmdline = {
    expr = (web (Task { processes = [ (Process { name = "p"; }) ]; })).spec;
    error = ''mxc: job "web": Task "p": Process "p": missing attribute 'cmdline' '';
  };
  wrongTypeProcessFlag = {
    expr = (web (Task { processes = [ (Process { name = "p"; cmdline = "true"; daemon = "yes"; }) ]; })).spec;
    error = ''mxc: job "web": Task "p": Process "p": attribute 'daemon' must be a bool, got a string ("yes")'';
  };
  wrongTypeInstances = {
    expr = (job { name = "web"; instances = "2"; } task1).spec;
    error = ''mxc: job "web": Job: attribute 'instances' must be an integer, got a string ("2")'';
  };
  wrongTypeTask = {
    expr = (job { name = "web"; } "a task").spec;
    error = ''mxc: job "web": Job: attribute 'task' must be a Task { … }, got a string ("a task")'';
  };
  wrongKindInList = {
    expr = (web (Task { processes = [ (Resources { cpu = 1; ram = 1; disk = 1; }) ]; })).spec;
    error = ''attribute 'processes' element 1 must be a Process { … }, got a Resources { … }'';
  };
  uncalledFunction = {
    expr = (web (Task { processes = [ Process ]; })).spec;
    error = ''attribute 'processes' element 1 must be a Process { … }, got a function (did you forget to call it?)'';
  };
  badProcessName = {
    expr = (web (Task { name = "t"; processes = [ (Process { name = "has space"; cmdline = "true"; }) ]; })).spec;
    error = ''mxc: job "web": Task "t": Process "has space": attribute 'name' must be 1-128 characters'';
  };
  orderNamesMissingProcess = {
    expr = (web (Task { processes = [ (proc "a") (proc "b") ]; constraints = [ (mxc.order [ "a" "nope" ]) ]; })).spec;
    error = ''mxc: job "web": Task "a": an order constraint names process "nope", which the task does not have'';
  };
  orderTooShort = {
    expr = (web (Task { processes = [ (proc "a") ]; constraints = [ (mxc.order [ "a" ]) ]; })).spec;
    error = ''mxc: job "web": Task "a": order: attribute 'order' must name at least two processes'';
  };
  orderCycle = {
    expr = (web (Task {
      processes = [ (proc "a") (proc "b") (proc "c") ];
      constraints = [ (mxc.order [ "a" "b" "c" ]) (mxc.order [ "c" "a" ]) ];
    })).spec;
    error = ''mxc: job "web": Task "a": order constraints form a cycle: a -> b -> c -> a'';
  };
  regularAfterFinal = {
    expr = (web (Task {
      processes = [ (proc "a") (Process { name = "f"; cmdline = "true"; final = true; }) ];
      constraints = [ (mxc.order [ "f" "a" ]) ];
    })).spec;
    error = ''mxc: job "web": Task "a": non-final process "a" is ordered after final process "f"; final processes run at teardown'';
  };
  duplicateProcessNames = {
    expr = (web (Task { processes = [ (proc "a") (proc "b") (proc "a") ]; })).spec;
    error = ''mxc: job "web": Task "a": duplicate process name "a"'';
  };
  processNameClashesWithInit = {
    expr = (web (Task { processes = [ (proc "a") (proc "nix_init_a") ]; })).spec;
    error = ''mxc: job "web": Task "a": process name "nix_init_a" clashes with the init process mxc adds for "a"'';
  };
  negativeRam = {
    expr = (web (Task { processes = [ (proc "a") ]; resources = Resources { cpu = 1; ram = -1; disk = 0; }; })).spec;
    error = ''mxc: job "web": Task "a": Resources: attribute 'ram' must not be negative, got -1'';
  };
  negativeCpu = {
    expr = (web (Task { processes = [ (proc "a") ]; resources = Resources { cpu = -0.5; ram = 1; disk = 0; }; })).spec;
    error = ''mxc: job "web": Task "a": Resources: attribute 'cpu' must not be negative, got -0.5'';
  };
  missingResource = {
    expr = (web (Task { processes = [ (proc "a") ]; resources = Resources { cpu = 1; ram = 1; }; })).spec;
    error = ''mxc: job "web": Task "a": Resources: missing attribute 'disk' '';
  };
  serviceWithCron = {
    expr = (mxc.Service { name = "web"; cluster = "c"; role = "r"; environment = "e"; task = task1; cron_schedule = "* * * * *"; }).spec;
    error = ''mxc: job "web": Service: a service cannot have a cron_schedule'';
  };
  badCronSchedule = {
    expr = (job { name = "web"; cron_schedule = "* * *"; } task1).spec;
    error = ''mxc: job "web": Job: attribute 'cron_schedule' must be a cron expression of 5 fields'';
  };
  badCollisionPolicy = {
    expr = (job { name = "web"; cron_collision_policy = "KILL"; } task1).spec;
    error = ''mxc: job "web": Job: attribute 'cron_collision_policy' must be one of "KILL_EXISTING", "CANCEL_NEW", "RUN_OVERLAP", got a string ("KILL")'';
  };
  badIsolation = {
    expr = (job { name = "web"; mxc.isolation = "vm"; } task1).spec;
    error = ''mxc: job "web": mxc: attribute 'isolation' must be one of "process", "sandbox", "microvm", got a string ("vm")'';
  };
  badEnvName = {
    expr = (job { name = "web"; mxc.env."1X" = "y"; } task1).spec;
    error = ''mxc: job "web": mxc: attribute 'env': variable name "1X" must match'';
  };
  badEnvValue = {
    expr = (job { name = "web"; mxc.env.X = 1; } task1).spec;
    error = ''mxc: job "web": mxc: attribute 'env' attribute 'X' must be a string or a store path'';
  };
  badPortName = {
    expr = (job { name = "web"; mxc.ports = [ "HTTP" ]; } task1).spec;
    error = ''mxc: job "web": mxc: attribute 'ports' element 1 must be a port name of 1-63 lower-case'';
  };
  longPortName = {
    expr = (job { name = "web"; mxc.ports = [ "p${builtins.concatStringsSep "" (builtins.genList (_: "x") 63)}" ]; } task1).spec;
    error = ''mxc: job "web": mxc: attribute 'ports' element 1 must be a port name of 1-63 lower-case'';
  };
  duplicatePort = {
    expr = (job { name = "web"; mxc.ports = [ "http" "http" ]; } task1).spec;
    error = ''mxc: job "web": mxc: attribute 'ports' names port "http" twice'';
  };
  healthCheckOnUndeclaredPort = {
    expr = (job { name = "web"; health_check_config = mxc.HealthCheckConfig { port = "http"; }; } task1).spec;
    error = ''mxc: job "web": HealthCheckConfig: attribute 'port' names port "http", which mxc.ports does not declare (add mxc.ports = [ "http" ];)'';
  };
  unknownHealthCheckAttribute = {
    expr = (job { name = "web"; health_check_config = mxc.HealthCheckConfig { path = "/x"; }; } task1).spec;
    error = ''mxc: job "web": HealthCheckConfig: unknown attribute 'path' '';
  };
  badPlacementLimit = {
    expr = (job { name = "web"; constraints.host = "limit:x"; } task1).spec;
    error = ''mxc: job "web": Job: attribute 'constraints' attribute 'host' must be "limit:N" with N a positive integer'';
  };
  badPlacementAttributeName = {
    expr = (job { name = "web"; constraints."a b" = "x"; } task1).spec;
    error = ''mxc: job "web": Job: attribute 'constraints': attribute name "a b" must use letters'';
  };
  processNotAnAttrset = {
    expr = Process "echo hi";
    error = ''mxc: Process: expected an attribute set of arguments, got a string ("echo hi")'';
  };
  writeTreeEscapes = {
    expr = (mxc.writeTree "site" { "../etc/passwd" = "x"; }).drvPath;
    error = ''mxc: writeTree "site": file name "../etc/passwd" must be a relative path'';
  };
  # nix-build forces the derivation, not .spec: the same checks must fire there.
  errorsFireOnBuild = {
    expr = (web (Task { processes = [ (Process { name = "web"; cmd = "x"; }) ]; })).drvPath;
    error = ''mxc: job "web": Task "web": Process "web": unknown attribute 'cmd' '';
  };
}
