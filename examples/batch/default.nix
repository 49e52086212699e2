# batch: a run-to-completion job (service = false, the default): each instance prints its
# result and exits 0.
{
  mxc ? import ../../nixlib { },
}:
let
  compute = mxc.Process {
    name = "compute";
    cmdline = ''
      echo "batch: 6 * 7 = $((6 * 7))"
      echo "batch: done"
    '';
  };
in
mxc.Job {
  name = "batch";
  cluster = "devcluster";
  role = "www-data";
  environment = "devel";
  instances = 2;
  max_task_failures = 1;
  task = mxc.Task {
    processes = [ compute ];
    resources = mxc.Resources {
      cpu = 0.05;
      ram = 16 * mxc.MB;
      disk = 8 * mxc.MB;
    };
  };
}
