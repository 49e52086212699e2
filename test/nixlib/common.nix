# Shared fixtures for the nixlib expected-value and error tests.
rec {
  mxc = import ../../nixlib { };

  # A job with only the required attributes, plus whatever the test adds.
  job =
    extra: task:
    mxc.Job (
      {
        cluster = "c";
        role = "r";
        environment = "e";
        inherit task;
      }
      // extra
    );

  proc = name: mxc.Process {
    inherit name;
    cmdline = "echo ${name}";
  };

  task1 = mxc.Task { processes = [ (proc "a") ]; };

  storePath = "/nix/store/[0-9a-df-np-sv-z]{32}-[A-Za-z0-9+._?=-]+";
  isStorePath = s: builtins.match storePath s != null;
}
