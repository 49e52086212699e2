# services.mxc.postgres: PostgreSQL for mxc coordinators, as samrose/mxc's module offers: databases,
# users with password files (read from the systemd credentials directory, never the store) and the
# networks allowed to connect with a password. It configures services.postgresql and builds nothing.
{ config, lib, ... }:
let
  inherit (lib)
    concatMapStrings
    concatStringsSep
    mapAttrsToList
    mkEnableOption
    mkIf
    mkOption
    types
    ;
  cfg = config.services.mxc.postgres;
  ident = s: ''"${lib.replaceStrings [ ''"'' ] [ ''""'' ] s}"'';
  withPassword = lib.filterAttrs (_: u: u.passwordFile != null) cfg.users;
  # Runs after the server is up (as its superuser, with psql on PATH). Passwords go through psql
  # variables from the credential files, so they never appear on a command line or in the store.
  setup = concatStringsSep "\n" (
    mapAttrsToList (
      name: u:
      (
        if u.passwordFile != null then
          ''
            psql -v ON_ERROR_STOP=1 -d postgres -v pw="$(cat "$CREDENTIALS_DIRECTORY/mxc-db-${name}")" <<'SQL'
            ALTER ROLE ${ident name} WITH LOGIN PASSWORD :'pw';
            SQL
          ''
        else
          ""
      )
      + concatMapStrings (db: ''
        psql -v ON_ERROR_STOP=1 -d postgres -c 'GRANT ALL PRIVILEGES ON DATABASE ${ident db} TO ${ident name}'
        psql -v ON_ERROR_STOP=1 -d ${lib.escapeShellArg db} -c 'GRANT ALL ON SCHEMA public TO ${ident name}'
      '') u.databases
    ) cfg.users
  );
in
{
  options.services.mxc.postgres = {
    enable = mkEnableOption "PostgreSQL set up for mxc";

    databases = mkOption {
      type = types.listOf types.str;
      default = [ "mxc" ];
      description = "Databases to create.";
    };

    users = mkOption {
      type = types.attrsOf (
        types.submodule {
          options = {
            passwordFile = mkOption {
              type = types.nullOr types.path;
              default = null;
              description = "File holding this user's password (for TCP logins; the local socket uses peer authentication).";
            };
            databases = mkOption {
              type = types.listOf types.str;
              default = [ ];
              description = "Databases this user gets every privilege on.";
            };
          };
        }
      );
      default = {
        mxc = {
          databases = [ "mxc" ];
        };
      };
      description = "Database users; the coordinator's default is `mxc` over the local socket.";
    };

    allowedNetworks = mkOption {
      type = types.listOf types.str;
      default = [ ];
      example = [ "10.0.0.0/24" ];
      description = "Networks whose hosts may log in with a password (scram-sha-256) to these databases; non-empty opens PostgreSQL to TCP.";
    };
  };

  config = mkIf cfg.enable {
    services.postgresql = {
      enable = true;
      enableTCPIP = cfg.allowedNetworks != [ ];
      ensureDatabases = cfg.databases;
      ensureUsers = map (name: { inherit name; }) (builtins.attrNames cfg.users);
      authentication = concatMapStrings (
        net:
        concatMapStrings (
          name: "host ${concatStringsSep "," cfg.users.${name}.databases} ${name} ${net} scram-sha-256\n"
        ) (builtins.attrNames withPassword)
      ) cfg.allowedNetworks;
    };

    systemd.services.postgresql = {
      serviceConfig.LoadCredential = mapAttrsToList (
        name: u: "mxc-db-${name}:${toString u.passwordFile}"
      ) withPassword;
      postStart = lib.mkAfter setup;
    };
  };
}
