# web: busybox httpd serving a static site built in the store, on the named port `http` (the
# agent allocates it and exports MXC_PORT_HTTP), with an HTTP health check on /health.
{
  mxc ? import ../../nixlib { },
}:
let
  site = mxc.writeTree "mxc-web-site" {
    "index.html" = ''
      <!doctype html>
      <html><head><title>mxc web</title></head>
      <body><h1>Served by busybox httpd from the Nix store</h1></body></html>
    '';
    # The health check expects exactly "ok".
    "health" = "ok";
  };

  httpd = mxc.Process {
    name = "httpd";
    cmdline = ''
      exec ${mxc.busybox} httpd -f -v -p "''${MXC_PORT_HTTP:?the agent exports MXC_PORT_HTTP}" -h ${site}
    '';
  };
in
mxc.Service {
  name = "web";
  cluster = "devcluster";
  role = "www-data";
  environment = "devel";
  task = mxc.Task {
    processes = [ httpd ];
    resources = mxc.Resources {
      cpu = 0.25;
      ram = 32 * mxc.MB;
      disk = 16 * mxc.MB;
    };
  };
  announce = mxc.Announcer { primary_port = "http"; };
  health_check_config = mxc.HealthCheckConfig {
    port = "http";
    endpoint = "/health";
    expected_response = "ok";
    initial_interval_secs = 2;
    interval_secs = 5;
    max_consecutive_failures = 3;
  };
  update_config = mxc.UpdateConfig {
    batch_size = 1;
    watch_secs = 10;
  };
  mxc.ports = [ "http" ];
}
