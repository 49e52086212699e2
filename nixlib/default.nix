# nixlib: write mxc jobs in Nix, the nix-aurora way. `import ./nixlib { }` works with nothing but
# Debian's nix-bin and busybox-static; `import ./nixlib { pkgs = import <nixpkgs> { }; }` makes
# scripts use pkgs.bash / pkgs.busybox / pkgs.coreutils instead of the host's busybox.
{
  pkgs ? null,
  system ? if pkgs != null then pkgs.stdenv.hostPlatform.system or pkgs.system else builtins.currentSystem or "x86_64-linux",
  # Only used without pkgs: where the host's static busybox is, and its flat sha256 if pinned.
  hostBusybox ? "/usr/bin/busybox",
  busyboxSha256 ? null,
}:
let
  types = import ./types.nix;
  busybox =
    if pkgs != null then
      null
    else
      import ./busybox.nix {
        inherit system hostBusybox;
        sha256 = busyboxSha256;
      };
  writers = import ./script.nix { inherit pkgs system busybox; };
  job = import ./job.nix { inherit writers; };
  constraints = import ./constraints.nix;
  configs = import ./configs.nix;
in
import ./units.nix
// {
  inherit (job) Job Service;
  inherit (import ./task.nix) Task;
  inherit (import ./process.nix) Process;
  inherit (import ./resources.nix) Resources;
  inherit (configs) UpdateConfig HealthCheckConfig Announcer;
  inherit (constraints)
    order
    value
    not
    limit
    dedicated
    ;

  # Store helpers for examples and jobs: text files, executable scripts, static directories.
  inherit (writers) writeText writeScript writeTree;

  # A busybox binary by store path (`${mxc.busybox} httpd …`) and the scripts' interpreter.
  busybox = writers.busyboxBin;
  inherit (writers) shell;

  # For tests and tools: nixlib's internals that are worth checking on their own.
  internal = {
    inherit types system;
    inherit (import ./checks.nix) findCycle;
    busyboxDir = busybox;
  };
}
