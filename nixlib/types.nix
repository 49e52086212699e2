# Runtime argument checks for nixlib's functions, and the one error format they all use:
#   mxc: job "NAME": Function "label": what was wrong
# A type is { name; verify = value: null | "must be …, got …"; }.
let
  inherit (builtins)
    typeOf
    isString
    isInt
    isFloat
    isBool
    isList
    isAttrs
    isFunction
    attrNames
    elem
    filter
    length
    match
    toJSON
    substring
    stringLength
    unsafeDiscardStringContext
    ;
  util = import ./util.nix;
  inherit (util) imap1 findFirst join;
in
rec {
  # How a wrong value is shown in a message: its kind and a short preview.
  describe =
    v:
    let
      t = typeOf v;
      s = unsafeDiscardStringContext v;
      preview = if stringLength s > 40 then substring 0 40 s + "…" else s;
    in
    if t == "string" then
      "a string (${toJSON preview})"
    else if t == "int" then
      "an integer (${toString v})"
    else if t == "float" then
      "a float (${toJSON v})"
    else if t == "bool" then
      "a bool (${if v then "true" else "false"})"
    else if t == "null" then
      "null"
    else if t == "list" then
      "a list"
    else if t == "set" then
      if v ? _mxcKind then
        "a ${v._mxcKind} { … }"
      else if v.type or null == "derivation" then
        "a derivation"
      else
        "an attribute set"
    else if t == "lambda" then
      "a function (did you forget to call it?)"
    else if t == "path" then
      "a path (${toString v})"
    else
      "a ${t}";

  fail = ctx: msg: throw "${ctx}: ${msg}";

  # A type from a name and a predicate.
  simple = name: pred: {
    inherit name;
    verify = v: if pred v then null else "must be ${name}, got ${describe v}";
  };

  isDerivation = v: isAttrs v && v.type or null == "derivation";

  str = simple "a string" isString;
  nonEmptyStr = simple "a non-empty string" (v: isString v && v != "");
  bool = simple "a bool" isBool;
  int = simple "an integer" isInt;
  number = simple "a number" (v: isInt v || isFloat v);
  # Something that turns into a store path when interpolated.
  storePathLike = simple "a store path (string, path or derivation)" (
    v: isDerivation v || typeOf v == "path" || (isString v && match "/nix/store/[^/]+.*" v != null)
  );

  # Adds a check to a type; `extra` returns null or a message.
  refine = t: extra: {
    inherit (t) name;
    verify =
      v:
      let
        base = t.verify v;
      in
      if base != null then base else extra v;
  };

  # Numbers in messages: toJSON prints -0.5, where toString would print -0.500000.
  nonNegative = t: refine t (v: if v < 0 then "must not be negative, got ${toJSON v}" else null);
  atLeast = n: t: refine t (v: if v < n then "must be at least ${toJSON n}, got ${toJSON v}" else null);
  atMost = n: t: refine t (v: if v > n then "must be at most ${toJSON n}, got ${toJSON v}" else null);

  matching =
    regex: what: t:
    refine t (
      v: if match regex v == null then "${what}, got ${toJSON (unsafeDiscardStringContext v)}" else null
    );

  enum =
    values:
    simple "one of ${join ", " (map toJSON values)}" (v: isString v && elem v values);

  nullOr = t: {
    name = "${t.name} or null";
    verify = v: if v == null then null else t.verify v;
  };

  either = a: b: {
    name = "${a.name} or ${b.name}";
    verify =
      v:
      if a.verify v == null || b.verify v == null then
        null
      else
        "must be ${a.name} or ${b.name}, got ${describe v}";
  };

  listOf = t: {
    name = "a list of ${t.name}";
    verify =
      v:
      if !isList v then
        "must be a list of ${t.name}, got ${describe v}"
      else
        let
          errs = filter (e: e != null) (
            imap1 (i: e: let r = t.verify e; in if r == null then null else "element ${toString i} ${r}") v
          );
        in
        if errs == [ ] then null else builtins.head errs;
  };

  nonEmptyList = t: refine (listOf t) (v: if v == [ ] then "must not be empty" else null);

  attrsOf = t: {
    name = "an attribute set of ${t.name}";
    verify =
      v:
      if !isAttrs v || v ? _mxcKind || isDerivation v then
        "must be an attribute set of ${t.name}, got ${describe v}"
      else
        let
          errs = filter (e: e != null) (
            map (n: let r = t.verify v.${n}; in if r == null then null else "attribute '${n}' ${r}") (attrNames v)
          );
        in
        if errs == [ ] then null else builtins.head errs;
  };

  # A value made by one of nixlib's functions (Process { … }), or a plain attribute set given
  # in its place; its own attributes are checked later, with the job's context.
  kind = k: {
    name = "a ${k} { … }";
    verify =
      v:
      if isAttrs v && (v._mxcKind or k) == k && !isDerivation v then
        null
      else
        "must be a ${k} { … }, got ${describe v}";
  };

  # The attributes of a kind value (what the user passed).
  argsOf = v: if v ? _mxcKind then v.args else v;

  # Names: the same alphabets as spec/job.ts.
  nameRegex = "[A-Za-z0-9_.-]{1,128}";
  name = matching nameRegex "must be 1-128 characters of letters, digits, _ . -" str;
  processName =
    matching "[A-Za-z0-9_][A-Za-z0-9_.-]{0,127}"
      "must be 1-128 characters of letters, digits, _ . - (not starting with . or -)"
      str;

  # The known name sharing the longest prefix (at least 3 characters) with a misspelt one.
  suggest =
    known: n:
    let
      prefixLen =
        a: b:
        let
          go = i: if i < stringLength a && i < stringLength b && substring i 1 a == substring i 1 b then go (i + 1) else i;
        in
        go 0;
      scored = map (k: {
        inherit k;
        s = prefixLen k n;
      }) known;
      best = builtins.foldl' (acc: x: if x.s > acc.s then x else acc) {
        k = null;
        s = 2;
      } scored;
    in
    best.k;

  # Checks a function's arguments against its field table
  #   { attr = { type; required ? false; default ? …; }; }
  # and returns them unchanged, or throws naming the first bad attribute.
  checkArgs =
    ctx: fields: args:
    let
      known = attrNames fields;
      given = attrNames args;
      unknown = findFirst (n: !(fields ? ${n})) given;
      missing = findFirst (n: (fields.${n}.required or false) && !(args ? ${n})) known;
      bad = findFirst (e: e != null) (
        map (n: let r = fields.${n}.type.verify args.${n}; in if r == null then null else "attribute '${n}' ${r}") (
          filter (n: fields ? ${n}) given
        )
      );
    in
    if !isAttrs args || isDerivation args then
      fail ctx "expected an attribute set of arguments, got ${describe args}"
    else if unknown != null then
      let
        hint = suggest known unknown;
      in
      fail ctx "unknown attribute '${unknown}' (known: ${join ", " known})${
        if hint == null then "" else "; did you mean '${hint}'?"
      }"
    else if missing != null then
      fail ctx "missing attribute '${missing}' (required: ${
        join ", " (filter (n: fields.${n}.required or false) known)
      })"
    else if bad != null then
      fail ctx bad
    else
      args;

  # The arguments with nix-aurora's defaults filled in (for nixlib's own decisions only; the JSON
  # gets just what the user passed).
  withDefaults =
    fields: args:
    builtins.listToAttrs (
      map (n: {
        name = n;
        value = fields.${n}.default;
      }) (filter (n: fields.${n} ? default) (attrNames fields))
    )
    // args;

  # Tags a user's arguments so later checks know which function made them.
  tag =
    k: args:
    if isAttrs args then
      {
        _mxcKind = k;
        inherit args;
      }
      // (if args ? name then { inherit (args) name; } else { })
    else if isFunction args then
      throw "mxc: ${k}: expected an attribute set, got a function"
    else
      throw "mxc: ${k}: expected an attribute set of arguments, got ${describe args}";

}
