# mxc's flake. `lib` (nixlib without nixpkgs) and `jobs.<system>.<name>` (every example's job JSON)
# use no input and evaluate offline: flake inputs are fetched lazily, only when an output uses them,
# and flake.lock pins nixpkgs so no lookup is needed to lock it. The package, app, dev shell and overlay
# use nixpkgs; the NixOS modules take pkgs from the system they are part of.
# Pure evaluation cannot read /usr/bin/busybox, so nixlib uses its pinned hash (nixlib/busybox-pin.nix)
# here and gets the same store paths as `nix-build examples/x`.
{
  description = "mxc: a Nix-native workload orchestrator (job library, examples, package, NixOS modules)";

  inputs.nixpkgs.url = "github:NixOS/nixpkgs/nixos-24.11";

  outputs =
    { self, nixpkgs }:
    let
      systems = [ "x86_64-linux" ];
      forSystems = f: builtins.listToAttrs (map (system: { name = system; value = f system; }) systems);
      entries = builtins.readDir ./examples;
      exampleDirs = builtins.filter (n: entries.${n} == "directory") (builtins.attrNames entries);
      pkgsFor = system: nixpkgs.legacyPackages.${system};
      # A module from nix/modules with its package defaulting to this flake's build for the host.
      withPackage =
        name: file:
        { lib, pkgs, ... }:
        {
          imports = [ file ];
          services.mxc.${name}.package = lib.mkDefault self.packages.${pkgs.stdenv.hostPlatform.system}.default;
        };
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

      packages = forSystems (system: rec {
        mxc = (pkgsFor system).callPackage ./nix/package.nix { };
        default = mxc;
      });

      apps = forSystems (system: {
        default = {
          type = "app";
          program = "${self.packages.${system}.mxc}/bin/mxc";
        };
      });

      devShells = forSystems (
        system:
        let
          pkgs = pkgsFor system;
        in
        {
          default = pkgs.mkShell {
            packages = [
              pkgs.nodejs_20
              pkgs.nix
              pkgs.bubblewrap
              pkgs.util-linux
              pkgs.qemu
              pkgs.postgresql_15
              pkgs.chromium
              pkgs.busybox
              pkgs.cpio
              pkgs.xz
            ];
          };
        }
      );

      overlays.default = final: _prev: { mxc = final.callPackage ./nix/package.nix { }; };

      nixosModules = {
        coordinator = withPackage "coordinator" ./nix/modules/coordinator.nix;
        agent = withPackage "agent" ./nix/modules/agent.nix;
        postgres = ./nix/modules/postgres.nix;
        default = {
          imports = [
            self.nixosModules.coordinator
            self.nixosModules.agent
            self.nixosModules.postgres
          ];
        };
      };
    };
}
