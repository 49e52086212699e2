# hello_world: nix-aurora's first example. A service whose one process prints a greeting and then
# stays up. `nix-build examples/hello_world` outputs the job JSON.
{
  mxc ? import ../../nixlib { },
}:
let
  hello_world = mxc.Process {
    name = "hello_world";
    cmdline = ''
      echo "Hello, world!"
      while true; do ${mxc.busybox} sleep 3600; done
    '';
  };
in
mxc.Service {
  cluster = "devcluster";
  role = "www-data";
  environment = "devel";
  task = mxc.Task {
    processes = [ hello_world ];
    resources = mxc.Resources {
      cpu = 0.25;
      ram = 32 * mxc.MB;
      disk = 8 * mxc.MB;
    };
  };
}
