# UpdateConfig, HealthCheckConfig and Announcer: plain settings records with nix-aurora's defaults.
# Only the attributes the user passed reach the JSON; spec/job.ts fills in the same defaults.
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
  };

  healthFields = {
    initial_interval_secs = field (t.nonNegative t.number) 15;
    interval_secs = field (t.nonNegative t.number) 10;
    timeout_secs = field (t.nonNegative t.number) 1;
    max_consecutive_failures = field (t.nonNegative t.int) 0;
    endpoint = field t.str "/health";
    expected_response = field t.str "ok";
    expected_response_code = field (t.nonNegative t.int) 0;
    # mxc: the named port (from mxc.ports) the check talks to.
    port = field t.str null;
  };

  announcerFields = {
    primary_port = field t.str "http";
    port_map = field (t.attrsOf t.str) null;
  };

  UpdateConfig = types.tag "UpdateConfig";
  HealthCheckConfig = types.tag "HealthCheckConfig";
  Announcer = types.tag "Announcer";

  normalizeUpdate = ctx: v: types.checkArgs "${ctx}: UpdateConfig" updateFields (types.argsOf v);
  normalizeHealth = ctx: v: types.checkArgs "${ctx}: HealthCheckConfig" healthFields (types.argsOf v);
  normalizeAnnouncer =
    ctx: v: if v == null then null else types.checkArgs "${ctx}: Announcer" announcerFields (types.argsOf v);
}
