# Resources { cpu, ram, disk }: a task's reservation in Aurora units (cores; bytes).
let
  types = import ./types.nix;
in
rec {
  fields = {
    cpu = {
      type = types.nonNegative types.number;
      required = true;
    };
    ram = {
      type = types.nonNegative types.int;
      required = true;
    };
    disk = {
      type = types.nonNegative types.int;
      required = true;
    };
  };

  Resources = types.tag "Resources";

  # The JSON attributes, checked under ctx (e.g. `mxc: job "x": Task "t": Resources`).
  normalize = ctx: value: types.checkArgs ctx fields (types.argsOf value);
}
