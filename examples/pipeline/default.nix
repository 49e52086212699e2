# pipeline: several processes of one task. `prepare` must succeed before `serve` starts; the
# `sidecar` is ephemeral (not waited for); `cleanup` is final (runs at teardown).
{
  mxc ? import ../../nixlib { },
}:
let
  bb = mxc.busybox;

  prepare = mxc.Process {
    name = "prepare";
    cmdline = ''
      ${bb} mkdir -p www
      echo "<h1>$GREETING from the pipeline, prepared $(${bb} date -u)</h1>" > www/index.html
      echo "prepare: wrote www/index.html"
    '';
  };

  serve = mxc.Process {
    name = "serve";
    cmdline = ''
      exec ${bb} httpd -f -p "''${MXC_PORT_HTTP:?the agent exports MXC_PORT_HTTP}" -h www
    '';
  };

  sidecar = mxc.Process {
    name = "sidecar";
    ephemeral = true;
    cmdline = ''
      while true; do echo "sidecar: alive at $(${bb} date -u)"; ${bb} sleep 5; done
    '';
  };

  cleanup = mxc.Process {
    name = "cleanup";
    final = true;
    cmdline = ''
      ${bb} rm -rf www
      echo "cleanup: removed www"
    '';
  };
in
mxc.Service {
  name = "pipeline";
  cluster = "devcluster";
  role = "www-data";
  environment = "devel";
  task = mxc.Task {
    name = "pipeline";
    processes = [
      prepare
      serve
      sidecar
      cleanup
    ];
    constraints = [
      (mxc.order [
        prepare
        serve
      ])
    ];
    finalization_wait = 10;
    resources = mxc.Resources {
      cpu = 0.25;
      ram = 64 * mxc.MB;
      disk = 16 * mxc.MB;
    };
  };
  mxc = {
    env.GREETING = "Hello";
    ports = [ "http" ];
  };
}
