# Evaluates mxc's NixOS modules with nixpkgs' real module system (lib.evalModules from a nixpkgs
# `lib` checkout, no nixpkgs needed) plus minimal declarations of the NixOS options they set, and
# returns what systemd and NixOS would get: units, users, firewall, PostgreSQL settings.
{
  # A checkout of nixpkgs' lib (github:nix-community/nixpkgs.lib, or nixpkgs itself).
  nixpkgsLib,
  # A NixOS module (file) configuring services.mxc.*.
  configuration,
}:
let
  lib = import (nixpkgsLib + "/lib");
  inherit (lib) mkOption types;
  anything = mkOption {
    type = types.anything;
    default = null;
  };
  strings = mkOption {
    type = types.listOf types.str;
    default = [ ];
  };
  # The NixOS options our modules set, declared the way NixOS does (simplified types).
  nixosStubs = {
    options = {
      assertions = mkOption {
        type = types.listOf types.anything;
        default = [ ];
      };
      warnings = strings;
      networking.hostName = mkOption {
        type = types.str;
        default = "nixos";
      };
      networking.firewall.allowedTCPPorts = mkOption {
        type = types.listOf types.port;
        default = [ ];
      };
      users.users = mkOption {
        type = types.attrsOf (types.attrsOf types.anything);
        default = { };
      };
      users.groups = mkOption {
        type = types.attrsOf (types.attrsOf types.anything);
        default = { };
      };
      services.postgresql = {
        enable = mkOption {
          type = types.bool;
          default = false;
        };
        enableTCPIP = mkOption {
          type = types.bool;
          default = false;
        };
        ensureDatabases = strings;
        ensureUsers = mkOption {
          type = types.listOf types.anything;
          default = [ ];
        };
        authentication = mkOption {
          type = types.lines;
          default = "";
        };
      };
      systemd.services = mkOption {
        default = { };
        type = types.attrsOf (
          types.submodule {
            options = {
              description = mkOption {
                type = types.str;
                default = "";
              };
              wantedBy = strings;
              wants = strings;
              after = strings;
              requires = strings;
              environment = mkOption {
                type = types.attrsOf types.str;
                default = { };
              };
              serviceConfig = mkOption {
                type = types.attrsOf types.anything;
                default = { };
              };
              postStart = mkOption {
                type = types.lines;
                default = "";
              };
            };
          }
        );
      };
    };
  };
  evaluated = lib.evalModules {
    modules = [
      nixosStubs
      ../../nix/modules/coordinator.nix
      ../../nix/modules/agent.nix
      ../../nix/modules/postgres.nix
      configuration
      # No nixpkgs: the configuration sets each package; pkgs.mxc is never looked up then.
      { _module.args.pkgs = { }; }
    ];
  };
  cfg = evaluated.config;
  failed = map (a: a.message) (builtins.filter (a: !a.assertion) cfg.assertions);
in
if failed != [ ] then
  throw "failed assertions: ${lib.concatStringsSep "; " failed}"
else
  {
    services = lib.mapAttrs (_: s: {
      inherit (s)
        description
        wantedBy
        wants
        after
        requires
        environment
        serviceConfig
        postStart
        ;
    }) cfg.systemd.services;
    users = cfg.users.users;
    groups = builtins.attrNames cfg.users.groups;
    firewall = cfg.networking.firewall.allowedTCPPorts;
    postgresql = cfg.services.postgresql;
  }
