# Whole-task checks that no single attribute shows: duplicate process names, order constraints
# naming a process the task lacks, cycles in the order graph, and a regular process ordered after a
# final one (finals run at teardown only, so it could never run).
let
  types = import ./types.nix;
  util = import ./util.nix;
  inherit (builtins)
    elem
    filter
    any
    head
    length
    concatMap
    toJSON
    ;
  inherit (util) unique duplicates pairs join;
in
rec {
  # One cycle of the order graph as a list of names (first repeated at the end), or null.
  findCycle =
    orders:
    let
      edges = concatMap pairs orders;
      nodes = unique (concatMap (e: [
        e.from
        e.to
      ]) edges);
      # Kahn: drop nodes without a predecessor among the remaining ones until nothing changes;
      # what is left all lies on or behind a cycle.
      prune =
        ns:
        let
          keep = filter (n: any (e: e.to == n && elem e.from ns) edges) ns;
        in
        if length keep == length ns then ns else prune keep;
      rest = prune nodes;
      predIn = n: (head (filter (e: e.to == n && elem e.from rest) edges)).from;
      # Walk predecessors from some remaining node until one repeats; that stretch is a cycle.
      walk =
        path:
        let
          p = predIn (head path);
        in
        if elem p path then
          let
            upTo = xs: if head xs == p then [ p ] else [ (head xs) ] ++ upTo (builtins.tail xs);
          in
          [ p ] ++ upTo path
        else
          walk ([ p ] ++ path);
    in
    if rest == [ ] then null else walk [ (head rest) ];

  # Throws (under ctx) when the task's process names or order constraints are inconsistent;
  # otherwise returns `value`.
  checkTask =
    ctx:
    {
      names,
      orders,
      finals ? [ ],
    }:
    value:
    let
      dups = duplicates names;
      missing = util.findFirst (n: !(elem n names)) (concatMap (o: o) orders);
      cycle = findCycle orders;
      afterFinal = util.findFirst (e: elem e.from finals && !(elem e.to finals)) (
        concatMap pairs orders
      );
    in
    if dups != [ ] then
      types.fail ctx "duplicate process name ${toJSON (head dups)}"
    else if missing != null then
      types.fail ctx "an order constraint names process ${toJSON missing}, which the task does not have (processes: ${join ", " names})"
    else if cycle != null then
      types.fail ctx "order constraints form a cycle: ${join " -> " cycle}"
    else if afterFinal != null then
      types.fail ctx "non-final process ${toJSON afterFinal.to} is ordered after final process ${toJSON afterFinal.from}; final processes run at teardown, so only final processes may follow them"
    else
      value;
}
