# The host's static busybox in the store, as a directory holding an executable named `busybox`
# (busybox picks its applet from argv[0]'s basename, so the interpreter must be `…/busybox`).
# Impure evaluation (nix-build) imports the host file with `builtins.path`: no build at all, so it
# works with a sandboxed Nix too. Pure evaluation (flakes) cannot read /usr/bin: it describes the
# same directory as a fixed-output derivation with the pinned NAR hash, which has the very same
# store path (a recursive sha256 output is addressed like an import), so once nix-build has imported
# it the flake needs no build either; on a cold store with a sandboxed Nix the flake needs
# `--option extra-sandbox-paths /usr/bin/busybox` to run that derivation's builder.
{
  system,
  hostBusybox ? "/usr/bin/busybox",
  sha256 ? null,
}:
let
  pinned = import ./busybox-pin.nix;
  pure = !(builtins ? currentSystem);
  named = baseNameOf hostBusybox == "busybox";
  imported = builtins.path {
    path = /. + dirOf hostBusybox;
    name = "busybox";
    filter = p: _type: baseNameOf p == "busybox";
  };
  # Downstream derivations name this one as an input derivation in both modes, and a fixed-output
  # derivation's identity is its output hash alone (not its builder), so jobs get the same store
  # paths whether evaluated purely or not.
  described =
    builder:
    derivation {
      name = "busybox";
      inherit system builder;
      args = [
        "sh"
        "-c"
        "\"$builder\" mkdir \"$out\" && \"$builder\" cp \"$builder\" \"$out/busybox\" && \"$builder\" chmod 555 \"$out/busybox\""
      ];
      outputHashMode = "recursive";
      outputHashAlgo = "sha256";
      outputHash = if sha256 != null then sha256 else pinned.narHash;
    };
in
if !named then
  throw "nixlib: hostBusybox must name a file called busybox (busybox picks its applet from argv[0]), got ${hostBusybox}"
else if pure then
  described hostBusybox
else if sha256 != null || builtins.hashFile "sha256" (/. + hostBusybox) == pinned.sha256 then
  # Already in the store under this very path (the import above), so nothing is built.
  described "${imported}/busybox"
else
  imported
