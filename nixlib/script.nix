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

  # The command nix_init_<p> runs: a cheap assertion that the agent realised the script.
  testExists = if withPkgs then "${pkgs.coreutils}/bin/test -e" else "${bb} test -e";

  # Closure roots every job needs besides its scripts (the nix_init command's package).
  initRoots = if withPkgs then [ "${pkgs.coreutils}" ] else [ ];

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
