# nix_aurora: a job written exactly the way rafikk/nix-aurora's examples are (its prometheus example's
# shape: `aurora.Process`/`aurora.Task`/`aurora.Service`, units under `aurora.utils`, a file expanded
# at launch with `aurora.utils.files.copiedExpandedFile`, a port bound with {{thermos.ports[http]}}),
# with only the import changed: `import ../../nixlib { }` instead of `../../lib/aurora.nix { inherit pkgs; }`.
# There is no nixpkgs here, so busybox httpd stands in for prometheus. The JSON is a valid Aurora job;
# the executor (Thermos, or mxc's agent) binds {{…}} at launch, and the Announcer names the port
# service discovery lists (`mxc jobs endpoints devcluster/www-data/devel/nix_aurora`).
{
  aurora ? import ../../nixlib { },
}:

let

  httpdProcess = aurora.Process {
    name = "httpd";
    cmdline = ''
      ${aurora.busybox} mkdir -p www && cd www &&
        : ${aurora.utils.files.copiedExpandedFile ./files/index.html} ${aurora.utils.files.copiedExpandedFile ./files/health} &&
        exec ${aurora.busybox} httpd -f -v -p {{thermos.ports[http]}} -h .
    '';
  };

  httpdTask = aurora.Task {
    processes = [ httpdProcess ];
    resources = {
      cpu = 0.25;
      ram = 16 * aurora.utils.MB;
      disk = 16 * aurora.utils.MB;
    };
  };

in
aurora.Service {
  name = "nix_aurora";
  cluster = "devcluster";
  environment = "devel";
  role = "www-data";
  instances = 2;
  task = httpdTask;
  announce = aurora.Announcer {
    primary_port = "http";
    port_map = {
      aurora = "{{primary_port}}";
    };
  };
  health_check_config = aurora.HealthCheckConfig {
    initial_interval_secs = 1;
    interval_secs = 2;
    endpoint = "/health";
    expected_response = "ok";
  };
  update_config = aurora.UpdateConfig {
    batch_size = 1;
    restart_threshold = 30;
    watch_secs = 5;
    pulse_interval_secs = 60;
  };
}
