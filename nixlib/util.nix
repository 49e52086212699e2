# Small list/attrset helpers, so nixlib needs nothing but builtins (nixpkgs' lib is optional).
let
  inherit (builtins) filter foldl' elem length genList elemAt attrNames listToAttrs concatMap;
in
rec {
  unique = foldl' (acc: x: if elem x acc then acc else acc ++ [ x ]) [ ];

  # Elements that occur more than once, each reported once, in first-seen order.
  duplicates =
    xs:
    let
      step =
        acc: x:
        if elem x acc.seen then
          acc // { dups = if elem x acc.dups then acc.dups else acc.dups ++ [ x ]; }
        else
          acc // { seen = acc.seen ++ [ x ]; };
    in
    (foldl' step {
      seen = [ ];
      dups = [ ];
    } xs).dups;

  optionalAttrs = cond: attrs: if cond then attrs else { };
  optional = cond: x: if cond then [ x ] else [ ];

  filterAttrs =
    pred: set:
    listToAttrs (
      concatMap (
        n:
        if pred n set.${n} then
          [
            {
              name = n;
              value = set.${n};
            }
          ]
        else
          [ ]
      ) (attrNames set)
    );

  imap1 = f: xs: genList (i: f (i + 1) (elemAt xs i)) (length xs);

  # The first element satisfying pred, or null.
  findFirst =
    pred: xs:
    let
      hits = filter pred xs;
    in
    if hits == [ ] then null else builtins.head hits;

  # Pairs of neighbours: [a b c] → [{from=a;to=b;} {from=b;to=c;}].
  pairs = xs: genList (i: {
    from = elemAt xs i;
    to = elemAt xs (i + 1);
  }) (if length xs < 2 then 0 else length xs - 1);

  join = builtins.concatStringsSep;

  # A shell word that stays one word whatever s holds.
  shellQuote = s: "'" + builtins.replaceStrings [ "'" ] [ "'\\''" ] s + "'";

  # Thermos/pystachio bindings: does text contain a {{…}}, and the KEY of each {{KEY}} in it.
  hasBindings = text: builtins.match ".*[{][{][^{}]+[}][}].*" (builtins.replaceStrings [ "\n" ] [ " " ] text) != null;
  bindings = text: unique (concatMap (x: if builtins.isList x then x else [ ]) (builtins.split "[{][{]([^{}]+)[}][}]" text));
  # The NAMEs of {{thermos.ports[NAME]}} in text.
  portBindings = text: concatMap (x: if builtins.isList x then x else [ ]) (builtins.split "[{][{]thermos[.]ports[[]([^]{}]+)[]][}][}]" text);
}
