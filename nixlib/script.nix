# Store writers: each process's cmdline becomes an executable store script whose interpreter is
# itself a store path (busybox from the host without nixpkgs, or bash from pkgs), and the job JSON
# is written by a derivation (builtins.toFile cannot reference derivations).
{
  pkgs,
  system,
  busybox,
}:
let
  util = import ./util.nix;
  inherit (builtins) attrNames match toJSON genList length elemAt;
  withPkgs = pkgs != null;
  bb = "${busybox}/busybox";

  # A derivation run by busybox sh, with `text` handed over through a file (passAsFile), so
  # any byte sequence survives and store paths in it become references.
  bbWrite =
    name: text: mode:
    derivation {
      inherit name system text;
      builder = bb;
      passAsFile = [ "text" ];
      args = [
        "sh"
        "-c"
        "\"$builder\" cat \"$textPath\" > \"$out\" && \"$builder\" chmod ${mode} \"$out\""
      ];
    };

  safeFile = p: match "([A-Za-z0-9_][A-Za-z0-9_.-]*/)*[A-Za-z0-9_][A-Za-z0-9_.-]*" p != null;
in
rec {
  # The `#!` line of every process script.
  shell = if withPkgs then "${pkgs.bash}/bin/bash" else "${bb} sh";

  # A busybox binary by store path, for commands inside cmdlines (`${mxc.busybox} httpd …`).
  busyboxBin = if withPkgs then "${pkgs.busybox}/bin/busybox" else bb;

  # What nix_init_<p> runs (`nix-init P SCRIPT SIDECAR`), as nix-aurora's: realise the process
  # script and the job's sidecar (whose references are the job's whole closure) and root them in
  # the sandbox under .gc/P, so the Aurora JSON runs on a plain Thermos executor. mxc's agent has
  # realised the closure before the start (and exports MXC_WORKLOAD_ID): it exits at once.
  nixInit = writeScript "mxc-nix-init" ''
    #!${shell}
    [ -n "''${MXC_WORKLOAD_ID:-}" ] && exit 0
    name=$1
    shift
    if ! command -v nix-store >/dev/null 2>&1; then
      for f in "''${HOME:-/nonexistent}/.nix-profile/etc/profile.d/nix.sh" /nix/var/nix/profiles/default/etc/profile.d/nix-daemon.sh; do
        if [ -e "$f" ]; then . "$f"; break; fi
      done
    fi
    if command -v nix-store >/dev/null 2>&1; then
      exec nix-store --add-root ".gc/$name" --indirect -r "$@"
    fi
    for p in "$@"; do
      if [ ! -e "$p" ]; then
        echo "nix_init_$name: $p is not in the store and nix-store is not available to realise it" >&2
        exit 1
      fi
    done
  '';

  # utils.files.copiedExpandedFile at launch (`expand TEMPLATE NAME KEY VALUE …`): writes TEMPLATE to
  # ./NAME with each {{KEY}} replaced by VALUE (the executor bound the values in the cmdline) and
  # prints NAME. Plain string search, so keys and values need no escaping; the whole file is one
  # record (RS is a control character), so it is written byte for byte, final newline or not.
  expandFile = writeScript "mxc-expand-file" ''
    #!${shell}
    tpl=$1
    out=$2
    shift 2
    ${awk} 'BEGIN {
        RS = "\001"
        for (i = 1; i + 1 < ARGC; i += 2) val["{{" ARGV[i] "}}"] = ARGV[i + 1]
        ARGC = 1
      }
      {
        line = $0; done = ""
        while (1) {
          best = 0
          for (k in val) { p = index(line, k); if (p > 0 && (best == 0 || p < best)) { best = p; bk = k } }
          if (best == 0) break
          done = done substr(line, 1, best - 1) val[bk]
          line = substr(line, best + length(bk))
        }
        printf "%s", done line
      }' "$@" < "$tpl" > "$out" || exit 1
    echo "$out"
  '';

  awk = if withPkgs then "${pkgs.gawk}/bin/awk" else "${bb} awk";

  writeScript =
    name: text:
    if withPkgs then
      pkgs.writeTextFile {
        inherit name text;
        executable = true;
      }
    else
      bbWrite name text "555";

  writeText = name: text: if withPkgs then pkgs.writeText name text else bbWrite name text "444";

  # A directory of text files: writeTree "site" { "index.html" = "…"; "css/a.css" = "…"; }.
  writeTree =
    name: files:
    let
      paths = attrNames files;
      bad = util.findFirst (p: !(safeFile p)) paths;
      n = length paths;
      file = i: elemAt paths i;
      mkdirs = map (p: let d = dirOf p; in if d == "." then "" else "\"$builder\" mkdir -p \"$out/${d}\" && ") paths;
      copy = genList (
        i: "${elemAt mkdirs i}\"$builder\" cat \"$f${toString i}Path\" > \"$out/${file i}\""
      ) n;
    in
    if bad != null then
      throw "mxc: writeTree ${toJSON name}: file name ${toJSON bad} must be a relative path of letters, digits, _ . - (no '..')"
    else if withPkgs then
      pkgs.linkFarm name (map (p: {
        name = p;
        path = pkgs.writeText (baseNameOf p) files.${p};
      }) paths)
    else
      derivation (
        {
          inherit name system;
          builder = bb;
          passAsFile = genList (i: "f${toString i}") n;
          args = [
            "sh"
            "-c"
            (util.join " && " ([ "\"$builder\" mkdir \"$out\"" ] ++ copy))
          ];
        }
        // builtins.listToAttrs (genList (i: {
          name = "f${toString i}";
          value = files.${file i};
        }) n)
      );
}
