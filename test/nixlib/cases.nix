# Expected-value tests for nixlib: { name = { expr; expected; }; }, compared by
# test/nixlib/cases.test.ts through `nix-instantiate --eval --strict --json`.
let
  inherit (import ./common.nix)
    mxc
    job
    proc
    task1
    isStorePath
    ;
  inherit (mxc)
    Job
    Service
    Task
    Process
    Resources
    ;
in
{
  units = {
    expr = with mxc; [ B KB MB GB (64 * MB) ];
    expected = [ 1 1024 1048576 1073741824 67108864 ];
  };

  onlyPassedAttributesReachTheJson = {
    expr = builtins.attrNames (job { } task1).spec;
    expected = [ "cluster" "environment" "mxc" "name" "role" "task" ];
  };

  jobNameDefaultsToTaskNameWhichDefaultsToFirstProcess = {
    expr = let s = (job { } (Task { processes = [ (proc "first") (proc "second") ]; })).spec; in [ s.name s.task.name ];
    expected = [ "first" "first" ];
  };

  explicitNamesWin = {
    expr = let s = (job { name = "j"; } (Task { name = "t"; processes = [ (proc "p") ]; })).spec; in [ s.name s.task.name ];
    expected = [ "j" "t" ];
  };

  serviceSetsServiceTrue = {
    expr = (Service { cluster = "c"; role = "r"; environment = "e"; task = task1; }).spec.service;
    expected = true;
  };

  batchJobHasNoServiceKeyUnlessPassed = {
    expr = [ ((job { } task1).spec ? service) (job { service = false; } task1).spec.service ];
    expected = [ false false ];
  };

  cronAndInstancesPassThrough = {
    expr = let s = (job { cron_schedule = "0 * * * *"; cron_collision_policy = "RUN_OVERLAP"; instances = 3; } task1).spec; in {
      inherit (s) cron_schedule cron_collision_policy instances;
    };
    expected = { cron_schedule = "0 * * * *"; cron_collision_policy = "RUN_OVERLAP"; instances = 3; };
  };

  jobScalarsPassThrough = {
    expr = let s = (job { contact = "ops@example.org"; max_task_failures = -1; production = true; priority = 5; enable_hooks = true; } task1).spec; in {
      inherit (s) contact max_task_failures production priority enable_hooks;
    };
    expected = { contact = "ops@example.org"; max_task_failures = -1; production = true; priority = 5; enable_hooks = true; };
  };

  processFlagsPassThroughAndNothingElse = {
    expr = builtins.removeAttrs (builtins.elemAt (job { } (Task { processes = [
      (Process { name = "p"; cmdline = "true"; max_failures = 3; daemon = true; ephemeral = true; min_duration = 1.5; })
    ]; })).spec.task.processes 1) [ "cmdline" ];
    expected = { name = "p"; max_failures = 3; daemon = true; ephemeral = true; min_duration = 1.5; };
  };

  taskSettingsPassThrough = {
    expr = builtins.removeAttrs (job { } (Task {
      processes = [ (proc "a") ];
      max_failures = 2;
      max_concurrency = 4;
      finalization_wait = 10;
      resources = Resources { cpu = 0.5; ram = 64 * mxc.MB; disk = 1 * mxc.GB; };
    })).spec.task [ "processes" "constraints" ];
    expected = {
      name = "a";
      max_failures = 2;
      max_concurrency = 4;
      finalization_wait = 10;
      resources = { cpu = 0.5; ram = 67108864; disk = 1073741824; };
    };
  };

  eachProcessGetsAnInitProcessAndOrder = {
    expr = let s = (job { } (Task {
      processes = [ (proc "a") (proc "b") ];
      constraints = [ (mxc.order [ "a" "b" ]) ];
    })).spec.task; in {
      names = map (p: p.name) s.processes;
      inherit (s) constraints;
    };
    expected = {
      names = [ "nix_init_a" "a" "nix_init_b" "b" ];
      constraints = [
        { order = [ "nix_init_a" "a" ]; }
        { order = [ "nix_init_b" "b" ]; }
        { order = [ "a" "b" ]; }
      ];
    };
  };

  orderAcceptsProcessValues = {
    expr = let a = proc "a"; b = proc "b"; c = proc "c"; in
      builtins.elemAt (job { } (Task { processes = [ a b c ]; constraints = [ (mxc.order [ a b c ]) ]; })).spec.task.constraints 3;
    expected = { order = [ "a" "b" "c" ]; };
  };

  cmdlineIsTheScriptStorePath = {
    expr = let j = job { } task1; ps = j.spec.task.processes; in {
      scriptIsStorePath = isStorePath (builtins.elemAt ps 1).cmdline;
      scriptName = builtins.match ".*-(mxc-process-.*)" (builtins.elemAt ps 1).cmdline;
      sameAsScripts = (builtins.elemAt ps 1).cmdline == "${j.scripts.a}";
      initRealisesScriptAndSidecar = builtins.match "/nix/store/[0-9a-z]{32}-mxc-nix-init a ([^ ]+) (/nix/store/[0-9a-z]{32}-mxc-job-c-r-e-a[.]mxc[.]json)" (builtins.elemAt ps 0).cmdline
        == [ "${j.scripts.a}" "${j.sidecar}" ];
      closure = builtins.length j.spec.mxc.closure == 2 && builtins.head j.spec.mxc.closure == "${j.scripts.a}";
    };
    expected = {
      scriptIsStorePath = true;
      scriptName = [ "mxc-process-c-r-e-a-a" ];
      sameAsScripts = true;
      initRealisesScriptAndSidecar = true;
      closure = true;
    };
  };

  # A cmdline with Thermos bindings stays as written (the executor binds it); its bound ports are
  # ports the agent allocates.
  bindingCmdlineStaysAndDeclaresPorts = {
    expr = let
      j = job { mxc.ports = [ "admin" ]; } (mxc.Task { processes = [ (mxc.Process { name = "a"; cmdline = "serve --port={{thermos.ports[http]}} --id={{mesos.instance}}"; }) ]; });
    in { cmdline = (builtins.elemAt j.spec.task.processes 1).cmdline; ports = j.spec.mxc.ports; };
    expected = { cmdline = "serve --port={{thermos.ports[http]}} --id={{mesos.instance}}"; ports = [ "admin" "http" ]; };
  };

  # The Aurora document holds Aurora's fields only; mxc's go to the sidecar.
  auroraJsonHasNoMxcFields = {
    expr = let
      j = job { mxc.ports = [ "http" ]; health_check_config = mxc.HealthCheckConfig { port = "http"; }; } task1;
      doc = builtins.fromJSON (builtins.unsafeDiscardStringContext j.json);
    in { mxc = doc ? mxc; hc = doc.health_check_config; side = builtins.removeAttrs j.spec.mxc [ "closure" ]; };
    expected = { mxc = false; hc = { }; side = { ports = [ "http" ]; health_port = "http"; }; };
  };

  # nix-aurora's authoring API: units under utils, Announcer's port_map written as Aurora's portmap,
  # UpdateConfig's pulse_interval_secs.
  nixAuroraSpellings = {
    expr = let
      s = (job {
        announce = mxc.Announcer { port_map = { aurora = "{{primary_port}}"; }; };
        update_config = mxc.UpdateConfig { pulse_interval_secs = 60; restart_threshold = 30; };
      } task1).spec;
    in { inherit (s) announce update_config; units = [ mxc.utils.B mxc.utils.KB mxc.utils.MB mxc.utils.GB ]; };
    expected = {
      announce = { portmap = { aurora = "{{primary_port}}"; }; };
      update_config = { pulse_interval_secs = 60; restart_threshold = 30; };
      units = [ 1 1024 1048576 1073741824 ];
    };
  };

  copiedExpandedFileListsItsBindings = {
    expr = let
      frag = mxc.utils.files.copiedExpandedFile ./expand-fixture.yml;
    in builtins.match "[$][(]/nix/store/[0-9a-z]{32}-mxc-expand-file /nix/store/[0-9a-z]{32}-expand-fixture[.]yml (.*)[)]" frag;
    expected = [ "'expand-fixture.yml' 'thermos.ports[http]' '{{thermos.ports[http]}}' 'mesos.instance' '{{mesos.instance}}'" ];
  };

  scriptInterpreterIsAStorePath = {
    expr = builtins.match "/nix/store/[0-9a-z]{32}-busybox/busybox sh" mxc.shell != null;
    expected = true;
  };

  finalProcessGetsAFinalInit = {
    expr = map (p: p.final or false) (job { } (Task { processes = [
      (proc "main")
      (Process { name = "cleanup"; cmdline = "true"; final = true; })
    ]; })).spec.task.processes;
    expected = [ false false true true ];
  };

  mxcFieldsPassThrough = {
    expr = let s = (job {
      mxc = {
        isolation = "sandbox";
        network = "none";
        env.GREETING = "hi";
        ports = [ "http" "admin" ];
        secrets = [ "db.password" ];
      };
    } task1).spec.mxc; in builtins.removeAttrs s [ "closure" ];
    expected = {
      isolation = "sandbox";
      network = "none";
      env.GREETING = "hi";
      ports = [ "http" "admin" ];
      secrets = [ "db.password" ];
    };
  };

  extraClosureRootsAndStorePathEnv = {
    expr = let
      file = mxc.writeText "data.txt" "data";
      s = (job { mxc = { env.DATA = file; closure = [ file ]; }; } task1).spec.mxc;
    in {
      env = s.env.DATA == "${file}";
      count = builtins.length s.closure;
      last = builtins.elemAt s.closure 2 == "${file}";
    };
    expected = { env = true; count = 3; last = true; };
  };

  storePathsInEnvBecomeClosureRoots = {
    expr = let
      file = mxc.writeText "data.txt" "data";
      s = (job { mxc.env = { DATA = "${file}/sub"; PLAIN = "/etc/x"; }; } task1).spec.mxc;
    in [ (builtins.length s.closure) (builtins.elemAt s.closure 2 == "${file}") ];
    expected = [ 3 true ];
  };

  placementConstraintHelpers = {
    expr = (job { constraints = { host = mxc.not "bad-host"; rack = mxc.limit 2; zone = mxc.value "eu"; } // mxc.dedicated "r/web"; } task1).spec.constraints;
    expected = { host = "!bad-host"; rack = "limit:2"; zone = "eu"; dedicated = "r/web"; };
  };

  configsCarryOnlyPassedAttributes = {
    expr = let s = (job {
      update_config = mxc.UpdateConfig { batch_size = 2; };
      health_check_config = mxc.HealthCheckConfig { endpoint = "/ping"; port = "http"; };
      announce = mxc.Announcer { primary_port = "http"; portmap.health = "http"; };
      mxc.ports = [ "http" ];
    } task1).spec; in { inherit (s) update_config health_check_config announce; inherit (s.mxc) health_port; };
    expected = {
      update_config = { batch_size = 2; };
      health_check_config = { endpoint = "/ping"; };
      announce = { primary_port = "http"; portmap.health = "http"; };
      health_port = "http";
    };
  };

  plainAttrsetsWorkInPlaceOfConstructors = {
    expr = (job { } { processes = [ { name = "p"; cmdline = "true"; } ]; }).spec.task.name;
    expected = "p";
  };

  findCycle = {
    expr = [
      (mxc.internal.findCycle [ [ "a" "b" ] [ "b" "c" ] [ "c" "a" ] ])
      (mxc.internal.findCycle [ [ "a" "b" "c" ] [ "a" "c" ] ])
      (mxc.internal.findCycle [ [ "x" "y" ] [ "a" "b" ] [ "b" "a" ] ])
    ];
    expected = [ [ "a" "b" "c" "a" ] null [ "a" "b" "a" ] ];
  };

  jsonIsTheSpec = {
    expr = let j = job { } task1; in builtins.fromJSON (builtins.unsafeDiscardStringContext j.json) == j.aurora;
    expected = true;
  };

  jobKey = {
    expr = (job { name = "n"; } task1).jobKey;
    expected = "c/r/e/n";
  };

  # With pkgs, scripts (nix_init's too) run under pkgs.bash (fake pkgs here:
  # there is no nixpkgs on this machine, so only the wiring is checked).
  withPkgs = {
    expr = let
      fake = name: { outPath = "/nix/store/00000000000000000000000000000000-${name}"; };
      pkgs = {
        bash = fake "bash";
        busybox = fake "busybox";
        coreutils = fake "coreutils";
        writeTextFile = { name, text, executable }: fake name // { inherit text executable; };
        writeText = name: text: fake name // { inherit text; };
        linkFarm = name: entries: fake name;
      };
      m = import ../../nixlib { inherit pkgs; };
      j = m.Job { cluster = "c"; role = "r"; environment = "e"; task = m.Task { processes = [ (m.Process { name = "a"; cmdline = "echo a"; }) ]; }; };
    in {
      inherit (m) busybox shell;
      script = j.scripts.a.text;
      executable = j.scripts.a.executable;
      processes = j.spec.task.processes;
      closure = j.spec.mxc.closure;
    };
    expected = {
      busybox = "/nix/store/00000000000000000000000000000000-busybox/bin/busybox";
      shell = "/nix/store/00000000000000000000000000000000-bash/bin/bash";
      script = "#!/nix/store/00000000000000000000000000000000-bash/bin/bash\necho a\n";
      executable = true;
      processes = [
        { name = "nix_init_a"; cmdline = "/nix/store/00000000000000000000000000000000-mxc-nix-init a /nix/store/00000000000000000000000000000000-mxc-process-c-r-e-a-a /nix/store/00000000000000000000000000000000-mxc-job-c-r-e-a.mxc.json"; }
        { name = "a"; cmdline = "/nix/store/00000000000000000000000000000000-mxc-process-c-r-e-a-a"; }
      ];
      closure = [
        "/nix/store/00000000000000000000000000000000-mxc-process-c-r-e-a-a"
        "/nix/store/00000000000000000000000000000000-mxc-nix-init"
      ];
    };
  };
}
