# microvm: a batch job run inside a QEMU microVM; the guest sees the job's closure as /nix/store.
# Its process shows the guest kernel and store, stays up a few seconds, then exits 0.
{
  mxc ? import ../../nixlib { },
}:
let
  bb = mxc.busybox;
  guest = mxc.Process {
    name = "guest";
    cmdline = ''
      echo "microvm: kernel $(${bb} uname -r)"
      echo "microvm: /nix/store holds:"
      ${bb} ls /nix/store
      ${bb} sleep 3
      echo "microvm: done"
    '';
  };
in
mxc.Job {
  name = "microvm";
  cluster = "devcluster";
  role = "www-data";
  environment = "devel";
  task = mxc.Task {
    processes = [ guest ];
    resources = mxc.Resources {
      cpu = 0.5;
      ram = 256 * mxc.MB;
      disk = 64 * mxc.MB;
    };
  };
  mxc = {
    isolation = "microvm";
    network = "none";
  };
}
