# cron: a batch job the coordinator starts on a schedule (every 5 minutes); a run still going
# when the next is due makes the new one be skipped (CANCEL_NEW).
{
  mxc ? import ../../nixlib { },
}:
let
  tick = mxc.Process {
    name = "tick";
    cmdline = ''
      echo "cron: tick at $(${mxc.busybox} date -u)"
    '';
  };
in
mxc.Job {
  name = "cron";
  cluster = "devcluster";
  role = "www-data";
  environment = "devel";
  cron_schedule = "*/5 * * * *";
  cron_collision_policy = "CANCEL_NEW";
  task = mxc.Task {
    processes = [ tick ];
    resources = mxc.Resources {
      cpu = 0.05;
      ram = 16 * mxc.MB;
      disk = 8 * mxc.MB;
    };
  };
}
