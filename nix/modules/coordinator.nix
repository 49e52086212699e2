# services.mxc.coordinator: the mxc coordinator as a hardened systemd service (option names follow
# samrose/mxc where it has them). Secrets are files handed over with LoadCredential, never written to
# the store or the unit's Environment. The module builds no derivation of its own (ExecStart is a
# command line), so it evaluates with any pkgs and is tested with lib.evalModules alone.
{
  config,
  lib,
  pkgs,
  ...
}:
let
  inherit (lib)
    mkEnableOption
    mkIf
    mkOption
    optional
    optionalAttrs
    types
    ;
  common = import ./common.nix { inherit lib pkgs; };
  cfg = config.services.mxc.coordinator;
  db = cfg.database;
  # A database on this machine (socket or loopback): order after the local PostgreSQL.
  localDb =
    db.url == null
    && (lib.hasPrefix "/" db.host || db.host == "localhost" || db.host == "127.0.0.1" || db.host == "::1");
  credentials =
    optional (cfg.apiTokenFile != null) "api-token:${toString cfg.apiTokenFile}"
    ++ optional (cfg.agentTokenFile != null) "agent-token:${toString cfg.agentTokenFile}"
    ++ optional (db.passwordFile != null) "database-password:${toString db.passwordFile}"
    ++ optional (cfg.tls.certFile != null) "tls-cert:${toString cfg.tls.certFile}"
    ++ optional (cfg.tls.keyFile != null) "tls-key:${toString cfg.tls.keyFile}"
    ++ optional (cfg.cacheKeyFile != null) "cache-key:${toString cfg.cacheKeyFile}"
    ++ optional (cfg.cacheS3.accessKeyIdFile != null) "s3-access-key-id:${toString cfg.cacheS3.accessKeyIdFile}"
    ++ optional (
      cfg.cacheS3.secretAccessKeyFile != null
    ) "s3-secret-access-key:${toString cfg.cacheS3.secretAccessKeyFile}"
    ++ optional (
      cfg.cacheS3.sessionTokenFile != null
    ) "s3-session-token:${toString cfg.cacheS3.sessionTokenFile}";
  # A setting left null stays unset, so the coordinator's own default applies.
  setIf = name: value: optionalAttrs (value != null) { ${name} = toString value; };
in
{
  options.services.mxc.coordinator = {
    enable = mkEnableOption "the mxc coordinator (API, dashboard, scheduler, binary cache)";

    package = common.package "coordinator" "The mxc package; its bin/mxc runs the coordinator.";

    port = mkOption {
      type = types.port;
      default = 4000;
      description = "HTTP port: API, dashboard, binary cache and the agents' WebSocket (PORT).";
    };

    listenAddress = mkOption {
      type = types.str;
      default = "0.0.0.0";
      description = "Address to listen on (MXC_LISTEN_ADDRESS); agents on other machines need a routable one.";
    };

    openFirewall = mkOption {
      type = types.bool;
      default = false;
      description = "Open `port` in the firewall.";
    };

    insecure = mkOption {
      type = types.bool;
      default = false;
      description = ''
        Listen on a non-loopback address without `apiTokenFile` (MXC_INSECURE). mxc refuses an API open
        to the network otherwise; tokens created later with `mxc tokens create` are still enforced.
      '';
    };

    database = {
      url = mkOption {
        type = types.nullOr types.str;
        default = null;
        example = "postgres://mxc@db.example:5432/mxc";
        description = "A full PostgreSQL URL without the password (DATABASE_URL); wins over host/port/name/user.";
      };
      host = mkOption {
        type = types.str;
        default = "/run/postgresql";
        description = "PostgreSQL host, or a socket directory (the default: the local server, peer authentication as the `mxc` user).";
      };
      port = mkOption {
        type = types.port;
        default = 5432;
        description = "PostgreSQL port.";
      };
      name = mkOption {
        type = types.str;
        default = "mxc";
        description = "Database name.";
      };
      user = mkOption {
        type = types.str;
        default = "mxc";
        description = "Database user.";
      };
      passwordFile = mkOption {
        type = types.nullOr types.path;
        default = null;
        example = "/run/secrets/mxc-db-password";
        description = "File holding the database password (passed with LoadCredential as DATABASE_PASSWORD_FILE).";
      };
      poolSize = mkOption {
        type = types.ints.between 1 1000;
        default = 10;
        description = "PostgreSQL connections (POOL_SIZE).";
      };
    };

    apiTokenFile = mkOption {
      type = types.nullOr types.path;
      default = null;
      example = "/run/secrets/mxc-api-token";
      description = "File holding the client API token (MXC_API_TOKEN_FILE). Without one, the API is open until a client token is created.";
    };

    agentTokenFile = mkOption {
      type = types.nullOr types.path;
      default = null;
      example = "/run/secrets/mxc-agent-token";
      description = "File holding the token agents join with (MXC_AGENT_TOKEN_FILE); the API token when unset.";
    };

    tls = {
      certFile = mkOption {
        type = types.nullOr types.path;
        default = null;
        description = "PEM certificate chain: serve HTTPS, and agents join over wss:// (MXC_TLS_CERT, through LoadCredential).";
      };
      keyFile = mkOption {
        type = types.nullOr types.path;
        default = null;
        description = "PEM private key for tls.certFile (MXC_TLS_KEY, through LoadCredential).";
      };
    };

    cacheDir = mkOption {
      type = types.nullOr types.path;
      default = null;
      description = "Where the binary cache keeps its key and NARs (MXC_CACHE_DIR, e.g. a directory shared by several coordinators); made writable for the service. Unset: under the state directory.";
    };

    cacheS3 = {
      url = mkOption {
        type = types.nullOr types.str;
        default = null;
        example = "s3://mxc-cache/prod?endpoint=https://s3.example.org&region=eu-1&force_path_style=true";
        description = "Keep the binary cache in an S3-compatible bucket instead of cacheDir (MXC_CACHE_S3_URL); several coordinators may share it. No credentials in the URL.";
      };
      accessKeyIdFile = mkOption {
        type = types.nullOr types.path;
        default = null;
        description = "File holding the bucket's access key id (AWS_ACCESS_KEY_ID_FILE, through LoadCredential). Unset: the AWS SDK's chain (instance role, …).";
      };
      secretAccessKeyFile = mkOption {
        type = types.nullOr types.path;
        default = null;
        description = "File holding the bucket's secret access key (AWS_SECRET_ACCESS_KEY_FILE, through LoadCredential).";
      };
      sessionTokenFile = mkOption {
        type = types.nullOr types.path;
        default = null;
        description = "File holding a session token for temporary bucket credentials (AWS_SESSION_TOKEN_FILE, through LoadCredential).";
      };
    };

    cacheKeyFile = mkOption {
      type = types.nullOr types.path;
      default = null;
      description = "The cache signing key (nix-store --generate-binary-cache-key format), the same file on every coordinator (MXC_CACHE_KEY_FILE, through LoadCredential). Unset: the cache directory's key, else one key shared through PostgreSQL.";
    };

    cacheCompression = mkOption {
      type = types.enum [
        "none"
        "br"
      ];
      default = "none";
      description = "How the cache stores new NARs (MXC_CACHE_COMPRESSION): as uploaded (the least CPU per push), or brotli quality 2 (about half the bytes for binaries).";
    };

    heartbeatTtl = mkOption {
      type = types.ints.positive;
      default = 30;
      description = "Seconds of agent silence before its node is down and its workloads are placed elsewhere (MXC_HEARTBEAT_TTL).";
    };

    flappingTaskThreshold = mkOption {
      type = types.nullOr types.numbers.nonnegative;
      default = null;
      description = "Seconds: a task that ran for less than this is flapping and restarts after a back-off (MXC_FLAPPING_TASK_THRESHOLD, Aurora's -flapping_task_threshold); null: mxc's default (300).";
    };

    initialFlappingTaskDelay = mkOption {
      type = types.nullOr types.numbers.nonnegative;
      default = null;
      description = "Seconds a flapping task first waits before it restarts, doubling with each flapping restart (MXC_INITIAL_FLAPPING_TASK_DELAY); null: mxc's default (30).";
    };

    maxFlappingTaskDelay = mkOption {
      type = types.nullOr types.numbers.nonnegative;
      default = null;
      description = "Seconds a flapping task waits at most before it restarts (MXC_MAX_FLAPPING_TASK_DELAY); null: mxc's default (300).";
    };

    retention = {
      hours = mkOption {
        type = types.nullOr types.numbers.positive;
        default = null;
        description = "Hours an ended workload, its events and logs are kept; the newest of each instance stays (MXC_RETENTION_HOURS); null: mxc's default (168).";
      };
      perJob = mkOption {
        type = types.nullOr types.ints.positive;
        default = null;
        description = "Ended workloads kept per job, the newest (MXC_RETENTION_PER_JOB); null: mxc's default (100).";
      };
    };

    logLinesKept = mkOption {
      type = types.nullOr (types.ints.between 1000 9007199254740991);
      default = null;
      description = "The newest lines of each workload's log the coordinator keeps, at least 1000 (MXC_LOG_LINES_KEPT); null: mxc's default (100000).";
    };

    preemptionDelay = mkOption {
      type = types.nullOr (types.either (types.addCheck types.number (x: x >= 0)) (types.enum [ "off" ]));
      default = null;
      description = "Seconds a pending workload of a production job or of priority above 0 waits before the leader stops lower-ranked workloads to make room for it, or \"off\" (MXC_PREEMPTION_DELAY); null: mxc's default (180).";
    };

    leaderLease = mkOption {
      type = types.nullOr (types.addCheck types.number (x: x >= 0.3));
      default = null;
      description = "Seconds of the leader lease among coordinators sharing one PostgreSQL, at least 0.3 (MXC_LEADER_LEASE); null: mxc's default (15).";
    };

    advertiseUrl = mkOption {
      type = types.nullOr types.str;
      default = null;
      example = "https://coordinator-1.example.org:4000";
      description = "The URL others reach this coordinator at, as `GET /api/cluster/status` lists it (MXC_ADVERTISE_URL); null: the listen address.";
    };

    maxConnectionsPerAddress = mkOption {
      type = types.nullOr types.ints.positive;
      default = null;
      description = "Connections taken from one client address, e.g. agents behind one NAT (MXC_MAX_CONNECTIONS_PER_ADDRESS); null: half the connection limit, which LimitNOFILE sets.";
    };

    schedulerStrategy = mkOption {
      type = types.enum [
        "spread"
        "pack"
      ];
      default = "spread";
      description = "Placement: spread over the nodes with the most room, or pack the fullest node that fits (MXC_SCHEDULER_STRATEGY).";
    };

    uiEnabled = mkOption {
      type = types.bool;
      default = true;
      description = "Serve the dashboard (MXC_UI_ENABLED).";
    };

    inherit (common) logLevel;

    extraEnvironment = common.extraEnvironment {
      role = "coordinator";
      secrets = "the *File options";
      example = {
        NODE_EXTRA_CA_CERTS = "/etc/ssl/private-ca.pem";
      };
    };
  };

  config = mkIf cfg.enable {
    assertions = [
      {
        assertion = (cfg.tls.certFile == null) == (cfg.tls.keyFile == null);
        message = "services.mxc.coordinator.tls: set certFile and keyFile together";
      }
      {
        assertion =
          cfg.apiTokenFile != null
          || cfg.insecure
          || builtins.elem cfg.listenAddress [
            "127.0.0.1"
            "::1"
            "localhost"
          ];
        message = "services.mxc.coordinator: listening on ${cfg.listenAddress} with no apiTokenFile would open the API to the network; set apiTokenFile, listen on 127.0.0.1, or set insecure = true";
      }
    ];

    users.users.mxc = {
      isSystemUser = true;
      group = "mxc";
      home = "/var/lib/mxc";
      description = "mxc coordinator";
    };
    users.groups.mxc = { };

    networking.firewall.allowedTCPPorts = mkIf cfg.openFirewall [ cfg.port ];

    systemd.services.mxc-coordinator = {
      description = "mxc coordinator";
      wantedBy = [ "multi-user.target" ];
      wants = [ "network-online.target" ];
      after = [ "network-online.target" ] ++ optional localDb "postgresql.service";
      requires = optional (localDb && config.services.postgresql.enable) "postgresql.service";

      environment =
        {
          PORT = toString cfg.port;
          MXC_LISTEN_ADDRESS = cfg.listenAddress;
          MXC_DATA_DIR = "%S/mxc";
          HOME = "%S/mxc";
          POOL_SIZE = toString db.poolSize;
          MXC_HEARTBEAT_TTL = toString cfg.heartbeatTtl;
          MXC_CACHE_COMPRESSION = cfg.cacheCompression;
          MXC_SCHEDULER_STRATEGY = cfg.schedulerStrategy;
          MXC_UI_ENABLED = lib.boolToString cfg.uiEnabled;
          MXC_LOG_LEVEL = cfg.logLevel;
          MXC_LOG_FORMAT = "json";
        }
        // optionalAttrs cfg.insecure { MXC_INSECURE = "1"; }
        // (
          if db.url != null then
            { DATABASE_URL = db.url; }
          else
            {
              DATABASE_HOST = db.host;
              DATABASE_PORT = toString db.port;
              DATABASE_NAME = db.name;
              DATABASE_USER = db.user;
            }
        )
        # %d is the unit's credentials directory: systemd copies each LoadCredential file there.
        // optionalAttrs (cfg.apiTokenFile != null) { MXC_API_TOKEN_FILE = "%d/api-token"; }
        // optionalAttrs (cfg.agentTokenFile != null) { MXC_AGENT_TOKEN_FILE = "%d/agent-token"; }
        // optionalAttrs (db.passwordFile != null) { DATABASE_PASSWORD_FILE = "%d/database-password"; }
        // optionalAttrs (cfg.tls.certFile != null) { MXC_TLS_CERT = "%d/tls-cert"; }
        // optionalAttrs (cfg.tls.keyFile != null) { MXC_TLS_KEY = "%d/tls-key"; }
        // optionalAttrs (cfg.cacheDir != null) { MXC_CACHE_DIR = toString cfg.cacheDir; }
        // optionalAttrs (cfg.cacheS3.url != null) { MXC_CACHE_S3_URL = cfg.cacheS3.url; }
        // optionalAttrs (cfg.cacheS3.accessKeyIdFile != null) {
          AWS_ACCESS_KEY_ID_FILE = "%d/s3-access-key-id";
        }
        // optionalAttrs (cfg.cacheS3.secretAccessKeyFile != null) {
          AWS_SECRET_ACCESS_KEY_FILE = "%d/s3-secret-access-key";
        }
        // optionalAttrs (cfg.cacheS3.sessionTokenFile != null) {
          AWS_SESSION_TOKEN_FILE = "%d/s3-session-token";
        }
        // optionalAttrs (cfg.cacheKeyFile != null) { MXC_CACHE_KEY_FILE = "%d/cache-key"; }
        // setIf "MXC_FLAPPING_TASK_THRESHOLD" cfg.flappingTaskThreshold
        // setIf "MXC_INITIAL_FLAPPING_TASK_DELAY" cfg.initialFlappingTaskDelay
        // setIf "MXC_MAX_FLAPPING_TASK_DELAY" cfg.maxFlappingTaskDelay
        // setIf "MXC_RETENTION_HOURS" cfg.retention.hours
        // setIf "MXC_RETENTION_PER_JOB" cfg.retention.perJob
        // setIf "MXC_LOG_LINES_KEPT" cfg.logLinesKept
        // setIf "MXC_LEADER_LEASE" cfg.leaderLease
        // setIf "MXC_PREEMPTION_DELAY" cfg.preemptionDelay
        // setIf "MXC_ADVERTISE_URL" cfg.advertiseUrl
        // setIf "MXC_MAX_CONNECTIONS_PER_ADDRESS" cfg.maxConnectionsPerAddress
        // cfg.extraEnvironment;

      serviceConfig = {
        ExecStart = "${cfg.package}/bin/mxc coordinator";
        User = "mxc";
        Group = "mxc";
        StateDirectory = "mxc";
        StateDirectoryMode = "0750";
        WorkingDirectory = "%S/mxc";
        LoadCredential = credentials;
        Restart = "on-failure";
        RestartSec = 5;
        # A socket per agent and per client, and the cache's pack files kept open (up to 1,024).
        LimitNOFILE = 65536;
        ReadWritePaths = optional (cfg.cacheDir != null) (toString cfg.cacheDir);

        # Hardening: an unprivileged network service that writes only its state directory.
        NoNewPrivileges = true;
        PrivateTmp = true;
        PrivateDevices = true;
        ProtectSystem = "strict";
        ProtectHome = true;
        ProtectClock = true;
        ProtectHostname = true;
        ProtectKernelLogs = true;
        ProtectKernelModules = true;
        ProtectKernelTunables = true;
        ProtectControlGroups = true;
        ProtectProc = "invisible";
        RestrictNamespaces = true;
        RestrictRealtime = true;
        RestrictSUIDSGID = true;
        RestrictAddressFamilies = [
          "AF_UNIX"
          "AF_INET"
          "AF_INET6"
        ];
        LockPersonality = true;
        CapabilityBoundingSet = "";
        SystemCallArchitectures = "native";
        SystemCallFilter = [
          "@system-service"
          "~@privileged"
        ];
        UMask = "0077";
        # Node's JIT writes executable memory: MemoryDenyWriteExecute would kill it.
      };
    };
  };
}
