# UpdateConfig, HealthCheckConfig and Announcer: plain settings records with nix-aurora's defaults.
# Only the attributes the user passed reach the JSON; spec/job.ts fills in the same defaults. The
# JSON keeps to Aurora's fields: HealthCheckConfig's `port` goes to the sidecar (mxc.health_port),
# and Announcer's map is written as Aurora's `portmap` (nix-aurora's `port_map` is accepted too).
let
  types = import ./types.nix;
  t = types;
  field = type: default: { inherit type default; };
in
rec {
  updateFields = {
    batch_size = field (t.atLeast 1 t.int) 1;
    restart_threshold = field (t.nonNegative t.int) 60;
    watch_secs = field (t.nonNegative t.int) 45;
    max_per_shard_failures = field (t.nonNegative t.int) 0;
    max_total_failures = field (t.nonNegative t.int) 0;
    rollback_on_failure = field t.bool true;
    wait_for_batch_completion = field t.bool false;
    pulse_interval_secs = field (t.atLeast 1 t.int) null;
  };

  healthFields = {
    initial_interval_secs = field (t.nonNegative t.number) 15;
    interval_secs = field (t.nonNegative t.number) 10;
    timeout_secs = field (t.nonNegative t.number) 1;
    max_consecutive_failures = field (t.nonNegative t.int) 0;
    endpoint = field t.str "/health";
    expected_response = field t.str "ok";
    expected_response_code = field (t.nonNegative t.int) 0;
    # mxc: the named port the check talks to (written to the sidecar as mxc.health_port).
    port = field t.str null;
  };

  announcerFields = {
    primary_port = field t.str "http";
    portmap = field (t.attrsOf t.str) null;
    # nix-aurora's spelling of Aurora's `portmap`.
    port_map = field (t.attrsOf t.str) null;
  };

  UpdateConfig = types.tag "UpdateConfig";
  HealthCheckConfig = types.tag "HealthCheckConfig";
  Announcer = types.tag "Announcer";

  normalizeUpdate = ctx: v: types.checkArgs "${ctx}: UpdateConfig" updateFields (types.argsOf v);
  normalizeHealth = ctx: v: types.checkArgs "${ctx}: HealthCheckConfig" healthFields (types.argsOf v);
  normalizeAnnouncer =
    ctx: v:
    if v == null then
      null
    else
      let
        a = types.checkArgs "${ctx}: Announcer" announcerFields (types.argsOf v);
      in
      if a ? portmap && a ? port_map then
        types.fail "${ctx}: Announcer" "give either 'portmap' (Aurora's name) or 'port_map' (nix-aurora's), not both"
      else
        builtins.removeAttrs a [ "port_map" ] // (if a ? port_map then { portmap = a.port_map; } else { });
}
