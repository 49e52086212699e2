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
  units = import ./units.nix;
  util = import ./util.nix;
in
units
// {
  # nix-aurora's helpers, spelled as its examples write them: `utils.MB`, `utils.files.…`.
  utils = units // {
    files = {
      # A file whose {{…}} bindings (`{{thermos.ports[http]}}`, `{{mesos.instance}}`, …) are bound
      # at launch: use it inside a cmdline (`-config.file=${utils.files.copiedExpandedFile ./x.yml}`);
      # it expands to a shell substitution that writes the bound copy of the store file into the
      # sandbox and yields its name. The bindings are listed in the cmdline, so the executor binds them.
      copiedExpandedFile =
        filePath:
        let
          keys = util.bindings (builtins.readFile filePath);
          q = util.shellQuote;
          pairs = map (k: "${q k} ${q "{{${k}}}"}") keys;
        in
        "$(${util.join " " ([ "${writers.expandFile}" "${filePath}" (q (baseNameOf (toString filePath))) ] ++ pairs)})";
    };
  };

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
