# The option declarations the coordinator and agent modules share, so both name, type and default
# them alike: the package, the log level and extra environment variables. Not a module: each module
# imports it with its `lib` and `pkgs` and takes what it needs.
{ lib, pkgs }:
let
  inherit (lib) mkOption optionalAttrs types;
in
{
  # `package`: pkgs.mxc from mxc's overlay unless set (the flake's modules set their own).
  package =
    role: description:
    mkOption {
      type = types.package;
      default =
        pkgs.mxc
          or (throw "services.mxc.${role}.package: set it to mxc.packages.<system>.default, or add mxc's overlays.default");
      defaultText = lib.literalExpression "pkgs.mxc (from mxc's overlay; the flake's module sets its own package)";
      inherit description;
    };

  logLevel = mkOption {
    type = types.enum [
      "fatal"
      "error"
      "warn"
      "info"
      "debug"
      "trace"
      "silent"
    ];
    default = "info";
    description = "Log level (MXC_LOG_LEVEL); logs are JSON lines in the journal.";
  };

  # `extraEnvironment`: variables beside the ones the module sets; `secrets` says where secrets go.
  extraEnvironment =
    {
      role,
      secrets,
      example ? null,
    }:
    mkOption (
      {
        type = types.attrsOf types.str;
        default = { };
        description = "More environment variables (see the README's configuration table; every mxc setting of the ${role} has an option). Never secrets: use ${secrets}.";
      }
      // optionalAttrs (example != null) { inherit example; }
    );
}
