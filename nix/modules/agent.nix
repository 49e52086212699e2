# services.mxc.agent: an mxc agent as a systemd service. It runs as root: it realises closures into
# the Nix store, creates namespaces and cgroups for workloads, and starts QEMU microVMs. The join
# token is a file handed over with LoadCredential (never in argv or the Environment). The module
# builds no derivation of its own, so it evaluates with any pkgs (tested with lib.evalModules alone).
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
  cfg = config.services.mxc.agent;
  attrFlags = lib.concatMap (k: [
    "--attr"
    "${k}=${cfg.attributes.${k}}"
  ]) (builtins.attrNames cfg.attributes);
in
{
  options.services.mxc.agent = {
    enable = mkEnableOption "an mxc agent that joins coordinators and runs their workloads";

    package = common.package "agent" "The mxc package; its bin/mxc (wrapped with nix, bubblewrap, util-linux and QEMU) runs the agent.";

    coordinators = mkOption {
      type = types.listOf types.str;
      default = [ "http://127.0.0.1:4000" ];
      example = [ "http://10.0.0.1:4000" ];
      description = "Coordinator URLs (MXC_COORDINATOR, comma-separated).";
    };

    tokenFile = mkOption {
      type = types.nullOr types.path;
      default = null;
      example = "/run/secrets/mxc-agent-token";
      description = "File holding the join token (MXC_AGENT_TOKEN_FILE, through LoadCredential).";
    };

    name = mkOption {
      type = types.str;
      default = config.networking.hostName;
      defaultText = lib.literalExpression "config.networking.hostName";
      description = "Node name (MXC_AGENT_NAME).";
    };

    resources = {
      cpuCores = mkOption {
        type = types.ints.unsigned;
        default = 0;
        description = "CPU cores offered to workloads; 0 = detect (MXC_AGENT_CPU).";
      };
      memoryMB = mkOption {
        type = types.ints.unsigned;
        default = 0;
        description = "Memory offered to workloads in MiB; 0 = detect (MXC_AGENT_MEMORY).";
      };
      diskMB = mkOption {
        type = types.ints.unsigned;
        default = 0;
        description = "Disk offered to workloads in MiB; 0 = free space of the state directory (MXC_AGENT_DISK).";
      };
    };

    attributes = mkOption {
      type = types.attrsOf types.str;
      default = { };
      example = {
        rack = "a1";
        ssd = "true";
      };
      description = "Node attributes that placement constraints match (`--attr key=value`).";
    };

    stateDir = mkOption {
      type = types.str;
      default = "/var/lib/mxc-agent";
      description = "Agent state: workload directories, logs, GC roots, the node secret (MXC_AGENT_STATE_DIR). Under /var/lib it is the unit's StateDirectory.";
    };

    secretsDir = mkOption {
      type = types.nullOr types.path;
      default = null;
      description = "One file per secret that jobs reference by name (MXC_AGENT_SECRETS_DIR); read at launch, never copied to the store.";
    };

    gcMinFreeMB = mkOption {
      type = types.nullOr types.ints.unsigned;
      default = null;
      description = "Collect garbage when the store has less free space than this (MXC_AGENT_GC_MIN_FREE); null: the agent's default (0 on the host store).";
    };

    supervisorPool = mkOption {
      type = types.nullOr types.ints.unsigned;
      default = null;
      description = "Idle task supervisors kept in fresh PID namespaces so a task's start does not create one (MXC_AGENT_SUPERVISOR_POOL); null: the agent's default (1), 0: none.";
    };

    cachePublicKey = mkOption {
      type = types.nullOr types.str;
      default = null;
      example = "mxc-1:AbC…=";
      description = "Pin the coordinator cache's public key instead of asking for it on join (MXC_CACHE_PUBLIC_KEY).";
    };

    storeRoot = mkOption {
      type = types.nullOr types.str;
      default = null;
      example = "/var/lib/mxc-agent/store";
      description = "Run workloads from a chroot Nix store under this directory instead of the host's (MXC_AGENT_STORE_ROOT).";
    };

    logRetentionDays = mkOption {
      type = types.nullOr types.numbers.nonnegative;
      default = null;
      description = "Days the logs of ended workloads are kept on the node (MXC_AGENT_LOG_RETENTION); null: the agent's default (7).";
    };

    dns = {
      query = mkOption {
        type = types.nullOr types.str;
        default = null;
        example = "_mxc._tcp.example.org";
        description = "Find coordinators by DNS, beside `coordinators` (MXC_DNS_QUERY): an SRV name (`_mxc._tcp.example.org`) or `host[:port]` (A/AAAA, port 4000 by default).";
      };
      server = mkOption {
        type = types.nullOr types.str;
        default = null;
        example = "10.0.0.2:53";
        description = "The DNS server `dns.query` asks, an IP address with an optional port (MXC_DNS_SERVER); null: the system resolver.";
      };
    };

    inherit (common) logLevel;

    hypervisor = mkOption {
      type = types.enum [ "qemu" ];
      default = "qemu";
      description = "The microVM hypervisor. mxc runs microVMs with QEMU (KVM when usable, else TCG); the seed's cloud-hypervisor and firecracker are not supported.";
    };

    microvm.enable = mkOption {
      type = types.bool;
      default = true;
      description = "Offer microVM isolation (MXC_HYPERVISOR=qemu, or none when false).";
    };

    extraEnvironment = common.extraEnvironment {
      role = "agent";
      secrets = "tokenFile";
    };
  };

  config = mkIf cfg.enable {
    assertions = [
      {
        assertion = cfg.coordinators != [ ];
        message = "services.mxc.agent.coordinators must name at least one coordinator URL";
      }
    ];

    systemd.services.mxc-agent = {
      description = "mxc agent";
      wantedBy = [ "multi-user.target" ];
      wants = [ "network-online.target" ];
      after = [
        "network-online.target"
        "nix-daemon.service"
      ];

      environment =
        {
          MXC_COORDINATOR = lib.concatStringsSep "," cfg.coordinators;
          MXC_AGENT_NAME = cfg.name;
          MXC_AGENT_CPU = toString cfg.resources.cpuCores;
          MXC_AGENT_MEMORY = toString cfg.resources.memoryMB;
          MXC_AGENT_DISK = toString cfg.resources.diskMB;
          MXC_AGENT_STATE_DIR = cfg.stateDir;
          MXC_HYPERVISOR = if cfg.microvm.enable then cfg.hypervisor else "none";
          MXC_MICROVM_ASSETS = "${cfg.stateDir}/microvm-assets";
          MXC_LOG_LEVEL = cfg.logLevel;
          MXC_LOG_FORMAT = "json";
        }
        // optionalAttrs (cfg.tokenFile != null) { MXC_AGENT_TOKEN_FILE = "%d/agent-token"; }
        // optionalAttrs (cfg.secretsDir != null) { MXC_AGENT_SECRETS_DIR = toString cfg.secretsDir; }
        // optionalAttrs (cfg.gcMinFreeMB != null) { MXC_AGENT_GC_MIN_FREE = toString cfg.gcMinFreeMB; }
        // optionalAttrs (cfg.cachePublicKey != null) { MXC_CACHE_PUBLIC_KEY = cfg.cachePublicKey; }
        // optionalAttrs (cfg.supervisorPool != null) {
          MXC_AGENT_SUPERVISOR_POOL = toString cfg.supervisorPool;
        }
        // optionalAttrs (cfg.storeRoot != null) { MXC_AGENT_STORE_ROOT = cfg.storeRoot; }
        // optionalAttrs (cfg.logRetentionDays != null) { MXC_AGENT_LOG_RETENTION = toString cfg.logRetentionDays; }
        // optionalAttrs (cfg.dns.query != null) { MXC_DNS_QUERY = cfg.dns.query; }
        // optionalAttrs (cfg.dns.server != null) { MXC_DNS_SERVER = cfg.dns.server; }
        // cfg.extraEnvironment;

      serviceConfig = {
        ExecStart = lib.escapeShellArgs ([ "${cfg.package}/bin/mxc" "agent" ] ++ attrFlags);
        StateDirectory = mkIf (lib.hasPrefix "/var/lib/" cfg.stateDir) (lib.removePrefix "/var/lib/" cfg.stateDir);
        StateDirectoryMode = "0700";
        WorkingDirectory = "/";
        LoadCredential = optional (cfg.tokenFile != null) "agent-token:${toString cfg.tokenFile}";
        Restart = "on-failure";
        RestartSec = 5;
        # Task cpu/memory limits use cgroup v2 below the unit's own cgroup.
        Delegate = true;
        # On stop the agent stops its workloads itself within their grace period.
        TimeoutStopSec = 60;
        # Root, but without what it never needs.
        PrivateTmp = true;
        ProtectHome = "read-only";
        ProtectClock = true;
        ProtectKernelLogs = true;
        ProtectKernelModules = true;
        LockPersonality = true;
        UMask = "0077";
      };
    };
  };
}
