# mxc's flake: no inputs, works offline. `lib` is nixlib without nixpkgs; `jobs.<system>.<name>`
# is every example's job JSON. Pure evaluation cannot read /usr/bin/busybox, so nixlib uses its
# pinned hash (nixlib/busybox-pin.nix) here and gets the same store paths as `nix-build examples/x`.
{
  description = "mxc: a Nix-native workload orchestrator (job library, examples, modules)";

  outputs =
    { self }:
    let
      systems = [ "x86_64-linux" ];
      forSystems = f: builtins.listToAttrs (map (system: { name = system; value = f system; }) systems);
      entries = builtins.readDir ./examples;
      exampleDirs = builtins.filter (n: entries.${n} == "directory") (builtins.attrNames entries);
    in
    {
      # nixlib without pkgs, for x86_64-linux; `import ./nixlib { inherit system; }` for others.
      lib = import ./nixlib { system = "x86_64-linux"; };

      jobs = forSystems (
        system:
        let
          mxc = import ./nixlib { inherit system; };
        in
        builtins.listToAttrs (
          map (name: {
            inherit name;
            # nixlib goes in as `mxc`, or as `aurora` for a job written the nix-aurora way.
            value =
              let
                f = import (./examples + "/${name}");
              in
              f (builtins.intersectAttrs (builtins.functionArgs f) { inherit mxc; aurora = mxc; });
          }) exampleDirs
        )
      );

      # Placeholders: the NixOS modules for the coordinator and agent live in nix/ once written;
      # these set nothing yet, so importing them is harmless.
      nixosModules = {
        coordinator = { ... }: { };
        agent = { ... }: { };
      };
    };
}
